"""A small synthetic data set with planted structure, the pipeline's embedded default.

Items belong to latent clusters. Three signals are planted, each one a model can learn:
- popularity: item weights follow a Zipf law, so a popularity ranking beats random;
- attributes: a cluster fixes most of its items' attributes, so attributes tell items apart
  and an attribute-aware model can group items it has seen little of;
- order: the next item mostly comes from the current item's few successors or from a
  cluster that the current cluster leads to (a Markov chain), so a sequential model beats
  popularity clearly, and a model that ignores order (or is broken) does not.
Everything is drawn from one `numpy.random.Generator(seed)` in a fixed order, so a seed
fixes the data set exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from s3rec.config import SEED_MAX
from s3rec.data import MAX_ID, DataError, Prepared, drop_short_users

MIN_SEQUENCE = 5  # as in the paper's 5-core data sets
MAX_ITEMS = 5000  # the (items, items) transition matrix is dense: 200 MB at this size


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 2000
    items: int = 500
    attributes: int = 60
    seed: int = 0
    max_length: int = 30
    mean_extra_length: float = 8.0  # lengths are 5 + a geometric draw, capped at max_length
    zipf_exponent: float = 1.0
    cluster_attributes: int = 3  # attributes a cluster gives its items
    attribute_keep: float = 0.85  # chance an item has each of its cluster's attributes
    noise_attribute: float = 0.3  # chance of one extra attribute drawn at random
    successors: int = 3  # per-item successor set
    p_successor: float = 0.55  # next item from the current item's successors
    p_chain: float = 0.3  # ... from a cluster the current cluster leads to (else: popularity)

    def check(self) -> None:
        for name in ("users", "attributes"):  # ids 1..N, stored as int32: a larger N would wrap around
            if not 1 <= getattr(self, name) <= MAX_ID:
                raise DataError(f"synthetic: expected 1 <= {name} <= {MAX_ID}, got {getattr(self, name)}")
        if not 0 <= self.seed <= SEED_MAX:  # numpy's generators take no negative seed
            raise DataError(f"synthetic: expected a seed in [0, {SEED_MAX}], got {self.seed}")
        if not MIN_SEQUENCE <= self.items <= MAX_ITEMS:
            raise DataError(
                f"synthetic: expected {MIN_SEQUENCE} <= items <= {MAX_ITEMS} (sequences have at least "
                f"{MIN_SEQUENCE} distinct items; the transition matrix is dense), got {self.items}"
            )
        if not (0 <= self.p_successor and 0 <= self.p_chain and self.p_successor + self.p_chain <= 1):
            raise DataError("synthetic: expected p_successor, p_chain >= 0 with a sum <= 1")


def generate(spec: SyntheticSpec) -> Prepared:
    spec.check()
    rng = np.random.default_rng(spec.seed)
    num_clusters = max(1, round(spec.items**0.5))
    cluster = rng.permutation(np.arange(spec.items) % num_clusters)  # balanced clusters
    popularity = _zipf_weights(rng, spec.items, spec.zipf_exponent)
    item_attributes = _attributes(rng, spec, cluster, num_clusters)
    transition = _next_item_matrix(rng, spec, cluster, num_clusters, popularity)
    sequences = [_walk(rng, spec, transition, popularity) for _ in range(spec.users)]
    prepared = Prepared(
        format="synthetic",
        user_ids=np.arange(1, spec.users + 1, dtype=np.int32),
        sequences=sequences,
        item_attributes=[np.zeros(0, dtype=np.int32)] + item_attributes,
        num_attributes=spec.attributes,
        parameters={**asdict(spec), "clusters": num_clusters},
    )
    return drop_short_users(prepared, "synthetic")  # never drops: lengths are >= 5


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Probability of each item, 1 / rank^exponent over a random ranking of the items."""
    ranks = rng.permutation(n) + 1
    weights = 1.0 / ranks**exponent
    return weights / weights.sum()


def _attributes(rng: np.random.Generator, spec: SyntheticSpec, cluster: np.ndarray,
                num_clusters: int) -> list[np.ndarray]:
    """Each item keeps most of its cluster's attributes, sometimes gains a random one, and
    always has at least one. Attribute ids are 1..A; the result is indexed by item - 1."""
    per_cluster = min(spec.cluster_attributes, spec.attributes)
    signature = [rng.choice(spec.attributes, per_cluster, replace=False) + 1 for _ in range(num_clusters)]
    result = []
    for item in range(spec.items):
        own = signature[cluster[item]]
        chosen = own[rng.random(per_cluster) < spec.attribute_keep]
        if len(chosen) == 0:
            chosen = own[rng.integers(per_cluster)][None]
        if rng.random() < spec.noise_attribute:
            chosen = np.append(chosen, rng.integers(1, spec.attributes + 1))
        result.append(np.unique(chosen).astype(np.int32))
    return result


def _next_item_matrix(rng: np.random.Generator, spec: SyntheticSpec, cluster: np.ndarray,
                      num_clusters: int, popularity: np.ndarray) -> np.ndarray:
    """(M, M) row-stochastic: row i = distribution of the item after item i (0-based)."""
    # Each cluster leads to itself and two others; within a cluster, popular items win.
    cluster_next = np.zeros((num_clusters, num_clusters))
    for c in range(num_clusters):
        targets = rng.choice(num_clusters, min(2, num_clusters), replace=False)
        cluster_next[c, c] += 1.0
        cluster_next[c, targets] += 1.0
    cluster_next /= cluster_next.sum(axis=1, keepdims=True)
    in_cluster = np.zeros((num_clusters, spec.items))
    in_cluster[cluster, np.arange(spec.items)] = popularity
    in_cluster /= in_cluster.sum(axis=1, keepdims=True)
    chain = cluster_next[cluster] @ in_cluster  # (M, M)

    successors = np.zeros((spec.items, spec.items))
    for item in range(spec.items):
        count = min(spec.successors, int(np.count_nonzero(chain[item])))
        picks = rng.choice(spec.items, count, replace=False, p=chain[item])
        successors[item, picks] = rng.dirichlet(np.ones(count))
    p_popular = 1.0 - spec.p_successor - spec.p_chain
    return spec.p_successor * successors + spec.p_chain * chain + p_popular * popularity[None, :]


def _walk(rng: np.random.Generator, spec: SyntheticSpec, transition: np.ndarray,
          popularity: np.ndarray) -> np.ndarray:
    """One user's sequence of distinct items (ids 1..M), starting from a popular item."""
    extra = rng.geometric(1.0 / (spec.mean_extra_length + 1)) - 1
    length = min(MIN_SEQUENCE + extra, spec.max_length, spec.items)
    seen = np.zeros(spec.items, dtype=bool)
    current = rng.choice(spec.items, p=popularity)
    walk = [current]
    seen[current] = True
    while len(walk) < length:
        p = np.where(seen, 0.0, transition[current])  # items are not repeated, as in Beauty
        current = rng.choice(spec.items, p=p / p.sum())
        walk.append(current)
        seen[current] = True
    return np.asarray(walk, dtype=np.int32) + 1
