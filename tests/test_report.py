"""s3rec.report on small fabricated runs: labels and order, path grammar, mean ± std, paired
bootstrap, rendering, and scripts/aggregate.py's tables."""
from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import polars as pl
import pytest

from s3rec import differences, labels, metrics, report, run_paths, spectra
from s3rec.intervals import paired_bootstrap
from scripts_import import load_script

aggregate = load_script("aggregate")


def write_run(root, pretraining, seed, loss, ndcg, ranks, heads=0, total=100, **extra):
    """A metrics.json (CONTRACTS.md structure, trimmed) and its ranks.parquet of one finetuning,
    in the workflow's folder root/<pretraining>/seed<S>/<loss>/ (root/popularity/ for popularity);
    `extra` adds or replaces top-level keys (e.g. cpu_seconds, early_stopped)."""
    preset, variant = labels.split_pretraining(pretraining)
    directory = root / "popularity" if variant == "popularity" else root / pretraining / f"seed{seed}" / loss
    directory.mkdir(parents=True, exist_ok=True)
    metrics = {p: {s: {"NDCG@10": ndcg, "HR@10": 2 * ndcg} for s in ("valid", "test")} for p in ("full", "sampled")}
    config = {"model": {"hidden_size": 64}, "finetune": {"loss": loss}}
    if preset:
        config["pretrain"] = {"preset": preset}
    result = {"dataset": "toy", "variant": variant, "seed": seed, "metrics": metrics,
              "parameters": {"encoder": total - heads, "heads": {}, "heads_total": heads, "total": total},
              "wall_seconds": {"pretrain": 60.0, "finetune": 30.0}, "config": config}
    if variant != "popularity":
        result["finetune"] = {"loss": loss}
    result.update(extra)
    (directory / "metrics.json").write_text(json.dumps(result))
    users = np.arange(1, len(ranks) + 1, dtype=np.int32)
    frames = [pl.DataFrame({"user_id": users, "split": split, "protocol": protocol,
                            "rank": np.asarray(ranks, dtype=np.int32)})
              for split in ("valid", "test") for protocol in ("full", "sampled")]
    pl.concat(frames).write_parquet(directory / "ranks.parquet")
    return directory / "metrics.json"


@pytest.fixture
def runs_on_disk(tmp_path):
    """seed-full: NDCG 0.30/0.34 over seeds 0/1; seed-r8: 0.20/0.30 (bce); popularity: 0.10."""
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 30, size=50)
    return [
        write_run(tmp_path, "seed-full", 0, "bce", 0.30, ranks, heads=4096),
        write_run(tmp_path, "seed-full", 1, "bce", 0.34, ranks, heads=4096),
        write_run(tmp_path, "seed-r8", 0, "bce", 0.20, np.maximum(ranks - 1, 1), heads=1024),
        write_run(tmp_path, "seed-r8", 1, "bce", 0.30, np.maximum(ranks - 1, 1), heads=1024),
        write_run(tmp_path, "popularity", 0, None, 0.10, ranks + 5, total=0),
    ]


def test_summarize_gives_mean_and_std_over_seeds(runs_on_disk):
    summary = report.summarize(report.load_runs(runs_on_disk), split="test")
    row = summary.filter((pl.col("pretraining") == "seed-r8") & (pl.col("protocol") == "full")
                         & (pl.col("metric") == "NDCG@10")).row(0, named=True)
    assert (row["loss"], row["preset"], row["variant"]) == ("bce", "seed", "r8")
    assert row["mean"] == pytest.approx(0.25)
    assert row["std"] == pytest.approx(np.std([0.20, 0.30], ddof=1))
    assert row["seeds"] == 2 and row["heads_params"] == 1024
    assert row["wall_seconds"] == pytest.approx(90.0)
    assert row["cpu_seconds"] is None and row["runs_at_cap"] == 0  # old files: not recorded
    popularity = summary.filter(pl.col("pretraining") == "popularity").row(0, named=True)
    assert popularity["loss"] is None and popularity["preset"] is None


def test_summarize_takes_the_mean_of_three_seeds_and_says_what_not_every_seed_recorded(tmp_path):
    """NDCG 0.1, 0.2, 0.6 (median 0.2): mean 0.3, std sqrt((0.04 + 0.01 + 0.09) / 2); best epochs
    10, 20, 60 and epochs run 15, 25, 65: means 30 and 35. CPU time of seeds 0 and 1 only: not a
    mean of two called one of three, but not recorded."""
    ranks = np.arange(1, 21)
    config = {"model": {"hidden_size": 64}, "finetune": {"loss": "bce", "epochs": 100, "patience": 5},
              "pretrain": {"preset": "seed"}}
    cpu = {"pretrain": 400.0, "finetune": 60.0}
    paths = [write_run(tmp_path, "seed-full", seed, "bce", ndcg, ranks, config=config, best_epoch=best,
                       epochs_run=best + 5, early_stopped=True, **({"cpu_seconds": cpu} if seed < 2 else {}),
                       execution={"device": device, "threads": 1})
             for seed, ndcg, best, device in ((0, 0.1, 10, "cuda"), (1, 0.2, 20, "cpu"), (2, 0.6, 60, "cuda"))]
    summary = report.summarize(report.load_runs(paths))
    row = summary.filter((pl.col("protocol") == "full") & (pl.col("metric") == "NDCG@10")).row(0, named=True)
    assert row["mean"] == pytest.approx(0.3) and row["std"] == pytest.approx(math.sqrt(0.07))
    assert (row["best_epoch"], row["epochs_run"], row["seeds"]) == (pytest.approx(30.0), pytest.approx(35.0), 3)
    assert row["pretrain_cpu_seconds"] is None and row["cpu_seconds"] is None and row["devices"] == "cpu cuda"
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full"], digits=2)
    assert table.row(0, named=True)["NDCG@10 (full ranking)"] == "0.30 ± 0.26"
    assert table.row(0, named=True)[report.CPU_COLUMN] == "–"


def test_results_table_orders_rows_and_formats_cells(runs_on_disk):
    summary = report.summarize(report.load_runs(runs_on_disk))
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full", "sampled"])
    assert table.columns[:3] == ["Finetuning", "Pretraining", "Seeds"]
    assert table["Pretraining"].to_list() == ["seed-full", "seed-r8", "popularity"]
    assert table["Finetuning"].to_list() == ["bce", "bce", "–"]
    assert table.row(1, named=True)["NDCG@10 (full ranking)"] == "0.2500 ± 0.0707"
    assert table.row(2, named=True)["NDCG@10 (sampled)"] == "0.1000"  # one run: no std
    assert table.row(0, named=True)["Head params"] == "4,096"
    assert table.row(0, named=True)[report.CPU_COLUMN] == "–"  # files without cpu_seconds
    # AUC has no full-ranking value: before, a column of "–"
    with_auc = report.results_table(summary, metrics=["NDCG@10", "AUC"], protocols=["full", "sampled"])
    assert [c for c in with_auc.columns if "(" in c][1:] == ["NDCG@10 (full ranking)", "NDCG@10 (sampled)",
                                                            "AUC (sampled)"]


def test_results_table_with_two_losses_and_two_presets(tmp_path):
    """A row per (loss, pretraining): bce rows first, each loss in pretraining order."""
    ranks = np.arange(1, 21)
    paths = []
    for loss, shift in (("ce", 0.1), ("bce", 0.0)):  # written in the wrong order on purpose
        for i, pretraining in enumerate(("paper-r16", "authors", "seed-r16", "none", "paper-full", "seed-full")):
            for seed in (0, 1):
                paths.append(write_run(tmp_path, pretraining, seed, loss, 0.2 + shift + 0.01 * i + 0.001 * seed,
                                       ranks))
    paths.append(write_run(tmp_path, "popularity", 0, None, 0.05, ranks))
    summary = report.summarize(report.load_runs(paths))
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full"])
    order = ["none", "seed-full", "seed-r16", "paper-full", "paper-r16", "authors"]
    assert table.select("Finetuning", "Pretraining").rows() == (
        [("bce", p) for p in order] + [("ce", p) for p in order] + [("–", "popularity")])
    cells = dict(zip(table["Finetuning"] + " " + table["Pretraining"], table["NDCG@10 (full ranking)"]))
    assert cells["bce seed-full"] == "0.2505 ± 0.0007"  # i = 5, seeds 0 and 1
    assert cells["ce seed-full"] == "0.3505 ± 0.0007"
    assert cells["– popularity"] == "0.0500"
    # results.csv's columns: the labels and the numbers
    assert {"loss", "pretraining", "preset", "variant", "mean", "std", "seeds"} <= set(summary.columns)
    assert summary.filter(pl.col("pretraining") == "paper-r16")["preset"].unique().to_list() == ["paper"]


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
    # no epochs recorded (none or 0): how it ended is unknown, whatever else the file says
    for epochs_run in (None, 0):
        unknown = report.stopping({**base, "epochs_run": epochs_run, "best_epoch": 5, "early_stopped": True})
        assert (unknown["epochs_run"], unknown["early_stopped"], unknown["hit_cap"]) == (None, None, None)


