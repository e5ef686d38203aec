"""Recipe ``point`` (CoTracker3 supervised training): losses, autograd through the network, learning, checkpoints."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trackers.models import cotracker3
from trackers.models.cotracker3 import CoTracker3, CoTrackerConfig
from trackers.train.config import resolve_config
from trackers.train.engine import train
from trackers.train.losses.point import PointLossConfig, confidence_loss, point_losses, track_loss, visibility_loss
from trackers.train.recipes.point import MODEL_PRESETS, PointConfig, PointRecipe, _requery

REPO = Path(__file__).resolve().parents[1]
RES = (32, 32)  # tiny frames keep every training run here to a few seconds


def _tiny(online: bool = False, **kw) -> CoTrackerConfig:
    fields = dict(MODEL_PRESETS["tiny"], model_resolution=RES)
    fields.update(online=online, window_len=4 if online else 8)
    fields.update(kw)
    return CoTrackerConfig(**fields)


def _point_cfg(out: Path, online: bool = False, **kw) -> PointConfig:
    model = {"model_resolution": list(RES)}
    if online:
        model["window_len"] = 4
    base = dict(output_dir=str(out), preset="tiny", model=model, max_steps=40, warmup_steps=5, lr=2e-3,
                train_clips=2, val_clips=0, clip_frames=8, num_points=16, iters=3, log_every=1, progress=False,
                model_name="cotracker3-online" if online else "cotracker3-offline")
    base.update(kw)
    return PointConfig(**base)


def _losses_of(run_dir: Path):
    return [float(r["value"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))
            if r["split"] == "train" and r["name"] == "loss"]


# ------------------------------------------------------------------------------------------------ losses
def test_track_loss_discount_and_occlusion_weight():
    gt = torch.zeros(1, 1, 2, 2)
    visible = torch.tensor([[[True, False]]])
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    # update 0: errors 2 px (quadratic zone: 0.5*4 = 2) ; update 1: errors 10 px (linear zone: 6*(10-3) = 42)
    c0 = torch.full((1, 1, 2, 2), 2.0)
    c1 = torch.full((1, 1, 2, 2), 10.0)
    got = track_loss([c0, c1], gt, visible, mask)
    per_update = lambda h: (h * 1.0 + h * 0.2) / 2  # noqa: E731  visible weight 1, occluded 1/5, over 2 pairs
    expected = (0.8 * per_update(2.0) + 1.0 * per_update(42.0)) / 2
    assert got.shape == (1,) and float(got) == pytest.approx(expected)
    # unsupervised pairs do not count at all
    only_vis = track_loss([c0, c1], gt, visible, torch.tensor([[[True, False]]]))
    assert float(only_vis) == pytest.approx((0.8 * 2.0 + 42.0) / 2)


def test_confidence_and_visibility_targets():
    gt = torch.zeros(1, 1, 3, 2)
    coords = torch.tensor([[[[11.0, 0.0], [13.0, 0.0], [0.0, 0.0]]]])
    visible = torch.tensor([[[True, True, False]]])
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    logit = torch.zeros(1, 1, 3, requires_grad=True)
    loss = confidence_loss([coords], [logit], gt, visible, mask)
    loss.backward()
    # target 1 for the point within 12 px, 0 for the one 13 px away, the occluded one ignored
    assert logit.grad[0, 0, 0] < 0 < logit.grad[0, 0, 1] and logit.grad[0, 0, 2] == 0
    assert float(loss.detach()) == pytest.approx(np.log(2.0), rel=1e-6)
    v = visibility_loss([torch.tensor([[[20.0, 20.0, -20.0]]])], visible, mask)
    assert float(v) < 1e-6
    out = point_losses([coords], [logit.detach()], [logit.detach()], gt, visible, mask, PointLossConfig(vis_weight=2))
    assert float(out["total"]) == pytest.approx(float(out["track"] + out["conf"] + 2 * out["vis"]))


def test_requery_moves_queries_into_the_trim():
    T, N = 6, 3
    tracks = torch.arange(T * N * 2, dtype=torch.float32).view(T, N, 2)
    visible = torch.ones(T, N, dtype=torch.bool)
    visible[:, 2] = False
    visible[1, 2] = True                       # track 2 is only visible at frame 1, outside the trim [2, 5)
    visible[:3, 1] = False                     # track 1 first visible (in the trim) at frame 3
    queries = torch.tensor([[3.0, 1.5, 2.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    q, valid = _requery(tracks, visible, queries, start=2, length=3)
    assert valid.tolist() == [True, True, False]
    assert q[0].tolist() == [1.0, 1.5, 2.5]    # inside: same point, frame made relative
    assert q[1, 0] == 1.0 and torch.equal(q[1, 1:], tracks[3, 1])


# ------------------------------------------------------------------------------------------------ network
def test_backward_through_network_chunked_equals_whole(monkeypatch):
    """Gradients reach every parameter, and the piecewise (in-place at inference) paths give the same ones."""
    torch.manual_seed(0)
    model = CoTracker3(_tiny())
    video = torch.rand(1, 6, 3, *RES) * 255
    queries = torch.tensor([[[0.0, 5.0, 7.0], [2.0, 20.0, 11.5], [5.0, 30.0, 30.0]]])

    def grads():
        model.zero_grad()
        seen = []
        tracks, vis, conf = model(video, queries, 2, on_iteration=lambda i, c, v, k: seen.append(c))
        (tracks.square().mean() + vis.mean() + conf.mean() + sum(c.mean() for c in seen)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    whole = grads()
    assert all(torch.isfinite(g).all() for g in whole.values())
    # every weight learns (biases right before an instance norm have no gradient by construction)
    assert not [n for n, g in whole.items() if n.endswith("weight") and not g.abs().max() > 0]
    # force the update transformer into one-track / one-frame pieces (what long clips and many points do)
    monkeypatch.setattr(cotracker3, "_BLOCK_TOKENS", 4)
    pieces = grads()
    for n in whole:
        err = float((pieces[n] - whole[n]).abs().max())
        assert err <= 1e-4 * float(whole[n].abs().max()) + 1e-6, (n, err)


def test_online_forward_reports_every_window_iteration():
    torch.manual_seed(0)
    model = CoTracker3(_tiny(online=True)).eval()
    video = torch.rand(1, 8, 3, *RES) * 255
    queries = torch.tensor([[[0.0, 5.0, 7.0], [3.0, 20.0, 11.5]]])
    calls = []
    with torch.no_grad():
        tracks, vis, conf = model(video, queries, 2, on_iteration=lambda i, c, v, k: calls.append((i, c, v, k)))
    # window 4, step 2, 8 frames: windows start at 0, 2, 4 -> 3 windows x 2 updates
    assert [i for i, *_ in calls] == [0, 1] * 3
    assert all(c.shape == (1, 4, 2, 2) for _, c, _, _ in calls)
    # the last update of the last window is what the forward returns for that window's frames
    _, c, v, _ = calls[-1]
    torch.testing.assert_close(tracks[:, 4:8], c * 4)
    torch.testing.assert_close(vis[:, 4:8], torch.sigmoid(v))


# ------------------------------------------------------------------------------------------------ config
def test_model_overrides_precedence(tmp_path):
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"preset": "small", "model": {"depth": 5, "num_heads": 2},
                                                     "lr": 1e-4}))
    from trackers.train.config import load_yaml

    cfg = resolve_config(PointConfig, load_yaml(tmp_path / "m.yaml"), {"width": 64, "resolution": [96, 128]})
    o = cfg.model_overrides()
    assert o["depth"] == 5 and o["num_heads"] == 2                  # model section beats the preset
    assert o["hidden_size"] == 64 and o["model_resolution"] == (96, 128)  # shortcuts beat both
    assert o["latent_dim"] == MODEL_PRESETS["small"]["latent_dim"]  # preset beats the registry architecture
    assert cfg.lr == 1e-4 and PointConfig().lr == 5e-4 and PointConfig().weight_decay == 1e-5
    # a command-line model mapping is merged key by key into the YAML one
    merged = resolve_config(PointConfig, load_yaml(tmp_path / "m.yaml"), {"model": {"mlp_ratio": 2.0, "depth": 1}})
    assert merged.model == {"depth": 1, "num_heads": 2, "mlp_ratio": 2.0}
    with pytest.raises(ValueError, match="unknown preset"):
        PointConfig(preset="huge")


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_loss_falls_and_checkpoint_loads_as_tracker(tmp_path, online):
    result = train(PointRecipe(_point_cfg(tmp_path, online=online, max_steps=36 if online else 40)))
    losses = _losses_of(tmp_path)
    assert len(losses) == result.step
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)

    from trackers import PointTracker

    folder = result.checkpoint
    tracker = PointTracker.from_pretrained(folder)
    assert tracker.config.online is online and tracker.config.model_resolution == RES
    video = (np.random.default_rng(0).random((8, *RES, 3)) * 255).astype(np.uint8)
    out = tracker.track(video, np.array([[0.0, 10.0, 12.0], [1.0, 20.0, 5.0]]), iters=3)
    assert out.tracks.shape == (8, 2, 2) and np.isfinite(np.asarray(out.tracks)).all()


def test_torchrun_cli_matches_single_process_double_batch(tmp_path):
    """`torchrun -m trackers.train.cli point` on 2 processes = 1 process with twice the batch (random trims on)."""
    common = ["point", "--preset", "tiny", "--model", "model_resolution=[32, 32]", "--max-steps", "3",
              "--warmup-steps", "1", "--lr", "2e-3", "--train-clips", "4", "--val-clips", "0", "--clip-frames", "8",
              "--num-points", "8", "--iters", "2", "--no-progress", "--log-every", "1", "--seed", "3",
              # Adam's first steps divide by |g|: a large epsilon keeps rounding-level gradient differences
              # (batch of 2 vs two batches of 1) from being blown up into lr-sized ones
              "--eps", "1e-3",
              # texture kinds pinned, so the clips (and the size of those rounding differences) do not move when the
              # generator's default list grows
              "--synthetic", "textures=[noise, stripes, checker, gradient, palette, marble, patches]"]
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
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "checkpoint-3" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "checkpoint-3" / "model.safetensors"))
    # A real DDP fault (wrong averaging, other clips on a rank) moves weights by about one lr (2e-3) per step.
    # Rounding (a batch of 2 vs two batches of 1, summed in other orders by the CPU's kernels) stays far below that
    # but is amplified by the iterative model: up to 3e-5 on an AVX2-only CPU (1e-5 sufficed with AVX-512).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    la, lb = _losses_of(tmp_path / "ddp"), _losses_of(tmp_path / "single")
    np.testing.assert_allclose(la, lb, rtol=1e-4)


def test_point_tracker_does_not_import_training_code():
    code = (
        "import sys, numpy as np\n"
        "from trackers import PointTracker\n"
        "t = PointTracker.from_config('cotracker3-offline', **{'model_resolution': (32, 32), 'hidden_size': 32,"
        " 'num_heads': 2, 'depth': 1, 'latent_dim': 32, 'num_virtual_tracks': 4, 'corr_levels': 2})\n"
        "out = t.track(np.zeros((4, 32, 32, 3), np.uint8), np.array([[0.0, 5.0, 5.0]]), iters=1)\n"
        "assert out.tracks.shape == (4, 1, 2)\n"
        "print(sorted(m for m in sys.modules if m.startswith('trackers.train')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
