"""Single-object box tracking: the shared base (:class:`~trackers.box.tracker.SOTTracker`, sessions, batching),
the crop pipeline, and the concrete trackers (LoRAT, DETRack)."""
from trackers.box.pipeline import SOTSettings
from trackers.box.tracker import BoxStream, SOTTracker

__all__ = ["SOTTracker", "BoxStream", "SOTSettings"]
