"""s3rec.report on small fabricated runs: loading, mean ± std, paired bootstrap, rendering."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from s3rec import report


def write_run(directory, variant, seed, ndcg, ranks, heads=0, total=100, **extra):
    """A metrics.json (CONTRACTS.md structure, trimmed) and its ranks.parquet in `directory`;
    `extra` adds or replaces top-level keys (e.g. cpu_seconds, early_stopped)."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics = {p: {s: {"NDCG@10": ndcg, "HR@10": 2 * ndcg} for s in ("valid", "test")} for p in ("full", "sampled")}
    result = {"dataset": "toy", "variant": variant, "seed": seed, "metrics": metrics,
              "parameters": {"encoder": total - heads, "heads": {}, "heads_total": heads, "total": total},
              "wall_seconds": {"pretrain": 60.0, "finetune": 30.0}, **extra}
    (directory / "metrics.json").write_text(json.dumps(result))
    users = np.arange(1, len(ranks) + 1, dtype=np.int32)
    frames = [pl.DataFrame({"user_id": users, "split": split, "protocol": protocol,
                            "rank": np.asarray(ranks, dtype=np.int32)})
              for split in ("valid", "test") for protocol in ("full", "sampled")]
    pl.concat(frames).write_parquet(directory / "ranks.parquet")
    return directory / "metrics.json"


@pytest.fixture
def runs_on_disk(tmp_path):
    """full: NDCG 0.30/0.34 over seeds 0/1; r8: 0.20/0.30; popularity: 0.10 (one run)."""
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 30, size=50)
    paths = [
        write_run(tmp_path / "full/seed0", "full", 0, 0.30, ranks, heads=4096),
        write_run(tmp_path / "full/seed1", "full", 1, 0.34, ranks, heads=4096),
        write_run(tmp_path / "r8/seed0", "r8", 0, 0.20, np.maximum(ranks - 1, 1), heads=1024),
        write_run(tmp_path / "r8/seed1", "r8", 1, 0.30, np.maximum(ranks - 1, 1), heads=1024),
        write_run(tmp_path / "popularity", "popularity", 0, 0.10, ranks + 5, total=0),
    ]
    return paths


def test_summarize_gives_mean_and_std_over_seeds(runs_on_disk):
    summary = report.summarize(report.load_runs(runs_on_disk), split="test")
    row = summary.filter((pl.col("variant") == "r8") & (pl.col("protocol") == "full")
                         & (pl.col("metric") == "NDCG@10")).row(0, named=True)
    assert row["mean"] == pytest.approx(0.25)
    assert row["std"] == pytest.approx(np.std([0.20, 0.30], ddof=1))
    assert row["seeds"] == 2 and row["heads_params"] == 1024
    assert row["wall_seconds"] == pytest.approx(90.0)
    assert row["cpu_seconds"] is None and row["runs_at_cap"] == 0  # old files: not recorded


def test_results_table_orders_variants_and_formats_cells(runs_on_disk):
    summary = report.summarize(report.load_runs(runs_on_disk))
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full", "sampled"])
    assert table["Variant"].to_list() == ["full", "r8", "popularity"]
    assert table.row(1, named=True)["NDCG@10 (full ranking)"] == "0.2500 ± 0.0707"
    assert table.row(2, named=True)["NDCG@10 (sampled)"] == "0.1000"  # one run: no std
    assert table.row(0, named=True)["Head params"] == "4,096"
    assert table.row(0, named=True)[report.CPU_COLUMN] == "–"  # files without cpu_seconds


