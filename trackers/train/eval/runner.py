"""Evaluation runners: score a tracker on a benchmark, or label unannotated videos, in one process or many.

Three jobs share one runner:

* ``points`` -- TAP-Vid metrics (average Jaccard, ``< delta avg``, occlusion accuracy, ...) of a point tracker on
  TAP-Vid pickles (DAVIS / Kinetics / RGB-Stacking), a folder of ``.npz`` annotations, or synthetic clips.
  Videos are resized to 256x256 (the official protocol, ``--resize``), queries are sampled from the ground truth
  in the ``first`` or ``strided`` mode, and the benchmark number is the mean over videos. Predicted visibility is
  the tracker's own decision (``PointTracks.visible``). All queries of a video are tracked in one call, as
  CoTracker's evaluation does (TAP-Vid's rule that a query's prediction must not depend on the other queries is
  not enforced). A query on the right/bottom border (TAP-Vid stores points up to 1.0, i.e. ``x = W``) is clamped
  into the pixel grid for the tracker; the ground truth is not changed.
* ``box`` -- single-object tracking on GOT-10k or LaSOT folders, or synthetic clips: GOT-10k AO / SR (frame 0 and
  frames whose target is absent are not scored; IoUs of all sequences pooled) and one-pass-evaluation AUC /
  precision / normalised precision (pytracking or OSTrack rules, ``--convention``), plus the standard result
  files (GOT-10k submission layout ``<seq>/<seq>_001.txt`` + ``<seq>_time.txt``, one run, the clip's mean time
  per frame; LaSOT ``<seq>.txt`` in its 1-based pixels; comma-separated ``x,y,w,h``). A GOT-10k test sequence has
  only its first box: it is tracked and written, not scored. Synthetic boxes are scored with the target's
  visibility as the GOT-10k cover / LaSOT visible flag.
* ``label`` -- run a point tracker from grid queries on every video of a folder and write one ``.npz`` of tracks
  per video (pseudo-labels for training).

``--model`` takes a registry name, a Hub repo or a saved tracker folder (:func:`trackers.base.load_tracker`), or
``lk`` / ``csrt`` for the OpenCV baselines. ``--data synthetic:N`` makes N clips with the synthetic generator
(seeded by ``--seed``; ``--synthetic-preset default|wide``, size options ``--synthetic-frames/-size/-points``).

Output (``--out DIR``): ``sequences/<name>.json`` per finished sequence (``labels/<name>.npz`` per video for
``label``), the result files, and ``report.json`` (settings, summary, per-sequence numbers); the summary table is
printed. Every per-sequence file is written atomically, and a rerun with the same settings skips the sequences
whose file exists -- so an interrupted run resumes where it stopped. A file written with other settings (another
model, query mode, ...) is an error rather than silently mixed in.

Scaling out: launched with ``torchrun --nproc-per-node K``, rank ``r`` processes sequences ``r, r + K, ...`` (the
ranks join a gloo process group and first check that they all see the same listing and settings); rank 0 then
waits for every per-sequence file, reads them and writes the report, so the numbers equal those of a
single-process run.

Examples::

    python -m trackers.train.eval.runner points --data tapvid_davis.pkl --model cotracker3-offline --out runs/davis
    torchrun --nproc-per-node 4 -m trackers.train.eval.runner box --data GOT10k/val --model lorat-b-224 --out runs/g
    python -m trackers.train.eval.runner box --data synthetic:10 --model csrt --out runs/csrt
    python -m trackers.train.eval.runner label --data videos/ --model cotracker3-offline --grid 20 --out labels/
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from trackers.train.eval.distributed import DistInfo, all_gather_object, default_device, distributed_session, shard

__all__ = ["add_eval_parser", "build_eval_parser", "main_eval", "run_eval_args", "run_points", "run_boxes", "run_label",
           "load_model", "format_table", "grid_queries", "SYNTHETIC_PRESETS"]

#: Names of the generator settings ``--synthetic-preset`` accepts.
SYNTHETIC_PRESETS = ("default", "wide")
_SEQ_DIR = "sequences"
_LABEL_DIR = "labels"
_REPORT = "report.json"


# =============================================================================================== small helpers
def _log(info: DistInfo, message: str) -> None:
    prefix = f"[eval rank {info.rank}/{info.world_size}] " if info.world_size > 1 else "[eval] "
    print(prefix + message, file=sys.stderr, flush=True)


def _safe_name(name: str) -> str:
    """A file-name-safe version of a sequence name (path separators and odd characters become ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return safe or "_"


def _jsonable(x: Any) -> Any:
    """Numbers, arrays and containers as strict JSON data (NaN / inf become ``null``)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def _floats(x: Any) -> np.ndarray:
    """JSON list (``null`` = NaN) -> float64 array."""
    return np.asarray([np.nan if v is None else v for v in x], dtype=np.float64)


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(_jsonable(obj), fh, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _abspath(path: Optional[str]) -> Optional[str]:
    return None if path is None else os.path.abspath(path)


def _parse_size(text: str, option: str) -> Optional[Tuple[int, int]]:
    """``'256x256'`` / ``'256'`` -> ``(H, W)``; ``'none'`` -> ``None``."""
    if text is None or str(text).lower() in ("none", "native", "0"):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", str(text))
    if not m:
        raise ValueError(f"{option} must look like HxW (e.g. 256x256), a single size, or 'none'; got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h < 8 or w < 8:
        raise ValueError(f"{option} must be at least 8x8 pixels, got {text!r}")
    return h, w


def _parse_synthetic(data: str) -> Optional[int]:
    """``'synthetic:N'`` -> N; anything else -> ``None``."""
    if not data.startswith("synthetic"):
        return None
    m = re.fullmatch(r"synthetic:(\d+)", data)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--data synthetic:N needs a positive clip count N, got {data!r}")
    return int(m.group(1))


def synthetic_config(args: argparse.Namespace):
    """The generator config of ``--synthetic-preset``, ``--synthetic-frames``, ``--synthetic-size`` and
    ``--synthetic-points``."""
    from trackers.train.data.synthetic import SyntheticConfig

    if args.synthetic_preset not in SYNTHETIC_PRESETS:
        raise ValueError(f"--synthetic-preset must be one of {SYNTHETIC_PRESETS}, got {args.synthetic_preset!r}")
    config = SyntheticConfig()
    if args.synthetic_preset == "wide":
        config = config.wider()
    h, w = _parse_size(args.synthetic_size, "--synthetic-size") or (config.height, config.width)
    return config.replace(num_frames=int(args.synthetic_frames), height=h, width=w,
                          num_points=int(args.synthetic_points))


def grid_queries(size: int, height: int, width: int, frames: Sequence[int] = (0,)) -> np.ndarray:
    """``size x size`` grid queries ``(t, x, y)`` at each frame of ``frames`` (float32 ``(len(frames) * size**2, 3)``).

    The grid spans ``[m, W - m] x [m, H - m]`` with ``m = W / 64`` (the layout of CoTracker's query grid, in input
    pixels), rows of x for increasing y; ``size == 1`` is the frame centre.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"grid size must be a positive int, got {size!r}")
    if size == 1:
        xy = np.array([[width / 2.0, height / 2.0]])
    else:
        m = width / 64.0
        gy, gx = np.meshgrid(np.linspace(m, height - m, size), np.linspace(m, width - m, size), indexing="ij")
        xy = np.stack([gx, gy], axis=-1).reshape(-1, 2)
    rows = [np.concatenate([np.full((xy.shape[0], 1), float(t)), xy], axis=1) for t in frames]
    return np.concatenate(rows, axis=0).astype(np.float32)


