"""Pure functions behind the report's results table: finished runs in, tables out.

Runs are named and ordered as in s3rec/labels.py (loss, pretraining, seed); the paired
differences are s3rec/differences.py's, the path grammar of history and checkpoint files
s3rec/run_paths.py's, the head spectra s3rec/spectra.py's.

- `load_runs`: metrics.json files -> one long frame, a row per run, protocol, split and metric,
  with each run's CPU time and whether its finetuning stopped early or at the epoch cap.
  `load_ranks`, `load_histories`: ranks.parquet and history CSVs. Every file is checked as it
  is read (s3rec/report_inputs.py): bad input is a ValueError naming the file and the field,
  line or column. A run given twice is refused by read_results, and for histories and
  checkpoints by `run_paths.check_each_run_once`, which plot_report runs on every figure's inputs.
- `summarize` / `results_table` / `results_notes`: mean and std over seeds per loss and
  pretraining; runs that hit the finetuning epoch cap are marked.
- `to_markdown` / `to_latex`: render a string table (LaTeX with booktabs rules).
Nothing here reads a config; scripts/aggregate.py does the I/O.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from s3rec.labels import PROTOCOL_LABELS, pretrained_here, pretraining_label, report_order, split_pretraining
from s3rec.metrics import METRICS_FULL
from s3rec.report_inputs import check_drawn_columns, check_result, read_history, read_json_object, read_ranks
from s3rec.run_paths import run_of_path

CAP_MARK = "†"  # after a row that has a run which hit the finetuning epoch cap
CPU_COLUMN = "CPU time (s), pretrain + finetune"
NO_LOSS = "–"  # the Finetuning cell of popularity, which was not finetuned
NOT_RECORDED = "–"  # a cell the runs did not record


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
