"""Report figures (s3rec.plots through scripts/plot_report.py) on fabricated study folders: one
preset and one loss (the default synthetic study) and two of each (the Beauty study); what the
panels show, and byte-identical files for the same inputs."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from conftest import REPO
from s3rec import labels, plots, report, spectra
from scripts_import import load_script

plot_report = load_script("plot_report")
aggregate = load_script("aggregate")

D, RANKS, SEEDS = 8, (2, 4), (0, 1)
SETTINGS = {"metric": "NDCG@10", "split": "test", "protocols": ["full", "sampled"]}
FIGURES = ("accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation", "head_spectra")


def heads_state(variant: str, rng) -> dict:
    """Pretraining-head tensors of one model (heads.pt holds only these): AAP/MAP low rank for
    r<k>, dense otherwise; MIP and SP dense."""
    rank = labels.variant_rank(variant)
    state = {}
    for head in ("aap", "mip", "map", "sp"):
        if rank and head in ("aap", "map"):
            state[f"heads.{head}.U"] = torch.randn(D, rank, generator=rng)
            state[f"heads.{head}.V"] = torch.randn(D, rank, generator=rng)
        else:
            state[f"heads.{head}.weight"] = torch.randn(D, D, generator=rng)
        state[f"heads.{head}.bias"] = torch.zeros(D)
    return state


def write_json(path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def fabricate_study(root, presets, losses, authors=False, capped=()):
    """A study folder root/toy/ as the workflow lays it out; returns {figure: its --inputs}.

    Every preset pretrains full and each rank; none (and authors) are finetuned with every loss.
    Numbers are smooth functions of the labels, so figures are deterministic. `capped`: the
    (pretraining, loss, seed) runs that end at the epoch cap.
    """
    folder = root / "toy"
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    pretrainings = [f"{p}-{v}" for p in presets for v in ("full", *(f"r{r}" for r in RANKS))]
    finetuned = ["none", *pretrainings] + (["authors"] if authors else [])
    inputs = {figure: [] for figure in FIGURES}
    weights = {"seed": (1.0, 0.2, 1.0, 0.5), "paper": (0.2, 1.0, 1.0, 0.5)}
    for label in pretrainings:
        preset, variant = labels.split_pretraining(label)
        for seed in SEEDS:
            run = folder / label / f"seed{seed}"
            epochs = np.arange(1, 6)
            losses_by_task = {t: 2.0 / epochs + 0.1 * i + 0.01 * seed + 0.05 * len(label)
                              for i, t in enumerate(("aap", "mip", "map", "sp"))}
            history = pl.DataFrame({"epoch": epochs, "loss": sum(losses_by_task.values()), **losses_by_task})
            run.mkdir(parents=True, exist_ok=True)
            history.write_csv(run / "pretrain_history.csv")
            write_json(run / "pretrain_run.json", {"config": {"pretrain": dict(zip(
                ("aap_weight", "mip_weight", "map_weight", "sp_weight"), weights.get(preset, (1.0,) * 4)))}})
            torch.save({"variant": variant, "seed": seed, "state_dict": heads_state(variant, generator)},
                       run / "heads.pt")
            inputs["pretrain_losses"] += [run / "pretrain_history.csv", run / "pretrain_run.json"]
            inputs["head_spectra"].append(run / "heads.pt")
    if authors:
        (folder / "authors").mkdir(parents=True)
        torch.save({"variant": "authors", "seed": None, "state_dict": heads_state("full", generator)},
                   folder / "authors" / "heads.pt")
        inputs["head_spectra"].append(folder / "authors" / "heads.pt")
    base = rng.integers(5, 40, size=60)
    metrics_files = []
    for li, loss in enumerate(losses):
        for fi, label in enumerate(finetuned):
            preset, variant = labels.split_pretraining(label)
            for seed in SEEDS:
                run = folder / label / f"seed{seed}" / loss
                ranks = np.maximum(base - fi - seed - 3 * li, 1)
                level = 0.05 + 0.01 * fi + 0.003 * seed + 0.02 * li
                epochs = 12 + fi + seed
                at_cap = (label, loss, seed) in capped
                config = {"model": {"hidden_size": D}, "finetune": {"loss": loss, "epochs": 20, "patience": 3,
                                                                     "early_stopping_metric": "NDCG@20"}}
                if preset:
                    config["pretrain"] = {"preset": preset}
                heads = 0 if variant in ("none", "authors") else (
                    4 * D * D if variant == "full" else 2 * (2 * D * labels.variant_rank(variant)) + 2 * D * D)
                result = {"dataset": "toy", "variant": variant, "seed": seed, "finetune": {"loss": loss},
                          "metrics": {p: {s: {"NDCG@10": level + 0.1 * (p == "sampled"), "HR@10": 2 * level}
                                          for s in ("valid", "test")} for p in ("full", "sampled")},
                          "parameters": {"heads_total": heads, "total": 1000 + heads},
                          "best_epoch": 20 if at_cap else epochs - 3, "epochs_run": 20 if at_cap else epochs,
                          "early_stopped": not at_cap, "config": config}
                write_json(run / "metrics.json", result)
                n = result["epochs_run"]
                pl.DataFrame({"epoch": np.arange(1, n + 1),
                              "valid_NDCG@20": level * (1 - np.exp(-np.arange(1, n + 1) / 4))}).write_csv(
                    run / "finetune_history.csv")
                pl.concat([pl.DataFrame({"user_id": np.arange(1, 61, dtype=np.int32), "split": split,
                                         "protocol": protocol, "rank": ranks.astype(np.int32)})
                           for split in ("valid", "test") for protocol in ("full", "sampled")]
                          ).write_parquet(run / "ranks.parquet")
                metrics_files.append(run / "metrics.json")
                inputs["finetune_validation"] += [run / "finetune_history.csv", run / "metrics.json"]
    popularity = folder / "popularity"
    write_json(popularity / "metrics.json", {
        "dataset": "toy", "variant": "popularity", "seed": 0, "parameters": {},
        "metrics": {p: {s: {"NDCG@10": 0.01, "HR@10": 0.02} for s in ("valid", "test")} for p in ("full", "sampled")}})
    pl.DataFrame({"user_id": np.arange(1, 61, dtype=np.int32), "split": "test", "protocol": "full",
                  "rank": (base + 50).astype(np.int32)}).write_parquet(popularity / "ranks.parquet")
    metrics_files.append(popularity / "metrics.json")
    tables = folder / "report" / "tables"
    aggregate.main(["--metrics", *map(str, metrics_files), "--out-dir", str(tables),
                    "--settings", json.dumps({"bootstrap_samples": 100, "protocols": ["full"]})])
    inputs["params_vs_accuracy"] = metrics_files
    inputs["accuracy_vs_rank"] = [tables / "difference.csv", *metrics_files]
    return inputs


STUDIES = {"1x1": (["seed"], ["bce"], False), "2x2": (["seed", "paper"], ["bce", "ce"], True)}


@pytest.fixture(scope="module", params=sorted(STUDIES))
def study(request, tmp_path_factory):
    presets, losses, authors = STUDIES[request.param]
    root = tmp_path_factory.mktemp(f"study{request.param}")
    capped = {("none", losses[-1], 1)}
    return request.param, fabricate_study(root, presets, losses, authors=authors, capped=capped), presets, losses


def draw(figure, inputs, out_dir, name="figure"):
    outs = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    assert plot_report.main([figure, "--inputs", *map(str, inputs), "--out", *map(str, outs),
                             "--settings", json.dumps(SETTINGS)]) == 0
    return [out.read_bytes() for out in outs]


@pytest.mark.parametrize("figure", FIGURES)
def test_figure_is_drawn_and_byte_identical_for_the_same_inputs_in_any_order(study, figure, tmp_path):
    _, inputs, _, _ = study
    first = draw(figure, inputs[figure], tmp_path, "first")
    shuffled = list(inputs[figure])
    random.Random(3).shuffle(shuffled)
    again = draw(figure, shuffled, tmp_path, "again")
    assert first[0].startswith(b"\x89PNG") and first[1].startswith(b"%PDF")
    assert len(first[0]) > 10_000
    assert first == again
    assert b"CreationDate" not in first[1] and b"Software" not in first[0]


def test_byte_identical_across_processes_with_other_hash_seeds(tmp_path):
    """A set iterated while drawing would differ between processes (string hashing is salted)."""
    inputs = fabricate_study(tmp_path / "study", *STUDIES["2x2"])
    files = []
    for hash_seed in ("1", "2"):
        outs = [tmp_path / f"{hash_seed}.png", tmp_path / f"{hash_seed}.pdf"]
        subprocess.run([sys.executable, str(REPO / "scripts" / "plot_report.py"), "accuracy_vs_rank",
                        "--inputs", *map(str, inputs["accuracy_vs_rank"]), "--out", *map(str, outs)],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, cwd=REPO)
        files.append([out.read_bytes() for out in outs])
    assert files[0] == files[1]


def test_save_figure_twice_gives_the_same_bytes(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 4, 9], label="a")
    ax.set_title("Δ ± σ")
    for suffix in ("png", "pdf", "svg"):
        plots.save_figure(fig, tmp_path / f"a.{suffix}")
        plots.save_figure(fig, tmp_path / f"b.{suffix}")
        assert (tmp_path / f"a.{suffix}").read_bytes() == (tmp_path / f"b.{suffix}").read_bytes(), suffix
        # a temporary name (plot_report writes through one) with the format of the file it becomes
        plots.save_figure(fig, tmp_path / f"c.{suffix}.1234.tmp", suffix=f".{suffix}")
        assert (tmp_path / f"c.{suffix}.1234.tmp").read_bytes() == (tmp_path / f"a.{suffix}").read_bytes(), suffix
    plt.close(fig)


# ---------------------------------------------------------------- what the panels show


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def panels(fig):
    return [ax for ax in fig.axes if ax.get_title()]


def test_accuracy_vs_rank_panels_lines_and_references(study):
    name, inputs, presets, losses = study
    fig, _ = plot_report.accuracy_vs_rank(inputs["accuracy_vs_rank"], SETTINGS)
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == len(losses) * 2  # a row per loss, a column per protocol
    assert titles[0].startswith("finetuned with bce: full ranking") and "popularity: 0.0100" in titles[0]
    if len(losses) == 2:
        assert titles[2].startswith("finetuned with ce: full ranking")
    ax = panels(fig)[0]
    # full stands at r = d; ticks (labelled on the bottom row): the ranks, then full
    assert list(ax.get_xticks()) == [2, 4, D]
    assert [t.get_text() for t in panels(fig)[-1].get_xticklabels()] == ["2", "4", f"full\n(d = {D})"]
    bottom = panels(fig)[-2:]  # and so is the axis label (the top row wrote it over no ticks)
    assert [bool(ax.get_xlabel()) for ax in panels(fig)] == [ax in bottom for ax in panels(fig)]
    horizontal = [line for line in ax.lines if len(set(line.get_ydata())) == 1 and len(line.get_xdata()) == 2]
    assert len(horizontal) == (2 if name == "2x2" else 1)  # none (+ authors)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [t for t in legend if t.startswith("preset")] == [f"preset {p}" for p in presets]
    assert ("authors (same loss)" in legend) == (name == "2x2")


def test_accuracy_vs_rank_legend_names_only_what_is_drawn(study, tmp_path):
    """One seed draws no bars, and without a rank-vs-full comparison no star: before, the legend
    named both ('bars: mean ± std over 1 seed', '95% paired interval ... excludes 0')."""
    _, inputs, _, _ = study
    difference, *metrics = inputs["accuracy_vs_rank"]
    fig, _ = plot_report.accuracy_vs_rank(inputs["accuracy_vs_rank"], SETTINGS)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "bars: mean ± std over 2 seeds" in legend and "95% intervals vs the preset's full (bootstrap, t over seeds) exclude 0" in legend
    header_only = tmp_path / "difference.csv"
    header_only.write_text(Path(difference).read_text().splitlines()[0] + "\n")
    seed0 = [m for m in metrics if "seed1" not in Path(m).parts]
    fig, _ = plot_report.accuracy_vs_rank([header_only, *seed0], SETTINGS)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "points: 1 seed (no bar)" in legend and not any("exclude 0" in t for t in legend), legend


def test_legends_say_the_range_of_seeds_when_means_rest_on_different_numbers(study):
    """A partial study (seed-r2 on seed 0 alone): before, the legends said "over 2 seeds" of
    every point and line, the barless seed-r2 points included."""
    _, inputs, _, _ = study

    def legend(figure):
        fig, _ = getattr(plot_report, figure)([p for p in inputs[figure] if "seed-r2/seed1" not in str(p)], SETTINGS)
        return [t.get_text() for t in fig.legends[0].get_texts()]

    for figure in ("accuracy_vs_rank", "params_vs_accuracy"):
        assert "bars: mean ± std over 1–2 seeds; no bar: 1 seed" in legend(figure), figure
    assert "lines: mean over 1–2 seeds, bands: ± 1 std; no band: 1 seed; loss = Σ weight × task loss" in \
        legend("pretrain_losses")
    assert "lines: mean over 1–2 seeds, bands: ± 1 std; no band: 1 seed" in legend("head_spectra")


def test_params_vs_accuracy_sets_equal_counts_apart_and_labels_points(study):
    _, inputs, presets, losses = study
    fig, _ = plot_report.params_vs_accuracy(inputs["params_vs_accuracy"], SETTINGS)
    ax = panels(fig)[0]
    labels = [text.get_text() for text in ax.texts]
    assert sorted(labels) == sorted(["none"] + ["full", "r2", "r4"] * len(presets))
    xs = [text.xy[0] for text in ax.texts]
    assert len(set(xs)) == len(xs)  # the same variant of two presets is not drawn on top of itself
    assert len(panels(fig)) == 2 * len(losses)
    assert any("mean ± std over 2 seeds" in t.get_text() for t in fig.legends[0].get_texts())


def test_pretrain_losses_has_a_row_per_preset_with_its_weights(study):
    _, inputs, presets, _ = study
    fig, _ = plot_report.pretrain_losses(inputs["pretrain_losses"], SETTINGS)
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == 5 * len(presets)
    assert titles[1] == "seed: AAP: item → attributes (weight 1)"
    if "paper" in presets:
        assert titles[6] == "paper: AAP: item → attributes (weight 0.2)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[: 3 * len(presets)] == [f"{p}-{v}" for p in presets for v in ("full", "r2", "r4")]


def test_pretrain_losses_of_one_epoch_draw_points_at_epoch_1():
    """A quick run of one epoch: each line is a point, drawn only as a marker (the panels were
    empty), and the axis ticks epoch 1 (it ticked 0.945, 0.960, ..., written over each other)."""
    tasks = list(plots.TASK_TITLES)
    history = pl.DataFrame([{"pretraining": label, "preset": "seed", "seed": seed, "epoch": 1,
                             **{task: 1.0 + i + seed for i, task in enumerate(tasks)}}
                            for label in ("seed-full", "seed-r4") for seed in (0, 1)])
    fig = plots.pretrain_losses(history)
    for ax in panels(fig):
        assert {line.get_marker() for line in ax.lines} == {"o"} and len(ax.lines) >= 2
        assert list(ax.get_xticks()) == [1]


def test_a_line_plot_that_draws_nothing_is_an_error(monkeypatch):
    """Beside pandas 3, seaborn 0.13.0 and 0.13.1 drew no line and said nothing: the report's loss
    and spectra panels came out empty. (Here a seaborn that draws nothing stands in.) Nothing to
    draw is no error."""
    import matplotlib.pyplot as plt

    history = pl.DataFrame([{"pretraining": "seed-full", "preset": "seed", "seed": seed, "epoch": epoch,
                             **{task: 1.0 + seed for task in plots.TASK_TITLES}} for seed in (0, 1) for epoch in (1, 2)])
    fig, ax = plt.subplots()
    plots.line_plot(pl.DataFrame({"x": [1, 2], "y": [None, None]}, schema={"x": pl.Int64, "y": pl.Float64})
                    .to_pandas(), ax, x="x", y="y")
    plt.close(fig)
    monkeypatch.setattr(plots.sns, "lineplot", lambda **kwargs: kwargs["ax"])
    with pytest.raises(RuntimeError, match=r"seaborn \S+ drew no line from 4 rows of 'value' \(pandas \S+\); "
                                           "pyproject.toml gives the versions"):
        plots.pretrain_losses(history)


def test_finetune_validation_has_a_panel_per_loss_and_marks_capped_runs(study):
    _, inputs, presets, losses = study
    fig, _ = plot_report.finetune_validation(inputs["finetune_validation"], SETTINGS)
    titles = [ax.get_title() for ax in panels(fig)]
    runs_per_loss = (1 + 3 * len(presets) + (len(presets) == 2)) * len(SEEDS)
    expected = [f"finetuned with {loss}: {runs_per_loss} runs" for loss in losses]
    expected[-1] += ", 1 at the cap"
    assert titles == expected
    assert "validation NDCG@20" in fig.get_suptitle() and "toy" in fig.get_suptitle()
    markers = {line.get_marker() for ax in fig.axes for line in ax.lines}
    assert {"o", "x", "|"} <= markers


def test_finetune_validation_draws_what_each_loss_stopped_on_and_its_own_cap(tmp_path):
    """bce stopped on full-ranking NDCG@20 within 20 epochs, ce on sampled MRR within 30. Before:
    both panels titled "(full ranking)", NDCG@10 drawn for both (the runs disagreed), and the
    larger cap dashed in the bce panel too."""
    inputs = []
    for loss, metric, protocol, cap in (("bce", "NDCG@20", "full", 20), ("ce", "MRR", "sampled", 30)):
        for seed in SEEDS:
            run = tmp_path / "toy" / "none" / f"seed{seed}" / loss
            write_json(run / "metrics.json", {
                "dataset": "toy", "variant": "none", "seed": seed, "finetune": {"loss": loss},
                "metrics": {"full": {"valid": {"NDCG@10": 0.1}, "test": {"NDCG@10": 0.1}}},
                "best_epoch": 5, "epochs_run": 8, "early_stopped": True,
                "config": {"model": {"hidden_size": D}, "finetune": {
                    "loss": loss, "epochs": cap, "patience": 3, "early_stopping_metric": metric,
                    "early_stopping_protocol": protocol}}})
            pl.DataFrame({"epoch": np.arange(1, 9), "valid_NDCG@20": np.linspace(0.1, 0.2, 8),
                          "valid_MRR": np.linspace(0.3, 0.5, 8)}).write_csv(run / "finetune_history.csv")
            inputs += [run / "finetune_history.csv", run / "metrics.json"]
    fig, drawn = plot_report.finetune_validation(inputs, SETTINGS)
    bce, ce = panels(fig)
    assert (bce.get_ylabel(), ce.get_ylabel()) == ("validation NDCG@20 (full ranking)", "validation MRR (sampled ranking)")
    assert max(bce.lines[0].get_ydata()) == pytest.approx(0.2) and max(ce.lines[0].get_ydata()) == pytest.approx(0.5)
    dashed = [[line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] for ax in (bce, ce)]
    assert dashed == [[20], [30]]
    # each run's best epoch (5) is a dot on its curve: NDCG@20 0.1 + 4 · 0.1 / 7 at epoch 5
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in bce.lines if line.get_marker() == "o"] == \
        [(5, pytest.approx(0.1 + 0.4 / 7))] * len(SEEDS)
    assert "the validation metric early stopping followed" in fig.get_suptitle()
    assert "bce: NDCG@20 (full); ce: MRR (sampled)" in drawn


def test_head_spectra_reads_heads_pt_and_draws_a_line_per_pretraining(study):
    name, inputs, presets, _ = study
    fig, drawn = plot_report.head_spectra(inputs["head_spectra"], SETTINGS)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    expected = [f"{p}-{v}" for p in presets for v in ("full", "r2", "r4")] + (["authors"] if name == "2x2" else [])
    assert legend[:-1] == expected
    assert [ax.get_title() for ax in panels(fig)] == ["AAP head", "MAP head"]


def test_head_spectra_bytes_do_not_move_with_the_svds_last_bits(study, tmp_path, monkeypatch):
    """Another numpy build's SVD differs in the last bits of float64; before, that moved pixels of
    the committed study's head_spectra.png (so `git diff` after report_study.py was not empty)."""
    _, inputs, _, _ = study
    exact = draw("head_spectra", inputs["head_spectra"], tmp_path, "exact")
    spectrum = spectra.head_spectrum
    for scale in (1 + 2**-50, 1 - 2**-50):  # a few float64 ulps, far below float32's
        monkeypatch.setattr(plot_report, "head_spectrum", lambda state, head: spectrum(state, head) * scale)
        assert draw("head_spectra", inputs["head_spectra"], tmp_path, "perturbed") == exact


