"""Intervals for a paired difference between two variants: a (seeds, users) matrix of per-user
metric differences (differences.paired_difference) in, a mean and its uncertainty out.

- `paired_bootstrap`: percentile interval, users and seeds resampled on the grid.
- `seeds_t_interval`: Student-t interval over the seeds' mean differences, users held fixed.
- `paired_intervals`: the mean with both, as the difference table and reproduction_table state them.
- `variance_components`: how the difference varies between seeds, between users and in their
  interaction, and so how many seeds an interval of a given width needs (benchmarks/seeds_needed.py).
- `intervals_exclude_zero`: the significance the report marks: both intervals leave out 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def paired_bootstrap(difference: np.ndarray, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, resample_seeds: bool = True) -> tuple[float, float, float]:
    """Mean of a (seeds, users) matrix of paired differences and its percentile interval.

    Every resample draws users with replacement (and, with `resample_seeds`, seeds with
    replacement) and takes the mean over the drawn cells; the same draws apply to both
    variants because `difference` already pairs them cell by cell.

    Seeds and users drawn independently on the grid count, in the mean's variance, the seed ×
    user variance (3S - 2)/S times and the seed variance (S - 1)/S times what they should (for
    d = mu + a_seed + b_user + e, S seeds): with 3 seeds 2.3 and 0.67 times. Where seed × user
    variation dominates (every Beauty comparison) the interval is conservative; where seed
    variation dominates, too narrow. variance_components gives the unbiased split (README,
    "The interval's width").
    """
    difference = np.atleast_2d(np.asarray(difference, dtype=np.float64))
    num_seeds, num_users = difference.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(samples)
    for b in range(samples):
        rows = rng.integers(num_seeds, size=num_seeds) if resample_seeds else np.arange(num_seeds)
        users = rng.integers(num_users, size=num_users)
        stats[b] = difference[rows].mean(axis=0)[users].mean()
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(difference.mean()), float(low), float(high)


def _normal_quantile(confidence: float) -> float:
    """z of a two-sided normal interval at `confidence` (1.96 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def t_quantile(confidence: float, df: int) -> float:
    """t of a two-sided Student-t interval at `confidence` with `df` degrees of freedom (4.303 at
    0.95 and 2): the density integrated from 0 by Simpson's rule, the end found by bisection
    (scipy, which has it, is no dependency, and this one table does not warrant it)."""
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0 < confidence < 1, got df={df}, confidence={confidence}")
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def mass(t: float) -> float:  # P(0 < T < t)
        x = np.linspace(0.0, t, 4001)
        y = scale * (1 + x * x / df) ** (-(df + 1) / 2)
        return t / 12000 * (y[0] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum() + y[-1])

    low, high = 0.0, 1.0
    while mass(high) < confidence / 2:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mass(middle) < confidence / 2 else (low, middle)
    return (low + high) / 2


def seeds_t_interval(difference: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over seeds of each seed's mean difference over the users.

    The users are this data set's test users, held fixed: the interval covers the variation
    between training seeds, with S - 1 degrees of freedom, where the users × seeds bootstrap
    takes a percentile of at most S distinct seeds (too few to show how far a mean of three
    wanders). (nan, nan) on one seed."""
    seed_means = np.atleast_2d(np.asarray(difference, dtype=np.float64)).mean(axis=1)
    if len(seed_means) < 2:
        return math.nan, math.nan
    half = t_quantile(confidence, len(seed_means) - 1) * seed_means.std(ddof=1) / math.sqrt(len(seed_means))
    return float(seed_means.mean() - half), float(seed_means.mean() + half)


def paired_intervals(difference: np.ndarray, samples: int = 2000, seed: int = 0, confidence: float = 0.95,
                     resample_seeds: bool = True) -> dict:
    """The mean difference with both of its intervals, as the report states them: `ci_low`,
    `ci_high` (paired_bootstrap) and `seeds_ci_low`, `seeds_ci_high` (seeds_t_interval; None on
    one seed, where there is none)."""
    mean, low, high = paired_bootstrap(difference, samples, seed, confidence, resample_seeds)
    seeds_low, seeds_high = seeds_t_interval(difference, confidence)
    none_if_nan = (lambda v: None if math.isnan(v) else v)
    return {"difference": mean, "ci_low": low, "ci_high": high,
            "seeds_ci_low": none_if_nan(seeds_low), "seeds_ci_high": none_if_nan(seeds_high)}


@dataclass(frozen=True)
class VarianceComponents:
    """The variances of a (seeds, users) matrix of paired differences, d[s, u] = μ + a[s] + b[u] + e[s, u].

    `seed` (var a): how far one seed's mean difference wanders; shrinks as 1/seeds.
    `user` (var b): the part of a user's difference that repeats on every seed; with the users
    fixed by the data set it does not shrink with more seeds, so it sets a floor on the interval.
    `residual` (var e): seed × user interaction; shrinks as 1/(seeds · users).
    """
    seeds: int
    users: int
    seed: float
    user: float
    residual: float

    def half_width(self, seeds: int, confidence: float = 0.95) -> float:
        """Normal-approximation half-width of the interval of the mean over `seeds` seeds and the users."""
        variance = self.seed / seeds + self.user / self.users + self.residual / (seeds * self.users)
        return _normal_quantile(confidence) * math.sqrt(variance)

    def grid_bootstrap_half_width(self, confidence: float = 0.95) -> float:
        """The half-width paired_bootstrap's users × seeds resampling gives these data, in the
        normal approximation: its variance, (S - 1)/S² (seed + residual/U) + (U - 1)/U² (user +
        residual/S) + (S - 1)(U - 1)/(S U)² residual, is exactly the resampled mean's variance
        given the matrix (with the estimates as they are, unless one was set to 0)."""
        s, u = self.seeds, self.users
        variance = ((s - 1) / s**2 * (self.seed + self.residual / u) + (u - 1) / u**2 * (self.user + self.residual / s)
                    + (s - 1) * (u - 1) / (s * u) ** 2 * self.residual)
        return _normal_quantile(confidence) * math.sqrt(variance)

    def seeds_for(self, half_width: float, confidence: float = 0.95) -> int | None:
        """The fewest seeds whose half-width is at most `half_width`; None when the users' floor
        (infinitely many seeds) is already wider."""
        room = (half_width / _normal_quantile(confidence)) ** 2 - self.user / self.users
        if room <= 0:
            return None
        return max(1, math.ceil((self.seed + self.residual / self.users) / room))


def variance_components(difference: np.ndarray) -> VarianceComponents:
    """Two-way ANOVA without replication (seeds × users), method of moments, negative estimates
    set to 0. Needs two seeds at least: with one, seed and user variation cannot be told apart."""
    d = np.asarray(difference, dtype=np.float64)
    num_seeds, num_users = d.shape
    if num_seeds < 2 or num_users < 2:
        raise ValueError(f"variance components need at least 2 seeds and 2 users, got {d.shape}")
    grand, seed_means, user_means = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_seed = num_users * ((seed_means - grand) ** 2).sum() / (num_seeds - 1)
    ms_user = num_seeds * ((user_means - grand) ** 2).sum() / (num_users - 1)
    interaction = d - seed_means[:, None] - user_means[None, :] + grand
    ms_residual = (interaction ** 2).sum() / ((num_seeds - 1) * (num_users - 1))
    return VarianceComponents(seeds=num_seeds, users=num_users, seed=max(0.0, (ms_seed - ms_residual) / num_users),
                              user=max(0.0, (ms_user - ms_residual) / num_seeds), residual=ms_residual)


def excludes_zero(low: float, high: float) -> bool:
    return low > 0 or high < 0


def intervals_exclude_zero(row: dict) -> bool:
    """Whether a difference-table row's bootstrap interval and, where it has one (two seeds or
    more; tables made before it lack the column), its t interval over seeds both leave out 0."""
    seeds_low, seeds_high = row.get("seeds_ci_low"), row.get("seeds_ci_high")
    return excludes_zero(row["ci_low"], row["ci_high"]) and (seeds_low is None or excludes_zero(seeds_low, seeds_high))
