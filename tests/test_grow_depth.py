"""``training/grow_depth.py``: a deepened DETRack starts as exactly the network it was grown from."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import moving_square_video

import trackers
from trackers.train.recipes.box import MODEL_PRESETS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_grow_depth():
    spec = importlib.util.spec_from_file_location("grow_depth", REPO_ROOT / "training" / "grow_depth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grown_tracker_tracks_exactly_like_the_original(tmp_path):
    from trackers.models.detrack import DETRackConfig

    config = DETRackConfig(**MODEL_PRESETS["tiny"])
    torch.manual_seed(0)
    src = tmp_path / "src"
    trackers.BoxTracker.from_config(config).save_pretrained(src)
    out = tmp_path / "grown"
    assert _load_grow_depth().main([str(src), str(out), "--add", "2"]) == 0

    old = trackers.BoxTracker.from_pretrained(src)
    new = trackers.BoxTracker.from_pretrained(out)
    assert new.config.depth == old.config.depth + 2
    assert new.settings == old.settings
    for i in range(old.config.depth, new.config.depth):
        block = new.model.backbone.blocks[i]
        assert not block.attn.proj.weight.any() and not block.mlp.fc2.weight.any()
        assert block.attn.qkv.weight.any()  # the rest of the block is initialised, so it can learn
    video = moving_square_video(T=5, H=64, W=64, dx=2.0)
    a = old.track(video, init_box=(4, 24, 20, 40))
    b = new.track(video, init_box=(4, 24, 20, 40))
    assert np.allclose(a.boxes.numpy(), b.boxes.numpy(), atol=1e-4)
    assert np.allclose(a.scores.numpy(), b.scores.numpy(), atol=1e-5)


def test_grow_depth_refuses_nothing_to_add(tmp_path):
    with pytest.raises(SystemExit):
        _load_grow_depth().main(["detrack-small-synthetic", str(tmp_path / "x"), "--add", "0"])


def test_token_types_start_at_zero_and_track_like_the_original(tmp_path):
    from trackers.models.detrack import DETRackConfig

    torch.manual_seed(1)
    src = tmp_path / "src"
    trackers.BoxTracker.from_config(DETRackConfig(**MODEL_PRESETS["tiny"])).save_pretrained(src)
    out = tmp_path / "typed"
    assert _load_grow_depth().main([str(src), str(out), "--add", "0", "--token-types"]) == 0
    old = trackers.BoxTracker.from_pretrained(src)
    new = trackers.BoxTracker.from_pretrained(out)
    assert new.config.template_token_types and new.config.depth == old.config.depth
    assert not new.model.backbone.token_type_embed.any()
    video = moving_square_video(T=5, H=64, W=64, dx=2.0)
    a = old.track(video, init_box=(4, 24, 20, 40))
    b = new.track(video, init_box=(4, 24, 20, 40))
    assert np.allclose(a.boxes.numpy(), b.boxes.numpy(), atol=1e-4)
    with pytest.raises(SystemExit):  # a second time: the network already has them
        _load_grow_depth().main([str(out), str(tmp_path / "again"), "--add", "0", "--token-types"])
