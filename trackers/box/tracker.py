"""The one door for single-object box trackers: :class:`SOTTracker` and its session, :class:`BoxStream`.

Everything LoRAT and DETRack share lives here: the crop pipeline (:mod:`trackers.box.pipeline`), sessions with one
or several targets on the same frames, batching many targets (of one video or of several) into one forward,
``track()`` over whole clips or batches of clips, and the checks on frames and boxes. A concrete tracker supplies
two hooks and nothing else:

* ``_encode_template(crops (B, 3, St, St), masks (B, g, g)) -> templates`` (batched; ``templates[i:i+1]`` is
  target ``i``'s encoding, reused every frame);
* ``_predict(templates, search (B, 3, S, S)) -> (score_map (B, h, w) logits, boxes (B, h, w, 4))`` with boxes as
  normalised ``xyxy`` in ``[0, 1]`` of the search crop; cells without a candidate hold a ``-inf`` logit.

and the crop sizes its network expects (:attr:`SOTTracker.crop_sizes`, from the config's ``template_size``,
``search_size`` and ``patch_size``).

Results follow the conventions of :mod:`trackers.video`: boxes ``(x1, y1, x2, y2)`` in input pixels, scores in
``[0, 1]``. Shapes: one target ``(T, 4)``; several targets of one video, or one target per clip of a batch, add a
leading axis ``(K, T, 4)``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from trackers.base import Stream, Tracker
from trackers.box.pipeline import (
    CropSizes,
    SOTSettings,
    SOTState,
    init_stream,
    search_crop,
    select_box,
    update_stream,
)
from trackers.results import BoxTracks
from trackers.video import as_frame, iter_input_frames
from trackers.errors import InputError

__all__ = ["SOTTracker", "BoxStream"]


def _as_boxes(box: Any, name: str = "init_box") -> Tuple[np.ndarray, bool]:
    """``(4,)`` or ``(K, 4)`` box input -> float64 ``(K, 4)`` and whether several were given."""
    try:
        arr = np.asarray(box.detach().cpu() if isinstance(box, Tensor) else box, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2) or (K, 4) of them, got {box!r}") from None
    if arr.shape == (4,):
        return arr[None], False
    if arr.ndim == 2 and arr.shape[1] == 4 and arr.shape[0] > 0:
        return arr, True
    raise InputError(f"{name} must be 4 numbers (x1, y1, x2, y2) or (K, 4) of them; got shape {arr.shape}")


class BoxStream(Stream):
    """A live session over one video with one or more targets (create it with :meth:`SOTTracker.stream`).

    ``step(frames)`` takes the next frame (``(H, W, 3)`` / ``(3, H, W)``) or several (``(T, ...)`` or a list) and
    returns :class:`~trackers.results.BoxTracks` for exactly those frames (``start_frame`` = index of the first);
    all targets advance in one batched forward per frame. ``results()`` returns every frame so far (frame 0 holds
    the initial boxes, score 1) and ``close()`` ends the session and returns the same. Memory per frame is a few
    numbers per target, so streams can run indefinitely.
    """

    def __init__(self, tracker: "SOTTracker", first_frame: Any, init_box: Any) -> None:
        super().__init__()
        boxes, self._multi = _as_boxes(init_box)
        self.tracker = tracker
        frame = as_frame(first_frame, name="first_frame").to(tracker.device)
        self.targets: List[SOTState] = tracker._init_targets(frame, list(boxes))
        self.image_size: Tuple[int, int] = self.targets[0].image_size
        self._boxes: List[Tensor] = [torch.stack([t.box for t in self.targets])]  # per frame (K, 4) float64
        self._scores: List[Tensor] = [torch.ones(len(self.targets), dtype=torch.float64)]
        self.frame_index = 1

    @property
    def num_targets(self) -> int:
        return len(self.targets)

    @property
    def boxes(self) -> Tensor:
        """Current box of every target, float64 ``(K, 4)`` (``(4,)`` for a single-target session)."""
        b = torch.stack([t.box for t in self.targets])
        return b if self._multi else b[0]

    def _step(self, frames: Any) -> BoxTracks:
        start = self.frame_index
        for frame in _frames_of(frames):
            self.tracker._advance([self], [frame])
        return self._slice(start, self.frame_index)

    def _record(self, boxes: Tensor, scores: Tensor) -> None:
        self._boxes.append(boxes)
        self._scores.append(scores)
        self.frame_index += 1

    def _slice(self, a: int, b: int) -> BoxTracks:
        boxes = torch.stack(self._boxes[a:b], 1) if b > a else torch.zeros(self.num_targets, 0, 4, dtype=torch.float64)
        scores = torch.stack(self._scores[a:b], 1) if b > a else torch.zeros(self.num_targets, 0, dtype=torch.float64)
        if not self._multi:
            boxes, scores = boxes[0], scores[0]
        return BoxTracks(boxes=boxes, scores=scores, image_size=self.image_size, start_frame=a)

    def results(self) -> BoxTracks:
        """Boxes and scores of every frame so far (frame 0 = the initial boxes)."""
        return self._slice(0, self.frame_index)

    def __repr__(self) -> str:
        return (f"BoxStream(targets={self.num_targets}, frame_index={self.frame_index}"
                f"{', closed' if self.closed else ''})")


def _frames_of(frames: Any) -> Iterator[Tensor]:
    """One frame (3-D array) or several (4-D array, list, iterable) -> single frames."""
    if isinstance(frames, (np.ndarray, Tensor)):
        if frames.ndim not in (3, 4):
            raise InputError(f"frames must be one frame, (H, W, 3) or (3, H, W), or a clip (T, ...); got shape "
                             f"{tuple(frames.shape)}")
        if frames.ndim == 3:
            yield frames
            return
    yield from iter_input_frames(frames, name="frames")


class SOTTracker(Tracker):
    """Base of one-stream single-object trackers (see the module docstring for the two hooks)."""

    settings_class = SOTSettings
    task = "boxes"

    # ------------------------------------------------------------------------------------------ hooks
    def _encode_template(self, crops: Tensor, masks: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, templates: Tensor, search: Tensor) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    @property
    def crop_sizes(self) -> CropSizes:
        """Template / search crop sides and the template patch grid, from the network config."""
        c = self.config
        return CropSizes(template=int(c.template_size), search=int(c.search_size),
                         template_grid=int(c.template_size) // int(c.patch_size))

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: that of the network's transformer matrices (``compute_dtype``) when it has a
        mixed-precision layout, else of its parameters."""
        return getattr(self.model, "compute_dtype", None) or super().dtype

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype the network wants its crops in (that of its patch embedding)."""
        return getattr(self.model, "input_dtype", torch.float32)

    def _cast(self, dtype: torch.dtype) -> None:
        # Networks with a mixed-precision layout (LoRAT, DETRack) take bf16/fp16 only for their block matrices and
        # keep embeddings, norms, scores and heads in float32: boxes move less, speed is the same.
        if dtype in (torch.bfloat16, torch.float16) and hasattr(self.model, "to_mixed_precision"):
            self.model.to_mixed_precision(dtype)
        else:
            self.model.to(dtype=dtype)

    # ------------------------------------------------------------------------------------------ core
    def _init_targets(self, frame: Tensor, boxes: Sequence[Any]) -> List[SOTState]:
        sizes = self.crop_sizes
        states, crops = [], []
        for b in boxes:
            st, crop = init_stream(frame, b, self.settings, sizes)
            states.append(st)
            crops.append(crop)
        masks = torch.stack([st.template_mask for st in states]).to(self.device)
        with torch.inference_mode():
            templates = self._encode_template(torch.stack(crops).to(self.input_dtype), masks)
        return [dataclasses.replace(st, template=templates[i:i + 1]) for i, st in enumerate(states)]

    def _advance(self, streams: Sequence[BoxStream], frames: Sequence[Any]) -> None:
        """One frame per stream; every target of every stream in one batched forward."""
        sizes, settings = self.crop_sizes, self.settings
        crops, tfs, owners = [], [], []
        for si, (stream, f) in enumerate(zip(streams, frames)):
            frame = as_frame(f, name=f"frame {stream.frame_index}").to(self.device)
            for ti, st in enumerate(stream.targets):
                crop, tf = search_crop(frame, st, settings, sizes)
                crops.append(crop)
                tfs.append(tf)
                owners.append((si, ti))
        templates = torch.cat([st.template for s in streams for st in s.targets], dim=0)
        with torch.inference_mode():
            score_map, boxes = self._predict(templates, torch.stack(crops).to(self.input_dtype))
        boxes, conf = select_box(score_map, boxes, settings, sizes.search)
        boxes, conf = boxes.cpu(), conf.cpu()
        out = [([], []) for _ in streams]
        for k, (si, ti) in enumerate(owners):
            stream = streams[si]
            stream.targets[ti], fb = update_stream(stream.targets[ti], boxes[k], float(conf[k]), tfs[k])
            out[si][0].append(fb)
            out[si][1].append(float(conf[k]))
        for stream, (bs, cs) in zip(streams, out):
            stream._record(torch.stack(bs), torch.tensor(cs, dtype=torch.float64))

    # ------------------------------------------------------------------------------------------ public verbs
    def stream(self, first_frame: Any, init_box: Any) -> BoxStream:
        """Start tracking from ``first_frame`` (``(H, W, 3)`` / ``(3, H, W)``).

        ``init_box`` is one ``(x1, y1, x2, y2)`` box, or ``(K, 4)`` boxes for K targets that share the frames
        (one forward per frame for all of them). Returns a :class:`BoxStream`.
        """
        return BoxStream(self, first_frame, init_box)

    def step_many(self, sessions: Sequence[BoxStream], frames: Sequence[Any]) -> List[BoxTracks]:
        """Advance several sessions (e.g. of different videos and sizes) by one frame each in one forward.

        ``frames[i]`` is the next frame of ``sessions[i]``; returns one :class:`BoxTracks` (one frame) per session.
        """
        if len(sessions) != len(frames):
            raise InputError(f"step_many: {len(sessions)} sessions but {len(frames)} frames")
        for s in sessions:
            if not isinstance(s, BoxStream) or s.tracker is not self:
                raise InputError("step_many: every session must come from this tracker's stream()")
            s._check_open()
        if len({id(s) for s in sessions}) != len(sessions):
            raise InputError("step_many: a session appears twice")
        if not sessions:
            return []
        starts = [s.frame_index for s in sessions]
        self._advance(sessions, frames)
        return [s._slice(a, a + 1) for s, a in zip(sessions, starts)]

    def track(self, video: Any, init_box: Any) -> BoxTracks:
        """Track targets through a clip, or one target per clip of a batch.

        Args:
            video: ``(T, H, W, 3)`` / ``(T, 3, H, W)`` frames (numpy or torch, uint8 or float 0..255), a list or
                other iterable of frames, a video file path, or a batch ``(B, T, ...)`` of equally long clips.
            init_box: ``(x1, y1, x2, y2)`` on frame 0; ``(K, 4)`` for K targets in one clip; ``(B, 4)`` (one per
                clip) for a batch. Everything advances together, one batched forward per frame.

        Returns:
            :class:`~trackers.results.BoxTracks`: ``boxes (T, 4)`` (``(K, T, 4)`` / ``(B, T, 4)`` for several
            targets or clips; float64, frame 0 = the initial boxes) and ``scores`` (1 on frame 0).
        """
        clips, batched = _clips(video)
        boxes, multi = _as_boxes(init_box)
        if batched:
            if boxes.shape[0] == 1 and not multi:
                boxes = np.repeat(boxes, len(clips), 0)
            if boxes.shape[0] != len(clips):
                raise InputError(f"init_box must be (4,) or ({len(clips)}, 4) for a batch of {len(clips)} clips; "
                                 f"got {boxes.shape[0]} boxes")
            inits: List[Any] = [b for b in boxes]
        else:
            inits = [boxes if multi else boxes[0]]
        iters = [iter(c) for c in clips]
        streams = []
        for it, b in zip(iters, inits):
            try:
                first = next(it)
            except StopIteration:
                raise InputError("video has no frames") from None
            streams.append(self.stream(first, b))
        while True:
            frames = [next(it, None) for it in iters]
            if all(f is None for f in frames):
                break
            if any(f is None for f in frames):
                raise InputError("all clips of a batch must have the same number of frames")
            self._advance(streams, frames)
        if not batched:
            return streams[0].close()
        results = [s.close() for s in streams]
        return BoxTracks(boxes=torch.stack([r.boxes for r in results]), scores=torch.stack([r.scores for r in results]),
                         image_size=results[0].image_size)


def _clips(video: Any) -> Tuple[List[Iterable[Any]], bool]:
    """Split ``video`` into per-clip frame iterators without converting whole clips to float."""
    if isinstance(video, (str, os.PathLike)):
        from trackers.io import iter_frames

        return [iter_frames(video)], False
    if isinstance(video, (np.ndarray, Tensor)) and video.ndim == 5:
        if video.shape[0] == 0:
            raise InputError(f"video batch of shape {tuple(video.shape)} is empty")
        return [iter_input_frames(clip, name="video") for clip in video], True
    return [iter_input_frames(video, name="video")], False
