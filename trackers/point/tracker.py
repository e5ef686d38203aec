"""Point tracking with CoTracker3: :class:`PointTracker` (whole clips) and :class:`PointStream` (live video).

Quick start::

    import trackers
    tracker = trackers.PointTracker.from_pretrained("cotracker3-offline")
    result = tracker.track(video, grid_size=10)                 # PointTracks, input pixels
    result = tracker.track(video, queries=[[0, 120.0, 64.0]])   # (t, x, y) per point

    online = trackers.PointTracker.from_pretrained("cotracker3-online")
    with online.stream(grid_size=10) as session:
        for frame in camera:                                    # any number of frames per call
            new = session.step(frame)                           # frames this call produced or revised
    result = session.results()                                  # the whole stream (close() ran the last window)

Behaviour matches the official CoTracker3 predictors: frames are resized to the model resolution (384x512,
bilinear, ``align_corners=True``), query coordinates are rescaled with ``(W'-1)/(W-1)`` and results mapped back.
Offline: ``visible = visibility > 0.9``, each query's own frame is reset to the query point and marked visible, and
a 6x6 "support grid" of extra queries is tracked alongside explicit queries (and removed from the output).
Online: ``visible = visibility * confidence > 0.6``, no support grid unless asked for, no query-frame reset.
``PointTracks`` always keeps both probabilities. These choices are the tracker's :class:`PointSettings`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trackers.base import Settings, Stream, Tracker
from trackers.models.cotracker3 import (CoTracker3, CoTrackerConfig, OnlineState, channels_last, grid_points,
                                        pad_frames)
from trackers.results import PointTracks
from trackers.video import as_frame, as_video
from trackers.errors import InputError

__all__ = ["PointTracker", "PointStream", "PointSettings"]

ArrayLike = Union[Tensor, np.ndarray, Sequence]


@dataclass(frozen=True)
class PointSettings(Settings):
    """How :class:`PointTracker` runs the network (defaults: the official predictors).

    Attributes:
        iters: refinement iterations per window.
        support_grid_size: side of the extra grid of context points tracked alongside explicit queries or a
            mask (removed from the output); used by default by offline models.
        offline_threshold: offline visibility rule ``visibility > offline_threshold`` (the confidence head is
            ignored, as in the official offline predictor).
        online_threshold: online rule ``visibility * confidence > online_threshold``.
    """

    iters: int = 6
    support_grid_size: int = 6
    offline_threshold: float = 0.9
    online_threshold: float = 0.6

    def __post_init__(self) -> None:
        _check_iters(self.iters, "PointSettings.iters")
        v = self.support_grid_size
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"PointSettings.support_grid_size must be an int >= 1, got {v!r}")
        for name in ("offline_threshold", "online_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise InputError(f"PointSettings.{name} must be a probability in [0, 1], got {v!r}")


def _check_iters(iters: Any, name: str = "iters") -> int:
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise InputError(f"{name} must be an int >= 1, got {iters!r}")
    return int(iters)


# A coarse upper bound of the network's working memory per tracked (frame, point) pair at inference: the
# transformer's tokens and their attention/MLP intermediates (~12 floats per hidden unit).
_BYTES_PER_TOKEN_PER_HIDDEN = 48


def _check_memory(num_points: int, num_frames: int, cfg: CoTrackerConfig, what: str) -> None:
    """Refuse a request whose working set cannot fit in this machine's memory, before allocating anything."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    frames = num_frames if not cfg.online else min(num_frames, cfg.window_len)
    need = num_points * frames * cfg.hidden_size * _BYTES_PER_TOKEN_PER_HIDDEN
    if need > total:
        raise InputError(
            f"{what} asks for {num_points} points over {frames} frames, about {need / 2**30:.0f} GiB of working "
            f"memory; this machine has {total / 2**30:.0f} GiB. Track fewer points (a smaller grid_size) or fewer "
            "frames at once (an online model streams with bounded memory)."
        )


