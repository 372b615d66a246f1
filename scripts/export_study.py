"""Copy a study's small, tracked files from results/ to study/<dataset>/, and write its plan.

    python scripts/export_study.py copy FILE... --to DIR
    python scripts/export_study.py heads CHECKPOINT --out heads.pt
    python scripts/export_study.py plan --dataset NAME --runs JSON [--settings JSON] --out plan.json

copy   copies each FILE into DIR (created) under its own name, through a temporary file and a
       rename, so DIR never holds a half-written file. A missing FILE, or two FILEs with the same
       name, stop it before anything is written.
heads  reduces a pretrain.pt (scripts/pretrain.py, or the authors' import of
       scripts/import_checkpoint.py) to what the head-spectra figure reads: the same dict, with
       `state_dict` cut to the pretraining heads' tensors (`heads.<aap|mip|map|sp>.*`) and
       every other entry that holds tensors (an optimizer state, say) dropped; metadata
       (variant, seed, config, epoch, seconds, source ...) is kept. The file is byte-stable:
       the same checkpoint gives the same heads.pt.
plan   writes plan.json, what the study is meant to hold; scripts/report_study.py compares the
       study folder with it (runs.md) and takes the report settings from it.

--runs of `plan` is a JSON object (or just the list of finetunings):
    {"finetunings": [{"pretraining": P, "seed": S, "loss": L}, ...],   required
     "pretrainings": [{"pretraining": P, "seed": S}, ...],  default: those the finetunings start from
     "authors": true|false,      default: whether a finetuning starts from `authors`
     "popularity": true|false}   default: true
  P = none | authors | <preset>-<variant> (e.g. seed-full, paper-r16; <preset> lowercase letters,
  digits and _, starting with a letter), S an integer >= 0, L = bce | ce; a pretraining is always
  a <preset>-<variant>.
--settings is the JSON scripts/aggregate.py takes (the config's `report` section plus
`protocols`).

plan.json (keys sorted, 2-space indents, a final newline: the same plan gives the same bytes):
    {"dataset": "beauty",
     "finetunings": [{"loss": "bce", "pretraining": "none", "seed": 0}, ...],
     "pretrainings": [{"pretraining": "paper-full", "seed": 0}, ...],
     "authors": true,          the authors' checkpoint is expected: authors/heads.pt
     "popularity": true,       popularity/metrics.json and ranks.parquet are expected
     "report": {"tables": {... --settings as given: aggregate.py's --settings ...},
                "figures": {"metric": ..., "split": ..., "protocols": [...]}},  plot_report.py's
                                 --settings: those keys of --settings (absent ones: its defaults)
     "version": 1}
Finetunings are listed in the order none, <preset>-full, <preset>-r<small> .. r<large> (presets
alphabetical), authors; then by seed and loss. Pretrainings likewise.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from s3rec import cli, files
from s3rec.study_folder import make_plan, plan_text

log = logging.getLogger("s3rec")



# ---------------------------------------------------------------- copy


def copy_files(sources: list[Path], folder: Path) -> list[Path]:
    """Copy each source into `folder` under its name, each through a temporary file + rename."""
    cli.check_destination(folder, "copy: --to", folder=True)
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        more = f" (nor {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        what = "is a folder, not a file" if Path(missing[0]).is_dir() else "does not exist"
        raise FileNotFoundError(f"copy: source file {missing[0]} {what}{more}")
    names = [s.name for s in sources]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"copy: several sources are named {clashes[0]!r}; each would overwrite the other in {folder}")
    targets = []
    for source in sources:
        target = folder / source.name
        # files.atomic_write: the project's one temporary-file-then-rename writer (synced, group-readable)
        files.atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        log.info("copied %s -> %s (%d bytes)", source, target, target.stat().st_size)
        targets.append(target)
    return targets


# ---------------------------------------------------------------- heads


def holds_tensors(value) -> bool:
    """Whether a checkpoint entry contains a tensor anywhere (state dicts, optimizer states)."""
    import torch  # in the heads' functions only: copying a finetuning's files needs none (~1.5 s a job)

    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_tensors(v) for v in value)
    return False


def is_head_key(key: str) -> bool:
    """heads.<name>.<param> of PretrainModel (s3rec/pretraining.py); also under a prefix."""
    return key.startswith("heads.") or ".heads." in key


def state_bytes(state: dict) -> int:
    import torch

    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))


def heads_checkpoint(path: Path) -> dict:
    """The checkpoint at `path` with only the heads' tensors in its state dict and no other tensors."""
    import torch

    checkpoint = files.load_torch(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        keys = f" with keys {sorted(map(str, checkpoint))[:8]}" if isinstance(checkpoint, dict) else ""
        raise ValueError(f"{path}: expected a pretrain.pt, a dict with a `state_dict` entry "
                         f"(scripts/pretrain.py, scripts/import_checkpoint.py), got {type(checkpoint).__name__}{keys}")
    state = checkpoint["state_dict"]
    heads = {k: v.detach().clone() for k, v in state.items() if is_head_key(k) and isinstance(v, torch.Tensor)}
    if not heads:
        examples = ", ".join(sorted(state)[:3]) or "none"
        raise ValueError(f"{path}: no pretraining head tensor in its state_dict (expected keys "
                         f"heads.<aap|mip|map|sp>.*; it has {len(state)} keys, e.g. {examples})")
    dropped = sorted(k for k, v in checkpoint.items() if k != "state_dict" and holds_tensors(v))
    kept = {k: v for k, v in checkpoint.items() if k != "state_dict" and k not in dropped}
    log.info("%s: kept %d head tensors (%s), %d of %d bytes of the state dict; metadata kept: %s; dropped: %s",
             path, len(heads), ", ".join(sorted(heads)), state_bytes(heads), state_bytes(state),
             ", ".join(sorted(kept)) or "none", ", ".join(dropped) or "nothing else")
    return {**kept, "state_dict": heads}


def save_heads(checkpoint: dict, out: Path) -> None:
    files.save_torch(out, checkpoint)  # the same bytes from export to export
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)


