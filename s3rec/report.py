"""Pure functions behind the report: finished runs in, tables out.

A run is identified by (loss, pretraining, seed): `loss` is the finetuning loss (bce, ce, ...;
none for the popularity baseline) and `pretraining` the label of what it was finetuned from:
`none` (trained from scratch), `<preset>-<variant>` (pretrained here with a RunConfig preset,
e.g. seed-full, paper-r16), `authors` (the S3Rec authors' released checkpoint) or `popularity`.

- `load_runs`: metrics.json files -> one long frame, a row per run, protocol, split and metric,
  with each run's CPU time and whether its finetuning stopped early or at the epoch cap.
  `load_ranks`, `load_histories`: ranks.parquet and history CSVs. Every file is checked as it
  is read (s3rec/report_inputs.py): bad input is a ValueError naming the file and the field,
  line or column. A run given twice is refused by read_results, and for histories and
  checkpoints by `check_each_run_once`, which plot_report runs on every figure's inputs.
- `summarize` / `results_table` / `results_notes`: mean and std over seeds per loss and
  pretraining; runs that hit the finetuning epoch cap are marked.
- `comparison_pairs` / `paired_difference` / `difference_table`: differences between two
  pretrainings finetuned with the same loss (each rank against its preset's `full`; `full`
  against `none` and against `authors`), scored on the same users and seeds, with the two
  intervals of s3rec/intervals.py: a paired bootstrap over users and seeds, a t interval over seeds.
- `run_of_path` / `dataset_of`: the path grammar of history and checkpoint files, which carry
  no labels of their own.
- `to_markdown` / `to_latex`: render a string table (LaTeX with booktabs rules).
Nothing here reads a config; scripts/aggregate.py does the I/O.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from s3rec.intervals import paired_intervals
from s3rec.metrics import METRICS_FULL, per_user_metric
from s3rec.report_inputs import check_drawn_columns, check_result, read_history, read_json_object, read_ranks

# Rows shown for reference only, never compared as a variant: `authors` is finetuned from the
# S3Rec authors' released checkpoint, pretrained by their code on their data handling (which sees
# the held-out items), so it is a distance to reach, not a like-for-like variant; popularity is
# the floor and was not finetuned at all.
REFERENCE_ROWS = ("authors", "popularity")
PROTOCOL_LABELS = {"full": "full ranking", "sampled": "sampled"}  # "full" alone reads as the variant
CAP_MARK = "†"  # after a row that has a run which hit the finetuning epoch cap
CPU_COLUMN = "CPU time (s), pretrain + finetune"
NO_LOSS = "–"  # the Finetuning cell of popularity, which was not finetuned
NOT_RECORDED = "–"  # a cell the runs did not record
LOSSES = ("bce", "ce")  # shown first, in this order; other losses follow alphabetically
PRESETS = ("seed", "paper")  # likewise for the pretraining presets
_RANK = re.compile(r"^r(\d+)$")
# <preset>-<variant> for a model pretrained here: the preset is a RunConfig preset name (lowercase)
_PRETRAINED_HERE = re.compile(r"^(?P<preset>[a-z][a-z0-9_]*)-(?P<variant>full|r\d+)$")


# ---------------------------------------------------------------- labels and order


def variant_order(variant: str) -> tuple[int, int]:
    """Sort key: none, full, r<small> .. r<large>, authors, popularity, anything else."""
    if variant == "none":
        return (0, 0)
    if variant == "full":
        return (1, 0)
    match = _RANK.match(variant)
    if match:
        return (2, int(match.group(1)))
    return {"authors": (3, 0), "popularity": (4, 0)}.get(variant, (5, 0))


def variant_rank(variant: str) -> int | None:
    match = _RANK.match(variant)
    return int(match.group(1)) if match else None


def _named_order(name: str | None, first: Sequence[str]) -> tuple[int, int, str]:
    """`first` in its order, then other names alphabetically, then None."""
    if name is None:
        return (2, 0, "")
    return (0, first.index(name), "") if name in first else (1, 0, name)


def loss_order(loss: str | None) -> tuple[int, int, str]:
    """Sort key: bce, ce, other losses alphabetically, no loss (popularity) last."""
    return _named_order(loss, LOSSES)


def preset_order(preset: str | None) -> tuple[int, int, str]:
    """Sort key: seed, paper, other presets alphabetically."""
    return _named_order(preset, PRESETS)


def sort_losses(losses: Iterable[str | None]) -> list[str | None]:
    return sorted(set(losses), key=loss_order)


def sort_presets(presets: Iterable[str | None]) -> list[str]:
    return sorted({p for p in presets if p is not None}, key=preset_order)


def pretraining_label(variant: str, preset: str | None) -> str:
    """`<preset>-<variant>` for a model pretrained here, else the variant (none, authors, popularity)."""
    return f"{preset}-{variant}" if preset else variant


def split_pretraining(label: str) -> tuple[str | None, str]:
    """(preset, variant) of a pretraining label: 'paper-r16' -> ('paper', 'r16'), 'none' -> (None, 'none')."""
    match = _PRETRAINED_HERE.match(label)
    return (match["preset"], match["variant"]) if match else (None, label)


def pretrained_here(variant: str) -> bool:
    """Whether the variant is pretrained by this project (with a preset): full and r<rank>."""
    return variant == "full" or variant_rank(variant) is not None


def pretraining_order(label: str) -> tuple:
    """Sort key: none; per preset (seed, paper, others) full, r<small>..r<large>; authors; popularity."""
    preset, variant = split_pretraining(label)
    if preset is not None:
        return (1, preset_order(preset), variant_order(variant))
    group = {"none": 0, "authors": 2, "popularity": 3}.get(label, 4)
    return (group, preset_order(None), (0, 0), label)


def sort_pretrainings(labels: Iterable[str]) -> list[str]:
    return sorted(set(labels), key=pretraining_order)


def report_order(frame: pl.DataFrame, *then: str) -> pl.DataFrame:
    """`frame` sorted as the report shows it: by loss, then pretraining, then the columns `then`."""
    keys = []
    if "loss" in frame.columns:
        rank = {loss: i for i, loss in enumerate(sort_losses(frame["loss"].drop_nulls()))}
        keys.append(pl.col("loss").replace_strict(rank, default=None, return_dtype=pl.Int64))
    if "pretraining" in frame.columns:
        rank = {label: i for i, label in enumerate(sort_pretrainings(frame["pretraining"]))}
        keys.append(pl.col("pretraining").replace_strict(rank, return_dtype=pl.Int64))
    return frame.sort([*keys, *then], nulls_last=True, maintain_order=True)


# ---------------------------------------------------------------- paths


_SEED_DIR = re.compile(r"seed(\d+)")
_LOSS_DIR = re.compile(r"[a-z][a-z0-9_]*")
RUN_LAYOUT = ("<root>/<dataset>/<pretraining>/seed<S>/<file> (pretraining files), "
              "<root>/<dataset>/<pretraining>/seed<S>/<loss>/<file> (finetuning files) or "
              "<root>/<dataset>/authors/<file> (the authors' checkpoint), where <pretraining> is none, "
              "authors or <preset>-<variant> (e.g. seed-full, paper-r16) and <loss> e.g. bce or ce")


def _parse_run_path(path: Path) -> tuple[str, int | None, str | None, Path]:
    """(pretraining, seed, loss, the pretraining's folder) of a run file; ValueError off the grammar."""
    folder, loss = path.parent, None
    if not _SEED_DIR.fullmatch(folder.name) and _SEED_DIR.fullmatch(folder.parent.name):
        loss, folder = folder.name, folder.parent  # .../seed<S>/<loss>/<file>
    match = _SEED_DIR.fullmatch(folder.name)
    run, seed = (folder.parent, int(match.group(1))) if match else (folder, None)
    label = run.name
    valid = ((match is not None and (label in ("none", "authors") or _PRETRAINED_HERE.fullmatch(label)))
             or (match is None and label == "authors"))  # the seed-independent authors' checkpoint
    if not valid or (loss is not None and not _LOSS_DIR.fullmatch(loss)):
        raise ValueError(f"{path}: not a run file; expected {RUN_LAYOUT}")
    return label, seed, loss, run


def run_of_path(path: str | Path) -> tuple[str, int | None, str | None]:
    """(pretraining, seed, loss) of a history or checkpoint file, which carries no labels itself.

    .../seed-r16/seed2/pretrain_history.csv -> ('seed-r16', 2, None);
    .../seed-r16/seed2/ce/finetune_history.csv -> ('seed-r16', 2, 'ce');
    .../authors/pretrain.pt -> ('authors', None, None) (one checkpoint serves every seed).
    Any root folder above <dataset> is accepted (results/, study/, ...).
    """
    label, seed, loss, _ = _parse_run_path(Path(path))
    return label, seed, loss


def dataset_of(path: str | Path) -> str:
    """<dataset> of a file under <root>/<dataset>/: a run file (see `run_of_path`),
    popularity/<file> or report/<kind>/<file>."""
    path = Path(path)
    if path.parent.name == "popularity":
        folder = path.parent.parent
    elif path.parent.parent.name == "report":
        folder = path.parents[2]
    else:
        try:
            folder = _parse_run_path(path)[3].parent
        except ValueError:  # say the two other layouts too (a difference.csv copied elsewhere, say)
            raise ValueError(f"{path}: neither a run file nor popularity's or the report's; expected {RUN_LAYOUT}; "
                             "or <root>/<dataset>/popularity/<file>, or <root>/<dataset>/report/tables/<file> "
                             "(difference.csv)") from None
    if not folder.name:
        raise ValueError(f"{path}: no <dataset> folder above the run folder; expected {RUN_LAYOUT}")
    return folder.name


def one_dataset(paths: Sequence[str | Path]) -> str:
    """The data set of files that must all be of one (a figure's runs), or an error naming two
    files of different data sets: their runs would share labels (seed-full seed 0) in one figure."""
    first: dict[str, Path] = {}
    for path in map(Path, paths):
        first.setdefault(dataset_of(path), path)
    if len(first) > 1:
        (one, a), (two, b) = list(first.items())[:2]
        raise ValueError(f"{a} is of data set {one!r}, {b} of {two!r}; expected the runs of one data set")
    return next(iter(first))


# a run's pretraining checkpoint, and the copy of its head weights alone (scripts/export_study.py)
HEAD_CHECKPOINTS = ("pretrain.pt", "heads.pt")


def check_each_run_once(paths: Sequence[str | Path]) -> None:
    """Each run's file given once: the same file twice, or a copy of it under another root
    (results/ and study/), would be drawn twice as one run's, or as another seed's. A run's
    heads.pt holds its pretrain.pt's head weights, so the two count as one file. Popularity's
    and the report's files are not run files."""
    seen: dict[tuple, Path] = {}
    for path in map(Path, paths):
        if path.parent.name == "popularity" or path.parent.parent.name == "report":
            continue
        pretraining, seed, loss = run_of_path(path)
        kind = "pretrain.pt" if path.name in HEAD_CHECKPOINTS else path.name
        identity = (dataset_of(path), kind, pretraining, seed, loss)
        if identity in seen:
            run = f"{pretraining}" + (f" seed {seed}" if seed is not None else "") + (f", {loss}" if loss else "")
            what = "head weights" if path.name in HEAD_CHECKPOINTS else path.name
            raise ValueError(f"{seen[identity]} and {path}: both are the {what} of {run} of {identity[0]}; "
                             "expected each once")
        seen[identity] = path


# ---------------------------------------------------------------- loading


def stopping(result: dict) -> dict:
    """How a run's finetuning ended: epochs run, best epoch, the cap, and whether it hit the cap.

    `early_stopped` is read from metrics.json when recorded, else derived: a run hit the cap when
    it ran `config.finetune.epochs` epochs and did not stop by patience (epochs_run - best_epoch <
    patience). None for rows that were not finetuned (popularity) or lack the numbers.
    """
    finetune = (result.get("config") or {}).get("finetune") or {}
    epochs_run, best_epoch = result.get("epochs_run"), result.get("best_epoch")
    cap, patience = finetune.get("epochs"), finetune.get("patience")
    early = result.get("early_stopped")
    if result.get("variant") == "popularity" or not epochs_run:
        early, hit_cap = None, None
    elif isinstance(early, bool):
        hit_cap = not early
    elif None not in (cap, patience, best_epoch):
        hit_cap = epochs_run >= cap and epochs_run - best_epoch < patience
        early = not hit_cap
    else:
        hit_cap = None
    return {"epochs_run": epochs_run or None, "best_epoch": best_epoch or None, "epochs_cap": cap,
            "early_stopped": early, "hit_cap": hit_cap}


def _count(value) -> int | None:
    """A parameter count, None when not recorded."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(section, key: str) -> float | None:
    """A number of seconds from {"pretrain": s, "finetune": s}, None when not recorded."""
    value = section.get(key) if isinstance(section, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_labels(result: dict) -> dict:
    """What identifies one metrics.json (parsed): dataset, variant, seed, loss, preset, pretraining.

    The loss is the finetuning loss the run recorded (none for popularity, which was not
    finetuned); the preset is that of the pretraining config the run recorded, for the variants
    pretrained here (full, r<rank>) only: `none` was never pretrained and `authors` was pretrained
    by the authors, whatever preset its import used to describe their settings.
    """
    variant, config = result["variant"], result.get("config") or {}
    loss = None
    if variant != "popularity":
        loss = (result.get("finetune") or {}).get("loss") or (config.get("finetune") or {}).get("loss")
        if not loss:
            raise ValueError(f"{variant} seed {result.get('seed')}: no finetuning loss recorded (finetune.loss)")
    preset = None
    if pretrained_here(variant):
        preset = (config.get("pretrain") or {}).get("preset")
        if not preset:
            raise ValueError(f"{variant} seed {result.get('seed')}: no pretraining preset recorded "
                             "(config.pretrain.preset)")
    return {"dataset": result["dataset"], "variant": variant, "seed": int(result.get("seed") or 0),  # popularity: none
            "loss": loss, "preset": preset, "pretraining": pretraining_label(variant, preset)}


def read_result(path: str | Path) -> tuple[dict, dict]:
    """(metrics.json content, its `run_labels`), checked (`check_result`); errors name the file."""
    result = read_json_object(path, "at the top level")
    try:
        check_result(result)
        return result, run_labels(result)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def run_record(result: dict, labels: dict | None = None) -> list[dict]:
    """Rows of one metrics.json (already parsed): one per protocol, split and metric."""
    labels = labels or run_labels(result)
    parameters = result.get("parameters") or {}
    seconds = result.get("wall_seconds")
    cpu = result.get("cpu_seconds")  # process CPU seconds (user + sys); absent in older files
    execution = result.get("execution") or {}
    threads = execution.get("threads")
    hidden = ((result.get("config") or {}).get("model") or {}).get("hidden_size")
    common = {
        **labels,
        "hidden_size": int(hidden) if isinstance(hidden, int) else None,  # d: where `full` stands on a rank axis
        # not recorded: null (the tables' "–"), never 0
        "heads_params": _count(parameters.get("heads_total")),
        "total_params": _count(parameters.get("total")),
        "pretrain_seconds": _seconds(seconds, "pretrain"),
        "finetune_seconds": _seconds(seconds, "finetune"),
        # `authors` was pretrained elsewhere (by the authors): its pretraining time is unknown, not 0
        "pretrain_cpu_seconds": None if result["variant"] == "authors" else _seconds(cpu, "pretrain"),
        "finetune_cpu_seconds": _seconds(cpu, "finetune"),
        "device": execution.get("device"),
        "threads": int(threads) if isinstance(threads, int) else None,
        "pretrained_weights": weights if isinstance(weights := result.get("pretrained_weights_sha256"), str) else None,
        **stopping(result),
    }
    return [
        {**common, "protocol": protocol, "split": split, "metric": metric, "value": float(value)}
        for protocol, splits in result["metrics"].items()
        for split, metrics in splits.items()
        for metric, value in metrics.items()
    ]


LABEL_SCHEMA = {"dataset": pl.String, "variant": pl.String, "seed": pl.Int64, "loss": pl.String,
                "preset": pl.String, "pretraining": pl.String}
RUN_SCHEMA = {
    **LABEL_SCHEMA, "hidden_size": pl.Int64, "heads_params": pl.Int64,
    "total_params": pl.Int64, "pretrain_seconds": pl.Float64, "finetune_seconds": pl.Float64,
    "pretrain_cpu_seconds": pl.Float64, "finetune_cpu_seconds": pl.Float64, "device": pl.String, "threads": pl.Int64,
    "pretrained_weights": pl.String,
    "epochs_run": pl.Int64, "best_epoch": pl.Int64, "epochs_cap": pl.Int64, "early_stopped": pl.Boolean,
    "hit_cap": pl.Boolean, "protocol": pl.String, "split": pl.String, "metric": pl.String, "value": pl.Float64,
}


def read_results(paths: Iterable[str | Path]) -> list[tuple[Path, dict, dict]]:
    """(path, content, run_labels) of each metrics.json (`read_result`). A run given twice, or a
    copy of a run's folder (its metrics.json still says which run it is), is an error naming both
    files: it would count as another seed, or fail deep in a pivot."""
    results, seen = [], {}
    for path in map(Path, paths):
        result, labels = read_result(path)
        identity = tuple(labels[key] for key in ("dataset", "loss", "pretraining", "seed"))
        if identity in seen:
            first = seen[identity]
            run = f"{labels['pretraining']} seed {labels['seed']}" + (f", {labels['loss']}" if labels["loss"] else "")
            if first.resolve() == path.resolve():
                raise ValueError(f"{path}: given twice; expected each run's metrics.json once")
            raise ValueError(f"{first} and {path}: both are the run {run} of {labels['dataset']}; "
                             "expected each run once (a copied folder? metrics.json says which run it is)")
        seen[identity] = path
        results.append((path, result, labels))
    check_comparable(results)
    check_same_pretraining(results)
    return results


def check_same_pretraining(results: list[tuple[Path, dict, dict]]) -> None:
    """The finetunings of one pretraining and seed (its bce and ce) started from the same
    pretrained weights, where their metrics.json record which (pretrained_weights_sha256): a
    pretraining run again between them, with other weights, would be reported as one start."""
    first: dict[tuple, tuple[Path, str]] = {}
    for path, result, labels in results:
        digest = result.get("pretrained_weights_sha256")
        if not isinstance(digest, str):  # `none`, popularity, or a run from before it was recorded
            continue
        run = (labels["dataset"], labels["pretraining"], labels["seed"])
        other_path, other = first.setdefault(run, (path, digest))
        if digest != other:
            raise ValueError(f"{path}: finetuned from other pretrained weights than {other_path} (sha256 "
                             f"{digest[:12]}… here, {other[:12]}… there): {run[1]} seed {run[2]} was pretrained "
                             "again between them; finetune both from one pretrain.pt")


# What may differ between the runs of one table: the variant's rank and factorised heads, and
# eval.batch_size, which only splits the scoring into batches (the run's seed, device and threads
# sit outside these sections).
_VARYING = {"model": ("rank", "low_rank_heads"), "eval": ("batch_size",)}


def _settings(config: dict, sections: Sequence[str]) -> dict:
    return {f"{section}.{key}": value for section in sections
            for key, value in (config.get(section) or {}).items() if key not in _VARYING.get(section, ())}


def check_comparable(results: list[tuple[Path, dict, dict]]) -> None:
    """The finetunings of one data set and loss were finetuned and evaluated with the same
    settings, and the pretrainings of one preset pretrained with the same settings, as far as
    their metrics.json record them: else a mean over seeds, or a paired difference, would mix
    settings without a word (e.g. seed 0 rerun with another learning rate). The authors'
    checkpoint was pretrained elsewhere: only its finetuning is compared."""
    first: dict[tuple, tuple[Path, dict]] = {}
    for path, result, labels in results:
        config = result.get("config")
        if not labels["loss"] or not isinstance(config, dict):  # popularity; files before configs were recorded
            continue
        groups = [((labels["dataset"], labels["loss"]), ("model", "finetune", "eval"), "finetuned or evaluated")]
        if labels["preset"] and labels["pretraining"] != "authors":
            groups.append(((labels["dataset"], labels["preset"]), ("pretrain",),
                           f"pretrained (preset {labels['preset']})"))
        for group, sections, what in groups:
            settings = _settings(config, sections)
            other_path, other = first.setdefault((group, sections), (path, settings))
            differ = [f"{key} {other[key]!r} there, {settings[key]!r} here"
                      for key in sorted(settings.keys() & other.keys()) if settings[key] != other[key]]
            if differ:
                raise ValueError(f"{path}: {what} with other settings than {other_path} ({'; '.join(differ[:3])}); "
                                 "one table takes runs of one configuration: rerun the odd one, or report them apart")


def load_runs(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Long frame of every metric of every metrics.json in `paths` (columns: RUN_SCHEMA).

    Rows are in report order (loss, pretraining, seed, protocol, split, metric) whatever the
    order of `paths`, so that means over seeds, and every table made from them, are the same
    to the last bit.
    """
    rows = [row for _, result, labels in read_results(paths) for row in run_record(result, labels)]
    return report_order(pl.DataFrame(rows, schema=RUN_SCHEMA), "seed", "protocol", "split", "metric")


def load_ranks(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """ranks.parquet next to each metrics.json, labelled with the run's labels (LABEL_SCHEMA)."""
    frames = []
    for path, _, labels in read_results(metrics_paths):
        ranks = read_ranks(path.with_name("ranks.parquet"))
        frames.append(ranks.with_columns(pl.lit(value, dtype=LABEL_SCHEMA[name]).alias(name)
                                         for name, value in labels.items() if name != "dataset"))
    return pl.concat(frames, how="vertical_relaxed")


def load_histories(paths: Iterable[str | Path]) -> pl.DataFrame:
    """pretrain_history.csv or finetune_history.csv files (`read_history`), with the labels of their
    path: pretraining, preset, variant, seed and loss (the finetuning loss; null for pretraining
    histories). The files' own `loss` column, the training loss per epoch, becomes `train_loss`."""
    frames, columns = [], {"pretraining": {}, "finetuning": {}}
    for path in map(Path, paths):
        pretraining, seed, loss = run_of_path(path)
        preset, variant = split_pretraining(pretraining)
        history = read_history(path)
        columns["finetuning" if loss else "pretraining"][path] = history.columns
        if "loss" in history.columns:  # not rename(strict=False): newer than our polars bound, 1.0
            history = history.rename({"loss": "train_loss"})
        frames.append(history.with_columns(
            pl.lit(pretraining).alias("pretraining"), pl.lit(preset, dtype=pl.String).alias("preset"),
            pl.lit(variant).alias("variant"), pl.lit(seed, dtype=pl.Int64).alias("seed"),
            pl.lit(loss, dtype=pl.String).alias("loss")))
    for kind, files in columns.items():
        check_drawn_columns(kind, files)
    return report_order(pl.concat(frames, how="diagonal_relaxed"), "seed", "epoch")


def head_spectrum(state_dict: dict, head: str) -> np.ndarray | None:
    """Singular values (descending) of a head's bilinear weight: W, or U Vᵀ for a low-rank head.

    Keys end in `heads.<head>.weight` (dense) or `heads.<head>.U` / `.V` (low rank); a low-rank
    spectrum is cut at r, as the remaining values are zero. None when the head is absent.
    """
    def find(suffix):
        return next((v for k, v in state_dict.items() if k.endswith(f"heads.{head}.{suffix}")), None)

    weight, u, v = find("weight"), find("U"), find("V")
    if u is not None and v is not None:
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        return np.linalg.svd(u @ v.T, compute_uv=False)[: u.shape[1]]
    if weight is not None:
        return np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False)
    return None


def rank_energy(spectrum: Sequence[float], ranks: Iterable[int]) -> dict[int, float]:
    """Share of ‖W‖²_F that the best rank-r approximation of W keeps, per r: Σ_{i≤r} σᵢ² / Σ σᵢ².

    By Eckart–Young this is the most a rank-r factorisation U Vᵀ can keep of a dense head's
    learned W, and 1 − it is the squared relative Frobenius error of that best approximation.
    `spectrum` holds W's singular values (any order); r at or past their number gives 1.
    """
    squares = np.sort(np.asarray(spectrum, dtype=np.float64) ** 2)[::-1]
    total = squares.sum()
    if total <= 0:
        raise ValueError("rank_energy: the spectrum is all zero; W has no energy to share")
    kept = np.cumsum(squares) / total
    ranks = [int(r) for r in ranks]
    if any(r < 1 for r in ranks):
        raise ValueError(f"rank_energy: ranks must be >= 1, got {ranks}")
    return {r: float(kept[min(r, len(kept)) - 1]) for r in ranks}


# ---------------------------------------------------------------- summaries


def _mean_if_all(column: str | pl.Expr) -> pl.Expr:
    """Mean over seeds, null unless every seed recorded the value (older runs lack CPU times)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return pl.when(expr.null_count() == 0).then(expr.mean()).otherwise(None)


def summarize(runs: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Mean and std over seeds per loss, pretraining, protocol and metric (std null for one seed).

    Besides the metric: parameter counts, wall-clock and CPU seconds (means over seeds; CPU null
    when a run did not record it), the finetuning epochs, and `runs_at_cap` / `seeds_at_cap`: the
    runs whose finetuning ended at the epoch cap instead of by early stopping. Rows in report order.
    """
    at_cap = pl.col("hit_cap").fill_null(False)
    summary = (
        runs.filter(pl.col("split") == split)
        .group_by("loss", "pretraining", "preset", "variant", "protocol", "metric")
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std().alias("std"),
            pl.col("seed").n_unique().alias("seeds"),
            pl.col("heads_params").max().alias("heads_params"),  # the same for every seed
            pl.col("total_params").max().alias("total_params"),
            (pl.col("pretrain_seconds") + pl.col("finetune_seconds")).mean().alias("wall_seconds"),
            _mean_if_all("pretrain_cpu_seconds").alias("pretrain_cpu_seconds"),
            _mean_if_all("finetune_cpu_seconds").alias("finetune_cpu_seconds"),
            _mean_if_all(pl.col("pretrain_cpu_seconds") + pl.col("finetune_cpu_seconds")).alias("cpu_seconds"),
            pl.col("device").drop_nulls().unique().sort().str.join(" ").alias("devices"),
            pl.col("threads").max().alias("threads"),
            pl.col("best_epoch").mean().alias("best_epoch"),
            pl.col("epochs_run").mean().alias("epochs_run"),
            pl.col("epochs_cap").max().alias("epochs_cap"),
            at_cap.sum().cast(pl.Int64).alias("runs_at_cap"),
            pl.col("seed").filter(at_cap).sort().cast(pl.String).str.join(" ").alias("seeds_at_cap"),
        )
    )
    return report_order(summary, "protocol", "metric")


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """'0.1234 ± 0.0056'; just the mean when std is missing (one seed); '–' without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return NOT_RECORDED
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_seconds(seconds: float | None) -> str:
    """'1,234' (whole seconds from 10 s on), '4.2' below; '–' when not recorded."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return NOT_RECORDED
    return f"{seconds:,.0f}" if seconds >= 10 else f"{seconds:.1f}"


