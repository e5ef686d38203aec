"""Registry entries of every named model, as data.

Tracker classes and converters are named by import string so that listing models imports no network code.
"""
from __future__ import annotations

from trackers.hub import ModelEntry, WeightFile, register_model

_COTRACKER_PAPER = "CoTracker3: Simpler and Better Point Tracking by Pseudo-Labelling Real Videos (Karaev et al., arXiv:2410.11831)"
_COTRACKER_LICENSE = "CC-BY-NC-4.0"

for _name, _file, _online, _what in [
    ("cotracker3-offline", "scaled_offline.pth", False, "CoTracker3 offline (whole clip, both directions), scaled training"),
    ("cotracker3-online", "scaled_online.pth", True, "CoTracker3 online (sliding window, streaming), scaled training"),
    ("cotracker3-offline-baseline", "baseline_offline.pth", False, "CoTracker3 offline, trained on Kubric only"),
    ("cotracker3-online-baseline", "baseline_online.pth", True, "CoTracker3 online, trained on Kubric only"),
]:
    register_model(
        ModelEntry(
            name=_name,
            tracker="trackers.point_tracker:PointTracker",
            config={"online": _online, "window_len": 16 if _online else 60},
            files={"weights": WeightFile("facebook/cotracker3", _file)},
            converter="trackers.models.cotracker3:convert_official_checkpoint",
            license=_COTRACKER_LICENSE,
            paper=_COTRACKER_PAPER,
            description=_what,
            tags=("point", "online" if _online else "offline"),
        )
    )

# LoRAT entries (trackers.lorat_tracker:LoRATracker) are appended below.
