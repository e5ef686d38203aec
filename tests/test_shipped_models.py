"""The models shipped inside the package (``trackers/assets``): registered, loadable offline with no network and no
Hub cache, described by the config stored in each file, within the size budget, with a model card that matches the
file; and ``training/ship_small.py``, which puts them there, refuses checkpoints of another architecture."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT

import trackers
from trackers import registry
from trackers.zoo import ASSETS_PACKAGE, DEFAULT_BOX_MODEL, DEFAULT_POINT_MODEL, SHIPPED_MODELS

ASSETS = REPO_ROOT / "trackers" / "assets"
BUDGET_BYTES = 10_000_000  # the "at most 10 MB together"


def _weights(name: str):
    return ASSETS / name / "model.safetensors"


def _load_ship_small():
    spec = importlib.util.spec_from_file_location("ship_small", REPO_ROOT / "training" / "ship_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_models_are_registered_as_package_files():
    assert set(SHIPPED_MODELS) == {DEFAULT_POINT_MODEL, DEFAULT_BOX_MODEL}
    for name in SHIPPED_MODELS:
        entry = trackers.get_entry(name)
        weights = entry.files["weights"]
        assert weights.kind == "package" and weights.package == ASSETS_PACKAGE
        assert weights.filename == f"{name}/model.safetensors"
        assert entry.converter is None  # the file is in our own layout
        assert entry.license.startswith("Apache-2.0")
        assert "trained by us on synthetic data" in entry.description
        assert "shipped" in entry.tags
        assert registry.fetch_file(weights, model_name=name) == _weights(name).resolve()
    assert trackers.get_entry(DEFAULT_POINT_MODEL).tracker_name == "PointTracker"
    assert trackers.get_entry(DEFAULT_POINT_MODEL).config["online"] is True  # one file serves track and stream
    assert trackers.get_entry(DEFAULT_BOX_MODEL).tracker_name == "BoxTracker"


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_zoo_config_is_the_config_stored_in_the_shipped_file(name):
    meta = registry.safetensors_metadata(_weights(name))
    doc = json.loads(meta["trackers_config"])
    entry = trackers.get_entry(name)
    assert doc["name"] == name
    assert doc["tracker"] == entry.tracker_name
    # JSON has no tuples: compare the entry the way it would be written to a config.json
    assert doc["config"] == json.loads(json.dumps(dict(entry.config)))
    # what the registry builds (defaults + the entry's settings) is what the file was trained and shipped with
    built = trackers.Tracker.from_config(name)
    assert json.loads(json.dumps(doc["settings"])) == json.loads(json.dumps(built.settings.__dict__))
    assert int(meta["trained_steps"]) > 0
    assert meta["source_checkpoint"].startswith(f"training/{name}/run/checkpoint-")


def test_shipped_files_fit_the_budget_and_hold_nothing_else():
    total = sum(_weights(n).stat().st_size for n in SHIPPED_MODELS)
    assert total <= BUDGET_BYTES, f"shipped weights are {total:,} bytes"
    for name in SHIPPED_MODELS:
        files = sorted(p.name for p in (ASSETS / name).iterdir())
        assert files == ["MODEL_CARD.md", "model.safetensors"], files  # never the optimiser state
        state = registry.load_checkpoint_file(_weights(name))
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_model_card_describes_the_shipped_file(name):
    card = (ASSETS / name / "MODEL_CARD.md").read_text()
    digest = hashlib.sha256(_weights(name).read_bytes()).hexdigest()
    assert digest in card, "MODEL_CARD.md names another file: run training/ship_small.py"
    step = registry.safetensors_metadata(_weights(name))["trained_steps"]
    assert f"(step {step})" in card
    for section in ("## Training", "## Evaluation", "trackers-train", "Apache-2.0"):
        assert section in card


def test_shipped_models_load_offline_without_network_or_hub_cache(tmp_path):
    """A fresh process with the Hub switched off, empty caches and every socket connection refused loads both
    models, tracks with them, and leaves the caches empty."""
    hf_home, cache = tmp_path / "hf", tmp_path / "cache"
    hf_home.mkdir()
    cache.mkdir()
    code = textwrap.dedent(f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import numpy as np, trackers
        video = np.random.default_rng(0).integers(0, 255, (4, 64, 80, 3), dtype=np.uint8)
        points = trackers.PointTracker.from_pretrained({DEFAULT_POINT_MODEL!r})
        boxes = trackers.Tracker.from_pretrained({DEFAULT_BOX_MODEL!r})
        print(type(boxes).__name__, points.track(video, grid_size=2).tracks.shape[1],
              boxes.track(video, init_box=(20, 20, 44, 44)).boxes.shape[0])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKERS_OFFLINE": "1", "HF_HOME": str(hf_home),
           "HF_HUB_CACHE": str(hf_home / "hub"), "TRACKERS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["BoxTracker", "4", "4"]
    assert list(hf_home.rglob("*")) == [] and list(cache.rglob("*")) == []


def test_ship_small_copies_a_checkpoint_and_refuses_another_architecture(tmp_path):
    ship = _load_ship_small()
    good = tmp_path / "run" / "checkpoint-12"
    trackers.Tracker.from_config(DEFAULT_BOX_MODEL, seed=0).save_pretrained(good)
    target, count = ship.write_shipped(DEFAULT_BOX_MODEL, good, tmp_path / "out")
    meta = registry.safetensors_metadata(target)
    assert meta["trained_steps"] == "12"
    assert json.loads(meta["trackers_config"])["name"] == DEFAULT_BOX_MODEL
    a, b = registry.load_checkpoint_file(good / "model.safetensors"), registry.load_checkpoint_file(target)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert count == sum(v.numel() for v in a.values())
    # the file loads like any checkpoint, under the shipped name
    assert trackers.Tracker.from_pretrained(target).name == DEFAULT_BOX_MODEL

    other = tmp_path / "run" / "checkpoint-13"
    trackers.BoxTracker.from_config(DEFAULT_BOX_MODEL, seed=0, num_queries=16).save_pretrained(other)
    with pytest.raises(ship.ShipError, match="num_queries"):
        ship.write_shipped(DEFAULT_BOX_MODEL, other, tmp_path / "out2")

    # a checkpoint saved before a config field existed names no value for it: it loads at the default, so it
    # still matches when the zoo entry keeps that default, and not when the entry asks for another value
    old_style = tmp_path / "run" / "checkpoint-14"
    trackers.Tracker.from_config(DEFAULT_BOX_MODEL, seed=0).save_pretrained(old_style)
    doc = json.loads((old_style / "config.json").read_text())
    del doc["config"]["template_token_types"]
    (old_style / "config.json").write_text(json.dumps(doc))
    ship.write_shipped(DEFAULT_BOX_MODEL, old_style, tmp_path / "out3")
    typed = tmp_path / "run" / "checkpoint-15"
    trackers.BoxTracker.from_config(DEFAULT_BOX_MODEL, seed=0, template_token_types=True).save_pretrained(typed)
    with pytest.raises(ship.ShipError, match="template_token_types"):
        ship.write_shipped(DEFAULT_BOX_MODEL, typed, tmp_path / "out4")


def test_ship_small_updates_only_the_generated_block_of_a_card(tmp_path):
    ship = _load_ship_small()
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"# m\nbefore\n{ship.CARD_BEGIN}\nold\n{ship.CARD_END}\nafter\n")
    assert ship.update_card(card, ["- new"])
    assert card.read_text() == f"# m\nbefore\n{ship.CARD_BEGIN}\n- new\n{ship.CARD_END}\nafter\n"
    card.write_text("no markers")
    assert not ship.update_card(card, ["- new"])
