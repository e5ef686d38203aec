"""DETRack network on tiny configs: candidate elimination, query selection, deformable attention with reference
boxes, decoder-layer truncation, denoising queries + attention mask, gradients, score map, encoder converter."""
from __future__ import annotations

import math

import pytest
import torch

from trackers.models.detrack import (
    DETRack,
    DETRackConfig,
    DenoisingQueries,
    box_cxcywh_to_xyxy,
    denoising_attn_mask,
)
from trackers.models.detrack.convert import convert_encoder_checkpoint, load_encoder_checkpoint
from trackers.models.detrack.decoder import box_sine_embedding, inverse_sigmoid
from trackers.nn.deform_attn import MSDeformAttn

# 32 px template / 64 px search with 4 px patches: the paper's 8x8 and 16x16 token grids at a tiny width.
TINY = dict(template_size=32, search_size=64, patch_size=4, embed_dim=32, depth=4, num_heads=2,
            ce_locations=(1, 2, 3), decoder_dim=32, num_queries=16, num_decoder_layers=3, dec_heads=4,
            dec_points=2, dec_ffn_dim=64)


def tiny(**overrides) -> DETRackConfig:
    return DETRackConfig(**{**TINY, **overrides})


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Replace every parameter with random values (the zero inits of a fresh decoder would hide paths)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = 0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.dim() == 1 and p.shape[0] > 1 else 0.0))
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.mul_(0).add_(0.05 * torch.randn(p.shape, generator=g))


def _inputs(cfg: DETRackConfig, b: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, cfg.template_size, cfg.template_size, generator=g),
            torch.randn(b, 3, cfg.search_size, cfg.search_size, generator=g))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DETRack(tiny()).eval()
    _randomise(m)
    return m


# ------------------------------------------------------------------------------------------ encoder


