"""Prepare a data set as parquet: the authors' release, raw Amazon 2014, or synthetic.

    python scripts/prepare_data.py --format synthetic --users 2000 --items 500 --attributes 60 --seed 0 --out DIR
    python scripts/prepare_data.py --format s3rec --sequences Beauty.txt --attributes Beauty_item2attributes.json --out DIR
    python scripts/prepare_data.py --format s3rec --sequences LastFM.txt --attributes LastFM_item2attributes.json \
        --negatives LastFM_sample.txt --out DIR
    python scripts/prepare_data.py --format amazon --reviews reviews_Beauty_5.json.gz --meta meta_Beauty.json.gz --out DIR

Writes DIR/sequences.parquet, DIR/item_attributes.parquet and DIR/stats.json (and id maps
for amazon, and DIR/sampled_negatives.parquet with --negatives); see resources/README.md.

DIR must be missing (it is created), empty, or hold only a previous output of this script;
that output is then replaced. A DIR holding anything else, or an --out that is a file, is
refused with exit status 2 and nothing is touched; --force writes into such a DIR anyway,
replacing only the files named above and keeping every other file. Bad input exits with
status 1 and a message naming the file, line and what was expected, and leaves DIR as it
was: files are staged in DIR/.prepare_data.tmp-* and moved into place only when complete.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import NoReturn

from s3rec import cli
from s3rec.amazon import read_amazon
from s3rec.authors_data import read_s3rec
from s3rec.data import DataError, OutputRefused, Prepared, check_output_dir, write_prepared
from s3rec.synthetic import SyntheticSpec, generate

log = logging.getLogger("prepare_data")

REQUIRED = {
    "s3rec": ("sequences", "attributes"),
    "amazon": ("reviews", "meta"),
    "synthetic": (),
}


# Options that one format alone reads (--attributes is read by two: a file or a count).
OWN_OPTIONS = {"sequences": "s3rec", "negatives": "s3rec", "reviews": "amazon", "meta": "amazon", "k-core": "amazon",
               "users": "synthetic", "items": "synthetic", "seed": "synthetic"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(REQUIRED))
    parser.add_argument("--out", required=True,
                        help="output directory: missing, empty, or a previous output of this script "
                             "(replaced only on success); anything else is refused (exit 2)")
    parser.add_argument("--force", action="store_true",
                        help="write into an --out that holds other files too: this script's files "
                             "are replaced, the other files are kept")
    s3rec = parser.add_argument_group("s3rec (the authors' release)")
    s3rec.add_argument("--sequences", help="<Name>.txt: 'user_id item ...' per line")
    # --attributes is a file for s3rec and a count for synthetic; checked below.
    s3rec.add_argument("--attributes", help="s3rec: <Name>_item2attributes.json; synthetic: number of attributes")
    s3rec.add_argument("--negatives", help="optional <Name>_sample.txt: 'user_id neg ...' per line, the authors' "
                                           "sampled-protocol negatives (used with eval.negatives: file)")
    amazon = parser.add_argument_group("amazon (raw 2014 files, .json or .json.gz)")
    amazon.add_argument("--reviews", help="reviews_X_5.json[.gz], one JSON review per line")
    amazon.add_argument("--meta", help="meta_X.json[.gz], one Python-literal dict per line")
    amazon.add_argument("--k-core", type=int, help="minimum reviews per user and per item (default 5)")
    synthetic = parser.add_argument_group("synthetic")
    synthetic.add_argument("--users", type=int, help=f"default {SyntheticSpec.users}")
    synthetic.add_argument("--items", type=int, help=f"default {SyntheticSpec.items}")
    synthetic.add_argument("--seed", type=int, help=f"default {SyntheticSpec.seed}")
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in REQUIRED[args.format] if getattr(args, name) is None]
    if missing:
        parser.error(f"--format {args.format} needs {', '.join(missing)}")
    # an option of another format would be ignored: a --k-core meant for the data, say, left unapplied
    for name, fmt in OWN_OPTIONS.items():
        if getattr(args, name.replace("-", "_")) is not None and args.format != fmt:
            parser.error(f"--{name} is read with --format {fmt} only, not --format {args.format}")
    if args.format == "synthetic" and args.attributes is not None:
        try:
            args.attributes = int(args.attributes)
        except ValueError:
            parser.error(f"--format synthetic: --attributes expects a number, got {args.attributes!r}")
    return args


def build(args: argparse.Namespace) -> Prepared:
    if args.format == "s3rec":
        return read_s3rec(args.sequences, args.attributes, args.negatives)
    def given(*names):  # the options given; the others take read_amazon's and SyntheticSpec's defaults
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    if args.format == "amazon":
        return read_amazon(args.reviews, args.meta, **given("k_core"))
    return generate(SyntheticSpec(**given("users", "items", "attributes", "seed")))


def refuse(err: OutputRefused) -> NoReturn:
    """--out cannot be used as it is: exit 2 (a usage error, as argparse's), nothing touched."""
    print(f"prepare_data: error: --out {err}", file=sys.stderr)  # once: not also logged
    sys.exit(2)


def fail(message: str) -> NoReturn:
    """Bad input (or an output that could not be written): exit 1, no partial output."""
    sys.exit(f"prepare_data: error: {message}")  # printed once, to stderr: not also logged


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cli.setup_logging()  # the format of every job's log
    started = time.perf_counter()
    try:
        check_output_dir(args.out, args.force)  # before reading the input: refuse at once
        prepared = build(args)
    except OutputRefused as err:
        refuse(err)
    except (DataError, OSError) as err:  # OSError: an input that cannot be read (it names the file)
        fail(str(err))
    try:
        stats = write_prepared(prepared, args.out, force=args.force)
    except OutputRefused as err:
        refuse(err)
    except DataError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write --out {args.out}: {err}")
    log.info("wrote %s in %.2f s: %s", args.out, time.perf_counter() - started,
             json.dumps({k: v for k, v in stats.items() if k != "parameters"}))
    return stats


if __name__ == "__main__":
    main()
