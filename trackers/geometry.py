"""Box and point geometry, written once: formats, clipping, IoU / GIoU and pixel-centre rescaling.

Conventions (see :mod:`trackers.video`): boxes are ``(x1, y1, x2, y2)`` in continuous pixels where pixel ``i``
covers ``[i, i + 1)``; points have pixel centres at integer coordinates. Every function works on numpy arrays and
torch tensors alike (the result has the input's type) and on any leading batch shape ``(..., 4)`` / ``(..., 2)``.

Rescaling between two image sizes differs for the two kinds of coordinates:

* points (centres at integers): ``x' = (x + 0.5) * W'/W - 0.5``;
* boxes (edges at integers): ``x' = x * W'/W``.
"""
from __future__ import annotations

from typing import Tuple, TypeVar

import numpy as np
import torch
from trackers.errors import InputError

__all__ = [
    "xyxy_to_xywh", "xywh_to_xyxy", "xyxy_to_cxcywh", "cxcywh_to_xyxy", "clip_boxes", "box_area", "box_iou",
    "box_giou", "rescale_points", "rescale_boxes",
]

A = TypeVar("A", torch.Tensor, np.ndarray)
Size = Tuple[int, int]


def _cat(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def _split(b):
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def xyxy_to_xywh(b: A) -> A:
    """``(x1, y1, x2, y2)`` -> ``(x, y, w, h)`` (top-left corner and size: the GOT-10k / LaSOT text format)."""
    x1, y1, x2, y2 = _split(b)
    return _cat([x1, y1, x2 - x1, y2 - y1], b)


def xywh_to_xyxy(b: A) -> A:
    """``(x, y, w, h)`` -> ``(x1, y1, x2, y2)``."""
    x, y, w, h = _split(b)
    return _cat([x, y, x + w, y + h], b)


def xyxy_to_cxcywh(b: A) -> A:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)`` (centre and size, the DETR box format)."""
    x1, y1, x2, y2 = _split(b)
    return _cat([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], b)


def cxcywh_to_xyxy(b: A) -> A:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = _split(b)
    return _cat([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], b)


def clip_boxes(b: A, image_size: Size) -> A:
    """Clip xyxy boxes to an image of size ``(H, W)``."""
    h, w = image_size
    x1, y1, x2, y2 = _split(b)
    if isinstance(b, torch.Tensor):
        return _cat([x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)], b)
    return _cat([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], b)


def _relu(x):
    return x.clamp(min=0) if isinstance(x, torch.Tensor) else np.maximum(x, 0)


def _max(a, b):
    return torch.maximum(a, b) if isinstance(a, torch.Tensor) else np.maximum(a, b)


def _min(a, b):
    return torch.minimum(a, b) if isinstance(a, torch.Tensor) else np.minimum(a, b)


def box_area(b: A) -> A:
    """Area of xyxy boxes (0 for empty or inverted boxes)."""
    x1, y1, x2, y2 = _split(b)
    return _relu(x2 - x1) * _relu(y2 - y1)


def _inter_union(a, b):
    ax1, ay1, ax2, ay2 = _split(a)
    bx1, by1, bx2, by2 = _split(b)
    inter = _relu(_min(ax2, bx2) - _max(ax1, bx1)) * _relu(_min(ay2, by2) - _max(ay1, by1))
    union = box_area(a) + box_area(b) - inter
    return inter, union


def box_iou(a: A, b: A, eps: float = 0.0) -> A:
    """Element-wise IoU of two broadcastable sets of xyxy boxes; 0 where the union is empty."""
    inter, union = _inter_union(a, b)
    if isinstance(union, torch.Tensor):
        return torch.where(union > 0, inter / (union + eps).clamp(min=1e-12), torch.zeros_like(union))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union + eps, 1e-12), 0.0)


def box_giou(a: A, b: A) -> A:
    """Element-wise generalised IoU (Rezatofighi et al., 2019): ``IoU - (C - U) / C`` with ``C`` the enclosing
    box's area; in ``[-1, 1]``."""
    inter, union = _inter_union(a, b)
    ax1, ay1, ax2, ay2 = _split(a)
    bx1, by1, bx2, by2 = _split(b)
    hull = _relu(_max(ax2, bx2) - _min(ax1, bx1)) * _relu(_max(ay2, by2) - _min(ay1, by1))
    if isinstance(union, torch.Tensor):
        iou = inter / union.clamp(min=1e-12)
        return iou - (hull - union) / hull.clamp(min=1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / np.maximum(union, 1e-12)
        return iou - (hull - union) / np.maximum(hull, 1e-12)


def _scale(src: Size, dst: Size) -> Tuple[float, float]:
    (h, w), (h2, w2) = src, dst
    if min(h, w, h2, w2) <= 0:
        raise InputError(f"image sizes must be positive, got {src} -> {dst}")
    return w2 / w, h2 / h


def rescale_points(p: A, src: Size, dst: Size) -> A:
    """Map ``(..., 2)`` ``(x, y)`` points from an image of size ``src`` ``(H, W)`` to one of size ``dst``."""
    sx, sy = _scale(src, dst)
    return _cat([(p[..., 0] + 0.5) * sx - 0.5, (p[..., 1] + 0.5) * sy - 0.5], p)


def rescale_boxes(b: A, src: Size, dst: Size) -> A:
    """Map ``(..., 4)`` xyxy boxes from an image of size ``src`` ``(H, W)`` to one of size ``dst``."""
    sx, sy = _scale(src, dst)
    x1, y1, x2, y2 = _split(b)
    return _cat([x1 * sx, y1 * sy, x2 * sx, y2 * sy], b)
