"""trackers: state-of-the-art video point and object trackers behind one PyTorch API.

Quick start::

    import trackers
    tracker = trackers.PointTracker.from_pretrained("cotracker3-offline")
    result = tracker.track("video.mp4", grid_size=10)      # PointTracks in input pixels
    trackers.list_models()

Frame, point and box conventions are documented once, in :mod:`trackers.video`; the loading and streaming
contract shared by every tracker in :mod:`trackers.base`. Heavy submodules are imported on first use, so
``import trackers`` stays cheap and never needs a GPU or Triton.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module (imported on first access).
_LAZY = {
    "PointTracker": "trackers.point.tracker",
    "PointStream": "trackers.point.tracker",
    "PointSettings": "trackers.point.tracker",
    "LoRATracker": "trackers.box.lorat",
    "BoxTracker": "trackers.box.detrack",
    "SOTTracker": "trackers.box.tracker",
    "BoxStream": "trackers.box.tracker",
    "SOTSettings": "trackers.box.pipeline",
    "Tracker": "trackers.base",
    "load_tracker": "trackers.base",
    "PointTracks": "trackers.results",
    "BoxTracks": "trackers.results",
    "list_models": "trackers.registry",
    "get_entry": "trackers.registry",
    "WeightsNotAvailableError": "trackers.registry",
}
_SUBMODULES = {"io", "viz", "ops", "registry", "video", "results", "geometry", "models", "nn", "point", "box"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"trackers.{name}")
    raise AttributeError(f"module 'trackers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
