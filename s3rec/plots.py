"""Report figures (seaborn). Each function takes frames and returns a matplotlib Figure.

Colours are fixed per pretraining across figures: `none` grey, `authors` purple, popularity
brown, and each pretraining preset a colour family (seed blues, paper oranges, others greens,
reds, ...) in which `full` is the darkest shade and the ranks run light (small) to dark. A
figure that draws one line per preset uses the family's dark shade. Finetuning losses are
separate panels (bce, ce, ...). Every figure says in its own text what its lines, points, bars
and bands are. `save_figure` writes files that are byte-identical for identical figures.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg by itself
import numpy as np
import polars as pl
import seaborn as sns
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from s3rec.intervals import intervals_exclude_zero
from s3rec.labels import (PRESETS, REFERENCE_ROWS, sort_losses, sort_presets, sort_pretrainings, split_pretraining,
                          variant_rank)

NONE_COLOR, POPULARITY_COLOR, AUTHORS_COLOR, OTHER_COLOR = "#8c8c8c", "#a6611a", "#7b3294", "#e7298a"
# Colour families of the presets: seed and paper first (PRESETS order), then other presets
# alphabetically; they repeat after four.
PRESET_FAMILIES = ("Blues", "Oranges", "Greens", "Reds")
REFERENCE_STYLES = {"none": (NONE_COLOR, "--"), "authors": (AUTHORS_COLOR, "-.")}
PROTOCOL_TITLES = {"full": "full ranking (all items)", "sampled": "sampled (target + 99 negatives)"}
TASK_TITLES = {"train_loss": "total (weighted sum)", "aap": "AAP: item → attributes",
               "mip": "MIP: masked item", "map": "MAP: masked item → attributes", "sp": "SP: segment"}
thousands = FuncFormatter(lambda x, _: f"{x:,.0f}")


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def line_plot(frame, ax, **kwargs) -> None:
    """sns.lineplot, which must draw: beside pandas 3, seaborn 0.13.0 and 0.13.1 drew no line and
    said nothing (empty panels in a finished report). Values and no line are an error."""
    before = len(ax.lines)
    sns.lineplot(data=frame, ax=ax, **kwargs)
    if len(ax.lines) == before and frame[kwargs["y"]].notna().any():
        raise RuntimeError(f"seaborn {sns.__version__} drew no line from {len(frame)} rows of {kwargs['y']!r} "
                           f"(pandas {importlib.metadata.version('pandas')}); pyproject.toml gives the "
                           "versions this project draws with")


def figure_formats() -> list[str]:
    """The file formats save_figure writes (matplotlib's, e.g. png, pdf, svg), sorted."""
    return sorted(FigureCanvasBase.get_supported_filetypes())


def save_figure(fig, path: str | Path, dpi: int = 150, suffix: str | None = None) -> None:
    """Write `fig` in the format of the suffix (of `path`, or `suffix` where path is a temporary
    name), byte-identical for the same figure: without the creation date (PDF, SVG) and the
    software version (PNG) that matplotlib writes by default, and with a fixed salt for SVG
    element ids (else random). The page is fitted to what is drawn (bbox "tight"): a figure of
    one panel column is narrower than its bottom legend or its title, which were cut off."""
    suffix = (suffix or Path(path).suffix).lower()
    metadata = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}, ".png": {"Software": None}}.get(suffix)
    with plt.rc_context({"svg.hashsalt": "s3rec"}):
        fig.savefig(path, dpi=dpi, metadata=metadata, format=suffix.lstrip(".") or None, bbox_inches="tight",
                    pad_inches=0.05)


# ---------------------------------------------------------------- colours


def _family(preset: str, presets: Sequence[str]) -> str:
    others = [p for p in sort_presets(presets) if p not in PRESETS]
    index = PRESETS.index(preset) if preset in PRESETS else len(PRESETS) + others.index(preset)
    return PRESET_FAMILIES[index % len(PRESET_FAMILIES)]


def preset_color(preset: str, presets: Sequence[str]):
    """The dark shade of the preset's family (its `full`)."""
    return sns.color_palette(_family(preset, presets), n_colors=6)[-1]


