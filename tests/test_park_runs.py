"""scripts/park_runs.py: unfinished runs carried to a fresh machine through the tracked study folder.

Checked: a pretraining interrupted on one "machine", parked, its results deleted, restored and
continued ends exactly where an uninterrupted one does; what is parked at each stage of a run
(mid-pretraining, pretrained but not finetuned, finished); that parking on an empty results/
(a fresh machine) deletes nothing; that restore never replaces a later checkpoint; bad plans."""
from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

from s3rec import files, runs, runtime, study_folder
from s3rec.data import write_prepared
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script

park_runs = load_script("park_runs")
export_study = load_script("export_study")

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "pretrain": {"epochs": 2, "batch_size": 32}, "eval": {"sampled_negatives": 20}}
RUN = "seed-r4/seed0"  # the pretraining of the plan below, as a folder


@pytest.fixture
def layout(tmp_path):
    """A study of one pretraining (seed-r4, seed 0) finetuned with bce and ce: (results, study, parking)."""
    study = tmp_path / "study" / "tiny"
    runs_ = [{"pretraining": "seed-r4", "seed": 0, "loss": loss} for loss in ("bce", "ce")]
    export_study.write_plan(study_folder.make_plan("tiny", runs_, {}), study / "plan.json")
    (tmp_path / "resources" / "tiny").mkdir(parents=True)
    (tmp_path / "resources" / "tiny" / "stats.json").write_text("{}")  # the prepared data restore checks for
    return tmp_path / "results" / "tiny", study, tmp_path / "study" / "unfinished" / "tiny"


def checkpoint(path, epoch: int) -> None:
    files.save_torch(path, {"config": {}, "model": {}, "optimizer": {}, "loop": {"epoch": epoch}})


def files_under(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def main(command, tmp_path):
    return park_runs.main([command, "tiny", "--results", str(tmp_path / "results"), "--study", str(tmp_path / "study"),
                           "--resources", str(tmp_path / "resources")])


def test_a_parked_and_restored_pretraining_ends_where_an_uninterrupted_one_does(layout, tmp_path):
    results, _, parking = layout
    data = tmp_path / "resources" / "tiny"
    (data / "stats.json").unlink()  # the fixture's stand-in; write_prepared writes the real one
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), data)
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    runs.pretrain(data, tmp_path / "whole", cfg, "r4")
    assert runs.pretrain(data, results / RUN, cfg, "r4", stop_after=1) is None
    main("park", tmp_path)
    assert files_under(parking) == [f"{RUN}/pretrain.state.pt"]
    shutil.rmtree(tmp_path / "results")  # the machine is gone; the parked file was committed
    main("restore", tmp_path)
    assert runs.pretrain(data, results / RUN, cfg, "r4") is not None
    whole = files.load_torch(tmp_path / "whole" / "pretrain.pt")["state_dict"]
    parts = files.load_torch(results / RUN / "pretrain.pt")["state_dict"]
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_what_is_parked_follows_the_run_until_it_is_in_the_study(layout, tmp_path):
    results, study, parking = layout
    checkpoint(results / RUN / "pretrain.state.pt", 3)
    main("park", tmp_path)
    assert files_under(parking) == [f"{RUN}/pretrain.state.pt"]

    (results / RUN / "pretrain.state.pt").unlink()  # pretraining done: runs.pretrain deletes its state
    files.save_torch(results / RUN / "pretrain.pt", {"model": {}})  # park reads every checkpoint first
    for name in ("pretrain_history.csv", "pretrain_run.json"):
        (results / RUN / name).write_text(name)
    checkpoint(results / RUN / "ce" / "finetune.state.pt", 2)
    main("park", tmp_path)
    assert files_under(parking) == [f"{RUN}/ce/finetune.state.pt", f"{RUN}/pretrain.pt",
                              f"{RUN}/pretrain_history.csv", f"{RUN}/pretrain_run.json"]

    exported = ["pretrain_history.csv", "pretrain_run.json", "heads.pt"] + [  # every run's files in the study
        f"{loss}/{name}" for loss in ("bce", "ce") for name in ("finetune_history.csv", "metrics.json", "ranks.parquet")]
    for name in exported:
        (study / RUN / name).parent.mkdir(parents=True, exist_ok=True)
        (study / RUN / name).write_text('{"dataset": "tiny", "seed": 0}')
    main("park", tmp_path)
    assert files_under(parking) == [] and not (parking / "seed-r4").exists()


def test_parking_on_a_fresh_machine_deletes_nothing(layout, tmp_path, caplog):
    results, _, parking = layout
    checkpoint(parking / RUN / "pretrain.state.pt", 5)
    main("park", tmp_path)  # results/ is empty: nothing to copy, nothing finished
    assert files_under(parking) == [f"{RUN}/pretrain.state.pt"]
    assert not results.exists() and f"nothing to park: {results} does not exist" in caplog.text


def test_restoring_with_nothing_parked_says_so(layout, tmp_path, caplog):
    _, _, parking = layout
    main("restore", tmp_path)
    assert f"nothing to restore: {parking} holds no parked file" in caplog.text
    assert not (tmp_path / "results").exists()


