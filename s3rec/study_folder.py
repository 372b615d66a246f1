"""A study folder (study/<dataset>/, filled by the workflow's export rules): its plan, plan.json,
and the runs it holds.

    plan.json                                    what the study is meant to hold (`make_plan`)
    <pretraining>/seed<S>/pretrain_history.csv, pretrain_run.json, heads.pt
    <pretraining or none>/seed<S>/<loss>/finetune_history.csv, metrics.json, ranks.parquet
    authors/heads.pt                             the authors' checkpoint's heads (when planned)
    popularity/metrics.json, ranks.parquet
    (<pretraining> = <preset>-<variant> or authors; <loss> = bce | ce)

scripts/export_study.py writes the plan and copies the files; `scan` sorts a folder's files into
runs against its plan, which scripts/report_study.py reports (runs.md, tables, figures) and
scripts/park_runs.py reads to keep only unfinished runs' checkpoints.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from s3rec import report, report_inputs
from s3rec.config import SEED_MAX, is_seed
from s3rec.labels import (LOSSES, PRETRAINED_HERE, PRETRAINED_HERE_FORM, pretraining_label, pretraining_order,
                          split_pretraining)
from s3rec.report_inputs import object_field

log = logging.getLogger("s3rec")

PLAN_VERSION = 1
FIGURE_SETTINGS = ("metric", "split", "protocols")  # what scripts/plot_report.py reads

PRETRAIN_FILES = ("pretrain_history.csv", "pretrain_run.json", "heads.pt")
FINETUNE_FILES = ("finetune_history.csv", "metrics.json", "ranks.parquet")
POPULARITY_FILES = ("metrics.json", "ranks.parquet")
AUTHORS_FILES = ("heads.pt",)


# ---------------------------------------------------------------- the plan


def check_run(entry, index: int, kind: str, source: str) -> dict:
    """One entry of the runs' `finetunings` or `pretrainings`, checked, as a clean dict."""
    where = f"{source}: {kind}[{index}]"
    fields = ("pretraining", "seed", "loss") if kind == "finetunings" else ("pretraining", "seed")
    if not isinstance(entry, dict) or set(entry) != set(fields):
        raise ValueError(f"{where}: expected an object with exactly the keys {list(fields)}, got {entry!r}")
    pretraining, seed = entry["pretraining"], entry["seed"]
    allowed = ("none", "authors") if kind == "finetunings" else ()
    if not isinstance(pretraining, str) or not (pretraining in allowed or PRETRAINED_HERE.match(pretraining)):
        expected = " | ".join(allowed + (PRETRAINED_HERE_FORM,))
        raise ValueError(f"{where}.pretraining: expected {expected}, got {pretraining!r}")
    if not is_seed(seed):
        raise ValueError(f"{where}.seed: expected an integer in [0, {SEED_MAX}], got {seed!r}")
    if kind == "finetunings" and entry["loss"] not in LOSSES:
        raise ValueError(f"{where}.loss: expected one of {list(LOSSES)}, got {entry['loss']!r}")
    return {field: entry[field] for field in fields}