# ----------------------------------------------------------------------------------------------------- input checks
def _numeric(value: Any, name: str, what: str) -> Tensor:
    """Any array-like -> tensor, with an error naming the argument (not numpy's or torch's wording)."""
    if isinstance(value, Tensor):
        return value
    try:
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"dtype {arr.dtype}")
        return torch.as_tensor(arr)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be {what}; could not read {value!r:.80} as numbers ({err})") from None


def _as_queries(queries: ArrayLike) -> Tensor:
    q = _numeric(queries, "queries", "an (N, 3) array of (t, x, y) rows")
    if q.dim() == 3 and q.shape[0] == 1:
        q = q[0]
    if q.dim() != 2 or q.shape[-1] != 3:
        raise InputError(f"queries must have shape (N, 3) with rows (t, x, y); got {tuple(q.shape)}")
    if q.shape[0] == 0:
        raise InputError("queries is empty; pass at least one (t, x, y) row or use grid_size")
    if not (q.is_floating_point() or q.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8)):
        raise InputError(f"queries must be numeric, got dtype {q.dtype}")
    q = q.detach().to("cpu", torch.float32)
    if not torch.isfinite(q).all():
        raise InputError("queries contain NaN or inf")
    t = q[:, 0]
    if (t != t.round()).any():
        bad = q[(t != t.round()).nonzero()[0, 0]].tolist()
        raise InputError(f"query frame indices must be integers; got t={bad[0]} in row {bad}")
    if (t < 0).any():
        raise InputError(f"query frame indices must be >= 0; got t={float(t.min())}")
    return q


def _check_in_frame(q: Tensor, H: int, W: int, num_frames: Optional[int]) -> None:
    x, y, t = q[:, 1], q[:, 2], q[:, 0]
    # pixel centres are integers, so the image covers [-0.5, W-0.5] x [-0.5, H-0.5]
    outside = (x < -0.5) | (x > W - 0.5) | (y < -0.5) | (y > H - 0.5)
    if outside.any():
        i = int(outside.nonzero()[0, 0])
        raise InputError(f"query {i} (t, x, y) = {q[i].tolist()} lies outside the {W}x{H} frame "
                         f"(x must be in [-0.5, {W - 0.5}], y in [-0.5, {H - 0.5}])")
    if num_frames is not None and (t > num_frames - 1).any():
        i = int((t > num_frames - 1).nonzero()[0, 0])
        raise InputError(f"query {i} has frame t={int(t[i])} but the video has {num_frames} frames (t <= "
                         f"{num_frames - 1})")


def _check_grid(grid_size: Any, grid_query_frame: Any) -> Tuple[int, int]:
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)):
        raise InputError(f"grid_size must be an int, got {grid_size!r}")
    if grid_size < 0:
        raise InputError(f"grid_size must be >= 0, got {grid_size}")
    if isinstance(grid_query_frame, bool) or not isinstance(grid_query_frame, (int, np.integer)):
        raise InputError(f"grid_query_frame must be an int, got {grid_query_frame!r}")
    if grid_query_frame < 0:
        raise InputError(f"grid_query_frame must be >= 0, got {grid_query_frame}")
    return int(grid_size), int(grid_query_frame)


def _check_request(queries: Any, grid_size: Any, grid_query_frame: Any, segm_mask: Any) -> Tuple[int, int]:
    """Exactly one way of choosing points: explicit queries, or a grid (optionally filtered by a mask)."""
    grid_size, grid_query_frame = _check_grid(grid_size, grid_query_frame)
    if queries is not None and grid_size > 0:
        raise InputError("pass either queries or grid_size, not both")
    if queries is not None and segm_mask is not None:
        raise InputError("segm_mask selects grid points; it cannot be combined with explicit queries")
    if queries is None and grid_size == 0:
        raise InputError("nothing to track: pass queries (N, 3) or grid_size > 0")
    if grid_size > _MAX_GRID:
        raise InputError(f"grid_size={grid_size} asks for {grid_size ** 2} points; the limit is {_MAX_GRID} "
                         f"({_MAX_GRID ** 2} points)")
    return grid_size, grid_query_frame


