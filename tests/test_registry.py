"""Registry, source parsing, weight resolution and save/load round trips, on a tiny tracker defined here."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import trackers
from trackers import registry
from trackers.base import Tracker


@dataclass
class TinyConfig:
    dim: int = 4
    depth: int = 2
    scale: tuple = (1.0, 2.0)


class TinyNet(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(config.depth))
        self.register_buffer("offset", torch.arange(config.dim, dtype=torch.float32))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x + self.offset


class TinyTracker(Tracker):
    config_class = TinyConfig
    model_class = TinyNet


def _official_layout(model: TinyNet) -> dict:
    """Pretend the 'official' release names its layers differently and wraps them like a training snapshot."""
    sd = {k.replace("layers.", "blocks."): v for k, v in model.state_dict().items()}
    return {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}


def _convert(state_dict, config, load_file):
    assert isinstance(config, TinyConfig)
    out = {k.replace("blocks.", "layers."): v for k, v in state_dict.items()}
    out["offset"] = load_file("extra")["offset"]
    return out


REPO = "acme/tiny-tracker"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """A Hugging Face cache as huggingface_hub lays it out, with the given files in one snapshot."""
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(SHA)
    snap = base / "snapshots" / SHA
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)
    return root


@pytest.fixture()
def tiny_entry():
    name = "tiny-test-model"
    entry = registry.ModelEntry(
        name=name,
        tracker=f"{__name__}:TinyTracker",
        config={"dim": 4, "depth": 3},
        files={"weights": registry.hub_file(REPO, "release.pth"), "extra": registry.hub_file(REPO, "extra.safetensors")},
        converter=f"{__name__}:_convert",
        license="MIT",
        paper="none",
        description="a tiny test model",
    )
    registry.list_models()  # load the zoo first so registration order does not matter
    registry.register_model(entry)
    yield entry
    registry._REGISTRY.pop(name)


@pytest.fixture()
def released(tmp_path):
    """An 'official' release of a TinyNet: a wrapped .pth plus a separate safetensors file."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = TinyNet(TinyConfig(dim=4, depth=3))
    ref.offset.uniform_()
    d = tmp_path / "release"
    d.mkdir()
    torch.save(_official_layout(ref), d / "release.pth")
    save_file({"offset": ref.offset.clone()}, str(d / "extra.safetensors"))
    return ref, d


def test_zoo_lists_models():
    names = trackers.list_models()
    for n in ["cotracker3-offline", "cotracker3-online", "cotracker3-offline-baseline", "cotracker3-online-baseline"]:
        assert n in names
    assert trackers.list_models("cotracker3-on*") == ["cotracker3-online", "cotracker3-online-baseline"]
    entry = trackers.get_entry("cotracker3-online")
    assert entry.files["weights"].repo_id == "facebook/cotracker3"
    assert entry.files["weights"].filename == "scaled_online.pth"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean: cotracker3-offline"):
        trackers.get_entry("cotracker3-ofline")
    with pytest.raises(ValueError, match="unknown model"):
        TinyTracker.from_pretrained("no-such-model-anywhere")


