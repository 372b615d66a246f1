"""Bad input to the report (s3rec/report.py, scripts/aggregate.py): malformed metrics.json and
ranks.parquet, a run given twice, bad history CSVs and bad report settings each end with a
ValueError (in the script: exit status 2, the message alone) that names the file and the field,
line or key, and leave no table behind. Valid files still read as before."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch

from conftest import REPO
from s3rec import report, report_inputs
from s3rec.metrics import METRICS_FULL
from scripts_import import load_script
from test_report import write_run

aggregate = load_script("aggregate")


@pytest.fixture
def runs(tmp_path):
    """A small valid study of toy: seed-full and seed-r8 (bce, seeds 0 and 1) and popularity."""
    ranks = np.arange(1, 21)
    paths = [write_run(tmp_path / "toy", label, seed, "bce", 0.3, np.maximum(ranks - shift, 1))
             for label, shift in (("seed-full", 0), ("seed-r8", 1)) for seed in (0, 1)]
    return paths + [write_run(tmp_path / "toy", "popularity", 0, None, 0.1, ranks + 3)]


def run_aggregate(paths, out, settings=None):
    """aggregate.main; returns its exit status (0, or that of SystemExit)."""
    argv = ["--metrics", *map(str, paths), "--out-dir", str(out),
            "--settings", json.dumps(settings or {"bootstrap_samples": 100})]
    try:
        return aggregate.main(argv)
    except SystemExit as exit_:
        return exit_.code


def edit_json(path, change):
    result = json.loads(path.read_text())
    change(result)
    path.write_text(json.dumps(result))


def assert_clear_error(paths, tmp_path, caplog, *expected):
    """aggregate ends with status 2, one error line holding every `expected` text, no tables."""
    out = tmp_path / "tables"
    assert run_aggregate(paths, out) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for text in expected:
        assert text in error
    assert not out.exists()


# ---------------------------------------------------------------- A: metrics.json


@pytest.mark.parametrize("damage, field", [
    (lambda p: p.write_text(p.read_text()[:200]), "not valid JSON"),  # truncated
    (lambda p: p.write_text(p.read_text() + "}"), "not valid JSON"),
    (lambda p: p.write_text(""), "not valid JSON"),
    (lambda p: p.write_text("[1, 2]"), "expected a JSON object at the top level, got list"),
    (lambda p: edit_json(p, lambda r: r.pop("metrics")), "no `metrics`"),
    (lambda p: edit_json(p, lambda r: r.update(metrics=[])), "metrics: expected an object, got []"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"].update(test=[0.1])), "metrics.full.test: expected an object"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"]["test"].update({"NDCG@10": None})),
     "metrics.full.test.NDCG@10: expected a finite number, got None"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"]["test"].update({"NDCG@10": "n/a"})),
     "metrics.full.test.NDCG@10: expected a finite number, got 'n/a'"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["sampled"]["valid"].update({"HR@10": "0.5"})),
     "metrics.sampled.valid.HR@10: expected a finite number, got '0.5'"),  # no silent float("0.5")
    (lambda p: edit_json(p, lambda r: r["wall_seconds"].update(pretrain=None)),
     "wall_seconds.pretrain: expected a finite number, got None"),
    (lambda p: edit_json(p, lambda r: r.update(parameters=[1])), "parameters: expected an object, got [1]"),
    (lambda p: edit_json(p, lambda r: r["parameters"].update(total="lots")), "parameters.total: expected an integer"),
    (lambda p: edit_json(p, lambda r: r.update(config="x")), "config: expected an object, got 'x'"),
    (lambda p: edit_json(p, lambda r: r.update(seed="abc")), "seed: expected an integer in [0, 4294967295], got 'abc'"),
    (lambda p: edit_json(p, lambda r: r.update(seed=2**64)),  # was a polars overflow in the table
     "seed: expected an integer in [0, 4294967295], got 18446744073709551616"),
    (lambda p: edit_json(p, lambda r: r.update(variant=8)),
     "variant: expected none, full, authors, r<rank> or popularity, got 8"),
    (lambda p: edit_json(p, lambda r: r.pop("dataset")), "no `dataset`"),
    (lambda p: p.write_text(p.read_text()[:-1] + ', "seed": 7}'), "key 'seed' given twice in one object"),
    # a misspelt name, a missing seed: the run tabulated as seed 0, "–" cells or out of the comparisons
    (lambda p: edit_json(p, lambda r: r.pop("seed")), "seed: expected an integer in [0, 4294967295] (the run's seed), got none"),
    (lambda p: edit_json(p, lambda r: r.update(seed=None)), "(the run's seed), got null"),
    (lambda p: edit_json(p, lambda r: r.update(variant="fulll")), "variant: expected none, full, authors, r<rank>"),
    (lambda p: edit_json(p, lambda r: r["finetune"].update(loss="bcee")), "finetune.loss: expected bce or ce, got 'bcee'"),
    (lambda p: edit_json(p, lambda r: r["metrics"].update(fulll=r["metrics"].pop("full"))),
     "metrics.fulll: expected one of full, sampled"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"].update(tset=r["metrics"]["full"].pop("test"))),
     "metrics.full.tset: expected one of valid, test"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"]["test"].update(AUC=0.5)),
     "metrics.full.test.AUC: expected one of HR@1, HR@5"),  # full ranking has no AUC
    # JSON as Python writes it takes NaN and Infinity: a NaN metric made a NaN mean in the table
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"]["test"].update({"NDCG@10": math.nan})),
     "metrics.full.test.NDCG@10: expected a finite number, got nan"),
    (lambda p: edit_json(p, lambda r: r["wall_seconds"].update(pretrain=math.inf)),
     "wall_seconds.pretrain: expected a finite number, got inf"),
    (lambda p: edit_json(p, lambda r: r["metrics"]["full"]["test"].update(MRR=True)),  # bool is an int in Python
     "metrics.full.test.MRR: expected a finite number, got True"),
    (lambda p: edit_json(p, lambda r: r["parameters"].update(total=-5)),
     "parameters.total: expected an integer >= 0, got -5"),
])
def test_malformed_metrics_json_is_a_clear_error_naming_file_and_field(runs, tmp_path, caplog, damage, field):
    damage(runs[2])
    assert_clear_error(runs, tmp_path, caplog, f"{runs[2]}: ", field)


def test_aggregate_prints_the_message_alone_without_a_traceback(runs, tmp_path):
    edit_json(runs[1], lambda r: r["metrics"]["full"]["test"].update({"MRR": None}))
    out = tmp_path / "tables"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "aggregate.py"), "--metrics", *map(str, runs),
                           "--out-dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{runs[1]}: metrics.full.test.MRR: expected a finite number, got None" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("script", ["aggregate", "plot_report", "export_study"])
def test_the_table_figure_and_export_scripts_start_without_torch(script):
    """They run once per table set, per figure and per run exported to study/: importing torch
    (about 1.5 s) for file writes and argument checks they share with training was most of their
    start-up. (export_study imports it to cut a pretraining's heads out, and only there.)"""
    check = ("import runpy, sys; sys.argv = ['x', '--help']\n"
             f"try: runpy.run_path({str(REPO / 'scripts' / (script + '.py'))!r}, run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


# ---------------------------------------------------------------- A: ranks.parquet


def rewrite_ranks(path, change):
    change(pl.read_parquet(path)).write_parquet(path)


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable parquet file"),  # truncated
    (lambda p: p.write_bytes(b""), "not a readable parquet file"),
    (lambda p: rewrite_ranks(p, lambda r: r.drop("protocol")),
     "expected the columns user_id (integer), split (string), protocol (string) and rank (integer), "
     "got user_id Int32, split String, rank Int32"),
    (lambda p: rewrite_ranks(p, lambda r: r.rename({"user_id": "user"})), "got user Int32,"),
    (lambda p: rewrite_ranks(p, lambda r: r.with_columns(pl.col("rank").cast(pl.Float64))), "rank Float64"),
    (lambda p: rewrite_ranks(p, lambda r: r.with_columns(pl.col("rank").cast(pl.String))), "rank String"),
    (lambda p: rewrite_ranks(p, lambda r: r.head(0)), "no rows; expected a rank per user"),
    (lambda p: rewrite_ranks(p, lambda r: r.with_columns(rank=pl.when(pl.col("user_id") == 3).then(None)
                                                         .otherwise(pl.col("rank")))),
     "4 empty cells in column rank"),
    (lambda p: rewrite_ranks(p, lambda r: r.with_columns(pl.col("rank") - 1)), "a rank of 0; ranks are 1-based"),
    (lambda p: rewrite_ranks(p, lambda r: pl.concat([r, r.head(1)])),
     "user 1 ranked more than once in split 'valid', protocol 'full'"),
])
def test_malformed_ranks_parquet_is_a_clear_error_naming_the_file(runs, tmp_path, caplog, damage, expected):
    ranks = runs[2].with_name("ranks.parquet")
    damage(ranks)
    assert_clear_error(runs, tmp_path, caplog, f"{ranks}: ", expected)


