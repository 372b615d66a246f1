"""Tables of one data set from its finished runs: results and differences to `full`.

    python scripts/aggregate.py --metrics results/D/*/seed*/metrics.json results/D/popularity/metrics.json \
        --out-dir results/D/report/tables [--settings JSON]

Reads each metrics.json and the ranks.parquet beside it. Writes, as .csv, .md and .tex (booktabs):
- results: a row per variant (none, full, r<rank>..., popularity): seeds, head and total
  parameters, training time, mean ± std over seeds of the chosen metrics per protocol. The CSV
  holds the numbers (mean, std per variant, protocol and metric), the .md/.tex the formatted table.
- difference: every trained variant minus `full` in the per-user metric, with a paired
  bootstrap interval over users (and seeds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s3rec import report

DEFAULTS = {
    "split": "test", "metrics": ["HR@10", "NDCG@10", "MRR"], "metric": "NDCG@10",
    "protocols": ["full", "sampled"], "bootstrap_samples": 2000, "bootstrap_seed": 0,
    "confidence": 0.95, "resample_seeds": True,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics.json of every run")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--settings", type=json.loads, default={}, help="JSON: the config's `report` section")
    args = parser.parse_args(argv)
    unknown = set(args.settings) - set(DEFAULTS)
    if unknown:
        parser.error(f"--settings: unknown key {sorted(unknown)[0]!r}; expected {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **args.settings}

    runs = report.load_runs(args.metrics)
    dataset = runs["dataset"][0]
    summary = report.summarize(runs, split=s["split"])
    ranks = report.load_ranks(args.metrics)
    differences = report.difference_table(
        ranks, metric=s["metric"], protocols=s["protocols"], split=s["split"], samples=s["bootstrap_samples"],
        seed=s["bootstrap_seed"], confidence=s["confidence"], resample_seeds=s["resample_seeds"])

    seeds_note = "re-sampling users and seeds" if s["resample_seeds"] else "re-sampling users"
    captions = {
        "results": f"{dataset}, {s['split']} split: mean ± std over seeds. Head params: parameters of "
                   "the four pretraining heads; train time: pretraining + finetuning wall clock.",
        "difference": f"{dataset}, {s['split']} split: per-user {s['metric']} of each variant minus "
                      f"full, averaged over users and seeds, with a {round(s['confidence'] * 100)}% "
                      f"paired bootstrap interval ({s['bootstrap_samples']} resamples, {seeds_note}).",
    }
    tables = {
        "results": (summary, report.results_table(summary, s["metrics"], s["protocols"])),
        "difference": (differences, report.format_difference_table(differences)),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, (numbers, pretty) in tables.items():
        numbers.write_csv(args.out_dir / f"{name}.csv")
        (args.out_dir / f"{name}.md").write_text(f"{captions[name]}\n\n{report.to_markdown(pretty)}")
        (args.out_dir / f"{name}.tex").write_text(
            report.to_latex(pretty, caption=captions[name], label=f"tab:{dataset}-{name}"))
        print(f"{name}:\n{report.to_markdown(pretty)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
