"""CoTracker3's configurable CNN widths (``CoTrackerConfig.encoder_widths``) and the ``shipped-small`` preset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trackers import PointTracker
from trackers.models.cotracker3 import CoTracker3, CoTrackerConfig, Encoder
from trackers.train.recipes.point import MODEL_PRESETS

from _helpers import TINY_COTRACKER

#: Channels of the released CNN: stem 64, stages 64 / 96 / 128 / 128, fused from their 416 concatenated channels.
OFFICIAL_FNET_SHAPES = {
    "fnet.conv1.weight": (64, 3, 7, 7),
    "fnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "fnet.layer2.0.conv1.weight": (96, 64, 3, 3),
    "fnet.layer2.0.downsample.0.weight": (96, 64, 1, 1),
    "fnet.layer3.1.conv2.weight": (128, 128, 3, 3),
    "fnet.layer4.0.conv1.weight": (128, 128, 3, 3),
    "fnet.conv2.weight": (256, 416, 3, 3),
    "fnet.conv3.weight": (128, 256, 1, 1),
}


def test_default_widths_keep_the_released_layout():
    assert CoTrackerConfig().encoder_widths == (64, 96, 128, 128)
    shapes = {k: tuple(v.shape) for k, v in CoTracker3(CoTrackerConfig(online=True, window_len=16)).state_dict().items()}
    for key, shape in OFFICIAL_FNET_SHAPES.items():
        assert shapes[key] == shape, key
    # layer4's first block keeps its 1x1 skip conv (stride 2), layer1's has none (same shape)
    assert "fnet.layer4.0.downsample.0.weight" in shapes and "fnet.layer1.0.downsample.0.weight" not in shapes


def test_narrow_widths_shape_every_stage():
    enc = Encoder(out_dim=24, stride=4, widths=(8, 12, 16, 20))
    sd = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert sd["conv1.weight"] == (8, 3, 7, 7)
    assert sd["layer1.0.conv1.weight"] == (8, 8, 3, 3) and "layer1.0.downsample.0.weight" not in sd
    assert sd["layer2.0.conv1.weight"] == (12, 8, 3, 3) and sd["layer2.0.downsample.0.weight"] == (12, 8, 1, 1)
    assert sd["layer4.1.conv2.weight"] == (20, 20, 3, 3)
    assert sd["conv2.weight"] == (48, 8 + 12 + 16 + 20, 3, 3)
    out = enc(torch.rand(2, 3, 32, 48) * 2 - 1)
    assert out.shape == (2, 24, 8, 12) and torch.isfinite(out).all()


def test_narrow_model_forward_and_backward():
    cfg = CoTrackerConfig(**dict(TINY_COTRACKER, encoder_widths=(8, 8, 12, 16)))
    model = CoTracker3(cfg)
    assert model.fnet.conv1.out_channels == 8
    video = torch.rand(1, 5, 3, 32, 48) * 255
    queries = torch.tensor([[[0.0, 10.0, 12.0], [2.0, 30.0, 20.0]]])
    tracks, vis, conf = model(video, queries, iters=2)
    assert tracks.shape == (1, 5, 2, 2) and vis.shape == conf.shape == (1, 5, 2)
    (tracks.sum() + vis.sum()).backward()
    grad = model.fnet.conv1.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("bad", [(64, 96, 128), (64, 0, 128, 128), ("a", 1, 2, 3), 5])
def test_bad_widths_are_rejected(bad):
    with pytest.raises(ValueError, match="encoder_widths"):
        CoTrackerConfig(encoder_widths=bad)


@pytest.mark.parametrize("bad", [(64, 96, 128), (64, 0, 128, 128)])
def test_encoder_rejects_bad_widths(bad):
    with pytest.raises(ValueError, match="widths"):
        Encoder(widths=bad)


def test_widths_survive_save_and_reload(tmp_path):
    tracker = PointTracker.from_config("cotracker3-online", **dict(TINY_COTRACKER, window_len=8,
                                                                  encoder_widths=(8, 8, 12, 16)), seed=0)
    tracker.save_pretrained(tmp_path / "narrow")
    again = PointTracker.from_pretrained(tmp_path / "narrow")
    # JSON stores the widths as a list; the config gets its tuple back
    assert again.config.encoder_widths == (8, 8, 12, 16) and again.config == tracker.config
    video = np.random.default_rng(0).integers(0, 256, size=(6, 32, 48, 3), dtype=np.uint8)
    q = [[0, 10.0, 12.0], [1, 30.0, 20.0]]
    assert torch.equal(again.track(video, q).tracks, tracker.track(video, q).tracks)


def test_shipped_small_preset_fits_the_package_budget(tmp_path):
    """Both shipped models together may take 10 MB as fp32 safetensors (what save_pretrained writes): the point
    model gets at most half of that."""
    tracker = PointTracker.from_config("cotracker3-online", **MODEL_PRESETS["shipped-small"], seed=0)
    cfg = tracker.model.config
    assert cfg.online and cfg.window_len == 16 and cfg.encoder_widths == (32, 32, 48, 64)
    params = sum(p.numel() for p in tracker.model.parameters())
    assert 0.8e6 < params < 1.3e6
    path = tracker.save_pretrained(tmp_path / "small") / "model.safetensors"
    assert path.stat().st_size < 5_000_000
