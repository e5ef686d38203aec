"""Single-object tracking benchmarks on disk: GOT-10k and LaSOT folder readers.

Both give :class:`SOTSequence` objects: frame paths (read lazily with PIL, one frame at a time), ground-truth
boxes as ``(x1, y1, x2, y2)`` in this package's pixel convention (pixel ``i`` covers ``[i, i + 1)``), and per-frame
presence flags.

**GOT-10k** (``GOT10kDataset``): a split folder (``train``, ``val`` or ``test``) holding ``list.txt`` (one
sequence name per line) and a folder per sequence with the frames (``00000001.jpg``, ...) and

* ``groundtruth.txt``: one ``x,y,w,h`` line per frame (top-left corner and size, 0-based continuous pixels). The
  **test** split gives only the first frame's box (one line): such a sequence has ``has_groundtruth == False``
  and can only be run to write submission files.
* ``absence.label``: one ``0``/``1`` per frame, 1 = target absent (train/val only).
* ``cover.label``: one integer ``0..8`` per frame, the visible fraction of the target in eighths; 0 = absent or
  fully occluded. The GOT-10k evaluation drops frames with ``cover == 0``.

Without ``list.txt`` every sub-folder that has a ``groundtruth.txt`` is a sequence.

**LaSOT** (``LaSOTDataset``): ``<root>/<class>/<class>-<k>/`` (e.g. ``airplane/airplane-1``) with ``img/``
(``00000001.jpg``, ...), ``groundtruth.txt`` (``x,y,w,h`` per frame, comma-separated, **1-based** pixel
coordinates from the MATLAB toolkit: 1 is subtracted from ``x`` and ``y`` on reading, and writers add it back),
``full_occlusion.txt`` and ``out_of_view.txt`` (one comma-separated line of ``0``/``1`` per frame). A frame is
*present* when neither flag is set. Absent frames usually hold the box ``0,0,0,0``, which stays all zeros. The root
may also be a single class folder (``<root>/<class>-<k>/``). The test protocol uses the 280 sequences listed in
LaSOT's ``testing_set.txt``: pass them as ``sequences``.

:func:`open_sot_dataset` recognises the layout and raises a ``ValueError`` naming the folder when it is neither.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["SOTSequence", "GOT10kDataset", "LaSOTDataset", "open_sot_dataset", "detect_sot_layout", "read_box_file",
           "read_flags", "read_image", "read_sequence_list", "IMAGE_EXTENSIONS"]

PathLike = Union[str, os.PathLike]

#: File name endings taken as frames (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

_SPLIT = re.compile(r"[,\s]+")


# ------------------------------------------------------------------------------------------------ small readers
def read_box_file(path: PathLike) -> np.ndarray:
    """``x, y, w, h`` rows of a ground-truth text file (comma, tab or space separated) as ``(T, 4)`` float64.

    ``NaN`` entries are kept (some benchmarks mark missing boxes with them). Raises ``ValueError`` naming the file
    and line for a row that is not four numbers.
    """
    path = Path(path)
    rows = []
    with open(path, "r") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = [p for p in _SPLIT.split(line) if p]
            try:
                values = [float(p) for p in parts]
            except ValueError:
                values = []
            if len(values) != 4:
                raise ValueError(f"{str(path)!r} line {lineno}: expected 4 numbers x,y,w,h, got {line!r}")
            rows.append(values)
    if not rows:
        raise ValueError(f"{str(path)!r} holds no boxes")
    return np.asarray(rows, dtype=np.float64)


def read_flags(path: PathLike) -> np.ndarray:
    """Integers of a label file (one per line, or comma-separated on one line) as a 1-D int64 array."""
    path = Path(path)
    text = path.read_text()
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    try:
        return np.asarray([int(float(p)) for p in parts], dtype=np.int64)
    except ValueError:
        bad = next(p for p in parts if not re.fullmatch(r"[-+]?\d+(\.0*)?", p))
        raise ValueError(f"{str(path)!r}: expected integer labels, found {bad!r}") from None


def read_sequence_list(spec: Union[None, PathLike, Sequence[str]]) -> Optional[List[str]]:
    """Sequence names from a list, a text file (one name per line, e.g. LaSOT's ``testing_set.txt``) or a
    comma-separated string; ``None`` passes through."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    spec_str = os.fspath(spec)
    if os.path.isfile(spec_str):
        return [ln.strip() for ln in Path(spec_str).read_text().splitlines() if ln.strip()]
    return [s.strip() for s in spec_str.split(",") if s.strip()]


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: PathLike) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` RGB ``uint8`` array (PIL; grey or RGBA images are converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ sequences
@dataclass
class SOTSequence:
    """One single-object tracking sequence.

    Attributes:
        name: sequence name (unique within its dataset; used for result file names).
        dataset: ``'got10k'``, ``'lasot'`` or another source name (e.g. ``'synthetic'``).
        boxes: ``(T, 4)`` float64 ground truth ``(x1, y1, x2, y2)``, or ``(1, 4)`` when only the first frame's box
            is known (GOT-10k test split).
        frame_paths: image files in frame order (empty when ``video`` holds the frames).
        video: ``(T, H, W, 3)`` uint8 frames held in memory, for generated data; ``None`` for data on disk.
        present: ``(T,)`` bool, the target is visible (GOT-10k: ``cover > 0``; LaSOT: neither fully occluded nor
            out of view); ``None`` when unknown.
        cover: ``(T,)`` GOT-10k cover labels (0..8), when the split has them.
        full_occlusion, out_of_view: ``(T,)`` LaSOT flags, when present.
        class_name: LaSOT class (the parent folder), else ``None``.
    """

    name: str
    dataset: str
    boxes: np.ndarray
    frame_paths: List[Path]
    video: Optional[np.ndarray] = None
    present: Optional[np.ndarray] = None
    cover: Optional[np.ndarray] = None
    full_occlusion: Optional[np.ndarray] = None
    out_of_view: Optional[np.ndarray] = None
    class_name: Optional[str] = None

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0]) if self.video is not None else len(self.frame_paths)

    @property
    def has_groundtruth(self) -> bool:
        """True when every frame has a ground-truth box (False for GOT-10k test: first box only)."""
        return self.boxes.shape[0] == self.num_frames

    @property
    def init_box(self) -> np.ndarray:
        """``(4,)`` xyxy box of frame 0, the tracker's initialisation."""
        return self.boxes[0].copy()

    def image_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the frames (reads only the first image's header)."""
        if self.video is not None:
            return int(self.video.shape[1]), int(self.video.shape[2])
        from PIL import Image

        with Image.open(self.frame_paths[0]) as im:
            w, h = im.size
        return int(h), int(w)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames one at a time, ``(H, W, 3)`` uint8 RGB (files are decoded on demand, so a long sequence
        never sits in memory whole)."""
        if self.video is not None:
            yield from self.video
            return
        for p in self.frame_paths:
            yield read_image(p)

    def read_frames(self) -> np.ndarray:
        """All frames as one ``(T, H, W, 3)`` uint8 array."""
        if self.video is not None:
            return self.video
        return np.stack(list(self.frames()))


# ------------------------------------------------------------------------------------------------ datasets
class _SOTDataset:
    """Shared list behaviour: ``len``, indexing (a :class:`SOTSequence`, built on access), ``names``."""

    dataset_name = ""

    def __init__(self, root: PathLike, folders: List[Path], sequences: Union[None, PathLike, Sequence[str]]):
        self.root = Path(root)
        wanted = read_sequence_list(sequences)
        if wanted is not None:
            by_name = {f.name: f for f in folders}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise ValueError(f"sequence(s) {missing[:5]} not found in {self.dataset_name} folder "
                                 f"{str(self.root)!r}")
            folders = [by_name[n] for n in wanted]
        self.folders = folders

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.folders]

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> SOTSequence:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence index {index} out of range for {len(self)} sequences")
        return self._load(self.folders[index])

    def _load(self, folder: Path) -> SOTSequence:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_length(values: np.ndarray, T: int, path: Path) -> np.ndarray:
    if values.shape[0] != T:
        raise ValueError(f"{str(path)!r} has {values.shape[0]} entries but the sequence has {T} frames")
    return values


class GOT10kDataset(_SOTDataset):
    """A GOT-10k split folder (see the module docstring for the layout).

    Args:
        root: the split folder (the one holding ``list.txt`` and the sequence folders).
        sequences: optional subset (names, a comma-separated string or a file with one name per line), in the
            order to run them.
    """

    dataset_name = "GOT-10k"

    def __init__(self, root: PathLike, sequences: Union[None, PathLike, Sequence[str]] = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"GOT-10k folder {str(root)!r} does not exist or is not a folder")
        listing = root / "list.txt"
        if listing.is_file():
            names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
            folders = [root / n for n in names]
            for f in folders:
                if not (f / "groundtruth.txt").is_file():
                    raise ValueError(f"{str(listing)!r} names {f.name!r}, but {str(f)!r} has no groundtruth.txt")
        else:
            folders = sorted(d for d in root.iterdir() if d.is_dir() and (d / "groundtruth.txt").is_file())
        if not folders:
            raise ValueError(f"{str(root)!r} is not a GOT-10k split folder: no list.txt and no sub-folder with a "
                             "groundtruth.txt")
        super().__init__(root, folders, sequences)

    def _load(self, folder: Path) -> SOTSequence:
        frames = _image_files(folder)
        if not frames:
            raise ValueError(f"GOT-10k sequence folder {str(folder)!r} holds no image files {IMAGE_EXTENSIONS}")
        T = len(frames)
        gt_path = folder / "groundtruth.txt"
        xywh = read_box_file(gt_path)
        if xywh.shape[0] not in (1, T):
            raise ValueError(f"{str(gt_path)!r} has {xywh.shape[0]} boxes but {str(folder)!r} has {T} frames "
                             "(expected one box per frame, or only the first box as in the test split)")
        cover = absence = None
        if (folder / "cover.label").is_file():
            cover = _check_length(read_flags(folder / "cover.label"), T, folder / "cover.label")
        if (folder / "absence.label").is_file():
            absence = _check_length(read_flags(folder / "absence.label"), T, folder / "absence.label")
        if cover is not None:
            present = cover > 0
        elif absence is not None:
            present = absence == 0
        else:
            present = None
        return SOTSequence(name=folder.name, dataset="got10k", boxes=_xywh_to_xyxy(xywh), frame_paths=frames,
                           present=present, cover=cover)


class LaSOTDataset(_SOTDataset):
    """A LaSOT folder: ``<root>/<class>/<class>-<k>/`` (or one class folder, ``<root>/<class>-<k>/``).

    Args:
        root: the LaSOT root (or a class folder).
        sequences: optional subset, e.g. the path of LaSOT's ``testing_set.txt`` for the test protocol.
    """

    dataset_name = "LaSOT"

    def __init__(self, root: PathLike, sequences: Union[None, PathLike, Sequence[str]] = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"LaSOT folder {str(root)!r} does not exist or is not a folder")
        folders = _lasot_sequence_folders(root)
        if not folders:
            raise ValueError(f"{str(root)!r} is not a LaSOT folder: no <class>/<class>-<k>/ (or <class>-<k>/) "
                             "sub-folder with img/ and groundtruth.txt")
        super().__init__(root, folders, sequences)

    def _load(self, folder: Path) -> SOTSequence:
        img = folder / "img"
        frames = _image_files(img)
        if not frames:
            raise ValueError(f"LaSOT frame folder {str(img)!r} holds no image files {IMAGE_EXTENSIONS}")
        T = len(frames)
        gt_path = folder / "groundtruth.txt"
        xywh = _check_length(read_box_file(gt_path), T, gt_path)
        # 1-based (MATLAB) corners -> 0-based; the all-zero "absent" marker stays all zeros
        marker = np.all(xywh == 0, axis=1)
        xywh[~marker, :2] -= 1.0
        flags = {}
        for key in ("full_occlusion", "out_of_view"):
            p = folder / f"{key}.txt"
            flags[key] = _check_length(read_flags(p), T, p) if p.is_file() else None
        present = None
        if flags["full_occlusion"] is not None or flags["out_of_view"] is not None:
            present = np.ones(T, dtype=bool)
            for v in flags.values():
                if v is not None:
                    present &= v == 0
        return SOTSequence(name=folder.name, dataset="lasot", boxes=_xywh_to_xyxy(xywh), frame_paths=frames,
                           present=present, full_occlusion=flags["full_occlusion"],
                           out_of_view=flags["out_of_view"], class_name=folder.parent.name)


def _is_lasot_sequence(d: Path) -> bool:
    return d.is_dir() and (d / "img").is_dir() and (d / "groundtruth.txt").is_file()


def _lasot_sequence_folders(root: Path) -> List[Path]:
    direct = sorted(d for d in root.iterdir() if _is_lasot_sequence(d))
    nested = sorted(s for c in root.iterdir() if c.is_dir() and not _is_lasot_sequence(c)
                    for s in c.iterdir() if _is_lasot_sequence(s))
    return direct + nested


def detect_sot_layout(root: PathLike) -> str:
    """``'got10k'`` or ``'lasot'`` for a folder in one of those layouts; ``ValueError`` naming it otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"SOT dataset folder {str(root)!r} does not exist or is not a folder")
    if _lasot_sequence_folders(root):
        return "lasot"
    if (root / "list.txt").is_file() or any(d.is_dir() and (d / "groundtruth.txt").is_file()
                                            for d in root.iterdir()):
        return "got10k"
    splits = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "list.txt").is_file())
    if splits:
        raise ValueError(f"{str(root)!r} holds GOT-10k splits {splits}: pass one split folder, e.g. "
                         f"{str(root / splits[0])!r}")
    raise ValueError(
        f"{str(root)!r} is neither a GOT-10k split folder (list.txt and <seq>/groundtruth.txt with the frames next "
        "to it) nor a LaSOT folder (<class>/<class>-<k>/ with img/ and groundtruth.txt)")


def open_sot_dataset(root: PathLike, sequences: Union[None, PathLike, Sequence[str]] = None,
                     layout: str = "auto") -> _SOTDataset:
    """Open a GOT-10k or LaSOT folder; ``layout='auto'`` recognises which (see :func:`detect_sot_layout`)."""
    if layout == "auto":
        layout = detect_sot_layout(root)
    if layout == "got10k":
        return GOT10kDataset(root, sequences)
    if layout == "lasot":
        return LaSOTDataset(root, sequences)
    raise ValueError(f"layout must be 'auto', 'got10k' or 'lasot', got {layout!r}")