def test_palette_keeps_a_preset_family_and_fixed_reference_colours():
    palette = plots.pretraining_palette(["paper-r16", "seed-r8", "seed-full", "none", "authors", "paper-full",
                                         "seed-r16", "custom-full"])
    assert list(palette) == ["none", "seed-full", "seed-r8", "seed-r16", "paper-full", "paper-r16", "custom-full",
                             "authors"]
    assert palette["none"] == plots.NONE_COLOR and palette["authors"] == plots.AUTHORS_COLOR
    assert len({tuple(palette[k]) for k in ("seed-full", "seed-r8", "seed-r16", "paper-full", "custom-full")}) == 5
    blue, orange = palette["seed-full"], palette["paper-full"]
    assert blue[2] > blue[0] and orange[0] > orange[2]  # seed blue, paper orange
    # a preset keeps its colour whichever other presets are drawn beside it
    assert plots.pretraining_palette(["paper-full"])["paper-full"] == orange
    # other presets take the families after seed's and paper's alphabetically, in whatever order given
    assert plots.preset_color("zeta", ["zeta", "alpha"]) == plots.preset_color("zeta", ["alpha", "zeta"])
    # ranks run light to dark below full, and even the lightest of four shows on white (the
    # palest was near-white: 0.78, 0.86, 0.94)
    four = plots.pretraining_palette(["seed-r4", "seed-r8", "seed-r16", "seed-r32", "seed-full"])
    brightness = [sum(four[label]) / 3 for label in ("seed-r4", "seed-r8", "seed-r16", "seed-r32", "seed-full")]
    assert brightness == sorted(brightness, reverse=True) and brightness[0] < 0.8


