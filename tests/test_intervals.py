"""Intervals of a paired difference (s3rec/intervals.py): quantiles against tables, intervals
and variance components against hand-computed cases and planted spreads."""
import math

import numpy as np
import pytest

from s3rec import intervals


def test_t_quantile_matches_tabulated_values():
    for confidence, df, tabulated in [(0.95, 1, 12.7062047), (0.95, 2, 4.3026527), (0.95, 4, 2.7764451),
                                      (0.95, 30, 2.0422725), (0.99, 2, 9.9248432), (0.90, 5, 2.0150484)]:
        assert intervals.t_quantile(confidence, df) == pytest.approx(tabulated, abs=1e-6)
    with pytest.raises(ValueError, match="df >= 1"):
        intervals.t_quantile(0.95, 0)
    for confidence in (0.0, 1.0):  # no two-sided interval: at 1 it would be infinite
        with pytest.raises(ValueError, match="0 < confidence < 1"):
            intervals.t_quantile(confidence, 2)


def test_seeds_t_interval_by_hand():
    # seed means 1, 2, 6: mean 3, sample sd sqrt(7), half-width t(0.95, 2) * sqrt(7 / 3)
    difference = np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 7.0]])
    low, high = intervals.seeds_t_interval(difference)
    half = 4.3026527 * math.sqrt(7 / 3)
    assert (low, high) == (pytest.approx(3 - half, abs=1e-5), pytest.approx(3 + half, abs=1e-5))
    assert all(math.isnan(v) for v in intervals.seeds_t_interval(np.ones((1, 5))))


def test_seeds_interval_widens_what_the_bootstrap_keeps_narrow_on_three_seeds():
    # every user gains on each seed, by 0.1, 0.5 or 0.9: the users × seeds bootstrap sees a
    # tight effect, the three seeds' means (t, 2 degrees of freedom) do not exclude 0
    rng = np.random.default_rng(0)
    difference = np.array([0.1, 0.5, 0.9])[:, None] + rng.normal(0, 0.05, size=(3, 400))
    _, low, _ = intervals.paired_bootstrap(difference, samples=300)
    seeds_low, _ = intervals.seeds_t_interval(difference)
    assert low > 0 > seeds_low
    row = {"ci_low": low, "ci_high": 1.0, "seeds_ci_low": seeds_low, "seeds_ci_high": 1.5}
    assert not intervals.intervals_exclude_zero(row)
    assert intervals.intervals_exclude_zero({**row, "seeds_ci_low": None, "seeds_ci_high": None})  # one seed
    assert intervals.intervals_exclude_zero({"ci_low": low, "ci_high": 1.0})  # a table made before the t column


def test_bootstrap_of_identical_variants_is_zero():
    difference = np.zeros((2, 100))
    assert intervals.paired_bootstrap(difference, samples=200) == (0.0, 0.0, 0.0)


def test_variance_components_on_a_hand_computed_two_by_three_table():
    # grand mean 11/3, seed means 3 and 13/3, user means 2, 3, 6: MS seed 8/3, MS user 26/3,
    # MS residual 4/3 / 2 = 2/3 -> seed (8/3 - 2/3) / 3 users, user (26/3 - 2/3) / 2 seeds
    parts = intervals.variance_components([[1.0, 3.0, 5.0], [3.0, 3.0, 7.0]])
    assert (parts.seeds, parts.users) == (2, 3)
    assert parts.seed == pytest.approx(2 / 3) and parts.user == pytest.approx(4.0)
    assert parts.residual == pytest.approx(2 / 3)
    z = 1.959963984540054
    assert parts.half_width(2) == pytest.approx(z * np.sqrt(2 / 3 / 2 + 4 / 3 + 2 / 3 / 6))
    assert parts.half_width(np.inf) == pytest.approx(z * np.sqrt(4 / 3))  # the users' floor
    with pytest.raises(ValueError, match="at least 2 seeds"):
        intervals.variance_components(np.ones((1, 5)))


def test_the_grid_bootstraps_half_width_is_what_its_resampling_gives():
    """paired_bootstrap's users × seeds draws against VarianceComponents.grid_bootstrap_half_width,
    on a seed × user-dominated matrix of 3 seeds (as on Beauty): the bootstrap is wider than the
    variance split's half_width, by the (3S - 2)/S factor on the interaction."""
    rng = np.random.default_rng(7)
    d = (rng.normal(0, 0.002, (3, 1)) + rng.normal(0, 0.03, (1, 400)) + rng.normal(0, 0.1, (3, 400)))
    parts = intervals.variance_components(d)
    mean, low, high = intervals.paired_bootstrap(d, samples=20000, seed=1)
    assert (high - low) / 2 == pytest.approx(parts.grid_bootstrap_half_width(), rel=0.04)
    assert parts.grid_bootstrap_half_width() > 1.1 * parts.half_width(3)


