"""Raw Amazon 2014 files: exact output on a hand-made case, k-core to a fixed point, bad input.

The hand-made case (k = 3), reviews in file order as (user, item, time):
- X has no metadata: its review is dropped.
- D has 2 reviews: dropped in pass 1 (with U5, who has 1 review).
- U4 (A, D, E) then has 2 reviews: dropped in pass 2.
- E (U4, U1, U2) then has 2 reviews: dropped in pass 3.
- U1 reviewed B and A at the same time 5, B first in the file: B stays before A.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
import sys
from pathlib import Path

import polars as pl
import pytest

from s3rec.amazon import item_attributes, k_core_filter, read_amazon
from s3rec.data import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import prepare_data  # noqa: E402

REVIEWS = [
    ("U2", "A", 100), ("U1", "B", 5), ("U1", "A", 5), ("U3", "C", 1), ("U1", "X", 2),
    ("U4", "A", 50), ("U1", "C", 3), ("U5", "D", 7), ("U2", "B", 90), ("U4", "D", 51),
    ("U3", "A", 2), ("U2", "C", 80), ("U4", "E", 52), ("U3", "B", 3), ("U1", "E", 60),
    ("U2", "E", 70),
]
META = [
    {"asin": "A", "title": "a 'quoted' name", "categories": [["Beauty", "Skin Care", "Face"], ["Beauty", "Makeup"]],
     "brand": "Acme"},
    {"asin": "B", "categories": [["Beauty", "Skin Care", "Body"]], "brand": ""},
    {"asin": "C", "categories": [["Beauty", "Makeup", "Face"]], "price": 3.5},
    {"asin": "D", "categories": [["Beauty", "Hair"]], "brand": "Zed"},
    {"asin": "E", "categories": [["Beauty"]], "brand": "Acme"},
    {"asin": "Z", "categories": [["Beauty", "Nails"]]},  # never reviewed
    {"asin": "A", "categories": [["Beauty", "Other"]]},  # repeated asin: the first entry wins
]


def review_line(user: str, item: str, time: int) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "reviewerName": "n", "overall": 5.0,
                       "unixReviewTime": time, "reviewTime": "01 1, 2014"})


def write_lines(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_inputs(tmp_path: Path, reviews_gz: bool, meta_gz: bool,
                 reviews=REVIEWS, meta=META) -> tuple[Path, Path]:
    reviews_path = write_lines(tmp_path / ("reviews.json.gz" if reviews_gz else "reviews.json"),
                               [review_line(*r) for r in reviews])
    # repr() gives the Python-literal, single-quoted lines of the 2014 metadata files.
    meta_path = write_lines(tmp_path / ("meta.json.gz" if meta_gz else "meta.json"), [repr(m) for m in meta])
    return reviews_path, meta_path


@pytest.mark.parametrize("reviews_gz, meta_gz", [(False, False), (True, True), (True, False)])
def test_amazon_exact_output(tmp_path, reviews_gz, meta_gz):
    reviews, meta = write_inputs(tmp_path, reviews_gz, meta_gz)
    out = tmp_path / "out"
    prepare_data.main(["--format", "amazon", "--reviews", str(reviews), "--meta", str(meta),
                       "--k-core", "3", "--out", str(out)])

    # Users by first kept review (U2, U1, U3); items by first appearance in those
    # chronological sequences (C, B, A); attributes walking items 1..3 (C, B, A).
    assert pl.read_parquet(out / "sequences.parquet").to_dict(as_series=False) == {
        "user_id": [1, 2, 3],
        "items": [[1, 2, 3], [1, 2, 3], [1, 3, 2]],  # U2: C B A; U1: C, then B A (tie); U3: C A B
    }
    assert pl.read_parquet(out / "item_attributes.parquet").to_dict(as_series=False) == {
        "item_id": [1, 2, 3],
        "attributes": [[1, 2], [3, 4], [1, 2, 3, 5]],  # brand '' is no attribute
    }
    assert pl.read_parquet(out / "user_map.parquet").to_dict(as_series=False) == {
        "user_id": [1, 2, 3], "original": ["U2", "U1", "U3"]}
    assert pl.read_parquet(out / "item_map.parquet").to_dict(as_series=False) == {
        "item_id": [1, 2, 3], "original": ["C", "B", "A"]}
    attribute_map = pl.read_parquet(out / "attribute_map.parquet")
    assert attribute_map.schema == {"attribute_id": pl.Int32, "original": pl.String}
    assert attribute_map.to_dict(as_series=False) == {
        "attribute_id": [1, 2, 3, 4, 5], "original": ["Makeup", "Face", "Skin Care", "Body", "Acme"]}

    stats = json.loads((out / "stats.json").read_text())
    assert {k: stats[k] for k in ("format", "users", "items", "attributes", "interactions", "avg_length")} == {
        "format": "amazon", "users": 3, "items": 3, "attributes": 5, "interactions": 9, "avg_length": 3.0}
    assert stats["dropped"] == {
        "duplicate_meta_entries": 1,
        "blank_attribute_names": 1,  # B's brand ""
        "reviews_without_meta": 1,
        "items_without_meta": 1,
        "meta_without_reviews": 1,
        "kcore_reviews": 6,
        "kcore_users": 2,
        "kcore_items": 2,
        "short_users": 0,
        "short_user_interactions": 0,
    }
    assert stats["parameters"]["k_core"] == 3


def test_k_core_reaches_fixed_point():
    """A single pass would keep U4 and E; the fixed point drops them."""
    frame = pl.DataFrame([r for r in REVIEWS if r[1] != "X"], schema=["user", "item", "time"], orient="row")
    dropped: dict[str, int] = {}
    kept = k_core_filter(frame, 3, dropped)
    assert sorted(kept["user"].unique()) == ["U1", "U2", "U3"]
    assert sorted(kept["item"].unique()) == ["A", "B", "C"]
    assert dropped == {"kcore_reviews": 6, "kcore_users": 2, "kcore_items": 2}


def test_k_core_counts_users_and_items_apart():
    """U3's items C and D have one review each: both go, then U3 with none."""
    frame = pl.DataFrame([("U1", "A", 1), ("U1", "B", 2), ("U2", "A", 1), ("U2", "B", 2), ("U3", "C", 1),
                          ("U3", "D", 2)], schema=["user", "item", "time"], orient="row")
    dropped: dict[str, int] = {}
    assert k_core_filter(frame, 2, dropped).height == 4
    assert dropped == {"kcore_reviews": 2, "kcore_users": 1, "kcore_items": 2}


