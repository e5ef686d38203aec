"""Recipe ``box``: DETRack training (Wei, Zeng & Zeng, arXiv:2309.02676, sections 3.4-3.6 and 4.1).

What the paper specifies and this recipe does:

* **label assignment and losses** (:mod:`trackers.train.losses.box`): every token / query whose source token lies
  inside the ground-truth box is a positive with the soft target ``IoU(predicted box, ground truth)`` (detached);
  all others have target 0. Classification is the quality focal loss (beta 2) summed over the predictions and
  divided by the number of positives; localisation is ``2 * (1 - GIoU) + 5 * L1`` on the ``top_k`` (4) predictions
  with the highest score. Both are applied at query selection (every token the encoder kept) and after every
  decoder layer, weight 1 each (Eq. 4). Every normalisation is per sample and the batch loss is the mean over
  samples, so a batch split over processes (DDP averages gradients) gives exactly the gradient of the whole batch
  (the author's experimental code all-reduces the positive count instead).
* **denoising** (section 3.5): ``dn_groups`` groups per sample, each a positive query (content: the encoder token
  at the ground-truth centre; reference: the ground truth with centre shift and scale noise of magnitude below
  ``dn_positive_noise``) and a negative query (content: the token at a random corner of the box, a hard negative;
  reference: noise of magnitude in ``dn_negative_noise``, larger). The decoder's self-attention mask hides every
  denoising query from the matching queries and the groups from each other. Positives get the IoU soft target and
  the box loss, negatives target 0; the loss is added at every decoder layer.
* **candidate-elimination schedule** (OSTrack's ``adjust_keep_rate``): the keep ratio is 1.0 (no elimination) for
  the first ``ce_start`` fraction of the steps, then follows a cosine from 1.0 down to the network's
  ``ce_keep_ratio`` (0.7) over the next ``ce_ramp`` fraction, then stays there. It is passed as ``ce_keep_ratio=`` to
  the forward. The defaults are OSTrack's GOT-10k schedule (start after 20 %, ramp over 50 % of the epochs).
* **optimiser**: AdamW, weight decay 1e-4, learning rate 4e-5 for the encoder and 4e-4 for the decoder head,
  multiplied by 0.1 for the last 20 % of the steps (``lr_drop_at``, ``lr_drop_factor``); no warm-up; gradient-norm
  clipping at 0.1 (OSTrack). Batch 64 per process (the paper: 2 GPUs x 64).
* **initialisation**: the encoder from an OSTrack / MAE / CAE checkpoint (``--init-encoder PATH``; the conversion
  report is logged), random otherwise; the decoder is always random (paper section 4.1). ``--init FOLDER`` continues
  from a saved tracker instead.
* **data** (:mod:`trackers.train.data.sot_pairs`): template / search pairs within ``max_gap`` frames (OSTrack's 200),
  search jitter scale 0.25 and centre 3, template none; crops through the tracker's own crop code with the
  tracker's factors (2 and 4). Sources: GOT-10k / LaSOT folders (``--got10k``, ``--lasot``) and synthetic clips
  (``--synthetic-clips``). A search frame without the target is a negative sample (``absent="negative"``: all
  score targets 0, no box or denoising loss) or is re-drawn (``absent="skip"``). Photometric augmentation as
  OSTrack's: brightness factor in [0.8, 1.2] per crop, both crops grey with probability 0.05, both flipped
  horizontally with probability 0.5 (``--brightness-jitter``, ``--grayscale-prob``, ``--flip-prob``; 0 turns
  each off). Validation pairs are not augmented.

Checkpoints are ``tracker.save_pretrained`` folders: ``trackers.BoxTracker.from_pretrained(run_dir /
"checkpoint-N")`` loads one and tracks.

Model size: ``model_name`` (the registry architecture), then ``preset`` (``small``: a CPU-sized network, 128-wide
encoder of depth 4, patch 8, 64 px template / 128 px search; ``tiny``: tests), then the ``model`` mapping (any
:class:`~trackers.models.detrack.DETRackConfig` field). Example (CPU)::

    trackers-train box --preset small --batch-size 8 --max-steps 3000 --synthetic-clips 2000 --output-dir runs/box

Not implemented yet: COCO image pairs, the paper's 60-epoch multi-dataset sampling
weights (sources are drawn by sequence count).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from trackers.train.config import TrainConfig
from trackers.train.engine import Recipe, StepContext, lr_factor
from trackers.train.losses.box import (
    denoising_losses,
    make_denoising_queries,
    matching_losses,
)

__all__ = ["BoxConfig", "BoxRecipe", "PairDataConfig", "MODEL_PRESETS", "lr_with_drop", "ce_keep_ratio_at",
           "make_pair_datasets", "pair_collate"]

log = logging.getLogger("trackers.train")

#: Reduced DETRack architectures (DETRackConfig fields). ``small`` (1.7 M parameters) trains on a CPU;
#: ``tiny`` is for tests.
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    "small": dict(template_size=64, search_size=128, patch_size=8, embed_dim=128, depth=4, num_heads=4,
                  ce_locations=(1, 2), decoder_dim=128, dec_heads=4, dec_points=4, dec_ffn_dim=512,
                  num_queries=32, num_decoder_layers=3),
    "tiny": dict(template_size=32, search_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                 ce_locations=(1,), decoder_dim=32, dec_heads=2, dec_points=2, dec_ffn_dim=64, num_queries=16,
                 num_decoder_layers=2),
}


def ce_keep_ratio_at(step: int, max_steps: int, final: float, start: float, ramp: float) -> float:
    """Keep ratio of candidate elimination at ``step``: 1.0 before ``start * max_steps``, then a cosine from 1.0
    to ``final`` over ``ramp * max_steps`` steps, then ``final`` (OSTrack's keep-rate warm-up, per step)."""
    begin = start * max_steps
    length = ramp * max_steps
    if step < begin:
        return 1.0
    if length <= 0 or step >= begin + length:
        return float(final)
    progress = (step - begin) / length
    return float(final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def lr_with_drop(step: int, warmup: int, max_steps: int, min_ratio: float, drop_at: float,
                 drop_factor: float) -> float:
    """The engine's warm-up + cosine factor, times ``drop_factor`` from step ``ceil(drop_at * max_steps)`` on
    (DETRack trains at a constant rate, x0.1 for the last 20 %: ``min_ratio = 1``, ``drop_at = 0.8``)."""
    drop_step = math.ceil(drop_at * max_steps) if drop_at < 1.0 else max_steps + 1
    return lr_factor(step, warmup, max_steps, min_ratio) * (drop_factor if step >= drop_step else 1.0)


@dataclass
class PairDataConfig(TrainConfig):
    """Data settings shared by the box-tracker recipes (training pairs, :mod:`trackers.train.data.sot_pairs`).

    Attributes:
        got10k: GOT-10k split folder with training sequences.
        lasot: LaSOT folder with training sequences.
        sequences: optional per-source subsets, ``{got10k: FILE_OR_NAMES, lasot: ...}``.
        synthetic_clips: number of synthetic sequences (0: none).
        synthetic: SyntheticConfig fields of the synthetic sequences.
        synthetic_part_prob: share of synthetic sequences whose target is a part of an object (a rectangle of
            its surface) instead of the whole object; parts teach that the box is what the template shows, not
            the whole object around it.
        synthetic_twin_prob: share of synthetic sequences whose target gets a look-alike neighbour of the same
            stuff touching it (a head on a body of the same fur): the box must not grow over both.
        train_pairs: pairs per pass over the training set.
        val_pairs: validation pairs (drawn with their own seed; 0 disables validation).
        data_seed: seed of the pair sampling and of the synthetic clips.
        max_gap: largest frame distance of a pair.
        search_scale_jitter: search-crop scale jitter.
        search_centre_jitter: search-crop centre jitter.
        template_scale_jitter: template-crop scale jitter.
        template_centre_jitter: template-crop centre jitter.
        absent: ``negative`` or ``skip``: what a search frame without the target becomes.
        brightness_jitter / contrast_jitter / saturation_jitter: colour-jitter strength per crop (0 = off).
        grayscale_prob: probability of turning both crops grey.
        three_augment: DeiT III's one-of grayscale / solarize / blur on both crops.
        flip_prob: horizontal-flip probability; ``flip_each`` draws it per crop instead of once per pair.
            Validation pairs are never augmented.
    """

    got10k: Optional[str] = None
    lasot: Optional[str] = None
    sequences: Dict[str, Any] = field(default_factory=dict)
    synthetic_clips: int = 2000
    synthetic: Dict[str, Any] = field(default_factory=dict)
    synthetic_part_prob: float = 0.0
    synthetic_twin_prob: float = 0.0
    train_pairs: int = 60000
    val_pairs: int = 0
    data_seed: int = 0
    max_gap: int = 200
    search_scale_jitter: float = 0.25
    search_centre_jitter: float = 3.0
    template_scale_jitter: float = 0.0
    template_centre_jitter: float = 0.0
    absent: str = "negative"
    brightness_jitter: float = 0.0
    contrast_jitter: float = 0.0
    saturation_jitter: float = 0.0
    grayscale_prob: float = 0.0
    three_augment: bool = False
    flip_prob: float = 0.0
    flip_each: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_pairs < 1:
            raise ValueError(f"train_pairs must be >= 1, got {self.train_pairs}")
        for name in ("val_pairs", "synthetic_clips", "max_gap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("search_scale_jitter", "search_centre_jitter", "template_scale_jitter", "template_centre_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.absent not in ("negative", "skip"):
            raise ValueError(f"absent must be 'negative' or 'skip', got {self.absent!r}")
        for name in ("synthetic_part_prob", "synthetic_twin_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        from trackers.train.data.sot_pairs import AUGMENTATION_FIELDS, PairConfig

        PairConfig(**{name: getattr(self, name) for name in AUGMENTATION_FIELDS})  # its checks name the bad field
        if not (self.got10k or self.lasot or self.synthetic_clips):
            raise ValueError("no training data: give --got10k / --lasot folders or --synthetic-clips > 0")


@dataclass
class BoxConfig(PairDataConfig):
    """Settings of the ``box`` recipe (DETRack); defaults from the paper and OSTrack.

    Attributes:
        output_dir: run folder.
        max_steps: optimiser steps (the paper: 20 epochs of 60k pairs at batch 128).
        batch_size: pairs per process and micro-step.
        lr: learning rate of the decoder head.
        encoder_lr: learning rate of the ViT encoder.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps (the paper uses none).
        min_lr_ratio: 1.0 keeps the learning rate constant apart from the drop; lower adds the engine's cosine.
        lr_drop_at: fraction of the steps after which the learning rate is multiplied by ``lr_drop_factor``.
        lr_drop_factor: the step drop's factor.
        grad_clip: gradient-norm clipping.
        model_name: registry architecture to start from.
        preset: a reduced architecture (``small`` or ``tiny``) applied over ``model_name``.
        model: DETRackConfig fields to override.
        init: a saved BoxTracker folder to start from (instead of ``model_name``).
        init_encoder: OSTrack / MAE / CAE checkpoint file for the encoder.
        train_pairs: pairs per pass over the training set (the paper: 60k per epoch).
        max_gap: largest frame distance of a pair (OSTrack: 200).
        brightness_jitter / grayscale_prob / flip_prob: OSTrack's photometric augmentation (brightness factor in
            [0.8, 1.2] per crop, both crops grey with probability 0.05, both flipped with probability 0.5).
        qfl_beta: quality focal loss exponent.
        top_k: predictions per stage that get the box loss.
        giou_weight: weight of the GIoU loss.
        l1_weight: weight of the L1 loss.
        dn_groups: denoising groups per sample (0 disables denoising).
        dn_positive_noise: noise magnitude bound of positive denoising boxes.
        dn_negative_noise: noise magnitude range of negative denoising boxes.
        ce_start: fraction of the steps trained without candidate elimination.
        ce_ramp: fraction of the steps over which the keep ratio falls to the network's.
    """

    output_dir: str = "runs/box"
    max_steps: int = 9375
    batch_size: int = 64
    lr: float = 4e-4
    encoder_lr: float = 4e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    lr_drop_at: float = 0.8
    lr_drop_factor: float = 0.1
    grad_clip: float = 0.1
    model_name: str = "detrack-vitb-256"
    preset: Optional[str] = None
    model: Dict[str, Any] = field(default_factory=dict)
    init: Optional[str] = None
    init_encoder: Optional[str] = None
    train_pairs: int = 60000
    max_gap: int = 200
    brightness_jitter: float = 0.2
    grayscale_prob: float = 0.05
    flip_prob: float = 0.5
    qfl_beta: float = 2.0
    top_k: int = 4
    giou_weight: float = 2.0
    l1_weight: float = 5.0
    dn_groups: int = 10
    dn_positive_noise: float = 0.4
    dn_negative_noise: Tuple[float, float] = (0.4, 1.0)
    ce_start: float = 0.2
    ce_ramp: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None and self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
        self.dn_negative_noise = tuple(float(v) for v in self.dn_negative_noise)
        if self.encoder_lr <= 0:
            raise ValueError(f"encoder_lr must be > 0, got {self.encoder_lr}")
        for name in ("lr_drop_at", "ce_start", "ce_ramp"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.lr_drop_factor <= 1.0:
            raise ValueError(f"lr_drop_factor must be in (0, 1], got {self.lr_drop_factor}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.dn_groups < 0:
            raise ValueError(f"dn_groups must be >= 0, got {self.dn_groups}")
        lo, hi = self.dn_negative_noise
        if not 0.0 <= lo < hi:
            raise ValueError(f"dn_negative_noise must be (low, high) with 0 <= low < high, got {self.dn_negative_noise}")
        if not 0.0 < self.dn_positive_noise:
            raise ValueError(f"dn_positive_noise must be > 0, got {self.dn_positive_noise}")

    def model_overrides(self) -> Dict[str, Any]:
        """DETRackConfig fields to replace: the preset, then ``model``."""
        out: Dict[str, Any] = dict(MODEL_PRESETS[self.preset]) if self.preset else {}
        out.update(self.model)
        return out


def make_pair_datasets(cfg: Any, sizes: Any, settings: Any) -> Tuple[Any, Optional[Any]]:
    """Training and validation pair datasets of a box recipe config (shared by ``box`` and ``lora``).

    Crop factors and the minimum object size come from the tracker's settings, so training crops match tracking.
    """
    from trackers.train.data.sot_pairs import AUGMENTATION_FIELDS, PairConfig, SOTPairDataset, open_sources
    from trackers.train.data.synthetic import SyntheticConfig

    syn = SyntheticConfig(**cfg.synthetic) if cfg.synthetic_clips else None
    sources = open_sources(cfg.got10k, cfg.lasot, cfg.synthetic_clips, syn, cfg.data_seed, cfg.sequences,
                           cfg.synthetic_part_prob, cfg.synthetic_twin_prob)
    pairs = PairConfig(template_factor=settings.template_factor, search_factor=settings.search_factor,
                       max_gap=cfg.max_gap, template_scale_jitter=cfg.template_scale_jitter,
                       template_centre_jitter=cfg.template_centre_jitter,
                       search_scale_jitter=cfg.search_scale_jitter, search_centre_jitter=cfg.search_centre_jitter,
                       min_object_size=settings.min_object_size, absent=cfg.absent,
                       **{name: getattr(cfg, name) for name in AUGMENTATION_FIELDS})
    train = SOTPairDataset(sources, sizes, cfg.train_pairs, pairs, seed=cfg.data_seed)
    val = None
    if cfg.val_pairs:
        # validation pairs: their own seed, and synthetic clips of their own (benchmark folders are shared: pass
        # a separate split through ``sequences`` to hold sequences out)
        val_sources = open_sources(cfg.got10k, cfg.lasot, cfg.synthetic_clips, syn, cfg.data_seed + 1_000_000_007,
                                   cfg.sequences, cfg.synthetic_part_prob, cfg.synthetic_twin_prob)
        val = SOTPairDataset(val_sources, sizes, cfg.val_pairs, pairs.without_augmentation(),
                             seed=cfg.data_seed + 1_000_000_007)
    return train, val


def pair_collate(items: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Stack the fields of training pairs the box recipes use (indices and frame numbers are left out)."""
    keys = ("template", "search", "template_mask", "search_box", "present")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


class BoxRecipe(Recipe):
    """DETRack training; see the module docstring."""

    name = "box"
    description = "DETRack box tracker: QFL + GIoU/L1, denoising, CE warm-up (paper sections 3.4-3.6)"
    config_class = BoxConfig

    def __init__(self, config: BoxConfig):
        super().__init__(config)
        self._tracker = None

    # ---------------------------------------------------------------------------------------------- building
    def build_tracker(self) -> Any:
        from trackers import BoxTracker

        cfg: BoxConfig = self.config
        overrides = cfg.model_overrides()
        if cfg.init:
            if overrides:
                raise ValueError("--init loads a saved architecture; do not combine it with --preset / --model")
            tracker = BoxTracker.from_pretrained(cfg.init)
        else:
            tracker = BoxTracker.from_config(cfg.model_name, **overrides)
        if cfg.init_encoder:
            report = tracker.init_encoder(cfg.init_encoder)
            log.info("encoder initialised from %s: %s", cfg.init_encoder, report)
        self._tracker = tracker
        return tracker

    def build_datasets(self) -> Tuple[Any, Optional[Any]]:
        if self._tracker is None:
            raise RuntimeError("build_tracker() must run before build_datasets() (crops use the model's sizes)")
        return make_pair_datasets(self.config, self._tracker.crop_sizes, self._tracker.settings)

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """Encoder (``backbone.*``) at ``encoder_lr``, decoder head at ``lr``."""
        cfg: BoxConfig = self.config
        enc = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
        dec = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        groups = [g for g in ({"params": dec, "lr": cfg.lr, "name": "decoder"},
                              {"params": enc, "lr": cfg.encoder_lr, "name": "encoder"}) if g["params"]]
        return groups

    def lr_factor(self, step: int) -> float:
        cfg: BoxConfig = self.config
        return lr_with_drop(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio, cfg.lr_drop_at,
                            cfg.lr_drop_factor)

    def collate(self, items):
        return pair_collate(list(items))

    # ---------------------------------------------------------------------------------------------- loss
    def keep_ratio(self, step: int) -> float:
        """Candidate-elimination keep ratio used at ``step``."""
        mc = self._tracker.config
        final = min(mc.ce_keep_ratio) if isinstance(mc.ce_keep_ratio, tuple) else float(mc.ce_keep_ratio)
        return ce_keep_ratio_at(step, self.config.max_steps, final, self.config.ce_start, self.config.ce_ramp)

    def _forward_losses(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext
                        ) -> Tuple[Dict[str, Tensor], Any]:
        from trackers.models.detrack import DenoisingQueries

        cfg: BoxConfig = self.config
        mc = self._tracker.config
        ratio = self.keep_ratio(ctx.step)
        gt, present = batch["search_box"], batch["present"].bool()
        grid = (mc.search_grid, mc.search_grid)
        dn = None
        kwargs: Dict[str, Any] = {}
        if cfg.dn_groups > 0 and ctx.split == "train":
            gens = [ctx.generator(int(i), 17) for i in ctx.indices]
            dn = make_denoising_queries(gt, cfg.dn_groups, mc.num_selected_queries(ratio), gens, grid,
                                        cfg.dn_positive_noise, cfg.dn_negative_noise)
            kwargs = dict(dn_queries=DenoisingQueries(boxes=dn.boxes, token_index=dn.token_index),
                          attn_mask=dn.attn_mask)
        if mc.template_token_types:
            kwargs["template_fg"] = batch["template_mask"]
        out = model(batch["template"], batch["search"], ce_keep_ratio=ratio, **kwargs)
        lk = dict(beta=cfg.qfl_beta, giou_weight=cfg.giou_weight, l1_weight=cfg.l1_weight)
        cls, loc, _ = matching_losses(out.enc_boxes, out.enc_scores, out.enc_index, gt, present, grid,
                                      top_k=cfg.top_k, **lk)
        parts = {"enc_cls": cls, "enc_loc": loc}
        parts["cls"] = torch.zeros_like(cls)
        parts["loc"] = torch.zeros_like(cls)
        if dn is not None:
            parts["dn_cls"] = torch.zeros_like(cls)
            parts["dn_loc"] = torch.zeros_like(cls)
        for layer in range(out.num_layers):
            c, l_, _ = matching_losses(out.boxes[layer], out.scores[layer], out.query_index, gt, present, grid,
                                       top_k=cfg.top_k, **lk)
            parts["cls"] = parts["cls"] + c
            parts["loc"] = parts["loc"] + l_
            if dn is not None:
                dc, dl = denoising_losses(out.dn_boxes[layer], out.dn_scores[layer], dn.positive, gt, present, **lk)
                parts["dn_cls"] = parts["dn_cls"] + dc
                parts["dn_loc"] = parts["dn_loc"] + dl
        parts["total"] = sum(v for k, v in parts.items())
        return parts, out

    @staticmethod
    def _final_iou(out: Any, gt: Tensor, present: Tensor) -> Tensor:
        """IoU with the ground truth of the final layer's best-scored box, per present sample."""
        from trackers.geometry import box_iou

        best = out.scores[-1].argmax(1)
        boxes = out.pred_boxes[torch.arange(best.shape[0], device=best.device), best]
        return box_iou(boxes.float(), gt.float())[present]

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Tuple[Tensor, Dict[str, float]]:
        parts, out = self._forward_losses(model, batch, ctx)
        metrics = {f"loss_{k}": float(v.detach().mean()) for k, v in parts.items() if k != "total"}
        metrics["keep_ratio"] = self.keep_ratio(ctx.step)
        metrics["lr_factor"] = self.lr_factor(ctx.step)
        ious = self._final_iou(out, batch["search_box"], batch["present"].bool())
        if ious.numel():
            metrics["iou"] = float(ious.detach().mean())
        return parts["total"].mean(), metrics

    def validate(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Dict[str, float]:
        """Losses without denoising at the final keep ratio, and the IoU of the best-scored box."""
        parts, out = self._forward_losses(model, batch, ctx)
        res = {"loss": float(parts["total"].mean()),
               **{f"loss_{k}": float(v.mean()) for k, v in parts.items() if k != "total"}}
        ious = self._final_iou(out, batch["search_box"], batch["present"].bool())
        if ious.numel():
            res["iou"] = float(ious.mean())
        return res
