"""Command line: list/info, track smoke runs on a tiny video with tiny random-weight models, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trackers import cli, io
from trackers.results import BoxTracks, PointTracks

REPO = Path(__file__).resolve().parents[1]
H, W, T = 48, 64, 8

# Smallest CoTracker3 / LoRAT architectures that still exercise every part of the network.
TINY_COTRACKER = dict(window_len=8, latent_dim=16, hidden_size=32, num_heads=2, depth=1, num_virtual_tracks=4,
                      corr_levels=2, corr_radius=1, corr_hidden=32, corr_out=16, model_resolution=(48, 64))
POINT_SETTINGS = dict(iters=1, support_grid_size=2)
TINY_LORAT = dict(embed_dim=32, depth=1, num_heads=2, ffn_hidden=64, template_size=28, search_size=56,
                  backbone_grid=4)


def _run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "trackers", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(REPO))


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    """A bright square moving right on a textured background, as an mp4."""
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 120, size=(H, W, 3), dtype=np.uint8)
    frames = np.repeat(bg[None], T, axis=0)
    for t in range(T):
        frames[t, 14:30, 8 + 3 * t:24 + 3 * t] = (250, 220, 40)
    return io.write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", frames, fps=8)


@pytest.fixture(scope="module")
def tiny_point_model(tmp_path_factory):
    from trackers import PointTracker

    d = tmp_path_factory.mktemp("models") / "tiny-cotracker"
    PointTracker.from_config(seed=0, settings=POINT_SETTINGS, **TINY_COTRACKER).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_box_model(tmp_path_factory):
    from trackers import LoRATracker

    d = tmp_path_factory.mktemp("models") / "tiny-lorat"
    LoRATracker.from_config(seed=0, **TINY_LORAT).save_pretrained(d)
    return str(d)


def _one_line_error(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("trackers: error: "), text
    assert "Traceback" not in text
    return lines[0]


# ----------------------------------------------------------------------------------------------- subprocess


def test_python_m_trackers_list():
    r = _run("list")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0].split()[:4] == ["name", "tracker", "license", "weights"]
    for name in ("cotracker3-offline", "cotracker3-online"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert "PointTracker" in line and "CC-BY-NC-4.0 (non-commercial use only)" in line
        assert "hf.co/facebook/cotracker3/scaled_" in line
    lorat = next(ln for ln in out.splitlines() if ln.startswith("lorat-b-224 "))
    assert "manual download of base.bin" in lorat and "LoRATracker" in lorat
    assert "BoxTracker" in out and "no released weights" in out
    # the models shipped inside the package: our license, no download
    for name, tracker in (("cotracker3-small-synthetic", "PointTracker"), ("detrack-small-synthetic", "BoxTracker")):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert tracker in line and "Apache-2.0" in line
        assert f"shipped in trackers.assets ({name}/model.safetensors)" in line


def test_subprocess_errors_are_one_line(tmp_path):
    r = _run("track", str(tmp_path / "missing.mp4"), "--model", "cotracker3-offline")
    assert r.returncode == 2
    assert "missing.mp4" in _one_line_error(r.stderr)
    video = io.write_video(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    r = _run("track", video, "--model", "cotracker3-ofline")
    assert r.returncode == 2
    assert "unknown model 'cotracker3-ofline'. Did you mean: cotracker3-offline" in _one_line_error(r.stderr)
    r = _run("track", video, "--grid", "0")  # argparse accepts it, the command refuses it
    assert r.returncode == 2
    assert "--grid" in _one_line_error(r.stderr)


# ----------------------------------------------------------------------------------------------- in-process


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and torch.__version__ in out
    assert "av" in out and "operator backends:" in out


def test_list_filter(capsys):
    assert cli.main(["list", "cotracker3-on*"]) == 0
    out = capsys.readouterr().out
    assert "cotracker3-online" in out and "cotracker3-offline " not in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--model", "cotracker3-ofline"], "Did you mean: cotracker3-offline"),
        (["--model", "cotracker3-offline", "--box", "1,2,3"], "--box must be four numbers"),
        (["--model", "cotracker3-offline", "--box", "10,10,5,20"], "x2 > x1"),
        (["--model", "cotracker3-offline", "--box", "1,2,30,40"], "tracks points"),
        (["--model", "lorat-b-224", "--grid", "4"], "tracks a box"),
        (["--model", "lorat-b-224"], "pass --box"),
        (["--model", "cotracker3-offline", "--queries", "nope.csv"], "queries file not found"),
        (["--model", "cotracker3-offline", "--resize", "big"], "--resize"),
        (["--model", "cotracker3-offline", "--device", "cuda:7"], "cuda"),
    ],
)
def test_track_user_errors(tiny_video, capsys, argv, needle):
    if "--device" in argv and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8+ GPUs")
    assert cli.main(["track", tiny_video, *argv]) == 2
    err = capsys.readouterr().err
    assert needle in _one_line_error(err)


def test_track_bad_video_file(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    assert cli.main(["track", str(bad), "--model", "cotracker3-offline"]) == 2
    assert "bad.mp4" in _one_line_error(capsys.readouterr().err)


def test_weights_not_cached_offline(tiny_video, capsys, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert cli.main(["track", tiny_video, "--model", "lorat-b-224", "--box", "1,2,30,40", "--no-progress"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "lorat-b-224" in line and "--checkpoint" in line


def test_bad_queries_file(tiny_video, tmp_path, capsys):
    f = tmp_path / "q.csv"
    f.write_text("t,x,y\n0,1\n")
    assert cli.main(["track", tiny_video, "--model", "cotracker3-offline", "--queries", str(f)]) == 2
    assert "q.csv" in _one_line_error(capsys.readouterr().err)


def test_load_queries_formats(tmp_path):
    rows = np.array([[0, 10.5, 20.0], [3, 1.0, 2.0]], np.float32)
    csv = tmp_path / "q.csv"
    csv.write_text("t,x,y\n0,10.5,20\n# comment\n3, 1, 2\n")
    np.save(tmp_path / "q.npy", rows)
    np.savez(tmp_path / "q.npz", queries=rows)
    for p in (csv, tmp_path / "q.npy", tmp_path / "q.npz"):
        np.testing.assert_allclose(cli._load_queries(str(p)), rows)


def test_save_formats_follow_the_extension(tmp_path):
    res = BoxTracks(boxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2), scores=torch.tensor([1.0, 0.5]),
                    image_size=(H, W))
    cli._save_result(res, str(tmp_path / "out" / "b.csv"))
    assert (tmp_path / "out" / "b.csv").read_text().splitlines()[0] == "frame,x1,y1,x2,y2,score"
    cli._save_result(res, str(tmp_path / "b.json"))
    assert '"boxes"' in (tmp_path / "b.json").read_text()
    cli._save_result(res, str(tmp_path / "b.npz"))
    np.testing.assert_allclose(BoxTracks.load(tmp_path / "b.npz").scores.numpy(), [1.0, 0.5])


# ----------------------------------------------------------------------------------------------- smoke runs


def test_track_box_smoke(tiny_video, tiny_box_model, tmp_path, capsys):
    out, save = tmp_path / "box.mp4", tmp_path / "box.npz"
    rc = cli.main(["track", tiny_video, "--model", tiny_box_model, "--box", "8,14,24,30", "--out", str(out),
                   "--save", str(save), "--resize", "32", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "tracked 1 box over 8 frames" in capsys.readouterr().out
    res = BoxTracks.load(save)
    assert tuple(res.boxes.shape) == (T, 4) and tuple(res.scores.shape) == (T,)
    # Processed at 32x24 but reported in original pixels: frame 0 is exactly the given box.
    assert tuple(res.image_size) == (H, W)
    np.testing.assert_allclose(res.boxes[0].numpy(), [8, 14, 24, 30], atol=1e-4)
    info = io.video_info(out)
    assert info.num_frames == T and info.size == (24, 32)


def test_track_points_smoke(tiny_video, tiny_point_model, tmp_path):
    out, save = tmp_path / "pts.mp4", tmp_path / "pts.npz"
    r = _run("track", tiny_video, "--model", tiny_point_model, "--grid", "3", "--out", str(out),
             "--save", str(save), "--max-frames", "6")
    assert r.returncode == 0, r.stderr
    assert "tracked 9 points over 6 frames" in r.stdout
    res = PointTracks.load(save)
    assert tuple(res.tracks.shape) == (6, 9, 2)
    assert tuple(res.image_size) == (H, W)
    assert torch.isfinite(res.tracks).all()
    assert io.video_info(out).num_frames == 6


def test_track_points_queries_file_and_resize(tiny_video, tiny_point_model, tmp_path, capsys):
    q = tmp_path / "q.csv"
    q.write_text("t,x,y\n0,16,22\n2,40,10\n")
    save = tmp_path / "q.npz"
    rc = cli.main(["track", tiny_video, "--model", tiny_point_model, "--queries", str(q), "--save", str(save),
                   "--resize", "32", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = PointTracks.load(save)
    assert tuple(res.tracks.shape) == (T, 2, 2)
    # Queries come back in original-video pixels even though the clip was processed at half size.
    np.testing.assert_allclose(res.queries.numpy(), [[0, 16, 22], [2, 40, 10]], atol=1e-4)
    assert tuple(res.image_size) == (H, W)
    # Query frame index out of range is a user error.
    q.write_text("9,1,1\n")
    assert cli.main(["track", tiny_video, "--model", tiny_point_model, "--queries", str(q), "--no-progress"]) == 2
    assert "[0, 7]" in _one_line_error(capsys.readouterr().err)


def test_default_models_are_the_shipped_ones():
    from trackers import zoo

    assert (cli.DEFAULT_POINT_MODEL, cli.DEFAULT_BOX_MODEL) == (zoo.DEFAULT_POINT_MODEL, zoo.DEFAULT_BOX_MODEL)
    assert cli.SHIPPED_MODELS == zoo.SHIPPED_MODELS
    track = cli.build_parser().parse_args(["track", "v.mp4"])
    demo = cli.build_parser().parse_args(["demo"])
    assert track.model is None and demo.model == zoo.DEFAULT_POINT_MODEL


def test_demo_runs_the_shipped_point_tracker(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    rc = cli.main(["demo", "--out", str(out), "--max-frames", "8", "--grid", "3", "--resize", "128",
                   "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "'cotracker3-small-synthetic' (shipped with the package)" in text
    assert "tracked 9 points" in text and "RANDOMLY" not in text
    info = io.video_info(out)
    assert info.num_frames == 8 and info.size == (72, 128)


def test_demo_never_falls_back_to_random_weights(tmp_path, capsys, monkeypatch):
    """Official weights that cannot be had are a one-line error naming them, not a silently untrained run."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    rc = cli.main(["demo", "--model", "cotracker3-offline", "--out", str(tmp_path / "d.mp4"), "--no-progress"])
    assert rc == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "cotracker3-offline" in line and "scaled_offline.pth" in line
    assert not (tmp_path / "d.mp4").exists()


