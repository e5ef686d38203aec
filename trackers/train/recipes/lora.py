"""Recipe ``lora``: LoRAT fine-tuning (Lin et al., ECCV 2024, arXiv:2403.05231), the official training settings.

What the paper / official code specify and this recipe does:

* **what trains**: the ViT backbone is frozen (patch embedding, blocks, position grid, final norm); every Linear of
  every block gets a LoRA adapter (the fused ``qkv`` split into q, k, v; then ``attn.proj``, ``mlp.fc1``,
  ``mlp.fc2``) of rank ``lora_rank = 64`` with ``alpha = 64`` (scale 1), both matrices initialised
  trunc-normal(0.02); the decoupled input embedding (``token_type_embed``: template background / foreground /
  search) and the MLP head train fully.
* **loss** (:func:`trackers.train.losses.box.iou_aware_bce_losses`): positive cells are the search-grid cells covered
  by the ground-truth box; classification is BCE-with-logits over every cell against the IoU of the cell's
  (detached) predicted box with the ground truth at positives and 0 elsewhere; regression is ``1 - GIoU`` on the
  positives; both summed, divided by the number of positives, weights 1 and 1. (The official code divides by the
  positives of the whole global batch; here each sample is normalised by its own count, so a batch split over
  processes gives exactly the gradient of the whole batch.)
* **optimiser**: AdamW, lr 1e-4, weight decay 0.1 -- none for 1-D parameters and for parameters whose name contains
  ``embed`` -- gradient-norm clipping 1.0, linear warm-up (2 epochs of 1024 steps) then cosine to 1e-6 per step.
  170 epochs x 1024 steps at global batch 128 (16 per process on 8 GPUs).
* **data**: pairs within 100 frames, template factor 2 and search factor 4 (the tracker's settings), search jitter
  scale 0.25 / centre 3, minimum object size 10 (see :mod:`trackers.train.data.sot_pairs`); a horizontal flip
  (p 0.5, drawn per crop), colour jitter 0.4 (brightness, contrast, saturation, per crop) and DeiT III's
  "3-augment" (grayscale, solarize or blur, the same for both crops). Not implemented yet: COCO pairs.

Starting points: ``--backbone FILE`` (a DINOv2 ``dinov2_vit*14_pretrain.pth`` or timm ``model.safetensors``: the
paper's setting; head, type embedding and adapters random), ``--init SOURCE`` (a LoRAT registry name with
``--checkpoint`` release file and ``--backbone``, or a saved folder: training continues from it; a merged source
gets fresh adapters with ``B = 0``), or nothing (a random backbone: only for trying the pipeline, e.g. with
``--preset small``).

Each checkpoint folder holds the **merged** tracker (``config.json`` + ``model.safetensors``:
``trackers.LoRATracker.from_pretrained(folder)`` tracks with it) and the **un-merged adapter** ``lorat_adapter.bin``
in the layout of the official release files (safetensors content; ``token_type_embed``,
``blocks.N.attn.qkv.{q,k,v}.lora.{A,B}``, ``blocks.N.attn.proj.lora.*``, ``blocks.N.mlp.fc{1,2}.lora.*``,
``head.*``, ``lora_alpha``, ``use_rslora``), so with a full-size model it loads like an official file::

    trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint="run/checkpoint-N/lorat_adapter.bin",
                                         backbone_checkpoint="dinov2_vitb14_pretrain.pth")

Example (CPU, a small random backbone)::

    trackers-train lora --preset small --batch-size 8 --max-steps 2000 --warmup-steps 100 --output-dir runs/lora
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from trackers.train.engine import Recipe, StepContext
from trackers.train.losses.box import iou_aware_bce_losses
from trackers.train.recipes.box import PairDataConfig, make_pair_datasets, pair_collate

__all__ = ["LoRAConfig", "LoRARecipe", "MODEL_PRESETS", "ADAPTER_NAME", "adapter_state_dict"]

#: File name of the un-merged adapter inside a checkpoint folder (official release layout, safetensors content).
ADAPTER_NAME = "lorat_adapter.bin"

#: Reduced LoRAT architectures (LoRATConfig fields) for CPU runs (``small``) and tests (``tiny``). Their random
#: backbones use LayerScale 1.0: DINOv2's 1e-5 initial value would make the (frozen, random) blocks and thus their
#: adapters nearly irrelevant.
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    "small": dict(embed_dim=128, depth=4, num_heads=4, ffn_hidden=512, patch_size=8, template_size=64,
                  search_size=128, backbone_grid=16, layerscale_init=1.0),
    "tiny": dict(embed_dim=32, depth=2, num_heads=2, ffn_hidden=64, patch_size=8, template_size=32,
                 search_size=64, backbone_grid=8, layerscale_init=1.0),
}


@dataclass
class LoRAConfig(PairDataConfig):
    """Settings of the ``lora`` recipe (LoRAT fine-tuning); defaults from the official training configuration.

    Attributes:
        output_dir: run folder.
        max_steps: optimiser steps (170 epochs of 1024 steps).
        batch_size: pairs per process and micro-step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to 1-D parameters and embeddings).
        warmup_steps: linear warm-up steps.
        min_lr_ratio: final learning rate over the peak (1e-6 / 1e-4).
        grad_clip: gradient-norm clipping.
        model_name: registry architecture (``lorat-b-224`` ...).
        preset: a reduced architecture (``small`` or ``tiny``) applied over ``model_name``.
        model: LoRATConfig fields to override.
        lora_rank: adapter rank.
        lora_alpha: adapter alpha (scale ``alpha / rank``).
        init: a LoRAT source to continue from (registry name or saved folder).
        checkpoint: with a registry ``init``: the official release file.
        backbone: DINOv2 backbone file (with ``init``: the release file's backbone; alone: the starting backbone).
        train_pairs: pairs per pass over the training set.
        max_gap: largest frame distance of a pair.
        brightness_jitter / contrast_jitter / saturation_jitter / three_augment / flip_prob / flip_each: LoRAT's
            augmentation (colour jitter 0.4 per crop, DeiT III 3-augment on both crops, a flip drawn per crop).
        cls_weight: weight of the IoU-aware BCE.
        giou_weight: weight of the GIoU loss.
    """

    output_dir: str = "runs/lora"
    max_steps: int = 174080
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 2048
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    model_name: str = "lorat-b-224"
    preset: Optional[str] = None
    model: Dict[str, Any] = field(default_factory=dict)
    lora_rank: int = 64
    lora_alpha: float = 64.0
    init: Optional[str] = None
    checkpoint: Optional[str] = None
    backbone: Optional[str] = None
    train_pairs: int = 131072
    max_gap: int = 100
    brightness_jitter: float = 0.4
    contrast_jitter: float = 0.4
    saturation_jitter: float = 0.4
    three_augment: bool = True
    flip_prob: float = 0.5
    flip_each: bool = True
    cls_weight: float = 1.0
    giou_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None and self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if self.checkpoint and not self.init:
            raise ValueError("--checkpoint needs --init naming the model it belongs to (e.g. lorat-b-224)")

    def model_overrides(self) -> Dict[str, Any]:
        """LoRATConfig fields to replace: the preset, then ``model``."""
        out: Dict[str, Any] = dict(MODEL_PRESETS[self.preset]) if self.preset else {}
        out.update(self.model)
        return out


def adapter_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The trainable part of an un-merged LoRAT network in the official release layout (fp32, CPU, contiguous):
    ``token_type_embed``, every ``*.lora.{A,B}``, ``head.*``, plus the scalars ``lora_alpha`` (int64 when whole, as
    in the official files) and ``use_rslora`` (bool)."""
    cfg = model.config
    if not model.has_lora:
        raise ValueError("the network has no LoRA adapters (it is merged); nothing to write in the adapter layout")
    out = {k: v.detach().float().cpu().contiguous().clone() for k, v in model.state_dict().items()
           if k == "token_type_embed" or ".lora." in k or k.startswith("head.")}
    alpha = float(cfg.lora_alpha)
    out["lora_alpha"] = torch.tensor(int(alpha)) if alpha.is_integer() else torch.tensor(alpha)
    out["use_rslora"] = torch.tensor(bool(cfg.use_rslora))
    return out


class LoRARecipe(Recipe):
    """LoRAT LoRA fine-tuning; see the module docstring."""

    name = "lora"
    description = "LoRAT box tracker: LoRA fine-tuning of a frozen ViT (IoU-aware BCE + GIoU)"
    config_class = LoRAConfig

    def __init__(self, config: LoRAConfig):
        super().__init__(config)
        self._tracker = None

    # ---------------------------------------------------------------------------------------------- building
    def build_tracker(self) -> Any:
        from trackers import LoRATracker

        cfg: LoRAConfig = self.config
        overrides = cfg.model_overrides()
        if cfg.init:
            if overrides:
                raise ValueError("--init loads a saved architecture; do not combine it with --preset / --model")
            tracker = LoRATracker.from_pretrained(cfg.init, checkpoint=cfg.checkpoint, backbone_checkpoint=cfg.backbone,
                                                  merge_lora=False, lora_rank=cfg.lora_rank)
        else:
            tracker = LoRATracker.from_config(cfg.model_name, **{**overrides, "lora_rank": 0})
            if cfg.backbone:
                self._load_backbone(tracker.model, cfg.backbone)
            tracker.model.add_lora(cfg.lora_rank, cfg.lora_alpha, False, init="bert")
        self._tracker = tracker
        return tracker

    @staticmethod
    def _load_backbone(model: nn.Module, path: str) -> None:
        """Load a DINOv2 file into the (merged-layout) network, keeping its random head and type embedding."""
        from trackers import registry
        from trackers.models.lorat import convert_official_checkpoint

        dino = registry.normalize_state_dict(registry.load_checkpoint_file(path))
        own = {k: v for k, v in model.state_dict().items() if k == "token_type_embed" or k.startswith("head.")}
        state = convert_official_checkpoint(own, model.config, load_file=lambda role: dino)
        model.load_state_dict(state, strict=True)

    def build_datasets(self) -> Tuple[Any, Optional[Any]]:
        if self._tracker is None:
            raise RuntimeError("build_tracker() must run before build_datasets() (crops use the model's sizes)")
        return make_pair_datasets(self.config, self._tracker.crop_sizes, self._tracker.settings)

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """Trainable parameters with weight decay, and without it for 1-D parameters and embeddings."""
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or "embed" in n else decay).append(p)
        return [g for g in ({"params": decay, "weight_decay": self.config.weight_decay, "name": "decay"},
                            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}) if g["params"]]

    def collate(self, items):
        return pair_collate(list(items))

    # ---------------------------------------------------------------------------------------------- loss
    def _losses(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        cfg: LoRAConfig = self.config
        out = model(batch["template"], batch["search"], batch["template_mask"])
        present = batch["present"].bool()
        cls, reg, npos = iou_aware_bce_losses(out["score_map"], out["boxes"], batch["search_box"], present,
                                              cfg.cls_weight, cfg.giou_weight)
        return {"cls": cls, "giou": reg, "total": cls + reg}, out

    @staticmethod
    def _best_iou(out: Dict[str, Tensor], gt: Tensor, present: Tensor) -> Tensor:
        from trackers.geometry import box_iou

        b = out["score_map"].shape[0]
        idx = out["score_map"].reshape(b, -1).argmax(1)
        boxes = out["boxes"].reshape(b, -1, 4)[torch.arange(b, device=idx.device), idx]
        return box_iou(boxes.float(), gt.float())[present]

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Tuple[Tensor, Dict[str, float]]:
        parts, out = self._losses(model, batch)
        metrics = {f"loss_{k}": float(v.detach().mean()) for k, v in parts.items() if k != "total"}
        ious = self._best_iou(out, batch["search_box"], batch["present"].bool())
        if ious.numel():
            metrics["iou"] = float(ious.detach().mean())
        return parts["total"].mean(), metrics

    def validate(self, model: nn.Module, batch: Dict[str, Tensor], ctx: StepContext) -> Dict[str, float]:
        parts, out = self._losses(model, batch)
        res = {"loss": float(parts["total"].mean()),
               **{f"loss_{k}": float(v.mean()) for k, v in parts.items() if k != "total"}}
        ious = self._best_iou(out, batch["search_box"], batch["present"].bool())
        if ious.numel():
            res["iou"] = float(ious.mean())
        return res

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save(self, tracker: Any, directory: Path) -> None:
        """The merged tracker (``save_pretrained``) and the un-merged adapter ``lorat_adapter.bin``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(adapter_state_dict(tracker.model), str(directory / ADAPTER_NAME), metadata={"format": "pt"})
        merged = type(tracker)(copy.deepcopy(tracker.model).merge_lora(), tracker.settings)
        merged.name = tracker.name
        merged.save_pretrained(directory)

    def load(self, tracker: Any, directory: Path) -> None:
        """Restore the adapters, type embedding and head from ``lorat_adapter.bin``; the frozen backbone is the one
        this run built, checked against the folder's merged weights (a different ``--backbone`` is an error)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / ADAPTER_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {ADAPTER_NAME}; is it a checkpoint of the lora recipe?")
        module = self.trained_module(tracker)
        sd = load_file(str(path))
        alpha, rs = float(sd.pop("lora_alpha")), bool(sd.pop("use_rslora"))
        if alpha != float(module.config.lora_alpha) or rs != bool(module.config.use_rslora):
            raise ValueError(f"{path}: lora_alpha={alpha}, use_rslora={rs} differ from this run's "
                             f"({module.config.lora_alpha}, {module.config.use_rslora})")
        own = module.state_dict()
        trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        unexpected = sorted(set(sd) - set(own))
        missing = sorted(trainable - set(sd))
        if unexpected or missing:
            raise ValueError(f"{path} does not fit this network: unexpected {unexpected[:5]}, missing {missing[:5]}")
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
        merged = copy.deepcopy(module).merge_lora().state_dict()
        saved = load_file(str(directory / "model.safetensors"))
        for k, v in saved.items():
            if k in merged and not torch.equal(merged[k].float().cpu(), v):
                raise ValueError(f"the frozen weights of this run differ from those of {directory} (first: {k}); "
                                 "resume with the same --backbone / --init as the original run")
