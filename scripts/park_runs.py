"""Carry a study's unfinished runs from one machine to the next through git.

    python scripts/park_runs.py park beauty      # results/beauty -> study/unfinished/beauty (commit it)
    python scripts/park_runs.py restore beauty   # study/unfinished/beauty -> results/beauty (after the data)

A `paper` pretraining of the Beauty study takes about 5 h on one CPU thread, longer than a
session, and the machine may be replaced between sessions. Its per-epoch checkpoint
(pretrain.state.pt) lives in the untracked results/ and would be lost with the machine, and so
would a finished pretrain.pt whose finetunings have not run yet. `park` copies what an
unfinished run of the plan (study/<dataset>/plan.json) would need to continue, a run being
finished when study/<dataset>/ holds all its files (as runs.md counts them: s3rec/study_folder.py):

  a pretraining not finished, or with a finetuning not finished:
      pretrain.state.pt (mid-run), or pretrain.pt + pretrain_history.csv + pretrain_run.json (done)
  a finetuning not finished:  <loss>/finetune.state.pt

to the same relative path under study/unfinished/<dataset>/, and deletes the parked files of
runs that have since finished, and a parked pretrain.state.pt once that pretraining's
pretrain.pt is parked (the pretraining has ended). It never deletes a
parked file because results/ lacks it: on a fresh machine, before `restore`, results/ is empty.

`restore` copies each parked file back into results/ unless results/ already holds it; a
parked *.state.pt also replaces one of an earlier epoch. It needs the prepared data
(resources/<dataset>/stats.json) to exist already: on a fresh machine snakemake has no record
of the restored files and compares modification times, so data prepared after the restore
would be newer than a restored pretrain.pt, and snakemake would run that pretraining again
(deleting the pretrain.pt first). The resumed run checks the checkpoint's config and input
digest as always (s3rec.training.resume) and starts from epoch 1 when they differ, so a stale
parked checkpoint cannot leak into a run.

`restore` also keeps the study's finished runs: a fresh clone dates their files in the study
folder before the data prepared after it, and snakemake would run every one of them again (their
results/ files are gone). It makes them newer than the data, after checking that each run which
records its data's digest (data_sha256) was trained on these data, and dates plan.json to 1970,
so that snakemake writes it again from the config it runs with; then `snakemake ... study`
runs only what the study folder lacks (`snakemake` or `report` would also remake results/'s
report, which needs every run in results/).

Groups of seeds pretrained as one (config pretrain_seeds_per_job > 1, results/<dataset>/
<pretraining>/stacked-seeds<group>/) are not parked: made for a GPU node, where a group's 100
epochs take minutes, they must finish where they started (on a fresh machine snakemake would
run the group again, its seeds' restored pretrain.pt or not); `park` names each one it leaves.

Every copy goes through a temporary file and a rename; the log lists each file copied, kept or
deleted, with the epoch of a checkpoint.
"""
from __future__ import annotations

import argparse
import filecmp
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from s3rec import cli, files, report_inputs, runs, study_folder
from s3rec.stacked import GROUP_CHECKPOINT

log = logging.getLogger("s3rec")

REPO = Path(__file__).resolve().parent.parent  # config/ lives here
PRETRAINING_STATE = "pretrain.state.pt"
PRETRAINING_DONE = ("pretrain.pt", "pretrain_history.csv", "pretrain_run.json")
FINETUNING_STATE = "finetune.state.pt"


def unfinished_files(study) -> tuple[set[Path], set[Path]]:
    """(files an unfinished run may need, parked files of finished runs), relative to the data set
    folder, for a study_folder.Study: a run is finished when the study folder holds it complete, a
    pretraining when also every finetuning of it is."""
    wanted, finished = set(), set()
    finetunings = [r for r in study.planned if r.kind == "finetuning"]
    for run in finetunings:
        (finished if study.complete(run) else wanted).add(run.folder / FINETUNING_STATE)
    for run in (r for r in study.planned if r.kind == "pretraining"):
        own = [f for f in finetunings if f.folder.parent == run.folder]
        done = study.complete(run) and all(study.complete(f) for f in own)
        (finished if done else wanted).update(run.folder / name for name in (PRETRAINING_STATE, *PRETRAINING_DONE))
    return wanted, finished


def epoch_of(path: Path) -> int:
    """The epochs a training checkpoint (s3rec.training.save) has completed."""
    saved = files.load_torch(path)
    if not (isinstance(saved, dict) and isinstance(saved.get("loop"), dict) and "epoch" in saved["loop"]):
        raise ValueError(f"{path}: not a training checkpoint of s3rec.training (expected a dict with loop.epoch)")
    return int(saved["loop"]["epoch"])