# ---------------------------------------------------------------- plan


def write_plan(plan: dict, out: Path) -> None:
    text = plan_text(plan)
    files.write_text(out, text)
    log.info("wrote %s: data set %s, %d finetunings, %d pretrainings, authors %s, popularity %s",
             out, plan["dataset"], len(plan["finetunings"]), len(plan["pretrainings"]),
             "expected" if plan["authors"] else "not expected", "expected" if plan["popularity"] else "not expected")


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    copy = commands.add_parser("copy", help="copy files into a folder, each through a temporary file")
    copy.add_argument("files", nargs="+", type=Path)
    copy.add_argument("--to", required=True, type=Path, help="destination folder (created)")
    heads = commands.add_parser("heads", help="a pretrain.pt reduced to its heads' tensors")
    heads.add_argument("checkpoint", type=Path, help="pretrain.pt")
    heads.add_argument("--out", required=True, type=Path, help="heads.pt to write")
    plan = commands.add_parser("plan", help="write the study plan (plan.json)")
    plan.add_argument("--dataset", required=True)
    plan.add_argument("--runs", required=True, type=cli.json_argument, help="JSON, see above")
    plan.add_argument("--settings", type=cli.json_object, default={},
                      help="JSON: scripts/aggregate.py's --settings")
    plan.add_argument("--out", required=True, type=Path, help="plan.json to write")
    args = parser.parse_args(argv)
    cli.setup_logging()
    started, cpu_started = time.perf_counter(), time.process_time()
    with cli.clear_errors():
        if args.command == "copy":
            copy_files(args.files, args.to)
        elif args.command == "heads":
            cli.check_destination(args.out, "heads: --out")
            save_heads(heads_checkpoint(args.checkpoint), args.out)
        else:
            cli.check_destination(args.out, "plan: --out")
            write_plan(make_plan(args.dataset, args.runs, args.settings), args.out)
    log.info("%s done in %.1f s (%.1f s CPU)", args.command, time.perf_counter() - started,
             time.process_time() - cpu_started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
