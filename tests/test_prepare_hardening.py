"""scripts/prepare_data.py with hostile input (issue 8): an --out that holds other files or
is a file, `--out .`, attribute entries for items that never occur, damaged input files, an
older polars."""
from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from s3rec.authors_data import check_attribute_range, read_s3rec
from s3rec.data import DataError, load_dataset, write_prepared

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import prepare_data  # noqa: E402

SEQUENCES = "1 1 2 3 4\n2 3 1 2\n3 2 4 1 5\n"
ATTRIBUTES = {"1": [1, 2], "2": [3], "3": [1], "4": [2, 4], "5": [4]}
OUTPUT = ["item_attributes.parquet", "sequences.parquet", "stats.json"]


@pytest.fixture
def release(tmp_path) -> tuple[Path, Path]:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    seq, attr = inputs / "Toy.txt", inputs / "Toy_item2attributes.json"
    seq.write_text(SEQUENCES)
    attr.write_text(json.dumps(ATTRIBUTES))
    return seq, attr


def run(release: tuple[Path, Path], out: Path | str, *extra: str) -> dict:
    seq, attr = release
    return prepare_data.main(["--format", "s3rec", "--sequences", str(seq), "--attributes", str(attr),
                              "--out", str(out), *extra])


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` (relative) -> its bytes (None for a folder)."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def refused(capsys, call) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# --- finding 1: what --out may be ----------------------------------------------------------


def test_out_with_unrelated_files_is_refused_and_untouched(tmp_path, release, capsys):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.csv").write_text("1,2")
    before = snapshot(tmp_path)
    message = refused(capsys, lambda: run(release, out))
    assert f"{out}: holds 2 entries this tool did not write ('notes.txt', 'sub')" in message
    assert "--force" in message and len(message.strip().splitlines()) <= 2
    assert snapshot(tmp_path) == before


def test_force_writes_beside_unrelated_files_and_keeps_them(tmp_path, release):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    run(release, out, "--force")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT + ["notes.txt", "sub"])
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub").is_dir()
    assert load_dataset(out).num_items == 5


def test_previous_output_is_replaced_and_its_extra_files_removed(tmp_path, release):
    """A previous output (here with an amazon id map) is recognised by its files and replaced;
    a directory holding part of one (snakemake removes the declared outputs before a rerun)
    too."""
    out = tmp_path / "out"
    run(release, out)
    pl.DataFrame({"user_id": [1], "original": ["A1"]},
                 schema={"user_id": pl.Int32, "original": pl.String}).write_parquet(out / "user_map.parquet")
    run(release, out)
    assert sorted(p.name for p in out.iterdir()) == OUTPUT
    for name in ("stats.json", "sequences.parquet"):
        (out / name).unlink()
    run(release, out)
    assert sorted(p.name for p in out.iterdir()) == OUTPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]


def test_a_foreign_file_with_an_output_name_is_not_taken_for_ours(tmp_path, release, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.json").write_text('{"accuracy": 0.9}')
    before = snapshot(tmp_path)
    assert "('stats.json')" in refused(capsys, lambda: run(release, out))
    assert snapshot(tmp_path) == before


def test_out_with_more_than_three_unrelated_entries_shows_three(tmp_path, release, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (out / name).write_text("mine")
    message = refused(capsys, lambda: run(release, out))
    assert f"{out}: holds 4 entries this tool did not write ('a.txt', 'b.txt', 'c.txt', ...)" in message


def _foreign_lookalike(out: Path, kind: str) -> None:
    """An entry named like one this tool writes, that it did not write."""
    if kind == "stats.json without dropped":
        (out / "stats.json").write_text('{"format": "s3rec"}')
    elif kind == "parquet of other columns":
        pl.DataFrame({"user_id": [1], "score": [0.5]}).write_parquet(out / "sequences.parquet")
    elif kind == "file named like a staging folder":
        (out / ".prepare_data.tmp-notes").write_text("mine")
    else:  # a link to a previous output's stats.json elsewhere
        elsewhere = out.parent / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "stats.json").write_text(json.dumps({"format": "s3rec", "dropped": {}}))
        (out / "stats.json").symlink_to(elsewhere / "stats.json")


@pytest.mark.parametrize("kind", ["stats.json without dropped", "parquet of other columns",
                                  "file named like a staging folder", "symbolic link"])
def test_an_entry_that_only_looks_like_ours_is_refused_and_untouched(tmp_path, release, capsys, kind):
    out = tmp_path / "out"
    out.mkdir()
    _foreign_lookalike(out, kind)
    before = snapshot(tmp_path)
    assert "holds 1 entry this tool did not write" in refused(capsys, lambda: run(release, out))
    assert snapshot(tmp_path) == before


def test_force_refuses_a_folder_named_like_an_output_file(tmp_path, release, capsys):
    out = tmp_path / "out"
    (out / "sequences.parquet").mkdir(parents=True)
    message = refused(capsys, lambda: run(release, out, "--force"))
    assert f"{out / 'sequences.parquet'}: is not a file; expected a file this tool may replace" in message
    assert sorted(p.name for p in out.iterdir()) == ["sequences.parquet"]


def test_staging_folders_of_a_killed_run_are_removed(tmp_path, release):
    out = tmp_path / "out"
    run(release, out)
    (out / ".prepare_data.tmp-killed").mkdir()
    (out / ".prepare_data.tmp-killed" / "sequences.parquet").write_bytes(b"half")
    run(release, out)
    assert sorted(p.name for p in out.iterdir()) == OUTPUT


def test_an_install_that_fails_half_way_leaves_no_stats_json(tmp_path, release, monkeypatch):
    """A directory with a stats.json is complete: the old one is removed before the first file is
    moved into place, and the new one is moved last."""
    out = tmp_path / "out"
    run(release, out)
    release[0].write_text(SEQUENCES + "4 5 4 3\n")
    prepared = read_s3rec(*release)
    real_replace, moved = os.replace, []

    def replace_once(source, target):
        if moved:
            raise OSError("disk full")
        moved.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr("s3rec.data.os.replace", replace_once)
    with pytest.raises(OSError, match="disk full"):
        write_prepared(prepared, out)
    assert moved == ["item_attributes.parquet"]
    assert not (out / "stats.json").exists()


def test_out_that_is_a_file_is_refused(tmp_path, release, capsys):
    out = tmp_path / "out"
    out.write_text("precious")
    message = refused(capsys, lambda: run(release, out))
    assert f"{out}: is an existing file; expected a directory" in message
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]


def test_out_below_a_file_is_refused(tmp_path, release, capsys):
    (tmp_path / "afile").write_text("x")
    message = refused(capsys, lambda: run(release, tmp_path / "afile" / "sub" / "out"))
    assert f"{tmp_path / 'afile'} is a file, not a directory" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "inputs"]


@pytest.mark.parametrize("target", ["nothing", "loop"])
def test_out_at_or_below_a_dangling_link_is_refused_before_reading(tmp_path, release, capsys, target):
    """Below a link to nothing (or a loop), the input was read in full, then mkdir failed with
    'File exists' and exit 1; now it is refused at once, exit 2, as a dangling --out itself."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nothing" if target == "nothing" else link)
    for out in (link, link / "sub" / "out"):
        message = refused(capsys, lambda: run(release, out))
        assert f"{out}: " in message and "symbolic link to nothing" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "link"]


@pytest.mark.parametrize("empty", [True, False])
def test_out_dot(tmp_path, release, capsys, monkeypatch, empty):
    """`--out .` writes into an empty working directory and is refused in one with other
    files; either way no folder is left beside it."""
    work = tmp_path / "work"
    work.mkdir()
    if not empty:
        (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    if empty:
        run(release, ".")
        assert sorted(p.name for p in work.iterdir()) == OUTPUT
    else:
        assert "holds 1 entry this tool did not write ('notes.txt')" in refused(capsys, lambda: run(release, "."))
        assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "work"]


def test_failed_write_removes_the_directories_it_created(tmp_path, release, monkeypatch):
    prepared = read_s3rec(*release)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("s3rec.data.json.dumps", explode)
    with pytest.raises(OSError, match="disk full"):
        write_prepared(prepared, tmp_path / "a" / "b" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_failed_write_into_previous_output_leaves_it_as_it_was(tmp_path, release, monkeypatch):
    out = tmp_path / "out"
    run(release, out)
    before = snapshot(tmp_path)
    prepared = read_s3rec(*release)
    monkeypatch.setattr("s3rec.data.json.dumps", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_prepared(prepared, out)
    assert snapshot(tmp_path) == before


def test_script_refusal_exit_code_and_no_traceback(tmp_path, release):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    seq, attr = release
    result = subprocess.run([sys.executable, "scripts/prepare_data.py", "--format", "s3rec", "--sequences",
                             str(seq), "--attributes", str(attr), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "prepare_data: error: --out" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # before, logged and printed: twice
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_input_is_one_line_on_stderr_and_info_is_logged_as_every_job_logs(tmp_path):
    """Before, an error was logged and printed (twice in the job's log), and the log lines carried
    a full date where every other job's log has HH:MM:SS."""
    def run(*args):
        return subprocess.run([sys.executable, "scripts/prepare_data.py", "--format", "synthetic", *args],
                              cwd=REPO, capture_output=True, text=True)

    bad = run("--users", "30", "--items", "2", "--attributes", "3", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and bad.stderr.splitlines() == [
        "prepare_data: error: synthetic: expected 5 <= items <= 5000 (sequences have at least 5 distinct items; "
        "the transition matrix is dense), got 2"]
    good = run("--users", "30", "--items", "20", "--attributes", "3", "--out", str(tmp_path / "good"))
    assert good.returncode == 0
    assert re.match(r"\d\d:\d\d:\d\d INFO prepare_data: wrote ", good.stderr), good.stderr


# --- finding 3: the items are the ids of the sequences ---------------------------------------


def test_attribute_entries_for_unseen_items_are_dropped_and_counted(tmp_path, release, caplog):
    """30 items in the sequences and 500 attribute entries: 30 items, 470 entries dropped
    (counted in the log and stats.json); A is the largest attribute id of the whole file,
    as the authors' loader computes it."""
    seq, attr = release
    seq.write_text("".join(f"{u} {u} {u % 30 + 1} {(u + 1) % 30 + 1}\n" for u in range(1, 31)))
    attr.write_text(json.dumps({str(i): [i % 7 + 1] + ([50] if i == 400 else []) for i in range(1, 501)}))
    with caplog.at_level(logging.WARNING):
        stats = run(release, tmp_path / "out")
    assert stats["items"] == 30 and stats["dropped"]["attribute_entries_for_unseen_items"] == 470
    assert "dropping 470 attribute entries" in caplog.text
    assert stats["attributes"] == 50
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert on_disk["dropped"]["attribute_entries_for_unseen_items"] == 470
    data = load_dataset(tmp_path / "out")
    assert data.num_items == 30 and len(data.item_attributes) == 31
    assert [a.tolist() for a in data.item_attributes[1:4]] == [[2], [3], [4]]


def test_item_ids_must_be_contiguous(release):
    seq, attr = release
    seq.write_text("1 1 2 4\n2 4 2 1\n")
    with pytest.raises(DataError, match=r"Toy\.txt: item ids are not contiguous: 1 of the ids 1\.\.4 occur in no "
                                        r"sequence \(the first is 3\)"):
        read_s3rec(seq, attr)


def test_items_only_in_dropped_users_are_counted(tmp_path, release):
    """Ids stay the authors' ids, so an item seen only in a user too short to keep stays an
    item: stats.json counts it."""
    seq, _ = release
    seq.write_text("1 1 2 3 4\n2 3 1 2\n3 5 1\n")
    stats = run(release, tmp_path / "out")
    assert (stats["items"], stats["items_without_interactions"], stats["dropped"]["short_users"]) == (5, 1, 1)


def test_a_user_line_without_items_is_a_short_user(tmp_path, release):
    """'3' alone on a line: a user of no interactions, dropped and counted like any user too
    short for leave-one-out (it crashed with a TypeError before)."""
    seq, _ = release
    seq.write_text("1 1 2 3 4\n2 3 1 2 5\n3\n")
    stats = run(release, tmp_path / "out")
    assert (stats["users"], stats["dropped"]["short_users"], stats["dropped"]["short_user_interactions"]) == (2, 1, 0)


@pytest.mark.parametrize("sequences, attributes, message", [
    ("1 1 2 3 4\n2 3 1 2 3000000000\n", None,
     r"Toy\.txt:2: expected ids up to 2147483647 \(stored as int32\), got 3000000000"),
    ("3000000000 1 2 3 4\n2 3 1 2\n", None, r"Toy\.txt:1: expected ids up to 2147483647"),
    (None, '{"1": [1], "2": [3], "3": [1], "4": [2, 3000000000]}',
     r"item 4: expected a list of integer attribute ids in 1\.\.2147483647, got \[2, 3000000000\]"),
    (None, '{"1": [1], "2": [3], "3": [1], "3000000000": [2]}',
     r"key '3000000000': expected an integer item id in 1\.\.2147483647"),
    (None, '{"1": [1], "2": [3], "3": [1], "04": [2], "4": [4]}',
     r"keys '04' and '4' are both item 4; expected one entry per item"),
    (None, '{"1": [1], "2": [3], "3": [1], "4": [2], "4": [4]}',
     r"key '4' occurs twice; expected one entry per item"),
], ids=["item-beyond-int32", "user-beyond-int32", "attribute-beyond-int32", "key-beyond-int32",
        "one-item-two-keys", "repeated-key"])
def test_ids_beyond_int32_and_repeated_items_are_refused(tmp_path, release, sequences, attributes, message):
    """Ids are stored as int32: a larger one is a DataError naming the file and line, not a numpy
    OverflowError; an item given two attribute lists would silently keep the last one."""
    seq, attr = release
    if sequences is not None:
        seq.write_text(sequences)
    if attributes is not None:
        attr.write_text(attributes)
    with pytest.raises(DataError, match=message):
        read_s3rec(seq, attr)


def test_missing_attribute_entry_is_refused(release):
    seq, attr = release
    attr.write_text(json.dumps({"1": [1], "2": [2], "3": [3], "5": [1]}))
    with pytest.raises(DataError, match=r"no attribute entry for item 4 of .*Toy\.txt \(1 items missing\)"):
        read_s3rec(seq, attr)


# --- finding 5: damaged input files -----------------------------------------------------------


def test_truncated_gzip_sequences_name_the_file(tmp_path, release):
    seq, attr = release
    data = gzip.compress(("".join(f"{u} 1 2 3 4 5\n" for u in range(1, 3000))).encode())
    truncated = seq.with_name("Toy.txt.gz")
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"Toy\.txt\.gz: after line \d+: the gzip file ends early"):
        read_s3rec(truncated, attr)


def test_truncated_gzip_attributes_name_the_file(release):
    seq, attr = release
    data = gzip.compress(json.dumps({str(i): [1, 2, 3] for i in range(1, 3000)}).encode())
    gz = attr.with_name("Toy_item2attributes.json.gz")
    gz.write_bytes(data[:-20])
    with pytest.raises(DataError, match=r"Toy_item2attributes\.json\.gz: the gzip file ends early"):
        read_s3rec(seq, gz)


def test_gzip_without_gz_name_is_read(release):
    seq, attr = release
    seq.write_bytes(gzip.compress(SEQUENCES.encode()))
    assert read_s3rec(seq, attr).num_items == 5


@pytest.mark.parametrize("lines_before", [1, 5000])
def test_not_utf8_names_the_file_and_line(release, lines_before):
    seq, attr = release
    seq.write_bytes(b"".join(b"%d 1 2 3\n" % u for u in range(1, lines_before + 1)) + b"0 \xff 1\n")
    with pytest.raises(DataError, match=rf"Toy\.txt:{lines_before + 1}: byte 0xff is not UTF-8 text"):
        read_s3rec(seq, attr)
    attr.write_bytes(b'{"1": [1],\n "2": [\xe9]}')
    with pytest.raises(DataError, match=r"Toy_item2attributes\.json:2: byte 0xe9 is not UTF-8 text"):
        read_s3rec(_good(seq), attr)


@pytest.mark.parametrize("compress", [False, True])
def test_a_carriage_return_inside_a_line_names_it_and_crlf_files_are_read(release, compress):
    """Before, Python's universal newlines split "1 1 2 3 4\r2 1 2 3" into two users without a word,
    and every later error's line number was one off."""
    seq, attr = release
    encode = gzip.compress if compress else (lambda data: data)
    seq.write_bytes(encode(SEQUENCES.replace("\n", "\r\n").encode()))  # Windows line endings: fine
    assert len(read_s3rec(seq, attr).user_ids) == 3
    seq.write_bytes(encode(b"1 1 2 3 4\n2 3 1 2\r3 2 4 1 5\n"))
    with pytest.raises(DataError, match=r"Toy\.txt:2: a carriage return \(\\r\) inside the line"):
        read_s3rec(seq, attr)


def test_a_last_line_ending_in_a_carriage_return_is_read_as_one_ending_in_crlf(release):
    seq, attr = release
    seq.write_bytes(SEQUENCES.rstrip("\n").encode() + b"\r")
    assert [s.tolist() for s in read_s3rec(seq, attr).sequences] == [[1, 2, 3, 4], [3, 1, 2], [2, 4, 1, 5]]


def _good(seq: Path) -> Path:
    seq.write_text(SEQUENCES)
    return seq


# --- finding 18: the polars lower bound ------------------------------------------------------


def test_load_dataset_without_explode_empty_as_null(tmp_path, release, monkeypatch):
    """polars before 1.36 has no `explode(empty_as_null=...)` (pyproject allows them): loading
    must not need it. Simulated by an explode that rejects the keyword."""
    seq, attr = release
    attr.write_text(json.dumps({**ATTRIBUTES, "3": []}))
    out = tmp_path / "out"
    run(release, out)
    original = pl.Series.explode

    def old_explode(self, **kwargs):
        if kwargs:
            raise TypeError(f"Expr.explode() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return original(self)

    monkeypatch.setattr(pl.Series, "explode", old_explode)
    data = load_dataset(out)
    assert [a.tolist() for a in data.item_attributes] == [[], [1, 2], [3], [], [2, 4], [4]]
    assert data.num_attributes == 4


def test_output_files_are_readable_by_others(tmp_path, release):
    """Staged files keep the usual permissions (the staging folder is private)."""
    out = tmp_path / "out"
    run(release, out)
    mask = os.umask(0)
    os.umask(mask)
    assert all((p.stat().st_mode & 0o777) == (0o666 & ~mask) for p in out.iterdir())
    assert (out.stat().st_mode & 0o777) == (0o777 & ~mask)
    assert np.isin(list(OUTPUT), [p.name for p in out.iterdir()]).all()


def test_a_sparse_huge_attribute_id_is_refused_before_pretraining_allocates_it(release):
    """Before, one attribute id of 2,000,000,000 was A, and pretraining asked for 128 GB."""
    seq, attr = release
    attr.write_text(json.dumps({**ATTRIBUTES, "5": [2_000_000_000]}))
    with pytest.raises(DataError, match=r"Toy_item2attributes\.json: attribute ids run up to 2,000,000,000 \(5 "
                                        r"distinct ids used\).*expected ids numbered about 1\.\.5"):
        read_s3rec(seq, attr)


def test_the_attribute_table_may_take_2_gib_and_counts_the_padding_and_mask_rows():
    """The table is (items + 2) × A bytes: exactly 2 GiB passes, a byte more is refused."""
    check_attribute_range("a.json", 2**29, 1, 2)  # 4 rows × 2**29
    with pytest.raises(DataError, match=r"a\.json: attribute ids run up to 536,870,913 "):
        check_attribute_range("a.json", 2**29 + 1, 1, 2)
    with pytest.raises(DataError, match=r"table would take 2\.6 GiB"):  # 7 rows × 4e8; 5 rows would fit
        check_attribute_range("a.json", 400_000_000, 5, 5)


def test_stats_json_describes_the_lengths_and_the_items_without_attributes(tmp_path, release):
    seq, attr = release
    seq.write_text("1 1 2 3 4 5\n2 3 1 2\n3 2 4 1\n")  # lengths 5, 3, 3: the longest first
    attr.write_text(json.dumps({**ATTRIBUTES, "3": []}))
    stats = run(release, tmp_path / "out")
    assert {k: stats[k] for k in ("users", "interactions", "avg_length", "min_length", "max_length",
                                  "items_without_attributes")} == {
        "users": 3, "interactions": 11, "avg_length": 3.6667, "min_length": 3, "max_length": 5,
        "items_without_attributes": 1}
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["avg_length"] == 3.6667


def test_a_boolean_attribute_count_in_stats_json_is_refused(tmp_path, release):
    """true == 1 in Python: a stats.json saying `"attributes": true` over attributes all 1 passed."""
    seq, attr = release
    attr.write_text(json.dumps({str(item): [1] for item in range(1, 6)}))
    stats = run(release, tmp_path / "out")
    (tmp_path / "out" / "stats.json").write_text(json.dumps({**stats, "attributes": True}))
    with pytest.raises(DataError, match=r"stats\.json: attributes: expected an integer >= 1 .*, got True"):
        load_dataset(tmp_path / "out")


def test_the_model_sizes_its_attributes_as_stats_json_declares(tmp_path, release):
    """Before, stats.json said A = the file's largest id (as the authors compute it) while the
    model took the largest id of the kept items: an authors' checkpoint sized to their A was refused."""
    seq, attr = release
    attr.write_text(json.dumps({**ATTRIBUTES, "9": [12]}))  # an entry of an item in no sequence
    stats = run(release, tmp_path / "out")
    assert stats["attributes"] == 12 and load_dataset(tmp_path / "out").num_attributes == 12
    stats_file = tmp_path / "out" / "stats.json"
    stats_file.write_text(json.dumps({**stats, "attributes": 3}))
    with pytest.raises(DataError, match=r"stats\.json: attributes: expected an integer >= 4 .* got 3"):
        load_dataset(tmp_path / "out")


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.head(0), r"sequences\.parquet: no rows; expected one row per user"),
    (lambda f: pl.concat([f, f.head(1)]), r"sequences\.parquet: user_id 1 has 2 rows; expected one row per user"),
    (lambda f: pl.concat([f, f.head(2)]), r"sequences\.parquet: user_id 1 has 2 rows; expected one row per user"),
    (lambda f: f.with_columns(pl.when(pl.col("user_id") == 2).then(pl.col("items").list.head(2))
                              .otherwise(pl.col("items")).alias("items")),
     r"sequences\.parquet: user_id 2 has 2 items \(1 users below 3\); expected at least 3"),
])
def test_a_hand_edited_sequences_file_is_refused_naming_it(tmp_path, release, edit, message):
    run(release, tmp_path / "out")
    path = tmp_path / "out" / "sequences.parquet"
    edit(pl.read_parquet(path)).write_parquet(path)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "out")


# --- found by a mutation probe of scripts/prepare_data.py ----------------------------------
# Each test below failed a hand mutant of the script that every other test let pass.


@pytest.mark.parametrize("argv, message", [
    (["--format", "amazon", "--reviews", "r.json", "--meta", "m.json", "--sequences", "s.txt"],
     "--sequences is read with --format s3rec only, not --format amazon"),
    (["--format", "synthetic", "--reviews", "r.json"], "--reviews is read with --format amazon only"),
    (["--format", "s3rec", "--sequences", "s.txt", "--attributes", "a.json", "--items", "9"],
     "--items is read with --format synthetic only, not --format s3rec"),
    (["--format", "s3rec", "--sequences", "s.txt", "--attributes", "a.json", "--seed", "0"],  # 0: given all the same
     "--seed is read with --format synthetic only, not --format s3rec"),
], ids=["sequences", "reviews", "items", "seed-0"])
def test_every_option_of_another_format_is_a_usage_error(tmp_path, capsys, argv, message):
    """Each option one format alone reads, given with another (test_authors_negatives.py checks
    --k-core, --users, --meta and --negatives), is refused before anything is read or made."""
    err = refused(capsys, lambda: prepare_data.main([*argv, "--out", str(tmp_path / "out")]))
    assert message in err and not (tmp_path / "out").exists()


def test_s3rec_needs_its_attributes_file(tmp_path, release, capsys):
    err = refused(capsys, lambda: prepare_data.main(["--format", "s3rec", "--sequences", str(release[0]),
                                                     "--out", str(tmp_path / "out")]))
    assert "--format s3rec needs --attributes" in err and not (tmp_path / "out").exists()


def test_a_synthetic_attribute_count_that_is_no_number_is_a_usage_error(tmp_path, capsys):
    err = refused(capsys, lambda: prepare_data.main(["--format", "synthetic", "--attributes", "Toy.json",
                                                     "--out", str(tmp_path / "out")]))
    assert "--format synthetic: --attributes expects a number, got 'Toy.json'" in err and "Traceback" not in err


def test_a_synthetic_count_of_0_is_refused_not_taken_for_the_default(tmp_path):
    """--users 0 is given (not the default 2000): the generator refuses it, exit 1."""
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--format", "synthetic", "--users", "0", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == "prepare_data: error: synthetic: expected 1 <= users <= 2147483647, got 0"
    assert not (tmp_path / "out").exists()


def test_an_input_that_cannot_be_read_is_one_line_naming_it(tmp_path, release, monkeypatch):
    """An OSError the reader does not turn into a DataError (a disk's I/O error, say): exit 1, its
    message naming the file, no traceback, nothing written."""
    def unreadable(sequences, *args):
        raise OSError(errno.EIO, "Input/output error", str(sequences))

    monkeypatch.setattr(prepare_data, "read_s3rec", unreadable)
    with pytest.raises(SystemExit) as exit_info:
        run(release, tmp_path / "out")
    assert exit_info.value.code == f"prepare_data: error: [Errno 5] Input/output error: '{release[0]}'"
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_one_line_naming_it(tmp_path, release, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("s3rec.data.json.dumps", full)
    with pytest.raises(SystemExit) as exit_info:
        run(release, tmp_path / "out")
    assert exit_info.value.code == f"prepare_data: error: cannot write --out {tmp_path / 'out'}: [Errno 28] No space left on device"
    assert not (tmp_path / "out").exists()


def test_a_data_set_refused_at_the_write_is_one_line(tmp_path, release, monkeypatch):
    """write_prepared's own checks (a reader bug: repeated user ids) end the script as bad input
    does: exit 1, the message, nothing written."""
    prepared = read_s3rec(*release)
    prepared.user_ids[1] = prepared.user_ids[0]
    monkeypatch.setattr(prepare_data, "read_s3rec", lambda *args: prepared)
    with pytest.raises(SystemExit) as exit_info:
        run(release, tmp_path / "out")
    assert exit_info.value.code == "prepare_data: error: s3rec: user ids are not unique"
    assert not (tmp_path / "out").exists()


def test_an_out_that_gains_other_files_while_the_input_is_read_is_still_refused(tmp_path, release, capsys, monkeypatch):
    """--out is checked again at the write: a file put there meanwhile (another job) is refused
    as at the start, exit 2, and kept."""
    out = tmp_path / "out"

    def reading(*args):
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return read_s3rec(*args)

    monkeypatch.setattr(prepare_data, "read_s3rec", reading)
    err = refused(capsys, lambda: run(release, out))
    assert err.startswith("prepare_data: error: --out ") and "Traceback" not in err
    assert snapshot(out) == {"notes.txt": b"mine"}
