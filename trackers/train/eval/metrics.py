"""Benchmark metrics computed the way the official toolkits compute them (numpy only).

Two families live here:

* **TAP-Vid** point tracking (occlusion accuracy, ``pts_within_{1,2,4,8,16}``, ``jaccard_{1,2,4,8,16}``, average
  Jaccard, ``average_pts_within_thresh`` a.k.a. delta_avg) in the ``'first'`` and ``'strided'`` query modes, the
  two query samplers, and the per-video averaging of the benchmark. :func:`tapvid_metrics` takes this package's
  conventions; :func:`compute_tapvid_metrics` takes the layout of the TAP-Vid reference code.
* **Single-object tracking**: GOT-10k (AO, SR@0.5, SR@0.75) with :func:`got10k_metrics`, and OTB/LaSOT one-pass
  evaluation (success curve + AUC, precision at 20 px, normalised precision) with :func:`ope_metrics`, in the
  pytracking, OSTrack and GOT-10k-toolkit conventions.

Conventions at this API (those of :mod:`trackers.results`): point tracks are ``(T, N, 2)`` arrays of ``(x, y)``
pixels, visibility is ``True`` = visible, queries are rows ``(t, x, y)``, boxes are ``(x1, y1, x2, y2)``. The
official layouts (TAP-Vid: ``(N, T)`` order, ``occluded`` flags and ``(t, y, x)`` queries; SOT toolkits:
``[x, y, w, h]`` boxes) are produced internally. Torch tensors are accepted wherever arrays are (they are read with
``numpy.asarray``; nothing here imports torch).

Undefined values. A ratio whose denominator is zero (for example ``pts_within`` of a video in which no evaluated
point is visible, any TAP-Vid metric of a one-frame video or an empty query set, the AO of a GOT-10k sequence with
no scored frame) is returned as ``NaN`` -- the value the reference code returns -- but without a numpy warning.
The aggregation helpers skip such entries (documented on each helper), so one degenerate sequence never turns a
dataset score into ``NaN``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

__all__ = [
    "TAPVID_THRESHOLDS", "TAPVID_RESOLUTION", "TAPVID_METRIC_NAMES",
    "tapvid_metrics", "compute_tapvid_metrics", "TapVidQueries", "sample_queries_first", "sample_queries_strided",
    "aggregate_tapvid",
    "xyxy_to_xywh", "GOT10K_IOU_THRESHOLDS", "GOT10kResult", "got10k_metrics", "aggregate_got10k",
    "OPE_CONVENTIONS", "OPEResult", "ope_metrics", "aggregate_ope",
]


# ------------------------------------------------------------------------------------------------ shared helpers
def _array(x: Any, name: str, dtype: Any = None) -> np.ndarray:
    """numpy view of an array-like or a (CPU) torch tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, duck-typed
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}: {e}") from None
    if a.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got ragged/object data")
    return a