# Where the ranks' shades lie on their family's colour map (0 white, 1 darkest), the same span
# however many ranks: lighter hardly shows on white (the smallest of four ranks, spread over the
# whole map, did not), darker meets `full` (about 0.85).
RANK_SHADES = (0.35, 0.7)


def pretraining_palette(labels: Sequence[str]) -> dict[str, object]:
    """A colour per pretraining label (see the module docstring)."""
    labels = sort_pretrainings(labels)
    presets = sort_presets(split_pretraining(label)[0] for label in labels)
    palette: dict[str, object] = {"none": NONE_COLOR, "authors": AUTHORS_COLOR, "popularity": POPULARITY_COLOR}
    for preset in presets:
        ranked = [label for label in labels if split_pretraining(label)[0] == preset
                  and variant_rank(split_pretraining(label)[1]) is not None]
        shades = sns.color_palette(_family(preset, presets), as_cmap=True)
        points = np.linspace(*RANK_SHADES, len(ranked)) if len(ranked) > 1 else [sum(RANK_SHADES) / 2]
        palette.update((label, tuple(shades(point)[:3])) for label, point in zip(ranked, points))
        palette[f"{preset}-full"] = preset_color(preset, presets)  # the same whatever the ranks
    return {label: palette.get(label, OTHER_COLOR) for label in labels}


def _bottom_legend(fig, handles, labels, ncol=None) -> None:
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 6), frameon=False)


def _label(metric: str, split: str, protocol: str | None = None) -> str:
    where = f"{split}" + (f", {protocol}" if protocol else "")
    return f"{metric} ({where}; 0–1)"


def _seed_counts(frame: pl.DataFrame, *by: str) -> list[int]:
    """The distinct numbers of seeds behind the drawn means, one mean per group `by`: a partial
    study's points may rest on different numbers of seeds."""
    return sorted(set(frame.group_by(*by).agg(pl.col("seed").n_unique())["seed"].to_list()))


def _seeds_text(counts: Sequence[int]) -> str:
    return f"{counts[0]}–{counts[-1]} seeds" if len(counts) > 1 else f"{counts[0]} seeds"


def _bars_text(counts: Sequence[int]) -> str:
    """What the error bars of mean ± std points resting on `counts` seeds (_seed_counts) are."""
    if not counts or counts[-1] == 1:
        return "points: 1 seed (no bar)"
    return f"bars: mean ± std over {_seeds_text(counts)}" + ("; no bar: 1 seed" if counts[0] == 1 else "")


def _lines_text(counts: Sequence[int]) -> str:
    """What the lines and bands of a seaborn errorbar="sd" plot of `counts` seeds are."""
    if not counts or counts[-1] == 1:
        return "lines: 1 seed (no band)"
    return (f"lines: mean over {_seeds_text(counts)}, bands: ± 1 std"
            + ("; no band: 1 seed" if counts[0] == 1 else ""))


def _losses(frame: pl.DataFrame) -> list[str]:
    """The finetuning losses of a frame, in report order (popularity's null left out)."""
    return [loss for loss in sort_losses(frame["loss"].drop_nulls())]


def _of_loss(frame: pl.DataFrame, loss: str) -> pl.DataFrame:
    """Rows finetuned with `loss`, and popularity (no loss), which belongs in every panel."""
    return frame.filter(pl.col("loss").is_null() | (pl.col("loss") == loss))


def _panel_title(loss: str, protocol: str) -> str:
    return f"finetuned with {loss}: {PROTOCOL_TITLES.get(protocol, protocol)}"


def _mean_std(values: pl.DataFrame) -> pl.DataFrame:
    """Mean, std (0 for one seed) and number of seeds of `value` per pretraining, in report order."""
    summary = (values.group_by("pretraining", "preset", "variant")
               .agg(pl.col("heads_params").first(), pl.col("value").mean().alias("mean"),
                    pl.col("value").std().fill_null(0.0).alias("std"), pl.col("seed").n_unique().alias("n")))
    order = {label: i for i, label in enumerate(sort_pretrainings(summary["pretraining"]))}
    return summary.sort(pl.col("pretraining").replace_strict(order, return_dtype=pl.Int64))


