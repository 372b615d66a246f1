"""Tables of one data set from its finished runs: results, and differences between pretrainings.

    python scripts/aggregate.py --metrics results/D/*/seed*/*/metrics.json results/D/popularity/metrics.json \
        --out-dir results/D/report/tables [--settings JSON]

Reads each metrics.json and the ranks.parquet beside it; a run is identified by its finetuning
loss (bce, ce, ...), its pretraining (none, <preset>-<variant> such as seed-full or paper-r16,
authors; popularity, not finetuned) and its seed, all read from metrics.json. Writes, as .csv,
.md and .tex (booktabs), byte-identical for the same files given in any order:
- results: a row per finetuning loss and pretraining (bce before ce; none, then per preset full
  and the ranks, then authors, popularity): seeds, head and total parameters, CPU time (process
  CPU seconds of pretraining + finetuning), mean ± std over seeds of the chosen metrics per
  protocol; a row with a run that hit the finetuning epoch cap is marked † with a footnote. The
  CSV holds the numbers (mean, std per loss, pretraining, preset, variant, protocol and metric,
  wall and CPU seconds, runs_at_cap, seeds_at_cap; floats to 12 significant digits), the .md/.tex
  the formatted table.
- difference: within each loss, every rank minus its preset's full (the claim under test), and
  each preset's full minus none and minus authors, in the per-user metric, with a paired
  bootstrap interval over users (and seeds) and a t interval over the seeds' mean differences
  (none on one seed); a note names each comparison where only one of the two excludes 0. A
  rank whose full is missing is left out (logged, and named below the table in its .md and
  .tex); a comparison on one common seed, whose interval covers users only, stays in the table
  and is named below it.
Bad input (a malformed metrics.json or ranks.parquet, a run given twice, a --settings value of
the wrong type or range) ends it with exit status 2 and a message naming the file or key; each
table file is written through a temporary file and a rename.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import polars as pl

from s3rec import cli, files, intervals, report, report_inputs
from s3rec.differences import comparison_pairs, difference_table, format_difference_table
from s3rec.labels import report_order

log = logging.getLogger("s3rec")

DEFAULTS = report_inputs.REPORT_DEFAULTS  # --settings' keys and defaults (report_inputs.check_report_settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics.json of every run")
    parser.add_argument("--out-dir", required=True, type=cli.folder_argument)
    parser.add_argument("--settings", type=cli.json_object, default={}, help="JSON: the config's `report` section")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.clear_errors():  # bad input: its message alone, exit status 2, no table written
        report_inputs.check_report_settings(args.settings, "--settings")
        aggregate(args.metrics, args.out_dir, {**DEFAULTS, **args.settings})
    return 0


def aggregate(metrics: list[Path], out_dir: Path, s: dict) -> None:
    """The tables of the runs of `metrics` into `out_dir`, with the report settings `s`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    log.info("aggregating %d metrics.json files (and the ranks.parquet beside each) into %s",
             len(metrics), out_dir)

    runs = report.load_runs(metrics)
    datasets = runs["dataset"].unique().sort().to_list()
    if len(datasets) != 1:
        raise ValueError(f"--metrics: expected the runs of one data set, got {datasets}")
    dataset = datasets[0]
    summary = report.summarize(runs, split=s["split"])
    ranks = report.load_ranks(metrics)
    left_out = comparison_pairs(ranks)[1]
    for reason in left_out:
        log.warning("difference table: left out %s", reason)
    differences = difference_table(
        ranks, metric=s["metric"], protocols=s["protocols"], split=s["split"], samples=s["bootstrap_samples"],
        seed=s["bootstrap_seed"], confidence=s["confidence"], resample_seeds=s["resample_seeds"])

    seeds_note = "re-sampling users and seeds" if s["resample_seeds"] else "re-sampling users"
    threads = sorted(summary["threads"].drop_nulls().unique().to_list())
    devices = sorted({d for ds in summary["devices"].drop_nulls() for d in ds.split()})
    per_job = (f"each job on {' or '.join(devices) or 'an unrecorded device'} with "
               f"{' or '.join(map(str, threads))} thread{'s' if threads != [1] else ''}"
               if threads else "threads not recorded")
    captions = {
        "results": f"{dataset}, {s['split']} split: mean ± std over seeds (sample std, n − 1). Head params: parameters of "
                   f"the four pretraining heads. {report.CPU_COLUMN}: process CPU time (user + sys) of "
                   f"pretraining and of finetuning (validation and test evaluation included), mean over "
                   f"seeds, {per_job}; unlike wall-clock time it does not grow when jobs share cores "
                   "(wall-clock seconds: results.csv). – = not recorded by the run.",
        "difference": f"{dataset}, {s['split']} split: per-user {s['metric']} of one pretraining minus "
                      "another, both finetuned with the same loss (each rank minus its preset's full; "
                      "full minus none and minus authors), averaged over users and seeds, with a "
                      f"{round(s['confidence'] * 100)}% paired bootstrap interval ({s['bootstrap_samples']} "
                      f"resamples, {seeds_note}) and a {round(s['confidence'] * 100)}% t interval over seeds "
                      "(each seed's mean difference over the same users; seeds − 1 degrees of freedom).",
    }
    tables = {
        "results": (summary, report.results_table(summary, s["metrics"], s["protocols"]),
                    report.results_notes(summary) + report.pretraining_rerun_notes(runs)),
        "difference": (differences, format_difference_table(differences),
                       difference_notes(differences, left_out, s["resample_seeds"],
                                        ranks.filter(pl.col("split") == s["split"])["user_id"].n_unique())),
    }
    for name, (numbers, pretty, notes) in tables.items():
        # each file through a temporary and a rename: a failure leaves no half-written table
        files.save_frame(out_dir / f"{name}.csv", significant(numbers))
        footnotes = "".join(f"\n{note}\n" for note in notes)
        files.write_text(out_dir / f"{name}.md", f"{captions[name]}\n\n{report.to_markdown(pretty)}{footnotes}")
        files.write_text(out_dir / f"{name}.tex",
                   report.to_latex(pretty, caption=captions[name], label=f"tab:{dataset}-{name}", notes=notes))
        log.info("%s table (%s.csv, .md, .tex):\n%s%s", name, out_dir / name, report.to_markdown(pretty),
                 footnotes)
    capped = report_order(summary.filter(pl.col("runs_at_cap") > 0).select("loss", "pretraining").unique())
    if len(capped):
        log.warning("finetuning hit the epoch cap in %s: see the results table's footnote",
                    ", ".join(f"{label} ({loss})" for loss, label in capped.rows()))
    log.info("done in %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)


# Digits a .csv keeps of each float: past them, means and stds differ between polars versions (their
# summation order), which broke the committed study's byte-for-byte regeneration; 12 keep far more
# than any metric of ~10^4 users means.
CSV_DIGITS = 12


def significant(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every finite float rounded to CSV_DIGITS significant digits."""
    return frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c).round_sig_figs(CSV_DIGITS))
                              .otherwise(pl.col(c)).alias(c)
                              for c, dtype in frame.schema.items() if dtype.is_float())


def difference_notes(differences, left_out: list[str], resample_seeds: bool = True,
                     users: int | None = None) -> list[str]:
    """What a partial study's difference table lacks, said in the table's files, not only in the log:
    comparisons left out, and those on one seed, whose interval the caption's "re-sampling users
    and seeds" would otherwise pass off as covering the variation between seeds; and comparisons
    whose bootstrap and t-over-seeds intervals disagree on 0."""
    notes = [f"Left out: {'; '.join(left_out)}."] if left_out else []
    one_seed = report_order(differences.filter(pl.col("seeds") == 1)
                                   .unique(["loss", "pretraining", "reference"]), "reference")
    if resample_seeds and len(one_seed):
        named = "; ".join(f"{label} − {reference} ({loss})"
                          for loss, label, reference in one_seed.select("loss", "pretraining", "reference").rows())
        notes.append(f"On one seed: {named}. Their intervals re-sample users only: they say nothing of how "
                     "the difference varies between seeds.")
    most = differences["seeds"].max() if len(differences) else 0
    partial = report_order(differences.filter((pl.col("seeds") > 1) & (pl.col("seeds") < most))
                                  .unique(["loss", "pretraining", "reference"]), "reference")
    if len(partial):  # paired on the seeds both arms ran: the CSV's `seeds` alone said so
        named = "; ".join(f"{label} − {reference} ({loss}): {n}" for loss, label, reference, n in
                          partial.select("loss", "pretraining", "reference", "seeds").rows())
        notes.append(f"On fewer seeds than the table's {most} (those both runs have): {named}.")
    fewer = report_order(differences.filter(pl.col("users") < (users or 0)), "reference", "protocol")
    if len(fewer):  # paired on the users both ranked: the CSV's `users` alone said so
        named = "; ".join(f"{label} − {reference} ({loss}, {protocol}): {n:,}"
                          for loss, label, reference, protocol, n in
                          fewer.select("loss", "pretraining", "reference", "protocol", "users").rows())
        notes.append(f"On fewer users than the runs' {users:,} (those both runs ranked): {named}.")
    # three seeds give the t interval 2 degrees of freedom: it can be far wider than the bootstrap's
    split = {True: [], False: []}  # keyed by whether the bootstrap interval is the one excluding 0
    for r in differences.iter_rows(named=True):
        bootstrap = intervals.excludes_zero(r["ci_low"], r["ci_high"])
        if r["seeds_ci_low"] is not None and bootstrap != intervals.excludes_zero(r["seeds_ci_low"], r["seeds_ci_high"]):
            split[bootstrap].append(f"{r['pretraining']} − {r['reference']} ({r['loss']}, {r['protocol']})")
    for bootstrap, named in split.items():
        if named:
            one, other = ("bootstrap", "t interval over seeds") if bootstrap else ("t interval over seeds", "bootstrap")
            notes.append(f"The {one} excludes 0, the {other} does not: {'; '.join(named)}. Read a difference "
                         "as clear only where both exclude 0 (the stars of accuracy_vs_rank).")
    if differences.is_empty() and not left_out:
        notes.append("No comparison: no preset's full was finetuned with the same loss as none, authors or a rank.")
    return notes


if __name__ == "__main__":
    sys.exit(main())