def _flags(x: Any, name: str) -> np.ndarray:
    """Boolean flags; numeric input must already be 0/1 (probabilities are refused rather than cast, since
    ``astype(bool)`` would turn every non-zero probability into ``True``)."""
    a = _array(x, name)
    if a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1); got values such as {a[~np.isin(a, (0, 1))][0]!r}. "
                             "Threshold probabilities first, e.g. PointTracks.visible or visibility > 0.5")
        a = a.astype(bool)
    return a


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` in float64 with ``NaN`` (and no warning) where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mean_or_nan(x: Any) -> float:
    """Mean of all entries as float64, ``NaN`` (instead of a warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x)) if x.size else float("nan")


# ================================================================================================ TAP-Vid
#: Distance thresholds (pixels, in the 256x256 evaluation raster) of ``pts_within_*`` and ``jaccard_*``.
TAPVID_THRESHOLDS: Tuple[int, ...] = (1, 2, 4, 8, 16)
#: ``(H, W)`` of the raster in which TAP-Vid distances are measured (videos are resized to it).
TAPVID_RESOLUTION: Tuple[int, int] = (256, 256)
#: Names of the metrics returned by :func:`tapvid_metrics`, in the reference order.
TAPVID_METRIC_NAMES: Tuple[str, ...] = (
    ("occlusion_accuracy",)
    + tuple(f"pts_within_{d}" for d in TAPVID_THRESHOLDS)
    + tuple(f"jaccard_{d}" for d in TAPVID_THRESHOLDS)
    + ("average_jaccard", "average_pts_within_thresh")
)
_QUERY_MODES = ("first", "strided")


def compute_tapvid_metrics(
    query_points: Any,
    gt_occluded: Any,
    gt_tracks: Any,
    pred_occluded: Any,
    pred_tracks: Any,
    query_mode: str,
    get_trackwise_metrics: bool = False,
) -> Dict[str, np.ndarray]:
    """TAP-Vid metrics in the layout of the reference implementation (``compute_tapvid_metrics`` of TAP-Vid).

    Args:
        query_points: ``[B, N, 3]`` rows ``(t, y, x)``. Only ``t`` is read; it is rounded with numpy's
            round-half-to-even (2.5 -> 2, 3.5 -> 4) to pick the query frame.
        gt_occluded: ``[B, N, T]`` bool, ``True`` = occluded.
        gt_tracks: ``[B, N, T, 2]`` ``(x, y)`` pixels in the 256x256 evaluation raster.
        pred_occluded: ``[B, N, T]`` bool (already thresholded; this function does not threshold).
        pred_tracks: ``[B, N, T, 2]`` ``(x, y)`` pixels, same raster as ``gt_tracks``.
        query_mode: ``'first'`` scores the frames strictly after each query frame; ``'strided'`` scores every
            frame except the query frame. The query frame itself is never scored.
        get_trackwise_metrics: sum over frames only (values ``[B, N]``) instead of over tracks and frames
            (values ``[B]``, one per video).

    Returns:
        ``{name: float64 array}`` for every name in :data:`TAPVID_METRIC_NAMES`, where with ``E`` the scored
        (track, frame) pairs, ``vis`` the GT-visible ones and ``within_d`` the predictions strictly closer than
        ``d`` pixels (``dx**2 + dy**2 < d**2``):

        * ``occlusion_accuracy = |E & (pred_occluded == gt_occluded)| / |E|``;
        * ``pts_within_d = |E & vis & within_d| / |E & vis|`` (predicted occlusion is not looked at);
        * ``jaccard_d = TP / (|E & vis| + FP)`` with ``TP = |E & vis & pred_vis & within_d|`` and
          ``FP = |E & pred_vis & (~vis | ~within_d)|`` (a visible point predicted visible but too far is both a
          miss and a false positive);
        * ``average_jaccard`` / ``average_pts_within_thresh``: the mean over the five thresholds.

        A ratio with a zero denominator is ``NaN`` (no warning), as in the reference code.

    Raises:
        ValueError: shapes that disagree, an unknown ``query_mode``, or a rounded query frame outside ``[0, T)``.
    """
    if query_mode not in _QUERY_MODES:
        raise ValueError(f"query_mode must be one of {_QUERY_MODES}, got {query_mode!r}")
    qp = _array(query_points, "query_points", np.float64)
    gt_occ = _flags(gt_occluded, "gt_occluded")
    pred_occ = _flags(pred_occluded, "pred_occluded")
    gt = _array(gt_tracks, "gt_tracks", np.float64)
    pred = _array(pred_tracks, "pred_tracks", np.float64)
    if gt.ndim != 4 or gt.shape[-1] != 2:
        raise ValueError(f"gt_tracks must be [B, N, T, 2], got shape {gt.shape}")
    B, N, T, _ = gt.shape
    for name, arr, shape in (("pred_tracks", pred, (B, N, T, 2)), ("gt_occluded", gt_occ, (B, N, T)),
                             ("pred_occluded", pred_occ, (B, N, T)), ("query_points", qp, (B, N, 3))):
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape} to match gt_tracks {gt.shape}, got {arr.shape}")
    if not np.all(np.isfinite(qp[..., 0])):
        raise ValueError("query_points contain a non-finite frame index")
    q = np.round(qp[..., 0]).astype(np.int64)
    if q.size and (q.min() < 0 or q.max() >= T):
        bad = q.min() if q.min() < 0 else q.max()
        raise ValueError(f"query frame {bad} (after rounding) lies outside the video's frames [0, {T - 1}]")

    frames = np.arange(T)
    qf = q[..., None]  # [B, N, 1]
    evaluated = frames > qf if query_mode == "first" else frames != qf  # [B, N, T]

    axes = (2,) if get_trackwise_metrics else (1, 2)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.sum(mask & evaluated, axis=axes)

    visible = ~gt_occ
    pred_visible = ~pred_occ
    sq_dist = np.sum(np.square(pred - gt), axis=-1)
    num_visible = count(visible)

    out: Dict[str, np.ndarray] = {"occlusion_accuracy": _ratio(count(pred_occ == gt_occ), count(np.ones_like(visible)))}
    within_all, jaccard_all = [], []
    for d in TAPVID_THRESHOLDS:
        within = sq_dist < d * d  # strict, as in the reference
        correct = within & visible
        pts_within = _ratio(count(correct), num_visible)
        true_pos = count(correct & pred_visible)
        false_pos = count(pred_visible & (~visible | ~within))
        jaccard = _ratio(true_pos, num_visible + false_pos)
        out[f"pts_within_{d}"] = pts_within
        out[f"jaccard_{d}"] = jaccard
        within_all.append(pts_within)
        jaccard_all.append(jaccard)
    # np.mean propagates NaN silently (no warning), matching the reference
    out["average_jaccard"] = np.mean(np.stack(jaccard_all, axis=1), axis=1)
    out["average_pts_within_thresh"] = np.mean(np.stack(within_all, axis=1), axis=1)
    return {k: out[k] for k in TAPVID_METRIC_NAMES}


def tapvid_metrics(
    pred_tracks: Any,
    pred_visible: Any,
    gt_tracks: Any,
    gt_visible: Any,
    queries: Any,
    *,
    query_mode: str = "first",
    image_size: Optional[Tuple[int, int]] = None,
    trackwise: bool = False,
) -> Dict[str, Any]:
    """TAP-Vid metrics of one video (or a batch of videos) in this package's conventions.

    Args:
        pred_tracks: ``(T, N, 2)`` predicted ``(x, y)`` pixels (``(B, T, N, 2)`` for a batch), e.g.
            ``PointTracks.tracks``.
        pred_visible: ``(T, N)`` bool, ``True`` = predicted visible (e.g. ``PointTracks.visible``; threshold
            probabilities yourself, the metric needs hard decisions).
        gt_tracks: ``(T, N, 2)`` ground-truth ``(x, y)`` pixels.
        gt_visible: ``(T, N)`` bool ground-truth visibility.
        queries: ``(N, 3)`` rows ``(t, x, y)``; only ``t`` is used (rounded half-to-even), to decide which frames
            are scored. Build them with :func:`sample_queries_first` / :func:`sample_queries_strided` to follow the
            benchmark protocol.
        query_mode: ``'first'`` (frames after the query frame are scored; TAP-Vid "query first") or ``'strided'``
            (all frames but the query frame; "query strided").
        image_size: ``(H, W)`` of the frames the coordinates refer to. When given, x is multiplied by ``256 / W``
            and y by ``256 / H`` (pure scaling, no half-pixel shift -- what the reference pipeline does) so that
            distances are measured in the 256x256 raster the published numbers use. ``None``: coordinates are
            already in that raster (as the TAP-Vid readers produce them: normalised points times 256). CoTracker's
            own TAP-Vid reader scales by 255 instead (corner-aligned), which shrinks distances by 255/256 and
            only matters at threshold boundaries.
        trackwise: return one value per track (``(N,)``, or ``(B, N)``) instead of one per video.

    Returns:
        ``{name: value}`` for every name in :data:`TAPVID_METRIC_NAMES` (fractions in ``[0, 1]``; papers print
        them x100): a float64 scalar per video, ``(B,)`` for a batch. ``NaN`` marks a metric that is undefined
        for the video (zero denominator: no scored pair, e.g. a one-frame video or an empty query set; or no
        scored GT-visible point for ``pts_within``). See :func:`compute_tapvid_metrics` for the formulas.

    The conversion to the reference layout: arrays go from ``(T, N)`` to ``(N, T)``, ``visible`` becomes
    ``occluded = ~visible``, and queries ``(t, x, y)`` become ``(t, y, x)``.
    """
    pred = _array(pred_tracks, "pred_tracks", np.float64)
    gt = _array(gt_tracks, "gt_tracks", np.float64)
    batched = gt.ndim == 4
    if gt.ndim not in (3, 4) or gt.shape[-1] != 2:
        raise ValueError(f"gt_tracks must be (T, N, 2) or (B, T, N, 2), got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_tracks shape {pred.shape} differs from gt_tracks shape {gt.shape}")
    pvis = _flags(pred_visible, "pred_visible")
    gvis = _flags(gt_visible, "gt_visible")
    q = _array(queries, "queries", np.float64)
    if not batched:
        pred, gt, pvis, gvis, q = pred[None], gt[None], pvis[None], gvis[None], q[None]
    B, T, N, _ = gt.shape
    for name, arr, shape in (("pred_visible", pvis, (B, T, N)), ("gt_visible", gvis, (B, T, N)),
                             ("queries", q, (B, N, 3))):
        if arr.shape != shape:
            want = shape if batched else shape[1:]
            got = arr.shape if batched else arr.shape[1:]
            raise ValueError(f"{name} must have shape {want} to match the tracks, got {got}")
    if image_size is not None:
        H, W = (float(v) for v in image_size)
        if not (H > 0 and W > 0):
            raise ValueError(f"image_size must be a positive (H, W), got {image_size!r}")
        scale = np.array([TAPVID_RESOLUTION[1] / W, TAPVID_RESOLUTION[0] / H])
        pred, gt = pred * scale, gt * scale
    res = compute_tapvid_metrics(
        q[..., [0, 2, 1]],                       # (t, x, y) -> (t, y, x)
        ~gvis.transpose(0, 2, 1),                # visible (B, T, N) -> occluded (B, N, T)
        gt.transpose(0, 2, 1, 3),
        ~pvis.transpose(0, 2, 1),
        pred.transpose(0, 2, 1, 3),
        query_mode,
        get_trackwise_metrics=trackwise,
    )
    if not batched:
        res = {k: v[0] for k, v in res.items()}
    return res


class TapVidQueries(NamedTuple):
    """Queries sampled from ground truth, with the ground truth re-ordered to match (one column per query).

    Attributes:
        queries: ``(M, 3)`` float64 rows ``(t, x, y)``.
        tracks: ``(T, M, 2)`` ground-truth ``(x, y)`` of each query's track (same dtype as the input).
        visible: ``(T, M)`` bool ground-truth visibility.
        track_index: ``(M,)`` int64, the input track each query came from (``trackgroup`` in TAP-Vid).
    """

    queries: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray
    track_index: np.ndarray


def _sampler_inputs(gt_tracks: Any, gt_visible: Any) -> Tuple[np.ndarray, np.ndarray]:
    tracks = _array(gt_tracks, "gt_tracks")
    vis = _flags(gt_visible, "gt_visible")
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks must be (T, N, 2), got shape {tracks.shape}")
    if vis.shape != tracks.shape[:2]:
        raise ValueError(f"gt_visible must have shape {tracks.shape[:2]}, got {vis.shape}")
    return tracks, vis


def _gather(tracks: np.ndarray, vis: np.ndarray, t: np.ndarray, idx: np.ndarray) -> TapVidQueries:
    xy = tracks[t, idx].astype(np.float64)
    queries = np.concatenate([t.astype(np.float64)[:, None], xy.reshape(-1, 2)], axis=1)
    return TapVidQueries(queries, tracks[:, idx], vis[:, idx], idx.astype(np.int64))


def sample_queries_first(gt_tracks: Any, gt_visible: Any) -> TapVidQueries:
    """One query per track at its first visible frame (TAP-Vid "query first" protocol).

    Tracks that are never visible are dropped; the others keep their order. The query position is copied from
    the ground truth at that frame. Use the result with ``query_mode='first'``.

    Args:
        gt_tracks: ``(T, N, 2)`` ``(x, y)`` pixels.
        gt_visible: ``(T, N)`` bool.

    Returns:
        :class:`TapVidQueries`; ``M = 0`` (empty arrays of the right rank) when no track is ever visible.
    """
    tracks, vis = _sampler_inputs(gt_tracks, gt_visible)
    idx = np.flatnonzero(vis.any(axis=0))
    t = np.argmax(vis[:, idx], axis=0) if idx.size else np.zeros(0, dtype=np.int64)
    return _gather(tracks, vis, t, idx)


def sample_queries_strided(gt_tracks: Any, gt_visible: Any, stride: int = 5) -> TapVidQueries:
    """Queries at frames ``0, stride, 2*stride, ...`` for every track visible there (TAP-Vid "query strided").

    Queries are ordered by frame, then by track; a track contributes one query per sampled frame where it is
    visible (so its ground truth is repeated). Use the result with ``query_mode='strided'``. The benchmark uses
    ``stride=5``.
    """
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    tracks, vis = _sampler_inputs(gt_tracks, gt_visible)
    T, N = vis.shape
    ts, idxs = [], []
    for t in range(0, T, int(stride)):
        kept = np.flatnonzero(vis[t])
        ts.append(np.full(kept.size, t, dtype=np.int64))
        idxs.append(kept)
    t_all = np.concatenate(ts) if ts else np.zeros(0, dtype=np.int64)
    i_all = np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int64)
    return _gather(tracks, vis, t_all, i_all)


def aggregate_tapvid(per_video: Iterable[Mapping[str, Any]], *, skip_undefined: bool = True) -> Dict[str, float]:
    """Benchmark numbers from per-video results: the plain mean over videos of each per-video metric.

    This is how TAP-Vid scores a dataset: every video is evaluated on its own (a batch of one) and the per-video
    values are averaged, so every video weighs the same whatever its number of points. Each element of
    ``per_video`` is a result of :func:`tapvid_metrics` (scalars, or ``(B,)`` arrays for a batch: every entry
    counts as a video).

    Args:
        skip_undefined: leave out videos whose value of a metric is ``NaN`` (undefined, see
            :func:`tapvid_metrics`) when averaging that metric. This equals the reference mean whenever every
            video defines the metric; the reference itself would return ``NaN`` otherwise, which is what
            ``skip_undefined=False`` gives.

    Returns:
        ``{name: mean}`` for every metric plus ``num_videos`` (videos seen). A metric no video defines is ``NaN``.
    """
    values: Dict[str, List[np.ndarray]] = {k: [] for k in TAPVID_METRIC_NAMES}
    for i, res in enumerate(per_video):
        missing = [k for k in TAPVID_METRIC_NAMES if k not in res]
        if missing:
            raise ValueError(f"per_video[{i}] lacks the metrics {missing}")
        for k in TAPVID_METRIC_NAMES:
            values[k].append(np.ravel(_array(res[k], f"per_video[{i}][{k!r}]", np.float64)))
    out: Dict[str, float] = {}
    num = 0
    for k in TAPVID_METRIC_NAMES:
        v = np.concatenate(values[k]) if values[k] else np.zeros(0)
        num = v.size
        if skip_undefined:
            v = v[~np.isnan(v)]
        out[k] = float(_mean_or_nan(v))
    out["num_videos"] = num
    return out


# ================================================================================================ single object
def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``(x1, y1, x2, y2)`` -> ``(x, y, w, h)`` (top-left corner and size), float64, the toolkits' format."""
    b = _array(boxes, "boxes", np.float64)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have a last axis of 4 (x1, y1, x2, y2), got shape {b.shape}")
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def _box_pair(pred_boxes: Any, gt_boxes: Any) -> Tuple[np.ndarray, np.ndarray]:
    pred = xyxy_to_xywh(pred_boxes)
    gt = xyxy_to_xywh(gt_boxes)
    if gt.ndim != 2:
        raise ValueError(f"gt_boxes must be (T, 4) xyxy, got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_boxes {pred.shape} and gt_boxes {gt.shape} must both be (T, 4) for the same T "
                         "(frame 0 is the initialisation frame)")
    return pred, gt


def _frame_flags(x: Any, name: str, T: int) -> np.ndarray:
    a = _array(x, name)
    if a.shape != (T,):
        raise ValueError(f"{name} must have shape ({T},), one entry per frame, got {a.shape}")
    return a


def _g10_rect_iou(r1: np.ndarray, r2: np.ndarray, bound: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """IoU of ``[x, y, w, h]`` boxes as the GOT-10k toolkit computes it.

    With ``bound = (W, H)`` both boxes are first clipped to the image the toolkit's way: ``x`` and ``y`` are clipped
    to ``[0, W]`` / ``[0, H]``, then ``w`` to ``[0, W - x_new]`` and ``h`` to ``[0, H - y_new]`` -- so a box hanging
    off the left or top border is moved inside rather than cropped (its width is not reduced by the clipped part).
    The IoU is ``inter / (union + eps)`` with ``eps`` the float64 machine epsilon, clipped to ``[0, 1]``.
    """
    r1, r2 = r1.copy(), r2.copy()
    if bound is not None:
        W, H = bound
        for r in (r1, r2):
            r[:, 0] = np.clip(r[:, 0], 0, W)
            r[:, 1] = np.clip(r[:, 1], 0, H)
            r[:, 2] = np.clip(r[:, 2], 0, W - r[:, 0])
            r[:, 3] = np.clip(r[:, 3], 0, H - r[:, 1])
    x1 = np.maximum(r1[:, 0], r2[:, 0])
    y1 = np.maximum(r1[:, 1], r2[:, 1])
    x2 = np.minimum(r1[:, 0] + r1[:, 2], r2[:, 0] + r2[:, 2])
    y2 = np.minimum(r1[:, 1] + r1[:, 3], r2[:, 1] + r2[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = r1[:, 2] * r1[:, 3] + r2[:, 2] * r2[:, 3] - inter
    return np.clip(inter / (union + np.finfo(np.float64).eps), 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ GOT-10k
#: IoU thresholds of the GOT-10k success curve (101 values, ``IoU > thr``).
GOT10K_IOU_THRESHOLDS = np.linspace(0, 1, 101)


@dataclass(frozen=True)
class GOT10kResult:
    """GOT-10k scores of one sequence, or of a dataset (:func:`aggregate_got10k`).

    Attributes:
        ious: IoUs of the scored frames (frame 0 and absent frames excluded); a dataset result holds the IoUs of
            all its sequences concatenated.
        num_sequences: sequences merged into this result.
    """

    ious: np.ndarray
    num_sequences: int = 1

    @property
    def ao(self) -> float:
        """Average overlap: mean IoU over the scored frames (``NaN`` when there are none)."""
        return float(_mean_or_nan(self.ious))

    @property
    def success_curve(self) -> np.ndarray:
        """``(101,)`` fraction of scored frames with ``IoU > thr`` for ``thr`` in :data:`GOT10K_IOU_THRESHOLDS`."""
        if self.ious.size == 0:
            return np.full(GOT10K_IOU_THRESHOLDS.shape, np.nan)
        return np.mean(self.ious[:, None] > GOT10K_IOU_THRESHOLDS[None, :], axis=0)

    @property
    def sr50(self) -> float:
        """Success rate: fraction of scored frames with ``IoU > 0.5`` (strict)."""
        return _mean_or_nan(self.ious > 0.5)

    @property
    def sr75(self) -> float:
        """Fraction of scored frames with ``IoU > 0.75`` (the success curve at 0.75)."""
        return float(self.success_curve[75])

    def summary(self) -> Dict[str, float]:
        """``{'ao', 'sr50', 'sr75', 'num_frames', 'num_sequences'}``."""
        return {"ao": self.ao, "sr50": self.sr50, "sr75": self.sr75, "num_frames": int(self.ious.size),
                "num_sequences": self.num_sequences}


def got10k_metrics(
    pred_boxes: Any,
    gt_boxes: Any,
    *,
    image_size: Optional[Tuple[int, int]] = None,
    cover: Optional[Any] = None,
) -> GOT10kResult:
    """GOT-10k AO / SR of one sequence, as the GOT-10k toolkit's validation report computes them.

    * Frame 0 (the initialisation frame) is not scored: IoUs cover frames ``1 .. T-1``.
    * Frames whose ``cover`` label is 0 (target absent / fully occluded) are dropped; nothing else is checked
      (a degenerate GT box simply scores IoU 0).
    * IoU: both boxes are clipped to the image first (see below), then ``inter / (union + eps)``.
    * ``AO = mean(IoU)``, ``SR@0.5 = mean(IoU > 0.5)``, ``SR@0.75 = mean(IoU > 0.75)`` (strict ``>``).
    * A dataset's numbers come from the IoUs of all frames of all sequences together (frame-weighted): use
      :func:`aggregate_got10k`, not a mean of per-sequence AO. A tracker run several times (the toolkit runs
      non-deterministic trackers 3 times) is scored by concatenating the runs' IoUs the same way.

    Args:
        pred_boxes: ``(T, 4)`` predicted ``(x1, y1, x2, y2)``, frame 0 included (its value is ignored).
        gt_boxes: ``(T, 4)`` ground truth ``(x1, y1, x2, y2)``.
        image_size: ``(H, W)`` of the frames (as in ``BoxTracks.image_size``). The toolkit clips boxes to the
            image before the IoU: ``x, y`` into ``[0, W] x [0, H]``, then ``w <= W - x``, ``h <= H - y`` -- which
            moves (does not crop) a box that hangs off the left/top border. ``None`` skips the clipping (the
            toolkit always clips, using the sequence's resolution).
        cover: ``(T,)`` GOT-10k ``cover`` labels (or a bool "target present" flag); frames with ``cover <= 0`` are
            dropped. ``None``: the target is present in every frame.

    Returns:
        :class:`GOT10kResult` (``ao``, ``sr50``, ``sr75``, ``success_curve``). With no scored frame (a one-frame
        sequence, or every later frame absent) the scores are ``NaN`` and the result adds nothing to an aggregate.
    """
    pred, gt = _box_pair(pred_boxes, gt_boxes)
    T = gt.shape[0]
    bound = None
    if image_size is not None:
        H, W = (float(v) for v in image_size)
        if not (H > 0 and W > 0):
            raise ValueError(f"image_size must be a positive (H, W), got {image_size!r}")
        bound = (W, H)
    ious = _g10_rect_iou(pred[1:], gt[1:], bound=bound) if T > 1 else np.zeros(0)
    if cover is not None:
        c = _frame_flags(cover, "cover", T).astype(np.float64)
        ious = ious[c[1:] > 0]
    return GOT10kResult(ious=ious)


def aggregate_got10k(results: Iterable[GOT10kResult]) -> GOT10kResult:
    """Dataset-level GOT-10k scores: IoUs of all sequences concatenated (frame-weighted), as the toolkit does."""
    results = list(results)
    for i, r in enumerate(results):
        if not isinstance(r, GOT10kResult):
            raise ValueError(f"results[{i}] is a {type(r).__name__}, not a GOT10kResult")
    ious = np.concatenate([r.ious for r in results]) if results else np.zeros(0)
    return GOT10kResult(ious=ious, num_sequences=sum(r.num_sequences for r in results))


# ------------------------------------------------------------------------------------------------ OTB / LaSOT (OPE)
#: Conventions of :func:`ope_metrics`.
OPE_CONVENTIONS: Tuple[str, ...] = ("pytracking", "ostrack", "got10k_toolkit")
_OPE_BENCHMARKS = ("otb", "lasot", "uav")



def _torch_arange_values(start: float, step: float, num: int, lanes: int = 4) -> np.ndarray:
    """The float64 values ``torch.arange`` gives on the CPU with 4-lane (AVX2) vectorisation.

    torch fills whole vectors as ``(start + step * i0) + step * j`` (``i0`` the vector's first index, ``j`` the
    lane) and the tail as ``start + step * i``; this differs from ``i * step`` by one ulp at some entries (0.65 and
    0.75 come out as 0.6500000000000001 and 0.7500000000000001), which decides ``IoU > thr`` for IoUs exactly on
    those values. pytracking's success thresholds are these values.
    """
    full = (num // lanes) * lanes
    out = [(start + step * (i - i % lanes)) + step * (i % lanes) if i < full else start + step * i
           for i in range(num)]
    return np.array(out, dtype=np.float64)


# pytracking's grids: torch.arange(0, 1.05, 0.05) as torch computes it, 0..50 px, and arange(0, 51) / 100.
_PT_IOU_THRESHOLDS = _torch_arange_values(0.0, 0.05, 21)
_PT_CENTER_THRESHOLDS = np.arange(51, dtype=np.float64)
_PT_NORM_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0
# GOT-10k toolkit's grids: linspace(0, 1, 21), 0..50 px, linspace(0, 0.5, 51).
_G10_IOU_THRESHOLDS = np.linspace(0, 1, 21)
_G10_CENTER_THRESHOLDS = np.arange(51, dtype=np.float64)
_G10_NORM_THRESHOLDS = np.linspace(0, 0.5, 51)


@dataclass(frozen=True)
class OPEResult:
    """One-pass-evaluation (OTB/LaSOT-style) scores of one sequence, or of a dataset (:func:`aggregate_ope`).

    All scores are fractions in ``[0, 1]`` (pytracking prints them x100).

    Attributes:
        success_curve: ``(21,)`` fraction of frames with ``IoU > thr`` for ``thr = 0, 0.05, ..., 1``.
        precision_curve: ``(51,)`` fraction of frames with centre error ``<= thr`` pixels, ``thr = 0..50``.
        norm_precision_curve: ``(51,)`` fraction with normalised centre error ``<= thr``, ``thr = 0, 0.01, ...,
            0.5``; ``None`` for the GOT-10k toolkit's OTB report, which has none.
        average_overlap: mean IoU over the valid frames of the sequence (pytracking's ``avg_overlap``; for the
            GOT-10k toolkit convention the mean over the scored frames); a dataset result holds the mean over
            sequences.
        convention: one of :data:`OPE_CONVENTIONS`.
        benchmark: ``'otb'``, ``'lasot'`` or ``'uav'``.
        num_sequences: sequences averaged into this result (those with defined curves).
        overlap, center_error, norm_center_error, valid: per-frame values of a sequence result (``None`` for a
            dataset result), with the toolkit's markers for invalid frames (see :func:`ope_metrics`).
    """

    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: Optional[np.ndarray]
    average_overlap: float
    convention: str
    benchmark: str
    num_sequences: int = 1
    overlap: Optional[np.ndarray] = None
    center_error: Optional[np.ndarray] = None
    norm_center_error: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None

    @property
    def iou_thresholds(self) -> np.ndarray:
        """The 21 IoU thresholds of :attr:`success_curve` (the convention's own float values)."""
        return _G10_IOU_THRESHOLDS if self.convention == "got10k_toolkit" else _PT_IOU_THRESHOLDS

    @property
    def auc(self) -> float:
        """Success AUC: the mean of the 21-point success curve (``success_score`` / pytracking ``AUC``)."""
        return float(np.mean(self.success_curve))

    @property
    def success_rate(self) -> float:
        """Fraction of frames with ``IoU > 0.5`` (pytracking ``OP50``, toolkit ``success_rate``)."""
        return float(self.success_curve[10])

    @property
    def op75(self) -> float:
        """Fraction of frames with ``IoU > 0.75`` (pytracking ``OP75``)."""
        return float(self.success_curve[15])

    @property
    def precision(self) -> float:
        """Precision: fraction of frames with centre error ``<= 20`` px."""
        return float(self.precision_curve[20])

    @property
    def norm_precision(self) -> float:
        """Normalised precision: pytracking/OSTrack take the curve at 0.20; the GOT-10k toolkit (LaSOT report)
        takes the mean of the 51-point curve over ``[0, 0.5]``. ``NaN`` when there is no curve."""
        if self.norm_precision_curve is None:
            return float("nan")
        if self.convention == "got10k_toolkit":
            return float(np.mean(self.norm_precision_curve))
        return float(self.norm_precision_curve[20])

    def summary(self) -> Dict[str, float]:
        """``{'auc', 'success_rate', 'op75', 'precision', 'norm_precision', 'average_overlap', 'num_sequences'}``."""
        return {"auc": self.auc, "success_rate": self.success_rate, "op75": self.op75,
                "precision": self.precision, "norm_precision": self.norm_precision,
                "average_overlap": float(self.average_overlap), "num_sequences": self.num_sequences}


def _pt_sequence(pred: np.ndarray, gt: np.ndarray, benchmark: str, convention: str,
                 target_visible: Optional[np.ndarray], exclude_invalid_frames: bool) -> OPEResult:
    """pytracking's ``calc_seq_err_robust`` + the per-sequence curves of ``extract_results``."""
    if np.isnan(pred).any():
        raise ValueError("pred_boxes contain NaN")
    if (pred[:, 2:] < 0).any():
        t = int(np.flatnonzero((pred[:, 2:] < 0).any(axis=1))[0])
        raise ValueError(f"pred_boxes have negative width/height at frame {t} (x2 < x1 or y2 < y1)")
    gt_nan = np.isnan(gt).any(axis=1)
    if gt_nan.any() and benchmark != "uav":
        raise ValueError(f"gt_boxes contain NaN at frame {int(np.flatnonzero(gt_nan)[0])} (only 'uav' allows it)")
    pred = pred.copy()
    # a zero-size prediction repeats the (already repaired) previous one, unless the GT is missing
    for i in range(1, pred.shape[0]):
        if (pred[i, 2:] == 0).any() and not gt_nan[i]:
            pred[i] = pred[i - 1]
    pred[0] = gt[0]

    with np.errstate(invalid="ignore"):
        if convention == "ostrack":
            valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)
        else:  # pytracking: all four entries > 0, so a box touching the left/top border is invalid
            valid = np.all(gt > 0, axis=1)
    if target_visible is not None:
        valid &= target_visible

    with np.errstate(divide="ignore", invalid="ignore"):  # invalid frames are overwritten below
        # the toolkits' "pixel" convention (x2 = x + w - 1, centre = x + (w - 1) / 2) cancels in every difference
        tl = np.maximum(pred[:, :2], gt[:, :2])
        br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
        size = np.clip(br - tl + 1.0, 0, None)
        inter = size[:, 0] * size[:, 1]
        union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
        overlap = inter / union
        c_pred = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
        c_gt = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
        center = np.sqrt(np.sum((c_pred - c_gt) ** 2, axis=1))
        norm_center = np.sqrt(np.sum((c_pred / gt[:, 2:] - c_gt / gt[:, 2:]) ** 2, axis=1))
    # invalid frames: never a success, never precise -- except the normalised error -1, which counts as precise
    center[~valid] = -1.0 if benchmark == "uav" else np.inf
    norm_center[~valid] = -1.0
    overlap[~valid] = -1.0
    if benchmark == "lasot" and target_visible is not None:
        center[~target_visible] = np.inf
        norm_center[~target_visible] = np.inf
    if np.isnan(overlap).any():
        raise ValueError(f"IoU is undefined at frame {int(np.flatnonzero(np.isnan(overlap))[0])}")

    length = int(valid.sum()) if exclude_invalid_frames else gt.shape[0]

    def curve(hit: np.ndarray) -> np.ndarray:
        return _ratio(hit.sum(axis=0), np.float64(length))

    return OPEResult(
        success_curve=curve(overlap[:, None] > _PT_IOU_THRESHOLDS[None]),
        precision_curve=curve(center[:, None] <= _PT_CENTER_THRESHOLDS[None]),
        norm_precision_curve=curve(norm_center[:, None] <= _PT_NORM_THRESHOLDS[None]),
        average_overlap=float(_mean_or_nan(overlap[valid])),
        convention=convention, benchmark=benchmark,
        overlap=overlap, center_error=center, norm_center_error=norm_center, valid=valid,
    )


def _g10_sequence(pred: np.ndarray, gt: np.ndarray, benchmark: str) -> OPEResult:
    """GOT-10k toolkit ``ExperimentOTB`` / ``ExperimentLaSOT`` per-sequence curves."""
    pred = pred.copy()
    pred[0] = gt[0]
    # LaSOT drops frames whose GT holds NaN; OTB scores every frame. Absent flags are not used.
    keep = ~np.isnan(gt).any(axis=1) if benchmark == "lasot" else np.ones(gt.shape[0], dtype=bool)
    p, g = pred[keep], gt[keep]
    ious = _g10_rect_iou(p, g)
    c_pred = p[:, :2] + (p[:, 2:] - 1) / 2
    c_gt = g[:, :2] + (g[:, 2:] - 1) / 2
    center = np.sqrt(np.sum(np.power(c_pred - c_gt, 2), axis=1))
    n = np.float64(p.shape[0])

    def curve(hit: np.ndarray) -> np.ndarray:
        return _ratio(hit.sum(axis=0), n)

    norm_curve = norm_center = None
    if benchmark == "lasot":
        norm_center = np.sqrt(np.sum(np.power((c_pred - c_gt) / np.maximum(1.0, g[:, 2:]), 2), axis=1))
        norm_curve = curve(norm_center[:, None] <= _G10_NORM_THRESHOLDS[None])
    overlap = np.full(gt.shape[0], np.nan)
    overlap[keep] = ious
    full_center = np.full(gt.shape[0], np.nan)
    full_center[keep] = center
    full_norm = None
    if norm_center is not None:
        full_norm = np.full(gt.shape[0], np.nan)
        full_norm[keep] = norm_center
    return OPEResult(
        success_curve=curve(ious[:, None] > _G10_IOU_THRESHOLDS[None]),
        precision_curve=curve(center[:, None] <= _G10_CENTER_THRESHOLDS[None]),
        norm_precision_curve=norm_curve,
        average_overlap=float(_mean_or_nan(ious)),
        convention="got10k_toolkit", benchmark=benchmark,
        overlap=overlap, center_error=full_center, norm_center_error=full_norm, valid=keep,
    )


def ope_metrics(
    pred_boxes: Any,
    gt_boxes: Any,
    *,
    convention: str = "pytracking",
    benchmark: str = "lasot",
    target_visible: Optional[Any] = None,
    exclude_invalid_frames: bool = False,
) -> OPEResult:
    """OTB/LaSOT one-pass-evaluation curves of one sequence (success/AUC, precision, normalised precision).

    Common to all conventions: frame 0 is replaced by the ground truth and counted (a success), the success
    curve counts ``IoU > thr`` over 21 thresholds ``0, 0.05, ..., 1`` (AUC = mean of the curve, so it only
    approximates the average overlap), precision counts centre errors ``<= thr`` for ``thr = 0..50`` px
    (score at 20 px), and a dataset averages the per-sequence curves (:func:`aggregate_ope`).

    Conventions:

    * ``'pytracking'`` (pytracking's analysis code; what pytracking-based trackers report):
      a frame is *valid* when all four GT entries ``x, y, w, h`` are ``> 0`` (so a GT box touching or crossing
      the left/top border is invalid) and, when given, ``target_visible`` is true. Invalid frames get IoU ``-1``
      (never a success), centre error ``+inf`` (never precise; ``-1`` = always precise for ``'uav'``) and
      normalised error ``-1`` (**counted as precise**); for ``benchmark='lasot'`` frames with
      ``target_visible == False`` then get ``+inf`` for both centre errors. A prediction with zero width or height
      (frames >= 1) is replaced by the previous prediction. The normalised error divides both centres by the GT
      ``(w, h)``; the score is the curve at 0.20. Every curve is divided by the full sequence length (absent frames
      act as failures), or by the number of valid frames with ``exclude_invalid_frames=True``.
    * ``'ostrack'``: the same, except that a frame is valid when the GT ``w > 0`` and ``h > 0`` (border-crossing
      GT boxes count). OSTrack-family papers (STARK, OSTrack, DETRack; LoRAT's STARK-compatible mode) report this.
    * ``'got10k_toolkit'`` (GOT-10k toolkit's ``ExperimentOTB`` / ``ExperimentLaSOT``): IoU as in
      :func:`got10k_metrics` without image clipping; OTB scores every frame, LaSOT drops frames whose GT holds NaN;
      absent flags and ``target_visible`` are **not used**; thresholds are ``linspace(0, 1, 21)``. LaSOT adds the
      normalised precision with errors divided by ``max(1, GT wh)`` over ``linspace(0, 0.5, 51)``, and its score
      is the **mean** of that curve (an AUC), not the value at 0.20. OTB has no normalised precision (``None``).

    Args:
        pred_boxes: ``(T, 4)`` predicted ``(x1, y1, x2, y2)``; frame 0 is replaced by the ground truth.
        gt_boxes: ``(T, 4)`` ground truth ``(x1, y1, x2, y2)``; an absent target is usually stored as zeros.
        convention: one of :data:`OPE_CONVENTIONS`.
        benchmark: ``'lasot'``, ``'otb'`` (any benchmark without visibility flags: OTB, NfS, TrackingNet, ...) or
            ``'uav'`` (pytracking's UAV123 rules: GT NaN allowed, invalid centre error counts as precise).
        target_visible: ``(T,)`` bool, for LaSOT ``(full_occlusion == 0) & (out_of_view == 0)``; used by the
            pytracking/OSTrack conventions only.
        exclude_invalid_frames: pytracking's option of the same name (divide by the number of valid frames).

    Returns:
        :class:`OPEResult` with the curves, scores (``auc``, ``success_rate``, ``op75``, ``precision``,
        ``norm_precision``) and the per-frame errors. A sequence without any scored frame (e.g. every frame
        invalid with ``exclude_invalid_frames=True``, where pytracking raises) has ``NaN`` curves, and
        :func:`aggregate_ope` leaves it out.

    Raises:
        ValueError: unknown convention/benchmark, boxes of different lengths, NaN or negative-size predictions
            (pytracking convention; the toolkit refuses them too), NaN ground truth outside ``'uav'``.
    """
    if convention not in OPE_CONVENTIONS:
        raise ValueError(f"convention must be one of {OPE_CONVENTIONS}, got {convention!r}")
    if benchmark not in _OPE_BENCHMARKS:
        raise ValueError(f"benchmark must be one of {_OPE_BENCHMARKS}, got {benchmark!r}")
    pred, gt = _box_pair(pred_boxes, gt_boxes)
    if gt.shape[0] == 0:
        raise ValueError("the sequence has no frames")
    if convention == "got10k_toolkit":
        if benchmark == "uav":
            raise ValueError("the GOT-10k toolkit convention supports benchmark 'otb' or 'lasot', not 'uav'")
        return _g10_sequence(pred, gt, benchmark)
    vis = None
    if target_visible is not None:
        vis = _flags(_frame_flags(target_visible, "target_visible", gt.shape[0]), "target_visible")
    return _pt_sequence(pred, gt, benchmark, convention, vis, bool(exclude_invalid_frames))


def aggregate_ope(results: Iterable[OPEResult]) -> OPEResult:
    """Dataset-level OPE scores: the mean over sequences of the per-sequence curves (every sequence weighs the
    same, whatever its length), then AUC / precision / normalised precision read from the mean curves.

    Sequences whose curves are undefined (``NaN``, no scored frame) are left out; ``num_sequences`` counts the
    ones used. All results must share one convention and benchmark. (The LaSOT MATLAB toolkit additionally drops
    sequences whose whole success curve is 0; the Python toolkits reproduced here do not.)
    """
    results = list(results)
    if not results:
        raise ValueError("aggregate_ope needs at least one sequence result")
    for i, r in enumerate(results):
        if not isinstance(r, OPEResult):
            raise ValueError(f"results[{i}] is a {type(r).__name__}, not an OPEResult")
        if (r.convention, r.benchmark) != (results[0].convention, results[0].benchmark):
            raise ValueError(f"results[{i}] uses ({r.convention!r}, {r.benchmark!r}) but results[0] uses "
                             f"({results[0].convention!r}, {results[0].benchmark!r})")
    used = [r for r in results if not np.isnan(r.success_curve).any()]
    weights = np.array([r.num_sequences for r in used], dtype=np.float64)

    def mean_curve(curves: List[np.ndarray], size: int) -> np.ndarray:
        if not curves:
            return np.full(size, np.nan)
        return np.sum(np.stack(curves) * weights[:, None], axis=0) / weights.sum()

    has_norm = results[0].norm_precision_curve is not None
    overlaps = np.array([r.average_overlap for r in used], dtype=np.float64)
    ok = ~np.isnan(overlaps)
    return OPEResult(
        success_curve=mean_curve([r.success_curve for r in used], 21),
        precision_curve=mean_curve([r.precision_curve for r in used], 51),
        norm_precision_curve=mean_curve([r.norm_precision_curve for r in used], 51) if has_norm else None,
        average_overlap=float(np.sum(overlaps[ok] * weights[ok]) / weights[ok].sum()) if ok.any() else float("nan"),
        convention=results[0].convention, benchmark=results[0].benchmark,
        num_sequences=int(weights.sum()),
    )
