"""Training speed and memory on this CPU: the ``point``, ``box`` and ``lora`` recipes through the real engine; a table.

Every row runs ``trackers.train.engine.train`` in a fresh subprocess (so peak RSS is ``ru_maxrss`` of that run) with
``torch.set_num_threads(threads)`` and batch 1. Steps are timed from the per-step timestamps the engine writes to
``metrics.csv``; the first step (allocations, first-touch) is excluded when there is more than one. Data comes from
the synthetic generator inside the loop (its time is included), at the model resolution. A one-step row is timed
from the start of its first loss computation to the end of the step.

Rows:

* ``small`` -- the ``small`` preset (128x128, latent 64, width 128, depth 2, 16 virtual tracks, 3 levels;
  4.8 M parameters), 64 points, 4 updates: offline on 16-frame clips, online on 24-frame clips (two
  windows of 16);
* ``full`` -- the released CoTracker3 architecture (384x512, 25.4 M parameters), 8 frames (the online model pads
  them to one 16-frame window), 256 points, 4 updates: one step each. Memory grows with the frames (the CNN's
  activations): 24 frames offline took 142 s and 13.6 GiB on one thread, online more than 16 GiB.

* ``box-small`` / ``lora-small`` -- DETRack and LoRAT with their ``small`` presets (64 px template, 128 px search,
  patch 8, width 128, depth 4), 8 pairs per step from 2 synthetic clips generated in the first (untimed) step and
  then cached, so the time is the network's and the crops' (the recipes' default denoising groups, CE schedule and
  LoRA rank 64).

The generator row is ``generate_clip`` alone in this process (one thread).

    python benchmarks/train.py                 # everything
    python benchmarks/train.py --only small    # skip the full-size model
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS = {
    "small-offline": dict(preset="small", model_name="cotracker3-offline", clip_frames=16, num_points=64, steps=6),
    "small-online": dict(preset="small", model_name="cotracker3-online", clip_frames=24, num_points=64, steps=4),
    # full size: 8 frames keep the peak near 5 GiB (activations grow with frames: 24 frames offline measured
    # 142 s/step and 13.6 GiB peak on 1 thread; online over 16 GiB)
    "full-offline": dict(preset=None, model_name="cotracker3-offline", clip_frames=8, num_points=256, steps=1),
    "full-online": dict(preset=None, model_name="cotracker3-online", clip_frames=8, num_points=256, steps=1),
    # box recipes: batch of 8 pairs from 2 synthetic 160x160 clips (generated during the first, untimed step and
    # cached: the time is the network's and the cropping's, not the generator's)
    "box-small": dict(recipe="box", preset="small", batch_size=8, steps=8),
    "lora-small": dict(recipe="lora", preset="small", batch_size=8, steps=8),
}


def _child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from trackers.train.engine import train
    from trackers.train.recipes import get_recipe

    recipe_name = spec.get("recipe", "point")
    base = get_recipe(recipe_name)
    with tempfile.TemporaryDirectory() as tmp:
        if recipe_name == "point":
            cfg = base.config_class(output_dir=tmp, preset=spec["preset"], model_name=spec["model_name"],
                                    clip_frames=spec["clip_frames"], num_points=spec["num_points"], iters=4,
                                    max_steps=spec["steps"], warmup_steps=1, log_every=1, val_clips=0,
                                    progress=False, train_clips=1000, save_every=0)
        else:
            cfg = base.config_class(output_dir=tmp, preset=spec["preset"], batch_size=spec["batch_size"],
                                    max_steps=spec["steps"], warmup_steps=1, log_every=1, progress=False,
                                    save_every=0, synthetic_clips=2, train_pairs=1000,
                                    synthetic=dict(num_frames=8, height=160, width=160), device="cpu")
        t0 = time.time()
        class Timed(base):
            first = None

            def loss(self, model, batch, ctx):
                Timed.first = Timed.first or time.time()
                return super().loss(model, batch, ctx)

        recipe = Timed(cfg)
        train(recipe)
        wall = time.time() - t0
        stamps = {}
        for r in csv.DictReader(open(Path(tmp) / "metrics.csv")):
            if r["split"] == "train" and r["name"] == "loss":
                stamps[int(r["step"])] = float(r["time"])
        params = sum(p.numel() for p in recipe.build_tracker().model.parameters())
    steps = sorted(stamps)
    gaps = [stamps[b] - stamps[a] for a, b in zip(steps, steps[1:])]
    step_s = statistics.median(gaps) if gaps else stamps[steps[0]] - Timed.first
    return {"step_s": step_s, "wall_s": wall, "params_m": params / 1e6,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def _generator_rate(frames: int, size: tuple, points: int, clips: int = 5) -> float:
    try:
        from trackers.train.data.synthetic import SyntheticConfig, generate_clip
    except ImportError:
        return float("nan")
    import torch

    torch.set_num_threads(1)
    cfg = SyntheticConfig(num_frames=frames, height=size[0], width=size[1], num_points=points)
    generate_clip(0, cfg)
    t = time.perf_counter()
    for s in range(1, clips + 1):
        generate_clip(s, cfg)
    return clips / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["small", "full", "box", "lora"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print("RESULT " + json.dumps(_child(json.loads(args._child))))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print()
    print("| config | params (M) | clip / batch | points | steps/s | s/step | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for name, row in ROWS.items():
        if args.only and not name.startswith(args.only):
            continue
        spec = {**row, "threads": args.threads}
        run = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], env=env,
                             capture_output=True, text=True)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if run.returncode or not lines:
            print(f"| {name} | failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode} "
                  f"| | | | | |")
            continue
        r = json.loads(lines[-1][7:])
        if row.get("recipe", "point") != "point":
            print(f"| {name} | {r['params_m']:.1f} | {row['batch_size']} pairs | - "
                  f"| {1 / r['step_s']:.3f} | {r['step_s']:.2f} | {r['peak_rss_gib']:.2f} |", flush=True)
            continue
        res = "128x128" if row["preset"] == "small" else "384x512"
        print(f"| {name} | {r['params_m']:.1f} | {row['clip_frames']}x{res} | {row['num_points']} "
              f"| {1 / r['step_s']:.3f} | {r['step_s']:.2f} | {r['peak_rss_gib']:.2f} |", flush=True)
    print()
    for frames, size, points in ((16, (128, 128), 64), (24, (256, 256), 256), (24, (384, 512), 256)):
        rate = _generator_rate(frames, size, points)
        print(f"generator: {rate:.2f} clips/s ({frames}x{size[0]}x{size[1]}, {points} points, 1 thread)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
