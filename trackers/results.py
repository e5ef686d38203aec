"""Typed tracking results.

Results keep probabilities and scores (never only thresholded booleans) and are expressed in the pixel
coordinates of the input video (see :mod:`trackers.video` for the conventions). Fields are torch tensors on the
CPU unless moved with :meth:`to`; :meth:`numpy` gives the same object with numpy arrays.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from trackers.geometry import rescale_boxes, rescale_points, xyxy_to_xywh
from trackers.errors import InputError

__all__ = ["PointTracks", "BoxTracks"]

Array = Union[torch.Tensor, np.ndarray]


class _ResultMixin:
    """Shared behaviour of result dataclasses: conversion, device moves and npz persistence."""

    _kind: str = ""

    def _map(self, fn) -> Any:
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (torch.Tensor, np.ndarray)):
                changes[f.name] = fn(v)
        return dataclasses.replace(self, **changes)

    def numpy(self):
        """Return a copy whose array fields are numpy arrays."""
        return self._map(lambda v: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)

    def torch(self):
        """Return a copy whose array fields are torch tensors (CPU)."""
        return self._map(lambda v: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v)

    def to(self, device: Union[str, torch.device]):
        """Return a copy with all tensors on ``device``."""
        return self.torch()._map(lambda v: v.to(device))

    def _scalars(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), (torch.Tensor, np.ndarray)) and getattr(self, f.name) is not None
        }

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Save to a compressed ``.npz`` file readable by :meth:`load` (and by plain numpy)."""
        arrays = {
            k: v
            for k, v in vars(self.numpy()).items()
            if isinstance(v, np.ndarray)
        }
        meta = {"kind": self._kind, **self._scalars()}
        np.savez_compressed(os.fspath(path), __meta__=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]):
        """Load a result written by :meth:`save`."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such results file: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"])) if "__meta__" in data else {}
                kwargs = {k: torch.from_numpy(data[k]) for k in data.files if k != "__meta__"}
        except Exception as err:  # zero-byte, truncated, not a zip, pickled objects, bad JSON: many types
            raise InputError(f"{path} is not a results file written by {cls.__name__}.save() "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})") from None
        if not isinstance(meta, dict) or meta.get("kind", cls._kind) != cls._kind:
            kind = meta.get("kind") if isinstance(meta, dict) else meta
            raise InputError(f"{path} holds {kind} results, not {cls._kind}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"{path} has arrays {unknown} that {cls.__name__} does not know")
        for f in fields(cls):
            if f.name in meta:
                v = meta[f.name]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise InputError(f"{path} is missing fields of {cls.__name__}: {err}") from None

    def to_json(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """Serialise to JSON (lists of numbers); writes to ``path`` when given and returns the string."""
        obj = {"kind": self._kind, **self._scalars()}
        for k, v in vars(self.numpy()).items():
            if isinstance(v, np.ndarray):
                obj[k] = v.tolist()
        text = json.dumps(obj)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text


@dataclass
class PointTracks(_ResultMixin):
    """Point trajectories.

    Shapes are for one video; a batched call adds a leading ``B`` to every array.

    Attributes:
        tracks: ``(T, N, 2)`` float, ``(x, y)`` of every point in every frame, input-image pixels.
        visibility: ``(T, N)`` probability that the point is visible (not occluded).
        visible: ``(T, N)`` bool, the model's own visibility decision (e.g. CoTracker3 offline:
            ``visibility > 0.9``; online: ``visibility * confidence > 0.6``).
        queries: ``(N, 3)`` float, the query points ``(t, x, y)`` that started each track.
        confidence: ``(T, N)`` probability that the predicted position is accurate, or ``None``.
        image_size: ``(H, W)`` of the input frames.
        start_frame: index of the first frame held (0 for a whole clip; a streaming step's first frame).
    """

    tracks: Array
    visibility: Array
    visible: Array
    queries: Array
    confidence: Optional[Array] = None
    image_size: Optional[tuple] = None
    start_frame: int = 0

    _kind = "point_tracks"

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[-3])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[-2])

    def resized(self, size: Tuple[int, int]) -> "PointTracks":
        """The same tracks in the pixels of a video resized to ``size`` ``(H, W)`` (queries too)."""
        if self.image_size is None:
            raise InputError("these tracks have no image_size to rescale from")
        q = self.queries
        t_col = q[..., :1]
        xy = rescale_points(q[..., 1:], self.image_size, size)
        queries = torch.cat([t_col, xy], -1) if isinstance(q, torch.Tensor) else np.concatenate([t_col, xy], -1)
        return dataclasses.replace(self, tracks=rescale_points(self.tracks, self.image_size, size),
                                   queries=queries, image_size=tuple(size))

    def visible_at(self, threshold: float, *, use_confidence: bool = False) -> Array:
        """Boolean visibility with your own threshold, optionally on ``visibility * confidence``."""
        p = self.visibility
        if use_confidence:
            if self.confidence is None:
                raise InputError("these tracks carry no confidence")
            p = p * self.confidence
        return p > threshold

    def to_csv(self, path: Union[str, os.PathLike]) -> None:
        """Write one row per (frame, point): ``[batch,] frame, point, x, y, visibility, confidence, visible``."""
        r = self.numpy()
        tracks = r.tracks if r.tracks.ndim == 4 else r.tracks[None]
        vis = r.visibility if r.tracks.ndim == 4 else r.visibility[None]
        visible = r.visible if r.tracks.ndim == 4 else r.visible[None]
        conf = None
        if r.confidence is not None:
            conf = r.confidence if r.tracks.ndim == 4 else r.confidence[None]
        batched = r.tracks.ndim == 4
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow((["batch"] if batched else []) + ["frame", "point", "x", "y", "visibility", "confidence", "visible"])
            for b in range(tracks.shape[0]):
                for t in range(tracks.shape[1]):
                    for n in range(tracks.shape[2]):
                        row = [t, n, f"{tracks[b, t, n, 0]:.4f}", f"{tracks[b, t, n, 1]:.4f}",
                               f"{vis[b, t, n]:.6f}", "" if conf is None else f"{conf[b, t, n]:.6f}",
                               int(visible[b, t, n])]
                        w.writerow(([b] if batched else []) + row)


@dataclass
class BoxTracks(_ResultMixin):
    """Box trajectories of one or several targets.

    Attributes:
        boxes: ``(T, 4)`` float ``(x1, y1, x2, y2)`` per frame in input pixels; several targets (of one video, or
            one per clip of a batch) add a leading axis: ``(K, T, 4)``. Frame 0 of a clip holds the initial box.
        scores: ``(T,)`` (``(K, T)``) the tracker's confidence for each frame, in [0, 1] (1 for the initial frame).
        image_size: ``(H, W)`` of the input frames.
        start_frame: index of the first frame held (0 for a whole clip; a streaming step's first frame).
    """

    boxes: Array
    scores: Array
    image_size: Optional[tuple] = None
    start_frame: int = 0

    _kind = "box_tracks"

    @property
    def num_frames(self) -> int:
        return int(self.boxes.shape[-2])

    def xywh(self) -> Array:
        """Boxes as ``(x, y, w, h)`` (top-left corner plus size), the GOT-10k/LaSOT text format."""
        return xyxy_to_xywh(self.boxes)

    def resized(self, size: Tuple[int, int]) -> "BoxTracks":
        """The same boxes in the pixels of a video resized to ``size`` ``(H, W)``."""
        if self.image_size is None:
            raise InputError("these boxes have no image_size to rescale from")
        return dataclasses.replace(self, boxes=rescale_boxes(self.boxes, self.image_size, size),
                                   image_size=tuple(size))

    def to_csv(self, path: Union[str, os.PathLike]) -> None:
        """Write one row per frame: ``[batch,] frame, x1, y1, x2, y2, score``."""
        r = self.numpy()
        batched = r.boxes.ndim == 3
        boxes = r.boxes if batched else r.boxes[None]
        scores = r.scores if batched else r.scores[None]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow((["batch"] if batched else []) + ["frame", "x1", "y1", "x2", "y2", "score"])
            for b in range(boxes.shape[0]):
                for t in range(boxes.shape[1]):
                    row = [t] + [f"{v:.4f}" for v in boxes[b, t]] + [f"{scores[b, t]:.6f}"]
                    w.writerow(([b] if batched else []) + row)