def test_k_core_below_1_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"--k-core: expected an integer >= 1, got 0"):
        read_amazon(*write_inputs(tmp_path, False, False), k_core=0)


def test_sequences_with_k_core_1_exact(tmp_path):
    """Users of 4, 4, 3 and 3 reviews (U5's one review is too short; X has no metadata). By time:
    U2 E C B A, U1 C B A E (B before A: same time, file order), U3 C A B, U4 A D E."""
    prepared = read_amazon(*write_inputs(tmp_path, False, False), k_core=1)
    assert [s.tolist() for s in prepared.sequences] == [[1, 2, 3, 4], [2, 3, 4, 1], [2, 4, 3], [4, 5, 1]]
    assert prepared.id_maps["item_map.parquet"]["original"].to_list() == ["E", "C", "B", "A", "D"]


def test_reviews_at_one_time_keep_the_file_order(tmp_path):
    """Two users' reviews interleaved, 20 each at three times: each sequence is in time order, ties
    in file order (a sort not told to keep it reorders ties of 40 rows already)."""
    reviews = [(f"U{n % 2}", f"I{n:02d}", n // 2 % 3) for n in range(40)]
    meta = [{"asin": item, "categories": [["Beauty", "Q"]]} for _, item, _ in reviews]
    prepared = read_amazon(*write_inputs(tmp_path, False, False, reviews=reviews, meta=meta), k_core=1)
    asins = prepared.id_maps["item_map.parquet"]["original"].to_list()
    by_time = sorted(reviews, key=lambda review: review[2])  # stable: file order within a time
    assert [[asins[item - 1] for item in s] for s in prepared.sequences] == [
        [item for user, item, _ in by_time if user == name] for name in ("U0", "U1")]


def test_dropped_items_without_metadata_and_metadata_without_reviews_are_counted_apart(tmp_path):
    """Two reviews of X (no metadata): 2 reviews, 1 item. Z and Y have metadata and no review."""
    reviews = REVIEWS + [("U2", "X", 1)]
    meta = META + [{"asin": "Y", "categories": [["Beauty", "Y"]]}]
    prepared = read_amazon(*write_inputs(tmp_path, False, False, reviews=reviews, meta=meta), k_core=3)
    assert {k: prepared.dropped[k] for k in ("reviews_without_meta", "items_without_meta",
                                             "meta_without_reviews")} == {
        "reviews_without_meta": 2, "items_without_meta": 1, "meta_without_reviews": 2}


def test_item_attributes_are_the_levels_below_the_top_once_in_order_then_the_brand():
    record = {"categories": [["Beauty", "Makeup", "Face"], ["Beauty", "Makeup"], ["Beauty", "Face", " "]],
              "brand": "Acme"}
    assert item_attributes(record, "meta.json", 1) == (["Makeup", "Face", "Acme"], 1)


def test_short_users_dropped_and_counted(tmp_path):
    """With k = 1 nothing is k-core filtered, but users with < 3 reviews cannot be split."""
    reviews, meta = write_inputs(tmp_path, False, False)
    prepared = read_amazon(reviews, meta, k_core=1)
    assert prepared.dropped["short_users"] == 1  # U5: only D
    assert prepared.dropped["short_user_interactions"] == 1
    assert prepared.user_ids.tolist() == [1, 2, 3, 4]  # U2, U1, U3, U4: contiguous again
    assert prepared.num_items == 5  # D survives through U4


def test_a_repeated_review_line_is_kept_and_counted_in_the_log(tmp_path, caplog):
    (tmp_path / "once").mkdir()
    reviews, meta = write_inputs(tmp_path, False, False, reviews=REVIEWS + [REVIEWS[0]])
    with caplog.at_level(logging.WARNING):
        prepared = read_amazon(reviews, meta, k_core=1)
    assert "1 reviews repeat an earlier review's user, item and time; kept" in caplog.text
    once = read_amazon(*write_inputs(tmp_path / "once", False, False), k_core=1)
    assert sum(map(len, prepared.sequences)) == sum(map(len, once.sequences)) + 1


def test_a_review_of_the_same_item_at_another_time_is_no_repeat(tmp_path, caplog):
    reviews, meta = write_inputs(tmp_path, False, False, reviews=REVIEWS + [("U2", "A", 101)])
    with caplog.at_level(logging.WARNING):
        read_amazon(reviews, meta, k_core=1)
    assert "repeat an earlier review" not in caplog.text


GOOD_META = [repr(m) for m in META]


def test_a_user_of_exactly_two_reviews_is_short_and_one_of_three_is_kept(tmp_path):
    """The boundary of MIN_LENGTH = 3 (leave-one-out needs a training item): U5 had one review,
    so a `< MIN_LENGTH - 1` survived."""
    extra = [("U6", "A", 1), ("U6", "B", 2), ("U7", "A", 1), ("U7", "B", 2), ("U7", "C", 3)]
    prepared = read_amazon(*write_inputs(tmp_path, False, False, reviews=REVIEWS + extra), k_core=1)
    assert prepared.dropped["short_users"] == 2 and prepared.dropped["short_user_interactions"] == 3  # U5, U6
    assert len(prepared.user_ids) == 5  # U1-U4 and U7


GOOD_REVIEWS = [review_line(*r) for r in REVIEWS]


@pytest.mark.parametrize(
    "reviews, meta, message",
    [
        (GOOD_REVIEWS[:1] + ['{"reviewerID": "U1", "asin": '] + GOOD_REVIEWS[1:], GOOD_META,
         r"reviews\.json:2: malformed JSON .*expected one review object per line"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: missing key 'asin'"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "unixReviewTime": "May 1"}'], GOOD_META,
         r"reviews\.json:3: field 'unixReviewTime': expected an integer within int64, got 'May 1'"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "unixReviewTime": 100000000000000000000}'], GOOD_META,
         r"reviews\.json:3: field 'unixReviewTime': expected an integer within int64, got 100000000000000000000"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": 17, "asin": "A", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: field 'reviewerID': expected a non-empty string, got 17"),
        (['["U1", "A", 3]'], GOOD_META, r"reviews\.json:1: expected a JSON object, got list"),
        ([], GOOD_META, r"reviews\.json: file is empty"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["{'asin': 'B', 'categories': [['Beauty']"] + GOOD_META[1:],
         r"meta\.json:2: malformed line .*expected a Python dict literal"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["__import__('os').system('echo pwned')"],
         r"meta\.json:2: malformed line"),
        (GOOD_REVIEWS, GOOD_META[:3] + ["{'asin': 'D', 'brand': 'Zed'}"],
         r"meta\.json:4: missing key 'categories'"),
        (GOOD_REVIEWS, ["{'categories': [['Beauty']]}"], r"meta\.json:1: missing key 'asin'"),
        (GOOD_REVIEWS, ["{'asin': 'A', 'categories': ['Beauty', 'Face']}"],
         r"meta\.json:1: field 'categories': expected a list of lists of strings"),
        (GOOD_REVIEWS, [], r"meta\.json: file is empty"),
        # was "malformed line (SyntaxError)", naming no cause
        (GOOD_REVIEWS, ["\ufeff" + GOOD_META[0]] + GOOD_META[1:], r"meta\.json:1: starts with a UTF-8 byte-order mark"),
        (GOOD_REVIEWS, ["{'asin': 'Z', 'categories': []}"], r"reviews\.json: no users left after the 3-core filter"),
        # each was a traceback: RecursionError, ValueError (int digit limit), UnicodeEncodeError in polars
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "x": ' + "[" * 100000], GOOD_META,
         r"reviews\.json:3: unreadable JSON \(RecursionError\); expected one review object per line"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "unixReviewTime": ' + "9" * 5000 + "}"], GOOD_META,
         r"reviews\.json:3: unreadable JSON \(ValueError\)"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U\\ud800", "asin": "A", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: field 'reviewerID': a lone surrogate '\\ud800'; expected valid Unicode text"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["{'asin': 'B', 'categories': [['Beauty', 'Skin\\ud800']]}"],
         r"meta\.json:2: field 'categories': a lone surrogate"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["{'asin': 'B', 'categories': [['Beauty']], 'brand': 'B\\ud800r'}"],
         r"meta\.json:2: field 'brand': a lone surrogate"),
        # a repeated key kept its last value, silently: the review counted for item A, not Z
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "Z", "asin": "A", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: key 'asin' occurs twice; expected each key once"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["{'asin': 'B', 'categories': [['Beauty']], 'asin': 'C'}"],
         r"meta\.json:2: key 'asin' occurs twice"),
        # a key spelt with a \u escape is the same key: it passed, the review counting for item A
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "Z", "\\u0061sin": "A", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: key 'asin' occurs twice; expected each key once"),
        # the top-level object's keys are checked, not a nested object's (parsed, and hooked, first)
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "x": {"y": 1}, "asin": "Z", "asin": "A", "unixReviewTime": 3}'],
         GOOD_META, r"reviews\.json:3: key 'asin' occurs twice"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1" "asin": "A"}'], GOOD_META,
         r"reviews\.json:3: malformed JSON \(Expecting ',' delimiter at column 21\)"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "unixReviewTime": 9223372036854775808}'], GOOD_META,
         r"reviews\.json:3: field 'unixReviewTime': expected an integer within int64, got 9223372036854775808"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "U1", "asin": "A", "unixReviewTime": true}'], GOOD_META,
         r"reviews\.json:3: field 'unixReviewTime': expected an integer within int64, got True"),
        (GOOD_REVIEWS[:2] + ['{"reviewerID": "", "asin": "A", "unixReviewTime": 3}'], GOOD_META,
         r"reviews\.json:3: field 'reviewerID': expected a non-empty string, got ''"),
        (GOOD_REVIEWS, GOOD_META[:1] + ["{'asin': 'B', 'categories': [['Beauty']], 'brand': 5}"],
         r"meta\.json:2: field 'brand': expected a string, got 5"),
    ],
)
def test_amazon_bad_input(tmp_path, reviews, meta, message):
    reviews_path = write_lines(tmp_path / "reviews.json", reviews)
    meta_path = write_lines(tmp_path / "meta.json", meta)
    with pytest.raises(DataError, match=message):
        read_amazon(reviews_path, meta_path, k_core=3)


