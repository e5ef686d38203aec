"""trackers.train.eval.runner: points / box / label jobs end to end on tiny data, resume, and a 2-process torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackers.train.eval import metrics as M
from trackers.train.eval.distributed import DistInfo, shard
from trackers.train.eval.runner import format_table, grid_queries, main_eval

import cv2  # noqa: E402,F401 - the test extra installs OpenCV; without it these tests must fail, not skip

REPO = Path(__file__).resolve().parents[1]
SYN = ["--synthetic-frames", "8", "--synthetic-size", "64x64", "--synthetic-points", "16", "--no-progress"]
TINY_POINT = dict(model_resolution=(32, 48), latent_dim=16, hidden_size=32, num_heads=2, depth=1,
                  num_virtual_tracks=4, corr_radius=1, corr_hidden=16, corr_out=8, window_len=12)
TINY_BOX = dict(embed_dim=32, depth=2, num_heads=2, ffn_hidden=64, template_size=28, search_size=56)


@pytest.fixture(scope="module")
def tiny_point_model(tmp_path_factory) -> str:
    import trackers

    d = tmp_path_factory.mktemp("tiny_point")
    trackers.PointTracker.from_config(TINY_POINT, settings=dict(iters=2), seed=0).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_box_model(tmp_path_factory) -> str:
    import trackers

    d = tmp_path_factory.mktemp("tiny_box")
    trackers.LoRATracker.from_config(TINY_BOX, seed=0).save_pretrained(d)
    return str(d)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ points
def test_points_lk_matches_direct_computation_and_resumes(tmp_path, capsys):
    from trackers.train.data.synthetic import SyntheticConfig, generate_clip, item_seed
    from trackers.train.eval.baselines import LucasKanadeTracker

    out = tmp_path / "lk"
    args = ["points", "--data", "synthetic:3", "--model", "lk", "--out", str(out), "--resize", "none",
            "--seed", "7", *SYN]
    assert main_eval(args) == 0
    printed = capsys.readouterr()
    assert "AJ" in printed.out and "lk" in printed.out
    rep = _report(out)
    assert rep["task"] == "points" and len(rep["sequences"]) == 3 and rep["world_size"] == 1
    assert [r["name"] for r in rep["sequences"]] == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]

    # the same numbers computed by hand: clip from the generator, first-mode queries, LK, TAP-Vid metrics
    config = SyntheticConfig().replace(num_frames=8, height=64, width=64, num_points=16)
    per_video = []
    for i in range(3):
        clip = generate_clip(item_seed(7, i), config)
        q = M.sample_queries_first(clip.tracks, clip.visible)
        pred = LucasKanadeTracker().track(clip.video, q.queries.astype(np.float32))
        m = M.tapvid_metrics(pred.tracks, pred.visible, q.tracks, q.visible, q.queries, query_mode="first",
                             image_size=(64, 64))
        got = rep["sequences"][i]["metrics"]
        for k in M.TAPVID_METRIC_NAMES:
            assert (got[k] is None and np.isnan(m[k])) or got[k] == pytest.approx(float(m[k]), abs=1e-12), k
        per_video.append(m)
    expect = M.aggregate_tapvid(per_video)
    assert rep["summary"]["average_jaccard"] == pytest.approx(expect["average_jaccard"], abs=1e-12)
    assert rep["summary"]["num_videos"] == 3 and rep["summary"]["average_jaccard"] > 0.0

    # resume: drop one finished sequence; the rerun redoes only that one
    seq_dir = out / "sequences"
    before = {p.name: p.read_text() for p in seq_dir.glob("*.json")}
    (seq_dir / "synthetic_0001.json").unlink()
    assert main_eval(args) == 0
    err = capsys.readouterr().err
    assert "resuming: 2 of 3 sequences already finished" in err
    after = {p.name: p.read_text() for p in seq_dir.glob("*.json")}
    assert after["synthetic_0000.json"] == before["synthetic_0000.json"]  # untouched (same finished_at)
    assert after["synthetic_0002.json"] == before["synthetic_0002.json"]
    assert json.loads(after["synthetic_0001.json"])["metrics"] == json.loads(before["synthetic_0001.json"])["metrics"]
    assert _report(out)["summary"] == rep["summary"] | {"fps": _report(out)["summary"]["fps"]}

    # results of other settings are never mixed in
    assert main_eval(args[:-len(SYN)] + SYN + ["--query-mode", "strided"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_points_wrong_model_and_data_errors(tmp_path, capsys):
    assert main_eval(["points", "--data", "synthetic:1", "--model", "csrt", "--out", str(tmp_path / "a"), *SYN]) == 2
    assert "needs a point tracker" in capsys.readouterr().err
    assert main_eval(["points", "--data", str(tmp_path / "nothing"), "--model", "lk",
                      "--out", str(tmp_path / "b"), *SYN]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main_eval(["points", "--data", "synthetic:0", "--model", "lk", "--out", str(tmp_path / "c"), *SYN]) == 2
    assert main_eval(["points", "--data", "synthetic:1", "--model", "lk", "--checkpoint", "w.pth",
                      "--out", str(tmp_path / "d"), *SYN]) == 2
    assert "--checkpoint does not apply" in capsys.readouterr().err


def test_points_on_tapvid_pickle_strided(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    frames, _ = _square_clip(T=10, H=40, W=60)
    points = rng.uniform(0.1, 0.9, (5, 10, 2)).astype(np.float32)
    occluded = rng.uniform(size=(5, 10)) < 0.3
    occluded[4] = True  # never visible: no query
    data = {"dog": {"video": frames, "points": points, "occluded": occluded},
            "cat": {"video": frames[:, :, ::-1].copy(), "points": points, "occluded": occluded}}
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps(data))
    out = tmp_path / "out"
    assert main_eval(["points", "--data", str(path), "--model", "lk", "--out", str(out), "--query-mode", "strided",
                      "--resize", "32x48", "--no-progress"]) == 0
    rep = _report(out)
    assert [r["name"] for r in rep["sequences"]] == ["dog", "cat"]
    r = rep["sequences"][0]
    assert (r["height"], r["width"], r["num_frames"], r["num_tracks"]) == (32, 48, 10, 5)
    q = M.sample_queries_strided(points.transpose(1, 0, 2) * [48, 32], ~occluded.T, stride=5)
    assert r["num_queries"] == q.queries.shape[0] > 0
    assert rep["run"]["query_mode"] == "strided" and rep["run"]["data"]["layout"] == "pickle"
    assert all(0.0 <= v <= 1.0 for v in r["metrics"].values() if v is not None)


def test_two_process_torchrun_equals_single_process(tmp_path, tiny_point_model):
    common = ["points", "--data", "synthetic:3", "--model", tiny_point_model, "--seed", "3", *SYN]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main_eval(common + ["--out", str(single)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    # --standalone: torchrun picks a free port itself (other jobs on the machine may hold the default one)
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "trackers.train.eval.runner", *common, "--out", str(multi)],
                            env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 180 s:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    a, b = _report(single), _report(multi)
    assert b["world_size"] == 2 and a["world_size"] == 1
    # rank 1 took sequence 1, rank 0 took 0 and 2; rank 0 merged them in order
    assert [r["name"] for r in b["sequences"]] == [r["name"] for r in a["sequences"]]
    assert [r["metrics"] for r in b["sequences"]] == [r["metrics"] for r in a["sequences"]]
    drop = ("fps",)
    assert {k: v for k, v in b["summary"].items() if k not in drop} == \
        {k: v for k, v in a["summary"].items() if k not in drop}
    assert "model" in stdout and stdout.count("TAP-Vid metrics") == 1  # only rank 0 prints the table


def test_rank0_waits_for_records_of_slower_ranks(tmp_path):
    import threading
    import time

    from trackers.train.eval import runner as R

    job = R._Job(["a", "b"], work=lambda i: {}, out=tmp_path, run={"x": 1}, progress=False, label="t")
    (tmp_path / "sequences").mkdir()
    R._atomic_write_json(R._record_path(tmp_path, "a"), {"run": {"x": 1}, "v": 0})
    R._atomic_write_json(R._record_path(tmp_path, "b"), {"run": {"x": 2}, "v": -1})  # other settings: not taken

    def slow_rank():
        time.sleep(0.5)
        R._atomic_write_json(R._record_path(tmp_path, "b"), {"run": {"x": 1}, "v": 1})

    thread = threading.Thread(target=slow_rank)
    thread.start()
    t0 = time.monotonic()
    records = R._collect(job, {"x": 1}, DistInfo(rank=0, world_size=2), poll_seconds=0.05)
    thread.join()
    assert time.monotonic() - t0 >= 0.4 and [r["v"] for r in records] == [0, 1]
    # a single process never waits: a missing record is an error
    (tmp_path / "sequences" / "b.json").unlink()
    with pytest.raises(RuntimeError, match="no finished result for 1 sequence"):
        R._collect(job, {"x": 1}, DistInfo())


def test_shard_is_round_robin():
    assert shard(7, DistInfo(rank=1, world_size=3)) == [1, 4]
    assert sorted(sum((shard(7, DistInfo(r, 3)) for r in range(3)), [])) == list(range(7))


# ------------------------------------------------------------------------------------------------ boxes
def _square_clip(T: int = 8, H: int = 64, W: int = 80, seed: int = 0):
    """A textured square moving 2 px/frame to the right over a smooth background; xyxy boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    background = 100 + 40 * np.sin(xx / 9.0) + 40 * np.cos(yy / 7.0)
    texture = rng.uniform(0, 255, (20, 20))
    frames, boxes = [], []
    for t in range(T):
        f = background.copy()
        x0 = 10 + 2 * t
        f[20:40, x0:x0 + 20] = texture
        frames.append(np.repeat(np.clip(f, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
        boxes.append([x0, 20, x0 + 20, 40])
    return np.stack(frames), np.array(boxes, float)


def _write_jpgs(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t + 1:08d}.jpg", quality=95)


def test_box_got10k_and_lasot_folders(tmp_path, capsys):
    frames, boxes = _square_clip()
    T = len(frames)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    got = tmp_path / "got10k_val"
    _write_jpgs(got / "seqA", frames)
    np.savetxt(got / "seqA" / "groundtruth.txt", xywh, fmt="%g", delimiter=",")
    cover = np.full(T, 8)
    cover[3] = 0  # an absent frame: not scored
    np.savetxt(got / "seqA" / "cover.label", cover, fmt="%d")
    _write_jpgs(got / "seqTest", frames)
    np.savetxt(got / "seqTest" / "groundtruth.txt", xywh[:1], fmt="%g", delimiter=",")  # test split: first box
    (got / "list.txt").write_text("seqA\nseqTest\n")
    out = tmp_path / "out_got"
    assert main_eval(["box", "--data", str(got), "--model", "csrt", "--out", str(out), "--no-progress"]) == 0
    rep = _report(out)
    assert [r["has_groundtruth"] for r in rep["sequences"]] == [True, False]
    # GOT-10k submission layout, and the report's AO equals the metric recomputed from the written file
    pred = np.loadtxt(out / "results" / "seqA" / "seqA_001.txt", delimiter=",")
    assert pred.shape == (T, 4)
    assert np.loadtxt(out / "results" / "seqA" / "seqA_time.txt").shape == (T,)
    assert (out / "results" / "seqTest" / "seqTest_001.txt").is_file()
    pred_xyxy = np.concatenate([pred[:, :2], pred[:, :2] + pred[:, 2:]], 1)
    g = M.got10k_metrics(pred_xyxy, boxes, image_size=frames.shape[1:3], cover=cover)
    assert g.ious.size == T - 2  # frame 0 and the absent frame are not scored
    assert rep["summary"]["ao"] == pytest.approx(g.ao, abs=1e-4) and rep["summary"]["ao"] > 0.6
    assert rep["summary"]["num_scored"] == 1 and rep["summary"]["num_frames_scored"] == T - 2
    assert "AO" in capsys.readouterr().out

    # LaSOT: 1-based ground truth in, 1-based results out; out-of-view frames are flagged
    las = tmp_path / "lasot"
    seq = las / "square" / "square-1"
    _write_jpgs(seq / "img", frames)
    gt1 = xywh.copy()
    gt1[:, :2] += 1
    np.savetxt(seq / "groundtruth.txt", gt1, fmt="%g", delimiter=",")
    (seq / "full_occlusion.txt").write_text(",".join(["0"] * T))
    (seq / "out_of_view.txt").write_text(",".join(["0"] * (T - 1) + ["1"]))
    out2 = tmp_path / "out_lasot"
    assert main_eval(["box", "--data", str(las), "--model", "csrt", "--out", str(out2), "--no-progress"]) == 0
    rep2 = _report(out2)
    written = np.loadtxt(out2 / "results" / "square-1.txt", delimiter=",")
    np.testing.assert_allclose(written[0], gt1[0], atol=1e-3)  # frame 0 = the init box, back in 1-based pixels
    o = M.ope_metrics(np.concatenate([written[:, :2] - 1, written[:, :2] - 1 + written[:, 2:]], 1), boxes,
                      benchmark="lasot", target_visible=np.arange(T) < T - 1)
    assert rep2["summary"]["auc"] == pytest.approx(o.auc, abs=1e-4)
    assert rep2["sequences"][0]["ope"]["success_curve"][0] == pytest.approx((T - 1) / T)  # last frame: failure


def test_box_bad_layout_and_tiny_network_tracker(tmp_path, tiny_box_model, capsys):
    bad = tmp_path / "my_videos"
    bad.mkdir()
    (bad / "a.txt").write_text("x")
    assert main_eval(["box", "--data", str(bad), "--model", "csrt", "--out", str(tmp_path / "o")]) == 2
    assert "my_videos" in capsys.readouterr().err
    out = tmp_path / "tiny"
    assert main_eval(["box", "--data", "synthetic:2", "--model", tiny_box_model, "--out", str(out),
                      "--synthetic-preset", "wide", *SYN]) == 0
    rep = _report(out)
    assert rep["run"]["data"]["config"]["textures"] == ["dots", "cells", "plaid"]  # the held-out preset
    assert len(rep["sequences"]) == 2 and all(r["num_frames"] == 8 for r in rep["sequences"])
    assert 0.0 <= rep["summary"]["ao"] <= 1.0 and 0.0 <= rep["summary"]["auc"] <= 1.0
    assert (out / "results" / "synthetic_0001.txt").is_file()
    assert main_eval(["box", "--data", "synthetic:1", "--model", "lk", "--out", str(tmp_path / "p"), *SYN]) == 2
    assert "needs a box tracker" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ label
def test_label_folder_writes_loadable_npz(tmp_path, tiny_point_model, capsys):
    from trackers.io import write_video
    from trackers.train.data.readers import NpzTrackDataset

    frames, _ = _square_clip(T=10, H=48, W=64)
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "clip_a.mp4", frames, fps=10)
    write_video(videos / "clip_b.mp4", frames[:, :, ::-1], fps=10)
    out = tmp_path / "labels_lk"
    assert main_eval(["label", "--data", str(videos), "--model", "lk", "--out", str(out), "--grid", "3",
                      "--query-frames", "0,4", "--save-video", "--no-progress"]) == 0
    files = sorted((out / "labels").glob("*.npz"))
    assert [f.name for f in files] == ["clip_a.npz", "clip_b.npz"]
    with np.load(files[0], allow_pickle=False) as z:
        assert z["tracks"].shape == (10, 18, 2) and z["visible"].shape == (10, 18) and z["visible"].dtype == bool
        assert z["visibility"].shape == (10, 18) and z["queries"].shape == (18, 3)
        assert str(z["video_path"]).endswith("clip_a.mp4") and Path(str(z["video_path"])).is_file()
        np.testing.assert_array_equal(z["queries"], grid_queries(3, 48, 64, [0, 4]))
        t = z["queries"][:, 0].astype(int)
        np.testing.assert_allclose(z["tracks"][t, np.arange(18)], z["queries"][:, 1:], atol=1e-4)
        assert z["video"].shape == (10, 48, 64, 3)
    item = NpzTrackDataset(out / "labels")[1]  # --save-video makes them training clips
    assert item["tracks"].shape == (10, 18, 2)
    # resume: a video whose npz went missing is labelled again, the other one is skipped
    kept = files[0].stat().st_mtime_ns
    files[1].unlink()
    capsys.readouterr()
    assert main_eval(["label", "--data", str(videos), "--model", "lk", "--out", str(out), "--grid", "3",
                      "--query-frames", "0,4", "--save-video", "--no-progress"]) == 0
    assert "resuming: 1 of 2 sequences already finished" in capsys.readouterr().err
    assert files[1].is_file() and files[0].stat().st_mtime_ns == kept
    # a network point tracker, under the same runner
    out2 = tmp_path / "labels_tiny"
    assert main_eval(["label", "--data", str(videos), "--model", tiny_point_model, "--out", str(out2),
                      "--grid", "2", "--no-progress"]) == 0
    with np.load(out2 / "labels" / "clip_b.npz", allow_pickle=False) as z:
        assert z["tracks"].shape == (10, 4, 2) and "video" not in z.files
        assert np.isfinite(z["tracks"]).all() and ((z["visibility"] >= 0) & (z["visibility"] <= 1)).all()
    assert _report(out2)["summary"]["num_videos"] == 2


def test_eval_parser_plugs_into_a_parent_cli(tmp_path):
    import argparse

    from trackers.train.eval.runner import add_eval_parser

    parser = argparse.ArgumentParser(prog="trackers-train")
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "box", "--data", "synthetic:1", "--model", "csrt", "--out", str(tmp_path),
                              *SYN])
    assert args.eval_entry(args) == 0
    assert _report(tmp_path)["summary"]["num_sequences"] == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "points", "--data", "x"])  # --model and --out are required


def test_grid_queries_and_table():
    q = grid_queries(3, 64, 128, [0, 5])
    assert q.shape == (18, 3) and set(q[:, 0]) == {0.0, 5.0}
    np.testing.assert_allclose(q[4, 1:], [64, 32])  # middle of a 3x3 grid = frame centre
    np.testing.assert_allclose(q[0, 1:], [2, 2])  # margin W / 64
    np.testing.assert_allclose(grid_queries(1, 10, 20)[0], [0, 10, 5])
    with pytest.raises(ValueError, match="grid size"):
        grid_queries(0, 10, 10)
    text = format_table([{"m": "x", "v": 0.1234, "n": float("nan")}], [("m", "model", "str"), ("v", "AJ", "pct"),
                                                                        ("n", "fps", "float")])
    assert text.splitlines()[2].split() == ["x", "12.3", "-"]