def copy(source: Path, target: Path) -> None:
    files.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def describe(path: Path) -> str:
    epoch = f", after epoch {epoch_of(path)}" if path.name.endswith(".state.pt") else ""
    return f"{path} ({path.stat().st_size:,} bytes{epoch})"


def remove(path: Path, root: Path, why: str) -> None:
    path.unlink()
    log.info("deleted %s: %s", path, why)
    for folder in path.parents:  # the run folders it leaves empty, up to the parking folder
        if folder == root or any(folder.iterdir()):
            break
        folder.rmdir()


def further_along(checkpoint: Path, other: Path) -> bool:
    """Whether a training checkpoint has completed more epochs than `other` (the same run's, in
    results/ or parked): park and restore never replace a checkpoint with one not as far along."""
    return epoch_of(checkpoint) > epoch_of(other)


def parkable(results: Path, relative: Path) -> bool:
    """Whether an unfinished run's file in results/ is one to park."""
    if not (results / relative).is_file():
        return False
    pretrained = (results / relative.parent / "pretrain.pt").is_file()
    if relative.name == PRETRAINING_STATE and pretrained:
        return False  # a finished pretraining's leftover state is not needed (runs.pretrain deletes it)
    if relative.name in PRETRAINING_DONE and not pretrained:
        return False  # a running pretraining's history CSV: its state holds the history
    return True


def unfinished_group(group: Path) -> bool:
    """A stacked group (stacked-seeds0-1/) still pretraining: its checkpoint is there, or a seed's
    pretrain.pt is not. A finished one (say, of an earlier pretrain_seeds_per_job) needs no warning:
    its seeds' runs are parked, or kept, from their own folders."""
    seeds = [folder for folder in group.glob("seed*") if folder.is_dir()]
    return not seeds or any((folder / GROUP_CHECKPOINT).exists() or not (folder / "pretrain.pt").exists()
                            for folder in seeds)


def park(results: Path, study: Path, parking: Path) -> dict:
    if not results.is_dir():  # a fresh machine, or a wrong --results: say so rather than "0 copied"
        log.warning("nothing to park: %s does not exist", results)
    for group in filter(unfinished_group, sorted(results.glob("*/stacked-seeds*"))):  # pretrain_seeds_per_job > 1
        log.warning("not parked: %s, a group of seeds pretrained as one (pretrain_seeds_per_job): its "
                    "pretrainings must finish on the machine they started on (on a fresh one snakemake runs the "
                    "group again, restored files or not)", group)
    wanted, finished = unfinished_files(study_folder.scan(study))
    sources = [relative for relative in sorted(wanted) if parkable(results, relative)]
    # every checkpoint to park read before anything is copied: a corrupt one in results/ was copied
    # into the tracked folder first, the error named the copy, and the next park took it as unchanged
    check_parked([results / relative for relative in sources])
    counts = dict.fromkeys(("copied", "unchanged", "kept", "deleted"), 0)
    for relative in sources:
        source, target = results / relative, parking / relative
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            counts["unchanged"] += 1
            continue
        # never back (snakemake run on a new machine before `restore` starts again at epoch 1)
        if target.is_file() and relative.name.endswith(".state.pt") and not further_along(source, target):
            log.info("kept %s; not parking %s", describe(target), describe(source))
            counts["kept"] += 1
            continue
        copy(source, target)
        log.info("parked %s", describe(target))
        counts["copied"] += 1
    for relative in sorted(finished):
        if (parking / relative).is_file():
            remove(parking / relative, parking, "its run has finished and is in " + str(study))
            counts["deleted"] += 1
    for relative in sorted(wanted):
        state = parking / relative
        if relative.name == PRETRAINING_STATE and state.is_file() and (parking / relative.parent / "pretrain.pt").is_file():
            remove(state, parking, "the pretraining has finished (pretrain.pt is parked)")
            counts["deleted"] += 1
    return counts


def check_parked(parked: list[Path]) -> None:
    """Every checkpoint to park or restore readable before anything is copied: a truncated file,
    or a git-LFS pointer where the checkpoint should be, stops park or restore naming that file,
    with the other folder untouched (copied first, it failed later naming the copy, half the runs
    copied)."""
    for path in parked:
        if path.name.endswith(".state.pt"):
            epoch_of(path)
        elif path.suffix == ".pt":
            files.load_torch(path)


