"""The prepared data set on disk: its schema, loading, writing, and the leave-one-out split.

A prepared data set is a directory holding `sequences.parquet`, `item_attributes.parquet`
and `stats.json` (plus id maps for raw Amazon input, and the authors' sampled-protocol
negatives when given); see resources/README.md. Every
reader of raw input (`s3rec.authors_data`, `s3rec.amazon`, `s3rec.synthetic`) returns a
`Prepared`, and `write_prepared` is the only code that writes the directory; the helpers
at the end read their text files.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

# Leave-one-out needs a training item plus the validation and test targets.
MIN_LENGTH = 3
# Ids are stored as int32 (parquet list<int32>); a larger one is a DataError, not a numpy overflow.
MAX_ID = 2**31 - 1

SEQUENCES_FILE = "sequences.parquet"
ATTRIBUTES_FILE = "item_attributes.parquet"
STATS_FILE = "stats.json"
SEQUENCES_SCHEMA = {"user_id": pl.Int32, "items": pl.List(pl.Int32)}
ATTRIBUTES_SCHEMA = {"item_id": pl.Int32, "attributes": pl.List(pl.Int32)}
# The sampled protocol's negatives read from the authors' <Name>_sample.txt (eval.negatives: file)
NEGATIVES_FILE = "sampled_negatives.parquet"
NEGATIVES_SCHEMA = {"user_id": pl.Int32, "negatives": pl.List(pl.Int32)}
# Every file `write_prepared` may write, with its parquet schema (None: stats.json). A
# directory holding nothing but these (and staging folders of a killed run) is a previous
# output and may be replaced; anything else in it is never deleted.
OUTPUT_FILES: dict[str, dict[str, pl.DataType] | None] = {
    SEQUENCES_FILE: SEQUENCES_SCHEMA,
    ATTRIBUTES_FILE: ATTRIBUTES_SCHEMA,
    STATS_FILE: None,
    NEGATIVES_FILE: NEGATIVES_SCHEMA,
    "user_map.parquet": {"user_id": pl.Int32, "original": pl.String},
    "item_map.parquet": {"item_id": pl.Int32, "original": pl.String},
    "attribute_map.parquet": {"attribute_id": pl.Int32, "original": pl.String},
}
FORMATS = ("s3rec", "amazon", "synthetic")
STAGING_PREFIX = ".prepare_data.tmp-"


class DataError(ValueError):
    """Input that cannot be turned into (or read as) a prepared data set.

    The message names the file, the line or field, and what was expected.
    """


class OutputRefused(Exception):
    """The output directory cannot be written without losing something that is not ours
    (or it is not a directory at all). Nothing has been touched."""


# ---------------------------------------------------------------------------------------
# The contract used by training and evaluation (CONTRACTS.md)


@dataclass(frozen=True)
class Dataset:
    user_ids: np.ndarray  # (U,) int32, as stored in sequences.parquet
    sequences: list[np.ndarray]  # U int32 arrays of item ids in 1..num_items, chronological
    item_attributes: list[np.ndarray]  # len num_items + 1, index = item id, [0] empty
    num_items: int  # items are 1..num_items (0 = padding)
    num_attributes: int  # attributes are 1..num_attributes (0 = padding)


@dataclass(frozen=True)
class Split:
    train: list[np.ndarray]  # items[:-2]
    valid_target: np.ndarray  # (U,) int32, items[-2]
    test_target: np.ndarray  # (U,) int32, items[-1]


def leave_one_out(sequences: Sequence[np.ndarray]) -> Split:
    """The paper's split: train on all but the last two items, validate on the second to
    last, test on the last."""
    for index, seq in enumerate(sequences):
        if len(seq) < MIN_LENGTH:
            raise ValueError(
                f"sequence {index} has {len(seq)} items; leave-one-out needs at least {MIN_LENGTH}"
            )
    return Split(
        train=[np.asarray(seq[:-2], dtype=np.int32) for seq in sequences],
        valid_target=np.array([seq[-2] for seq in sequences], dtype=np.int32),
        test_target=np.array([seq[-1] for seq in sequences], dtype=np.int32),
    )


def load_dataset(directory: str | Path) -> Dataset:
    """Read and check `sequences.parquet` and `item_attributes.parquet` in `directory`.

    A (num_attributes) is stats.json's `attributes`, the vocabulary prepare_data declared (the
    authors' A: the largest id anywhere in their attribute file, dropped entries included);
    without stats.json, the largest id the items hold."""
    directory = Path(directory)
    seq_path, attr_path = directory / SEQUENCES_FILE, directory / ATTRIBUTES_FILE
    sequences = _read_checked(seq_path, SEQUENCES_SCHEMA)
    _check_users(sequences, seq_path)
    attributes = _read_checked(attr_path, ATTRIBUTES_SCHEMA)
    num_items = attributes.height
    if not np.array_equal(attributes["item_id"].to_numpy(), np.arange(1, num_items + 1)):
        raise DataError(f"{attr_path}: item_id: expected exactly 1..{num_items} in order, one row per item")
    seqs, items = _split_lists(sequences["items"], seq_path)
    if len(items) and not (items.min() >= 1 and items.max() <= num_items):
        raise DataError(f"{seq_path}: items: expected item ids in 1..{num_items} (the items of {attr_path.name})")
    item_attributes, attrs = _split_lists(attributes["attributes"], attr_path)
    if len(attrs) and attrs.min() < 1:
        raise DataError(f"{attr_path}: attributes: expected attribute ids >= 1 (0 is padding)")
    return Dataset(
        user_ids=sequences["user_id"].to_numpy(),
        sequences=seqs,
        item_attributes=[np.zeros(0, dtype=np.int32)] + item_attributes,
        num_items=num_items,
        num_attributes=_declared_attributes(directory / STATS_FILE, int(attrs.max()) if len(attrs) else 0),
    )


def _check_users(sequences: pl.DataFrame, path: Path) -> None:
    """The contract prepare_data keeps: some users, each once, each with MIN_LENGTH items or more
    (a hand-edited file otherwise failed later without naming it, or ranked a user twice)."""
    if sequences.is_empty():
        raise DataError(f"{path}: no rows; expected one row per user")
    repeated = sequences["user_id"].filter(sequences["user_id"].is_duplicated())
    if len(repeated):
        raise DataError(f"{path}: user_id {repeated[0]} has {len(repeated.filter(repeated == repeated[0]))} rows; "
                        "expected one row per user")
    lengths = sequences["items"].list.len()
    if lengths.min() < MIN_LENGTH:
        short = sequences.filter(lengths < MIN_LENGTH)
        raise DataError(f"{path}: user_id {short['user_id'][0]} has {short['items'][0].len()} items "
                        f"({len(short)} users below {MIN_LENGTH}); expected at least {MIN_LENGTH} for the "
                        "leave-one-out split")


def _read_stats(stats_path: Path) -> dict | None:
    """A prepared data set's stats.json as a dict; None when there is none."""
    if not stats_path.is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{stats_path}: not a readable JSON object ({err}); prepare the data set again") from None
    if not isinstance(stats, dict):
        raise DataError(f"{stats_path}: not a readable JSON object (a {type(stats).__name__}); prepare the data set again")
    return stats