def format_count(count: int | None) -> str:
    """'1,234'; '–' when not recorded."""
    return NOT_RECORDED if count is None else f"{int(count):,}"


def format_cpu(pretrain: float | None, finetune: float | None) -> str:
    """'412 + 63': CPU seconds of pretraining and of finetuning; '–' for a part not recorded,
    '–' alone when neither was."""
    if pretrain is None and finetune is None:
        return NOT_RECORDED
    return f"{format_seconds(pretrain)} + {format_seconds(finetune)}"


def _rows(frame: pl.DataFrame) -> list[tuple[str | None, str, pl.DataFrame]]:
    """(loss, pretraining, its rows) of a summary, in report order."""
    keys = report_order(frame.select("loss", "pretraining").unique()).rows()
    return [(loss, label, frame.filter(pl.col("loss").eq_missing(loss) & (pl.col("pretraining") == label)))
            for loss, label in keys]


def results_table(summary: pl.DataFrame, metrics: Sequence[str], protocols: Sequence[str],
                  digits: int = 4) -> pl.DataFrame:
    """String table: a row per finetuning loss and pretraining; parameter counts, CPU time,
    mean ± std per metric and protocol.

    A row with a run that hit the finetuning epoch cap is marked `CAP_MARK` (see
    `results_notes` for the footnote).
    """
    rows = []
    for loss, pretraining, part in _rows(summary):
        first = part.row(0, named=True)
        row = {
            "Finetuning": loss or NO_LOSS,
            "Pretraining": pretraining + (CAP_MARK if first["runs_at_cap"] else ""),
            "Seeds": str(part["seeds"].max()),
            "Head params": format_count(first["heads_params"]),
            "Total params": format_count(first["total_params"]),
            CPU_COLUMN: format_cpu(first["pretrain_cpu_seconds"], first["finetune_cpu_seconds"]),
        }
        for protocol in protocols:
            for metric in (m for m in metrics if protocol == "sampled" or m in METRICS_FULL):  # no full AUC
                cell = part.filter((pl.col("protocol") == protocol) & (pl.col("metric") == metric))
                value = cell.row(0, named=True) if len(cell) else {"mean": None, "std": None, "seeds": None}
                label = PROTOCOL_LABELS.get(protocol, protocol)
                text = format_mean_std(value["mean"], value["std"], digits)
                if value["seeds"] is not None and value["seeds"] < part["seeds"].max():  # a run lacks the metric
                    text += f" ({value['seeds']} seeds)"
                row[f"{metric} ({label})"] = text
        rows.append(row)
    return pl.DataFrame(rows)


