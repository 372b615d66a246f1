"""Preparing the authors' Beauty and LastFM release reproduces their published statistics."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from s3rec.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "s3rec"
sys.path.insert(0, str(REPO / "scripts"))
import prepare_data  # noqa: E402

EXPECTED = {  # users, items, attributes, interactions (/work/shared/data/s3rec/README.md)
    "Beauty": (22_363, 12_101, 637, 198_502),
    "LastFM": (1_090, 3_646, 388, 52_551),
}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"the authors' release is not at {DATA}")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prepare_release(tmp_path, name):
    out = tmp_path / name
    started = time.perf_counter()
    prepare_data.main(["--format", "s3rec", "--sequences", str(DATA / f"{name}.txt"),
                       "--attributes", str(DATA / f"{name}_item2attributes.json"), "--out", str(out)])
    seconds = time.perf_counter() - started
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["attributes"], stats["interactions"]) == EXPECTED[name]
    assert stats["dropped"]["short_users"] == 0

    data = load_dataset(out)
    assert (len(data.sequences), data.num_items, data.num_attributes) == EXPECTED[name][:3]
    assert sum(len(s) for s in data.sequences) == EXPECTED[name][3]
    assert seconds < 30, f"preparing {name} took {seconds:.1f} s; it should take seconds"
