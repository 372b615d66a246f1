"""The synthetic data set: deterministic per seed, valid, and with the planted structure."""
from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from s3rec.config import SEED_MAX
from s3rec.data import MAX_ID, DataError, leave_one_out, load_dataset
from s3rec.synthetic import MAX_ITEMS, MIN_SEQUENCE, SyntheticSpec, _zipf_weights, generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import prepare_data  # noqa: E402

FILES = ("sequences.parquet", "item_attributes.parquet", "stats.json")


def prepare(out: Path, seed: int, users: int = 300, items: int = 120, attributes: int = 20) -> Path:
    prepare_data.main(["--format", "synthetic", "--users", str(users), "--items", str(items),
                       "--attributes", str(attributes), "--seed", str(seed), "--out", str(out)])
    return out


def test_same_seed_same_bytes(tmp_path):
    first, second = prepare(tmp_path / "a", seed=3), prepare(tmp_path / "b", seed=3)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seed_different_data(tmp_path):
    first, second = load_dataset(prepare(tmp_path / "a", seed=3)), load_dataset(prepare(tmp_path / "b", seed=4))
    assert [s.tolist() for s in first.sequences] != [s.tolist() for s in second.sequences]
    assert [a.tolist() for a in first.item_attributes] != [a.tolist() for a in second.item_attributes]


def test_valid_data_set(tmp_path):
    data = load_dataset(prepare(tmp_path / "out", seed=0))
    assert data.user_ids.tolist() == list(range(1, 301))
    assert (data.num_items, data.num_attributes) == (120, 20)
    lengths = [len(s) for s in data.sequences]
    assert min(lengths) >= 5 and max(lengths) <= 30
    assert all(len(set(s.tolist())) == len(s) for s in data.sequences)  # no repeated item
    assert len(data.item_attributes) == 121
    assert all(1 <= len(a) and np.all(np.diff(a) > 0) for a in data.item_attributes[1:])
    assert all(1 <= a.min() and a.max() <= 20 for a in data.item_attributes[1:])


@pytest.fixture(scope="module")
def default_data():
    """The default size (2000 users, 500 items, 60 attributes) takes well under a second."""
    prepared = generate(SyntheticSpec(seed=0))
    return prepared, leave_one_out(prepared.sequences)


def hit_rate_at_10(scores: np.ndarray, target: int, history: np.ndarray) -> bool:
    scores = scores.astype(float).copy()
    scores[0] = -np.inf
    scores[history] = -np.inf
    return (scores >= scores[target]).sum() - 1 < 10


def test_order_beats_popularity(default_data):
    """Successor counts from the training parts beat popularity clearly on the test targets."""
    prepared, split = default_data
    popularity = np.zeros(prepared.num_items + 1)
    successors: dict[int, Counter] = defaultdict(Counter)
    for seq in split.train:
        np.add.at(popularity, seq, 1)
        for a, b in zip(seq[:-1], seq[1:]):
            successors[a][b] += 1
    hits_pop = hits_seq = 0
    for train, last, target in zip(split.train, split.valid_target, split.test_target):
        history = np.append(train, last)
        sequential = popularity * 1e-6  # popularity only breaks ties
        for item, count in successors[last].items():
            sequential[item] += count
        hits_pop += hit_rate_at_10(popularity, target, history)
        hits_seq += hit_rate_at_10(sequential, target, history)
    users = len(split.train)
    assert hits_pop / users > 0.1  # popularity is informative ...
    assert hits_seq / users > 2 * hits_pop / users  # ... but order much more so


def test_attributes_are_informative(default_data):
    """Consecutive items share far more attributes than random pairs of items."""
    prepared, _ = default_data
    sets = [set(a.tolist()) for a in prepared.item_attributes]

    def jaccard(a: int, b: int) -> float:
        return len(sets[a] & sets[b]) / len(sets[a] | sets[b])

    consecutive = np.mean([jaccard(a, b) for s in prepared.sequences for a, b in zip(s[:-1], s[1:])])
    rng = np.random.default_rng(0)
    pairs = rng.integers(1, prepared.num_items + 1, size=(5000, 2))
    random_pairs = np.mean([jaccard(a, b) for a, b in pairs])
    assert consecutive > 3 * random_pairs


