"""A drop-in for co-tracker's ``torch.hub`` predictors, over :class:`~trackers.point.tracker.PointTracker`.

co-tracker users load ``torch.hub.load("facebookresearch/co-tracker", "cotracker3_offline")`` and call the model on
a float ``(B, T, 3, H, W)`` video. Switching to ``torch.hub.load("<trackers repo>", "cotracker3_offline")`` keeps
that code working: the returned :class:`CoTrackerCompat` is called the same way and returns co-tracker's layout,

    tracks, visibility = model(video, grid_size=10)              # (B, T, N, 2) float, (B, T, N) bool
    tracks, visibility = model(video, queries=q)                 # q: (B, N, 3) rows (t, x, y)

while ``model.tracker`` is the full :class:`PointTracker` (probabilities, streaming, saving). Batches are tracked
clip by clip.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from trackers.errors import InputError
from trackers.point.tracker import PointTracker

__all__ = ["CoTrackerCompat"]


class CoTrackerCompat(nn.Module):
    """co-tracker predictor call signature over a :class:`PointTracker`."""

    def __init__(self, tracker: PointTracker) -> None:
        super().__init__()
        self.tracker = tracker
        self.model = tracker.model  # registered, so .to() / .eval() / parameters() act on the network

    def forward(
        self,
        video: Tensor,
        queries: Optional[Tensor] = None,
        segm_mask: Optional[Tensor] = None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        backward_tracking: bool = False,
    ) -> Tuple[Tensor, Tensor]:
        """Track ``video`` ``(B, T, 3, H, W)`` (float 0..255); returns ``(tracks (B, T, N, 2), visibility (B, T, N))``
        in pixels of ``video`` (visibility thresholded by the tracker's rule, as co-tracker does)."""
        if not isinstance(video, Tensor) or video.ndim != 5:
            raise InputError(f"video must be a (B, T, 3, H, W) tensor, got "
                             f"{tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__}")
        B = video.shape[0]
        if queries is not None:
            queries = torch.as_tensor(queries)
            if queries.ndim != 3 or queries.shape[0] != B:
                raise InputError(f"queries must be (B, N, 3) with B={B}, got {tuple(queries.shape)}")
        tracks, vis = [], []
        for b in range(B):
            kw: dict[str, Any] = dict(backward=backward_tracking)
            if queries is not None:
                kw["queries"] = queries[b]
            else:
                # co-tracker tracks a 1x1 "grid" (the centre) when neither queries nor a grid are given
                kw.update(grid_size=max(int(grid_size), 1), grid_query_frame=grid_query_frame)
                if segm_mask is not None:
                    kw["segm_mask"] = segm_mask[b] if segm_mask.ndim > 2 and segm_mask.shape[0] == B else segm_mask
            res = self.tracker.track(video[b], **kw)
            tracks.append(res.tracks)
            vis.append(res.visible)
        return torch.stack(tracks).to(video.device), torch.stack(vis).to(video.device)
