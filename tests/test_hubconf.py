"""torch.hub entry points are generated from the registry and load locally."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import trackers
from conftest import REPO_ROOT


def _hubconf():
    spec = importlib.util.spec_from_file_location("_hubconf_under_test", REPO_ROOT / "hubconf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_entry_per_registry_name():
    mod = _hubconf()
    for name in trackers.list_models():
        fn = getattr(mod, name.replace("-", "_"))
        assert callable(fn) and trackers.get_entry(name).description in fn.__doc__
    for dep in mod.dependencies:
        assert importlib.util.find_spec(dep) is not None, dep


def test_torch_hub_local_load_random_weights():
    model = torch.hub.load(str(REPO_ROOT), "cotracker3_online", source="local", pretrained=False)
    tracker = model.tracker
    assert type(tracker).__name__ == "PointTracker"
    assert tracker.name == "cotracker3-online"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 25_385_700  # the official parameter count


def test_cotracker_call_signature_matches_the_official_predictor(golden_dir, tmp_path):
    """``model(video, queries=...)`` / ``model(video, grid_size=..., backward_tracking=True)`` as co-tracker's
    hub predictor, on its golden outputs (synthetic weights)."""
    import numpy as np
    from golden_weights import synth_state_dict

    from trackers.point.cotracker_compat import CoTrackerCompat

    torch.save(synth_state_dict(golden_dir / "cotracker3" / "state_dict_offline.tsv"), tmp_path / "w.pth")
    model = CoTrackerCompat(trackers.PointTracker.from_pretrained("cotracker3-offline", checkpoint=tmp_path / "w.pth"))
    d = np.load(golden_dir / "cotracker3" / "golden_offline_predictor_queries.npz")
    video = torch.from_numpy(d["video"]).float()
    tracks, vis = model(video, queries=torch.from_numpy(d["queries"]))
    assert tracks.shape == d["tracks"].shape and vis.dtype == torch.bool
    assert float((tracks - torch.from_numpy(d["tracks"])).abs().max()) < 1e-3
    agree = (vis == torch.from_numpy(d["visibility"])).float().mean()
    assert agree > 0.99
    # the other arguments reach PointTracker.track unchanged (checked on a tiny model: the golden run is slow)
    from _helpers import TINY_COTRACKER, random_video

    tiny = trackers.PointTracker.from_config(TINY_COTRACKER, seed=0, settings=dict(iters=2))
    clip = random_video(T=6, H=24, W=40)
    t, v = CoTrackerCompat(tiny)(torch.from_numpy(clip).permute(0, 3, 1, 2)[None].float(), grid_size=3,
                                  grid_query_frame=2, backward_tracking=True)
    ref = tiny.track(clip, grid_size=3, grid_query_frame=2, backward=True)
    assert torch.equal(t[0], ref.tracks) and torch.equal(v[0], ref.visible)
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        model(video[0], grid_size=2)


def test_torch_hub_pretrained_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(trackers.WeightsNotAvailableError, match="scaled_offline.pth"):
        torch.hub.load(str(REPO_ROOT), "cotracker3_offline", source="local", cache_dir=tmp_path)
