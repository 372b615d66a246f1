"""Sets of (row, item) pairs as sorted int64 keys, searched with numpy.

Used wherever a sampler must reject items a user already has (MIP negatives, sampled-99
negatives): one binary search over all candidate pairs instead of a Python set per user.
"""
from __future__ import annotations

import numpy as np


def pair_keys(rows: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """One int64 key per (row, item) pair; items are in 0..num_items."""
    return np.asarray(rows, dtype=np.int64) * (num_items + 1) + items


def redraw_owned(owned: np.ndarray, rows: np.ndarray, draws: np.ndarray, num_items: int,
                 rng: np.random.Generator, pending: np.ndarray | None = None) -> np.ndarray:
    """`draws` (1-d, changed in place) with every entry whose (row, draw) pair is in `owned`
    (sorted keys) drawn again, uniformly from 1..num_items, until none is; only the entries just
    redrawn are checked again. `pending`: the increasing indices to check (default: all), which
    is also the order in which the redraws are assigned. A row that owns every item would never
    end: callers refuse such data once per run, before drawing (pretrain_batches._excluded_keys,
    finetuning.check_negatives_drawable), not here in every batch."""
    pending = np.arange(len(draws)) if pending is None else pending
    while len(pending):
        pending = pending[contains(owned, pair_keys(rows[pending], draws[pending], num_items))]
        draws[pending] = rng.integers(1, num_items + 1, size=len(pending))  # none left: draws nothing
    return draws


def contains(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Mask of `queries` found in `sorted_keys`; binary search is ~5x faster than np.isin here."""
    if sorted_keys.size == 0:
        return np.zeros(np.shape(queries), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.size - 1)
    return sorted_keys[position] == queries
