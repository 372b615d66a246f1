"""Convert the S3Rec authors' released pretrained model into this project's pretrain.pt.

The authors' file (e.g. ../shared/authors/Beauty-epochs-150.pt) is a plain state dict of their
S3RecModel; it is loaded with weights_only=True (never unpickling code), checked against the
prepared data set (items + 2 and attributes + 1 embedding rows) and written, with dense heads,
as a pretrain.pt that finetunes with
    scripts/finetune.py --data DIR --variant VARIANT --pretrained OUT --seed S --out-dir RUN_DIR
(any seed: the import has none). VARIANT is `full` by default, or `authors` to keep it apart
from this project's own `full` runs in the workflow.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import torch

from s3rec import cli, files, runs, runtime
from s3rec.authors import check_shapes, convert_state_dict, model_settings
from s3rec.data import load_dataset, prepared_format
from s3rec.pretraining import PretrainModel

log = logging.getLogger("import_checkpoint")


def import_checkpoint(authors: Path, data_dir: Path, out: Path, variant: str = "full", settings: dict | None = None,
                      epochs: int | None = None) -> dict:
    started = time.perf_counter()
    if variant not in ("full", "authors"):
        raise ValueError(f"--variant: expected full or authors (dense heads), got {variant!r}")
    if not authors.is_file():
        raise FileNotFoundError(f"authors' checkpoint {authors} {'is a folder' if authors.is_dir() else 'does not exist'}")
    settings = settings or {}
    if not isinstance(settings, dict) or set(settings) - {"model"}:
        raise ValueError(f"--settings: expected a JSON object with only a `model` section (an import's pretraining "
                         f"settings are the paper preset and --epochs), got {settings!r}")
    theirs = files.load_torch(authors)
    if not isinstance(theirs, dict) or not all(isinstance(v, torch.Tensor) for v in theirs.values()):
        raise ValueError(f"{authors}: expected a state dict of tensors (the authors' S3RecModel), got {type(theirs).__name__}")
    embeddings = theirs.get("item_embeddings.weight", torch.empty(0, 64))  # absent: check_shapes names it
    if not all(isinstance(k, str) for k in theirs) or embeddings.dim() != 2:
        raise ValueError(f"{authors}: expected a state dict of named tensors with a 2-D item_embeddings.weight "
                         "(items + 2, hidden size), as the authors' S3RecModel saves it")
    dataset = load_dataset(data_dir)
    warn_unless_release_ids(data_dir)
    # Their run_pretrain.py defaults; the hidden size and depth are read off the tensors.
    model = {**model_settings(theirs), **settings.get("model", {})}
    epochs = epochs if epochs is not None else _epochs(authors)  # --epochs 0 is refused, not read off the name
    cfg = runs.resolve_config({"model": model, "pretrain": {"preset": "paper", "epochs": epochs}}, variant, seed=0)
    try:
        check_shapes(theirs, dataset.num_items, dataset.num_attributes, cfg.model.max_len)
        converted = convert_state_dict(theirs)
        pretrain_model = PretrainModel(cfg, dataset.num_items, dataset.num_attributes)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{authors} does not fit {data_dir}: {error}") from error
    # in one line (torch's strict load lists every key: 38 lines for another hidden_size)
    files.load_state(pretrain_model, converted, authors, f"a pretraining model of {data_dir} with these settings")
    checkpoint = {"config": cfg.to_dict(), "variant": variant, "seed": None,  # one import serves every seed
                  "data_digest": runs.digest_of_data(data_dir), "epoch": cfg.pretrain.epochs,
                  "wall_seconds": 0.0, "cpu_seconds": 0.0,
                  "source": {"authors_checkpoint": str(authors), "sha256": runtime.digest([authors])},
                  "state_dict": pretrain_model.state_dict()}
    files.save_torch(out, checkpoint)
    log.info("wrote %s (variant %s, %d items, %d attributes, %d layers) from %s in %.1f s", out, variant,
             dataset.num_items, dataset.num_attributes, cfg.model.num_layers, authors, time.perf_counter() - started)
    return checkpoint


def warn_unless_release_ids(data_dir: Path) -> None:
    """Their embedding rows are their release's item and attribute ids, which only --format s3rec
    keeps: a data set of another format and the same sizes fits the tables but not their rows (the
    amazon format numbers attributes by first appearance, not as the release does)."""
    prepared_as = prepared_format(data_dir) or "unknown (no stats.json)"
    if prepared_as != "s3rec":
        log.warning("%s was prepared with --format %s: the authors' item and attribute embeddings are indexed by "
                    "their release's ids (--format s3rec), which this data set's ids need not match", data_dir,
                    prepared_as)


def _epochs(path: Path) -> int:
    """Their files are named <Data>-epochs-<N>.pt."""
    match = re.search(r"epochs-(\d+)", path.name)
    if not match:
        raise ValueError(f"{path.name}: the name does not say how many epochs it was pretrained (<Data>-epochs-<N>.pt); pass --epochs")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors", required=True, type=Path, help="the authors' state dict, e.g. Beauty-epochs-150.pt")
    parser.add_argument("--data", required=True, type=Path, help="the prepared data set it was trained on (resources/<name>)")
    parser.add_argument("--out", required=True, type=Path, help="pretrain.pt to write")
    parser.add_argument("--variant", default="full", help="variant name recorded in the checkpoint: full (default) or authors")
    parser.add_argument("--settings", type=cli.json_object, default={},
                        help="JSON with a `model` section where their model differs from the defaults (e.g. num_heads)")
    parser.add_argument("--epochs", type=cli.positive_int, default=None, help="pretraining epochs, if the file name does not say")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.clear_errors():
        cli.check_destination(args.out, "--out")  # before converting, not at the write
        import_checkpoint(args.authors, args.data, args.out, args.variant, args.settings, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
