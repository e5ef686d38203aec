"""TAP-Vid point-tracking benchmarks: the released pickle files, and folders of ``.npz`` track annotations.

TAP-Vid ships its annotations as Python pickles. Every video is a dict with

* ``'video'``: ``(T, H, W, 3)`` uint8 frames -- or, in TAP-Vid-Kinetics, a list of JPEG-encoded frames (``bytes``
  per frame), decoded here with PIL;
* ``'points'``: ``(N, T, 2)`` float ``(x, y)`` normalised to ``[0, 1]`` (multiplied by the frame width and height
  to get pixels);
* ``'occluded'``: ``(N, T)`` bool, ``True`` = not visible.

Three layouts hold these dicts:

* **DAVIS** (``tapvid_davis.pkl``): one pickle holding a dict ``{video name: video dict}``;
* **RGB-Stacking** (``tapvid_rgb_stacking.pkl``): one pickle holding a list of video dicts (no names; videos
  are called ``<file stem>_<index>``);
* **Kinetics** (``tapvid_kinetics/``): a folder of shards ``0000_of_0010.pkl`` ... ``0009_of_0010.pkl``, each a
  list of video dicts (a dict of them is read in value order); videos are called ``<shard stem>_<index>``.

The official evaluation resizes every video to 256x256 (Lanczos filter, as ``mediapy.resize_video`` does) and
multiplies the normalised points by 256; ``resize=(256, 256)`` (the default) does the same, ``resize=None`` keeps the
stored size. Metrics are always measured in the 256x256 raster (see :func:`trackers.train.eval.tapvid_metrics`).

A folder of ``.npz`` files is read with :class:`trackers.train.data.readers.NpzTrackDataset` (our own annotation
format: ``video`` ``(T, H, W, 3)``, ``tracks`` ``(T, N, 2)`` pixels, ``visible`` ``(T, N)``). Its tracks are
pixel positions with pixel centres at integers, so resizing maps them centre-aligned: ``x' = (x + 0.5) * s - 0.5``
(which is how an image resize moves content).

**Security.** Unpickling can run arbitrary code embedded in the file. Only open pickles you trust, such as the
TAP-Vid files downloaded from the official source. As a safeguard the reader uses a restricted unpickler that only
builds what TAP-Vid files contain (dicts, lists, strings, bytes, numbers and numpy arrays) and refuses anything
else with an error; ``trusted=True`` lifts that restriction for a file you know to be safe.
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["PointSequence", "TapVidDataset", "load_tapvid_pickle", "RefusedPickleError", "resize_frames",
           "TAPVID_DEFAULT_RESIZE"]

PathLike = Union[str, os.PathLike]

#: ``(H, W)`` the official TAP-Vid evaluation resizes videos to.
TAPVID_DEFAULT_RESIZE: Tuple[int, int] = (256, 256)

# (module, name) pairs a TAP-Vid pickle may reference: numpy's array and scalar reconstruction (numpy 1 names
# "numpy.core", numpy 2 "numpy._core"; protocol 5 uses _frombuffer) and the bytes helper of protocol-2 pickles.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle refers to something a TAP-Vid file never holds; it was not loaded."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only the types listed in ``_ALLOWED_GLOBALS`` (plus pickle's built-in containers and scalars)."""

    def __init__(self, fh, source: str) -> None:
        super().__init__(fh)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise RefusedPickleError(
                f"{self.source!r} refers to {module}.{name}, which TAP-Vid files never contain; refusing to load it "
                "(unpickling can run code). If you trust this file, pass trusted=True (--trust-pickle).")
        if module.startswith("numpy.core") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 moved numpy.core (old name warns)
        return getattr(importlib.import_module(module), name)