@pytest.mark.parametrize("spec", [SyntheticSpec(items=4), SyntheticSpec(users=0), SyntheticSpec(attributes=0),
                                  SyntheticSpec(p_successor=0.8, p_chain=0.5), SyntheticSpec(seed=-1),
                                  SyntheticSpec(seed=2**32), SyntheticSpec(p_successor=-0.1, p_chain=0.5),
                                  SyntheticSpec(items=MAX_ITEMS + 1)])
def test_bad_spec(spec):
    with pytest.raises(DataError, match="synthetic: expected"):
        generate(spec)


@pytest.mark.parametrize("field", ["users", "attributes"])
def test_a_count_past_int32_is_refused_by_name(field):
    """Before, attributes=6442450943 wrote int32 ids that wrapped around (2066418207 attributes read
    back), and 10**19 ended in an OverflowError traceback."""
    for value in (2**31, 6442450943, 10**19):
        with pytest.raises(DataError, match=rf"synthetic: expected 1 <= {field} <= 2147483647, got {value}$"):
            SyntheticSpec(**{field: value}).check()


@pytest.mark.parametrize("spec", [SyntheticSpec(users=MAX_ID), SyntheticSpec(attributes=MAX_ID),
                                  SyntheticSpec(seed=SEED_MAX), SyntheticSpec(items=MAX_ITEMS),
                                  SyntheticSpec(p_successor=0.5, p_chain=0.5),
                                  SyntheticSpec(p_successor=1.0, p_chain=0.0)])
def test_the_largest_allowed_values_pass_the_check(spec):
    spec.check()


def test_sequences_start_from_popular_items_and_some_have_the_minimum_length(default_data):
    """The walk's first item is drawn by popularity (Zipf: the top item has ~15% of the mass at 500
    items, 0.2% drawn uniformly); lengths are 5 + a geometric draw from 0."""
    prepared, _ = default_data
    first = Counter(int(s[0]) for s in prepared.sequences)
    assert first.most_common(1)[0][1] > 0.1 * len(prepared.sequences)
    assert min(len(s) for s in prepared.sequences) == MIN_SEQUENCE


def test_zipf_weights_follow_the_exponent():
    weights = np.sort(_zipf_weights(np.random.default_rng(0), 4, 2.0))[::-1]
    expected = np.array([1, 1 / 4, 1 / 9, 1 / 16])
    np.testing.assert_allclose(weights, expected / expected.sum())


def test_clusters_are_the_rounded_square_root_of_the_items_and_recorded():
    assert generate(SyntheticSpec(users=5, items=120, attributes=5)).parameters["clusters"] == 11  # sqrt 10.95


@pytest.mark.parametrize("keep, count", [(0.0, 1), (1.0, 3)])
def test_an_item_has_its_clusters_attributes_kept_or_one_of_them(keep, count):
    """Keep 0: one attribute of its cluster drawn for every item (none would leave it without);
    keep 1: all three."""
    prepared = generate(SyntheticSpec(users=5, items=30, attributes=12, attribute_keep=keep, noise_attribute=0.0))
    assert all(len(a) == count for a in prepared.item_attributes[1:])


def test_a_noise_attribute_may_be_the_largest_id():
    """Drawn from 1..A: with A = 1 every item's noise attribute is 1 (a draw from 1..A-1 fails)."""
    prepared = generate(SyntheticSpec(users=5, items=5, attributes=1, noise_attribute=1.0))
    assert all(a.tolist() == [1] for a in prepared.item_attributes[1:])


def test_more_successors_than_items_are_capped():
    prepared = generate(SyntheticSpec(users=5, items=5, attributes=2, successors=10))
    assert all(sorted(s.tolist()) == [1, 2, 3, 4, 5] for s in prepared.sequences)


def test_tiny_spec_works():
    prepared = generate(SyntheticSpec(users=5, items=5, attributes=1, seed=1))
    assert all(len(s) == 5 for s in prepared.sequences)
    assert all(a.tolist() == [1] for a in prepared.item_attributes[1:])
