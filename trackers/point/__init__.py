"""Point tracking: :class:`~trackers.point.tracker.PointTracker` (CoTracker3) and its streaming session."""
from trackers.point.tracker import PointSettings, PointStream, PointTracker

__all__ = ["PointTracker", "PointStream", "PointSettings"]
