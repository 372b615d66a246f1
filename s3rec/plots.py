"""Report figures (seaborn). Each function takes frames and returns a matplotlib Figure.

Colours are fixed per variant across figures: `none` grey, `full` black, the low-rank
variants a light-to-dark blue ramp by rank, popularity brown.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg by itself
import numpy as np
import polars as pl
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from s3rec.report import sort_variants, variant_rank

NONE_COLOR, FULL_COLOR, POPULARITY_COLOR, LOW_RANK_COLOR = "#8c8c8c", "#222222", "#a6611a", "#2c5d8a"
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
    palette: dict[str, object] = {"none": NONE_COLOR, "full": FULL_COLOR, "popularity": POPULARITY_COLOR}
    palette.update(dict(zip(low_rank, ramp[: len(low_rank)] if len(low_rank) > 1 else ramp[-1:])))
    return {v: palette.get(v, "#e7298a") for v in ordered}


def _bottom_legend(fig, handles, labels, ncol=None) -> None:
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 6), frameon=False)


def _label(metric: str, split: str, protocol: str | None = None) -> str:
    where = f"{split}" + (f", {protocol}" if protocol else "")
    return f"{metric} ({where}; 0–1)"


# ---------------------------------------------------------------- accuracy


def accuracy_vs_rank(runs: pl.DataFrame, metric: str, split: str, protocols: Sequence[str]):
    """Metric of every low-rank variant against its rank; full and none as mean ± std bands."""
    setup()
    palette = variant_palette(runs["variant"].unique())
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.6 * len(protocols), 3.8), squeeze=False,
                             layout="constrained")
    data = runs.filter((pl.col("metric") == metric) & (pl.col("split") == split))
    for ax, protocol in zip(axes[0], protocols):
        part = data.filter(pl.col("protocol") == protocol)
        for variant, style in (("full", "-"), ("none", "--")):
            values = part.filter(pl.col("variant") == variant)["value"].to_numpy()
            if len(values):
                mean, std = values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0
                ax.axhspan(mean - std, mean + std, color=palette[variant], alpha=0.15, lw=0)
                ax.axhline(mean, color=palette[variant], ls=style, lw=1.5)
        popularity = part.filter(pl.col("variant") == "popularity")["value"].to_numpy()
        if len(popularity):
            ax.axhline(popularity.mean(), color=POPULARITY_COLOR, ls=":", lw=1.5)
        low = part.filter(pl.col("variant").str.contains(r"^r\d+$")).with_columns(
            pl.col("variant").str.slice(1).cast(pl.Int64).alias("rank"))
        ranks = sorted(low["rank"].unique().to_list())
        summary = low.group_by("rank").agg(pl.col("value").mean().alias("mean"),
                                           pl.col("value").std().fill_null(0.0).alias("std")).sort("rank")
        ax.errorbar(summary["rank"], summary["mean"], yerr=summary["std"], color=LOW_RANK_COLOR,
                    marker="o", capsize=3, lw=1.5, zorder=3)
        ax.scatter(low["rank"], low["value"], s=14, facecolors="white", edgecolors=LOW_RANK_COLOR, zorder=4)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("rank r of the AAP/MAP heads (W = U Vᵀ)")
        ax.set_ylabel(_label(metric, split))
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol))
    handles = [
        Line2D([], [], color=LOW_RANK_COLOR, marker="o", label="low rank: mean ± std over seeds"),
        Line2D([], [], color=LOW_RANK_COLOR, marker="o", mfc="white", ls="", ms=4, label="low rank: one seed"),
        (Patch(color=FULL_COLOR, alpha=0.15), Line2D([], [], color=FULL_COLOR)),
        (Patch(color=NONE_COLOR, alpha=0.15), Line2D([], [], color=NONE_COLOR, ls="--")),
        Line2D([], [], color=POPULARITY_COLOR, ls=":"),
    ]
    labels = [handles[0].get_label(), handles[1].get_label(), "full (dense heads) mean ± std",
              "none (no pretraining) mean ± std", "popularity"]
    _bottom_legend(fig, handles, labels, ncol=3)
    return fig


def params_vs_accuracy(runs: pl.DataFrame, metric: str, split: str, protocols: Sequence[str]):
    """Metric (mean ± std over seeds) against the parameter count of the pretraining heads."""
    setup()
    data = runs.filter((pl.col("metric") == metric) & (pl.col("split") == split)
                       & (pl.col("variant") != "popularity"))
    variants = sort_variants(data["variant"])
    palette = variant_palette(variants)
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.6 * len(protocols), 3.8), squeeze=False,
                             layout="constrained")
    for ax, protocol in zip(axes[0], protocols):
        summary = (data.filter(pl.col("protocol") == protocol).group_by("variant")
                   .agg(pl.col("heads_params").first(), pl.col("value").mean().alias("mean"),
                        pl.col("value").std().fill_null(0.0).alias("std")))
        for row in summary.iter_rows(named=True):
            ax.errorbar(row["heads_params"], row["mean"], yerr=row["std"], marker="o", ms=7, capsize=3,
                        color=palette[row["variant"]], ls="")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # wide counts: few ticks
        ax.xaxis.set_major_formatter(thousands)
        ax.set_xlabel("parameters of the pretraining heads (count)")
        ax.set_ylabel(_label(metric, split))
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol))
        ax.margins(x=0.08)
    handles = [Line2D([], [], color=palette[v], marker="o", ls="") for v in variants]
    _bottom_legend(fig, handles, variants)
    return fig


# ---------------------------------------------------------------- training curves


def pretrain_losses(history: pl.DataFrame):
    """Training loss per pretraining task and epoch; lines = mean over seeds, bands = ± std."""
    setup()
    tasks = [t for t in TASK_TITLES if t in history.columns]
    variants = sort_variants(history["variant"])
    palette = variant_palette(variants)
    long = history.unpivot(index=["variant", "seed", "epoch"], on=tasks, variable_name="task",
                           value_name="value").to_pandas()
    ncols = 3
    nrows = -(-(len(tasks) + 1) // ncols)  # one slot left for the legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    flat = axes.ravel()
    for ax, task in zip(flat, tasks):
        sns.lineplot(data=long[long["task"] == task], x="epoch", y="value", hue="variant", hue_order=variants,
                     palette=palette, errorbar="sd", ax=ax, legend=False)
        ax.set_title(TASK_TITLES[task])
        ax.set_xlabel("pretraining epoch")
        ax.set_ylabel("training loss (epoch mean)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_ax = flat[len(tasks)]
    legend_ax.axis("off")
    legend_ax.legend([Line2D([], [], color=palette[v], lw=2) for v in variants], variants, title="variant",
                     loc="center", frameon=False)
    for ax in flat[len(tasks) + 1:]:
        ax.axis("off")
    return fig


def finetune_validation(history: pl.DataFrame, metric: str = "NDCG@10"):
    """Validation metric (full ranking) per finetuning epoch; mean over seeds ± std."""
    setup()
    column = f"valid_{metric}"
    variants = sort_variants(history["variant"])
    palette = variant_palette(variants)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    sns.lineplot(data=history.select("variant", "seed", "epoch", column).to_pandas(), x="epoch", y=column,
                 hue="variant", hue_order=variants, palette=palette, errorbar="sd", ax=ax, legend=False)
    ax.set_xlabel("finetuning epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric} (full ranking; 0–1)")
    handles = [Line2D([], [], color=palette[v]) for v in variants]
    _bottom_legend(fig, handles, variants)
    return fig


# ---------------------------------------------------------------- head spectra


def head_spectra(spectra: pl.DataFrame):
    """Singular values of each head's W (dense) or U Vᵀ (low rank), one panel per head."""
    setup()
    heads = [h for h in ("aap", "mip", "map", "sp") if h in set(spectra["head"])]
    variants = sort_variants(spectra["variant"])
    palette = variant_palette(variants)
    fig, axes = plt.subplots(1, len(heads), figsize=(4.6 * len(heads), 3.8), squeeze=False, layout="constrained")
    for ax, head in zip(axes[0], heads):
        sns.lineplot(data=spectra.filter(pl.col("head") == head).to_pandas(), x="index", y="value",
                     hue="variant", hue_order=variants, palette=palette, errorbar="sd", ax=ax, legend=False)
        ax.set_yscale("log")
        ax.set_title(TASK_TITLES.get(head, head).split(":")[0] + " head")
        ax.set_xlabel("singular value index i (largest first)")
        ax.set_ylabel("singular value σᵢ (log scale)")
    handles = [Line2D([], [], color=palette[v]) for v in variants]
    _bottom_legend(fig, handles, variants)
    return fig


