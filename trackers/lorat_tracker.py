"""``LoRATracker``: single-object box tracking with LoRAT (ECCV 2024).

Quick start::

    import trackers
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224")
    result = tracker.track("video.mp4", init_box=(x1, y1, x2, y2))   # BoxTracks, xyxy in input pixels

    session = tracker.stream(first_frame, init_box)                  # live video, one session per target
    box, score = session.step(next_frame)

Official release files contain only the LoRA adapters, the head and the type embedding; the frozen DINOv2 backbone
is a second file. :meth:`LoRATracker.from_pretrained` fetches both (or takes ``checkpoint=`` /
``backbone_checkpoint=`` local paths), merges the adapters into the backbone at load time and returns a plain ViT
with no LoRA modules left (``merge_lora=False`` keeps them un-merged for fine-tuning). ``save_pretrained`` writes
``config.json`` and ``model.safetensors`` (which also carries the config, so the file alone loads back); a merged
model's keys are those of the official merged inference layout.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (a box ``(x, y, w, h)`` is ``(x, y, x+w, y+h)``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from trackers.base import Tracker
from trackers.models.lorat import LoRAT, LoRATConfig
from trackers.results import BoxTracks
from trackers.sot import (
    SOTSettings,
    SOTState,
    boxes_as_list,
    init_stream,
    search_crop,
    select_box,
    update_stream,
)
from trackers.video import as_frame

__all__ = ["LoRATracker", "LoRATStream"]

PathLike = Union[str, os.PathLike]


def _settings(config: LoRATConfig) -> SOTSettings:
    # The model config carries every pipeline setting under the same field name (template_grid is a property).
    return SOTSettings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(SOTSettings)})


class LoRATStream:
    """One tracked target in a live video; created by :meth:`LoRATracker.stream`.

    Holds the per-target state (current box, padding colour, embedded template); the network is shared with the
    tracker, so any number of sessions can run side by side (see :meth:`LoRATracker.step_many` to batch them).
    """

    def __init__(self, tracker: "LoRATracker", first_frame: Any, init_box: Any) -> None:
        self.tracker = tracker
        self.state: SOTState = tracker._init_state(first_frame, init_box)

    @property
    def box(self) -> torch.Tensor:
        """Current target box (float64 ``(4,)``, xyxy frame pixels)."""
        return self.state.box.clone()

    @property
    def score(self) -> float:
        """Confidence of the last step (1.0 right after initialisation)."""
        return self.state.last_score

    @property
    def frame_index(self) -> int:
        """Number of frames processed after the initial one."""
        return self.state.frame_index

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.state.image_size

    def step(self, frame: Any) -> Tuple[torch.Tensor, float]:
        """Track the target into ``frame`` (same size as the first frame).

        Returns ``(box, score)``: the float64 ``(4,)`` xyxy box clipped to the frame and the confidence
        (sigmoid of the chosen score cell, in [0, 1]).
        """
        return self.tracker.step_many([self], [frame])[0]

    def __repr__(self) -> str:
        return f"LoRATStream(frame_index={self.frame_index}, box={[round(v, 2) for v in self.state.box.tolist()]})"


class LoRATracker(Tracker):
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
        backbone_checkpoint: Optional[PathLike] = None,
        device: Union[None, str, torch.device] = None,
        dtype: Union[None, str, torch.dtype] = None,
        merge_lora: bool = True,
        lora_rank: int = 64,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
        checkpoints: Optional[Mapping[str, PathLike]] = None,
    ) -> "LoRATracker":
        """Load a LoRAT tracker.

        Args:
            name_or_path: registry name (``"lorat-b-224"`` ...), ``"hf-hub:org/repo"`` or a folder / safetensors
                file written by :meth:`save_pretrained`.
            checkpoint: local weights replacing the registry's ``"weights"`` file: an official release file
                (``base.bin`` etc., LoRA + head + type embedding), an official merged inference state dict, or our
                own merged safetensors.
            backbone_checkpoint: local DINOv2 file (``dinov2_vit{b,l,g}14_pretrain.pth``) used with a release
                file; same as ``checkpoints={"backbone": path}``. Not needed for merged files.
            device, dtype: placement and compute dtype (``torch.bfloat16`` is supported on CPU).
            merge_lora: ``True`` (default) folds the adapters into the backbone (plain ViT, fastest). ``False``
                keeps un-merged adapters of rank ``lora_rank`` for fine-tuning (a merged source gets fresh
                adapters with ``B = 0``).
            revision, cache_dir, checkpoints: see :meth:`trackers.base.Tracker.from_pretrained`.
        """
        roles = dict(checkpoints or {})
        if backbone_checkpoint is not None:
            roles["backbone"] = backbone_checkpoint
        # Only registry entries run the converter, which can emit the un-merged layout directly; other sources
        # hold whatever form was saved, and a merged one gets fresh (B = 0) adapters below.
        overrides = {"lora_rank": int(lora_rank)} if not merge_lora and _is_registry_name(name_or_path) else None
        tracker = super().from_pretrained(
            name_or_path, checkpoint=checkpoint, device=None, dtype=None, revision=revision, cache_dir=cache_dir,
            checkpoints=roles or None, config_overrides=overrides,
        )
        if merge_lora and tracker.model.has_lora:
            tracker.model.merge_lora()
        elif not merge_lora and not tracker.model.has_lora:
            cfg = tracker.config
            tracker.model.add_lora(int(lora_rank), cfg.lora_alpha, cfg.use_rslora, init="lora")
        return tracker.to(device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the network: that of the transformer-block matrices."""
        return self.model.compute_dtype

    def _cast(self, dtype: torch.dtype) -> None:
        # bfloat16 / float16 store only the block matrices in that dtype and keep embeddings, norms, LayerScale,
        # the residual stream and the head in float32 (see LoRAT.to_mixed_precision): boxes move less.
        if dtype in (torch.bfloat16, torch.float16):
            self.model.to_mixed_precision(dtype)
        else:
            self.model.to(dtype=dtype)

    def merge_lora(self) -> "LoRATracker":
        """Fold the network's LoRA adapters into the backbone (no-op when already merged)."""
        if self.model.has_lora:
            self.model.merge_lora()
        return self

    @property
    def settings(self) -> SOTSettings:
        return _settings(self.config)

    # ------------------------------------------------------------------------------------------ streams
    def _init_state(self, first_frame: Any, init_box: Any) -> SOTState:
        frame = as_frame(first_frame, name="first_frame").to(self.device)
        state, z, mask = init_stream(frame, init_box, self.settings)
        with torch.inference_mode():
            state.template = self.model.embed_template(
                z[None].to(self.model.input_dtype), mask[None].to(self.device)
            )
        state.extra["template_mask"] = mask
        return state

    def stream(self, first_frame: Any, init_box: Any) -> LoRATStream:
        """Start tracking ``init_box`` (xyxy) from ``first_frame`` (``(H, W, 3)`` / ``(3, H, W)``); returns a session."""
        return LoRATStream(self, first_frame, init_box)

    def step_many(self, sessions: Sequence[LoRATStream], frames: Sequence[Any]) -> List[Tuple[torch.Tensor, float]]:
        """Advance several sessions by one frame each in a single batched forward.

        ``frames[i]`` is the next frame of ``sessions[i]`` (sessions may come from different videos and sizes).
        Returns one ``(box, score)`` per session.
        """
        if len(sessions) != len(frames):
            raise ValueError(f"step_many: {len(sessions)} sessions but {len(frames)} frames")
        for s in sessions:
            if not isinstance(s, LoRATStream) or s.tracker is not self:
                raise ValueError("step_many: every session must come from this tracker's stream()")
        states = [s.state for s in sessions]
        frames_t = [as_frame(f, name="frame").to(self.device) for f in frames]
        return self._step_states(states, frames_t)

    def _step_states(self, states: Sequence[SOTState], frames: Sequence[torch.Tensor]) -> List[Tuple[torch.Tensor, float]]:
        if not states:
            return []
        settings = self.settings
        crops, transforms = [], []
        for st, fr in zip(states, frames):
            crop, tf = search_crop(fr, st, settings)
            crops.append(crop)
            transforms.append(tf)
        x = torch.stack(crops).to(self.model.input_dtype)
        z_tokens = torch.cat([st.template for st in states], dim=0)
        with torch.inference_mode():
            out = self.model.forward_tokens(z_tokens, x)
        boxes, conf = select_box(out["score_map"], out["boxes"], settings.window_penalty, settings.search_size)
        boxes, conf = boxes.cpu(), conf.cpu()
        results = []
        for i, st in enumerate(states):
            fb = update_stream(st, boxes[i], float(conf[i]), transforms[i])
            results.append((fb, float(conf[i])))
        return results

    # ------------------------------------------------------------------------------------------ whole videos
    def track(self, video: Any, init_box: Any) -> BoxTracks:
        """Track one target through a clip (or one target per clip of a batch).

        Args:
            video: ``(T, H, W, 3)`` / ``(T, 3, H, W)`` frames (numpy or torch, uint8 or float 0..255), a list or
                other iterable of frames, a video file path, or a batch ``(B, T, ...)`` of equally long clips.
            init_box: ``(x1, y1, x2, y2)`` on frame 0, or ``(B, 4)`` for a batch. Clips of a batch are
                tracked together, one batched forward per frame.

        Returns:
            :class:`~trackers.results.BoxTracks` with ``boxes (T, 4)`` (``(B, T, 4)`` for a batch, float64, frame 0
            = the initial box) and ``scores (T,)`` (1 for frame 0).
        """
        clips, batched = _clips(video)
        boxes_in = boxes_as_list(init_box, len(clips))
        iters = [iter(c) for c in clips]
        firsts = []
        for it in iters:
            try:
                firsts.append(as_frame(next(it), name="video frame 0"))
            except StopIteration:
                raise ValueError("video has no frames") from None
        states = [self._init_state(f, b) for f, b in zip(firsts, boxes_in)]
        out_boxes = [[st.box.clone()] for st in states]
        out_scores = [[1.0] for _ in states]
        t = 1
        while True:
            frames = []
            for it in iters:
                try:
                    frames.append(next(it))
                except StopIteration:
                    frames.append(None)
            if all(f is None for f in frames):
                break
            if any(f is None for f in frames):
                raise ValueError("all clips of a batch must have the same number of frames")
            frames_t = [as_frame(f, name=f"video frame {t}").to(self.device) for f in frames]
            for (fb, score), ob, os_ in zip(self._step_states(states, frames_t), out_boxes, out_scores):
                ob.append(fb)
                os_.append(score)
            t += 1
        boxes = torch.stack([torch.stack(b) for b in out_boxes])
        scores = torch.tensor(out_scores, dtype=torch.float64)
        h, w = states[0].image_size
        if not batched:
            boxes, scores = boxes[0], scores[0]
        return BoxTracks(boxes=boxes, scores=scores, image_size=(h, w))


def _is_registry_name(name_or_path: Any) -> bool:
    from trackers import hub

    source = os.fspath(name_or_path)
    if source.startswith(hub.HF_PREFIX) or os.path.exists(source):
        return False
    return source in hub.list_models()


def _clips(video: Any) -> Tuple[List[Iterable[Any]], bool]:
    """Split ``video`` into per-clip frame iterators without converting whole clips to float."""
    from trackers.io import _iter_input_frames, iter_frames

    if isinstance(video, (str, os.PathLike)):
        return [iter_frames(video)], False
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim == 5:
        if video.shape[0] == 0:
            raise ValueError(f"video batch of shape {tuple(video.shape)} is empty")
        return [_iter_input_frames(clip, name="video") for clip in video], True
    # A single clip: arrays, tensors and lists of frames are validated like trackers.video.as_video.
    return [_iter_input_frames(video, name="video")], False
