"""Recipe ``point``: supervised CoTracker3 training on synthetic clips (Karaev et al. 2024, section 3.3, appendix A).

What the paper specifies and this recipe does:

* **losses** (:mod:`trackers.train.losses.point`): Huber (threshold 6 px) on the tracks of every refinement
  update, discounted by ``0.8^(I-i-1)``, occluded points weighted 1/5; confidence BCE against "within 12 px of the
  ground truth" (detached); visibility BCE. Each update starts from detached estimates (the network does this).
* **online model** (``cotracker3-online`` architecture): the clip is processed in sliding windows of ``S`` frames
  moving by ``S/2``, exactly as at inference; the losses are computed per window and averaged over the windows,
  counting a track only from its query frame on (the online model tracks forward in time only).
* **offline model**: every frame is supervised (it tracks both ways); each batch is trimmed at random to between
  ``T/2`` and ``T`` frames (one length per step, a random start per clip), so the model sees many lengths; its
  time embedding (length ``window_len``) is linearly resampled to the clip length, as at inference. A track whose
  query frame falls outside the trim is re-queried at its first visible frame inside it; tracks never visible in the
  trim are not supervised.
* **optimiser**: AdamW, lr 5e-4, weight decay 1e-5, betas (0.9, 0.999), linear warm-up for 1000 steps then cosine,
  gradient-norm clipping, batch of 1 clip per process; bfloat16 autocast on GPUs.

What differs from the paper, for a CPU: clips of 24 frames with 256 points (paper: Kubric, 64 frames / 384 points
online, 30-60 frames / 512 points offline), generated procedurally (:mod:`trackers.train.data.synthetic`), and 4
refinement updates in training (the network's own default; the predictors run 6).

Model size: ``model_name`` picks a registry architecture; ``preset`` (``small``, ``tiny``), the ``model`` mapping
(any :class:`~trackers.models.cotracker3.CoTrackerConfig` field) and the ``width``/``depth``/``resolution``
shortcuts change it, in that order. Frames are generated at the model resolution. Example (a small model that learns
on a CPU)::

    trackers-train point --preset small --max-steps 2000 --warmup-steps 100 --output-dir runs/small
    # or: --model hidden_size=128,depth=2 --resolution 128 128
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from trackers.train.config import TrainConfig
from trackers.train.engine import Recipe, StepContext
from trackers.train.losses.point import PointLossConfig, point_losses

__all__ = ["PointConfig", "PointRecipe", "MODEL_PRESETS", "make_synthetic_datasets"]

#: Reduced CoTracker3 architectures (CoTrackerConfig fields). ``small`` has 4.8 M parameters and trains at about
#: 0.24 steps/s on one (shared) CPU thread (16 frames, 64 queries, 4 updates); ``tiny`` is for tests (about 2 M, most of
#: them in the CNN, whose internal widths are fixed).
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    "small": dict(model_resolution=(128, 128), latent_dim=64, hidden_size=128, num_heads=4, depth=2,
                  num_virtual_tracks=16, corr_levels=3),
    "tiny": dict(model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, depth=1,
                 num_virtual_tracks=4, corr_levels=2, corr_hidden=64, corr_out=32),
    # the model meant to ship inside the package (with ``--model-name cotracker3-online``: a 16-frame streaming
    # window): 1.23 M parameters, 4.94 MB as fp32 safetensors, a third of them in the narrowed CNN
    "shipped-small": dict(model_resolution=(128, 128), latent_dim=48, hidden_size=96, num_heads=4, depth=2,
                          mlp_ratio=2.0, num_virtual_tracks=16, corr_levels=3, corr_hidden=64, corr_out=32,
                          encoder_widths=(32, 32, 48, 64)),
}


@dataclass
class PointConfig(TrainConfig):
    """Settings of the ``point`` recipe (CoTracker3 supervised training); defaults from the paper.

    Attributes:
        output_dir: run folder.
        max_steps: optimiser steps.
        warmup_steps: linear warm-up steps before the cosine decay.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        model_name: registry architecture to start from (``cotracker3-offline`` or ``cotracker3-online``).
        init: weights to start from (registry name with weights, ``hf-hub:`` repo or a saved folder); none
            trains from scratch.
        preset: a reduced architecture (``small`` or ``tiny``) applied over ``model_name``.
        model: CoTrackerConfig fields to override, e.g. ``{hidden_size: 128, depth: 2}``.
        width: transformer width (``hidden_size``); number of heads must divide it.
        depth: transformer depth.
        resolution: model resolution ``H W`` (frames are generated at this size).
        iters: refinement updates per window in training.
        train_clips: synthetic training clips (clip ``i`` is generated from seed ``data_seed + i``).
        val_clips: synthetic validation clips (their own seeds; 0 disables validation).
        clip_frames: frames per clip.
        num_points: tracks per clip.
        data_seed: first seed of the synthetic clips.
        synthetic: extra SyntheticConfig fields for the generator.
        random_trim: offline model: trim each batch to a random length in ``[T/2, T]``.
        huber_delta: Huber threshold of the track loss, pixels.
        gamma: discount per refinement update.
        occluded_weight: weight of occluded points in the track loss.
        conf_threshold: distance in pixels under which a prediction counts as confident.
        conf_weight: weight of the confidence loss.
        vis_weight: weight of the visibility loss.
    """

    output_dir: str = "runs/point"
    max_steps: int = 50000
    warmup_steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 1e-5
    model_name: str = "cotracker3-offline"
    init: Optional[str] = None
    preset: Optional[str] = None
    model: Dict[str, Any] = field(default_factory=dict)
    width: Optional[int] = None
    depth: Optional[int] = None
    resolution: Optional[Tuple[int, int]] = None
    iters: int = 4
    train_clips: int = 100000
    val_clips: int = 8
    clip_frames: int = 24
    num_points: int = 256
    data_seed: int = 0
    synthetic: Dict[str, Any] = field(default_factory=dict)
    random_trim: bool = True
    huber_delta: float = 6.0
    gamma: float = 0.8
    occluded_weight: float = 0.2
    conf_threshold: float = 12.0
    conf_weight: float = 1.0
    vis_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None and self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
        if self.resolution is not None:
            self.resolution = tuple(int(v) for v in self.resolution)
        for name in ("iters", "train_clips", "clip_frames", "num_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_clips < 0:
            raise ValueError(f"val_clips must be >= 0, got {self.val_clips}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    def model_overrides(self) -> Dict[str, Any]:
        """CoTrackerConfig fields to replace: preset, then ``model``, then the shortcuts."""
        out: Dict[str, Any] = dict(MODEL_PRESETS[self.preset]) if self.preset else {}
        out.update(self.model)
        if self.width is not None:
            out["hidden_size"] = self.width
        if self.depth is not None:
            out["depth"] = self.depth
        if self.resolution is not None:
            out["model_resolution"] = tuple(self.resolution)
        if "model_resolution" in out:
            out["model_resolution"] = tuple(int(v) for v in out["model_resolution"])
        return out

    def loss_config(self) -> PointLossConfig:
        return PointLossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PointLossConfig)})


def make_synthetic_datasets(cfg: PointConfig, height: int, width: int) -> Tuple[Any, Optional[Any]]:
    """Training and validation sets of procedurally generated clips at ``height x width``.

    Items are dicts: ``video`` (T, 3, H, W) float in [0, 255], ``tracks`` (T, N, 2) pixels ``(x, y)``, ``visible``
    (T, N) bool, ``queries`` (N, 3) rows ``(t, x, y)``. The validation clips use seeds far from the training ones.
    """
    from trackers.train.data.synthetic import SyntheticConfig, SyntheticPointDataset

    syn = dict(num_frames=cfg.clip_frames, height=height, width=width, num_points=cfg.num_points)
    syn.update(cfg.synthetic)
    config = SyntheticConfig(**syn)
    train = SyntheticPointDataset(cfg.train_clips, config, seed=cfg.data_seed)
    val = SyntheticPointDataset(cfg.val_clips, config, seed=cfg.data_seed + 1_000_000_007) if cfg.val_clips else None
    return train, val


def _requery(tracks: Tensor, visible: Tensor, queries: Tensor, start: int, length: int
             ) -> Tuple[Tensor, Tensor]:
    """Queries of one clip trimmed to frames ``[start, start+length)`` and which tracks can be supervised.

    A query inside the trim keeps its position; one outside moves to the track's first visible frame in the trim;
    a track never visible in the trim is marked invalid (its query is a placeholder at the trim's first frame).
    """
    N = queries.shape[0]
    vis = visible[start:start + length]  # (L, N)
    tq = queries[:, 0].round().long()
    inside = (tq >= start) & (tq < start + length)
    seen = vis.any(0)
    first = torch.where(seen, vis.float().argmax(0), torch.zeros_like(tq))
    frame = torch.where(inside, tq - start, first)
    xy = tracks[start + frame, torch.arange(N)]
    xy = torch.where(inside[:, None], queries[:, 1:], xy)
    valid = inside | seen
    return torch.cat([frame[:, None].to(xy.dtype), xy], dim=1), valid


class PointRecipe(Recipe):
    """CoTracker3 supervised training; see the module docstring."""

    name = "point"
    description = "CoTracker3 supervised training on synthetic clips (paper section 3.3)"
    config_class = PointConfig

    def __init__(self, config: PointConfig):
        super().__init__(config)
        self._model_config = None

    # ---------------------------------------------------------------------------------------------- building
    def build_tracker(self) -> Any:
        from trackers import PointTracker

        cfg: PointConfig = self.config
        overrides = cfg.model_overrides()
        if cfg.init:
            tracker = PointTracker.from_pretrained(cfg.init, config_overrides=overrides or None)
        else:
            tracker = PointTracker.from_config(cfg.model_name, **overrides)
        self._model_config = tracker.model.config
        return tracker

    def build_datasets(self) -> Tuple[Any, Optional[Any]]:
        if self._model_config is None:
            raise RuntimeError("build_tracker() must run before build_datasets() (frames use the model resolution)")
        H, W = self._model_config.model_resolution
        return make_synthetic_datasets(self.config, H, W)

    def collate(self, items):
        keys = ("video", "tracks", "visible", "queries")
        out = {}
        for k in keys:
            vals = [torch.as_tensor(np.asarray(it[k])) if not isinstance(it[k], Tensor) else it[k] for it in items]
            out[k] = torch.stack(vals)
        out["video"] = out["video"].float()
        out["tracks"] = out["tracks"].float()
        out["visible"] = out["visible"].bool()
        out["queries"] = out["queries"].float()
        return out

    # ---------------------------------------------------------------------------------------------- loss
    def _trim(self, batch: Dict[str, Tensor], ctx: StepContext) -> Tuple[Dict[str, Tensor], Tensor]:
        """Random trim of the batch (one length per step, one start per clip) with re-chosen queries."""
        video, tracks, visible, queries = batch["video"], batch["tracks"], batch["visible"], batch["queries"]
        B, T = video.shape[:2]
        lo = max(2, math.ceil(T / 2))
        if not self.config.random_trim or T <= lo:
            return batch, torch.ones(B, queries.shape[1], dtype=torch.bool, device=video.device)
        length = int(torch.randint(lo, T + 1, (1,), generator=ctx.generator()))
        parts: Dict[str, List[Tensor]] = {"video": [], "tracks": [], "visible": [], "queries": []}
        valid = []
        for b in range(B):
            start = int(torch.randint(0, T - length + 1, (1,), generator=ctx.generator(int(ctx.indices[b]))))
            q, ok = _requery(tracks[b], visible[b], queries[b], start, length)
            parts["video"].append(video[b, start:start + length])
            parts["tracks"].append(tracks[b, start:start + length])
            parts["visible"].append(visible[b, start:start + length])
            parts["queries"].append(q)
            valid.append(ok)
        return {k: torch.stack(v) for k, v in parts.items()}, torch.stack(valid)

    def _predict(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tuple[List[Tuple[Tensor, Tensor, Tensor]],
                                                                            Tuple[Tensor, Tensor, Tensor]]:
        preds: List[Tuple[Tensor, Tensor, Tensor]] = []

        def keep(i: int, coords: Tensor, vis: Tensor, conf: Tensor) -> None:
            preds.append((coords, vis, conf))

        out = model(batch["video"], batch["queries"], self.config.iters, on_iteration=keep)
        return preds, out

    def _losses(self, preds, batch: Dict[str, Tensor], valid: Tensor) -> Dict[str, Tensor]:
        """Per-clip losses ``(B,)`` from the per-update predictions of :meth:`_predict`."""
        mc = self._model_config
        cfg: PointConfig = self.config
        lc = cfg.loss_config()
        tracks, visible, queries = batch["tracks"], batch["visible"], batch["queries"]
        B, T, N = visible.shape
        I = cfg.iters
        if not mc.online:
            mask = valid[:, None, :].expand(B, T, N)
            return point_losses([c * mc.stride for c, _, _ in preds], [v for _, v, _ in preds],
                                [k for _, _, k in preds], tracks, visible, mask, lc)
        # online: iters predictions per window, windows in order, window w starting at frame w * S/2
        S = mc.window_len
        step = S // 2
        n_windows = len(preds) // I
        tq = queries[..., 0].round().long()
        sums: Dict[str, Tensor] = {}
        counted = torch.zeros(B, device=tracks.device)
        for w in range(n_windows):
            ind = w * step
            n = min(T - ind, S)
            frames = torch.arange(ind, ind + n, device=tracks.device)
            # supervise a track from its query frame on (online tracking runs forward only)
            mask = valid[:, None, :] & (frames[None, :, None] >= tq[:, None, :])
            if not bool(mask.any()):
                continue
            chunk = preds[w * I:(w + 1) * I]
            part = point_losses([c[:, :n] * mc.stride for c, _, _ in chunk], [v[:, :n] for _, v, _ in chunk],
                                [k[:, :n] for _, _, k in chunk], tracks[:, ind:ind + n], visible[:, ind:ind + n],
                                mask, lc)
            has = mask.flatten(1).any(1).float()
            counted = counted + has
            for k, v in part.items():
                sums[k] = sums.get(k, 0.0) + v * has
        return {k: v / counted.clamp(min=1) for k, v in sums.items()}

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Tuple[Tensor, Dict[str, float]]:
        if self._model_config.online:
            valid = torch.ones(batch["queries"].shape[:2], dtype=torch.bool, device=batch["queries"].device)
        else:
            batch, valid = self._trim(batch, ctx)
        preds, _ = self._predict(model, batch)
        losses = self._losses(preds, batch, valid)
        total = losses["total"].mean()
        return total, {f"loss_{k}": float(v.detach().mean()) for k, v in losses.items() if k != "total"}

    # ---------------------------------------------------------------------------------------------- validation
    def validate(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Dict[str, float]:
        """Losses on whole clips plus TAP-Vid metrics (256x256 raster; AJ, delta_avg, occlusion accuracy).

        The visibility decision is the predictors': ``sigmoid(vis) > 0.9`` offline, ``vis * conf > 0.6`` online;
        online tracks are scored after their query frame only (TAP-Vid "first" mode), offline on every frame but the
        query frame ("strided" mode).
        """
        from trackers.train.eval.metrics import compute_tapvid_metrics

        mc = self._model_config
        valid = torch.ones(batch["queries"].shape[:2], dtype=torch.bool, device=batch["queries"].device)
        preds, (tracks, vis, conf) = self._predict(model, batch)
        losses = self._losses(preds, batch, valid)
        out = {"loss": float(losses["total"].mean()), **{f"loss_{k}": float(v.mean()) for k, v in losses.items()
                                                        if k != "total"}}
        H, W = batch["video"].shape[-2:]
        scale = np.array([256.0 / W, 256.0 / H])
        pred_vis = (vis * conf > 0.6) if mc.online else (vis > 0.9)
        q = batch["queries"].cpu().numpy()
        metrics = compute_tapvid_metrics(
            query_points=q[..., [0, 2, 1]],
            gt_occluded=~batch["visible"].cpu().numpy().transpose(0, 2, 1),
            gt_tracks=batch["tracks"].cpu().numpy().transpose(0, 2, 1, 3) * scale,
            pred_occluded=~pred_vis.cpu().numpy().transpose(0, 2, 1),
            pred_tracks=tracks.float().cpu().numpy().transpose(0, 2, 1, 3) * scale,
            query_mode="first" if mc.online else "strided",
        )
        for name in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"):
            vals = np.asarray(metrics[name], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                out[name] = float(vals.mean())
        return out
