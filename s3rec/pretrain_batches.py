"""Pretraining instances and their batches (the authors' `PretrainDataset`, vectorised).

An instance is a slice of one user's training part (items[:-2]): with `kind="prefixes"` (the
authors') one per prefix of the last `max_len` training items, with `kind="sequences"` one per
user. Instances are (user, start, end) offsets into one flat array of all training items, so no
list is ever copied. Every epoch draws fresh masks, negatives and segments from a numpy
Generator: the same seed gives the same batches.

Per instance, as in the authors' code:
- MIP/MAP: every position but the last is replaced by [MASK] with probability `mask_prob`;
  the last is always masked. Each masked position gets a negative item.
- SP: a segment of length uniform{1..n//2} at a uniform start is masked in the context; the
  positive / negative segment inputs hold the true / a random corpus segment at the same place
  and [MASK] elsewhere. Instances shorter than 2 use the sequence itself for all three.

Deviations, both for the leakage rule (nothing of a user's validation or test item may reach
pretraining):
- MIP negatives avoid the user's whole training part and held-out items; the authors avoid
  only the items of the prefix.
- Negative segments come from the concatenated *training* parts of all users; the authors cut
  them from the concatenation of all full sequences, held-out items included.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from s3rec import runtime
from s3rec.batching import CHUNK_BOUNDS, training_batches
from s3rec.pairs import pair_keys, redraw_owned


@dataclass(frozen=True)
class PretrainInstances:
    items: np.ndarray  # (T,) int64: every user's training part, concatenated
    user_offsets: np.ndarray  # (U + 1,) int64: user u's part is items[user_offsets[u]:user_offsets[u + 1]]
    user: np.ndarray  # (N,) int64: the instance's user
    start: np.ndarray  # (N,) int64: the instance is items[start:end]
    end: np.ndarray  # (N,) int64
    excluded: np.ndarray  # sorted unique keys user * (num_items + 1) + item that MIP never draws
    attribute_offsets: np.ndarray  # (num_items + 2,) int64: CSR of item -> attribute ids
    attribute_values: np.ndarray  # int64 attribute ids in 1..num_attributes
    num_items: int
    num_attributes: int

    def __len__(self) -> int:
        return len(self.user)

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start

    @property
    def mask_id(self) -> int:
        return self.num_items + 1


@dataclass
class Batch:
    """One pretraining batch; every (B, L) matrix is left-padded with 0 to the batch's longest instance."""

    users: torch.Tensor  # (B,) user index of each instance
    items: torch.Tensor  # (B, L) the true items (the authors' pos_items)
    masked_items: torch.Tensor  # (B, L) items with [MASK] at the MIP/MAP positions (last always)
    negative_items: torch.Tensor  # (B, L) MIP negative at masked positions, 0 elsewhere
    masked_segments: torch.Tensor  # (B, L) items with the SP segment replaced by [MASK]
    pos_segments: torch.Tensor  # (B, L) the true segment in place, [MASK] elsewhere
    neg_segments: torch.Tensor  # (B, L) a corpus segment in place, [MASK] elsewhere
    # Attributes of the items at the real positions, as (row, attribute) pairs; rows number the
    # real positions of `items` in row-major order, i.e. the rows of `items[items != 0]`.
    attribute_rows: torch.Tensor  # (nnz,)
    attribute_ids: torch.Tensor  # (nnz,) in 1..num_attributes
    # Where the losses read the states, as indices made on the host (grid_positions): the model
    # gathers with them instead of indexing with boolean masks, each of which would make the
    # host wait for the GPU to learn how many positions are True.
    real_positions: torch.Tensor  # (R,) the real positions as flat indices into the (B * L) grid, row-major
    unmasked_rows: torch.Tensor  # (R - K,) rows of real_positions that are not masked: AAP
    masked_rows: torch.Tensor  # (K,) rows of real_positions that are masked: MIP and MAP
    num_instances: int

    def to(self, device: torch.device | str) -> "Batch":
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "num_instances"}
        return dataclasses.replace(self, **runtime.to_device(tensors, device))


def grid_positions(items: np.ndarray, masked: np.ndarray) -> dict[str, torch.Tensor]:
    """Batch's index fields from its (B, L) items (0 = padding) and its mask of masked positions."""
    real_positions = np.flatnonzero(np.asarray(items).ravel() != 0)
    is_masked = np.asarray(masked).ravel()[real_positions]
    return {"real_positions": torch.from_numpy(real_positions),
            "unmasked_rows": torch.from_numpy(np.flatnonzero(~is_masked)),
            "masked_rows": torch.from_numpy(np.flatnonzero(is_masked))}


