"""Popularity baseline: rank every item by how often it occurs in the training parts.

    python scripts/popularity.py --data resources/D --out-dir results/D/popularity [--settings JSON] [--threads N]

Popularity counts only items[:-2] of every user (the validation and test items are held out),
and every user gets the same scores. Evaluation is s3rec.evaluation.evaluate with the runs'
EvalConfig (--settings '{"eval": {...}}'), so the sampled negatives are the runs' negatives:
drawn with eval.negatives_seed, or with eval.negatives: file the data set's sampled_negatives.parquet.
Writes metrics.json (a run's structure, variant "popularity", no parameters; cpu_seconds.finetune
and wall_seconds.finetune are the whole job's: reading the data, counting and ranking) and
ranks.parquet. Logs with timestamps, like the training scripts.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from s3rec import cli, files, runs, runtime
from s3rec.config import RunConfig
from s3rec.data import leave_one_out, load_dataset
from s3rec.evaluation import evaluate

log = logging.getLogger("s3rec")

def popularity_scores(train: list[np.ndarray], num_items: int) -> torch.Tensor:
    """(num_items + 1,) float32 count of each item in the training parts; column 0 stays 0."""
    items = np.concatenate(train) if train else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(np.bincount(items, minlength=num_items + 1).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="prepared data set folder (resources/<name>)")
    parser.add_argument("--out-dir", required=True, type=cli.folder_argument)
    parser.add_argument("--settings", type=cli.json_object, default={}, help="JSON with an `eval` section")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads (default: SLURM_CPUS_PER_TASK or all)")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.clear_errors():
        return rank_by_popularity(args)


def rank_by_popularity(args: argparse.Namespace) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()
    runtime.set_threads(args.threads)
    if set(args.settings) - {"eval"}:  # before, ignored: a misspelt `eval` ranked with the defaults
        raise ValueError(f"--settings: expected only an `eval` section (popularity trains nothing), got keys "
                         f"{sorted(args.settings)}")
    cfg = RunConfig.from_dict({"eval": args.settings.get("eval", {})})
    execution = runtime.describe_execution("cpu")
    log.info("popularity ranking of %s on %s; eval settings %s", args.data, execution,
             json.dumps(cfg.to_dict()["eval"], sort_keys=True))
    dataset = load_dataset(args.data)
    split = leave_one_out(dataset.sequences)
    counts = popularity_scores(split.train, dataset.num_items)

    def score_fn(histories: list[np.ndarray]) -> torch.Tensor:
        return counts.expand(len(histories), -1)  # (B, num_items + 1), the same row for all

    negatives = runs.sampled_negatives(args.data, dataset, cfg)  # the finetuned runs' own (a file's, if set)
    metrics, ranks = evaluate(score_fn, split, dataset.sequences, dataset.user_ids, dataset.num_items, cfg.eval,
                              negatives=negatives)
    result = {
        "dataset": args.data.name, "variant": "popularity", "seed": 0, "metrics": metrics,
        "parameters": {"encoder": 0, "heads": {}, "heads_total": 0, "total": 0},
        "best_epoch": 0, "epochs_run": 0,
        "wall_seconds": {"pretrain": 0.0, "finetune": time.perf_counter() - started},
        "cpu_seconds": {"pretrain": 0.0, "finetune": time.process_time() - cpu_started},
        "finetune": {"loss": None, "negatives_exclude_heldout": None},
        "execution": execution, "config": {"eval": cfg.to_dict()["eval"]}, "provenance": runtime.provenance(),
        "data_sha256": runs.digest_of_data(args.data),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files.save_frame(args.out_dir / "ranks.parquet", ranks)
    files.write_json(args.out_dir / "metrics.json", result)
    for protocol, splits in metrics.items():
        test = splits.get("test", {})
        log.info("%s test: %s", protocol, " ".join(f"{k}={v:.4f}" for k, v in test.items()))
    log.info("wrote %s and %s in %.1f s (%.1f s CPU)", args.out_dir / "metrics.json", args.out_dir / "ranks.parquet",
             result["wall_seconds"]["finetune"], result["cpu_seconds"]["finetune"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
