"""Leave-one-out evaluation of next-item recommenders (S3Rec, Zhou et al. CIKM 2020).

Model-agnostic: a model is seen only through a score function

    score_fn(histories: list[np.ndarray]) -> torch.Tensor (B, num_items + 1)

where column j is the score of item j and column 0 (padding) is never ranked. Two protocols:

- "full": the target is ranked against every real item 1..num_items. With `exclude_history`,
  items already in the user's history are not ranked, except the target itself: on data with
  repeat consumption the target may be in the history, and dropping it would make it
  unrankable. With `history_score` as well (the authors' full sort: 0.0), the history items,
  the target among them where it is one, are ranked with that score instead of their own.
- "sampled": the target is ranked against `n` negatives drawn once per user uniformly from
  the items outside the user's whole sequence (the authors' 99-negative protocol).

Ranks are 1-based and pessimistic on ties: 1 + the number of other candidates scoring >= the
target, so a model that gives every item the same score ranks every target last.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from s3rec.config import EvalConfig
from s3rec.metrics import metrics_from_ranks
from s3rec.pairs import contains, pair_keys
from s3rec.runtime import to_device

ScoreFn = Callable[[list[np.ndarray]], torch.Tensor]
PROTOCOLS = ("full", "sampled")
SPLITS = ("valid", "test")


def full_ranking_ranks(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    num_items: int,
    exclude_history: bool = True,
    batch_size: int = 256,
    history_score: float | None = None,
) -> np.ndarray:
    """(U,) int32 rank of each target among all items 1..num_items (see the module docstring)."""
    ranks = _rank_all(score_fn, histories, targets, num_items, exclude_history, None, batch_size,
                      history_score=history_score)
    return ranks["full"]


def sampled_ranks(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    negatives: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """(U,) int32 rank of each target among itself and its row of `negatives` (U, n)."""
    # num_items=None: the score width is not checked here; gather rejects ids beyond it.
    ranks = _rank_all(score_fn, histories, targets, None, False, np.asarray(negatives), batch_size,
                      protocols=("sampled",))
    return ranks["sampled"]


def check_sampled_protocol(
    sequences: Sequence[np.ndarray], num_items: int, num_negatives: int, user_ids: np.ndarray | None = None
) -> None:
    """Raise ValueError unless every user has `num_negatives` candidate negatives, i.e. distinct
    items outside its whole sequence (those sample_negatives draws from). Cheap: call it before
    training, so that a data set too dense for the sampled protocol stops a run at once."""
    _check_candidates(sequences, *_distinct_pairs(sequences, num_items), num_items, num_negatives, user_ids)


def draw_negatives(
    sequences: Sequence[np.ndarray], user_ids: np.ndarray, num_items: int, cfg: EvalConfig
) -> np.ndarray | None:
    """The sampled protocol's negatives exactly as evaluate() draws them, or None when `cfg` has
    no sampled protocol. Drawn before training, they check the protocol up front (a ValueError
    naming the user) and can be passed to evaluate(negatives=...) at the end."""
    if "sampled" not in cfg.protocols:
        return None
    return sample_negatives(sequences, num_items, cfg.sampled_negatives, cfg.negatives_seed, user_ids=user_ids)


def _check_candidates(sequences, rows: np.ndarray, items: np.ndarray, num_items: int, n: int,
                      user_ids: np.ndarray | None) -> None:
    available = num_items - np.bincount(rows, minlength=len(sequences))
    short = np.flatnonzero(available < n)
    if len(short):
        user = int(short[0])
        name = f"user {user_ids[user]}" if user_ids is not None else f"user index {user}"
        raise ValueError(f"{name} has only {available[user]} candidate negatives (items outside its sequence) but "
                         f"eval.sampled_negatives needs {n} ({len(short)} of {len(sequences)} users fall short): lower "
                         f"eval.sampled_negatives or drop 'sampled' from eval.protocols")


def sample_negatives(
    sequences: Sequence[np.ndarray], num_items: int, n: int = 99, seed: int = 0, user_ids: np.ndarray | None = None
) -> np.ndarray:
    """(U, n) int32: per user, n distinct items drawn uniformly from those outside its sequence.

    Deterministic given `seed`. Vectorised rejection sampling: every user draws a row of
    2n + 32 uniform items; a draw is kept if it is outside the sequence and not an earlier
    draw of the same row, and the first n kept draws form a uniform n-subset. The rare users
    left short (very long sequences) are sampled exactly from their allowed items instead.
    A user with fewer than n such items is a ValueError naming it (by `user_ids` if given).
    """
    num_users = len(sequences)
    rows, items = _distinct_pairs(sequences, num_items)
    _check_candidates(sequences, rows, items, num_items, n, user_ids)  # a ValueError naming the user
    rng = np.random.default_rng(seed)
    width = 2 * n + 32  # ample when sequences are short compared with num_items (the usual case)
    draws = rng.integers(1, num_items + 1, size=(num_users, width), dtype=np.int64)
    owned = pair_keys(rows, items, num_items)  # sorted, as _distinct_pairs returns them
    seen = contains(owned, pair_keys(np.arange(num_users)[:, None], draws, num_items))
    keep = ~seen & ~_repeats_within_row(draws)
    taken = keep & (np.cumsum(keep, axis=1) <= n)
    negatives = np.zeros((num_users, n), dtype=np.int32)
    complete = taken.sum(1) == n
    negatives[complete] = draws[complete][taken[complete]].reshape(-1, n)
    for user in np.flatnonzero(~complete):
        allowed = np.setdiff1d(np.arange(1, num_items + 1), sequences[user])
        negatives[user] = rng.choice(allowed, size=n, replace=False)
    return negatives


def evaluate(
    score_fn: ScoreFn,
    split: Any,
    sequences: Sequence[np.ndarray],
    user_ids: np.ndarray,
    num_items: int,
    cfg: EvalConfig,
    splits: Sequence[str] = SPLITS,
    negatives: np.ndarray | None = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], pl.DataFrame]:
    """Evaluate on the leave-one-out split under every protocol in `cfg.protocols`.

    `split` needs `train` (list of arrays), `valid_target` and `test_target` (s3rec.data.Split).
    Validation ranks valid_target after the train part; test ranks test_target after the
    train part + valid_target. The sampled negatives are drawn once, from the full sequences
    with `cfg.negatives_seed`, and shared by both splits, as the authors do; `negatives` passes
    those drawn earlier by draw_negatives() (the same draw) instead of drawing them again.

    Returns ({protocol: {split: {metric: value}}}, ranks frame with columns
    user_id int32, split str, protocol str, rank int32).
    """
    bad = [s for s in splits if s not in SPLITS] + [p for p in cfg.protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown split or protocol {bad[0]!r}; expected {SPLITS} and {PROTOCOLS}")
    user_ids = np.asarray(user_ids, dtype=np.int32)
    sizes = {len(split.train), len(split.valid_target), len(split.test_target), len(sequences), len(user_ids)}
    if len(sizes) != 1:
        raise ValueError("split, sequences and user_ids must have one entry per user")
    if "sampled" not in cfg.protocols:
        negatives = None
    elif negatives is None:
        negatives = draw_negatives(sequences, user_ids, num_items, cfg)
    elif np.shape(negatives) != (len(user_ids), cfg.sampled_negatives):
        raise ValueError(f"negatives have shape {np.shape(negatives)}, expected (users, eval.sampled_negatives) = "
                         f"{(len(user_ids), cfg.sampled_negatives)}")
    metrics: dict[str, dict[str, dict[str, float]]] = {protocol: {} for protocol in cfg.protocols}
    frames = []
    for name in splits:
        histories, targets = split_inputs(split, name)
        ranks = _rank_all(score_fn, histories, targets, num_items, cfg.exclude_history, negatives,
                          cfg.batch_size, protocols=cfg.protocols, history_score=cfg.history_score)
        for protocol in cfg.protocols:
            candidates = cfg.sampled_negatives + 1 if protocol == "sampled" else None
            metrics[protocol][name] = metrics_from_ranks(ranks[protocol], candidates)
            frames.append(pl.DataFrame({
                "user_id": pl.Series(user_ids, dtype=pl.Int32),
                "split": pl.Series([name] * len(user_ids), dtype=pl.String),
                "protocol": pl.Series([protocol] * len(user_ids), dtype=pl.String),
                "rank": pl.Series(ranks[protocol], dtype=pl.Int32),
            }))
    frame = pl.concat(frames) if frames else pl.DataFrame(
        schema={"user_id": pl.Int32, "split": pl.String, "protocol": pl.String, "rank": pl.Int32})
    return metrics, frame


def split_inputs(split: Any, name: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Histories and targets of one split: the held-out valid item joins the test history."""
    if name == "valid":
        return list(split.train), np.asarray(split.valid_target)
    valid = np.asarray(split.valid_target)
    histories = [np.concatenate([train, valid[i : i + 1]]) for i, train in enumerate(split.train)]
    return histories, np.asarray(split.test_target)