def build_instances(
    train: list[np.ndarray],
    item_attributes: list[np.ndarray],
    num_items: int,
    num_attributes: int,
    *,
    max_len: int,
    kind: str = "prefixes",
    heldout: np.ndarray | None = None,
) -> PretrainInstances:
    """Instances over the training parts; `heldout` (U, k): per-user items MIP must never draw."""
    if len(item_attributes) != num_items + 1:
        raise ValueError(f"item_attributes: expected {num_items + 1} entries (index = item id), got {len(item_attributes)}")
    lengths = np.array([len(s) for s in train], dtype=np.int64)
    user_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train] or [np.zeros(0, np.int64)])
    if len(items) and not 1 <= items.min() <= items.max() <= num_items:
        raise ValueError(f"train: item ids must lie in 1..{num_items}")
    kept = np.minimum(lengths, max_len)  # the authors truncate to the last max_len training items
    first = user_offsets[1:] - kept  # (U,) start of each user's kept tail
    if kind == "prefixes":
        user = np.repeat(np.arange(len(train)), kept)
        prefix_length = 1 + np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        start, end = first[user], first[user] + prefix_length
    elif kind == "sequences":
        user = np.flatnonzero(kept > 0)
        start, end = first[user], user_offsets[user + 1]
    else:
        raise ValueError(f"instances: expected prefixes or sequences, got {kind!r}")
    attribute_lengths = np.array([len(a) for a in item_attributes], dtype=np.int64)
    return PretrainInstances(
        items=items,
        user_offsets=user_offsets,
        user=user.astype(np.int64),
        start=start.astype(np.int64),
        end=end.astype(np.int64),
        excluded=_excluded_keys(items, lengths, heldout, num_items),
        attribute_offsets=np.concatenate([[0], np.cumsum(attribute_lengths)]).astype(np.int64),
        attribute_values=np.concatenate([np.asarray(a, dtype=np.int64) for a in item_attributes]),
        num_items=num_items,
        num_attributes=num_attributes,
    )


def split_instances(dataset, split, *, max_len: int, kind: str = "prefixes") -> PretrainInstances:
    """The pretraining instances of a data set's leave-one-out split (s3rec.data), as a run builds
    them: over the training parts, each user's validation and test items never drawn as MIP
    negatives (the leakage rule)."""
    heldout = np.stack([split.valid_target, split.test_target], axis=1)
    return build_instances(split.train, dataset.item_attributes, dataset.num_items, dataset.num_attributes,
                           max_len=max_len, kind=kind, heldout=heldout)