# ---------------------------------------------------------------- what is drawn, number by number


def errorbars(ax):
    """(x, y, half the bar's length) of every point of the errorbars of `ax`, in drawing order;
    None for the length of a point drawn without a bar."""
    points = []
    for container in ax.containers:
        line, _, bars = container.lines
        segments = bars[0].get_segments() if bars else [None] * len(line.get_xdata())
        points += [(float(x), float(y), None if s is None else float(s[1][1] - s[0][1]) / 2)
                   for x, y, s in zip(line.get_xdata(), line.get_ydata(), segments)]
    return points


SMALL_STD = 0.003 / math.sqrt(2)  # the small study's runs differ by 0.003 between seeds 0 and 1


def test_accuracy_vs_rank_draws_each_ranks_mean_and_std_and_stars_where_both_intervals_exclude_zero(small_study):
    """The small study's NDCG@10 (full ranking) is 0.05 + 0.01 i + 0.003 seed for its i-th label
    (none, seed-full, seed-r2, seed-r4): means over seeds 0 and 1 0.0515 + 0.01 i, std 0.003 / √2;
    sampled is 0.1 more. full stands at r = d = 8 on a log axis, none is a line at its mean. A star
    needs the bootstrap and the t interval (at the table's 90 %) to exclude 0, in its own protocol."""
    _, inputs = small_study
    runs = report.load_runs(inputs["params_vs_accuracy"])
    intervals = {("full", "seed-r2"): (-0.02, -0.01, -0.03, -0.005),  # both exclude 0: a star
                 ("full", "seed-r4"): (0.01, 0.02, -0.01, 0.03),  # the t interval holds 0: no star
                 ("sampled", "seed-r2"): (-0.01, 0.01, -0.02, 0.02),
                 ("sampled", "seed-r4"): (0.01, 0.02, 0.005, 0.03)}
    differences = pl.DataFrame([{"loss": "bce", "protocol": protocol, "pretraining": label, "reference": "seed-full",
                                 "ci_low": low, "ci_high": high, "seeds_ci_low": seeds_low,
                                 "seeds_ci_high": seeds_high, "confidence": 0.9}
                                for (protocol, label), (low, high, seeds_low, seeds_high) in intervals.items()])
    fig = plots.accuracy_vs_rank(differences, runs, "NDCG@10", "test", ["full", "sampled"])
    for ax, shift, star in zip(panels(fig), (0.0, 0.1), ((2, 0.0715 + SMALL_STD), (4, 0.1815 + SMALL_STD))):
        np.testing.assert_allclose(errorbars(ax), [(2, 0.0715 + shift, SMALL_STD), (4, 0.0815 + shift, SMALL_STD),
                                                   (8, 0.0615 + shift, SMALL_STD)])
        [none] = [line.get_ydata()[0] for line in ax.lines if list(line.get_xdata()) == [0, 1]]  # axhline
        assert none == pytest.approx(0.0515 + shift)
        assert [t.xy for t in ax.texts if t.get_text() == "*"] == [pytest.approx(star)]
        assert ax.get_xscale() == "log" and ax.get_ylabel() == "NDCG@10 (test; 0–1)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "90% intervals vs the preset's full (bootstrap, t over seeds) exclude 0" in legend