def test_ranks_of_int64_columns_still_read(runs):
    """The contract writes int32; any integer type is a rank all the same, nothing is converted away."""
    rewrite_ranks(runs[0].with_name("ranks.parquet"), lambda r: r.with_columns(pl.col("user_id", "rank").cast(pl.Int64)))
    ranks = report.load_ranks(runs)
    assert ranks.columns[:4] == ["user_id", "split", "protocol", "rank"] and ranks["rank"].dtype == pl.Int64


def test_already_clear_errors_of_the_ranks_end_without_a_traceback(runs, tmp_path, caplog):
    """'no ranks for ...' (a protocol the settings ask for but a run did not rank) was a traceback."""
    for run in runs[2:4]:  # seed-r8, both seeds
        rewrite_ranks(run.with_name("ranks.parquet"), lambda r: r.filter(pl.col("protocol") == "full"))
    assert run_aggregate(runs, tmp_path / "tables") == 2
    assert "no ranks for 'seed-r8' finetuned with 'bce', protocol 'sampled', split 'test'" in caplog.text


# ---------------------------------------------------------------- B: a run given twice


@pytest.mark.parametrize("load", [report.load_runs, report.load_ranks])
def test_a_copied_run_folder_is_refused_naming_both_files(runs, load):
    folder = runs[0].parents[2] / "seed7" / "bce"  # seed-full/seed7/bce, a copy of seed-full/seed0/bce
    shutil.copytree(runs[0].parent, folder)
    copy = folder / "metrics.json"  # still says seed 0
    with pytest.raises(ValueError) as error:
        load([*runs, copy])
    assert str(error.value).startswith(f"{runs[0]} and {copy}: both are the run seed-full seed 0, bce of toy")


