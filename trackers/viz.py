"""Draw tracking results on frames and write annotated videos.

* :func:`draw_points` — one coloured dot per query point with a fading trail; points the model reports as
  occluded are drawn hollow (a ring), dimmed, or not at all.
* :func:`draw_boxes` — the tracked box with its score.
* :func:`annotate_video` — the same, streamed frame by frame from a file (or array) into an mp4, so memory stays
  bounded for long videos. Point videos carry a small legend (filled dot = visible, ring = occluded).

Titles and the legend sit on a semi-transparent band along the bottom edge that is painted *before* the tracks,
so they never hide a track: a point or box over the band is drawn on top of it (:func:`overlay_layout` says
where everything goes).

Frames are accepted in every layout of :mod:`trackers.video` (numpy or torch, ``(T, H, W, 3)`` or
``(T, 3, H, W)``, ``uint8`` or float in ``[0, 255]``); outputs are ``uint8`` ``(T, H, W, 3)`` numpy arrays.
When the frames are not the size the tracks were computed at (``tracks.image_size``), coordinates are rescaled
(pixel centres map to pixel centres), so tracks computed on a downscaled clip can be drawn on the original.

Drawing uses Pillow's ``ImageDraw`` (Pillow comes with imageio), with alpha blending for trails.
"""

from __future__ import annotations

import colorsys
import os
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from trackers.geometry import rescale_boxes, rescale_points
from trackers.io import Resize, VideoWriter, frame_to_uint8, iter_frames, video_info
from trackers.video import iter_input_frames
from trackers.errors import InputError

__all__ = ["draw_points", "draw_boxes", "annotate_video", "point_colors", "draw_text", "overlay_layout"]

Color = Tuple[int, int, int]


# --------------------------------------------------------------------------------------------------- helpers