def sorted_unique(entries: list[dict], kind: str, source: str) -> list[dict]:
    key = lambda e: (pretraining_order(e["pretraining"]), e["seed"], e.get("loss", ""))  # noqa: E731
    keys = [key(e) for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        first = next(e for e in entries if key(e) == duplicates[0])
        raise ValueError(f"{source}: {kind} lists {first} more than once")
    return sorted(entries, key=key)


def make_plan(dataset: str, runs, settings: dict, source: str = "--runs") -> dict:
    """The plan.json object (module docstring) from --dataset, --runs and --settings; `source`
    names where the runs come from in error messages (--runs, or a plan.json read back)."""
    if not isinstance(dataset, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", dataset):
        raise ValueError(f"{source}: dataset: expected a data set name (letters, digits, _ . -), got {dataset!r}")
    if isinstance(runs, list):
        runs = {"finetunings": runs}
    if not isinstance(runs, dict) or "finetunings" not in runs:
        raise ValueError(f"{source}: expected a JSON object with a `finetunings` list (or that list itself)")
    unknown = sorted(set(runs) - {"finetunings", "pretrainings", "authors", "popularity"})
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; "
                         "expected finetunings, pretrainings, authors, popularity")
    report_inputs.check_report_settings(settings, f"{source}: settings")  # aggregate.py's --settings
    for key in ("finetunings", "pretrainings"):
        if not isinstance(runs.get(key, []), list):
            raise ValueError(f"{source}: {key}: expected a list, got {type(runs[key]).__name__}")
    finetunings = sorted_unique([check_run(e, i, "finetunings", source) for i, e in enumerate(runs["finetunings"])],
                                "finetunings", source)
    if "pretrainings" in runs:
        pretrainings = [check_run(e, i, "pretrainings", source) for i, e in enumerate(runs["pretrainings"])]
    else:  # every pretraining a finetuning starts from
        pretrainings = [{"pretraining": p, "seed": s} for p, s in
                        {(f["pretraining"], f["seed"]) for f in finetunings if PRETRAINED_HERE.match(f["pretraining"])}]
    pretrainings = sorted_unique(pretrainings, "pretrainings", source)
    listed = {(p["pretraining"], p["seed"]) for p in pretrainings}
    orphan = next((f for f in finetunings if PRETRAINED_HERE.match(f["pretraining"])
                   and (f["pretraining"], f["seed"]) not in listed), None)
    if orphan is not None:  # park_runs would not keep its pretrain.pt, runs.md not list it as missing
        raise ValueError(f"{source}: finetuning {orphan['pretraining']} seed {orphan['seed']} ({orphan['loss']}) "
                         "starts from a pretraining that `pretrainings` does not list")
    expected = {"authors": any(f["pretraining"] == "authors" for f in finetunings), "popularity": True}
    for key in expected:
        expected[key] = runs.get(key, expected[key])
        if not isinstance(expected[key], bool):
            raise ValueError(f"{source}: {key}: expected true or false, got {expected[key]!r}")
    return {
        "version": PLAN_VERSION,
        "dataset": dataset,
        "finetunings": finetunings,
        "pretrainings": pretrainings,
        **expected,
        "report": {"tables": settings, "figures": {k: settings[k] for k in FIGURE_SETTINGS if k in settings}},
    }


def plan_text(plan: dict) -> str:
    """plan.json's bytes: sorted keys and fixed indents, so that the same plan never shows in git diff."""
    return json.dumps(plan, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_plan(folder: Path) -> dict:
    """plan.json, checked by the rules `make_plan` writes it with."""
    path = folder / "plan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {folder} a study folder "
                                "(scripts/export_study.py plan writes it)?")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:  # the decode error names no file
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    expected = {"version", "dataset", "finetunings", "pretrainings", "authors", "popularity", "report"}
    if not isinstance(plan, dict) or set(plan) != expected:
        keys = sorted(plan) if isinstance(plan, dict) else type(plan).__name__
        raise ValueError(f"{path}: expected an object with the keys {sorted(expected)}, got {keys}")
    if plan["version"] != PLAN_VERSION:
        raise ValueError(f"{path}: version {plan['version']!r}; this code reads version {PLAN_VERSION}")
    if not isinstance(plan["report"], dict) or set(plan["report"]) != {"tables", "figures"}:
        keys = sorted(plan["report"]) if isinstance(plan["report"], dict) else type(plan["report"]).__name__
        raise ValueError(f"{path}: report: expected an object with the keys ['figures', 'tables'], got {keys}")
    for part, what in (("tables", "scripts/aggregate.py's --settings"), ("figures", "scripts/plot_report.py's")):
        if not isinstance(plan["report"][part], dict):  # null: every figure failed, after the tables
            raise ValueError(f"{path}: report.{part}: expected an object ({what} --settings), "
                             f"got {plan['report'][part]!r}")
        report_inputs.check_report_settings(plan["report"][part], f"{path}: report.{part}")
    runs = {k: plan[k] for k in ("finetunings", "pretrainings", "authors", "popularity")}
    checked = make_plan(plan["dataset"], runs, plan["report"]["tables"], source=str(path))
    if plan["report"].get("figures") != checked["report"]["figures"]:
        log.warning("%s: report.figures %s differs from what report.tables gives (%s): using report.figures",
                    path, plan["report"].get("figures"), checked["report"]["figures"])
        checked["report"]["figures"] = plan["report"]["figures"]
    return checked


# ---------------------------------------------------------------- what the folder holds


class Run(NamedTuple):
    """One run of the study: kind is finetuning, pretraining, authors or popularity. Sorting by
    sort_key gives the report's order: pretrainings, authors, finetunings, popularity."""
    sort_key: tuple
    kind: str
    pretraining: str | None = None
    seed: int | None = None
    loss: str | None = None

    @property
    def folder(self) -> Path:
        """The run's folder, relative to the study folder."""
        if self.kind in ("authors", "popularity"):
            return Path(self.kind)
        folder = Path(self.pretraining) / f"seed{self.seed}"
        return folder / self.loss if self.kind == "finetuning" else folder

    @property
    def files(self) -> tuple[str, ...]:
        return {"finetuning": FINETUNE_FILES, "pretraining": PRETRAIN_FILES, "authors": AUTHORS_FILES,
                "popularity": POPULARITY_FILES}[self.kind]


KIND_ORDER = {"pretraining": 0, "authors": 1, "finetuning": 2, "popularity": 3}


def make_run(kind: str, pretraining: str | None = None, seed: int | None = None, loss: str | None = None) -> Run:
    order = pretraining_order(pretraining) if pretraining else ()
    return Run((KIND_ORDER[kind], order, seed or 0, loss or ""), kind, pretraining, seed, loss)


def run_of_file(relative: Path) -> Run | None:
    """The run a file of the study folder belongs to (the grammar above), None for other files."""
    parts, name = relative.parts[:-1], relative.name
    seed = re.fullmatch(r"seed(0|[1-9][0-9]*)", parts[1]) if len(parts) >= 2 else None
    if parts == ("popularity",) and name in POPULARITY_FILES:
        return make_run("popularity")
    if parts == ("authors",) and name in AUTHORS_FILES:
        return make_run("authors")
    if len(parts) == 2 and seed and PRETRAINED_HERE.match(parts[0]) and name in PRETRAIN_FILES:
        return make_run("pretraining", parts[0], int(seed[1]))
    if (len(parts) == 3 and seed and name in FINETUNE_FILES and parts[2] in LOSSES
            and (parts[0] in ("none", "authors") or PRETRAINED_HERE.match(parts[0]))):
        return make_run("finetuning", parts[0], int(seed[1]), parts[2])
    return None


@dataclass
class Study:
    """The study folder against its plan."""

    folder: Path
    plan: dict
    planned: list[Run]
    present: dict[Run, set[str]]  # run -> names of its files that are there
    unrecognised: list[Path]  # files that fit no run, relative to the folder

    def complete(self, run: Run) -> bool:
        return set(run.files) <= self.present.get(run, set())

    def status(self, run: Run) -> str:
        if self.complete(run):
            return "present"
        return "incomplete" if run in self.present else "missing"

    def runs(self, kind: str, complete: bool = True) -> list[Run]:
        """Runs of a kind, planned or not, sorted; by default only complete ones."""
        return sorted(r for r in set(self.planned) | set(self.present)
                      if r.kind == kind and (self.complete(r) or not complete))

    def path(self, run: Run, name: str) -> Path:
        return self.folder / run.folder / name

    @property
    def extra(self) -> list[Run]:
        return sorted(set(self.present) - set(self.planned))

    def tabulated(self, kind: str) -> list[Run]:
        """The complete planned runs of a kind: what the tables and figures show. An extra run (a
        rank or seed since dropped from the config) stays out, as it does of results/'s report:
        averaged in, it moved the means and made the tables differ from results/."""
        planned = set(self.planned)
        return [r for r in self.runs(kind) if r in planned]


def planned_runs(plan: dict) -> list[Run]:
    runs = [make_run("finetuning", f["pretraining"], f["seed"], f["loss"]) for f in plan["finetunings"]]
    runs += [make_run("pretraining", p["pretraining"], p["seed"]) for p in plan["pretrainings"]]
    runs += [make_run("authors")] if plan["authors"] else []
    runs += [make_run("popularity")] if plan["popularity"] else []
    return sorted(runs)


def scan(folder: Path) -> Study:
    """Every file of the study folder (but plan.json and report/), sorted into runs."""
    plan = read_plan(folder)
    if folder.resolve().name != plan["dataset"]:  # the figures take the data set's name from the path
        raise ValueError(f"{folder}: a study of data set {plan['dataset']!r} ({folder / 'plan.json'}) in a folder "
                         f"named {folder.resolve().name!r}; expected the folder <study_dir>/{plan['dataset']}")
    present: dict[Run, set[str]] = defaultdict(set)
    unrecognised = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0] == "report" or relative == Path("plan.json"):
            continue
        run = run_of_file(relative)
        if run is None:
            unrecognised.append(relative)
        else:
            present[run].add(relative.name)
    study = Study(folder, plan, planned_runs(plan), dict(present), unrecognised)
    check_identity(study)
    return study


