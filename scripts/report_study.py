"""Rebuild a study's report from its tracked folder alone: no training, no results/.

    python scripts/report_study.py study/<dataset>

STUDY_DIR is what the workflow's export rules fill (scripts/export_study.py), results/<dataset>/
reduced to the small files:
    plan.json                                    what the study is meant to hold (export_study.py plan)
    <pretraining>/seed<S>/pretrain_history.csv, pretrain_run.json, heads.pt
    <pretraining or none>/seed<S>/<loss>/finetune_history.csv, metrics.json, ranks.parquet
    authors/heads.pt                             the authors' checkpoint's heads (when planned)
    popularity/metrics.json, ranks.parquet
    (<pretraining> = <preset>-<variant> or authors; <loss> = bce | ce)
It writes STUDY_DIR/report/:
    runs.md             which planned runs are there, which are missing or incomplete (a run
                        lacking one of its files), which are extra (not in the plan), which
                        pretrainings' SP loss stalled at ln 2 and when, and the wall and CPU time the
                        runs recorded, per device
    tables/             scripts/aggregate.py on every complete run's metrics.json (+ popularity)
    figures/<figure>.png, .pdf   scripts/plot_report.py: accuracy_vs_rank, params_vs_accuracy,
                        pretrain_losses, finetune_validation, head_spectra (data_distributions
                        needs the prepared data set and is not part of the study report)
with the report settings of plan.json. Inputs are sorted, so the order of files on disk does not
matter, and a second run writes the same bytes (the figures carry no creation date or software
version: s3rec.plots.save_figure). An incomplete run is left out of the tables and figures; a figure whose inputs are all
absent is skipped with a warning (and an old copy of it removed). Every output is written to a
temporary name and renamed. Exit status 1 when a table or figure failed (the others are still
made; the log says why), 2 on bad input (plan.json, a run file of another data set or seed, a
metrics.json or pretrain_run.json that is no JSON object, an SP loss that is no number), then
before anything is written.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from s3rec import cli, files
from s3rec.labels import LOSSES, pretraining_order
from s3rec.report_inputs import object_field
from s3rec.stalls import stalled_spans
from s3rec.study_folder import Run, Study, make_run, scan

log = logging.getLogger("s3rec")
SCRIPTS = Path(__file__).resolve().parent

TABLE_FILES = [f"{table}.{ext}" for table in ("results", "difference") for ext in ("csv", "md", "tex")]
FIGURES = ("accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation", "head_spectra")
FIGURE_FORMATS = ("png", "pdf")


def load_script(name: str):
    """A file of scripts/ as a module (scripts/ is no package): to call its main(argv)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



# ---------------------------------------------------------------- runs.md


def label(run: Run) -> str:
    return {"finetuning": f"finetuning {run.folder.as_posix()}", "pretraining": f"pretraining {run.folder.as_posix()}",
            "authors": "the authors' checkpoint (authors/heads.pt)", "popularity": "popularity"}[run.kind]


def cell(study: Study, run: Run) -> str:
    status = study.status(run)
    planned = run in study.planned
    if status == "missing":
        return "missing" if planned else "–"
    mark = "✓" if status == "present" else "incomplete"
    return mark if planned else f"{mark} (extra)"