def test_mean_std_of_three_seeds_and_of_one():
    """Values 0.1, 0.2, 0.6 (median 0.2): mean 0.3, std sqrt((0.04 + 0.01 + 0.09) / 2); one seed: std 0."""
    values = pl.DataFrame({"pretraining": ["seed-full"] * 3 + ["none"], "preset": ["seed"] * 3 + [None],
                           "variant": ["full"] * 3 + ["none"], "heads_params": [256] * 3 + [0],
                           "seed": [0, 1, 2, 0], "value": [0.1, 0.2, 0.6, 0.4]})
    summary = plots._mean_std(values)
    assert summary.select("pretraining", "n").rows() == [("none", 1), ("seed-full", 3)]
    assert summary["mean"].to_list() == pytest.approx([0.4, 0.3]) and summary["std"].to_list() == pytest.approx(
        [0.0, math.sqrt(0.07)])


def test_params_vs_accuracy_places_each_run_at_its_head_count_with_its_bar(small_study):
    """Head parameters of the small study (d = 8): none 0, seed-r2 2·(2·8·2) + 2·8² = 192, seed-full
    and seed-r4 256, set apart by ± 0.025 of the span of 256 (6.4), each label on its outer side."""
    _, inputs = small_study
    fig = plots.params_vs_accuracy(report.load_runs(inputs["params_vs_accuracy"]), "NDCG@10", "test", ["full"])
    [ax] = panels(fig)
    assert {t.get_text(): (pytest.approx(t.xy[0]), t.get_ha()) for t in ax.texts} == {
        "none": (0, "center"), "r2": (192, "center"), "full": (249.6, "right"), "r4": (262.4, "left")}
    np.testing.assert_allclose(errorbars(ax), [(0, 0.0515, SMALL_STD), (249.6, 0.0615, SMALL_STD),
                                               (192, 0.0715, SMALL_STD), (262.4, 0.0815, SMALL_STD)])


def test_pretrain_losses_scales_each_row_to_its_presets_epochs_after_the_first():
    """Epoch 1 (10 above the rest) is marked off the scale, which the row's own preset sets from
    epochs 2-4: seed's 1.2 to 1.51 (seed-full 1 + 0.1 epoch + 0.01 seed, seed-r4 0.1 more), padded
    by 8 % of the span; paper's 6.2 to 6.41. Two seeds: a band around each line. seed's variants
    used other weights: the title says so, its panels name none; paper's one weight is named."""
    tasks = list(plots.TASK_TITLES)
    base = {"seed-full": 1.0, "seed-r4": 1.1, "paper-full": 6.0}
    history = pl.DataFrame([{"pretraining": label, "preset": label.split("-")[0], "seed": seed, "epoch": epoch,
                             **{task: base[label] + (10.0 if epoch == 1 else 0.1 * epoch) + 0.01 * seed
                                for task in tasks}}
                            for label in base for seed in (0, 1) for epoch in (1, 2, 3, 4)])
    weights = {"seed-full": {"aap": 1.0}, "seed-r4": {"aap": 0.5}, "paper-full": {"aap": 0.2}}
    fig = plots.pretrain_losses(history, weights)
    drawn = panels(fig)
    for row, (low, high), first, bands in ((drawn[:5], (1.2, 1.51), "11.1", 2), (drawn[5:], (6.2, 6.41), "16", 1)):
        pad = 0.08 * (high - low)
        for ax in row:
            assert ax.get_ylim() == pytest.approx((low - pad, high + pad))
            assert [t.get_text() for t in ax.texts] == [f"epoch 1: {first} (off scale) ↑"]
            assert len(ax.collections) == bands
    assert [drawn[1].get_title(), drawn[6].get_title()] == ["seed: AAP: item → attributes",
                                                            "paper: AAP: item → attributes (weight 0.2)"]
    assert fig.get_suptitle().endswith("\ntask weights differ within a preset: seed-full: aap 1; seed-r4: aap 0.5")