def prepared_format(directory: str | Path) -> str | None:
    """The --format a data set was prepared with (s3rec, amazon, synthetic), from its stats.json;
    None without one."""
    stats = _read_stats(Path(directory) / STATS_FILE)
    return None if stats is None else stats.get("format")


def _declared_attributes(stats_path: Path, largest_held: int) -> int:
    stats = _read_stats(stats_path)
    if stats is None:
        return largest_held
    declared = stats.get("attributes")
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < largest_held:
        raise DataError(f"{stats_path}: attributes: expected an integer >= {largest_held} (the largest attribute "
                        f"id of {ATTRIBUTES_FILE}), got {declared!r}")
    return declared


def load_sampled_negatives(directory: str | Path, user_ids: np.ndarray) -> np.ndarray:
    """(U, n) int32: the prepared `sampled_negatives.parquet`, one row per user of `user_ids`, in
    that order (what `authors_data.read_s3rec_negatives` checked against the sequences when it was prepared)."""
    path = Path(directory) / NEGATIVES_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found; eval.negatives: file needs the data set prepared with "
                        "--negatives <Name>_sample.txt (datasets.<name>.negatives in the workflow)")
    frame = _read_checked(path, NEGATIVES_SCHEMA)
    if not np.array_equal(frame["user_id"].to_numpy(), user_ids):
        raise DataError(f"{path}: user_id: expected the users of {SEQUENCES_FILE}, in its order")
    rows, _ = _split_lists(frame["negatives"], path)
    if len({len(row) for row in rows}) > 1:
        raise DataError(f"{path}: negatives: expected the same number of negatives for every user")
    return np.stack(rows).astype(np.int32)