# =============================================================================================== models
def load_model(spec: str, device: Any = None, checkpoint: Optional[str] = None) -> Tuple[Any, str]:
    """``(tracker, task)`` for ``--model``: ``'lk'`` / ``'csrt'`` (OpenCV baselines), else anything
    :func:`trackers.base.load_tracker` loads (``checkpoint``: a local weights file for a registry name, e.g. the
    official checkpoint downloaded by hand). ``task`` is ``'points'`` or ``'boxes'``."""
    key = spec.strip().lower()
    if checkpoint is not None and key in ("lk", "lucas-kanade", "lucaskanade", "csrt"):
        raise ValueError(f"--checkpoint does not apply to the OpenCV baseline {spec!r}")
    if key in ("lk", "lucas-kanade", "lucaskanade"):
        from trackers.train.eval.baselines import LucasKanadeTracker

        return LucasKanadeTracker(), "points"
    if key == "csrt":
        from trackers.train.eval.baselines import CSRTTracker

        return CSRTTracker(), "boxes"
    from trackers.base import load_tracker

    kwargs = {} if checkpoint is None else {"checkpoint": checkpoint}
    tracker = load_tracker(spec, device=device, **kwargs)
    task = getattr(tracker, "task", "")
    if task not in ("points", "boxes"):
        raise ValueError(f"model {spec!r} is a {type(tracker).__name__} with task {task!r}; expected a point or box "
                         "tracker")
    return tracker, task


def _need_task(spec: str, task: str, want: str, command: str) -> None:
    if task != want:
        other = "box" if task == "boxes" else "points"
        kind = {"points": "point", "boxes": "box"}[want]
        raise ValueError(f"`eval {command}` needs a {kind} tracker, but --model {spec!r} tracks {task}; "
                         f"use `eval {other}`")


def _load_for(args: argparse.Namespace, info: DistInfo, want: str, command: str) -> Any:
    """The tracker of ``--model`` on this rank's device, checked to track ``want`` (shared by every job)."""
    device = default_device(info) if args.device == "auto" else args.device
    tracker, task = load_model(args.model, device, checkpoint=args.checkpoint)
    _need_task(args.model, task, want, command)
    return tracker


