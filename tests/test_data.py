"""The data contract (load_dataset, leave_one_out), the authors' release format, atomic
writing, and the script's handling of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from s3rec.data import (
    ATTRIBUTES_SCHEMA,
    SEQUENCES_SCHEMA,
    DataError,
    Prepared,
    first_line,
    leave_one_out,
    load_dataset,
    write_prepared,
)
from s3rec.authors_data import read_s3rec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import prepare_data  # noqa: E402


def write_release(tmp_path: Path, sequences: str, attributes: str | dict) -> tuple[Path, Path]:
    seq = tmp_path / "Toy.txt"
    attr = tmp_path / "Toy_item2attributes.json"
    seq.write_text(sequences)
    attr.write_text(attributes if isinstance(attributes, str) else json.dumps(attributes))
    return seq, attr


TOY_SEQUENCES = "1 1 2 3 4\n2 3 1\n3 2 4 1 5\n4 5 2\n"
TOY_ATTRIBUTES = {"1": [2, 1], "2": [3, 3, 3], "3": [1], "4": [2, 4, 2], "5": [4]}


def prepare(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "out"
    prepare_data.main([*args, "--out", str(out)])
    return out


# --- leave_one_out ---------------------------------------------------------------------


def test_leave_one_out_hand_case():
    split = leave_one_out([np.array([5, 6, 7, 8], dtype=np.int32), np.array([1, 2, 3], dtype=np.int32)])
    assert [s.tolist() for s in split.train] == [[5, 6], [1]]
    assert split.valid_target.tolist() == [7, 2] and split.valid_target.dtype == np.int32
    assert split.test_target.tolist() == [8, 3] and split.test_target.dtype == np.int32


def test_leave_one_out_rejects_short_sequence():
    with pytest.raises(ValueError, match="sequence 1 has 2 items"):
        leave_one_out([np.array([1, 2, 3]), np.array([1, 2])])


def test_leave_one_out_targets_are_int32_whatever_the_input_dtype():
    split = leave_one_out([np.array([1, 2, 3, 4], dtype=np.int64)])
    assert split.valid_target.dtype == np.int32 and split.test_target.dtype == np.int32
    assert (split.valid_target.tolist(), split.test_target.tolist()) == ([3], [4])


# --- the authors' release ----------------------------------------------------------------


def test_s3rec_release_exact(tmp_path):
    """Ids are kept; attribute lists become sorted sets; short users are dropped and counted."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))

    sequences = pl.read_parquet(out / "sequences.parquet")
    assert sequences.schema == {"user_id": pl.Int32, "items": pl.List(pl.Int32)}
    assert sequences.to_dict(as_series=False) == {"user_id": [1, 3], "items": [[1, 2, 3, 4], [2, 4, 1, 5]]}
    attributes = pl.read_parquet(out / "item_attributes.parquet")
    assert attributes.schema == {"item_id": pl.Int32, "attributes": pl.List(pl.Int32)}
    assert attributes.to_dict(as_series=False) == {
        "item_id": [1, 2, 3, 4, 5],
        "attributes": [[1, 2], [3], [1], [2, 4], [4]],
    }
    stats = json.loads((out / "stats.json").read_text())
    assert {k: stats[k] for k in ("format", "users", "items", "attributes", "interactions", "avg_length")} == {
        "format": "s3rec", "users": 2, "items": 5, "attributes": 4, "interactions": 8, "avg_length": 4.0,
    }
    assert stats["dropped"] == {
        "duplicate_attribute_entries": 3,
        "items_with_duplicate_attributes": 2,
        "short_users": 2,
        "short_user_interactions": 4,
        "attribute_entries_for_unseen_items": 0,
    }
    assert stats["items_without_interactions"] == 0


def test_load_dataset_contract(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    data = load_dataset(prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr)))
    assert data.user_ids.dtype == np.int32 and data.user_ids.tolist() == [1, 3]
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3, 4], [2, 4, 1, 5]]
    assert all(s.dtype == np.int32 for s in data.sequences)
    assert [a.tolist() for a in data.item_attributes] == [[], [1, 2], [3], [1], [2, 4], [4]]
    assert (data.num_items, data.num_attributes) == (5, 4)


