"""The S3Rec authors' released data (../shared/data/s3rec/README.md): `<Name>.txt` sequences,
`<Name>_item2attributes.json` attributes and `<Name>_sample.txt` sampled-protocol negatives,
read into a `Prepared` (s3rec.data) keeping the authors' ids. Anything unexpected is a
DataError naming the file and the line or key.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from s3rec.data import (MAX_ID, READ_ERRORS, DataError, Prepared, drop_short_users, first_line, numbered_lines,
                        open_text, read_error)

log = logging.getLogger(__name__)


# Pretraining holds a dense (items + 2) × A byte table of which item has which attribute (MAP's
# targets) and an (A + 1) × d embedding: a sparse id in the billions asks for hundreds of GiB.
MAX_ATTRIBUTE_TABLE_BYTES = 2**31


def check_attribute_range(path: str | Path, largest: int, distinct: int, num_items: int) -> None:
    """A (the largest attribute id) small enough for the dense tables it sizes."""
    table = (num_items + 2) * largest
    if table > MAX_ATTRIBUTE_TABLE_BYTES:
        raise DataError(f"{path}: attribute ids run up to {largest:,} ({distinct:,} distinct ids used), so "
                        f"pretraining's items × attributes table would take {table / 2**30:,.1f} GiB; expected "
                        f"ids numbered about 1..{distinct:,} (renumber the attributes)")


def read_s3rec(sequences_path: str | Path, attributes_path: str | Path,
               negatives_path: str | Path | None = None) -> Prepared:
    """Read `<Name>.txt` + `<Name>_item2attributes.json`, keeping the authors' ids, and with
    `negatives_path` their sampled-protocol negatives `<Name>_sample.txt` (read_s3rec_negatives).

    The items are the ids of the sequences, as in the authors' loader (item_size = the
    largest item id in the sequences + 2): they must be exactly 1..M, M the largest, so
    that id k stays id k and no id is an item nobody interacted with. Every item needs an
    attribute entry (the authors' code looks each one up); entries for ids that occur in
    no sequence are dropped and counted. A = the largest attribute id anywhere in the
    attribute file, as the authors' `get_item2attribute_json` computes it.
    """
    user_ids, sequences = _read_s3rec_sequences(Path(sequences_path))
    raw_attributes = _read_s3rec_attributes(Path(attributes_path))
    log.info("read %d users from %s and %d item attribute lists from %s",
             len(user_ids), sequences_path, len(raw_attributes), attributes_path)
    seen_items = np.unique(np.concatenate(sequences))
    if not len(seen_items):
        raise DataError(f"{sequences_path}: no item ids at all; expected lines 'user_id item_id ...'")
    num_items = int(seen_items.max())
    if len(seen_items) != num_items:
        # seen_items is sorted: the first gap is where it leaves 1, 2, 3, ... (no array of 1..M,
        # which for one id near MAX_ID would take 16 GiB)
        first_gap = int(np.flatnonzero(seen_items != np.arange(1, len(seen_items) + 1))[0]) + 1
        raise DataError(
            f"{sequences_path}: item ids are not contiguous: {num_items - len(seen_items)} of the ids 1..{num_items} "
            f"occur in no sequence (the first is {first_gap}); expected every id from 1 to the largest ({num_items}), "
            "as in the authors' release (ids are kept, so a missing id would become an item nobody interacted with)"
        )
    missing = np.setdiff1d(seen_items, np.fromiter(raw_attributes, dtype=np.int64))
    if len(missing):
        raise DataError(
            f"{attributes_path}: no attribute entry for item {int(missing[0])} of {sequences_path} "
            f"({len(missing)} items missing); expected an entry for every item in the sequences"
        )
    all_attributes = [a for values in raw_attributes.values() for a in values]
    check_attribute_range(attributes_path, max(all_attributes, default=0), len(set(all_attributes)), num_items)
    unseen = sorted(item for item in raw_attributes if item > num_items)
    if unseen:
        log.warning("dropping %d attribute entries of %s for item ids that occur in no sequence of %s "
                    "(ids %d..%d; the items are 1..%d)", len(unseen), attributes_path, sequences_path,
                    unseen[0], unseen[-1], num_items)
        raw_attributes = {item: values for item, values in raw_attributes.items() if item <= num_items}
    item_attributes, repeats = attribute_sets(raw_attributes, num_items)
    items_with_repeats = sum(len(v) != len(set(v)) for v in raw_attributes.values())
    if repeats:
        log.info("%d items list a repeated attribute (%d entries removed)", items_with_repeats, repeats)
    prepared = Prepared(
        format="s3rec",
        user_ids=np.asarray(user_ids, dtype=np.int32),
        sequences=sequences,
        item_attributes=item_attributes,
        num_attributes=max(all_attributes, default=0),
        dropped={"duplicate_attribute_entries": repeats,
                 "items_with_duplicate_attributes": items_with_repeats,
                 "attribute_entries_for_unseen_items": len(unseen)},
        parameters={"sequences": Path(sequences_path).name, "attributes": Path(attributes_path).name},
    )
    prepared = drop_short_users(prepared, str(sequences_path))
    if negatives_path is not None:
        prepared.sampled_negatives, skipped = read_s3rec_negatives(
            Path(negatives_path), prepared.user_ids, prepared.sequences, set(user_ids), num_items)
        prepared.parameters["negatives"] = Path(negatives_path).name
        prepared.dropped["negatives_of_short_users"] = skipped
    return prepared


def read_s3rec_negatives(path: Path, user_ids: np.ndarray, sequences: list[np.ndarray], all_users: set[int],
                         num_items: int) -> tuple[np.ndarray, int]:
    """The authors' `<Name>_sample.txt`: per line `user_id neg_1 ... neg_n`, the items their sampled
    protocol ranks the target against (the same for validation and test). Returns (U, n) int32 in
    the order of `user_ids` (the kept users) and how many lines were skipped because their user
    was dropped as too short. Every kept user needs exactly one line of n distinct item ids in
    1..num_items, none of them in that user's sequence (a negative the user has would make the
    protocol rank a positive as a negative); anything else is a DataError naming the line."""
    row_of = {int(user): row for row, user in enumerate(user_ids)}
    negatives: list[np.ndarray | None] = [None] * len(user_ids)
    width, skipped = None, 0
    for lineno, user, ids in _user_lines(path):
        items = np.asarray(ids, dtype=np.int64)
        if user not in all_users:
            raise DataError(f"{path}:{lineno}: user {user} is not a user of the sequences file")
        if user not in row_of:
            skipped += 1  # dropped as too short for leave-one-out: it is not evaluated
            continue
        width = len(items) if width is None else width
        if len(items) != width or not width:
            raise DataError(f"{path}:{lineno}: expected {width or 'at least one'} negatives (as on the first line), "
                            f"got {len(items)}")
        if items.min() < 1 or items.max() > num_items:
            raise DataError(f"{path}:{lineno}: expected item ids in 1..{num_items}, got "
                            f"{int(items.min() if items.min() < 1 else items.max())}")
        if len(np.unique(items)) != width:
            raise DataError(f"{path}:{lineno}: expected {width} distinct items, got a repeated one")
        owned = np.intersect1d(items, sequences[row_of[user]])
        if len(owned):
            raise DataError(f"{path}:{lineno}: item {int(owned[0])} is in user {user}'s sequence; "
                            "expected negatives the user never interacted with")
        negatives[row_of[user]] = items
    missing = [int(user_ids[row]) for row, value in enumerate(negatives) if value is None]
    if missing:
        raise DataError(f"{path}: no line for user {missing[0]} ({len(missing)} users missing); "
                        "expected one line per user of the sequences file")
    if skipped:
        log.info("skipped the negatives of %d users dropped as too short", skipped)
    return np.stack(negatives).astype(np.int32), skipped


def _user_lines(path: Path) -> Iterator[tuple[int, int, list[int]]]:
    """(line number, user id, the ids after it) of a 'user_id item_id ...' file (the authors'
    sequences and negatives): integers only, each user on one line."""
    seen: dict[int, int] = {}
    for lineno, line in numbered_lines(path):
        fields = _SEPARATOR.split(line.strip(" \t\r\n"))
        bad = next((f for f in fields if not _is_int(f)), None)
        if bad is not None:  # also "1_0", "+1", "٥" or "4\x1f5", which int() and str.split() would take
            raise DataError(f"{path}:{lineno}: expected 'user_id item_id ...' of integers, got {bad!r} "
                            "(ids of the digits 0-9, separated by spaces or tabs)")
        ids = [int(f) for f in fields]
        if max(ids) > MAX_ID:
            raise DataError(f"{path}:{lineno}: expected ids up to {MAX_ID} (stored as int32), got {max(ids)}")
        if ids[0] in seen:
            raise DataError(f"{path}:{lineno}: user {ids[0]} already on line {seen[ids[0]]}")
        seen[ids[0]] = lineno
        yield lineno, ids[0], ids[1:]


def _read_s3rec_sequences(path: Path) -> tuple[list[int], list[np.ndarray]]:
    user_ids: list[int] = []
    sequences: list[np.ndarray] = []
    for lineno, user, items in _user_lines(path):
        # A line of only a user id is a user of no items: too short, dropped and counted later.
        smallest = min([user, *items])
        if smallest < 1:
            raise DataError(f"{path}:{lineno}: expected ids >= 1 (0 is padding), got {smallest}")
        user_ids.append(user)
        sequences.append(np.asarray(items, dtype=np.int32))
    return user_ids, sequences


def _read_s3rec_attributes(path: Path) -> dict[int, list[int]]:
    try:
        with open_text(path) as handle:
            text = handle.read()
    except READ_ERRORS as err:
        raise read_error(path, err) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected a JSON object {{\"item_id\": [attribute ids]}}")
    try:  # an object as its (key, value) pairs: a dict would keep only the last of a repeated key
        raw = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON at column {err.colno}: {err.msg}") from None
    except (ValueError, RecursionError) as err:  # an integer of over 4,300 digits; arrays nested too deep
        raise DataError(f"{path}: unreadable JSON ({type(err).__name__}: {first_line(err)}); expected a JSON "
                        "object {\"item_id\": [attribute ids]}") from None
    if not isinstance(raw, _Pairs):
        raise DataError(f"{path}: expected a JSON object mapping item ids to attribute lists")
    result: dict[int, list[int]] = {}
    key_of: dict[int, str] = {}
    for key, values in raw:
        if not _is_int(key) or not _is_id(int(key)):
            raise DataError(f"{path}: key {key!r}: expected an integer item id in 1..{MAX_ID}")
        if key_of.get(int(key)) == key:
            raise DataError(f"{path}: key {key!r} occurs twice; expected one entry per item")
        if int(key) in key_of:  # '4' and '04'
            raise DataError(f"{path}: keys {key_of[int(key)]!r} and {key!r} are both item {int(key)}; "
                            "expected one entry per item")
        # a JSON object is a _Pairs, a list too: `{}` would pass as an empty list
        if not isinstance(values, list) or isinstance(values, _Pairs) or not all(_is_id(v) for v in values):
            shown = dict(values) if isinstance(values, _Pairs) else values
            raise DataError(f"{path}: item {key}: expected a list of integer attribute ids in 1..{MAX_ID}, "
                            f"got {shown!r}")
        key_of[int(key)] = key
        result[int(key)] = values
    return result


class _Pairs(list):
    """A JSON object read as its list of (key, value) pairs, told apart from a JSON array."""


# Fields of the authors' text files: ASCII digits (a minus, to be refused as an id < 1 by name),
# separated by spaces or tabs. int() and str.split() would also take "+1", "1_0" (10), "٥" (5)
# and split at "\x1f" or a no-break space: data changed without a word.
_SEPARATOR = re.compile(r"[ \t]+")
_INTEGER = re.compile(r"-?[0-9]+")


def _is_int(text: str) -> bool:
    return _INTEGER.fullmatch(text) is not None


def _is_id(value: object) -> bool:
    """An integer id in 1..MAX_ID (bool is an int in Python, but never an id)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def attribute_sets(raw: dict[int, list[int]], num_items: int) -> tuple[list[np.ndarray], int]:
    """Per-item sorted unique attribute arrays (index = item id) and how many repeated
    entries the lists held (the authors' release repeats a few ids: they are a set)."""
    item_attributes = [np.zeros(0, dtype=np.int32) for _ in range(num_items + 1)]
    repeats = 0
    for item, values in raw.items():
        unique = np.unique(np.asarray(values, dtype=np.int32))
        repeats += len(values) - len(unique)
        item_attributes[item] = unique
    return item_attributes, repeats
