"""benchmarks/runs_per_process.py rehearsed on CPU with a tiny generated data set: it runs N
runs in one process and reports epochs per hour per N (on a GPU each run has its own stream;
here they step eagerly one after another, so only the bookkeeping is checked). Also benchmarks/batch_drawing.py, which times the host's
batch drawing alone. The stacked runs themselves (s3rec/stacked.py) are tested in test_stacked.py."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, FakeClock
from s3rec.batching import CHUNK_BOUNDS
from s3rec.config import RunConfig
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
    """benchmarks/batch_drawing.py: an epoch of each kind of batches, drawn and counted; the stacked
    steps' workers started as --worker-start says (forkserver: each is sent the instances pickled)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert load_script("batch_drawing", folder="benchmarks").main(["--repeats", "2", "--data", str(data),
                                                                   "--stacked-seeds", "2", "--steps", "2",
                                                                   "--worker-start", "forkserver"]) == 0
    report = json.loads(capsys.readouterr().out)
    [stacked] = report["stacked_steps"]  # two seeds' steps drawn in line, then by worker processes
    assert stacked["seeds"] == 2 and stacked["in_line"]["steps"] == stacked["workers"]["steps"] == 2
    assert report["worker_start"] == "forkserver" and stacked["workers"]["first_step_s"] > 0
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


DRAW, STEP = 0.25, 0.5  # seconds a fake batch takes to draw, and a fake step to run


