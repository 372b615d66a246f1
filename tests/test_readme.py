"""README's study tables quote the committed studies: for Beauty and LastFM, the results and
difference tables their reports (study/<dataset>/report/tables/*.csv) and the head-energy table
their heads.pt files. Each table is the first with its header in its study's paragraph (from
its heading to the next study's).

The report regenerates byte for byte from the committed runs (tests/test_study.py); this pins the
last link, README, so that a number in it cannot drift from the runs it claims to come from
(it caught two head energies rounded twice, 0.36154 written as 0.361)."""
from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

from s3rec import differences, report
from scripts_import import load_script

ROOT = Path(__file__).resolve().parents[1]
# README's heading of each study's paragraph, which holds that study's tables
HEADINGS = {"beauty": "**The Beauty study**", "lastfm": "**The LastFM study**"}


def tables(dataset: str) -> Path:
    return ROOT / "study" / dataset / "report" / "tables"


STUDIES = [pytest.param(dataset, marks=pytest.mark.skipif(
    not (tables(dataset) / "results.csv").exists(), reason=f"no committed {dataset} study report"))
    for dataset in HEADINGS]


def readme_table(dataset: str, first_header_cells: list[str]) -> list[dict[str, str]]:
    """The rows of the first README table in the study's paragraph (from its heading to the next
    study's) whose header starts with these cells, as dicts by header."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(HEADINGS[dataset])]
    assert len(starts) == 1, f"README.md has {len(starts)} lines starting {HEADINGS[dataset]}"
    others = [i for i, line in enumerate(lines) if i > starts[0] and line.startswith(tuple(HEADINGS.values()))]
    for i in range(starts[0], min(others, default=len(lines))):  # not into the next study's paragraph
        cells = split_row(lines[i])
        if cells[: len(first_header_cells)] == first_header_cells:
            rows = []
            for body in lines[i + 2:]:  # past the |---| line
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(cells, split_row(body))))
            return rows
    raise AssertionError(f"README.md has no table with header {first_header_cells} in the paragraph of {HEADINGS[dataset]}")


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []


def read_csv(dataset: str, name: str) -> list[dict[str, str]]:
    with open(tables(dataset) / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def mean_std(row: dict[str, str]) -> str:
    """The report's form: "0.0306 ± 0.0010" with several seeds, "0.0310" with one."""
    return report.format_mean_std(float(row["mean"]), float(row["std"]) if int(row["seeds"]) > 1 else None)


def formatted_differences(dataset: str) -> dict[tuple[str, str], dict[str, str]]:
    """difference.csv's NDCG@10 rows formatted by the report ('+0.0015 [-0.0004, +0.0036]' a
    protocol), by (finetuning, comparison), with README's minus sign."""
    frame = pl.read_csv(tables(dataset) / "difference.csv").filter(pl.col("metric") == "NDCG@10")
    table = differences.format_difference_table(frame)
    return {(r["Finetuning"], r["Comparison"]): {k: v.replace("-", "−") for k, v in r.items()}
            for r in table.iter_rows(named=True)}


@pytest.mark.parametrize("dataset", STUDIES)
def test_readme_results_table_quotes_the_report(dataset):
    summary = {(r["loss"], r["pretraining"], r["protocol"], r["metric"]): r for r in read_csv(dataset, "results.csv")}
    rows = readme_table(dataset, ["finetuning", "pretraining", "seeds"])
    assert len(rows) == len({(r["loss"], r["pretraining"]) for r in summary.values()})
    columns = {"NDCG@10 full": ("full", "NDCG@10"), "HR@10 full": ("full", "HR@10"),
                "NDCG@10 sampled": ("sampled", "NDCG@10")}
    for row in rows:
        loss = "" if row["finetuning"] == "–" else row["finetuning"]
        for column, (protocol, metric) in columns.items():
            key = (loss, row["pretraining"], protocol, metric)
            assert key in summary, f"README row {key} is not in results.csv"
            assert row[column] == mean_std(summary[key]), (key, column)
        quoted = summary[(loss, row["pretraining"], "full", "NDCG@10")]
        assert row["head params"] == f"{int(quoted['heads_params']):,}", row["pretraining"]
        assert row["total params"] == f"{int(quoted['total_params']):,}", row["pretraining"]
        if row["seeds"] != "–":
            assert int(row["seeds"]) == int(quoted["seeds"]), row["pretraining"]
        cpu = row["pretrain CPU s"].split(" ")[0]  # "16,919 (2 threads)"
        if cpu not in ("–", "0"):
            assert cpu == report.format_seconds(float(quoted["pretrain_cpu_seconds"])), (loss, row["pretraining"])


@pytest.mark.parametrize("dataset", STUDIES)
def test_readme_difference_table_quotes_the_report(dataset):
    seeds = {(r["loss"], f"{r['pretraining']} − {r['reference']}"): int(r["seeds"]) for r in read_csv(dataset, "difference.csv")}
    quoted = formatted_differences(dataset)
    rows = readme_table(dataset, ["finetuning", "comparison", "seeds"])
    assert len(rows) == len(quoted)
    for row in rows:
        key = (row["finetuning"], row["comparison"])
        for column in ("full ranking", "sampled"):  # README's headers are the report's protocol labels
            assert row[column] == quoted[key][f"ΔNDCG@10, {column} [95% CI]"], (*key, column)
            t_column = f"{column.split()[0]}, t over seeds"
            assert row[t_column] == quoted[key][f"{column}, over seeds [95% t]"], (*key, t_column)
        assert len(row["seeds"].split(",")) == seeds[key], row["comparison"]


@pytest.mark.parametrize("dataset", STUDIES)
def test_readme_head_energy_table_quotes_the_committed_heads(dataset):
    """The table of ‖W‖² kept at rank 8 / 16 / 32, remade from the committed heads.pt files."""
    head_energy = load_script("head_energy", "benchmarks")
    rows = readme_table(dataset, ["dense head"])
    header = list(rows[0])[1:]  # e.g. "`seed-full` (mean of 3 seeds)", "`paper-full` (seed 0)", "`authors`"
    for column in header:
        pretraining = column.split("`")[1]
        pattern = "authors/heads.pt" if pretraining == "authors" else f"{pretraining}/seed*/heads.pt"
        files = sorted((ROOT / "study" / dataset).glob(pattern))
        if "(" in column:  # "(mean of 3 seeds)" or "(seed 0)": how many seeds the column averages
            count = column.split("(")[1].removeprefix("mean of ").split()[0]
            assert len(files) == (int(count) if "seeds" in column else 1), column
        for row in rows:
            head = row["dense head"].lower()
            kept = [head_energy.energies(path, [head], [8, 16, 32])[0]["energy"] for path in files]
            means = [sum(k[str(r)] for k in kept) / len(kept) for r in (8, 16, 32)]
            assert row[column] == " / ".join(f"{m:.3f}" for m in means), (column, head)
