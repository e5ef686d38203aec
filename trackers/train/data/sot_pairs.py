"""Training pairs for single-object box trackers: a template crop and a search crop from one sequence.

A pair dataset (:class:`SOTPairDataset`) has a fixed length (pairs per pass); item ``i`` is a deterministic
function of ``(seed, i)`` -- it is the same in the main process and in any DataLoader worker, for any number of
workers. Drawing one item:

1. **Sequence.** A sequence is picked uniformly from the sources (one or more sequence collections: GOT-10k /
   LaSOT folders through :mod:`trackers.train.data.sot_datasets`, or synthetic clips through
   :class:`SyntheticSequences`). Sequences without a usable template frame are skipped.
2. **Frames.** The template frame is drawn uniformly among the frames where the target is *present* with a valid
   box (finite, positive size) -- an absent, fully occluded or out-of-view frame is never a template. The search
   frame is drawn uniformly within ``max_gap`` frames of it (either direction; the template frame itself only when
   the sequence has one frame). When the target is absent in the search frame the policy ``absent`` decides:
   ``"skip"`` draws again (up to ``max_attempts`` times, then falls back to the template frame), ``"negative"``
   keeps the pair as a negative sample (``present = False``, box all zeros: the recipes then train every score
   towards 0 and skip the box losses).
3. **Jitter** (OSTrack / LoRAT data pipeline): the box the crop is centred on is the ground truth with its size
   scaled by ``exp(N(0, 1) * scale_jitter)`` per side and its centre shifted by
   ``sqrt(w' h') * centre_jitter * (U(0, 1) - 0.5)`` per axis. Defaults: search scale 0.25 and centre 3, template
   none. For a negative search frame the template-frame box is used as the crop's reference.
4. **Crops** go through the tracker's own pipeline functions (:func:`trackers.box.pipeline.crop_transform`,
   :func:`~trackers.box.pipeline.pixel_aligned_crop`, :func:`~trackers.box.pipeline.normalize_image`,
   :func:`~trackers.box.pipeline.template_foreground_mask`): the same SiamFC context rule, pixel alignment,
   bilinear resize and ImageNet normalisation as at inference. Like the tracker, both crops are padded with the mean
   colour of the template frame, and the search box is widened to ``min_object_size`` pixels before cropping.

Items are dicts: ``template`` ``(3, St, St)`` and ``search`` ``(3, Ss, Ss)`` normalised float32 crops,
``template_mask`` ``(gt, gt)`` int64 foreground mask on the template patch grid, ``search_box`` ``(4,)`` float32
ground truth in the search crop, normalised ``xyxy`` clipped to ``[0, 1]`` (zeros for negatives), ``present`` bool,
``template_box`` ``(4,)`` the template-crop box (normalised ``xyxy``), and ``sequence`` / ``frames`` (indices).

5. **Photometric augmentation** (off by default; the recipes set their papers' values), drawn after everything
   above so that turning it on leaves the crops' geometry unchanged: colour jitter per crop (``brightness_jitter``,
   ``contrast_jitter``, ``saturation_jitter``), grayscale of both crops (``grayscale_prob``), DeiT III's 3-augment
   (``three_augment``: one of grayscale / solarize / blur, the same for both crops), and a horizontal flip
   (``flip_prob``) of both crops together or, with ``flip_each``, of each crop on its own draw. A flip mirrors the
   search box, the template box and the template mask with the image. See :mod:`trackers.train.data.photometric`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from trackers.box.pipeline import (
    CropSizes,
    crop_transform,
    normalize_image,
    pixel_aligned_crop,
    template_foreground_mask,
)
from trackers.train.data import photometric
from trackers.train.data.sot_datasets import SOTSequence, read_image
from trackers.train.data.synthetic import SyntheticBoxDataset, SyntheticConfig

__all__ = ["AUGMENTATION_FIELDS", "PairConfig", "SOTPairDataset", "SyntheticSequences", "jitter_box", "open_sources",
           "valid_boxes"]

_ABSENT = ("skip", "negative")
#: PairConfig fields of the photometric augmentation (the recipes copy them from their configs by name)
AUGMENTATION_FIELDS = ("brightness_jitter", "contrast_jitter", "saturation_jitter", "grayscale_prob", "three_augment",
                       "flip_prob", "flip_each")


@dataclass(frozen=True)
class PairConfig:
    """How training pairs are drawn and cropped.

    Attributes:
        template_factor / search_factor: crop side relative to the (jittered) box, SiamFC context rule.
        max_gap: largest frame distance between the template and the search frame.
        template_scale_jitter / template_centre_jitter: jitter of the template crop (default none).
        search_scale_jitter / search_centre_jitter: jitter of the search crop (OSTrack / LoRAT: 0.25 and 3).
        min_object_size: the search crop's box is widened to at least this many pixels per side (as at inference).
        absent: ``"skip"`` (draw another search frame) or ``"negative"`` (keep it, ``present = False``) when the
            target is absent from the search frame.
        max_attempts: draws before giving up on a sequence / a present search frame.
        brightness_jitter / contrast_jitter / saturation_jitter: colour-jitter strengths, drawn per crop
            (factor uniform in ``[max(0, 1 - s), 1 + s]``; 0 = off).
        grayscale_prob: probability that both crops are turned grey.
        three_augment: apply one of grayscale / solarize / Gaussian blur to both crops (DeiT III, LoRAT).
        flip_prob: probability of a horizontal flip; ``flip_each``: draw it for each crop on its own (LoRAT)
            instead of once for the pair (OSTrack's joint flip).
    """

    template_factor: float = 2.0
    search_factor: float = 4.0
    max_gap: int = 100
    template_scale_jitter: float = 0.0
    template_centre_jitter: float = 0.0
    search_scale_jitter: float = 0.25
    search_centre_jitter: float = 3.0
    min_object_size: float = 10.0
    absent: str = "negative"
    max_attempts: int = 20
    brightness_jitter: float = 0.0
    contrast_jitter: float = 0.0
    saturation_jitter: float = 0.0
    grayscale_prob: float = 0.0
    three_augment: bool = False
    flip_prob: float = 0.0
    flip_each: bool = False

    def __post_init__(self) -> None:
        for name in ("template_factor", "search_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PairConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("template_scale_jitter", "template_centre_jitter", "search_scale_jitter",
                     "search_centre_jitter", "min_object_size"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PairConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_gap < 0:
            raise ValueError(f"PairConfig.max_gap must be >= 0, got {self.max_gap}")
        if self.absent not in _ABSENT:
            raise ValueError(f"PairConfig.absent must be one of {_ABSENT}, got {self.absent!r}")
        if self.max_attempts < 1:
            raise ValueError(f"PairConfig.max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("brightness_jitter", "contrast_jitter", "saturation_jitter"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"PairConfig.{name} must be >= 0, got {v}")
        for name in ("grayscale_prob", "flip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PairConfig.{name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def augments(self) -> bool:
        """Whether any photometric augmentation is on."""
        return bool(self.brightness_jitter or self.contrast_jitter or self.saturation_jitter or self.grayscale_prob
                    or self.three_augment or self.flip_prob)

    def without_augmentation(self) -> "PairConfig":
        """The same sampling and cropping with every photometric augmentation off (validation pairs)."""
        return replace(self, **{name: type(getattr(self, name))() for name in AUGMENTATION_FIELDS})  # 0.0 / False


def valid_boxes(seq: SOTSequence) -> np.ndarray:
    """``(T,)`` bool: the frame has a usable target box (present flag set or unknown, finite, positive size)."""
    b = np.asarray(seq.boxes, dtype=np.float64)
    if b.shape[0] != seq.num_frames:
        return np.zeros(seq.num_frames, dtype=bool)  # only the first box is known (GOT-10k test): not trainable
    ok = np.isfinite(b).all(1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if seq.present is not None:
        ok &= np.asarray(seq.present, dtype=bool)
    return ok


def jitter_box(box: np.ndarray, scale_jitter: float, centre_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """OSTrack's box jitter of an ``xyxy`` box: size ``* exp(N(0,1) * scale_jitter)`` per side, then the centre
    moves by ``sqrt(w' h') * centre_jitter * (U(0,1) - 0.5)`` per axis. Returns the new ``xyxy`` box (float64)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    wh = np.array([x2 - x1, y2 - y1])
    c = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0])
    if scale_jitter > 0:
        wh = wh * np.exp(rng.standard_normal(2) * scale_jitter)
    if centre_jitter > 0:
        c = c + math.sqrt(float(wh[0] * wh[1])) * centre_jitter * (rng.random(2) - 0.5)
    return np.concatenate([c - wh / 2.0, c + wh / 2.0])


