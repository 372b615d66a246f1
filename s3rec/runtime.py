"""Where and how a run executes: device, threads, seeding, provenance, atomic file writes."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import logging
import math
import os
import platform
import secrets
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s3rec import cards
from s3rec.config import DEVICE_PATTERN, SEED_MAX, DuplicateKey, unique_keys

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


def device_argument_checked(parser: argparse.ArgumentParser, name: str, compile_mode: str = "none") -> torch.device:
    """choose_device for a script's --device (and --compile): a device this machine lacks, or a
    CUDA-graph mode on another device, is the parser's usage error (one line, exit status 2),
    before any data is read, not a traceback after."""
    try:
        device = choose_device(name)
    except DeviceUnavailable as error:
        parser.error(f"--device {name}: {error}")
    if compile_mode.startswith("cuda-graph") and device.type != "cuda":  # cuda-graph-inductor too
        parser.error(f"--compile {compile_mode} records CUDA graphs: it needs a CUDA device, not {device}")
    return device


def paths_once(parser: argparse.ArgumentParser, option: str, paths: list[Path]) -> list[Path]:
    """`paths` as given, or the parser's usage error when one file is named twice (a report keyed
    by path kept one entry of the two without a word)."""
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            parser.error(f"{option}: {path} given twice (as {seen[path.resolve()]} before)")
        seen[path.resolve()] = path
    return paths


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
    resolved to the current GPU), the GPU's name on CUDA, and torch's intra-op thread count."""
    device = torch.device(device)
    described: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        described = {"device": f"cuda:{index}", "gpu": torch.cuda.get_device_name(index)}
    described["threads"] = torch.get_num_threads()
    return described


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
    """What produced a result (code and package versions, host). Where it ran is describe_execution."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "polars", "pyarrow", "s3rec-lowrank"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_sha": git_sha(), "versions": versions, "host": platform.node()}


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


def temporary_name(path: Path) -> str:
    """The glob of the temporaries atomic_write writes `path` through (what a killed write leaves behind)."""
    return f".{glob.escape(Path(path).name)}.*.tmp"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file.

    The temporary is created as open() creates files (mode 0666 less the umask, default ACLs
    applied), not with mkstemp's 0600, so that group members can read results; it is synced
    before the rename, so a crash just after the rename cannot leave an empty or partial file.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails late, naming the temporary
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as error:  # named after the file meant, not its temporary
            raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def save_torch(path: Path, obj: Any) -> None:
    """torch.save through an open file: given a path, torch names the archive's inner folder after
    the file, here atomic_write's random temporary name, so equal contents would give different
    bytes, and a finetuning run (which checks its pretrained file's digest to resume) would start
    over after that file was merely rewritten."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    atomic_write(path, write)


def save_frame(path: Path, frame) -> None:
    """A polars frame to CSV or parquet by the file's suffix."""
    if Path(path).suffix == ".csv":
        atomic_write(path, frame.write_csv)
    else:
        atomic_write(path, frame.write_parquet)


class UnreadableCheckpoint(ValueError):
    """A file that torch.load (weights only) cannot read: truncated, corrupt or not a checkpoint."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is not a readable torch checkpoint ({reason}): delete or regenerate it")
        self.path, self.reason = path, reason


def load_torch(path: Path) -> Any:
    """torch.load with weights_only=True, never anything else: a checkpoint is data, not code.

    A file that cannot be read (truncated by a kill or a full disk, random bytes, a pickle of
    other objects) raises UnreadableCheckpoint (a ValueError, so scripts end with one line)
    naming the path. torch's own message is dropped: it can advise retrying with
    weights_only=False, which would execute whatever the file holds.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except OSError as error:
        if error.errno not in (errno.EINVAL, None):  # a real I/O failure, not the file's content
            raise
        cause = type(error).__name__
    except Exception as error:  # zip, unpickling, EOF, index errors: every way bad bytes fail
        cause = type(error).__name__
    reason = f"truncated, corrupt or not a checkpoint at all; torch.load raised {cause}"
    raise UnreadableCheckpoint(path, reason) from None


def load_state(module: torch.nn.Module, state: dict, path: Path | str, what: str) -> None:
    """module.load_state_dict(state), strictly; a mismatch is a ValueError naming the file and
    saying in one line what differs (torch's own message lists every key, over many lines)."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another size: torch's first "size mismatch" line
        reason = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
    else:  # e.g. a finetune.pt given for a pretrain.pt: the encoder's tensors under other names, no heads
        reason = "; ".join(f"{len(keys)} {kind} tensors (first {keys[0]})"
                           for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
    if reason:
        raise ValueError(f"{path} does not fit {what}: {reason}")


def json_argument(text: str) -> Any:
    """argparse type: JSON text (argparse names the option in its error)."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    except DuplicateKey as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def json_object(text: str) -> dict:
    """argparse type of every script's --settings: a JSON object (a list, say, would fail later
    as a TypeError deep in the config's reading)."""
    value = json_argument(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def integer_argument(minimum: int, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum]. A count of 0 or below is refused rather
    than read as "all" or "torch's default" (speed.py's --batches 0 timed whole epochs)."""
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (a share, a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


positive_int = integer_argument(1)  # threads, batches, steps, epochs, jobs, ranks
seed_argument = integer_argument(0, SEED_MAX)


def check_destination(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, a destination atomic_write would fail on with an OS error: a
    folder where a file goes (or the reverse), or a file where a folder above it should be."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        expected = "a folder (made when missing)" if folder else "a file's path"
        raise ValueError(f"{option} {path}: is a {'file' if folder else 'folder'}; expected {expected}")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"{option} {path}: {above} is a file, where a folder is expected")
    # the folder the first write creates files or folders in; access() answers for a read-only
    # mount too (EROFS), where a run would otherwise fail after its first epoch
    parent = path if folder and path.is_dir() else above
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {parent} (a read-only file system, or no write "
                         "permission)")


def folder_argument(text: str) -> Path:
    """argparse type of an output folder (--out-dir): missing (made later) or a folder, below no
    file; refused at once, not when the run first writes there, after its first epoch."""
    try:
        check_destination(Path(text), "", folder=True)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).strip()) from None
    return Path(text)


def device_argument(text: str) -> str:
    """argparse type of a --device: what RunConfig.device takes (torch's own error comes late)."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or cuda:any, got {text!r}")
    return text


@contextlib.contextmanager
def clear_errors():
    """Bad input (a wrong config, a missing or mismatched file) ends the script with its message alone."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    except (IsADirectoryError, NotADirectoryError, PermissionError) as error:  # a path given wrongly
        expected = {IsADirectoryError: "; expected a file", NotADirectoryError: "; expected a folder"}
        if error.filename is None or error.strerror is None:  # not about a path after all: as it is
            log.error("%s", error)
        else:
            log.error("%s: %s%s", error.filename, error.strerror.lower(), expected.get(type(error), ""))
        raise SystemExit(2) from error
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # a full or read-only disk: one line
            raise
        log.error("%s: %s (files are written whole or not at all: a rerun can go on from what was saved)",
                  error.filename or "writing the outputs", (error.strerror or str(error)).lower())
        raise SystemExit(2) from error


def setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
