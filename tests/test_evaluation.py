"""Leave-one-out evaluation: ranks on toy cases checked by hand, the sampler, and evaluate()."""
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import evaluation
from s3rec.config import EvalConfig
from s3rec.evaluation import evaluate, full_ranking_ranks, sample_negatives, sampled_ranks
from s3rec.metrics import METRICS_FULL, METRICS_SAMPLED, metrics_from_ranks


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def arrays(*lists):
    return [np.array(items, dtype=np.int32) for items in lists]


def table_score_fn(rows: dict[tuple, list[float]]):
    """A fake model: the score row of a user is looked up by its history."""
    return lambda histories: torch.tensor([rows[tuple(h.tolist())] for h in histories])


# Five items; column 0 is padding and scores highest on purpose: it must never be ranked.
ROW = [10.0, 0.5, 0.9, 0.1, 0.7, 0.3]


def test_full_ranking_excludes_history_but_never_the_target_nor_padding():
    """Scores 1:.5 2:.9 3:.1 4:.7 5:.3 (padding 10). Target 4 scores .7; only item 2 beats it."""
    histories = arrays([2], [4, 2], [1])
    score_fn = table_score_fn({(2,): ROW, (4, 2): ROW, (1,): ROW})
    targets = np.array([4, 4, 4])
    # User 0: item 2 is in the history, so nothing else beats the target.
    # User 1: the target 4 is itself in the history (repeat consumption) and stays ranked.
    # User 2: item 2 is not in the history and beats the target.
    ranks = full_ranking_ranks(score_fn, histories, targets, num_items=5)
    assert ranks.dtype == np.int32 and ranks.tolist() == [1, 1, 2]
    ranks = full_ranking_ranks(score_fn, histories, targets, num_items=5, exclude_history=False)
    assert ranks.tolist() == [2, 2, 2]


def test_history_score_ranks_the_history_at_that_score_as_the_authors_full_sort():
    """The authors' full sort sets the history's scores to 0 and ranks everything: a history item
    then outranks a target that scores below 0. Scores 1:-4 2:2 3:-3 4:.5 5:-2 (padding 10).
    User 0, history [1, 2], target 3 (-3): left out, 4 and 5 beat it (rank 3); ranked as they
    are, 2, 4, 5 (rank 4); at 0, 1, 2, 4 and 5 (rank 5). User 1, history [1, 3], target 3: the
    target in its history scores 0 too, tied with item 1 (counted), beaten by 2 and 4 (rank 4)."""
    row = [10.0, -4.0, 2.0, -3.0, 0.5, -2.0]
    histories = arrays([1, 2], [1, 3])
    score_fn = table_score_fn({(1, 2): row, (1, 3): row})
    targets = np.array([3, 3])
    rank = lambda **how: full_ranking_ranks(score_fn, histories, targets, num_items=5, **how).tolist()  # noqa: E731
    assert rank() == [3, 4]
    assert rank(exclude_history=False) == [4, 4]
    assert rank(history_score=0.0) == [5, 4]
    # below every score: user 0's history as good as left out; user 1's target, in its history,
    # sinks with it, tied with item 1 under the other three
    assert rank(history_score=-10.0) == [3, 5]
    with pytest.raises(ValueError, match="needs exclude_history"):
        rank(exclude_history=False, history_score=0.0)