def test_load_dataset_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"sequences\.parquet: file not found"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_load_dataset_names_an_unreadable_parquet_file(tmp_path, damage):
    """A truncated copy or an interrupted download is a DataError naming the file, not polars' own."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    path = out / "item_attributes.parquet"
    whole = path.read_bytes()
    path.write_bytes({"truncated": whole[: len(whole) // 2], "empty": b"", "text": b"not parquet\n"}[damage])
    with pytest.raises(DataError, match=r"item_attributes\.parquet: not a readable parquet file"):
        load_dataset(out)


@pytest.mark.parametrize(
    "frame, message",
    [
        (pl.DataFrame({"user": [1], "items": [[1, 2, 3]]}), r"expected columns \(user_id Int32, items List\(Int32\)\)"),
        (pl.DataFrame({"user_id": [1], "items": [[1, 2, 3]]}), r"got \(user_id Int64, items List\(Int64\)\)"),
    ],
)
def test_load_dataset_wrong_columns(tmp_path, frame, message):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    frame.write_parquet(out / "sequences.parquet")
    with pytest.raises(DataError, match=message):
        load_dataset(out)


@pytest.mark.parametrize("items", [[1, 2, 6], [1, 0, 2]])  # past M = 5; 0, the padding id
def test_load_dataset_item_out_of_range(tmp_path, items):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    pl.DataFrame({"user_id": [1], "items": [items]}, schema=SEQUENCES_SCHEMA).write_parquet(
        out / "sequences.parquet")
    with pytest.raises(DataError, match=r"sequences\.parquet: items: expected item ids in 1\.\.5"):
        load_dataset(out)


def test_load_dataset_item_rows_must_cover_all_items(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    pl.DataFrame({"item_id": [1, 3], "attributes": [[1], [2]]}, schema=ATTRIBUTES_SCHEMA).write_parquet(
        out / "item_attributes.parquet")
    with pytest.raises(DataError, match=r"item_attributes\.parquet: item_id: expected exactly 1\.\.2 in order"):
        load_dataset(out)


def test_load_dataset_item_rows_must_be_in_id_order(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    path = out / "item_attributes.parquet"
    pl.read_parquet(path).reverse().write_parquet(path)  # every item once, ids 5..1
    with pytest.raises(DataError, match=r"item_attributes\.parquet: item_id: expected exactly 1\.\.5 in order"):
        load_dataset(out)


def test_load_dataset_without_stats_json_takes_the_largest_attribute_held(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    (out / "stats.json").unlink()
    assert load_dataset(out).num_attributes == 4


def test_load_dataset_refuses_a_stats_json_that_is_no_object(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    (out / "stats.json").write_text("[4]")
    with pytest.raises(DataError, match=r"stats\.json: not a readable JSON object \(a list\)"):
        load_dataset(out)


def test_first_line_of_a_library_message():
    assert first_line(ValueError("bad footer\n\nHint: read the docs")) == "bad footer"
    assert first_line(ValueError("")) == "ValueError"


# --- bad input: a clear error, and no output -------------------------------------------------


@pytest.mark.parametrize(
    "sequences, attributes, message",
    [
        ("1 1 2 3\n2 4 x 1\n", TOY_ATTRIBUTES, r"Toy\.txt:2: expected 'user_id item_id \.\.\.' of integers, got 'x'"),
        # int() and str.split() took these, changing the data without a word: "5_0" was item 50,
        # "4\x1f5" two items, "+1", "٥" (an Arabic-Indic 5) and a no-break space passed as ids / a separator
        ("\ufeff1 1 2 3\n", TOY_ATTRIBUTES, r"Toy\.txt:1: starts with a UTF-8 byte-order mark \(BOM\)"),
        ("1 1 2 3\n2 5_0 1\n", TOY_ATTRIBUTES, r"Toy\.txt:2: .* got '5_0' \(ids of the digits 0-9, separated by "
                                                r"spaces or tabs\)"),
        ("1 1 2 3\n2 4\x1f5 1\n", TOY_ATTRIBUTES, r"Toy\.txt:2: .* got '4\\x1f5'"),
        ("1 1 2 +3\n", TOY_ATTRIBUTES, r"Toy\.txt:1: .* got '\+3'"),
        ("1 1 2 \u0665\n", TOY_ATTRIBUTES, r"Toy\.txt:1: .* got '\u0665'"),
        ("1 1\u00a02 3\n", TOY_ATTRIBUTES, r"Toy\.txt:1: .* got '1\\xa02'"),
        # the gap check built the array 1..M: 16 GiB for one id near MAX_ID
        ("1 1 2 3\n2 3 2147483647 1\n", {**TOY_ATTRIBUTES, "2147483647": [1]},
         r"Toy\.txt: item ids are not contiguous: 2147483643 of the ids 1\.\.2147483647 occur in no sequence "
         r"\(the first is 4\)"),
        ("1 1 2 3\n\n1 2 3 4\n", TOY_ATTRIBUTES, r"Toy\.txt:3: user 1 already on line 1"),
        ("1 1 0 3\n", TOY_ATTRIBUTES, r"Toy\.txt:1: expected ids >= 1"),
        ("", TOY_ATTRIBUTES, r"Toy\.txt: file is empty"),
        ("1 1 2 3\n", "", r"Toy_item2attributes\.json: file is empty"),
        ("1 1 2 3\n", '{"1": [1],\n "2": [2]\n "3": [3]}', r"Toy_item2attributes\.json:3: malformed JSON"),
        ("1 1 2 3\n", "[[1], [2]]", r"expected a JSON object mapping item ids"),
        ("1 1 2 3\n", {"1": [1], "two": [2], "3": [3]}, r"key 'two': expected an integer item id"),
        ("1 1 2 3\n", {"1": [1], "2": ["a"], "3": [3]}, r"item 2: expected a list of integer attribute ids"),
        # a JSON object is read as a list of pairs: `{}` passed as an empty list, `{"a": 1}` showed tuples
        ("1 1 2 3\n", {"1": {}, "2": [2], "3": [3]}, r"item 1: expected a list of integer attribute ids .*, got \{\}$"),
        ("1 1 2 3\n", {"1": {"a": 1}, "2": [2], "3": [3]}, r"item 1: .*, got \{'a': 1\}$"),
        ("1 1 2 3\n", {" 1": [1], "2": [2], "3": [3]}, r"key ' 1': expected an integer item id"),
        ("1 1 2 3\n", {"1_0": [1], "2": [2], "3": [3]}, r"key '1_0': expected an integer item id"),
        # were a RecursionError and a ValueError (int digit limit) traceback
        ("1 1 2 3\n", '{"1": ' + "[" * 100000, r"Toy_item2attributes\.json: unreadable JSON \(RecursionError: "),
        ("1 1 2 3\n", '{"1": [' + "9" * 5000 + "]}", r"Toy_item2attributes\.json: unreadable JSON \(ValueError: "),
        ("1 1 2 3\n2 4 5 6\n", {"1": [1], "2": [2], "3": [3], "4": [1], "6": [1]},
         r"Toy_item2attributes\.json: no attribute entry for item 5 of .*Toy\.txt"),
        ("1 1 2\n2 3\n", TOY_ATTRIBUTES, r"no users left: all 2 users have fewer than 3 items"),
        # a minus is read as a number, to be refused as an id below 1 by name; a user id is an id too
        ("1 1 -2 3\n", TOY_ATTRIBUTES, r"Toy\.txt:1: expected ids >= 1 \(0 is padding\), got -2"),
        ("1 1 2 3\n0 1 2 3\n", TOY_ATTRIBUTES, r"Toy\.txt:2: expected ids >= 1 \(0 is padding\), got 0"),
        # attribute 0 is padding, and true is no id (bool is an int in Python)
        ("1 1 2 3\n", {"1": [0], "2": [2], "3": [3]},
         r"item 1: expected a list of integer attribute ids in 1\.\.2147483647, got \[0\]"),
        ("1 1 2 3\n", {"1": [True], "2": [2], "3": [3]},
         r"item 1: expected a list of integer attribute ids .*, got \[True\]"),
        ("1 1 2 3\n", " \n\n", r"Toy_item2attributes\.json: file is empty"),
    ],
)
def test_s3rec_bad_input(tmp_path, sequences, attributes, message):
    seq, attr = write_release(tmp_path, sequences, attributes)
    with pytest.raises(DataError, match=message):
        read_s3rec(seq, attr)


def test_ids_separated_by_several_spaces_or_tabs_are_read_as_by_one(tmp_path):
    seq, attr = write_release(tmp_path, "1  1 2\t\t3 4\n2 3 \t1 2\n", TOY_ATTRIBUTES)
    assert [s.tolist() for s in read_s3rec(seq, attr).sequences] == [[1, 2, 3, 4], [3, 1, 2]]


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_s3rec(tmp_path / "nope.txt", tmp_path / "nope.json")


def test_failure_keeps_previous_output(tmp_path, capsys):
    """The script exits non-zero with the message; an existing --out is left untouched."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    seq.write_text("1 1 2 3\n2 oops\n")
    with pytest.raises(SystemExit) as exit_info:
        prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    assert "Toy.txt:2: expected 'user_id item_id ...' of integers, got 'oops'" in str(exit_info.value.code)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Toy.txt", "Toy_item2attributes.json", "out"]