def test_a_field_name_inside_a_value_or_a_nested_object_is_no_repeated_key(tmp_path):
    """The repeated-key check reparses only lines where a field's quoted name occurs twice: such a
    line whose top-level keys are each once is read as before."""
    lines = [json.loads(line) for line in GOOD_REVIEWS]
    lines[0]["reviewText"] = 'the "asin" of this item'
    lines[1]["extra"] = {"asin": "nested", "reviewerID": "nested"}
    reviews = write_lines(tmp_path / "reviews.json", [json.dumps(line) for line in lines])
    plain = write_lines(tmp_path / "plain.json", GOOD_REVIEWS)
    meta = write_lines(tmp_path / "meta.json", GOOD_META)
    assert '"asin"' in (tmp_path / "reviews.json").read_text().splitlines()[1].split('"extra"')[1]
    read = [[list(s) for s in read_amazon(path, meta, k_core=3).sequences] for path in (reviews, plain)]
    assert read[0] == read[1]


def test_blank_category_levels_and_brands_are_counted(tmp_path):
    """Before, "  " as a category level or brand was left out without a count."""
    meta = [line.replace("'Face'", "'  '") for line in GOOD_META]
    blank = sum(line.count("'  '") for line in meta)
    assert blank
    prepared = read_amazon(write_lines(tmp_path / "reviews.json", GOOD_REVIEWS),
                           write_lines(tmp_path / "meta.json", meta), k_core=3)
    plain = read_amazon(write_lines(tmp_path / "r.json", GOOD_REVIEWS), write_lines(tmp_path / "m.json", GOOD_META),
                        k_core=3)
    assert prepared.dropped["blank_attribute_names"] == plain.dropped["blank_attribute_names"] + blank


