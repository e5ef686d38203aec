"""torch.hub entry points, one per registry name (generated from the registry, so they never drift).

    model = torch.hub.load("<repo>", "cotracker3_offline")                    # co-tracker's call signature
    tracks, visibility = model(video_btchw, grid_size=10)                     # as with facebookresearch/co-tracker
    model = torch.hub.load("<repo>", "cotracker3_offline", pretrained=False)  # random weights, same architecture

Point models return a :class:`trackers.point.cotracker_compat.CoTrackerCompat` (``model.tracker`` is the full
``PointTracker``); box models return their tracker (``track(video, init_box)``, ``stream(...)``).
"""
dependencies = ["torch", "numpy", "huggingface_hub", "safetensors"]

from trackers.base import load_tracker as _load_tracker  # noqa: E402
from trackers.registry import get_entry as _get_entry, list_models as _list_models  # noqa: E402


def _make_entry(name: str):
    def entry(pretrained: bool = True, **kwargs):
        tracker = _load_tracker(name, pretrained=pretrained, **kwargs)
        if tracker.task == "points":
            from trackers.point.cotracker_compat import CoTrackerCompat

            return CoTrackerCompat(tracker)
        return tracker

    e = _get_entry(name)
    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = (
        f"{e.description}.\n\n{e.tracker_name} '{name}'. Paper: {e.paper}. Weights license: {e.license}.\n"
        "Args: pretrained (bool): load the released weights (else random init); other keyword arguments go to "
        f"{e.tracker_name}.from_pretrained (checkpoint=, device=, dtype=, ...)."
    )
    return entry


for _name in _list_models():
    globals()[_name.replace("-", "_")] = _make_entry(_name)
del _name
