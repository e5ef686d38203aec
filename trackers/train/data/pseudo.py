"""Data for pseudo-label training on real, unannotated videos (CoTracker3, Karaev et al. 2024, section 3.1).

The pipeline, per training sample:

1. **Clip** (:class:`VideoClipDataset`): a window of ``clip_frames`` consecutive frames at a random offset of one
   video of a folder (any format PyAV reads), resized to ``size``. A video shorter than the window is extended by
   playing it backwards and forwards again until it is long enough (what the official real-data loader does).
   Offsets are drawn from a generator seeded by ``(seed, item)``, so item ``i`` is always the same clip.
2. **Queries** (:func:`sift_queries`): SIFT keypoints (OpenCV) on 8 random frames of the clip drawn from its first
   quarter (the paper samples "with a bias towards the beginning of the video"; the official sampler draws the
   frames from ``[0, T/4]``), ``ceil(N / 8)`` keypoints per frame (the strongest responses), ``N`` (384 in the
   paper) queries in all. SIFT fires on well-textured, "good to track" points and stays silent on ambiguous regions;
   a clip where one of the key frames yields too few keypoints is **skipped** (the paper skips such videos to keep
   the pseudo-labels clean): the item moves on to the next clip of the listing and reports how many it skipped.
3. **Teacher labels** (:func:`teacher_labels`): a frozen teacher tracks the queries through the clip. As in the
   official script, online teachers get a 5x5 grid of extra context points on the first frame and offline teachers
   100 extra points spread uniformly over space and time; the extra points are dropped afterwards. A point counts as
   visible where the teacher's ``sigmoid(visibility) > 0.9`` (the official rule for every CoTracker3 teacher; the
   confidence is not used).
4. **Precomputed labels** (:func:`precompute_labels`, :func:`read_label`): the same labels written once per
   (teacher, item) as ``teacher<k>/<item>.npz`` under a folder with a ``manifest.json`` of the settings they were
   made with. They hold the keys the evaluation runner's ``eval label`` writes (``tracks``, ``visible``,
   ``visibility``, ``confidence``, ``queries``, ``video_path``, ``model``, ``image_size``) plus ``item``, ``clip``
   and ``start``. Labelling shards items over ``torchrun`` processes (rank ``r`` labels items ``r, r+K, ...``) and
   skips files that exist, so an interrupted run resumes.

:func:`draw_teacher` picks the teacher of a training step: uniformly, from the run's seed and the step only (every
process and every resume draws the same one).

SIFT needs OpenCV (``pip install 'trackers[baselines]'``, which installs ``opencv-contrib-python-headless``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trackers.train.data.readers import VideoFolder

__all__ = [
    "OPENCV_EXTRA",
    "require_opencv",
    "sift_keypoints",
    "sift_queries",
    "key_frame_count",
    "seeded_generator",
    "draw_teacher",
    "VideoClipDataset",
    "load_teacher",
    "context_queries",
    "teacher_labels",
    "label_path",
    "write_label",
    "read_label",
    "write_manifest",
    "check_manifest",
    "precompute_labels",
    "MANIFEST_NAME",
]

log = logging.getLogger("trackers.train")

#: The pip extra that installs OpenCV with SIFT.
OPENCV_EXTRA = "baselines"
MANIFEST_NAME = "manifest.json"
PathLike = Union[str, os.PathLike]


# ================================================================================================ randomness
def seeded_generator(*keys: Any) -> torch.Generator:
    """A CPU generator seeded from the hash of ``keys`` (same draws in any process, on any resume)."""
    text = ":".join(str(k) for k in keys)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(seed)


def draw_teacher(seed: int, step: int, num_teachers: int) -> int:
    """Index of the teacher that labels step ``step``: uniform over ``num_teachers``, a function of seed and step.

    All micro-batches and all processes of a step share it (the paper draws one teacher per batch).
    """
    if num_teachers < 1:
        raise ValueError(f"num_teachers must be >= 1, got {num_teachers}")
    return int(torch.randint(0, num_teachers, (1,), generator=seeded_generator("teacher", seed, step)))


# ================================================================================================ SIFT queries
def require_opencv():
    """The ``cv2`` module with SIFT, or an ImportError that names the extra to install."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError(
            "SIFT query sampling for pseudo-label training needs OpenCV: install it with "
            f"`pip install 'trackers[{OPENCV_EXTRA}]'` (opencv-contrib-python-headless)") from err
    if not hasattr(cv2, "SIFT_create"):
        raise ImportError(f"this OpenCV build ({getattr(cv2, '__version__', '?')}) has no SIFT (OpenCV >= 4.4 "
                          f"has it); install `pip install 'trackers[{OPENCV_EXTRA}]'`")
    return cv2


