"""Losses of the box-tracker recipes: quality focal loss, GIoU + L1, token assignment and denoising queries.

Boxes are normalised to the search crop. Functions taking ``xyxy`` say so; DETRack's raw outputs are
``(cx, cy, w, h)`` and go through :func:`trackers.geometry.cxcywh_to_xyxy` first.

* :func:`quality_focal_loss` -- QFL (Li et al., "Generalized Focal Loss", 2020), DETRack's classification loss
  (paper Eq. 2): ``-|y - sigma|^beta * ((1 - y) log(1 - sigma) + y log(sigma))`` with ``sigma = sigmoid(logit)``
  and a soft target ``y`` in ``[0, 1]`` (the IoU of the predicted box with the ground truth for positives, 0 for
  negatives), ``beta = 2``.
* :func:`giou_loss` (``1 - GIoU``) and :func:`l1_box_loss` (mean absolute coordinate error of ``xyxy`` boxes):
  DETRack's localisation loss is ``2 * GIoU + 5 * L1`` (paper Eq. 3, the weights of OSTrack), LoRAT's is GIoU alone.
* :func:`cells_in_box` -- which cells of the search token grid lie inside the ground-truth box: cell ``(i, j)``
  when ``round(y1 * H) <= i < round(y2 * H)`` and ``round(x1 * W) <= j < round(x2 * W)``; the cell holding the box
  centre always counts, so a box smaller than a cell still has one positive.
* :func:`make_denoising_queries` -- DETRack's denoising groups (paper section 3.5): per group one positive query
  (content = the encoder token at the ground-truth centre, reference box = the ground truth with a small noise) and
  one negative (content = the token at one of the box's corners, a hard negative; reference box = a more strongly
  noised ground truth), plus the self-attention mask that keeps matching queries from seeing any denoising query and
  the groups from seeing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from trackers.geometry import box_giou, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = [
    "quality_focal_loss",
    "giou_loss",
    "l1_box_loss",
    "cells_in_box",
    "centre_cell",
    "corner_cells",
    "DenoisingBatch",
    "make_denoising_queries",
    "matching_losses",
    "denoising_losses",
    "iou_aware_bce_losses",
]


def quality_focal_loss(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Element-wise quality focal loss of ``logits`` against soft ``targets`` in ``[0, 1]`` (same shape).

    ``|y - sigmoid(x)|^beta * BCE(x, y)``; the BCE is computed from logits (numerically stable) and the modulating
    factor carries gradient too, as in the original definition. Returns the unreduced loss.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"quality_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if beta < 0:
        raise ValueError(f"quality_focal_loss: beta must be >= 0, got {beta}")
    logits = logits.float()
    targets = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (targets - logits.sigmoid()).abs().pow(beta) * bce


def giou_loss(pred_xyxy: Tensor, gt_xyxy: Tensor) -> Tensor:
    """``1 - GIoU`` per box (``(..., 4)`` broadcastable ``xyxy``), in ``[0, 2]``."""
    return 1.0 - box_giou(pred_xyxy.float(), gt_xyxy.float())


def l1_box_loss(pred_xyxy: Tensor, gt_xyxy: Tensor) -> Tensor:
    """Mean absolute error over the four ``xyxy`` coordinates, per box."""
    return (pred_xyxy.float() - gt_xyxy.float()).abs().mean(-1)


def centre_cell(box_xyxy: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Row-major index of the grid cell holding each box centre, ``(...,)`` int64 (clamped into the grid)."""
    h, w = grid
    c = xyxy_to_cxcywh(box_xyxy.float())
    col = (c[..., 0] * w).floor().long().clamp(0, w - 1)
    row = (c[..., 1] * h).floor().long().clamp(0, h - 1)
    return row * w + col


