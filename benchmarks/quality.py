"""Tracking quality on held-out synthetic clips: baselines next to any trained checkpoint; prints markdown tables.

Usage::

    python benchmarks/quality.py                                   # baselines only
    python benchmarks/quality.py --point-model training/cotracker3-small-synthetic/run/checkpoint-1200 \\
        --box-model training/detrack-small-synthetic/run/checkpoint-500 --json quality.json

**Data.** 20 point clips and 10 box clips from the synthetic generator with its held-out ``wide`` preset
(``SyntheticConfig.wider()``: doubled motion, more occlusions and border crossings, stronger lighting, blur and
noise, and texture kinds never used in training), 24 frames of 256x256, 256 ground-truth points per point clip.
The clip seeds (``--point-seed 20261203``, ``--box-seed 20261204``) differ from every seed the training recipes
draw from (``data_seed`` 0 for training clips and ``data_seed + 1000000007`` for validation clips; a clip's seed is
a hash of ``(seed, index)``, so other seeds give unrelated clips).

**Rows.** Every network row and the OpenCV baselines go through the evaluation runner
(``python -m trackers.train.eval.runner points|box``) in a subprocess, exactly as a user would call it; its report
is read back. Points are scored in TAP-Vid's ``first`` query mode on the 256x256 raster (AJ, ``<delta_avg``,
occlusion accuracy OA), boxes with GOT-10k AO / SR0.5 and OPE AUC / precision.

* ``LK (forward-backward)``: pyramidal Lucas-Kanade (21 px window, 3 levels) that marks a point occluded when its
  forward-backward error exceeds 1 px;
* ``always visible / static``: every point stays at its query position and is always predicted visible, so OA is the
  share of visible ground-truth points (what a tracker that never predicts occlusion scores) and AJ / delta are
  those of no motion at all; computed here from the same clips and the same metric functions as the runner;
* ``CSRT``: OpenCV's discriminative correlation filter tracker (boxes);
* ``static box``: the first box repeated on every frame;
* ``--point-model`` / ``--box-model``: a folder written by ``save_pretrained`` (e.g. a training checkpoint folder),
  a registry name or an ``hf-hub:`` repo.

Runner outputs go to ``--work-dir`` (default: a temporary folder); with a fixed folder a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POINT_SEED = 20261203
BOX_SEED = 20261204


def _run_runner(task: str, model: str, out: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """One evaluation-runner call in a fresh process; returns its report's summary (plus the wall time)."""
    n, seed = (args.point_clips, args.point_seed) if task == "points" else (args.box_clips, args.box_seed)
    cmd = [sys.executable, "-m", "trackers.train.eval.runner", task, "--data", f"synthetic:{n}", "--model", model,
           "--out", str(out), "--seed", str(seed), "--synthetic-preset", "wide",
           "--synthetic-frames", str(args.frames), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {**report["summary"], "wall_s": time.time() - t0}


def _runner_args(task: str, args: argparse.Namespace) -> argparse.Namespace:
    """The runner's own parsed options for the held-out clips, so the in-process rows see the very same data."""
    from trackers.train.eval.runner import build_eval_parser

    n, seed = (args.point_clips, args.point_seed) if task == "points" else (args.box_clips, args.box_seed)
    name = "points" if task == "points" else "box"
    return build_eval_parser().parse_args([name, "--data", f"synthetic:{n}", "--model", "none", "--out", "unused",
                                           "--seed", str(seed), "--synthetic-preset", "wide",
                                           "--synthetic-frames", str(args.frames)])


def static_points_row(args: argparse.Namespace) -> Dict[str, Any]:
    """"Always visible / static" on the point clips: tracks stay at their queries, every point visible."""
    from trackers.train.data.synthetic import generate_clip, item_seed
    from trackers.train.eval import metrics as M
    from trackers.train.eval.runner import synthetic_config

    rargs = _runner_args("points", args)
    config = synthetic_config(rargs)
    per_video = []
    for i in range(args.point_clips):
        clip = generate_clip(item_seed(rargs.seed, i), config)
        H, W = clip.video.shape[1:3]
        q = M.sample_queries_first(clip.tracks.astype(np.float64), clip.visible)
        T = clip.video.shape[0]
        pred_tracks = np.broadcast_to(q.queries[None, :, 1:], (T, q.queries.shape[0], 2)).astype(np.float32)
        pred_visible = np.ones((T, q.queries.shape[0]), dtype=bool)
        m = M.tapvid_metrics(pred_tracks, pred_visible, q.tracks, q.visible, q.queries, query_mode="first",
                             image_size=(H, W))
        per_video.append({k: float(v) for k, v in m.items()})
    return M.aggregate_tapvid(per_video)


def static_box_row(args: argparse.Namespace) -> Dict[str, Any]:
    """The first box repeated on every frame, scored like the runner scores synthetic box clips."""
    from trackers.train.data.synthetic import SyntheticBoxDataset
    from trackers.train.eval import metrics as M
    from trackers.train.eval.runner import synthetic_config

    rargs = _runner_args("box", args)
    ds = SyntheticBoxDataset(args.box_clips, synthetic_config(rargs), seed=rargs.seed)
    g_parts, o_parts = [], []
    for i in range(args.box_clips):
        item = ds[i]
        gt = item["boxes"].numpy().astype(np.float64)
        present = item["box_visible"].numpy().astype(bool)
        H, W = item["video"].shape[-2:]
        pred = np.repeat(gt[:1], gt.shape[0], axis=0)
        g_parts.append(M.got10k_metrics(pred, gt, image_size=(H, W), cover=present))
        o_parts.append(M.ope_metrics(pred, gt, convention="pytracking", benchmark="lasot", target_visible=present))
    g = M.aggregate_got10k(g_parts)
    o = M.aggregate_ope(o_parts)
    return {"ao": g.ao, "sr50": g.sr50, "sr75": g.sr75, **{k: v for k, v in o.summary().items()
                                                          if k != "num_sequences"}}


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _fps(v: Optional[float]) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.1f}"