# ---------------------------------------------------------------- accuracy


def _hidden_size(runs: pl.DataFrame, ranks: Sequence[int]) -> int:
    """d, where `full` stands on the rank axis (a d×d head has rank d); twice the largest rank
    when the runs did not record it."""
    recorded = runs["hidden_size"].drop_nulls() if "hidden_size" in runs.columns else pl.Series([], dtype=pl.Int64)
    return int(recorded.max()) if len(recorded) else 2 * max(ranks, default=32)


def _excludes_zero(differences: pl.DataFrame, loss: str, protocol: str, label: str, reference: str) -> bool:
    row = differences.filter((pl.col("loss") == loss) & (pl.col("protocol") == protocol)
                             & (pl.col("pretraining") == label) & (pl.col("reference") == reference))
    return bool(len(row)) and intervals_exclude_zero(row.row(0, named=True))


def accuracy_vs_rank(differences: pl.DataFrame, runs: pl.DataFrame, metric: str, split: str,
                     protocols: Sequence[str]):
    """Metric against the rank of the AAP/MAP heads: a panel per finetuning loss (rows) and
    protocol (columns), a line per pretraining preset through its ranks and `full` (at r = d).

    Points: mean ± std over seeds (`runs`, a load_runs frame). A star marks a rank whose paired
    bootstrap interval against its preset's full (`differences`, difference.csv) and its t
    interval over seeds both exclude 0.
    Horizontal lines: `none` (no pretraining) and `authors` finetuned with the same loss; the
    popularity floor is written in the title, as a line far below would squeeze the ranks.
    """
    setup()
    data = runs.filter((pl.col("metric") == metric) & (pl.col("split") == split))
    losses, presets = _losses(data), sort_presets(data["preset"])
    ranks = sorted({r for r in map(variant_rank, data["variant"].unique().sort()) if r is not None})
    d = _hidden_size(data, ranks)
    level = round(float(differences["confidence"][0]) * 100) if len(differences) else 95
    rows = max(len(losses), 1)
    fig, axes = plt.subplots(rows, len(protocols), figsize=(4.8 * len(protocols), 3.6 * rows + 0.7), squeeze=False,
                             sharex=True, layout="constrained")
    for row, loss in enumerate(losses):
        for ax, protocol in zip(axes[row], protocols):
            values = _of_loss(data, loss).filter(pl.col("protocol") == protocol)
            summary = _mean_std(values)
            for i, preset in enumerate(presets):
                part = summary.filter(pl.col("preset") == preset).with_columns(
                    pl.col("variant").str.extract(r"^r(\d+)$").cast(pl.Int64).fill_null(d).alias("x"))
                if part.is_empty():
                    continue
                part = part.sort("x")
                # presets side by side (on the log axis a factor) so that their bars do not overlap
                xs = part["x"].to_numpy() * 2.0 ** (0.06 * (i - (len(presets) - 1) / 2))
                color = preset_color(preset, presets)
                ax.errorbar(xs, part["mean"].to_numpy(), yerr=part["std"].to_numpy(), color=color, marker="o",
                            ms=6, capsize=3, lw=1.6, zorder=3)
                for x, r in zip(xs, part.iter_rows(named=True)):
                    if r["variant"] != "full" and _excludes_zero(differences, loss, protocol, r["pretraining"],
                                                                 f"{preset}-full"):
                        ax.annotate("*", xy=(x, r["mean"] + r["std"]), xytext=(0, 1), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=13, color=color)
            for name, (color, style) in REFERENCE_STYLES.items():
                reference = summary.filter(pl.col("pretraining") == name)
                if len(reference):
                    ax.axhline(reference["mean"][0], color=color, ls=style, lw=1.3, zorder=2)
            ax.set_xscale("log", base=2)
            ax.set_xticks([*ranks, d], [*map(str, ranks), f"full\n(d = {d})"])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.margins(x=0.12, y=0.15)
            # the axis is shared: its ticks and label under the bottom row only
            ax.set_xlabel("rank r of the AAP/MAP heads (W = U Vᵀ; log scale)" if row == rows - 1 else "")
            ax.set_ylabel(_label(metric, split))
            floor = summary.filter(pl.col("pretraining") == "popularity")
            note = f"\npopularity: {floor['mean'][0]:.4f}" if len(floor) else ""
            ax.set_title(_panel_title(loss, protocol) + note, fontsize=10)
    seeds = _seed_counts(data.filter(pl.col("preset").is_not_null()), "loss", "pretraining")
    handles = [Line2D([], [], color=preset_color(p, presets), marker="o") for p in presets]
    labels = [f"preset {p}" for p in presets]
    for name, (color, style) in REFERENCE_STYLES.items():
        if name in set(data["pretraining"]):
            handles.append(Line2D([], [], color=color, ls=style))
            labels.append(f"{name} (same loss)")
    handles.append(Line2D([], [], color="#555555", marker="|", ls="", ms=12))
    labels.append(_bars_text(seeds))
    if len(differences.filter(pl.col("reference").str.ends_with("-full"))):  # else no star can be drawn
        handles.append(Line2D([], [], color="#555555", marker="$*$", ls="", ms=9))
        labels.append(f"{level}% intervals vs the preset's full (bootstrap, t over seeds) exclude 0")
    _bottom_legend(fig, handles, labels, ncol=min(len(labels), 3))
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


