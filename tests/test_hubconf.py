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
    tracker = torch.hub.load(str(REPO_ROOT), "cotracker3_online", source="local", pretrained=False)
    assert type(tracker).__name__ == "PointTracker"
    assert tracker.name == "cotracker3-online"
    n_params = sum(p.numel() for p in tracker.model.parameters())
    assert n_params == 25_385_700  # the official parameter count


def test_torch_hub_pretrained_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(trackers.WeightsNotAvailableError, match="scaled_offline.pth"):
        torch.hub.load(str(REPO_ROOT), "cotracker3_offline", source="local", cache_dir=tmp_path)
