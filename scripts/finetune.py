"""Finetune one variant and seed (or train `none` from scratch), then evaluate it.

Writes finetune.pt, finetune_history.csv, ranks.parquet and metrics.json into --out-dir.
A rerun after an interruption resumes from the last finished epoch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s3rec import cli, runs
from s3rec.config import COMPILE_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    runs.add_run_arguments(parser)
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="pretrain.pt of the same variant, seed, data and model settings "
                             "(hidden_size, num_layers, num_heads, max_len)")
    parser.add_argument("--compile", default=None, choices=COMPILE_MODES,
                        help="cuda-graph: each fixed-shape step replayed as a CUDA graph; other modes train the "
                             "eager step (RunConfig.compile; default none)")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.clear_errors():
        cfg = runs.resolve_config(args.settings, args.variant, args.seed, args.device, args.threads, args.compile)
        runs.finetune(args.data, args.out_dir, cfg, args.variant, pretrained=args.pretrained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
