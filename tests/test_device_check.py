"""The GPU checks of issue 10 as one prepared call (benchmarks/device_check.sh) and the
benchmark's torch.compile option, rehearsed on the CPU: they must run the day a GPU is lent."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from conftest import REPO, this_python_env
from s3rec.config import RunConfig
from s3rec.data import leave_one_out, load_dataset, write_prepared
from s3rec.encoder import Encoder
from s3rec.pretrain_batches import build_instances, item_attribute_table, iterate_batches
from s3rec.pretraining import PretrainModel
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script

SCRIPT = REPO / "benchmarks" / "device_check.sh"


def device_check(tmp_path, *steps: str, out: str = "out", deadline: int = 300) -> subprocess.CompletedProcess:
    env = this_python_env(OUT=str(tmp_path / out), DEVICE="cpu", DEADLINE=str(deadline))  # its python3 has torch
    return subprocess.run(["bash", str(SCRIPT), *steps], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def synthetic_split(folder, users: int):
    """A generated data set of `users` users prepared under `folder`: (dataset, its leave-one-out split)."""
    write_prepared(generate(SyntheticSpec(users=users, items=200, attributes=5, seed=1)), folder / "data")
    dataset = load_dataset(folder / "data")
    return dataset, leave_one_out(dataset.sequences)


def test_device_check_runs_the_steps_asked_for_and_logs_them(tmp_path):
    done = device_check(tmp_path, "env", "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["device_check.log", "env.txt", "pytest.log"]
    assert f"torch {torch.__version__}" in (out / "env.txt").read_text()
    log = (out / "device_check.log").read_text()
    assert "tests: rc 0" in log, log
    assert " passed" in (out / "pytest.log").read_text()  # test_host_sync runs on any device


def test_device_check_refuses_an_unknown_step_and_skips_what_the_deadline_leaves_no_time_for(tmp_path):
    done = device_check(tmp_path, "tset")
    assert done.returncode == 2 and "unknown step tset" in done.stdout
    # before, the steps named before a typo ran first, using device time, and those after never did
    done = device_check(tmp_path, "env", "speed", "bogus", out="typo")
    assert done.returncode == 2 and "unknown step bogus" in done.stdout and "nothing run" in done.stdout
    assert not (tmp_path / "typo" / "env.txt").exists()
    done = device_check(tmp_path, "speed", out="late", deadline=10)
    assert done.returncode == 0 and "speed: skipped, " in done.stdout, done.stdout
    assert not (tmp_path / "late" / "speed.json").exists()


def test_a_failed_step_leaves_no_output_file_that_looks_finished(tmp_path):
    """Before: its stdout went straight to speed-cuda-graph.json, left empty (no JSON) when it failed."""
    done = device_check(tmp_path, "graph")  # cuda-graph on a CPU: refused at once
    out = tmp_path / "out"
    assert done.returncode == 0 and "graph: rc 2" in done.stdout, done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["device_check.log"]


@pytest.mark.parametrize("mode", ["cuda-graph", "cuda-graph-inductor"])
def test_the_benchmarks_take_cuda_graphs_only_with_fixed_shapes_on_cuda(tmp_path, monkeypatch, capsys, mode):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    for name in ("speed", "jobs_per_device"):
        with pytest.raises(SystemExit):
            load_script(name, folder="benchmarks").main(["--compile", mode])
        assert f"--compile {mode} records fixed-shape steps: add --fixed-shapes" in capsys.readouterr().err
    dataset, split = synthetic_split(tmp_path, users=40)
    with pytest.raises(ValueError, match="compile: cuda-graph records CUDA graphs and needs a CUDA device"):
        load_script("speed", folder="benchmarks").pretrain_steps(dataset, split, "prefixes", "cpu", "padded",
                                                                 compile_mode=mode, fixed_shapes=True)


def test_speed_names_a_source_folder_without_beauty(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    with pytest.raises(FileNotFoundError, match="--source .*: no Beauty.txt; expected Beauty.txt"):
        speed.prepare(tmp_path / "work", source=tmp_path)
    (tmp_path / "Beauty.txt").write_text("1 2 3\n")  # before: a traceback from the attributes' reader
    with pytest.raises(FileNotFoundError, match="--source .*: no Beauty_item2attributes.json; expected"):
        speed.prepare(tmp_path / "work", source=tmp_path)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")  # torch.compile's own imports
def test_compiled_encoder_computes_what_the_eager_one_does(monkeypatch):
    """benchmarks/speed.py --compile: the same states through torch.compile (dropout off)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    cfg = RunConfig.from_dict({"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12}}).model
    torch.manual_seed(0)
    eager = Encoder(cfg, num_items=30).eval()
    compiled = Encoder(cfg, num_items=30).eval()
    compiled.load_state_dict(eager.state_dict())
    speed.compile_encoder(compiled, "default")
    for length in (7, 9):  # dynamic shapes: a second length must not need (or break) anything
        items = torch.randint(1, 31, (5, length))
        items[0, :3] = 0  # left padding
        with torch.no_grad():
            torch.testing.assert_close(compiled(items, causal=True), eager(items, causal=True))
            for got, want in zip(compiled.forward_ends(items, causal=False, num_full=2),
                                 eager.forward_ends(items, causal=False, num_full=2)):
                torch.testing.assert_close(got, want)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
def test_a_fixed_shape_step_is_one_graph_for_every_full_batch():
    """speed.py --fixed-shapes --compile: the whole loss traces as one graph (fullgraph: no
    break), and batches padded to max_len never make it trace again, except the epoch's last,
    smaller batch; what CUDA graphs need to replay one recording a step."""
    rng = np.random.default_rng(0)
    train = [rng.choice(40, size=n, replace=False) + 1 for n in rng.integers(2, 15, size=30)]
    item_attributes = [np.zeros(0, np.int64)] + [np.sort(rng.choice(6, size=2, replace=False) + 1) for _ in range(40)]
    cfg = RunConfig.from_dict({"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12}})
    instances = build_instances(train, item_attributes, 40, 6, max_len=cfg.model.max_len)
    model = PretrainModel(cfg, 40, 6).eval()  # dropout off: eager and compiled compare exactly
    table = item_attribute_table(instances)
    counter = CompileCounter()
    compiled = torch.compile(model.grid_forward, backend=counter, fullgraph=True, dynamic=False)
    steps = list(iterate_batches(instances, 16, np.random.default_rng(1), mask_prob=0.2, batching="padded",
                                 bounds=(), length=cfg.model.max_len))
    assert len(steps) > 3 and steps[-1][0].num_instances < 16
    for (batch,) in steps:
        assert batch.items.shape[1] == cfg.model.max_len
        torch.testing.assert_close(compiled(batch, table)["loss"], model.grid_forward(batch, table)["loss"])
    assert counter.frame_count == 2  # the full batches' shape and the last batch's


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
@pytest.mark.parametrize("mode", ["none", "eager"])
def test_speed_times_the_fixed_shape_step_of_the_runs(tmp_path, monkeypatch, mode):
    """speed.py --fixed-shapes [--compile MODE] builds its steps with runs.pretraining_steps: one
    chunk a step, padded to max_len, and the step trains."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    dataset, split = synthetic_split(tmp_path, users=40)
    step, batches, _, _ = speed.pretrain_steps(dataset, split, "prefixes", "cpu", "padded", compile_mode=mode,
                                               fixed_shapes=True)
    assert all(len(chunks) == 1 and chunks[0].items.shape[1] == 50 for chunks in batches)  # the paper's max_len
    step(batches[0])


def test_jobs_per_device_times_a_finetuning_epoch_and_its_validation(tmp_path, monkeypatch, capsys):
    """jobs_per_device.py --kind finetune: each process trains a finetuning epoch and validates
    as a run does, warmed up before it reports ready; --fixed-shapes is refused there."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    dataset, split = synthetic_split(tmp_path, users=300)
    calls = []
    result = speed.finetune_job_epoch(dataset, split, None, torch.device("cpu"), "padded",
                                      ready=lambda: calls.append("ready"))
    assert calls == ["ready"]
    assert result["batches"] == result["timed_batches"] == 2 and not result["extrapolated"]  # 300 users, batch 256
    assert result["train_seconds"] > 0 and result["valid_seconds"] > 0
    assert result["seconds_per_epoch"] == pytest.approx(result["train_seconds"] + result["valid_seconds"], abs=0.01)
    with pytest.raises(SystemExit):
        load_script("jobs_per_device", folder="benchmarks").main(["--kind", "finetune", "--fixed-shapes"])
    assert "--fixed-shapes: pretraining steps only" in capsys.readouterr().err


def test_speed_times_the_evaluation_per_batch_size(tmp_path, monkeypatch):
    """speed.py --eval-batch-sizes: both passes per size, and the users whose rank moved."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    dataset, split = synthetic_split(tmp_path, users=300)
    report = speed.finetune_benchmark(dataset, split, None, torch.device("cpu"), "padded", eval_batch_sizes=(256, 7))
    by_size = report["eval_by_batch_size"]
    assert list(by_size) == ["256", "7"]
    for row in by_size.values():
        assert row["full_seconds"] > 0 and row["sampled_seconds"] > 0
    assert by_size["256"]["full_ranks_differing"] == 0  # the reference itself
    assert 0 <= by_size["7"]["full_ranks_differing"] <= 300
    assert "eval_by_batch_size" not in speed.finetune_benchmark(dataset, split, 1, torch.device("cpu"), "padded")


@pytest.mark.parametrize("name", ["compare_pretraining", "authors_ranking"])
def test_a_model_given_twice_is_a_usage_error(tmp_path, monkeypatch, capsys, name):
    """Before, the report, keyed by path, held one entry of the two without a word."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    with pytest.raises(SystemExit) as exit_info:
        load_script(name, folder="benchmarks").main(["--data", str(tmp_path), str(tmp_path / "a.pt"), "b.pt",
                                                     str(tmp_path / "x" / ".." / "a.pt")])  # one file, two names
    assert exit_info.value.code == 2
    assert f"given twice (as {tmp_path / 'a.pt'} before)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["batch_drawing", "--data", "{empty}"], ["profile_step", "--data", "{empty}"],
    ["runs_per_process", "--data", "{empty}"], ["continue_pretraining", "--data", "{empty}", "x.pt"],
    ["compare_pretraining", "--data", "{empty}", "x.pt", "y.pt"], ["segment_scores", "x.pt", "--data", "{empty}"],
    ["authors_ranking", "--data", "{empty}", "x.pt"],
    ["speed", "--source", "{empty}"], ["jobs_per_device", "--source", "{empty}"],
], ids=lambda argv: argv[0])
def test_a_benchmark_given_no_data_set_names_the_missing_file(tmp_path, monkeypatch, caplog, argv):
    """Before, four of them ended in a traceback (its last line clear), exit status 1."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    (tmp_path / "empty").mkdir()
    name, *args = [a.format(empty=tmp_path / "empty") for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        load_script(name, folder="benchmarks").main(args)
    assert exit_info.value.code == 2
    missing = "--source {}: no Beauty.txt; expected" if "--source" in args else "{}/sequences.parquet: file not found"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(missing.format(tmp_path / "empty")), errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a CUDA device this machine lacks")
@pytest.mark.parametrize("argv", [
    ["speed", "--device", "cuda"], ["profile_step", "--device", "cuda"], ["jobs_per_device", "--device", "cuda"],
    ["runs_per_process", "--device", "cuda:0"],
    ["speed", "--device", "cpu", "--fixed-shapes", "--compile", "cuda-graph"],
    ["jobs_per_device", "--device", "cpu", "--fixed-shapes", "--compile", "cuda-graph"],
    ["speed", "--device", "cpu", "--fixed-shapes", "--compile", "cuda-graph-inductor"],  # was a traceback
    ["jobs_per_device", "--device", "cpu", "--fixed-shapes", "--compile", "cuda-graph-inductor"],
], ids=lambda argv: "-".join(argv[::2]))
def test_a_benchmark_refuses_a_device_it_cannot_have_before_reading_data(tmp_path, monkeypatch, capsys, argv):
    """Before: a traceback (DeviceUnavailable), or, for cuda-graph on a CPU, a traceback after the
    data was prepared (jobs_per_device: one per worker)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    name, *args = argv
    with pytest.raises(SystemExit) as exit_info:
        load_script(name, folder="benchmarks").main(args + ["--source", str(tmp_path / "nothing-read")]
                                                     if name in ("speed", "jobs_per_device") else args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    mode = args[-1]
    assert ("CUDA is not available on this machine" in err if not mode.startswith("cuda-graph")
            else f"--compile {mode} records CUDA graphs: it needs a CUDA device, not cpu" in err), err


@pytest.mark.parametrize("arms, expected", [
    (["none_padded_ndcg20"], ["prepare_data.py"]),  # before: the authors' checkpoint imported too, or a stop without it
    (["authors_bce", "lastfm_none_sampled"], ["prepare_data.py", "import_checkpoint.py", "prepare_data.py"]),
])
def test_reproduction_prepares_and_imports_only_what_the_arms_asked_for_need(tmp_path, arms, expected):
    """reproduction.sh in a copy beside a ../shared without the authors' checkpoints, with a
    `python` that only records its command (no data is read, no run trained)."""
    (tmp_path / "repo" / "benchmarks").mkdir(parents=True)
    (tmp_path / "repo" / "benchmarks" / "reproduction.sh").write_text((REPO / "benchmarks" / "reproduction.sh").read_text())
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text('#!/bin/sh\necho "$1" >> "$CALLS"\n')
    (tmp_path / "bin" / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}
    done = subprocess.run(["bash", "benchmarks/reproduction.sh", str(tmp_path / "out"), *arms], cwd=tmp_path / "repo",
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = [Path(line).name for line in (tmp_path / "calls").read_text().split()]
    assert calls == expected + ["finetune.py"] * 3 * len(arms)