# Beyond this a grid's query table alone is hundreds of MB; every real use is far below it.
_MAX_GRID = 1000


def _as_mask(mask: ArrayLike, H: int, W: int) -> Tensor:
    m = _numeric(mask, "segm_mask", "an (H, W) array").detach().cpu()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise InputError(f"segm_mask must be (H, W) (optionally with leading 1s); got shape {tuple(m.shape)}")
    if tuple(m.shape) != (H, W):
        raise InputError(f"segm_mask has size {tuple(m.shape)} but the frames are {(H, W)}")
    return m.float()


class _Plan:
    """Queries of one tracking job at model resolution: user queries or grid, then the optional support grid."""

    def __init__(self, cfg: CoTrackerConfig, H: int, W: int, queries: Optional[Tensor], grid_size: int,
                 grid_query_frame: int, segm_mask: Optional[Tensor], support_grid: bool, support_grid_size: int):
        mh, mw = cfg.model_resolution
        if H < 2 or W < 2:
            raise InputError(f"frames must be at least 2x2 pixels, got {H}x{W}")
        self.H, self.W = H, W
        # same float32 scale factors as the official predictors (model <- input and back)
        self.to_model = torch.tensor([(mw - 1) / (W - 1), (mh - 1) / (H - 1)], dtype=torch.float32)
        self.to_input = torch.tensor([(W - 1) / (mw - 1), (H - 1) / (mh - 1)], dtype=torch.float32)
        if queries is not None:
            model_q = queries.clone()
            model_q[:, 1:] *= self.to_model
            self.user_queries = queries
        else:
            pts = grid_points(grid_size, (mh, mw))
            if segm_mask is not None:
                small = F.interpolate(segm_mask[None, None], size=(mh, mw), mode="nearest")[0, 0]
                keep = small[pts[:, 1].round().long(), pts[:, 0].round().long()] != 0
                pts = pts[keep]
                if pts.shape[0] == 0:
                    raise InputError("segm_mask covers none of the grid points; use a larger mask or grid_size")
            model_q = torch.cat([torch.full_like(pts[:, :1], float(grid_query_frame)), pts], dim=1)
            self.user_queries = torch.cat([model_q[:, :1], model_q[:, 1:] * self.to_input], dim=1)
        self.num_user = model_q.shape[0]
        if support_grid:
            g = grid_points(support_grid_size, (mh, mw))
            model_q = torch.cat([model_q, torch.cat([torch.zeros_like(g[:, :1]), g], 1)], 0)
        self.model_queries = model_q


def _resize(frames: Tensor, size: Tuple[int, int]) -> Tensor:
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size, mode="bilinear", align_corners=True)


