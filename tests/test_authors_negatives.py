"""The authors' sampled protocol: their <Name>_sample.txt negatives (prepare_data.py --negatives,
eval.negatives: file) and early stopping on a sampled metric (finetune.early_stopping_protocol)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from s3rec import files, runs
from s3rec.authors_data import read_s3rec
from s3rec.data import DataError, load_dataset, load_sampled_negatives, write_prepared
from s3rec.evaluation import sample_negatives
from s3rec.synthetic import SyntheticSpec, generate

from conftest import shared_data_or_skip

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import prepare_data  # noqa: E402

# Users 1-3 of 7 items; user 4 is too short for leave-one-out and is dropped.
SEQUENCES = "1 1 2 3\n2 2 3 4 5\n3 6 7 1\n4 5 6\n"
ATTRIBUTES = {str(item): [1 + item % 3] for item in range(1, 8)}
NEGATIVES = "1 4 5 6\n2 1 6 7\n3 2 3 4\n4 1 2 3\n"


@pytest.fixture
def release(tmp_path) -> dict[str, Path]:
    files = {"sequences": tmp_path / "Toy.txt", "attributes": tmp_path / "Toy_item2attributes.json",
             "negatives": tmp_path / "Toy_sample.txt"}
    files["sequences"].write_text(SEQUENCES)
    files["attributes"].write_text(json.dumps(ATTRIBUTES))
    files["negatives"].write_text(NEGATIVES)
    return files


def prepare(release, out) -> dict:
    return prepare_data.main(["--format", "s3rec", "--sequences", str(release["sequences"]),
                              "--attributes", str(release["attributes"]), "--negatives", str(release["negatives"]),
                              "--out", str(out)])


def test_prepared_negatives_keep_the_users_order_and_count_the_skipped(release, tmp_path):
    release["negatives"].write_text("3 2 3 4\n1 4 5 6\n4 1 2 3\n2 1 6 7\n")  # any line order
    stats = prepare(release, tmp_path / "toy")
    dataset = load_dataset(tmp_path / "toy")
    negatives = load_sampled_negatives(tmp_path / "toy", dataset.user_ids)
    assert dataset.user_ids.tolist() == [1, 2, 3]
    assert negatives.tolist() == [[4, 5, 6], [1, 6, 7], [2, 3, 4]]
    assert stats["sampled_negatives_per_user"] == 3
    assert stats["dropped"]["negatives_of_short_users"] == 1  # user 4, dropped as too short
    assert stats["parameters"]["negatives"] == "Toy_sample.txt"


def test_read_negatives_are_int32_and_their_width_is_recorded(release, tmp_path):
    release["negatives"].write_text("1 4 5\n2 1 6\n3 2 3\n4 1 2\n")  # 2 negatives for each of 3 kept users
    prepared = read_s3rec(release["sequences"], release["attributes"], release["negatives"])
    assert prepared.sampled_negatives.dtype == np.int32
    assert prepared.sampled_negatives.tolist() == [[4, 5], [1, 6], [2, 3]]
    assert prepare(release, tmp_path / "toy")["sampled_negatives_per_user"] == 2


def test_without_negatives_nothing_changes(release, tmp_path):
    stats = prepare_data.main(["--format", "s3rec", "--sequences", str(release["sequences"]),
                               "--attributes", str(release["attributes"]), "--out", str(tmp_path / "toy")])
    assert not (tmp_path / "toy" / "sampled_negatives.parquet").exists()
    assert "sampled_negatives_per_user" not in stats and "negatives_of_short_users" not in stats["dropped"]
    with pytest.raises(DataError, match="file not found; eval.negatives: file needs"):
        load_sampled_negatives(tmp_path / "toy", np.array([1, 2, 3], dtype=np.int32))


@pytest.mark.parametrize("text, message", [
    ("1 4 5 x\n", "Toy_sample.txt:1: expected 'user_id item_id ...' of integers, got 'x'"),
    ("1 4 5 6\n1 4 5 6\n", "Toy_sample.txt:2: user 1 already on line 1"),
    ("1 4 5 6\n9 1 2 3\n", "Toy_sample.txt:2: user 9 is not a user of the sequences file"),
    ("1 4 5 6\n2 1 6\n", "Toy_sample.txt:2: expected 3 negatives (as on the first line), got 2"),
    ("1 4 5 8\n", "Toy_sample.txt:1: expected item ids in 1..7, got 8"),
    ("1 4 5 0\n", "Toy_sample.txt:1: expected item ids in 1..7, got 0"),
    ("1 4 5 4\n", "Toy_sample.txt:1: expected 3 distinct items, got a repeated one"),
    ("1 4 5 6\n2 1 6 3\n", "Toy_sample.txt:2: item 3 is in user 2's sequence"),
    ("1 4 5 6\n3 2 3 4\n", "Toy_sample.txt: no line for user 2 (1 users missing)"),
    ("\n", "Toy_sample.txt: file is empty"),
    ("1\n2 1 6 7\n3 2 3 4\n", "Toy_sample.txt:1: expected at least one negatives (as on the first line), got 0"),
    ("1 4 5 6\n2 1 6 5\n", "Toy_sample.txt:2: item 5 is in user 2's sequence"),  # its test target
    ("1 4 5 6\n2 1 6 7\n", "Toy_sample.txt: no line for user 3 (1 users missing)"),  # the last user
])
def test_a_bad_negatives_file_is_named_and_leaves_no_output(release, tmp_path, text, message, capsys):
    release["negatives"].write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        prepare(release, tmp_path / "out" / "toy")
    assert exit_info.value.code != 0 and message in str(exit_info.value.code)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_negatives_need_the_s3rec_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--format", "synthetic", "--negatives", "x.txt", "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2 and "--negatives is read with --format s3rec only" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--format", "synthetic", "--k-core", "10"], "--k-core is read with --format amazon only, not --format synthetic"),
    (["--format", "s3rec", "--sequences", "a", "--attributes", "b", "--users", "9"],
     "--users is read with --format synthetic only, not --format s3rec"),
    (["--format", "synthetic", "--meta", "m.json"], "--meta is read with --format amazon only"),
])
def test_an_option_of_another_format_is_a_usage_error(tmp_path, capsys, argv, message):
    """Before, ignored: a --k-core meant for the data set was silently not applied."""
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main([*argv, "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_authors_lastfm_negatives_are_valid():
    data = shared_data_or_skip()
    prepared = read_s3rec(data / "LastFM.txt", data / "LastFM_item2attributes.json", data / "LastFM_sample.txt")
    assert prepared.sampled_negatives.shape == (1090, 99)
    assert prepared.dropped["negatives_of_short_users"] == 0


# --- runs ------------------------------------------------------------------------------------

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "finetune": {"epochs": 3, "batch_size": 32, "patience": 2},
            "eval": {"sampled_negatives": 20}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A synthetic data set whose negatives file holds exactly the negatives the seeded draw gives."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    prepared = generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15))
    prepared.sampled_negatives = sample_negatives(prepared.sequences, prepared.num_items, 20, seed=2020)
    write_prepared(prepared, out)
    return out


def finetune(data, out, **sections):
    settings = {key: {**SETTINGS.get(key, {}), **value} for key, value in {**SETTINGS, **sections}.items()}
    cfg = runs.resolve_config(settings, "none", 0, device="cpu")
    return runs.finetune(data, out, cfg, "none")


def test_negatives_from_a_file_rank_as_the_same_negatives_drawn(tiny, tmp_path):
    seeded = finetune(tiny, tmp_path / "seeded")
    from_file = finetune(tiny, tmp_path / "file", eval={"negatives": "file"})
    assert from_file["metrics"] == seeded["metrics"]
    assert from_file["config"]["eval"]["negatives"] == "file"
    # Other negatives: the sampled metrics change, the full ones (and the training) do not.
    other = tmp_path / "other"
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), other)
    frame = pl.read_parquet(tiny / "sampled_negatives.parquet")
    dataset = load_dataset(other)
    drawn = sample_negatives(dataset.sequences, dataset.num_items, 20, seed=7)
    frame.with_columns(negatives=pl.Series(drawn.tolist(), dtype=pl.List(pl.Int32))).write_parquet(
        other / "sampled_negatives.parquet")
    another = finetune(other, tmp_path / "another", eval={"negatives": "file"})
    assert another["metrics"]["full"] == seeded["metrics"]["full"]
    assert another["metrics"]["sampled"] != seeded["metrics"]["sampled"]


def test_popularity_ranks_against_the_negatives_file(tiny, tmp_path):
    """The popularity baseline takes eval.negatives: file like the finetuned runs (it drew the
    seeded negatives whatever the setting, while its metrics.json recorded `file`)."""
    import popularity

    other = tmp_path / "other"  # tiny's data with other negatives in its file
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), other)
    dataset = load_dataset(other)
    drawn = sample_negatives(dataset.sequences, dataset.num_items, 20, seed=7)
    pl.read_parquet(tiny / "sampled_negatives.parquet").with_columns(
        negatives=pl.Series(drawn.tolist(), dtype=pl.List(pl.Int32))).write_parquet(other / "sampled_negatives.parquet")

    def rank(data, out, negatives):
        settings = json.dumps({"eval": {"sampled_negatives": 20, "negatives": negatives}})
        assert popularity.main(["--data", str(data), "--out-dir", str(tmp_path / out), "--settings", settings]) == 0
        return json.loads((tmp_path / out / "metrics.json").read_text())["metrics"]

    seeded, same_file, other_file = rank(tiny, "seeded", "seeded"), rank(tiny, "file", "file"), rank(other, "other", "file")
    assert same_file == seeded  # tiny's file holds the seeded draw
    assert other_file["full"] == seeded["full"] and other_file["sampled"] != seeded["sampled"]


def test_a_negatives_file_of_another_width_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="holds 20 negatives per user, but eval.sampled_negatives is 19"):
        finetune(tiny, tmp_path / "run", eval={"negatives": "file", "sampled_negatives": 19})


def test_early_stopping_on_the_sampled_protocol(tiny, tmp_path):
    result = finetune(tiny, tmp_path / "run", finetune={"early_stopping_protocol": "sampled",
                                                         "early_stopping_metric": "MRR", "epochs": 6})
    history = pl.read_csv(tmp_path / "run" / "finetune_history.csv")
    assert "valid_AUC" in history.columns  # validation ranked against the 20 negatives
    scores = history["valid_MRR"].to_list()
    assert result["best_epoch"] == 1 + scores.index(max(scores))
    assert result["finetune"]["early_stopping_protocol"] == "sampled"
    finetune(tiny, tmp_path / "full", finetune={"epochs": 6})
    assert "valid_AUC" not in pl.read_csv(tmp_path / "full" / "finetune_history.csv").columns


@pytest.mark.parametrize("settings, message", [
    ({"finetune": {"early_stopping_protocol": "sampled"}, "eval": {"protocols": ["full"]}},
     "early_stopping_protocol: sampled needs 'sampled' in eval.protocols"),
    ({"finetune": {"early_stopping_protocol": "both"}}, "early_stopping_protocol: expected full or sampled"),
    ({"eval": {"negatives": "authors"}}, "eval.negatives: expected seeded or file"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        runs.resolve_config(settings, "none", 0)


def test_keys_added_later_leave_a_checkpoint_resumable_at_their_old_behaviour(tiny, tmp_path, caplog):
    """A run checkpointed before eval.negatives and finetune.early_stopping_protocol existed has an
    identity without them; at their defaults (the old behaviour) the identity is the same."""
    cfg = runs.resolve_config(SETTINGS, "none", 0)
    identity = runs.run_identity(cfg)
    assert "negatives" not in identity["eval"] and "early_stopping_protocol" not in identity["finetune"]
    assert identity["eval"]["negatives_seed"] == 2020  # other keys stay
    changed = runs.resolve_config({**SETTINGS, "eval": {"negatives": "file"}}, "none", 0)
    assert runs.run_identity(changed)["eval"]["negatives"] == "file"
    # Interrupted after one epoch: the checkpoint's identity is the one older code wrote, and it resumes.
    checkpoint = tmp_path / "part" / "finetune.state.pt"
    cfg = runs.resolve_config({**SETTINGS, "finetune": {**SETTINGS["finetune"], "epochs": 3}}, "none", 0, device="cpu")
    assert runs.finetune(tiny, tmp_path / "part", cfg, "none", stop_after=1) is None
    saved = files.load_torch(checkpoint)
    assert "negatives" not in saved["config"]["config"]["eval"]
    caplog.set_level("INFO", logger="s3rec")
    runs.finetune(tiny, tmp_path / "part", cfg, "none")
    assert "resuming from" in caplog.text
