"""What every script's command line shares: argparse types that refuse bad values with one line,
the device check before any data is read, clear_errors (bad input ends a script with its
message alone, exit status 2) and the log format."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3rec.config import DEVICE_PATTERN, SEED_MAX, DuplicateKey, unique_keys

if TYPE_CHECKING:
    import torch

log = logging.getLogger("s3rec")


def device_argument_checked(parser: argparse.ArgumentParser, name: str, compile_mode: str = "none") -> torch.device:
    """choose_device for a script's --device (and --compile): a device this machine lacks, a
    CUDA-graph mode on another device, or a compile mode torch cannot build here
    (runtime.inductor_build_problem), is the parser's usage error (one line, exit status 2),
    before any data is read, not a traceback after."""
    # here only: the table scripts need no torch
    from s3rec.runtime import DeviceUnavailable, choose_device, inductor_build_problem

    try:
        device = choose_device(name)
    except DeviceUnavailable as error:
        parser.error(f"--device {name}: {error}")
    if compile_mode.startswith("cuda-graph") and device.type != "cuda":  # cuda-graph-inductor too
        parser.error(f"--compile {compile_mode} records CUDA graphs: it needs a CUDA device, not {device}")
    if problem := inductor_build_problem(compile_mode, device):
        parser.error(f"--{problem}")
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