def keep_finished(study: study_folder.Study, data: Path) -> int:
    """Make the finished runs' files in the study folder newer than the data just prepared, and
    return how many runs that is. A fresh clone gives them the clone's time, older than the data
    made after it, and snakemake, with no record of them on this machine and their results/ files
    missing, would run them all again to remake them. A run that records its data's digest
    (data_sha256) is kept only if it matches this machine's data; one that records none (written
    before 2026-12-06) cannot be checked, and is counted in the log."""
    finished = [run for run in study.planned if study.complete(run)]
    digest, unchecked, others = None, 0, []
    for run in finished:
        paths = [study.path(run, name) for name in run.files if name.endswith(".json")]
        recorded = {path: value for path in paths
                    if (value := report_inputs.read_json_object(path).get("data_sha256")) is not None}
        if not recorded:
            unchecked += 1
            continue
        digest = digest or runs.digest_of_data(data)
        others += [f"{path}: data_sha256 {str(value)[:12]}…" for path, value in recorded.items() if value != digest]
    if others:
        raise ValueError(f"restore: runs of {study.folder} were trained on other data than {data} (data_sha256 "
                         f"{digest[:12]}…): " + "; ".join(others) + ". Prepare the data they were trained on, or "
                         "delete those runs' folders to run them again; nothing was restored")
    now = time.time()
    for run in finished:
        for name in run.files:
            os.utime(study.path(run, name), (now, now))
    if unchecked:
        log.warning("%d of %d finished runs in %s record no data digest (written before data_sha256): kept "
                    "unchecked against %s", unchecked, len(finished), study.folder, data)
    return len(finished)


def preparing_command(dataset: str, data: Path) -> str:
    """The snakemake command that prepares `dataset`: with the repository's config that lists it
    (none for config/config.yaml, snakemake's default), else a placeholder for the user's own."""
    for config in sorted((REPO / "config").glob("*.yaml")):
        if dataset in (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("datasets", {}):
            option = "" if config.name == "config.yaml" else f"--configfile config/{config.name} "
            return f"snakemake --cores 1 {option}-- {data}/stats.json"
    return f"snakemake --cores 1 --configfile <the config that lists {dataset} under datasets> -- {data}/stats.json"


def restore(parking: Path, results: Path, data: Path, study: Path) -> dict:
    if not (data / "stats.json").is_file():
        raise FileNotFoundError(
            f"restore: no prepared data at {data} (stats.json): make it first ({preparing_command(results.name, data)}), "
            "then restore; restored files must be newer than the data, or snakemake runs their pretrainings again")
    parked = sorted(p for p in parking.rglob("*") if p.is_file())
    if not parked:  # nothing was parked, or a wrong --study or data set name: say so rather than "0 restored"
        log.warning("nothing to restore: %s holds no parked file", parking)
    check_parked(parked)
    # every decision before anything is copied: an unreadable checkpoint in results/ stopped the
    # restore half done
    kept_runs = keep_finished(study_folder.scan(study), data)  # may refuse: before any copy
    # The plan the other way: dated to 1970, older than its script, so that the next snakemake
    # writes it again from the config it runs with. Snakemake has no record of the committed
    # plan's parameters here (the config's runs and report settings): a config changed since (a
    # seed added or dropped) would keep the old plan, and the report would leave a new seed's runs
    # out as extra, or count a dropped seed's as missing.
    os.utime(study / "plan.json", (1, 1))  # 1 s, not 0: snakemake reads an mtime of 0 as none
    targets = {source: results / source.relative_to(parking) for source in parked}
    restoring = {source: not target.is_file() or (source.name.endswith(".state.pt") and further_along(source, target))
                 for source, target in targets.items()}
    counts = dict.fromkeys(("restored", "kept"), 0)
    counts["finished runs kept"] = kept_runs
    for source, target in targets.items():
        if not restoring[source]:
            log.info("kept %s; not restoring %s", describe(target), describe(source))
            counts["kept"] += 1
            continue
        copy(source, target)
        log.info("restored %s", describe(target))
        counts["restored"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("park", "restore"))
    parser.add_argument("dataset", help="the study's data set (e.g. beauty)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the workflow's results folder")
    parser.add_argument("--study", type=Path, default=Path("study"), help="the study folder (config: study_dir)")
    parser.add_argument("--resources", type=Path, default=Path("resources"), help="the prepared data's folder")
    args = parser.parse_args(argv)
    cli.setup_logging()
    started = time.perf_counter()
    results, study = args.results / args.dataset, args.study / args.dataset
    parking = args.study / "unfinished" / args.dataset
    with cli.clear_errors():
        if args.command == "park":
            counts = park(results, study, parking)
        else:
            counts = restore(parking, results, args.resources / args.dataset, study)
    log.info("%s %s: %s in %.1f s", args.command, args.dataset,
             ", ".join(f"{n} {what}" for what, n in counts.items()), time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