# =============================================================================================== the sharded loop
@dataclass
class _Job:
    """What the sharded loop needs: sequence names, a worker for one index, and where records go."""

    names: List[str]
    work: Callable[[int], Dict[str, Any]]
    out: Path
    run: Dict[str, Any]
    progress: bool
    label: str
    #: extra check that a finished record's outputs are still there (a record whose files were deleted is redone)
    outputs_exist: Callable[[Dict[str, Any]], bool] = lambda rec: True


def _record_path(out: Path, name: str) -> Path:
    return out / _SEQ_DIR / f"{_safe_name(name)}.json"


def _read_record(path: Path) -> Optional[Dict[str, Any]]:
    """A finished record, or ``None`` when absent or unreadable (a crash mid-write leaves only a temp file, so an
    unreadable record means someone edited it: it is redone)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _check_names(names: List[str]) -> None:
    seen: Dict[str, str] = {}
    for n in names:
        s = _safe_name(n)
        if s in seen:
            raise ValueError(f"sequences {seen[s]!r} and {n!r} map to the same result file name {s!r}")
        seen[s] = n


def _run_sharded(job: _Job, info: DistInfo) -> Optional[List[Dict[str, Any]]]:
    """Process this rank's shard (skipping finished sequences), then on rank 0 return every record in order."""
    from tqdm import tqdm

    _check_names(job.names)
    (job.out / _SEQ_DIR).mkdir(parents=True, exist_ok=True)
    run = json.loads(json.dumps(_jsonable(job.run)))
    # every rank must shard the same listing with the same settings, or the merged report would be wrong
    views = all_gather_object((job.names, run))
    for r, (names, other) in enumerate(views):
        if names != job.names or other != run:
            raise ValueError(f"rank {r} sees {len(names)} sequences / settings {other}, rank {info.rank} sees "
                             f"{len(job.names)} / {run}: every rank must read the same data with the same options")
    mine = shard(len(job.names), info)
    todo = []
    for i in mine:
        rec = _read_record(_record_path(job.out, job.names[i]))
        if rec is None or (rec.get("run") == run and not job.outputs_exist(rec)):
            todo.append(i)
        elif rec.get("run") != run:
            raise ValueError(f"{str(_record_path(job.out, job.names[i]))!r} was written by a run with other settings "
                             f"({rec.get('run')}); use another --out folder (this run: {run})")
    skipped = len(mine) - len(todo)
    if skipped:
        _log(info, f"resuming: {skipped} of {len(mine)} sequences already finished in {str(job.out)!r}, skipping them")
    bar = tqdm(todo, desc=job.label, unit="seq", disable=not (job.progress and info.is_main), file=sys.stderr)
    for i in bar:
        rec = job.work(i)
        rec.update(name=job.names[i], index=i, run=run,
                   finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat())
        _atomic_write_json(_record_path(job.out, job.names[i]), rec)
    bar.close()
    if not info.is_main:
        return None
    return _collect(job, run, info)


def _collect(job: _Job, run: Dict[str, Any], info: DistInfo, poll_seconds: float = 1.0) -> List[Dict[str, Any]]:
    """Rank 0: every sequence's record, in listing order, waiting for those other ranks are still working on (a
    record file appears atomically when its sequence is done)."""
    records: Dict[int, Dict[str, Any]] = {}
    last_note = time.monotonic()
    while True:
        for i, n in enumerate(job.names):
            if i not in records:
                rec = _read_record(_record_path(job.out, n))
                if rec is not None and rec.get("run") == run and job.outputs_exist(rec):
                    records[i] = rec
        missing = len(job.names) - len(records)
        if not missing:
            return [records[i] for i in range(len(job.names))]
        if info.world_size == 1:  # nobody else writes: a record vanished while this process ran
            names = [n for i, n in enumerate(job.names) if i not in records]
            raise RuntimeError(f"no finished result for {missing} sequence(s) (e.g. {names[:3]}) in "
                               f"{str(job.out / _SEQ_DIR)!r}; were files removed during the run?")
        if time.monotonic() - last_note > 60:
            _log(info, f"waiting for {missing} sequence(s) from the other ranks")
            last_note = time.monotonic()
        time.sleep(poll_seconds)


def _write_report(out: Path, task: str, run: Dict[str, Any], summary: Dict[str, Any], records: List[Dict[str, Any]],
                  table: str, info: DistInfo) -> Dict[str, Any]:
    report = {"task": task, "run": run, "summary": summary, "table": table, "world_size": info.world_size,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(), "sequences": records}
    _atomic_write_json(out / _REPORT, report)
    return json.loads(json.dumps(_jsonable(report)))


