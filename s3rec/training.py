"""A training run: the epoch loop, per-epoch history, resumable checkpoints, early stopping.

Every epoch's randomness derives from (seed, epoch) (runtime.epoch_generators), and a
checkpoint holds the model, the optimizer, the history and the early-stopping state, so a
run interrupted after epoch k and started again ends exactly where an uninterrupted run does.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl
import torch

from s3rec import files, runtime

log = logging.getLogger("s3rec")


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    # each process that trained epochs of the run: {"first_epoch", and what run_epochs was given
    # as `process`}; a resumed run may have computed its epochs on several machines (a checkpoint
    # from before 2026-12-07 holds none of its earlier processes)
    processes: list[dict[str, Any]] = field(default_factory=list)


def resumed_processes(state: LoopState, process: dict) -> dict:
    """For a run file: {"processes": ...} unless this `process` trained every epoch from epoch 1
    (then its `execution` and `provenance` say it all); a run resumed after its last epoch, its
    files written by a process that trained none, lists the processes that did (none, from a
    checkpoint older than the record: unknown, which is not "this process")."""
    return {} if state.processes == [{"first_epoch": 1, **process}] else {"processes": state.processes}


def adam(parameters, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The authors' Adam, fused into one kernel where torch supports it: the same update with
    less per-tensor overhead (about a tenth of a CPU pretraining step)."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


def _differences(old, new, where: str = "") -> str:
    """The keys whose values differ between two nested dicts, e.g. 'config.finetune.lr 0.001 -> 0.01'."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [_differences(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
                 for k in sorted(set(old) | set(new), key=str) if old.get(k) != new.get(k)]
        return "; ".join(p for p in parts if p)
    return f"{where or 'config'} {old!r} -> {new!r}"