# ---------------------------------------------------------------- data


def data_distributions(lengths: np.ndarray, item_counts: np.ndarray, attributes_per_item: np.ndarray,
                       name: str):
    """Sequence lengths, item popularity (rank-frequency) and attributes per item."""
    setup()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    sns.histplot(lengths, bins=min(60, int(np.ptp(lengths)) + 1), ax=axes[0], color="#4c72b0")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("sequence length (interactions per user)")
    axes[0].set_ylabel("users (log scale)")
    axes[0].set_title(f"{len(lengths):,} users, median length {np.median(lengths):.0f}")
    counts = np.sort(item_counts)[::-1]
    seen = counts[counts > 0]  # items never interacted with have no place on a log axis
    axes[1].loglog(np.arange(1, len(seen) + 1), seen, color="#4c72b0")
    axes[1].set_xlabel("item popularity rank (log scale)")
    axes[1].set_ylabel("interactions per item (log scale)")
    axes[1].set_title(f"{len(counts):,} items, {int(counts.sum()):,} interactions")
    sns.histplot(attributes_per_item, discrete=True, ax=axes[2], color="#4c72b0")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].set_xlabel("attributes per item")
    axes[2].set_ylabel("items")
    axes[2].set_title(f"mean {attributes_per_item.mean():.2f} attributes per item")
    fig.suptitle(f"data set: {name}")
    return fig