def test_stopping_read_or_derived():
    config = {"finetune": {"epochs": 150, "patience": 10}}
    base = {"variant": "none", "config": config}
    # recorded by the run: taken as is
    assert report.stopping({**base, "epochs_run": 150, "best_epoch": 146, "early_stopped": True})["hit_cap"] is False
    # derived: ran to the cap without `patience` epochs of no improvement -> hit the cap
    derived = report.stopping({**base, "epochs_run": 150, "best_epoch": 146})
    assert derived["hit_cap"] is True and derived["early_stopped"] is False
    # stopped by patience exactly at the cap: early stopping, not the cap
    assert report.stopping({**base, "epochs_run": 150, "best_epoch": 140})["hit_cap"] is False
    assert report.stopping({**base, "epochs_run": 64, "best_epoch": 54})["hit_cap"] is False
    assert report.stopping({"variant": "popularity", "epochs_run": 0, "best_epoch": 0})["hit_cap"] is None


def test_capped_runs_are_marked_and_cpu_time_reported(tmp_path):
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 30, size=40)
    config = {"finetune": {"epochs": 150, "patience": 10}}
    cpu = {"pretrain": 400.0, "finetune": 60.0}
    paths = [
        write_run(tmp_path / "full/seed0", "full", 0, 0.3, ranks, heads=4096, config=config, epochs_run=62,
                  best_epoch=52, early_stopped=True, cpu_seconds=cpu, execution={"device": "cpu", "threads": 1}),
        write_run(tmp_path / "none/seed0", "none", 0, 0.2, ranks, config=config, epochs_run=150, best_epoch=146,
                  cpu_seconds={"pretrain": 0.0, "finetune": 8.5}, execution={"device": "cpu", "threads": 1}),
        write_run(tmp_path / "authors/seed0", "authors", 0, 0.35, ranks, config=config, epochs_run=40,
                  best_epoch=30, early_stopped=True, cpu_seconds={"pretrain": 0.0, "finetune": 20.0}),
    ]
    summary = report.summarize(report.load_runs(paths))
    none = summary.filter(pl.col("variant") == "none").row(0, named=True)
    assert none["runs_at_cap"] == 1 and none["seeds_at_cap"] == "0" and none["epochs_cap"] == 150
    assert summary.filter(pl.col("variant") == "full").row(0, named=True)["cpu_seconds"] == pytest.approx(460.0)
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full"])
    assert table["Variant"].to_list() == ["none†", "full", "authors"]
    assert table.row(1, named=True)[report.CPU_COLUMN] == "400 + 60"
    assert table.row(0, named=True)[report.CPU_COLUMN] == "0.0 + 8.5"
    assert table.row(2, named=True)[report.CPU_COLUMN] == "– + 20"  # authors: pretrained elsewhere
    notes = report.results_notes(summary)
    assert notes[0].startswith("† Finetuning ended at the epoch cap (150 epochs)") and "none (seed 0 of 1)" in notes[0]
    assert any(note.startswith("authors:") for note in notes)
    latex = report.to_latex(table, notes=notes)
    assert r"none\textsuperscript{\dag}" in latex and r"\footnotesize \textsuperscript{\dag} Finetuning" in latex
    # authors is a reference row: not compared with full
    differences = report.difference_table(report.load_ranks(paths), metric="NDCG@10", protocols=["full"], samples=100)
    assert differences["variant"].to_list() == ["none"]


def test_variant_order():
    assert report.sort_variants(["r32", "popularity", "r8", "authors", "full", "none", "r16"]) == [
        "none", "full", "r8", "r16", "r32", "authors", "popularity"]


def test_format_mean_std():
    assert report.format_mean_std(0.123456, 0.01) == "0.1235 ± 0.0100"
    assert report.format_mean_std(0.5, None) == "0.5000"
    assert report.format_mean_std(None, None) == "–"


def test_per_user_metric_golden_values():
    ranks = np.array([1, 3, 10, 11])
    np.testing.assert_allclose(report.per_user_metric(ranks, "NDCG@10"),
                               [1.0, 0.5, 1 / np.log2(11), 0.0])
    np.testing.assert_allclose(report.per_user_metric(ranks, "HR@10"), [1, 1, 1, 0])
    np.testing.assert_allclose(report.per_user_metric(ranks, "MRR"), [1, 1 / 3, 0.1, 1 / 11])
    with pytest.raises(ValueError, match="AUC"):
        report.per_user_metric(ranks, "AUC")