def resume(path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> LoopState:
    """Load the last epoch's checkpoint when it was made with the same config and inputs; else start fresh.

    A checkpoint that cannot be read (a write killed mid-way, a full disk) is moved aside to
    `<name>.corrupt` with a warning and the run starts fresh: it can never block every rerun.
    Temporaries of a killed write (files.atomic_write) are removed: only `path` itself is read.
    """
    path = Path(path)
    remove_temporaries([path])
    if not path.exists():
        return LoopState()
    try:
        saved = files.load_torch(path)
        if not (isinstance(saved, dict) and {"config", "model", "optimizer", "loop"} <= saved.keys()):
            raise files.UnreadableCheckpoint(path, "it lacks config, model, optimizer or loop")
    except files.UnreadableCheckpoint as error:
        aside = _free_name(path.with_name(path.name + ".corrupt"))
        path.replace(aside)
        log.warning("cannot resume from %s, not a readable checkpoint (%s); moved it to %s, starting from epoch 1",
                    path, error.reason, aside)
        return LoopState()
    if saved["config"] != config:  # kept aside, not overwritten: a rerun with the old settings can take it back
        aside = _free_name(path.with_name(path.name + ".other-config"))
        path.replace(aside)
        epoch = saved["loop"].get("epoch") if isinstance(saved["loop"], dict) else None
        log.warning("not resuming from %s (after epoch %s): it was made with other settings or input files (%s); "
                    "moved it to %s, starting from epoch 1", path, epoch, _differences(saved["config"], config), aside)
        return LoopState()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = LoopState(**saved["loop"])
    log.info("resuming from %s after epoch %d", path, state.epoch)
    return state


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... : the first that does not exist (nothing is overwritten)."""
    candidate, number = path, 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def save(path: Path, config: dict, model, optimizer, state: LoopState) -> None:
    files.save_torch(path, {"config": config, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "loop": state.__dict__})


def remove_earlier_outputs(paths: list[Path]) -> None:
    """Delete what an earlier finished run left where this run will write its own (a rerun by
    hand into the same --out-dir): until this run ends, its new history would otherwise sit
    beside the old metrics or checkpoint, and a report would read them as one run. Each file
    removed is logged. (The workflow deletes a job's outputs itself before it starts.)"""
    removed = [path for path in map(Path, paths) if path.is_file()]
    for path in removed:
        path.unlink()
    if removed:
        log.warning("removed the outputs of an earlier finished run this run replaces: %s",
                    ", ".join(map(str, removed)))
    remove_temporaries(paths)


def remove_temporaries(paths: list[Path]) -> None:
    """Delete what a killed write of these files left (files.atomic_write's `.<name>.<hex>.tmp`:
    a SIGKILL, or SLURM's SIGTERM, skips its clean-up), so a finished folder holds its outputs only."""
    for path in map(Path, paths):
        for stale in sorted(path.parent.glob(files.temporary_name(path))):
            log.warning("removing %s, left by an interrupted write of %s", stale, path.name)
            stale.unlink(missing_ok=True)


def run_epochs(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epochs: int, seed: int,
               train_epoch: Callable, checkpoint: Path, config: dict, history_path: Path,
               validate: Callable | None = None, patience: int | None = None,
               stop_after: int | None = None, process: dict | None = None) -> LoopState:
    """Run up to `epochs` epochs; `train_epoch(rng) -> dict` trains one and returns its row.
    `process` (where this process computes, with what code) joins state.processes with the first
    epoch it trains.

    With `validate() -> (score, dict)`, keeps the best model state by score and stops after
    `patience` epochs without improvement. `stop_after` ends the process-level run early after
    that many epochs of this invocation (used to test interruption and resume).
    """
    state = resume(checkpoint, config, model, optimizer)
    remove_temporaries([history_path])
    done_now = 0
    loop_start = time.perf_counter()
    while state.epoch < epochs and not (patience and state.bad_epochs >= patience):
        epoch = state.epoch + 1
        runtime.release_free_memory()  # the last epoch's fragments (see there)
        rng = runtime.epoch_generators(seed, epoch)
        if not done_now and process is not None:
            state.processes.append({"first_epoch": epoch, **process})
        start = time.perf_counter()
        model.train()
        row = {"epoch": epoch, **train_epoch(rng)}
        # any loss column (a stacked run's seed<S>_loss too): NaN weights would be saved, and found
        # only by the finetuning
        bad = next((key for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)), None)
        if bad is not None:
            raise ValueError(f"epoch {epoch}: training {bad} {row[bad]}: the run diverged (learning rate "
                             f"{optimizer.param_groups[0]['lr']:g}); nothing of this epoch was saved"
                             + (f", {checkpoint} holds epoch {state.epoch}" if state.epoch else ""))
        row["seconds"] = time.perf_counter() - start
        row["instances_per_s"] = row.get("instances", 0) / max(row["seconds"], 1e-9)
        if validate is not None:
            model.eval()
            valid_start = time.perf_counter()
            score, metrics = validate()
            row.update({f"valid_{k}": v for k, v in metrics.items()})
            row["valid_seconds"] = time.perf_counter() - valid_start
            if score > state.best_score:
                state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                state.best_state = copy.deepcopy(model.state_dict())
            else:
                state.bad_epochs += 1
        state.history.append(row)
        state.epoch = epoch
        files.save_frame(history_path, pl.DataFrame(state.history))
        save(checkpoint, config, model, optimizer, state)
        done_now += 1
        log.info("epoch %d/%d %s%s", epoch, epochs, " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "epoch"),
                 time_left(time.perf_counter() - loop_start, done_now, epochs - epoch,
                           patience - state.bad_epochs if validate is not None and patience else None))
        if stop_after is not None and done_now >= stop_after:
            break
    if not done_now and state.history:  # resumed after the last epoch: the history as the checkpoint holds it
        files.save_frame(history_path, pl.DataFrame(state.history))
    return state


def time_left(seconds: float, epochs_done: int, epochs_left: int, patience_left: int | None) -> str:
    """The epoch log line's estimate, at this invocation's mean time per epoch (training,
    validation and checkpoint): " eta=2h05m"; with early stopping an upper bound, " eta<=2h05m",
    and how soon the run may stop instead. Nothing after the last epoch."""
    if epochs_left <= 0 or epochs_done <= 0 or patience_left == 0:
        return ""
    hours, minutes = divmod(round(seconds / epochs_done * epochs_left / 60), 60)
    if patience_left is None:
        return f" eta={hours}h{minutes:02d}m"
    return f" eta<={hours}h{minutes:02d}m (or stops after {patience_left} epochs without a better score)"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
