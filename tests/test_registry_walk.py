"""Every registry entry, walked like timm walks its model list: the import strings resolve, the network builds
(on the ``meta`` device: no memory, any size), and the entry's converter turns a checkpoint in the official layout
into exactly the network's state-dict keys and shapes."""
from __future__ import annotations

import pytest
import torch
from golden_weights import read_layout

import trackers
from trackers import registry

NAMES = trackers.list_models()


def _meta_model(entry):
    cls = entry.tracker_class()
    config, settings = cls._build(entry.config, entry.settings, {})
    with torch.device("meta"):
        model = cls.model_class(config)
    return cls, config, model


def _meta_from_layout(tsv):
    return {k: torch.empty(shape, device="meta") for k, shape, _ in read_layout(tsv)}


def _official_files(entry, config, golden_dir):
    """Meta tensors in each file's official layout: the TSVs where we have them, else derived from the network."""
    if entry.tracker_name == "PointTracker":
        kind = "online" if config.online else "offline"
        return {"weights": _meta_from_layout(golden_dir / "cotracker3" / f"state_dict_{kind}.tsv")}
    # LoRAT: a release file (LoRA adapters, head, type embedding) and a DINOv2 backbone in timm's layout.
    from trackers.models.lorat import LoRAT

    import dataclasses

    with torch.device("meta"):
        unmerged = LoRAT(dataclasses.replace(config, lora_rank=64))
        merged = LoRAT(config)
    release = {k: torch.empty_like(v) for k, v in unmerged.state_dict().items()
               if ".lora." in k or k.startswith(("head.", "token_type_embed"))}
    C = config.embed_dim
    backbone = {"cls_token": torch.empty(1, 1, C, device="meta"),
                "pos_embed": torch.empty(1, 1 + 37 * 37, C, device="meta")}
    for k, v in merged.state_dict().items():
        if k.startswith(("patch_embed.", "blocks.", "norm.")):
            # timm names the packed SwiGLU projections fc1 / fc2
            backbone[k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = torch.empty_like(v)
    return {"weights": release, "backbone": backbone}


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_and_converts(name, golden_dir):
    entry = trackers.get_entry(name)
    cls, config, model = _meta_model(entry)
    assert cls.__name__ == entry.tracker_name and isinstance(model, cls.model_class)
    # Full-size networks; the models shipped inside the package are deliberately small (under 10 MB together).
    assert sum(p.numel() for p in model.parameters()) > (200_000 if "shipped" in entry.tags else 1_000_000)
    assert set(entry.files) >= {"weights"} and all(f.kind in ("hub", "url", "package", "manual", "unreleased")
                                                    for f in entry.files.values())
    for f in entry.files.values():
        if f.kind == "hub":  # only real, public repositories (checked by hand; listed here so changes are seen)
            assert f.repo_id in {"facebook/cotracker3", "timm/vit_base_patch14_dinov2.lvd142m",
                                 "timm/vit_large_patch14_dinov2.lvd142m", "timm/vit_giant_patch14_dinov2.lvd142m"}
    if entry.files["weights"].kind == "package":  # shipped in our own format: the file holds the network's keys
        from safetensors import safe_open

        path = registry.fetch_file(entry.files["weights"], model_name=name)
        with safe_open(str(path), framework="pt") as fh:
            got = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        assert got == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if entry.converter is None:  # our own format (e.g. DETRack): the saved state dict is the network's
        return
    files = _official_files(entry, config, golden_dir)
    converter = registry.import_string(entry.converter)
    out = converter(dict(files["weights"]), config, lambda role: dict(files[role]))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in out.items()}
    assert got == want
