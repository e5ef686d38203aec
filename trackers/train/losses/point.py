"""CoTracker3's training losses (Karaev et al. 2024, section 3.3), for the predictions of every refinement update.

With ``I`` updates, update ``i`` (0-based) is weighted ``gamma^(I-i-1)`` (``gamma = 0.8``), so the last update counts
most. For one clip and one update:

* **tracks**: Huber loss (threshold 6 px, applied per coordinate and averaged over x and y) between predicted and
  ground-truth positions; visible points weigh 1, occluded points 1/5; summed over the supervised (frame, track)
  pairs and divided by their number (so occluded points really count a fifth, whatever their share);
* **confidence**: binary cross-entropy of the confidence logit against "the prediction of this update lies within
  12 px of the ground truth" (computed on detached positions), on ground-truth-visible points only (confidence has
  no target where the point cannot be seen);
* **visibility**: binary cross-entropy of the visibility logit against ground-truth visibility, on every supervised
  pair.

Each loss is the weighted sum over updates divided by ``I`` (so its scale does not grow with the number of updates).
Every function returns one value per clip ``(B,)``; the recipe averages over the batch. Sigmoid + BCE is computed as
BCE-with-logits (the same function, numerically stable).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PointLossConfig", "huber", "track_loss", "confidence_loss", "visibility_loss", "point_losses"]


@dataclass
class PointLossConfig:
    """Loss settings (the paper's values as defaults).

    Attributes:
        huber_delta: Huber threshold in pixels.
        gamma: discount per update counted back from the last one.
        occluded_weight: weight of occluded points in the track loss.
        conf_threshold: a prediction within this many pixels of the ground truth is "confident".
        conf_weight: weight of the confidence loss in the total.
        vis_weight: weight of the visibility loss in the total.
    """

    huber_delta: float = 6.0
    gamma: float = 0.8
    occluded_weight: float = 0.2
    conf_threshold: float = 12.0
    conf_weight: float = 1.0
    vis_weight: float = 1.0


def huber(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    """Element-wise Huber loss: ``0.5 e^2`` for ``|e| < delta``, ``delta (|e| - 0.5 delta)`` beyond."""
    return F.huber_loss(pred, target, reduction="none", delta=delta)


def _discounts(n: int, gamma: float) -> list:
    return [gamma ** (n - i - 1) for i in range(n)]


def _masked_mean(x: Tensor, weight: Tensor, count: Tensor) -> Tensor:
    # per clip: sum over (frame, track) of weight * x, divided by the number of supervised pairs
    return (x * weight).flatten(1).sum(1) / count.flatten(1).sum(1).clamp(min=1)


def track_loss(coords: Sequence[Tensor], gt: Tensor, visible: Tensor, mask: Tensor,
               cfg: PointLossConfig = PointLossConfig()) -> Tensor:
    """Discounted Huber loss over updates, ``(B,)``.

    Args:
        coords: per update ``(B, T, N, 2)`` predicted positions in pixels.
        gt: ``(B, T, N, 2)`` ground-truth positions in the same pixels.
        visible: ``(B, T, N)`` bool ground-truth visibility.
        mask: ``(B, T, N)`` bool, the supervised (frame, track) pairs.
    """
    if not coords:
        raise ValueError("track_loss needs the predictions of at least one update")
    m = mask.float()
    w = m * torch.where(visible, 1.0, cfg.occluded_weight)
    total = gt.new_zeros(gt.shape[0])
    for g, c in zip(_discounts(len(coords), cfg.gamma), coords):
        total = total + g * _masked_mean(huber(c.float(), gt, cfg.huber_delta).mean(-1), w, m)
    return total / len(coords)


def confidence_loss(coords: Sequence[Tensor], conf_logits: Sequence[Tensor], gt: Tensor, visible: Tensor,
                    mask: Tensor, cfg: PointLossConfig = PointLossConfig()) -> Tensor:
    """Discounted BCE of the confidence logits against "within ``conf_threshold`` px", visible points, ``(B,)``."""
    m = (mask & visible).float()
    total = gt.new_zeros(gt.shape[0])
    for g, c, k in zip(_discounts(len(coords), cfg.gamma), coords, conf_logits):
        target = ((c.detach().float() - gt).square().sum(-1) < cfg.conf_threshold ** 2).float()
        bce = F.binary_cross_entropy_with_logits(k.float(), target, reduction="none")
        total = total + g * _masked_mean(bce, m, m)
    return total / len(coords)


def visibility_loss(vis_logits: Sequence[Tensor], visible: Tensor, mask: Tensor,
                    cfg: PointLossConfig = PointLossConfig()) -> Tensor:
    """Discounted BCE of the visibility logits against ground-truth visibility, ``(B,)``."""
    m = mask.float()
    total = visible.new_zeros(visible.shape[0], dtype=torch.float32)
    for g, v in zip(_discounts(len(vis_logits), cfg.gamma), vis_logits):
        bce = F.binary_cross_entropy_with_logits(v.float(), visible.float(), reduction="none")
        total = total + g * _masked_mean(bce, m, m)
    return total / len(vis_logits)


def point_losses(coords: Sequence[Tensor], vis_logits: Sequence[Tensor], conf_logits: Sequence[Tensor], gt: Tensor,
                 visible: Tensor, mask: Tensor, cfg: PointLossConfig = PointLossConfig()) -> Dict[str, Tensor]:
    """All three losses ``(B,)`` and their weighted sum under ``"total"``."""
    out = {
        "track": track_loss(coords, gt, visible, mask, cfg),
        "conf": confidence_loss(coords, conf_logits, gt, visible, mask, cfg),
        "vis": visibility_loss(vis_logits, visible, mask, cfg),
    }
    out["total"] = out["track"] + cfg.conf_weight * out["conf"] + cfg.vis_weight * out["vis"]
    return out
