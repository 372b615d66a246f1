"""What a pretrained model's SP (segment prediction) head scores: is it learning, or stalled?

    python benchmarks/segment_scores.py results/beauty/paper-full/seed2/pretrain.state.pt \
        results/beauty/paper-full/seed1/pretrain.pt --data resources/beauty [--instances 256]

For each checkpoint (a finished pretrain.pt, an imported one, or a running job's
pretrain.state.pt): one batch of `--instances` pretraining instances, drawn with a fixed
generator from the data set's training parts as pretraining draws them, goes through the model
in eval mode; prints one JSON object with the statistics of the SP scores s⁺ (context against
the true segment) and s⁻ (against a negative segment), of σ(s⁺) and σ(s⁻), the share of pairs
whose two sigmoids are both below 1e-4 or both above 1 − 1e-4 (saturated: under the authors'
sigmoid_difference loss such a pair has no gradient), and the batch's SP loss per instance
under the model's own pair loss. A head that stalled at ln 2 (report: runs.md, pretraining
checks) shows a saturated share near 1.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from s3rec import cli, runs, runtime
from s3rec.data import leave_one_out, load_dataset
from s3rec.pretrain_batches import iterate_batches, split_instances

SATURATED = 1e-4


def stats(values: torch.Tensor) -> dict:
    return {"mean": values.mean().item(), "std": values.std().item(), "min": values.min().item(),
            "max": values.max().item()}


def segment_scores(path: Path, data_dir: Path, instances: int, seed: int) -> dict:
    dataset = load_dataset(data_dir)
    model, about = runs.load_pretraining_model(path, dataset, data_dir)
    cfg, epoch = model.cfg, about["epoch"]
    split = leave_one_out(dataset.sequences)
    corpus = split_instances(dataset, split, max_len=cfg.model.max_len, kind=cfg.pretrain.instances)
    rng = runtime.epoch_generators(seed, 0)
    chunks = next(iterate_batches(corpus, instances, rng, mask_prob=cfg.pretrain.mask_prob, batching="padded"))
    positive, negative = [], []
    with torch.no_grad():
        for chunk in chunks:
            _, context, pos_segment, neg_segment = model.encode(chunk)
            positive.append(model.heads["sp"].score_pairs(context, pos_segment))
            negative.append(model.heads["sp"].score_pairs(context, neg_segment))
        positive, negative = torch.cat(positive), torch.cat(negative)
        loss = model.pair_loss(positive, negative).item() / len(positive)
    sig_pos, sig_neg = torch.sigmoid(positive), torch.sigmoid(negative)
    low, high = (sig_pos < SATURATED) & (sig_neg < SATURATED), (sig_pos > 1 - SATURATED) & (sig_neg > 1 - SATURATED)
    saturated = low | high
    return {"file": str(path), "epoch": epoch, "pair_loss": cfg.pretrain.pair_loss, "instances": len(positive),
            "s_pos": stats(positive), "s_neg": stats(negative), "sigmoid_s_pos": stats(sig_pos),
            "sigmoid_s_neg": stats(sig_neg), "saturated_share": saturated.double().mean().item(), "sp_loss": loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the prepared data set (resources/<name>)")
    parser.add_argument("--instances", type=cli.positive_int, default=256, help="pretraining instances to score")
    parser.add_argument("--seed", type=cli.seed_argument, default=0, help="the generator that draws them")
    args = parser.parse_args(argv)
    cli.setup_logging()
    start = time.perf_counter()
    with cli.clear_errors():  # a missing or mismatched checkpoint or data set: its message alone
        results = [segment_scores(path, args.data, args.instances, args.seed) for path in args.checkpoints]
    print(json.dumps({"checkpoints": results, "seconds": time.perf_counter() - start}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
