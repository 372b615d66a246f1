"""Bilinear scoring heads of the S3Rec pretraining tasks (AAP, MIP, MAP, SP).

The authors score a state x against a target embedding y as y . (W x + b), with W, b an
`nn.Linear(d, d)`. `DenseHead` is exactly that (d^2 + d parameters). `LowRankHead`
factorises W = U V^T with U, V in R^{d x r} and computes (x V) . (y U) + b . y without ever
forming W: 2dr + d parameters. It keeps the bias b so that the comparison with the dense head
isolates the rank of W.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class DenseHead(nn.Module):
    def __init__(self, hidden_size: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(hidden_size, hidden_size) * init_std)  # (d_out, d_in)
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias  # (..., d)

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (..., d) -> (...): one score per pair."""
        return (self.transform(x) * y).sum(-1)

    def score_all(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """x: (N, d), targets: (A, d) -> (N, A): every state against every target."""
        return self.transform(x) @ targets.T

    def effective_weight(self) -> torch.Tensor:
        return self.weight


class LowRankHead(nn.Module):
    def __init__(self, hidden_size: int, rank: int, init_std: float = 0.02):
        super().__init__()
        # Entries of U V^T are sums of r products: factors of std sqrt(init_std / sqrt(r))
        # give the product the dense head's init std.
        factor_std = math.sqrt(init_std / math.sqrt(rank))
        self.U = nn.Parameter(torch.randn(hidden_size, rank) * factor_std)  # acts on the target y
        self.V = nn.Parameter(torch.randn(hidden_size, rank) * factor_std)  # acts on the state x
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x @ self.V) * (y @ self.U)).sum(-1) + y @ self.bias

    def score_all(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (x @ self.V) @ (targets @ self.U).T + targets @ self.bias  # (N, r) @ (r, A) + (A,)

    def effective_weight(self) -> torch.Tensor:
        """W = U V^T in the dense head's (d_out, d_in) layout; for analysis only."""
        return self.U @ self.V.T


def make_head(hidden_size: int, rank: int | None, init_std: float = 0.02) -> nn.Module:
    return DenseHead(hidden_size, init_std) if rank is None else LowRankHead(hidden_size, rank, init_std)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
