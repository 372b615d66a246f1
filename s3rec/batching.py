"""Length-bucketed batches and left padding, shared by pretraining, finetuning and ranking.

Padding every sequence to 50 items, as the authors do, makes 7x more tokens than there are
items in Beauty. Batches of similar length pad almost nothing; sorting only within windows of
a few dozen batches, and shuffling the batch order, keeps the batches random.
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


def pad_left(rows: list[np.ndarray], length: int) -> np.ndarray:
    """(len(rows), length) int64, each row's last `length` items right-aligned, 0 before them."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        tail = row[len(row) - min(len(row), length):]
        if len(tail):
            out[r, length - len(tail):] = tail
    return out
