"""Report figures of one data set, from finished runs.

    python scripts/plot_report.py FIGURE --inputs FILE... --out FIG.png FIG.pdf [--settings JSON]

FIGURE and its inputs:
    accuracy_vs_rank      difference.csv (scripts/aggregate.py) and metrics.json of every run (+ popularity)
    params_vs_accuracy    metrics.json of every run
    pretrain_losses       pretrain_history.csv of every pretrained run (+ its pretrain_run.json: task weights)
    finetune_validation   finetune_history.csv and metrics.json of every run
    head_spectra          pretrain.pt of every pretrained run
    data_distributions    resources/<dataset>/sequences.parquet and item_attributes.parquet
--settings is the config's `report` section plus `protocols`; the figures use metric, split
and protocols. The figure is written once per --out file, in the format of its suffix. The log
(stderr) says which inputs were read, what was drawn and how long it took.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from s3rec import plots, report, runtime

HEADS = ("aap", "mip", "map", "sp")
DEFAULTS = {"metric": "NDCG@10", "split": "test", "protocols": ["full", "sampled"]}
log = logging.getLogger("s3rec")


def named(inputs, name):
    """The inputs whose file name is `name` (or ends with it)."""
    return [p for p in inputs if Path(p).name.endswith(name)]


def dataset_of(path) -> str:
    """<dataset> of results/<dataset>/...; else the folder three levels up (<dataset>/<variant>/seed<S>/)."""
    parts = Path(path).parts
    if "results" in parts[:-2]:
        return parts[parts.index("results") + 1]
    return Path(path).parents[2].name


def runs_drawn(runs: pl.DataFrame) -> str:
    """'full seeds 0 1; r8 seeds 0 1; ...' of a load_runs frame."""
    seeds = runs.group_by("variant").agg(pl.col("seed").unique().sort())
    order = {v: i for i, v in enumerate(report.sort_variants(seeds["variant"]))}
    return "; ".join(f"{r['variant']} seed{'s' if len(r['seed']) > 1 else ''} {' '.join(map(str, r['seed']))}"
                     for r in seeds.sort(pl.col("variant").replace_strict(order, return_dtype=pl.Int64))
                     .iter_rows(named=True))


def accuracy_vs_rank(inputs, s):
    differences = pl.concat([pl.read_csv(p) for p in named(inputs, ".csv")], how="diagonal_relaxed")
    differences = differences.filter((pl.col("metric") == s["metric"]) & (pl.col("split") == s["split"]))
    runs = report.load_runs(named(inputs, "metrics.json"))
    drawn = (f"Δ{s['metric']} ({s['split']}) vs full with bootstrap intervals of "
             f"{', '.join(report.sort_variants(differences['variant']))} per protocol {s['protocols']}; "
             f"per-seed points of {runs_drawn(runs)}")
    return plots.accuracy_vs_rank(differences, runs, s["metric"], s["split"], s["protocols"]), drawn


def params_vs_accuracy(inputs, s):
    runs = report.load_runs(inputs)
    drawn = f"{s['metric']} ({s['split']}) mean ± std against head parameters: {runs_drawn(runs)}"
    return plots.params_vs_accuracy(runs, s["metric"], s["split"], s["protocols"]), drawn


def pretrain_losses(inputs, s):
    histories = named(inputs, "pretrain_history.csv")
    weights = {}
    for path in histories:
        run_file = Path(path).with_name("pretrain_run.json")
        if run_file.exists():
            pretrain = json.loads(run_file.read_text()).get("config", {}).get("pretrain", {})
            weights[report.run_of_path(path)[0]] = {h: pretrain[f"{h}_weight"] for h in HEADS
                                                     if f"{h}_weight" in pretrain}
    history = report.load_histories(histories)
    drawn = (f"{history.height} epochs of {len(histories)} runs, tasks "
             f"{[t for t in plots.TASK_TITLES if t in history.columns]}; weights {weights or 'not recorded'}")
    return plots.pretrain_losses(history, weights, dataset=dataset_of(histories[0])), drawn


def finetune_validation(inputs, s):
    history = report.load_histories(named(inputs, "finetune_history.csv"))
    metrics_files = named(inputs, "metrics.json") or [Path(p).with_name("metrics.json")
                                                       for p in named(inputs, "finetune_history.csv")]
    results = [json.loads(Path(p).read_text()) for p in metrics_files if Path(p).exists()]
    runs = pl.DataFrame([{"variant": r["variant"], "seed": int(r.get("seed") or 0), **report.stopping(r)}
                         for r in results], schema={
        "variant": pl.String, "seed": pl.Int64, "epochs_run": pl.Int64, "best_epoch": pl.Int64,
        "epochs_cap": pl.Int64, "early_stopped": pl.Boolean, "hit_cap": pl.Boolean})
    # The metric early stopping followed (the best epoch is its maximum), else the report's.
    chosen = {(r.get("config") or {}).get("finetune", {}).get("early_stopping_metric") for r in results} - {None}
    metric = chosen.pop() if len(chosen) == 1 else s["metric"]
    if f"valid_{metric}" not in history.columns:
        metric = s["metric"]
    dataset = dataset_of(named(inputs, "finetune_history.csv")[0])
    capped = runs.filter(pl.col("hit_cap").fill_null(False))
    drawn = (f"validation {metric} per epoch of {history.height} epochs, runs {runs_drawn(history)}; "
             f"at the epoch cap: {', '.join(f'{v} seed {n}' for v, n in capped.select('variant', 'seed').rows()) or 'none'}")
    return plots.finetune_validation(history, runs, metric, dataset=dataset), drawn


def checkpoint_run(path) -> tuple[str, int]:
    """(variant, seed) of a pretrain.pt: results/D/<variant>/seed<S>/ or, for a seed-independent
    checkpoint (authors), results/D/<variant>/ (seed 0)."""
    path = Path(path)
    if re.fullmatch(r"seed\d+", path.parent.name):
        return report.run_of_path(path)
    return path.parent.name, 0


def head_spectra(inputs, s):
    """Spectra of the heads factorised in at least one run (AAP and MAP by default)."""
    import torch  # here only: importing it costs every other figure two seconds

    rows = []
    checkpoints = {path: torch.load(path, map_location="cpu", weights_only=True) for path in inputs}
    low_rank = {h for c in checkpoints.values() for h in HEADS
                if any(k.endswith(f"heads.{h}.U") for k in c["state_dict"])} or {"aap", "map"}
    for path, checkpoint in checkpoints.items():
        variant, seed = checkpoint_run(path)
        for head in sorted(low_rank, key=HEADS.index):
            values = report.head_spectrum(checkpoint["state_dict"], head)
            if values is None:
                log.warning("%s has no %s head: left out", path, head)
                continue
            rows += [{"variant": variant, "seed": seed, "head": head, "index": i + 1, "value": float(v)}
                     for i, v in enumerate(values)]
    spectra = pl.DataFrame(rows)
    ranks = sorted({r for r in map(report.variant_rank, spectra["variant"].unique()) if r is not None})
    drawn = (f"normalised singular values and cumulative energy of heads {sorted(low_rank, key=HEADS.index)} "
             f"from {len(checkpoints)} checkpoints: {runs_drawn(spectra)}")
    return plots.head_spectra(spectra, ranks, dataset=dataset_of(inputs[0])), drawn


def data_distributions(inputs, s):
    sequences_path, attributes_path = (Path(p) for p in inputs)
    items = pl.read_parquet(sequences_path)["items"]
    attributes = pl.read_parquet(attributes_path)
    lengths = items.list.len().to_numpy()
    counts = np.bincount(items.explode().to_numpy(), minlength=len(attributes) + 1)[1:]
    per_item = attributes["attributes"].list.unique().list.len().to_numpy()
    drawn = (f"{len(lengths):,} sequence lengths (median {np.median(lengths):.0f}, max {lengths.max()}), "
             f"popularity of {len(counts):,} items, attributes per item (mean {per_item.mean():.2f})")
    return plots.data_distributions(lengths, counts, per_item, name=sequences_path.parent.name), drawn


FIGURES = {f.__name__: f for f in (accuracy_vs_rank, params_vs_accuracy, pretrain_losses, finetune_validation,
                                   head_spectra, data_distributions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=sorted(FIGURES))
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--out", nargs="+", required=True, type=Path, help="e.g. FIG.png FIG.pdf")
    parser.add_argument("--settings", type=json.loads, default={})
    args = parser.parse_args(argv)
    runtime.setup_logging()
    started, cpu_started = time.perf_counter(), time.process_time()
    settings = {**DEFAULTS, **args.settings}
    folders = sorted({str(Path(p).parent) for p in args.inputs})
    log.info("%s from %d input files in %d folders: %s", args.figure, len(args.inputs), len(folders),
             ", ".join(folders) if len(folders) <= 4 else f"{folders[0]} ... {folders[-1]}")
    log.info("settings: %s", json.dumps(settings, sort_keys=True))
    fig, drawn = FIGURES[args.figure](args.inputs, settings)
    log.info("drew %s", drawn)
    for out in args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150)
        log.info("wrote %s (%d bytes)", out, out.stat().st_size)
    log.info("done in %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