def sift_keypoints(frame: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` SIFT keypoints ``(k, 2)`` float32 ``(x, y)`` of an RGB ``uint8`` frame, strongest first.

    Positions are OpenCV's sub-pixel keypoint centres (pixel centres at integers, as everywhere in ``trackers``).
    """
    cv2 = require_opencv()
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) RGB, got shape {frame.shape}")
    gray = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    # SIFT reports a point once per dominant orientation: ask for extra, keep the strongest distinct positions
    found = cv2.SIFT_create(nfeatures=2 * int(count) + 8).detect(gray, None)
    found = sorted(found, key=lambda k: -k.response)
    out: List[Tuple[float, float]] = []
    seen = set()
    for k in found:
        key = (round(k.pt[0], 3), round(k.pt[1], 3))
        if key in seen:
            continue
        seen.add(key)
        out.append(k.pt)
        if len(out) == count:
            break
    return np.asarray(out, dtype=np.float32).reshape(-1, 2)


def key_frame_count(clip_frames: int, num_frames: int, start_fraction: float) -> int:
    """How many distinct key frames :func:`sift_queries` uses: ``num_frames``, or fewer for a short first part."""
    return min(int(num_frames), min(clip_frames - 1, int(clip_frames * start_fraction)) + 1)


def sift_queries(frames: np.ndarray, num_points: int, generator: torch.Generator, *, num_frames: int = 8,
                 start_fraction: float = 0.25) -> Tuple[Optional[np.ndarray], int]:
    """Query points ``(num_points, 3)`` rows ``(t, x, y)`` from SIFT keypoints of random early frames of a clip.

    ``num_frames`` distinct frames are drawn from ``[0, floor(T * start_fraction)]`` (fewer when that range is
    shorter); each contributes its ``ceil(num_points / k)`` strongest keypoints, and the first ``num_points`` rows
    are kept (frames in increasing order).

    Returns:
        ``(queries, fewest)``: ``queries`` float32, or ``None`` when some key frame gave fewer keypoints than its
        share (the clip should be skipped); ``fewest`` is the smallest number found on a key frame.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if num_points < 1 or num_frames < 1:
        raise ValueError(f"num_points and num_frames must be >= 1, got {num_points} and {num_frames}")
    if not 0.0 <= start_fraction <= 1.0:
        raise ValueError(f"start_fraction must be in [0, 1], got {start_fraction}")
    T = frames.shape[0]
    choices = min(T - 1, int(T * start_fraction)) + 1
    k = key_frame_count(T, num_frames, start_fraction)
    picked = torch.randperm(choices, generator=generator)[:k].sort().values.tolist()
    per = math.ceil(num_points / k)
    rows = []
    fewest = per
    for t in picked:
        xy = sift_keypoints(frames[t], per)
        fewest = min(fewest, xy.shape[0])
        if xy.shape[0] < per:
            return None, fewest
        rows.append(np.concatenate([np.full((per, 1), float(t), np.float32), xy], axis=1))
    return np.concatenate(rows, axis=0)[:num_points], fewest


# ================================================================================================ clips
def _ping_pong(frames: np.ndarray, length: int) -> np.ndarray:
    """Extend a short clip by appending its time-reversed copy until it has at least ``length`` frames."""
    while frames.shape[0] < length:
        frames = np.concatenate([frames, frames[::-1]], axis=0)
    return frames


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of the videos of a folder, with SIFT queries: the student's and teacher's input.

    Item ``i`` is clip ``i // num_videos`` of video ``i % num_videos`` (so neighbouring items come from different
    videos); ``len = num_videos * clips_per_video``. If that clip is skipped (too few SIFT keypoints on a key frame)
    the item takes the next clip of the listing that is not, and says how many it skipped.

    Items are dicts: ``video`` ``(T, 3, H, W)`` uint8, ``queries`` ``(N, 3)`` float32 rows ``(t, x, y)`` in clip
    pixels, ``item`` (this index), ``clip`` (the clip used), ``start`` (its first frame in the video, in the
    ping-pong extended timeline for short videos), ``skipped`` (clips passed over) and ``path``.

    Args:
        folder: the video folder (see :class:`~trackers.train.data.readers.VideoFolder`).
        clip_frames: frames per clip.
        size: ``(H, W)`` clips are resized to.
        num_points: queries per clip.
        clips_per_video: distinct random windows per video.
        seed: seeds the windows and the key frames.
        sift_frames: key frames SIFT runs on.
        sift_start_fraction: key frames come from the first ``sift_start_fraction`` of the clip.
    """

    def __init__(self, folder: PathLike, *, clip_frames: int, size: Tuple[int, int], num_points: int,
                 clips_per_video: int = 1, seed: int = 0, sift_frames: int = 8, sift_start_fraction: float = 0.25):
        for name, v in (("clip_frames", clip_frames), ("num_points", num_points), ("clips_per_video", clips_per_video),
                        ("sift_frames", sift_frames)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        h, w = (int(v) for v in size)
        if h < 8 or w < 8:
            raise ValueError(f"size must be (H, W) of at least 8x8 pixels, got {tuple(size)}")
        require_opencv()  # fail at start-up, not in the first batch
        self.folder = VideoFolder(folder)
        self.paths = self.folder.paths
        self.clip_frames, self.size, self.num_points = int(clip_frames), (h, w), int(num_points)
        self.clips_per_video, self.seed = int(clips_per_video), int(seed)
        self.sift_frames, self.sift_start_fraction = int(sift_frames), float(sift_start_fraction)
        self._num_frames: Dict[int, int] = {}
        self._rejected: Dict[int, int] = {}   # clip -> fewest keypoints (this process)

    def __len__(self) -> int:
        return len(self.paths) * self.clips_per_video

    def settings(self) -> Dict[str, Any]:
        """What determines the clips and queries (recorded with precomputed labels)."""
        return {"videos": [p.name for p in self.paths], "clip_frames": self.clip_frames, "size": list(self.size),
                "num_points": self.num_points, "clips_per_video": self.clips_per_video, "seed": self.seed,
                "sift_frames": self.sift_frames, "sift_start_fraction": self.sift_start_fraction}

    def _frame_count(self, v: int) -> int:
        if v not in self._num_frames:
            from trackers.io import video_info

            self._num_frames[v] = int(video_info(self.paths[v]).num_frames)
        return self._num_frames[v]

    def read_clip(self, clip: int) -> Tuple[np.ndarray, int]:
        """``(frames (T, H, W, 3) uint8, start)`` of clip ``clip`` (deterministic)."""
        from trackers.io import read_video

        v = clip % len(self.paths)
        g = seeded_generator("clip", self.seed, clip)
        T = self.clip_frames
        n = self._frame_count(v)
        if n >= T:
            start = int(torch.randint(0, n - T + 1, (1,), generator=g))
            frames = read_video(self.paths[v], resize=self.size, start=start, max_frames=T)
            # a header that over-counts frames leaves the window short: extend it like a short video
            return _ping_pong(frames, T)[:T], start
        frames = _ping_pong(read_video(self.paths[v], resize=self.size), T)
        start = int(torch.randint(0, frames.shape[0] - T + 1, (1,), generator=g))
        return frames[start:start + T], start

    def candidate(self, clip: int) -> Optional[Dict[str, Any]]:
        """Clip ``clip`` with its queries, or ``None`` when SIFT finds too few points on one of its key frames."""
        if clip in self._rejected:
            return None
        frames, start = self.read_clip(clip)
        g = seeded_generator("sift", self.seed, clip)
        queries, fewest = sift_queries(frames, self.num_points, g, num_frames=self.sift_frames,
                                       start_fraction=self.sift_start_fraction)
        if queries is None:
            self._rejected[clip] = fewest
            log.warning("skipping %s (clip %d, frames %d-%d): SIFT found only %d keypoint(s) on a key frame, "
                        "%d needed", self.paths[clip % len(self.paths)].name, clip, start, start + self.clip_frames - 1,
                        fewest, math.ceil(self.num_points / key_frame_count(self.clip_frames, self.sift_frames,
                                                                           self.sift_start_fraction)))
            return None
        return {"video": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous(),
                "queries": torch.from_numpy(queries), "start": start,
                "path": str(self.paths[clip % len(self.paths)])}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"item {index} out of range for {n} clips")
        for skipped in range(n):
            clip = (index + skipped) % n
            item = self.candidate(clip)
            if item is not None:
                item.update(item=index, clip=clip, skipped=skipped)
                return item
        raise ValueError(f"no clip of the {len(self.paths)} video(s) in {str(self.folder.folder)!r} has "
                         f"{self.num_points} SIFT points on its key frames; use fewer --num-points or a larger "
                         "--clip-size")


def collate_clips(items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Batch :class:`VideoClipDataset` items: stacked ``video`` / ``queries``, ``item``/``clip``/``start``/
    ``skipped`` as long tensors, ``path`` as a list."""
    out: Dict[str, Any] = {"video": torch.stack([it["video"] for it in items]),
                           "queries": torch.stack([it["queries"] for it in items]).float()}
    for k in ("item", "clip", "start", "skipped"):
        out[k] = torch.tensor([int(it[k]) for it in items], dtype=torch.long)
    out["path"] = [it["path"] for it in items]
    return out


# ================================================================================================ teachers
def load_teacher(spec: str, device: Any = None, dtype: Any = None):
    """A frozen teacher: ``PointTracker.from_pretrained(spec)`` (registry name, Hub repo or saved folder) in eval
    mode with ``requires_grad`` off, on ``device`` in ``dtype`` (e.g. ``"bfloat16"``)."""
    from trackers import PointTracker

    teacher = PointTracker.from_pretrained(spec, device=device, dtype=dtype)
    teacher.model.eval()
    teacher.model.requires_grad_(False)
    return teacher


def context_queries(online: bool, num_frames: int, height: int, width: int, generator: torch.Generator, *,
                    grid: int = 5, uniform: int = 100) -> Tensor:
    """Extra points ``(M, 3)`` that give a teacher context (dropped from its output).

    Online teachers: a ``grid x grid`` grid on frame 0 (margin ``W/64``, CoTracker's grid layout). Offline teachers:
    ``uniform`` points uniform over frames and over ``[0, W) x [0, H)``. ``grid`` / ``uniform`` 0 adds none.
    """
    if online:
        if grid <= 0:
            return torch.zeros(0, 3)
        from trackers.train.eval.runner import grid_queries

        return torch.from_numpy(grid_queries(grid, height, width, (0,)))
    if uniform <= 0:
        return torch.zeros(0, 3)
    t = torch.randint(0, num_frames, (uniform, 1), generator=generator).float()
    xy = torch.rand(uniform, 2, generator=generator) * torch.tensor([float(width - 1), float(height - 1)])
    return torch.cat([t, xy], dim=1)


@torch.no_grad()
def teacher_labels(teacher: Any, video: Tensor, queries: Tensor, *, generators: Sequence[torch.Generator],
                   visibility_threshold: float = 0.9, context_grid: int = 5, context_uniform: int = 100,
                   iters: Optional[int] = None) -> Dict[str, Tensor]:
    """Pseudo-labels of a batch of clips from one teacher (a :class:`trackers.PointTracker`).

    Args:
        video: ``(B, T, 3, H, W)`` in [0, 255] (any dtype).
        queries: ``(B, N, 3)`` rows ``(t, x, y)`` in clip pixels.
        generators: one per clip, for the offline teacher's random context points.
        visibility_threshold: visible where the teacher's ``sigmoid(visibility)`` exceeds it.
        iters: refinement iterations (default: the teacher's ``settings.iters``).

    Returns:
        ``tracks`` ``(B, T, N, 2)`` float32 in clip pixels, ``visible`` ``(B, T, N)`` bool, ``visibility`` and
        ``confidence`` probabilities ``(B, T, N)`` float32. Computed without autocast, in the teacher's dtype, so
        the labels do not depend on the student's mixed precision.
    """
    if len(generators) != video.shape[0]:
        raise ValueError(f"need one generator per clip: {len(generators)} for a batch of {video.shape[0]}")
    model = teacher.model
    cfg = model.config
    B, T, _, H, W = video.shape
    N = queries.shape[1]
    device = next(model.parameters()).device
    extra = [context_queries(bool(cfg.online), T, H, W, g, grid=context_grid, uniform=context_uniform)
             for g in generators]
    q = torch.cat([queries.float().cpu(), torch.stack(extra)], dim=1).to(device)
    v = video.to(device).float()
    mh, mw = cfg.model_resolution
    scale = torch.tensor([(mw - 1) / (W - 1), (mh - 1) / (H - 1)], device=device)
    if (H, W) != (mh, mw):
        # the teacher sees the clip at its own resolution, as its predictor would feed it
        v = F.interpolate(v.flatten(0, 1), (mh, mw), mode="bilinear", align_corners=True).view(B, T, 3, mh, mw)
        q = torch.cat([q[..., :1], q[..., 1:] * scale], dim=-1)
    with torch.autocast(device.type, enabled=False):
        tracks, vis, conf = model(v, q, teacher.settings.iters if iters is None else int(iters))
    tracks = tracks[:, :, :N].float()
    if (H, W) != (mh, mw):
        tracks = tracks / scale
    vis, conf = vis[:, :, :N].float(), conf[:, :, :N].float()
    return {"tracks": tracks, "visible": vis > visibility_threshold, "visibility": vis, "confidence": conf}


# ================================================================================================ label files
def label_path(root: PathLike, teacher: int, item: int) -> Path:
    """File of the labels of ``item`` by teacher number ``teacher``: ``root/teacher<k>/<item>.npz``."""
    return Path(root) / f"teacher{int(teacher)}" / f"{int(item):07d}.npz"


def write_label(path: PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write one label file atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:  # a file handle: numpy would append ".npz" to the temporary name
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path


def read_label(path: PathLike, *, num_frames: Optional[int] = None, num_points: Optional[int] = None
               ) -> Dict[str, np.ndarray]:
    """Read a label file; ValueError names the file when a key is missing or a shape is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pseudo-label file {str(path)!r}; make the labels with "
                                "`python -m trackers.train.recipes.point_pseudo --labels DIR ...` (same options as "
                                "the training run) or train without --labels to label on the fly")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in ("tracks", "visible", "queries") if k not in arrays]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the key(s) {missing}; it has {sorted(arrays)}")
    T, N = arrays["tracks"].shape[:2]
    if arrays["tracks"].shape != (T, N, 2) or arrays["visible"].shape != (T, N) or arrays["queries"].shape != (N, 3):
        raise ValueError(f"{str(path)!r}: shapes tracks {arrays['tracks'].shape}, visible {arrays['visible'].shape}, "
                         f"queries {arrays['queries'].shape} do not fit together")
    if (num_frames is not None and T != num_frames) or (num_points is not None and N != num_points):
        raise ValueError(f"{str(path)!r} holds {T} frames x {N} points; this run uses {num_frames} x {num_points}")
    return arrays


def write_manifest(root: PathLike, settings: Mapping[str, Any]) -> Path:
    """Record the labelling settings in ``root/manifest.json``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_plain(settings), indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def check_manifest(root: PathLike, settings: Mapping[str, Any], *, must_exist: bool = True) -> None:
    """ValueError naming every setting in which ``root/manifest.json`` differs from ``settings``."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        if must_exist:
            raise FileNotFoundError(f"{str(Path(root))!r} has no {MANIFEST_NAME}: it is not a folder of precomputed "
                                    "pseudo-labels (make them with `python -m trackers.train.recipes.point_pseudo "
                                    "--labels DIR ...`)")
        return
    stored = json.loads(path.read_text())
    want = _plain(settings)
    diff = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
    if diff:
        detail = "; ".join(f"{k}: labels {stored.get(k)!r} vs run {want.get(k)!r}" for k in diff)
        raise ValueError(f"the labels in {str(Path(root))!r} were made with other settings ({detail}); use the "
                         "labelling options of this run or another --labels folder")


