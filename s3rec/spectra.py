"""Singular values of the attribute heads' bilinear weights, and how much of a dense head's
energy a rank-r factorisation can keep (the report's head-spectra figure, benchmarks/head_energy.py)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def head_spectrum(state_dict: dict, head: str) -> np.ndarray | None:
    """Singular values (descending) of a head's bilinear weight: W, or U Vᵀ for a low-rank head.

    Keys end in `heads.<head>.weight` (dense) or `heads.<head>.U` / `.V` (low rank); a low-rank
    spectrum is cut at r, as the remaining values are zero. None when the head is absent.
    """
    def find(suffix):
        return next((v for k, v in state_dict.items() if k.endswith(f"heads.{head}.{suffix}")), None)

    weight, u, v = find("weight"), find("U"), find("V")
    if u is not None and v is not None:
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        return np.linalg.svd(u @ v.T, compute_uv=False)[: u.shape[1]]
    if weight is not None:
        return np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False)
    return None


def rank_energy(spectrum: Sequence[float], ranks: Iterable[int]) -> dict[int, float]:
    """Share of ‖W‖²_F that the best rank-r approximation of W keeps, per r: Σ_{i≤r} σᵢ² / Σ σᵢ².

    By Eckart–Young this is the most a rank-r factorisation U Vᵀ can keep of a dense head's
    learned W, and 1 − it is the squared relative Frobenius error of that best approximation.
    `spectrum` holds W's singular values (any order); r at or past their number gives 1.
    """
    squares = np.sort(np.asarray(spectrum, dtype=np.float64) ** 2)[::-1]
    total = squares.sum()
    if total <= 0:
        raise ValueError("rank_energy: the spectrum is all zero; W has no energy to share")
    kept = np.cumsum(squares) / total
    ranks = [int(r) for r in ranks]
    if any(r < 1 for r in ranks):
        raise ValueError(f"rank_energy: ranks must be >= 1, got {ranks}")
    return {r: float(kept[min(r, len(kept)) - 1]) for r in ranks}