def test_head_spectra_draws_normalised_singular_values_and_cumulative_energy():
    """σ = 2, 1 (seed-full, seeds 0 and 1) and 4, 1 (the authors' one checkpoint): σᵢ / σ₁ 1, 0.5 and
    1, 0.25 on a log axis; energy 4/5, 1 and 16/17, 1; the rank 1 a dotted vertical in both. The
    authors' checkpoint widens no seed count."""
    frame = pl.DataFrame([{"pretraining": label, "seed": seed, "head": "aap", "index": i + 1, "value": value}
                          for label, seeds, values in (("seed-full", (0, 1), (2.0, 1.0)), ("authors", (None,), (4.0, 1.0)))
                          for seed in seeds for i, value in enumerate(values)])
    fig = plots.head_spectra(frame, ranks=(1,))
    top, bottom = fig.axes
    for ax, expected in ((top, ([1, 0.5], [1, 0.25])), (bottom, ([0.8, 1], [16 / 17, 1]))):
        assert [list(line.get_ydata()) for line in ax.lines[:2]] == [pytest.approx(e) for e in expected]
        assert [list(line.get_xdata()) for line in ax.lines if line.get_linestyle() == ":"] == [[1, 1]]
    assert (top.get_yscale(), bottom.get_yscale()) == ("log", "linear")
    assert fig.legends[0].get_texts()[-1].get_text() == "lines: mean over 2 seeds, bands: ± 1 std"


def test_data_distributions_writes_the_numbers_of_its_panels():
    """Lengths 2 (60 users), 3 (30) and 50 (10): median 2, mean 7.1, none past the 99th percentile
    (50). Items counted 10, 5, 5 and seven never: a rank-frequency line of the three seen; the top
    20 % (2 items) hold 15 of the 20 interactions."""
    lengths = np.array([2] * 60 + [3] * 30 + [50] * 10)
    fig = plots.data_distributions(lengths, np.array([0, 5, 10, 0, 5, 0, 0, 0, 0, 0]), np.array([1, 2, 2, 3]), "toy")
    lengths_ax, items_ax, attributes_ax = fig.axes
    assert lengths_ax.get_title() == "100 users, mean length 7.1"
    assert [t.get_text() for t in lengths_ax.texts] == [" median 2"]
    assert items_ax.get_title() == "10 items, 20 interactions; top 20% items: 75%"
    assert [list(items_ax.lines[0].get_xdata()), list(items_ax.lines[0].get_ydata())] == [[1, 2, 3], [10, 5, 5]]
    assert attributes_ax.get_title() == "mean 2.00 attributes per item" and fig.get_suptitle() == "data set: toy"


def test_save_figure_fits_the_page_to_what_is_drawn(tmp_path):
    """bbox "tight": a 4 × 3 inch figure holding one small text saves far smaller than 600 × 450 px."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3))
    fig.text(0.5, 0.5, "x")
    plots.save_figure(fig, tmp_path / "a.png")
    width, height = struct.unpack(">II", (tmp_path / "a.png").read_bytes()[16:24])  # the PNG's IHDR
    assert width < 100 and height < 100


def test_full_stands_at_the_recorded_d_or_at_twice_the_largest_rank():
    """d where the runs recorded it; else (older runs) twice the largest rank, so that full never
    shares the largest rank's place on the axis."""
    assert plots._hidden_size(pl.DataFrame({"hidden_size": [64, None]}), [8, 16]) == 64
    assert plots._hidden_size(pl.DataFrame({"hidden_size": [None]}, schema={"hidden_size": pl.Int64}), [8, 16]) == 32
    assert plots._hidden_size(pl.DataFrame({"value": [0.1]}), [2, 4]) == 8


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """One preset, one loss: a study each bad-input test copies, then breaks one file of."""
    root = tmp_path_factory.mktemp("small")
    return root, fabricate_study(root, ["seed"], ["bce"])


def copied(small_study, tmp_path, figure):
    """A copy of the small study in tmp_path and the figure's --inputs there."""
    root, inputs = small_study
    shutil.copytree(root / "toy", tmp_path / "toy")
    return [tmp_path / Path(p).relative_to(root) for p in inputs[figure]]


def nan_head(path):
    torch.save({"state_dict": {**heads_state("r2", torch.Generator().manual_seed(0)),
                               "heads.aap.U": torch.full((D, 2), float("nan"))}}, path)