def test_restore_replaces_an_earlier_checkpoint_and_keeps_a_later_one(layout, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    results, _, parking = layout
    checkpoint(parking / RUN / "pretrain.state.pt", 5)
    checkpoint(parking / RUN / "bce" / "finetune.state.pt", 5)
    checkpoint(results / RUN / "pretrain.state.pt", 3)
    checkpoint(results / RUN / "bce" / "finetune.state.pt", 7)
    main("restore", tmp_path)
    assert files.load_torch(results / RUN / "pretrain.state.pt")["loop"]["epoch"] == 5
    assert files.load_torch(results / RUN / "bce" / "finetune.state.pt")["loop"]["epoch"] == 7
    assert "after epoch 7" in caplog.text and "1 restored, 1 kept" in caplog.text


@pytest.mark.parametrize("damaged", ["pretrain.state.pt", "pretrain.pt"])
def test_a_damaged_parked_checkpoint_stops_the_restore_before_anything_is_copied(layout, tmp_path, caplog, damaged):
    """A truncated checkpoint, or a git-LFS pointer in its place, is named as parked, and results/
    stays as it was (the copy came first, and the error named the copy, half the runs restored)."""
    results, _, parking = layout
    checkpoint(parking / RUN / "bce" / "finetune.state.pt", 5)  # sorts first: the code before copied it, then failed
    whole = parking / RUN / damaged
    checkpoint(whole, 2)
    whole.write_bytes(whole.read_bytes()[:100] if damaged.endswith("state.pt") else
                      b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2 and str(whole) in caplog.text
    assert files_under(results) == []


def test_park_keeps_a_parked_checkpoint_that_is_further_along(layout, tmp_path, caplog):
    """snakemake run on a new machine before `restore` starts the run again at epoch 1: parking
    then overwrote the committed epoch-60 checkpoint with an epoch-5 one."""
    caplog.set_level(logging.INFO)
    results, _, parking = layout
    checkpoint(parking / RUN / "pretrain.state.pt", 60)
    checkpoint(results / RUN / "pretrain.state.pt", 5)
    main("park", tmp_path)
    assert files.load_torch(parking / RUN / "pretrain.state.pt")["loop"]["epoch"] == 60
    assert "after epoch 60" in caplog.text and "0 copied, 0 unchanged, 1 kept" in caplog.text
    checkpoint(results / RUN / "pretrain.state.pt", 61)  # further along: parked
    main("park", tmp_path)
    assert files.load_torch(parking / RUN / "pretrain.state.pt")["loop"]["epoch"] == 61


def test_an_unreadable_checkpoint_in_results_stops_the_restore_before_anything_is_copied(layout, tmp_path, caplog):
    """Before, the parked files were restored one by one until the damaged one in results/."""
    results, _, parking = layout
    checkpoint(parking / RUN / "bce" / "finetune.state.pt", 30)  # sorts first
    checkpoint(parking / RUN / "pretrain.state.pt", 60)
    damaged = results / RUN / "pretrain.state.pt"
    checkpoint(damaged, 5)
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2 and str(damaged) in caplog.text
    assert files_under(results) == [f"{RUN}/pretrain.state.pt"]  # the finetuning's was not restored first


def test_a_missing_or_bad_plan_is_a_clear_error(tmp_path, caplog):
    with pytest.raises(SystemExit) as exit_:
        main("park", tmp_path)
    assert exit_.value.code == 2 and "plan.json does not exist" in caplog.text
    (tmp_path / "study" / "tiny").mkdir(parents=True)
    (tmp_path / "study" / "tiny" / "plan.json").write_text('{"finetunings": []}')
    with pytest.raises(SystemExit):
        main("park", tmp_path)
    assert "plan.json: expected an object with the keys" in caplog.text


def test_restore_before_the_data_is_made_is_refused(layout, tmp_path, caplog):
    """Data made after the restore would be newer than a restored pretrain.pt: snakemake would rerun it."""
    _, _, parking = layout
    (parking / RUN).mkdir(parents=True)
    (parking / RUN / "pretrain.pt").write_text("x")
    shutil.rmtree(tmp_path / "resources")
    with pytest.raises(SystemExit):
        main("restore", tmp_path)
    assert "no prepared data at" in caplog.text and "make it first" in caplog.text
    assert not (tmp_path / "results").exists()


def test_a_stacked_group_is_named_as_not_parked(layout, tmp_path, caplog):
    """A group of seeds pretrained as one (pretrain_seeds_per_job) must finish where it started:
    park says so, naming the group, and copies nothing of it."""
    results, _, parking = layout
    group = results / "seed-r4" / "stacked-seeds0-1"
    checkpoint(group / "seed0" / "pretrain_stacked.state.pt", 1)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("park", tmp_path)
    assert f"not parked: {group}, a group of seeds pretrained as one" in caplog.text
    assert files_under(parking) == []


def test_a_finished_stacked_group_gets_no_warning(layout, tmp_path, caplog):
    """Say, the group of an earlier pretrain_seeds_per_job: its seeds' files are in their own folders."""
    results, _, _ = layout
    group = results / "seed-r4" / "stacked-seeds0-1"
    for seed in (0, 1):
        (group / f"seed{seed}").mkdir(parents=True)
        (group / f"seed{seed}" / "pretrain.pt").write_text("x")
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("park", tmp_path)
    assert "not parked" not in caplog.text
    checkpoint(group / "seed0" / "pretrain_stacked.state.pt", 1)  # the same group, pretraining again
    main("park", tmp_path)
    assert f"not parked: {group}" in caplog.text


@pytest.mark.parametrize("dataset, command", [
    ("synthetic", "snakemake --cores 1 -- {data}/stats.json"),  # config/config.yaml, the default
    ("beauty", "snakemake --cores 1 --configfile config/beauty.yaml -- {data}/stats.json"),
    ("tiny", "snakemake --cores 1 --configfile <the config that lists tiny under datasets> -- {data}/stats.json"),
])
def test_restore_names_the_command_that_makes_the_data(tmp_path, dataset, command):
    data = tmp_path / "resources" / dataset
    assert park_runs.preparing_command(dataset, data) == command.format(data=data)


def test_a_corrupt_checkpoint_in_results_stops_park_before_anything_is_copied(layout, tmp_path, caplog):
    """Before, park copied it into the tracked folder first, named the copy in its error, and the
    next park counted the corrupt copy as unchanged and exited 0."""
    results, _, parking = layout
    checkpoint(results / RUN / "bce" / "finetune.state.pt", 3)  # sorts first: the code before copied it
    damaged = results / RUN / "pretrain.state.pt"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"PK\x03\x04junk")
    for _ in range(2):  # and again: nothing was parked to be taken as unchanged
        with pytest.raises(SystemExit) as exit_:
            main("park", tmp_path)
        assert exit_.value.code == 2 and str(damaged) in caplog.text
        assert files_under(parking) == []


def finish_pretraining(study, data_sha256=None) -> None:
    """seed-r4 seed 0's files in the study folder, as if exported (their content is not read but
    pretrain_run.json's data_sha256, recorded when given)."""
    folder = study / RUN
    folder.mkdir(parents=True)
    for name in study_folder.PRETRAIN_FILES:
        (folder / name).write_text("x")
    run = {"dataset": "tiny", "variant": "r4", "seed": 0, "config": {"pretrain": {"preset": "seed"}}}
    files.write_json(folder / "pretrain_run.json", run | ({} if data_sha256 is None else {"data_sha256": data_sha256}))


def write_data(tmp_path, content: bytes) -> str:
    """Prepared data of these bytes (only their digest is read here): their data_sha256."""
    data = tmp_path / "resources" / "tiny"
    paths = runs.data_files(data)
    for path in paths:
        path.write_bytes(content)
    return runtime.digest(paths)


def dated_earlier(folder) -> None:
    for path in folder.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # 2001: a clone older than the data


def test_restore_dates_the_finished_runs_after_the_data(layout, tmp_path, caplog):
    """A fresh clone dates the study folder before the data made after it, and snakemake would
    run its finished runs again: restore makes a finished run's files newer than the data once its
    recorded data digest matches; an unfinished run's files stay as they were."""
    _, study, _ = layout
    finish_pretraining(study, write_data(tmp_path, b"data"))
    (study / RUN / "bce").mkdir()
    (study / RUN / "bce" / "finetune_history.csv").write_text("x")  # a finetuning not finished: no metrics, no ranks
    dated_earlier(study)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("restore", tmp_path)
    data_time = (tmp_path / "resources" / "tiny" / "sequences.parquet").stat().st_mtime
    assert all((study / RUN / name).stat().st_mtime >= data_time for name in study_folder.PRETRAIN_FILES)
    assert (study / RUN / "bce" / "finetune_history.csv").stat().st_mtime == 1_000_000_000
    assert "1 finished runs kept" in caplog.text and "record no data digest" not in caplog.text


def test_restore_counts_the_finished_runs_it_cannot_check(layout, tmp_path, caplog):
    _, study, _ = layout
    finish_pretraining(study)
    dated_earlier(study)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("restore", tmp_path)
    assert (study / RUN / "heads.pt").stat().st_mtime > 1_000_000_000
    assert f"1 of 1 finished runs in {study} record no data digest" in caplog.text


def test_restore_refuses_finished_runs_of_other_data(layout, tmp_path, caplog):
    """A run trained on other data than this machine's must not be kept: restore names its file
    and the two digests, and changes nothing (no date, no parked file restored)."""
    results, study, parking = layout
    finish_pretraining(study, write_data(tmp_path, b"old data"))
    here = write_data(tmp_path, b"new data")
    checkpoint(parking / "seed-r4" / "seed1" / "pretrain.state.pt", 3)
    dated_earlier(study)
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2
    assert f"trained on other data than {tmp_path / 'resources' / 'tiny'} (data_sha256 {here[:12]}" in caplog.text
    assert f"{study / RUN / 'pretrain_run.json'}: data_sha256" in caplog.text
    assert (study / RUN / "heads.pt").stat().st_mtime == 1_000_000_000
    assert not results.exists()