@pytest.mark.parametrize("which", [0, -1])  # a finetuning; popularity (which gave a fake ± 0 std)
def test_the_same_metrics_json_twice_is_refused(runs, tmp_path, caplog, which):
    assert_clear_error([*runs, runs[which]], tmp_path, caplog, f"{runs[which]}: given twice")


# ---------------------------------------------------------------- C: history CSVs


FINETUNE_HEADER = "epoch,loss,instances,seconds," + ",".join(f"valid_{m}" for m in METRICS_FULL)


def history(tmp_path, pretraining, seed, text, loss="bce"):
    """A history CSV in the run layout: finetune_history.csv (with `loss`), else pretrain_history.csv."""
    folder = tmp_path / "toy" / pretraining / f"seed{seed}"
    path = folder / loss / "finetune_history.csv" if loss else folder / "pretrain_history.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def finetune_rows(epochs=3, valid=0.2):
    cells = ",".join([str(valid)] * len(METRICS_FULL))
    return "".join(f"{e},{1.0 / e},100,0.5,{cells}\n" for e in range(1, epochs + 1))


@pytest.mark.parametrize("text, expected", [
    ("", "not a readable CSV (empty CSV)"),
    (FINETUNE_HEADER + "\n", "no row; expected a row per epoch"),
    (FINETUNE_HEADER.replace("epoch,", "") + "\n1,100,0.5" + ",0.1" * 8 + "\n", "no `epoch` column"),
    (FINETUNE_HEADER + "\n" + finetune_rows().replace("\n2,", "\n<<<<<<< HEAD\n2,", 1),
     "line 3, column 'epoch': expected an integer, got '<<<<<<< HEAD'"),
    (FINETUNE_HEADER + "\n" + finetune_rows().replace("\n2,0.5,", "\n2,abc,", 1),
     "line 3, column 'loss': expected a number, got 'abc'"),
    (FINETUNE_HEADER + "\n" + finetune_rows().replace("\n3,", "\n3.5,", 1),
     "line 4, column 'epoch': expected an integer, got 3.5"),
    (FINETUNE_HEADER + "\n" + finetune_rows()[:-40], "line 4, column 'valid_HR@1': empty; expected a number"),
    (FINETUNE_HEADER + "\n" + finetune_rows() + "\n", "line 5, column 'epoch': empty"),
    # epochs 1, 2, 1 or from 0: before, drawn as a loop or a shifted curve with exit 0
    (FINETUNE_HEADER + "\n" + finetune_rows().replace("\n3,", "\n1,", 1),
     "line 4, column 'epoch': expected 3 (a row per epoch from 1, in order), got 1"),
    (FINETUNE_HEADER + "\n0,1,100,0.5" + ",0.2" * 8 + "\n", "line 2, column 'epoch': expected 1"),
    # an empty timing cell after filled ones: before, read as rows from before a resume
    (FINETUNE_HEADER + "\n" + finetune_rows().replace("\n3,0.3333333333333333,100,0.5,", "\n3,0.3333333333333333,100,,"),
     "line 4, column 'seconds': empty after rows that hold it"),
])
def test_a_bad_history_is_a_clear_error_naming_file_line_and_column(tmp_path, text, expected):
    good = history(tmp_path, "none", 0, FINETUNE_HEADER + "\n" + finetune_rows())
    bad = history(tmp_path, "seed-r8", 0, text)
    with pytest.raises(ValueError) as error:
        report.load_histories([good, bad])
    assert str(error.value).startswith(f"{bad}: ") and expected in str(error.value)


