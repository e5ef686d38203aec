"""Recipe ``point-pseudo``: CoTracker3 fine-tuning on real, unannotated videos with teachers' pseudo-labels
(Karaev et al. 2024, sections 3.1 and 3.3 "Training using pseudo-labels", appendix A).

What the paper specifies and this recipe does:

* **teachers**: several frozen trackers (``--teachers``: registry names, Hub repos or saved folders; the paper uses
  CoTracker3 online and offline trained on Kubric, CoTracker and TAPIR), in eval mode, optionally in bfloat16
  (``--teacher-dtype``). **One teacher is drawn uniformly per batch** (so over several epochs a video gets labels
  from different teachers); the draw depends only on the seed and the step, so it is the same on every process and
  after a resume.
* **data** (:mod:`trackers.train.data.pseudo`): a folder of videos; clips of ``clip_frames`` frames at random
  offsets, resized to ``clip_size``; 384 SIFT queries from 8 random frames of the clip's first quarter; clips whose
  key frames have too few SIFT points are skipped (counted in the log and in the ``skipped_clips`` metric).
* **labels**: made on the fly by the drawn teacher, or precomputed once (``--labels DIR``, made by
  ``python -m trackers.train.recipes.point_pseudo`` with the same options, sharded under ``torchrun``) and read
  back; both give the same labels. A point is visible where the teacher's ``sigmoid(visibility) > 0.9``.
* **loss**: the track loss of supervised training only (:func:`trackers.train.losses.point.track_loss`: Huber,
  threshold 6 px, discounted 0.8 per update) against the teacher's tracks. Every query is supervised; the teacher's
  visibility decides the weight, 1 for visible and 1/5 for occluded points (paper eq. 2; ``--occluded-weight 0``
  supervises visible points only, what the official script does for TAPIR's labels; for occluded points that script
  uses a plain L1 distance where the paper's equation, followed here, keeps the Huber loss). Online students count
  frames from each query's frame on, window by window; offline students see a random trim of ``[T/2, T]`` frames
  (as in supervised training), labelled by the teacher on the whole clip.
* **teacher passes**: raw network calls on the clip (resized to the teacher's resolution if it differs) with
  ``teacher_iters`` updates (default: the teacher's ``settings.iters``), without autocast, so the labels do not
  depend on the student's mixed precision.
* **frozen heads**: confidence and visibility are not supervised ("more stable"); the linear layer that predicts
  them (``updateformer.vis_conf_head``) is frozen: ``requires_grad=False``, left out of the optimiser, so its
  weights stay bit-identical.
* **optimiser**: AdamW, lr 5e-5, weight decay 1e-5, cosine decay **without warm-up**, 15,000 steps.

Paper's clips: 64 frames for the online model (window 16), up to 60 for the offline one, 384x512; 384 queries.

Precompute labels, then train (flags shared, so the clips and queries match)::

    torchrun --nproc-per-node 8 -m trackers.train.recipes.point_pseudo --videos videos/ --labels labels/ \\
        --teachers cotracker3-online-baseline cotracker3-offline-baseline --teacher-dtype bfloat16
    trackers-train point-pseudo --videos videos/ --labels labels/ \\
        --teachers cotracker3-online-baseline cotracker3-offline-baseline --student cotracker3-online-baseline

On a CPU, shrink everything: ``--clip-frames 16 --clip-size 128 160 --num-points 64`` and a small student
(``--student none --preset small``).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from trackers.train.config import TrainConfig, add_config_arguments, config_from_args
from trackers.train.engine import StepContext
from trackers.train.losses.point import PointLossConfig
from trackers.train.recipes.point import MODEL_PRESETS, PointConfig, PointRecipe

__all__ = ["PointPseudoConfig", "PointPseudoRecipe", "FROZEN_HEAD", "main"]

log = logging.getLogger("trackers.train")

#: Parameter-name prefix of the visibility / confidence head that stays frozen.
FROZEN_HEAD = "updateformer.vis_conf_head."
_TEACHER_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class PointPseudoConfig(TrainConfig):
    """Settings of the ``point-pseudo`` recipe (CoTracker3 pseudo-label fine-tuning); defaults from the paper.

    Attributes:
        output_dir: run folder.
        max_steps: optimiser steps.
        warmup_steps: linear warm-up steps (the paper uses none on real data).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        videos: folder of training videos (any format PyAV reads).
        teachers: teacher trackers (registry names, Hub repos or saved folders); one is drawn per batch.
        teacher_dtype: dtype the teachers run in: float32, bfloat16 or float16.
        teacher_iters: refinement updates of the teachers (default: each teacher's settings.iters, 6 for the
            registry models; the official script calls the raw networks with their default of 4).
        labels: folder of precomputed labels to read instead of running the teachers.
        student: weights to start from (registry name, Hub repo or saved folder); none: random initialisation of
            model_name with the architecture options.
        model_name: architecture of a randomly initialised student.
        preset: reduced architecture (small or tiny) for a random student.
        model: CoTrackerConfig fields of a random student.
        width: transformer width of a random student.
        depth: transformer depth of a random student.
        resolution: model resolution H W of a random student.
        iters: refinement updates of the student in training.
        clip_frames: frames per clip.
        clip_size: H W clips are resized to (default: the student's model resolution).
        num_points: SIFT queries per clip.
        clips_per_video: random windows per video (the dataset has videos x clips_per_video items).
        data_seed: seeds the clip windows, SIFT key frames and the teachers' context points.
        sift_frames: frames SIFT keypoints are taken from.
        sift_start_fraction: the SIFT frames come from this first fraction of the clip.
        teacher_visibility: a teacher's point is visible where sigmoid(visibility) exceeds this.
        context_grid: online teachers track an extra grid of this side on the first frame (dropped).
        context_uniform: offline teachers track this many extra uniform points (dropped).
        random_trim: offline student: trim each batch to a random length in [T/2, T].
        huber_delta: Huber threshold of the track loss, pixels.
        gamma: discount per refinement update.
        occluded_weight: weight of points the teacher calls occluded.
    """

    output_dir: str = "runs/point-pseudo"
    max_steps: int = 15000
    warmup_steps: int = 0
    lr: float = 5e-5
    weight_decay: float = 1e-5
    videos: Optional[str] = None
    teachers: Tuple[str, ...] = ("cotracker3-online-baseline", "cotracker3-offline-baseline")
    teacher_dtype: str = "float32"
    teacher_iters: Optional[int] = None
    labels: Optional[str] = None
    student: Optional[str] = "cotracker3-online-baseline"
    model_name: str = "cotracker3-online"
    preset: Optional[str] = None
    model: Dict[str, Any] = field(default_factory=dict)
    width: Optional[int] = None
    depth: Optional[int] = None
    resolution: Optional[Tuple[int, int]] = None
    iters: int = 4
    clip_frames: int = 64
    clip_size: Optional[Tuple[int, int]] = None
    num_points: int = 384
    clips_per_video: int = 1
    data_seed: int = 0
    sift_frames: int = 8
    sift_start_fraction: float = 0.25
    teacher_visibility: float = 0.9
    context_grid: int = 5
    context_uniform: int = 100
    random_trim: bool = True
    huber_delta: float = 6.0
    gamma: float = 0.8
    occluded_weight: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.teachers = tuple(str(t) for t in self.teachers)
        if not self.teachers:
            raise ValueError("teachers must name at least one teacher tracker")
        if self.teacher_dtype not in _TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {', '.join(_TEACHER_DTYPES)}, got {self.teacher_dtype!r}")
        if self.student is not None and self.student.strip().lower() in ("", "none", "null", "random"):
            self.student = None
        if self.preset is not None and self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
        for name in ("resolution", "clip_size"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, tuple(int(x) for x in v))
        for name in ("iters", "clip_frames", "num_points", "clips_per_video", "sift_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("context_grid", "context_uniform"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.teacher_iters is not None and self.teacher_iters < 1:
            raise ValueError(f"teacher_iters must be >= 1, got {self.teacher_iters}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.teacher_visibility < 1.0:
            raise ValueError(f"teacher_visibility must be in [0, 1), got {self.teacher_visibility}")
        if not 0.0 < self.sift_start_fraction <= 1.0:
            raise ValueError(f"sift_start_fraction must be in (0, 1], got {self.sift_start_fraction}")
        if self.occluded_weight < 0:
            raise ValueError(f"occluded_weight must be >= 0, got {self.occluded_weight}")

    def model_overrides(self) -> Dict[str, Any]:
        """CoTrackerConfig fields of a random student: preset, then ``model``, then the shortcuts."""
        return PointConfig.model_overrides(self)  # the same precedence rules as supervised training

    def loss_config(self) -> PointLossConfig:
        """Track loss only: the confidence and visibility terms are weighted 0 (their head is frozen)."""
        return PointLossConfig(huber_delta=self.huber_delta, gamma=self.gamma, occluded_weight=self.occluded_weight,
                               conf_weight=0.0, vis_weight=0.0)

    def label_settings(self, dataset_settings: Dict[str, Any]) -> Dict[str, Any]:
        """Everything that determines the labels (stored in, and checked against, a labels folder's manifest)."""
        return {"teachers": list(self.teachers), "teacher_dtype": self.teacher_dtype,
                "teacher_iters": self.teacher_iters, "teacher_visibility": self.teacher_visibility,
                "context_grid": self.context_grid, "context_uniform": self.context_uniform, **dataset_settings}


class PointPseudoRecipe(PointRecipe):
    """CoTracker3 pseudo-label fine-tuning; see the module docstring. The student's forward pass, random trims
    and per-window loss are those of supervised training (:class:`~trackers.train.recipes.point.PointRecipe`)."""

    name = "point-pseudo"
    description = "CoTracker3 fine-tuning on real videos with pseudo-labels from frozen teachers (paper section 3.1)"
    config_class = PointPseudoConfig

    def __init__(self, config: PointPseudoConfig):
        super().__init__(config)
        self._teachers: Optional[List[Any]] = None
        self._dataset = None
        self.skipped_total = 0

    # ---------------------------------------------------------------------------------------------- building
    def build_tracker(self) -> Any:
        from trackers import PointTracker

        cfg: PointPseudoConfig = self.config
        overrides = cfg.model_overrides()
        if cfg.student is not None:
            if overrides:
                raise ValueError(f"architecture options ({', '.join(sorted(overrides))}) apply to a randomly "
                                 f"initialised student only; pass --student none to use them (student: "
                                 f"{cfg.student!r})")
            tracker = PointTracker.from_pretrained(cfg.student)
        else:
            tracker = PointTracker.from_config(cfg.model_name, **overrides)
        frozen = [p for n, p in tracker.model.named_parameters() if n.startswith(FROZEN_HEAD)]
        if not frozen:
            raise RuntimeError(f"the student has no parameters under {FROZEN_HEAD!r} to freeze")
        for p in frozen:
            p.requires_grad_(False)
        self._model_config = tracker.model.config
        return tracker

    def clip_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the clips: ``clip_size``, else the student's model resolution."""
        if self.config.clip_size is not None:
            return tuple(self.config.clip_size)
        if self._model_config is None:
            raise RuntimeError("build_tracker() must run first (clips default to the student's resolution)")
        return tuple(self._model_config.model_resolution)

    def make_dataset(self):
        """The clip dataset of ``videos`` (needs the student's resolution unless ``clip_size`` is set)."""
        from trackers.train.data.pseudo import VideoClipDataset

        cfg: PointPseudoConfig = self.config
        if not cfg.videos:
            raise ValueError("point-pseudo needs --videos DIR, a folder of training videos")
        return VideoClipDataset(cfg.videos, clip_frames=cfg.clip_frames, size=self.clip_size(),
                                num_points=cfg.num_points, clips_per_video=cfg.clips_per_video, seed=cfg.data_seed,
                                sift_frames=cfg.sift_frames, sift_start_fraction=cfg.sift_start_fraction)

    def build_datasets(self) -> Tuple[Any, Optional[Any]]:
        from trackers.train.data.pseudo import check_manifest

        self._dataset = self.make_dataset()
        if self.config.labels:
            check_manifest(self.config.labels, self.config.label_settings(self._dataset.settings()))
        return self._dataset, None

    def collate(self, items):
        from trackers.train.data.pseudo import collate_clips

        return collate_clips(items)

    def teachers(self, device: Any) -> List[Any]:
        """The frozen teachers (loaded on first use, on ``device``)."""
        if self._teachers is None:
            from trackers.train.data.pseudo import load_teacher

            self._teachers = [load_teacher(spec, device=device, dtype=self.config.teacher_dtype)
                              for spec in self.config.teachers]
        return self._teachers

    # ---------------------------------------------------------------------------------------------- labels
    def labels(self, batch: Dict[str, Any], teacher: int, device: Any) -> Dict[str, Tensor]:
        """``tracks`` / ``visible`` of the batch by teacher number ``teacher``: read back or computed now."""
        from trackers.train.data.pseudo import label_path, read_label, seeded_generator, teacher_labels

        cfg: PointPseudoConfig = self.config
        if cfg.labels:
            tracks, visible = [], []
            T, N = batch["video"].shape[1], batch["queries"].shape[1]
            for b, item in enumerate(batch["item"].tolist()):
                path = label_path(cfg.labels, teacher, item)
                arrays = read_label(path, num_frames=T, num_points=N)
                if not np.array_equal(arrays["queries"], batch["queries"][b].cpu().numpy()):
                    raise ValueError(f"{str(path)!r} was made for other queries than item {item} of this run")
                tracks.append(torch.from_numpy(arrays["tracks"]))
                visible.append(torch.from_numpy(arrays["visible"]))
            return {"tracks": torch.stack(tracks).float().to(device), "visible": torch.stack(visible).to(device)}
        gens = [seeded_generator("context", cfg.data_seed, int(i), teacher) for i in batch["item"].tolist()]
        out = teacher_labels(self.teachers(device)[teacher], batch["video"], batch["queries"], generators=gens,
                             visibility_threshold=cfg.teacher_visibility, context_grid=cfg.context_grid,
                             context_uniform=cfg.context_uniform, iters=cfg.teacher_iters)
        return {"tracks": out["tracks"].to(device), "visible": out["visible"].to(device)}

    # ---------------------------------------------------------------------------------------------- loss
    def loss(self, model: nn.Module, batch: Dict[str, Any], ctx: StepContext) -> Tuple[Tensor, Dict[str, float]]:
        from trackers.train.data.pseudo import draw_teacher

        cfg: PointPseudoConfig = self.config
        k = draw_teacher(ctx.seed, ctx.step, len(cfg.teachers))
        skipped = int(batch["skipped"].sum())
        if skipped:
            self.skipped_total += skipped
            log.info("step %d: skipped %d clip(s) with too few SIFT points (%d so far on rank %d)", ctx.step,
                     skipped, self.skipped_total, ctx.rank)
        labels = self.labels(batch, k, ctx.device)
        clip = {"video": batch["video"].float(), "queries": batch["queries"].float(), "tracks": labels["tracks"],
                "visible": labels["visible"]}
        if self._model_config.online:
            valid = torch.ones(clip["queries"].shape[:2], dtype=torch.bool, device=clip["queries"].device)
        else:
            clip, valid = self._trim(clip, ctx)
        preds, _ = self._predict(model, clip)
        losses = self._losses(preds, clip, valid)
        total = losses["track"].mean()
        metrics = {"loss_track": float(total.detach()), "teacher": float(k),
                   "teacher_visible": float(labels["visible"].float().mean()), "skipped_clips": float(skipped)}
        return total, metrics

    def validate(self, model: nn.Module, batch: Any, ctx: StepContext) -> Dict[str, float]:
        raise NotImplementedError("point-pseudo has no validation set (the videos have no ground truth); evaluate "
                                  "checkpoints with `trackers-train eval points`")


# ================================================================================================ labelling entry
def precompute(config: PointPseudoConfig, *, progress: bool = True) -> int:
    """Write the labels of every clip by every teacher into ``config.labels`` (this process's shard under
    ``torchrun``); returns the number of files written here. The options are the training run's."""
    from trackers.train.data.pseudo import load_teacher, precompute_labels
    from trackers.train.eval.distributed import default_device, distributed_session

    if not config.labels:
        raise ValueError("labelling needs --labels DIR (where the labels go)")
    recipe = PointPseudoRecipe(dataclasses.replace(config, labels=None))
    if config.clip_size is None:
        recipe.build_tracker()  # the clips default to the student's resolution
    dataset = recipe.make_dataset()
    with distributed_session() as info:
        device = default_device(info) if config.device == "auto" else torch.device(config.device)
        teachers = [load_teacher(spec, device=device, dtype=config.teacher_dtype) for spec in config.teachers]
        return precompute_labels(dataset, teachers, config.labels, settings=config.label_settings(dataset.settings()),
                                 rank=info.rank, world_size=info.world_size, batch_size=config.batch_size,
                                 visibility_threshold=config.teacher_visibility, context_grid=config.context_grid,
                                 context_uniform=config.context_uniform, iters=config.teacher_iters,
                                 progress=progress and info.is_main)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m trackers.train.recipes.point_pseudo [point-pseudo options]``: precompute the pseudo-labels."""
    parser = argparse.ArgumentParser(
        prog="python -m trackers.train.recipes.point_pseudo",
        description="Precompute the pseudo-labels of `trackers-train point-pseudo` into --labels DIR (same options "
                    "as the training run; launch with torchrun to shard the videos over processes).")
    add_config_arguments(parser, PointPseudoConfig)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = config_from_args(PointPseudoConfig, args, recipe=PointPseudoRecipe.name)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    written = precompute(config, progress=config.progress)
    log.info("wrote %d label file(s) into %s", written, config.labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
