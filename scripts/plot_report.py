"""Report figures of one data set, from finished runs.

    python scripts/plot_report.py FIGURE --inputs FILE... --out FIG.png FIG.pdf [--settings JSON]

FIGURE and its inputs (paths as the workflow writes them: <root>/<dataset>/<pretraining>/seed<S>/
for pretraining files, .../seed<S>/<loss>/ for finetuning files; any <root>, e.g. results or study):
    accuracy_vs_rank      difference.csv (scripts/aggregate.py) and metrics.json of every run (+ popularity):
                          metric against rank, a line per preset, a row of panels per finetuning loss
    params_vs_accuracy    metrics.json of every run: metric against head parameters, a colour per preset
    pretrain_losses       pretrain_history.csv of every pretrained run (+ its pretrain_run.json: task
                          weights): a row of panels per preset, a column per task
    finetune_validation   finetune_history.csv and metrics.json of every run: a panel per loss, a
                          colour per pretraining, a line per seed
    head_spectra          pretrain.pt (or heads.pt) of every pretrained run and authors/pretrain.pt:
                          a line per pretraining
    data_distributions    resources/<dataset>/sequences.parquet and item_attributes.parquet
--settings is the config's `report` section plus `protocols`; the figures use metric, split
and protocols. The figure is written once per --out file, in the format of its suffix, the same bytes
for the same inputs. The log (stderr) says which inputs were read, what was drawn and how long it took.
An input that cannot be read as expected (a JSON file not an object, a history CSV empty or with a
cell that is no number or without the validation column to draw, a checkpoint unreadable or with
non-finite head weights) ends the script with exit status 2 and a message naming the file, before
anything is written.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from s3rec import cli, files, plots, report, report_inputs
from s3rec.data import ATTRIBUTES_FILE, SEQUENCES_FILE, load_dataset
from s3rec.labels import report_order, sort_pretrainings, split_pretraining, variant_rank
from s3rec.report_inputs import object_field
from s3rec.run_paths import check_each_run_once, dataset_of, one_dataset, run_of_path
from s3rec.spectra import head_spectrum

HEADS = ("aap", "mip", "map", "sp")
DEFAULTS = {"metric": "NDCG@10", "split": "test", "protocols": ["full", "sampled"]}
log = logging.getLogger("s3rec")


def named(inputs, name):
    """The inputs whose file name is `name` (or ends with it)."""
    return [p for p in inputs if Path(p).name.endswith(name)]


def required(inputs, name: str, figure: str) -> list:
    """named(), where the figure cannot be drawn without such a file: none is an error saying so."""
    found = named(inputs, name)
    if not found:
        raise ValueError(f"--inputs: no {name} among the {len(inputs)} files given; {figure} draws it (see --help)")
    return found


def finetuned(runs: pl.DataFrame, figure: str) -> pl.DataFrame:
    """The finetuned runs of a load_runs frame (not popularity): none is an error, not an empty figure."""
    found = runs.filter(pl.col("loss").is_not_null())
    if found.is_empty():
        raise ValueError(f"--inputs: no finetuned run among the metrics.json given ({runs_drawn(runs) or 'none'}); "
                         f"{figure} sets finetuned runs against each other")
    return found


def runs_drawn(frame: pl.DataFrame) -> str:
    """'bce: none seeds 0 1, seed-full seeds 0 1; ce: ...; popularity' of a frame with loss,
    pretraining and seed columns (a null loss: a run that was not finetuned)."""
    seeds = report_order(frame.group_by("loss", "pretraining").agg(pl.col("seed").unique().sort()))
    parts: dict[str, list[str]] = {}
    for r in seeds.iter_rows(named=True):
        drawn = r["pretraining"]
        if r["pretraining"] != "popularity":
            drawn += f" seed{'s' if len(r['seed']) > 1 else ''} {' '.join(map(str, r['seed']))}"
        parts.setdefault(r["loss"] or "", []).append(drawn)
    return "; ".join(f"{loss}: {', '.join(drawn)}" if loss else ", ".join(drawn) for loss, drawn in parts.items())


def accuracy_vs_rank(inputs, s):
    differences = pl.concat([pl.read_csv(p) for p in required(inputs, ".csv", "accuracy_vs_rank")],
                            how="diagonal_relaxed")
    differences = differences.filter((pl.col("metric") == s["metric"]) & (pl.col("split") == s["split"]))
    runs = report.load_runs(required(inputs, "metrics.json", "accuracy_vs_rank"))
    finetuned(runs, "accuracy_vs_rank")
    compared = ", ".join(f"{r['pretraining']} − {r['reference']} ({r['loss']})" for r in
                         differences.unique(["loss", "pretraining", "reference"], maintain_order=True)
                         .iter_rows(named=True)) or "none"
    drawn = (f"{s['metric']} ({s['split']}) mean ± std against the rank per loss and protocol {s['protocols']} "
             f"of {runs_drawn(runs)}; bootstrap and t intervals over seeds of {compared}")
    return plots.accuracy_vs_rank(differences, runs, s["metric"], s["split"], s["protocols"]), drawn


def params_vs_accuracy(inputs, s):
    runs = finetuned(report.load_runs(required(inputs, "metrics.json", "params_vs_accuracy")), "params_vs_accuracy")
    drawable = plots.on_parameter_axis(runs)
    uncounted = plots.on_parameter_axis(runs, counted=False)
    if len(uncounted):
        log.warning("params_vs_accuracy: left out, no parameter count recorded in their metrics.json: %s",
                    runs_drawn(uncounted))
    if drawable.is_empty():
        raise ValueError("--inputs: no run with a recorded parameter count (metrics.json `parameters`) to draw")
    drawn = f"{s['metric']} ({s['split']}) mean ± std against head parameters: {runs_drawn(drawable)}"
    return plots.params_vs_accuracy(runs, s["metric"], s["split"], s["protocols"]), drawn


def pretrain_losses(inputs, s):
    histories = required(inputs, "pretrain_history.csv", "pretrain_losses")
    weights = {}
    for path in histories:
        run_file = Path(path).with_name("pretrain_run.json")
        if run_file.exists():
            weights[run_of_path(path)[0]] = task_weights(run_file)
    history = report.load_histories(histories)
    weights = {label: weights[label] for label in sort_pretrainings(weights)}
    drawn = (f"{history.height} epochs of {len(histories)} runs "
             f"({runs_drawn(history.unique(['pretraining', 'seed']))}), tasks "
             f"{[t for t in plots.TASK_TITLES if t in history.columns]}; weights {weights or 'not recorded'}")
    return plots.pretrain_losses(history, weights, dataset=dataset_of(histories[0])), drawn


def task_weights(path: Path) -> dict[str, float]:
    """The task weights a pretrain_run.json records (config.pretrain.<task>_weight; absent ones left out)."""
    config = report_inputs.read_json_object(path).get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config: expected an object (the run's settings), got {config!r}")
    pretrain = config.get("pretrain", {})
    if not isinstance(pretrain, dict):
        raise ValueError(f"{path}: config.pretrain: expected an object (the pretraining settings), got {pretrain!r}")
    weights = {h: pretrain[f"{h}_weight"] for h in HEADS if f"{h}_weight" in pretrain}
    for head, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ValueError(f"{path}: config.pretrain.{head}_weight: expected a number, got {weight!r}")
    return weights


RUN_STOPS = {"pretraining": pl.String, "loss": pl.String, "seed": pl.Int64, "epochs_run": pl.Int64,
             "best_epoch": pl.Int64, "epochs_cap": pl.Int64, "early_stopped": pl.Boolean, "hit_cap": pl.Boolean}


def finetune_validation(inputs, s):
    history = report.load_histories(required(inputs, "finetune_history.csv", "finetune_validation"))
    metrics_files = named(inputs, "metrics.json") or [Path(p).with_name("metrics.json")
                                                       for p in named(inputs, "finetune_history.csv")]
    # read_results: the runs of one loss finetuned with one setting (report.check_comparable)
    results = report.read_results(sorted(p for p in map(str, metrics_files) if Path(p).exists()))
    runs = pl.DataFrame([{"pretraining": labels["pretraining"], "loss": labels["loss"], "seed": labels["seed"],
                          **report.stopping(result)} for _, result, labels in results], schema=RUN_STOPS)
    # Per loss, the metric and protocol early stopping followed (the valid_ columns are of that
    # protocol, and the best epoch is that metric's maximum); the report's metric, full ranking,
    # where the runs do not say.
    followed = {}
    for _, result, labels in results:
        finetune = object_field(object_field(result, "config"), "finetune")
        metric = finetune.get("early_stopping_metric")
        followed[labels["loss"]] = ((metric if f"valid_{metric}" in history.columns else s["metric"]),
                                    finetune.get("early_stopping_protocol") or "full")
    check_validation_columns(history, followed, s["metric"], named(inputs, "finetune_history.csv"))
    dataset = dataset_of(named(inputs, "finetune_history.csv")[0])
    capped = report_order(runs.filter(pl.col("hit_cap").fill_null(False)), "seed")
    at_cap = ", ".join(f"{label} ({loss}) seed {seed}" for label, loss, seed in
                       capped.select("pretraining", "loss", "seed").rows())
    which = "; ".join(f"{loss}: {metric} ({protocol})" for loss, (metric, protocol) in sorted(followed.items()))
    drawn = (f"validation metric per epoch ({which or s['metric']}) of {history.height} epochs, runs "
             f"{runs_drawn(history.unique(['loss', 'pretraining', 'seed']))}; at the epoch cap: {at_cap or 'none'}")
    return plots.finetune_validation(history, runs, followed, dataset=dataset, default=(s["metric"], "full")), drawn


def check_validation_columns(history, followed, metric, paths):
    """Each loss's panel draws valid_<metric> (the one its runs followed, else the report's): a
    history without it is bad input, named, not a polars ColumnNotFoundError from the drawing.
    The histories drawn together hold the same valid_ columns (report.load_histories checks)."""
    for loss in sorted(set(history["loss"].drop_nulls())):
        column = f"valid_{followed.get(loss, (metric,))[0]}"
        if column not in history.columns:
            path = next(p for p in paths if run_of_path(p)[2] == loss)
            held = [c for c in history.columns if c.startswith("valid_")]
            raise ValueError(f"{path}: no column {column!r} to draw (no metrics.json beside it names an early-"
                             f"stopping metric it holds, so the report's metric {metric} is drawn); expected it "
                             f"among its validation columns: {', '.join(held) or 'none'}")


def head_spectra(inputs, s):
    """Spectra of the heads factorised in at least one run (AAP and MAP by default), from
    pretrain.pt or heads.pt (the same format, holding only the head tensors)."""
    rows = []
    checkpoints = {path: report_inputs.read_head_weights(path) for path in inputs}
    low_rank = {h for state in checkpoints.values() for h in HEADS
                if any(k.endswith(f"heads.{h}.U") for k in state)} or {"aap", "map"}
    heads = sorted(low_rank, key=HEADS.index)
    for path, state in checkpoints.items():
        pretraining, seed, _ = run_of_path(path)
        for head in heads:
            report_inputs.check_head_finite(path, state, head)
            values = head_spectrum(state, head)
            if values is None:
                log.warning("%s has no %s head: left out", path, head)
                continue
            # the authors' checkpoint serves every seed: one spectrum, drawn as seed 0
            rows += [{"pretraining": pretraining, "seed": seed or 0, "head": head, "index": i + 1, "value": float(v)}
                     for i, v in enumerate(values)]
    spectra = report_order(pl.DataFrame(rows), "seed", "head", "index")
    ranks = sorted({r for r in (variant_rank(split_pretraining(label)[1])
                                for label in spectra["pretraining"].unique()) if r is not None})
    models = spectra.unique(["pretraining", "seed"]).with_columns(loss=pl.lit(None, pl.String))
    drawn = (f"normalised singular values and cumulative energy of heads {heads} from {len(checkpoints)} "
             f"checkpoints: {runs_drawn(models)}")
    return plots.head_spectra(spectra, ranks, dataset=dataset_of(inputs[0])), drawn


def data_distributions(inputs, s):
    """sequences.parquet and item_attributes.parquet of one prepared data set, read and checked
    as training reads them (load_dataset): two files of two data sets would draw neither."""
    paths = [Path(p) for p in inputs]
    folders = {path.parent for path in paths}
    if sorted(path.name for path in paths) != sorted((SEQUENCES_FILE, ATTRIBUTES_FILE)) or len(folders) != 1:
        raise ValueError(f"data_distributions: expected {SEQUENCES_FILE} and {ATTRIBUTES_FILE} of one prepared "
                         f"data set (one folder), got {', '.join(map(str, paths))}")
    folder = folders.pop()
    dataset = load_dataset(folder)
    lengths = np.array([len(sequence) for sequence in dataset.sequences])
    counts = np.bincount(np.concatenate(dataset.sequences), minlength=dataset.num_items + 1)[1:]
    per_item = np.array([len(np.unique(attributes)) for attributes in dataset.item_attributes[1:]])
    drawn = (f"{len(lengths):,} sequence lengths (median {np.median(lengths):.0f}, max {lengths.max()}), "
             f"popularity of {len(counts):,} items, attributes per item (mean {per_item.mean():.2f})")
    return plots.data_distributions(lengths, counts, per_item, name=folder.name), drawn


FIGURES = {f.__name__: f for f in (accuracy_vs_rank, params_vs_accuracy, pretrain_losses, finetune_validation,
                                   head_spectra, data_distributions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=sorted(FIGURES))
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--out", nargs="+", required=True, type=Path, help="e.g. FIG.png FIG.pdf")
    parser.add_argument("--settings", type=cli.json_object, default={})
    args = parser.parse_args(argv)
    formats = plots.figure_formats()  # checked before drawing: else a traceback after it
    for out in args.out:
        if out.suffix.lower().lstrip(".") not in formats:
            parser.error(f"--out {out}: expected a file name ending in a figure format ({', '.join(formats)})")
    if len(set(args.out)) < len(args.out):
        parser.error(f"--out: a file given twice in {' '.join(map(str, args.out))}")
    cli.setup_logging()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:  # the keys the figures read, as the workflow's schema constrains them: a typo drew blank panels
        unknown = sorted(set(args.settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"--settings: unknown key {unknown[0]!r}; the figures read {sorted(DEFAULTS)}")
        report_inputs.check_report_settings(args.settings, "--settings")
        for out in args.out:  # before drawing: else a failed write after the first format's file
            cli.check_destination(out, "--out")
    except ValueError as error:
        parser.error(str(error))
    settings = {**DEFAULTS, **args.settings}
    folders = sorted({str(Path(p).parent) for p in args.inputs})
    log.info("%s from %d input files in %d folders: %s", args.figure, len(args.inputs), len(folders),
             ", ".join(folders) if len(folders) <= 4 else f"{folders[0]} ... {folders[-1]}")
    log.info("settings: %s", json.dumps(settings, sort_keys=True))
    with cli.clear_errors():
        if args.figure != "data_distributions":  # the others draw runs: of one data set, each once
            one_dataset(args.inputs)
            check_each_run_once(args.inputs)
        fig, drawn = FIGURES[args.figure](args.inputs, settings)
        log.info("drew %s", drawn)
        for out in args.out:  # through a temporary name: a killed run leaves no half-written figure
            files.atomic_write(out, lambda tmp, out=out: plots.save_figure(fig, tmp, suffix=out.suffix))
            log.info("wrote %s (%d bytes)", out, out.stat().st_size)
    log.info("done in %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
