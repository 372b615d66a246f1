"""Where and how a run executes: device, threads, seeding, and provenance (the machine, the code,
digests of input files and of weights). Files it writes: s3rec/files.py; its command line: s3rec/cli.py."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s3rec import cards

log = logging.getLogger("s3rec")


class DeviceUnavailable(ValueError, RuntimeError):
    """A device asked for that this machine lacks: bad input (clear_errors: the message alone,
    exit 2), and still the RuntimeError it was."""


def choose_device(name: str = "auto") -> torch.device:
    """The torch device a run computes on: "auto" (CUDA when present, else the CPU), "cpu",
    "cuda", "cuda:N", or "cuda:any", the card of this node that the fewest running jobs hold
    (s3rec/cards.py). A numbered card also becomes the current one, which torch's CUDA graphs,
    streams and random state use when not given a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "cuda:any":
        count = torch.cuda.device_count()
        name = f"cuda:{cards.claim_card(count) if count > 1 else 0}"
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device {name!r} requested but this machine shows {torch.cuda.device_count()} "
                                "CUDA device(s), numbered from 0 (CUDA_VISIBLE_DEVICES renumbers them)")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def set_threads(threads: int | None) -> int:
    """Intra-op threads: explicit, else the SLURM allocation (SLURM does not confine us here), else torch's."""
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK"):
        value = os.environ["SLURM_CPUS_PER_TASK"]
        if not (value.isascii() and value.isdigit()) or int(value) < 1:  # "abc" was an int() error naming no variable, -3 a traceback
            raise ValueError(f"environment variable SLURM_CPUS_PER_TASK={value!r}: expected an integer >= 1 "
                             "(or give --threads)")
        threads = int(value)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def release_free_memory() -> None:
    """Hand the allocator's free memory back to the OS (glibc's malloc_trim; elsewhere nothing).

    An epoch allocates many large, differently shaped tensors (chunks of every length, score
    matrices in validation); glibc keeps the freed ones in a fragmented heap, and a Beauty
    finetuning process grew to ~4 GB RSS although it needs ~0.8 GB. Trimming once per epoch
    keeps it near that, at no measurable cost.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where `resource` is missing)."""
    try:
        import resource
    except ImportError:  # not Unix
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def epoch_generators(seed: int | tuple[int, ...], epoch: int):
    """Seeds torch's global RNG (dropout) and returns a numpy RNG, both from (seed, epoch) alone.

    Deriving every epoch's randomness from (seed, epoch) makes a run resumed after epoch k draw
    exactly what an uninterrupted run draws, without saving RNG states in checkpoints.
    Several seeds trained as one (s3rec/stacked.py): a list of numpy RNGs, each the one its seed
    alone would get, and torch seeded from (seeds..., epoch); a tuple of one seed is that seed.
    """
    seeds = seed if isinstance(seed, tuple) else (seed,)
    sequence = np.random.SeedSequence([*seeds, epoch])
    torch.manual_seed(int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    if not isinstance(seed, tuple):
        return np.random.default_rng(sequence)
    return [np.random.default_rng(np.random.SeedSequence([s, epoch])) for s in seeds]


def describe_execution(device: torch.device | str) -> dict[str, Any]:
    """Where this process actually computes: the concrete device ("cpu", "cuda:0"; a bare "cuda"
    resolved to the current GPU), the GPU's name on CUDA, and torch's intra-op thread count.

    On a CPU also its model and the vector instructions torch's kernels use (AVX2, AVX512),
    which torch picks per CPU: the study's `none` finetuning, rerun at its own commit with the
    same packages and one thread on a later machine, began with another loss in the 8th digit
    and ended with a tenth of a percent of its ranks one place apart. Runs made before this was
    recorded name no CPU (README, "Reproduction")."""
    device = torch.device(device)
    described: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        described = {"device": f"cuda:{index}", "gpu": torch.cuda.get_device_name(index)}
    else:
        described.update(cpu=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    described["threads"] = torch.get_num_threads()
    return described


def inductor_build_problem(mode: str, device: torch.device | str) -> str | None:
    """Why torch.compile in `mode` cannot build its kernels on this CPU, or None. On a CPU
    inductor compiles and links C++; torch 2.13 puts its library folders on the linker's command
    line unquoted (2.14 quotes them), so where torch or Python's library folder has a space in its
    path (a clone in "My Projects") the first compiled call fails with a page of linker errors.
    "eager" only traces, and "cuda-graph" modes need no torch.compile."""
    if torch.device(device).type != "cpu" or mode in ("none", "eager") or mode.startswith("cuda-graph"):
        return None
    version = torch.__version__
    if torch.torch_version.TorchVersion(version) >= "2.14":
        return None
    folders = [str(Path(torch.__file__).parent / "lib"), sysconfig.get_config_var("LIBDIR") or ""]
    spaced = [folder for folder in folders if any(char.isspace() for char in folder)]
    if not spaced:
        return None
    return (f"compile {mode} on a CPU: torch {version} cannot link the C++ that torch.compile builds when a "
            f"library folder's path has a space ({spaced[0]!r}): it passes them to the linker unquoted "
            "(torch 2.14 quotes them). Install torch >= 2.14, or the environment in a path without spaces, "
            "or use compile none")


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name as /proc/cpuinfo gives it (Linux), else platform's guess, else "unknown"."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def to_device(tensors: dict[str, torch.Tensor], device: torch.device | str,
              pack: bool | None = None) -> dict[str, torch.Tensor]:
    """A batch's tensors on `device`. On a GPU they travel as one copy per dtype from pinned
    memory, without waiting for it, instead of one blocking copy per tensor: a pretraining step
    moves some 40 small tensors, and each copy costs the host more than the GPU's work on it.
    `pack` forces (True) or skips (False) the packing; the default packs off the CPU."""
    device = torch.device(device)
    if not (device.type != "cpu" if pack is None else pack):
        return {name: tensor.to(device) for name, tensor in tensors.items()}
    moved: dict[str, torch.Tensor] = {}
    for dtype in dict.fromkeys(tensor.dtype for tensor in tensors.values()):
        names = [name for name, tensor in tensors.items() if tensor.dtype == dtype]
        sizes = [tensors[name].numel() for name in names]
        buffer = torch.empty(sum(sizes), dtype=dtype, pin_memory=device.type == "cuda")
        torch.cat([tensors[name].reshape(-1) for name in names], out=buffer)
        pieces = buffer.to(device, non_blocking=True).split(sizes)
        moved.update({name: piece.view(tensors[name].shape) for name, piece in zip(names, pieces)})
    return {name: moved[name] for name in tensors}


def peak_device_memory_mib(device: torch.device | str) -> float | None:
    """Peak memory torch allocated on a CUDA device in this process (None elsewhere)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def provenance() -> dict[str, Any]:
    """What produced a result (code and package versions, host). Where it ran is describe_execution.

    torch's is the version it reports, with its build ("2.13.0+cpu", "2.13.0+cu130"): PyPI's CUDA
    wheels declare a bare "2.13.0" to pip, so a run on a GPU recorded no CUDA build at all."""
    # str(): torch.__version__ is a TorchVersion, which weights-only checkpoint loads refuse
    versions = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("numpy", "polars", "pyarrow", "s3rec-lowrank"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_sha": git_sha(), "versions": versions, "host": platform.node()}


@functools.cache  # once a process for each copy and reason
def warn_git_sha_unknown(folder: Path, why: str) -> None:
    log.warning("s3rec runs from %s, which git does not read as a checkout's tracked code (git: %s): results "
                "record git_sha unknown. An installed copy (`pip install .`, not -e) does not run edits to a "
                "checkout's s3rec/", folder, why)


def owners_checkout(code: Path) -> list[str]:
    """git's options to read the checkout holding `code` when another user owns both (a lab's
    shared clone, run from a venv of one's own). git refuses such a checkout ("dubious
    ownership"), lest its config run commands as you; this process already runs that owner's
    code from it, so reading its HEAD trusts no one more. Elsewhere no options: git decides."""
    for folder in code.parents:
        if (folder / ".git").exists():
            owner = (folder / ".git").stat().st_uid
            trusted = owner != os.geteuid() and owner == code.stat().st_uid
            return ["-c", f"safe.directory={folder}"] if trusted else []
    return []


def git_sha(code: Path = Path(__file__)) -> str:
    """HEAD of the git checkout that tracks this code ("-dirty": tracked files changed), else
    "unknown". A copy installed with `pip install .` (not -e) into a venv inside a checkout is not
    that checkout's code, though git finds the checkout from it: scripts run the copy as it was
    installed, and the checkout's HEAD (2026-12-07: a commit made after the install) is not it."""
    code = code.resolve()  # git compares safe.directory with the real path
    options = owners_checkout(code)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *options, *args], cwd=code.parent, capture_output=True, text=True, timeout=10)

    try:
        tracked = git("ls-files", "--error-unmatch", code.name)
        tracked.check_returncode()
        head = git("rev-parse", "HEAD")
        head.check_returncode()
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError) as error:  # no git program (a slim container), a refusal, ...
        why = (getattr(error, "stderr", None) or "").strip() or str(error)  # git's words, else Python's
        warn_git_sha_unknown(code.parent, why.splitlines()[0])
        return "unknown"


def digest(paths: list[Path]) -> str:
    """sha256 over the bytes of these files: what a resumable run checks it resumes from."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def weights_digest(state_dict: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: the same weights give the same
    digest wherever they were saved, and a finetuning can record which pretrained weights it
    started from (two finetunings of one seed from a pretraining run twice would differ)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name} {tensor.dtype} {tuple(state_dict[name].shape)}\n".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