def planted_ranks(num_users=3000, seeds=(0, 1, 2)):
    """Ranks frame of `full` and `better`: better ranks each target 2 places higher (at least 1).

    The reference rank is uniform on 1..20, so the population mean of the per-user NDCG@10
    difference is known exactly.
    """
    rng = np.random.default_rng(1)
    frames = []
    for seed in seeds:
        base = rng.integers(1, 21, size=num_users)
        for variant, rank in (("full", base), ("better", np.maximum(base - 2, 1))):
            frames.append(pl.DataFrame({"user_id": np.arange(num_users, dtype=np.int32), "split": "test",
                                        "protocol": "full", "rank": rank.astype(np.int32),
                                        "variant": variant, "seed": seed}))
    reference = np.arange(1, 21)
    true = (report.per_user_metric(np.maximum(reference - 2, 1), "NDCG@10")
            - report.per_user_metric(reference, "NDCG@10")).mean()
    return pl.concat(frames), true


def test_bootstrap_interval_contains_planted_effect_and_is_deterministic():
    ranks, true = planted_ranks()
    kwargs = dict(metric="NDCG@10", protocols=["full"], samples=500, seed=3)
    first = report.difference_table(ranks, **kwargs).row(0, named=True)
    assert first["variant"] == "better" and first["users"] == 3000 and first["seeds"] == 3
    assert first["ci_low"] < true < first["ci_high"]
    assert first["ci_low"] > 0  # the effect is detected
    assert report.difference_table(ranks, **kwargs).row(0, named=True) == first
    other_seed = report.difference_table(ranks, **{**kwargs, "seed": 4}).row(0, named=True)
    assert other_seed["ci_low"] != first["ci_low"]


def test_bootstrap_of_identical_variants_is_zero():
    difference = np.zeros((2, 100))
    assert report.paired_bootstrap(difference, samples=200) == (0.0, 0.0, 0.0)


def test_paired_difference_uses_common_users_and_seeds():
    frame = pl.DataFrame({
        "user_id": [1, 2, 3, 1, 2], "split": "test", "protocol": "full", "rank": [1, 1, 1, 3, 3],
        "variant": ["full"] * 3 + ["r8"] * 2, "seed": [0, 0, 0, 0, 0],
    })
    difference = report.paired_difference(frame, "r8", "full", "full", "test", "MRR")
    np.testing.assert_allclose(difference, [[1 / 3 - 1, 1 / 3 - 1]])


def test_markdown_and_latex_rendering():
    table = pl.DataFrame({"Variant": ["r8", "full_dense"], "NDCG@10 (full)": ["0.25 ± 0.01", "50%"]})
    markdown = report.to_markdown(table)
    assert markdown.splitlines()[1] == "|:---|---:|"
    assert "| r8 | 0.25 ± 0.01 |" in markdown
    latex = report.to_latex(table, caption="toy_data", label="tab:toy")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lr}", r"\label{tab:toy}"):
        assert command in latex
    assert r"0.25 $\pm$ 0.01" in latex and r"full\_dense" in latex and r"50\%" in latex
    assert r"\caption{toy\_data}" in latex


def test_head_spectrum_dense_and_low_rank():
    rng = np.random.default_rng(0)
    weight = np.diag([3.0, 2.0, 1.0, 0.5])
    u, v = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    state = {"heads.aap.weight": weight, "heads.aap.bias": np.zeros(4),
             "heads.map.U": u, "heads.map.V": v}
    np.testing.assert_allclose(report.head_spectrum(state, "aap"), [3.0, 2.0, 1.0, 0.5])
    low = report.head_spectrum(state, "map")
    assert low.shape == (2,)
    np.testing.assert_allclose(low, np.linalg.svd(u @ v.T, compute_uv=False)[:2])
    assert report.head_spectrum(state, "sp") is None


