"""Test-wide setup.

TRITON_INTERPRET must be set before any ``@triton.jit`` decorator runs, so it is set here, before the package is
imported. Golden data from the official implementations is part of the repository (``tests/data``), so every
parity test runs on a fresh clone; nothing is skipped.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of golden data (outputs of the official implementations), inside the repository."""
    assert DATA_DIR.is_dir(), f"golden data folder missing: {DATA_DIR}"
    return DATA_DIR


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