def load_tapvid_pickle(path: PathLike, *, trusted: bool = False) -> Any:
    """Unpickle a TAP-Vid file. With ``trusted=False`` only plain containers and numpy arrays are built (see the
    module docstring); ``trusted=True`` uses the unrestricted :func:`pickle.load`, which runs any code the file
    holds."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            if trusted:
                return pickle.load(fh)
            return _RestrictedUnpickler(fh, str(path)).load()
        except RefusedPickleError:
            raise
        except Exception as e:  # truncated / not a pickle / wrong encoding: many types
            raise ValueError(f"{str(path)!r} is not a readable pickle file ({type(e).__name__}: {e})") from None


def resize_frames(video: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` uint8 frames to ``size = (H', W')`` with PIL's Lanczos filter (the filter of
    ``mediapy.resize_video``, which the TAP-Vid evaluation uses)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if video.shape[1:3] == (h, w):
        return video
    lanczos = getattr(Image, "Resampling", Image).LANCZOS  # Pillow < 9.1 has no Resampling enum
    out = np.empty((video.shape[0], h, w, 3), dtype=np.uint8)
    for t, frame in enumerate(video):
        out[t] = np.asarray(Image.fromarray(frame).resize((w, h), lanczos))
    return out


@dataclass
class PointSequence:
    """One evaluation video with its ground-truth point tracks.

    Attributes:
        name: video name (unique within the dataset; used for result file names).
        video: ``(T, H, W, 3)`` uint8 frames, already at the evaluation size.
        tracks: ``(T, N, 2)`` float32 ``(x, y)`` pixels in ``video``.
        visible: ``(T, N)`` bool.
    """

    name: str
    video: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray


def _decode_frames(frames: Any, where: str) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 from an array, or from a list of JPEG/PNG byte strings (TAP-Vid-Kinetics)."""
    if isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray) and frames.dtype == object):
        from PIL import Image

        decoded = []
        for t, f in enumerate(frames):
            if isinstance(f, (bytes, bytearray, np.bytes_)):
                with Image.open(io.BytesIO(bytes(f))) as im:
                    decoded.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            else:
                decoded.append(np.asarray(f))
        try:
            frames = np.stack(decoded)
        except ValueError as e:
            raise ValueError(f"{where}: frames differ in size ({e})") from None
    video = np.asarray(frames)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"{where}: 'video' must be (T, H, W, 3), got shape {video.shape}")
    if video.dtype != np.uint8:
        if not np.issubdtype(video.dtype, np.number) or (video.size and (video.min() < 0 or video.max() > 255)):
            raise ValueError(f"{where}: 'video' must be uint8 (or numbers in [0, 255]), got {video.dtype}")
        video = np.round(video).astype(np.uint8)
    return video


def _from_tapvid_example(name: str, example: Any, resize: Optional[Tuple[int, int]], where: str) -> PointSequence:
    if not isinstance(example, dict):
        raise ValueError(f"{where}: a TAP-Vid video must be a dict with 'video', 'points', 'occluded'; "
                         f"got {type(example).__name__}")
    missing = [k for k in ("video", "points", "occluded") if k not in example]
    if missing:
        raise ValueError(f"{where}: the video dict lacks {missing}; it has {sorted(map(str, example))}")
    video = _decode_frames(example["video"], where)
    points = np.asarray(example["points"], dtype=np.float64)
    occluded = np.asarray(example["occluded"])
    T = video.shape[0]
    if points.ndim != 3 or points.shape[1] != T or points.shape[2] != 2:
        raise ValueError(f"{where}: 'points' must be (N, T={T}, 2), got shape {points.shape}")
    if occluded.shape != points.shape[:2]:
        raise ValueError(f"{where}: 'occluded' must be (N, T) = {points.shape[:2]}, got {occluded.shape}")
    if resize is not None:
        video = resize_frames(video, resize)
    h, w = video.shape[1:3]
    # TAP-Vid's convention: normalised coordinates times the frame size (pure scaling)
    tracks = (points * np.array([w, h], dtype=np.float64)).transpose(1, 0, 2).astype(np.float32)
    visible = ~occluded.astype(bool).T
    return PointSequence(name=name, video=video, tracks=tracks, visible=np.ascontiguousarray(visible))


def _from_npz(name: str, arrays: Dict[str, np.ndarray], resize: Optional[Tuple[int, int]]) -> PointSequence:
    video = arrays["video"]
    if video.dtype != np.uint8:
        video = np.round(video).astype(np.uint8)
    tracks = arrays["tracks"].astype(np.float64)
    if resize is not None:
        H, W = video.shape[1:3]
        video = resize_frames(video, resize)
        scale = np.array([resize[1] / W, resize[0] / H])
        tracks = (tracks + 0.5) * scale - 0.5  # pixel centres at integers: centre-aligned resize
    return PointSequence(name=name, video=video, tracks=tracks.astype(np.float32),
                         visible=arrays["visible"].astype(bool))