def test_capped_runs_are_marked_and_cpu_time_reported(tmp_path):
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 30, size=40)
    config = {"finetune": {"epochs": 150, "patience": 10, "loss": "bce"}, "pretrain": {"preset": "seed"}}
    cpu = {"pretrain": 400.0, "finetune": 60.0}
    paths = [
        write_run(tmp_path, "seed-full", 0, "bce", 0.3, ranks, heads=4096, config=config, epochs_run=62,
                  best_epoch=52, early_stopped=True, cpu_seconds=cpu, execution={"device": "cpu", "threads": 1}),
        write_run(tmp_path, "none", 0, "bce", 0.2, ranks, config=config, epochs_run=150, best_epoch=146,
                  cpu_seconds={"pretrain": 0.0, "finetune": 8.5}, execution={"device": "cpu", "threads": 1}),
        # the authors' import records a preset for their settings: it is not a preset of this study
        write_run(tmp_path, "authors", 0, "bce", 0.35, ranks, config={**config, "pretrain": {"preset": "paper"}},
                  epochs_run=40, best_epoch=30, early_stopped=True, cpu_seconds={"pretrain": 0.0, "finetune": 20.0}),
    ]
    summary = report.summarize(report.load_runs(paths))
    none = summary.filter(pl.col("pretraining") == "none").row(0, named=True)
    assert none["runs_at_cap"] == 1 and none["seeds_at_cap"] == "0" and none["epochs_cap"] == 150
    full = summary.filter(pl.col("pretraining") == "seed-full").row(0, named=True)
    assert full["cpu_seconds"] == pytest.approx(460.0)
    assert summary.filter(pl.col("pretraining") == "authors")["preset"].unique().to_list() == [None]
    table = report.results_table(summary, metrics=["NDCG@10"], protocols=["full"])
    assert table["Pretraining"].to_list() == ["none†", "seed-full", "authors"]
    assert table.row(1, named=True)[report.CPU_COLUMN] == "400 + 60"
    assert table.row(0, named=True)[report.CPU_COLUMN] == "0.0 + 8.5"
    assert table.row(2, named=True)[report.CPU_COLUMN] == "– + 20"  # authors: pretrained elsewhere
    notes = report.results_notes(summary)
    assert notes[0].startswith("† Finetuning ended at the epoch cap (150 epochs)")
    assert "none with bce (seed 0: 1 of 1 runs)" in notes[0]
    assert any(note.startswith("authors:") for note in notes)
    latex = report.to_latex(table, notes=notes)
    assert r"none\textsuperscript{\dag}" in latex and r"\footnotesize \textsuperscript{\dag} Finetuning" in latex
    # authors is a reference: seed-full is compared with it, never the other way round
    table = differences.difference_table(report.load_ranks(paths), metric="NDCG@10", protocols=["full"], samples=100)
    assert table.select("pretraining", "reference").rows() == [("seed-full", "none"), ("seed-full", "authors")]


def test_the_cap_note_names_the_capped_seeds_and_the_cap_they_hit(tmp_path):
    """none with bce ran into its cap of 20 epochs on seeds 0 and 1; ce, capped at 30, stopped
    early: the note says 20 epochs (not ce's 30) and "seeds 0 1"."""
    ranks = np.arange(1, 21)
    paths = []
    for loss, cap, capped in (("bce", 20, True), ("ce", 30, False)):
        config = {"model": {"hidden_size": 64}, "finetune": {"loss": loss, "epochs": cap, "patience": 3}}
        paths += [write_run(tmp_path, "none", seed, loss, 0.2, ranks, config=config, early_stopped=not capped,
                            epochs_run=cap if capped else 12, best_epoch=cap - 1 if capped else 9) for seed in (0, 1)]
    [note] = report.results_notes(report.summarize(report.load_runs(paths)))
    assert note.startswith("† Finetuning ended at the epoch cap (20 epochs), not by early stopping, in: "
                           "none with bce (seeds 0 1: 2 of 2 runs).")


# ---------------------------------------------------------------- labels, order, paths


def test_order_of_variants_losses_presets_and_pretrainings():
    assert sorted(["r32", "popularity", "r8", "authors", "full", "none", "r16"], key=labels.variant_order) == [
        "none", "full", "r8", "r16", "r32", "authors", "popularity"]
    assert labels.sort_losses(["focal", "ce", None, "bce", "ace"]) == ["bce", "ce", "ace", "focal", None]
    assert labels.sort_presets(["zeta", "paper", None, "seed", "alpha"]) == ["seed", "paper", "alpha", "zeta"]
    assert labels.sort_pretrainings(["popularity", "paper-r16", "authors", "alpha-full", "seed-r32", "paper-full",
                                     "seed-r8", "none", "seed-full", "alpha-r4"]) == [
        "none", "seed-full", "seed-r8", "seed-r32", "paper-full", "paper-r16", "alpha-full", "alpha-r4",
        "authors", "popularity"]
    assert labels.split_pretraining("paper-r16") == ("paper", "r16")
    assert labels.split_pretraining("authors") == (None, "authors")


def test_other_losses_presets_variants_and_labels_sort_alphabetically_after_the_known_ones():
    # given in reverse: a sort key that ties them would keep this order (the sort is stable)
    assert sorted(["focal", "ace"], key=labels.loss_order) == ["ace", "focal"]
    assert sorted(["zeta", "alpha"], key=labels.preset_order) == ["alpha", "zeta"]
    assert sorted(["zz", "aa"], key=labels.pretraining_order) == ["aa", "zz"]
    # a variant or label outside the grammar comes after every known one, none included
    assert sorted(["weird", "popularity", "none", "r4", "full"], key=labels.variant_order) == [
        "none", "full", "r4", "popularity", "weird"]
    assert sorted(["seed-r016", "popularity", "authors", "seed-full", "none"], key=labels.pretraining_order) == [
        "none", "seed-full", "authors", "popularity", "seed-r016"]


def test_labels_come_from_metrics_json_not_the_path(tmp_path):
    """preset and loss are what the run recorded, wherever its files lie."""
    path = write_run(tmp_path, "seed-full", 0, "bce", 0.3, np.arange(1, 11))
    result = json.loads(path.read_text())
    result["config"]["pretrain"]["preset"] = "paper"
    result["finetune"]["loss"] = "ce"
    path.write_text(json.dumps(result))
    runs = report.load_runs([path])
    labels = runs.select("loss", "preset", "variant", "pretraining").unique().rows()
    assert labels == [("ce", "paper", "full", "paper-full")]
    ranks = report.load_ranks([path])
    assert ranks.select("loss", "pretraining", "seed").unique().rows() == [("ce", "paper-full", 0)]
    # a variant pretrained here must say with which preset
    del result["config"]["pretrain"]
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"metrics.json: full seed 0: no pretraining preset recorded"):
        report.load_runs([path])


def test_load_runs_is_in_report_order_whatever_the_input_order(runs_on_disk):
    first = report.load_runs(runs_on_disk)
    shuffled = list(runs_on_disk)
    random.Random(1).shuffle(shuffled)
    assert report.load_runs(shuffled[::-1]).equals(first)
    assert first["pretraining"].unique(maintain_order=True).to_list() == ["seed-full", "seed-r8", "popularity"]


@pytest.mark.parametrize("root", ["results/beauty", "study/beauty", "/somewhere/else/beauty"])
def test_run_of_path_on_both_layouts(root):
    assert run_paths.run_of_path(f"{root}/seed-r16/seed2/pretrain_history.csv") == ("seed-r16", 2, None)
    assert run_paths.run_of_path(f"{root}/paper-full/seed0/heads.pt") == ("paper-full", 0, None)
    assert run_paths.run_of_path(f"{root}/seed-r16/seed2/ce/finetune_history.csv") == ("seed-r16", 2, "ce")
    assert run_paths.run_of_path(f"{root}/none/seed1/bce/metrics.json") == ("none", 1, "bce")
    assert run_paths.run_of_path(f"{root}/authors/seed3/ce/finetune_history.csv") == ("authors", 3, "ce")
    assert run_paths.run_of_path(f"{root}/authors/pretrain.pt") == ("authors", None, None)
    assert run_paths.run_of_path(f"{root}/authors/heads.pt") == ("authors", None, None)
    assert run_paths.run_of_path(f"{root}/my_preset-r4/seed0/focal/finetune_history.csv") == ("my_preset-r4", 0, "focal")
    for path in (f"{root}/seed-r16/seed2/ce/finetune_history.csv", f"{root}/popularity/metrics.json",
                 f"{root}/report/tables/difference.csv", f"{root}/authors/pretrain.pt"):
        assert run_paths.dataset_of(path) == "beauty"
    # a difference.csv outside report/tables/: before, the message named the run layouts only
    with pytest.raises(ValueError, match=r"^tables/difference.csv: neither a run file nor popularity's or the "
                                         r"report's; .* or <root>/<dataset>/report/tables/<file> \(difference.csv\)"):
        run_paths.dataset_of("tables/difference.csv")


@pytest.mark.parametrize("path", [
    "results/beauty/r16/seed2/pretrain_history.csv",  # the old grammar: no preset
    "results/beauty/full/seed0/bce/metrics.json",
    "results/beauty/popularity/metrics.json",  # no seed folder, not a run file
    "results/beauty/seed-r16/pretrain.pt",  # only the authors' checkpoint serves every seed
    "results/beauty/seed-r16/seed0/CE/metrics.json",  # a loss is a lowercase name
    "results/beauty/seed-r16/seed0/bce/extra/metrics.json",
    "results/beauty/Seed-full/seed0/pretrain.pt",
    "results/beauty/seed-r016/seed0/pretrain.pt",  # the workflow writes r16; a plan refuses r016 too
    "results/beauty/seed-r0/seed0/bce/metrics.json",
])
def test_run_of_path_names_the_path_and_the_layout_when_off_the_grammar(path):
    with pytest.raises(ValueError) as error:
        run_paths.run_of_path(path)
    assert str(error.value).startswith(f"{path}: ") and "<pretraining>/seed<S>/<loss>/<file>" in str(error.value)


def test_load_histories_labels_from_the_path(tmp_path):
    pretraining = tmp_path / "toy" / "paper-r16" / "seed1" / "pretrain_history.csv"
    finetuning = tmp_path / "toy" / "none" / "seed0" / "ce" / "finetune_history.csv"
    for path in (pretraining, finetuning):
        path.parent.mkdir(parents=True)
        pl.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]}).write_csv(path)
    history = report.load_histories([finetuning, pretraining])
    rows = history.select("pretraining", "preset", "variant", "seed", "loss").unique(maintain_order=True).rows()
    assert rows == [("none", None, "none", 0, "ce"), ("paper-r16", "paper", "r16", 1, None)]
    assert history["train_loss"].to_list() == [1.0, 0.5, 1.0, 0.5]  # the files' own loss column


# ---------------------------------------------------------------- differences


def study_ranks(tmp_path, labels_per_loss, seeds=(0, 1), users=200):
    """metrics.json + ranks.parquet of every (loss, pretraining) in `labels_per_loss`; the rank of
    each user is better the larger the pretraining's `quality` below (deterministic)."""
    quality = {"none": 0, "seed-full": 3, "seed-r8": 2, "seed-r16": 4, "paper-full": 1, "paper-r16": 1, "authors": 5}
    rng = np.random.default_rng(2)
    base = rng.integers(8, 30, size=users)
    paths = []
    for loss, names in labels_per_loss.items():
        for label in names:
            for seed in seeds:
                ranks = np.maximum(base - quality[label] - seed, 1)
                paths.append(write_run(tmp_path, label, seed, loss, 0.1, ranks))
    paths.append(write_run(tmp_path, "popularity", 0, None, 0.05, base + 10))
    return paths