@pytest.mark.parametrize("history_score", [None, 0.0])
def test_evaluate_with_a_history_score_matches_a_brute_force_loop(rng, history_score):
    """Random histories with repeats (targets among them), integer scores (many ties), small
    batches: the authors' sort by hand (history set to 0, then everything ranked), or ours."""
    num_items, num_users = 30, 57
    histories = [rng.integers(1, num_items + 1, size=rng.integers(0, 12)) for _ in range(num_users)]
    targets = rng.integers(1, num_items + 1, size=num_users)
    scores = torch.from_numpy(rng.integers(-3, 4, size=(num_users, num_items + 1)).astype(np.float32))
    by_history = {id(h): u for u, h in enumerate(histories)}
    score_fn = lambda hs: scores[[by_history[id(h)] for h in hs]]  # noqa: E731
    expected = []
    for u in range(num_users):
        row, history = scores[u].clone(), set(histories[u].tolist())
        if history_score is None:
            candidates = set(range(1, num_items + 1)) - history - {targets[u]}
        else:
            row[list(history)] = history_score
            candidates = set(range(1, num_items + 1)) - {targets[u]}
        expected.append(1 + sum(bool(row[j] >= row[targets[u]]) for j in candidates))
    ranks = full_ranking_ranks(score_fn, histories, targets, num_items, batch_size=8, history_score=history_score)
    assert ranks.tolist() == expected
    assert any(t in h for t, h in zip(targets, histories))  # the target-in-history case is covered


def test_full_ranking_ties_are_pessimistic():
    """Target 1 scores .5 like items 2, 3 and 5: rank 1 + 3. An excluded tie does not count."""
    row = [0.5, 0.5, 0.5, 0.5, 0.2, 0.5]
    histories = arrays([], [3])
    score_fn = table_score_fn({(): row, (3,): row})
    ranks = full_ranking_ranks(score_fn, histories, np.array([1, 1]), num_items=5)
    assert ranks.tolist() == [4, 3]


def test_full_ranking_leaves_the_scores_untouched():
    scores = torch.tensor([ROW])
    before = scores.clone()
    full_ranking_ranks(lambda histories: scores, arrays([2]), np.array([4]), num_items=5)
    assert torch.equal(scores, before)


@pytest.mark.parametrize("counting", ["cpu", "device"])
def test_full_ranking_matches_a_brute_force_loop(rng, monkeypatch, counting):
    """Random histories with repeats, integer scores (many ties), small batches; both ways of
    counting (numpy on CPU, torch where the scores are: a GPU's path, run here on CPU tensors)."""
    if counting == "device":
        monkeypatch.setattr(evaluation, "_full_ranks",
                            lambda scores, target, excluded: evaluation._full_counts_on_device(scores >= target, excluded))
    num_items, num_users = 30, 57
    histories = [rng.integers(1, num_items + 1, size=rng.integers(0, 12)) for _ in range(num_users)]
    targets = rng.integers(1, num_items + 1, size=num_users)
    scores = torch.from_numpy(rng.integers(0, 6, size=(num_users, num_items + 1)).astype(np.float32))
    by_history = {id(h): u for u, h in enumerate(histories)}
    score_fn = lambda hs: scores[[by_history[id(h)] for h in hs]]  # noqa: E731

    expected = []
    for u in range(num_users):
        candidates = set(range(1, num_items + 1)) - set(histories[u].tolist()) - {targets[u]}
        target_score = scores[u, targets[u]]
        expected.append(1 + sum(bool(scores[u, j] >= target_score) for j in candidates))
    ranks = full_ranking_ranks(score_fn, histories, targets, num_items, batch_size=8)
    assert ranks.tolist() == expected


def test_batches_follow_history_length_and_ranks_return_in_user_order():
    """The fake model puts item len(history) first and every other item at 0."""
    num_items = 6

    def score_fn(histories):
        calls.append([len(h) for h in histories])
        scores = torch.zeros(len(histories), num_items + 1)
        scores[torch.arange(len(histories)), [len(h) for h in histories]] = 1.0
        return scores

    calls: list[list[int]] = []
    histories = arrays([7, 7, 7, 7, 7], [7], [7, 7, 7], [7, 7], [7, 7, 7, 7])
    histories = [h * 0 + 6 for h in histories]  # item 6 in every history: never the target here
    targets = np.array([5, 1, 2, 2, 1])  # hits for users 0, 1 and 3; the rest tie with 4 others
    ranks = full_ranking_ranks(score_fn, histories, targets, num_items, batch_size=2)
    assert calls == [[1, 2], [3, 4], [5]]
    assert ranks.tolist() == [1, 1, 5, 1, 5]


