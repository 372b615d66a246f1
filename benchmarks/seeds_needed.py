"""How many seeds a paired difference needs for its interval to reach a given width.

    python benchmarks/seeds_needed.py study/beauty/*/seed*/*/metrics.json \
        [--target 0.02] [--metric NDCG@10] [--protocols full sampled] [--split test]

For every comparison of the difference table (each rank minus its preset's full; full minus
none and minus authors) that has two seeds or more in common, splits the per-user difference
into its variance between seeds, between users (the part that repeats on every seed) and their
interaction (s3rec.intervals.variance_components), and prints one JSON object: each comparison's
normal-approximation 95 % half-width now, with infinitely many seeds (the floor the fixed test
users set), both also as a share of the reference's mean, and the fewest seeds that bring it to
`--target` × the reference's mean (null when the floor is already wider), and beside them the
half-width the report's users × seeds bootstrap gives the same data (grid_bootstrap_half_width:
see intervals.paired_bootstrap for why it differs). Comparisons with one
seed are listed under "skipped". A planning aid: the variance between seeds is estimated from
the few seeds there are, so it is rough with two or three.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from s3rec import cli, differences, intervals, report
from s3rec.metrics import METRICS_FULL


def comparison(ranks, loss: str, pretraining: str, reference: str, protocol: str, split: str, metric: str,
               target: float) -> dict | None:
    """The sizing of one comparison; None when it has one common seed (seed and user variation
    cannot be told apart)."""
    difference = differences.paired_difference(ranks, loss, pretraining, reference, protocol, split, metric)
    if difference.shape[0] < 2:
        return None
    reference_mean = float(differences.user_scores(ranks, loss, reference, protocol, split, metric)[2].mean())
    parts = intervals.variance_components(difference)
    now, floor = parts.half_width(parts.seeds), parts.half_width(math.inf)
    return {
        "loss": loss, "pretraining": pretraining, "reference": reference, "protocol": protocol,
        "seeds": parts.seeds, "users": parts.users, "difference": float(difference.mean()),
        "reference_mean": reference_mean,
        "sd": {"seed": math.sqrt(parts.seed), "user": math.sqrt(parts.user), "residual": math.sqrt(parts.residual)},
        "half_width": now, "half_width_share": now / reference_mean,
        # what the report's users × seeds bootstrap gives the same data (intervals.paired_bootstrap)
        "grid_bootstrap_half_width": parts.grid_bootstrap_half_width(),
        "floor_half_width": floor, "floor_share": floor / reference_mean,
        "seeds_for_target": parts.seeds_for(target * reference_mean),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json of every run (ranks.parquet beside)")
    parser.add_argument("--target", type=cli.positive_number, default=0.02,
                        help="half-width as a share of the reference's mean")
    parser.add_argument("--metric", default="NDCG@10", choices=METRICS_FULL, help="a per-user metric (not AUC)")
    parser.add_argument("--protocols", nargs="+", default=["full", "sampled"], choices=["full", "sampled"])
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    args = parser.parse_args(argv)
    if len(set(args.protocols)) < len(args.protocols):  # each comparison would be listed twice
        parser.error(f"--protocols: a protocol given twice in {' '.join(args.protocols)}")
    cli.setup_logging()
    rows, skipped = [], []
    with cli.clear_errors():  # a malformed or missing run file, a protocol the runs lack: its message alone
        ranks = report.load_ranks(args.metrics)
        for loss, pretraining, reference in differences.comparison_pairs(ranks)[0]:
            for protocol in args.protocols:
                row = comparison(ranks, loss, pretraining, reference, protocol, args.split, args.metric, args.target)
                if row is None:
                    skipped.append(f"{pretraining} − {reference} ({loss}, {protocol}): one common seed")
                else:
                    rows.append(row)
    if not rows:
        parser.error("no comparison with two common seeds or more among the given runs"
                     + (f"; with one: {'; '.join(skipped)}" if skipped else ""))
    print(json.dumps({"target_share": args.target, "metric": args.metric, "split": args.split,
                      "comparisons": rows, "skipped": skipped}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
