"""Where and how a run executes: device, threads, seeding, provenance, atomic file writes."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("s3rec")


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Intra-op threads: explicit, else the SLURM allocation (SLURM does not confine us here), else torch's."""
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK"):
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def epoch_generators(seed: int, epoch: int) -> np.random.Generator:
    """Seeds torch's global RNG (dropout) and returns a numpy RNG, both from (seed, epoch) alone.

    Deriving every epoch's randomness from (seed, epoch) makes a run resumed after epoch k draw
    exactly what an uninterrupted run draws, without saving RNG states in checkpoints.
    """
    sequence = np.random.SeedSequence([seed, epoch])
    torch.manual_seed(int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return np.random.default_rng(sequence)


def provenance() -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "polars", "pyarrow", "s3rec-lowrank"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_sha": git_sha(), "versions": versions, "host": platform.node(),
            "torch_threads": torch.get_num_threads()}


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def digest(paths: list[Path]) -> str:
    """sha256 over the bytes of these files: what a resumable run checks it resumes from."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, obj: Any) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    _atomic(path, write)


def save_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def save_frame(path: Path, frame) -> None:
    """A polars frame to CSV or parquet by the file's suffix."""
    if Path(path).suffix == ".csv":
        _atomic(path, frame.write_csv)
    else:
        _atomic(path, frame.write_parquet)


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def clear_errors():
    """Bad input (a wrong config, a missing or mismatched file) ends the script with its message alone."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        log.error("%s", error)
        raise SystemExit(2) from error


def setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
