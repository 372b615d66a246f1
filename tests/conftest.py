"""Shared fixtures. Tests build their own small data; tests that need ../shared skip without it."""
from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Test models are tiny: one thread is faster than several fighting over two cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "s3rec"


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


class FakeClock:
    """time.perf_counter and time.process_time for a benchmark under test: they move only by
    `tick` at each perf_counter reading and by what the test's fakes add, so the benchmark's
    timing arithmetic runs on known seconds, with no wall time in any assertion."""

    def __init__(self, start: float = 0.0, tick: float = 0.0):
        self.wall = self.cpu = start
        self.tick = tick

    def perf_counter(self) -> float:
        self.wall += self.tick
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def advance(self, seconds: float, cpu: float = 0.0) -> None:
        self.wall += seconds
        self.cpu += cpu


@pytest.fixture
def torch_threads() -> int:
    """torch's thread count when the test starts, set back after it: a script under test sets
    its own (--threads), which would otherwise carry into the tests after it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.fixture
def renames(monkeypatch) -> list[tuple[Path, Path]]:
    """(temporary, destination) of each rename s3rec.files makes, in order: every file the
    project writes whole goes through one (a temporary beside it, then os.replace)."""
    from s3rec import files

    done, replace = [], files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (done.append((Path(src), Path(dst))), replace(src, dst)))
    return done


def commit_all(folder: Path) -> str:
    """`git init`, add and commit everything in `folder` (its .gitignore kept); returns HEAD. The
    commit names its own author and is never signed: a user's global `commit.gpgsign = true`
    failed the tests that made one."""
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "code"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def shared_data_or_skip() -> Path:
    if not (SHARED_DATA / "Beauty.txt").exists():
        pytest.skip(f"needs the authors' data set at {SHARED_DATA} (../shared beside the repo)")
    return SHARED_DATA


@functools.cache
def slurm_available() -> str | None:
    """None when a SLURM cluster answers, else the reason to skip. Asked once a session: against
    a stopped controller, sinfo takes 9 s to give up."""
    if any(char.isspace() for char in sys.executable):
        return (f"this Python's path has a space ({sys.executable!r}): the SLURM plugin writes it into each "
                "job script unquoted, so every job fails at once (README, On a SLURM cluster)")
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return "no SLURM here (sbatch/sinfo not on PATH; start one with ../shared/slurm-local/start-slurm.sh)"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if state.returncode != 0 or not re.search(r"idle|mix|alloc", state.stdout):
        return f"SLURM does not answer or has no usable node: {state.stderr.strip() or state.stdout.strip()}"
    return None


@functools.cache
def _silent_scontrol_dir() -> str | None:
    """A folder holding an `scontrol` that fails at once, where SLURM's client is installed but
    no controller answers; else None. Why: snakemake's SLURM executor plugin runs `scontrol show
    config` whenever snakemake starts (to word a help text), and against a controller that is
    down that waits 9 s, in every one of the tests' ~40 snakemake calls. A test that does use
    SLURM skips in that case anyway (slurm_available)."""
    if not shutil.which("scontrol") or slurm_available() is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="s3rec-tests-scontrol-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    stub = folder / "scontrol"
    stub.write_text("#!/bin/sh\necho 'scontrol: no SLURM controller answers (stub of the tests)' >&2\nexit 1\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(folder)


def this_python_env(*folders: str | None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that calls `python`, `python3` or `snakemake` by name:
    this Python's bin folder first on PATH (then `folders`), so they are this venv's, also when
    pytest runs as .venv/bin/python -m pytest without the venv activated."""
    path = [str(Path(sys.executable).parent), *folders, os.environ["PATH"]]
    return {**os.environ, **extra, "PATH": os.pathsep.join(f for f in path if f)}


def snakemake_env(*folders: str, **extra: str) -> dict[str, str]:
    """The environment of a snakemake subprocess: this_python_env (its jobs run this venv's
    python; then `folders` on PATH), plus the failing `scontrol` where no controller answers."""
    return this_python_env(_silent_scontrol_dir(), *folders, **extra)