def on_parameter_axis(runs: pl.DataFrame, counted: bool = True) -> pl.DataFrame:
    """The runs params_vs_accuracy places: this project's pretrainings and none (not the reference
    rows), with a recorded parameter count (a run without one has no place on the axis); with
    counted=False, those it would place but cannot, having none."""
    recorded = pl.col("heads_params").is_not_null()
    return runs.filter(~pl.col("pretraining").is_in(list(REFERENCE_ROWS)) & (recorded if counted else ~recorded))


def params_vs_accuracy(runs: pl.DataFrame, metric: str, split: str, protocols: Sequence[str]):
    """Metric (mean ± std over seeds) against the parameter count of the pretraining heads: a
    panel per finetuning loss (rows) and protocol (columns), a colour per preset, `none` (no
    heads) grey at 0.

    Points with the same count (r32 and full for d = 64: 2dr = d²; the same variant of two
    presets) are set side by side and every point is labelled, so none hides another.
    """
    setup()
    data = on_parameter_axis(runs).filter((pl.col("metric") == metric) & (pl.col("split") == split))
    losses, presets = _losses(data), sort_presets(data["preset"])
    colors = {p: preset_color(p, presets) for p in presets}
    rows = max(len(losses), 1)
    fig, axes = plt.subplots(rows, len(protocols), figsize=(4.8 * len(protocols), 3.6 * rows + 0.6), squeeze=False,
                             sharex=True, layout="constrained")
    seeds = _seed_counts(data, "loss", "pretraining")
    for row, loss in enumerate(losses):
        for ax, protocol in zip(axes[row], protocols):
            summary = _mean_std(data.filter((pl.col("loss") == loss) & (pl.col("protocol") == protocol)))
            if summary.is_empty():
                continue
            counts = summary["heads_params"].to_numpy()
            span = max(float(counts.max() - counts.min()), 1.0)
            xs = _dodge(counts, span, fraction=0.05)
            for x, count, r in zip(xs, counts, summary.iter_rows(named=True)):
                color = colors.get(r["preset"], NONE_COLOR)
                ax.errorbar(x, r["mean"], yerr=r["std"], marker="o", ms=6, capsize=3, color=color, ls="")
                if x == count:  # alone at its count: label above the bar
                    where = dict(xy=(x, r["mean"] + r["std"]), xytext=(0, 4), ha="center", va="bottom")
                else:  # set apart from a point with the same count: label on its outer side
                    left = x < count
                    where = dict(xy=(x, r["mean"]), xytext=(-7 if left else 7, 0), ha="right" if left else "left",
                                 va="center")
                ax.annotate(r["variant"], textcoords="offset points", fontsize=8, color=color, **where)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # wide counts: few ticks
            ax.xaxis.set_major_formatter(thousands)
            ax.set_xlabel("parameters of the pretraining heads (count)")
            ax.set_ylabel(_label(metric, split))
            ax.set_title(_panel_title(loss, protocol), fontsize=10)
            ax.margins(x=0.1, y=0.15)
    handles = [Line2D([], [], color=colors[p], marker="o", ls="") for p in presets]
    labels = [f"preset {p}" for p in presets]
    if "none" in set(data["pretraining"]):
        handles.append(Line2D([], [], color=NONE_COLOR, marker="o", ls=""))
        labels.append("none (no pretraining)")
    handles.append(Line2D([], [], color="#555555", marker="|", ls="", ms=12))
    labels.append(_bars_text(seeds))
    _bottom_legend(fig, handles, labels, ncol=min(len(labels), 5))
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


