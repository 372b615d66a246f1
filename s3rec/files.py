"""Files a run writes and reads back: written whole or not at all (a temporary name, then a
rename), checkpoints loaded with a clear error when unreadable or of another model."""
from __future__ import annotations

import errno
import glob
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("s3rec")


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
    import torch  # here and in load_torch only: the table scripts write files without torch

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
    import torch

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
