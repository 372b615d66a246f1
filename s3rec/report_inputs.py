"""What the report reads, checked as it is read: a run's metrics.json (`check_result`), its
ranks.parquet (`read_ranks`), its pretrain_history.csv or finetune_history.csv (`read_history`),
and the report settings (`check_report_settings`). Each raises a ValueError that says which
field, line or column is wrong and what was expected (the callers in s3rec/report.py add the
file's path where the check does not), rather than a TypeError or a polars error deep in a
table, or a figure drawn from text.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from s3rec.config import FINETUNE_LOSSES, SEED_MAX, VARIANT_PATTERN, DuplicateKey, is_seed, unique_keys
from s3rec.data import first_line, read_parquet
from s3rec.metrics import METRICS_FULL, METRICS_SAMPLED


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_name(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_object(value) -> bool:
    return isinstance(value, dict)


_COUNT, _NUMBER = (_is_count, "an integer >= 0"), (_is_number, "a finite number")
_NAME, _OBJECT = (_is_name, "a non-empty string"), (_is_object, "an object")
_SEED = (is_seed, f"an integer in [0, {SEED_MAX}]")
_LOSS = (lambda v: v in FINETUNE_LOSSES, " or ".join(FINETUNE_LOSSES))
# metrics: {protocol: {split: {metric: value}}}, the names evaluation writes: a misspelt one made
# "–" cells or dropped a run from the comparisons without a word
METRIC_NAMES = {"full": METRICS_FULL, "sampled": METRICS_SAMPLED}
SPLITS = ("valid", "test")
# What the report reads from metrics.json besides `metrics`, parents before their children:
# (field, (test, what is expected), whether null stands for "not recorded"). A field may be
# absent (older files lack several, popularity others); null only where the report reads it so.
_RESULT_FIELDS = (
    ("dataset", _NAME, False), ("variant", _NAME, False), ("seed", _SEED, True),
    ("parameters", _OBJECT, False), ("parameters.heads_total", _COUNT, False), ("parameters.total", _COUNT, False),
    ("wall_seconds", _OBJECT, False), ("wall_seconds.pretrain", _NUMBER, False),
    ("wall_seconds.finetune", _NUMBER, False),
    ("cpu_seconds", _OBJECT, True), ("cpu_seconds.pretrain", _NUMBER, True), ("cpu_seconds.finetune", _NUMBER, True),
    ("epochs_run", _COUNT, True), ("best_epoch", _COUNT, True),
    ("early_stopped", (lambda v: isinstance(v, bool), "true or false"), True),
    ("finetune", _OBJECT, True), ("finetune.loss", _LOSS, True),
    ("execution", _OBJECT, True), ("execution.device", _NAME, True), ("execution.threads", _COUNT, True),
    ("config", _OBJECT, True), ("config.model", _OBJECT, True), ("config.model.hidden_size", _COUNT, True),
    ("config.pretrain", _OBJECT, True), ("config.pretrain.preset", _NAME, True),
    ("config.finetune", _OBJECT, True), ("config.finetune.loss", _LOSS, True),
    ("config.finetune.epochs", _COUNT, True), ("config.finetune.patience", _COUNT, True),
)


def read_json_object(path: str | Path, what: str = "(the run's record)") -> dict:
    """A JSON file holding an object (metrics.json, pretrain_run.json), or an error naming it."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except DuplicateKey as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object {what}, got {type(content).__name__}")
    return content


