"""Does a box tracker measure its target's size, or echo the size it was told? Prints a table.

Usage::

    python benchmarks/scale_response.py                                     # the shipped box model
    python benchmarks/scale_response.py --box-model detrack-small-synthetic --box-model training/x/run/checkpoint-500

A tracker crops each search region around its previous box, at a fixed multiple of that box's size. If the box it
carries is too large, a network that *measures* the target still returns the target's size; one that has learned
"the target fills a quarter of the crop" returns a box as large as the one it carried, and the error feeds itself
from frame to frame (the box spreads over every neighbour of the same look). This benchmark starts each target of
``benchmarks/real_footage.py`` on frame 0, replaces the carried box by its reference box on frame 1 (CSRT's, see
that file) scaled by ``s`` about its centre, and runs one step. Columns: the returned box's size
(``sqrt(w h)``) over the reference's, for each ``s``, and the **echo**: the least-squares slope of
``log(returned / reference)`` on ``log s``. 0 means the size is measured, 1 means it is echoed.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_footage import TARGETS, parse_box_models  # noqa: E402

SCALES = (0.67, 0.8, 1.25, 1.5)


def size(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


def main(argv: List[str] = None) -> int:
    models = parse_box_models(__doc__, argv)

    import torch

    from trackers import Tracker
    from trackers.io import read_video, sample_video_path
    from trackers.train.eval.baselines import CSRTTracker

    clips, refs = {}, {}
    for name, (sample, side, _, box) in TARGETS.items():
        clip = np.asarray(read_video(sample_video_path(sample), resize=side, max_frames=2))
        clips[name] = clip
        refs[name] = np.asarray(CSRTTracker().track(clip, box).boxes, dtype=np.float64)[1]

    print("| box model | target | " + " | ".join(f"s={s}" for s in SCALES) + " | s=1 | echo |")
    print("|---|---|" + "---:|" * (len(SCALES) + 2))
    for model in models:
        tracker = Tracker.from_pretrained(model)
        for name, (_, _, _, box) in TARGETS.items():
            ref = refs[name]
            centre, wh = (ref[:2] + ref[2:]) / 2, ref[2:] - ref[:2]
            ratios = {}
            for s in (1.0,) + SCALES:
                stream = tracker.stream(clips[name][0], box)
                state = stream.targets[0]
                carried = np.concatenate([centre - wh * s / 2, centre + wh * s / 2])
                stream.targets[0] = dataclasses.replace(state, box=torch.as_tensor(carried, dtype=state.box.dtype))
                out = np.asarray(stream.step(clips[name][1]).boxes, dtype=np.float64).reshape(-1, 4)[-1]
                ratios[s] = size(out) / size(ref)
            xs = np.log(np.array(list(ratios)))
            ys = np.log(np.array(list(ratios.values())))
            slope = float(np.polyfit(xs, ys, 1)[0])
            cells = [f"{ratios[s]:.2f}" for s in SCALES] + [f"{ratios[1.0]:.2f}", f"{slope:.2f}"]
            print(f"| {model} | {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
