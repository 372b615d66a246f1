"""Labels of runs, and the order the report shows them in.

A run is identified by (loss, pretraining, seed): `loss` is the finetuning loss (bce, ce, ...;
none for the popularity baseline) and `pretraining` the label of what it was finetuned from:
`none` (trained from scratch), `<preset>-<variant>` (pretrained here with a RunConfig preset,
e.g. seed-full, paper-r16), `authors` (the S3Rec authors' released checkpoint) or `popularity`.
Tables, figures and study/ share these labels and this order: bce, ce; none, per preset (seed,
paper) full then r<small>..r<large>, authors, popularity.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import polars as pl

from s3rec.config import PRETRAINED_VARIANT_PATTERN, RANK_PATTERN

# Rows shown for reference only, never compared as a variant: `authors` is finetuned from the
# S3Rec authors' released checkpoint, pretrained by their code on their data handling (which sees
# the held-out items), so it is a distance to reach, not a like-for-like variant; popularity is
# the floor and was not finetuned at all.
REFERENCE_ROWS = ("authors", "popularity")
PROTOCOL_LABELS = {"full": "full ranking", "sampled": "sampled"}  # "full" alone reads as the variant
LOSSES = ("bce", "ce")  # shown first, in this order; other losses follow alphabetically
PRESETS = ("seed", "paper")  # likewise for the pretraining presets
# <preset>-<variant> for a model pretrained here: the preset is a RunConfig preset name
# (lowercase), the variant full or r<rank> as the config writes it (config.RANK_PATTERN). The one
# grammar of the run paths (run_paths.py), the report's labels and a study's plan (study_folder.py).
# The preset as a plain pattern too: with config.PRETRAINED_VARIANT_PATTERN, the workflow's
# wildcard constraints (common.smk).
PRESET_PATTERN = r"[a-z][a-z0-9_]*"
_RANK = re.compile(rf"^{RANK_PATTERN}$")  # what variant_order and variant_rank read as a rank: r16, never r016
PRETRAINED_HERE = re.compile(rf"^(?P<preset>{PRESET_PATTERN})-(?P<variant>{PRETRAINED_VARIANT_PATTERN})$")
PRETRAINED_HERE_FORM = "<preset>-full | <preset>-r<rank> (<preset>: lowercase letters, digits, _, first a letter)"


def variant_order(variant: str) -> tuple[int, int]:
    """Sort key: none, full, r<small> .. r<large>, authors, popularity, anything else."""
    if variant == "none":
        return (0, 0)
    if variant == "full":
        return (1, 0)
    rank = variant_rank(variant)
    if rank is not None:
        return (2, rank)
    return {"authors": (3, 0), "popularity": (4, 0)}.get(variant, (5, 0))


def variant_rank(variant: str) -> int | None:
    """16 for 'r16'; None for any other variant (full, none, authors, popularity, r016, r0)."""
    return int(variant[1:]) if _RANK.match(variant) else None


def _named_order(name: str | None, first: Sequence[str]) -> tuple[int, int, str]:
    """`first` in its order, then other names alphabetically, then None."""
    if name is None:
        return (2, 0, "")
    return (0, first.index(name), "") if name in first else (1, 0, name)


def loss_order(loss: str | None) -> tuple[int, int, str]:
    """Sort key: bce, ce, other losses alphabetically, no loss (popularity) last."""
    return _named_order(loss, LOSSES)


def preset_order(preset: str | None) -> tuple[int, int, str]:
    """Sort key: seed, paper, other presets alphabetically."""
    return _named_order(preset, PRESETS)


def sort_losses(losses: Iterable[str | None]) -> list[str | None]:
    return sorted(set(losses), key=loss_order)


def sort_presets(presets: Iterable[str | None]) -> list[str]:
    return sorted({p for p in presets if p is not None}, key=preset_order)


def pretraining_label(variant: str, preset: str | None) -> str:
    """`<preset>-<variant>` for a model pretrained here, else the variant (none, authors, popularity)."""
    return f"{preset}-{variant}" if preset else variant


def split_pretraining(label: str) -> tuple[str | None, str]:
    """(preset, variant) of a pretraining label: 'paper-r16' -> ('paper', 'r16'), 'none' -> (None, 'none')."""
    match = PRETRAINED_HERE.match(label)
    return (match["preset"], match["variant"]) if match else (None, label)


def pretrained_here(variant: str) -> bool:
    """Whether the variant is pretrained by this project (with a preset): full and r<rank>."""
    return variant == "full" or variant_rank(variant) is not None


def pretraining_order(label: str) -> tuple:
    """Sort key: none; per preset (seed, paper, others) full, r<small>..r<large>; authors; popularity."""
    preset, variant = split_pretraining(label)
    if preset is not None:
        return (1, preset_order(preset), variant_order(variant))
    group = {"none": 0, "authors": 2, "popularity": 3}.get(label, 4)
    return (group, preset_order(None), (0, 0), label)


def sort_pretrainings(labels: Iterable[str]) -> list[str]:
    return sorted(set(labels), key=pretraining_order)


def report_order(frame: pl.DataFrame, *then: str) -> pl.DataFrame:
    """`frame` sorted as the report shows it: by loss, then pretraining, then the columns `then`."""
    keys = []
    if "loss" in frame.columns:
        rank = {loss: i for i, loss in enumerate(sort_losses(frame["loss"].drop_nulls()))}
        keys.append(pl.col("loss").replace_strict(rank, default=None, return_dtype=pl.Int64))
    if "pretraining" in frame.columns:
        rank = {label: i for i, label in enumerate(sort_pretrainings(frame["pretraining"]))}
        keys.append(pl.col("pretraining").replace_strict(rank, return_dtype=pl.Int64))
    return frame.sort([*keys, *then], nulls_last=True, maintain_order=True)
