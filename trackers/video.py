"""The one place that turns user frames into tensors.

Conventions, shared by every tracker, the IO helpers and the visualisation:

* **Frames** are RGB. A clip is ``(T, H, W, 3)`` (channels last, what video readers give) or ``(T, 3, H, W)``
  (channels first, what networks use), as a numpy array or a torch tensor, ``uint8`` or floating point with values
  in ``[0, 255]``; a list of equally sized frames works too. A single frame is ``(H, W, 3)`` or ``(3, H, W)``. A
  batch of clips adds a leading ``B``. Trackers also accept a path to a video file wherever a clip is (they open it
  with :mod:`trackers.io`; this module handles arrays only).
* **Value range.** Values must lie in ``[0, 255]``. Other integer types are accepted when their values do;
  16-bit images, ImageNet-normalised frames (negative values) and ``[0, 1]`` floats are refused with a message that
  says how to convert them, because a network trained on 0..255 frames would silently produce garbage on them.
* **Points** are ``(t, x, y)``: frame index, then pixel coordinates of the input video, x to the right, y down,
  with pixel centres at integer coordinates (the top-left pixel's centre is ``(0, 0)``).
* **Boxes** are ``(x1, y1, x2, y2)`` in continuous input pixels: pixel ``i`` covers ``[i, i + 1)``, so a box
  ``(x, y, w, h)`` is ``(x, y, x + w, y + h)``. See :mod:`trackers.geometry` for conversions.

Ambiguity: a frame that is 3 pixels high or wide is read as channels-first/-last by where the 3 sits; when both
axes are 3 the channels-last reading wins (that is what decoders produce).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Union

import numpy as np
import torch
from trackers.errors import InputError

__all__ = ["VideoLike", "FrameLike", "as_video", "as_frame", "iter_input_frames", "check_value_range"]

VideoLike = Union[np.ndarray, torch.Tensor, list]
FrameLike = Union[np.ndarray, torch.Tensor]

# Float frames may overshoot [0, 255] by a little after resampling (bilinear/bicubic ringing); more than this is
# a different convention.
_RANGE_SLACK = 1.0


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or x.dtype.kind not in "uif":
            raise InputError(f"{name} must hold numbers (uint8 or float in [0, 255]), got numpy dtype {x.dtype}")
        if x.dtype.kind == "u" and x.dtype != np.uint8:
            x = x.astype(np.int64)  # torch has no uint16/uint32 arithmetic; values are checked afterwards
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)) and x and all(isinstance(f, (np.ndarray, torch.Tensor)) for f in x):
        frames = [_to_tensor(f, f"{name}[{i}]") for i, f in enumerate(x)]
        shapes = sorted({tuple(f.shape) for f in frames})
        if len(shapes) > 1:
            raise InputError(f"{name}: all frames must have the same size, got frames of shapes {shapes}")
        return torch.stack(frames)
    if isinstance(x, (str, bytes, os.PathLike)):
        raise InputError(f"{name} is a path ({os.fspath(x)!r}); read it with trackers.io.read_video() first "
                         "(trackers' track() methods accept paths directly)")
    raise InputError(f"{name} must be a numpy array, a torch tensor or a list of frames, got {type(x).__name__}")


def _channels_first(x: torch.Tensor, name: str) -> torch.Tensor:
    """(..., H, W, 3) or (..., 3, H, W) -> (..., 3, H, W)."""
    if x.shape[-1] == 3:
        return x.movedim(-1, -3)
    if x.shape[-3] == 3:
        return x
    raise InputError(
        f"{name} must have 3 RGB channels, as (..., H, W, 3) or (..., 3, H, W); got shape {tuple(x.shape)}"
    )


def check_value_range(x: torch.Tensor, name: str = "video", *, whole_clip: bool = True) -> None:
    """Refuse pixel values outside ``[0, 255]`` (see the module docstring); ``uint8`` is always fine.

    ``whole_clip`` also refuses a float clip whose values all lie in ``(0, 1]`` (the ``[0, 1]`` convention); a
    single frame is not judged that way, since one dark frame of a fade-in looks the same.
    """
    if x.dtype == torch.uint8 or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach().float() if not x.is_floating_point() else x.detach()))
    if not x.is_floating_point():
        if lo < 0 or hi > 255:
            raise InputError(
                f"{name} has integer values in [{lo:g}, {hi:g}] ({x.dtype}); frames must be 0..255. For 16-bit "
                "images convert first, e.g. (frames // 257).astype(np.uint8)"
            )
        return
    if lo < -_RANGE_SLACK:
        raise InputError(
            f"{name} has negative values (min {lo:.3g}); frames must be RGB in [0, 255]. It looks normalised "
            "(e.g. ImageNet mean/std): pass the raw frames, trackers normalise internally"
        )
    if hi > 255 + _RANGE_SLACK:
        raise InputError(f"{name} has values up to {hi:.4g}; frames must be RGB in [0, 255] (16-bit or HDR input "
                         "must be converted to 0..255 first)")
    if whole_clip and 0 < hi <= 1.0:
        raise InputError(f"{name} is a float clip with values in [{lo:.3g}, {hi:.3g}]: frames must be in [0, 255], "
                         "not [0, 1]; multiply by 255 first")


def _as_float(x: torch.Tensor, name: str, whole_clip: bool = True, check_range: bool = True) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float()
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{name} must be uint8 or float in [0, 255], got {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains non-finite pixel values (NaN or inf)")
    if check_range:
        check_value_range(x, name, whole_clip=whole_clip)
    return x.float()


def _check_spatial(x: torch.Tensor, name: str) -> None:
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise InputError(f"{name} has empty frames of size {tuple(x.shape[-2:])}")


def as_video(video: VideoLike, *, name: str = "video") -> torch.Tensor:
    """Normalise a clip to a float32 tensor ``(T, 3, H, W)`` with values in ``[0, 255]``.

    Accepts arrays, tensors and lists of frames as described in the module docstring. The tensor stays on the
    device it came on (numpy input lands on the CPU).

    Raises:
        ValueError: a path, wrong rank, wrong channel count, no frames, frames of different sizes, empty frames,
            non-finite values or values outside ``[0, 255]``.
    """
    x = _to_tensor(video, name)
    if x.ndim != 4:
        raise InputError(
            f"{name} must be 4-D, (T, H, W, 3) or (T, 3, H, W); got {x.ndim}-D with shape {tuple(x.shape)}"
        )
    x = _channels_first(x, name)
    if x.shape[0] == 0:
        raise InputError(f"{name} has no frames")
    _check_spatial(x, name)
    return _as_float(x, name)


def as_frame(frame: FrameLike, *, name: str = "frame", check_range: bool = True) -> torch.Tensor:
    """Normalise one frame to a float32 tensor ``(3, H, W)`` in ``[0, 255]``.

    ``check_range=False`` skips the value-range check (for drawing and writing, which clip instead).
    """
    x = _to_tensor(frame, name)
    if x.ndim != 3:
        raise InputError(f"{name} must be 3-D, (H, W, 3) or (3, H, W); got shape {tuple(x.shape)}")
    x = _channels_first(x, name)
    _check_spatial(x, name)
    return _as_float(x, name, whole_clip=False, check_range=check_range)


def iter_input_frames(frames: Any, *, name: str = "frames", check_range: bool = True) -> Iterator[Any]:
    """Yield single frames from a clip array/tensor or from any iterable of frames (e.g. a video reader).

    A clip array is checked like :func:`as_video` (rank, channels, dtype, emptiness) on its first frame and then
    yielded one frame at a time, so no float copy of the whole clip is ever made; each frame is meant to go
    through :func:`as_frame`.
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        if frames.ndim != 4 or frames.shape[0] == 0:
            as_video(frames, name=name)  # raises the standard, descriptive error
        as_frame(frames[0], name=f"{name} frame 0", check_range=check_range)
        for t in range(frames.shape[0]):
            yield frames[t]
        return
    if isinstance(frames, (str, bytes, os.PathLike)):
        raise InputError(f"{name} must be an array/tensor or an iterable of frames, not a path; "
                         "use trackers.io.iter_frames() to read a file")
    try:
        it = iter(frames)
    except TypeError:
        raise InputError(f"{name} must be a numpy array, torch tensor or iterable of frames; "
                         f"got {type(frames).__name__}") from None
    yield from it