def test_score_fn_of_the_wrong_width_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        full_ranking_ranks(lambda hs: torch.zeros(len(hs), 5), arrays([1]), np.array([2]), num_items=5)


def test_a_nan_target_score_is_an_error_not_a_perfect_rank():
    """Nothing compares >= NaN, so a target scored NaN (a diverged model) would rank 1, HR@1 = 1,
    under both protocols: it must stop the evaluation instead."""
    row = [0.0, 0.5, float("nan"), 0.1, 0.7, 0.3]  # target 2 scores NaN
    score_fn = table_score_fn({(1,): row})
    with pytest.raises(ValueError, match="NaN for a target item"):
        full_ranking_ranks(score_fn, arrays([1]), np.array([2]), num_items=5)
    with pytest.raises(ValueError, match="NaN for a target item"):
        sampled_ranks(score_fn, arrays([1]), np.array([2]), np.array([[3, 4]]))


@pytest.mark.parametrize("target", [0, 6])
def test_a_target_outside_the_items_is_an_error(target):
    """Item ids are 1..num_items: target 0 is the padding column (never ranked), 6 is past 5 items."""
    with pytest.raises(ValueError, match=r"targets must be item ids in 1\.\.5"):
        full_ranking_ranks(table_score_fn({(1,): ROW}), arrays([1]), np.array([target]), num_items=5)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_an_error(batch_size):
    """A negative batch size made no batch at all: every rank left at 0, read as a result."""
    with pytest.raises(ValueError, match="batch_size must be positive"):
        full_ranking_ranks(table_score_fn({(1,): ROW}), arrays([1]), np.array([2]), num_items=5,
                           batch_size=batch_size)


def test_sampled_negatives_avoid_the_sequence_and_are_distinct(rng):
    num_items = 40
    sizes = rng.integers(1, 25, size=200)
    sequences = [rng.integers(1, num_items + 1, size=size).astype(np.int32) for size in sizes]
    negatives = sample_negatives(sequences, num_items, n=10, seed=7)
    assert negatives.shape == (200, 10) and negatives.dtype == np.int32
    for sequence, row in zip(sequences, negatives):
        assert len(set(row.tolist())) == 10
        assert not set(row.tolist()) & set(sequence.tolist())
        assert row.min() >= 1 and row.max() <= num_items


def test_sampled_negatives_are_deterministic_per_seed(rng):
    sequences = [rng.integers(1, 101, size=5) for _ in range(50)]
    first = sample_negatives(sequences, 100, n=20, seed=3)
    assert np.array_equal(first, sample_negatives(sequences, 100, n=20, seed=3))
    assert not np.array_equal(first, sample_negatives(sequences, 100, n=20, seed=4))


def test_sampled_negatives_are_the_first_new_distinct_draws_of_each_seeded_row():
    """The docstring's draw, made by hand: per user a row of 2n + 32 integers in 1..num_items
    from default_rng(seed), of which the first n that are outside the user's sequence and not
    earlier in the row, in row order. Pinned so that one negatives_seed gives the same negatives
    in every version: runs are compared user by user on them."""
    num_items, n, seed = 30, 5, 11
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, num_items + 1, size=rng.integers(0, 20)) for _ in range(40)]
    draws = np.random.default_rng(seed).integers(1, num_items + 1, size=(40, 2 * n + 32), dtype=np.int64)
    expected = []
    for sequence, row in zip(sequences, draws):
        kept = []
        for item in row.tolist():
            if item not in sequence.tolist() and item not in kept:
                kept.append(item)
        assert len(kept) >= n  # every row is served by its draws here, none by the fallback
        expected.append(kept[:n])
    assert sample_negatives(sequences, num_items, n, seed).tolist() == expected


