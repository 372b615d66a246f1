"""Whether the report's bootstrap intervals say "excludes 0" for the data or for its random draws.

    python benchmarks/bootstrap_stability.py study/lastfm/*/seed*/*/metrics.json \
        [--samples 2000] [--rng-seeds 10] [--large-samples 20000] [--near 0.25] \
        [--metric NDCG@10] [--protocols full sampled] [--split test]

The difference table's paired bootstrap (s3rec.intervals.paired_bootstrap: users × seeds, a
percentile interval) draws `--samples` resamples with RNG seed 0, so an end lying close to 0 may
fall on either side of it by chance. For every comparison of that table (differences.comparison_pairs)
whose end nearest 0 lies within `--near` × the interval's half-width of 0, this draws the same
interval again with RNG seeds 1..`--rng-seeds` and once with `--large-samples` resamples, and prints
one JSON object: per comparison the report's interval, the range of each end over the other seeds,
on how many of them the interval excludes 0, the large-sample interval, and `stable` (every draw
agrees with the report on whether 0 is excluded). Comparisons farther from 0 are only counted
("far"); `--near` inf checks them all (minutes on Beauty's 22,363 users).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from s3rec import cli, differences, intervals, report
from s3rec.metrics import METRICS_FULL


def stability(difference: np.ndarray, reported: tuple[float, float, float], samples: int, rng_seeds: int,
              large_samples: int) -> dict:
    """The report's interval (`reported`: paired_bootstrap's mean, low, high with RNG seed 0) beside
    its redraws with other seeds and more resamples."""
    mean, low, high = reported
    redraws = np.array([intervals.paired_bootstrap(difference, samples, seed=seed)[1:]
                        for seed in range(1, rng_seeds + 1)])
    _, large_low, large_high = intervals.paired_bootstrap(difference, large_samples, seed=0)
    decision = intervals.excludes_zero(low, high)
    excluding = sum(bool(intervals.excludes_zero(*ends)) for ends in redraws)
    return {
        "difference": mean, "interval": [low, high], "excludes_zero": decision,
        "low_range": [float(redraws[:, 0].min()), float(redraws[:, 0].max())],
        "high_range": [float(redraws[:, 1].min()), float(redraws[:, 1].max())],
        "excluding_redraws": int(excluding), "redraws": rng_seeds,
        "large_interval": [large_low, large_high],
        "stable": (excluding == (rng_seeds if decision else 0)
                   and intervals.excludes_zero(large_low, large_high) == decision),
    }


def near_zero(low: float, high: float, near: float) -> bool:
    """The interval's end nearest 0 lies within `near` half-widths of it."""
    return min(abs(low), abs(high)) <= near * (high - low) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json of every run (ranks.parquet beside)")
    parser.add_argument("--samples", type=cli.positive_int, default=2000, help="the report's bootstrap_samples")
    parser.add_argument("--rng-seeds", type=cli.positive_int, default=10, help="redraws with RNG seeds 1..N")
    parser.add_argument("--large-samples", type=cli.positive_int, default=20000)
    parser.add_argument("--near", type=float, default=0.25,
                        help="check comparisons whose end nearest 0 is within this many half-widths of it")
    parser.add_argument("--metric", default="NDCG@10", choices=METRICS_FULL, help="a per-user metric (not AUC)")
    parser.add_argument("--protocols", nargs="+", default=["full", "sampled"], choices=["full", "sampled"])
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    args = parser.parse_args(argv)
    if not args.near >= 0:  # NaN too
        parser.error(f"--near: expected a number >= 0 (inf: every comparison), got {args.near}")
    cli.setup_logging()
    checked, far = [], 0
    with cli.clear_errors():  # a malformed or missing run file, a protocol the runs lack: its message alone
        ranks = report.load_ranks(args.metrics)
        for loss, pretraining, reference in differences.comparison_pairs(ranks)[0]:
            for protocol in args.protocols:
                difference = differences.paired_difference(ranks, loss, pretraining, reference, protocol,
                                                           args.split, args.metric)
                report_interval = intervals.paired_bootstrap(difference, args.samples, seed=0)
                if not (math.isinf(args.near) or near_zero(*report_interval[1:], args.near)):
                    far += 1
                    continue
                checked.append({"loss": loss, "pretraining": pretraining, "reference": reference,
                                "protocol": protocol, "seeds": difference.shape[0], "users": difference.shape[1],
                                **stability(difference, report_interval, args.samples, args.rng_seeds,
                                            args.large_samples)})
    print(json.dumps({"metric": args.metric, "split": args.split, "samples": args.samples,
                      "rng_seeds": args.rng_seeds, "large_samples": args.large_samples, "near": args.near,
                      "checked": checked, "far": far,
                      "unstable": [f"{c['pretraining']} − {c['reference']} ({c['loss']}, {c['protocol']})"
                                   for c in checked if not c["stable"]]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
