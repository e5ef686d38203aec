"""``LoRATracker``: single-object box tracking with LoRAT (Lin et al., ECCV 2024, arXiv:2403.05231).

Quick start::

    import trackers
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint="base.bin")
    result = tracker.track("video.mp4", init_box=(x1, y1, x2, y2))   # BoxTracks, xyxy in input pixels

    with tracker.stream(first_frame, init_box) as session:          # live video
        for frame in frames:
            step = session.step(frame)                              # BoxTracks of this frame
            box, score = step.boxes[0], step.scores[0]

Official release files contain only the LoRA adapters, the head and the type embedding; the frozen DINOv2 backbone
is a second file (the registry fetches timm's copy from the Hub; Meta's ``dinov2_vit*14_pretrain.pth`` works too,
via ``backbone_checkpoint=``). Loading merges the adapters into the backbone and returns a plain ViT with no LoRA
modules left (``merge_lora=False`` keeps them un-merged for fine-tuning). ``save_pretrained`` writes
``config.json`` and ``model.safetensors``; a merged model's keys are those of the official merged inference layout.

Everything around the network (crops, sessions, batching) comes from :class:`~trackers.box.tracker.SOTTracker`;
this class adds the two network hooks, the LoRA merge and mixed precision.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from trackers import registry
from trackers.box.pipeline import select_cell
from trackers.box.tracker import SOTTracker
from trackers.models.lorat import LoRAT, LoRATConfig

__all__ = ["LoRATracker"]

PathLike = Union[str, os.PathLike]


class LoRATracker(SOTTracker):
    """LoRAT single-object tracker (registry names ``lorat-{b,l,g}-{224,378}``).

    ``to(dtype=torch.bfloat16)`` (or ``float16``) is mixed precision: the block matrices take that dtype while
    embeddings, norms, LayerScale, the residual stream and the head stay float32.
    """

    config_class = LoRATConfig
    model_class = LoRAT

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: PathLike,
        *,
        checkpoint: Optional[PathLike] = None,
        device: Union[None, str, torch.device] = None,
        dtype: Union[None, str, torch.dtype] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
        checkpoints: Optional[Mapping[str, PathLike]] = None,
        backbone_checkpoint: Optional[PathLike] = None,
        merge_lora: bool = True,
        lora_rank: int = 64,
        **settings: Any,
    ) -> "LoRATracker":
        """Load a LoRAT tracker (arguments as :meth:`trackers.base.Tracker.from_pretrained`, plus):

        Args:
            checkpoint: local weights: an official release file (``base.bin`` etc.: LoRA + head + type
                embedding), an official merged inference state dict, or our own merged safetensors.
            backbone_checkpoint: local DINOv2 file used with a release file: timm's ``model.safetensors`` or Meta's
                ``dinov2_vit{b,l,g}14_pretrain.pth``; same as ``checkpoints={"backbone": path}``. Not needed for
                merged files.
            merge_lora: ``True`` (default) folds the adapters into the backbone (plain ViT, fastest). ``False``
                keeps un-merged adapters of rank ``lora_rank`` for fine-tuning (a merged source gets fresh
                adapters with ``B = 0``).
            settings: :class:`~trackers.box.pipeline.SOTSettings` fields to override.
        """
        roles = dict(checkpoints or {})
        if backbone_checkpoint is not None:
            roles["backbone"] = backbone_checkpoint
        # Only registry entries run the converter, which can emit the un-merged layout directly; other sources
        # hold whatever form was saved, and a merged one gets fresh (B = 0) adapters below.
        from_registry = registry.parse_source(name_or_path).kind == "registry"
        if not merge_lora and from_registry:
            settings["_config_overrides"] = {"lora_rank": int(lora_rank)}
        tracker = super().from_pretrained(
            name_or_path, checkpoint=checkpoint, revision=revision, cache_dir=cache_dir,
            checkpoints=roles or None, **settings,
        )
        if merge_lora and tracker.model.has_lora:
            tracker.model.merge_lora()
        elif not merge_lora and not tracker.model.has_lora:
            cfg = tracker.config
            tracker.model.add_lora(int(lora_rank), cfg.lora_alpha, cfg.use_rslora, init="lora")
        return tracker.to(device=device, dtype=dtype)

    def merge_lora(self) -> "LoRATracker":
        """Fold the network's LoRA adapters into the backbone (no-op when already merged)."""
        if self.model.has_lora:
            self.model.merge_lora()
        return self

    # ------------------------------------------------------------------------------------------ hooks
    def _encode_template(self, crops: Tensor, masks: Tensor) -> Tensor:
        # The template's patch tokens (with position and type embeddings) are computed once per target.
        return self.model.embed_template(crops, masks)

    def _predict(self, templates: Tensor, search: Tensor) -> Tuple[Tensor, Tensor]:
        # A tracking step uses one box per target: the one at the cell select_cell picks (windowed argmax of the
        # score map). The score map is needed everywhere, the box MLP only there, so the network runs it on
        # that cell alone and the hook hands back that box at every cell of the map: select_box, applied again
        # by the caller to the same scores, picks the same cell and so this box.
        out = self.model.forward_tokens(templates, search, select_cells=self._selected_cells)
        b, h, w = out["score_map"].shape
        return out["score_map"], out["box"][:, None, None, :].expand(b, h, w, 4)

    def _selected_cells(self, score_map: Tensor) -> Tensor:
        """Row-major cell that the pipeline's :func:`~trackers.box.pipeline.select_cell` picks (the rule --
        window, penalty, ties -- is the pipeline's own, not a copy of it)."""
        return select_cell(score_map, self.settings)[0]
