"""Pretrain one variant (full or r<rank>) and seed with the four S3Rec self-supervised tasks.

Writes pretrain.pt, pretrain_history.csv and pretrain_run.json into --out-dir.
A rerun after an interruption resumes from the last finished epoch.
"""
from __future__ import annotations

import argparse
import sys

from s3rec import runs, runtime
from s3rec.config import COMPILE_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    runs.add_run_arguments(parser)
    parser.add_argument("--compile", default=None, choices=COMPILE_MODES,
                        help="fixed-shape steps, the whole loss through torch.compile in this mode, or "
                             "cuda-graph: each step replayed as a CUDA graph (RunConfig.compile; default none: "
                             "the eager step)")
    args = parser.parse_args(argv)
    runtime.setup_logging()
    with runtime.clear_errors():
        cfg = runs.resolve_config(args.settings, args.variant, args.seed, args.device, args.threads, args.compile)
        runs.pretrain(args.data, args.out_dir, cfg, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