def test_an_item_past_num_items_in_a_sequence_or_history_is_an_error():
    """Keys are row * (num_items + 1) + item: item 6 of 5 items would read as item 0 of the next
    user, so a history or sequence outside 1..num_items is refused, not ranked wrongly."""
    with pytest.raises(ValueError, match=r"item ids in 1\.\.5"):
        sample_negatives(arrays([1, 6], [2]), num_items=5, n=2, seed=0)
    with pytest.raises(ValueError, match=r"item ids in 1\.\.5"):
        full_ranking_ranks(table_score_fn({(1, 6): ROW}), arrays([1, 6]), np.array([2]), num_items=5)


def test_sampled_negatives_are_uniform_over_allowed_items():
    """3,000 users who all have items 1 and 2: each of items 3..20 is drawn 3000*5/18 times on average."""
    sequences = arrays(*[[1, 2]] * 3000)
    counts = np.bincount(sample_negatives(sequences, 20, n=5, seed=0).ravel(), minlength=21)
    assert counts[:3].tolist() == [0, 0, 0]
    assert counts[3:] == pytest.approx(np.full(18, 3000 * 5 / 18), rel=0.1)


def test_sampled_negatives_fall_back_when_few_items_are_left():
    """Users who own 10 of 14 items keep exactly the 4 others (the oversampled rows fall short)."""
    sequences = arrays(list(range(1, 11)), list(range(5, 15)))
    negatives = sample_negatives(sequences, 14, n=4, seed=0)
    assert sorted(negatives[0].tolist()) == [11, 12, 13, 14]
    assert sorted(negatives[1].tolist()) == [1, 2, 3, 4]


def test_too_few_non_interacted_items_is_an_error():
    with pytest.raises(ValueError, match="user index 1"):
        sample_negatives(arrays([1], [1, 2, 3]), num_items=5, n=3, seed=0)


def test_sampled_ranks_and_auc_on_a_toy_case():
    """Target 4 (.7) against negatives 1 (.5), 2 (.9), 3 (.1): rank 2, AUC 2/3.
    Target 5 (.3) against 2 (.9), 3 (.1), 1 (.5) with 1 tied at .3 here: rank 3, AUC 1/3."""
    rows = {(1,): ROW, (2,): [0.0, 0.3, 0.9, 0.1, 0.7, 0.3]}
    negatives = np.array([[1, 2, 3], [2, 3, 1]])
    ranks = sampled_ranks(table_score_fn(rows), arrays([1], [2]), np.array([4, 5]), negatives)
    assert ranks.tolist() == [2, 3]
    assert metrics_from_ranks(ranks, num_candidates=4)["AUC"] == pytest.approx((2 / 3 + 1 / 3) / 2)


@dataclass(frozen=True)
class ToySplit:
    train: list
    valid_target: np.ndarray
    test_target: np.ndarray


@pytest.fixture
def toy():
    sequences = arrays([1, 2, 3, 4], [5, 6, 7], [2, 8, 9, 10, 1], [3, 4, 5])
    split = ToySplit([s[:-2] for s in sequences], np.array([s[-2] for s in sequences]),
                     np.array([s[-1] for s in sequences]))
    return sequences, split, np.array([10, 11, 12, 13], dtype=np.int32)


