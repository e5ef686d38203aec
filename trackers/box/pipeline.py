"""Single-object tracking (SOT) pipeline shared by the one-stream box trackers (LoRAT, DETRack).

The pipeline around the network, per target:

1. **Init** (:func:`init_stream`): validate the initial box, take the per-channel mean colour of the initial frame
   (it pads *every* later crop of the stream), crop the template around the box (``template_factor``, no minimum
   size), and build the template foreground mask on the template's patch grid.
2. **Search** (:func:`search_crop`): crop the search region around the current box (``search_factor``, box side
   clamped to at least ``min_object_size`` around its centre).
3. **Post-process** (:func:`select_box` then :func:`update_stream`): sigmoid the score logits, pick the cell that
   maximises ``(1 - penalty) * p + penalty * hann`` (``window="blend"``, LoRAT) or ``p * hann``
   (``window="multiply"``, OSTrack and DETRack), decode that cell's box, map it back to the frame, clip it to the
   image, and keep it as the new state only if it is valid (finite, positive size, inside the image).

Crops are *pixel aligned*: the ideal similarity transform ``crop = frame * s + t`` is snapped so that whole input
pixels land on whole output pixels, the sub-image is resized with bilinear interpolation (``align_corners=False``,
no antialias) and the adjusted per-axis ``s'``, ``t'`` (float32) are what later maps boxes back. Everything else
(ImageNet normalisation, Hann window from ``torch.hann_window(periodic=False)``) follows the LoRAT evaluation code.

Boxes here are ``(x1, y1, x2, y2)`` in continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, so a box
``(x, y, w, h)`` is ``(x, y, x + w, y + h)``. A target's state is a frozen value (:class:`SOTState`) that each step
replaces, so one network serves any number of targets and several targets share one batched forward.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from trackers.base import Settings
from trackers.errors import InputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOTSettings",
    "CropSizes",
    "CropTransform",
    "SOTState",
    "check_init_box",
    "crop_transform",
    "rasterize_box",
    "pixel_aligned_crop",
    "normalize_image",
    "hann_window_2d",
    "template_foreground_mask",
    "init_stream",
    "search_crop",
    "select_box",
    "select_cell",
    "update_stream",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RASTER_EPS = 1e-4


_WINDOWS = ("blend", "multiply")


@dataclass(frozen=True)
class SOTSettings(Settings):
    """How a one-stream box tracker crops and picks its box (the crop *sizes* belong to the network).

    Attributes:
        template_factor: template crop side relative to the box (context-padded, SiamFC rule).
        search_factor: search crop side relative to the box.
        min_object_size: the box is widened to at least this many pixels per side before the search crop, so a
            collapsed box still gets a sensible search region.
        window_penalty: weight of the Hann window (cosine window) that favours small motions.
        window: ``"blend"`` picks ``(1 - penalty) * p + penalty * hann`` (LoRAT); ``"multiply"`` picks
            ``p * hann`` (OSTrack, DETRack), where ``window_penalty`` is unused.
    """

    template_factor: float = 2.0
    search_factor: float = 4.0
    min_object_size: float = 10.0
    window_penalty: float = 0.45
    window: str = "blend"

    def __post_init__(self) -> None:
        for name in ("template_factor", "search_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise InputError(f"SOTSettings.{name} must be a positive number, got {v!r}")
        v = self.min_object_size
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
            raise InputError(f"SOTSettings.min_object_size must be a number >= 0, got {v!r}")
        v = self.window_penalty
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise InputError(f"SOTSettings.window_penalty must be in [0, 1], got {v!r}")
        if self.window not in _WINDOWS:
            raise InputError(f"SOTSettings.window must be one of {_WINDOWS}, got {self.window!r}")


@dataclass(frozen=True)
class CropSizes:
    """Crop sizes a network expects: template and search sides in pixels, template patch-grid side."""

    template: int
    search: int
    template_grid: int


@dataclass
class CropTransform:
    """Per-axis similarity ``crop_xy = frame_xy * scale + translation`` (float32, as the official code)."""

    scale: torch.Tensor  # (2,) (sx, sy)
    translation: torch.Tensor  # (2,) (tx, ty)

    def to_crop(self, box: torch.Tensor) -> torch.Tensor:
        s = self.scale.repeat(2)
        t = self.translation.repeat(2)
        return box.to(torch.float32) * s + t

    def to_frame(self, box: torch.Tensor) -> torch.Tensor:
        """Inverse map in float64 (``box * (1/s) + (-t/s)``), which reproduces the official boxes bit for bit."""
        s = self.scale.double().repeat(2)
        t = self.translation.double().repeat(2)
        return box.double() * (1.0 / s) + (-t / s)

    def as_array(self) -> np.ndarray:
        """``[[sx, sy], [tx, ty]]`` as float64 (the layout of the LoRAT goldens)."""
        return torch.stack([self.scale, self.translation]).double().numpy()


@dataclass(frozen=True)
class SOTState:
    """Everything one target needs between frames (a value: each step returns a new one).

    ``box`` is the current target box (float64, frame pixels); ``fill`` the padding colour (init-frame mean,
    float32 ``(3,)`` in 0..255); ``image_size`` ``(H, W)`` of the frames; ``template`` the network's template
    encoding (from the tracker's ``_encode_template`` hook, batch of one); ``template_mask`` the template's
    foreground mask on its patch grid; ``score`` the confidence of the last step (1 after initialisation).
    """

    box: torch.Tensor
    fill: torch.Tensor
    image_size: Tuple[int, int]
    template_transform: CropTransform
    template_mask: torch.Tensor
    template: Any = None
    score: float = 1.0


# ---------------------------------------------------------------------------------------------- geometry

def check_init_box(box: Any, image_size: Tuple[int, int], name: str = "init_box") -> torch.Tensor:
    """Validate an ``(x1, y1, x2, y2)`` box against a frame of size ``(H, W)``; returns float64 ``(4,)``.

    Raises ``ValueError`` for a wrong shape, non-finite values, an empty or inverted box, or a box that does not
    overlap the frame at all.
    """
    try:
        b = torch.tensor(np.asarray(box.detach().cpu() if isinstance(box, torch.Tensor) else box,
                                    dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2), got {box!r}") from None
    if b.shape != (4,):
        raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2), got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise InputError(f"{name} must be finite, got {b.tolist()}")
    x1, y1, x2, y2 = b.tolist()
    if x2 <= x1 or y2 <= y1:
        kind = "empty" if (x2 == x1 or y2 == y1) else "inverted"
        raise InputError(f"{name} {b.tolist()} is {kind}: need x2 > x1 and y2 > y1 (boxes are x1, y1, x2, y2)")
    h, w = image_size
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        raise InputError(f"{name} {b.tolist()} lies outside the {w}x{h} (WxH) frame")
    return b


def crop_transform(box: torch.Tensor, factor: float, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ideal SiamFC crop around ``box``: side ``sqrt((w + ctx) (h + ctx))`` with ``ctx = (f - 1)(w + h) / 2``.

    Returns float64 ``scale`` (same for x and y) and ``translation`` so that ``crop = frame * scale + t`` puts
    the box centre at the crop centre.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    ctx = (factor - 1.0) * (w + h) / 2.0
    side = math.sqrt((w + ctx) * (h + ctx))
    s = out_size / side
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    scale = np.array([s, s], dtype=np.float64)
    trans = np.array([out_size / 2.0 - cx * s, out_size / 2.0 - cy * s], dtype=np.float64)
    return scale, trans


def rasterize_box(box: Sequence[float]) -> Tuple[int, int, int, int]:
    """Continuous box -> end-exclusive integer pixel box covering it (``floor`` / ``floor(v + 1 - 1e-4)``)."""
    x1, y1, x2, y2 = box
    return (math.floor(x1), math.floor(y1), math.floor(x2 + 1 - _RASTER_EPS), math.floor(y2 + 1 - _RASTER_EPS))


def _clip_int(box: Tuple[int, int, int, int], w: int, h: int) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h))


def pixel_aligned_crop(
    frame: torch.Tensor,
    scale: np.ndarray,
    translation: np.ndarray,
    out_size: int,
    fill: torch.Tensor,
) -> Tuple[torch.Tensor, CropTransform]:
    """Crop ``frame (3, H, W)`` (0..255) into an ``out_size`` square under ``crop = frame * scale + t``.

    The frame's footprint in the output is rasterised to whole pixels, mapped back and rasterised again, so the
    resized sub-image covers whole pixels on both sides; the rest is ``fill``. Returns the crop and the adjusted
    transform actually realised.
    """
    _, h, w = frame.shape
    sx, sy = float(scale[0]), float(scale[1])
    tx, ty = float(translation[0]), float(translation[1])
    # The frame rectangle [0, W] x [0, H] in output pixels, clipped to the output, then whole pixels.
    ox1, oy1, ox2, oy2 = (min(max(v, 0.0), float(out_size)) for v in (tx, ty, w * sx + tx, h * sy + ty))
    o = rasterize_box((ox1, oy1, ox2, oy2))
    o = _clip_int(o, out_size, out_size)
    # ... and back into input pixels with the inverse transform.
    isx, isy = 1.0 / sx, 1.0 / sy
    itx, ity = -tx / sx, -ty / sy
    i = rasterize_box((o[0] * isx + itx, o[1] * isy + ity, o[2] * isx + itx, o[3] * isy + ity))
    i = _clip_int(i, w, h)

    out = fill.to(device=frame.device, dtype=frame.dtype).reshape(3, 1, 1).expand(3, out_size, out_size).clone()
    ow, oh = o[2] - o[0], o[3] - o[1]
    iw, ih = i[2] - i[0], i[3] - i[1]
    if ow > 0 and oh > 0 and iw > 0 and ih > 0:
        patch = frame[:, i[1]:i[3], i[0]:i[2]][None]
        if (iw, ih) != (ow, oh):
            patch = F.interpolate(patch, size=(oh, ow), mode="bilinear", align_corners=False, antialias=False)
        out[:, o[1]:o[3], o[0]:o[2]] = patch[0]
        s_adj = torch.tensor([ow, oh], dtype=torch.float32) / torch.tensor([iw, ih], dtype=torch.float32)
        t_adj = torch.tensor([o[0], o[1]], dtype=torch.float32) - torch.tensor([i[0], i[1]], dtype=torch.float32) * s_adj
    else:
        # Nothing of the frame is visible: keep the ideal transform so boxes still map back sensibly.
        s_adj = torch.tensor([sx, sy], dtype=torch.float32)
        t_adj = torch.tensor([tx, ty], dtype=torch.float32)
    return out, CropTransform(s_adj, t_adj)


def normalize_image(img: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` in 0..255 -> ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=img.device).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=img.device).reshape(3, 1, 1)
    return (img.float() / 255.0 - mean) / std


_HANN_CACHE: dict = {}


def hann_window_2d(h: int, w: int, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """``outer(hann(h), hann(w))`` with symmetric (non-periodic) windows, float32 ``(h, w)``."""
    key = (h, w, str(device))
    win = _HANN_CACHE.get(key)
    if win is None:
        win = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False)).to(device)
        _HANN_CACHE[key] = win
    return win


def template_foreground_mask(box: torch.Tensor, transform: CropTransform, crop_size: int, grid: int) -> torch.Tensor:
    """``(grid, grid)`` int64 mask: 1 on template patches covered by ``box`` (frame pixels), 0 elsewhere."""
    stride = crop_size / grid
    b = transform.to_crop(box) / stride
    x1, y1, x2, y2 = _clip_int(rasterize_box(b.tolist()), grid, grid)
    mask = torch.zeros(grid, grid, dtype=torch.int64)
    mask[y1:y2, x1:x2] = 1
    return mask


# ---------------------------------------------------------------------------------------------- stream steps

def init_stream(
    frame: torch.Tensor, box: Any, settings: SOTSettings, sizes: CropSizes
) -> Tuple[SOTState, torch.Tensor]:
    """Start a target on ``frame (3, H, W)`` (float, 0..255) with the initial ``box``.

    Returns the state (``template`` still empty: the tracker encodes the crop) and the normalised template crop
    ``(3, S_t, S_t)``; the foreground mask is ``state.template_mask``.
    """
    _, h, w = frame.shape
    b = check_init_box(box, (h, w))
    fill = frame.float().mean(dim=(1, 2))
    scale, trans = crop_transform(b, settings.template_factor, sizes.template)
    crop, tf = pixel_aligned_crop(frame, scale, trans, sizes.template, fill)
    mask = template_foreground_mask(b, tf, sizes.template, sizes.template_grid)
    state = SOTState(box=b, fill=fill, image_size=(h, w), template_transform=tf, template_mask=mask)
    return state, normalize_image(crop)


def _min_size_box(box: torch.Tensor, min_size: float) -> torch.Tensor:
    x1, y1, x2, y2 = box.tolist()
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    w, h = max(w, min_size), max(h, min_size)
    return torch.tensor([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], dtype=torch.float64)


def search_crop(frame: torch.Tensor, state: SOTState, settings: SOTSettings, sizes: CropSizes
                ) -> Tuple[torch.Tensor, CropTransform]:
    """Normalised search crop ``(3, S, S)`` around the target's current box, and its realised transform."""
    h, w = state.image_size
    if tuple(frame.shape[-2:]) != (h, w):
        raise InputError(
            f"frame size {tuple(frame.shape[-2:])} (H, W) differs from the stream's first frame {(h, w)}; "
            "all frames of a stream must have the same size"
        )
    box = _min_size_box(state.box, settings.min_object_size)
    scale, trans = crop_transform(box, settings.search_factor, sizes.search)
    crop, tf = pixel_aligned_crop(frame, scale, trans, sizes.search, state.fill)
    return normalize_image(crop), tf


def select_cell(score_map: torch.Tensor, settings: SOTSettings) -> Tuple[torch.Tensor, torch.Tensor]:
    """The cell a tracking step takes: ``score_map (B, H, W)`` logits -> ``(B,)`` row-major cell indices (windowed
    argmax of the sigmoid scores, the window by ``settings.window``) and their ``(B,)`` confidences (sigmoid score
    without the window). Cells with a ``-inf`` logit (no candidate there) can only win when no cell has one."""
    b, h, w = score_map.shape
    p = score_map.float().sigmoid().reshape(b, -1)
    win = hann_window_2d(h, w, p.device).reshape(1, -1)
    if settings.window == "multiply":
        idx = (p * win).argmax(dim=1)
    else:
        idx = (p * (1.0 - settings.window_penalty) + win * settings.window_penalty).argmax(dim=1)
    return idx, p.gather(1, idx[:, None])[:, 0]


def select_box(
    score_map: torch.Tensor, boxes: torch.Tensor, settings: SOTSettings, crop_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick one box per sample from a score map.

    ``score_map (B, H, W)`` logits and ``boxes (B, H, W, 4)`` normalised xyxy -> ``(B, 4)`` boxes in crop pixels
    (float32) and ``(B,)`` confidences, at the cell :func:`select_cell` picks.
    """
    idx, conf = select_cell(score_map, settings)
    b = score_map.shape[0]
    chosen = boxes.float().reshape(b, -1, 4)[torch.arange(b, device=idx.device), idx]
    return chosen * float(crop_size), conf


def update_stream(state: SOTState, crop_box: torch.Tensor, confidence: float, tf: CropTransform
                  ) -> Tuple[SOTState, torch.Tensor]:
    """Map ``crop_box`` back to the frame and clip it; returns the new state (box kept only if valid) and the
    frame box (float64)."""
    h, w = state.image_size
    fb = tf.to_frame(crop_box.detach().cpu())
    fb[0::2] = fb[0::2].clamp(0.0, float(w))
    fb[1::2] = fb[1::2].clamp(0.0, float(h))
    x1, y1, x2, y2 = fb.tolist()
    valid = all(math.isfinite(v) for v in (x1, y1, x2, y2)) and x1 < x2 and y1 < y2
    # After clipping, a positive-size box necessarily overlaps the image.
    new = dataclasses.replace(state, box=fb.clone() if valid else state.box, score=float(confidence))
    return new, fb


def boxes_as_list(box: Any, n: int, name: str = "init_box") -> List[Any]:
    """Split ``(4,)`` / ``(n, 4)`` box input into ``n`` per-stream boxes."""
    arr = box.detach().cpu().numpy() if isinstance(box, torch.Tensor) else np.asarray(box, dtype=object)
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2), got {box!r}") from None
    if arr.shape == (4,):
        arr = np.broadcast_to(arr, (n, 4))
    if arr.shape != (n, 4):
        raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2) per video, shape (4,) or ({n}, 4); "
                         f"got shape {arr.shape}")
    return [arr[i] for i in range(n)]
