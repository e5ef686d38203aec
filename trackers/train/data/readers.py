"""Readers for data on disk: point-track annotations stored as ``.npz`` files and folders of videos.

* :class:`NpzTrackDataset` reads one clip per ``.npz`` file with (at least) the keys ``video`` ``(T, H, W, 3)``,
  ``tracks`` ``(T, N, 2)`` (``(x, y)``, pixel centres at integers) and ``visible`` ``(T, N)``; optional keys
  ``occluded``, ``out_of_frame`` and ``query_frame`` ``(N,)`` are passed on. Items match those of
  :class:`trackers.train.data.SyntheticPointDataset`, so real and synthetic clips are interchangeable.
* :func:`save_clip_npz` writes a :class:`~trackers.train.data.SyntheticClip` in that format (plus its boxes and
  visibility), e.g. to freeze a synthetic evaluation set.
* :class:`VideoFolder` lists the videos of a folder and decodes them with :func:`trackers.io.read_video`
  (any format PyAV/FFmpeg reads).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np
import torch

from trackers.io import read_video
from trackers.train.data.synthetic import SyntheticClip

__all__ = ["NpzTrackDataset", "VideoFolder", "save_clip_npz", "VIDEO_EXTENSIONS"]

PathLike = Union[str, os.PathLike]

#: File name endings :class:`VideoFolder` lists by default (lower case).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif",
                    ".ts", ".y4m")

_CLIP_KEYS = ("video", "tracks", "visible", "occluded", "out_of_frame", "query_frame", "boxes", "box_visible",
              "object_visible_fraction")


def save_clip_npz(clip: SyntheticClip, path: PathLike, *, compress: bool = True) -> Path:
    """Write ``clip`` to ``path`` (``.npz``): the keys :class:`NpzTrackDataset` reads plus the box ground truth
    (``boxes``, ``box_visible``, ``object_visible_fraction``) and ``seed``. Returns the path written."""
    if not isinstance(clip, SyntheticClip):
        raise ValueError(f"clip must be a SyntheticClip, got {type(clip).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz (numpy would append it silently), got {str(path)!r}")
    arrays = {k: np.asarray(getattr(clip, k)) for k in _CLIP_KEYS}
    arrays["seed"] = np.asarray(clip.seed, dtype=np.int64)
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


class NpzTrackDataset(torch.utils.data.Dataset):
    """Point-track clips stored one per ``.npz`` file in ``folder`` (sorted by file name).

    Items are dicts of tensors: ``video`` ``(T, 3, H, W)`` float in ``[0, 255]``, ``tracks`` ``(T, N, 2)``
    float32, ``visible`` ``(T, N)`` bool, ``queries`` ``(N, 3)`` rows ``(t, x, y)`` at each point's query frame
    (the stored ``query_frame`` when present, else the first visible frame; 0 for a point never visible), and
    ``occluded`` / ``out_of_frame`` when stored. A missing key or a wrong shape raises ``ValueError`` naming the
    file.
    """

    def __init__(self, folder: PathLike, *, pattern: str = "*.npz") -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"NpzTrackDataset folder {str(self.folder)!r} does not exist or is not a folder")
        self.files: List[Path] = sorted(p for p in self.folder.glob(pattern) if p.is_file())
        if not self.files:
            raise ValueError(f"no files matching {pattern!r} in {str(self.folder)!r}")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Dict[str, np.ndarray]:
        """The validated arrays of file ``index`` (``video`` stays ``(T, H, W, 3)`` as stored)."""
        path = self.files[index]
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{str(path)!r} is not a readable .npz file: {e}") from None
        return _validate(arrays, path)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        a = self.load(index)
        visible = a["visible"]
        if "query_frame" in a:
            qf = a["query_frame"].astype(np.int64)
        else:
            qf = visible.argmax(axis=0).astype(np.int64)  # 0 for points never visible
        n = np.arange(visible.shape[1])
        queries = np.concatenate([qf[:, None].astype(np.float32), a["tracks"][qf, n]], axis=1)
        item = {
            "video": torch.from_numpy(np.ascontiguousarray(a["video"])).permute(0, 3, 1, 2).float(),
            "tracks": torch.from_numpy(a["tracks"]),
            "visible": torch.from_numpy(visible),
            "queries": torch.from_numpy(queries.astype(np.float32)),
        }
        for k in ("occluded", "out_of_frame"):
            if k in a:
                item[k] = torch.from_numpy(a[k])
        return item


def _validate(a: Dict[str, np.ndarray], path: Path) -> Dict[str, np.ndarray]:
    name = str(path)
    missing = [k for k in ("video", "tracks", "visible") if k not in a]
    if missing:
        raise ValueError(f"{name!r} lacks the key(s) {missing}; it has {sorted(a)}")
    video, tracks, visible = a["video"], a["tracks"], a["visible"]
    if video.ndim != 4 or video.shape[3] != 3:
        raise ValueError(f"{name!r}: video must be (T, H, W, 3), got shape {video.shape}")
    if video.dtype != np.uint8:
        if not np.issubdtype(video.dtype, np.floating) or (video.size and (video.min() < 0 or video.max() > 255)):
            raise ValueError(f"{name!r}: video must be uint8 or float in [0, 255], got {video.dtype}")
    T = video.shape[0]
    if tracks.ndim != 3 or tracks.shape[0] != T or tracks.shape[2] != 2:
        raise ValueError(f"{name!r}: tracks must be (T={T}, N, 2), got shape {tracks.shape}")
    N = tracks.shape[1]
    if visible.shape != (T, N):
        raise ValueError(f"{name!r}: visible must be (T={T}, N={N}) like tracks, got shape {visible.shape}")
    out = dict(a)
    out["tracks"] = tracks.astype(np.float32)
    out["visible"] = visible.astype(bool)
    for k in ("occluded", "out_of_frame"):
        if k in a:
            if a[k].shape != (T, N):
                raise ValueError(f"{name!r}: {k} must be (T={T}, N={N}), got shape {a[k].shape}")
            out[k] = a[k].astype(bool)
    if "query_frame" in a:
        q = a["query_frame"]
        if q.shape != (N,) or not np.issubdtype(q.dtype, np.integer) or (N and (q.min() < 0 or q.max() >= T)):
            raise ValueError(f"{name!r}: query_frame must be (N={N},) integers in [0, {T}), got shape {q.shape} "
                             f"and dtype {q.dtype}")
    return out


class VideoFolder(torch.utils.data.Dataset):
    """The videos of ``folder`` (sorted by file name), decoded with :func:`trackers.io.read_video`.

    Args:
        folder: the folder to list (not recursive).
        extensions: file name endings to list (case-insensitive); ``None`` lists every file and leaves it to
            FFmpeg to refuse what it cannot read.
        resize, stride, max_frames, start: passed to :func:`trackers.io.read_video`.

    Items are dicts with ``video`` ``(T, 3, H, W)`` float in ``[0, 255]`` and ``path``; :meth:`read` gives the
    ``(T, H, W, 3)`` ``uint8`` array.
    """

    def __init__(self, folder: PathLike, *, extensions: Optional[Iterable[str]] = VIDEO_EXTENSIONS,
                 resize=None, stride: int = 1, max_frames: Optional[int] = None, start: int = 0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"VideoFolder folder {str(self.folder)!r} does not exist or is not a folder")
        exts = None if extensions is None else tuple(e.lower() if e.startswith(".") else "." + e.lower()
                                                     for e in extensions)
        self.paths: List[Path] = sorted(
            p for p in self.folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and (exts is None or p.name.lower().endswith(exts)))
        if not self.paths:
            raise ValueError(f"no video files in {str(self.folder)!r} (extensions: {exts})")
        self.read_kwargs = dict(resize=resize, stride=stride, max_frames=max_frames, start=start)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """Video ``index`` as a ``(T, H, W, 3)`` ``uint8`` array."""
        return read_video(self.paths[index], **self.read_kwargs)

    def __getitem__(self, index: int) -> Dict[str, object]:
        video = self.read(index)
        return {"video": torch.from_numpy(video).permute(0, 3, 1, 2).float(), "path": str(self.paths[index])}
