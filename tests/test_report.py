"""s3rec.report on small fabricated runs: loading, mean ± std, paired bootstrap, rendering."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from s3rec import report


def write_run(directory, variant, seed, ndcg, ranks, heads=0, total=100):
    """A metrics.json (CONTRACTS.md structure, trimmed) and its ranks.parquet in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics = {p: {s: {"NDCG@10": ndcg, "HR@10": 2 * ndcg} for s in ("valid", "test")} for p in ("full", "sampled")}
    result = {"dataset": "toy", "variant": variant, "seed": seed, "metrics": metrics,
              "parameters": {"encoder": total - heads, "heads": {}, "heads_total": heads, "total": total},
              "wall_seconds": {"pretrain": 60.0, "finetune": 30.0}}
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
    assert row["train_seconds"] == pytest.approx(90.0)


def test_results_table_orders_variants_and_formats_cells(runs_on_disk):
    summary = report.summarize(report.load_runs(runs_on_disk))
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full", "sampled"])
    assert table["Variant"].to_list() == ["full", "r8", "popularity"]
    assert table.row(1, named=True)["NDCG@10 (full ranking)"] == "0.2500 ± 0.0707"
    assert table.row(2, named=True)["NDCG@10 (sampled)"] == "0.1000"  # one run: no std
    assert table.row(0, named=True)["Head params"] == "4,096"


def test_variant_order():
    assert report.sort_variants(["r32", "popularity", "r8", "full", "none", "r16"]) == [
        "none", "full", "r8", "r16", "r32", "popularity"]


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
