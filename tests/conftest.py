"""Shared fixtures. Tests build their own small data; tests that need ../shared skip without it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# Test models are tiny: one thread is faster than several fighting over two cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "s3rec"


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


def shared_data_or_skip() -> Path:
    if not (SHARED_DATA / "Beauty.txt").exists():
        pytest.skip(f"needs the authors' data set at {SHARED_DATA} (../shared beside the repo)")
    return SHARED_DATA