def test_variance_components_recover_planted_spreads_and_size_the_seeds():
    rng = np.random.default_rng(5)
    seeds, users = 400, 500
    planted = {"seed": 0.5, "user": 2.0, "residual": 1.0}  # standard deviations
    d = (0.3 + planted["seed"] * rng.standard_normal((seeds, 1)) + planted["user"] * rng.standard_normal((1, users))
         + planted["residual"] * rng.standard_normal((seeds, users)))
    parts = intervals.variance_components(d)
    for name, sd in planted.items():
        assert np.sqrt(getattr(parts, name)) == pytest.approx(sd, rel=0.1)
    # the same difference on every seed: all of it is the users'
    per_user = rng.standard_normal(users)
    same = intervals.variance_components(np.tile(per_user, (3, 1)))
    assert same.seed == pytest.approx(0.0, abs=1e-20) and same.residual == pytest.approx(0.0, abs=1e-20)
    assert same.user == pytest.approx(per_user.var(ddof=1))
    floor = parts.half_width(np.inf)
    assert parts.seeds_for(floor) is None and parts.seeds_for(0.5 * floor) is None
    for target in (1.05 * floor, 1.5 * floor, 3 * floor, 100 * floor):
        n = parts.seeds_for(target)
        assert parts.half_width(n) <= target and (n == 1 or parts.half_width(n - 1) > target)


def test_bootstrap_without_seed_resampling_holds_the_seeds_fixed():
    # each seed gives every user the same difference, 0 on one seed and 1 on the other: drawing
    # users only, every resample's mean is the two seeds' mean, 0.5, so the interval is [0.5, 0.5];
    # drawing seeds too, a resample of seed 0 twice gives 0 and the interval reaches below 0.5
    difference = np.array([[0.0] * 20, [1.0] * 20])
    assert intervals.paired_bootstrap(difference, samples=200, resample_seeds=False) == (0.5, 0.5, 0.5)
    _, low, high = intervals.paired_bootstrap(difference, samples=200, resample_seeds=True)
    assert low == 0.0 and high == 1.0
    fixed = intervals.paired_intervals(difference, samples=200, resample_seeds=False)
    assert (fixed["difference"], fixed["ci_low"], fixed["ci_high"]) == (0.5, 0.5, 0.5)
    # t over the seed means 0 and 1 at 50%: 0.5 ± t(0.5, 1 df) = 1 (the Cauchy quartile) × sd 0.707 / sqrt(2)
    half = intervals.paired_intervals(difference, samples=200, confidence=0.5)
    assert (half["seeds_ci_low"], half["seeds_ci_high"]) == (pytest.approx(0.0, abs=1e-9), pytest.approx(1.0))
    assert intervals.paired_intervals(difference, samples=200)["ci_low"] == 0.0


def test_variance_components_set_negative_estimates_to_zero():
    # [[0, 1], [1, 0]]: every seed mean and user mean is the grand mean 0.5, so MS seed = MS user = 0;
    # the interaction is ±0.5 in each cell, MS residual 1 / 1 = 1 -> seed and user (0 - 1) / 2, set to 0
    parts = intervals.variance_components([[0.0, 1.0], [1.0, 0.0]])
    assert (parts.seed, parts.user, parts.residual) == (0.0, 0.0, pytest.approx(1.0))


def test_excludes_zero_on_either_side_and_not_at_zero():
    assert intervals.excludes_zero(0.1, 0.3) and intervals.excludes_zero(-0.3, -0.1)
    assert not intervals.excludes_zero(0.0, 0.3) and not intervals.excludes_zero(-0.3, 0.0)
    assert not intervals.excludes_zero(-0.1, 0.1)
    # one seed: no t interval, stated as None (NaN is no JSON)
    one_seed = intervals.paired_intervals(np.array([[1.0, 2.0, 3.0]]), samples=50)
    assert one_seed["difference"] == 2.0 and one_seed["seeds_ci_low"] is None and one_seed["seeds_ci_high"] is None