def test_a_history_without_a_metric_column_the_others_hold_is_refused(tmp_path):
    good = history(tmp_path, "none", 0, FINETUNE_HEADER + "\n" + finetune_rows())
    header = FINETUNE_HEADER.replace(",valid_NDCG@20", "")
    lacking = history(tmp_path, "seed-r8", 0, header + "\n" + finetune_rows().replace(",0.2\n", "\n"))
    with pytest.raises(ValueError, match=f"^{lacking}: no column 'valid_NDCG@20', which {good} has"):
        report.load_histories([good, lacking])
    pretraining = history(tmp_path, "seed-r8", 0, "epoch,loss,aap,mip,map\n1,3.0,1.0,1.0,1.0\n", loss=None)
    other = history(tmp_path, "seed-full", 0, "epoch,loss,aap,mip,map,sp\n1,3.0,1.0,1.0,1.0,0.7\n", loss=None)
    with pytest.raises(ValueError, match=f"^{pretraining}: no column 'sp', which {other} has"):
        report.load_histories([other, pretraining])


def test_pretraining_and_finetuning_histories_read_together_are_each_held_to_their_own_kind(tmp_path):
    """A pretraining history has no valid_* column and a finetuning history no task column: read
    together, each is compared with the histories of its own kind only (else both were refused)."""
    finetuning = history(tmp_path, "none", 0, FINETUNE_HEADER + "\n" + finetune_rows())
    pretraining = history(tmp_path, "seed-r8", 0, "epoch,loss,aap,mip,map,sp\n1,3.0,1.0,1.0,1.0,0.7\n", loss=None)
    frame = report.load_histories([pretraining, finetuning])
    assert frame.select("pretraining", "loss").rows() == [("none", "bce")] * 3 + [("seed-r8", None)]


def test_histories_may_differ_in_timing_columns_and_valid_auc(tmp_path):
    """Legitimately absent: timing columns in older runs; valid_AUC, recorded only when early stopping
    used the sampled protocol. Types are those polars infers, as before."""
    plain = history(tmp_path, "none", 0, FINETUNE_HEADER + "\n" + finetune_rows())
    older = history(tmp_path, "seed-r8", 0, FINETUNE_HEADER.replace(",instances,seconds", "") + ",valid_AUC\n"
                    + finetune_rows().replace(",100,0.5", "").replace("\n", ",0.9\n"))
    frame = report.load_histories([plain, older])
    assert frame.height == 6 and frame["epoch"].dtype == pl.Int64 and frame["train_loss"].dtype == pl.Float64
    assert frame.filter(pl.col("pretraining") == "seed-r8")["instances"].null_count() == 3
    assert frame["valid_AUC"].to_list() == [None] * 3 + [0.9] * 3
    resumed = history(tmp_path, "seed-r16", 0, FINETUNE_HEADER + "\n" + finetune_rows().replace(",100,0.5,", ",,,", 1))
    assert report.load_histories([resumed])["seconds"].to_list() == [None, 0.5, 0.5]  # rows before the resume


