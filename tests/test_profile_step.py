"""benchmarks/profile_step.py on a tiny generated data set: it runs, and its JSON says where the time went."""
from __future__ import annotations

import json

import pytest

from conftest import REPO
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
