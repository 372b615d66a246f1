"""Summarise reproduction runs: one row per arm (a folder of seed*/metrics.json), mean ± std over seeds.

    python benchmarks/reproduction_table.py results/reproduction [--json]
    python benchmarks/reproduction_table.py results/reproduction --paired ARM REFERENCE
    python benchmarks/reproduction_table.py results/reproduction --sampled [ARM ...]

Prints a Markdown table of test full-ranking NDCG@10 and HR@10, sampled-99 NDCG@10, best
epoch / epochs run, and CPU minutes per run; `--json` prints the per-seed values instead.
`--sampled` prints the sampled protocol's test metrics in the columns of the authors' tables
(HR@1, HR@5, NDCG@5, HR@10, NDCG@10, MRR), for the ARMs given or every arm.
`--paired` prints ARM − REFERENCE in test NDCG@10, per user over their common seeds, with the
study report's two 95 % intervals, per protocol: the paired bootstrap (users and seeds resampled)
and the t interval over seeds (none on one seed).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import polars as pl

from s3rec import cli, report_inputs
from s3rec.intervals import paired_intervals
from s3rec.differences import paired_difference


def load_arms(root: Path) -> dict[str, list[dict]]:
    """Every <root>/<arm>/seed*/metrics.json, checked as the study report checks it."""
    arms: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*/seed*/metrics.json")):
        run = report_inputs.read_json_object(path)
        try:
            report_inputs.check_result(run)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        arms.setdefault(path.parent.parent.name, []).append(run)
    if not arms:
        raise ValueError(f"{root}: no <arm>/seed<N>/metrics.json under it; expected a folder of reproduction runs")
    return arms


def summary(runs: list[dict]) -> dict:
    def values(protocol, metric):
        return [r["metrics"][protocol]["test"][metric] for r in runs if protocol in r["metrics"]]

    return {"seeds": [r["seed"] for r in runs],
            "full_NDCG@10": values("full", "NDCG@10"), "full_HR@10": values("full", "HR@10"),
            "sampled_NDCG@10": values("sampled", "NDCG@10"),
            "best_epoch": [r.get("best_epoch") for r in runs], "epochs_run": [r.get("epochs_run") for r in runs],
            "early_stopped": [r.get("early_stopped") for r in runs],
            "cpu_minutes": [cpu_minutes(r) for r in runs]}


def cpu_minutes(run: dict) -> float | None:
    """The finetuning's CPU time in minutes; None where the run did not record it (no NaN: it is no JSON)."""
    seconds = (run.get("cpu_seconds") or {}).get("finetune")
    return None if seconds is None else round(seconds / 60, 1)


def arm_ranks(root: Path, arm: str, seeds: list[str]) -> pl.DataFrame:
    """The seeds' ranks.parquet of one arm, labelled as the study report labels a run's ranks."""
    return pl.concat([report_inputs.read_ranks(root / arm / seed / "ranks.parquet").with_columns(
        loss=pl.lit(""), pretraining=pl.lit(arm), seed=pl.lit(int(seed.removeprefix("seed")))) for seed in seeds])


def paired(root: Path, arm: str, reference: str) -> dict:
    seeds = sorted({p.parent.name for p in (root / arm).glob("seed*/ranks.parquet")}
                   & {p.parent.name for p in (root / reference).glob("seed*/ranks.parquet")})
    if not seeds:
        raise SystemExit(f"reproduction_table: {arm} and {reference} under {root} share no seed with ranks.parquet")
    ranks = pl.concat([arm_ranks(root, arm, seeds), arm_ranks(root, reference, seeds)])
    result = {"arm": arm, "reference": reference, "seeds": seeds}
    for protocol in ("full", "sampled"):
        difference = paired_difference(ranks, "", arm, reference, protocol, "test", "NDCG@10")
        result[protocol] = paired_intervals(difference)  # the t interval null on one seed (NaN is no JSON)
    return result


SAMPLED_COLUMNS = ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")  # the authors' README tables


def sampled_table(arms: dict[str, list[dict]], chosen: list[str]) -> list[str]:
    unknown = [arm for arm in chosen if arm not in arms]
    if unknown:
        raise SystemExit(f"reproduction_table: no runs of arm {unknown[0]!r}; arms: {', '.join(arms)}")
    lines = ["| arm | seeds | " + " | ".join(SAMPLED_COLUMNS) + " |", "|---|---|" + "---:|" * len(SAMPLED_COLUMNS)]
    for arm in chosen or arms:
        runs = [r for r in arms[arm] if "sampled" in r["metrics"]]
        cells = [mean_std([r["metrics"]["sampled"]["test"][m] for r in runs]) for m in SAMPLED_COLUMNS]
        lines.append(f"| {arm} | {','.join(str(r['seed']) for r in runs)} | " + " | ".join(cells) + " |")
    return lines


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--paired", nargs=2, metavar=("ARM", "REFERENCE"))
    parser.add_argument("--sampled", nargs="*", metavar="ARM")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.clear_errors():  # a missing or malformed run file: its message alone, exit status 2
        print_tables(args)


def print_tables(args: argparse.Namespace) -> None:
    if args.paired:
        result = paired(args.root, *args.paired)
        print(json.dumps(result, indent=1) if args.json else " ".join(
            [f"{result['arm']} − {result['reference']}, seeds {', '.join(result['seeds'])}:"]
            + [f"{p} {d['difference']:+.4f} bootstrap [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] t over seeds "
               + (f"[{d['seeds_ci_low']:+.4f}, {d['seeds_ci_high']:+.4f}]" if d["seeds_ci_low"] is not None else "–")
               for p, d in result.items() if p in ("full", "sampled")]))
        return
    if args.sampled is not None:
        print("\n".join(sampled_table(load_arms(args.root), args.sampled)))
        return
    arms = {arm: summary(runs) for arm, runs in load_arms(args.root).items()}
    if args.json:
        print(json.dumps(arms, indent=1))
        return
    print("| arm | seeds | full NDCG@10 | full HR@10 | sampled NDCG@10 | best epoch / run | CPU min per run |")
    print("|---|---|---:|---:|---:|---|---|")
    for arm, s in arms.items():
        epochs = ", ".join(f"{b}/{e}" for b, e in zip(s["best_epoch"], s["epochs_run"]))
        print(f"| {arm} | {','.join(map(str, s['seeds']))} | {mean_std(s['full_NDCG@10'])} | {mean_std(s['full_HR@10'])} "
              f"| {mean_std(s['sampled_NDCG@10'])} | {epochs} | {', '.join(map(str, s['cpu_minutes']))} |")


if __name__ == "__main__":
    main()
