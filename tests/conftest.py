"""Test-wide setup.

TRITON_INTERPRET must be set before any ``@triton.jit`` decorator runs, so it is set here, before the package is
imported. Golden data from the official implementations lives in ``../shared/golden`` (or TRACKERS_GOLDEN_DIR):
golden tests may skip only when that folder is absent and TRACKERS_REQUIRE_GOLDEN is unset; in CI they must run.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _golden_root() -> Path:
    env = os.environ.get("TRACKERS_GOLDEN_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "golden"


def skip_or_fail_missing_golden(what: str) -> None:
    """Golden data is missing: fail when it is required (CI), skip otherwise."""
    if os.environ.get("TRACKERS_REQUIRE_GOLDEN") == "1":
        pytest.fail(f"golden data required (TRACKERS_REQUIRE_GOLDEN=1) but {what} is missing")
    pytest.skip(f"golden data not available: {what}")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of golden data; fails (never skips) when TRACKERS_REQUIRE_GOLDEN=1 and it is missing."""
    root = _golden_root()
    if not root.is_dir():
        skip_or_fail_missing_golden(str(root))
    return root


@pytest.fixture(scope="session")
def golden_module(golden_dir):
    """Import helper for the golden folder's scripts (synth_state_dict.py, synth_video.py)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"_golden_{name}", golden_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