def read_parquet(path: str | Path, advice: str = "") -> pl.DataFrame:
    """pl.read_parquet; a truncated, empty or non-parquet file is a DataError naming it (polars'
    own error names no file), with `advice` on what to do."""
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({first_line(error)})"
                        + (f"; {advice}" if advice else "")) from None


def first_line(error: Exception) -> str:
    """The first line of a library's message (polars adds paragraphs of advice)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _read_checked(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a prepared data set (scripts/prepare_data.py)")
    frame = read_parquet(path, "prepare the data set again (scripts/prepare_data.py)")
    if dict(frame.schema) != schema:
        want = ", ".join(f"{k} {v}" for k, v in schema.items())
        got = ", ".join(f"{k} {v}" for k, v in frame.schema.items())
        raise DataError(f"{path}: expected columns ({want}), got ({got})")
    if frame.null_count().sum_horizontal().item():
        raise DataError(f"{path}: expected no null values")
    return frame


def _split_lists(column: pl.Series, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A list<int32> column as one numpy array per row (views into one flat array), and
    the flat array itself."""
    # Empty lists are left out before exploding: polars < 1.36 explodes [] into a null and
    # has no `empty_as_null` switch (added in 1.36); the lengths below put the rows back together.
    values = column.filter(column.list.len() > 0).explode()
    if values.null_count():
        raise DataError(f"{path}: {column.name}: expected no null ids inside the lists")
    flat = values.to_numpy()
    lengths = column.list.len().to_numpy()
    rows = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return rows, flat


# ---------------------------------------------------------------------------------------
# Writing a prepared data set


@dataclass
class Prepared:
    """A data set ready to be written, as every input format produces it."""

    format: str
    user_ids: np.ndarray  # (U,) int
    sequences: list[np.ndarray]  # chronological item ids in 1..num_items
    item_attributes: list[np.ndarray]  # index = item id, [0] unused; sorted unique ids
    num_attributes: int
    dropped: dict[str, int] = field(default_factory=dict)  # what was dropped, and why
    parameters: dict[str, Any] = field(default_factory=dict)  # how it was made
    id_maps: dict[str, pl.DataFrame] = field(default_factory=dict)  # file name -> map
    sampled_negatives: np.ndarray | None = None  # (U, n) per user in user_ids order, or None

    @property
    def num_items(self) -> int:
        return len(self.item_attributes) - 1


def drop_short_users(prepared: Prepared, source: str) -> Prepared:
    """Drop users too short for leave-one-out, counting them; fail if nobody is left."""
    lengths = np.array([len(s) for s in prepared.sequences], dtype=np.int64)
    keep = lengths >= MIN_LENGTH
    short = int((~keep).sum())
    if short:
        log.info("dropping %d users with fewer than %d items (%d interactions)",
                 short, MIN_LENGTH, int(lengths[~keep].sum()))
    if not keep.any():
        raise DataError(
            f"{source}: no users left: all {len(lengths)} users have fewer than {MIN_LENGTH} items "
            "(leave-one-out needs a training item, a validation and a test target)"
        )
    prepared.user_ids = prepared.user_ids[keep]
    prepared.sequences = [s for s, k in zip(prepared.sequences, keep) if k]
    prepared.dropped["short_users"] = short
    prepared.dropped["short_user_interactions"] = int(lengths[~keep].sum())
    return prepared


def stats_of(prepared: Prepared) -> dict[str, Any]:
    lengths = np.array([len(s) for s in prepared.sequences], dtype=np.int64)
    return {
        "format": prepared.format,
        "users": len(lengths),
        "items": prepared.num_items,
        "attributes": prepared.num_attributes,
        "interactions": int(lengths.sum()),
        "avg_length": round(float(lengths.mean()), 4),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "items_without_attributes": sum(len(a) == 0 for a in prepared.item_attributes[1:]),
        "items_without_interactions": items_without_interactions(prepared),
        **({} if prepared.sampled_negatives is None
           else {"sampled_negatives_per_user": int(prepared.sampled_negatives.shape[1])}),
        "dropped": prepared.dropped,
        "parameters": prepared.parameters,
    }


def items_without_interactions(prepared: Prepared) -> int:
    """Item ids in 1..M that occur in no sequence (after users were dropped)."""
    seen = np.zeros(prepared.num_items + 1, dtype=bool)
    for seq in prepared.sequences:
        seen[seq] = True
    return int(prepared.num_items - seen[1:].sum())