def _rank_all(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    num_items: int | None,
    exclude_history: bool,
    negatives: np.ndarray | None,
    batch_size: int,
    protocols: Sequence[str] = ("full",),
    history_score: float | None = None,
) -> dict[str, np.ndarray]:
    """Ranks under each protocol, from one call of score_fn per batch (the costly part)."""
    if history_score is not None and not exclude_history:
        raise ValueError("history_score replaces the scores of the history items: it needs exclude_history")
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets) or (negatives is not None and len(negatives) != len(targets)):
        raise ValueError("histories, targets (and negatives) must have one entry per user")
    if len(targets) and (targets.min() < 1 or (num_items is not None and targets.max() > num_items)):
        raise ValueError(f"targets must be item ids in 1..{num_items or 'num_items'}")
    if "sampled" in protocols and negatives is None:
        raise ValueError("the sampled protocol needs negatives")
    if negatives is not None and (negatives == targets[:, None]).any():
        raise ValueError("a sampled negative equals its user's target")
    parts, nan_targets = _batch_ranks(score_fn, histories, targets, num_items, exclude_history, negatives,
                                      batch_size, protocols, history_score)
    if nan_targets and bool(torch.stack(nan_targets).any()):
        raise ValueError("score_fn returned NaN for a target item")
    return {protocol: _gathered(batches, len(targets)) for protocol, batches in parts.items()}


