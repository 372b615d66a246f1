"""Pretraining losses of several checkpoints on the same batches (what each task has learnt).

    python benchmarks/compare_pretraining.py --data resources/beauty \
        results/beauty/authors/pretrain.pt results/beauty/paper-full/seed0/pretrain.pt [--batches 100]

Each checkpoint (a pretrain.pt, or a run's pretrain.state.pt while it trains) is scored on the
same fixed batches of prefix instances (of at most the smallest model.max_len of the
checkpoints, `max_len` in the JSON), drawn with one seed: AAP, MIP, MAP and SP per
instance, unweighted, plus the share of masked positions where MIP ranks the true item above
its sampled negative. Twice: in eval mode (no dropout), and in train mode with the same dropout
draws for every checkpoint (`train_mode`), which is what pretraining minimises. Prints one JSON
object. A lower loss on these batches means the checkpoint solves that task better on this
data, whatever preset trained it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from s3rec import cli, runs, runtime
from s3rec.data import leave_one_out, load_dataset
from s3rec.pretrain_batches import build_batch, split_instances
from s3rec.pretraining import LOSS_NAMES, PretrainModel


@torch.no_grad()
def score(model: PretrainModel, batches) -> dict:
    sums = dict.fromkeys(LOSS_NAMES, 0.0)
    mip_correct = mip_total = instances = 0
    for batch in batches:
        losses = model(batch)
        for name in LOSS_NAMES:
            sums[name] += float(losses[name])
        states, _ = model.encoder.forward_ends(batch.masked_items, causal=False, num_full=batch.num_instances)
        masked = batch.masked_items == model.encoder.mask_id
        embed, mip = model.encoder.item_embeddings, model.heads["mip"]
        positive = mip.score_pairs(states[masked], embed(batch.items[masked]))
        negative = mip.score_pairs(states[masked], embed(batch.negative_items[masked]))
        mip_correct += int((positive > negative).sum())
        mip_total += int(masked.sum())
        instances += batch.num_instances
    return {**{name: round(value / instances, 4) for name, value in sums.items()},
            "mip_true_above_negative": round(mip_correct / mip_total, 4)}


@torch.no_grad()
def train_mode_losses(model: PretrainModel, batches, seed: int = 0) -> dict:
    """The four losses per instance with dropout on, as pretraining sees them (same draws per checkpoint)."""
    model.train()
    torch.manual_seed(seed)
    sums, instances = dict.fromkeys(LOSS_NAMES, 0.0), 0
    for batch in batches:
        losses = model(batch)
        for name in LOSS_NAMES:
            sums[name] += float(losses[name])
        instances += batch.num_instances
    model.eval()
    return {name: round(value / instances, 4) for name, value in sums.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--batches", type=cli.positive_int, default=100, help="batches of 100 prefix instances")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    args = parser.parse_args(argv)
    cli.paths_once(parser, "checkpoints", args.checkpoints)
    cli.setup_logging()
    runtime.set_threads(args.threads)
    with cli.clear_errors():  # a checkpoint of other data, or no pretraining model: its message alone
        print(json.dumps(compare(args.data, args.checkpoints, args.batches), indent=1))


def compare(data_dir: Path, checkpoints: list[Path], batches: int) -> dict:
    dataset = load_dataset(data_dir)
    models = {path: runs.load_pretraining_model(path, dataset, data_dir) for path in checkpoints}
    # Instances every model can read: a longer one stops a model of a shorter max_len (the
    # paper's models all have 50).
    max_len = min(model.cfg.model.max_len for model, _ in models.values())
    split = leave_one_out(dataset.sequences)
    instances = split_instances(dataset, split, max_len=max_len)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(instances))[: 100 * batches]
    drawn = [build_batch(instances, order[i:i + 100], rng, mask_prob=0.2) for i in range(0, len(order), 100)]
    report = {"data": str(data_dir), "instances_scored": len(order), "max_len": max_len, "checkpoints": {}}
    for path, (model, about) in models.items():
        report["checkpoints"][str(path)] = about | score(model, drawn) | {"train_mode": train_mode_losses(model, drawn)}
    return report


if __name__ == "__main__":
    main()