def grid(study: Study, runs: list[Run], title: str) -> list[str]:
    """A markdown table: pretraining × seed, a cell per run."""
    rows = sorted({r.pretraining for r in runs}, key=pretraining_order)
    seeds = sorted({r.seed for r in runs})
    by_key = {(r.pretraining, r.seed): r for r in runs}
    lines = [f"### {title}", "", "| pretraining | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for pretraining in rows:
        cells = [cell(study, by_key[(pretraining, s)]) if (pretraining, s) in by_key else "–" for s in seeds]
        lines.append(f"| {pretraining} | " + " | ".join(cells) + " |")
    return lines + [""]


def execution_of(recorded: dict) -> tuple[str, str]:
    """(device, threads) as recorded in a run file's `execution`."""
    execution = object_field(recorded, "execution")
    device = str(execution.get("device") or "not recorded")
    if execution.get("gpu"):
        device += f" ({execution['gpu']})"
    elif execution.get("cpu"):  # recorded since 2026-12-05: the numbers' last digits depend on it
        device += f" ({execution['cpu']}, {execution.get('cpu_capability') or 'instruction set not recorded'})"
    threads = execution.get("threads")
    return device, str(threads) if threads is not None else "not recorded"


def seconds_of(recorded: dict, key: str, stage: str | None) -> float | None:
    value = recorded.get(key)
    if stage is not None:
        value = value.get(stage) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


HISTORIES = {"pretrain_run.json": "pretrain_history.csv", "metrics.json": "finetune_history.csv"}


def time_rows(study: Study) -> list[dict]:
    """One row per complete run with a time of its own: pretrainings (pretrain_run.json), finetunings
    and popularity (metrics.json, finetune part only: its pretrain part is the pretraining's, counted
    once in pretrain_run.json, not once per finetuning). A run resumed elsewhere: a row per process
    that trained it (time_pieces)."""
    rows = []
    for kind, name, stage in (("pretraining", "pretrain_run.json", None), ("finetuning", "metrics.json", "finetune"),
                              ("popularity", "metrics.json", "finetune")):
        for run in study.runs(kind):
            recorded = json.loads(study.path(run, name).read_text(encoding="utf-8"))
            device, threads = execution_of(recorded)
            epochs = recorded.get("epochs")
            whole = {"run": run.folder.as_posix(), "device": device, "threads": threads, "stage": kind,
                     "epochs": epochs if isinstance(epochs, int) and epochs > 0 else None,
                     "wall": seconds_of(recorded, "wall_seconds", stage),
                     "cpu": seconds_of(recorded, "cpu_seconds", stage)}
            rows += time_pieces(whole, recorded.get("processes"), study.path(run, HISTORIES[name]))
    return rows


def time_pieces(whole: dict, processes, history: Path) -> list[dict]:
    """A resumed run's time row split by the processes that trained it (run files' `processes`,
    since 2026-12-07): each its epochs' seconds from the history; what no epoch holds (the final
    evaluation) on the run file's own device; epochs before the first process listed (a checkpoint
    older than the record) on "not recorded". Anything unreadable: the whole row, as before."""
    firsts = [process.get("first_epoch") if isinstance(process, dict) else None for process in processes or []]
    if (not firsts or not all(isinstance(f, int) and f >= 1 for f in firsts) or firsts != sorted(set(firsts))
            or whole["wall"] is None or whole["cpu"] is None or not history.is_file()):
        return [whole]
    epochs = epoch_seconds(history)
    if epochs is None:
        return [whole]
    starts = [1, *firsts] if firsts[0] > 1 else firsts
    devices = ([("not recorded", "not recorded")] if firsts[0] > 1 else []) + [execution_of(p) for p in processes]
    pieces = []
    for start, end, (device, threads) in zip(starts, [*starts[1:], None], devices):
        mine = [times for epoch, times in epochs.items() if epoch >= start and (end is None or epoch < end)]
        add_piece(pieces, {**whole, "split": True, "device": device, "threads": threads, "epochs": len(mine),
                           "wall": sum(wall for wall, _ in mine), "cpu": sum(cpu for _, cpu in mine)})
    rest = {"wall": whole["wall"] - sum(p["wall"] for p in pieces), "cpu": whole["cpu"] - sum(p["cpu"] for p in pieces)}
    add_piece(pieces, {**whole, **rest, "split": True, "epochs": 0})
    return pieces if len(pieces) > 1 else [whole]  # resumed where it ran before: one device, one row


def add_piece(pieces: list[dict], piece: dict) -> None:
    """Append a piece of a run's time, or add it to the last one when both ran on the same device
    with the same threads."""
    if pieces and (pieces[-1]["device"], pieces[-1]["threads"]) == (piece["device"], piece["threads"]):
        for key in ("epochs", "wall", "cpu"):
            pieces[-1][key] += piece[key]
    else:
        pieces.append(piece)


def epoch_seconds(history: Path) -> dict[int, tuple[float, float]] | None:
    """{epoch: (wall, CPU seconds)} of a history CSV, validation included; None if a value is missing."""
    with history.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    try:
        return {int(row["epoch"]): (float(row["seconds"]) + float(row.get("valid_seconds") or 0),
                                    float(row["cpu_seconds"]) + float(row.get("valid_cpu_seconds") or 0))
                for row in rows}
    except (KeyError, TypeError, ValueError):
        return None


def format_seconds(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "not recorded"
    total = sum(known)
    text = f"{total:,.0f} s = {total / 3600:.2f} h"
    return text + (f" ({len(values) - len(known)} runs not recorded)" if len(known) < len(values) else "")


def time_table(rows: list[dict]) -> list[str]:
    """Wall and CPU time per device, threads and stage, then per device."""
    if not rows:
        return ["No complete run: no time recorded.", ""]
    groups = defaultdict(list)
    for row in rows:
        groups[(row["device"], row["threads"], row["stage"])].append(row)
        groups[(row["device"], "all", "all")].append(row)
    stage_order = {"pretraining": 0, "finetuning": 1, "popularity": 2, "all": 3}
    lines = ["| device | threads | stage | runs | wall time | CPU time |", "|---|---|---|---|---|---|"]
    for (device, threads, stage) in sorted(groups, key=lambda g: (g[0], stage_order[g[2]], g[1])):
        members = groups[(device, threads, stage)]
        name = "**total**" if stage == "all" else stage
        wall, cpu = format_seconds([m["wall"] for m in members]), format_seconds([m["cpu"] for m in members])
        lines.append(f"| {device} | {'' if stage == 'all' else threads} | {name} | {len(members)} | {wall} | {cpu} |")
    return lines + [""]


def pretraining_times(rows: list[dict]) -> list[str]:
    """One line per complete pretraining: the cost of each run, which the totals hide (sessions may
    run on machines of different speed, so the spread says how far times compare)."""
    rows = [row for row in rows if row["stage"] == "pretraining"]
    if not rows:
        return []
    number = lambda value, digits=0: "not recorded" if value is None else f"{value:,.{digits}f}"  # noqa: E731
    lines = ["### Each pretraining", "", "| run | device | threads | epochs | wall s | CPU s | wall s per epoch |",
             "|---|---|---|---:|---:|---:|---:|"]
    for row in rows:  # time_rows keeps study.runs' order, the report's
        per_epoch = row["wall"] / row["epochs"] if row["wall"] is not None and row["epochs"] else None
        lines.append(f"| {row['run']} | {row['device']} | {row['threads']} | {number(row['epochs'])} | "
                     f"{number(row['wall'])} | {number(row['cpu'])} | {number(per_epoch, 1)} |")
    return lines + [""]


def runs_markdown(study: Study) -> str:
    """runs.md: a grid per loss (and for pretrainings), counts, problems, time per device."""
    plan = study.plan
    finetunings = [r for r in study.planned if r.kind == "finetuning"]
    pretrainings = [r for r in study.planned if r.kind == "pretraining"]
    done = lambda runs: sum(study.complete(r) for r in runs)  # noqa: E731
    references = [r for r in study.planned if r.kind in ("authors", "popularity")]
    lines = [f"# Runs of the study {plan['dataset']}", "",
             "Made by `python scripts/report_study.py` from this folder and its plan.json.", "",
             f"**{done(finetunings)} of {len(finetunings)} finetunings, {done(pretrainings)} of {len(pretrainings)} "
             f"pretrainings**" + "".join(f", {label(r)}: {study.status(r)}" for r in references) + ".", "",
             "✓ = all its files are here; missing = planned, not here; incomplete = some of its files are "
             "missing (left out of the tables and figures); (extra) = here but not in the plan (left out of the "
             "tables and figures: delete its folder once it is not wanted); – = neither.", ""]
    all_finetunings = sorted(set(finetunings) | {r for r in study.present if r.kind == "finetuning"})
    for loss in [loss for loss in LOSSES if any(r.loss == loss for r in all_finetunings)]:
        lines += grid(study, [r for r in all_finetunings if r.loss == loss], f"Finetunings, loss {loss}")
    all_pretrainings = sorted(set(pretrainings) | {r for r in study.present if r.kind == "pretraining"})
    if all_pretrainings:
        lines += grid(study, all_pretrainings, "Pretrainings")
    problems = [("Missing", [r for r in study.planned if study.status(r) == "missing"], lambda r: ""),
                ("Incomplete", sorted(r for r in study.present if study.status(r) == "incomplete"),
                 lambda r: f": no {', '.join(n for n in r.files if n not in study.present[r])}"),
                ("Extra (not in the plan)", [r for r in study.extra], lambda r: "")]
    for title, runs, detail in problems:
        if runs:
            lines += [f"## {title}", ""] + [f"- {label(r)}{detail(r)}" for r in runs] + [""]
    if study.unrecognised:
        lines += ["## Other files (fit no run of the layout)", ""]
        lines += [f"- {p.as_posix()}" for p in study.unrecognised] + [""]
    lines += pretraining_checks(study)
    lines += ["## Time per device", "",
              "Wall-clock and process CPU seconds the complete runs recorded: pretrainings from "
              "pretrain_run.json, finetunings (evaluation included) and popularity from metrics.json.", ""]
    rows = time_rows(study)
    if any(row.get("split") for row in rows):
        lines[-1:] = ["A run resumed on another machine counts on each device that trained it (its run file's "
                      "`processes`), with its epochs' seconds from its history; its final evaluation where it "
                      "was written.", ""]
    lines += time_table(rows) + pretraining_times(rows)
    return "\n".join(lines).rstrip("\n") + "\n"


def stalled_segment_heads(study: Study) -> list[tuple[Run, list[tuple[int, int]], float]]:
    """Complete pretrainings whose SP loss sat at ln 2 for three epochs or more
    (stalls.stalled_spans): the run, those stretches of epochs, its last epoch's SP loss."""
    stalled = []
    for run in study.runs("pretraining"):
        recorded = json.loads(study.path(run, "pretrain_run.json").read_text(encoding="utf-8"))
        pair_loss = object_field(object_field(recorded, "config"), "pretrain").get("pair_loss", "")
        sp_losses = sp_column(study.path(run, "pretrain_history.csv"))
        spans = stalled_spans(sp_losses, pair_loss)
        if spans:
            stalled.append((run, spans, sp_losses[-1]))
    return stalled


def sp_column(path: Path) -> list[float]:
    """The SP loss per epoch of a pretrain_history.csv (empty cells skipped)."""
    losses = []
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        try:
            for row in reader:
                if not row.get("sp"):
                    continue
                try:
                    losses.append(float(row["sp"]))
                except ValueError:
                    raise ValueError(f"{path}: line {reader.line_num}, column sp: expected a number (the "
                                     f"epoch's SP loss), got {row['sp']!r}") from None
        except UnicodeDecodeError as error:  # its message names no file
            raise ValueError(f"{path}: not UTF-8 text ({error.reason}); expected a pretrain_history.csv") from None
    return losses


def other_pretraining_runs(study: Study) -> list[tuple[Run, str]]:
    """Complete finetunings that did not start from the complete pretraining of their folder: the
    weights they record (pretrained_weights_sha256) differ from the pretraining's (weights_sha256),
    or, where either is not recorded (older runs), the pretraining wall time they record differs
    from the pretraining's own. Its heads.pt and losses then describe another run than the one
    finetuned. Each with why."""
    found = []
    for run in study.runs("finetuning"):
        pretraining = make_run("pretraining", run.pretraining, run.seed)
        if not study.complete(pretraining):
            continue
        finetuned = json.loads(study.path(run, "metrics.json").read_text(encoding="utf-8"))
        pretrained = json.loads(study.path(pretraining, "pretrain_run.json").read_text(encoding="utf-8"))
        used, here = finetuned.get("pretrained_weights_sha256"), pretrained.get("weights_sha256")
        if isinstance(used, str) and isinstance(here, str):
            if used != here:
                found.append((run, f"its pretrained weights (sha256 {used[:12]}…) are not those of "
                                   f"{pretraining.folder.as_posix()} ({here[:12]}…)"))
            continue
        used_wall, wall = seconds_of(finetuned, "wall_seconds", "pretrain"), seconds_of(pretrained, "wall_seconds", None)
        if None not in (used_wall, wall) and round(used_wall, 3) != round(wall, 3):
            found.append((run, f"it records a pretraining of {used_wall:,.0f} s wall time, "
                               f"{pretraining.folder.as_posix()} one of {wall:,.0f} s (weights not recorded)"))
    return found


def pretraining_checks(study: Study) -> list[str]:
    stalled = stalled_segment_heads(study)
    lines = ["## Pretraining checks", "",
             "SP stalled: the SP loss sat at ln 2 = 0.6931 for three epochs or more under the authors' "
             "sigmoid_difference pair loss: the head's scores saturated, where that loss has next to no "
             "gradient, and SP learned nothing in those epochs (`s3rec.stalls.stalled_spans`).", ""]
    if not stalled:
        lines += [f"None of the {len(study.runs('pretraining'))} complete pretrainings.", ""]
    else:
        lines += [f"- {label(run)}: SP stalled in epochs {', '.join(f'{a}–{b}' for a, b in spans)} "
                  f"(last epoch's SP loss {loss:.4f})" for run, spans, loss in stalled] + [""]
    lines += ["Finetuned from another pretraining run than the one here (a pretraining run again after this "
              "folder's was exported): its heads.pt and losses are not those of the start the finetuning had.", ""]
    others = other_pretraining_runs(study)
    if not others:
        return lines + [f"None of the {len(study.runs('finetuning'))} complete finetunings.", ""]
    return lines + [f"- {label(run)}: {why}" for run, why in others] + [""]


def log_problems(study: Study) -> None:
    for status in ("missing", "incomplete"):
        runs = [r for r in sorted(set(study.planned) | set(study.present)) if study.status(r) == status]
        if runs:
            log.warning("%d %s run(s): %s", len(runs), status, "; ".join(r.folder.as_posix() for r in runs))
    if study.extra:
        log.warning("%d run(s) not in the plan (listed as extra, left out of the tables and figures): %s",
                    len(study.extra),
                    "; ".join(r.folder.as_posix() for r in study.extra))
    stalled = stalled_segment_heads(study)
    if stalled:
        log.warning("%d pretraining(s) with SP stalled at ln 2 (see runs.md): %s", len(stalled),
                    "; ".join(run.folder.as_posix() for run, _, _ in stalled))
    others = other_pretraining_runs(study)
    if others:
        log.warning("%d finetuning(s) from another pretraining run than their folder's (see runs.md): %s",
                    len(others), "; ".join(run.folder.as_posix() for run, _ in others))
    if study.unrecognised:
        log.warning("%d file(s) fit no run of the layout: %s", len(study.unrecognised),
                    "; ".join(p.as_posix() for p in study.unrecognised))


# ---------------------------------------------------------------- tables and figures


def metrics_files(study: Study) -> list[Path]:
    """metrics.json of every complete planned finetuning, then popularity's (Study.tabulated)."""
    return [study.path(r, "metrics.json") for kind in ("finetuning", "popularity") for r in study.tabulated(kind)]


def remove_stale(paths: list[Path], why: str) -> None:
    for path in paths:
        if path.exists():
            path.unlink()
            log.warning("removed %s: %s", path, why)


def make_tables(study: Study, out_dir: Path) -> bool:
    """scripts/aggregate.py into a temporary folder, then each file renamed into out_dir."""
    metrics = metrics_files(study)
    if not metrics:
        log.warning("tables skipped: no complete finetuning or popularity run")
        remove_stale([out_dir / name for name in TABLE_FILES], "no run to tabulate")
        return False
    scratch = out_dir.parent / f".tables.{secrets.token_hex(4)}.tmp"
    try:
        argv = ["--metrics", *map(str, metrics), "--out-dir", str(scratch),
                "--settings", json.dumps(study.plan["report"]["tables"], sort_keys=True)]
        log.info("tables: scripts/aggregate.py on %d metrics.json files", len(metrics))
        load_script("aggregate").main(argv)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(scratch.iterdir()):
            os.replace(path, out_dir / path.name)
        log.info("tables: wrote %s", ", ".join(str(out_dir / name) for name in sorted(os.listdir(out_dir))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def figure_inputs(study: Study, difference: Path | None) -> dict[str, list[Path]]:
    """Each figure's --inputs (scripts/plot_report.py), sorted; empty when nothing to draw.
    `difference` is the difference.csv made in this run (None: no tables were made)."""
    finetunings, pretrainings = study.tabulated("finetuning"), study.tabulated("pretraining")
    metrics = metrics_files(study)
    heads = [study.path(r, "heads.pt") for r in pretrainings + study.tabulated("authors")]
    return {  # popularity alone: no finetuned run to set against a rank or a parameter count
        "accuracy_vs_rank": [difference] + metrics if finetunings and difference else [],
        "params_vs_accuracy": metrics if finetunings else [],
        "pretrain_losses": [study.path(r, name) for r in pretrainings
                            for name in ("pretrain_history.csv", "pretrain_run.json")],
        "finetune_validation": [study.path(r, name) for r in finetunings
                                for name in ("finetune_history.csv", "metrics.json")],
        "head_spectra": heads,
    }


def make_figure(figure: str, inputs: list[Path], out_dir: Path, settings: dict) -> None:
    """scripts/plot_report.py FIGURE into temporary files (suffix kept: it picks the format), renamed."""
    token = secrets.token_hex(4)
    scratch = [out_dir / f".{figure}.{token}.tmp.{fmt}" for fmt in FIGURE_FORMATS]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        load_script("plot_report").main([figure, "--inputs", *map(str, inputs), "--out", *map(str, scratch),
                                         "--settings", json.dumps(settings, sort_keys=True)])
        for path, fmt in zip(scratch, FIGURE_FORMATS):
            os.replace(path, out_dir / f"{figure}.{fmt}")
    finally:
        for path in scratch:
            path.unlink(missing_ok=True)
        if "matplotlib.pyplot" in sys.modules:  # five figures in one process: free each
            sys.modules["matplotlib.pyplot"].close("all")


def log_failure(step: str, error: BaseException) -> None:
    """A failed table or figure: a script's clear error on bad input (SystemExit, its message already
    logged) in one line; anything else, a bug, with its traceback."""
    if isinstance(error, SystemExit):
        log.error("%s failed (see the error above)", step)
    else:
        log.error("%s failed", step, exc_info=error)


def make_report(study: Study) -> list[str]:
    """runs.md, tables, figures; returns the names of the steps that failed."""
    report = study.folder / "report"
    files.write_text(report / "runs.md", runs_markdown(study))
    log.info("wrote %s", report / "runs.md")
    failed = []
    tables = report / "tables"
    try:
        made = make_tables(study, tables)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the figures that need no table are still made
        log_failure("tables", error)
        failed, made = ["tables"], False
        # an earlier copy would stand in git as if made from these runs
        remove_stale([tables / name for name in TABLE_FILES], "the tables failed: it no longer matches the runs")
    settings = study.plan["report"]["figures"]
    for figure, inputs in figure_inputs(study, tables / "difference.csv" if made else None).items():
        outputs = [report / "figures" / f"{figure}.{fmt}" for fmt in FIGURE_FORMATS]
        if figure == "accuracy_vs_rank" and "tables" in failed:
            log.warning("figure %s skipped: it draws the difference table, which failed", figure)
            remove_stale(outputs, "its difference table failed: it no longer matches the runs")
            continue
        if not inputs:
            log.warning("figure %s skipped: none of its inputs is in %s", figure, study.folder)
            remove_stale(outputs, f"figure {figure} has no inputs")
            continue
        started = time.perf_counter()
        try:
            make_figure(figure, inputs, report / "figures", settings)
            log.info("figure %s from %d files in %.1f s: %s", figure, len(inputs), time.perf_counter() - started,
                     ", ".join(map(str, outputs)))
        except (Exception, SystemExit) as error:  # noqa: BLE001 - one broken figure must not cost the others
            log_failure(f"figure {figure}", error)
            failed.append(figure)
            remove_stale(outputs, "the figure failed: it no longer matches the runs")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path, help="the study folder of one data set, e.g. study/beauty")
    args = parser.parse_args(argv)
    cli.setup_logging()
    started, cpu_started = time.perf_counter(), time.process_time()
    with cli.clear_errors():
        if not args.study_dir.is_dir():
            raise FileNotFoundError(f"study folder {args.study_dir} does not exist")
        study = scan(args.study_dir)
        log.info("study %s in %s: %d planned runs, %d run folders found", study.plan["dataset"], args.study_dir,
                 len(study.planned), len(study.present))
        log_problems(study)  # reads the pretraining histories: a bad one stops here, before anything is written
        failed = make_report(study)
    if failed:
        log.error("failed: %s (see the errors above; their earlier files removed); the rest of %s is up to date",
                  ", ".join(failed), args.study_dir / "report")
    log.info("done in %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