def test_difference_pairs_for_two_presets_and_two_losses_with_a_partial_set(tmp_path):
    paths = study_ranks(tmp_path, {
        "bce": ["none", "seed-full", "seed-r8", "seed-r16", "paper-full", "paper-r16", "authors"],
        "ce": ["none", "seed-r16", "paper-full", "paper-r16"],  # seed-full missing, no authors
    })
    ranks = report.load_ranks(paths)
    pairs, skipped = differences.comparison_pairs(ranks)
    assert pairs == [
        ("bce", "seed-full", "none"), ("bce", "seed-full", "authors"),
        ("bce", "seed-r8", "seed-full"), ("bce", "seed-r16", "seed-full"),
        ("bce", "paper-full", "none"), ("bce", "paper-full", "authors"), ("bce", "paper-r16", "paper-full"),
        ("ce", "paper-full", "none"), ("ce", "paper-r16", "paper-full"),
    ]
    assert skipped == ["seed-r16 − seed-full (ce): no seed-full finetuned with ce"]

    table = differences.difference_table(ranks, metric="MRR", protocols=["full", "sampled"], samples=50)
    assert table.columns == ["loss", "pretraining", "reference", "protocol", "split", "metric", "difference",
                              "ci_low", "ci_high", "seeds_ci_low", "seeds_ci_high", "confidence", "seeds",
                              "users"]
    assert table.height == 2 * len(pairs)
    assert "popularity" not in set(table["pretraining"]) | set(table["reference"])
    by_pair = {(r["loss"], r["pretraining"], r["reference"]): r for r in
               table.filter(pl.col("protocol") == "full").iter_rows(named=True)}
    assert by_pair[("bce", "seed-r16", "seed-full")]["difference"] > 0  # better ranks
    assert by_pair[("bce", "seed-r8", "seed-full")]["difference"] < 0
    assert by_pair[("bce", "paper-r16", "paper-full")]["difference"] == 0.0  # the same ranks
    assert by_pair[("bce", "seed-full", "authors")]["ci_high"] < 0
    assert by_pair[("ce", "paper-full", "none")]["seeds"] == 2 and by_pair[("ce", "paper-full", "none")]["users"] == 200

    pretty = differences.format_difference_table(table)
    assert pretty.columns == ["Finetuning", "Comparison", "ΔMRR, full ranking [95% CI]", "full ranking, over seeds [95% t]",
                              "ΔMRR, sampled [95% CI]", "sampled, over seeds [95% t]"]
    one_seed = differences.format_difference_table(
        table.head(1).with_columns(pl.lit(None, pl.Float64).alias(c) for c in ("seeds_ci_low", "seeds_ci_high")))
    assert one_seed["full ranking, over seeds [95% t]"].to_list() == ["–"]
    assert pretty.rows()[2][:2] == ("bce", "seed-r8 − seed-full")
    assert pretty.select("Finetuning", "Comparison").rows()[-2:] == [("ce", "paper-full − none"),
                                                                     ("ce", "paper-r16 − paper-full")]
    assert "seed-r8 $-$ seed-full" in report.to_latex(pretty)


def test_difference_table_without_any_pair_is_empty_with_its_columns(tmp_path):
    ranks = report.load_ranks(study_ranks(tmp_path, {"bce": ["none", "seed-r8"]}))
    assert differences.comparison_pairs(ranks) == ([], ["seed-r8 − seed-full (bce): no seed-full finetuned with bce"])
    table = differences.difference_table(ranks, metric="MRR", protocols=["full"], samples=10)
    assert table.is_empty() and table.columns[:3] == ["loss", "pretraining", "reference"]
    assert differences.format_difference_table(table).columns == ["Finetuning", "Comparison"]


def test_format_mean_std():
    assert report.format_mean_std(0.123456, 0.01) == "0.1235 ± 0.0100"
    assert report.format_mean_std(0.5, None) == "0.5000"
    assert report.format_mean_std(None, None) == "–"
    assert report.format_mean_std(0.5, math.nan) == "0.5000"  # as a CSV's empty std reads back
    assert report.format_mean_std(math.nan, 0.1) == "–"
    assert report.format_mean_std(0.123456, 0.01, digits=2) == "0.12 ± 0.01"


def test_format_seconds_and_counts():
    assert [report.format_seconds(s) for s in (0.04, 9.5, 10, 1234.4, None, math.nan)] == [
        "0.0", "9.5", "10", "1,234", "–", "–"]
    assert [report.format_count(c) for c in (0, 4096, None)] == ["0", "4,096", "–"]


def test_per_user_metric_golden_values():
    ranks = np.array([1, 3, 10, 11])
    np.testing.assert_allclose(metrics.per_user_metric(ranks, "NDCG@10"),
                               [1.0, 0.5, 1 / np.log2(11), 0.0])
    np.testing.assert_allclose(metrics.per_user_metric(ranks, "HR@10"), [1, 1, 1, 0])
    np.testing.assert_allclose(metrics.per_user_metric(ranks, "MRR"), [1, 1 / 3, 0.1, 1 / 11])
    with pytest.raises(ValueError, match="AUC"):
        metrics.per_user_metric(ranks, "AUC")


def planted_ranks(num_users=3000, seeds=(0, 1, 2)):
    """Ranks frame of `seed-full` and `seed-r8`: r8 ranks each target 2 places higher (at least 1).

    The reference rank is uniform on 1..20, so the population mean of the per-user NDCG@10
    difference is known exactly.
    """
    rng = np.random.default_rng(1)
    frames = []
    for seed in seeds:
        base = rng.integers(1, 21, size=num_users)
        for label, rank in (("seed-full", base), ("seed-r8", np.maximum(base - 2, 1))):
            frames.append(pl.DataFrame({"user_id": np.arange(num_users, dtype=np.int32), "split": "test",
                                        "protocol": "full", "rank": rank.astype(np.int32),
                                        "pretraining": label, "loss": "bce", "seed": seed}))
    reference = np.arange(1, 21)
    true = (metrics.per_user_metric(np.maximum(reference - 2, 1), "NDCG@10")
            - metrics.per_user_metric(reference, "NDCG@10")).mean()
    return pl.concat(frames), true


def test_bootstrap_interval_contains_planted_effect_and_is_deterministic():
    ranks, true = planted_ranks()
    kwargs = dict(metric="NDCG@10", protocols=["full"], samples=500, seed=3)
    first = differences.difference_table(ranks, **kwargs).row(0, named=True)
    assert (first["pretraining"], first["reference"]) == ("seed-r8", "seed-full")
    assert first["users"] == 3000 and first["seeds"] == 3
    assert first["ci_low"] < true < first["ci_high"]
    assert first["ci_low"] > 0  # the effect is detected
    assert differences.difference_table(ranks, **kwargs).row(0, named=True) == first
    other_seed = differences.difference_table(ranks, **{**kwargs, "seed": 4}).row(0, named=True)
    assert other_seed["ci_low"] != first["ci_low"]


def test_paired_difference_uses_common_users_and_seeds_of_one_loss():
    frame = pl.DataFrame({
        "user_id": [1, 2, 3, 1, 2, 1, 2], "split": "test", "protocol": "full", "rank": [1, 1, 1, 3, 3, 9, 9],
        "pretraining": ["seed-full"] * 3 + ["seed-r8"] * 2 + ["seed-r8"] * 2, "seed": [0] * 7,
        "loss": ["bce"] * 5 + ["ce"] * 2,
    })
    difference = differences.paired_difference(frame, "bce", "seed-r8", "seed-full", "full", "test", "MRR")
    np.testing.assert_allclose(difference, [[1 / 3 - 1, 1 / 3 - 1]])
    with pytest.raises(ValueError, match="no ranks for 'seed-full' finetuned with 'ce'"):
        differences.paired_difference(frame, "ce", "seed-r8", "seed-full", "full", "test", "MRR")


def ranks_frame(rows):
    """A ranks frame of (pretraining, seed, user_id, rank) rows, finetuned with bce, full ranking, test."""
    pretraining, seed, user, rank = zip(*rows)
    return pl.DataFrame({"user_id": list(user), "split": "test", "protocol": "full", "rank": list(rank),
                         "pretraining": list(pretraining), "loss": "bce", "seed": list(seed)})


def test_paired_difference_on_a_reference_with_fewer_seeds_and_users_than_the_pretraining():
    # seed-r8 on seeds 0-2 and users 1-3, seed-full on seeds 0 and 2 and users 1-2: paired on
    # seeds 0, 2 and users 1, 2. MRR: r8 ranks 1 (1) on seed 0, 2 (1/2) on seed 2; full ranks 4 (1/4)
    frame = ranks_frame([("seed-r8", s, u, {0: 1, 1: 3, 2: 2}[s]) for s in (0, 1, 2) for u in (1, 2, 3)]
                        + [("seed-full", s, u, 4) for s in (0, 2) for u in (1, 2)])
    difference = differences.paired_difference(frame, "bce", "seed-r8", "seed-full", "full", "test", "MRR")
    np.testing.assert_allclose(difference, [[0.75, 0.75], [0.25, 0.25]])
    disjoint = ranks_frame([("seed-r8", 0, 1, 1), ("seed-r8", 0, 2, 1), ("seed-full", 1, 1, 2), ("seed-full", 1, 2, 2)])
    with pytest.raises(ValueError, match="share no seeds or no users"):
        differences.paired_difference(disjoint, "bce", "seed-r8", "seed-full", "full", "test", "MRR")


def test_paired_difference_pairs_users_by_id_whatever_the_order_of_the_rows():
    # seed-r8's rows list users 3, 2, 1, seed-full's 1, 2, 3; user u is ranked u by r8 and 1 by full:
    # MRR differences 1/1 - 1, 1/2 - 1, 1/3 - 1 in the order of the ids
    frame = ranks_frame([("seed-r8", 0, u, u) for u in (3, 2, 1)] + [("seed-full", 0, u, 1) for u in (1, 2, 3)])
    difference = differences.paired_difference(frame, "bce", "seed-r8", "seed-full", "full", "test", "MRR")
    np.testing.assert_allclose(difference, [[0.0, -0.5, -2 / 3]])


