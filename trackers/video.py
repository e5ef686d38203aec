"""The one place that turns user frames into tensors.

Conventions, shared by every tracker, the IO helpers and the visualisation:

* **Frames** are RGB. A clip is ``(T, H, W, 3)`` (channels last, what video readers give) or ``(T, 3, H, W)``
  (channels first, what networks use), as a numpy array or a torch tensor, ``uint8`` or floating point with values
  in ``[0, 255]``. A single frame is ``(H, W, 3)`` or ``(3, H, W)``. A batch of clips adds a leading ``B``.
  A path to a video file is accepted wherever a clip is.
* **Points** are ``(t, x, y)``: frame index, then pixel coordinates of the input video, x to the right, y down,
  with pixel centres at integer coordinates (the top-left pixel's centre is ``(0, 0)``).
* **Boxes** are ``(x1, y1, x2, y2)`` in input pixels.

Ambiguity: a frame that is 3 pixels high or wide is read as channels-first/-last by where the 3 sits; when both
axes are 3 the channels-last reading wins (that is what decoders produce).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

__all__ = ["VideoLike", "FrameLike", "as_video", "as_frame", "as_video_batch"]

VideoLike = Union[np.ndarray, torch.Tensor, str, os.PathLike]
FrameLike = Union[np.ndarray, torch.Tensor]


def _to_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or x.dtype.kind not in "uif":
            raise ValueError(f"{name} must hold numbers (uint8 or float in [0, 255]), got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (np.ndarray, torch.Tensor)):
        return torch.stack([_to_tensor(f, name) for f in x])
    raise ValueError(f"{name} must be a numpy array, a torch tensor or a video path, got {type(x).__name__}")


def _channels_first(x: torch.Tensor, name: str) -> torch.Tensor:
    """(..., H, W, 3) or (..., 3, H, W) -> (..., 3, H, W)."""
    if x.shape[-1] == 3:
        return x.movedim(-1, -3)
    if x.shape[-3] == 3:
        return x
    raise ValueError(
        f"{name} must have 3 RGB channels, as (..., H, W, 3) or (..., 3, H, W); got shape {tuple(x.shape)}"
    )


def _as_float(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float()
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be uint8 or float in [0, 255], got {x.dtype}")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite pixel values (NaN or inf)")
    return x


def as_video(video: VideoLike, *, name: str = "video") -> torch.Tensor:
    """Normalise a clip to a float32 tensor ``(T, 3, H, W)`` with values in ``[0, 255]``.

    Accepts everything described in the module docstring. Paths are decoded with :func:`trackers.io.read_video`.
    The tensor stays on the device it came on (numpy input lands on the CPU).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: wrong rank, wrong channel count, no frames, empty frames or non-finite values.
    """
    if isinstance(video, (str, os.PathLike)):
        from trackers.io import read_video

        video = read_video(video)
    x = _to_tensor(video, name)
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be 4-D, (T, H, W, 3) or (T, 3, H, W); got {x.ndim}-D with shape {tuple(x.shape)}"
        )
    x = _channels_first(x, name)
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no frames")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} has empty frames of size {tuple(x.shape[-2:])}")
    return _as_float(x, name)


def as_video_batch(video: VideoLike, *, name: str = "video") -> tuple[torch.Tensor, bool]:
    """Like :func:`as_video` but also accepts a batch ``(B, T, ...)``.

    Returns ``(tensor (B, T, 3, H, W), batched)`` where ``batched`` says whether the input had a batch axis.
    """
    if isinstance(video, (str, os.PathLike)):
        return as_video(video, name=name)[None], False
    x = _to_tensor(video, name)
    if x.ndim == 5:
        if x.shape[0] == 0:
            raise ValueError(f"{name} batch is empty")
        x = _channels_first(x, name)
        if x.shape[1] == 0:
            raise ValueError(f"{name} has no frames")
        if x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"{name} has empty frames of size {tuple(x.shape[-2:])}")
        return _as_float(x, name), True
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be (T, H, W, 3) / (T, 3, H, W), or batched (B, T, ...); got shape {tuple(x.shape)}"
        )
    return as_video(x, name=name)[None], False


def as_frame(frame: FrameLike, *, name: str = "frame") -> torch.Tensor:
    """Normalise one frame to a float32 tensor ``(3, H, W)`` in ``[0, 255]``."""
    x = _to_tensor(frame, name)
    if x.ndim != 3:
        raise ValueError(f"{name} must be 3-D, (H, W, 3) or (3, H, W); got shape {tuple(x.shape)}")
    x = _channels_first(x, name)
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} is empty: size {tuple(x.shape[-2:])}")
    return _as_float(x, name)