def object_field(record: dict, key: str) -> dict:
    """record[key] where it is an object, else {}: what is not recorded (absent, null, or of
    another type) reads as not recorded."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def check_result(result: dict) -> None:
    """metrics.json (an object, read_json_object) has the structure the report reads (CONTRACTS.md):
    ValueError naming the field and what it should be, rather than a TypeError deep in a conversion."""
    for key in ("dataset", "variant", "metrics"):
        if key not in result:
            raise ValueError(f"no `{key}`; expected a run's metrics.json (CONTRACTS.md)")
    variant = result["variant"]
    if not (isinstance(variant, str) and (variant == "popularity" or VARIANT_PATTERN.match(variant))):
        raise ValueError(f"variant: expected none, full, authors, r<rank> or popularity, got {_show(result['variant'])}")
    if result["variant"] != "popularity" and result.get("seed") is None:  # else tabulated as seed 0
        raise ValueError(f"seed: expected {_SEED[1]} (the run's seed), got {'null' if 'seed' in result else 'none'}")
    for field, (test, expected), nullable in _RESULT_FIELDS:
        *parents, key = field.split(".")
        section = result
        for parent in parents:  # a parent absent or null: nothing below it recorded
            section = section.get(parent)
            if section is None:
                break
        if section is None or key not in section or (section[key] is None and nullable):
            continue
        if not test(section[key]):
            raise ValueError(f"{field}: expected {expected}, got {_show(section[key])}")
    _check_metric_values(result["metrics"])


def _check_metric_values(level, where: str = "metrics", depth: int = 3, names: Sequence[str] | None = None) -> None:
    """metrics: {protocol: {split: {metric: a finite number}}}, each name one evaluation writes."""
    if depth == 0:
        if not _is_number(level):
            raise ValueError(f"{where}: expected a finite number, got {_show(level)}")
        return
    if not isinstance(level, dict):
        raise ValueError(f"{where}: expected an object, got {_show(level)}")
    allowed = {3: tuple(METRIC_NAMES), 2: SPLITS, 1: names}[depth]
    for key, value in level.items():
        if key not in allowed:
            raise ValueError(f"{where}.{key}: expected one of {', '.join(allowed)}")
        _check_metric_values(value, f"{where}.{key}", depth - 1, METRIC_NAMES[key] if depth == 3 else names)


def _show(value) -> str:
    """repr of a value in an error message, cut short (a misplaced list may be long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ranks.parquet's columns (CONTRACTS.md: user_id and rank int32, split and protocol strings)
RANK_COLUMNS = {"user_id": pl.Int32, "split": pl.String, "protocol": pl.String, "rank": pl.Int32}


def read_ranks(path: str | Path) -> pl.DataFrame:
    """One ranks.parquet, checked: its columns (integer ids and ranks, string split and protocol),
    rows, no empty cell, ranks from 1, each user once per split and protocol. Errors name the file."""
    ranks = read_parquet(path)
    schema = ranks.schema
    if set(schema) != set(RANK_COLUMNS) or any(
            not (schema[c].is_integer() if t.is_integer() else schema[c] == t) for c, t in RANK_COLUMNS.items()):
        got = ", ".join(f"{c} {t}" for c, t in schema.items()) or "none"
        raise ValueError(f"{path}: expected the columns user_id (integer), split (string), protocol (string) "
                         f"and rank (integer), got {got}")
    if ranks.is_empty():  # the run would drop out of the difference table without a word
        raise ValueError(f"{path}: no rows; expected a rank per user, split and protocol")
    for column, nulls in zip(ranks.columns, ranks.null_count().row(0)):
        if nulls:
            raise ValueError(f"{path}: {nulls} empty cells in column {column}; expected a value in every row")
    if ranks["rank"].min() < 1:
        raise ValueError(f"{path}: a rank of {ranks['rank'].min()}; ranks are 1-based")
    repeated = ranks.filter(ranks.select("user_id", "split", "protocol").is_duplicated())
    if len(repeated):
        user, split, protocol = repeated.select("user_id", "split", "protocol").row(0)
        raise ValueError(f"{path}: user {user} ranked more than once in split {split!r}, protocol {protocol!r}")
    return ranks.select(list(RANK_COLUMNS))


# Columns a figure draws a line of per run: the training and task losses (pretrain_losses) and the
# validation metrics (finetune_validation). A history lacking one that the others of its kind hold
# would lose its line without a word. Timing columns (added later) and valid_AUC (there only when
# early stopping used the sampled protocol) may be absent.
DRAWN_COLUMNS = ("loss", "aap", "mip", "map", "sp", *(f"valid_{metric}" for metric in METRICS_FULL))


def read_history(path: str | Path) -> pl.DataFrame:
    """One pretrain_history.csv or finetune_history.csv, checked: a row per epoch, an integer
    `epoch` on every row, a number in every other cell (empty allowed outside DRAWN_COLUMNS).
    Errors name the file, and the line and column of a bad cell."""
    try:
        history = pl.read_csv(path, infer_schema_length=None)  # types from every row, not the first 100
    except pl.exceptions.PolarsError as error:
        raise ValueError(f"{path}: not a readable CSV ({first_line(error)}); expected a header and a row "
                         "per epoch") from None
    if "epoch" not in history.columns:
        raise ValueError(f"{path}: no `epoch` column; expected a training history, got columns {history.columns}")
    if history.is_empty():
        raise ValueError(f"{path}: no row; expected a row per epoch")
    for column, dtype in history.schema.items():
        epoch = column == "epoch"
        if not (dtype.is_integer() if epoch else dtype.is_numeric()):
            raise ValueError(f"{path}: {_bad_cell(history, column, 'an integer' if epoch else 'a number')}")
    # an empty cell where a figure draws would drop its point; timing columns may be empty (rows
    # written before a resumed run's code recorded them)
    for column in ("epoch", *(c for c in DRAWN_COLUMNS if c in history.columns)):
        empty = history[column].is_null().arg_true()
        if len(empty):
            raise ValueError(f"{path}: line {empty[0] + 2}, column {column!r}: empty; expected "
                             f"{'an integer' if column == 'epoch' else 'a number'} (a truncated file?)")
    # a column a resumed run's code added is empty on the rows before, never after: an empty cell
    # after a filled one is a damaged row, e.g. a last line cut inside its timing cells
    for column in history.columns:
        filled = history[column].is_not_null()
        first = filled.arg_true()
        gaps = (~filled[first[0]:]).arg_true() if len(first) else []
        if len(gaps):
            raise ValueError(f"{path}: line {first[0] + gaps[0] + 2}, column {column!r}: empty after rows that hold "
                             "it; expected a number (a truncated file?)")
    # a row per epoch from 1 in order, as runs write it: a repeated or missing epoch drew a loop or
    # a jump in the curves without a word
    out_of_place = (history["epoch"] != pl.int_range(1, history.height + 1, eager=True)).arg_true()
    if len(out_of_place):
        row = out_of_place[0]
        raise ValueError(f"{path}: line {row + 2}, column 'epoch': expected {row + 1} (a row per epoch from 1, in "
                         f"order), got {history['epoch'][row]}")
    return history


def _bad_cell(history: pl.DataFrame, column: str, expected: str) -> str:
    """Where `column` first holds no `expected` value: 'line 4, column 'loss': expected ...'."""
    values = history[column]
    numbers = values.cast(pl.Float64, strict=False)
    # "nan" or "inf" convert too, but polars reads a column holding them as text: no number drawn
    bad = values.is_not_null() & (numbers.is_null() | ~numbers.is_finite().fill_null(True))
    if expected == "an integer":
        bad = bad | (numbers % 1 != 0).fill_null(False)
    bad = bad.arg_true()
    if not len(bad):  # every cell converts, e.g. epochs written as 1.0: say the column's type
        return f"column {column!r}: expected {expected} in every row, got {values.dtype} values"
    return f"line {bad[0] + 2}, column {column!r}: expected {expected}, got {values[bad[0]]!r}"  # line 1: header


def check_drawn_columns(kind: str, columns: dict[Path, list[str]]) -> None:
    """Histories of one kind hold the same DRAWN_COLUMNS (see there)."""
    for column in DRAWN_COLUMNS:
        holders = [path for path, names in columns.items() if column in names]
        lacking = [path for path, names in columns.items() if column not in names]
        if holders and lacking:
            raise ValueError(f"{lacking[0]}: no column {column!r}, which {holders[0]} has; expected every "
                             f"{kind} history drawn together to hold it (else its run drops out of the figure)")


# The report settings and their defaults: the config's `report` section (workflow/schemas/
# config.schema.yaml) plus `protocols` (its settings.eval.protocols), as scripts/aggregate.py takes them.
REPORT_DEFAULTS = {
    "split": "test", "metrics": ["HR@10", "NDCG@10", "MRR"], "metric": "NDCG@10",
    "protocols": ["full", "sampled"], "bootstrap_samples": 2000, "bootstrap_seed": 0,
    "confidence": 0.95, "resample_seeds": True,
}


def _integer_from(minimum: int) -> tuple:
    return lambda v: _is_count(v) and v >= minimum, f"an integer >= {minimum}"


def _list_of(names: Sequence[str], unique: bool = False) -> tuple:
    def test(value) -> bool:
        return (isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) and v in names for v in value)
                and (not unique or len(set(value)) == len(value)))
    return test, f"a non-empty list{' without repeats' if unique else ''} of {' | '.join(names)}"