def _widen(box: np.ndarray, min_size: float) -> np.ndarray:
    w, h = max(box[2] - box[0], min_size), max(box[3] - box[1], min_size)
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    return np.array([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0])


class SyntheticSequences:
    """Synthetic single-object sequences (:class:`~trackers.train.data.synthetic.SyntheticBoxDataset`) as
    :class:`~trackers.train.data.sot_datasets.SOTSequence` objects, so they feed :class:`SOTPairDataset` like
    benchmark folders.

    A frame counts as *present* when the object has a visible pixel and at least ``min_visible_fraction`` of its
    area is visible (a few visible pixels are not a usable template). ``part_prob`` of the sequences follow a part
    of an object instead of a whole one, and ``twin_prob`` give the target a look-alike neighbour (see
    :class:`SyntheticBoxDataset`). The last ``cache_size`` generated clips are
    kept in memory (per process): generating a clip costs far more than cropping two frames from it.
    """

    def __init__(self, num_clips: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0, *,
                 min_visible_fraction: float = 0.1, cache_size: int = 8, part_prob: float = 0.0,
                 twin_prob: float = 0.0) -> None:
        self.clips = SyntheticBoxDataset(num_clips, config, seed, part_prob=part_prob, twin_prob=twin_prob)
        if not 0.0 <= min_visible_fraction <= 1.0:
            raise ValueError(f"min_visible_fraction must be in [0, 1], got {min_visible_fraction}")
        self.min_visible_fraction = float(min_visible_fraction)
        self.cache_size = int(cache_size)
        self._cache: "OrderedDict[int, SOTSequence]" = OrderedDict()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> SOTSequence:
        index = int(index) % len(self)
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        item = self.clips[index]
        video = item["video"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        present = item["box_visible"].numpy() & (item["visible_fraction"].numpy() >= self.min_visible_fraction)
        seq = SOTSequence(name=f"synthetic-{index}", dataset="synthetic", boxes=item["boxes"].double().numpy(),
                          frame_paths=[], video=video, present=present)
        if self.cache_size > 0:
            self._cache[index] = seq
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return seq

    def __getstate__(self) -> Dict[str, Any]:
        # DataLoader workers start with an empty cache (no need to pickle rendered clips)
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


def _frame(seq: SOTSequence, t: int) -> torch.Tensor:
    """Frame ``t`` as ``(3, H, W)`` float32 in 0..255 (only that frame is read from disk)."""
    img = seq.video[t] if seq.video is not None else read_image(seq.frame_paths[t])
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float()  # a copy: memmaps are read-only


class SOTPairDataset(torch.utils.data.Dataset):
    """``num_pairs`` seeded (template, search) training pairs from sequence collections (see the module docstring).

    Args:
        sources: sequence collections (``len`` and indexing giving :class:`SOTSequence`): ``GOT10kDataset``,
            ``LaSOTDataset``, :class:`SyntheticSequences`, or a plain list of sequences.
        sizes: the network's crop sizes (template / search side, template patch grid).
        num_pairs: dataset length (pairs per pass over the dataset).
        config: sampling and jitter settings.
        seed: item ``i`` depends only on ``(seed, i)``.
    """

    def __init__(self, sources: Sequence[Any], sizes: CropSizes, num_pairs: int, config: PairConfig = PairConfig(),
                 seed: int = 0) -> None:
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
        self.sources = list(sources)
        self.counts = [len(s) for s in self.sources]
        if not self.sources or sum(self.counts) == 0:
            raise ValueError("SOTPairDataset needs at least one non-empty sequence source")
        self.sizes, self.num_pairs, self.config, self.seed = sizes, int(num_pairs), config, int(seed)
        self._offsets = np.cumsum([0] + self.counts)

    def __len__(self) -> int:
        return self.num_pairs

    def _sequence(self, flat: int) -> SOTSequence:
        src = int(np.searchsorted(self._offsets, flat, side="right") - 1)
        return self.sources[src][int(flat - self._offsets[src])]

    def _draw(self, rng: np.random.Generator) -> Tuple[int, SOTSequence, int, int, bool]:
        """(flat sequence index, sequence, template frame, search frame, present)."""
        cfg = self.config
        total = int(self._offsets[-1])
        for _ in range(cfg.max_attempts * 5):
            flat = int(rng.integers(total))
            seq = self._sequence(flat)
            ok = valid_boxes(seq)
            candidates = np.flatnonzero(ok)
            if candidates.size == 0:
                continue
            t = int(rng.choice(candidates))
            n = seq.num_frames
            lo, hi = max(0, t - cfg.max_gap), min(n - 1, t + cfg.max_gap)
            frames = [f for f in range(lo, hi + 1) if f != t] or [t]
            s = int(rng.choice(frames))
            if ok[s] or cfg.absent == "negative":
                return flat, seq, t, s, bool(ok[s])
            for _ in range(cfg.max_attempts - 1):
                s = int(rng.choice(frames))
                if ok[s]:
                    return flat, seq, t, s, True
            return flat, seq, t, t, True  # no present frame nearby: the template frame itself
        raise ValueError(f"no sequence with a present target found in {cfg.max_attempts * 5} draws; "
                         "do the sources hold per-frame ground truth?")

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        if not -self.num_pairs <= index < self.num_pairs:
            raise IndexError(f"pair index {index} out of range for {self.num_pairs} pairs")
        index = int(index) % self.num_pairs
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        cfg, sizes = self.config, self.sizes
        flat, seq, t, s, present = self._draw(rng)

        z_frame = _frame(seq, t)
        fill = z_frame.mean(dim=(1, 2))  # the tracker pads every crop of a stream with the init frame's mean
        z_box = np.asarray(seq.boxes[t], dtype=np.float64)
        z_ref = jitter_box(z_box, cfg.template_scale_jitter, cfg.template_centre_jitter, rng)
        scale, trans = crop_transform(torch.from_numpy(z_ref), cfg.template_factor, sizes.template)
        z_crop, z_tf = pixel_aligned_crop(z_frame, scale, trans, sizes.template, fill)
        z_mask = template_foreground_mask(torch.from_numpy(z_box), z_tf, sizes.template, sizes.template_grid)

        x_frame = z_frame if s == t else _frame(seq, s)
        x_box = np.asarray(seq.boxes[s], dtype=np.float64) if present else z_box
        x_ref = jitter_box(x_box, cfg.search_scale_jitter, cfg.search_centre_jitter, rng)
        x_ref = _widen(x_ref, cfg.min_object_size)
        scale, trans = crop_transform(torch.from_numpy(x_ref), cfg.search_factor, sizes.search)
        x_crop, x_tf = pixel_aligned_crop(x_frame, scale, trans, sizes.search, fill)

        if present:
            gt = (x_tf.to_crop(torch.from_numpy(x_box)) / sizes.search).clamp(0.0, 1.0)
        else:
            gt = torch.zeros(4)
        z_norm = (z_tf.to_crop(torch.from_numpy(z_box)) / sizes.template).clamp(0.0, 1.0)
        if cfg.augments:
            z_crop, x_crop, z_mask, z_norm, gt = _augment(cfg, rng, z_crop, x_crop, z_mask, z_norm, gt, present)
        return {
            "template": normalize_image(z_crop),
            "search": normalize_image(x_crop),
            "template_mask": z_mask,
            "search_box": gt.float(),
            "present": torch.tensor(bool(present)),
            "template_box": z_norm.float(),
            "sequence": torch.tensor(flat, dtype=torch.int64),
            "frames": torch.tensor([t, s], dtype=torch.int64),
        }


def _mirror(box: torch.Tensor) -> torch.Tensor:
    """Normalised xyxy box of the horizontally flipped crop."""
    return torch.stack([1.0 - box[2], box[1], 1.0 - box[0], box[3]])


def _augment(cfg: PairConfig, rng: np.random.Generator, z_crop: torch.Tensor, x_crop: torch.Tensor,
             z_mask: torch.Tensor, z_norm: torch.Tensor, gt: torch.Tensor, present: bool):
    """Photometric augmentation of one pair (module docstring, step 5); crops are ``(3, S, S)`` in 0..255."""
    z_crop = photometric.colour_jitter(z_crop, rng, cfg.brightness_jitter, cfg.contrast_jitter, cfg.saturation_jitter)
    x_crop = photometric.colour_jitter(x_crop, rng, cfg.brightness_jitter, cfg.contrast_jitter, cfg.saturation_jitter)
    if cfg.grayscale_prob and rng.random() < cfg.grayscale_prob:
        z_crop, x_crop = photometric.grayscale(z_crop), photometric.grayscale(x_crop)
    if cfg.three_augment:
        z_crop, x_crop = photometric.three_augment([z_crop, x_crop], rng)
    if cfg.flip_prob:
        flip_z = rng.random() < cfg.flip_prob
        flip_x = rng.random() < cfg.flip_prob if cfg.flip_each else flip_z
        if flip_z:
            z_crop, z_mask, z_norm = z_crop.flip(-1), z_mask.flip(-1), _mirror(z_norm)
        if flip_x:
            x_crop = x_crop.flip(-1)
            gt = _mirror(gt) if present else gt
    return z_crop, x_crop, z_mask, z_norm, gt


def open_sources(got10k: Optional[str] = None, lasot: Optional[str] = None, synthetic_clips: int = 0,
                 synthetic: Optional[SyntheticConfig] = None, synthetic_seed: int = 0,
                 sequences: Optional[Dict[str, Any]] = None, synthetic_part_prob: float = 0.0,
                 synthetic_twin_prob: float = 0.0) -> List[Any]:
    """Sequence collections from benchmark folders and / or the synthetic generator (the recipes' data options)."""
    from trackers.train.data.sot_datasets import GOT10kDataset, LaSOTDataset

    seqs = sequences or {}
    out: List[Any] = []
    if got10k:
        out.append(GOT10kDataset(got10k, seqs.get("got10k")))
    if lasot:
        out.append(LaSOTDataset(lasot, seqs.get("lasot")))
    if synthetic_clips:
        out.append(SyntheticSequences(synthetic_clips, synthetic or SyntheticConfig(), synthetic_seed,
                                      part_prob=synthetic_part_prob, twin_prob=synthetic_twin_prob))
    if not out:
        raise ValueError("no training data: give a GOT-10k or LaSOT folder, or synthetic clips > 0")
    return out