def results_notes(summary: pl.DataFrame) -> list[str]:
    """Footnotes of the results table: the runs that hit the finetuning epoch cap, and rows that
    are references only."""
    notes = []
    capped = summary.filter(pl.col("runs_at_cap") > 0)
    if len(capped):
        which = []
        for loss, pretraining, part in _rows(capped):
            r = part.row(0, named=True)
            plural = "s" if " " in r["seeds_at_cap"] else ""
            # "seed 3 of 1" read as a seed of a set of one: the capped seeds' ids, then how many of the runs
            which.append(f"{pretraining} with {loss} (seed{plural} {r['seeds_at_cap']}: "
                         f"{r['runs_at_cap']} of {r['seeds']} runs)")
        cap = capped["epochs_cap"].max()
        notes.append(f"{CAP_MARK} Finetuning ended at the epoch cap ({cap} epochs), not by early stopping, in: "
                     f"{'; '.join(which)}. Such a run may still have been improving: its numbers are cut short.")
    if "authors" in set(summary["pretraining"]):
        notes.append("authors: finetuned from the S3Rec authors' released pretrained checkpoint; a reference, "
                     "not a like-for-like variant (its pretraining used the authors' code and data handling, "
                     "and its time is not known).")
    return notes


def pretraining_rerun_notes(runs: pl.DataFrame) -> list[str]:
    """Footnotes for the finetunings of one pretraining and seed that record different pretraining
    times but not which weights they started from (runs before pretrained_weights_sha256 was
    recorded): two pretraining runs, whose weights may differ, behind one seed of a row. (Where
    every one records its weights, check_same_pretraining has compared them.)"""
    per_run = report_order(runs.unique(["loss", "pretraining", "seed"]).filter(
        pl.col("pretrain_seconds").is_not_null()), "seed")
    notes = []
    for pretraining, seed in per_run.select("pretraining", "seed").unique(maintain_order=True).rows():
        group = per_run.filter((pl.col("pretraining") == pretraining) & (pl.col("seed") == seed))
        if group["pretrain_seconds"].n_unique() < 2 or group["pretrained_weights"].null_count() == 0:
            continue
        times = ", ".join(f"{seconds:,.0f} s for {loss}" for loss, seconds in group.select("loss", "pretrain_seconds").rows())
        notes.append(f"{pretraining} seed {seed}: its finetunings record different pretraining runs (pretraining "
                     f"wall time {times}), not which weights they started from: they may not share one start.")
    return notes


