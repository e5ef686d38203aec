"""DETRack size: parameters and multiply-accumulates per frame, with and without candidate elimination.

Usage::

    python benchmarks/detrack_size.py [--depth 12] [--json]

Counts with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, attention
matmuls included; element-wise work, softmax, LayerNorm and the bilinear sampling of the deformable attention are
not counted) and reports GMACs = FLOPs / 2, the unit trackers' papers call "FLOPs". Attention runs through the
math SDPA backend while counting, because the fused CPU kernels are not registered with the counter. One frame =
one template (128 px) + one search region (256 px) forward, batch 1.

The paper's Table 3 gives 68.9 M parameters and 15.6 G (CE) / 21.4 G (no CE); those numbers fit a 9-block ViT-B
(``--depth 9``, CE at blocks 2/4/6) better than the 12 blocks its text describes.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trackers.models.detrack import DETRack, DETRackConfig


def count_macs(model: DETRack, **forward_kwargs) -> float:
    """GMACs of one forward at batch 1."""
    c = model.config
    z = torch.randn(1, 3, c.template_size, c.template_size)
    x = torch.randn(1, 3, c.search_size, c.search_size)
    # grad mode on (no backward): keeps nn.MultiheadAttention off its fused inference path, which the counter
    # would not see
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(z, x, **forward_kwargs)
    return counter.get_total_flops() / 2e9


DEFAULT_CE = {12: (3, 6, 9), 9: (2, 4, 6)}


def measure(depth: int = 12, ce_locations=None) -> dict:
    if ce_locations is None:
        if depth not in DEFAULT_CE:
            raise ValueError(f"no default CE locations for depth {depth}; pass --ce")
        ce_locations = DEFAULT_CE[depth]
    torch.manual_seed(0)
    model = DETRack(DETRackConfig(depth=depth, ce_locations=ce_locations)).eval()
    params = sum(p.numel() for p in model.parameters())
    enc_params = sum(p.numel() for p in model.backbone.parameters())
    pos_params = model.backbone.pos_embed_z.numel() + model.backbone.pos_embed_x.numel()
    res = {
        "depth": depth,
        "ce_locations": list(ce_locations),
        "params_M": params / 1e6,
        "params_without_pos_embed_M": (params - pos_params) / 1e6,
        "encoder_params_M": enc_params / 1e6,
        "head_params_M": (params - enc_params) / 1e6,
        "gmacs_ce": count_macs(model),
        "gmacs_no_ce": count_macs(model, ce_keep_ratio=1.0),
    }
    for n in range(1, model.config.num_decoder_layers + 1):
        res[f"gmacs_ce_{n}_decoder_layers"] = count_macs(model, num_decoder_layers=n)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=12, help="encoder blocks (12 = ViT-B; 9 = the Table-3 fit)")
    ap.add_argument("--ce", type=int, nargs="*", default=None, help="CE block indices (default 3 6 9 / 2 4 6)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = measure(args.depth, tuple(args.ce) if args.ce is not None else None)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"| DETRack (ViT-B, depth {res['depth']}, CE at {res['ce_locations']}) | value |")
    print("|---|---|")
    for k, v in res.items():
        if k not in ("depth", "ce_locations"):
            print(f"| {k} | {v:.3f} |")


if __name__ == "__main__":
    main()
