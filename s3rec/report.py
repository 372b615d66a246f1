"""Pure functions behind the report: finished runs in, tables out.

- `load_runs`: metrics.json files -> one long frame, a row per run, protocol, split and metric,
  with each run's CPU time and whether its finetuning stopped early or at the epoch cap.
- `summarize` / `results_table` / `results_notes`: mean and std over seeds per variant; runs that
  hit the finetuning epoch cap are marked.
- `user_scores` / `paired_bootstrap` / `difference_table`: the difference of each variant to
  a reference (`full`) with a bootstrap interval over users (and seeds), paired: both variants
  are scored on the same users (and the same seeds) in every resample.
- `to_markdown` / `to_latex`: render a string table (LaTeX with booktabs rules).
Nothing here reads a path grammar or config; scripts/aggregate.py does the I/O.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from s3rec.metrics import per_user_metric

REFERENCE = "full"
# Rows shown for reference only: not compared with `full` (difference table, accuracy figures).
# `authors` is finetuned from the S3Rec authors' released checkpoint, pretrained by their code
# on their data handling (which sees the held-out items), so it is not a like-for-like variant.
REFERENCE_ROWS = ("authors", "popularity")
PROTOCOL_LABELS = {"full": "full ranking", "sampled": "sampled"}  # "full" alone reads as the variant
CAP_MARK = "†"  # after a variant that has a run which hit the finetuning epoch cap
CPU_COLUMN = "CPU time (s), pretrain + finetune"
_RANK = re.compile(r"^r(\d+)$")


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


def sort_variants(variants: Iterable[str]) -> list[str]:
    return sorted(set(variants), key=variant_order)


def variant_rank(variant: str) -> int | None:
    match = _RANK.match(variant)
    return int(match.group(1)) if match else None


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


def _seconds(section, key: str) -> float | None:
    """A number of seconds from {"pretrain": s, "finetune": s}, None when not recorded."""
    value = section.get(key) if isinstance(section, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_record(result: dict) -> list[dict]:
    """Rows of one metrics.json (already parsed): one per protocol, split and metric."""
    parameters = result.get("parameters", {})
    seconds = result.get("wall_seconds", {})
    cpu = result.get("cpu_seconds")  # process CPU seconds (user + sys); absent in older files
    execution = result.get("execution") or {}
    threads = execution.get("threads")
    common = {
        "dataset": result["dataset"],
        "variant": result["variant"],
        "seed": int(result.get("seed") or 0),
        "heads_params": int(parameters.get("heads_total", 0)),
        "total_params": int(parameters.get("total", 0)),
        "pretrain_seconds": float(seconds.get("pretrain", 0.0)),
        "finetune_seconds": float(seconds.get("finetune", 0.0)),
        # `authors` was pretrained elsewhere (by the authors): its pretraining time is unknown, not 0
        "pretrain_cpu_seconds": None if result["variant"] == "authors" else _seconds(cpu, "pretrain"),
        "finetune_cpu_seconds": _seconds(cpu, "finetune"),
        "device": execution.get("device"),
        "threads": int(threads) if isinstance(threads, int) else None,
        **stopping(result),
    }
    return [
        {**common, "protocol": protocol, "split": split, "metric": metric, "value": float(value)}
        for protocol, splits in result["metrics"].items()
        for split, metrics in splits.items()
        for metric, value in metrics.items()
    ]


RUN_SCHEMA = {
    "dataset": pl.String, "variant": pl.String, "seed": pl.Int64, "heads_params": pl.Int64,
    "total_params": pl.Int64, "pretrain_seconds": pl.Float64, "finetune_seconds": pl.Float64,
    "pretrain_cpu_seconds": pl.Float64, "finetune_cpu_seconds": pl.Float64, "device": pl.String, "threads": pl.Int64,
    "epochs_run": pl.Int64, "best_epoch": pl.Int64, "epochs_cap": pl.Int64, "early_stopped": pl.Boolean,
    "hit_cap": pl.Boolean, "protocol": pl.String, "split": pl.String, "metric": pl.String, "value": pl.Float64,
}


def load_runs(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Long frame of every metric of every metrics.json in `paths` (columns: RUN_SCHEMA)."""
    rows = [row for path in paths for row in run_record(json.loads(Path(path).read_text()))]
    return pl.DataFrame(rows, schema=RUN_SCHEMA)


