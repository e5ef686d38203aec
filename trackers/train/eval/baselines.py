"""Classical tracking baselines on OpenCV: pyramidal Lucas-Kanade for points, CSRT for boxes.

They give the metrics in :mod:`trackers.train.eval.metrics` a reference point that needs no network. OpenCV is an
optional dependency: it is imported when a baseline is first used, and a clear :class:`ImportError` says what to
install (``pip install "trackers[baselines]"``, i.e. ``opencv-contrib-python-headless``; CSRT lives in the
contrib build since OpenCV 5, and the contrib and plain builds must not be installed together because both
provide ``cv2``).

Inputs follow :mod:`trackers.video`: a clip ``(T, H, W, 3)`` or ``(T, 3, H, W)``, numpy or torch, ``uint8`` or
float in ``[0, 255]`` (or a path to a video file), point queries ``(t, x, y)`` in pixels with pixel centres at
integer coordinates (OpenCV's convention too), boxes ``(x1, y1, x2, y2)``. Results are
:class:`trackers.results.PointTracks` / :class:`trackers.results.BoxTracks`.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import numpy as np
import torch

from trackers.results import BoxTracks, PointTracks
from trackers.video import as_video

__all__ = ["LucasKanadeTracker", "CSRTTracker"]

_INSTALL_HINT = 'pip install "trackers[baselines]" (which installs opencv-contrib-python-headless)'


def _import_cv2(need_contrib: bool = False):
    """Import OpenCV on first use, with an actionable message when it (or its contrib trackers) is missing."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"the classical baselines need OpenCV: {_INSTALL_HINT}") from e
    if need_contrib and not hasattr(cv2, "TrackerCSRT_create"):
        raise ImportError("cv2.TrackerCSRT_create is missing: this OpenCV build lacks the contrib trackers. "
                          f"Uninstall opencv-python(-headless) and {_INSTALL_HINT}")
    return cv2


def _frames_uint8(video: Any) -> np.ndarray:
    """Clip (array, tensor, list of frames or video path) -> contiguous ``(T, H, W, 3)`` RGB uint8 numpy array."""
    if isinstance(video, (str, bytes, os.PathLike)):
        from trackers.io import read_video
        video = read_video(video)
    x = as_video(video)  # (T, 3, H, W) float32 in [0, 255], validated
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).cpu().numpy())


def _grid(size: int, H: int, W: int) -> np.ndarray:
    """``size x size`` points ``(x, y)``, rows of x for increasing y, spanning ``[m, W - m] x [m, H - m]`` with
    ``m = W / 64`` (the layout of CoTracker's query grid, here in input pixels); ``size == 1`` is the centre."""
    if size == 1:
        return np.array([[W / 2.0, H / 2.0]])
    m = W / 64.0
    gy, gx = np.meshgrid(np.linspace(m, H - m, size), np.linspace(m, W - m, size), indexing="ij")
    return np.stack([gx, gy], axis=-1).reshape(-1, 2)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _queries(queries: Any, grid_size: Any, grid_query_frame: Any, T: int, H: int, W: int) -> np.ndarray:
    grid_size = _check_int(grid_size, "grid_size", 0)
    grid_query_frame = _check_int(grid_query_frame, "grid_query_frame", 0)
    if queries is not None and grid_size > 0:
        raise ValueError("pass either queries or grid_size, not both")
    if queries is None:
        if grid_size == 0:
            raise ValueError("nothing to track: pass queries (N, 3) or grid_size > 0")
        if grid_query_frame > T - 1:
            raise ValueError(f"grid_query_frame={grid_query_frame} but the video has {T} frames")
        xy = _grid(grid_size, H, W)
        return np.concatenate([np.full((xy.shape[0], 1), float(grid_query_frame)), xy], axis=1)
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim == 3 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(f"queries must have shape (N, 3) with rows (t, x, y); got {q.shape}")
    if q.shape[0] == 0:
        raise ValueError("queries is empty; pass at least one (t, x, y) row or use grid_size")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or inf")
    t = q[:, 0]
    if (t != np.round(t)).any() or (t < 0).any() or (t > T - 1).any():
        i = int(np.flatnonzero((t != np.round(t)) | (t < 0) | (t > T - 1))[0])
        raise ValueError(f"query {i} has frame t={t[i]}; frames must be integers in [0, {T - 1}]")
    x, y = q[:, 1], q[:, 2]
    outside = (x < -0.5) | (x > W - 0.5) | (y < -0.5) | (y > H - 0.5)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"query {i} (t, x, y) = {q[i].tolist()} lies outside the {W}x{H} frame")
    return q