def _reverse_time_(x: Tensor) -> None:
    """Reverse the time axis (dim 1) in place (no second copy of a long clip's features)."""
    T = x.shape[1]
    for i in range(T // 2):
        j = T - 1 - i
        tmp = x[:, i].clone()
        x[:, i] = x[:, j]
        x[:, j] = tmp


def _merge_backward(fwd: Tuple[Tensor, Tensor, Tensor], bwd: Tuple[Tensor, Tensor, Tensor], tq: Tensor):
    """Use the time-reversed pass (already flipped back) for the frames before each query's frame."""
    T = fwd[0].shape[0]
    before = torch.arange(T)[:, None] < tq[None, :]
    return (torch.where(before[..., None], bwd[0], fwd[0]), torch.where(before, bwd[1], fwd[1]),
            torch.where(before, bwd[2], fwd[2]))


# ----------------------------------------------------------------------------------------------------- tracker
class PointTracker(Tracker):
    """CoTracker3 point tracker (offline or online weights; see :func:`trackers.list_models`).

    Holds only the network: every :meth:`track` call is independent and every :meth:`stream` is its own session, so
    one tracker can serve several videos at once.
    """

    config_class = CoTrackerConfig
    model_class = CoTracker3
    settings_class = PointSettings
    task = "points"

    @property
    def online(self) -> bool:
        """Whether the weights are the sliding-window (streaming) variant."""
        return bool(self.config.online)

    # --------------------------------------------------------------------------------------------- clips
    def track(
        self,
        video: Any,
        queries: Optional[ArrayLike] = None,
        *,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        segm_mask: Optional[ArrayLike] = None,
        backward: bool = False,
        support_grid: Optional[bool] = None,
        iters: Optional[int] = None,
    ) -> PointTracks:
        """Track points through a whole clip.

        Args:
            video: frames ``(T, H, W, 3)`` / ``(T, 3, H, W)`` (uint8 or float in [0, 255], numpy or torch) or a
                video path; see :func:`trackers.video.as_video`.
            queries: ``(N, 3)`` rows ``(t, x, y)``: frame index and input-pixel position of each point.
            grid_size: without ``queries``, track a ``grid_size x grid_size`` grid started at ``grid_query_frame``.
            grid_query_frame: frame of the grid points.
            segm_mask: ``(H, W)`` mask; only grid points inside it (mask != 0) are tracked.
            backward: also track from each query frame towards the start (a second, time-reversed pass); without
                it the offline model still estimates earlier frames, the online model does not see them. Skipped
                when every point starts at frame 0 (it would change nothing).
            support_grid: add the 6x6 context grid (removed from the output). Default: the official behaviour,
                i.e. offline with ``queries`` or ``segm_mask``; online never.
            iters: refinement iterations (default ``settings.iters``: 6, as the official predictors).

        Returns:
            :class:`~trackers.results.PointTracks` with ``tracks (T, N, 2)``, ``visibility``/``confidence``
            probabilities and the model's ``visible`` decision, in input pixels.

        Raises:
            ValueError: bad frames, queries outside the frames or the clip, non-integer query frames, a negative
                ``grid_size``, neither queries nor a grid, both at once, or a mask of the wrong size.
        """
        iters = self._iters(iters)
        if isinstance(video, (str, os.PathLike)):
            from trackers.io import read_video

            video = read_video(video)
        v = as_video(video)
        T, _, H, W = v.shape
        plan = self._plan(H, W, T, queries, grid_size, grid_query_frame, segm_mask, support_grid)
        _check_memory(plan.model_queries.shape[0], T, self.config, "track()")
        # the backward pass only fills the frames before each point's own frame: with every point starting at
        # frame 0 (e.g. a grid on the first frame) none of its output would be used, so it is not run
        backward = backward and bool((plan.model_queries[:plan.num_user, 0] > 0).any())
        with torch.inference_mode():
            if self.online:
                out = self._track_online(v, plan, iters)
                if backward:
                    rev = self._track_online(v.flip(0), self._reversed(plan, T), iters)
                    rev = tuple(x.flip(0) for x in rev)
                    out = _merge_backward(out, rev, plan.model_queries[:plan.num_user, 0])
            else:
                out = self._track_offline(v, plan, iters, backward)
        return self._finish(out, plan, T)

    def _plan(self, H, W, T, queries, grid_size, grid_query_frame, segm_mask, support_grid) -> _Plan:
        grid_size, grid_query_frame = _check_request(queries, grid_size, grid_query_frame, segm_mask)
        q = None
        if queries is not None:
            q = _as_queries(queries)
            _check_in_frame(q, H, W, T)
        elif T is not None and grid_query_frame > T - 1:
            raise InputError(f"grid_query_frame={grid_query_frame} but the video has {T} frames")
        mask = None if segm_mask is None else _as_mask(segm_mask, H, W)
        if support_grid is None:
            support_grid = (not self.online) and (q is not None or mask is not None)
        return _Plan(self.config, H, W, q, grid_size, grid_query_frame, mask, bool(support_grid),
                     self.settings.support_grid_size)

    def _iters(self, iters: Optional[int]) -> int:
        return self.settings.iters if iters is None else _check_iters(iters)

    @staticmethod
    def _reversed(plan: _Plan, T: int) -> _Plan:
        """The plan for the time-reversed clip of an online backward pass.

        The support points (context only) stay at the first frame, where the online model can use them from the
        first window on; the official offline predictor, which sees the whole clip anyway, reverses them too.
        """
        rev = copy.copy(plan)
        mq = plan.model_queries.clone()
        mq[:plan.num_user, 0] = T - 1 - mq[:plan.num_user, 0]
        rev.model_queries = mq
        return rev

    def _track_offline(self, v: Tensor, plan: _Plan, iters: Optional[int], backward: bool):
        model: CoTracker3 = self.model
        dev = self.device
        size = self.config.model_resolution
        T = v.shape[0]
        fmap = model.encode(v[None].to(dev), size=size)
        q = plan.model_queries[None].to(dev)
        tracks, vis, conf = model(None, q, iters, features=fmap)
        out = (tracks[0].cpu(), vis[0].cpu(), conf[0].cpu())
        if backward:
            _reverse_time_(fmap)  # the CNN is per frame: reversing its output = running it on the reversed clip
            rq = q.clone()
            rq[..., 0] = T - 1 - rq[..., 0]
            rt, rv, rc = model(None, rq, iters, features=fmap)
            rev = (rt[0].flip(0).cpu(), rv[0].flip(0).cpu(), rc[0].flip(0).cpu())
            out = _merge_backward(out, rev, plan.model_queries[:, 0])
        return out

    def _track_online(self, v: Tensor, plan: _Plan, iters: int):
        session = PointStream(self, iters=iters, plan=plan)
        # feed the clip a window-step at a time so that only a few frames are resized at once
        for a in range(0, v.shape[0], session.step_size):
            session._feed_checked(v[a:a + session.step_size])
        session._finish()
        session._closed = True
        return session._raw_outputs(0, session._done)

    def _finish(self, out: Tuple[Tensor, Tensor, Tensor], plan: _Plan, T: int) -> PointTracks:
        tracks, vis, conf = (x[:, :plan.num_user].float() for x in out)
        if self.online:
            visible = vis * conf > self.settings.online_threshold
        else:
            visible = vis > self.settings.offline_threshold
            # the official offline predictor resets each query's own frame to the query point, visible
            mq = plan.model_queries[:plan.num_user]
            t = mq[:, 0].long()
            n = torch.arange(plan.num_user)
            tracks = tracks.clone()
            tracks[t, n] = mq[:, 1:]
            visible[t, n] = True
        return PointTracks(
            tracks=tracks * plan.to_input, visibility=vis, visible=visible, queries=plan.user_queries.clone(),
            confidence=conf, image_size=(plan.H, plan.W),
        )

    # --------------------------------------------------------------------------------------------- live video
    def stream(
        self,
        queries: Optional[ArrayLike] = None,
        *,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        segm_mask: Optional[ArrayLike] = None,
        support_grid: Optional[bool] = None,
        image_size: Optional[Tuple[int, int]] = None,
        iters: Optional[int] = None,
    ) -> "PointStream":
        """Open a streaming session (online models only); see :class:`PointStream`.

        Arguments as in :meth:`track`; ``image_size=(H, W)`` lets queries be checked before the first frame
        arrives (otherwise they are checked by the first :meth:`PointStream.step`). Query frames may lie in the
        future: a point starts being tracked when its frame arrives.
        """
        if not self.online:
            raise InputError("stream() needs an online model (e.g. 'cotracker3-online'); this one is offline, "
                             "use track()")
        grid_size, grid_query_frame = _check_request(queries, grid_size, grid_query_frame, segm_mask)
        q = None if queries is None else _as_queries(queries)
        session = PointStream(self, iters=self._iters(iters),
                              request=(q, grid_size, grid_query_frame, segm_mask, support_grid))
        if image_size is not None:
            session.set_image_size(image_size)
        return session


class PointStream(Stream):
    """A live tracking session of an online :class:`PointTracker` (create it with :meth:`PointTracker.stream`).

    Frames arrive through :meth:`step` in any number per call. The model works in windows of ``S = 16`` frames that
    advance by 8: a window runs as soon as its 16 frames are there, so (0-based) frame ``t`` first gets a result when
    frame ``max(15, t - t % 8 + 7)`` arrives, and frames in the second half of the latest window are refined once
    more by the next window. :meth:`close` runs the last, partial window. The windows are exactly those of the
    official README loop, so the final tracks equal the official online predictor's. Each frame goes through the
    CNN once (the official code encodes the overlapping half of every window twice; the result is the same).

    :meth:`step` returns the frames whose estimates this call produced or revised (``start_frame`` = the first; no
    frames when no window was complete yet); :meth:`results` returns all frames so far.

    Points are identified by integer ids (``queries`` given at creation get ``0..N-1``; :meth:`add_queries` returns
    the new ones); results list the active points in id order (:attr:`ids`).
    """

    def __init__(self, tracker: PointTracker, *, iters: int, plan: Optional[_Plan] = None,
                 request: Optional[tuple] = None):
        super().__init__()
        self.tracker = tracker
        self.model: CoTracker3 = tracker.model
        cfg = self.model.config
        self.iters = iters
        self.window = cfg.window_len
        self.step_size = self.window // 2
        self._request = request            # (queries, grid_size, grid_query_frame, mask, support_grid) until sized
        self._plan: Optional[_Plan] = None
        self._state: Optional[OnlineState] = None
        self._ids: List[int] = []          # id of each model query; -1 for support points
        self._next_id = 0
        self._frames: List[Tensor] = []    # resized frames not yet through the CNN
        self._cache: Optional[Tensor] = None  # features of frames [state.next_frame, ...)
        self._done = 0                     # frames covered by windows run so far
        # output history in model pixels, (capacity, ids) -- grows by doubling
        self._hist = {"tracks": torch.zeros(0, 0, 2), "vis": torch.zeros(0, 0), "conf": torch.zeros(0, 0)}
        self._id_cols: dict = {}
        self._queries_input: dict = {}
        if plan is not None:
            self._use_plan(plan)

    # --------------------------------------------------------------------------------------------- setup
    def _use_plan(self, plan: _Plan) -> None:
        self._plan = plan
        ids = list(range(plan.num_user))
        self._next_id = plan.num_user
        self._ids = ids + [-1] * (plan.model_queries.shape[0] - plan.num_user)
        for i in ids:
            self._queries_input[i] = plan.user_queries[i]
        self._state = self.model.online_init(plan.model_queries[None].to(self.tracker.device))
        self._grow_history(0, plan.num_user)

    def set_image_size(self, image_size: Tuple[int, int]) -> None:
        """Fix the frame size ``(H, W)`` before the first frame, so queries can be checked and added early."""
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise InputError(f"image_size must be (H, W), got {image_size!r}") from None
        self._setup(h, w)

    def _setup(self, H: int, W: int) -> None:
        if self._plan is not None:
            if (H, W) != (self._plan.H, self._plan.W):
                raise InputError(f"frames of size {H}x{W} after frames of size {self._plan.H}x{self._plan.W}")
            return
        q, grid_size, gqf, mask, support_grid = self._request
        if q is not None:
            _check_in_frame(q, H, W, None)
        m = None if mask is None else _as_mask(mask, H, W)
        plan = _Plan(self.model.config, H, W, q, grid_size, gqf, m, bool(support_grid),
                     self.tracker.settings.support_grid_size)
        _check_memory(plan.model_queries.shape[0], self.window, self.model.config, "stream()")
        self._use_plan(plan)
        self._request = None

    @property
    def ids(self) -> List[int]:
        """Ids of the active points, in the order of the result columns."""
        return [i for i in self._ids if i >= 0]

    @property
    def num_frames(self) -> int:
        """Frames received so far (same as :attr:`frame_index`)."""
        return self.frame_index

    # --------------------------------------------------------------------------------------------- frames
    def _step(self, frames: Any) -> PointTracks:
        before = self._done
        first = self._feed(frames)
        return self.results(start=min(first, before) if first is not None else self._done)

    def _feed(self, frames: Any) -> Optional[int]:
        """Take frames and run every complete window; returns the first frame a window revised (or ``None``)."""
        if isinstance(frames, (Tensor, np.ndarray)) and frames.ndim not in (3, 4):
            raise InputError(f"frames must be one frame, (H, W, 3) or (3, H, W), or a clip (T, ...); got shape "
                             f"{tuple(frames.shape)}")
        if isinstance(frames, (Tensor, np.ndarray)) and frames.ndim == 3:
            x = as_frame(frames)[None]
        else:
            x = as_video(frames, name="frames")
        return self._feed_checked(x)

    def _feed_checked(self, x: Tensor) -> Optional[int]:
        """:meth:`_feed` for frames already checked by :func:`as_video` (``track()`` checks its clip once, not
        again per chunk: the checks scan every pixel)."""
        self._setup(int(x.shape[-2]), int(x.shape[-1]))
        size = self.model.config.model_resolution
        x = _resize(x.to(self.tracker.device), size)
        self._frames.extend(x.unbind(0))
        self.frame_index += x.shape[0]
        first = None
        with torch.inference_mode():
            while self.frame_index - self._state.next_frame >= self.window:
                start = self._run_window(self.window)
                first = start if first is None else first
        return first

    def _finish(self) -> None:
        with torch.inference_mode():
            if self._state is not None and self.frame_index > self._done:
                self._run_window(self.frame_index - self._state.next_frame)

    def _run_window(self, n_real: int) -> int:
        st = self._state
        cached = 0 if self._cache is None else self._cache.shape[1]
        missing = n_real - cached  # frames of this window not yet through the CNN
        if missing > 0:
            new = torch.stack(self._frames[:missing])[None]
            del self._frames[:missing]
            feats = self.model.encode(new)
            self._cache = feats if self._cache is None else channels_last(torch.cat([self._cache, feats], 1))
        window = pad_frames(self._cache[:, :n_real], self.window)
        self._state, coords, vis, conf = self.model.online_window(st, window, self.iters)
        ind = st.next_frame
        self._write(ind, coords[0, :n_real].cpu(), vis[0, :n_real].cpu(), conf[0, :n_real].cpu())
        self._done = ind + n_real
        drop = self._state.next_frame - ind
        self._cache = self._cache[:, drop:]
        return ind

    # --------------------------------------------------------------------------------------------- queries
    def add_queries(self, queries: ArrayLike) -> List[int]:
        """Start tracking more points ``(M, 3)`` rows ``(t, x, y)`` (input pixels); returns their ids.

        ``t`` may not lie before the first frame of the next window (:attr:`earliest_query_frame`): earlier frames
        have been processed already.
        """
        self._check_open()
        q = _as_queries(queries)
        if self._plan is None:
            raise RuntimeError("add_queries needs the frame size: call step() with the first frame(s) first, or "
                               "open the stream with image_size=(H, W)")
        _check_in_frame(q, self._plan.H, self._plan.W, None)
        first = self.earliest_query_frame
        if (q[:, 0] < first).any():
            raise InputError(f"query frame {int(q[:, 0].min())} has already been processed; new queries need "
                             f"t >= {first}")
        mq = q.clone()
        mq[:, 1:] *= self._plan.to_model
        self._state = self._state.extend(mq[None].to(self.tracker.device), self.model)
        new_ids = list(range(self._next_id, self._next_id + q.shape[0]))
        self._next_id += q.shape[0]
        self._ids = self._ids + new_ids
        for i, row in zip(new_ids, q):
            self._queries_input[i] = row
        self._grow_history(self._hist["tracks"].shape[0], len(self._id_cols) + len(new_ids))
        return new_ids

    def remove(self, ids: Union[int, Sequence[int]]) -> None:
        """Stop tracking the points with these ids (they disappear from later results)."""
        self._check_open()
        ids = [int(ids)] if isinstance(ids, (int, np.integer)) else [int(i) for i in ids]
        active = set(self.ids)
        unknown = [i for i in ids if i not in active]
        if unknown:
            raise InputError(f"unknown or already removed point ids: {unknown}")
        drop = set(ids)
        keep = torch.tensor([i not in drop for i in self._ids])
        self._state = self._state.select(keep)
        self._ids = [i for i in self._ids if i not in drop]

    @property
    def earliest_query_frame(self) -> int:
        """Smallest frame index :meth:`add_queries` accepts."""
        return 0 if self._state is None else self._state.next_frame

    # --------------------------------------------------------------------------------------------- results
    def _grow_history(self, frames: int, columns: int) -> None:
        cap_t, cap_n = self._hist["tracks"].shape[:2]
        new_t = cap_t if frames <= cap_t else max(frames, 2 * cap_t, 64)
        if new_t == cap_t and columns <= cap_n:
            return
        new_n = max(columns, cap_n)
        for name, old in self._hist.items():
            buf = torch.full((new_t, new_n) + old.shape[2:], float("nan"))
            buf[:old.shape[0], :old.shape[1]] = old
            self._hist[name] = buf
        for i in self._ids:
            if i >= 0 and i not in self._id_cols:
                self._id_cols[i] = len(self._id_cols)

    def _write(self, start: int, coords: Tensor, vis: Tensor, conf: Tensor) -> None:
        n = coords.shape[0]
        self._grow_history(start + n, len(self._id_cols))
        user = torch.tensor([k for k, i in enumerate(self._ids) if i >= 0], dtype=torch.long)
        cols = torch.tensor([self._id_cols[i] for i in self._ids if i >= 0], dtype=torch.long)
        if cols.numel():
            self._hist["tracks"][start:start + n, cols] = coords[:, user].float()
            self._hist["vis"][start:start + n, cols] = torch.sigmoid(vis[:, user].float())
            self._hist["conf"][start:start + n, cols] = torch.sigmoid(conf[:, user].float())

    def _raw_outputs(self, a: int, b: int) -> Tuple[Tensor, Tensor, Tensor]:
        cols = torch.tensor([self._id_cols[i] for i in self.ids], dtype=torch.long)
        return tuple(self._hist[k][a:b].index_select(1, cols) for k in ("tracks", "vis", "conf"))

    def results(self, start: int = 0) -> PointTracks:
        """Tracks of the frames processed so far from ``start`` on (a copy), for the active points in
        :attr:`ids` order; ``start_frame`` of the result is ``start``.

        Frames before a point was added are NaN with probability NaN and ``visible`` False.
        """
        if self._plan is None:
            empty = torch.zeros(0, 0)
            return PointTracks(tracks=torch.zeros(0, 0, 2), visibility=empty, visible=empty.bool(),
                               queries=torch.zeros(0, 3), confidence=empty.clone(), image_size=None,
                               start_frame=start)
        start = min(max(int(start), 0), self._done)
        tracks, vis, conf = self._raw_outputs(start, self._done)
        visible = (vis * conf) > self.tracker.settings.online_threshold
        queries = torch.stack([self._queries_input[i] for i in self.ids]) if self.ids else torch.zeros(0, 3)
        return PointTracks(tracks=tracks * self._plan.to_input, visibility=vis, visible=visible, queries=queries,
                           confidence=conf, image_size=(self._plan.H, self._plan.W), start_frame=start)

    def __repr__(self) -> str:
        return (f"PointStream(points={len(self.ids)}, frame_index={self.frame_index}, processed={self._done}"
                f"{', closed' if self.closed else ''})")
