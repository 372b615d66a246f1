"""Prepare a data set as parquet: the authors' release, raw Amazon 2014, or synthetic.

    python scripts/prepare_data.py --format synthetic --users 2000 --items 500 --attributes 60 --seed 0 --out DIR
    python scripts/prepare_data.py --format s3rec --sequences Beauty.txt --attributes Beauty_item2attributes.json --out DIR
    python scripts/prepare_data.py --format amazon --reviews reviews_Beauty_5.json.gz --meta meta_Beauty.json.gz --out DIR

Writes DIR/sequences.parquet, DIR/item_attributes.parquet and DIR/stats.json (and id maps
for amazon); see resources/README.md. Bad input exits with status 1 and a message naming
the file, line and what was expected, and leaves DIR as it was.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from s3rec.amazon import read_amazon
from s3rec.data import DataError, Prepared, read_s3rec, write_prepared
from s3rec.synthetic import SyntheticSpec, generate

log = logging.getLogger("prepare_data")

REQUIRED = {
    "s3rec": ("sequences", "attributes"),
    "amazon": ("reviews", "meta"),
    "synthetic": (),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(REQUIRED))
    parser.add_argument("--out", required=True, help="output directory (replaced only on success)")
    s3rec = parser.add_argument_group("s3rec (the authors' release)")
    s3rec.add_argument("--sequences", help="<Name>.txt: 'user_id item ...' per line")
    # --attributes is a file for s3rec and a count for synthetic; checked below.
    s3rec.add_argument("--attributes", help="s3rec: <Name>_item2attributes.json; synthetic: number of attributes")
    amazon = parser.add_argument_group("amazon (raw 2014 files, .json or .json.gz)")
    amazon.add_argument("--reviews", help="reviews_X_5.json[.gz], one JSON review per line")
    amazon.add_argument("--meta", help="meta_X.json[.gz], one Python-literal dict per line")
    amazon.add_argument("--k-core", type=int, default=5, help="minimum reviews per user and per item (default 5)")
    synthetic = parser.add_argument_group("synthetic")
    synthetic.add_argument("--users", type=int, default=SyntheticSpec.users)
    synthetic.add_argument("--items", type=int, default=SyntheticSpec.items)
    synthetic.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in REQUIRED[args.format] if getattr(args, name) is None]
    if missing:
        parser.error(f"--format {args.format} needs {', '.join(missing)}")
    if args.format == "synthetic":
        try:
            args.attributes = SyntheticSpec.attributes if args.attributes is None else int(args.attributes)
        except ValueError:
            parser.error(f"--format synthetic: --attributes expects a number, got {args.attributes!r}")
    return args


def build(args: argparse.Namespace) -> Prepared:
    if args.format == "s3rec":
        return read_s3rec(args.sequences, args.attributes)
    if args.format == "amazon":
        return read_amazon(args.reviews, args.meta, k_core=args.k_core)
    return generate(SyntheticSpec(users=args.users, items=args.items, attributes=args.attributes, seed=args.seed))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        prepared = build(args)
        stats = write_prepared(prepared, args.out)
    except DataError as err:
        log.error("%s", err)
        sys.exit(f"prepare_data: error: {err}")
    log.info("wrote %s in %.2f s: %s", args.out, time.perf_counter() - started,
             json.dumps({k: v for k, v in stats.items() if k != "parameters"}))
    return stats


if __name__ == "__main__":
    main()