def _excluded_keys(items, lengths, heldout, num_items) -> np.ndarray:
    users = np.repeat(np.arange(len(lengths)), lengths)
    if heldout is not None:
        heldout = np.asarray(heldout, dtype=np.int64).reshape(len(lengths), -1)
        users = np.concatenate([users, np.repeat(np.arange(len(lengths)), heldout.shape[1])])
        items = np.concatenate([items, heldout.ravel()])
    keys = np.unique(pair_keys(users, items, num_items))
    excluded_per_user = np.bincount(keys // (num_items + 1), minlength=len(lengths))
    if len(keys) and excluded_per_user.max() >= num_items:
        raise ValueError("a user's sequence holds every item: no MIP negative can be drawn")
    return keys


def iterate_batches(
    instances: PretrainInstances, batch_size: int, generator: np.random.Generator, *, mask_prob: float,
    batching: str = "bucketed", bounds: tuple[int, ...] = CHUNK_BOUNDS, length: int | None = None,
) -> Iterator[list[Batch]]:
    """One epoch of steps in the `batching` layout (s3rec.batching), each a list of chunk batches
    whose (summed) losses add up to the step's loss; `length`: see build_batch."""
    for step in training_batches(instances.lengths, batch_size, generator, batching, bounds):
        yield [build_batch(instances, chunk, generator, mask_prob=mask_prob, length=length) for chunk in step]


def build_batch(
    instances: PretrainInstances, index: np.ndarray, generator: np.random.Generator, *, mask_prob: float,
    length: int | None = None,
) -> Batch:
    """Masks, negatives and segments for instances[index], vectorised over the batch.

    `length`: left-pad the batch to this many columns (at least its longest instance) after
    everything is drawn, so that every batch has the same shape: the same draws, the same
    losses (padding changes no real position's state), for PretrainModel.grid_forward."""
    inst, rng = instances, generator
    user, end = inst.user[index], inst.end[index]
    n = end - inst.start[index]  # (B,) instance lengths
    B, L = len(index), int(n.max())
    column = np.arange(L)
    offset = L - n  # (B,) first real column (left padding)
    real = column[None, :] >= offset[:, None]  # (B, L)
    source = np.maximum(end[:, None] - L + column[None, :], 0)  # (B, L) flat index; clipped on padding
    items = np.where(real, inst.items[source], 0)  # (B, L)

    masked = real & ((rng.random((B, L)) < mask_prob) | (column == L - 1)[None, :])
    rows, cols = np.nonzero(masked)
    negative_items = np.zeros((B, L), dtype=np.int64)
    negative_items[rows, cols] = sample_negatives(inst, user[rows], rng)
    masked_items = np.where(masked, inst.mask_id, items)

    masked_segments, pos_segments, neg_segments = _segments(inst, items, real, n, offset, rng)
    attribute_rows, attribute_ids = _attribute_pairs(inst, items[real])
    if length is not None:  # after the draws, which are made at the batch's own length
        if length < L:
            raise ValueError(f"length: the batch has an instance of {L} items, longer than {length}")
        items, masked, masked_items, negative_items, masked_segments, pos_segments, neg_segments = (
            _left_padded(m, length) for m in
            (items, masked, masked_items, negative_items, masked_segments, pos_segments, neg_segments))
    return Batch(
        users=torch.from_numpy(user),
        items=torch.from_numpy(items),
        masked_items=torch.from_numpy(masked_items),
        negative_items=torch.from_numpy(negative_items),
        masked_segments=torch.from_numpy(masked_segments),
        pos_segments=torch.from_numpy(pos_segments),
        neg_segments=torch.from_numpy(neg_segments),
        attribute_rows=torch.from_numpy(attribute_rows),
        attribute_ids=torch.from_numpy(attribute_ids),
        **grid_positions(items, masked),
        num_instances=B,
    )


def _left_padded(matrix: np.ndarray, length: int) -> np.ndarray:
    """`matrix` (B, L) with length - L zero columns before it: np.pad's result at a tenth of
    its cost (3 us, not 31, for a batch of 100 here; seven calls a step, on the host that
    feeds a GPU)."""
    out = np.zeros((len(matrix), length), dtype=matrix.dtype)
    out[:, length - matrix.shape[1]:] = matrix
    return out


def item_attribute_table(instances: PretrainInstances) -> torch.Tensor:
    """(num_items + 2, num_attributes) uint8: row i is item i's attributes as 0/1 (rows 0,
    padding, and num_items + 1, [MASK], are empty): PretrainModel.grid_forward's targets."""
    counts = np.diff(instances.attribute_offsets)
    table = np.zeros((instances.num_items + 2, instances.num_attributes), dtype=np.uint8)
    table[np.repeat(np.arange(len(counts)), counts), instances.attribute_values - 1] = 1
    return torch.from_numpy(table)


def sample_negatives(instances: PretrainInstances, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform item in 1..num_items per entry of `users`, outside that user's excluded set.
    Draw all at once, then redraw only the rejected ones (few: sequences are short)."""
    draws = rng.integers(1, instances.num_items + 1, size=len(users))
    return redraw_owned(instances.excluded, users, draws, instances.num_items, rng)


def _segments(inst, items, real, n, offset, rng):
    """(masked segment sequence, positive segment, negative segment), each (B, L)."""
    B, L = items.shape
    long = n >= 2  # shorter instances: the authors use the sequence itself for all three
    length = np.ones(B, dtype=np.int64)
    start = np.zeros(B, dtype=np.int64)
    length[long] = rng.integers(1, n[long] // 2 + 1)  # uniform{1..n//2}
    start[long] = rng.integers(0, n[long] - length[long] + 1)  # uniform{0..n-length}
    pool = inst.items  # training parts only (the leakage rule; the authors use full sequences)
    pool_start = rng.integers(0, len(pool) - length + 1)  # (B,)
    position = np.arange(L)[None, :] - offset[:, None]  # (B, L) index within the instance
    in_segment = long[:, None] & (position >= start[:, None]) & (position < (start + length)[:, None])
    outside = np.where(long[:, None], np.where(real, inst.mask_id, 0), items)
    pool_index = np.clip(pool_start[:, None] + position - start[:, None], 0, len(pool) - 1)
    masked_segments = np.where(in_segment, inst.mask_id, items)
    pos_segments = np.where(in_segment, items, outside)
    neg_segments = np.where(in_segment, pool[pool_index], outside)
    return masked_segments, pos_segments, neg_segments


def _attribute_pairs(inst, real_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, attribute id) for every attribute of every real position, from the CSR table."""
    first = inst.attribute_offsets[real_items]
    count = inst.attribute_offsets[real_items + 1] - first
    rows = np.repeat(np.arange(len(real_items)), count)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return rows, inst.attribute_values[first[rows] + within]