def test_evaluate_returns_every_protocol_split_and_metric(toy, rng):
    sequences, split, user_ids = toy
    histories_seen: list[list[int]] = []

    def score_fn(histories):
        histories_seen.extend(h.tolist() for h in histories)
        return torch.from_numpy(rng.random((len(histories), 13)).astype(np.float32))

    cfg = EvalConfig(sampled_negatives=3, batch_size=2)
    metrics, frame = evaluate(score_fn, split, sequences, user_ids, 12, cfg)
    assert set(metrics) == {"full", "sampled"}
    for protocol, names in (("full", METRICS_FULL), ("sampled", METRICS_SAMPLED)):
        assert set(metrics[protocol]) == {"valid", "test"}
        assert all(list(metrics[protocol][s]) == list(names) for s in ("valid", "test"))
    assert frame.schema == pl.Schema({"user_id": pl.Int32, "split": pl.String,
                                      "protocol": pl.String, "rank": pl.Int32})
    assert frame.height == 4 * 2 * 2
    first = frame.filter(split="valid", protocol="full")
    assert first["user_id"].to_list() == [10, 11, 12, 13]
    assert frame.filter(protocol="sampled")["rank"].is_between(1, 4).all()
    # One model call per user and split serves both protocols; test = train + valid target.
    assert len(histories_seen) == 8
    assert [1, 2, 3] in histories_seen and [5, 6] in histories_seen


def test_evaluate_metrics_agree_with_the_ranks_frame(toy):
    """A model scoring item j as j: the full valid rank of user 0 (target 3, history 1, 2) is 10."""
    sequences, split, user_ids = toy
    score_fn = lambda hs: torch.arange(13, dtype=torch.float32).repeat(len(hs), 1)  # noqa: E731
    metrics, frame = evaluate(score_fn, split, sequences, user_ids, 12, EvalConfig(protocols=("full",)))
    assert set(metrics) == {"full"} and set(frame["protocol"]) == {"full"}
    valid = frame.filter(split="valid")["rank"].to_numpy()
    assert valid[0] == 10
    assert metrics["full"]["valid"]["MRR"] == pytest.approx(np.mean(1 / valid))


def test_evaluate_draws_negatives_once_with_the_configured_seed(toy, monkeypatch):
    sequences, split, user_ids = toy
    seeds = []
    real = evaluation.sample_negatives

    def spy(sequences, num_items, n, seed, **kwargs):
        seeds.append(seed)
        return real(sequences, num_items, n, seed, **kwargs)

    monkeypatch.setattr(evaluation, "sample_negatives", spy)
    score_fn = lambda hs: torch.zeros(len(hs), 13)  # noqa: E731
    cfg = EvalConfig(sampled_negatives=3, negatives_seed=99)
    metrics, _ = evaluate(score_fn, split, sequences, user_ids, 12, cfg)
    assert seeds == [99]
    # All scores tie: the target ranks last among 1 + 3 candidates in both splits.
    assert metrics["sampled"]["valid"]["HR@1"] == 0 and metrics["sampled"]["test"]["AUC"] == 0


def test_a_history_score_ranks_a_copy_of_a_shared_score_row():
    """popularity's score_fn hands every user one row, expanded (a view, not a copy): the history
    score must go into a copy, or it fails on the view or leaks one user's history into the next
    (and a model's own score matrix must stay as it was, for the sampled protocol).
    Row 1:-4 2:2 3:-3 4:.5 5:-2 (padding 10), history score 0. User 0, history [1, 2], target 3
    (-3): 1, 2 (now 0), 4 and 5 beat it, rank 5. User 1, history [4], target 5 (-2): 2 and 4 (now
    0) beat it, 1 (-4) and 3 (-3) do not, rank 3."""
    row = torch.tensor([[10.0, -4.0, 2.0, -3.0, 0.5, -2.0]])
    rows = row.repeat(2, 1)  # a model that keeps its (B, num_items + 1) scores: the same, contiguous
    for score_fn in (lambda hs: row.expand(len(hs), -1), lambda hs: rows):
        ranks = full_ranking_ranks(score_fn, arrays([1, 2], [4]), np.array([3, 5]), num_items=5, history_score=0.0)
        assert ranks.tolist() == [5, 3]
    assert torch.equal(row, torch.tensor([[10.0, -4.0, 2.0, -3.0, 0.5, -2.0]])) and torch.equal(rows, row.repeat(2, 1))
