"""benchmarks/runs_per_process.py rehearsed on CPU with a tiny generated data set: it runs N
runs in one process and reports epochs per hour per N (on a GPU each run has its own stream;
here they step eagerly one after another, so only the bookkeeping is checked). Also benchmarks/batch_drawing.py, which times the host's
batch drawing alone. The stacked runs themselves (s3rec/stacked.py) are tested in test_stacked.py."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from s3rec.data import leave_one_out, load_dataset, write_prepared
from s3rec.pretrain_batches import split_instances
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script


@pytest.fixture
def runs_per_process(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports speed.py beside it
    return load_script("runs_per_process", folder="benchmarks")


def test_runs_per_process_reports_each_number_of_runs(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert runs_per_process.main(["--device", "cpu", "--threads", "1", "--runs", "1", "2", "--batches", "2",
                                  "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["device"], report["streams"], report["compile"]) == ("cpu", False, "none")
    steps = report["steps_per_epoch"]  # the prefix instances of 300 users' training parts, in batches of 100
    assert 3 < steps < 60
    one, two = report["results"]
    assert (one["runs"], two["runs"], one["speedup_over_one_run"]) == (1, 2, 1.0)
    for result in (one, two):  # an epoch: steps_per_epoch rounds; all runs together: runs epochs a round
        assert result["seconds_per_epoch"] == pytest.approx(steps * result["seconds_per_round"], abs=0.01)
        assert result["epochs_per_hour"] == pytest.approx(result["runs"] * 3600 / result["seconds_per_epoch"],
                                                          rel=0.01)
        assert 0 < result["host_drawing_seconds_per_round"] < result["seconds_per_round"]


def test_runs_per_process_refuses_to_time_more_steps_than_an_epoch_has(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=40, items=60, attributes=8, seed=3, max_length=6)), data)
    with pytest.raises(SystemExit):
        runs_per_process.main(["--device", "cpu", "--runs", "1", "--batches", "50", "--data", str(data)])
    assert "--batches 50: an epoch has " in capsys.readouterr().err


def test_batch_drawing_times_each_layout(tmp_path, capsys, monkeypatch):
    """benchmarks/batch_drawing.py: an epoch of each kind of batches, drawn and counted."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert load_script("batch_drawing", folder="benchmarks").main(["--repeats", "2", "--data", str(data),
                                                                   "--stacked-seeds", "2", "--steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    [stacked] = report["stacked_steps"]  # two seeds' steps drawn in line, then by worker processes
    assert stacked["seeds"] == 2 and stacked["in_line"]["steps"] == stacked["workers"]["steps"] == 2
    assert stacked["workers"]["process_cpu_ms_per_step"] > 0 and stacked["in_line"]["wall_ms_per_step"] > 0
    for name in ("pretrain_fixed_shapes", "pretrain_chunks", "finetune_fixed_shapes", "finetune_chunks"):
        assert len(report[name]["seconds"]) == 2 and report[name]["best_seconds"] == min(report[name]["seconds"])
    assert report["finetune_chunks"]["steps"] == report["finetune_fixed_shapes"]["steps"] == 2  # 300 users, 256 a batch
    assert report["pretrain_chunks"]["steps"] == report["pretrain_fixed_shapes"]["steps"] > 3


def test_stacked_mode_reports_each_number_of_runs(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert runs_per_process.main(["--device", "cpu", "--threads", "1", "--mode", "stacked", "--runs", "1", "3",
                                  "--batches", "2", "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["mode"], report["streams"]) == ("stacked", False)
    one, three = report["results"]
    assert (one["runs"], three["runs"], one["attention_spelled_out"]) == (1, 3, False)
    assert one["vmap_fallbacks"] == three["vmap_fallbacks"] == []  # dropout on: the CPU attends by matmul
    assert three["epochs_per_hour"] == pytest.approx(3 * 3600 / three["seconds_per_epoch"], rel=0.01)
    assert 0 < three["host_drawing_seconds_per_round"] < three["seconds_per_round"]
    assert three["draw_workers"] is False  # on a CPU the runs' batches are drawn in process
    # as on a GPU: each run's batches drawn in a worker process of its own
    dataset = load_dataset(data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=50, kind="prefixes")
    steps = -(-len(instances) // 100)
    two = runs_per_process.measure_stacked(2, dataset, instances, 2, torch.device("cpu"), steps, draw_workers=True)
    assert two["draw_workers"] is True and two["runs"] == 2 and two["seconds_per_round"] > 0
