"""The path grammar of run files: which run (pretraining, seed, loss) and data set a history
or checkpoint file belongs to, read off its path, since those files carry no labels of their own;
and the check that no run's file is given twice."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from s3rec.labels import PRETRAINED_HERE

_SEED_DIR = re.compile(r"seed(\d+)")
_LOSS_DIR = re.compile(r"[a-z][a-z0-9_]*")
RUN_LAYOUT = ("<root>/<dataset>/<pretraining>/seed<S>/<file> (pretraining files), "
              "<root>/<dataset>/<pretraining>/seed<S>/<loss>/<file> (finetuning files) or "
              "<root>/<dataset>/authors/<file> (the authors' checkpoint), where <pretraining> is none, "
              "authors or <preset>-<variant> (e.g. seed-full, paper-r16) and <loss> e.g. bce or ce")


def _parse_run_path(path: Path) -> tuple[str, int | None, str | None, Path]:
    """(pretraining, seed, loss, the pretraining's folder) of a run file; ValueError off the grammar."""
    folder, loss = path.parent, None
    if not _SEED_DIR.fullmatch(folder.name) and _SEED_DIR.fullmatch(folder.parent.name):
        loss, folder = folder.name, folder.parent  # .../seed<S>/<loss>/<file>
    match = _SEED_DIR.fullmatch(folder.name)
    run, seed = (folder.parent, int(match.group(1))) if match else (folder, None)
    label = run.name
    valid = ((match is not None and (label in ("none", "authors") or PRETRAINED_HERE.fullmatch(label)))
             or (match is None and label == "authors"))  # the seed-independent authors' checkpoint
    if not valid or (loss is not None and not _LOSS_DIR.fullmatch(loss)):
        raise ValueError(f"{path}: not a run file; expected {RUN_LAYOUT}")
    return label, seed, loss, run


def run_of_path(path: str | Path) -> tuple[str, int | None, str | None]:
    """(pretraining, seed, loss) of a history or checkpoint file, which carries no labels itself.

    .../seed-r16/seed2/pretrain_history.csv -> ('seed-r16', 2, None);
    .../seed-r16/seed2/ce/finetune_history.csv -> ('seed-r16', 2, 'ce');
    .../authors/pretrain.pt -> ('authors', None, None) (one checkpoint serves every seed).
    Any root folder above <dataset> is accepted (results/, study/, ...).
    """
    label, seed, loss, _ = _parse_run_path(Path(path))
    return label, seed, loss


def dataset_of(path: str | Path) -> str:
    """<dataset> of a file under <root>/<dataset>/: a run file (see `run_of_path`),
    popularity/<file> or report/<kind>/<file>."""
    path = Path(path)
    if path.parent.name == "popularity":
        folder = path.parent.parent
    elif path.parent.parent.name == "report":
        folder = path.parents[2]
    else:
        try:
            folder = _parse_run_path(path)[3].parent
        except ValueError:  # say the two other layouts too (a difference.csv copied elsewhere, say)
            raise ValueError(f"{path}: neither a run file nor popularity's or the report's; expected {RUN_LAYOUT}; "
                             "or <root>/<dataset>/popularity/<file>, or <root>/<dataset>/report/tables/<file> "
                             "(difference.csv)") from None
    if not folder.name:
        raise ValueError(f"{path}: no <dataset> folder above the run folder; expected {RUN_LAYOUT}")
    return folder.name


def one_dataset(paths: Sequence[str | Path]) -> str:
    """The data set of files that must all be of one (a figure's runs), or an error naming two
    files of different data sets: their runs would share labels (seed-full seed 0) in one figure."""
    first: dict[str, Path] = {}
    for path in map(Path, paths):
        first.setdefault(dataset_of(path), path)
    if len(first) > 1:
        (one, a), (two, b) = list(first.items())[:2]
        raise ValueError(f"{a} is of data set {one!r}, {b} of {two!r}; expected the runs of one data set")
    return next(iter(first))


# a run's pretraining checkpoint, and the copy of its head weights alone (scripts/export_study.py)
HEAD_CHECKPOINTS = ("pretrain.pt", "heads.pt")


def check_each_run_once(paths: Sequence[str | Path]) -> None:
    """Each run's file given once: the same file twice, or a copy of it under another root
    (results/ and study/), would be drawn twice as one run's, or as another seed's. A run's
    heads.pt holds its pretrain.pt's head weights, so the two count as one file. Popularity's
    and the report's files are not run files."""
    seen: dict[tuple, Path] = {}
    for path in map(Path, paths):
        if path.parent.name == "popularity" or path.parent.parent.name == "report":
            continue
        pretraining, seed, loss = run_of_path(path)
        kind = "pretrain.pt" if path.name in HEAD_CHECKPOINTS else path.name
        identity = (dataset_of(path), kind, pretraining, seed, loss)
        if identity in seen:
            run = f"{pretraining}" + (f" seed {seed}" if seed is not None else "") + (f", {loss}" if loss else "")
            what = "head weights" if path.name in HEAD_CHECKPOINTS else path.name
            raise ValueError(f"{seen[identity]} and {path}: both are the {what} of {run} of {identity[0]}; "
                             "expected each once")
        seen[identity] = path
