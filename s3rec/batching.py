"""Training batches (two layouts) and left padding, shared by pretraining, finetuning and ranking.

- "padded" (the authors' DataLoader): a fresh random permutation cut into consecutive batches,
  every sequence left-padded to max_len.
- "bucketed": batches of similar length, padded only to their longest sequence. Padding every
  sequence to 50 items makes 7x more tokens than there are items in Beauty; similar lengths pad
  almost nothing. Sorting only within windows of a few dozen batches, and shuffling the batch
  order, keeps the batches random.

Both give every real position the same output (padding is masked and positions are aligned to
the sequence end), but not the same optimisation: a batch's loss is averaged (finetuning) or
summed (pretraining) over its positions, and bucketing groups short sequences together, so a
short sequence's positions weigh more in a finetuning step than in the authors' random batches.
"""
from __future__ import annotations

import numpy as np

WINDOW_BATCHES = 50  # length-sorting window, in batches


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
                     batching: str) -> list[np.ndarray]:
    """One epoch of index arrays in the chosen layout ("padded" or "bucketed")."""
    if batching == "padded":
        order = rng.permutation(len(lengths))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if batching == "bucketed":
        return bucketed_batches(lengths, batch_size, rng)
    raise ValueError(f"batching: expected padded or bucketed, got {batching!r}")


def pad_left(rows: list[np.ndarray], length: int) -> np.ndarray:
    """(len(rows), length) int64, each row's last `length` items right-aligned, 0 before them."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        tail = row[len(row) - min(len(row), length):]
        if len(tail):
            out[r, length - len(tail):] = tail
    return out
