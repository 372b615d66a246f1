"""Summarise reproduction runs: one row per arm (a folder of seed*/metrics.json), mean ± std over seeds.

    python benchmarks/reproduction_table.py results/reproduction [--json]

Prints a Markdown table of test full-ranking NDCG@10 and HR@10, sampled-99 NDCG@10, best
epoch / epochs run, and CPU minutes per run; `--json` prints the per-seed values instead.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load_arms(root: Path) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*/seed*/metrics.json")):
        arms.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    return arms


def summary(runs: list[dict]) -> dict:
    def values(protocol, metric):
        return [r["metrics"][protocol]["test"][metric] for r in runs if protocol in r["metrics"]]

    return {"seeds": [r["seed"] for r in runs],
            "full_NDCG@10": values("full", "NDCG@10"), "full_HR@10": values("full", "HR@10"),
            "sampled_NDCG@10": values("sampled", "NDCG@10"),
            "best_epoch": [r["best_epoch"] for r in runs], "epochs_run": [r["epochs_run"] for r in runs],
            "early_stopped": [r.get("early_stopped") for r in runs],
            "cpu_minutes": [round(r.get("cpu_seconds", {}).get("finetune", float("nan")) / 60, 1) for r in runs]}


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
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