class TapVidDataset:
    """Videos with ground-truth point tracks from a TAP-Vid pickle, a TAP-Vid-Kinetics shard folder, or a folder
    of ``.npz`` annotations (the layout is recognised from ``path``; see the module docstring).

    Args:
        path: ``tapvid_davis.pkl`` / ``tapvid_rgb_stacking.pkl`` (or any pickle in those layouts), a folder of
            ``*_of_*.pkl`` shards (or of other ``.pkl`` files), or a folder of ``.npz`` files.
        resize: ``(H, W)`` to resize every video to (default 256x256, the official protocol); ``None`` keeps the
            stored size.
        trusted: load pickles without the restricted unpickler (only for files you trust).

    ``len(ds)``, ``ds.names`` and ``ds[i]`` (a :class:`PointSequence`). Kinetics shards are opened one at a
    time: listing reads each shard once (so every process of a sharded run reads them all once), and ``ds[i]``
    keeps the last shard it opened in memory.
    """

    def __init__(self, path: PathLike, *, resize: Optional[Tuple[int, int]] = TAPVID_DEFAULT_RESIZE,
                 trusted: bool = False) -> None:
        self.path = Path(path)
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError(f"resize must be a positive (H, W), got {resize!r}")
        self.trusted = bool(trusted)
        self._npz = None
        self._cache: Tuple[Optional[Path], Any] = (None, None)
        self._entries: List[Tuple[Path, Any]] = []  # (file, key or index) per video
        self.names: List[str] = []
        if self.path.is_file():
            self.layout = "pickle"
            self._index_pickle(self.path)
        elif self.path.is_dir():
            shards = sorted(self.path.glob("*_of_*.pkl")) or sorted(self.path.glob("*.pkl"))
            if shards:
                self.layout = "kinetics"
                for s in shards:
                    self._index_pickle(s)
            elif any(self.path.glob("*.npz")):
                from trackers.train.data.readers import NpzTrackDataset

                self.layout = "npz"
                self._npz = NpzTrackDataset(self.path)
                self.names = [p.stem for p in self._npz.files]
            else:
                raise ValueError(f"{str(self.path)!r} holds neither TAP-Vid pickles (*.pkl) nor .npz annotations")
        else:
            raise ValueError(f"TAP-Vid data {str(self.path)!r} does not exist")
        if not self.names:
            raise ValueError(f"{str(self.path)!r} holds no videos")

    def _load_file(self, path: Path) -> Any:
        if self._cache[0] != path:
            self._cache = (None, None)  # release the previous shard before reading the next
            self._cache = (path, load_tapvid_pickle(path, trusted=self.trusted))
        return self._cache[1]

    def _index_pickle(self, path: Path) -> None:
        data = self._load_file(path)
        if isinstance(data, dict) and {"video", "points", "occluded"} <= set(data):
            raise ValueError(f"{str(path)!r} holds a single video dict; TAP-Vid files hold a dict of videos (DAVIS) "
                             "or a list of them (RGB-Stacking, Kinetics)")
        if isinstance(data, dict):
            for key in data:
                self._entries.append((path, key))
                self.names.append(str(key))
        elif isinstance(data, (list, tuple)):
            for i in range(len(data)):
                self._entries.append((path, i))
                self.names.append(f"{path.stem}_{i:04d}")
        else:
            raise ValueError(f"{str(path)!r} holds a {type(data).__name__}; a TAP-Vid pickle holds a dict "
                             "{name: video} (DAVIS) or a list of videos (RGB-Stacking, Kinetics)")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> PointSequence:
        if not -len(self) <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        index %= len(self)
        name = self.names[index]
        if self._npz is not None:
            return _from_npz(name, self._npz.load(index), self.resize)
        path, key = self._entries[index]
        data = self._load_file(path)
        return _from_tapvid_example(name, data[key], self.resize, f"{path.name}[{key!r}]")
