"""Spreading a node's training jobs over its GPUs (device `cuda:any`).

Snakemake's local executor limits how many training jobs run at once (`--resources gpu=N`)
but does not say which card a job should use. A job started with `cuda:any` claims the card of
this node that the fewest running jobs hold, and holds it until the process ends:

- a claim is an exclusive `flock` on a file `card{N}.pid{PID}.{token}` in a folder of this
  node's temporary directory, per user (the random token: processes of other PID namespaces,
  containers sharing /tmp, may have the same PID); the kernel drops the lock when the process
  dies, however it dies, so a claim never outlives its job;
- a file whose lock nobody holds is a dead job's and is deleted when the next job chooses;
- jobs choose one at a time (a lock on `choose.lock`), so two jobs starting together do not
  both take the same least-used card.

With a single visible card (a SLURM job given one with `--gpus=1`) nothing is claimed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import tempfile
from pathlib import Path

log = logging.getLogger("s3rec")

CLAIM = re.compile(r"card(\d+)\.pid(\d+)(\.[0-9a-f]+)?")  # claims of older versions had no token
_claim = None  # (card, open claim file) of this process: closing the file would release the card


class ClaimFailed(ValueError, RuntimeError):
    """cuda:any could not claim a card here: the scripts end with its message alone (exit 2),
    as with any device this machine cannot give (runtime.DeviceUnavailable)."""


def default_folder() -> Path:
    """Node-local and per user: the jobs that share this node's cards see the same claims."""
    return Path(tempfile.gettempdir()) / f"s3rec-cards-{os.getuid()}"


def claim_card(count: int, folder: Path | None = None) -> int:
    """Index of the card (of `count` visible ones) with the fewest live claims, lowest first on
    ties, now claimed by this process until it ends (a second call returns the same card)."""
    if count < 1:
        raise ValueError(f"no card to claim among {count}")
    if _claim is not None:
        return _claim[0]
    folder = Path(folder) if folder is not None else default_folder()
    try:
        return _claim_in(folder, count)
    except OSError as error:  # an unwritable temp dir, a file system without flock
        raise ClaimFailed(f"device cuda:any: cannot claim a card through lock files in {folder} ({error}); "
                          f"name a card instead (cuda:N)") from error


def _claim_in(folder: Path, count: int) -> int:
    global _claim
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "choose.lock", "a") as chooser:
        fcntl.flock(chooser, fcntl.LOCK_EX)  # released when the file closes
        jobs = live_claims(folder, count)
        card = min(range(count), key=lambda c: (jobs[c], c))
        claim = open(folder / f"card{card}.pid{os.getpid()}.{secrets.token_hex(4)}", "x")
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _claim = (card, claim)
    log.info("claimed card %d of %d (%s running jobs per card before this one; claims in %s)",
             card, count, jobs, folder)
    return card


def live_claims(folder: Path, count: int) -> list[int]:
    """Running jobs per card; the files of jobs that ended are deleted (call under choose.lock)."""
    jobs = [0] * count
    for path in folder.iterdir():
        match = CLAIM.fullmatch(path.name)
        if not match:
            continue
        if is_held(path):
            card = int(match.group(1))
            if card < count:  # (a job that saw more cards may have claimed one beyond ours)
                jobs[card] += 1
        else:
            path.unlink(missing_ok=True)
    return jobs


def is_held(path: Path) -> bool:
    """Whether some open file holds `path`'s lock (flock locks belong to open files, so this
    sees the claims of this process too)."""
    try:
        with open(path, "a") as probe:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False