def test_missing_local_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        TinyTracker.from_pretrained(str(tmp_path / "nope" / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        trackers.PointTracker.from_pretrained("cotracker3-offline", checkpoint=tmp_path / "missing.pth")


def test_save_pretrained_round_trip(tmp_path):
    t = TinyTracker.from_config(dim=5, depth=2, seed=0)
    out = t.save_pretrained(tmp_path / "m")
    doc = json.loads((out / "config.json").read_text())
    assert doc["tracker"] == "TinyTracker" and doc["config"]["dim"] == 5
    t2 = TinyTracker.from_pretrained(out)
    assert t2.config == t.config  # tuple fields survive JSON
    x = torch.randn(3, 5)
    torch.testing.assert_close(t2.model(x), t.model(x), rtol=0, atol=0)
    # The safetensors file alone carries its config too.
    t3 = TinyTracker.from_pretrained(out / "model.safetensors")
    torch.testing.assert_close(t3.model(x), t.model(x), rtol=0, atol=0)


def test_registry_name_through_local_hub_cache(tmp_path, tiny_entry, released):
    ref, d = released
    cache = _fake_hub_cache(tmp_path / "cache", REPO, {"release.pth": d / "release.pth", "extra.safetensors": d / "extra.safetensors"})
    t = TinyTracker.from_pretrained(tiny_entry.name, cache_dir=cache)
    assert t.name == tiny_entry.name
    x = torch.randn(2, 4)
    torch.testing.assert_close(t.model(x), ref(x), rtol=0, atol=0)
    # A pinned revision resolves through the same cache.
    t_any = TinyTracker.from_pretrained(tiny_entry.name, revision=SHA, cache_dir=cache)
    torch.testing.assert_close(t_any.model(x), ref(x), rtol=0, atol=0)


def test_checkpoint_overrides_registry_file(tmp_path, tiny_entry, released):
    ref, d = released
    # Only the 'extra' file is cached; the main weights come from a local path.
    cache = _fake_hub_cache(tmp_path / "cache", REPO, {"extra.safetensors": d / "extra.safetensors"})
    t = TinyTracker.from_pretrained(tiny_entry.name, checkpoint=d / "release.pth", cache_dir=cache)
    x = torch.randn(2, 4)
    torch.testing.assert_close(t.model(x), ref(x), rtol=0, atol=0)
    # Every role can be given locally: no cache needed at all.
    t2 = TinyTracker.from_pretrained(
        tiny_entry.name, checkpoint=d / "release.pth", checkpoints={"extra": d / "extra.safetensors"},
        cache_dir=tmp_path / "empty-cache",
    )
    torch.testing.assert_close(t2.model(x), ref(x), rtol=0, atol=0)


def test_offline_and_not_cached_gives_one_clear_error(tmp_path, tiny_entry):
    with pytest.raises(registry.WeightsNotAvailableError) as info:
        TinyTracker.from_pretrained(tiny_entry.name, cache_dir=tmp_path / "empty")
    msg = str(info.value)
    assert tiny_entry.name in msg and REPO in msg and "release.pth" in msg and "checkpoint=" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_hf_hub_repo_in_our_format(tmp_path):
    t = TinyTracker.from_config(dim=4, depth=1, seed=3)
    src = t.save_pretrained(tmp_path / "saved")
    cache = _fake_hub_cache(tmp_path / "cache", "acme/saved", {n: src / n for n in ("config.json", "model.safetensors")})
    t2 = TinyTracker.from_pretrained("hf-hub:acme/saved", cache_dir=cache)
    x = torch.randn(1, 4)
    torch.testing.assert_close(t2.model(x), t.model(x), rtol=0, atol=0)
    with pytest.raises(registry.WeightsNotAvailableError, match="acme/absent"):
        TinyTracker.from_pretrained("hf-hub:acme/absent", cache_dir=cache)


def test_mismatched_checkpoint_lists_keys(tmp_path):
    t = TinyTracker.from_config(dim=4, depth=2)
    sd = t.model.state_dict()
    sd.pop("layers.1.bias")
    sd["layers.7.weight"] = torch.zeros(4, 4)
    sd["layers.0.weight"] = torch.zeros(3, 4)
    torch.save(sd, tmp_path / "bad.pth")
    (tmp_path / "config.json").write_text(json.dumps({"tracker": "TinyTracker", "config": {"dim": 4, "depth": 2}}))
    with pytest.raises(ValueError) as info:
        TinyTracker.from_pretrained(tmp_path / "bad.pth")
    msg = str(info.value)
    assert "missing keys (1): layers.1.bias" in msg
    assert "unexpected keys (1): layers.7.weight" in msg
    assert "layers.0.weight: checkpoint (3, 4) vs model (4, 4)" in msg


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_are_loaded_weights_only(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(ValueError, match="weights_only"):
        registry.load_checkpoint_file(p)


def test_safetensors_content_under_bin_name(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, str(tmp_path / "release.bin"))
    assert torch.equal(registry.load_checkpoint_file(tmp_path / "release.bin")["a"], torch.ones(2))


def test_normalize_state_dict_unwraps():
    sd = registry.normalize_state_dict({"state_dict": {"module.a": torch.ones(1)}, "step": 3})
    assert list(sd) == ["a"]


def test_wrong_tracker_class_is_refused(tmp_path):
    t = TinyTracker.from_config()
    t.save_pretrained(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    doc["tracker"] = "LoRATracker"
    (tmp_path / "m" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="is a LoRATracker model"):
        TinyTracker.from_pretrained(tmp_path / "m")


def test_dtype_and_device_moves():
    t = TinyTracker.from_config(dtype="bf16")
    assert t.dtype == torch.bfloat16
    t.to(dtype=torch.float32)
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    with pytest.raises(ValueError, match="unsupported dtype"):
        t.to(dtype="int8")


# ---------------------------------------------------------------------------------------------- parse_source

def test_parse_source_is_the_one_rule(tmp_path, monkeypatch):
    P = registry.parse_source
    assert P("cotracker3-online") == registry.Source("registry", "cotracker3-online")
    assert P("hf-hub:acme/model") == registry.Source("hub", "acme/model")
    assert P("hf-hub:acme/model@v1.0") == registry.Source("hub", "acme/model", "v1.0")
    for bad in ("hf-hub:acme", "hf-hub:/x", "hf-hub:a/b/c"):
        with pytest.raises(ValueError, match="not a Hub id"):
            P(bad)
    (tmp_path / "folder").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"x")
    assert P(tmp_path / "folder") == registry.Source("dir", str(tmp_path / "folder"))
    assert P(str(tmp_path / "w.safetensors")).kind == "file"
    with pytest.raises(FileNotFoundError):
        P("./missing-folder")
    with pytest.raises(FileNotFoundError):
        P("weights.pth")
    with pytest.raises(ValueError, match="Did you mean"):
        P("cotracker3-onlin")
    for bad in ("", "   ", None, 3):
        with pytest.raises(ValueError):
            P(bad)
    # A bare registry name means the registry even when a folder of that name exists; ./name is the folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cotracker3-online").mkdir()
    assert P("cotracker3-online").kind == "registry"
    assert P("./cotracker3-online").kind == "dir"
    # An existing folder that is not a registry name is a folder.
    assert P("folder").kind == "dir"


def test_weight_file_sources(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="exactly one"):
        registry.WeightFile("x.pth")
    with pytest.raises(ValueError, match="exactly one"):
        registry.WeightFile("x.pth", repo_id="a/b", url="https://example.invalid/x.pth")
    # A file shipped inside a package loads with no network.
    f = registry.package_file("trackers", "zoo.py")
    assert f.kind == "package" and registry.fetch_file(f).is_file()
    with pytest.raises(registry.WeightsNotAvailableError, match="missing from the installed package"):
        registry.fetch_file(registry.package_file("trackers", "no-such-file.safetensors"))
    # A manual file names the page and how to pass it.
    with pytest.raises(registry.WeightsNotAvailableError, match="Download it from https://example.org/page"):
        registry.fetch_file(registry.manual_file("https://example.org/page", "w.bin"), model_name="m")
    # A URL file is served from the trackers cache when present, and offline mode never touches the network.
    u = registry.url_file("https://example.invalid/models/w.safetensors")
    assert u.filename == "w.safetensors"
    (tmp_path / "url").mkdir()
    (tmp_path / "url" / "w.safetensors").write_bytes(b"cached")
    assert registry.fetch_file(u, cache_dir=tmp_path).read_bytes() == b"cached"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(registry.WeightsNotAvailableError, match="offline"):
        registry.fetch_file(u, cache_dir=tmp_path / "empty")


def test_no_network_fails_fast(tmp_path, monkeypatch):
    """With no Hub reachable and offline mode unset, a download gives up in seconds, not after retries."""
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "_HUB_REACHABLE", None)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "https://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(registry.WeightsNotAvailableError, match="offline"):
        registry.fetch_file(registry.hub_file("facebook/cotracker3", "scaled_online.pth"),
                            cache_dir=tmp_path, model_name="cotracker3-online")
    assert time.perf_counter() - t0 < 5.0
    monkeypatch.setattr(registry, "_HUB_REACHABLE", None)


def test_every_registry_entry_is_loadable_data():
    """Every entry's import strings resolve, its config builds, and its converter exists (timm-style walk)."""
    import dataclasses

    for name in trackers.list_models():
        e = trackers.get_entry(name)
        cls = e.tracker_class()
        assert issubclass(cls, Tracker) and cls.__name__ == e.tracker_name
        cfg, settings = cls._build(e.config, e.settings, {})
        assert dataclasses.is_dataclass(cfg) and isinstance(settings, cls.settings_class)
        if e.converter:
            assert callable(registry.import_string(e.converter))
        assert e.files["weights"].kind in ("hub", "url", "package", "manual", "unreleased")
        assert e.license and e.paper and e.description