# ---------------------------------------------------------------- paired bootstrap


def comparison_pairs(ranks: pl.DataFrame) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The comparisons of the difference table, within each finetuning loss, and those left out.

    Pairs are (loss, pretraining, reference), for every preset p with `p-full` present:
    `p-r<k>` − `p-full` (the claim under test), `p-full` − `none` (does pretraining help) and
    `p-full` − `authors` (the distance to the authors' checkpoint), each when both sides were
    finetuned with that loss. A rank whose `p-full` is missing (a partial study) is left out
    and described in the second list. Popularity, never finetuned, is in no pair.
    """
    pairs, skipped = [], []
    present = ranks.filter(pl.col("loss").is_not_null()).select("loss", "pretraining").unique()
    for loss in sort_losses(present["loss"]):
        labels = set(present.filter(pl.col("loss") == loss)["pretraining"])
        for preset in sort_presets(split_pretraining(label)[0] for label in labels):
            full = f"{preset}-full"
            ranked = [label for label in sort_pretrainings(labels)
                      if split_pretraining(label)[0] == preset and label != full]
            if full not in labels:
                skipped += [f"{label} − {full} ({loss}): no {full} finetuned with {loss}" for label in ranked]
                continue
            pairs += [(loss, full, reference) for reference in ("none", "authors") if reference in labels]
            pairs += [(loss, label, full) for label in ranked]
    return pairs, skipped


def user_scores(ranks: pl.DataFrame, loss: str, pretraining: str, protocol: str, split: str, metric: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, user_ids, values (S, U)) of one pretraining finetuned with `loss`, users sorted by id."""
    part = (ranks.filter((pl.col("loss") == loss) & (pl.col("pretraining") == pretraining)
                         & (pl.col("protocol") == protocol) & (pl.col("split") == split))
            .select("seed", "user_id", "rank"))
    if part.is_empty():
        raise ValueError(f"no ranks for {pretraining!r} finetuned with {loss!r}, protocol {protocol!r}, "
                         f"split {split!r}: the ranks.parquet of its runs ({pretraining}/seed*/{loss}/) hold none; "
                         "were they evaluated without that protocol (eval.protocols)?")
    wide = part.pivot(on="seed", index="user_id", values="rank").sort("user_id")
    seeds = np.array(sorted(int(s) for s in wide.columns if s != "user_id"))
    matrix = wide.select([str(s) for s in seeds]).to_numpy().T  # (S, U)
    if np.isnan(matrix.astype(np.float64)).any():
        counts = part.group_by("seed").agg(pl.col("user_id").n_unique().alias("users")).sort("seed")
        short = counts.filter(pl.col("users") < counts["users"].max())
        where = (f"{pretraining}/seed{short['seed'][0]}/{loss}/ranks.parquet ranks {short['users'][0]:,} users "
                 f"({protocol}, {split}), another seed {counts['users'].max():,}" if len(short) else
                 f"{pretraining}/seed*/{loss}/ranks.parquet rank as many users but not the same ones")
        raise ValueError(f"{where}: the seeds of {pretraining!r} ({loss}) did not rank the same users")
    return seeds, wide["user_id"].to_numpy(), per_user_metric(matrix, metric)


def paired_difference(ranks: pl.DataFrame, loss: str, pretraining: str, reference: str, protocol: str,
                      split: str, metric: str) -> np.ndarray:
    """(S, U) per-user metric of `pretraining` minus `reference`, both finetuned with `loss`, on
    their common seeds and users."""
    seeds_a, users_a, a = user_scores(ranks, loss, pretraining, protocol, split, metric)
    seeds_b, users_b, b = user_scores(ranks, loss, reference, protocol, split, metric)
    seeds = np.intersect1d(seeds_a, seeds_b)
    users = np.intersect1d(users_a, users_b)
    if not len(seeds) or not len(users):
        raise ValueError(f"{pretraining!r} and {reference!r} ({loss}) share no seeds or no users")
    return _select(a, seeds_a, users_a, seeds, users) - _select(b, seeds_b, users_b, seeds, users)


def _select(values: np.ndarray, seeds: np.ndarray, users: np.ndarray, keep_seeds: np.ndarray,
            keep_users: np.ndarray) -> np.ndarray:
    """Rows of `keep_seeds` and columns of `keep_users` (both sorted subsets) of a (S, U) matrix."""
    return values[np.searchsorted(seeds, keep_seeds)][:, np.searchsorted(users, keep_users)]


DIFFERENCE_SCHEMA = {
    "loss": pl.String, "pretraining": pl.String, "reference": pl.String, "protocol": pl.String,
    "split": pl.String, "metric": pl.String, "difference": pl.Float64, "ci_low": pl.Float64,
    "ci_high": pl.Float64, "seeds_ci_low": pl.Float64, "seeds_ci_high": pl.Float64, "confidence": pl.Float64,
    "seeds": pl.Int64, "users": pl.Int64,
}


def difference_table(ranks: pl.DataFrame, metric: str, protocols: Sequence[str], split: str = "test",
                     samples: int = 2000, seed: int = 0, confidence: float = 0.95,
                     resample_seeds: bool = True) -> pl.DataFrame:
    """Every pair of `comparison_pairs` per protocol: the mean difference, its paired bootstrap
    interval (ci_low, ci_high) and its t interval over seeds (seeds_ci_low, seeds_ci_high; null on
    one seed), in the order of the pairs (columns: DIFFERENCE_SCHEMA)."""
    rows = []
    for loss, pretraining, reference in comparison_pairs(ranks)[0]:
        for protocol in protocols:
            difference = paired_difference(ranks, loss, pretraining, reference, protocol, split, metric)
            rows.append({"loss": loss, "pretraining": pretraining, "reference": reference, "protocol": protocol,
                         "split": split, "metric": metric,
                         **paired_intervals(difference, samples, seed, confidence, resample_seeds),
                         "confidence": confidence, "seeds": difference.shape[0], "users": difference.shape[1]})
    return pl.DataFrame(rows, schema=DIFFERENCE_SCHEMA)


def format_difference_table(differences: pl.DataFrame, digits: int = 4) -> pl.DataFrame:
    """String table: a row per comparison ('seed-r16 − seed-full') and loss, two columns per
    protocol: 'Δ [low, high]' (bootstrap) and '[low, high]' (t over seeds; '–' on one seed)."""
    if differences.is_empty():
        return pl.DataFrame({"Finetuning": [], "Comparison": []},
                            schema={"Finetuning": pl.String, "Comparison": pl.String})
    level = f"{round(differences['confidence'][0] * 100):d}%"
    rows = {}
    for r in differences.iter_rows(named=True):  # in the order of the pairs
        row = rows.setdefault((r["loss"], r["pretraining"], r["reference"]), {
            "Finetuning": r["loss"], "Comparison": f"{r['pretraining']} − {r['reference']}"})
        label = PROTOCOL_LABELS.get(r["protocol"], r["protocol"])
        header = f"Δ{r['metric']}, {label} [{level} CI]"
        row[header] = f"{r['difference']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
        seeds_low, seeds_high = r.get("seeds_ci_low"), r.get("seeds_ci_high")
        row[f"{label}, over seeds [{level} t]"] = ("–" if seeds_low is None or seeds_high is None
                                                   else f"[{seeds_low:+.{digits}f}, {seeds_high:+.{digits}f}]")
    return pl.DataFrame(list(rows.values()))


# ---------------------------------------------------------------- rendering


# Columns that name a row rather than hold a number: left-aligned, like the first column.
LABEL_COLUMNS = ("Finetuning", "Pretraining", "Comparison")


def _left_aligned(columns: Sequence[str]) -> list[bool]:
    return [i == 0 or column in LABEL_COLUMNS for i, column in enumerate(columns)]


def to_markdown(table: pl.DataFrame) -> str:
    """GitHub Markdown table; the first column and the label columns left-aligned, the others right-aligned."""
    columns = table.columns
    cells = [[str(v) for v in row] for row in table.iter_rows()]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |",
             "|" + "|".join(":---" if left else "---:" for left in _left_aligned(columns)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "$-$", CAP_MARK: r"\textsuperscript{\dag}"}


def latex_escape(text: str) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    for symbol, latex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def to_latex(table: pl.DataFrame, caption: str | None = None, label: str | None = None,
             notes: Sequence[str] = ()) -> str:
    """A booktabs `table` environment (needs \\usepackage{booktabs}); `notes` go below the rules."""
    columns = table.columns
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    alignment = "".join("l" if left else "r" for left in _left_aligned(columns))
    lines += [r"\begin{tabular}{" + alignment + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.iter_rows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in notes:
        lines.append(r"\par\smallskip{\footnotesize " + latex_escape(note) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