def test_run_of_path():
    assert report.run_of_path("results/beauty/r16/seed2/pretrain_history.csv") == ("r16", 2)
    with pytest.raises(ValueError):
        report.run_of_path("results/beauty/popularity/metrics.json")


# ---------------------------------------------------------------- figures


def fake_runs(variants_heads, seeds=(0, 1)):
    """load_runs-like frame: NDCG@10 of each (variant, head count) for every seed and protocol."""
    rows = []
    for i, (variant, heads) in enumerate(variants_heads):
        for seed in seeds:
            for protocol in ("full", "sampled"):
                rows.append({"dataset": "toy", "variant": variant, "seed": seed, "heads_params": heads,
                             "total_params": 100 + heads, "protocol": protocol, "split": "test",
                             "metric": "NDCG@10", "value": 0.3 + 0.01 * i + 0.005 * seed})
    return pl.DataFrame(rows)


def test_params_vs_accuracy_sets_equal_counts_apart_and_labels_points():
    from s3rec import plots

    runs = fake_runs([("none", 0), ("full", 4160), ("r8", 1088), ("r32", 4160)])
    fig = plots.params_vs_accuracy(runs, "NDCG@10", "test", ["full"])
    ax = fig.axes[0]
    xs = {text.get_text(): text.xy[0] for text in ax.texts}
    assert set(xs) == {"none", "full", "r8", "r32"}
    assert xs["full"] != xs["r32"]  # same head count, not drawn on top of each other
    assert any("mean ± std over 2 seeds" in t.get_text() for t in fig.legends[0].get_texts())


def test_finetune_validation_marks_best_epochs_and_capped_runs():
    from s3rec import plots

    history = pl.DataFrame({"variant": ["none"] * 6 + ["full"] * 4, "seed": [0] * 6 + [0] * 4,
                            "epoch": list(range(1, 7)) + list(range(1, 5)),
                            "valid_NDCG@20": [0.1, 0.2, 0.3, 0.35, 0.36, 0.37, 0.2, 0.3, 0.25, 0.24]})
    runs = pl.DataFrame({"variant": ["none", "full"], "seed": [0, 0], "best_epoch": [6, 2], "epochs_run": [6, 4],
                         "epochs_cap": [6, 6], "early_stopped": [False, True], "hit_cap": [True, False]})
    fig = plots.finetune_validation(history, runs, "NDCG@20", dataset="toy")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["none (1 seed; 1 at the cap)", "full (1 seed)"]
    assert "validation NDCG@20" in fig.get_suptitle() and "toy" in fig.get_suptitle()
    markers = {line.get_marker() for ax in fig.axes for line in ax.lines}
    assert {"o", "x", "|"} <= markers


def test_accuracy_vs_rank_draws_differences_with_intervals():
    from s3rec import plots

    runs = fake_runs([("none", 0), ("full", 4160), ("r8", 1088), ("popularity", 0)])
    differences = pl.DataFrame({"variant": ["none", "r8"] * 2, "reference": "full",
                                "protocol": ["full", "full", "sampled", "sampled"], "split": "test",
                                "metric": "NDCG@10", "difference": [-0.01, 0.01, -0.02, 0.0],
                                "ci_low": [-0.02, -0.01, -0.03, -0.01], "ci_high": [0.0, 0.02, -0.01, 0.01],
                                "confidence": 0.95, "seeds": 2, "users": 50})
    fig = plots.accuracy_vs_rank(differences, runs, "NDCG@10", "test", ["full", "sampled"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "r8"]
    low, high = ax.get_ylim()
    assert -0.1 < low and high < 0.1  # the popularity level is a note, not a point on the axis
    assert "popularity 0.3" in ax.get_title() and "full 0.3" in ax.get_title()