def test_success_replaces_previous_output(tmp_path):
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    seq.write_text(TOY_SEQUENCES + "5 1 2 3\n")
    prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    assert sorted(p.name for p in out.iterdir()) == ["item_attributes.parquet", "sequences.parquet", "stats.json"]
    assert json.loads((out / "stats.json").read_text())["users"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Toy.txt", "Toy_item2attributes.json", "out"]


def test_preparing_again_writes_the_same_bytes(tmp_path):
    """Runs resume only when their inputs' bytes are unchanged (runtime.digest); Snakemake re-prepares
    whenever the raw files look newer, so equal raw data must give byte-equal prepared files."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    out = prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    prepare(tmp_path, "--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    """A crash half-way through writing removes the temporary directory."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    prepared = read_s3rec(seq, attr)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("s3rec.data.json.dumps", explode)
    with pytest.raises(OSError, match="disk full"):
        write_prepared(prepared, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Toy.txt", "Toy_item2attributes.json"]


def consistent() -> Prepared:
    return Prepared(format="s3rec", user_ids=np.array([1, 2]), sequences=[np.array([1, 2, 3]), np.array([3, 1, 2])],
                    item_attributes=[np.zeros(0, dtype=np.int32), np.array([1]), np.array([2]), np.array([1, 2])],
                    num_attributes=2)


@pytest.mark.parametrize("change, message", [
    ({"user_ids": np.array([1, 1])}, r"s3rec: user ids are not unique"),
    ({"sequences": [np.array([1, 2, 3]), np.array([0, 1, 2])]}, r"s3rec: item ids outside 1\.\.3"),
    ({"sequences": [np.array([1, 2, 3]), np.array([4, 1, 2])]}, r"s3rec: item ids outside 1\.\.3"),
    ({"num_attributes": 1}, r"s3rec: attribute ids outside 1\.\.1"),
    ({"user_ids": np.zeros(0, dtype=np.int64), "sequences": []}, r"s3rec: the output would have no users"),
])
def test_write_prepared_refuses_an_inconsistent_data_set_before_writing(tmp_path, change, message):
    """A reader bug is caught before it reaches disk, by name."""
    write_prepared(consistent(), tmp_path / "good")  # the data set unchanged is written
    prepared = consistent()
    for key, value in change.items():
        setattr(prepared, key, value)
    with pytest.raises(DataError, match=message):
        write_prepared(prepared, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_script_runs_from_repo_root(tmp_path):
    """`python scripts/prepare_data.py` works; bad input: exit 1, a message, no traceback."""
    seq, attr = write_release(tmp_path, TOY_SEQUENCES, TOY_ATTRIBUTES)
    command = [sys.executable, "scripts/prepare_data.py", "--format", "s3rec", "--sequences", str(seq),
               "--attributes", str(attr), "--out", str(tmp_path / "out")]
    ok = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stderr and "short_users" in ok.stderr
    attr.write_text('{"1": [1], "2": [2]}')
    bad = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "no attribute entry for item 3" in bad.stderr and "Traceback" not in bad.stderr


def test_script_requires_format_inputs(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--format", "amazon", "--reviews", "r.json", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