def _shared_weights(weights: dict[str, dict[str, float]], labels: Sequence[str]) -> dict[str, float] | None:
    """The task weights of `labels` when they all used the same (a preset fixes them), else None."""
    distinct = {tuple(sorted(weights[label].items())) for label in labels if label in weights}
    return dict(next(iter(distinct))) if len(distinct) == 1 else None


def pretrain_losses(history: pl.DataFrame, weights: dict[str, dict[str, float]] | None = None,
                    dataset: str = ""):
    """Training loss per pretraining task and epoch: a row of panels per preset, a column per task,
    a line per variant (mean over seeds, bands ± 1 std).

    `weights` maps a pretraining label to its task weights (pretrain_run.json); a preset's are
    written in its panel titles when all its variants used the same. The y axis is scaled to the
    epochs after the first, whose much larger loss is marked off the scale.
    """
    setup()
    weights = weights or {}
    tasks = [t for t in TASK_TITLES if t in history.columns]
    presets = sort_presets(history["preset"])
    labels = sort_pretrainings(history["pretraining"])
    palette = pretraining_palette(labels)
    seeds = _seed_counts(history, "pretraining")
    long = history.unpivot(index=["pretraining", "preset", "seed", "epoch"], on=tasks, variable_name="task",
                           value_name="value").to_pandas()
    fig, axes = plt.subplots(len(presets), len(tasks), figsize=(3.4 * len(tasks), 2.9 * len(presets) + 0.9),
                             squeeze=False, layout="constrained")
    last_epoch = history["epoch"].max()
    many_epochs = last_epoch > 2
    marker = "o" if last_epoch <= 5 else None  # a line of one epoch is a point, which shows only as a marker
    differing = []
    for row, preset in enumerate(presets):
        own = [label for label in labels if split_pretraining(label)[0] == preset]
        shared = _shared_weights(weights, own)
        if shared is None and any(label in weights for label in own):
            differing += [f"{label}: " + ", ".join(f"{k} {w:g}" for k, w in weights[label].items())
                          for label in own if label in weights]
        for column, (ax, task) in enumerate(zip(axes[row], tasks)):
            frame = long[(long["task"] == task) & (long["preset"] == preset)]
            line_plot(frame, ax, x="epoch", y="value", hue="pretraining", hue_order=own,
                      palette={label: palette[label] for label in own}, errorbar="sd", legend=False,
                      marker=marker, markersize=4)
            title = f"{preset}: {TASK_TITLES[task]}"
            if shared and task in shared:
                title += f" (weight {shared[task]:g})"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("pretraining epoch")
            # the total is on its own scale; the tasks share one unit, said once per row
            ax.set_ylabel("weighted total per instance" if task == "train_loss"
                          else "loss per instance (epoch mean)" if column <= 1 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if last_epoch == 1:  # else the locator, finding one whole number, ticks 0.95, 0.96, ...
                ax.set_xlim(0.5, 1.5)
                ax.set_xticks([1])
            if many_epochs:
                limits = _robust_limits(frame["value"].to_numpy(dtype=float), frame["epoch"].to_numpy() == 1)
                if limits:
                    ax.set_ylim(*limits)
                    first = frame.loc[frame["epoch"] == 1, "value"]
                    if len(first) and first.max() > limits[1]:
                        ax.annotate(f"epoch 1: {first.mean():.3g} (off scale) ↑", xy=(0.98, 0.97),
                                    xycoords="axes fraction", ha="right", va="top", fontsize=7, color="#555555")
    handles = [Line2D([], [], color=palette[label], lw=2) for label in labels]
    texts = list(labels) + [_lines_text(seeds) + "; loss = Σ weight × task loss"]
    handles.append(Line2D([], [], color="white"))
    _bottom_legend(fig, handles, texts, ncol=min(len(texts), 5))
    where = f" on {dataset}" if dataset else ""
    suptitle = f"Pretraining{where}: training loss per task and epoch, a row per preset"
    if differing:
        suptitle += "\ntask weights differ within a preset: " + "; ".join(differing)
    fig.suptitle(suptitle)
    return fig


def finetune_validation(history: pl.DataFrame, runs: pl.DataFrame, followed: dict[str, tuple[str, str]],
                        dataset: str = "", default: tuple[str, str] = ("NDCG@10", "full")):
    """The validation metric early stopping followed, per finetuning epoch: a panel per
    finetuning loss, a colour per pretraining, a line per seed.

    `followed` maps a loss to the (metric, protocol) its runs stopped on (`default` for a loss
    not in it). `runs` has a row per run (pretraining, loss, seed, best_epoch, epochs_run,
    epochs_cap, early_stopped, hit_cap). Each run's best epoch (the one evaluated) is a dot; its
    last epoch is marked with a bar when early stopping ended it and a red cross when it ran
    into the cap, which each panel draws for its own runs (dashed).
    """
    setup()
    losses = _losses(history)
    labels = sort_pretrainings(history["pretraining"])
    palette = pretraining_palette(labels)
    panels = {loss: followed.get(loss, default) for loss in losses}
    one_metric = len(set(panels.values())) <= 1
    fig, axes = plt.subplots(1, max(len(losses), 1), figsize=(6.4 * max(len(losses), 1), 4.6), squeeze=False,
                             sharey=one_metric, layout="constrained")
    stopped = {(r["pretraining"], r["loss"], r["seed"]): r for r in runs.iter_rows(named=True)}
    caps = set()
    for ax, loss in zip(axes[0], losses):
        metric, protocol = panels[loss]
        column = f"valid_{metric}"
        capped, count = 0, 0
        for label in labels:
            part = history.filter((pl.col("loss") == loss) & (pl.col("pretraining") == label)).sort("seed", "epoch")
            for seed in part["seed"].unique().sort().to_list():
                curve = part.filter(pl.col("seed") == seed)
                epochs, values = curve["epoch"].to_numpy(), curve[column].to_numpy()
                ax.plot(epochs, values, color=palette[label], lw=1.0, alpha=0.85)
                count += 1
                run = stopped.get((label, loss, seed), {})
                best = run.get("best_epoch")
                if best is not None and best in set(epochs.tolist()):
                    ax.plot(best, values[list(epochs).index(best)], "o", color=palette[label], ms=4, zorder=4)
                if run.get("hit_cap"):
                    capped += 1
                    ax.plot(epochs[-1], values[-1], "x", color="#d62728", ms=7, mew=2, zorder=5)
                elif run.get("early_stopped"):
                    ax.plot(epochs[-1], values[-1], "|", color=palette[label], ms=9, mew=2, zorder=5)
        ax.set_title(f"finetuned with {loss}: {count} runs" + (f", {capped} at the cap" if capped else ""),
                     color="#d62728" if capped else "black", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("finetuning epoch")
        ax.set_ylabel(f"validation {metric} ({protocol} ranking)")
        cap = runs.filter(pl.col("loss") == loss)["epochs_cap"].drop_nulls().max() if len(runs) else None
        if cap:
            caps.add(cap)
            ax.axvline(cap, color="#d62728", lw=0.8, ls="--")
    where = f" on {dataset}" if dataset else ""
    what = (f"validation {panels[losses[0]][0]} ({panels[losses[0]][1]} ranking)" if one_metric and losses
            else "the validation metric early stopping followed")
    fig.suptitle(f"Finetuning{where}: {what} per epoch, one line per run (seed)")
    handles = [Line2D([], [], color=palette[label], lw=2) for label in labels]
    texts = list(labels)
    handles += [Line2D([], [], color="#555555", marker="o", ls=""),
                Line2D([], [], color="#555555", marker="|", ls="", ms=10, mew=2),
                Line2D([], [], color="#d62728", marker="x", ls="", ms=8, mew=2)]
    cap_text = f" ({', '.join(map(str, sorted(caps)))}, dashed)" if caps else ""
    texts += ["best epoch (evaluated)", "stopped early (patience)", "ended at the epoch cap" + cap_text]
    _bottom_legend(fig, handles, texts, ncol=min(len(texts), 6))
    return fig


# ---------------------------------------------------------------- head spectra


def head_spectra(spectra: pl.DataFrame, ranks: Sequence[int] = (), dataset: str = ""):
    """Normalised singular values of each head's W (dense) or U Vᵀ (low rank), one column per head,
    a line per pretraining (`spectra`: pretraining, seed, head, index, value).

    Top: σᵢ / σ₁ (log scale), so that heads of different overall scale compare. Bottom: the
    cumulative energy Σ_{j≤i} σⱼ² / Σ σⱼ², the share of W's squared Frobenius norm that the best
    rank-i approximation keeps. Lines: mean over seeds, bands ± 1 std; dotted verticals: the ranks.
    """
    setup()
    heads = [h for h in ("aap", "mip", "map", "sp") if h in set(spectra["head"])]
    labels = sort_pretrainings(spectra["pretraining"])
    palette = pretraining_palette(labels)
    # the authors' one checkpoint is no seed of theirs: it widens no count
    seeds = _seed_counts(spectra.filter(pl.col("pretraining") != "authors"), "pretraining")
    frame = spectra.with_columns(
        (pl.col("value") / pl.col("value").max().over("pretraining", "seed", "head")).alias("normalised"),
        ((pl.col("value") ** 2).cum_sum().over("pretraining", "seed", "head", order_by="index")
         / (pl.col("value") ** 2).sum().over("pretraining", "seed", "head")).alias("energy"),
    # drawn at float32, the weights' own precision: the float64 SVD's and sums' last bits differ
    # between numpy and polars builds, and moved pixels of the committed study's figure
    ).with_columns(pl.col("normalised", "energy").cast(pl.Float32))
    fig, axes = plt.subplots(2, len(heads), figsize=(4.8 * len(heads), 6.6), squeeze=False, sharex="col",
                             layout="constrained")
    for column, head in enumerate(heads):
        part = frame.filter(pl.col("head") == head).to_pandas()
        for row, (y, label) in enumerate((("normalised", "σᵢ / σ₁ (log scale)"),
                                          ("energy", "cumulative energy Σⱼ≤ᵢ σⱼ² / Σ σⱼ²"))):
            ax = axes[row][column]
            line_plot(part, ax, x="index", y=y, hue="pretraining", hue_order=labels, palette=palette,
                      errorbar="sd", legend=False)
            for rank in ranks:
                ax.axvline(rank, color="#bbbbbb", lw=0.8, ls=":")
            if row == 0:
                ax.set_yscale("log")
                ax.set_title(TASK_TITLES.get(head, head).split(":")[0] + " head")
            else:
                ax.set_ylim(0, 1.02)
                ax.set_xlabel("singular value index i (largest first)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # an index: no 1.5 tick for small ranks
            ax.set_ylabel(label)
    handles = [Line2D([], [], color=palette[label]) for label in labels] + [Line2D([], [], color="white")]
    texts = list(labels) + [_lines_text(seeds)]
    _bottom_legend(fig, handles, texts, ncol=min(len(texts), 6))
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
    axes[0].text(median, axes[0].get_ylim()[1] * 0.95, f" median {median:g}", va="top", fontsize=8)  # 11.5, not 12
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