def test_difference_table_passes_its_confidence_and_seed_resampling_to_both_intervals():
    # every user ranked 2 by seed-full (MRR 1/2), by seed-r8 2 on seed 0 and 1 on seed 1: differences
    # 0 on seed 0 and 1/2 on seed 1, mean 1/4. Users only resampled: [1/4, 1/4]; seeds too: [0, 1/2].
    # t over the seed means 0 and 1/2: sd / sqrt(2) = 1/4, t(0.5, 1 df) = 1 (the Cauchy quartile): [0, 1/2]
    frame = ranks_frame([("seed-full", s, u, 2) for s in (0, 1) for u in range(6)]
                        + [("seed-r8", s, u, 2 - s) for s in (0, 1) for u in range(6)])
    fixed = differences.difference_table(frame, "MRR", ["full"], samples=200, resample_seeds=False).row(0, named=True)
    assert (fixed["difference"], fixed["ci_low"], fixed["ci_high"]) == (0.25, 0.25, 0.25)
    row = differences.difference_table(frame, "MRR", ["full"], samples=200, confidence=0.5).row(0, named=True)
    assert row["confidence"] == 0.5
    assert (row["seeds_ci_low"], row["seeds_ci_high"]) == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.5))
    resampled = differences.difference_table(frame, "MRR", ["full"], samples=200).row(0, named=True)
    assert (resampled["ci_low"], resampled["ci_high"]) == (0.0, 0.5)
    assert resampled["seeds_ci_high"] == pytest.approx(0.25 + 12.7062047 * 0.25, abs=1e-5)
    pretty = differences.format_difference_table(pl.DataFrame([row]))
    assert pretty.columns[2:] == ["ΔMRR, full ranking [50% CI]", "full ranking, over seeds [50% t]"]
    assert pretty.row(0)[2:] == (f"+0.2500 [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]", "[+0.0000, +0.5000]")


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


def test_rendering_aligns_label_columns_left_and_escapes_cells():
    """Finetuning and Pretraining name a row: left-aligned like the first column. A `|` in a
    Markdown cell, `&` and the "–" of a cell not recorded in LaTeX would break the table."""
    table = pl.DataFrame({"Seeds": ["2"], "Finetuning": ["bce"], "Pretraining": ["a|b"], "Cost": ["– & more"]})
    markdown = report.to_markdown(table).splitlines()
    assert markdown[1] == "|:---|:---|:---|---:|"
    assert markdown[2] == "| 2 | bce | a\\|b | – & more |"
    latex = report.to_latex(table)
    assert r"\begin{tabular}{lllr}" in latex and r" & -- \& more \\" in latex


def test_head_spectrum_dense_and_low_rank():
    rng = np.random.default_rng(0)
    weight = np.diag([3.0, 2.0, 1.0, 0.5])
    u, v = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    state = {"heads.aap.weight": weight, "heads.aap.bias": np.zeros(4),
             "heads.map.U": u, "heads.map.V": v}
    np.testing.assert_allclose(spectra.head_spectrum(state, "aap"), [3.0, 2.0, 1.0, 0.5])
    low = spectra.head_spectrum(state, "map")
    assert low.shape == (2,)
    np.testing.assert_allclose(low, np.linalg.svd(u @ v.T, compute_uv=False)[:2])
    assert spectra.head_spectrum(state, "sp") is None


# ---------------------------------------------------------------- scripts/aggregate.py


def test_aggregate_is_byte_identical_for_inputs_in_any_order_and_logs_left_out_pairs(tmp_path, caplog):
    paths = study_ranks(tmp_path / "runs", {"bce": ["none", "seed-full", "seed-r8", "paper-full", "paper-r16"],
                                            "ce": ["none", "seed-r8", "paper-full"]})
    settings = json.dumps({"bootstrap_samples": 100, "metrics": ["NDCG@10"]})
    shuffled = list(paths)
    random.Random(0).shuffle(shuffled)
    outputs = []
    for i, order in enumerate((paths, shuffled[::-1])):
        out = tmp_path / f"tables{i}"
        assert aggregate.main(["--metrics", *map(str, order), "--out-dir", str(out), "--settings", settings]) == 0
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert sorted(outputs[0]) == sorted(f"{t}.{e}" for t in ("results", "difference") for e in ("csv", "md", "tex"))
    assert outputs[0] == outputs[1]
    assert "left out seed-r8 − seed-full (ce): no seed-full finetuned with ce" in caplog.text
    results = pl.read_csv(tmp_path / "tables0" / "results.csv")
    assert results.columns[:4] == ["loss", "pretraining", "preset", "variant"]
    difference = (tmp_path / "tables0" / "difference.md").read_text()
    assert "| bce | seed-r8 − seed-full |" in difference and "| ce | paper-full − none |" in difference
    # the table's files say what it lacks, not only the log
    assert "\n\nLeft out: seed-r8 − seed-full (ce): no seed-full finetuned with ce.\n" in difference
    assert r"{\footnotesize Left out: seed-r8 $-$ seed-full (ce)" in (tmp_path / "tables0" / "difference.tex").read_text()


def test_a_comparison_on_fewer_seeds_than_the_table_has_is_named_below_it(tmp_path):
    """seed-r8 has seeds 0-1 of seed-full's 0-2: paired on two. Before, only the CSV's `seeds`
    column said so (the notes named one-seed comparisons alone)."""
    paths = study_ranks(tmp_path / "three", {"bce": ["seed-full", "seed-r16"]}, seeds=(0, 1, 2))
    paths += study_ranks(tmp_path / "two", {"bce": ["seed-r8"]}, seeds=(0, 1))[:-1]
    out = tmp_path / "t"
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(out), "--settings",
                           json.dumps({"bootstrap_samples": 100})]) == 0
    table = (out / "difference.md").read_text()
    assert "\nOn fewer seeds than the table's 3 (those both runs have): seed-r8 − seed-full (bce): 2.\n" in table
    assert "seed-r16 − seed-full (bce): 3" not in table


def test_a_comparison_on_one_seed_is_named_below_the_difference_table(tmp_path):
    """Before, a one-seed interval stood under the caption "re-sampling users and seeds" like any
    other, though it says nothing of the variation between seeds (the .csv's `seeds` alone said 1)."""
    paths = study_ranks(tmp_path / "two", {"bce": ["seed-full", "seed-r16"]})
    paths += study_ranks(tmp_path / "one", {"bce": ["seed-r8"], "ce": ["seed-full", "seed-r8"]}, seeds=(0,))[:-1]
    for resample, expected in ((True, "\nOn one seed: seed-r8 − seed-full (bce); seed-r8 − seed-full (ce). Their "
                                      "intervals re-sample users only: they say nothing of how the difference "
                                      "varies between seeds.\n"),
                               (False, None)):  # the caption says "re-sampling users" already
        out = tmp_path / f"t{resample}"
        assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(out), "--settings",
                               json.dumps({"bootstrap_samples": 100, "resample_seeds": resample})]) == 0
        table = (out / "difference.md").read_text()
        assert (expected in table if expected else "On one seed" not in table), table
        assert "On fewer seeds" not in table  # a one-seed comparison is named once, as on one seed
    assert table.endswith("\nThe bootstrap excludes 0, the t interval over seeds does not: seed-r16 − seed-full "
                          "(bce, full); seed-r16 − seed-full (bce, sampled). Read a difference as clear only where "
                          "both exclude 0 (the stars of accuracy_vs_rank).\n")
    seeds = (pl.read_csv(tmp_path / "tTrue" / "difference.csv").select("loss", "pretraining", "seeds")
             .unique().sort("loss", "pretraining"))
    assert seeds.rows() == [("bce", "seed-r16", 2), ("bce", "seed-r8", 1), ("ce", "seed-r8", 1)]


def test_parameters_and_wall_time_not_recorded_are_dashes_not_zeros(tmp_path):
    """Before, a run without `parameters` or `wall_seconds` showed 0 head and total parameters
    (and sat at 0 on the params_vs_accuracy axis) and 0.0 wall seconds."""
    ranks = np.arange(1, 51) % 20 + 1
    paths = [write_run(tmp_path / "runs", "seed-full", seed, "bce", 0.3, ranks, heads=40, total=140)
             for seed in (0, 1)]
    paths += [write_run(tmp_path / "runs", "seed-r8", seed, "bce", 0.2, ranks) for seed in (0, 1)]
    for path in paths[2:]:
        result = json.loads(path.read_text())
        del result["parameters"], result["wall_seconds"]
        path.write_text(json.dumps(result))
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "t"),
                           "--settings", json.dumps({"bootstrap_samples": 100})]) == 0
    table = (tmp_path / "t" / "results.md").read_text()
    assert re.search(r"\| bce +\| seed-r8 +\| 2 +\| – +\| – +\|", table), table
    assert re.search(r"\| bce +\| seed-full +\| 2 +\| 40 +\| 140 +\|", table), table
    csv = pl.read_csv(tmp_path / "t" / "results.csv").filter(pl.col("pretraining") == "seed-r8")
    assert csv["heads_params"].is_null().all() and csv["wall_seconds"].is_null().all()


def test_a_cell_on_fewer_seeds_than_its_row_says_so(tmp_path):
    """Before, a row said Seeds 3 over cells that were means of 2 (a run without the metric)."""
    ranks = np.arange(1, 51) % 20 + 1
    paths = [write_run(tmp_path / "runs", "seed-full", seed, "bce", 0.3, ranks) for seed in (0, 1, 2)]
    result = json.loads(paths[2].read_text())
    del result["metrics"]["sampled"], result["metrics"]["full"]["test"]["HR@10"]
    paths[2].write_text(json.dumps(result))
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "t"), "--settings",
                           json.dumps({"bootstrap_samples": 100, "metrics": ["HR@10", "NDCG@10"]})]) == 0
    table = pl.read_csv(tmp_path / "t" / "results.csv")
    assert sorted(set(table["seeds"])) == [2, 3]
    row = (tmp_path / "t" / "results.md").read_text().splitlines()[-1]
    assert "| 3 |" in row and row.count("(2 seeds)") == 3, row  # HR@10 full, both sampled
    assert "| 0.3000 ± 0.0000 |" in row  # NDCG@10 (full ranking) on all three