def _batch_ranks(score_fn, histories, targets, num_items, exclude_history, negatives, batch_size,
                 protocols, history_score=None) -> tuple[dict[str, list], list[torch.Tensor]]:
    """Per protocol, (user indices, ranks) per batch, and per batch whether a target scored NaN.
    Ranks are numpy, or tensors where the scores are; _rank_all reads both after the last
    batch, because on a GPU reading them per batch would make the host wait for each batch's
    scores instead of queueing the next one's (tested: this loop never synchronises)."""
    parts: dict[str, list] = {protocol: [] for protocol in protocols}
    nan_targets = []
    for index, scores in _scored_batches(score_fn, histories, batch_size):
        width = num_items + 1 if num_items is not None else scores.shape[-1] if scores.ndim else 0
        if tuple(scores.shape) != (len(index), width):
            expected = (len(index), width)
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {expected}")
        batch = _batch_indices(index, histories, targets, num_items, negatives, protocols, exclude_history,
                               scores.device, keep_target=history_score is not None)
        target_scores = scores.gather(1, batch["target"][:, None])  # (B, 1)
        nan_targets.append(torch.isnan(target_scores).any())
        if "full" in protocols and history_score is not None:
            parts["full"].append((index, _history_scored_ranks(scores, batch, history_score)))
        elif "full" in protocols:
            excluded = (batch["rows"], batch["items"]) if exclude_history else None
            parts["full"].append((index, _full_ranks(scores, target_scores, excluded)))
        if "sampled" in protocols:
            negative_scores = scores.gather(1, batch["candidates"])  # (B, n)
            parts["sampled"].append((index, 1 + _count_per_row(negative_scores >= target_scores)))
    return parts, nan_targets


def _gathered(batches: list[tuple[np.ndarray, np.ndarray | torch.Tensor]], size: int) -> np.ndarray:
    """(size,) int32 ranks from (user indices, ranks) per batch; device tensors travel in one copy."""
    ranks = np.zeros(size, dtype=np.int32)
    if not batches:
        return ranks
    index = np.concatenate([i for i, _ in batches])
    values = [r for _, r in batches]
    ranks[index] = (torch.cat(values).cpu().numpy() if torch.is_tensor(values[0]) else np.concatenate(values))
    return ranks


def _batch_indices(index: np.ndarray, histories, targets: np.ndarray, num_items: int | None,
                   negatives: np.ndarray | None, protocols: Sequence[str], exclude_history: bool,
                   device: torch.device, keep_target: bool = False) -> dict[str, torch.Tensor]:
    """One batch's int64 index tensors on the scores' device: targets (B,), the excluded history
    pairs (rows, items; with `keep_target`, a target in its history among them) and the sampled
    candidates (B, n). On a GPU they travel as one copy from pinned memory that does not make
    the host wait (runtime.to_device); a plain copy per tensor would wait each time for the GPU
    to finish the batches queued before it."""
    host = {"target": torch.from_numpy(targets[index])}
    if "full" in protocols and exclude_history:
        histories = [histories[i] for i in index]
        rows, items = (_distinct_pairs(histories, num_items) if keep_target
                       else _history_pairs(histories, targets[index], num_items))
        host |= {"rows": torch.from_numpy(rows), "items": torch.from_numpy(items)}
    if "sampled" in protocols:
        host["candidates"] = torch.from_numpy(negatives[index].astype(np.int64))
    return to_device(host, device)


