"""Training losses, one module per task (:mod:`.point`: CoTracker3's sequence losses)."""
from trackers.train.losses.point import (
    PointLossConfig,
    confidence_loss,
    huber,
    point_losses,
    track_loss,
    visibility_loss,
)

__all__ = ["PointLossConfig", "confidence_loss", "huber", "point_losses", "track_loss", "visibility_loss"]