def test_a_history_resumed_after_more_than_100_epochs_still_reads_its_timing_as_numbers(tmp_path):
    """Column types come from every row: 120 epochs, the first 101 without the timing cells (written
    before a resumed run's code recorded them). From the first 100 rows alone, `seconds` (all
    empty there) read as text and the valid history was refused."""
    cells = ",".join(["0.2"] * len(METRICS_FULL))
    rows = "".join(f"{e},1.0,{'' if e <= 101 else 100},{'' if e <= 101 else 0.5},{cells}\n" for e in range(1, 121))
    frame = report.load_histories([history(tmp_path, "none", 0, FINETUNE_HEADER + "\n" + rows)])
    assert frame["seconds"].dtype == pl.Float64 and frame["seconds"].to_list() == [None] * 101 + [0.5] * 19


# ---------------------------------------------------------------- D: report settings


@pytest.mark.parametrize("settings, expected", [
    ({"metrics": "NDCG@10"}, "metrics: expected a non-empty list without repeats of HR@1 | "),
    ({"metrics": ["NDCG@11"]}, "metrics: expected a non-empty list"),
    ({"metrics": []}, "metrics: expected a non-empty list"),
    ({"metrics": ["MRR", "HR@10", "MRR"]}, "metrics: expected a non-empty list without repeats"),
    ({"metrics": ["AUC"], "protocols": ["full"]}, "metrics: expected a metric of the full ranking besides AUC"),
    ({"metric": "AUC"}, "metric: expected one of HR@1 | "),
    ({"metric": "ndcg@10"}, "metric: expected one of"),
    ({"split": "train"}, "split: expected valid | test, got 'train'"),
    ({"protocols": "full"}, "protocols: expected a non-empty list without repeats of full | sampled"),
    ({"protocols": ["full", "full"]}, "protocols: expected a non-empty list without repeats"),
    ({"protocols": ["all"]}, "protocols: expected"),
    ({"resample_seeds": "false"}, "resample_seeds: expected true or false, got 'false'"),
    ({"confidence": 0}, "confidence: expected a number between 0 and 1 (exclusive)"),
    ({"confidence": 1}, "confidence: expected a number between 0 and 1 (exclusive)"),  # a 100 % interval
    ({"confidence": 95}, "confidence: expected a number between 0 and 1"),
    ({"confidence": "0.95"}, "confidence: expected a number"),
    ({"bootstrap_samples": 99}, "bootstrap_samples: expected an integer >= 100, got 99"),
    ({"bootstrap_samples": 2000.0}, "bootstrap_samples: expected an integer"),
    ({"bootstrap_samples": True}, "bootstrap_samples: expected an integer"),
    ({"bootstrap_seed": -1}, "bootstrap_seed: expected an integer in [0, 4294967295], got -1"),
    ({"bootstrap_seed": 2**32}, "bootstrap_seed: expected an integer in [0, 4294967295], got 4294967296"),
    ({"metrik": "HR@10"}, "unknown key 'metrik'; expected some of ['bootstrap_samples',"),
])
def test_bad_report_settings_name_the_source_and_the_key(runs, tmp_path, caplog, settings, expected):
    with pytest.raises(ValueError) as error:
        report_inputs.check_report_settings(settings, "plan.json: report.tables")
    assert str(error.value).startswith(f"plan.json: report.tables: {expected}")
    assert run_aggregate(runs, tmp_path / "tables", settings) == 2
    assert f"--settings: {expected}" in caplog.text
    assert not (tmp_path / "tables").exists()


def test_report_settings_not_an_object_is_refused():
    with pytest.raises(ValueError, match=r"^--settings: expected an object of report settings, got \['split'\]"):
        report_inputs.check_report_settings(["split"], "--settings")


@pytest.mark.parametrize("settings", [
    {}, aggregate.DEFAULTS, {"metric": "MRR", "split": "valid", "protocols": ["sampled"]},  # plan.json's figures
    {"metrics": ["AUC", "HR@1"], "confidence": 0.9, "bootstrap_samples": 100, "resample_seeds": False},
    {"metrics": ["AUC"]},  # AUC alone is refused only without the sampled protocol (default: both)
])
def test_valid_report_settings_pass(settings):
    report_inputs.check_report_settings(settings, "--settings")


