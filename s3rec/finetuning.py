"""Finetuning: next-item prediction with a causal encoder (SASRec objective, as in S3Rec).

One instance per user: the input is the training part minus its last item, the target at
each position is the item that follows (authors: input items[:-3], targets items[1:-2]),
both truncated to the last max_len positions and left-padded.

Losses
- "bce": the paper's: one random negative per position, -[log s(h.e+) + log(1 - s(h.e-))],
  averaged over target positions. Negatives avoid the user's training part; with
  `negatives_exclude_heldout` also the validation and test items (the authors' choice).
- "ce": softmax over all real items (padding and [MASK] excluded), averaged over positions.

Fixed-shape steps (RunConfig.compile "cuda-graph", recorded as CUDA graphs): each batch, drawn as
always, is then padded to max_len columns and its target positions to a multiple of
TARGET_SLOTS, the extra slots weighted 0 (fixed_shape_loss: the same loss, tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from s3rec import runtime
from s3rec.batching import CHUNK_BOUNDS, pad_left, training_batches
from s3rec.encoder import Encoder
from s3rec.pairs import pair_keys, redraw_owned


TARGET_SLOTS = 1024  # fixed-shape batches hold their target positions in multiples of this


@dataclass
class NextItemBatch:
    inputs: torch.Tensor  # (B, L) left-padded item ids
    targets: torch.Tensor  # (B, L) next item at each position, 0 where there is none
    negatives: torch.Tensor  # (B, L) one sampled negative per position (BCE), 0 where no target
    # The positions with a target as flat indices into the (B * L) grid, made on the host: the
    # loss gathers with them rather than with the mask targets > 0, which would make the host wait
    # for the GPU (see tests/test_host_sync.py).
    target_positions: torch.Tensor  # (N,)
    # 1 per target position; fixed-shape batches pad the positions with slots of weight 0. int64,
    # as the other fields: a batch still travels to a GPU as one packed copy (runtime.to_device).
    target_weights: torch.Tensor  # (N,) int64

    @classmethod
    def of(cls, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> "NextItemBatch":
        """A batch of host tensors, its target positions taken from `targets`."""
        positions = torch.from_numpy(np.flatnonzero(targets.numpy().ravel() > 0))
        return cls(inputs, targets, negatives, positions, torch.ones(len(positions), dtype=torch.int64))

    def to(self, device) -> "NextItemBatch":
        return NextItemBatch(**runtime.to_device(vars(self), device))


def trainable_users(train: list[np.ndarray]) -> np.ndarray:
    """Users whose training part has a next item to predict (at least two items)."""
    return np.flatnonzero(np.array([len(t) for t in train]) >= 2)


def check_negatives_drawable(train: list[np.ndarray], excluded: list[np.ndarray], num_items: int,
                             user_ids=None) -> None:
    """Fail, naming the user, where a trainable user's `excluded` items are the whole catalogue:
    redrawing a negative until it misses them would never end (pretraining checks the same)."""
    for row in trainable_users(train):
        if len(excluded[row]) >= num_items and len(np.unique(excluded[row])) >= num_items:
            user = f"user {user_ids[row]}" if user_ids is not None else f"user row {row}"
            raise ValueError(f"{user}: all {num_items} items are among those its finetuning negatives must avoid "
                             "(its training part, or its whole sequence with finetune.negatives_exclude_heldout), "
                             "so none can be drawn; expected a catalogue larger than any sequence")


def sample_negatives(targets: np.ndarray, excluded: np.ndarray, num_items: int,
                     rng: np.random.Generator) -> np.ndarray:
    """One uniform item per target position, never in that row's `excluded` (B, S) set (0 = none)."""
    negatives = rng.integers(1, num_items + 1, size=targets.shape)
    rows = np.repeat(np.arange(len(targets)), targets.shape[1])  # each flat position's row
    # the excluded items as (row, item) keys, sorted (each row sorted: its keys follow the previous
    # row's): a binary search per draw instead of a (B, L, S) comparison. 0 never matches a draw.
    owned = pair_keys(np.arange(len(targets))[:, None], np.sort(excluded, axis=1), num_items).ravel()
    # only target positions are checked, row by row; reshape(-1) is a view: redraws land in `negatives`
    redraw_owned(owned, rows, negatives.reshape(-1), num_items, rng, pending=np.flatnonzero(targets.reshape(-1) > 0))
    return np.where(targets > 0, negatives, 0)


def make_batch(users: np.ndarray, train: list[np.ndarray], excluded: list[np.ndarray], num_items: int,
               max_len: int, rng: np.random.Generator) -> NextItemBatch:
    seqs = [train[u][-(max_len + 1):] for u in users]  # inputs t[:-1] and targets t[1:], max_len each
    length = max(len(s) for s in seqs) - 1
    inputs = pad_left([s[:-1] for s in seqs], length)
    targets = pad_left([s[1:] for s in seqs], length)
    negatives = sample_negatives(targets, pad_left([excluded[u] for u in users],
                                                   max(len(excluded[u]) for u in users)), num_items, rng)
    return NextItemBatch.of(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(negatives))


