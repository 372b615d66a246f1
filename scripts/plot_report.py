"""Report figures of one data set, from finished runs.

    python scripts/plot_report.py FIGURE --inputs FILE... --out FIG.png FIG.pdf [--settings JSON]

FIGURE and its inputs:
    accuracy_vs_rank      metrics.json of every run (+ popularity)
    params_vs_accuracy    metrics.json of every run
    pretrain_losses       pretrain_history.csv of every pretrained run
    finetune_validation   finetune_history.csv of every run
    head_spectra          pretrain.pt of every pretrained run
    data_distributions    resources/<dataset>/sequences.parquet and item_attributes.parquet
--settings is the config's `report` section plus `protocols`; the figures use metric, split
and protocols (finetune_validation: the validation column of `metric`).
The figure is written once per --out file, in the format of its suffix.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from s3rec import plots, report

HEADS = ("aap", "mip", "map", "sp")
DEFAULTS = {"metric": "NDCG@10", "split": "test", "protocols": ["full", "sampled"]}


def accuracy_vs_rank(inputs, s):
    return plots.accuracy_vs_rank(report.load_runs(inputs), s["metric"], s["split"], s["protocols"])


def params_vs_accuracy(inputs, s):
    return plots.params_vs_accuracy(report.load_runs(inputs), s["metric"], s["split"], s["protocols"])


def pretrain_losses(inputs, s):
    return plots.pretrain_losses(report.load_histories(inputs))


def finetune_validation(inputs, s):
    return plots.finetune_validation(report.load_histories(inputs), s["metric"])


def head_spectra(inputs, s):
    """Spectra of the heads factorised in at least one run (AAP and MAP by default)."""
    import torch  # here only: importing it costs every other figure two seconds

    rows = []
    checkpoints = {path: torch.load(path, map_location="cpu", weights_only=True) for path in inputs}
    low_rank = {h for c in checkpoints.values() for h in HEADS
                if any(k.endswith(f"heads.{h}.U") for k in c["state_dict"])} or {"aap", "map"}
    for path, checkpoint in checkpoints.items():
        variant, seed = report.run_of_path(path)
        for head in sorted(low_rank, key=HEADS.index):
            values = report.head_spectrum(checkpoint["state_dict"], head)
            rows += [{"variant": variant, "seed": seed, "head": head, "index": i + 1, "value": float(v)}
                     for i, v in enumerate(values)]
    return plots.head_spectra(pl.DataFrame(rows))


def data_distributions(inputs, s):
    sequences_path, attributes_path = (Path(p) for p in inputs)
    items = pl.read_parquet(sequences_path)["items"]
    attributes = pl.read_parquet(attributes_path)
    lengths = items.list.len().to_numpy()
    counts = np.bincount(items.explode().to_numpy(), minlength=len(attributes) + 1)[1:]
    per_item = attributes["attributes"].list.unique().list.len().to_numpy()
    return plots.data_distributions(lengths, counts, per_item, name=sequences_path.parent.name)


FIGURES = {f.__name__: f for f in (accuracy_vs_rank, params_vs_accuracy, pretrain_losses, finetune_validation,
                                   head_spectra, data_distributions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=sorted(FIGURES))
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--out", nargs="+", required=True, type=Path, help="e.g. FIG.png FIG.pdf")
    parser.add_argument("--settings", type=json.loads, default={})
    args = parser.parse_args(argv)
    settings = {**DEFAULTS, **args.settings}
    fig = FIGURES[args.figure](args.inputs, settings)
    for out in args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150)
    return 0


if __name__ == "__main__":
    sys.exit(main())