def test_candidate_elimination_keeps_256_180_126_89(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        enc = model.encode(z, x)
        out = model(z, x)
    assert [k.shape[1] for k in enc.kept_index] == [180, 126, 89]
    assert [r.shape[1] for r in enc.removed_index] == [76, 54, 37]
    assert enc.search_tokens.shape == (2, 89, 32) and model.config.num_kept_tokens() == 89
    for b in range(2):
        # each stage keeps a subset of the previous one, and kept + removed cover what was there
        prev = set(range(256))
        for kept, removed in zip(enc.kept_index, enc.removed_index):
            k, r = set(kept[b].tolist()), set(removed[b].tolist())
            assert k | r == prev and not k & r
            prev = k
        assert prev == set(enc.search_index[b].tolist())
    # the CE score ranks: every kept token scored at least as high as every removed one at that stage
    for kept, removed, score in zip(enc.kept_index, enc.removed_index, enc.ce_scores):
        assert bool((score.gather(1, kept).min(1).values >= score.gather(1, removed).max(1).values).all())
    # dropped tokens enter the decoder's value map as zeros
    assert out.enc_index.shape == (2, 89) and int(out.memory_mask.sum()) == 2 * (256 - 89)
    assert bool((out.memory[out.memory_mask] == 0).all())


def test_keep_ratio_one_equals_plain_vit(model):
    """CE off (per call, or in the config) is exactly the plain ViT: the library's Block modules in sequence."""
    z, x = _inputs(model.config)
    enc_model = model.backbone
    with torch.no_grad():
        h = torch.cat([enc_model.patch_embed(z) + enc_model.pos_embed_z,
                       enc_model.patch_embed(x) + enc_model.pos_embed_x], 1)
        for blk in enc_model.blocks:
            h = blk(h)
        plain = enc_model.norm(h)
        off_call = model.encode(z, x, ce_keep_ratio=1.0)
        no_ce = DETRack(tiny(ce_keep_ratio=1.0)).eval()
        no_ce.load_state_dict(model.state_dict())
        off_cfg = no_ce.encode(z, x)
        with_ce = model.encode(z, x)
    assert off_call.kept_index == [] and off_cfg.kept_index == []
    torch.testing.assert_close(off_call.recover(), plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(off_cfg.recover(), off_call.recover(), rtol=0, atol=0)
    assert (with_ce.recover() - plain).abs().max() > 1e-2


def test_template_mask_changes_selection(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        centre = model.encode(z, x)
        everything = model.encode(z, x, template_mask=torch.ones(2, 8, 8, dtype=torch.bool))
    assert not torch.equal(centre.search_index.sort(1).values, everything.search_index.sort(1).values)
    with pytest.raises(ValueError, match="template_mask"):
        model.encode(z, x, template_mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="template_mask selects no"):
        model.encode(z, x, template_mask=torch.zeros(2, 8, 8, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ head


def test_query_selection_is_top_k(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        out = model(z, x)
    k = model.config.num_queries
    assert out.query_index.shape == (2, k) and out.boxes.shape == (3, 2, k, 4) and out.scores.shape == (3, 2, k)
    for b in range(2):
        order = out.enc_scores[b].argsort(descending=True)
        assert set(out.query_index[b].tolist()) == set(out.enc_index[b, order[:k]].tolist())
        chosen = torch.isin(out.enc_index[b], out.query_index[b])
        assert out.enc_scores[b, chosen].min() >= out.enc_scores[b, ~chosen].max()
    # more queries than kept tokens: every kept token becomes a query
    big = DETRack(tiny(num_queries=500)).eval()
    with torch.no_grad():
        o = big(z, x)
    assert o.query_index.shape == (2, 89) and big.config.num_selected_queries() == 89
    assert torch.equal(o.query_index.sort(1).values, o.enc_index.sort(1).values)


def test_fresh_model_proposals_sit_on_their_cells():
    """A fresh head (zero last box layer) proposes the cell anchors; boxes stay normalised in [0, 1]."""
    m = DETRack(tiny()).eval()
    z, x = _inputs(m.config)
    with torch.no_grad():
        out = m(z, x)
    cy, cx = out.enc_index // 16, out.enc_index % 16
    torch.testing.assert_close(out.enc_boxes[..., 0], (cx + 0.5) / 16)
    torch.testing.assert_close(out.enc_boxes[..., 1], (cy + 0.5) / 16)
    torch.testing.assert_close(out.enc_boxes[..., 2:], torch.full_like(out.enc_boxes[..., 2:], 0.05))
    # fresh decoder layers refine by zero: every layer returns the proposals of the selected tokens
    sel = out.enc_boxes.gather(1, (out.enc_index[:, :, None] == out.query_index[:, None]).float().argmax(1)
                               [..., None].expand(-1, -1, 4))
    torch.testing.assert_close(out.boxes[-1], sel, rtol=0, atol=1e-6)
    # score head starts at the 0.01 foreground prior (bias), its weight at PyTorch's default
    torch.testing.assert_close(m.head.score_head.bias.detach(), torch.tensor([-math.log(99.0)]))
    assert out.scores.sigmoid().mean() < 0.1


def test_num_decoder_layers_truncates(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        full = model(z, x)
        for n in (1, 2):
            part = model(z, x, num_decoder_layers=n)
            assert part.num_layers == n
            torch.testing.assert_close(part.boxes, full.boxes[:n], rtol=0, atol=0)
            torch.testing.assert_close(part.scores, full.scores[:n], rtol=0, atol=0)
    # later layers do change the prediction
    assert (full.boxes[0] - full.boxes[2]).abs().max() > 1e-3
    for bad in (0, 4):
        with pytest.raises(ValueError, match="num_decoder_layers"):
            model(z, x, num_decoder_layers=bad)


def test_score_map_scatters_final_layer(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        out = model(z, x)
    scores, boxes = model.score_map(out)
    assert scores.shape == (2, 16, 16) and boxes.shape == (2, 16, 16, 4)
    flat_s, flat_b = scores.flatten(1), boxes.flatten(1, 2)
    assert int(torch.isinf(flat_s).sum()) == 2 * (256 - 16) and bool((flat_s[torch.isinf(flat_s)] < 0).all())
    torch.testing.assert_close(flat_s.gather(1, out.query_index), out.scores[-1], rtol=0, atol=0)
    torch.testing.assert_close(flat_b.gather(1, out.query_index[..., None].expand(-1, -1, 4)), out.pred_boxes,
                               rtol=0, atol=0)
    assert bool((flat_b[torch.isinf(flat_s)] == 0).all())
    # xyxy view of the native cxcywh boxes
    c = out.boxes[-1]
    torch.testing.assert_close(out.pred_boxes, torch.cat([c[..., :2] - c[..., 2:] / 2, c[..., :2] + c[..., 2:] / 2],
                                                         -1))
    assert bool((out.pred_boxes[..., 2:] >= out.pred_boxes[..., :2]).all())


def _dn_queries(model, b=2, groups=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    nd = 2 * groups
    boxes = torch.rand(b, nd, 4, generator=g) * 0.5 + 0.25
    content = torch.randn(b, nd, model.config.decoder_dim, generator=g)
    return DenoisingQueries(boxes=boxes, content=content), nd


def test_attention_mask_isolates_denoising_groups(model):
    z, x = _inputs(model.config)
    dn, nd = _dn_queries(model)
    k = model.config.num_selected_queries()
    mask = denoising_attn_mask(2, 2, k)
    assert mask.shape == (nd + k, nd + k)
    perturbed = DenoisingQueries(boxes=dn.boxes.clone(), content=dn.content.clone())
    perturbed.content[:, 2:4] += 3.0  # group 1
    perturbed.boxes[:, 2:4, :2] += 0.1
    with torch.no_grad():
        plain = model(z, x)
        a = model(z, x, dn_queries=dn, attn_mask=mask)
        b = model(z, x, dn_queries=perturbed, attn_mask=mask)
        unmasked_a = model(z, x, dn_queries=dn)
        unmasked_b = model(z, x, dn_queries=perturbed)
    assert a.dn_boxes.shape == (3, 2, nd, 4) and a.dn_scores.shape == (3, 2, nd)
    # matching queries: unaffected by the denoising part altogether, and by the perturbation
    torch.testing.assert_close(a.boxes, plain.boxes, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.boxes, a.boxes, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.scores, a.scores, rtol=0, atol=1e-5)
    # the other group is unaffected, the perturbed one is not
    torch.testing.assert_close(b.dn_boxes[:, :, :2], a.dn_boxes[:, :, :2], rtol=0, atol=1e-6)
    assert (b.dn_boxes[:, :, 2:] - a.dn_boxes[:, :, 2:]).abs().max() > 1e-3
    # without the mask the perturbation leaks into the matching queries
    assert (unmasked_b.boxes - unmasked_a.boxes).abs().max() > 1e-4
    # a per-sample mask (B, T, T) means the same
    with torch.no_grad():
        c = model(z, x, dn_queries=dn, attn_mask=mask.expand(2, -1, -1))
    torch.testing.assert_close(c.dn_boxes, a.dn_boxes, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="attn_mask"):
        model(z, x, dn_queries=dn, attn_mask=mask[1:, 1:])


def test_denoising_content_from_grid_cells(model):
    """Denoising contents may be picked from the encoder's projected tokens by grid cell (dropped cells are 0)."""
    z, x = _inputs(model.config)
    with torch.no_grad():
        ref = model(z, x)
        kept_cell = ref.enc_index[:, :1]
        dropped_cell = ref.memory_mask.float().argmax(1, keepdim=True)
        cells = torch.cat([kept_cell, dropped_cell], 1)
        boxes = torch.full((2, 2, 4), 0.3)
        by_index = model(z, x, dn_queries=DenoisingQueries(boxes=boxes, token_index=cells),
                         attn_mask=denoising_attn_mask(1, 2, 16))
        content = ref.memory.gather(1, cells[..., None].expand(-1, -1, 32))
        by_content = model(z, x, dn_queries=DenoisingQueries(boxes=boxes, content=content),
                           attn_mask=denoising_attn_mask(1, 2, 16))
    assert bool((content[:, 1] == 0).all()) and bool((content[:, 0] != 0).any())
    torch.testing.assert_close(by_index.dn_boxes, by_content.dn_boxes, rtol=0, atol=0)
    with pytest.raises(ValueError, match="content or token_index"):
        model(z, x, dn_queries=DenoisingQueries(boxes=boxes))


def test_gradients_reach_every_parameter():
    cfg = tiny(num_decoder_layers=2)
    m = DETRack(cfg).train()
    _randomise(m, seed=5)
    z, x = _inputs(cfg)
    dn, nd = _dn_queries(m)
    mask = denoising_attn_mask(2, 2, cfg.num_selected_queries())
    out = m(z, x, dn_queries=dn, attn_mask=mask)
    loss = (out.boxes.sum() + out.scores.sum() + out.enc_boxes.sum() + out.enc_scores.sum()
            + out.dn_boxes.sum() + out.dn_scores.sum())
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == []
    # reference boxes reach every layer detached (query-selection proposals and refined boxes alike), while the
    # layer outputs themselves keep their graph
    refs = []
    hooks = [layer.cross_attn.register_forward_pre_hook(lambda mod, args: refs.append(args[1]))
             for layer in m.head.decoder.layers]
    try:
        out = m(z, x)
    finally:
        for h in hooks:
            h.remove()
    assert len(refs) == 2 and not any(r.requires_grad for r in refs)
    assert out.boxes.requires_grad and out.enc_boxes.requires_grad


# ------------------------------------------------------------------------------------------ deformable attention


def _bilinear_zero_pad(v: torch.Tensor, xs: float, ys: float) -> torch.Tensor:
    """Sample ``v (H, W, C)`` at normalised ``(xs, ys)`` (pixel centres at (j + .5) / W), zero outside."""
    h, w, c = v.shape
    px, py = xs * w - 0.5, ys * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c, dtype=v.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * v[yy, xx]
    return out


@pytest.mark.parametrize("ref_dim", [4, 2])
def test_deform_attn_matches_naive_loop(ref_dim):
    torch.manual_seed(0)
    n, lq, dim, heads, points, hgt, wid = 2, 3, 8, 2, 3, 5, 6
    attn = MSDeformAttn(dim, heads, 1, points).double()
    with torch.no_grad():  # non-trivial offsets and weights (the init makes them query-independent)
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    query = torch.randn(n, lq, dim, dtype=torch.float64)
    value = torch.randn(n, hgt * wid, dim, dtype=torch.float64)
    pad = torch.rand(n, hgt * wid) < 0.3
    if ref_dim == 4:
        reference = torch.cat([torch.rand(n, lq, 2) * 0.8 + 0.1, torch.rand(n, lq, 2) * 0.6 + 0.2], -1).double()
    else:
        reference = (torch.rand(n, lq, 2) * 0.8 + 0.1).double()
    shapes = torch.tensor([[hgt, wid]])
    out = attn(query, reference, value, shapes, pad)

    offsets = attn.sampling_offsets(query).view(n, lq, heads, points, 2)
    weights = attn.attention_weights(query).view(n, lq, heads, points).softmax(-1)
    v = attn.value_proj(value).masked_fill(pad[..., None], 0).view(n, hgt, wid, heads, dim // heads)
    naive = torch.zeros(n, lq, dim, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for m in range(heads):
                acc = torch.zeros(dim // heads, dtype=torch.float64)
                for p in range(points):
                    ox, oy = offsets[b, q, m, p].tolist()
                    if ref_dim == 4:
                        cx, cy, bw, bh = reference[b, q].tolist()
                        sx, sy = cx + ox / points * bw * 0.5, cy + oy / points * bh * 0.5
                    else:
                        sx, sy = reference[b, q, 0].item() + ox / wid, reference[b, q, 1].item() + oy / hgt
                    acc += weights[b, q, m, p] * _bilinear_zero_pad(v[b, :, :, m], sx, sy)
                naive[b, q, m * (dim // heads):(m + 1) * (dim // heads)] = acc
    naive = attn.output_proj(naive)
    torch.testing.assert_close(out, naive, rtol=0, atol=1e-10)


def test_deform_attn_init_spans_the_box():
    """Deformable-DETR init: head m looks along angle 2*pi*m/M, point p at (p + 1) / P of the half box."""
    attn = MSDeformAttn(16, 4, 1, 2)
    loc, w = attn.sampling(torch.zeros(1, 1, 16), torch.tensor([[[0.5, 0.5, 0.4, 0.2]]]), torch.tensor([[8, 8]]))
    torch.testing.assert_close(w, torch.full_like(w, 0.5))
    expect = torch.tensor([[0.6, 0.5], [0.7, 0.5]])  # head 0 (angle 0): +x, half-width 0.2 at point 2
    torch.testing.assert_close(loc[0, 0, 0, 0], expect)


def test_box_helpers():
    b = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(b), torch.tensor([[0.4, 0.2, 0.6, 0.3]]))
    torch.testing.assert_close(inverse_sigmoid(torch.sigmoid(torch.tensor([-2.0, 0.0, 3.0]))),
                               torch.tensor([-2.0, 0.0, 3.0]), rtol=0, atol=1e-5)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0]))).all()
    emb = box_sine_embedding(b, 8)  # (y, x, w, h) blocks of sin/cos pairs
    assert emb.shape == (1, 32)
    u = 0.25 * 2 * math.pi  # cy first
    torch.testing.assert_close(emb[0, :2], torch.tensor([math.sin(u), math.cos(u)]))
    torch.testing.assert_close(emb[0, 8:10], torch.tensor([math.sin(math.pi), math.cos(math.pi)]))
    u = 0.1 * 2 * math.pi / 10000 ** (2 * 3 / 8)  # h, last frequency
    torch.testing.assert_close(emb[0, 30:], torch.tensor([math.sin(u), math.cos(u)]))


def test_denoising_attn_mask_layout():
    m = denoising_attn_mask(2, 2, 3)
    assert m.shape == (7, 7)
    assert not m[:2, :2].any() and m[:2, 2:4].all() and not m[:2, 4:].any()  # group 0 sees itself + matching
    assert m[4:, :4].all() and not m[4:, 4:].any()  # matching sees only matching
    assert denoising_attn_mask(2, 2, 3, dn_sees_matching=False)[:4, 4:].all()


# ------------------------------------------------------------------------------------------ config and converter


def test_config_validation():
    with pytest.raises(ValueError, match="template_size"):
        DETRackConfig(template_size=100)
    with pytest.raises(ValueError, match="ce_locations"):
        DETRackConfig(depth=9)  # default CE at block 9 does not exist in 9 blocks
    with pytest.raises(ValueError, match="ce_keep_ratio"):
        DETRackConfig(ce_keep_ratio=0.0)
    with pytest.raises(ValueError, match="ce_keep_ratio"):
        DETRackConfig(ce_keep_ratio=(0.7, 0.7))
    assert DETRackConfig(depth=9, ce_locations=(2, 4, 6)).num_kept_tokens() == 89
    assert DETRackConfig(ce_keep_ratio=1.0).num_kept_tokens() == 256


def _mae_like(cfg: DETRackConfig, grid: int = 5, blocks: int = None, seed: int = 0):
    """A plain-ViT (MAE layout) state dict of the tiny width with a ``grid x grid`` position table + cls."""
    g = torch.Generator().manual_seed(seed)
    d, hid = cfg.embed_dim, int(cfg.mlp_ratio * cfg.embed_dim)
    sd = {"cls_token": torch.randn(1, 1, d, generator=g), "pos_embed": torch.randn(1, 1 + grid * grid, d, generator=g),
          "patch_embed.proj.weight": torch.randn(d, 3, cfg.patch_size, cfg.patch_size, generator=g) * 0.1,
          "patch_embed.proj.bias": torch.randn(d, generator=g) * 0.1,
          "norm.weight": 1 + 0.1 * torch.randn(d, generator=g), "norm.bias": 0.1 * torch.randn(d, generator=g),
          "mask_token": torch.zeros(1, 1, d), "decoder_embed.weight": torch.zeros(4, d)}
    for i in range(cfg.depth if blocks is None else blocks):
        for name, shape in (("norm1", (d,)), ("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)), ("norm2", (d,)),
                            ("mlp.fc1", (hid, d)), ("mlp.fc2", (d, hid))):
            w = torch.randn(shape, generator=g)
            sd[f"blocks.{i}.{name}.weight"] = 1 + 0.1 * w if len(shape) == 1 else w / math.sqrt(shape[-1])
            sd[f"blocks.{i}.{name}.bias"] = 0.1 * torch.randn(shape[0], generator=g)
    return sd


def test_convert_mae_resizes_position_grid_and_reports():
    cfg = tiny()
    src = _mae_like(cfg, blocks=6)
    m = DETRack(cfg)
    report = load_encoder_checkpoint(m, {"model": src})
    assert report.source_format == "mae" and report.missing_encoder == []
    grid = src["pos_embed"][:, 1:].reshape(1, 5, 5, -1).permute(0, 3, 1, 2)
    want_z = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(m.backbone.pos_embed_z.detach(), want_z.flatten(2).transpose(1, 2))
    assert m.backbone.pos_embed_x.shape == (1, 256, 32)
    assert torch.equal(m.backbone.blocks[3].mlp.fc2.weight, src["blocks.3.mlp.fc2.weight"])
    assert report.skipped["blocks.4.attn.qkv.weight"] == "block beyond depth=4"
    assert report.skipped["mask_token"] == "pretraining-only tensor"
    assert "5x5 grid -> 16x16" in str(report)
    with pytest.raises(ValueError, match="embed_dim"):
        convert_encoder_checkpoint(_mae_like(tiny(embed_dim=16, num_heads=2, decoder_dim=32)), cfg)
    with pytest.raises(ValueError, match="unrecognised"):
        convert_encoder_checkpoint({"foo.weight": torch.zeros(1)}, cfg)


def test_convert_cae_bias_and_layerscale_folding():
    """CAE: q/v biases become the fused qkv bias, LayerScale gammas load as ls1/ls2 or fold into the projections;
    both give the same function."""
    cfg = tiny()
    plain = _mae_like(cfg)
    g = torch.Generator().manual_seed(7)
    cae = {}
    for k, v in plain.items():
        if k.endswith("attn.qkv.bias"):
            i = k.split(".")[1]
            cae[f"encoder.blocks.{i}.attn.q_bias"] = v[:32]
            cae[f"encoder.blocks.{i}.attn.v_bias"] = v[64:]
        else:
            cae[f"encoder.{k}"] = v
    for i in range(cfg.depth):
        cae[f"encoder.blocks.{i}.gamma_1"] = 0.5 + 0.1 * torch.randn(32, generator=g)
        cae[f"encoder.blocks.{i}.gamma_2"] = 0.5 + 0.1 * torch.randn(32, generator=g)
    cae["teacher_network.blocks.0.norm1.weight"] = torch.zeros(32)

    folded = DETRack(cfg).eval()
    rep_f = load_encoder_checkpoint(folded, {"model": cae})
    scaled = DETRack(tiny(layerscale_init=0.1)).eval()
    rep_s = load_encoder_checkpoint(scaled, {"model": cae})
    assert rep_f.source_format == rep_s.source_format == "cae"
    assert rep_f.missing_encoder == [] and rep_s.missing_encoder == []
    qkv_bias = folded.backbone.blocks[0].attn.qkv.bias
    assert bool((qkv_bias[32:64] == 0).all()) and torch.equal(qkv_bias[:32], plain["blocks.0.attn.qkv.bias"][:32])
    assert torch.equal(scaled.backbone.blocks[2].ls2.gamma, cae["encoder.blocks.2.gamma_2"])
    assert "folded" in rep_f.transformed["backbone.blocks.0.attn.proj.weight"]
    assert rep_f.skipped["teacher_network.blocks.0.norm1.weight"] == "not part of the encoder"
    z, x = _inputs(cfg)
    with torch.no_grad():
        a, b = folded.encode(z, x).recover(), scaled.encode(z, x).recover()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_precomputed_template_tokens_and_precision(model):
    z, x = _inputs(model.config)
    with torch.no_grad():
        ref = model(z, x)
        tok = model.embed_template(z)
        again = model.forward_tokens(tok, x)
    assert tok.shape == (2, 64, 32)
    torch.testing.assert_close(again.boxes, ref.boxes, rtol=0, atol=0)
    # fp64 end to end, and bf16 encoder matrices with an fp32 residual stream and head
    m64 = DETRack(tiny()).eval()
    m64.load_state_dict(model.state_dict())
    m64.double()
    with torch.no_grad():
        out64 = m64(z.double(), x.double())
    assert out64.boxes.dtype == torch.float64
    assert torch.equal(out64.query_index.sort(1).values, ref.query_index.sort(1).values)
    torch.testing.assert_close(out64.boxes.float(), ref.boxes, rtol=0, atol=1e-4)
    mbf = DETRack(tiny()).eval()
    mbf.load_state_dict(model.state_dict())
    mbf.to_mixed_precision(torch.bfloat16)
    assert mbf.compute_dtype == torch.bfloat16 and mbf.input_dtype == torch.float32
    with torch.no_grad():
        outbf = mbf(z, x)
    assert outbf.boxes.dtype == torch.float32 and bool(torch.isfinite(outbf.boxes).all())
    # bf16 may swap near-tied CE / top-K decisions, but most selected cells agree
    same = torch.isin(outbf.query_index, ref.query_index).float().mean()
    assert same > 0.7


def test_decoder_variants():
    """Config switches of the open choices: same first layer / same values, different where they should be."""
    z, x = _inputs(tiny())
    ref = DETRack(tiny()).eval()
    _randomise(ref)
    with torch.no_grad():  # large refinements, so that the reference boxes move between layers
        ref.head.box_head.layers[-1].weight.mul_(20.0)
    outs, grads = {}, {}
    for name, kw in (("base", {}), ("pos_once", dict(query_pos_every_layer=False)),
                     ("lft2", dict(look_forward_twice=True)), ("detach", dict(detach_query_content=True))):
        m = DETRack(tiny(**kw)).eval()
        m.load_state_dict(ref.state_dict())
        out = m(z, x)
        outs[name] = out
        out.boxes[1].sum().backward()
        grads[name] = {n: p.grad.clone() if p.grad is not None else None for n, p in m.named_parameters()}
    base = outs["base"]
    torch.testing.assert_close(outs["pos_once"].boxes[0], base.boxes[0], rtol=0, atol=0)
    assert (outs["pos_once"].boxes[1:] - base.boxes[1:]).abs().max() > 1e-4
    for name in ("lft2", "detach"):
        torch.testing.assert_close(outs[name].boxes, base.boxes, rtol=0, atol=1e-6)
    # look forward twice: layer 1's box loss also reaches layer 0's box refinement -> other box-head gradients
    key = "head.box_head.layers.0.weight"
    assert (grads["lft2"][key] - grads["base"][key]).abs().max() > 1e-6
    # detached content: the encoder then learns from the decoder only through the value map
    key = "backbone.blocks.0.attn.qkv.weight"
    assert grads["detach"][key].abs().sum() > 0
    assert (grads["detach"][key] - grads["base"][key]).abs().max() > 1e-3 * grads["base"][key].abs().max()


# ------------------------------------------------------------------------------------------ template token types


def test_template_token_types_mark_the_target():
    cfg = tiny(template_token_types=True)
    m = DETRack(cfg).eval()
    _randomise(m, seed=3)
    z, x = _inputs(cfg)
    g = cfg.template_grid
    fg = torch.zeros(2, g, g, dtype=torch.int64)
    fg[:, 2:6, 3:5] = 1
    with pytest.raises(ValueError, match="template foreground mask"):
        m(z, x)
    with pytest.raises(ValueError, match=r"must be \(2, 8, 8\)"):
        m(z, x, template_fg=fg[:, :4])
    tokens = m.embed_template(z, fg)
    plain = m.backbone.patch_embed(z) + m.backbone.pos_embed_z
    types = m.backbone.token_type_embed
    flat = fg.reshape(2, -1).bool()
    assert torch.allclose(tokens[flat], (plain + types[1])[flat], atol=1e-6)
    assert torch.allclose(tokens[~flat], (plain + types[0])[~flat], atol=1e-6)
    # the mark reaches the boxes, and the gradient reaches the embeddings
    other = fg.clone()
    other[:, 0, :] = 1
    with torch.no_grad():
        assert not torch.allclose(m(z, x, template_fg=fg).boxes, m(z, x, template_fg=other).boxes)
    m.train()
    m(z, x, template_fg=fg).boxes.sum().backward()
    assert bool(types.grad[0].abs().sum() > 0) and bool(types.grad[1].abs().sum() > 0)


def test_networks_without_token_types_ignore_the_mask():
    m = DETRack(tiny()).eval()
    assert m.backbone.token_type_embed is None and "backbone.token_type_embed" not in m.state_dict()
    z, _ = _inputs(m.config)
    assert torch.equal(m.embed_template(z), m.embed_template(z, torch.ones(2, 8, 8)))
