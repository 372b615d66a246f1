"""Paired differences between two pretrainings finetuned with the same loss, scored on the same
users and seeds: which pairs the report compares (`comparison_pairs`), the per-user differences
(`paired_difference`), and the difference table with the two intervals of s3rec/intervals.py (a
paired bootstrap over users and seeds, a t interval over seeds)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from s3rec.intervals import paired_intervals
from s3rec.labels import PROTOCOL_LABELS, sort_losses, sort_presets, sort_pretrainings, split_pretraining
from s3rec.metrics import per_user_metric


def comparison_pairs(ranks: pl.DataFrame) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The comparisons of the difference table, within each finetuning loss, and those left out.

    Pairs are (loss, pretraining, reference), for every preset p with `p-full` present:
    `p-r<k>` − `p-full` (the claim under test), `p-full` − `none` (does pretraining help) and
    `p-full` − `authors` (the distance to the authors' checkpoint), each when both sides were
    finetuned with that loss. A rank whose `p-full` is missing (a partial study) is left out
    and described in the second list. Popularity, never finetuned, is in no pair.
    """
    pairs, skipped = [], []
    present = ranks.filter(pl.col("loss").is_not_null()).select("loss", "pretraining").unique()
    for loss in sort_losses(present["loss"]):
        labels = set(present.filter(pl.col("loss") == loss)["pretraining"])
        for preset in sort_presets(split_pretraining(label)[0] for label in labels):
            full = f"{preset}-full"
            ranked = [label for label in sort_pretrainings(labels)
                      if split_pretraining(label)[0] == preset and label != full]
            if full not in labels:
                skipped += [f"{label} − {full} ({loss}): no {full} finetuned with {loss}" for label in ranked]
                continue
            pairs += [(loss, full, reference) for reference in ("none", "authors") if reference in labels]
            pairs += [(loss, label, full) for label in ranked]
    return pairs, skipped