# (test, what is expected) per setting: the schema's constraints (the metric names are its
# $defs/metric, s3rec.metrics.METRICS_SAMPLED; the bootstrap metric is per user, so not AUC).
_REPORT_CHECKS = {
    "split": (lambda v: v in ("valid", "test"), "valid | test"),
    "metrics": _list_of(METRICS_SAMPLED, unique=True),  # a repeat was shown once
    "metric": (lambda v: isinstance(v, str) and v in METRICS_FULL,
               f"one of {' | '.join(METRICS_FULL)} (AUC has no per-user value)"),
    "protocols": _list_of(("full", "sampled"), unique=True),
    "bootstrap_samples": _integer_from(100),  # fewer: unstable interval ends
    "bootstrap_seed": _SEED,
    "confidence": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1 (exclusive), e.g. 0.95"),
    "resample_seeds": (lambda v: isinstance(v, bool), "true or false"),
}


def check_report_settings(settings: dict, source: str) -> None:
    """Check report settings as scripts/aggregate.py's --settings takes them and plan.json's
    `report.tables` holds them (scripts/export_study.py): a dict with any of the keys of
    REPORT_DEFAULTS, absent keys taking those defaults (so plan.json's `report.figures`, with
    metric, split and protocols only, passes too):
        split              "valid" | "test"
        metrics            non-empty list of metric names (s3rec.metrics.METRICS_SAMPLED), no repeats
        metric             a metric name other than AUC (the paired bootstrap is per user)
        protocols          non-empty list of "full" | "sampled", no repeats
        bootstrap_samples  integer >= 100;  bootstrap_seed  integer in [0, 2^32 - 1]
        confidence         number strictly between 0 and 1
        resample_seeds     true | false
    as workflow/schemas/config.schema.yaml's `report` section (and settings.eval.protocols)
    constrains them. A value of another type (a string for a list, "false" for false), out of
    range or unknown, and an unknown key, raise ValueError "<source>: <key>: expected ..., got ...";
    `source` says where the settings come from, e.g. "--settings" or "<plan.json>: report.tables".
    """
    if not isinstance(settings, dict):
        raise ValueError(f"{source}: expected an object of report settings, got {_show(settings)}")
    for key, value in settings.items():
        if key not in _REPORT_CHECKS:
            raise ValueError(f"{source}: unknown key {key!r}; expected some of {sorted(_REPORT_CHECKS)}")
        test, expected = _REPORT_CHECKS[key]
        if not test(value):
            raise ValueError(f"{source}: {key}: expected {expected}, got {_show(value)}")
    merged = {**REPORT_DEFAULTS, **settings}
    if "sampled" not in merged["protocols"] and set(merged["metrics"]) == {"AUC"}:
        # the full ranking has no AUC: before, a table of "–" columns
        raise ValueError(f"{source}: metrics: expected a metric of the full ranking besides AUC (the sampled "
                         f"protocol's alone), as protocols are {merged['protocols']}")


def read_head_weights(path: str | Path) -> dict:
    """The state_dict of a pretrain.pt or heads.pt (scripts/export_study.py heads), for the head
    spectra (scripts/plot_report.py, benchmarks/head_energy.py)."""
    from s3rec.files import load_torch  # here only: torch costs the table scripts two seconds

    checkpoint = load_torch(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path}: expected a pretrain.pt or heads.pt, a dict with a `state_dict` entry (the "
                         "authors' checkpoint: first through scripts/import_checkpoint.py), got "
                         f"{type(checkpoint).__name__}" + (f" with keys {sorted(map(str, checkpoint))[:5]}"
                                                          if isinstance(checkpoint, dict) else ""))
    return checkpoint["state_dict"]


def check_head_finite(path: str | Path, state_dict: dict, head: str) -> None:
    """NaN weights (a diverged pretraining) would stop the SVD with a message naming no file."""
    import torch

    bad = sorted(k for k, v in state_dict.items()
                 if f"heads.{head}." in k and isinstance(v, torch.Tensor) and not v.isfinite().all())
    if bad:
        raise ValueError(f"{path}: NaN or infinite values in {', '.join(bad)} (a diverged "
                         f"pretraining?): no {head} spectrum")
