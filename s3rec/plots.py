"""Report figures (seaborn). Each function takes frames and returns a matplotlib Figure.

Colours are fixed per variant across figures: `none` grey, `full` black, the low-rank
variants a light-to-dark blue ramp by rank, `authors` purple, popularity brown. Every figure
says in its own text what its lines, points, bars and bands are.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg by itself
import numpy as np
import polars as pl
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from s3rec.report import REFERENCE_ROWS, sort_variants, variant_rank

NONE_COLOR, FULL_COLOR, POPULARITY_COLOR, LOW_RANK_COLOR = "#8c8c8c", "#222222", "#a6611a", "#2c5d8a"
AUTHORS_COLOR = "#7b3294"
PROTOCOL_TITLES = {"full": "full ranking (all items)", "sampled": "sampled (target + 99 negatives)"}
TASK_TITLES = {"loss": "total (weighted sum)", "aap": "AAP: item → attributes",
               "mip": "MIP: masked item", "map": "MAP: masked item → attributes", "sp": "SP: segment"}
thousands = FuncFormatter(lambda x, _: f"{x:,.0f}")


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def variant_palette(variants: Sequence[str]) -> dict[str, object]:
    ordered = sort_variants(variants)
    low_rank = [v for v in ordered if variant_rank(v) is not None]
    ramp = sns.color_palette("crest", n_colors=max(len(low_rank), 2))
    palette: dict[str, object] = {"none": NONE_COLOR, "full": FULL_COLOR, "popularity": POPULARITY_COLOR,
                                  "authors": AUTHORS_COLOR}
    palette.update(dict(zip(low_rank, ramp[: len(low_rank)] if len(low_rank) > 1 else ramp[-1:])))
    return {v: palette.get(v, "#e7298a") for v in ordered}


def _bottom_legend(fig, handles, labels, ncol=None) -> None:
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 6), frameon=False)


def _label(metric: str, split: str, protocol: str | None = None) -> str:
    where = f"{split}" + (f", {protocol}" if protocol else "")
    return f"{metric} ({where}; 0–1)"


def _seeds_text(seeds: int) -> str:
    return f"{seeds} seed{'s' if seeds != 1 else ''}"


def _lines_text(seeds: int) -> str:
    """What the lines and bands of a seaborn errorbar="sd" plot are."""
    return f"lines: mean over {seeds} seeds, bands: ± 1 std" if seeds > 1 else "lines: 1 seed (no band)"


# ---------------------------------------------------------------- accuracy


def accuracy_vs_rank(differences: pl.DataFrame, runs: pl.DataFrame, metric: str, split: str,
                     protocols: Sequence[str]):
    """Difference of each variant to `full` against the rank, with its paired bootstrap interval.

    `differences` is difference.csv (s3rec.report.difference_table): mean difference and interval
    per variant and protocol. Points are the per-seed differences (the seed's metric minus
    `full`'s with the same seed), from `runs`. `none` is drawn left of the ranks, apart; `full`'s
    own level and the popularity floor are written in each panel, as they would squeeze the
    differences into a strip on a shared axis.
    """
    setup()
    data = runs.filter((pl.col("metric") == metric) & (pl.col("split") == split))
    compared = [v for v in sort_variants(differences["variant"]) if v not in REFERENCE_ROWS] if len(
        differences) else []
    low = [v for v in compared if variant_rank(v) is not None]
    others = [v for v in compared if variant_rank(v) is None]  # none (and anything not a rank)
    positions = {v: i for i, v in enumerate(others)}
    positions.update({v: len(others) + 0.5 + i for i, v in enumerate(low)})
    palette = variant_palette(compared + ["full"])
    level = round(float(differences["confidence"][0]) * 100) if len(differences) else 95
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.8 * len(protocols), 4.2), squeeze=False,
                             layout="constrained")
    for ax, protocol in zip(axes[0], protocols):
        part = differences.filter(pl.col("protocol") == protocol) if len(differences) else differences
        values = data.filter(pl.col("protocol") == protocol)
        full = values.filter(pl.col("variant") == "full").select("seed", pl.col("value").alias("full"))
        ax.axhline(0.0, color=FULL_COLOR, lw=1.2, zorder=1)
        for variant in compared:
            row = part.filter(pl.col("variant") == variant)
            if row.is_empty():
                continue
            r = row.row(0, named=True)
            x = positions[variant]
            ax.errorbar([x], [r["difference"]], yerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
                        color=palette[variant], marker="o", ms=7, capsize=4, lw=1.8, zorder=3)
            seeds = values.filter(pl.col("variant") == variant).join(full, on="seed")
            if len(seeds):
                offsets = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
                ax.scatter(x + 0.22 + offsets, (seeds["value"] - seeds["full"]).to_numpy(), s=16, zorder=4,
                           facecolors="white", edgecolors=palette[variant])
        ax.set_xticks([positions[v] for v in compared], compared)
        ax.set_xlim(-0.6, max(positions.values(), default=0) + 0.7)
        if others and low:
            ax.axvline(len(others) - 0.25, color="#cccccc", lw=0.8, ls=":")
        ax.set_xlabel("variant (r = rank of the AAP/MAP heads, W = U Vᵀ)")
        ax.set_ylabel(f"Δ{metric} vs full ({split})")
        # Absolute levels as text under the title: on the axis they would squeeze the differences.
        levels = [f"{name} {values.filter(pl.col('variant') == name)['value'].mean():.4f}"
                  for name in ("full", "authors", "popularity") if name in set(values["variant"])]
        title = PROTOCOL_TITLES.get(protocol, protocol)
        ax.set_title(title + (f"\n{metric}: " + " · ".join(levels) if levels else ""), fontsize=10)
    seeds = data.filter(pl.col("variant") == "full")["seed"].n_unique()
    handles = [Line2D([], [], color="#555555", marker="o"),
               Line2D([], [], color="#555555", marker="o", mfc="white", ls="", ms=4),
               Line2D([], [], color=FULL_COLOR)]
    labels = [f"mean Δ, {level}% paired bootstrap interval", "one seed (vs full, same seed)",
              f"full ({_seeds_text(seeds)})"]
    _bottom_legend(fig, handles, labels, ncol=3)
    return fig


def _dodge(xs: np.ndarray, span: float, fraction: float = 0.035) -> np.ndarray:
    """Spread points that share an x value (e.g. r32 and full: the same head count) apart."""
    xs = np.asarray(xs, dtype=np.float64)
    out = xs.copy()
    for value in np.unique(xs):
        same = np.flatnonzero(xs == value)
        if len(same) > 1:
            out[same] = value + (np.arange(len(same)) - (len(same) - 1) / 2) * fraction * span
    return out


def params_vs_accuracy(runs: pl.DataFrame, metric: str, split: str, protocols: Sequence[str]):
    """Metric (mean ± std over seeds) against the parameter count of the pretraining heads.

    Variants with the same count (r32 and full for d = 64: 2dr = d²) are set side by side and
    every point is labelled, so none hides another.
    """
    setup()
    data = runs.filter((pl.col("metric") == metric) & (pl.col("split") == split)
                       & ~pl.col("variant").is_in(list(REFERENCE_ROWS)))
    variants = sort_variants(data["variant"])
    palette = variant_palette(variants)
    order = {v: i for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.8 * len(protocols), 4.0), squeeze=False,
                             layout="constrained")
    seeds = data["seed"].n_unique()
    for ax, protocol in zip(axes[0], protocols):
        summary = (data.filter(pl.col("protocol") == protocol).group_by("variant")
                   .agg(pl.col("heads_params").first(), pl.col("value").mean().alias("mean"),
                        pl.col("value").std().fill_null(0.0).alias("std"), pl.col("seed").n_unique().alias("n"))
                   .sort(pl.col("variant").replace_strict(order, return_dtype=pl.Int64)))
        if summary.is_empty():
            continue
        counts = summary["heads_params"].to_numpy()
        span = max(float(counts.max() - counts.min()), 1.0)
        xs = _dodge(counts, span, fraction=0.05)
        for x, count, row in zip(xs, counts, summary.iter_rows(named=True)):
            ax.errorbar(x, row["mean"], yerr=row["std"], marker="o", ms=7, capsize=3,
                        color=palette[row["variant"]], ls="")
            if x == count:  # alone at its count: label above the bar
                where = dict(xy=(x, row["mean"] + row["std"]), xytext=(0, 4), ha="center", va="bottom")
            else:  # set apart from a variant with the same count: label on its outer side
                left = x < count
                where = dict(xy=(x, row["mean"]), xytext=(-7 if left else 7, 0), ha="right" if left else "left",
                             va="center")
            ax.annotate(row["variant"], textcoords="offset points", fontsize=8, color=palette[row["variant"]],
                        **where)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # wide counts: few ticks
        ax.xaxis.set_major_formatter(thousands)
        ax.set_xlabel("parameters of the pretraining heads (count)")
        ax.set_ylabel(_label(metric, split))
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol))
        ax.margins(x=0.1, y=0.15)
    handles = [Line2D([], [], color=palette[v], marker="o", ls="") for v in variants]
    labels = list(variants)
    handles.append(Line2D([], [], color="#555555", marker="|", ls="", ms=12))
    labels.append(f"bars: mean ± std over {_seeds_text(seeds)}")
    _bottom_legend(fig, handles, labels, ncol=min(len(labels), 7))
    return fig


# ---------------------------------------------------------------- training curves


def _robust_limits(values: np.ndarray, skip_first: np.ndarray) -> tuple[float, float] | None:
    """y limits from the epochs after the first (epoch 1's loss would set the scale)."""
    later = values[~skip_first & np.isfinite(values)]
    if len(later) == 0:
        return None
    low, high = float(later.min()), float(later.max())
    pad = 0.08 * (high - low) if high > low else max(abs(high) * 0.05, 1e-6)
    return low - pad, high + pad


def pretrain_losses(history: pl.DataFrame, weights: dict[str, dict[str, float]] | None = None,
                    dataset: str = ""):
    """Training loss per pretraining task and epoch; lines = mean over seeds, bands = ± 1 std.

    `weights` maps a variant to its task weights (pretrain_run.json); they are written in the
    panel titles when every variant used the same. The y axis is scaled to the epochs after the
    first, whose much larger loss is marked off the scale.
    """
    setup()
    tasks = [t for t in TASK_TITLES if t in history.columns]
    variants = sort_variants(history["variant"])
    palette = variant_palette(variants)
    seeds = history["seed"].n_unique()
    long = history.unpivot(index=["variant", "seed", "epoch"], on=tasks, variable_name="task",
                           value_name="value").to_pandas()
    shared = None
    if weights:
        distinct = {tuple(sorted(w.items())) for w in weights.values()}
        shared = dict(next(iter(distinct))) if len(distinct) == 1 else None
    ncols = 3
    nrows = -(-(len(tasks) + 1) // ncols)  # one slot left for the legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    flat = axes.ravel()
    many_epochs = history["epoch"].max() > 2
    for ax, task in zip(flat, tasks):
        frame = long[long["task"] == task]
        sns.lineplot(data=frame, x="epoch", y="value", hue="variant", hue_order=variants,
                     palette=palette, errorbar="sd", ax=ax, legend=False)
        title = TASK_TITLES[task]
        if shared and task in shared:
            title += f" (weight {shared[task]:g})"
        ax.set_title(title)
        ax.set_xlabel("pretraining epoch")
        ax.set_ylabel("loss per instance (epoch mean)" if task != "loss" else "weighted total per instance")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if many_epochs:
            limits = _robust_limits(frame["value"].to_numpy(dtype=float), frame["epoch"].to_numpy() == 1)
            if limits:
                ax.set_ylim(*limits)
                first = frame.loc[frame["epoch"] == 1, "value"]
                if len(first) and first.max() > limits[1]:
                    ax.annotate(f"epoch 1: {first.mean():.3g} (off scale) ↑", xy=(0.98, 0.97),
                                xycoords="axes fraction", ha="right", va="top", fontsize=8, color="#555555")
    legend_ax = flat[len(tasks)]
    legend_ax.axis("off")
    text = _lines_text(seeds).replace(", ", "\n")
    if weights and not shared:
        text += "\ntask weights differ between variants:\n" + "\n".join(
            f"{v}: " + ", ".join(f"{k} {w:g}" for k, w in weights[v].items()) for v in sort_variants(weights))
    elif shared:
        text += "\nloss = Σ weight × task loss"
    legend_ax.legend([Line2D([], [], color=palette[v], lw=2) for v in variants], variants, title="variant",
                     loc="upper center", frameon=False)
    legend_ax.text(0.5, 0.02, text, transform=legend_ax.transAxes, ha="center", va="bottom", fontsize=9)
    for ax in flat[len(tasks) + 1:]:
        ax.axis("off")
    where = f" on {dataset}" if dataset else ""
    fig.suptitle(f"Pretraining{where}: training loss per task and epoch")
    return fig


def finetune_validation(history: pl.DataFrame, runs: pl.DataFrame, metric: str, dataset: str = ""):
    """Validation metric (full ranking) per finetuning epoch: one panel per variant, a line per seed.

    `runs` has a row per run (variant, seed, best_epoch, epochs_run, epochs_cap, early_stopped).
    Each seed's best epoch (the one evaluated) is a filled dot; its last epoch is marked with a
    bar when early stopping ended it and a red cross when it ran into the epoch cap.
    """
    setup()
    column = f"valid_{metric}"
    variants = sort_variants(history["variant"])
    palette = variant_palette(variants)
    ncols = min(len(variants), 3)
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows + 0.6), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    stopped = {(r["variant"], r["seed"]): r for r in runs.iter_rows(named=True)}
    cap = runs["epochs_cap"].drop_nulls().max() if len(runs) else None
    for ax, variant in zip(axes.ravel(), variants):
        part = history.filter(pl.col("variant") == variant).sort("seed", "epoch")
        capped = 0
        for seed in part["seed"].unique().sort().to_list():
            curve = part.filter(pl.col("seed") == seed)
            epochs, values = curve["epoch"].to_numpy(), curve[column].to_numpy()
            ax.plot(epochs, values, color=palette[variant], lw=1.1, alpha=0.85)
            run = stopped.get((variant, seed), {})
            best = run.get("best_epoch")
            if best is not None and best in set(epochs):
                ax.plot(best, values[list(epochs).index(best)], "o", color=palette[variant], ms=5, zorder=4)
            if run.get("hit_cap"):
                capped += 1
                ax.plot(epochs[-1], values[-1], "x", color="#d62728", ms=8, mew=2, zorder=5)
            elif run.get("early_stopped"):
                ax.plot(epochs[-1], values[-1], "|", color=palette[variant], ms=10, mew=2, zorder=5)
        seeds = part["seed"].n_unique()
        ax.set_title(f"{variant} ({_seeds_text(seeds)}" + (f"; {capped} at the cap" if capped else "") + ")",
                     color="#d62728" if capped else "black")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("finetuning epoch")
        ax.set_ylabel(f"validation {metric}")
        if cap:
            ax.axvline(cap, color="#d62728", lw=0.8, ls="--")
    for ax in axes.ravel()[len(variants):]:
        ax.axis("off")
    where = f" on {dataset}" if dataset else ""
    fig.suptitle(f"Finetuning{where}: validation {metric} (full ranking) per epoch, one line per seed")
    handles = [Line2D([], [], color="#555555", marker="o", ls=""),
               Line2D([], [], color="#555555", marker="|", ls="", ms=10, mew=2),
               Line2D([], [], color="#d62728", marker="x", ls="", ms=8, mew=2)]
    labels = ["best epoch (evaluated)", "stopped early (patience)",
              "ended at the epoch cap" + (f" ({cap}, dashed)" if cap else "")]
    _bottom_legend(fig, handles, labels, ncol=3)
    return fig


# ---------------------------------------------------------------- head spectra


def head_spectra(spectra: pl.DataFrame, ranks: Sequence[int] = (), dataset: str = ""):
    """Normalised singular values of each head's W (dense) or U Vᵀ (low rank), one column per head.

    Top: σᵢ / σ₁ (log scale), so that heads of different overall scale compare. Bottom: the
    cumulative energy Σ_{j≤i} σⱼ² / Σ σⱼ², the share of W's squared Frobenius norm that the best
    rank-i approximation keeps. Lines: mean over seeds, bands ± 1 std; dotted verticals: the ranks.
    """
    setup()
    heads = [h for h in ("aap", "mip", "map", "sp") if h in set(spectra["head"])]
    variants = sort_variants(spectra["variant"])
    palette = variant_palette(variants)
    seeds = spectra["seed"].n_unique()
    frame = spectra.with_columns(
        (pl.col("value") / pl.col("value").max().over("variant", "seed", "head")).alias("normalised"),
        ((pl.col("value") ** 2).cum_sum().over("variant", "seed", "head", order_by="index")
         / (pl.col("value") ** 2).sum().over("variant", "seed", "head")).alias("energy"),
    )
    fig, axes = plt.subplots(2, len(heads), figsize=(4.8 * len(heads), 6.6), squeeze=False, sharex="col",
                             layout="constrained")
    for column, head in enumerate(heads):
        part = frame.filter(pl.col("head") == head).to_pandas()
        for row, (y, label) in enumerate((("normalised", "σᵢ / σ₁ (log scale)"),
                                          ("energy", "cumulative energy Σⱼ≤ᵢ σⱼ² / Σ σⱼ²"))):
            ax = axes[row][column]
            sns.lineplot(data=part, x="index", y=y, hue="variant", hue_order=variants, palette=palette,
                         errorbar="sd", ax=ax, legend=False)
            for rank in ranks:
                ax.axvline(rank, color="#bbbbbb", lw=0.8, ls=":")
            if row == 0:
                ax.set_yscale("log")
                ax.set_title(TASK_TITLES.get(head, head).split(":")[0] + " head")
            else:
                ax.set_ylim(0, 1.02)
                ax.set_xlabel("singular value index i (largest first)")
            ax.set_ylabel(label)
    handles = [Line2D([], [], color=palette[v]) for v in variants]
    labels = list(variants) + [_lines_text(seeds)]
    handles.append(Line2D([], [], color="white"))
    _bottom_legend(fig, handles, labels, ncol=min(len(labels), 7))
    where = f" on {dataset}" if dataset else ""
    fig.suptitle(f"Spectra of the learned head weights after pretraining{where} (W, or U Vᵀ for rank r)")
    return fig


# ---------------------------------------------------------------- data


def data_distributions(lengths: np.ndarray, item_counts: np.ndarray, attributes_per_item: np.ndarray,
                       name: str):
    """Sequence lengths (linear histogram), item popularity (rank-frequency) and attributes per item."""
    setup()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), layout="constrained")
    lengths = np.asarray(lengths)
    shown_max = int(np.ceil(np.quantile(lengths, 0.99)))
    longer = int((lengths > shown_max).sum())
    shown = lengths[lengths <= shown_max]
    sns.histplot(shown, discrete=True if shown_max - lengths.min() <= 80 else None,
                 bins="auto", ax=axes[0], color="#4c72b0")
    median = float(np.median(lengths))
    axes[0].axvline(median, color="#222222", lw=1, ls="--")
    axes[0].text(median, axes[0].get_ylim()[1] * 0.95, f" median {median:.0f}", va="top", fontsize=8)
    axes[0].set_xlabel("sequence length (interactions per user)")
    axes[0].set_ylabel("users")
    note = f"; {longer:,} longer (max {lengths.max()}) not shown" if longer else ""
    axes[0].set_title(f"{len(lengths):,} users, mean length {lengths.mean():.1f}{note}", fontsize=9)
    counts = np.sort(item_counts)[::-1]
    seen = counts[counts > 0]  # items never interacted with have no place on a log axis
    axes[1].loglog(np.arange(1, len(seen) + 1), seen, color="#4c72b0")
    top = max(1, len(counts) // 5)
    share = counts[:top].sum() / max(counts.sum(), 1)
    axes[1].set_xlabel("item popularity rank (log scale)")
    axes[1].set_ylabel("interactions per item (log scale)")
    axes[1].set_title(f"{len(counts):,} items, {int(counts.sum()):,} interactions; "
                      f"top 20% items: {share:.0%}", fontsize=9)
    sns.histplot(attributes_per_item, discrete=True, ax=axes[2], color="#4c72b0")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].set_xlabel("attributes per item")
    axes[2].set_ylabel("items")
    axes[2].set_title(f"mean {attributes_per_item.mean():.2f} attributes per item", fontsize=9)
    fig.suptitle(f"data set: {name}")
    return fig