def user_scores(ranks: pl.DataFrame, loss: str, pretraining: str, protocol: str, split: str, metric: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, user_ids, values (S, U)) of one pretraining finetuned with `loss`, users sorted by id."""
    part = (ranks.filter((pl.col("loss") == loss) & (pl.col("pretraining") == pretraining)
                         & (pl.col("protocol") == protocol) & (pl.col("split") == split))
            .select("seed", "user_id", "rank"))
    if part.is_empty():
        raise ValueError(f"no ranks for {pretraining!r} finetuned with {loss!r}, protocol {protocol!r}, "
                         f"split {split!r}: the ranks.parquet of its runs ({pretraining}/seed*/{loss}/) hold none; "
                         "were they evaluated without that protocol (eval.protocols)?")
    wide = part.pivot(on="seed", index="user_id", values="rank").sort("user_id")
    seeds = np.array(sorted(int(s) for s in wide.columns if s != "user_id"))
    matrix = wide.select([str(s) for s in seeds]).to_numpy().T  # (S, U)
    if np.isnan(matrix.astype(np.float64)).any():
        counts = part.group_by("seed").agg(pl.col("user_id").n_unique().alias("users")).sort("seed")
        short = counts.filter(pl.col("users") < counts["users"].max())
        where = (f"{pretraining}/seed{short['seed'][0]}/{loss}/ranks.parquet ranks {short['users'][0]:,} users "
                 f"({protocol}, {split}), another seed {counts['users'].max():,}" if len(short) else
                 f"{pretraining}/seed*/{loss}/ranks.parquet rank as many users but not the same ones")
        raise ValueError(f"{where}: the seeds of {pretraining!r} ({loss}) did not rank the same users")
    return seeds, wide["user_id"].to_numpy(), per_user_metric(matrix, metric)


def paired_difference(ranks: pl.DataFrame, loss: str, pretraining: str, reference: str, protocol: str,
                      split: str, metric: str) -> np.ndarray:
    """(S, U) per-user metric of `pretraining` minus `reference`, both finetuned with `loss`, on
    their common seeds and users."""
    seeds_a, users_a, a = user_scores(ranks, loss, pretraining, protocol, split, metric)
    seeds_b, users_b, b = user_scores(ranks, loss, reference, protocol, split, metric)
    seeds = np.intersect1d(seeds_a, seeds_b)
    users = np.intersect1d(users_a, users_b)
    if not len(seeds) or not len(users):
        raise ValueError(f"{pretraining!r} and {reference!r} ({loss}) share no seeds or no users")
    return _select(a, seeds_a, users_a, seeds, users) - _select(b, seeds_b, users_b, seeds, users)


def _select(values: np.ndarray, seeds: np.ndarray, users: np.ndarray, keep_seeds: np.ndarray,
            keep_users: np.ndarray) -> np.ndarray:
    """Rows of `keep_seeds` and columns of `keep_users` (both sorted subsets) of a (S, U) matrix."""
    return values[np.searchsorted(seeds, keep_seeds)][:, np.searchsorted(users, keep_users)]


DIFFERENCE_SCHEMA = {
    "loss": pl.String, "pretraining": pl.String, "reference": pl.String, "protocol": pl.String,
    "split": pl.String, "metric": pl.String, "difference": pl.Float64, "ci_low": pl.Float64,
    "ci_high": pl.Float64, "seeds_ci_low": pl.Float64, "seeds_ci_high": pl.Float64, "confidence": pl.Float64,
    "seeds": pl.Int64, "users": pl.Int64,
}


def difference_table(ranks: pl.DataFrame, metric: str, protocols: Sequence[str], split: str = "test",
                     samples: int = 2000, seed: int = 0, confidence: float = 0.95,
                     resample_seeds: bool = True) -> pl.DataFrame:
    """Every pair of `comparison_pairs` per protocol: the mean difference, its paired bootstrap
    interval (ci_low, ci_high) and its t interval over seeds (seeds_ci_low, seeds_ci_high; null on
    one seed), in the order of the pairs (columns: DIFFERENCE_SCHEMA)."""
    rows = []
    for loss, pretraining, reference in comparison_pairs(ranks)[0]:
        for protocol in protocols:
            difference = paired_difference(ranks, loss, pretraining, reference, protocol, split, metric)
            rows.append({"loss": loss, "pretraining": pretraining, "reference": reference, "protocol": protocol,
                         "split": split, "metric": metric,
                         **paired_intervals(difference, samples, seed, confidence, resample_seeds),
                         "confidence": confidence, "seeds": difference.shape[0], "users": difference.shape[1]})
    return pl.DataFrame(rows, schema=DIFFERENCE_SCHEMA)


def format_difference_table(differences: pl.DataFrame, digits: int = 4) -> pl.DataFrame:
    """String table: a row per comparison ('seed-r16 − seed-full') and loss, two columns per
    protocol: 'Δ [low, high]' (bootstrap) and '[low, high]' (t over seeds; '–' on one seed)."""
    if differences.is_empty():
        return pl.DataFrame({"Finetuning": [], "Comparison": []},
                            schema={"Finetuning": pl.String, "Comparison": pl.String})
    level = f"{round(differences['confidence'][0] * 100):d}%"
    rows = {}
    for r in differences.iter_rows(named=True):  # in the order of the pairs
        row = rows.setdefault((r["loss"], r["pretraining"], r["reference"]), {
            "Finetuning": r["loss"], "Comparison": f"{r['pretraining']} − {r['reference']}"})
        label = PROTOCOL_LABELS.get(r["protocol"], r["protocol"])
        header = f"Δ{r['metric']}, {label} [{level} CI]"
        row[header] = f"{r['difference']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
        seeds_low, seeds_high = r.get("seeds_ci_low"), r.get("seeds_ci_high")
        row[f"{label}, over seeds [{level} t]"] = ("–" if seeds_low is None or seeds_high is None
                                                   else f"[{seeds_low:+.{digits}f}, {seeds_high:+.{digits}f}]")
    return pl.DataFrame(list(rows.values()))
