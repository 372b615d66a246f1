"""The GPU checks of issue 10 as one prepared call (benchmarks/device_check.sh) and the
benchmark's torch.compile option, rehearsed on the CPU: they must run the day a GPU is lent."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO, FakeClock, this_python_env
from s3rec import runtime
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


@pytest.fixture
def speed(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return load_script("speed", folder="benchmarks")


@pytest.fixture
def clock(speed, monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(speed, "time", clock)
    return clock


@pytest.fixture
def jobs_per_device(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return load_script("jobs_per_device", folder="benchmarks")


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
    if problem := runtime.inductor_build_problem("default", "cpu"):
        pytest.skip(problem)  # torch cannot compile here; scripts refuse the mode with this message
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


def test_speed_warms_up_on_the_last_batches_then_times_the_first_and_extrapolates(speed, clock, monkeypatch):
    calls = []
    monkeypatch.setattr(speed, "synchronize", lambda device: calls.append("sync"))

    def step(batch):
        calls.append(batch)
        clock.advance(0.5)

    result = speed.timed_epoch(step, list(range(10)), 4, "cpu", ready=lambda: calls.append("ready"), warmup=3)
    # the last batches warm up (a cuda-graph epoch's short one among them); the device waited for before each reading
    assert calls == [7, 8, 9, "sync", "ready", 0, 1, 2, 3, "sync"]
    assert result == {"batches": 10, "timed_batches": 4, "seconds_timed": 2.0, "seconds_per_epoch": 5.0,
                      "extrapolated": True, "warmup_batches": 3, "warmup_seconds": 1.5}
    calls.clear()
    whole = speed.timed_epoch(step, [0, 1], None, "cpu", warmup=3)
    assert calls == [0, 1, "sync", 0, 1, "sync"]
    assert (whole["seconds_per_epoch"], whole["extrapolated"], whole["warmup_batches"]) == (1.0, False, 2)
    modes = ("none", "cuda-graph", "cuda-graph-inductor", "default", "reduce-overhead")
    assert [speed.warmup_batches(mode) for mode in modes] == [3, 3, 3, 100, 100]


def test_speed_adds_the_batch_construction_to_a_pretraining_epoch_and_counts_flops_on_its_timed_batches(
        speed, clock, monkeypatch):
    built = []

    def pretrain_steps(*args):
        built.append(args)
        return lambda batch: clock.advance(0.5), list(range(10)), [None] * 7, 0.25

    counted = []
    monkeypatch.setattr(speed, "pretrain_steps", pretrain_steps)
    monkeypatch.setattr(speed, "achieved_gflops", lambda step, batches, device: counted.append(batches) or {"n": 1})
    result = speed.pretrain_benchmark("data", "split", "prefixes", 4, "cpu", "bucketed", fixed_shapes=True)
    assert built == [("data", "split", "prefixes", "cpu", "bucketed", "none", True)]
    assert (result["seconds_per_epoch"], result["seconds_timed"], result["batch_construction_seconds"]) == (5.25, 2.0, 0.25)
    assert (result["instances"], result["batching"], result["fixed_shapes"]) == (7, "bucketed", True)
    assert counted == [[0, 1, 2, 3]] and result["gflops"] == {"n": 1}  # the timed batches, not 200
    assert "gflops" not in speed.pretrain_benchmark("data", "split", "sequences", 4, "cpu", "padded")
    assert "gflops" not in speed.pretrain_benchmark("data", "split", "prefixes", 4, "cpu", "padded", compile_mode="default")
    assert "gflops" not in speed.pretrain_benchmark("data", "split", "prefixes", 4, "cpu", "padded", count_flops=False)
    assert len(counted) == 1


def test_speed_flop_rates_divide_the_counted_flops_by_the_timed_seconds(speed, clock, monkeypatch):
    monkeypatch.setattr(speed, "synchronize", lambda device: None)
    a, b = torch.ones(200, 300), torch.ones(300, 100)  # 2 * 200 * 300 * 100 = 12 MFLOP a product

    def step(batch):
        a @ b
        clock.advance(0.001)

    assert speed.achieved_gflops(step, [0, 1, 2, 3], "cpu") == {"pretrain_step_gflop_per_s": 12.0,
                                                                "gflop_per_batch": 0.012, "batches": 4}
    clock.tick = 0.001  # the timed products take one tick
    with FlopCounterMode(display=False) as counter:
        assert speed.matmul_peak_gflops("cpu", size=100, repeats=5) == 10.0  # 5 x 2 x 100**3 FLOP in 1 ms
    assert counter.get_total_flops() == 6 * 2 * 100**3  # one untimed product first


def fake_evaluation(speed, clock, monkeypatch, encoder, calls: list, ranks: dict | None = None) -> None:
    """speed's evaluation passes replaced: the full one takes 2 s, the sampled one 3 s; each call
    appended to `calls` with its users per batch and whether the encoder was in training mode."""
    def passes(score, dataset, split, negatives=None, batch_size=RunConfig().eval.batch_size):
        def full():
            calls.append(("full", batch_size, encoder.training))
            clock.advance(2.0)
            return None if ranks is None else ranks[batch_size]

        def sampled():
            calls.append(("sampled", batch_size, encoder.training))
            clock.advance(3.0)

        return {"full": full, "sampled": sampled} if negatives is not None else {"full": full}

    monkeypatch.setattr(speed, "evaluation_passes", passes)
    monkeypatch.setattr(speed, "score_function", lambda encoder, device: "score")
    monkeypatch.setattr(speed, "sample_negatives", lambda *args, **kwargs: "negatives")


def fake_finetune_steps(speed, clock, monkeypatch, calls: list) -> torch.nn.Module:
    """speed.finetune_steps replaced: 10 batches, built in 0.25 s, a step 0.5 s (appended to
    `calls` with the encoder's training mode); returns the encoder."""
    encoder = torch.nn.Dropout()

    def step(batch):
        calls.append(("step", encoder.training))
        clock.advance(0.5)

    monkeypatch.setattr(speed, "finetune_steps", lambda *args: (step, list(range(10)), encoder, 0.25))
    return encoder


def test_speed_times_a_finetuning_epoch_and_each_evaluation_pass_apart(speed, clock, monkeypatch):
    calls = []
    encoder = fake_finetune_steps(speed, clock, monkeypatch, calls)
    ranks = {256: np.array([3, 1, 2]), 64: np.array([4, 1, 2]), 7: np.array([3, 1, 2])}
    fake_evaluation(speed, clock, monkeypatch, encoder, calls, ranks)
    split = SimpleNamespace(train=[None] * 3, valid_target=[None] * 3)
    dataset = SimpleNamespace(sequences=None, num_items=9)
    report = speed.finetune_benchmark(dataset, split, 4, "cpu", "padded", eval_batch_sizes=(256, 64, 7))
    epoch = report["finetune_epoch"]
    assert (epoch["seconds_per_epoch"], epoch["batch_construction_seconds"]) == (5.25, 0.25)  # 2 s x 10 / 4 + 0.25
    assert (report["full_ranking_eval_seconds"], report["sampled_eval_seconds"], report["users"]) == (2.0, 3.0, 3)
    assert report["eval_by_batch_size"] == {  # ranks against the first size's
        str(size): {"full_seconds": 2.0, "full_ranks_differing": differing, "sampled_seconds": 3.0}
        for size, differing in ((256, 0), (64, 1), (7, 0))}
    evaluations = [call for call in calls if call[0] != "step"]  # dropout off; per size, an untimed pass first
    assert evaluations == [("full", 256, False), ("sampled", 256, False)] + [
        (name, size, False) for size in (256, 64, 7) for name in ("full", "full", "sampled", "sampled")]
    calls.clear()
    speed.finetune_benchmark(dataset, split, 4, "cpu", "padded", compile_mode="default")  # compiles untimed first
    assert [call for call in calls if call[0] != "step"] == [("full", 256, False)] * 2 + [("sampled", 256, False)] * 2


def test_speed_evaluation_passes_rank_in_batches_of_the_size_given(speed, monkeypatch):
    calls = []
    monkeypatch.setattr(speed, "full_ranking_ranks", lambda *args, **kwargs: calls.append(("full", args, kwargs)))
    monkeypatch.setattr(speed, "sampled_ranks", lambda *args, **kwargs: calls.append(("sampled", args, kwargs)))
    split, dataset = SimpleNamespace(train="train", valid_target="valid"), SimpleNamespace(num_items=9)
    for evaluate in speed.evaluation_passes("score", dataset, split, "negatives", batch_size=7).values():
        evaluate()
    assert calls == [("full", ("score", "train", "valid", 9), {"exclude_history": True, "batch_size": 7}),
                     ("sampled", ("score", "train", "valid", "negatives"), {"batch_size": 7})]
    assert list(speed.evaluation_passes("score", dataset, split)) == ["full"]


def test_speed_job_epoch_is_the_training_pass_with_its_batches_and_the_validation_after_it(speed, clock, monkeypatch):
    calls = []
    encoder = fake_finetune_steps(speed, clock, monkeypatch, calls)
    fake_evaluation(speed, clock, monkeypatch, encoder, calls)
    split = SimpleNamespace(train=[None] * 3, valid_target=[None] * 3)
    result = speed.finetune_job_epoch(None, split, 4, "cpu", "padded", ready=lambda: calls.append("ready"))
    # a validation warms up before `ready`; training in training mode, validating in eval mode
    assert calls == [("full", 256, False)] + [("step", True)] * 3 + ["ready"] + [("step", True)] * 4 + [
        ("full", 256, False)]
    assert encoder.training
    assert (result["train_seconds"], result["valid_seconds"], result["seconds_per_epoch"]) == (5.25, 2.0, 7.25)
    assert (result["batch_construction_seconds"], result["timed_batches"], result["extrapolated"]) == (0.25, 4, True)


def test_speed_compiles_both_entry_points_of_the_encoder_and_marks_steps_only_when_compiling(speed, monkeypatch):
    encoder = Encoder(RunConfig.from_dict({"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12}}).model, 30)
    speed.compile_encoder(encoder, "none")
    assert not {"forward", "forward_ends"} & set(vars(encoder))
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append((fn.__name__, kwargs)) or fn)
    speed.compile_encoder(encoder, "reduce-overhead")
    assert compiled == [(name, {"mode": "reduce-overhead", "dynamic": True}) for name in ("forward", "forward_ends")]
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append("step"))
    speed.new_step("none")
    assert marks == []
    speed.new_step("reduce-overhead")
    assert marks == ["step"]


def test_speed_draws_the_paper_presets_batches_for_a_dense_head_model(speed, monkeypatch):
    drawn = []
    monkeypatch.setattr(speed, "pretrain_batches", lambda *args, **kwargs: drawn.append((args, kwargs)))
    speed.pretrain_draws("instances", "rng", {"bounds": (), "length": 50}, "bucketed")
    paper = RunConfig.from_dict({"pretrain": {"preset": "paper", "instances": "sequences"}})
    assert drawn == [(("instances", paper.pretrain.batch_size, "rng"),
                      {"mask_prob": paper.pretrain.mask_prob, "batching": "bucketed", "bounds": (), "length": 50})]
    model = speed.paper_model(SimpleNamespace(num_items=30, num_attributes=5), "sequences", "cpu")
    assert model.cfg.model.rank is None and model.cfg.compile == "none"
    assert model.cfg.pretrain == paper.pretrain


def beauty_files(folder: Path, users: int = 300, items: int = 60) -> Path:
    """The authors' Beauty.txt and Beauty_item2attributes.json of a small data set in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.random.default_rng(4).integers(5, 12, size=users)
    lines = [" ".join(str(v) for v in [user, *((user + k) % items + 1 for k in range(n))])
             for user, n in enumerate(lengths, start=1)]
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n")
    attributes = {str(item): [item % 8 + 1, (item + 3) % 8 + 1] for item in range(1, items + 1)}
    (folder / "Beauty_item2attributes.json").write_text(json.dumps(attributes))
    return folder


def test_speed_hands_its_options_to_each_benchmark_and_reports_against_the_matmul_peak(speed, tmp_path, monkeypatch,
                                                                                      capsys, torch_threads):
    calls = []
    # the benchmarks below are stand-ins that compile nothing: --compile default is fine anywhere
    monkeypatch.setattr(runtime, "inductor_build_problem", lambda mode, device: None)

    def pretrain_benchmark(dataset, split, kind, limit, device, batching, **kwargs):
        calls.append((kind, len(split.train), limit, str(device), batching, kwargs))
        return {"gflops": {"pretrain_step_gflop_per_s": 10.0}} if kwargs["compile_mode"] == "none" else {}

    def finetune_benchmark(dataset, split, limit, device, batching, compile_mode, eval_batch_sizes):
        calls.append(("finetune", limit, batching, compile_mode, eval_batch_sizes))
        return {"users": len(split.train)}

    monkeypatch.setattr(speed, "pretrain_benchmark", pretrain_benchmark)
    monkeypatch.setattr(speed, "finetune_benchmark", finetune_benchmark)
    monkeypatch.setattr(speed, "matmul_peak_gflops", lambda device: 40.0)
    monkeypatch.setattr(speed, "resource", SimpleNamespace(  # ru_maxrss: KiB on Linux
        RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(ru_maxrss=3 * 2**20)))
    source = beauty_files(tmp_path / "source")
    assert speed.main(["--source", str(source), "--device", "cpu", "--threads", "2", "--batches", "3",
                       "--batching", "bucketed", "--eval-batch-sizes", "64", "128"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dataset"], report["users"], report["device"], report["threads"]) == ("beauty", 300, "cpu", 2)
    flags = {"compile_mode": "none", "fixed_shapes": False}
    assert calls == [("prefixes", 300, 3, "cpu", "bucketed", flags), ("sequences", 300, 3, "cpu", "bucketed", flags),
                     ("finetune", 3, "bucketed", "none", (64, 128))]
    assert (report["compile"], report["pretrain_fraction_of_matmul_peak"], report["peak_rss_mib"]) == ("none", 0.25, 3072.0)
    calls.clear()
    assert speed.main(["--source", str(source), "--device", "cpu", "--skip-sequences", "--compile", "default",
                       "--fixed-shapes"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [("prefixes", 300, None, "cpu", "padded", {"compile_mode": "default", "fixed_shapes": True}),
                     ("finetune", None, "padded", "default", ())]
    assert report["compile"] == "default" and "pretrain_fraction_of_matmul_peak" not in report


def fake_workers(jobs_per_device, monkeypatch, results: list[dict], ready_after: list[int],
                 fails: dict[int, str] | None = None) -> list:
    """jobs_per_device's worker processes replaced: worker i writes its ready file after
    ready_after[i] of run_jobs' waits and prints results[i]; `fails` {i: "early" or "late"}: worker
    i exits 1 before it is ready, or after its epoch. Returns the workers started, in order."""
    fails, started, waits = fails or {}, [], []

    def sleep(seconds):
        waits.append(seconds)
        assert len(waits) < 40, "waited on for ever"
        for worker in started:
            if fails.get(worker.index) != "early" and len(waits) >= ready_after[worker.index]:
                (worker.workdir / f"ready.{worker.index}").touch()

    class Worker:
        def __init__(self, command, stdout, text):
            self.command, self.index, self.returncode = list(command), int(command[3]), None
            self.workdir = Path(command[command.index("--workdir") + 1])
            started.append(self)

        def poll(self):
            return 1 if fails.get(self.index) == "early" else None

        def kill(self):
            self.returncode = -9 if self.returncode is None else self.returncode

        def communicate(self):
            self.ready_at_go = (self.workdir / f"ready.{self.index}").exists() and (self.workdir / "go").exists()
            self.returncode = 1 if self.index in fails else 0
            return json.dumps(results[self.index]), None

    monkeypatch.setattr(jobs_per_device.subprocess, "Popen", Worker)
    monkeypatch.setattr(jobs_per_device, "time", SimpleNamespace(sleep=sleep))
    return started


def test_jobs_per_device_starts_the_workers_together_and_rates_them_by_the_slowest(jobs_per_device, monkeypatch):
    results = [{"seconds_per_epoch": s, "train_seconds": s - 1, "valid_seconds": 1.0, "seconds_timed": 0.5,
                "extrapolated": True, "peak_gpu_mib": 512.0} for s in (2.0, 4.0, 3.0)]
    workers = fake_workers(jobs_per_device, monkeypatch, results, ready_after=[1, 3, 2])
    args = SimpleNamespace(device="cpu", batches=7, batching="bucketed", compile="none", kind="finetune",
                           fixed_shapes=False, threads=2)
    assert jobs_per_device.run_jobs(args, 3, Path("prepared")) == {
        "jobs": 3, "seconds_per_epoch": [2.0, 4.0, 3.0], "train_seconds": [1.0, 3.0, 2.0], "valid_seconds": [1.0] * 3,
        "epochs_per_hour": 2700.0, "peak_gpu_mib_per_job": 512.0, "extrapolated": True}  # 3 x 3600 / 4 s
    assert [w.ready_at_go for w in workers] == [True] * 3  # `go` only once all three were ready
    for index, worker in enumerate(workers):
        assert worker.command == [
            sys.executable, jobs_per_device.__file__, "--worker", str(index), "--data", "prepared", "--workdir",
            str(worker.workdir), "--device", "cpu", "--batches", "7", "--batching", "bucketed", "--compile", "none",
            "--kind", "finetune", "--threads", "2"]
    workers = fake_workers(jobs_per_device, monkeypatch, [{"seconds_per_epoch": 6.0, "extrapolated": False}], [1])
    args.kind, args.fixed_shapes, args.threads = "pretrain", True, None
    assert jobs_per_device.run_jobs(args, 1, Path("prepared")) == {
        "jobs": 1, "seconds_per_epoch": [6.0], "epochs_per_hour": 600.0, "peak_gpu_mib_per_job": None,
        "extrapolated": False}
    assert workers[0].command[-3:] == ["--kind", "pretrain", "--fixed-shapes"]


@pytest.mark.parametrize("when, message", [("early", "a worker failed before it was ready"),
                                           ("late", "a worker failed (its error is above)")])
def test_jobs_per_device_stops_on_a_worker_that_fails(jobs_per_device, monkeypatch, when, message):
    workers = fake_workers(jobs_per_device, monkeypatch, [{"seconds_per_epoch": 1.0, "extrapolated": False}] * 3,
                           [1, 1, 3], fails={1: when})
    args = SimpleNamespace(device="cpu", batches=7, batching="padded", compile="none", kind="pretrain",
                           fixed_shapes=False, threads=None)
    with pytest.raises(SystemExit, match=re.escape(message)):
        jobs_per_device.run_jobs(args, 3, Path("prepared"))
    # none left behind: before, the others waited for `go` for ever (on a GPU, holding its memory)
    assert all(worker.returncode is not None for worker in workers)


def test_jobs_per_device_worker_says_ready_waits_for_go_and_times_what_it_is_asked(jobs_per_device, tmp_path,
                                                                                  monkeypatch, capsys):
    monkeypatch.setattr(jobs_per_device, "load_dataset", lambda path: SimpleNamespace(sequences=str(path)))
    monkeypatch.setattr(jobs_per_device, "leave_one_out", lambda sequences: f"split of {sequences}")
    waits, calls = [], []

    def sleep(seconds):  # what the worker waits on: `go` appears after the first wait
        waits.append(sorted(p.name for p in tmp_path.iterdir()))
        (tmp_path / "go").touch()

    def benchmark(name):
        def run(dataset, split, *args, **kwargs):
            if "ready" in kwargs:  # pretrain_benchmark's is a keyword, finetune_job_epoch's the last argument
                ready = kwargs.pop("ready")
            else:
                *args, ready = args
            ready()
            calls.append((name, split, tuple(args), kwargs))
            return {"seconds_per_epoch": 1.0}
        return run

    monkeypatch.setattr(jobs_per_device, "time", SimpleNamespace(sleep=sleep))
    monkeypatch.setattr(jobs_per_device.speed, "pretrain_benchmark", benchmark("pretrain"))
    monkeypatch.setattr(jobs_per_device.speed, "finetune_job_epoch", benchmark("finetune"))
    worker = ["--worker", "3", "--data", "prepared", "--workdir", str(tmp_path), "--device", "cpu", "--batches", "7",
              "--batching", "bucketed", "--compile", "none", "--threads", "1"]
    assert jobs_per_device.main(worker + ["--kind", "pretrain", "--fixed-shapes"]) == 0
    assert waits == [["ready.3"]]
    assert json.loads(capsys.readouterr().out) == {"seconds_per_epoch": 1.0, "peak_gpu_mib": None}
    cpu = torch.device("cpu")
    assert calls == [("pretrain", "split of prepared", ("prefixes", 7, cpu, "bucketed"),
                      {"count_flops": False, "compile_mode": "none", "fixed_shapes": True})]
    for path in tmp_path.iterdir():
        path.unlink()
    waits.clear()
    assert jobs_per_device.main(worker + ["--kind", "finetune"]) == 0
    assert waits == [["ready.3"]]
    assert calls[1] == ("finetune", "split of prepared", (7, cpu, "bucketed", "none"), {})


def test_jobs_per_device_rates_each_number_of_jobs_against_one_job(jobs_per_device, monkeypatch, capsys):
    monkeypatch.setattr(jobs_per_device.speed, "prepare", lambda workdir, source: ("beauty", workdir / "data"))
    seen, rates = [], {1: 100.0, 2: 180.0, 4: 300.0}

    def run_jobs(args, jobs, data):
        seen.append((jobs, args.device, data.name))
        return {"jobs": jobs, "epochs_per_hour": rates[jobs]}

    monkeypatch.setattr(jobs_per_device, "run_jobs", run_jobs)
    assert jobs_per_device.main(["--jobs", "2", "1", "4", "--batches", "7", "--kind", "finetune",
                                 "--batching", "bucketed"]) == 0
    report = json.loads(capsys.readouterr().out)
    device = str(runtime.choose_device("auto"))  # the workers get the device chosen, not "auto"
    assert seen == [(2, device, "data"), (1, device, "data"), (4, device, "data")]
    assert [r["speedup_over_one_job"] for r in report["runs"]] == [1.8, 1.0, 3.0]
    assert (report["dataset"], report["kind"], report["batching"], report["timed_batches_per_job"]) == (
        "beauty", "finetune", "bucketed", 7)
    assert (report["compile"], report["fixed_shapes"]) == ("none", False)
    assert jobs_per_device.main(["--jobs", "2", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["speedup_over_one_job"] for r in report["runs"]] == [None, None]
    assert (report["kind"], report["timed_batches_per_job"]) == ("pretrain", 300)


def test_speed_generates_data_of_beautys_size_where_beauty_is_absent(speed):
    data = speed.beauty_sized(seed=0)  # the users, items and attributes its docstring and the README state
    lengths = np.array([len(items) for items in data.sequences])
    assert (len(data.sequences), len(data.item_attributes) - 1, data.num_attributes) == (22363, 12101, 637)
    assert lengths.min() >= 5 and 8.6 < lengths.mean() < 9.2  # Beauty's mean length: 8.9
    assert min(items.min() for items in data.sequences) >= 1 and max(items.max() for items in data.sequences) <= 12101
    attributes = np.concatenate(data.item_attributes[1:])
    assert len(data.item_attributes[0]) == 0 and attributes.min() == 1 and attributes.max() == 637  # 0: padding
