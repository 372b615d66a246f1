"""benchmarks/profile_step.py on a tiny generated data set: it runs, and its JSON says where the time went."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, FakeClock
from s3rec.data import write_prepared
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script


@pytest.mark.parametrize("what", ["pretrain", "finetune"])
def test_profile_step_lists_the_ops_with_the_most_time(what, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # profile_step imports speed.py beside it
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    profile_step = load_script("profile_step", folder="benchmarks")
    # finetuning: 300 users make 2 batches of 256, cycled to the 5 steps asked for
    assert profile_step.main(["--what", what, "--data", str(data), "--steps", "2", "--warmup", "1",
                              "--threads", "1", "--device", "cpu", "--top", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["what"], report["device"], report["threads"], report["profiled_steps"]) == (what, "cpu", 1, 2)
    assert report["step_ms"] > 0 and len(report["ops"]) == 5
    shares = [op["host_share"] for op in report["ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    assert {"aten::mm", "aten::addmm", "aten::bmm"} & {op["op"] for op in report["ops"]}, report["ops"]


def test_profile_step_splits_ops_by_input_shape(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    profile_step = load_script("profile_step", folder="benchmarks")
    assert profile_step.main(["--data", str(data), "--steps", "2", "--warmup", "1", "--threads", "1",
                              "--device", "cpu", "--top", "1000", "--shapes"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    assert all("input_shapes" in op for op in ops)
    # the gradient of the embedding lookups arrives as (positions, d = 64) rows, one entry per shape
    backward = [op["input_shapes"] for op in ops if op["op"] == "aten::embedding_dense_backward"]
    assert len(backward) > 1 and all(", 64]" in shapes for shapes in backward), backward


def test_profile_steps_reports_per_step_times_and_self_time_shares(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    profile_step = load_script("profile_step", folder="benchmarks")
    clock, seen, opened = FakeClock(), [], []
    monkeypatch.setattr(profile_step, "time", clock)
    monkeypatch.setattr(profile_step.speed, "synchronize", lambda device: None)

    def step(batch):
        seen.append(batch)
        clock.advance(0.004)

    def event(key, count, self_us, total_us):
        return SimpleNamespace(key=key, count=count, self_cpu_time_total=self_us, cpu_time_total=total_us,
                               self_device_time_total=0.0, input_shapes=[[count]])

    class Profile:  # torch.profiler.profile replaced: these ops, in µs over the profiled steps
        def __init__(self, activities, record_shapes):
            opened.append(("record_shapes", record_shapes))

        def __enter__(self):
            seen.append("profile")
            return self

        def __exit__(self, *exc):
            seen.append("end")

        def key_averages(self, group_by_input_shape):
            opened.append(("grouped", group_by_input_shape))
            return [event("aten::add", 8, 1000.0, 2000.0), event("aten::linear", 6, 0.0, 3000.0),
                    event("aten::mm", 6, 3000.0, 3000.0), event("aten::fill_", 2, 4000.0, 4000.0)]

    monkeypatch.setattr(profile_step, "profile", Profile)
    result = profile_step.profile_steps(step, ["a", "b", "c"], steps=2, warmup=1, device="cpu", top=2, shapes=True)
    assert seen == ["a", "b", "c", "profile", "a", "b", "end"]  # warm-up, 2 timed, 2 profiled (the epoch cycled)
    assert opened == [("record_shapes", True), ("grouped", True)]
    # self times: 8 ms over 2 steps, what linear and add spend in the ops they call (mm's 3 ms...) not again
    assert result == {"step_ms": 4.0, "profiled_steps": 2, "profiled_host_ms_per_step": 4.0, "ops": [
        {"op": "aten::fill_", "calls_per_step": 1.0, "host_ms_per_step": 2.0, "host_share": 0.5, "input_shapes": "[[2]]"},
        {"op": "aten::mm", "calls_per_step": 3.0, "host_ms_per_step": 1.5, "host_share": 0.375, "input_shapes": "[[6]]"}]}
    opened.clear()
    result = profile_step.profile_steps(step, ["a", "b", "c"], steps=2, warmup=1, device="cpu", top=10)
    assert opened == [("record_shapes", False), ("grouped", False)]
    assert [op["op"] for op in result["ops"]] == ["aten::fill_", "aten::mm", "aten::add"]  # no op of no self time
    assert "input_shapes" not in result["ops"][0]


def test_profile_step_profiles_the_step_asked_for_with_the_options_given(tmp_path, capsys, monkeypatch,
                                                                        torch_threads):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=50, items=30, attributes=4, seed=3, max_length=8)), data)
    profile_step = load_script("profile_step", folder="benchmarks")
    calls = []
    monkeypatch.setattr(profile_step.speed, "pretrain_steps", lambda dataset, split, kind, device, batching: (
        calls.append(("pretrain", kind, str(device), batching)) or ("step", ["batch"], None, 0.0)))
    monkeypatch.setattr(profile_step.speed, "finetune_steps", lambda dataset, split, device, batching: (
        calls.append(("finetune", str(device), batching)) or ("step", ["batch"], None, 0.0)))
    monkeypatch.setattr(profile_step, "profile_steps", lambda *args: calls.append(args[2:]) or {"step_ms": 1.0})
    assert profile_step.main(["--what", "finetune", "--data", str(data), "--batching", "bucketed", "--steps", "3",
                              "--warmup", "0", "--top", "4", "--shapes", "--threads", "2", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [("finetune", "cpu", "bucketed"), (3, 0, torch.device("cpu"), 4, True)]
    assert (report["what"], report["batching"], report["threads"], report["step_ms"]) == ("finetune", "bucketed", 2, 1.0)
    calls.clear()
    assert profile_step.main(["--data", str(data), "--device", "cpu", "--batching", "bucketed"]) == 0
    assert calls == [("pretrain", "prefixes", "cpu", "bucketed"), (30, 10, torch.device("cpu"), 15, False)]
