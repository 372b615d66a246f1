"""How much of each learned dense AAP/MAP head a rank-r factorisation could keep.

    python benchmarks/head_energy.py study/beauty/*/seed*/heads.pt study/beauty/authors/heads.pt \
        [--ranks 8 16 32] [--heads aap map]

For every dense head weight W in the given heads.pt (or pretrain.pt) files: the share of
‖W‖²_F that its best rank-r approximation keeps (Eckart–Young: Σ_{i≤r} σᵢ² / Σ σᵢ²), the upper
bound on what W = U Vᵀ with U, V ∈ ℝ^{d×r} can represent of what the dense head learned.
Low-rank heads are skipped (their W has rank r by construction). Prints one JSON object: each
file's values and, per data set and pretraining, the mean and std over its seeds. A run's
head weights given twice (its heads.pt and pretrain.pt, or a copy under another root) are
refused: they would count as another seed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from s3rec import cli, report_inputs, run_paths, spectra
from s3rec.config import HEAD_NAMES


def energies(path: Path, heads: list[str], ranks: list[int]) -> list[dict]:
    state = report_inputs.read_head_weights(path)
    pretraining, seed, _ = run_paths.run_of_path(path)
    dataset = run_paths.dataset_of(path)
    if not any(key.endswith((f"heads.{head}.weight", f"heads.{head}.U")) for key in state for head in heads):
        # a finetune.pt (encoder only), or another model's file
        raise ValueError(f"{path}: no {' or '.join(heads)} head weights; expected a heads.pt or pretrain.pt")
    rows = []
    for head in heads:
        if not any(key.endswith(f"heads.{head}.weight") for key in state):
            continue  # low rank
        report_inputs.check_head_finite(path, state, head)
        kept = spectra.rank_energy(spectra.head_spectrum(state, head), ranks)
        rows.append({"file": str(path), "dataset": dataset, "pretraining": pretraining, "seed": seed, "head": head,
                     "energy": {str(r): v for r, v in kept.items()}})
    return rows


def summary(rows: list[dict], ranks: list[int]) -> list[dict]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["pretraining"], row["head"]), []).append(row)
    out = []
    for (dataset, pretraining, head), members in groups.items():
        entry = {"dataset": dataset, "pretraining": pretraining, "head": head, "files": len(members)}
        for r in map(str, ranks):
            values = np.array([m["energy"][r] for m in members])
            entry[f"r{r}"] = {"mean": float(values.mean()),
                              "std": float(values.std(ddof=1)) if len(values) > 1 else None}
        out.append(entry)
    return out


def rounded(value, digits: int = 4):
    """Floats rounded to `digits` for printing, only after every mean and std is taken."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="heads.pt or pretrain.pt files")
    parser.add_argument("--ranks", nargs="+", type=cli.positive_int, default=[8, 16, 32])
    parser.add_argument("--heads", nargs="+", default=["aap", "map"], choices=HEAD_NAMES)
    args = parser.parse_args(argv)
    for option, values in (("--ranks", args.ranks), ("--heads", args.heads)):
        if len(set(values)) < len(values):  # a rank twice would be one key of each file's "energy"
            parser.error(f"{option}: a value given twice in {' '.join(map(str, values))}")
    cli.setup_logging()
    with cli.clear_errors():  # a file that is no run's checkpoint, NaN weights: its message alone
        run_paths.check_each_run_once(args.files)
        rows = [row for path in args.files for row in energies(path, args.heads, args.ranks)]
    if not rows:
        parser.error(f"no dense {' or '.join(args.heads)} head in {' '.join(map(str, args.files))}: their heads "
                     "are low rank (skipped: W = U Vᵀ has rank r by construction)")
    result = {"ranks": args.ranks, "runs": rows, "summary": summary(rows, args.ranks)}
    print(json.dumps(rounded(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