def precompute_labels(dataset: VideoClipDataset, teachers: Sequence[Any], root: PathLike, *,
                      settings: Mapping[str, Any], rank: int = 0, world_size: int = 1, batch_size: int = 1,
                      visibility_threshold: float = 0.9, context_grid: int = 5, context_uniform: int = 100,
                      iters: Optional[int] = None, progress: bool = False) -> int:
    """Label every item of ``dataset`` with every teacher; this process takes items ``rank, rank+world_size, ...``.

    Files that exist already are kept (an interrupted run resumes). ``settings`` goes into the manifest (rank 0
    writes it; it must match an existing one). Returns the number of files this process wrote.
    """
    root = Path(root)
    check_manifest(root, settings, must_exist=False)
    if rank == 0:
        write_manifest(root, settings)
    mine = list(range(rank, len(dataset), world_size))
    todo = [i for i in mine if not all(label_path(root, k, i).is_file() for k in range(len(teachers)))]
    names = [str(n) for n in settings.get("teachers", [])]
    written = 0
    skipped = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="pseudo-labels", unit="clip", disable=not progress)
    for a in range(0, len(todo), batch_size):
        items = [dataset[i] for i in todo[a:a + batch_size]]
        skipped += sum(int(it["skipped"]) for it in items)
        batch = collate_clips(items)
        for k, teacher in enumerate(teachers):
            gens = [seeded_generator("context", dataset.seed, int(i), k) for i in batch["item"]]
            out = teacher_labels(teacher, batch["video"], batch["queries"], generators=gens,
                                 visibility_threshold=visibility_threshold, context_grid=context_grid,
                                 context_uniform=context_uniform, iters=iters)
            H, W = dataset.size
            for b, it in enumerate(items):
                write_label(label_path(root, k, it["item"]), {
                    "tracks": out["tracks"][b].cpu().numpy(), "visible": out["visible"][b].cpu().numpy(),
                    "visibility": out["visibility"][b].cpu().numpy(),
                    "confidence": out["confidence"][b].cpu().numpy(), "queries": it["queries"].numpy(),
                    "video_path": np.array(it["path"]),
                    "model": np.array(names[k] if k < len(names) else f"teacher{k}"),
                    "image_size": np.array([H, W], dtype=np.int64), "item": np.int64(it["item"]),
                    "clip": np.int64(it["clip"]), "start": np.int64(it["start"])})
                written += 1
        bar.update(len(items))
    bar.close()
    if skipped:
        log.info("labelling skipped %d clip(s) with too few SIFT points", skipped)
    return written
