"""Bilinear heads: exact parameter counts, low-rank = dense when r = d, rank bound, gradcheck."""
from __future__ import annotations

import pytest
import torch

from s3rec.heads import DenseHead, LowRankHead, make_head, parameter_count

D = 8


def test_parameter_counts_are_exact():
    assert parameter_count(DenseHead(64)) == 64 * 64 + 64  # d^2 + bias
    assert parameter_count(LowRankHead(64, 16)) == 2 * 64 * 16 + 64  # 2dr + bias (kept)
    assert isinstance(make_head(64, None), DenseHead)
    assert isinstance(make_head(64, 8), LowRankHead)


def test_dense_head_is_the_authors_linear_then_dot(seed):
    head = DenseHead(D)
    linear = torch.nn.Linear(D, D)
    linear.weight.data.copy_(head.weight)
    linear.bias.data.normal_()
    head.bias.data.copy_(linear.bias)
    x, y = torch.randn(5, D), torch.randn(5, D)
    torch.testing.assert_close(head.score_pairs(x, y), (linear(x) * y).sum(-1))
    targets = torch.randn(7, D)
    torch.testing.assert_close(head.score_all(x, targets), linear(x) @ targets.T)


def test_low_rank_with_full_rank_represents_the_dense_head(seed):
    dense = DenseHead(D)
    dense.weight.data.normal_()
    dense.bias.data.normal_()
    low = LowRankHead(D, rank=D)
    low.U.data.copy_(dense.weight)  # W = U V^T with U = W, V = I
    low.V.data.copy_(torch.eye(D))
    low.bias.data.copy_(dense.bias)
    x, targets = torch.randn(6, D), torch.randn(4, D)
    torch.testing.assert_close(low.score_all(x, targets), dense.score_all(x, targets))
    torch.testing.assert_close(low.score_pairs(x, targets[:1].expand(6, D)), dense.score_pairs(x, targets[:1].expand(6, D)))


def test_low_rank_pairs_and_all_agree_and_rank_is_bounded(seed):
    head = LowRankHead(D, rank=3)
    head.bias.data.normal_()
    x, targets = torch.randn(5, D), torch.randn(4, D)
    all_scores = head.score_all(x, targets)
    for j in range(4):
        torch.testing.assert_close(all_scores[:, j], head.score_pairs(x, targets[j].expand(5, D)))
    assert torch.linalg.matrix_rank(head.effective_weight()) <= 3


def test_low_rank_init_matches_dense_scale(seed):
    w = LowRankHead(64, 16).effective_weight()
    assert 0.015 < w.std().item() < 0.025


@pytest.mark.parametrize("rank", [None, 16])
@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_make_head_follows_the_configured_init_std_and_starts_with_zero_bias(seed, rank, init_std):
    """model.init_std reaches the heads through make_head: W (dense, or U V^T, whose entries are
    sums of r products of factors of variance init_std / sqrt(r), so of variance init_std^2)
    has std init_std, within 20 % over 64 * 64 entries; the bias starts at 0 (the authors' init),
    so that dense and low-rank heads differ only in W at the start."""
    head = make_head(64, rank, init_std)
    assert 0.8 * init_std < head.effective_weight().std().item() < 1.2 * init_std
    assert torch.equal(head.bias, torch.zeros(64))


class AllScores(torch.nn.Module):
    """Exposes a head's score_all as forward, so functional_call can vary its parameters."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x, targets):
        return self.head.score_all(x, targets)


@pytest.mark.parametrize("make", [lambda: DenseHead(D), lambda: LowRankHead(D, 3)], ids=["dense", "low_rank"])
def test_gradcheck_float64(seed, make):
    head = make().double()
    for p in head.parameters():
        p.data.normal_()
    x = torch.randn(3, D, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(4, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head.score_all, (x, targets))
    assert torch.autograd.gradcheck(lambda x, t: head.score_pairs(x, t[:3]), (x, targets))

    wrapper = AllScores(head)
    names = [name for name, _ in wrapper.named_parameters()]
    weights = tuple(p.detach().clone().requires_grad_(True) for p in wrapper.parameters())
    inputs = (x.detach(), targets.detach())
    assert torch.autograd.gradcheck(
        lambda *w: torch.func.functional_call(wrapper, dict(zip(names, w)), inputs), weights
    )
