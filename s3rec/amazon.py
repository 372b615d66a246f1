"""Raw Amazon 2014 review + metadata files (McAuley et al.) to a prepared data set.

Reviews are JSON lines (`reviewerID`, `asin`, `unixReviewTime`, ...). Metadata holds one
Python-literal dict per line (single quotes, so not JSON) with `asin`, `categories` (a
list of category paths) and an optional `brand`.

Ids are given in order of first appearance, so the output depends only on the input
files: users in the order their first kept review appears in the review file; items in
the order they first appear when reading the users' chronological sequences user by
user (as in the authors' release); attributes in the order they first appear when
walking the items by id, each item's category levels before its brand.
"""
from __future__ import annotations

import ast
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import polars as pl

from s3rec.data import MIN_LENGTH, DataError, Prepared, numbered_lines

log = logging.getLogger(__name__)

REVIEW_FIELDS = {"reviewerID": str, "asin": str, "unixReviewTime": int}
# A \u escape of a character in U+0040..U+007F, where the letters of every field name are.
_LETTER_ESCAPE = re.compile(r"\\u00[4-7][0-9A-Fa-f]")


def read_amazon(reviews_path: str | Path, meta_path: str | Path, k_core: int = 5) -> Prepared:
    """Reviews of items with metadata, k-core filtered, as chronological sequences."""
    if k_core < 1:
        raise DataError(f"--k-core: expected an integer >= 1, got {k_core}")
    started = time.perf_counter()
    reviews = read_reviews(reviews_path)
    meta, duplicate_meta, blank_names = read_meta(meta_path)
    log.info("read %d reviews and %d metadata entries in %.1f s",
             reviews.height, len(meta), time.perf_counter() - started)
    repeated = reviews.height - reviews.unique(["user", "item", "time"]).height
    if repeated:  # kept as read, each an interaction (a data question, not ours to fix); counted here
        log.warning("%s: %d reviews repeat an earlier review's user, item and time; kept, each an interaction",
                    reviews_path, repeated)
    dropped: dict[str, int] = {"duplicate_meta_entries": duplicate_meta, "blank_attribute_names": blank_names}

    reviews = _keep_items_with_meta(reviews, meta, dropped)
    reviews = k_core_filter(reviews, k_core, dropped)
    reviews = _drop_short_users(reviews, dropped)
    if reviews.height == 0:
        raise DataError(
            f"{reviews_path}: no users left after the {k_core}-core filter and dropping users "
            f"with fewer than {MIN_LENGTH} reviews; dropped: {dropped}"
        )
    prepared = _to_prepared(_chronological(reviews), meta)
    prepared.dropped = dropped
    prepared.parameters = {"reviews": Path(reviews_path).name, "meta": Path(meta_path).name, "k_core": k_core}
    return prepared


# --- reading ---------------------------------------------------------------------------


