"""A tiny random-weight CoTracker3 gives the same tracks with either corr4d backend (Triton through the interpreter)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import trackers.ops as ops
from _helpers import TINY_COTRACKER

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:  # pragma: no cover
    HAVE_TRITON = False

pytestmark = [
    pytest.mark.skipif(not HAVE_TRITON, reason="triton is not importable"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (see conftest)"),
]

TINY = {k: v for k, v in TINY_COTRACKER.items() if k != "corr_radius"}


def _video(T=6, H=24, W=40, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 255, size=(H + T, W + 2 * T, 3)).astype(np.uint8)
    return np.stack([base[t:t + H, 2 * t:2 * t + W] for t in range(T)])  # panning texture


@pytest.mark.parametrize("radius", [1, 3])
def test_cotracker3_identical_with_either_corr4d_backend(monkeypatch, radius):
    from trackers import PointTracker

    tracker = PointTracker.from_config(dict(TINY, corr_radius=radius), seed=0, settings=dict(iters=2, support_grid_size=2))
    with torch.no_grad():
        tracker.model.updateformer.flow_head.weight.mul_(0.05)  # keep random-weight tracks near the texture
    queries = [[0, 10.0, 8.0], [2, 30.5, 12.25], [5, 39.0, 0.0]]
    video = _video()

    mod = sys.modules["trackers.ops.corr4d"]
    used = []
    for name in ("_Corr4dTorch", "_Corr4dTriton"):
        fn = getattr(mod, name)
        monkeypatch.setattr(fn, "apply", (lambda f, n: (lambda *a: (used.append(n), f(*a))[1]))(fn.apply, name))

    with ops.use_backend("torch"):
        ref = tracker.track(video, queries)
    assert used and set(used) == {"_Corr4dTorch"}
    used.clear()
    with ops.use_backend("triton"):
        fused = tracker.track(video, queries)
    assert used and set(used) == {"_Corr4dTriton"}

    assert torch.isfinite(ref.tracks).all()
    torch.testing.assert_close(fused.tracks, ref.tracks, rtol=0, atol=1e-4)  # measured ~2e-6
    torch.testing.assert_close(fused.visibility, ref.visibility, rtol=0, atol=1e-5)
    assert torch.equal(fused.visible, ref.visible)
