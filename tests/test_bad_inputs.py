"""Bad and edge inputs, by class: each gives one clear error naming the bad value or file (never a raw
SafetensorError / JSONDecodeError / numpy wording), and the command line prints user errors in one line while real
bugs keep their traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers import TINY_LORAT

import trackers
from trackers import cli, registry
from trackers.errors import InputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "tiny"
    trackers.LoRATracker.from_config(TINY_LORAT, seed=0).save_pretrained(folder)
    return folder


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage-header", "half-header"])
def test_corrupt_safetensors_names_the_file(saved, tmp_path, damage):
    folder = _copy(saved, tmp_path)
    w = folder / "model.safetensors"
    data = w.read_bytes()
    n = int.from_bytes(data[:8], "little")
    if damage == "truncate":
        w.write_bytes(data[: len(data) - 100])
    elif damage == "zero":
        w.write_bytes(b"")
    elif damage == "garbage-header":
        w.write_bytes(data[:8] + b"{" + b"\xff" * (n - 1) + data[8 + n:])
    else:
        w.write_bytes(data[: 8 + n // 2])
    with pytest.raises(ValueError, match="model.safetensors") as info:
        trackers.LoRATracker.from_pretrained(folder)
    assert isinstance(info.value, InputError) or "safetensors" in str(info.value)
    with pytest.raises(ValueError, match="model.safetensors"):
        trackers.LoRATracker.from_pretrained(w)


@pytest.mark.parametrize("text", ["", "{not json", '{"tracker": "LoRATracker"}', "[1, 2]",
                                  '{"tracker": "LoRATracker", "config": {"embed_dim": 0}}',
                                  '{"tracker": "LoRATracker", "config": {"patch_size": "x"}}',
                                  '{"tracker": "LoRATracker", "config": {}, "settings": {"search_factor": -1}}',
                                  '{"tracker": "NoSuchTracker", "config": {}}'])
def test_corrupt_config_json_names_the_problem(saved, tmp_path, text):
    folder = _copy(saved, tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(ValueError) as info:
        trackers.Tracker.from_pretrained(folder)
    msg = str(info.value)
    assert "config.json" in msg or "LoRAT" in msg or "SOTSettings" in msg or "NoSuchTracker" in msg, msg
    assert "Traceback" not in msg


def test_corrupt_metadata_json_in_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "w.safetensors"), metadata={"trackers_config": "{oops"})
    with pytest.raises(ValueError, match="w.safetensors.*not valid JSON"):
        trackers.Tracker.from_pretrained(tmp_path / "w.safetensors")


def test_config_values_are_validated_before_use():
    for bad in (dict(patch_size=0), dict(template_size=-28), dict(depth=1.5), dict(num_heads=3),
                dict(lora_rank=-1)):
        with pytest.raises(ValueError, match="LoRATConfig"):
            trackers.LoRATracker.from_config({**TINY_LORAT, **bad})
    for bad in (dict(stride=0), dict(window_len=1), dict(hidden_size=30), dict(model_resolution="big"),
                dict(corr_radius=-1), dict(online="yes")):
        with pytest.raises(ValueError):
            trackers.PointTracker.from_config(bad)
    for bad in (dict(iters=0), dict(support_grid_size=0), dict(online_threshold=1.5)):
        with pytest.raises(ValueError, match="PointSettings"):
            trackers.PointTracker.from_config(settings=bad)


def test_cli_user_errors_are_one_line_and_bugs_keep_their_traceback(saved, tmp_path, capsys, monkeypatch):
    from trackers import io

    video = io.write_video(tmp_path / "v.mp4", np.zeros((3, 40, 56, 3), np.uint8), fps=5)
    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    rc = cli.main(["track", str(video), "--model", str(folder), "--box", "1,1,20,20", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "model.safetensors" in err

    # A ValueError from inside the library that is not about the input is a bug: it must not be hidden.
    from trackers.box.tracker import SOTTracker

    def broken(self, templates, search):
        raise ValueError("shape bug inside a model")

    monkeypatch.setattr(trackers.LoRATracker, "_predict", broken)
    with pytest.raises(ValueError, match="shape bug"):
        cli.main(["track", str(video), "--model", str(saved), "--box", "1,1,20,20", "--no-progress"])
    assert SOTTracker  # imported for the patch target's base class


def test_cli_strips_terminal_colour_codes():
    err = RuntimeError("\x1b[31mred\x1b[0m text\nsecond line")
    assert cli._one_line(err) == "red text; second line"


def test_registry_names_and_sources_are_checked():
    with pytest.raises(ValueError, match="model must be"):
        trackers.PointTracker.from_pretrained(12)
    with pytest.raises(ValueError, match="Did you mean"):
        trackers.PointTracker.from_pretrained("cotracker-offline")
    with pytest.raises(ValueError, match="is a PointTracker model"):
        trackers.LoRATracker.from_pretrained("cotracker3-offline")
    with pytest.raises(registry.WeightsNotAvailableError, match="from_config"):
        trackers.PointTracker.from_pretrained("cotracker3-offline", cache_dir="/nonexistent-cache")


def test_box_inputs(saved):
    t = trackers.LoRATracker.from_pretrained(saved)
    v = np.zeros((2, 40, 56, 3), np.uint8)
    for box, match in [([[1, 2, 3]], "4 numbers"), ("1,2,3,4", "4 numbers"), (np.zeros((0, 4)), "4 numbers"),
                       ([1, 2, 1, 5], "empty")]:
        with pytest.raises(ValueError, match=match):
            t.track(v, box)
    with pytest.raises(ValueError, match="normalised"):
        t.track(v.astype(np.float32) / 255 * 4 - 2, (1, 1, 20, 20))
    with pytest.raises(ValueError, match="3 clips"):
        t.track(np.zeros((3, 2, 40, 56, 3), np.uint8), [[1, 1, 20, 20], [1, 1, 20, 20]])