BAD_INPUTS = {
    "truncated heads.pt": ("head_spectra", "seed-r2/seed0/heads.pt", lambda p: p.write_bytes(p.read_bytes()[:300]),
                           "is not a readable torch checkpoint"),
    "empty heads.pt": ("head_spectra", "seed-r2/seed0/heads.pt", lambda p: p.write_bytes(b""),
                       "is not a readable torch checkpoint"),
    "authors' raw checkpoint": ("head_spectra", "seed-r2/seed0/heads.pt",
                                lambda p: torch.save({"item_embeddings.weight": torch.zeros(3, 2)}, p),
                                "expected a pretrain.pt or heads.pt, a dict with a `state_dict` entry"),
    "NaN head weights": ("head_spectra", "seed-r2/seed0/heads.pt", nan_head, "NaN or infinite values in heads.aap.U"),
    "pretrain_run.json no JSON": ("pretrain_losses", "seed-r2/seed0/pretrain_run.json", lambda p: p.write_text("{co"),
                                  "pretrain_run.json: not valid JSON"),
    "pretrain null": ("pretrain_losses", "seed-r2/seed0/pretrain_run.json",
                      lambda p: write_json(p, {"config": {"pretrain": None}}),
                      "pretrain_run.json: config.pretrain: expected an object"),
    "weight a string": ("pretrain_losses", "seed-r2/seed0/pretrain_run.json",
                        lambda p: write_json(p, {"config": {"pretrain": {"aap_weight": "x"}}}),
                        "pretrain_run.json: config.pretrain.aap_weight: expected a number, got 'x'"),
    "empty history": ("pretrain_losses", "seed-r2/seed0/pretrain_history.csv", lambda p: p.write_text(""),
                      "pretrain_history.csv: not a readable CSV"),
    "header-only history": ("pretrain_losses", "seed-r2/seed0/pretrain_history.csv",
                            lambda p: p.write_text("epoch,loss,aap,mip,map,sp\n"), "pretrain_history.csv: no row"),
    "text in a history": ("pretrain_losses", "seed-r2/seed0/pretrain_history.csv",
                          lambda p: p.write_text("epoch,loss,aap,mip,map,sp\n1,4,1,1,1,1\n2,4,1,1,1,abc\n"),
                          "pretrain_history.csv: line 3, column 'sp': expected a number, got 'abc'"),
    # before: "expected a number in every row, got String values", naming no line
    "NaN in a history": ("pretrain_losses", "seed-r2/seed0/pretrain_history.csv",
                         lambda p: p.write_text("epoch,loss,aap,mip,map,sp\n1,4,1,1,1,1\n2,4,1,nan,1,1\n"),
                         "pretrain_history.csv: line 3, column 'mip': expected a number, got 'nan'"),
    "history cut in its timing cells": ("pretrain_losses", "seed-r2/seed0/pretrain_history.csv",
                                        lambda p: p.write_text("epoch,loss,aap,mip,map,sp,seconds,cpu_seconds\n"
                                                               "1,4,1,1,1,1,2.5,2.4\n2,4,1,1,1,1,"),
                                        "pretrain_history.csv: line 3, column 'seconds': empty after rows that hold it"),
    "empty finetune history": ("finetune_validation", "none/seed0/bce/finetune_history.csv", lambda p: p.write_text(""),
                               "finetune_history.csv: not a readable CSV"),
    "metrics.json no JSON": ("finetune_validation", "none/seed0/bce/metrics.json", lambda p: p.write_text("{"),
                             "metrics.json: not valid JSON"),
    "metrics.json a list": ("params_vs_accuracy", "none/seed0/bce/metrics.json", lambda p: p.write_text("[]"),
                            "metrics.json: expected a JSON object"),
    # before the check (the mutation probe dropped it unnoticed): an AttributeError traceback
    "config a list": ("pretrain_losses", "seed-r2/seed0/pretrain_run.json", lambda p: p.write_text('{"config": []}'),
                      "pretrain_run.json: config: expected an object (the run's settings), got []"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_naming_the_file(small_study, tmp_path, caplog, case):
    figure, name, change, message = BAD_INPUTS[case]
    inputs = copied(small_study, tmp_path, figure)
    change(tmp_path / "toy" / name)
    out = tmp_path / "figure.png"
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main([figure, "--inputs", *map(str, inputs), "--out", str(out)])
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(tmp_path / "toy" / name) in errors[0] and message in errors[0], errors
    assert not out.exists()


@pytest.mark.parametrize("outs, message", [
    # matplotlib's formats, all named: its version decides them (3.11.2 writes avif, 3.8.0 does not)
    (["figure.txt"], "--out {0}/figure.txt: expected a file name ending in a figure format ("
                     + ", ".join(plots.figure_formats()) + ")"),
    (["figure"], "--out {0}/figure: expected a file name ending in a figure format"),
    (["figure.png", "figure.png"], "--out: a file given twice in {0}/figure.png {0}/figure.png"),
])
def test_an_out_of_no_figure_format_or_given_twice_is_a_usage_error(small_study, tmp_path, capsys, outs, message):
    """Before, an unknown format was a matplotlib traceback after the figure was drawn (naming
    the temporary file's suffix when --out had none)."""
    assert {"png", "pdf"} <= set(plots.figure_formats())
    inputs = copied(small_study, tmp_path, "head_spectra")
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main(["head_spectra", "--inputs", *map(str, inputs), "--out", *(str(tmp_path / o) for o in outs)])
    assert exit_info.value.code == 2 and message.format(tmp_path) in capsys.readouterr().err
    assert not any(tmp_path.glob("figure*")) and not any(tmp_path.glob(".figure*"))


@pytest.mark.parametrize("settings, message", [
    ({"metric": "NDCG@11"}, "--settings: metric: expected"),
    ({"protocols": ["ful"]}, "--settings: protocols: expected"),
    ({"colour": "red"}, "--settings: unknown key 'colour'"),
    # a key of the tables' settings, which the figures do not read (report_inputs alone takes it)
    ({"bootstrap_samples": 100}, "--settings: unknown key 'bootstrap_samples'; the figures read ['metric', 'protocols', 'split']"),
])
def test_settings_the_figures_cannot_read_are_a_usage_error(small_study, tmp_path, capsys, settings, message):
    """Before: exit 0 and blank panels (a metric or split no run has), or a key silently ignored."""
    inputs = copied(small_study, tmp_path, "params_vs_accuracy")
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs), "--out", str(tmp_path / "f.png"),
                          "--settings", json.dumps(settings)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_an_out_that_cannot_be_written_is_refused_before_any_is(small_study, tmp_path, capsys):
    """Before: the .png written, then an IsADirectoryError traceback for the .pdf, exit 1."""
    inputs = copied(small_study, tmp_path, "params_vs_accuracy")
    (tmp_path / "f.pdf").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs), "--out", str(tmp_path / "f.png"),
                          str(tmp_path / "f.pdf")])
    assert exit_info.value.code == 2 and f"--out {tmp_path / 'f.pdf'}: is a folder" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("figure, keep, message", [
    ("pretrain_losses", "pretrain_run.json", "no pretrain_history.csv among the"),
    ("finetune_validation", "metrics.json", "no finetune_history.csv among the"),
    ("accuracy_vs_rank", "metrics.json", "no .csv among the"),
    ("accuracy_vs_rank", "popularity|difference.csv", "no finetuned run among the metrics.json given (popularity)"),
    ("params_vs_accuracy", "popularity", "no finetuned run among the metrics.json given (popularity)"),
])
def test_inputs_without_what_a_figure_draws_are_named(small_study, tmp_path, caplog, figure, keep, message):
    """Before: "cannot concat empty list", naming nothing, or (popularity alone) blank panels, exit 0."""
    inputs = [p for p in copied(small_study, tmp_path, figure) if any(k in str(p) for k in keep.split("|"))]
    assert inputs
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main([figure, "--inputs", *map(str, inputs), "--out", str(tmp_path / "f.png")])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert exit_info.value.code == 2 and len(errors) == 1 and message in errors[0], errors


def test_params_vs_accuracy_says_which_runs_it_left_out(small_study, tmp_path, caplog):
    """A run whose metrics.json records no parameter count has no place on the axis: before, it
    was left out without a word, and the log said it was drawn."""
    caplog.set_level(logging.INFO)
    inputs = copied(small_study, tmp_path, "params_vs_accuracy")
    for seed in SEEDS:
        path = tmp_path / "toy" / "seed-r2" / f"seed{seed}" / "bce" / "metrics.json"
        write_json(path, {k: v for k, v in json.loads(path.read_text()).items() if k != "parameters"})
    plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs), "--out", str(tmp_path / "f.png")])
    assert "left out, no parameter count recorded in their metrics.json: bce: seed-r2 seeds 0 1" in caplog.text
    [drew] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drew ")]
    assert "seed-r2" not in drew and "seed-full" in drew and "popularity" not in drew


def test_finetune_validation_reads_a_null_finetune_section_as_not_recorded(small_study, tmp_path):
    inputs = copied(small_study, tmp_path, "finetune_validation")
    path = tmp_path / "toy" / "none" / "seed0" / "bce" / "metrics.json"
    result = json.loads(path.read_text())
    write_json(path, {**result, "config": {**result["config"], "finetune": None}})
    draw("finetune_validation", inputs, tmp_path)


@pytest.mark.parametrize("figure, name", [("pretrain_losses", "seed-r2/seed0/pretrain_history.csv"),
                                          ("head_spectra", "seed-r2/seed0/heads.pt")])
def test_runs_of_two_data_sets_or_one_run_twice_are_refused(small_study, tmp_path, caplog, figure, name):
    """Before, both were drawn: two data sets' seed-r2 seed 0 as one run, labelled with the first's
    name; a run's file given twice (or its copy under another root) as a run drawn twice."""
    inputs = copied(small_study, tmp_path, figure)
    for folder in ("other", "copy/toy"):  # another data set; the same data set under another root
        shutil.copytree(tmp_path / "toy", tmp_path / folder)
    out = tmp_path / "figure.png"
    for extra, message in ((tmp_path / "other" / name, "is of data set 'toy', "),
                           (tmp_path / "copy" / "toy" / name, "; expected each once"),
                           (tmp_path / "toy" / name, "; expected each once")):
        caplog.clear()
        with pytest.raises(SystemExit):
            plot_report.main([figure, "--inputs", *map(str, inputs), str(extra), "--out", str(out)])
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0] and str(extra) in errors[0], errors
    assert not out.exists()


