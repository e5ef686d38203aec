"""LoRA layers, the generic ViT and the LoRAT network layout (tiny configs; full-size shapes on the meta device)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import trackers
from trackers.models.lorat import LoRAT, LoRATConfig, convert_official_checkpoint
from trackers.nn.lora import (
    LoRALinear,
    SplitLoRALinear,
    has_lora,
    inject_lora,
    lora_scaling,
    merge_lora,
    merge_lora_state_dict,
    merge_weight,
    split_lora_state_dict,
)
from trackers.nn.vit import Block, SwiGLUFFN, VisionTransformer, ViTSpec, swiglu_hidden_dim
from _helpers import TINY_LORAT as TINY


def lorat_variant_config(variant: str, **overrides) -> LoRATConfig:
    """The network config of a registry entry (the registry is the only table of variants)."""
    return LoRATConfig(**{**trackers.get_entry(f"lorat-{variant}").config, **overrides})


def _tiny(**kw) -> LoRATConfig:
    return LoRATConfig(**{**TINY, **kw})


# ---------------------------------------------------------------------------------------------- LoRA

def test_lora_scaling_plain_and_rslora():
    assert lora_scaling(64, 64) == 1.0
    assert lora_scaling(16, 32) == 2.0
    assert lora_scaling(16, 32, use_rslora=True) == pytest.approx(32 / 4)
    assert lora_scaling(8, None) == 1.0
    with pytest.raises(ValueError, match="rank"):
        lora_scaling(0, 1.0)


def test_lora_linear_merge_is_exact_fp32_formula():
    torch.manual_seed(1)
    base = nn.Linear(12, 7)
    layer = LoRALinear(base, rank=4, alpha=8.0)  # bert init: B is not zero
    assert layer.scaling == 2.0 and layer.lora.B.abs().sum() > 0
    assert not base.weight.requires_grad and layer.lora.A.requires_grad
    x = torch.randn(5, 3, 12)
    merged = layer.merged()
    assert isinstance(merged, nn.Linear)
    expected_w = base.weight.float() + 2.0 * (layer.lora.B.float() @ layer.lora.A.float())
    assert torch.equal(merged.weight, expected_w)
    assert torch.equal(merged.bias, base.bias)
    assert torch.allclose(merged(x), layer(x), atol=1e-6)


def test_merge_weight_keeps_dtype_and_checks_shapes():
    w = torch.randn(6, 4, dtype=torch.bfloat16)
    A, B = torch.randn(2, 4), torch.randn(6, 2)
    out = merge_weight(w, A, B, 0.5)
    assert out.dtype == torch.bfloat16
    ref = (w.float() + 0.5 * B @ A).to(torch.bfloat16)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="shapes"):
        merge_weight(w, torch.randn(2, 5), B, 1.0)


def test_split_qkv_matches_fused_layer_and_merges_q_first():
    torch.manual_seed(2)
    fused = nn.Linear(8, 24)
    split = SplitLoRALinear(fused, rank=2, alpha=2.0, init="lora")  # B = 0: same function as the fused layer
    x = torch.randn(3, 8)
    assert torch.allclose(split(x), fused(x), atol=1e-6)
    assert torch.equal(split.q.linear.weight, fused.weight[:8]) and torch.equal(split.v.linear.bias, fused.bias[16:])
    with torch.no_grad():
        for part in (split.q, split.k, split.v):
            part.lora.B.normal_()
    merged = split.merged()
    assert torch.allclose(merged(x), split(x), atol=1e-5)
    assert torch.equal(merged.weight[8:16], split.k.merged_weight())


def test_inject_and_merge_across_a_vit():
    torch.manual_seed(3)
    vit = VisionTransformer(ViTSpec(32, 2, 2, ffn_hidden=48), patch_size=7, img_size=28)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = vit(x)
    inject_lora(vit.blocks, rank=4, alpha=4.0, init="lora")
    assert has_lora(vit)
    wrapped = {n for n, m in vit.named_modules() if isinstance(m, (LoRALinear, SplitLoRALinear))}
    assert "blocks.0.attn.qkv" in wrapped and "blocks.1.mlp.fc2" in wrapped and "blocks.0.attn.qkv.q" in wrapped
    expected = {f"blocks.{i}.{leaf}" for i in range(2) for leaf in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    expected |= {f"blocks.{i}.attn.qkv.{p}" for i in range(2) for p in "qkv"}
    assert wrapped == expected
    with torch.no_grad():
        assert torch.allclose(vit(x), ref, atol=1e-5)  # zero-initialised B
        for n, p in vit.named_parameters():
            if n.endswith("lora.B"):
                p.normal_(std=0.05)
        unmerged = vit(x)
    inject_lora(vit.blocks, rank=4)  # idempotent on already wrapped layers
    assert sum(isinstance(m, LoRALinear) for m in vit.modules()) == 12
    merge_lora(vit)
    assert not has_lora(vit)
    assert all(type(vit.get_submodule(n)) is nn.Linear for n in expected if not n.endswith((".q", ".k", ".v")))
    with torch.no_grad():
        assert torch.allclose(vit(x), unmerged, atol=1e-5)


def test_state_dict_merge_equals_module_merge():
    torch.manual_seed(4)
    cfg = _tiny(lora_rank=4, lora_alpha=8.0)
    model = LoRAT(cfg)
    sd = model.state_dict()
    adapters, rest = split_lora_state_dict(sd)
    assert "blocks.0.attn.qkv.k" in adapters and "blocks.1.mlp.fc1" in adapters
    model.merge_lora()
    from trackers.models.lorat import _fuse_linear_layout

    merged = merge_lora_state_dict(_fuse_linear_layout(rest), adapters, alpha=8.0)
    own = model.state_dict()
    assert merged.keys() == own.keys()
    assert all(torch.equal(merged[k], own[k]) for k in own)
    with pytest.raises(ValueError, match="missing its B"):
        split_lora_state_dict({"x.lora.A": torch.zeros(1, 1)})


# ---------------------------------------------------------------------------------------------- ViT

def test_swiglu_block_and_dinov2_giant_width():
    assert swiglu_hidden_dim(1536) == 4096 and ViTSpec(1536, 40, 24, ffn="swiglu").hidden() == 4096
    ffn = SwiGLUFFN(16, 24)
    x = torch.randn(2, 5, 16)
    x1, x2 = ffn.w12(x).chunk(2, dim=-1)
    assert torch.allclose(ffn(x), ffn.w3(torch.nn.functional.silu(x1) * x2))
    blk = Block(16, 2, 24, ffn="swiglu", layerscale_init=0.5)
    assert set(blk.state_dict()) >= {"mlp.w12.weight", "mlp.w3.bias", "ls1.gamma", "ls2.gamma"}
    assert blk(x).shape == x.shape
    with pytest.raises(ValueError, match="ffn"):
        Block(16, 2, 24, ffn="relu")


def test_vit_attention_equals_explicit_softmax():
    torch.manual_seed(5)
    blk = Block(16, 4, 32).eval()
    x = torch.randn(2, 6, 16)
    attn = blk.attn
    qkv = attn.qkv(x).reshape(2, 6, 3, 4, 4).permute(2, 0, 3, 1, 4)
    w = (qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(4)).softmax(-1)
    ref = attn.proj((w @ qkv[2]).transpose(1, 2).reshape(2, 6, 16))
    assert torch.allclose(attn(x), ref, atol=1e-6)


# ---------------------------------------------------------------------------------------------- LoRAT layout

def _layout(path: Path):
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return {k: tuple(int(s) for s in shape.split("x")) if shape else () for k, shape, _ in rows}


def _meta_state(config: LoRATConfig):
    with torch.device("meta"):
        model = LoRAT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model


@pytest.mark.parametrize("variant,tsv", [("b-224", "state_dict_B224.tsv"), ("b-378", "state_dict_B378.tsv")])
def test_state_dict_matches_official_merged_layout(golden_dir, variant, tsv):
    shapes, _ = _meta_state(lorat_variant_config(variant))
    assert shapes == _layout(golden_dir / "lorat" / tsv)


def test_unmerged_state_dict_matches_official_training_layout(golden_dir):
    shapes, _ = _meta_state(lorat_variant_config("b-224", lora_rank=64))
    assert shapes == _layout(golden_dir / "lorat" / "state_dict_B224_train.tsv")


@pytest.mark.parametrize(
    "variant,millions",
    [("b-224", 88.09), ("b-378", 88.46), ("l-224", 307.43), ("l-378", 307.92), ("g-224", 1144.2), ("g-378", 1144.9)],
)
def test_variant_parameter_counts(variant, millions):
    _, model = _meta_state(lorat_variant_config(variant))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - millions) < 0.06, n
    if variant == "b-224":
        assert n == 88_091_909


def test_variant_table_and_errors():
    cfg = lorat_variant_config("g-378")
    assert (cfg.ffn, cfg.search_size, cfg.template_size) == ("swiglu", 378, 196)
    assert trackers.get_entry("lorat-g-378").settings == {"search_factor": 5.0}
    with pytest.raises(ValueError, match="multiple of patch_size"):
        LoRATConfig(search_size=225)
    for bad in (dict(patch_size=0), dict(embed_dim=-32), dict(num_heads=5), dict(depth="2")):
        with pytest.raises(ValueError):
            LoRATConfig(**bad)


def test_template_uses_top_left_crop_of_search_grid_and_type_embeddings():
    torch.manual_seed(6)
    model = LoRAT(_tiny()).eval()
    z = torch.randn(1, 3, 28, 28)
    mask = torch.tensor([[[0, 1], [1, 0]]])
    tok = model.embed_template(z, mask)
    patches = model.patch_embed(z)
    pos = model.pos_embed.reshape(4, 4, -1)[:2, :2].reshape(4, -1)
    expected = patches[0] + pos + model.token_type_embed[mask.reshape(-1)]
    assert torch.allclose(tok[0], expected)
    x = torch.randn(1, 3, 56, 56)
    assert torch.allclose(model.embed_search(x)[0], model.patch_embed(x)[0] + model.pos_embed[0] + model.token_type_embed[2])
    out = model(z, x, mask)
    assert out["score_map"].shape == (1, 4, 4) and out["boxes"].shape == (1, 4, 4, 4)
    # boxes are reference point -/+ sigmoid distances
    ref = (torch.arange(4) + 0.5) / 4
    centre = (out["boxes"][0, ..., :2] + out["boxes"][0, ..., 2:]) / 2
    assert centre.shape == (4, 4, 2)
    assert (out["boxes"][0, :, :, 0] < ref[None, :]).all() and (out["boxes"][0, :, :, 3] > ref[:, None]).all()


# ---------------------------------------------------------------------------------------------- converter

def _tiny_official_files(cfg: LoRATConfig, rank: int = 4):
    """A tiny DINOv2 state dict and release file with the official key names."""
    torch.manual_seed(7)
    ref = LoRAT(_tiny(lora_rank=rank, lora_alpha=float(rank)))
    sd = ref.state_dict()
    dino = {"cls_token": torch.randn(1, 1, 32), "mask_token": torch.randn(1, 32),
            "pos_embed": torch.randn(1, 1 + 37 * 37, 32)}
    release = {"lora_alpha": torch.tensor(rank), "use_rslora": torch.tensor(False)}
    for k, v in sd.items():
        if ".lora." in k or k.startswith(("head.", "token_type_embed")):
            release[k] = v.clone().normal_(std=0.1)
    for k, v in LoRAT(cfg).state_dict().items():
        if k.startswith(("patch_embed.", "blocks.", "norm.")):
            dino[k] = v.clone().normal_(std=0.1)
    return dino, release


def test_converter_release_file_and_errors():
    cfg = _tiny()
    dino, release = _tiny_official_files(cfg)
    out = convert_official_checkpoint(release, cfg, lambda role: dino)
    model = LoRAT(cfg)
    model.load_state_dict(out, strict=True)
    assert out["pos_embed"].shape == (1, 16, 32)
    # Merged qkv = DINOv2 qkv + B @ A per q/k/v slice.
    q = dino["blocks.1.attn.qkv.weight"][32:64] + release["blocks.1.attn.qkv.k.lora.B"] @ release["blocks.1.attn.qkv.k.lora.A"]
    assert torch.allclose(out["blocks.1.attn.qkv.weight"][32:64], q, atol=1e-6)
    # Merged input passes through unchanged; un-merged target from the release keeps the adapters.
    again = convert_official_checkpoint(out, cfg)
    assert all(torch.equal(again[k], out[k]) for k in out)
    un = convert_official_checkpoint(release, _tiny(lora_rank=4, lora_alpha=4.0), lambda role: dino)
    LoRAT(_tiny(lora_rank=4, lora_alpha=4.0)).load_state_dict(un, strict=True)
    # rsLoRA flag in the file changes the scale: alpha / sqrt(r) = 4 / 2.
    rs = convert_official_checkpoint({**release, "use_rslora": torch.tensor(True)}, cfg, lambda role: dino)
    delta = rs["blocks.0.mlp.fc1.weight"] - dino["blocks.0.mlp.fc1.weight"]
    ab = release["blocks.0.mlp.fc1.lora.B"] @ release["blocks.0.mlp.fc1.lora.A"]
    assert torch.allclose(delta, 2.0 * ab, atol=1e-5)
    with pytest.raises(ValueError, match="backbone"):
        convert_official_checkpoint(release, cfg)
    with pytest.raises(ValueError, match="scale"):
        convert_official_checkpoint(release, _tiny(lora_rank=4, lora_alpha=8.0), lambda role: dino)
    with pytest.raises(ValueError, match="embed_dim"):
        convert_official_checkpoint(release, cfg, lambda role: {**dino, "pos_embed": torch.randn(1, 1 + 37 * 37, 48)})
    with pytest.raises(ValueError, match="unrecognised"):
        convert_official_checkpoint({"foo": torch.zeros(1)}, cfg)
