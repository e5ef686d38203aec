"""Deterministic synthetic weights matching the ones the golden outputs were produced with.

No real checkpoints are available to the tests, so the golden runs of the official code loaded weights drawn by a
fixed recipe from a key layout (``key<TAB>AxBxC<TAB>dtype`` lines). This module re-draws exactly the same tensors:

* each key has its own generator, seeded with ``seed + crc32(key as UTF-8)``, and draws ``randn(shape)`` in float32;
* the draw is then shaped by the key's last dotted component (its *leaf*):
  ``weight`` with two or more dims -> divided by ``sqrt(prod(shape[1:]))`` (fan-in);
  ``weight`` with one dim (norm scales) -> ``1 + 0.1 * z``; ``bias`` -> ``0.02 * z``;
  a leaf listed in ``leaf_recipes`` as ``(mean, std)`` -> ``mean + std * z``; anything else -> ``0.02 * z``;
* finally the tensor is cast to the layout's dtype.

The leaf recipes the goldens used: ``gamma`` (0.5, 0.1), ``pos_embed`` (0, 0.2), ``token_type_embed`` (0, 0.2); the
OSTrack/DETRack golden additionally draws BatchNorm ``running_var`` as (1.0, 0.1) so that variances stay positive.
(The per-key gain / offset corrections of the recipe only touch CoTracker3 keys and are not needed here.)
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

LEAF_RECIPES: Dict[str, Tuple[float, float]] = {
    "gamma": (0.5, 0.1),
    "pos_embed": (0.0, 0.2),
    "token_type_embed": (0.0, 0.2),
}
#: Leaf recipes of the OSTrack/DETRack golden (positive BatchNorm variances).
OSTRACK_LEAF_RECIPES: Dict[str, Tuple[float, float]] = {**LEAF_RECIPES, "running_var": (1.0, 0.1)}


def read_layout(path: Path):
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        yield key, tuple(int(s) for s in shape.split("x")) if shape else (), dtype


def draw(key: str, shape: Tuple[int, ...], seed: int, leaf_recipes: Mapping[str, Tuple[float, float]]) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) + zlib.crc32(key.encode("utf-8")))
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "weight":
        return z / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 1.0 + 0.1 * z
    if leaf == "bias":
        return 0.02 * z
    if leaf in leaf_recipes:
        mean, std = leaf_recipes[leaf]
        return mean + std * z
    return 0.02 * z


def synthetic_state_dict(layout: Path, seed: int = 0,
                         leaf_recipes: Optional[Mapping[str, Tuple[float, float]]] = None) -> Dict[str, torch.Tensor]:
    """``{key: tensor}`` for every key of the layout file (see the module docstring)."""
    recipes = LEAF_RECIPES if leaf_recipes is None else leaf_recipes
    return {key: draw(key, shape, seed, recipes).to(getattr(torch, dtype, torch.float32)).contiguous()
            for key, shape, dtype in read_layout(layout)}