def _np(x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.dtype != __import__("torch").float64:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _unbatch(arr: Optional[np.ndarray], rank: int, batch_index: Optional[int], what: str) -> Optional[np.ndarray]:
    """Drop the batch axis of a result field that has ``rank + 1`` dims."""
    if arr is None or arr.ndim == rank:
        return arr
    if arr.ndim != rank + 1:
        raise InputError(f"{what} has shape {arr.shape}; expected {rank} dims (or {rank + 1} with a batch axis)")
    if batch_index is None:
        if arr.shape[0] != 1:
            raise InputError(f"{what} holds a batch of {arr.shape[0]} videos; pick one with batch_index=")
        return arr[0]
    return arr[batch_index]


def _hsv(h: float, s: float = 0.85, v: float = 1.0) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def point_colors(
    queries: Any,
    mode: Union[str, Sequence[int], np.ndarray] = "index",
    *,
    image_size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """One RGB colour per query, as a ``(N, 3)`` ``uint8`` array.

    Args:
        queries: ``(N, 3)`` query points ``(t, x, y)`` (only ``N`` matters for ``"index"``).
        mode: ``"index"`` — well-separated hues by query order (golden-ratio steps, stable when points are
            added); ``"x"`` — a rainbow from red (left) to violet (right) by the query's x position, the usual
            look for grids; ``"y"`` — the same by y; an ``(r, g, b)`` triple for one colour; or an ``(N, 3)``
            array.
        image_size: ``(H, W)`` normalising ``"x"``/``"y"``; defaults to the queries' extent.
    """
    q = _np(queries)
    n = int(q.shape[0])
    if isinstance(mode, str):
        if mode == "index":
            return np.array([_hsv(i * 0.6180339887) for i in range(n)], dtype=np.uint8).reshape(n, 3)
        if mode in ("x", "y"):
            col = 1 if mode == "x" else 2
            v = q[:, col].astype(np.float64)
            if image_size is not None:
                span = float(image_size[1] if mode == "x" else image_size[0])
                lo = 0.0
            else:
                lo = float(np.nanmin(v)) if n else 0.0
                span = float(np.nanmax(v) - lo) if n else 1.0
            rel = np.clip((v - lo) / max(span, 1e-6), 0.0, 1.0)
            rel = np.nan_to_num(rel)
            # Stop at violet: a full hue circle would give the two borders the same red.
            return np.array([_hsv(0.8 * r) for r in rel], dtype=np.uint8).reshape(n, 3)
        raise InputError(f"unknown colour mode {mode!r}; use 'index', 'x', 'y', an (r, g, b) triple or (N, 3) array")
    arr = np.asarray(mode)
    if arr.shape == (3,):
        return np.tile(arr.astype(np.uint8), (n, 1))
    if arr.shape == (n, 3):
        return arr.astype(np.uint8)
    raise InputError(f"colors must be (r, g, b) or have shape ({n}, 3); got shape {arr.shape}")


def _rescaled(arr: np.ndarray, size_from: Optional[Sequence[int]], size_to: Tuple[int, int], fn) -> np.ndarray:
    """Map points or boxes from the tracks' image size to the drawn frame's (identity when equal or unknown)."""
    arr = arr.astype(np.float64)
    if not size_from or (int(size_from[0]), int(size_from[1])) == tuple(size_to):
        return arr
    return fn(arr, (int(size_from[0]), int(size_from[1])), size_to)


def _pil():
    from PIL import Image, ImageDraw, ImageFont

    return Image, ImageDraw, ImageFont


_FONT_CACHE: dict = {}


def _font(size: int):
    size = max(8, int(size))
    if size not in _FONT_CACHE:
        _, _, ImageFont = _pil()
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: fixed bitmap font
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def _text_box(draw, xy: Tuple[float, float], text: str, font, fg: Color, bg: Tuple[int, int, int, int],
              pad: int = 2) -> None:
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    draw.rectangle([left - pad, top - pad, right + pad, bottom + pad], fill=bg)
    draw.text((x, y), text, fill=fg, font=font)


def draw_text(frame: Any, text: str, *, xy: Tuple[int, int] = (6, 6), size: Optional[int] = None,
              color: Color = (255, 255, 255), background: Tuple[int, int, int, int] = (0, 0, 0, 170)) -> np.ndarray:
    """Return a copy of one frame with ``text`` on a translucent box (multi-line text is fine)."""
    Image, ImageDraw, _ = _pil()
    img = Image.fromarray(frame_to_uint8(frame))
    draw = ImageDraw.Draw(img, "RGBA")
    size = size or max(10, min(img.size) // 22)
    _text_box(draw, xy, text, _font(size), color, background, pad=3)
    return np.asarray(img)


# --------------------------------------------------------------------------------------------------- overlay

#: Band behind titles and the legend: black at this opacity (0-255), so the video stays visible through it.
BAND_ALPHA = 150
#: Colour of the legend's symbols and of the text on the band.
LEGEND_COLOR: Color = (255, 255, 255)
_LEGEND_WORDS = {"visible": "visible", "hollow": "occluded", "dim": "occluded"}


def _overlay_font_size(frame_size: Tuple[int, int]) -> int:
    return max(10, min(frame_size) // 24)


def overlay_layout(frame_size: Tuple[int, int], *, title: Optional[str] = None,
                   legend: Optional[str] = None) -> Optional[dict]:
    """Where the bottom band, the title and the legend go on a frame of ``frame_size = (H, W)``.

    Args:
        title: text on the left of the band.
        legend: how occluded points are drawn (``"hollow"``, ``"dim"`` or ``"hide"``), or ``None`` for no legend.
            With ``"hide"`` the legend only shows the visible symbol.

    Returns:
        ``None`` when there is nothing to draw, else a dict with ``"band": (y0, y1)`` (rows ``y0 <= y < y1``,
        full width), ``"font_size"``, ``"title": (x, y)`` (or ``None``) and ``"items"``: a list of
        ``(kind, (cx, cy), radius, text_xy, text)`` legend entries, ``kind`` being ``"visible"``, ``"hollow"`` or
        ``"dim"``. When title and legend do not fit side by side the legend gets a second row.
    """
    if not title and legend is None:
        return None
    if legend not in (None, "hollow", "dim", "hide"):
        raise InputError(f"legend must be 'hollow', 'dim', 'hide' or None; got {legend!r}")
    Image, ImageDraw, _ = _pil()
    h, w = int(frame_size[0]), int(frame_size[1])
    size = _overlay_font_size((h, w))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def text_w(text: str) -> int:
        left, _, right, _ = measure.textbbox((0, 0), text, font=font)
        return right - left

    pad = max(2, size // 3)
    row_h = size + 2 * pad
    r = max(3, size // 3)
    kinds = [] if legend is None else ["visible"] + ([] if legend == "hide" else [legend])
    # Legend entries: symbol, small gap, word; entries separated by a wider gap.
    entry_w = [2 * r + pad + text_w(_LEGEND_WORDS[k]) for k in kinds]
    legend_w = sum(entry_w) + 2 * pad * max(0, len(kinds) - 1)
    title_w = text_w(title) if title else 0
    two_rows = bool(title) and bool(kinds) and title_w + legend_w + 4 * pad > w
    band_h = row_h * (2 if two_rows else 1)
    y0 = max(0, h - band_h)
    title_xy = (pad, y0 + pad) if title else None
    legend_row_y = y0 + (row_h if two_rows else 0)
    x = w - pad - legend_w if not two_rows else pad
    items = []
    for k, ew in zip(kinds, entry_w):
        cx, cy = x + r, legend_row_y + row_h // 2
        items.append((k, (cx, cy), r, (x + 2 * r + pad, legend_row_y + pad), _LEGEND_WORDS[k]))
        x += ew + 2 * pad
    return {"band": (y0, h), "font_size": size, "title": title_xy, "items": items}


def _paint_overlay(img, layout: Optional[dict], title: Optional[str]) -> None:
    """The band, title and legend of :func:`overlay_layout` (called before the tracks are painted)."""
    if layout is None:
        return
    _, ImageDraw, _ = _pil()
    draw = ImageDraw.Draw(img, "RGBA")
    y0, y1 = layout["band"]
    draw.rectangle([0, y0, img.size[0] - 1, y1 - 1], fill=(0, 0, 0, BAND_ALPHA))
    font = _font(layout["font_size"])
    top = draw.textbbox((0, 0), "Ag", font=font)[1]  # fonts start below their origin: align the glyph tops
    if title and layout["title"] is not None:
        tx, ty = layout["title"]
        draw.text((tx, ty - top), title, fill=LEGEND_COLOR + (255,), font=font)
    c = LEGEND_COLOR + (255,)
    for kind, (cx, cy), r, (tx, ty), text in layout["items"]:
        box = [cx - r, cy - r, cx + r, cy + r]
        if kind == "visible":
            draw.ellipse(box, fill=c, outline=None)
        elif kind == "hollow":
            draw.ellipse(box, fill=None, outline=c, width=max(1, int(round(r / 2.5))))
        else:  # "dim": the translucent dot of occluded="dim"
            draw.ellipse(box, fill=LEGEND_COLOR + (90,), outline=None)
        draw.text((tx, ty - top), text, fill=c, font=font)


# --------------------------------------------------------------------------------------------------- painters


class _PointPainter:
    """Draws point tracks on one frame at a time (shared by :func:`draw_points` and :func:`annotate_video`)."""

    def __init__(self, tracks, frame_size: Tuple[int, int], *, trail: int, radius: Optional[float],
                 line_width: Optional[int], colors, visible, threshold: Optional[float], occluded: str,
                 from_query_frame: bool, batch_index: Optional[int]) -> None:
        if occluded not in ("hollow", "dim", "hide"):
            raise InputError(f"occluded must be 'hollow', 'dim' or 'hide'; got {occluded!r}")
        if int(trail) != trail or trail < 0:
            raise InputError(f"trail must be a non-negative int (frames); got {trail!r}")
        xy = _unbatch(_np(tracks.tracks), 3, batch_index, "tracks.tracks")
        if xy.shape[-1] != 2:
            raise InputError(f"tracks.tracks must end in (x, y); got shape {xy.shape}")
        if visible is not None:
            vis = _np(visible).astype(bool)
            vis = _unbatch(vis, 2, batch_index, "visible")
        elif threshold is not None:
            vis = _unbatch(_np(tracks.visibility), 2, batch_index, "tracks.visibility") > float(threshold)
        elif getattr(tracks, "visible", None) is not None:
            vis = _unbatch(_np(tracks.visible), 2, batch_index, "tracks.visible").astype(bool)
        else:
            vis = np.ones(xy.shape[:2], dtype=bool)
        if vis.shape != xy.shape[:2]:
            raise InputError(f"visibility has shape {vis.shape}, tracks need {xy.shape[:2]}")
        queries = getattr(tracks, "queries", None)
        queries = _unbatch(_np(queries), 2, batch_index, "tracks.queries") if queries is not None else None
        if queries is None:
            queries = np.concatenate([np.zeros((xy.shape[1], 1)), xy[0]], axis=1)

        self.xy = _rescaled(xy, getattr(tracks, "image_size", None), frame_size, rescale_points)
        self.vis = vis
        self.qt = np.nan_to_num(queries[:, 0]).astype(np.int64)
        src_size = getattr(tracks, "image_size", None) or frame_size
        self.colors = point_colors(queries, colors, image_size=tuple(src_size))
        h, w = frame_size
        self.radius = float(radius) if radius is not None else max(2.0, round(min(h, w) / 110))
        self.line_width = int(line_width) if line_width is not None else max(1, int(round(self.radius / 2)))
        self.trail = int(trail)
        self.occluded = occluded
        self.from_query_frame = from_query_frame
        self.num_frames = self.xy.shape[0]

    def paint(self, img, t: int) -> None:
        _, ImageDraw, _ = _pil()
        draw = ImageDraw.Draw(img, "RGBA")
        xy, vis, cols = self.xy, self.vis, self.colors
        n = xy.shape[1]
        active = np.ones(n, dtype=bool) if not self.from_query_frame else (self.qt <= t)
        if self.trail > 0:
            t0 = max(0, t - self.trail)
            for s in range(t0, t):
                # Older segments are fainter; segments ending in an occluded position fainter still.
                age = (s - t0 + 1) / (t - t0 + 1)
                base_alpha = 40 + 200 * age
                a, b = xy[s], xy[s + 1]
                ok = active & np.isfinite(a).all(1) & np.isfinite(b).all(1)
                if self.from_query_frame:
                    ok &= self.qt <= s
                for i in np.nonzero(ok)[0]:
                    alpha = base_alpha if vis[s + 1, i] else base_alpha * 0.35
                    if alpha < 1:
                        continue
                    c = cols[i]
                    draw.line([(a[i, 0], a[i, 1]), (b[i, 0], b[i, 1])],
                              fill=(int(c[0]), int(c[1]), int(c[2]), int(alpha)), width=self.line_width)
        r = self.radius
        p = xy[t]
        ok = active & np.isfinite(p).all(1)
        ring = max(1, int(round(r / 2.5)))
        # Occluded points first, so visible ones stay on top where they overlap.
        for i in np.nonzero(ok & ~vis[t])[0]:
            x, y = p[i]
            c = tuple(int(v) for v in cols[i])
            box = [x - r, y - r, x + r, y + r]
            if self.occluded == "hollow":
                draw.ellipse(box, fill=None, outline=c + (255,), width=ring)
            elif self.occluded == "dim":
                draw.ellipse(box, fill=c + (90,), outline=None)
        for i in np.nonzero(ok & vis[t])[0]:
            x, y = p[i]
            c = tuple(int(v) for v in cols[i])
            draw.ellipse([x - r, y - r, x + r, y + r], fill=c + (255,), outline=(0, 0, 0, 150), width=1)


class _BoxPainter:
    """Draws one box per target and frame; ``(K, T, 4)`` boxes (several targets of one video) draw all K, each
    in its own colour, unless ``batch_index`` picks one (a batch of clips)."""

    def __init__(self, tracks, frame_size: Tuple[int, int], *, color: Color, thickness: Optional[int],
                 show_score: bool, label: Optional[str], batch_index: Optional[int]) -> None:
        boxes = _np(tracks.boxes)
        scores = getattr(tracks, "scores", None)
        scores = _np(scores) if scores is not None else None
        if boxes.ndim == 3 and batch_index is not None:
            boxes = _unbatch(boxes, 2, batch_index, "tracks.boxes")
            scores = _unbatch(scores, 1, batch_index, "tracks.scores") if scores is not None else None
        if boxes.ndim == 2:
            boxes, scores = boxes[None], (scores[None] if scores is not None else None)
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise InputError(f"tracks.boxes must be (T, 4) or (K, T, 4) xyxy; got shape {boxes.shape}")
        b = _rescaled(boxes, getattr(tracks, "image_size", None), frame_size, rescale_boxes)
        self.boxes = b  # (K, T, 4)
        self.scores = scores
        k = b.shape[0]
        self.colors = [tuple(int(v) for v in color)] if k == 1 else [_hsv(i / k) for i in range(k)]
        h, w = frame_size
        self.thickness = int(thickness) if thickness is not None else max(2, int(round(min(h, w) / 180)))
        self.font = _font(max(10, min(h, w) // 28))
        self.show_score = show_score
        self.label = label
        self.num_frames = b.shape[1]

    def paint(self, img, t: int) -> None:
        _, ImageDraw, _ = _pil()
        draw = ImageDraw.Draw(img, "RGBA")
        for k, color in enumerate(self.colors):
            box = self.boxes[k, t]
            if not np.isfinite(box).all():
                continue
            x1, y1, x2, y2 = box
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            draw.rectangle([x1, y1, x2, y2], outline=color + (255,), width=self.thickness)
            parts = []
            if self.label:
                parts.append(self.label if len(self.colors) == 1 else f"{self.label} {k}")
            if self.show_score and self.scores is not None and np.isfinite(self.scores[k, t]):
                parts.append(f"{float(self.scores[k, t]):.2f}")
            if parts:
                text = " ".join(parts)
                left, top, right, bottom = draw.textbbox((0, 0), text, font=self.font)
                th = bottom - top
                ty = y1 - th - 2 * self.thickness - 2
                if ty < 0:  # no room above the box: put the label inside its top edge
                    ty = y1 + self.thickness + 2
                lum = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
                fg = (0, 0, 0) if lum > 140 else (255, 255, 255)
                _text_box(draw, (x1, ty - top), text, self.font, fg, color + (220,))


def _check_frames(num_video: Optional[int], num_tracks: int) -> None:
    if num_video is not None and num_video != num_tracks:
        raise InputError(f"the video has {num_video} frames but the tracks have {num_tracks}; "
                         "draw on the same frames that were tracked")


def _render(frames: Any, make_painter, title: Optional[str], legend: Optional[str] = None) -> np.ndarray:
    Image, _, _ = _pil()
    if isinstance(frames, (str, os.PathLike)):
        from trackers.io import read_video

        frames = read_video(frames)
    out = None
    painter = None
    layout = None
    t = -1
    for t, frame in enumerate(iter_input_frames(frames)):
        rgb = frame_to_uint8(frame)
        if painter is None:
            painter = make_painter(rgb.shape[:2])
            total = len(frames) if hasattr(frames, "__len__") else None
            _check_frames(total, painter.num_frames)
            out = np.empty((painter.num_frames,) + rgb.shape, dtype=np.uint8)
        if t >= painter.num_frames:
            _check_frames(t + 1, painter.num_frames)
        img = Image.fromarray(rgb)
        if t == 0:
            layout = overlay_layout(rgb.shape[:2], title=title, legend=legend)
        _paint_overlay(img, layout, title)
        painter.paint(img, t)
        out[t] = np.asarray(img)
    if painter is None:
        raise InputError("no frames to draw on")
    _check_frames(t + 1, painter.num_frames)
    return out


# --------------------------------------------------------------------------------------------------- public API


def draw_points(
    frames: Any,
    tracks,
    *,
    trail: int = 10,
    radius: Optional[float] = None,
    line_width: Optional[int] = None,
    colors: Union[str, Sequence[int], np.ndarray] = "index",
    visible: Any = None,
    threshold: Optional[float] = None,
    occluded: str = "hollow",
    from_query_frame: bool = False,
    batch_index: Optional[int] = None,
    title: Optional[str] = None,
    legend: bool = False,
) -> np.ndarray:
    """Draw point tracks on a clip; returns ``uint8`` ``(T, H, W, 3)``.

    Args:
        frames: the clip the tracks belong to (any layout of :mod:`trackers.video`, or a path).
        tracks: a :class:`trackers.results.PointTracks` (one video; for a batch pick one with ``batch_index``).
        trail: number of past frames drawn as a fading line behind each point (0 = none).
        radius: dot radius in output pixels (default: about 1/110 of the shorter side, at least 2).
        line_width: trail width (default: half the radius).
        colors: per-query colours, see :func:`point_colors` (``"index"``, ``"x"``, ``"y"``, a colour, or ``(N, 3)``).
        visible: ``(T, N)`` booleans overriding the visibility decision.
        threshold: use ``tracks.visibility > threshold`` instead of ``tracks.visible`` (the model's own rule).
        occluded: how to draw occluded points: ``"hollow"`` (a ring), ``"dim"`` (translucent) or ``"hide"``.
        from_query_frame: draw each point only from its query frame on (for trackers that only track forward).
        batch_index: which video of batched tracks to draw.
        title: optional text on a semi-transparent band along the bottom edge, beneath the tracks.
        legend: add a legend to the band: a filled dot "visible" and the ``occluded`` style's symbol "occluded".
    """

    def make(size):
        return _PointPainter(tracks, size, trail=trail, radius=radius, line_width=line_width, colors=colors,
                             visible=visible, threshold=threshold, occluded=occluded,
                             from_query_frame=from_query_frame, batch_index=batch_index)

    return _render(frames, make, title, occluded if legend else None)


def draw_boxes(
    frames: Any,
    tracks,
    *,
    color: Color = (255, 64, 64),
    thickness: Optional[int] = None,
    show_score: bool = True,
    label: Optional[str] = None,
    batch_index: Optional[int] = None,
    title: Optional[str] = None,
) -> np.ndarray:
    """Draw a box track (with its per-frame score) on a clip; returns ``uint8`` ``(T, H, W, 3)``.

    Args:
        frames: the clip the tracks belong to (any layout of :mod:`trackers.video`, or a path).
        tracks: a :class:`trackers.results.BoxTracks`.
        color: box colour.
        thickness: line width in pixels (default: about 1/180 of the shorter side, at least 2).
        show_score: write the score (2 decimals) above the box.
        label: optional text written before the score.
        batch_index: which video of batched tracks to draw.
        title: optional text on a semi-transparent band along the bottom edge, beneath the box.
    """

    def make(size):
        return _BoxPainter(tracks, size, color=color, thickness=thickness, show_score=show_score, label=label,
                           batch_index=batch_index)

    return _render(frames, make, title)


def annotate_video(
    video: Any,
    tracks,
    out_path: Union[str, os.PathLike],
    *,
    fps: Optional[float] = None,
    start: int = 0,
    stride: int = 1,
    resize: Resize = None,
    title: Optional[str] = None,
    legend: Optional[bool] = None,
    codec: str = "libx264",
    crf: Optional[int] = 20,
    progress: bool = False,
    **draw_kwargs: Any,
) -> str:
    """Draw ``tracks`` on ``video`` and write the result to ``out_path``, one frame at a time.

    Args:
        video: a video file (decoded lazily, so memory stays bounded however long it is), or frames in any
            layout of :mod:`trackers.video`, or an iterable of frames.
        tracks: :class:`~trackers.results.PointTracks` or :class:`~trackers.results.BoxTracks`.
        out_path: output file (``.mp4`` recommended).
        fps: output frame rate (default: the input file's rate divided by ``stride``; 25 for arrays).
        start, stride, resize: frame selection for a file input, as in :func:`trackers.io.iter_frames`. They must
            select the frames that were tracked; the first ``T`` selected frames are annotated, where ``T`` is
            the number of tracked frames. ``resize`` only changes the output size: coordinates are rescaled.
        title: optional text on a semi-transparent band along the bottom edge, beneath the tracks.
        legend: for point tracks, a legend on the same band (filled dot = visible, ring = occluded; it follows
            ``occluded=``); default on for points. Box videos have none (``True`` is an error there).
        codec, crf: encoder settings (see :class:`trackers.io.VideoWriter`).
        progress: show a tqdm progress bar.
        **draw_kwargs: passed to :func:`draw_points` (``trail``, ``radius``, ``colors``, ``occluded``, ...) or
            :func:`draw_boxes` (``color``, ``thickness``, ``label``, ...).

    Returns:
        ``out_path`` as a string.

    Raises:
        ValueError: the video has fewer frames than the tracks, or bad arguments.
    """
    Image, _, _ = _pil()
    is_box = hasattr(tracks, "boxes")
    num_frames = int(_np(tracks.boxes if is_box else tracks.tracks).shape[-2 if is_box else -3])
    if isinstance(video, (str, os.PathLike)):
        if fps is None:
            fps = video_info(video).fps / stride
        source: Iterable = iter_frames(video, start=start, stride=stride, max_frames=num_frames, resize=resize)
    else:
        if resize is not None:
            raise InputError("resize= only applies to a video file input; resize arrays before drawing")
        if hasattr(video, "__len__") and hasattr(video, "shape"):
            _check_frames(len(video), num_frames)
        source = iter_input_frames(video, name="video")
    fps = fps or 25.0
    if is_box and legend:
        raise InputError("legend= applies to point tracks; box videos show the score next to the box instead")
    legend_style = None if is_box or legend is False else draw_kwargs.get("occluded", "hollow")

    def make(size):
        if is_box:
            keys = {"color", "thickness", "show_score", "label", "batch_index"}
            bad = set(draw_kwargs) - keys
            if bad:
                raise InputError(f"unexpected arguments for box drawing: {', '.join(sorted(bad))}")
            return _BoxPainter(tracks, size, color=draw_kwargs.get("color", (255, 64, 64)),
                               thickness=draw_kwargs.get("thickness"), show_score=draw_kwargs.get("show_score", True),
                               label=draw_kwargs.get("label"), batch_index=draw_kwargs.get("batch_index"))
        keys = {"trail", "radius", "line_width", "colors", "visible", "threshold", "occluded", "from_query_frame",
                "batch_index"}
        bad = set(draw_kwargs) - keys
        if bad:
            raise InputError(f"unexpected arguments for point drawing: {', '.join(sorted(bad))}")
        kw = {"trail": 10, "radius": None, "line_width": None, "colors": "index", "visible": None,
              "threshold": None, "occluded": "hollow", "from_query_frame": False, "batch_index": None}
        kw.update(draw_kwargs)
        return _PointPainter(tracks, size, **kw)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_frames, desc="writing", unit="frame")
    painter = None
    layout = None
    written = 0
    try:
        with VideoWriter(out_path, fps=fps, codec=codec, crf=crf) as writer:
            for t, frame in enumerate(source):
                if t >= num_frames:
                    break
                rgb = frame_to_uint8(frame)
                if painter is None:
                    painter = make(rgb.shape[:2])
                    layout = overlay_layout(rgb.shape[:2], title=title, legend=legend_style)
                img = Image.fromarray(rgb)
                _paint_overlay(img, layout, title)  # first, so the tracks are drawn over the band
                painter.paint(img, t)
                writer.write(np.asarray(img))
                written += 1
                if bar is not None:
                    bar.update(1)
            if written < num_frames:
                raise InputError(f"the video provides only {written} frames but the tracks have {num_frames}; "
                                 "use the same start/stride/max_frames as when tracking")
    except BaseException:
        # Do not leave a truncated video behind that looks like a result.
        if written:
            try:
                os.remove(os.fspath(out_path))
            except OSError:
                pass
        raise
    finally:
        if bar is not None:
            bar.close()
    return os.fspath(out_path)