def load_ranks(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """ranks.parquet next to each metrics.json, labelled with the run's variant and seed."""
    frames = []
    for path in metrics_paths:
        result = json.loads(Path(path).read_text())
        ranks = pl.read_parquet(Path(path).with_name("ranks.parquet"))
        frames.append(ranks.with_columns(
            pl.lit(result["variant"]).alias("variant"),
            pl.lit(int(result.get("seed") or 0), dtype=pl.Int64).alias("seed"),
        ))
    return pl.concat(frames, how="vertical_relaxed")


def run_of_path(path: str | Path) -> tuple[str, int]:
    """(variant, seed) of a file results/<dataset>/<variant>/seed<seed>/<file>."""
    path = Path(path)
    match = re.fullmatch(r"seed(\d+)", path.parent.name)
    if not match:
        raise ValueError(f"{path}: expected a file in .../<variant>/seed<seed>/")
    return path.parent.parent.name, int(match.group(1))


def load_histories(paths: Iterable[str | Path]) -> pl.DataFrame:
    """pretrain_history.csv or finetune_history.csv files, with variant and seed columns."""
    frames = []
    for path in paths:
        variant, seed = run_of_path(path)
        frames.append(pl.read_csv(path).with_columns(pl.lit(variant).alias("variant"),
                                                     pl.lit(seed, dtype=pl.Int64).alias("seed")))
    return pl.concat(frames, how="diagonal_relaxed")


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


# ---------------------------------------------------------------- summaries


def _mean_if_all(column: str | pl.Expr) -> pl.Expr:
    """Mean over seeds, null unless every seed recorded the value (older runs lack CPU times)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return pl.when(expr.null_count() == 0).then(expr.mean()).otherwise(None)


def summarize(runs: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Mean and std over seeds per variant, protocol and metric (std is null for one seed).

    Besides the metric: parameter counts, wall-clock and CPU seconds (means over seeds; CPU null
    when a run did not record it), the finetuning epochs, and `runs_at_cap` / `seeds_at_cap`: the
    runs whose finetuning ended at the epoch cap instead of by early stopping.
    """
    order = {variant: i for i, variant in enumerate(sort_variants(runs["variant"]))}
    at_cap = pl.col("hit_cap").fill_null(False)
    return (
        runs.filter(pl.col("split") == split)
        .group_by("variant", "protocol", "metric")
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
        .sort(pl.col("variant").replace_strict(order, return_dtype=pl.Int64), "protocol", "metric")
    )


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """'0.1234 ± 0.0056'; just the mean when std is missing (one seed); '–' without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_seconds(seconds: float | None) -> str:
    """'1,234' (whole seconds from 10 s on), '4.2' below; '–' when not recorded."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    return f"{seconds:,.0f}" if seconds >= 10 else f"{seconds:.1f}"


def format_cpu(pretrain: float | None, finetune: float | None) -> str:
    """'412 + 63': CPU seconds of pretraining and of finetuning; '–' for a part not recorded,
    '–' alone when neither was."""
    if pretrain is None and finetune is None:
        return "–"
    return f"{format_seconds(pretrain)} + {format_seconds(finetune)}"


def results_table(summary: pl.DataFrame, metrics: Sequence[str], protocols: Sequence[str],
                  digits: int = 4) -> pl.DataFrame:
    """String table: a row per variant; parameter counts, CPU time, mean ± std per metric.

    A variant with a run that hit the finetuning epoch cap is marked `CAP_MARK` (see
    `results_notes` for the footnote).
    """
    rows = []
    for variant in sort_variants(summary["variant"]):
        part = summary.filter(pl.col("variant") == variant)
        first = part.row(0, named=True)
        row = {
            "Variant": variant + (CAP_MARK if first["runs_at_cap"] else ""),
            "Seeds": str(first["seeds"]),
            "Head params": f"{int(first['heads_params']):,}",
            "Total params": f"{int(first['total_params']):,}",
            CPU_COLUMN: format_cpu(first["pretrain_cpu_seconds"], first["finetune_cpu_seconds"]),
        }
        for protocol in protocols:
            for metric in metrics:
                cell = part.filter((pl.col("protocol") == protocol) & (pl.col("metric") == metric))
                value = cell.row(0, named=True) if len(cell) else {"mean": None, "std": None}
                label = PROTOCOL_LABELS.get(protocol, protocol)
                row[f"{metric} ({label})"] = format_mean_std(value["mean"], value["std"], digits)
        rows.append(row)
    return pl.DataFrame(rows)


def results_notes(summary: pl.DataFrame) -> list[str]:
    """Footnotes of the results table: the runs that hit the finetuning epoch cap, and rows that
    are references only."""
    notes = []
    capped = summary.filter(pl.col("runs_at_cap") > 0)
    if len(capped):
        which = []
        for variant in sort_variants(capped["variant"]):
            r = capped.filter(pl.col("variant") == variant).row(0, named=True)
            plural = "s" if " " in r["seeds_at_cap"] else ""
            which.append(f"{variant} (seed{plural} {r['seeds_at_cap']} of {r['seeds']})")
        which = "; ".join(which)
        cap = capped["epochs_cap"].max()
        notes.append(f"{CAP_MARK} Finetuning ended at the epoch cap ({cap} epochs), not by early stopping, in: "
                     f"{which}. Such a run may still have been improving: its numbers are cut short.")
    if "authors" in set(summary["variant"]):
        notes.append("authors: finetuned from the S3Rec authors' released pretrained checkpoint; a reference "
                     "row, not compared with full (its pretraining used the authors' code and data handling, "
                     "and its time is not known).")
    return notes


# ---------------------------------------------------------------- paired bootstrap


def user_scores(ranks: pl.DataFrame, variant: str, protocol: str, split: str, metric: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, user_ids, values (S, U)) of one variant, users sorted by id."""
    part = (ranks.filter((pl.col("variant") == variant) & (pl.col("protocol") == protocol)
                         & (pl.col("split") == split))
            .select("seed", "user_id", "rank"))
    if part.is_empty():
        raise ValueError(f"no ranks for variant {variant!r}, protocol {protocol!r}, split {split!r}")
    wide = part.pivot(on="seed", index="user_id", values="rank").sort("user_id")
    seeds = np.array(sorted(int(s) for s in wide.columns if s != "user_id"))
    matrix = wide.select([str(s) for s in seeds]).to_numpy().T  # (S, U)
    if np.isnan(matrix.astype(np.float64)).any():
        raise ValueError(f"variant {variant!r}: the seeds did not rank the same users")
    return seeds, wide["user_id"].to_numpy(), per_user_metric(matrix, metric)


def paired_bootstrap(difference: np.ndarray, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, resample_seeds: bool = True) -> tuple[float, float, float]:
    """Mean of a (seeds, users) matrix of paired differences and its percentile interval.

    Every resample draws users with replacement (and, with `resample_seeds`, seeds with
    replacement) and takes the mean over the drawn cells; the same draws apply to both
    variants because `difference` already pairs them cell by cell.
    """
    difference = np.atleast_2d(np.asarray(difference, dtype=np.float64))
    num_seeds, num_users = difference.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(samples)
    for b in range(samples):
        rows = rng.integers(num_seeds, size=num_seeds) if resample_seeds else np.arange(num_seeds)
        users = rng.integers(num_users, size=num_users)
        stats[b] = difference[rows].mean(axis=0)[users].mean()
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(difference.mean()), float(low), float(high)


def paired_difference(ranks: pl.DataFrame, variant: str, reference: str, protocol: str, split: str,
                      metric: str) -> np.ndarray:
    """(S, U) per-user metric of `variant` minus `reference` on their common seeds and users."""
    seeds_a, users_a, a = user_scores(ranks, variant, protocol, split, metric)
    seeds_b, users_b, b = user_scores(ranks, reference, protocol, split, metric)
    seeds = np.intersect1d(seeds_a, seeds_b)
    users = np.intersect1d(users_a, users_b)
    if not len(seeds) or not len(users):
        raise ValueError(f"{variant!r} and {reference!r} share no seeds or no users")
    return _select(a, seeds_a, users_a, seeds, users) - _select(b, seeds_b, users_b, seeds, users)


def _select(values: np.ndarray, seeds: np.ndarray, users: np.ndarray, keep_seeds: np.ndarray,
            keep_users: np.ndarray) -> np.ndarray:
    """Rows of `keep_seeds` and columns of `keep_users` (both sorted subsets) of a (S, U) matrix."""
    return values[np.searchsorted(seeds, keep_seeds)][:, np.searchsorted(users, keep_users)]


def difference_table(ranks: pl.DataFrame, metric: str, protocols: Sequence[str], split: str = "test",
                     reference: str = REFERENCE, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, resample_seeds: bool = True) -> pl.DataFrame:
    """Difference of every trained variant to `reference`, with its paired bootstrap interval."""
    others = [v for v in sort_variants(ranks["variant"]) if v != reference and v not in REFERENCE_ROWS]
    rows = []
    for variant in others:
        for protocol in protocols:
            difference = paired_difference(ranks, variant, reference, protocol, split, metric)
            mean, low, high = paired_bootstrap(difference, samples, seed, confidence, resample_seeds)
            rows.append({"variant": variant, "reference": reference, "protocol": protocol, "split": split,
                         "metric": metric, "difference": mean, "ci_low": low, "ci_high": high,
                         "confidence": confidence, "seeds": difference.shape[0], "users": difference.shape[1]})
    return pl.DataFrame(rows)


def format_difference_table(differences: pl.DataFrame, digits: int = 4) -> pl.DataFrame:
    """String table: a row per variant, a column per protocol, 'Δ [low, high]'."""
    if differences.is_empty():
        return pl.DataFrame({"Variant": []}, schema={"Variant": pl.String})
    first = differences.row(0, named=True)
    level = f"{round(first['confidence'] * 100):d}%"
    rows = []
    for variant in sort_variants(differences["variant"]):
        part = differences.filter(pl.col("variant") == variant)
        row = {"Variant": variant}
        for r in part.iter_rows(named=True):
            label = PROTOCOL_LABELS.get(r["protocol"], r["protocol"])
            header = f"Δ{r['metric']} vs {r['reference']}, {label} [{level} CI]"
            row[header] = f"{r['difference']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
        rows.append(row)
    return pl.DataFrame(rows)


# ---------------------------------------------------------------- rendering


def to_markdown(table: pl.DataFrame) -> str:
    """GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    columns = table.columns
    cells = [[str(v) for v in row] for row in table.iter_rows()]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "-", CAP_MARK: r"\textsuperscript{\dag}"}


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
    lines += [r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.iter_rows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in notes:
        lines.append(r"\par\smallskip{\footnotesize " + latex_escape(note) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