def test_the_csv_tables_keep_12_significant_digits_of_finite_floats():
    """Past them, means differ between polars versions (summation order): the committed study's
    results.csv regenerated differently with polars 1.0.0 in the 17th digit."""
    frame = pl.DataFrame({"mean": [0.09478453993948338, 0.09478453993948337, -3.14159265358979e-13, 0.0],
                          "seconds": [7135.8492216479935, float("inf"), float("nan"), None], "seeds": [3, 3, 3, 3]})
    rounded = aggregate.significant(frame)
    assert rounded["mean"].to_list() == [0.0947845399395, 0.0947845399395, -3.14159265359e-13, 0.0]
    assert rounded["seconds"][:2].to_list() == [7135.84922165, float("inf")] and rounded["seconds"][3] is None
    assert math.isnan(rounded["seconds"][2]) and rounded["seeds"].dtype == pl.Int64


def test_finetunings_of_one_seed_from_other_pretrained_weights_are_refused(tmp_path, caplog):
    """bce and ce of seed-full seed 0 started from two pretraining runs' weights: before, averaged
    and compared as one start."""
    ranks = np.arange(1, 21)
    paths = [write_run(tmp_path / "toy", "seed-full", 0, loss, 0.3, ranks, pretrained_weights_sha256=digest)
             for loss, digest in (("bce", "a" * 64), ("ce", "b" * 64))]
    assert_clear_error(paths, tmp_path, caplog, f"{paths[1]}: finetuned from other pretrained weights than {paths[0]}",
                       "seed-full seed 0 was pretrained again between them")


@pytest.mark.parametrize("recorded", ["none", "one", "both"])
def test_a_seed_whose_finetunings_record_two_pretraining_runs_is_footnoted(tmp_path, recorded):
    """Runs from before the weights were recorded: different pretraining times are all that tell."""
    ranks = np.arange(1, 21)
    digests = {"none": (None, None), "one": ("a" * 64, None), "both": ("a" * 64, "a" * 64)}[recorded]
    paths = [write_run(tmp_path / "toy", "seed-full", 0, loss, 0.3, ranks,
                       wall_seconds={"pretrain": pretrain, "finetune": 30.0},
                       **({"pretrained_weights_sha256": digest} if digest else {}))
             for loss, pretrain, digest in (("bce", 6379.9, digests[0]), ("ce", 9140.8, digests[1]))]
    paths.append(write_run(tmp_path / "toy", "seed-full", 1, "bce", 0.3, ranks))  # one run: nothing to compare
    assert run_aggregate(paths, tmp_path / "tables") == 0
    text = (tmp_path / "tables" / "results.md").read_text()
    note = ("seed-full seed 0: its finetunings record different pretraining runs (pretraining wall time 6,380 s "
            "for bce, 9,141 s for ce), not which weights they started from: they may not share one start.")
    assert (note in text) == (recorded != "both")  # the same weights: one start, whatever the times
    assert "seed 1" not in text


def test_head_weights_with_an_infinite_value_are_refused_naming_them():
    """check_head_finite, before the head spectra's SVD: inf stops it as NaN does; only the head
    asked for is checked (heads.mip's NaN is no concern of the aap spectrum)."""
    state = {"heads.aap.U": torch.tensor([[1.0, math.inf]]), "heads.aap.bias": torch.zeros(2),
             "heads.mip.U": torch.full((1, 2), math.nan), "heads.map.U": torch.ones(1, 2)}
    with pytest.raises(ValueError, match=r"^heads\.pt: NaN or infinite values in heads\.aap\.U \(a diverged"):
        report_inputs.check_head_finite("heads.pt", state, "aap")
    report_inputs.check_head_finite("heads.pt", state, "map")


def test_runs_of_two_data_sets_are_refused(runs, tmp_path, caplog):
    """One data set's tables: a run of another (a results/ glob too wide) was averaged and compared
    as if of the same data set (the check could be dropped unnoticed: the mutation probe)."""
    edit_json(runs[2], lambda r: r.update(dataset="other"))  # seed-r8 seed 0
    assert_clear_error(runs, tmp_path, caplog, "--metrics: expected the runs of one data set, got ['other', 'toy']")