def _full_ranks(
    scores: torch.Tensor, target_scores: torch.Tensor, excluded: tuple[torch.Tensor, torch.Tensor] | None
) -> np.ndarray | torch.Tensor:
    """1 + #(other ranked items scoring >= target), without writing into `scores` (numpy on a
    CPU, a tensor on the scores' device elsewhere). `excluded`: (rows, items) on that device.

    Counting over the whole row includes the target itself (the "1 +") and column 0; the
    padding column and the excluded history items are then subtracted. Subtracting rather than
    writing -inf leaves the caller's tensor untouched and needs no (B, num_items + 1) copy.
    """
    at_least = scores >= target_scores  # (B, num_items + 1)
    if scores.device.type != "cpu":
        return _full_counts_on_device(at_least, excluded)
    count = _count_per_row(at_least) - at_least[:, 0].numpy()
    if excluded is not None:
        rows, items = excluded
        count -= np.bincount(rows.numpy()[at_least[rows, items].numpy()], minlength=len(scores))
    return count


def _history_scored_ranks(scores: torch.Tensor, batch: dict[str, torch.Tensor], history_score: float):
    """Full-ranking ranks as the authors' full sort makes them: every history item's score (the
    target's too, where it is one) replaced by `history_score`, then all items ranked. A copy of
    the batch's scores: the caller's stay as they are (the sampled protocol reads them)."""
    scored = scores.clone()
    scored[batch["rows"], batch["items"]] = history_score
    return _full_ranks(scored, scored.gather(1, batch["target"][:, None]), None)


def _full_counts_on_device(at_least: torch.Tensor, excluded: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """_full_ranks' count where the scores are (a GPU): (B,) counts on the device, which
    _rank_all copies to the host once for all batches; the (B, num_items + 1) scores stay there."""
    count = at_least.sum(1) - at_least[:, 0].long()
    if excluded is not None:
        rows, items = excluded
        count.index_add_(0, rows, -at_least[rows, items].long())
    return count


def _count_per_row(mask: torch.Tensor) -> np.ndarray | torch.Tensor:
    """Number of True per row: numpy on a CPU (count_nonzero is ~4x faster than torch's bool
    sum), a tensor on the mask's device elsewhere (copied to the host after the last batch)."""
    if mask.device.type == "cpu":
        return np.count_nonzero(mask.numpy(), axis=1)
    return mask.sum(1)


def _scored_batches(
    score_fn: ScoreFn, histories: Sequence[np.ndarray], batch_size: int
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (user indices, scores) in batches of similar history length, so the model pads little."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        with torch.no_grad():
            scores = score_fn([histories[i] for i in index]).detach()
        yield index, scores


def _history_pairs(
    histories: Sequence[np.ndarray], targets: np.ndarray, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) int64 pairs of the distinct history items of each row, the row's target left out."""
    rows, items = _distinct_pairs(histories, num_items)
    keep = items != targets[rows]
    return rows[keep], items[keep]


def _distinct_pairs(sequences: Sequence[np.ndarray], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (row, item) pairs of a ragged list of item arrays, sorted, as int64 arrays."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    items = np.concatenate(sequences).astype(np.int64)
    if items.min() < 1 or items.max() > num_items:
        raise ValueError(f"histories and sequences must hold item ids in 1..{num_items}")
    keys = np.unique(pair_keys(np.repeat(np.arange(len(sequences)), lengths), items, num_items))
    return keys // (num_items + 1), keys % (num_items + 1)


def _repeats_within_row(draws: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry of the same row (the first occurrence is kept)."""
    order = np.argsort(draws, axis=1, kind="stable")  # stable: equal values keep draw order
    ordered = np.take_along_axis(draws, order, axis=1)
    repeat_sorted = np.zeros_like(draws, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeats = np.zeros_like(repeat_sorted)
    np.put_along_axis(repeats, order, repeat_sorted, axis=1)
    return repeats