def check_identity(study: Study) -> None:
    """A metrics.json or pretrain_run.json must be of the plan's data set and of its folder's
    pretraining, seed and loss: a file copied into the wrong folder would otherwise be reported
    as another run (the tables go by its labels, runs.md and the history figures by its folder)."""
    for run in sorted(study.present):
        for name in ("metrics.json", "pretrain_run.json"):
            if name not in study.present[run]:
                continue
            path = study.path(run, name)
            recorded = report_inputs.read_json_object(path)  # later reads use .get: checked once, here
            if recorded.get("dataset") != study.plan["dataset"]:
                raise ValueError(f"{path}: data set {recorded.get('dataset')!r}, but the plan "
                                 f"({study.folder / 'plan.json'}) is of {study.plan['dataset']!r}")
            if run.seed is not None and recorded.get("seed") != run.seed:  # null would read as seed 0
                raise ValueError(f"{path}: seed {recorded.get('seed')!r}, but its folder says seed{run.seed}")
            if name == "metrics.json":
                try:  # the labels the tables go by
                    labels = report.run_labels(recorded)
                    pretraining, loss = labels["pretraining"], labels["loss"]
                except (ValueError, KeyError):  # unlabelled: the tables refuse it, naming the field
                    pretraining, loss = None, object_field(recorded, "finetune").get("loss")
            else:
                # no preset recorded (an older file): the variant alone is checked
                preset = (object_field(object_field(recorded, "config"), "pretrain").get("preset")
                          or split_pretraining(run.pretraining)[0])
                variant = recorded.get("variant")
                pretraining, loss = (pretraining_label(variant, preset) if variant else None), None
            if None not in (run.pretraining, pretraining) and pretraining != run.pretraining:
                raise ValueError(f"{path}: pretraining {pretraining!r}, but its folder says {run.pretraining}")
            if None not in (run.loss, loss) and loss != run.loss:
                raise ValueError(f"{path}: finetuning loss {loss!r}, but its folder says {run.loss}")
