"""Every Python snippet in the README runs, against the real API; every picture and script it shows exists.

The models shipped inside the package load for real. No other released weights can be downloaded here, so the
other registry names resolve to the same architecture at a tiny size with random weights (``from_config`` with
overrides) and the official checkpoint files the snippets name are stood in for by checkpoints of those tiny
networks. Everything else (reading the video, tracking, streaming, saving, ``torch.hub``) is the real code path.
"""
from __future__ import annotations

import re

import pytest
import torch
from _helpers import TINY_COTRACKER, TINY_DETRACK, TINY_LORAT, moving_square_video
from conftest import REPO_ROOT

import trackers
from trackers.io import write_video
from trackers.zoo import SHIPPED_MODELS

README = (REPO_ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)

TINY = {"PointTracker": dict(TINY_COTRACKER, window_len=16), "LoRATracker": TINY_LORAT, "BoxTracker": TINY_DETRACK}


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "my_clip.mp4", moving_square_video(T=10, H=96, W=128), fps=10)
    real_from_pretrained = trackers.Tracker.from_pretrained.__func__

    def tiny_from_pretrained(cls, name_or_path, *, checkpoint=None, **kwargs):
        source = trackers.registry.parse_source(name_or_path)
        if source.kind != "registry" or source.value in SHIPPED_MODELS:  # shipped weights are here: load them
            return real_from_pretrained(cls, name_or_path, checkpoint=checkpoint, **kwargs)
        entry = trackers.get_entry(source.value)
        target = entry.tracker_class()
        settings = {k: v for k, v in kwargs.items() if k not in ("device", "dtype", "revision", "cache_dir", "checkpoints")}
        return target.from_config(source.value, seed=0, settings=settings, device=kwargs.get("device"),
                                  dtype=kwargs.get("dtype"), **TINY[target.__name__])

    monkeypatch.setattr(trackers.Tracker, "from_pretrained", classmethod(tiny_from_pretrained))
    # torch.hub builds its model with pretrained=False from the registry: shrink it the same way.
    real_from_config = trackers.Tracker.from_config.__func__

    def tiny_from_config(cls, config=None, **kw):
        if isinstance(config, str):
            target = trackers.get_entry(config).tracker_class()
            kw = {**TINY[target.__name__], **kw}
        return real_from_config(cls, config, **kw)

    monkeypatch.setattr(trackers.Tracker, "from_config", classmethod(tiny_from_config))
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    code = SNIPPETS[index].replace('torch.hub.load(".",', f'torch.hub.load({str(REPO_ROOT)!r},')
    namespace: dict = {}
    exec(compile(code, f"README.md snippet {index}", "exec"), namespace)  # noqa: S102 - our own README
    # what the snippets promise
    for value in namespace.values():
        if isinstance(value, trackers.PointTracks):
            assert torch.isfinite(value.tracks).all()
        if isinstance(value, trackers.BoxTracks):
            assert torch.isfinite(torch.as_tensor(value.boxes)).all()
    if "res" in namespace and isinstance(namespace["res"], trackers.BoxTracks):
        assert namespace["res"].boxes.shape[0] == 2  # the last call tracked two targets


def test_readme_pictures_and_scripts_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert {"docs/demo.png", "docs/track_points.png", "docs/track_box.png", "docs/stream_video.png",
            "docs/train_small.png"} <= set(images)
    for image in images:
        path = REPO_ROOT / image
        assert path.is_file(), image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{image} is not a PNG"
        assert path.stat().st_size < 150_000, f"{image} is {path.stat().st_size:,} bytes"
    for script in re.findall(r"\]\((examples/[a-z_]+\.py)\)", README):
        assert (REPO_ROOT / script).is_file(), script
    for card in re.findall(r"\]\((trackers/assets/[^)]+)\)", README):
        assert (REPO_ROOT / card).is_file(), card


def test_readme_main_command_and_quality_table():
    assert "trackers demo --out demo.mp4" in README
    for name in SHIPPED_MODELS:
        assert f"`{name}`" in README
    begin, end = README.index("<!-- quality-table:begin -->"), README.index("<!-- quality-table:end -->")
    table = README[begin:end]
    # the baselines the shipped models are measured against, and a labelled row for each shipped model
    for row in ("Lucas–Kanade", "always visible", "CSRT", "cotracker3-small-synthetic`, checkpoint",
                "detrack-small-synthetic`, checkpoint"):
        assert row in table, row