def read_reviews(path: str | Path) -> pl.DataFrame:
    """Columns user, item (str), time (int64) and row (file order, for stable ties)."""
    columns: dict[str, list] = {key: [] for key in REVIEW_FIELDS}
    for lineno, line in numbered_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno}); "
                "expected one review object per line"
            ) from None
        except (ValueError, RecursionError) as err:  # an integer of over 4,300 digits; arrays nested too deep
            raise DataError(f"{path}:{lineno}: unreadable JSON ({type(err).__name__}); "
                            "expected one review object per line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        _check_unique_keys(line, path, lineno)
        for key, kind in REVIEW_FIELDS.items():
            columns[key].append(_field(record, key, kind, path, lineno))
    return pl.DataFrame(
        {"user": columns["reviewerID"], "item": columns["asin"], "time": columns["unixReviewTime"]},
        schema={"user": pl.String, "item": pl.String, "time": pl.Int64},
    ).with_row_index("row")


def read_meta(path: str | Path) -> tuple[dict[str, list[str]], int, int]:
    """Item -> attribute strings (deduplicated, in order), the number of repeated asins (the
    first entry is kept) and of empty or blank names (category levels, brands) left out. Lines
    are parsed with `ast.literal_eval`, never `eval`."""
    meta: dict[str, list[str]] = {}
    duplicates = blank_names = 0
    for lineno, line in numbered_lines(path):
        try:
            tree = ast.parse(line.strip(), mode="eval")
            record = ast.literal_eval(tree)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise DataError(
                f"{path}:{lineno}: malformed line ({type(err).__name__}); expected a Python dict literal"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a Python dict literal, got {type(record).__name__}")
        keys = [key.value for key in tree.body.keys if isinstance(key, ast.Constant)]
        if len(set(keys)) < len(keys):  # a dict literal keeps the last of a repeated key, silently
            repeated = next(key for key in keys if keys.count(key) > 1)
            raise DataError(f"{path}:{lineno}: key {repeated!r} occurs twice; expected each key once")
        asin = _field(record, "asin", str, path, lineno)
        if asin in meta:
            duplicates += 1
            continue
        meta[asin], blank = item_attributes(record, path, lineno)
        blank_names += blank
    if blank_names:
        log.info("%s: %d category levels or brands are empty or blank: no attribute", path, blank_names)
    return meta, duplicates, blank_names


def item_attributes(record: dict, path: str | Path, lineno: int) -> tuple[list[str], int]:
    """Every level of every category path but the top one (the top is the data set's own
    name, e.g. 'Beauty', shared by all items), then the brand when present; and how many
    of these names were empty or blank (left out)."""
    categories = _field(record, "categories", list, path, lineno)
    if not all(isinstance(p, list) and all(isinstance(c, str) for c in p) for p in categories):
        raise DataError(f"{path}:{lineno}: field 'categories': expected a list of lists of strings")
    names = [c for category_path in categories for c in category_path[1:]]
    brand = record.get("brand")
    if brand is not None and not isinstance(brand, str):
        raise DataError(f"{path}:{lineno}: field 'brand': expected a string, got {brand!r}")
    for name in names:
        _check_text(name, "categories", path, lineno)
    if brand is not None:
        _check_text(brand, "brand", path, lineno)
        names.append(brand)
    kept = [name for name in names if name.strip()]  # "" or "  " names nothing
    return list(dict.fromkeys(kept)), len(names) - len(kept)  # dedupe, keep first-appearance order


def _check_unique_keys(line: str, path: str | Path, lineno: int) -> None:
    """A JSON object keeps the last of a repeated key, silently: a review with "asin" twice would
    count for one of its items. Parsing every line with a pairs hook costs 2.6x, so the line is
    parsed again only where a field's quoted name occurs twice in it, or where a letter is written
    as a \\u escape ("\\u0061sin" is "asin": a second key that counting quoted names does not see;
    JSON writers escape no ASCII letter, so real files take the fast path)."""
    if not _LETTER_ESCAPE.search(line) and all(line.count(f'"{key}"') < 2 for key in REVIEW_FIELDS):
        return
    objects: list[list[str]] = []  # the keys of every object, the top-level one last
    json.loads(line, object_pairs_hook=lambda items: objects.append([key for key, _ in items]))
    repeated = [key for key in REVIEW_FIELDS if objects[-1].count(key) > 1]
    if repeated:
        raise DataError(f"{path}:{lineno}: key {repeated[0]!r} occurs twice; expected each key once")


def _check_text(value: str, key: str, path: str | Path, lineno: int) -> None:
    """A lone surrogate (JSON "\\ud800", or one in a Python literal) is a str that no UTF-8 file
    can hold: polars and parquet would fail on it later, naming no line."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{path}:{lineno}: field {key!r}: a lone surrogate {value[err.start]!r}; "
                        "expected valid Unicode text") from None


def _field(record: dict, key: str, kind: type, path: str | Path, lineno: int):
    if key not in record:
        raise DataError(f"{path}:{lineno}: missing key {key!r}")
    value = record[key]
    # bool is a subclass of int, but True is never a time stamp.
    # An int beyond int64 would fail later, inside polars, without naming the line.
    out_of_range = kind is int and isinstance(value, int) and not -2**63 <= value < 2**63
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value) or out_of_range:
        expected = {str: "a non-empty string", int: "an integer within int64", list: "a list"}[kind]
        raise DataError(f"{path}:{lineno}: field {key!r}: expected {expected}, got {value!r}")
    if kind is str:
        _check_text(value, key, path, lineno)
    return value


# --- filtering ---------------------------------------------------------------------------


def _keep_items_with_meta(reviews: pl.DataFrame, meta: dict, dropped: dict[str, int]) -> pl.DataFrame:
    has_meta = pl.col("item").is_in(list(meta))
    without = reviews.filter(~has_meta)
    dropped["reviews_without_meta"] = without.height
    dropped["items_without_meta"] = without["item"].n_unique()
    dropped["meta_without_reviews"] = len(set(meta) - set(reviews["item"].unique().to_list()))
    log.info("dropped %d reviews of %d items without metadata", without.height, dropped["items_without_meta"])
    return reviews.filter(has_meta)


def k_core_filter(reviews: pl.DataFrame, k: int, dropped: dict[str, int] | None = None) -> pl.DataFrame:
    """Keep the k-core: every user and every item with at least k reviews.

    Removing a user can push an item below k and vice versa, so filter until nothing
    changes. The result is the unique maximal such subset, whatever the order of removal.
    """
    before = reviews
    passes = 0
    while True:
        passes += 1
        kept = reviews.filter((pl.len().over("user") >= k) & (pl.len().over("item") >= k))
        if kept.height == reviews.height:
            break
        reviews = kept
    counts = {
        "kcore_reviews": before.height - reviews.height,
        "kcore_users": before["user"].n_unique() - reviews["user"].n_unique(),
        "kcore_items": before["item"].n_unique() - reviews["item"].n_unique(),
    }
    log.info("%d-core after %d passes: dropped %d reviews, %d users, %d items", k, passes,
             counts["kcore_reviews"], counts["kcore_users"], counts["kcore_items"])
    if dropped is not None:
        dropped.update(counts)
    return reviews


def _drop_short_users(reviews: pl.DataFrame, dropped: dict[str, int]) -> pl.DataFrame:
    """Users too short for leave-one-out (only possible with k < MIN_LENGTH)."""
    short = pl.len().over("user") < MIN_LENGTH
    removed = reviews.filter(short)
    dropped["short_users"] = removed["user"].n_unique()
    dropped["short_user_interactions"] = removed.height
    if removed.height:
        log.info("dropped %d users with fewer than %d reviews", dropped["short_users"], MIN_LENGTH)
    return reviews.filter(~short)


# --- ids and sequences -----------------------------------------------------------------


def _chronological(reviews: pl.DataFrame) -> pl.DataFrame:
    """Sort users by first appearance and each user's reviews by time, ties in file order."""
    return (
        reviews.with_columns(pl.col("row").min().over("user").alias("first_row"))
        .sort(["first_row", "time", "row"])
        .with_columns(pl.col("first_row").rank("dense").cast(pl.Int32).alias("user_id"))
    )


def _to_prepared(reviews: pl.DataFrame, meta: dict[str, list[str]]) -> Prepared:
    users = reviews.select("user_id", original="user").unique("user_id", maintain_order=True)
    items = reviews["item"].unique(maintain_order=True)
    item_ids = np.arange(1, len(items) + 1, dtype=np.int32)
    reviews = reviews.with_columns(
        pl.col("item").replace_strict(items, pl.Series(item_ids), return_dtype=pl.Int32).alias("item_id")
    )
    attribute_ids: dict[str, int] = {}
    item_attrs = [np.zeros(0, dtype=np.int32)]
    for asin in items.to_list():
        ids = [attribute_ids.setdefault(name, len(attribute_ids) + 1) for name in meta[asin]]
        item_attrs.append(np.unique(np.asarray(ids, dtype=np.int32)))
    lengths = reviews.group_by("user_id", maintain_order=True).len()["len"].to_numpy()
    sequences = np.split(reviews["item_id"].to_numpy(), np.cumsum(lengths)[:-1])
    return Prepared(
        format="amazon",
        user_ids=users["user_id"].to_numpy(),
        sequences=sequences,
        item_attributes=item_attrs,
        num_attributes=len(attribute_ids),
        id_maps={
            "user_map.parquet": users,
            "item_map.parquet": pl.DataFrame({"item_id": item_ids, "original": items}),
            "attribute_map.parquet": pl.DataFrame(
                {"attribute_id": np.arange(1, len(attribute_ids) + 1, dtype=np.int32),
                 "original": list(attribute_ids)},
                schema={"attribute_id": pl.Int32, "original": pl.String},
            ),
        },
    )