def point_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| point tracker | AJ | <δ_avg | OA | fps |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_pct(r.get('average_jaccard'))} | {_pct(r.get('average_pts_within_thresh'))} "
                     f"| {_pct(r.get('occlusion_accuracy'))} | {_fps(r.get('fps'))} |")
    return "\n".join(lines)


def box_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| box tracker | AO | SR0.5 | SR0.75 | AUC | P | fps |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_pct(r.get('ao'))} | {_pct(r.get('sr50'))} | {_pct(r.get('sr75'))} "
                     f"| {_pct(r.get('auc'))} | {_pct(r.get('precision'))} | {_fps(r.get('fps'))} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--point-model", action="append", default=[],
                   help="point tracker to score (saved folder, registry name or hf-hub: repo); repeatable")
    p.add_argument("--box-model", action="append", default=[], help="box tracker to score; repeatable")
    p.add_argument("--point-clips", type=int, default=20)
    p.add_argument("--box-clips", type=int, default=10)
    p.add_argument("--point-seed", type=int, default=POINT_SEED)
    p.add_argument("--box-seed", type=int, default=BOX_SEED)
    p.add_argument("--frames", type=int, default=24, help="frames per clip")
    p.add_argument("--work-dir", default=None, help="runner output folders (default: a temporary folder)")
    p.add_argument("--skip-baselines", action="store_true", help="score only the given models")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    for name in ("point_clips", "box_clips", "frames"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="quality-")
        work = Path(tmp.name)
    else:
        work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    point_rows: List[Dict[str, Any]] = []
    box_rows: List[Dict[str, Any]] = []
    try:
        if not args.skip_baselines:
            point_rows.append({"name": "LK (forward-backward)", **_run_runner("points", "lk", work / "points-lk", args)})
            point_rows.append({"name": "always visible / static", **static_points_row(args)})
        for i, model in enumerate(args.point_model):
            point_rows.append({"name": model, **_run_runner("points", model, work / f"points-model{i}", args)})
        if not args.skip_baselines:
            box_rows.append({"name": "CSRT", **_run_runner("box", "csrt", work / "box-csrt", args)})
            box_rows.append({"name": "static box", **static_box_row(args)})
        for i, model in enumerate(args.box_model):
            box_rows.append({"name": model, **_run_runner("box", model, work / f"box-model{i}", args)})
    finally:
        if tmp is not None:
            tmp.cleanup()

    parts = []
    if point_rows:
        parts.append(f"{args.point_clips} point clips (seed {args.point_seed}, TAP-Vid 'first' queries)")
    if box_rows:
        parts.append(f"{args.box_clips} box clips (seed {args.box_seed})")
    print(f"Held-out synthetic clips (preset 'wide', {args.frames} frames, 256x256): {', '.join(parts)}. "
          "Percent.\n")
    if point_rows:
        print(point_table(point_rows) + "\n")
    if box_rows:
        print(box_table(box_rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"points": point_rows, "box": box_rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
