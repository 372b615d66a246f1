"""scripts/park_runs.py: unfinished runs carried to a fresh machine through the tracked study folder.

Checked: a pretraining interrupted on one "machine", parked, its results deleted, restored and
continued ends exactly where an uninterrupted one does; what is parked at each stage of a run
(mid-pretraining, pretrained but not finetuned, finished); that parking on an empty results/
(a fresh machine) deletes nothing; that restore never replaces a later checkpoint; bad plans."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch

from s3rec import files, runs, runtime, study_folder
from s3rec.data import write_prepared
from conftest import REPO
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


def test_the_configs_are_read_as_utf_8_whatever_the_locale(tmp_path):
    """Under an ASCII locale (LC_ALL=C, Python's UTF-8 coercion off) the hint for a data set listed
    after a config holding a non-ASCII character (config/config.yaml's comments do) was a
    UnicodeDecodeError."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "a.yaml").write_text("# runs at the cap are marked †\ndatasets: {}\n", encoding="utf-8")
    (tmp_path / "config" / "b.yaml").write_text("datasets: {mine: {}}\n", encoding="utf-8")
    code = ("import sys; sys.path.insert(0, 'scripts'); import park_runs; from pathlib import Path; "
            f"park_runs.REPO = Path({str(tmp_path)!r}); print(park_runs.preparing_command('mine', Path('d')))")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "snakemake --cores 1 --configfile config/b.yaml -- d/stats.json"


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


def finish(study, loss=None, data_sha256=None) -> None:
    """seed-r4 seed 0's pretraining (or its `loss` finetuning) in the study folder, as if
    exported: the files' content is not read but their run record's data_sha256 (pretrain_run.json
    or metrics.json, the file restore checks the data by), recorded when given."""
    folder = study / RUN / (loss or "")
    folder.mkdir(parents=True, exist_ok=True)
    for name in study_folder.FINETUNE_FILES if loss else study_folder.PRETRAIN_FILES:
        (folder / name).write_text("x")
    run = {"dataset": "tiny", "variant": "r4", "seed": 0} | ({} if loss else {"config": {"pretrain": {"preset": "seed"}}})
    files.write_json(folder / ("metrics.json" if loss else "pretrain_run.json"),
                     run | ({} if data_sha256 is None else {"data_sha256": data_sha256}))


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
    finish(study, data_sha256=write_data(tmp_path, b"data"))
    (study / RUN / "bce").mkdir()
    (study / RUN / "bce" / "finetune_history.csv").write_text("x")  # a finetuning not finished: no metrics, no ranks
    dated_earlier(study)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("restore", tmp_path)
    data_time = (tmp_path / "resources" / "tiny" / "sequences.parquet").stat().st_mtime
    assert all((study / RUN / name).stat().st_mtime >= data_time for name in study_folder.PRETRAIN_FILES)
    assert (study / RUN / "bce" / "finetune_history.csv").stat().st_mtime == 1_000_000_000
    assert (study / "plan.json").stat().st_mtime == 1  # older than its script: snakemake writes it again
    assert "1 finished runs kept" in caplog.text and "record no data digest" not in caplog.text


def test_restore_counts_the_finished_runs_it_cannot_check(layout, tmp_path, caplog):
    _, study, _ = layout
    finish(study)
    dated_earlier(study)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("restore", tmp_path)
    assert (study / RUN / "heads.pt").stat().st_mtime > 1_000_000_000
    assert f"1 of 1 finished runs in {study} record no data digest" in caplog.text


def test_restore_refuses_finished_runs_of_other_data(layout, tmp_path, caplog):
    """A run trained on other data than this machine's must not be kept: restore names its file
    and the two digests, and changes nothing (no date, no parked file restored)."""
    results, study, parking = layout
    finish(study, data_sha256=write_data(tmp_path, b"old data"))
    here = write_data(tmp_path, b"new data")
    checkpoint(parking / "seed-r4" / "seed1" / "pretrain.state.pt", 3)
    dated_earlier(study)
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2
    assert f"trained on other data than {tmp_path / 'resources' / 'tiny'} (data_sha256 {here[:12]}" in caplog.text
    assert f"{study / RUN / 'pretrain_run.json'}: data_sha256" in caplog.text
    assert (study / RUN / "heads.pt").stat().st_mtime == 1_000_000_000
    assert (study / "plan.json").stat().st_mtime == 1_000_000_000
    assert not results.exists()


# ---------------------------------------------------------------- found by a mutation probe
# Each test below failed a hand mutant of scripts/park_runs.py or scripts/export_study.py that
# every test above let pass.


def pretrained_in_results(results) -> None:
    """seed-r4 seed 0's pretraining done in results/ (pretrain.pt readable, as park reads it)."""
    files.save_torch(results / RUN / "pretrain.pt", {"model": {}})
    for name in ("pretrain_history.csv", "pretrain_run.json"):
        (results / RUN / name).write_text(name)


DONE = [f"{RUN}/pretrain.pt", f"{RUN}/pretrain_history.csv", f"{RUN}/pretrain_run.json"]


@pytest.mark.parametrize("in_study", [("pretraining", "bce"), ("bce", "ce")],
                         ids=["a-finetuning-to-run", "its-own-export-to-run"])
def test_a_pretraining_stays_parked_until_it_and_all_its_finetunings_are_in_the_study(layout, tmp_path, in_study):
    """A pretraining is finished only when the study holds it and every finetuning of it: its
    ce finetuning still needs its pretrain.pt (mutants: finished once the study holds the
    pretraining alone; once it holds the finetunings alone, whose heads.pt export needs it too)."""
    results, study, parking = layout
    pretrained_in_results(results)
    checkpoint(results / RUN / "ce" / "finetune.state.pt", 2)
    for run in in_study:
        finish(study, None if run == "pretraining" else run)
    main("park", tmp_path)
    ce = [] if "ce" in in_study else [f"{RUN}/ce/finetune.state.pt"]
    assert files_under(parking) == sorted(ce + DONE)


def test_park_counts_what_it_copies_finds_unchanged_and_deletes(layout, tmp_path, caplog):
    """The closing line's counts: the second park of the same files copies nothing; a finished
    pretraining's leftover pretrain.state.pt in results/ is not parked at all (not parked, then
    deleted as the pretraining has ended); once every run is in the study, each parked file is
    deleted and counted, and the parking folder itself is left, emptied (the empty run folders
    are removed up to it, not above)."""
    results, study, parking = layout
    pretrained_in_results(results)
    checkpoint(results / RUN / "pretrain.state.pt", 2)  # a leftover: runs.pretrain deletes it
    checkpoint(results / RUN / "ce" / "finetune.state.pt", 2)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("park", tmp_path)
        assert "park tiny: 4 copied, 0 unchanged, 0 kept, 0 deleted" in caplog.text
        assert f"parked {parking / RUN / 'pretrain.state.pt'}" not in caplog.text
        caplog.clear()
        main("park", tmp_path)
        assert "park tiny: 0 copied, 4 unchanged, 0 kept, 0 deleted" in caplog.text
        caplog.clear()
        finish(study)
        for loss in ("bce", "ce"):
            finish(study, loss)
        main("park", tmp_path)
        assert "park tiny: 0 copied, 0 unchanged, 0 kept, 4 deleted" in caplog.text
    assert files_under(parking) == [] and parking.is_dir() and list(parking.iterdir()) == []


def test_park_compares_the_bytes_not_the_size_and_date(layout, tmp_path):
    """A parked file of the same size and modification time as results/'s but other bytes is
    copied again (a shallow comparison took it as unchanged)."""
    results, _, parking = layout
    pretrained_in_results(results)
    main("park", tmp_path)
    history = results / RUN / "pretrain_history.csv"
    history.write_text(history.read_text().upper())
    stamp = (1_000_000_000, 1_000_000_000)
    os.utime(history, stamp)
    os.utime(parking / RUN / "pretrain_history.csv", stamp)
    main("park", tmp_path)
    assert (parking / RUN / "pretrain_history.csv").read_text() == "PRETRAIN_HISTORY.CSV"


def checkpoint_of(path) -> tuple[int, dict]:
    saved = files.load_torch(path)
    return saved["loop"]["epoch"], saved["config"]


def test_a_checkpoint_of_the_same_epoch_replaces_none_in_park_or_restore(layout, tmp_path, caplog):
    """"never back", and restore replaces only one of an earlier epoch: a checkpoint of as many
    epochs as the other side's (other bytes: another machine's run of the same epochs) leaves
    it as it was, in both directions (mutants: `>=` for `>`, or the comparison turned round)."""
    results, _, parking = layout
    for folder, machine in ((parking, "parked"), (results, "here")):
        files.save_torch(folder / RUN / "pretrain.state.pt",
                         {"config": {"machine": machine}, "model": {}, "optimizer": {}, "loop": {"epoch": 5}})
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("park", tmp_path)
        assert checkpoint_of(parking / RUN / "pretrain.state.pt") == (5, {"machine": "parked"})
        assert "0 copied, 0 unchanged, 1 kept" in caplog.text
        main("restore", tmp_path)
    assert checkpoint_of(results / RUN / "pretrain.state.pt") == (5, {"machine": "here"})
    assert "0 restored, 1 kept" in caplog.text


def test_park_keeps_a_parked_finetuning_checkpoint_that_is_further_along(layout, tmp_path):
    """"never back" holds for a finetuning's checkpoint too, not only a pretraining's."""
    results, _, parking = layout
    checkpoint(parking / RUN / "bce" / "finetune.state.pt", 9)
    checkpoint(results / RUN / "bce" / "finetune.state.pt", 2)
    main("park", tmp_path)
    assert files.load_torch(parking / RUN / "bce" / "finetune.state.pt")["loop"]["epoch"] == 9


def test_a_parked_checkpoint_that_is_no_training_checkpoint_is_named(layout, tmp_path, caplog):
    """A pretrain.pt parked under the state's name (no loop.epoch): a clear error naming the file,
    exit 2, nothing restored (before the check: a KeyError or TypeError traceback)."""
    results, _, parking = layout
    files.save_torch(parking / RUN / "pretrain.state.pt", {"config": {}, "state_dict": {}})
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2
    assert f"{parking / RUN / 'pretrain.state.pt'}: not a training checkpoint of s3rec.training" in caplog.text
    assert not results.exists()


@pytest.mark.parametrize("seeds", [{}, {"seed0": [], "seed1": ["pretrain.pt"]}],
                         ids=["no-seed-folder-yet", "a-seed-without-its-pretrain-pt"])
def test_a_stacked_group_not_finished_is_named_without_its_checkpoint(layout, tmp_path, caplog, seeds):
    """A group is still pretraining when a seed's pretrain.pt is missing, or no seed folder is
    there yet, whether or not the group's checkpoint is: park names it."""
    results, _, _ = layout
    group = results / "seed-r4" / "stacked-seeds0-1"
    group.mkdir(parents=True)
    for seed, names in seeds.items():
        (group / seed).mkdir()
        for name in names:
            (group / seed / name).write_text("x")
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("park", tmp_path)
    assert f"not parked: {group}, a group of seeds pretrained as one" in caplog.text


def test_park_and_restore_copy_through_a_temporary_file(layout, tmp_path, renames):
    """The parked and the restored copy are written whole: each through a temporary file in the
    target's folder and a rename (a copy straight to its name, interrupted, left half a
    checkpoint in the tracked folder, or in results/ for a resumed run to read)."""
    results, _, parking = layout
    checkpoint(results / RUN / "pretrain.state.pt", 3)
    renames.clear()  # from here: the park's and the restore's
    main("park", tmp_path)
    shutil.rmtree(results)
    main("restore", tmp_path)
    assert [dst for _, dst in renames] == [parking / RUN / "pretrain.state.pt", results / RUN / "pretrain.state.pt"]
    assert all(src.parent == dst.parent and src.name.startswith(".pretrain.state.pt.") and src.name.endswith(".tmp")
               for src, dst in renames)


def test_restore_dates_and_counts_the_finished_finetunings_too(layout, tmp_path, caplog):
    """A finetuning whose metrics.json records these data is kept (made newer than the data) as
    a pretraining is; one recording no digest is kept and counted as unchecked; the closing line
    counts every finished run kept, the unchecked with them."""
    _, study, _ = layout
    digest = write_data(tmp_path, b"data")
    finish(study, data_sha256=digest)
    finish(study, "bce", digest)
    finish(study, "ce")
    dated_earlier(study)
    with caplog.at_level(logging.INFO, logger="s3rec"):
        main("restore", tmp_path)
    assert all((study / RUN / loss / name).stat().st_mtime > 1_000_000_000
               for loss in ("bce", "ce") for name in study_folder.FINETUNE_FILES)
    assert "3 finished runs kept" in caplog.text and f"1 of 3 finished runs in {study} record no data digest" in caplog.text


def test_restore_refuses_a_finished_finetuning_of_other_data(layout, tmp_path, caplog):
    """A finetuning's metrics.json is checked as a pretraining's pretrain_run.json is."""
    results, study, _ = layout
    finish(study, "bce", write_data(tmp_path, b"old data"))
    write_data(tmp_path, b"new data")
    with pytest.raises(SystemExit) as exit_:
        main("restore", tmp_path)
    assert exit_.value.code == 2 and f"{study / RUN / 'bce' / 'metrics.json'}: data_sha256" in caplog.text
    assert not results.exists()


def test_copy_names_every_missing_source(tmp_path, caplog):
    """The first missing source, and how many more are missing, which: one run of the copy, not
    one per missing file."""
    (tmp_path / "metrics.json").write_text("{}")
    missing = [tmp_path / "ranks.parquet", tmp_path / "finetune_history.csv"]
    with pytest.raises(SystemExit) as exit_:
        export_study.main(["copy", str(missing[0]), str(tmp_path / "metrics.json"), str(missing[1]),
                           "--to", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"source file {missing[0]} does not exist (nor 1 more: {missing[1]})" in caplog.text
    assert not (tmp_path / "out").exists()


def test_heads_drops_tensors_held_in_a_list_and_keeps_prefixed_heads(tmp_path):
    """heads.pt keeps no tensor but the heads': one held in a list or tuple (a scheduler's state,
    say) is dropped as one in a dict is; head keys under a prefix (`model.heads.aap.U`) are heads
    too, a key merely starting with `heads` (`heads_scale`) is not, nor a head's entry that is no
    tensor."""
    head, other = torch.ones(2, 2), torch.zeros(3)
    torch.save({"variant": "r4", "seed": 1, "schedulers": [{"step": 3}, other], "pair": (1, other), "steps": [1, 2],
                "state_dict": {"model.heads.aap.U": head, "heads.mip.weight": head, "heads_scale": other,
                               "heads.sp.calls": 3, "model.encoder.weight": other}}, tmp_path / "pretrain.pt")
    heads = export_study.heads_checkpoint(tmp_path / "pretrain.pt")
    assert sorted(heads) == ["seed", "state_dict", "steps", "variant"] and heads["steps"] == [1, 2]
    assert sorted(heads["state_dict"]) == ["heads.mip.weight", "model.heads.aap.U"]


@pytest.mark.parametrize("saved, named", [({"model": {}, "loop": {"epoch": 3}}, "with keys ['loop', 'model']"),
                                          ({"state_dict": [1, 2]}, "with keys ['state_dict']"),
                                          ([1, 2], "got list")], ids=["no-state-dict", "a-list", "no-dict"])
def test_heads_of_what_is_no_pretrain_pt_is_a_clear_error(tmp_path, caplog, saved, named):
    """A training state, a state_dict entry that is no dict, or no dict at all: exit 2 naming the
    file and what it holds (not a KeyError or AttributeError traceback), no heads.pt."""
    torch.save(saved, tmp_path / "pretrain.pt")
    with pytest.raises(SystemExit) as exit_:
        export_study.main(["heads", str(tmp_path / "pretrain.pt"), "--out", str(tmp_path / "heads.pt")])
    assert exit_.value.code == 2 and not (tmp_path / "heads.pt").exists()
    assert f"{tmp_path / 'pretrain.pt'}: expected a pretrain.pt, a dict with a `state_dict` entry" in caplog.text
    assert named in caplog.text


def test_copy_without_a_file_is_a_usage_error(tmp_path, capsys):
    """`copy --to DIR` alone (say, a rule's empty list of files) exits 2 rather than exporting
    nothing with success."""
    with pytest.raises(SystemExit) as exit_:
        export_study.main(["copy", "--to", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "the following arguments are required: files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_heads_saves_a_head_tensor_alone_not_the_storage_it_shares(tmp_path):
    """A head tensor that is a view of a larger one in the checkpoint (a tied or sliced weight)
    is saved as its own copy: torch.save writes a view's whole storage, and heads.pt would carry
    the item embeddings along."""
    embeddings = torch.randn(4000, 8)
    torch.save({"state_dict": {"item_embeddings.weight": embeddings, "heads.mip.weight": embeddings[:2]}},
               tmp_path / "pretrain.pt")
    assert export_study.main(["heads", str(tmp_path / "pretrain.pt"), "--out", str(tmp_path / "heads.pt")]) == 0
    assert (tmp_path / "heads.pt").stat().st_size < 4000 * 8 * 4 // 10
    assert torch.equal(files.load_torch(tmp_path / "heads.pt")["state_dict"]["heads.mip.weight"], embeddings[:2])


def test_plan_is_written_through_a_temporary_file(tmp_path, renames):
    """plan.json, as every exported file, is replaced whole (through a temporary and a rename)."""
    out = tmp_path / "study" / "tiny" / "plan.json"
    export_study.write_plan(study_folder.make_plan("tiny", [{"pretraining": "none", "seed": 0, "loss": "bce"}], {}), out)
    assert [(src.parent, src.name.startswith(".plan.json."), dst) for src, dst in renames] == [(out.parent, True, out)]
    assert json.loads(out.read_text())["dataset"] == "tiny"


def test_heads_pt_is_written_through_a_temporary_file_in_bytes_of_no_name(tmp_path, renames):
    """heads.pt is replaced whole (a temporary in its folder, then a rename), and its bytes do not
    depend on its name (torch.save given a path names its archive's folder after the file)."""
    torch.save({"variant": "r4", "state_dict": {"heads.mip.weight": torch.ones(2, 2)}}, tmp_path / "pretrain.pt")
    for name in ("heads.pt", "other.pt"):
        assert export_study.main(["heads", str(tmp_path / "pretrain.pt"), "--out", str(tmp_path / name)]) == 0
    assert [dst for _, dst in renames] == [tmp_path / "heads.pt", tmp_path / "other.pt"]
    assert all(src.parent == tmp_path and src.name.startswith(f".{dst.name}.") for src, dst in renames)
    assert (tmp_path / "heads.pt").read_bytes() == (tmp_path / "other.pt").read_bytes()
