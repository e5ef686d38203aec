"""Deterministic synthetic weights for the golden tests (the goldens were made with exactly these tensors).

No real checkpoints can be downloaded here, so the official code was run on weights drawn from a fixed recipe, keyed
only by the state-dict layout (``key<TAB>AxBxC<TAB>dtype`` lines in the ``state_dict_*.tsv`` files of
``tests/data``). Each key gets its own ``torch.Generator`` seeded with ``seed + crc32(key)``, so a value never
depends on which other keys exist, and one float32 ``randn`` draw of the key's shape, shaped by the key's leaf name:

* ``weight`` of rank >= 2: ``z / sqrt(fan_in)``; rank 1 (norm scales): ``1 + 0.1 z``; ``bias``: ``0.02 z``;
* ``time_emb``: not drawn, the fixed 1-D sin/cos table a fresh CoTracker3 holds;
* ``gamma`` (LayerScale): ``0.5 + 0.1 z``; ``pos_embed``, ``token_type_embed``: ``0.2 z``; anything else ``0.02 z``.

A few CoTracker3 keys then get a gain or an offset so the synthetic network behaves like a trained one in the ways
the goldens probe (tracks neither frozen nor flying off, visibility decisions not all one way). The OSTrack golden
also draws BatchNorm ``running_var`` as ``1 + 0.1 z`` (:data:`OSTRACK_LEAVES`), so variances stay positive.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

DATA = Path(__file__).resolve().parent / "data"

_GAIN = {
    "corr_mlp.fc1.weight": 4.0,
    "corr_mlp.fc2.weight": 4.0,
    "updateformer.flow_head.weight": 0.05,
    "updateformer.vis_conf_head.weight": 0.5,
}
_OFFSET = {"updateformer.vis_conf_head.bias": (0.5, 0.8)}
_LEAF = {"gamma": (0.5, 0.1), "pos_embed": (0.0, 0.2), "token_type_embed": (0.0, 0.2)}
#: Extra leaf recipes of the OSTrack / DETRack golden.
OSTRACK_LEAVES = {"running_var": (1.0, 0.1)}


def read_layout(tsv: Path) -> List[Tuple[str, Tuple[int, ...], str]]:
    """``(key, shape, dtype name)`` rows of a layout file."""
    rows = []
    for line in Path(tsv).read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            rows.append((key, tuple(int(v) for v in shape.split("x")) if shape else (), dtype))
    return rows


def _sincos(length: int, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64) / half))
    ang = torch.arange(length, dtype=torch.float64)[:, None] * freq[None]
    return torch.cat([ang.sin(), ang.cos()], 1)[None].float()


def _tensor(key: str, shape: Tuple[int, ...], seed: int, leaves: Dict[str, Tuple[float, float]]) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "time_emb" and len(shape) == 3 and shape[0] == 1:
        return _sincos(shape[1], shape[2])
    gen = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    if leaf == "weight":
        return z / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 1.0 + 0.1 * z
    if leaf == "bias":
        return 0.02 * z
    mean, std = leaves.get(leaf, (0.0, 0.02))
    return mean + std * z


def synth_state_dict(tsv: Path, seed: int = 0, extra_leaves: Optional[Dict[str, Tuple[float, float]]] = None
                     ) -> Dict[str, torch.Tensor]:
    """``{key: tensor}`` for every key of the layout, in sorted order (``extra_leaves``: more leaf recipes)."""
    leaves = {**_LEAF, **(extra_leaves or {})}
    out: Dict[str, torch.Tensor] = {}
    for key, shape, dtype in sorted(read_layout(tsv)):
        t = _tensor(key, shape, seed, leaves)
        if key in _GAIN:
            t = t * _GAIN[key]
        if key in _OFFSET:
            t = t + torch.tensor(_OFFSET[key], dtype=torch.float32).reshape(t.shape)
        out[key] = t.to(getattr(torch, dtype, torch.float32)).contiguous()
    return out


def fingerprint(sd: Dict[str, torch.Tensor]) -> List[Tuple[str, float, float, float]]:
    """``(key, sum, sum |x|, first value)`` per key in float64: detects a change of torch's CPU sampler."""
    return [(k, float(v.double().sum()), float(v.double().abs().sum()), float(v.reshape(-1)[0]))
            for k, v in sorted(sd.items())]