class LucasKanadeTracker:
    """Point tracker: pyramidal Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``), frame to frame.

    Every point is tracked forward from its query frame to the end of the clip and backward from it to frame 0.
    A step is accepted when LK reports success in both directions and the forward-backward error (distance between
    the point and its position after tracking to the next frame and back) is below ``fb_threshold`` pixels, and the
    new position lies in the frame. A point that fails a step is lost for the rest of that direction: it is marked
    not visible and keeps its last accepted position (LK has no re-detection).

    Args:
        win_size: side of the LK search window at each pyramid level (pixels).
        max_level: highest pyramid level (0 = no pyramid); motion of up to about ``win_size / 2 * 2**max_level``
            pixels per frame can be followed.
        fb_threshold: forward-backward error (pixels) above which a step counts as failed (occlusion).
        max_iterations, epsilon: LK termination criteria per level.
    """

    def __init__(self, *, win_size: int = 21, max_level: int = 3, fb_threshold: float = 1.0,
                 max_iterations: int = 30, epsilon: float = 0.01) -> None:
        self.win_size = _check_int(win_size, "win_size", 3)
        self.max_level = _check_int(max_level, "max_level", 0)
        self.max_iterations = _check_int(max_iterations, "max_iterations", 1)
        if not (np.isfinite(fb_threshold) and fb_threshold > 0):
            raise ValueError(f"fb_threshold must be a positive number of pixels, got {fb_threshold!r}")
        if not (np.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.fb_threshold = float(fb_threshold)
        self.epsilon = float(epsilon)

    def _step(self, cv2, prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Track ``pts`` (K, 2) from ``prev`` to ``nxt``; returns new positions and the accepted mask."""
        kw = dict(winSize=(self.win_size, self.win_size), maxLevel=self.max_level,
                  criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.max_iterations, self.epsilon))
        p0 = pts.reshape(-1, 1, 2).astype(np.float32)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p0, None, **kw)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, p1, None, **kw)
        p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
        fb_err = np.linalg.norm(back - pts.reshape(-1, 2), axis=1)
        H, W = prev.shape
        inside = (p1[:, 0] >= -0.5) & (p1[:, 0] <= W - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] <= H - 0.5)
        ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb_err < self.fb_threshold) & inside
        return p1.astype(np.float64), ok

    def track(self, video: Any, queries: Optional[Any] = None, *, grid_size: int = 0,
              grid_query_frame: int = 0) -> PointTracks:
        """Track points through a clip.

        Args:
            video: ``(T, H, W, 3)`` or ``(T, 3, H, W)`` numpy array / torch tensor (uint8, or float in
                ``[0, 255]``), a list of frames, or a video file path.
            queries: ``(N, 3)`` rows ``(t, x, y)``: frame index (integer) and pixel position.
            grid_size: without ``queries``, track a ``grid_size x grid_size`` grid started at ``grid_query_frame``.
            grid_query_frame: frame of the grid points.

        Returns:
            :class:`PointTracks` with ``tracks (T, N, 2)`` float32, ``visible (T, N)`` bool, ``visibility`` the
            same as 0/1 floats (LK gives no probability), ``confidence=None``; each query's own frame holds the
            query position and is visible.
        """
        cv2 = _import_cv2()
        frames = _frames_uint8(video)
        T, H, W = frames.shape[:3]
        q = _queries(queries, grid_size, grid_query_frame, T, H, W)
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        N = q.shape[0]
        tq = q[:, 0].astype(np.int64)
        tracks = np.zeros((T, N, 2), dtype=np.float64)
        visible = np.zeros((T, N), dtype=bool)
        for order in (range(T), range(T - 1, -1, -1)):  # forward pass, then backward pass
            order = list(order)
            pos = q[:, 1:].copy()
            started = np.zeros(N, dtype=bool)
            alive = np.zeros(N, dtype=bool)
            for k, t in enumerate(order):
                new = tq == t
                started |= new
                alive |= new
                tracks[t, new] = q[new, 1:]
                visible[t, new] = True
                if k + 1 == len(order):
                    break
                t_next = order[k + 1]
                idx = np.flatnonzero(alive)
                if idx.size:
                    p1, ok = self._step(cv2, gray[t], gray[t_next], pos[idx])
                    pos[idx[ok]] = p1[ok]
                    alive[idx[~ok]] = False
                    visible[t_next, idx[ok]] = True
                # points already started (alive or lost) get a position; lost ones keep their last one
                tracks[t_next, started] = pos[started]
        return PointTracks(
            tracks=torch.from_numpy(tracks.astype(np.float32)),
            visibility=torch.from_numpy(visible.astype(np.float32)),
            visible=torch.from_numpy(visible),
            queries=torch.from_numpy(q.astype(np.float32)),
            confidence=None,
            image_size=(int(H), int(W)),
        )


class CSRTTracker:
    """Single-object box tracker: OpenCV's CSRT (discriminative correlation filter with channel and spatial
    reliability), ``cv2.TrackerCSRT``.

    Args:
        params: optional ``{name: value}`` overrides of ``cv2.TrackerCSRT_Params`` fields (e.g.
            ``{"use_hog": False}``); unknown names raise ``ValueError``.
    """

    def __init__(self, params: Optional[dict] = None) -> None:
        self.params = dict(params or {})

    def _create(self, cv2):
        if not self.params:
            return cv2.TrackerCSRT_create()
        p = cv2.TrackerCSRT_Params()
        for k, v in self.params.items():
            if k.startswith("_") or not hasattr(p, k):
                raise ValueError(f"unknown CSRT parameter {k!r}")
            setattr(p, k, v)
        return cv2.TrackerCSRT_create(p)

    def track(self, video: Any, init_box: Any) -> BoxTracks:
        """Track the object in ``init_box`` (frame 0) through the clip.

        Args:
            video: clip as for :meth:`LucasKanadeTracker.track`.
            init_box: ``(x1, y1, x2, y2)`` of the target in frame 0 (pixels). CSRT works on integer rectangles,
                so the corners are rounded to whole pixels for initialisation.

        Returns:
            :class:`BoxTracks` with ``boxes (T, 4)`` float64 ``(x1, y1, x2, y2)`` (frame 0 = ``init_box`` as given)
            and ``scores (T,)``: 1.0 where CSRT reports success, 0.0 where it reports failure -- that frame keeps
            the previous box.
        """
        cv2 = _import_cv2(need_contrib=True)
        frames = _frames_uint8(video)
        T, H, W = frames.shape[:3]
        if isinstance(init_box, torch.Tensor):
            init_box = init_box.detach().cpu().numpy()
        box = np.asarray(init_box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"init_box must be 4 finite numbers (x1, y1, x2, y2), got {init_box!r}")
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"init_box {box.tolist()} is empty after rounding to whole pixels (need x2 > x1, y2 > y1)")
        if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
            raise ValueError(f"init_box {box.tolist()} lies outside the {W}x{H} frame")
        tracker = self._create(cv2)
        bgr = frames[..., ::-1]  # OpenCV trackers expect BGR
        tracker.init(np.ascontiguousarray(bgr[0]), (x1, y1, x2 - x1, y2 - y1))
        boxes = np.zeros((T, 4), dtype=np.float64)
        scores = np.zeros(T, dtype=np.float64)
        boxes[0], scores[0] = box, 1.0
        for t in range(1, T):
            ok, rect = tracker.update(np.ascontiguousarray(bgr[t]))
            if ok:
                x, y, w, h = (float(v) for v in rect)
                boxes[t], scores[t] = (x, y, x + w, y + h), 1.0
            else:
                boxes[t], scores[t] = boxes[t - 1], 0.0
        return BoxTracks(boxes=torch.from_numpy(boxes), scores=torch.from_numpy(scores), image_size=(int(H), int(W)))