def corner_cells(box_xyxy: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Row-major cells of the four corners of each box (inside the box: the last cell the box covers on the
    right / bottom), ``(..., 4)`` int64 in the order top-left, top-right, bottom-left, bottom-right."""
    h, w = grid
    b = box_xyxy.float()
    c0 = (b[..., 0] * w).floor().long().clamp(0, w - 1)
    c1 = ((b[..., 2] * w).ceil().long() - 1).clamp(0, w - 1)
    r0 = (b[..., 1] * h).floor().long().clamp(0, h - 1)
    r1 = ((b[..., 3] * h).ceil().long() - 1).clamp(0, h - 1)
    c1 = torch.maximum(c0, c1)
    r1 = torch.maximum(r0, r1)
    return torch.stack([r0 * w + c0, r0 * w + c1, r1 * w + c0, r1 * w + c1], dim=-1)


def cells_in_box(cells: Tensor, box_xyxy: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Which grid ``cells`` (``(B, N)`` row-major indices) lie inside each ``(B, 4)`` box; ``(B, N)`` bool.

    A cell ``(i, j)`` is inside when ``round(y1 H) <= i < round(y2 H)`` and ``round(x1 W) <= j < round(x2 W)``; the
    cell of the box centre is always inside (small boxes keep one positive).
    """
    h, w = grid
    b = box_xyxy.float()
    row, col = cells // w, cells % w
    x1 = (b[:, 0:1] * w).round()
    x2 = (b[:, 2:3] * w).round()
    y1 = (b[:, 1:2] * h).round()
    y2 = (b[:, 3:4] * h).round()
    inside = (col >= x1) & (col < x2) & (row >= y1) & (row < y2)
    return inside | (cells == centre_cell(b, grid)[:, None])


@dataclass
class DenoisingBatch:
    """Denoising queries for a batch (``G`` groups of ``[positive, negative]``).

    Attributes:
        boxes: ``(B, 2G, 4)`` noised reference boxes ``(cx, cy, w, h)``.
        token_index: ``(B, 2G)`` grid cells whose encoder token is each query's content.
        positive: ``(2G,)`` bool, True for the positive query of each group (even positions).
        attn_mask: ``(2G + K, 2G + K)`` bool decoder self-attention mask (True = blocked), denoising first.
    """

    boxes: Tensor
    token_index: Tensor
    positive: Tensor
    attn_mask: Tensor


def _noised(gt_cxcywh: Tensor, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    """Box noise of DN-DETR: the centre moves by ``u * (w, h) / 2`` and the size is scaled by ``1 + u'``, with
    ``|u|``, ``|u'|`` drawn uniformly from ``[lo, hi)`` and random signs (``(G, 4)`` boxes for one sample)."""
    g = gt_cxcywh.shape[0]
    mag = lo + (hi - lo) * torch.rand(g, 4, generator=generator)
    sign = torch.randint(0, 2, (g, 4), generator=generator).float() * 2.0 - 1.0
    u = mag * sign
    c = gt_cxcywh[:, :2] + u[:, :2] * gt_cxcywh[:, 2:] / 2.0
    s = gt_cxcywh[:, 2:] * (1.0 + u[:, 2:]).clamp(min=0.05)
    box = cxcywh_to_xyxy(torch.cat([c, s], dim=-1)).clamp(0.0, 1.0)
    # keep a minimal size after clipping to the crop so every reference box stays a box
    box = torch.cat([box[:, :2], torch.maximum(box[:, 2:], box[:, :2] + 1e-3)], dim=-1)
    return xyxy_to_cxcywh(box)


def make_denoising_queries(gt_xyxy: Tensor, num_groups: int, num_queries: int, generators: list,
                           grid: Tuple[int, int], positive_noise: float = 0.4,
                           negative_noise: Tuple[float, float] = (0.4, 1.0)) -> DenoisingBatch:
    """Denoising groups for a batch of ground-truth boxes ``gt_xyxy (B, 4)`` (normalised ``xyxy``).

    Per group: a positive query (content: the token at the box centre; box: noise magnitude in
    ``[0, positive_noise)``, so its centre stays inside the ground truth for ``positive_noise < 1``) then a negative
    query (content: the token at a random corner of the box; box: magnitude in ``negative_noise``, larger than the
    positives'). ``generators`` holds one ``torch.Generator`` per sample (per-sample randomness keeps the queries
    independent of how a batch is split over processes). ``num_queries`` is the number of matching queries the
    decoder will run (the size of the mask's matching part).
    """
    from trackers.models.detrack import denoising_attn_mask

    if num_groups < 1:
        raise ValueError(f"make_denoising_queries: num_groups must be >= 1, got {num_groups}")
    b = gt_xyxy.shape[0]
    if len(generators) != b:
        raise ValueError(f"make_denoising_queries: {len(generators)} generators for a batch of {b}")
    gt = gt_xyxy.detach().float().cpu()
    gt_c = xyxy_to_cxcywh(gt)
    centre = centre_cell(gt, grid)
    corners = corner_cells(gt, grid)
    boxes, index = [], []
    for i in range(b):
        gen = generators[i]
        rep = gt_c[i:i + 1].expand(num_groups, 4)
        pos = _noised(rep, 0.0, positive_noise, gen)
        neg = _noised(rep, negative_noise[0], negative_noise[1], gen)
        pick = torch.randint(0, 4, (num_groups,), generator=gen)
        boxes.append(torch.stack([pos, neg], dim=1).reshape(2 * num_groups, 4))
        index.append(torch.stack([centre[i].expand(num_groups), corners[i][pick]], dim=1).reshape(-1))
    device = gt_xyxy.device
    positive = (torch.arange(2 * num_groups) % 2 == 0).to(device)
    mask = denoising_attn_mask(num_groups, 2, num_queries, device=device)
    return DenoisingBatch(boxes=torch.stack(boxes).to(device), token_index=torch.stack(index).to(device),
                          positive=positive, attn_mask=mask)


def matching_losses(boxes_cxcywh: Tensor, logits: Tensor, cells: Tensor, gt_xyxy: Tensor, present: Tensor,
                    grid: Tuple[int, int], top_k: int = 4, beta: float = 2.0, giou_weight: float = 2.0,
                    l1_weight: float = 5.0) -> Tuple[Tensor, Tensor, Tensor]:
    """DETRack's loss of one prediction stage (query selection or one decoder layer) per sample.

    Args:
        boxes_cxcywh: ``(B, N, 4)`` predicted boxes of the stage's tokens / queries.
        logits: ``(B, N)`` their score logits.
        cells: ``(B, N)`` grid cell of each token / query's source token.
        gt_xyxy: ``(B, 4)`` ground truth.
        present: ``(B,)`` bool: the target is in the search crop (False: every target is 0, no box loss).
        top_k: the box loss is taken on the ``top_k`` highest-scored predictions only (paper section 3.4).

    Returns ``(cls, loc, positives)``, each ``(B,)``: the QFL summed over all predictions divided by the number of
    positives (at least 1), the mean ``giou_weight * (1 - GIoU) + l1_weight * L1`` of the top-k boxes (0 for absent
    targets), and the number of positives.
    """
    pred = cxcywh_to_xyxy(boxes_cxcywh.float())
    gt = gt_xyxy.float()
    pos = cells_in_box(cells, gt, grid) & present[:, None]
    iou = box_iou(pred.detach(), gt[:, None, :])
    target = torch.where(pos, iou, torch.zeros_like(iou))
    npos = pos.sum(1)
    cls = quality_focal_loss(logits, target, beta).sum(1) / npos.clamp(min=1).float()
    k = min(top_k, logits.shape[1])
    top = logits.detach().topk(k, dim=1).indices
    chosen = pred.gather(1, top[..., None].expand(-1, -1, 4))
    per_box = giou_weight * giou_loss(chosen, gt[:, None, :]) + l1_weight * l1_box_loss(chosen, gt[:, None, :])
    loc = per_box.mean(1) * present.float()
    return cls, loc, npos.float()


def denoising_losses(boxes_cxcywh: Tensor, logits: Tensor, positive: Tensor, gt_xyxy: Tensor, present: Tensor,
                     beta: float = 2.0, giou_weight: float = 2.0, l1_weight: float = 5.0
                     ) -> Tuple[Tensor, Tensor]:
    """Loss of the denoising queries of one decoder layer per sample: ``(cls, loc)``, each ``(B,)``.

    Positive queries get the soft target ``IoU(refined box, ground truth)``, negatives 0 (QFL summed over the
    queries, divided by the number of groups); the box loss is averaged over the positives. Absent targets give
    no denoising loss (there is no box to noise).
    """
    pred = cxcywh_to_xyxy(boxes_cxcywh.float())
    gt = gt_xyxy.float()[:, None, :]
    iou = box_iou(pred.detach(), gt)
    target = torch.where(positive[None, :], iou, torch.zeros_like(iou))
    groups = max(int(positive.sum()), 1)
    w = present.float()
    cls = quality_focal_loss(logits, target, beta).sum(1) / groups * w
    p = pred[:, positive]
    per_box = giou_weight * giou_loss(p, gt) + l1_weight * l1_box_loss(p, gt)
    return cls, per_box.mean(1) * w


def iou_aware_bce_losses(score_map: Tensor, boxes_xyxy: Tensor, gt_xyxy: Tensor, present: Tensor,
                         cls_weight: float = 1.0, giou_weight: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
    """LoRAT's loss per sample on a dense head: ``(cls, reg, positives)``, each ``(B,)``.

    Positive cells are those covered by the ground-truth box on the ``H x W`` grid (:func:`cells_in_box`). The
    classification is BCE-with-logits over every cell against the IoU of the cell's (detached) box with the ground
    truth at positives and 0 elsewhere; the regression is ``1 - GIoU`` on the positives. Both are summed and divided
    by the number of positives (at least 1), per sample.
    """
    b, h, w = score_map.shape
    cells = torch.arange(h * w, device=score_map.device).expand(b, -1)
    gt = gt_xyxy.float()
    pos = cells_in_box(cells, gt, (h, w)) & present[:, None]
    pred = boxes_xyxy.float().reshape(b, h * w, 4)
    iou = box_iou(pred.detach(), gt[:, None, :])
    target = torch.where(pos, iou, torch.zeros_like(iou))
    npos = pos.sum(1).clamp(min=1).float()
    cls = F.binary_cross_entropy_with_logits(score_map.float().reshape(b, -1), target, reduction="none").sum(1) / npos
    reg = (giou_loss(pred, gt[:, None, :]) * pos.float()).sum(1) / npos
    return cls_weight * cls, giou_weight * reg, pos.sum(1).float()