def test_amazon_bad_input_exits_without_output(tmp_path):
    reviews, meta = write_inputs(tmp_path, True, True)
    with gzip.open(meta, "at") as handle:
        handle.write("{'asin': 'Q', categories: []}\n")
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--format", "amazon", "--reviews", str(reviews), "--meta", str(meta),
                           "--out", str(tmp_path / "out")])
    assert f"{meta}:8: malformed line" in str(exit_info.value.code)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["reviews", "meta"])
def test_truncated_gzip_names_the_file(tmp_path, which):
    """A .gz cut short (an interrupted download): exit 1 with the file and the last line
    read, no traceback, no output."""
    reviews, meta = write_inputs(tmp_path, True, True,
                                 reviews=REVIEWS * 300, meta=META + [{"asin": f"Q{i}", "categories": [["Beauty", "Q"]]}
                                                                     for i in range(3000)])
    damaged = reviews if which == "reviews" else meta
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--format", "amazon", "--reviews", str(reviews), "--meta", str(meta),
                           "--out", str(tmp_path / "out")])
    message = str(exit_info.value.code)
    assert re.fullmatch(rf"prepare_data: error: {re.escape(str(damaged))}: after line \d+: the gzip file ends "
                        r"early \(truncated, e\.g\. an incomplete download\); expected a complete \.gz file", message)
    assert not (tmp_path / "out").exists()


def test_corrupt_gzip_names_the_file(tmp_path):
    reviews, meta = write_inputs(tmp_path, True, False)
    data = bytearray(reviews.read_bytes())
    data[20:40] = b"\x00" * 20
    reviews.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{re.escape(str(reviews))}: corrupt gzip data"):
        read_amazon(reviews, meta, k_core=3)
