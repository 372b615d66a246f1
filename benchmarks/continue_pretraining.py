"""Continue pretraining a checkpoint with this project's objective and watch each task's loss.

    python benchmarks/continue_pretraining.py --data resources/beauty results/beauty/authors/pretrain.pt \
        --batches 600 --every 100 [--preset paper] [--lr 1e-3]

A checkpoint that sits at an optimum of the same objective barely moves: its four losses stay
where they start. A task whose loss falls fast was trained less (or differently) than this
objective trains it. The checkpoint's own weights are loaded into a `preset` model (its
optimizer state is not, so the first steps of Adam are larger than in the original run: read
the trend over hundreds of batches, not the first few). Training batches are `padded` prefix
instances of batch 100, as the authors', epoch after epoch (a fresh permutation each) until
`--batches` have run; the losses printed are the training losses (dropout on) per instance,
averaged over each `--every` batches, and over the batches after the last full window. Prints
one JSON object (`batches`: how many ran).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from s3rec import cli, runs, runtime
from s3rec.config import PRESETS, RunConfig
from s3rec.data import leave_one_out, load_dataset
from s3rec.pretrain_batches import iterate_batches, split_instances
from s3rec.pretraining import LOSS_NAMES, PretrainModel, step_losses
from s3rec.training import adam


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--lr", type=cli.positive_number, default=1e-3)
    parser.add_argument("--batches", type=cli.positive_int, default=600)
    parser.add_argument("--every", type=cli.positive_int, default=100)
    parser.add_argument("--seed", type=cli.seed_argument, default=0)
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    args = parser.parse_args(argv)
    if args.every > args.batches:
        parser.error(f"--every {args.every}: more than --batches {args.batches}, so no point of the curve")
    cli.setup_logging()
    runtime.set_threads(args.threads)
    with cli.clear_errors():  # a bad --data, a checkpoint of other data or no pretraining model: its message alone
        dataset = load_dataset(args.data)
        loaded, about = runs.load_pretraining_model(args.checkpoint, dataset, args.data)
    split = leave_one_out(dataset.sequences)
    cfg = RunConfig.from_dict(loaded.cfg.to_dict() | {"pretrain": {"preset": args.preset}})  # its model, our objective
    model = PretrainModel(cfg, dataset.num_items, dataset.num_attributes)
    model.load_state_dict(loaded.state_dict())
    optimizer = adam(model.parameters(), lr=args.lr, weight_decay=0.0)
    instances = split_instances(dataset, split, max_len=cfg.model.max_len)
    rng = np.random.default_rng(args.seed)
    # an epoch of Beauty is ~1,500 batches: more than that go on into the next epoch
    steps = (step for _ in itertools.count() for step in iterate_batches(instances, 100, rng,
                                                                         mask_prob=cfg.pretrain.mask_prob, batching="padded"))
    torch.manual_seed(args.seed)
    model.train()
    curve, sums, count, start = [], dict.fromkeys(LOSS_NAMES, 0.0), 0, time.perf_counter()
    for done, step in zip(range(1, args.batches + 1), steps):
        losses = step_losses(model, step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        for name in LOSS_NAMES:
            sums[name] += float(losses[name].detach())
        count += sum(chunk.num_instances for chunk in step)
        if done % args.every == 0 or done == args.batches:  # the last window may be short
            curve.append({"batches": done, **{n: round(v / count, 4) for n, v in sums.items()}})
            print(json.dumps(curve[-1]), file=sys.stderr)
            sums, count = dict.fromkeys(LOSS_NAMES, 0.0), 0
    print(json.dumps({"checkpoint": str(args.checkpoint), **about, "preset": args.preset, "lr": args.lr,
                      "batches": done, "seconds": round(time.perf_counter() - start, 1), "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