def fixed_shape(batch: NextItemBatch, length: int, slots: int = TARGET_SLOTS) -> NextItemBatch:
    """`batch` left-padded to `length` columns, its target positions (now shifted) padded to a
    multiple of `slots` with position 0 at weight 0: few shapes an epoch, the same draws."""
    extra = length - batch.inputs.shape[1]
    inputs, targets, negatives = (F.pad(t, (extra, 0)) for t in (batch.inputs, batch.targets, batch.negatives))
    positions = np.flatnonzero(targets.numpy().ravel() > 0)
    capacity = -(-max(len(positions), 1) // slots) * slots
    weights = np.zeros(capacity, dtype=np.int64)
    weights[: len(positions)] = 1.0
    positions = np.concatenate([positions, np.zeros(capacity - len(positions), dtype=positions.dtype)])
    return NextItemBatch(inputs, targets, negatives, torch.from_numpy(positions), torch.from_numpy(weights))


def iterate_batches(train: list[np.ndarray], excluded: list[np.ndarray], num_items: int, max_len: int,
                    batch_size: int, rng: np.random.Generator, batching: str = "bucketed",
                    bounds: tuple[int, ...] = CHUNK_BOUNDS, fixed_shapes: bool = False) -> Iterator[list[NextItemBatch]]:
    """One epoch of steps in the `batching` layout (s3rec.batching): each a list of chunk batches.
    With `fixed_shapes`, each batch padded by fixed_shape (pass bounds=(): one chunk a step)."""
    users = trainable_users(train)
    lengths = np.minimum(np.array([len(train[u]) for u in users]), max_len + 1)
    for step in training_batches(lengths, batch_size, rng, batching, bounds):
        batches = [make_batch(users[chunk], train, excluded, num_items, max_len, rng) for chunk in step]
        yield [fixed_shape(batch, max_len) for batch in batches] if fixed_shapes else batches


def step_loss(encoder: Encoder, chunks: list[NextItemBatch], loss: str) -> torch.Tensor:
    """Mean over all target positions of a step's chunks: the loss of the whole batch (the authors' mean)."""
    total = sum(next_item_loss_sum(encoder, chunk, loss) for chunk in chunks)
    return total / sum(len(chunk.target_positions) for chunk in chunks)


def next_item_loss_sum(encoder: Encoder, batch: NextItemBatch, loss: str) -> torch.Tensor:
    states, targets = states_at_targets(encoder, batch)  # (N, d), (N,): only positions with a next item
    if loss == "ce":
        return F.cross_entropy(item_logits(encoder, states), targets - 1, reduction="sum")
    return bce_terms(encoder, batch, states, targets).sum()


def fixed_shape_loss(encoder: Encoder, batch: NextItemBatch, loss: str) -> torch.Tensor:
    """step_loss of one fixed-shape batch: the weighted mean over its target slots, every
    shape fixed by the batch's (B, max_len) and its number of slots, the divisor computed on
    the device (a CUDA graph replays it for every batch of that shape)."""
    states, targets = states_at_targets(encoder, batch)  # (C, d), (C,); target 0 in empty slots
    if loss == "ce":  # empty slots: any class, weighted 0
        terms = F.cross_entropy(item_logits(encoder, states), targets.clamp(min=1) - 1, reduction="none")
    else:
        terms = bce_terms(encoder, batch, states, targets)
    weights = batch.target_weights.to(terms.dtype)
    return (terms * weights).sum() / weights.sum()


def states_at_targets(encoder: Encoder, batch: NextItemBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The causal states and the next items at the batch's target positions."""
    states = encoder(batch.inputs, causal=True).flatten(0, 1).index_select(0, batch.target_positions)
    return states, batch.targets.flatten().index_select(0, batch.target_positions)


def item_logits(encoder: Encoder, states: torch.Tensor) -> torch.Tensor:
    """(N, M) scores of every real item (padding and [MASK] excluded)."""
    return states @ encoder.item_embeddings.weight[1:encoder.num_items + 1].T


def bce_terms(encoder: Encoder, batch: NextItemBatch, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) -[log s(h.e+) + log(1 - s(h.e-))] at the batch's target positions."""
    table = encoder.item_embeddings.weight
    positive = (states * table[targets]).sum(-1)
    negative = (states * table[batch.negatives.flatten().index_select(0, batch.target_positions)]).sum(-1)
    return F.softplus(-positive) + F.softplus(negative)


def score_function(encoder: Encoder, device: torch.device):
    """The evaluation's score_fn: histories -> (B, num_items + 1) scores of the next item."""
    max_len = encoder.cfg.max_len

    @torch.no_grad()
    def score(histories: list[np.ndarray]) -> torch.Tensor:
        length = min(max(len(h) for h in histories), max_len)
        # one copy from pinned memory that does not wait for the GPU to finish the previous batch
        inputs = runtime.to_device({"inputs": torch.from_numpy(pad_left(histories, length))}, device)["inputs"]
        _, last = encoder.forward_ends(inputs, causal=True)  # (B, d): state after the whole history
        # stays on the model's device: ranking there moves (B,) ranks back, not (B, num_items + 1) scores
        return (last @ encoder.item_embeddings.weight[: encoder.num_items + 1].T).float()

    return score