def test_a_comparison_on_fewer_users_is_named_and_a_seed_short_of_users_names_its_file(tmp_path, caplog):
    """Before, seed-r8 ranked on 30 of 50 users was compared on those 30 without a word (only the
    .csv's `users` said so), and one seed short of users failed naming neither file nor seed."""
    ranks = np.arange(1, 51) % 20 + 1
    paths = [write_run(tmp_path / "runs", "seed-full", seed, "bce", 0.3, ranks) for seed in (0, 1)]
    paths += [write_run(tmp_path / "runs", "seed-r8", seed, "bce", 0.2, ranks[:30]) for seed in (0, 1)]
    settings = json.dumps({"bootstrap_samples": 100})
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "t"), "--settings", settings]) == 0
    assert (tmp_path / "t" / "difference.md").read_text().endswith(
        "\nOn fewer users than the runs' 50 (those both runs ranked): seed-r8 − seed-full (bce, full): 30; "
        "seed-r8 − seed-full (bce, sampled): 30.\n")
    write_run(tmp_path / "runs", "seed-r8", 1, "bce", 0.2, ranks)  # seed 1 ranks all 50, seed 0 30
    with pytest.raises(SystemExit):
        aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "u"), "--settings", settings])
    assert "seed-r8/seed0/bce/ranks.parquet ranks 30 users (full, test), another seed 50: the seeds of" in caplog.text
    assert not (tmp_path / "u").exists()


def test_a_difference_table_without_any_pair_says_so(tmp_path):
    paths = study_ranks(tmp_path / "runs", {"bce": ["none", "seed-r8"]})  # no seed-full
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "t"),
                           "--settings", json.dumps({"bootstrap_samples": 100})]) == 0
    text = (tmp_path / "t" / "difference.md").read_text()
    assert "Left out: seed-r8 − seed-full (bce)" in text
    assert "No comparison" not in text  # the left-out note says why the table is empty
    paths = study_ranks(tmp_path / "only-none", {"bce": ["none"]})
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(tmp_path / "u")]) == 0
    assert (tmp_path / "u" / "difference.md").read_text().endswith(
        "\nNo comparison: no preset's full was finetuned with the same loss as none, authors or a rank.\n")


def test_aggregate_follows_every_table_setting_not_its_defaults(tmp_path):
    """Split, metric, protocols, bootstrap samples, seed and confidence, resample_seeds: each
    reaches the results and difference tables and their captions. Before, the tests ran at the
    defaults only (the committed studies' settings), so a setting dropped on the way (the
    difference table at the test split, say) passed them all (the mutation probe). The valid
    split ranks fewer users than the test split: the notes count the users of the split tabulated,
    with thousands separated."""
    ranks = np.random.default_rng(3).integers(1, 30, size=1300)
    settings = {"split": "valid", "metric": "HR@10", "metrics": ["HR@10"], "protocols": ["sampled"],
                "bootstrap_samples": 100, "bootstrap_seed": 7, "confidence": 0.8, "resample_seeds": False}
    paths = []
    for label, shift, users in (("none", 0, 1200), ("seed-full", 3, 1200), ("seed-r8", 2, 1100)):
        for seed in (0, 1):
            path = write_run(tmp_path / "runs", label, seed, "bce", 0.1, np.maximum(ranks - shift - seed, 1))
            result = json.loads(path.read_text())
            result["metrics"]["sampled"]["valid"]["HR@10"] = 0.5 + 0.1 * seed + 0.01 * shift  # test: 0.2
            path.write_text(json.dumps(result))
            frame = pl.read_parquet(path.with_name("ranks.parquet"))
            valid = (pl.col("split") == "valid")
            frame.filter(~valid | (pl.col("user_id") <= users)).with_columns(  # valid: other ranks, fewer users
                rank=pl.when(valid).then(pl.col("rank") + 5).otherwise(pl.col("rank"))).write_parquet(
                path.with_name("ranks.parquet"))
            paths.append(path)
    out = tmp_path / "t"
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(out), "--settings", json.dumps(settings)]) == 0
    results = pl.read_csv(out / "results.csv")
    seed_full = results.filter((pl.col("pretraining") == "seed-full") & (pl.col("protocol") == "sampled")
                               & (pl.col("metric") == "HR@10"))
    assert seed_full["mean"].to_list() == [pytest.approx(0.58)]  # the valid split's 0.53 and 0.63
    expected = aggregate.significant(differences.difference_table(
        report.load_ranks(paths), metric="HR@10", protocols=["sampled"], split="valid", samples=100, seed=7,
        confidence=0.8, resample_seeds=False))
    table = pl.read_csv(out / "difference.csv", schema_overrides=expected.schema)
    assert table.columns == expected.columns and table.select(pl.col(pl.String)).equals(expected.select(pl.col(pl.String)))
    for column in ("difference", "ci_low", "ci_high", "seeds_ci_low", "seeds_ci_high"):
        assert table[column].to_list() == pytest.approx(expected[column].to_list(), rel=1e-9), column
    text = (out / "difference.md").read_text()
    assert text.startswith("toy, valid split: per-user HR@10 of one pretraining minus another")
    assert ("with a 80% paired bootstrap interval (100 resamples, re-sampling users) and a 80% t interval over "
            "seeds") in text
    assert text.endswith("\nOn fewer users than the runs' 1,200 (those both runs ranked): seed-r8 − seed-full "
                         "(bce, sampled): 1,100.\n")
    assert (out / "results.md").read_text().startswith("toy, valid split: mean ± std over seeds")


@pytest.mark.parametrize("executions, said", [
    ([{"device": "cuda:0", "threads": 2}, {"device": "cpu", "threads": 1}], "each job on cpu or cuda:0 with 1 or 2 threads"),
    ([{"device": "cpu", "threads": 1}], "each job on cpu with 1 thread"),
    ([{"threads": 1}], "each job on an unrecorded device with 1 thread"),
    ([None], "threads not recorded"),
], ids=["two-devices", "one", "no-device", "nothing"])
def test_the_results_caption_says_the_devices_and_threads_the_runs_recorded(tmp_path, executions, said):
    """CPU time depends on the device and threads: the caption names them, sorted (the same bytes
    for runs in any order), or says they are not recorded; none of it was checked before."""
    paths = study_ranks(tmp_path / "runs", {"bce": ["none", "seed-full"]}, users=20)[:-1]
    for i, path in enumerate(paths):  # seeds 0 and 1 of none, then of seed-full: a device per row
        execution = executions[i // 2 % len(executions)]
        if execution is not None:
            path.write_text(json.dumps({**json.loads(path.read_text()), "execution": execution}))
    out = tmp_path / "t"
    assert aggregate.main(["--metrics", *map(str, paths), "--out-dir", str(out),
                           "--settings", json.dumps({"bootstrap_samples": 100})]) == 0
    assert f"mean over seeds, {said}; unlike wall-clock time" in (out / "results.md").read_text()


def test_rank_energy_is_the_eckart_young_share_of_the_squared_norm():
    # σ = 3, 2, 1, 0.5 (given out of order): σ² = 9, 4, 1, 0.25, total 14.25
    energy = spectra.rank_energy([1.0, 3.0, 0.5, 2.0], [1, 2, 3, 4, 8])
    assert energy == pytest.approx({1: 9 / 14.25, 2: 13 / 14.25, 3: 14 / 14.25, 4: 1.0, 8: 1.0})
    # the same as the squared error of the best rank-r approximation, computed directly
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(6, 6))
    u, s, vt = np.linalg.svd(weight)
    best2 = (u[:, :2] * s[:2]) @ vt[:2]
    error = np.linalg.norm(weight - best2) ** 2 / np.linalg.norm(weight) ** 2
    assert spectra.rank_energy(spectra.head_spectrum({"heads.aap.weight": weight}, "aap"), [2])[2] == \
        pytest.approx(1 - error)
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        spectra.rank_energy([1.0], [0])
    with pytest.raises(ValueError, match="all zero"):
        spectra.rank_energy([0.0, 0.0], [1])