def format_table(rows: List[Dict[str, Any]], columns: List[Tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are ``(key, header, format)`` with format ``'pct'`` (x100, 1 decimal),
    ``'int'``, ``'float'`` (1 decimal) or ``'str'``. Missing / NaN values print as ``-``."""

    def cell(v: Any, fmt: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if fmt == "pct":
            return f"{100.0 * float(v):.1f}"
        if fmt == "int":
            return str(int(v))
        if fmt == "float":
            return f"{float(v):.1f}"
        return str(v)

    body = [[cell(r.get(k), f) for k, _, f in columns] for r in rows]
    headers = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(headers)]

    def line(values: List[str]) -> str:
        return "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(values, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(b) for b in body])


def _speed(records: List[Dict[str, Any]]) -> float:
    frames = sum(r.get("num_frames", 0) for r in records if r.get("seconds"))
    seconds = sum(r.get("seconds", 0.0) or 0.0 for r in records)
    return frames / seconds if seconds > 0 else float("nan")


# =============================================================================================== points
def _point_source(args: argparse.Namespace):
    """``(names, load(i) -> PointSequence, data description)`` for ``eval points``."""
    from trackers.train.data.tapvid import PointSequence, TapVidDataset, resize_frames

    resize = _parse_size(args.resize, "--resize")
    n = _parse_synthetic(args.data)
    if n is not None:
        from trackers.train.data.synthetic import generate_clip, item_seed

        config = synthetic_config(args)

        def load(i: int) -> PointSequence:
            clip = generate_clip(item_seed(args.seed, i), config)
            video, tracks = clip.video, clip.tracks.astype(np.float64)
            if resize is not None:
                H, W = video.shape[1:3]
                video = resize_frames(video, resize)
                tracks = (tracks + 0.5) * np.array([resize[1] / W, resize[0] / H]) - 0.5
            return PointSequence(f"synthetic_{i:04d}", video, tracks.astype(np.float32), clip.visible)

        return [f"synthetic_{i:04d}" for i in range(n)], load, {"synthetic": n, "seed": args.seed,
                                                              "config": _jsonable(vars(config))}
    ds = TapVidDataset(args.data, resize=resize, trusted=args.trust_pickle)
    return list(ds.names), ds.__getitem__, {"path": os.path.abspath(args.data), "layout": ds.layout}


def _subset(names: List[str], load: Callable[[int], Any], args: argparse.Namespace):
    """Apply ``--sequences`` (names) and ``--limit`` (first N) to a listing."""
    from trackers.train.data.sot_datasets import read_sequence_list

    index = list(range(len(names)))
    wanted = read_sequence_list(getattr(args, "sequences", None))
    if wanted is not None:
        pos = {n: i for i, n in enumerate(names)}
        missing = [w for w in wanted if w not in pos]
        if missing:
            raise ValueError(f"--sequences names {missing[:5]} that {args.data!r} does not hold")
        index = [pos[w] for w in wanted]
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        index = index[:args.limit]
    return [names[i] for i in index], (lambda j: load(index[j]))


def _track_points(tracker: Any, video: np.ndarray, queries: np.ndarray):
    return tracker.track(video, queries=queries).numpy()


def run_points(args: argparse.Namespace, info: DistInfo) -> Optional[Dict[str, Any]]:
    """``eval points``: TAP-Vid metrics of a point tracker; returns the report on rank 0 (``None`` elsewhere)."""
    from trackers.train.eval import metrics as M

    if args.query_mode not in ("first", "strided"):
        raise ValueError(f"--query-mode must be 'first' or 'strided', got {args.query_mode!r}")
    tracker = _load_for(args, info, "points", "points")
    names, load, data_desc = _point_source(args)
    names, load = _subset(names, load, args)
    out = Path(args.out)
    run = {"task": "points", "model": args.model, "checkpoint": _abspath(args.checkpoint), "data": data_desc, "query_mode": args.query_mode,
           "query_stride": args.query_stride, "resize": _parse_size(args.resize, "--resize")}

    def work(i: int) -> Dict[str, Any]:
        seq = load(i)
        T, H, W = seq.video.shape[:3]
        if args.query_mode == "first":
            q = M.sample_queries_first(seq.tracks, seq.visible)
        else:
            q = M.sample_queries_strided(seq.tracks, seq.visible, stride=args.query_stride)
        rec: Dict[str, Any] = {"num_frames": T, "height": H, "width": W, "num_tracks": int(seq.tracks.shape[1]),
                               "num_queries": int(q.queries.shape[0])}
        if q.queries.shape[0] == 0:
            rec.update(seconds=0.0, metrics={k: None for k in M.TAPVID_METRIC_NAMES})
            return rec
        queries = q.queries.astype(np.float32)
        # a visible point on the border (TAP-Vid: normalised 1.0 -> x = W) lies outside the pixel grid the trackers
        # accept ([-0.5, W - 0.5]); the query position is clamped there, the ground truth is left untouched
        queries[:, 1] = np.clip(queries[:, 1], -0.5, W - 0.5)
        queries[:, 2] = np.clip(queries[:, 2], -0.5, H - 0.5)
        t0 = time.perf_counter()
        pred = _track_points(tracker, seq.video, queries)
        rec["seconds"] = time.perf_counter() - t0
        m = M.tapvid_metrics(pred.tracks, pred.visible, q.tracks, q.visible, q.queries, query_mode=args.query_mode,
                             image_size=(H, W))
        rec["metrics"] = {k: float(v) for k, v in m.items()}
        if args.save_predictions:
            (out / "predictions").mkdir(parents=True, exist_ok=True)
            pred.save(out / "predictions" / f"{_safe_name(seq.name)}.npz")
        return rec

    records = _run_sharded(_Job(names, work, out, run, not args.no_progress, f"points {args.model}"), info)
    if records is None:
        return None
    per_video = [{k: _num(r["metrics"][k]) for k in M.TAPVID_METRIC_NAMES} for r in records]
    summary = M.aggregate_tapvid(per_video)
    summary["fps"] = _speed(records)
    summary["num_queries"] = sum(r["num_queries"] for r in records)
    row = {"model": args.model, "aj": summary["average_jaccard"], "delta": summary["average_pts_within_thresh"],
           "oa": summary["occlusion_accuracy"], "videos": summary["num_videos"], "fps": summary["fps"]}
    table = format_table([row], POINT_COLUMNS)
    print(f"TAP-Vid metrics ({args.query_mode}, {len(records)} videos from {args.data}):\n{table}", flush=True)
    return _write_report(out, "points", run, summary, records, table, info)


#: Columns of the ``eval points`` table: average Jaccard, ``< delta avg``, occlusion accuracy (percent).
POINT_COLUMNS = [("model", "model", "str"), ("aj", "AJ", "pct"), ("delta", "<d_avg", "pct"), ("oa", "OA", "pct"),
                 ("videos", "videos", "int"), ("fps", "fps", "float")]
#: Columns of the ``eval box`` table: GOT-10k AO / SR, OPE AUC / precision / normalised precision (percent).
BOX_COLUMNS = [("model", "model", "str"), ("ao", "AO", "pct"), ("sr50", "SR0.5", "pct"), ("sr75", "SR0.75", "pct"),
               ("auc", "AUC", "pct"), ("precision", "P", "pct"), ("norm_precision", "Pnorm", "pct"),
               ("sequences", "seqs", "int"), ("fps", "fps", "float")]


# =============================================================================================== boxes
def _box_source(args: argparse.Namespace):
    """``(names, load(i) -> SOTSequence, data description)`` for ``eval box``."""
    import torch

    from trackers.train.data.sot_datasets import SOTSequence, open_sot_dataset

    n = _parse_synthetic(args.data)
    if n is not None:
        from trackers.train.data.synthetic import SyntheticBoxDataset

        config = synthetic_config(args)
        ds = SyntheticBoxDataset(n, config, seed=args.seed)

        def load(i: int) -> SOTSequence:
            item = ds[i]
            video = item["video"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8)
            return SOTSequence(name=f"synthetic_{i:04d}", dataset="synthetic", boxes=item["boxes"].numpy().astype(
                np.float64), frame_paths=[], video=video.numpy(), present=item["box_visible"].numpy().astype(bool))

        return [f"synthetic_{i:04d}" for i in range(n)], load, {"synthetic": n, "seed": args.seed,
                                                              "config": _jsonable(vars(config))}
    ds = open_sot_dataset(args.data, layout=args.layout)
    return list(ds.names), ds.__getitem__, {"path": os.path.abspath(args.data), "layout": ds.dataset_name}


def _write_box_results(out: Path, seq: Any, pred_xyxy: np.ndarray, seconds: float) -> List[str]:
    """The standard result files of one sequence; returns their paths relative to ``out``."""
    xywh = np.concatenate([pred_xyxy[:, :2], pred_xyxy[:, 2:] - pred_xyxy[:, :2]], axis=1)
    res = out / "results"
    name = _safe_name(seq.name)
    if seq.dataset == "got10k":
        # GOT-10k submission layout: <seq>/<seq>_001.txt (x,y,w,h, run 1) and <seq>_time.txt (seconds per frame;
        # the clip is tracked in one call, so every frame gets the mean)
        d = res / name
        d.mkdir(parents=True, exist_ok=True)
        np.savetxt(d / f"{name}_001.txt", xywh, fmt="%.4f", delimiter=",")
        np.savetxt(d / f"{name}_time.txt", np.full(len(xywh), seconds / max(len(xywh), 1)), fmt="%.8f")
        return [f"results/{name}/{name}_001.txt", f"results/{name}/{name}_time.txt"]
    res.mkdir(parents=True, exist_ok=True)
    if seq.dataset == "lasot":
        xywh = xywh.copy()
        xywh[:, :2] += 1.0  # back to LaSOT's 1-based corners
    np.savetxt(res / f"{name}.txt", xywh, fmt="%.4f", delimiter=",")
    return [f"results/{name}.txt"]


def run_boxes(args: argparse.Namespace, info: DistInfo) -> Optional[Dict[str, Any]]:
    """``eval box``: GOT-10k and OPE metrics of a box tracker; returns the report on rank 0."""
    from trackers.train.eval import metrics as M

    if args.convention not in ("pytracking", "ostrack"):
        raise ValueError(f"--convention must be 'pytracking' or 'ostrack', got {args.convention!r}")
    tracker = _load_for(args, info, "boxes", "box")
    names, load, data_desc = _box_source(args)
    names, load = _subset(names, load, args)
    out = Path(args.out)
    run = {"task": "box", "model": args.model, "checkpoint": _abspath(args.checkpoint), "data": data_desc, "convention": args.convention}
    streams = hasattr(tracker, "stream")  # network trackers take frames lazily; OpenCV baselines want an array

    def work(i: int) -> Dict[str, Any]:
        seq = load(i)
        T = seq.num_frames
        H, W = seq.image_size()
        init = seq.init_box
        if not (np.all(np.isfinite(init)) and init[2] > init[0] and init[3] > init[1]):
            raise ValueError(f"sequence {seq.name!r}: the first frame's box {init.tolist()} is empty; cannot start")
        frames = seq.frames() if streams else seq.read_frames()
        t0 = time.perf_counter()
        result = tracker.track(frames, init)
        seconds = time.perf_counter() - t0
        pred = np.asarray(result.numpy().boxes, dtype=np.float64).reshape(-1, 4)
        if pred.shape[0] != T:
            raise RuntimeError(f"sequence {seq.name!r}: the tracker returned {pred.shape[0]} boxes for {T} frames")
        rec: Dict[str, Any] = {"num_frames": T, "height": H, "width": W, "seconds": seconds,
                               "has_groundtruth": seq.has_groundtruth,
                               "result_files": _write_box_results(out, seq, pred, seconds)}
        if not seq.has_groundtruth:
            return rec
        cover = seq.cover if seq.cover is not None else seq.present
        g = M.got10k_metrics(pred, seq.boxes, image_size=(H, W), cover=cover)
        vis = None if seq.dataset == "got10k" else seq.present
        o = M.ope_metrics(pred, seq.boxes, convention=args.convention, benchmark="lasot", target_visible=vis)
        rec["got10k"] = {"ious": g.ious}
        rec["ope"] = {"success_curve": o.success_curve, "precision_curve": o.precision_curve,
                      "norm_precision_curve": o.norm_precision_curve, "average_overlap": o.average_overlap}
        rec["summary"] = {"ao": g.ao, "sr50": g.sr50, "sr75": g.sr75, **{k: v for k, v in o.summary().items()
                                                                          if k != "num_sequences"}}
        return rec

    records = _run_sharded(_Job(names, work, out, run, not args.no_progress, f"box {args.model}",
                                lambda rec: all((out / f).is_file() for f in rec.get("result_files", []))), info)
    if records is None:
        return None
    scored = [r for r in records if r.get("has_groundtruth")]
    summary: Dict[str, Any] = {"num_sequences": len(records), "num_scored": len(scored), "fps": _speed(records)}
    if scored:
        g = M.aggregate_got10k([M.GOT10kResult(ious=_floats(r["got10k"]["ious"])) for r in scored])
        o = M.aggregate_ope([M.OPEResult(success_curve=_floats(r["ope"]["success_curve"]),
                                         precision_curve=_floats(r["ope"]["precision_curve"]),
                                         norm_precision_curve=_floats(r["ope"]["norm_precision_curve"]),
                                         average_overlap=_num(r["ope"]["average_overlap"]),
                                         convention=args.convention, benchmark="lasot") for r in scored])
        summary.update({"ao": g.ao, "sr50": g.sr50, "sr75": g.sr75, "num_frames_scored": int(g.ious.size)})
        summary.update({k: v for k, v in o.summary().items() if k != "num_sequences"})
    row = {"model": args.model, "sequences": len(scored), "fps": summary["fps"],
           **{k: summary.get(k) for k in ("ao", "sr50", "sr75", "auc", "precision", "norm_precision")}}
    table = format_table([row], BOX_COLUMNS)
    note = "" if scored else " (no ground truth beyond the first box: only the result files were written)"
    print(f"Box tracking on {len(records)} sequences from {args.data}{note}:\n{table}", flush=True)
    return _write_report(out, "box", run, summary, records, table, info)


# =============================================================================================== label
def _label_source(args: argparse.Namespace):
    """``(names, load(i) -> (video uint8, path string))`` for ``eval label``."""
    resize = _parse_size(args.resize, "--resize")
    n = _parse_synthetic(args.data)
    if n is not None:
        from trackers.train.data.synthetic import generate_clip, item_seed
        from trackers.train.data.tapvid import resize_frames

        config = synthetic_config(args)

        def load_synthetic(i: int):
            video = generate_clip(item_seed(args.seed, i), config.replace(num_points=1)).video
            if args.max_frames is not None:
                video = video[:args.max_frames]
            return (resize_frames(video, resize) if resize else video), f"synthetic:{args.seed}:{i}"

        return [f"synthetic_{i:04d}" for i in range(n)], load_synthetic
    from trackers.train.data.readers import VideoFolder

    folder = VideoFolder(args.data, resize=None if resize is None else (resize[0], resize[1]),
                         max_frames=args.max_frames)
    stems = [p.stem for p in folder.paths]
    names = stems if len(set(stems)) == len(stems) else [p.name for p in folder.paths]
    return names, lambda i: (folder.read(i), str(folder.paths[i].resolve()))


def run_label(args: argparse.Namespace, info: DistInfo) -> Optional[Dict[str, Any]]:
    """``eval label``: grid-query point tracks for every video, one ``labels/<name>.npz`` each.

    Each npz holds ``tracks`` ``(T, N, 2)`` float32 (input pixels), ``visible`` ``(T, N)`` bool (the tracker's
    decision), ``visibility`` ``(T, N)`` float32 probabilities, ``queries`` ``(N, 3)`` rows ``(t, x, y)``,
    ``video_path``, ``model`` and ``image_size`` ``(H, W)`` -- plus ``confidence`` when the tracker gives it and
    ``video`` with ``--save-video`` (which makes the file readable by ``NpzTrackDataset``).
    """
    frames = [int(f) for f in str(args.query_frames).split(",") if f.strip()]
    if not frames or min(frames) < 0:
        raise ValueError(f"--query-frames must be non-negative frame indices, got {args.query_frames!r}")
    tracker = _load_for(args, info, "points", "label")
    names, load = _label_source(args)
    names, load = _subset(names, load, args)
    out = Path(args.out)
    labels = out / _LABEL_DIR
    labels.mkdir(parents=True, exist_ok=True)
    run = {"task": "label", "model": args.model, "checkpoint": _abspath(args.checkpoint), "data": os.path.abspath(args.data) if _parse_synthetic(args.data)
           is None else args.data, "seed": args.seed, "grid": args.grid, "query_frames": frames,
           "resize": _parse_size(args.resize, "--resize"), "max_frames": args.max_frames, "save_video": args.save_video}

    def work(i: int) -> Dict[str, Any]:
        video, path = load(i)
        T, H, W = video.shape[:3]
        use = [f for f in frames if f < T]
        if not use:
            raise ValueError(f"video {path!r} has {T} frames; none of --query-frames {frames} lies inside it")
        queries = grid_queries(args.grid, H, W, use)
        t0 = time.perf_counter()
        pred = _track_points(tracker, video, queries)
        seconds = time.perf_counter() - t0
        arrays = {"tracks": np.asarray(pred.tracks, dtype=np.float32), "visible": np.asarray(pred.visible, bool),
                  "visibility": np.asarray(pred.visibility, dtype=np.float32), "queries": queries,
                  "video_path": np.array(path), "model": np.array(args.model),
                  "image_size": np.array([H, W], dtype=np.int64)}
        if pred.confidence is not None:
            arrays["confidence"] = np.asarray(pred.confidence, dtype=np.float32)
        if args.save_video:
            arrays["video"] = video
        target = labels / f"{_safe_name(names[i])}.npz"
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as fh:  # a file handle: numpy would append ".npz" to a temp name
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, target)
        return {"num_frames": T, "height": H, "width": W, "num_points": int(queries.shape[0]), "seconds": seconds,
                "video_path": path, "labels": str(target.relative_to(out))}

    records = _run_sharded(_Job(names, work, out, run, not args.no_progress, f"label {args.model}",
                                lambda rec: (out / rec.get("labels", "")).is_file()), info)
    if records is None:
        return None
    summary = {"num_videos": len(records), "num_frames": sum(r["num_frames"] for r in records),
               "num_points": sum(r["num_points"] for r in records), "fps": _speed(records)}
    table = format_table([{"model": args.model, **summary}],
                         [("model", "model", "str"), ("num_videos", "videos", "int"), ("num_frames", "frames", "int"),
                          ("num_points", "points", "int"), ("fps", "fps", "float")])
    print(f"Labelled {len(records)} videos into {str(labels)!r}:\n{table}", flush=True)
    return _write_report(out, "label", run, summary, records, table, info)


# =============================================================================================== command line
_PICKLE_NOTE = ("TAP-Vid annotations are pickles. Unpickling can run code stored in the file, so only open files you "
                "trust (the official TAP-Vid downloads); the reader builds only plain containers and numpy arrays "
                "unless --trust-pickle is given.")


def _common(p: argparse.ArgumentParser, *, out_required: bool = True) -> None:
    p.add_argument("--data", required=True,
                   help="dataset path, or synthetic:N for N clips from the synthetic generator")
    p.add_argument("--model", required=True,
                   help="registry name, Hub repo or saved tracker folder; 'lk' / 'csrt' for the OpenCV baselines")
    p.add_argument("--checkpoint", default=None,
                   help="local weights file for a registry --model (e.g. the official checkpoint downloaded by hand)")
    p.add_argument("--out", required=out_required, help="output folder (per-sequence results, report.json); "
                   "rerunning into the same folder resumes")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips (default 0)")
    p.add_argument("--synthetic-preset", default="default", choices=SYNTHETIC_PRESETS,
                   help="generator settings: 'default' (training distribution) or 'wide' (held-out, harder)")
    p.add_argument("--synthetic-frames", type=int, default=24, help="frames per synthetic clip (default 24)")
    p.add_argument("--synthetic-size", default="256x256", help="HxW of synthetic clips (default 256x256)")
    p.add_argument("--synthetic-points", type=int, default=256, help="ground-truth points per synthetic clip")
    p.add_argument("--sequences", default=None,
                   help="subset to run: comma-separated names or a file with one name per line")
    p.add_argument("--limit", type=int, default=None, help="run only the first N sequences (after --sequences)")
    p.add_argument("--device", default="auto",
                   help="'auto' (cuda:<local rank> when CUDA is available, else cpu), or a torch device")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _fill_eval_subparsers(sub: Any) -> None:
    p = sub.add_parser("points", help="TAP-Vid metrics of a point tracker",
                       description="TAP-Vid metrics of a point tracker on TAP-Vid pickles (DAVIS, RGB-Stacking, a "
                                   "Kinetics shard folder), a folder of .npz annotations, or synthetic clips. "
                                   + _PICKLE_NOTE)
    _common(p)
    p.add_argument("--query-mode", default="first", choices=("first", "strided"),
                   help="TAP-Vid query sampling: first visible frame per track, or every --query-stride frames")
    p.add_argument("--query-stride", type=int, default=5, help="frame stride of the strided mode (default 5)")
    p.add_argument("--resize", default="256x256",
                   help="HxW videos are resized to before tracking (default 256x256, the official protocol); "
                        "'none' keeps their size (metrics are still measured in the 256x256 raster)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle without restrictions (runs any code in the file: trusted files only)")
    p.add_argument("--save-predictions", action="store_true", help="also write predictions/<video>.npz")
    p.set_defaults(eval_main=run_points)

    p = sub.add_parser("box", help="GOT-10k / LaSOT metrics of a box tracker",
                       description="Single-object tracking on a GOT-10k split folder, a LaSOT folder or synthetic "
                                   "clips: GOT-10k AO/SR and OPE AUC/P/Pnorm, plus the standard result files.")
    _common(p)
    p.add_argument("--layout", default="auto", choices=("auto", "got10k", "lasot"), help="dataset layout")
    p.add_argument("--convention", default="pytracking", choices=("pytracking", "ostrack"),
                   help="OPE validity rule: pytracking (all of x, y, w, h > 0) or ostrack (w, h > 0; what "
                        "OSTrack-family papers report)")
    p.set_defaults(eval_main=run_boxes)

    p = sub.add_parser("label", help="pseudo-label a folder of videos with a point tracker",
                       description="Track a grid of points through every video of a folder (or synthetic clips) "
                                   "and write labels/<video>.npz with tracks, visibility and queries.")
    _common(p)
    p.add_argument("--grid", type=int, default=10, help="grid side: GRID x GRID query points per query frame")
    p.add_argument("--query-frames", default="0", help="comma-separated frames the grid starts at (default 0)")
    p.add_argument("--resize", default="none", help="HxW to resize videos to before tracking (default: keep)")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    p.add_argument("--save-video", action="store_true", help="store the frames in the npz too")
    p.set_defaults(eval_main=run_label)


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command (with ``points`` / ``box`` / ``label``) to an ``add_subparsers()`` object.

    After parsing, ``args.eval_entry(args)`` (:func:`run_eval_args`) runs the chosen job and returns the exit
    status.
    """
    p = subparsers.add_parser("eval", help="evaluate trackers on benchmarks, or pseudo-label videos",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="eval_command", metavar="JOB", title="jobs")
    sub.required = True
    _fill_eval_subparsers(sub)
    p.set_defaults(eval_entry=run_eval_args)
    return p


def build_eval_parser() -> argparse.ArgumentParser:
    """The stand-alone parser of ``python -m trackers.train.eval.runner`` (``points`` / ``box`` / ``label``)."""
    p = argparse.ArgumentParser(prog="trackers-train eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="eval_command", metavar="JOB", title="jobs")
    sub.required = True
    _fill_eval_subparsers(sub)
    return p


def run_eval_args(args: argparse.Namespace) -> int:
    """Run a parsed ``eval`` command as this process's part of the (possibly torchrun-launched) job; returns the
    exit status: 0, or 2 after printing the error for a bad argument, model or dataset."""
    try:
        with distributed_session() as info:
            args.eval_main(args, info)
    except (ValueError, FileNotFoundError) as err:
        print(f"trackers-train eval {args.eval_command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def main_eval(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``trackers-train eval`` / ``python -m trackers.train.eval.runner``: parse ``argv`` (default
    ``sys.argv[1:]``), run, and return the exit status (2 for a bad argument or dataset, as argparse does)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_eval_args(build_eval_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main_eval())