def test_demo_random_weights_says_so(tmp_path, capsys, monkeypatch):
    """--random-weights builds the registry architecture untrained and says so loudly."""
    out = tmp_path / "demo.mp4"
    from trackers import base

    def tiny_load(name, pretrained=True, **kw):
        assert name == "cotracker3-small-synthetic" and not pretrained
        from trackers import PointTracker

        return PointTracker.from_config(seed=0, device=kw.get("device"), settings=POINT_SETTINGS, **TINY_COTRACKER)

    monkeypatch.setattr(base, "load_tracker", tiny_load)
    rc = cli.main(["demo", "--random-weights", "--out", str(out), "--max-frames", "6", "--grid", "3",
                   "--resize", "96", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in text and "MEANINGLESS" in text
    info = io.video_info(out)
    assert info.num_frames == 6 and info.size == (54, 96)


def test_track_without_model_uses_the_shipped_models(tiny_video, tmp_path, capsys):
    """No --model: points with the shipped point tracker, a box with the shipped box tracker; the annotated video
    is written next to the input unless only --save is asked for."""
    import shutil

    video = shutil.copy(tiny_video, tmp_path / "clip.mp4")
    r = _run("track", str(video), "--grid", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "PointTracker('cotracker3-small-synthetic'" in r.stdout and "tracked 4 points over 8 frames" in r.stdout
    assert io.video_info(tmp_path / "clip_tracked.mp4").num_frames == T
    (tmp_path / "clip_tracked.mp4").unlink()
    save = tmp_path / "b.npz"
    assert cli.main(["track", str(video), "--box", "8,14,24,30", "--save", str(save), "--no-progress"]) == 0
    assert "BoxTracker('detrack-small-synthetic'" in capsys.readouterr().out
    assert tuple(BoxTracks.load(save).boxes.shape) == (T, 4)
    assert not (tmp_path / "clip_tracked.mp4").exists()


def test_demo_random_weights_needs_registry_name(tiny_point_model, capsys):
    assert cli.main(["demo", "--model", tiny_point_model, "--random-weights", "--no-progress"]) == 2
    assert "registry name" in _one_line_error(capsys.readouterr().err)
