"""Ranking metrics of next-item recommendation, computed from the rank of each held-out item.

Ranks are 1-based (1 = the target scored highest) and come from `s3rec.evaluation`, which
breaks ties pessimistically. Each metric is a mean over users of a per-user value; the
per-user values are exposed too (`per_user_metric`) so that runs can be compared user by
user (paired bootstrap).
"""
from __future__ import annotations

import numpy as np

METRICS_FULL = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")
# AUC needs the number of candidates, known only in the sampled protocol (target + negatives).
METRICS_SAMPLED = METRICS_FULL + ("AUC",)


def per_user_metric(ranks: np.ndarray, name: str, num_candidates: int | None = None) -> np.ndarray:
    """Per-user value (float64, the shape of `ranks`) of metric `name` for 1-based `ranks`.

    HR@K = [rank <= K]; NDCG@K = 1/log2(rank + 1) if rank <= K else 0 (one relevant item, so
    the ideal DCG is 1); MRR = 1/rank; AUC = (num_candidates - rank) / (num_candidates - 1),
    the fraction of the negatives scored below the target (needs `num_candidates`).
    """
    ranks = _check_ranks(ranks, num_candidates)
    kind, cutoff = _parse(name)
    if kind == "HR":
        return (ranks <= cutoff).astype(np.float64)
    if kind == "NDCG":
        return np.where(ranks <= cutoff, 1.0 / np.log2(ranks + 1.0), 0.0)
    if kind == "MRR":
        return 1.0 / ranks
    if num_candidates is None:
        raise ValueError("AUC needs num_candidates (the sampled protocol's target + negatives)")
    if num_candidates < 2:
        raise ValueError(f"AUC needs at least 2 candidates, got num_candidates={num_candidates}")
    return (num_candidates - ranks) / (num_candidates - 1.0)


def metrics_from_ranks(ranks: np.ndarray, num_candidates: int | None = None) -> dict[str, float]:
    """All metrics as means over users: METRICS_FULL, plus AUC when `num_candidates` is given."""
    names = METRICS_FULL if num_candidates is None else METRICS_SAMPLED
    return {name: float(per_user_metric(ranks, name, num_candidates).mean()) for name in names}


def _parse(name: str) -> tuple[str, int | None]:
    """'NDCG@10' -> ('NDCG', 10); 'MRR' -> ('MRR', None); anything unknown is an error."""
    if name not in METRICS_SAMPLED:
        raise ValueError(f"unknown metric {name!r}; expected one of {METRICS_SAMPLED}")
    kind, _, cutoff = name.partition("@")
    return kind, int(cutoff) if cutoff else None


def _check_ranks(ranks: np.ndarray, num_candidates: int | None) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError(f"ranks: expected a non-empty array, got shape {ranks.shape}")
    if ranks.min() < 1:
        raise ValueError(f"ranks are 1-based; got a rank of {ranks.min():g}")
    if num_candidates is not None and ranks.max() > num_candidates:
        raise ValueError(f"rank {ranks.max():g} exceeds num_candidates={num_candidates}")
    return ranks
