"""Training batches (two layouts) and left padding, shared by pretraining, finetuning and ranking.

An epoch is a list of optimisation steps; a step is a list of index chunks whose losses are
added up before one optimizer step.
- "padded" (the authors' DataLoader): a fresh random permutation cut into consecutive batches
  of batch_size, which the authors pad to max_len. A step's loss is a sum (pretraining) or a
  mean over the batch's positions (finetuning), and padding changes no real position's output
  (tested), so computing the batch in chunks of similar length, each padded only to its
  longest, gives the same loss and gradient as padding it to max_len, without the ~7x padding
  tokens of Beauty (tested against literal padding).
- "bucketed": batches of similar length (sorted within windows of a few dozen batches, batch
  order shuffled), one chunk each. Cheapest, but not the authors' optimisation: grouping short
  sequences together makes a short sequence's positions weigh more in a finetuning step's mean,
  and changes how many tokens each pretraining step sums.
"""
from __future__ import annotations

import numpy as np
import torch

WINDOW_BATCHES = 50  # length-sorting window, in batches
CHUNK_BOUNDS = (8, 16, 32)  # a padded batch is computed in chunks of length <=8, 9-16, 17-32, >32


def chunk_bounds(device) -> tuple[int, ...]:
    """Length bounds of a padded batch's chunks on `device`. On a CPU, chunks save the padding's
    arithmetic (about 7x the real tokens on Beauty). On a GPU that arithmetic is nearly free
    and the time goes to launching kernels, which chunks multiply: one chunk per step there."""
    return CHUNK_BOUNDS if torch.device(device).type == "cpu" else ()


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     window_batches: int = WINDOW_BATCHES) -> list[np.ndarray]:
    """Index arrays covering every instance once: shuffled, sorted by length within windows,
    cut into batches, batch order shuffled."""
    order = rng.permutation(len(lengths))
    batches = []
    window = window_batches * batch_size
    for begin in range(0, len(order), window):
        chunk = order[begin:begin + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     batching: str, bounds: tuple[int, ...] = CHUNK_BOUNDS) -> list[list[np.ndarray]]:
    """One epoch in the chosen layout ("padded" or "bucketed"): steps, each a list of index chunks
    (a padded batch in chunks split at `bounds`; the same batches whatever the bounds)."""
    if batching == "padded":
        order = rng.permutation(len(lengths))
        return [length_chunks(order[i:i + batch_size], lengths, bounds) for i in range(0, len(order), batch_size)]
    if batching == "bucketed":
        return [[batch] for batch in bucketed_batches(lengths, batch_size, rng)]
    raise ValueError(f"batching: expected padded or bucketed, got {batching!r}")


def length_chunks(index: np.ndarray, lengths: np.ndarray, bounds: tuple[int, ...] = CHUNK_BOUNDS) -> list[np.ndarray]:
    """`index` split into length groups at `bounds`, so that each group pads only to its own longest."""
    group = np.searchsorted(np.asarray(bounds), lengths[index])
    return [index[group == g] for g in np.unique(group)]


def pad_left(rows: list[np.ndarray], length: int) -> np.ndarray:
    """(len(rows), length) int64, each row's last `length` items right-aligned, 0 before them."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        tail = row[len(row) - min(len(row), length):]
        if len(tail):
            out[r, length - len(tail):] = tail
    return out
