"""Pretrain one variant (full or r<rank>) and seed with the four S3Rec self-supervised tasks.

Writes pretrain.pt, pretrain_history.csv and pretrain_run.json into --out-dir.
A rerun after an interruption resumes from the last finished epoch.
Several seeds (--seed 0 1 2 --out-dir A B C): pretrained together as one stacked model
(s3rec/stacked.py; the workflow's pretrain_seeds_per_job), each seed's files in its folder.
"""
from __future__ import annotations

import argparse
import sys

from s3rec import cli, runs, stacked
from s3rec.config import COMPILE_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    runs.add_run_arguments(parser, several_seeds=True)
    parser.add_argument("--compile", default=None, choices=COMPILE_MODES,
                        help="fixed-shape steps, the whole loss through torch.compile in this mode, or "
                             "cuda-graph: each step replayed as a CUDA graph (RunConfig.compile; default none: "
                             "the eager step)")
    args = parser.parse_args(argv)
    if len(args.seed) != len(args.out_dir):
        parser.error(f"--seed and --out-dir: one folder per seed, got {len(args.seed)} seeds and "
                     f"{len(args.out_dir)} folders")
    cli.setup_logging()
    with cli.clear_errors():
        cfg = runs.resolve_config(args.settings, args.variant, args.seed[0], args.device, args.threads, args.compile)
        # the finetuning's evaluation is checked before pretraining only when --settings says it (the
        # workflow gives pretraining jobs no eval section: the defaults would refuse a small data set)
        check = "eval" in args.settings
        if len(args.seed) == 1:
            runs.pretrain(args.data, args.out_dir[0], cfg, args.variant, check_evaluation=check)
        else:
            stacked.pretrain_stacked(args.data, args.out_dir, cfg, args.variant, args.seed, check_evaluation=check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