def test_head_spectra_refuses_a_runs_heads_and_pretraining_checkpoint_together(small_study, tmp_path, caplog):
    """heads.pt holds pretrain.pt's head weights: before, both were drawn, the run twice."""
    inputs = copied(small_study, tmp_path, "head_spectra")
    heads = tmp_path / "toy" / "seed-r2" / "seed0" / "heads.pt"
    pretrain = heads.with_name("pretrain.pt")
    pretrain.write_bytes(heads.read_bytes())
    out = tmp_path / "figure.png"
    with pytest.raises(SystemExit):
        plot_report.main(["head_spectra", "--inputs", *map(str, inputs), str(pretrain), "--out", str(out)])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{heads} and {pretrain}: both are the head weights of seed-r2 seed 0 of toy; expected each once"]
    assert not out.exists()


def test_data_distributions_draws_one_checked_data_set(tmp_path, caplog):
    from s3rec.data import write_prepared
    from s3rec.synthetic import SyntheticSpec, generate

    caplog.set_level(logging.INFO)
    for name, seed in (("one", 0), ("two", 1)):
        write_prepared(generate(SyntheticSpec(users=40, items=30, attributes=5, seed=seed)), tmp_path / name)
    out = tmp_path / "figure.png"
    one = [str(tmp_path / "one" / name) for name in ("sequences.parquet", "item_attributes.parquet")]
    assert plot_report.main(["data_distributions", "--inputs", *one, "--out", str(out)]) == 0
    assert "drew 40 sequence lengths" in caplog.text and out.stat().st_size > 0
    out.unlink()
    mixed = [one[0], str(tmp_path / "two" / "item_attributes.parquet")]  # before: drawn, popularity over two's items
    (tmp_path / "one" / "item_attributes.parquet").write_bytes(b"PAR1")  # before: polars' own error
    for inputs, message in ((mixed, "of one prepared data set (one folder), got"),
                            (one, "item_attributes.parquet")):
        caplog.clear()
        with pytest.raises(SystemExit):
            plot_report.main(["data_distributions", "--inputs", *inputs, "--out", str(out)])
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


def test_a_star_needs_both_intervals_to_exclude_zero_and_reads_tables_without_the_t_columns():
    row = {"loss": "bce", "protocol": "full", "pretraining": "seed-r16", "reference": "seed-full",
           "ci_low": -0.006, "ci_high": -0.003}
    old_table = pl.DataFrame([row])  # made before the t interval over seeds was a column
    assert plots._excludes_zero(old_table, "bce", "full", "seed-r16", "seed-full")
    wide = pl.DataFrame([{**row, "seeds_ci_low": -0.009, "seeds_ci_high": 0.001}])
    assert not plots._excludes_zero(wide, "bce", "full", "seed-r16", "seed-full")
    narrow = pl.DataFrame([{**row, "seeds_ci_low": -0.008, "seeds_ci_high": -0.001}])
    assert plots._excludes_zero(narrow, "bce", "full", "seed-r16", "seed-full")
    assert not plots._excludes_zero(narrow, "ce", "full", "seed-r16", "seed-full")  # no such row


def test_the_log_names_each_pretraining_with_its_seeds_in_report_order():
    """runs_drawn, the log's "drew ..." line: seeds sorted, "seed" for one and "seeds" for more,
    popularity (not finetuned, no seed) last and bare."""
    frame = pl.DataFrame({"loss": ["ce", "bce", "bce", "bce", None], "seed": [0, 1, 0, 0, 0],
                          "pretraining": ["none", "none", "seed-full", "none", "popularity"]})
    assert plot_report.runs_drawn(frame) == "bce: none seeds 0 1, seed-full seed 0; ce: none seed 0; popularity"



def test_accuracy_vs_rank_draws_only_the_difference_rows_of_its_metric_and_split(small_study, tmp_path):
    """A difference.csv may hold other metrics or splits (several tables given): only the rows of
    the figure's metric and split give stars. Each row below excludes 0 in both intervals."""
    root, inputs = small_study
    rows = [("seed-r2", "full", "NDCG@10", "test"), ("seed-r4", "full", "HR@10", "test"),
            ("seed-r4", "sampled", "NDCG@10", "valid")]
    pl.DataFrame([{"loss": "bce", "pretraining": label, "reference": "seed-full", "protocol": protocol,
                   "split": split, "metric": metric, "difference": 0.01, "ci_low": 0.005, "ci_high": 0.02,
                   "seeds_ci_low": 0.001, "seeds_ci_high": 0.03, "confidence": 0.95}
                  for label, protocol, metric, split in rows]).write_csv(tmp_path / "difference.csv")
    metrics = [p for p in inputs["accuracy_vs_rank"] if p.name == "metrics.json"]
    fig, _ = plot_report.accuracy_vs_rank([tmp_path / "difference.csv", *metrics], SETTINGS)
    full, sampled = panels(fig)
    assert [t.xy[0] for t in full.texts if t.get_text() == "*"] == [2]
    assert [t for t in sampled.texts if t.get_text() == "*"] == []


def test_params_vs_accuracy_draws_the_settings_metric_and_split(small_study, tmp_path, caplog):
    """The small study's HR@10 is twice its NDCG@10: 0.103 + 0.02 i over seeds for the i-th label
    (none 0, seed-full 1, seed-r2 2, seed-r4 3), the same in both splits: the label names the split.
    main() draws what --settings gives over the defaults."""
    _, inputs = small_study
    caplog.set_level(logging.INFO)
    assert plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs["params_vs_accuracy"]), "--out",
                             str(tmp_path / "f.png"), "--settings", json.dumps({"metric": "HR@10"})]) == 0
    assert "drew HR@10 (test) mean ± std against head parameters" in caplog.text
    assert 'settings: {"metric": "HR@10", "protocols": ["full", "sampled"], "split": "test"}' in caplog.text
    caplog.clear()  # no --settings: the report's defaults
    assert plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs["params_vs_accuracy"]), "--out",
                             str(tmp_path / "f.png")]) == 0
    assert 'settings: {"metric": "NDCG@10", "protocols": ["full", "sampled"], "split": "test"}' in caplog.text
    fig, drawn = plot_report.params_vs_accuracy(inputs["params_vs_accuracy"],
                                                {"metric": "HR@10", "split": "valid", "protocols": ["full"]})
    [ax] = panels(fig)
    assert ax.get_ylabel() == "HR@10 (valid; 0–1)"
    assert sorted(y for _, y, _ in errorbars(ax)) == pytest.approx([0.103, 0.123, 0.143, 0.163])
    assert drawn.startswith("HR@10 (valid) mean ± std against head parameters")


def test_params_vs_accuracy_without_any_parameter_count_is_an_error(small_study, tmp_path, caplog):
    """Not an empty figure: every run's metrics.json lacks `parameters`."""
    inputs = copied(small_study, tmp_path, "params_vs_accuracy")
    for path in inputs:
        write_json(path, {k: v for k, v in json.loads(path.read_text()).items() if k != "parameters"})
    with pytest.raises(SystemExit) as exit_info:
        plot_report.main(["params_vs_accuracy", "--inputs", *map(str, inputs), "--out", str(tmp_path / "f.png")])
    assert exit_info.value.code == 2 and not (tmp_path / "f.png").exists()
    assert "no run with a recorded parameter count (metrics.json `parameters`) to draw" in caplog.text


