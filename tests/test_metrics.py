"""Metric values on hand-made rank arrays, computed by hand in each test."""
import math

import numpy as np
import pytest

from s3rec.metrics import METRICS_FULL, METRICS_SAMPLED, metrics_from_ranks, per_user_metric


def test_metric_names_match_the_contract():
    assert METRICS_FULL == ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")
    assert METRICS_SAMPLED == METRICS_FULL + ("AUC",)


def test_full_metrics_on_hand_made_ranks():
    """Ranks 1, 2, 11: two hits in the top 10, one in the top 1, all three in the top 20."""
    got = metrics_from_ranks(np.array([1, 2, 11]))
    expected = {
        "HR@1": 1 / 3,
        "HR@5": 2 / 3,
        "HR@10": 2 / 3,
        "HR@20": 1.0,
        "NDCG@5": (1 + 1 / math.log2(3)) / 3,
        "NDCG@10": (1 + 1 / math.log2(3)) / 3,
        "NDCG@20": (1 + 1 / math.log2(3) + 1 / math.log2(12)) / 3,
        "MRR": (1 + 1 / 2 + 1 / 11) / 3,
    }
    assert list(got) == list(METRICS_FULL)
    assert got == pytest.approx(expected, rel=1e-12)


def test_cutoff_is_inclusive():
    """A target at rank exactly K counts for HR@K and NDCG@K; at K + 1 it does not."""
    assert per_user_metric(np.array([5, 6]), "HR@5").tolist() == [1.0, 0.0]
    assert per_user_metric(np.array([5, 6]), "NDCG@5") == pytest.approx([1 / math.log2(6), 0.0])


def test_auc_is_the_fraction_of_negatives_below_the_target():
    """100 candidates (99 negatives): rank 1 beats all 99, rank 100 none, rank 51 beats 49."""
    got = metrics_from_ranks(np.array([1, 100, 51]), num_candidates=100)
    assert list(got) == list(METRICS_SAMPLED)
    assert got["AUC"] == pytest.approx((1 + 0 + 49 / 99) / 3, rel=1e-12)
    assert got["MRR"] == pytest.approx((1 + 1 / 100 + 1 / 51) / 3, rel=1e-12)


def test_per_user_values_average_to_the_metric():
    ranks = np.array([3, 1, 7, 40], dtype=np.int32)
    per_user = per_user_metric(ranks, "MRR")
    assert per_user.shape == (4,) and per_user.dtype == np.float64
    assert per_user.tolist() == pytest.approx([1 / 3, 1, 1 / 7, 1 / 40])
    assert per_user.mean() == pytest.approx(metrics_from_ranks(ranks)["MRR"])


@pytest.mark.parametrize(
    "ranks, name, num_candidates, message",
    [
        ([0, 1], "MRR", None, "1-based"),
        ([1, 2], "HR@3", None, "unknown metric"),
        ([1, 2], "AUC", None, "num_candidates"),
        ([1, 101], "AUC", 100, "exceeds"),
        ([], "MRR", None, "non-empty"),
        # one candidate (no negative): AUC's (n - rank) / (n - 1) would be 0 / 0, a silent NaN
        ([1, 1], "AUC", 1, "at least 2 candidates"),
    ],
)
def test_bad_input_is_an_error(ranks, name, num_candidates, message):
    with pytest.raises(ValueError, match=message):
        per_user_metric(np.array(ranks), name, num_candidates)