def test_measure_times_rounds_of_every_run_after_a_warm_up_of_the_epochs_last_steps(runs_per_process, monkeypatch):
    """Two fake runs, 10 steps an epoch, 4 timed rounds: each run warms up on the last 3 steps of
    an epoch of its own draws (both shapes), then steps in turn on a fresh epoch of its own; a
    round is both runs' steps (0.75 s each), an epoch 10 rounds, 2 epochs of runs per 15 s."""
    clock = FakeClock(start=100.0)  # not 0: a figure must be a difference of readings
    monkeypatch.setattr(runs_per_process, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    steps = []

    class FakeRun:
        def __init__(self, seed):
            self.seed = seed

        def step(self, batch, device):
            clock.advance(STEP)
            steps.append((self.seed, batch))

    def draws(run, instances):
        for index in range(10):
            clock.advance(DRAW)
            yield run.seed, index
    monkeypatch.setattr(runs_per_process, "new_run", lambda dataset, instances, seed, device: FakeRun(seed))
    monkeypatch.setattr(runs_per_process, "draws", draws)
    result = runs_per_process.measure(2, None, None, 4, torch.device("cpu"), steps_per_epoch=10)
    assert steps[:6] == [(0, (0, 7)), (0, (0, 8)), (0, (0, 9)), (1, (1, 7)), (1, (1, 8)), (1, (1, 9))]
    assert steps[6:] == [(seed, (seed, index)) for index in range(4) for seed in (0, 1)]
    assert result == {"runs": 2, "seconds_per_round": 1.5, "seconds_per_epoch": 15.0, "epochs_per_hour": 480.0,
                      "peak_gpu_mib": None, "host_drawing_seconds_per_round": 0.5}


def test_measure_stacked_times_its_steps_after_a_warm_up_of_the_epochs_last_steps(runs_per_process, monkeypatch):
    """Three runs stacked into one fake step, 10 steps an epoch, 4 timed: a round is one step
    (0.75 s), an epoch 7.5 s, three epochs of runs in it."""
    clock = FakeClock(start=100.0)
    monkeypatch.setattr(runs_per_process, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    steps, made = [], []

    class FakeStackedRun:
        def __init__(self, dataset, instances, count, device, draw_workers):
            made.append((count, draw_workers))
            self.stacked = SimpleNamespace(attention_spelled_out=True, vmap_fallbacks=["op"])
            self.epoch = 0

        def epochs(self, instances):
            self.epoch += 1
            for index in range(10):
                clock.advance(DRAW)
                yield self.epoch, index

        def step(self, batch, device):
            clock.advance(STEP)
            steps.append(batch)
    monkeypatch.setattr(runs_per_process, "StackedRun", FakeStackedRun)
    result = runs_per_process.measure_stacked(3, None, None, 4, torch.device("cpu"), 10, draw_workers=True)
    assert made == [(3, True)]
    assert steps == [(1, 7), (1, 8), (1, 9), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert result == {"runs": 3, "seconds_per_round": 0.75, "seconds_per_epoch": 7.5, "epochs_per_hour": 1440.0,
                      "peak_gpu_mib": None, "host_drawing_seconds_per_round": 0.25, "draw_workers": True,
                      "attention_spelled_out": True, "vmap_fallbacks": ["op"]}


def test_main_reports_each_number_of_runs_against_one_run(runs_per_process, tmp_path, monkeypatch, capsys,
                                                          torch_threads):
    """main's bookkeeping around a stand-in measure: the epoch's steps (prefix instances of up to
    50 items in batches of 100, the last one short), each N in the order given, its speed-up over
    N = 1 wherever that is given (none without), and --batches below an epoch's steps."""
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    dataset = load_dataset(data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=50, kind="prefixes")
    steps = -(-len(instances) // 100)
    assert len(instances) % 100 != 0 and steps > 3
    calls = []

    def measure(count, dataset, instances, limit, device, steps_per_epoch):
        calls.append((count, len(instances), limit, device, steps_per_epoch))
        return {"runs": count, "epochs_per_hour": {1: 100.0, 2: 150.0, 4: 250.0, 3: 30.0}[count]}
    monkeypatch.setattr(runs_per_process, "measure", measure)
    threads = 2 if torch_threads == 1 else 1
    assert runs_per_process.main(["--device", "cpu", "--threads", str(threads), "--runs", "2", "1", "4",
                                  "--batches", str(steps - 1), "--data", str(data)]) == 0
    assert torch.get_num_threads() == threads
    report = json.loads(capsys.readouterr().out)
    assert calls == [(n, len(instances), steps - 1, torch.device("cpu"), steps) for n in (2, 1, 4)]
    assert (report["dataset"], report["mode"], report["steps_per_epoch"], report["timed_steps_per_run"]) == (
        "given", "streams", steps, steps - 1)
    assert [(m["runs"], m["speedup_over_one_run"]) for m in report["results"]] == [(2, 1.5), (1, 1.0), (4, 2.5)]
    calls.clear()
    runs_per_process.main(["--device", "cpu", "--runs", "3", "--batches", "1", "--data", str(data)])
    assert [m["speedup_over_one_run"] for m in json.loads(capsys.readouterr().out)["results"]] == [None]
    with pytest.raises(SystemExit):  # as many steps as an epoch has: the short last one would be timed
        runs_per_process.main(["--device", "cpu", "--batches", str(steps), "--data", str(data)])
    assert f"--batches {steps}: an epoch has {steps} steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # by default 300 steps a run
        runs_per_process.main(["--device", "cpu", "--data", str(data)])
    assert f"--batches 300: an epoch has {steps} steps" in capsys.readouterr().err
    monkeypatch.setattr(runs_per_process.speed, "PRETRAIN_BATCH", 1)  # an epoch long enough for 300
    calls.clear()
    runs_per_process.main(["--device", "cpu", "--data", str(data)])
    assert [(call[0], call[2]) for call in calls] == [(1, 300), (2, 300), (4, 300)]  # by default 1, 2 and 4 runs


def test_new_run_is_a_fixed_shape_prefix_pretraining_of_its_own_seed(runs_per_process, monkeypatch):
    made = []

    def pretraining_step(dataset, instances, kind, device, mode, fixed_shapes=False):
        made.append((kind, mode, fixed_shapes, torch.initial_seed()))
        return "step", {"length": 50}
    monkeypatch.setattr(runs_per_process.speed, "pretraining_step", pretraining_step)
    runs = [runs_per_process.new_run(None, None, seed, torch.device("cpu")) for seed in (0, 1, 0)]
    assert made == [("prefixes", "none", True, 0), ("prefixes", "none", True, 1), ("prefixes", "none", True, 0)]
    assert runs[0].stream is None and runs[0].layout == {"length": 50} and runs[0].train_step == "step"
    draws = [run.rng.integers(1 << 30, size=4).tolist() for run in runs]
    assert draws[0] == draws[2] != draws[1]


def test_stacked_runs_have_their_own_seeds_weights_and_draws(runs_per_process, tmp_path):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=40, items=60, attributes=8, seed=3, max_length=10)), data)
    dataset = load_dataset(data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=50, kind="prefixes")
    run = runs_per_process.StackedRun(dataset, instances, 2, torch.device("cpu"), draw_workers=False)
    stacked = run.stacked.weights[run.stacked.names.index("encoder.item_embeddings.weight")]
    assert stacked.shape[0] == 2 and not torch.equal(stacked[0], stacked[1])
    for seed in (0, 1):  # run n's weights: those of a model made after torch.manual_seed(n)
        torch.manual_seed(seed)
        alone = runs_per_process.speed.paper_model(dataset, "prefixes", torch.device("cpu"))
        torch.testing.assert_close(stacked[seed], alone.encoder.item_embeddings.weight)
    [first] = next(iter(run.epochs(instances)))
    assert run.graphed is False and first.items.shape[0] == 2 and not torch.equal(first.items[0], first.items[1])


@pytest.fixture
def batch_drawing(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports speed.py beside it
    return load_script("batch_drawing", folder="benchmarks")


def test_batch_drawing_times_each_epoch_from_a_seed_of_its_own(batch_drawing, monkeypatch):
    clock, seeds = FakeClock(start=100.0), []
    monkeypatch.setattr(batch_drawing, "time", clock)

    def draw_epoch(rng):
        seeds.append(int(rng.integers(2**32)))
        clock.advance((0.5, 0.25, 0.75)[len(seeds) - 1])
        return iter(range(5))

    assert batch_drawing.timed(draw_epoch, 3) == {"steps": 5, "best_seconds": 0.25, "seconds": [0.5, 0.25, 0.75]}
    assert seeds == [int(np.random.default_rng(seed).integers(2**32)) for seed in range(3)]


def test_batch_drawing_times_stacked_steps_after_the_first_draw(batch_drawing, monkeypatch):
    clock, started = FakeClock(start=100.0), []
    monkeypatch.setattr(batch_drawing, "time", clock)

    def seed_steps(instances, cfg, generators, max_len, workers, worker_start):
        started.append((instances, cfg, len(generators), max_len, workers, worker_start))
        clock.advance(10.0, cpu=10.0)  # the workers' start-up and the first draw: timed apart
        while True:
            yield ["seed 0", "seed 1"]
            # a draw: this process's CPU, or the workers' wall time
            clock.advance(0.002, cpu=0.001) if workers else clock.advance(0.003, cpu=0.003)

    def stack(step):
        assert step == ["seed 0", "seed 1"]
        clock.advance(0.001, cpu=0.001)

    monkeypatch.setattr(batch_drawing, "seed_steps", seed_steps)
    monkeypatch.setattr(batch_drawing, "StackedBatch", SimpleNamespace(of=stack))
    assert batch_drawing.stacked_steps("instances", 2, 3, 50, "fork") == {
        "seeds": 2,
        "in_line": {"steps": 3, "process_cpu_ms_per_step": 4.0, "wall_ms_per_step": 4.0, "first_step_s": 10.0},
        "workers": {"steps": 3, "process_cpu_ms_per_step": 2.0, "wall_ms_per_step": 3.0, "first_step_s": 10.0}}
    paper = RunConfig.from_dict({"pretrain": {"preset": "paper"}}).pretrain
    assert started == [("instances", paper, 2, 50, False, "fork"), ("instances", paper, 2, 50, True, "fork")]


def test_batch_drawing_draws_each_layout_as_the_runs_do(batch_drawing, tmp_path, capsys, monkeypatch):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    drawn = []
    monkeypatch.setattr(batch_drawing.speed, "pretrain_draws", lambda instances, rng, layout: (
        drawn.append(("pretrain", len(instances), layout)) or iter(range(4))))
    monkeypatch.setattr(batch_drawing, "finetune_batches", lambda *args, **layout: (
        drawn.append(("finetune", len(args[0]), args[2:5], args[6:], layout)) or iter(range(2))))
    monkeypatch.setattr(batch_drawing, "stacked_steps", lambda instances, seeds, steps, max_len, start: (
        drawn.append(("stacked", len(instances), seeds, steps, max_len, start)) or {"seeds": seeds}))
    torch.set_num_threads(2)
    assert batch_drawing.main(["--repeats", "1", "--data", str(data), "--stacked-seeds", "1", "3", "--steps", "5"]) == 0
    assert torch.get_num_threads() == 1  # draws on one thread, as a run's host does
    report = json.loads(capsys.readouterr().out)
    dataset = load_dataset(data)
    prefixes = len(split_instances(dataset, leave_one_out(dataset.sequences), max_len=50, kind="prefixes"))
    finetuning = ("finetune", 300, (dataset.num_items, 50, 256), ("padded",))  # max_len 50, batches of 256
    assert drawn == [  # the GPU's layout (fixed shapes), then the CPU's (length chunks)
        ("pretrain", prefixes, {"bounds": (), "length": 50}), (*finetuning, {"bounds": (), "fixed_shapes": True}),
        ("pretrain", prefixes, {"bounds": CHUNK_BOUNDS}), (*finetuning, {}),
        ("stacked", prefixes, 1, 5, 50, "fork"), ("stacked", prefixes, 3, 5, 50, "fork")]
    assert report["dataset"] == "given" and report["stacked_steps"] == [{"seeds": 1}, {"seeds": 3}]
    assert report["pretrain_fixed_shapes"]["steps"] == 4 and report["finetune_chunks"]["steps"] == 2