def test_head_energy_benchmark_reports_dense_heads_per_pretraining(tmp_path, capsys, caplog):
    import torch

    head_energy = load_script("head_energy", folder="benchmarks")

    def save(pretraining, seed, state):
        folder = tmp_path / "toy" / pretraining / f"seed{seed}"
        folder.mkdir(parents=True)
        torch.save({"state_dict": state}, folder / "heads.pt")
        return folder / "heads.pt"

    files = [save("seed-full", seed, {"heads.aap.weight": torch.diag(torch.tensor(sigma)),
                                      "heads.map.weight": torch.eye(4)})
             for seed, sigma in ((0, [2.0, 1.0, 1.0, 0.0]), (1, [1.0, 1.0, 1.0, 1.0]))]
    files.append(save("seed-r2", 0, {"heads.aap.U": torch.ones(4, 2), "heads.aap.V": torch.ones(4, 2)}))
    assert head_energy.main([*map(str, files), "--ranks", "1", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {(r["pretraining"], r["seed"], r["head"]) for r in out["runs"]} == \
        {("seed-full", 0, "aap"), ("seed-full", 0, "map"), ("seed-full", 1, "aap"), ("seed-full", 1, "map")}
    aap = next(s for s in out["summary"] if s["head"] == "aap")
    # seed 0: σ² = 4, 1, 1, 0 -> r1 4/6, r2 5/6; seed 1: r1 1/4, r2 2/4
    assert aap["files"] == 2
    assert aap["r1"]["mean"] == pytest.approx((4 / 6 + 1 / 4) / 2, abs=1e-4)
    assert aap["r2"]["mean"] == pytest.approx((5 / 6 + 2 / 4) / 2, abs=1e-4)
    assert aap["r2"]["std"] == pytest.approx(np.std([5 / 6, 2 / 4], ddof=1), abs=1e-4)
    assert {s["dataset"] for s in out["summary"]} == {"toy"}
    with pytest.raises(SystemExit):  # a low-rank head alone: nothing to report, a clear error naming it
        head_energy.main([str(files[2])])
    assert f"no dense aap or map head in {files[2]}: their heads are low rank" in capsys.readouterr().err
    finetuned = tmp_path / "toy" / "seed-full" / "seed0" / "bce" / "finetune.pt"
    finetuned.parent.mkdir()
    torch.save({"state_dict": {"item_embeddings.weight": torch.zeros(3, 4)}}, finetuned)
    with pytest.raises(SystemExit):  # before: the low-rank message, naming no file
        head_energy.main([str(finetuned)])
    assert f"{finetuned}: no aap or map head weights; expected a heads.pt or pretrain.pt" in caplog.text


def test_head_energy_keeps_data_sets_apart_and_refuses_a_run_twice(tmp_path, capsys, caplog):
    """Before, a run given twice (its heads.pt and pretrain.pt, or one file twice) counted as
    two seeds with std 0, two data sets' seed-full were averaged together, and a rank given
    twice was printed once in each file's energies but twice in `ranks`."""
    import torch

    head_energy = load_script("head_energy", folder="benchmarks")
    paths = {}
    for dataset, scale in (("one", [2.0, 1.0]), ("two", [1.0, 1.0])):
        path = tmp_path / dataset / "seed-full" / "seed0" / "heads.pt"
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {"heads.aap.weight": torch.diag(torch.tensor(scale))}}, path)
        paths[dataset] = path
    assert head_energy.main([str(paths["one"]), str(paths["two"]), "--ranks", "1", "--heads", "aap"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert [(s["dataset"], s["files"], s["r1"]["mean"]) for s in summary] == [("one", 1, 0.8), ("two", 1, 0.5)]
    pretrain = paths["one"].with_name("pretrain.pt")
    pretrain.write_bytes(paths["one"].read_bytes())
    for twice in ([paths["one"], paths["one"]], [paths["one"], pretrain]):
        caplog.clear()
        with pytest.raises(SystemExit) as stop:
            head_energy.main(list(map(str, twice)))
        assert stop.value.code == 2
        assert f"{twice[0]} and {twice[1]}: both are the head weights of seed-full seed 0 of one; expected " \
               "each once" in caplog.text
    with pytest.raises(SystemExit) as stop:
        head_energy.main([str(paths["one"]), "--ranks", "8", "16", "8"])
    assert stop.value.code == 2 and "--ranks: a value given twice in 8 16 8" in capsys.readouterr().err


@pytest.mark.parametrize("saved, message", [
    ("tensor", "expected a pretrain.pt or heads.pt, a dict with a `state_dict` entry"),  # was: AttributeError
    ("nan", "NaN or infinite values in heads.aap.weight"),  # was: an SVD error naming no file
])
def test_head_energy_refuses_a_bad_checkpoint_naming_it(tmp_path, caplog, saved, message):
    import torch

    path = tmp_path / "toy" / "seed-full" / "seed0" / "heads.pt"
    path.parent.mkdir(parents=True)
    weight = torch.eye(4)
    weight[0, 0] = float("nan")
    torch.save(torch.eye(4) if saved == "tensor" else {"state_dict": {"heads.aap.weight": weight}}, path)
    with pytest.raises(SystemExit) as stop:
        load_script("head_energy", folder="benchmarks").main([str(path)])
    assert stop.value.code == 2
    assert f"{path}: {message}" in caplog.text


def test_seeds_needed_benchmark_sizes_each_comparison_with_two_seeds(tmp_path, capsys):
    seeds_needed = load_script("seeds_needed", folder="benchmarks")
    rng = np.random.default_rng(7)
    base = rng.integers(1, 30, size=300)
    paths = [write_run(tmp_path, label, seed, "bce", 0.1, np.maximum(base + rng.integers(-3, 4, size=300) - shift, 1))
             for label, shift in (("seed-full", 0), ("seed-r16", 2)) for seed in (0, 1)]
    paths.append(write_run(tmp_path, "seed-r8", 0, "bce", 0.1, base))  # one seed: skipped, said so
    assert seeds_needed.main([*map(str, paths), "--protocols", "full", "--target", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    [row] = out["comparisons"]
    assert (row["pretraining"], row["reference"], row["seeds"], row["users"]) == ("seed-r16", "seed-full", 2, 300)
    assert row["floor_half_width"] < row["half_width"]
    assert row["half_width_share"] == pytest.approx(row["half_width"] / row["reference_mean"])
    n = row["seeds_for_target"]
    assert n is None or n >= 1
    assert len(out["skipped"]) == 1 and out["skipped"][0].startswith("seed-r8 − seed-full (bce, full)")
    with pytest.raises(SystemExit):  # one seed everywhere: nothing to size, a clear error
        seeds_needed.main([str(paths[0]), str(paths[-1])])
    assert "with one: seed-r8 − seed-full (bce, full): one common seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # before, each comparison was listed once per time given
        seeds_needed.main([*map(str, paths), "--protocols", "full", "full"])
    assert "--protocols: a protocol given twice in full full" in capsys.readouterr().err


def test_bootstrap_stability_flags_an_interval_whose_end_lies_within_its_draws_of_zero(tmp_path, capsys):
    stability = load_script("bootstrap_stability", folder="benchmarks")
    # 400 users of +1 or -1, mean 0.1: the 95 % interval's lower end lies at about 0
    edge = np.where(np.arange(400) < 220, 1.0, -1.0)[None, :]
    row = stability.stability(edge, paired_bootstrap(edge, 2000, seed=0), samples=2000, rng_seeds=10,
                              large_samples=20000)
    assert row["difference"] == pytest.approx(0.1) and row["interval"][0] == pytest.approx(0.0, abs=0.01)
    assert not row["stable"] and 0 < row["excluding_redraws"] < 10  # some redraws exclude 0, some do not
    far = edge + 0.5
    assert stability.stability(far, paired_bootstrap(far, 2000, seed=0), 2000, 3, 4000)["stable"]  # every draw agrees
    rng = np.random.default_rng(7)
    base = rng.integers(1, 30, size=300)
    paths = [write_run(tmp_path, label, seed, "bce", 0.1, np.maximum(base + rng.integers(-3, 4, size=300) - shift, 1))
             for label, shift in (("seed-full", 0), ("seed-r16", 5)) for seed in (0, 1)]
    for near, checked in (("0", 0), ("inf", 1)):  # r16 is clearly ahead: far from 0 unless every comparison is asked for
        assert stability.main([*map(str, paths), "--protocols", "full", "--rng-seeds", "2", "--large-samples", "500",
                               "--near", near]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (len(out["checked"]), out["far"], out["unstable"]) == (checked, 1 - checked, [])
    assert out["checked"][0]["interval"][0] > 0 and out["checked"][0]["excluding_redraws"] == 2
    # the report's interval (RNG seed 0, --samples), the redraws' (seeds 1 and 2), the large one's
    difference = differences.paired_difference(report.load_ranks(paths), "bce", "seed-r16", "seed-full", "full", "test",
                                               "NDCG@10")
    row = out["checked"][0]
    assert (row["seeds"], row["users"]) == (2, 300)
    assert row["interval"] == list(paired_bootstrap(difference, 2000, seed=0)[1:])
    redraws = np.array([paired_bootstrap(difference, 2000, seed=seed)[1:] for seed in (1, 2)])
    assert (row["low_range"], row["high_range"]) == ([redraws[:, 0].min(), redraws[:, 0].max()],
                                                     [redraws[:, 1].min(), redraws[:, 1].max()])
    assert row["large_interval"] == list(paired_bootstrap(difference, 500, seed=0)[1:])


def write_arm_ranks(root, arm, seed, rank, users=(1, 2)):
    """A reproduction arm's seed<S>/ranks.parquet: each of `users` ranks its test target `rank`-th,
    under full ranking and sampled-99 alike."""
    run = root / arm / f"seed{seed}"
    run.mkdir(parents=True)
    n = len(users)
    pl.DataFrame({"user_id": [*users, *users], "split": ["test"] * 2 * n, "protocol": ["full"] * n + ["sampled"] * n,
                  "rank": [rank] * 2 * n},
                 schema={"user_id": pl.Int32, "split": pl.Utf8, "protocol": pl.Utf8, "rank": pl.Int32}
                 ).write_parquet(run / "ranks.parquet")


def test_reproduction_table_pairs_two_arms_user_by_user(tmp_path, capsys):
    """An arm whose every user ranks its target first (NDCG@10 1) against one that ranks it third
    (1/log2(4) = 0.5): the paired difference is 0.5 on every user, so its interval is [0.5, 0.5]."""
    for arm, rank in (("better", 1), ("reference", 3)):
        for seed in (0, 1):
            write_arm_ranks(tmp_path, arm, seed, rank, users=(1, 2, 3))
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == ["seed0", "seed1"]
    for protocol in ("full", "sampled"):
        assert result[protocol] == pytest.approx({"difference": 0.5, "ci_low": 0.5, "ci_high": 0.5,
                                                  "seeds_ci_low": 0.5, "seeds_ci_high": 0.5})
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference"])
    both = "+0.5000 bootstrap [+0.5000, +0.5000] t over seeds [+0.5000, +0.5000]"
    assert capsys.readouterr().out.strip() == f"better − reference, seeds seed0, seed1: full {both} sampled {both}"


def test_reproduction_table_t_interval_spans_the_seeds(tmp_path, capsys):
    """`better` ranks its targets first on seed 0 and second on seed 1 (NDCG@10 1 and 1/log2(3)),
    `reference` third on both (0.5): seed means 0.5 and 0.1309, so the t interval with one degree
    of freedom is mean ± 12.706 · |0.5 − 0.1309| / 2."""
    for arm, ranks in (("better", (1, 2)), ("reference", (3, 3))):
        for seed, rank in enumerate(ranks):
            write_arm_ranks(tmp_path, arm, seed, rank)
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference", "--json"])
    result = json.loads(capsys.readouterr().out)
    means = [0.5, 1 / math.log2(3) - 0.5]
    half = 12.7062 * abs(means[0] - means[1]) / 2
    assert result["full"]["seeds_ci_low"] == pytest.approx(sum(means) / 2 - half, abs=1e-3)
    assert result["full"]["seeds_ci_high"] == pytest.approx(sum(means) / 2 + half, abs=1e-3)
    assert result["full"]["ci_low"] >= min(means) - 1e-9  # the bootstrap stays within the seeds' range
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference"])
    full = result["full"]  # each interval's ends in their order
    assert (f"full {full['difference']:+.4f} bootstrap [{full['ci_low']:+.4f}, {full['ci_high']:+.4f}] t over seeds "
            f"[{full['seeds_ci_low']:+.4f}, {full['seeds_ci_high']:+.4f}] sampled ") in capsys.readouterr().out


def test_reproduction_table_on_one_seed_has_no_t_interval(tmp_path, capsys):
    for arm, rank in (("better", 1), ("reference", 3)):
        write_arm_ranks(tmp_path, arm, 0, rank)
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference", "--json"])
    result = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is no JSON"))
    assert result["full"]["seeds_ci_low"] is None and result["full"]["seeds_ci_high"] is None
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference"])
    assert "full +0.5000 bootstrap [+0.5000, +0.5000] t over seeds –" in capsys.readouterr().out


def test_reproduction_table_sampled_columns_are_the_authors(tmp_path, capsys):
    for seed, mrr in ((0, 0.30), (1, 0.34)):
        run = tmp_path / "lastfm_none_sampled" / f"seed{seed}"
        run.mkdir(parents=True)
        sampled = {m: 0.5 for m in ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10")} | {"MRR": mrr}
        (run / "metrics.json").write_text(json.dumps({"dataset": "lastfm", "variant": "none", "seed": seed,
                                                      "metrics": {"sampled": {"test": sampled}}}))
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--sampled"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| arm | seeds | HR@1 | HR@5 | NDCG@5 | HR@10 | NDCG@10 | MRR |"
    assert lines[2] == ("| lastfm_none_sampled | 0,1 | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 "
                        "| 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | 0.3200 ± 0.0283 |")
    with pytest.raises(SystemExit, match="no runs of arm 'missing'"):
        reproduction_table.main([str(tmp_path), "--sampled", "missing"])


@pytest.mark.parametrize("content, message", [
    (None, "no <arm>/seed<N>/metrics.json under it"),  # was: an empty table
    ('{"dataset": "x", "variant": "none", "seed": 0, "metrics": {"full": {"test": {"NDCG@10": "high"}}}}',
     "arm/seed0/metrics.json: metrics.full.test.NDCG@10: expected a finite number, got 'high'"),
    ("[]", "arm/seed0/metrics.json: expected a JSON object"),
])
def test_reproduction_table_refuses_bad_runs_naming_the_file(tmp_path, caplog, content, message):
    if content is not None:
        (tmp_path / "arm" / "seed0").mkdir(parents=True)
        (tmp_path / "arm" / "seed0" / "metrics.json").write_text(content)
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    with pytest.raises(SystemExit) as stop:
        reproduction_table.main([str(tmp_path)])
    assert stop.value.code == 2
    assert message in caplog.text


@pytest.mark.parametrize("odd, config, message", [
    # seed 1 of seed-full rerun with another learning rate: its mean over seeds would mix them
    (("seed-full", 1), {"finetune": {"loss": "bce", "lr": 0.003}}, "finetuned or evaluated with other settings than"),
    # a rank against a full of another model size: the paired difference would compare unlike models
    (("seed-r8", 0), {"model": {"hidden_size": 32}}, "model.hidden_size 64 there, 32 here"),
    (("seed-r8", 1), {"pretrain": {"preset": "seed", "epochs": 10}}, r"pretrained \(preset seed\) with other settings"),
])
def test_runs_of_other_settings_in_one_table_are_refused(tmp_path, odd, config, message):
    ranks = np.arange(1, 21)
    paths = []
    for pretraining in ("none", "seed-full", "seed-r8"):
        for seed in (0, 1):
            preset = labels.split_pretraining(pretraining)[0]
            recorded = {"model": {"hidden_size": 64, "rank": 8 if pretraining == "seed-r8" else None},
                        "finetune": {"loss": "bce", "lr": 0.001}, "eval": {"batch_size": 256 + seed},
                        **({"pretrain": {"preset": preset, "epochs": 100}} if preset else {})}
            if (pretraining, seed) == odd:
                recorded = {**recorded, **{k: {**recorded.get(k, {}), **v} for k, v in config.items()}}
            paths.append(write_run(tmp_path, pretraining, seed, "bce", 0.3, ranks, config=recorded))
    with pytest.raises(ValueError, match=message) as error:
        report.load_runs(paths)
    assert str(error.value).startswith(str(tmp_path / odd[0] / f"seed{odd[1]}" / "bce" / "metrics.json"))
    # what differs by design (the rank, eval.batch_size) passes; so does the study's
    paths = [path for path in paths if f"{odd[0]}/seed{odd[1]}/" not in str(path)]
    assert len(report.load_runs(paths)) > 0


def test_head_energy_takes_the_mean_of_three_seeds_and_rounds_only_what_it_prints(tmp_path, capsys):
    """seed-full's aap head, σ² (9, 1), (1, 1) and (3, 1) on seeds 0-2: rank 1 keeps 0.9, 0.5 and
    0.75, mean 2.15 / 3 = 0.7167 (the median would be 0.75), sample std 0.2021 (0.1650 over n),
    each printed to 4 digits. A pretraining of one file has no std (null, not NaN); a heads.pt
    whose aap head is low rank and map head dense gives map's row (σ² 4, 1: 0.8). The ranks
    are 8, 16 and 32 unless given."""
    import torch

    head_energy = load_script("head_energy", folder="benchmarks")

    def save(pretraining, seed, state):
        path = tmp_path / "toy" / pretraining / f"seed{seed}" / "heads.pt"
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": state}, path)
        return str(path)

    files = [save("seed-full", seed, {"heads.aap.weight": torch.diag(torch.tensor(sigma, dtype=torch.float64))})
             for seed, sigma in enumerate(([3.0, 1.0], [1.0, 1.0], [math.sqrt(3.0), 1.0]))]
    files.append(save("seed-r1", 0, {"heads.aap.U": torch.ones(2, 1), "heads.aap.V": torch.ones(2, 1),
                                     "heads.map.weight": torch.diag(torch.tensor([2.0, 1.0]))}))
    assert head_energy.main([*files, "--ranks", "1", "2"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is no JSON"))
    assert [(r["pretraining"], r["seed"], r["head"], r["energy"]["1"]) for r in out["runs"]] == [
        ("seed-full", 0, "aap", 0.9), ("seed-full", 1, "aap", 0.5), ("seed-full", 2, "aap", 0.75),
        ("seed-r1", 0, "map", 0.8)]
    full, low = out["summary"]
    assert (full["files"], full["r1"], full["r2"]) == (3, {"mean": 0.7167, "std": 0.2021}, {"mean": 1.0, "std": 0.0})
    assert (low["head"], low["files"], low["r1"]) == ("map", 1, {"mean": 0.8, "std": None})
    assert head_energy.main(files[:1]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ranks"] == [8, 16, 32] and list(out["runs"][0]["energy"]) == ["8", "16", "32"]


def hand_sized_study(root):
    """Four users, seeds 0 and 1. seed-full ranks the test targets 1st, 3rd, 3rd and 11th on both
    seeds (NDCG@10 1, 1/2, 1/2, 0: mean 1/2; HR@10 1, 1, 1, 0); seed-r16 ranks them 3rd, 3rd, 3rd,
    11th on seed 0 and 3rd, 1st, 1st, 3rd on seed 1, so the NDCG@10 difference is (−1/2, 0, 0, 0)
    and (−1/2, 1/2, 1/2, 1/2): mean 1/16, and in variance_components' two-way split seed 1/16,
    user 1/8, residual 1/32; the HR@10 difference is 0 but for the last user on seed 1 (mean
    1/8). Every validation target is ranked first by both (difference 0)."""
    paths = []
    for label, seed, ranks in (("seed-full", 0, [1, 3, 3, 11]), ("seed-full", 1, [1, 3, 3, 11]),
                               ("seed-r16", 0, [3, 3, 3, 11]), ("seed-r16", 1, [3, 1, 1, 3])):
        path = write_run(root, label, seed, "bce", 0.5, ranks)
        ranks_file = path.with_name("ranks.parquet")
        frame = pl.read_parquet(ranks_file)
        frame.with_columns(rank=pl.when(pl.col("split") == "valid").then(1).otherwise(pl.col("rank")).cast(pl.Int32)
                           ).write_parquet(ranks_file)
        paths.append(str(path))
    return paths


def test_seeds_needed_gives_the_hand_computed_sizing(tmp_path, capsys):
    """hand_sized_study: reference mean 0.5 (seed-full's, not seed-r16's 0.5625 nor its best user's
    1); half-width now z·sqrt(1/16 / 2 + 1/8 / 4 + 1/32 / 8) = z·sqrt(17)/16, the floor
    z·sqrt(1/8 / 4) = z/sqrt(32), the grid bootstrap's z·sqrt(93/2048) (intervals.VarianceComponents);
    a target of z/2 of the reference's mean (half-width z/4) leaves room 1/16 − 1/32 for
    (1/16 + 1/32 / 4) / seeds: 3 seeds; a target of 0.5 (half-width 0.25) is narrower than the
    floor: null. Both protocols unless --protocols says otherwise."""
    seeds_needed = load_script("seeds_needed", folder="benchmarks")
    z = 1.959963984540054
    paths = hand_sized_study(tmp_path)
    assert seeds_needed.main([*paths, "--target", str(z / 2)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["target_share"], out["metric"], out["split"], out["skipped"]) == (z / 2, "NDCG@10", "test", [])
    assert [row["protocol"] for row in out["comparisons"]] == ["full", "sampled"]
    row = out["comparisons"][0]
    assert (row["pretraining"], row["reference"], row["seeds"], row["users"]) == ("seed-r16", "seed-full", 2, 4)
    assert row["difference"] == pytest.approx(1 / 16) and row["reference_mean"] == pytest.approx(0.5)
    assert row["sd"] == pytest.approx({"seed": 1 / 4, "user": math.sqrt(1 / 8), "residual": math.sqrt(1 / 32)})
    assert row["half_width"] == pytest.approx(z * math.sqrt(17) / 16)
    assert row["half_width_share"] == pytest.approx(z * math.sqrt(17) / 8)
    assert row["floor_half_width"] == pytest.approx(z / math.sqrt(32))
    assert row["floor_share"] == pytest.approx(2 * z / math.sqrt(32))
    assert row["grid_bootstrap_half_width"] == pytest.approx(z * math.sqrt(93 / 2048))
    assert row["seeds_for_target"] == 3
    assert seeds_needed.main([*paths, "--target", "0.5", "--protocols", "full"]) == 0
    assert json.loads(capsys.readouterr().out)["comparisons"][0]["seeds_for_target"] is None
    # the split and metric asked for: every validation target first (difference 0); HR@10's
    assert seeds_needed.main([*paths, "--split", "valid", "--protocols", "full"]) == 0
    out = json.loads(capsys.readouterr().out)
    [row] = out["comparisons"]
    assert (out["split"], out["target_share"]) == ("valid", 0.02)  # the default target
    assert (row["difference"], row["reference_mean"], row["half_width"]) == (0.0, 1.0, 0.0)
    assert seeds_needed.main([*paths, "--metric", "HR@10", "--protocols", "full"]) == 0
    [row] = json.loads(capsys.readouterr().out)["comparisons"]
    assert (row["difference"], row["reference_mean"]) == (0.125, 0.75)


def test_bootstrap_stability_redraws_with_seeds_1_to_n_and_the_large_sample_with_seed_0(tmp_path):
    """The ranges are over paired_bootstrap's intervals with RNG seeds 1..N (not the report's
    seed 0), the large interval with seed 0 and --large-samples resamples."""
    stability = load_script("bootstrap_stability", folder="benchmarks")
    edge = np.where(np.arange(400) < 220, 1.0, -1.0)[None, :]
    row = stability.stability(edge, paired_bootstrap(edge, 200, seed=0), samples=200, rng_seeds=3, large_samples=300)
    redraws = np.array([paired_bootstrap(edge, 200, seed=seed)[1:] for seed in (1, 2, 3)])
    assert row["low_range"] == [redraws[:, 0].min(), redraws[:, 0].max()]
    assert row["high_range"] == [redraws[:, 1].min(), redraws[:, 1].max()]
    assert row["large_interval"] == list(paired_bootstrap(edge, 300, seed=0)[1:])
    assert (row["redraws"], row["excluding_redraws"]) == (3, sum(low > 0 for low in redraws[:, 0]))


def test_bootstrap_stability_is_unstable_when_the_large_sample_alone_disagrees():
    """205 users of +1 and 195 of −1 (mean 0.025, standard error about 0.05): one resample a
    draw gives a one-point interval, which leaves out 0 with every RNG seed, as the report's does;
    20,000 resamples give an interval holding 0. Not stable, though every redraw agrees."""
    stability = load_script("bootstrap_stability", folder="benchmarks")
    close = np.where(np.arange(400) < 205, 1.0, -1.0)[None, :]
    row = stability.stability(close, paired_bootstrap(close, 1, seed=0), samples=1, rng_seeds=5, large_samples=4000)
    assert row["excludes_zero"] and row["excluding_redraws"] == 5
    assert row["large_interval"][0] < 0 < row["large_interval"][1]
    assert not row["stable"]


def test_bootstrap_stability_near_counts_half_widths_from_the_end_nearest_zero():
    near_zero = load_script("bootstrap_stability", folder="benchmarks").near_zero
    assert near_zero(0.25, 1.25, 0.5)  # half-width 0.5: 0.25 lies at half of it, the bound included
    assert not near_zero(0.3, 1.3, 0.5)
    assert near_zero(-0.1, 1.0, 0.25)  # the end nearest 0, |−0.1|, within 0.1375
    assert not near_zero(-2.0, -1.0, 0.25)  # an interval below 0: its end −1 lies 2 half-widths away
    assert near_zero(-1.25, -0.25, 0.5)


@pytest.mark.parametrize("near", ["nan", "-0.5"])
def test_bootstrap_stability_refuses_a_near_that_is_no_number_at_least_0(near, capsys):
    with pytest.raises(SystemExit) as stop:
        load_script("bootstrap_stability", folder="benchmarks").main(["metrics.json", "--near", near])
    assert stop.value.code == 2
    assert f"--near: expected a number >= 0 (inf: every comparison), got {float(near)}" in capsys.readouterr().err


def test_bootstrap_stability_reads_the_split_and_metric_asked_for_and_checks_every_comparison_with_inf(
        tmp_path, capsys):
    """hand_sized_study: test NDCG@10 difference 1/16 over 2 seeds and 4 users; the validation split's is 0 on every user, an interval of
    width 0, which --near inf checks too (0 half-widths times inf is no number); HR@10's 1/8.
    The defaults are the report's: 2,000 resamples, NDCG@10 on the test split, both protocols."""
    stability = load_script("bootstrap_stability", folder="benchmarks")
    paths = hand_sized_study(tmp_path)
    small = ["--protocols", "full", "--samples", "50", "--rng-seeds", "2", "--large-samples", "60", "--near", "inf"]
    assert stability.main([*paths, *small]) == 0
    [row] = json.loads(capsys.readouterr().out)["checked"]
    assert (row["seeds"], row["users"], row["difference"]) == (2, 4, pytest.approx(1 / 16))
    difference = np.array([[-0.5, 0, 0, 0], [-0.5, 0.5, 0.5, 0.5]])
    redraws = [paired_bootstrap(difference, 50, seed=seed)[1] for seed in (1, 2)]  # --samples resamples each
    assert row["low_range"] == pytest.approx([min(redraws), max(redraws)])
    assert stability.main([*paths, *small, "--split", "valid"]) == 0
    [row] = json.loads(capsys.readouterr().out)["checked"]
    assert (row["difference"], row["interval"], row["excludes_zero"], row["stable"]) == (0.0, [0.0, 0.0], False, True)
    assert stability.main([*paths, *small, "--metric", "HR@10"]) == 0
    [row] = json.loads(capsys.readouterr().out)["checked"]
    assert row["difference"] == 0.125
    assert stability.main(paths) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("metric", "split", "samples", "rng_seeds", "large_samples", "near")} == {
        "metric": "NDCG@10", "split": "test", "samples": 2000, "rng_seeds": 10, "large_samples": 20000, "near": 0.25}
    assert len(out["checked"]) + out["far"] == 2


def write_reproduction_run(root, arm, seed, full, sampled=None, **extra):
    """A reproduction arm's seed<S>/metrics.json: full ranking's test NDCG@10 `full` and HR@10
    twice that; `sampled`: every sampled-99 metric of the authors' tables, or none."""
    run = root / arm / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {"full": {"test": {"NDCG@10": full, "HR@10": 2 * full}}}
    if sampled is not None:
        metrics["sampled"] = {"test": {m: sampled for m in ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")}}
    (run / "metrics.json").write_text(json.dumps({"dataset": "beauty", "variant": "none", "seed": seed,
                                                  "metrics": metrics, **extra}))


def test_reproduction_table_tabulates_each_arm_over_its_seeds(tmp_path, capsys):
    """`paper`, seeds 1-3: full NDCG@10 0.2, 0.3, 0.7 (mean 0.4, where the median is 0.3; sample std
    sqrt(0.14 / 2) = 0.2646), HR@10 twice that, sampled NDCG@10 0.2 more, best epoch / epochs
    run, finetuning CPU time 100, 150 and 60 s (1.7, 2.5 and 1.0 min). `authors`, one seed, full
    ranking alone and nothing else recorded: its one value, – for no sampled one, null where the
    time was not recorded (before, NaN, which is no JSON, and a null cpu_seconds, which
    metrics.json may hold, a traceback). A folder other than seed<N> is no run of its arm."""
    for seed, ndcg, best, ran, cpu in ((1, 0.2, 10, 15, 100.0), (2, 0.3, 12, 17, 150.0), (3, 0.7, 20, 25, 60.0)):
        write_reproduction_run(tmp_path, "paper", seed, ndcg, sampled=ndcg + 0.2, best_epoch=best, epochs_run=ran,
                               early_stopped=True, cpu_seconds={"pretrain": 0.0, "finetune": cpu})
    write_reproduction_run(tmp_path, "authors", 0, 0.1, cpu_seconds=None)
    (tmp_path / "paper" / "notes").mkdir()
    (tmp_path / "paper" / "notes" / "metrics.json").write_text("{}")
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path)])
    assert capsys.readouterr().out.splitlines()[2:] == [
        "| authors | 0 | 0.1000 (1 seed) | 0.2000 (1 seed) | – | None/None | None |",
        "| paper | 1,2,3 | 0.4000 ± 0.2646 | 0.8000 ± 0.5292 | 0.6000 ± 0.2646 | 10/15, 12/17, 20/25 | 1.7, 2.5, 1.0 |"]
    reproduction_table.main([str(tmp_path), "--json"])
    arms = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is no JSON"))
    assert arms["authors"] == {"seeds": [0], "full_NDCG@10": [0.1], "full_HR@10": [0.2], "sampled_NDCG@10": [],
                               "best_epoch": [None], "epochs_run": [None], "early_stopped": [None],
                               "cpu_minutes": [None]}
    assert arms["paper"]["sampled_NDCG@10"] == pytest.approx([0.4, 0.5, 0.9])
    assert (arms["paper"]["seeds"], arms["paper"]["cpu_minutes"]) == ([1, 2, 3], [1.7, 2.5, 1.0])


def test_reproduction_table_sampled_takes_the_arms_asked_for_and_their_sampled_runs(tmp_path, capsys):
    """An arm without sampled metrics gets – in every column; --sampled ARM prints that arm alone."""
    write_reproduction_run(tmp_path, "authors", 0, 0.1)
    write_reproduction_run(tmp_path, "paper", 0, 0.2, sampled=0.5)
    write_reproduction_run(tmp_path, "paper", 1, 0.3)  # evaluated without the sampled protocol
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--sampled"])
    assert capsys.readouterr().out.splitlines()[2:] == ["| authors |  | – | – | – | – | – | – |",
                                                        "| paper | 0 | " + " | ".join(["0.5000 (1 seed)"] * 6) + " |"]
    reproduction_table.main([str(tmp_path), "--sampled", "paper"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| paper | 0 |")


def test_reproduction_table_pairs_the_common_seeds_only(tmp_path, capsys):
    """`better` has seeds 0 and 1, `reference` seed 1 alone, `other` seed 2 alone: better − reference
    on seed 1 (one seed: no t interval); better − other shares no seed, a clear error."""
    for arm, seed, rank in (("better", 0, 1), ("better", 1, 1), ("reference", 1, 3), ("other", 2, 3)):
        write_arm_ranks(tmp_path, arm, seed, rank)
    reproduction_table = load_script("reproduction_table", folder="benchmarks")
    reproduction_table.main([str(tmp_path), "--paired", "better", "reference", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == ["seed1"] and result["full"]["difference"] == 0.5
    with pytest.raises(SystemExit, match=f"better and other under {tmp_path} share no seed with ranks.parquet"):
        reproduction_table.main([str(tmp_path), "--paired", "better", "other"])
