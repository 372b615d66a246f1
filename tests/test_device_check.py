"""The GPU checks of issue 10 as one prepared call (benchmarks/device_check.sh) and the
benchmark's torch.compile option, rehearsed on the CPU: they must run the day a GPU is lent."""
from __future__ import annotations

import os
import subprocess

import pytest
import torch

from conftest import REPO
from s3rec.config import RunConfig
from s3rec.encoder import Encoder
from scripts_import import load_script

SCRIPT = REPO / "benchmarks" / "device_check.sh"


def device_check(tmp_path, *steps: str, out: str = "out", deadline: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path / out), "DEVICE": "cpu", "DEADLINE": str(deadline)}
    return subprocess.run(["bash", str(SCRIPT), *steps], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


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
    done = device_check(tmp_path, "speed", out="late", deadline=10)
    assert done.returncode == 0 and "speed: skipped, " in done.stdout, done.stdout
    assert not (tmp_path / "late" / "speed.json").exists()


def test_speed_names_a_source_folder_without_beauty(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load_script("speed", folder="benchmarks")
    with pytest.raises(SystemExit, match="--source .*: expected Beauty.txt"):
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
