"""Grow a saved BoxTracker (DETRack) without changing what it computes: append encoder blocks that start as
the identity, and/or add template token types that start at zero.

Usage::

    python training/grow_depth.py detrack-small-synthetic training/detrack-small-deeper/init --add 2
    python training/grow_depth.py detrack-small-synthetic training/detrack-small-types/init --add 0 --token-types

The new blocks are appended after the last one (after every candidate-elimination block). Their two residual
branches end in zero matrices (``attn.proj`` and ``mlp.fc2``, weight and bias), so the deepened network computes
exactly what the original did: training continues from the original's behaviour with more capacity, instead of
starting again from random weights (a from-scratch run of the small model took about 13,000 steps to beat CSRT).
``--token-types`` turns on ``DETRackConfig.template_token_types`` with both embeddings at zero: the network
then learns to use the target's mask on the template grid from where the original stood. The script checks the
unchanged output on a random input (and a random mask) before it saves.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

import trackers  # noqa: F401  (the return annotation)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def grow(source: str, add: int, token_types: bool = False) -> "trackers.BoxTracker":
    """A BoxTracker with ``add`` identity blocks appended to ``source``'s encoder (and zero template token types
    when ``token_types``)."""
    from trackers import BoxTracker

    old = BoxTracker.from_pretrained(source)
    if token_types and old.config.template_token_types:
        raise ValueError(f"{source} already has template token types")
    config = dataclasses.replace(old.config, depth=old.config.depth + add,
                                 template_token_types=old.config.template_token_types or token_types)
    new = BoxTracker.from_config(config, settings=dataclasses.asdict(old.settings))
    missing, unexpected = new.model.load_state_dict(old.model.state_dict(), strict=False)
    fresh = {f"backbone.blocks.{i}." for i in range(old.config.depth, config.depth)}
    if token_types:
        fresh.add("backbone.token_type_embed")
    if unexpected or any(not any(k.startswith(p) for p in fresh) for k in missing):
        raise RuntimeError(f"unexpected state-dict mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for i in range(old.config.depth, config.depth):
            block = new.model.backbone.blocks[i]
            for lin in (block.attn.proj, block.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
        if token_types:
            new.model.backbone.token_type_embed.zero_()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, config.template_size, config.template_size, generator=gen)
    x = torch.randn(2, 3, config.search_size, config.search_size, generator=gen)
    g = config.template_grid
    fg = torch.rand(2, g, g, generator=gen) > 0.5
    old.model.eval()
    new.model.eval()
    with torch.no_grad():
        # a network without token types ignores the mask
        a, b = old.model(z, x, template_fg=fg), new.model(z, x, template_fg=fg)
    diff = (a.boxes[-1] - b.boxes[-1]).abs().max().item()
    if diff > 1e-5:
        raise RuntimeError(f"the deepened network differs from the original by {diff} (boxes)")
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="BoxTracker name or folder")
    ap.add_argument("output", help="folder to save the deepened tracker in")
    ap.add_argument("--add", type=int, default=2, help="encoder blocks to append (default 2; 0 with --token-types)")
    ap.add_argument("--token-types", action="store_true", help="add template token types, starting at zero")
    args = ap.parse_args(argv)
    if args.add < 0 or (args.add == 0 and not args.token_types):
        ap.error(f"--add must be >= 1 (or 0 with --token-types), got {args.add}")
    try:
        new = grow(args.source, args.add, args.token_types)
    except ValueError as e:
        ap.error(str(e))
    new.save_pretrained(args.output)
    n = sum(p.numel() for p in new.model.parameters())
    print(f"saved {args.output}: depth {new.config.depth}, template token types "
          f"{new.config.template_token_types}, {n:,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