def write_prepared(prepared: Prepared, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Write the data set into the directory `out` and return its statistics.

    `out` must be missing, empty, or hold only files this function writes (a previous
    output); with `force` it may hold other files too, which are left as they are.
    Anything else raises `OutputRefused` before anything is touched.

    Everything is first written to a staging folder inside `out`; only once complete are
    the files moved into place (the old stats.json removed first, the new one moved last,
    so a directory with a stats.json is complete) and files of an earlier output that this
    one does not have (id maps) removed. A failure removes the staging folder and any
    directory it created: no partial output, and an older output left as it was.
    """
    out = Path(out)
    _check_consistent(prepared)
    stats = stats_of(prepared)
    if stats["items_without_interactions"]:
        log.warning("%d of %d items occur in no sequence; they stay items (candidates in ranking)",
                    stats["items_without_interactions"], stats["items"])
    check_output_dir(out, force)
    created = _make_dirs(out)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        _sequences_frame(prepared).write_parquet(staging / SEQUENCES_FILE)
        _attributes_frame(prepared).write_parquet(staging / ATTRIBUTES_FILE)
        for name, frame in prepared.id_maps.items():
            frame.write_parquet(staging / name)
        if prepared.sampled_negatives is not None:
            _negatives_frame(prepared).write_parquet(staging / NEGATIVES_FILE)
        (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
        _install(staging, out)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
        raise
    return stats


def check_output_dir(out: str | Path, force: bool = False) -> None:
    """Raise `OutputRefused` unless `out` can be written without losing anything: it is
    missing (its nearest existing ancestor a directory), an empty directory, or a
    directory holding only a previous output (with `force`: any directory)."""
    if str(out) == "":
        raise OutputRefused("'': expected a directory path, got an empty string")
    out = Path(out)
    if os.path.islink(out) and not out.exists():
        raise OutputRefused(f"{out}: a symbolic link to nothing; expected a directory or a path that does not exist")
    if not out.exists():
        ancestor = out.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            if os.path.islink(ancestor):  # mkdir cannot make a folder where a dangling link (or loop) is
                raise OutputRefused(f"{out}: {ancestor} is a symbolic link to nothing; expected a directory path")
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputRefused(f"{out}: {ancestor} is a file, not a directory; expected a directory path")
        return
    if not out.is_dir():
        raise OutputRefused(
            f"{out}: is an existing file; expected a directory (missing, empty, or a previous output)"
        )
    if force:
        blocking = [name for name in OUTPUT_FILES if (out / name).exists() and not (out / name).is_file()]
        if blocking:
            raise OutputRefused(f"{out / blocking[0]}: is not a file; expected a file this tool may replace")
        return
    foreign = sorted(entry.name for entry in out.iterdir() if not _is_own(entry))
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputRefused(
            f"{out}: holds {len(foreign)} {'entry' if len(foreign) == 1 else 'entries'} this tool did not write "
            f"({shown}); expected a missing or "
            "empty directory or a previous output. Choose another --out, or add --force to write into it "
            "(other files are kept)"
        )


def _is_own(entry: Path) -> bool:
    """A file `write_prepared` writes (recognised by name and content), or the staging
    folder of a run that was killed."""
    if entry.is_symlink():
        return False
    if entry.name.startswith(STAGING_PREFIX):
        return entry.is_dir()
    if entry.name not in OUTPUT_FILES or not entry.is_file():
        return False
    schema = OUTPUT_FILES[entry.name]
    try:
        if schema is None:
            stats = json.loads(entry.read_text(encoding="utf-8"))
            return isinstance(stats, dict) and stats.get("format") in FORMATS and "dropped" in stats
        return dict(pl.read_parquet_schema(entry)) == schema
    except Exception:  # unreadable, not JSON, not parquet: not ours
        return False


def _make_dirs(out: Path) -> list[Path]:
    """Create `out` and missing parents; return the directories created, outermost first."""
    missing = []
    directory = out
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    created = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    except BaseException:
        for directory in reversed(created):
            directory.rmdir()
        raise
    return created


def _install(staging: Path, out: Path) -> None:
    """Move the staged files into `out`, stats.json last, and remove what is left of an
    earlier output (its stats.json first, id maps this output does not have, staging
    folders of killed runs). Only files `_is_own` recognises are removed."""
    written = {path.name for path in staging.iterdir()}
    old_stats = out / STATS_FILE
    if old_stats.exists() and _is_own(old_stats):
        old_stats.unlink()
    for name in OUTPUT_FILES:
        if name not in written and (out / name).exists() and _is_own(out / name):
            (out / name).unlink()
    for name in sorted(written - {STATS_FILE}):
        os.replace(staging / name, out / name)
    os.replace(staging / STATS_FILE, out / STATS_FILE)
    staging.rmdir()
    for entry in out.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and _is_own(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _check_consistent(prepared: Prepared) -> None:
    """Catch a reader bug before it reaches disk: users present and unique, ids in range."""
    if not prepared.sequences:
        raise DataError(f"{prepared.format}: the output would have no users")
    if len(np.unique(prepared.user_ids)) != len(prepared.user_ids):
        raise DataError(f"{prepared.format}: user ids are not unique")
    flat = np.concatenate(prepared.sequences)
    if flat.min() < 1 or flat.max() > prepared.num_items:
        raise DataError(f"{prepared.format}: item ids outside 1..{prepared.num_items}")
    attrs = [a for a in prepared.item_attributes[1:] if len(a)]
    if attrs:
        flat_attrs = np.concatenate(attrs)
        if flat_attrs.min() < 1 or flat_attrs.max() > prepared.num_attributes:
            raise DataError(f"{prepared.format}: attribute ids outside 1..{prepared.num_attributes}")


def _sequences_frame(prepared: Prepared) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": pl.Series(np.asarray(prepared.user_ids, dtype=np.int32)),
            "items": pl.Series([s.tolist() for s in prepared.sequences], dtype=pl.List(pl.Int32)),
        },
        schema=SEQUENCES_SCHEMA,
    )


def _negatives_frame(prepared: Prepared) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": pl.Series(np.asarray(prepared.user_ids, dtype=np.int32)),
            "negatives": pl.Series(prepared.sampled_negatives.astype(np.int32).tolist(), dtype=pl.List(pl.Int32)),
        },
        schema=NEGATIVES_SCHEMA,
    )


def _attributes_frame(prepared: Prepared) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(1, prepared.num_items + 1, dtype=np.int32)),
            "attributes": pl.Series(
                [np.asarray(a).tolist() for a in prepared.item_attributes[1:]], dtype=pl.List(pl.Int32)
            ),
        },
        schema=ATTRIBUTES_SCHEMA,
    )


# ---------------------------------------------------------------------------------------
# Reading input files


GZIP_MAGIC = b"\x1f\x8b"
# What reading a damaged file raises: a truncated gzip stream (EOFError), a corrupt one
# (BadGzipFile, zlib.error), bytes that are not UTF-8 (UnicodeDecodeError).
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError)


def open_text(path: str | Path) -> TextIO:
    """Open a UTF-8 text file, gunzipping it when it starts with the gzip magic bytes
    (whatever its name); a missing file is a `DataError`. Reading may raise one of
    `READ_ERRORS`: `read_error` turns it into a `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    # newline="\n": lines end at \n only (\r\n kept whole), so numbered_lines sees a lone \r instead
    # of Python splitting one record in two and every later line number drifting
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


def read_error(path: str | Path, err: Exception, after_line: int = 0) -> DataError:
    """A `DataError` naming the file and the line (or the last line read) for one of
    `READ_ERRORS`; `after_line` is the number of lines read before the error."""
    where = f"{path}: after line {after_line}" if after_line else f"{path}"
    if isinstance(err, EOFError):
        return DataError(f"{where}: the gzip file ends early (truncated, e.g. an incomplete download); "
                         "expected a complete .gz file")
    if isinstance(err, UnicodeDecodeError):
        # The decoder's input starts right after the last complete line read.
        line = after_line + 1 + err.object[: err.start].count(b"\n")
        return DataError(f"{path}:{line}: byte {err.object[err.start]:#04x} is not UTF-8 text; "
                         "expected a UTF-8 (or gzipped UTF-8) text file")
    return DataError(f"{where}: corrupt gzip data ({err}); expected a valid .gz file")


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line; an empty, truncated or
    undecodable file is a `DataError`."""
    seen = False
    lineno = 0
    with open_text(path) as handle:
        lines = iter(handle)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except READ_ERRORS as err:
                raise read_error(path, err, after_line=lineno) from None
            lineno += 1
            if lineno == 1 and line.startswith("\ufeff"):  # else a parse error at line 1 that shows no cause
                raise DataError(f"{path}:1: starts with a UTF-8 byte-order mark (BOM); expected UTF-8 text "
                                "without one (re-save the file without BOM)")
            if "\r" in line.removesuffix("\n").removesuffix("\r"):
                raise DataError(f"{path}:{lineno}: a carriage return (\\r) inside the line; expected lines "
                                "ended by \\n or \\r\\n (old Mac line endings, or a stray \\r: convert the file)")
            if line.strip():
                seen = True
                yield lineno, line
    if not seen:
        raise DataError(f"{path}: file is empty; expected one record per line")