def test_pretrain_losses_without_pretrain_run_json_draws_with_weights_not_recorded(small_study, tmp_path):
    inputs = [p for p in copied(small_study, tmp_path, "pretrain_losses") if p.name == "pretrain_history.csv"]
    for path in inputs:
        path.with_name("pretrain_run.json").unlink()
    _, drawn = plot_report.pretrain_losses(inputs, SETTINGS)
    assert drawn.endswith("; weights not recorded")


def test_task_weights_are_the_four_heads_numbers(tmp_path):
    path = tmp_path / "pretrain_run.json"
    write_json(path, {"config": {"pretrain": {"aap_weight": 0.2, "mip_weight": 1, "sp_weight": 0.5, "lr": 0.1}}})
    assert plot_report.task_weights(path) == {"aap": 0.2, "mip": 1, "sp": 0.5}  # map's not recorded: left out
    write_json(path, {"config": {"pretrain": {"sp_weight": True}}})
    with pytest.raises(ValueError, match=r"config\.pretrain\.sp_weight: expected a number, got True"):
        plot_report.task_weights(path)


def test_finetune_validation_reads_the_metrics_json_beside_each_history(small_study, tmp_path):
    """Given the histories alone, each run's metrics.json beside it says what it stopped on."""
    inputs = [p for p in copied(small_study, tmp_path, "finetune_validation") if p.name == "finetune_history.csv"]
    fig, drawn = plot_report.finetune_validation(inputs, SETTINGS)
    assert "validation metric per epoch (bce: NDCG@20 (full))" in drawn
    # without any: the report's metric on the full ranking
    for path in inputs:
        path.with_name("metrics.json").unlink()
        path.write_text(path.read_text().replace("valid_NDCG@20", "valid_NDCG@10"))
    fig, drawn = plot_report.finetune_validation(inputs, SETTINGS)
    assert drawn.startswith("validation metric per epoch (NDCG@10)")
    assert [ax.get_ylabel() for ax in panels(fig)] == ["validation NDCG@10 (full ranking)"]


def test_finetune_validation_falls_back_to_the_report_metric_and_reads_an_unknown_cap_as_none(small_study, tmp_path):
    """A run recording an early-stopping metric its history has no column of, or none, is drawn
    on the report's metric; a run that does not say whether it hit the cap is not marked capped."""
    inputs = copied(small_study, tmp_path, "finetune_validation")
    for path in (p for p in inputs if p.name == "metrics.json"):
        result = json.loads(path.read_text())
        del result["config"]["finetune"]["early_stopping_metric"], result["early_stopped"], result["epochs_run"]
        write_json(path, result)
    for path in (p for p in inputs if p.name == "finetune_history.csv"):
        path.write_text(path.read_text().replace("valid_NDCG@20", "valid_NDCG@10"))
    fig, drawn = plot_report.finetune_validation(inputs, SETTINGS)
    assert "(bce: NDCG@10 (full))" in drawn and drawn.endswith("at the epoch cap: none")


@pytest.mark.parametrize("metrics", ["kept", "removed"])
def test_finetune_validation_without_the_fallback_metrics_column_is_a_named_error(small_study, tmp_path, caplog,
                                                                                   metrics):
    """Histories holding no column of the report's metric, drawn because no metrics.json beside
    them names an early-stopping metric they hold (none at all, or one they lack): exit 2 naming a
    history, the column and those it holds, no figure; it was a polars ColumnNotFoundError."""
    inputs = copied(small_study, tmp_path, "finetune_validation")
    for path in (p for p in inputs if p.name == "metrics.json"):
        if metrics == "removed":
            path.unlink()
        else:
            result = json.loads(path.read_text())
            result["config"]["finetune"]["early_stopping_metric"] = "HR@5"
            write_json(path, result)
    histories = [p for p in inputs if p.name == "finetune_history.csv"]
    assert "valid_NDCG@10" not in histories[0].read_text().splitlines()[0]
    args = [str(p) for p in inputs if p.exists()]
    with pytest.raises(SystemExit) as stop:
        plot_report.main(["finetune_validation", "--inputs", *args, "--out", str(tmp_path / "f.png")])
    assert stop.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{histories[0]}: no column 'valid_NDCG@10' to draw")
    assert errors[0].endswith("expected it among its validation columns: valid_NDCG@20")
    assert not (tmp_path / "f.png").exists()


def test_head_spectra_of_full_heads_only_draws_aap_and_map_and_the_authors_as_seed_0(study):
    """No low-rank head anywhere: the AAP and MAP spectra still (the heads the ranks factorise);
    the authors' one checkpoint is drawn as seed 0."""
    name, inputs, _, _ = study
    full = [p for p in inputs["head_spectra"] if "-r" not in p.parent.parent.name + p.parent.name]
    fig, drawn = plot_report.head_spectra(full, SETTINGS)
    assert [ax.get_title() for ax in panels(fig)] == ["AAP head", "MAP head"]
    assert "heads ['aap', 'map']" in drawn
    if name == "2x2":
        assert drawn.endswith(", authors seed 0")


def test_data_distributions_refuses_files_other_than_the_two_of_a_data_set(tmp_path, caplog):
    from s3rec.data import write_prepared
    from s3rec.synthetic import SyntheticSpec, generate

    write_prepared(generate(SyntheticSpec(users=20, items=15, attributes=3, seed=0)), tmp_path / "one")
    inputs = [str(tmp_path / "one" / "sequences.parquet"), str(tmp_path / "one" / "sequences.parquet")]
    with pytest.raises(SystemExit):
        plot_report.main(["data_distributions", "--inputs", *inputs, "--out", str(tmp_path / "f.png")])
    assert "expected sequences.parquet and item_attributes.parquet of one prepared data set" in caplog.text
    assert not (tmp_path / "f.png").exists()


def test_data_distributions_counts_each_items_interactions_and_distinct_attributes(tmp_path, monkeypatch):
    """What plot_report hands the figure: a count per item 1..M (the padding id 0 left out) and
    the distinct attributes of each item 1..M, from the data set as training reads it."""
    from s3rec.data import load_dataset, write_prepared
    from s3rec.synthetic import SyntheticSpec, generate

    write_prepared(generate(SyntheticSpec(users=30, items=12, attributes=4, seed=2)), tmp_path / "one")
    data = load_dataset(tmp_path / "one")
    monkeypatch.setattr(plots, "data_distributions", lambda *args, name: (args, name))
    ((lengths, counts, per_item), name), _ = plot_report.data_distributions(
        [tmp_path / "one" / "sequences.parquet", tmp_path / "one" / "item_attributes.parquet"], SETTINGS)
    items = [item for sequence in data.sequences for item in sequence]
    assert counts.tolist() == [items.count(i) for i in range(1, data.num_items + 1)] and sum(counts) == len(items)
    assert per_item.tolist() == [len(set(data.item_attributes[i])) for i in range(1, data.num_items + 1)]
    assert lengths.tolist() == [len(sequence) for sequence in data.sequences] and name == "one"



def test_each_figure_file_is_written_through_a_temporary_name(small_study, tmp_path, renames):
    """A killed run leaves no half-written figure: each --out is renamed from a temporary beside it."""
    _, inputs = small_study
    outs = [tmp_path / "f.png", tmp_path / "f.pdf"]
    assert plot_report.main(["head_spectra", "--inputs", *map(str, inputs["head_spectra"]),
                             "--out", *map(str, outs)]) == 0
    assert [dst for _, dst in renames] == outs
    assert all(src.parent == tmp_path and src.name.startswith(f".{dst.name}.") for src, dst in renames)
    assert sorted(tmp_path.iterdir()) == sorted(outs)
