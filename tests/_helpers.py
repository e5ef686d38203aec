"""Shared test helpers: tiny configs of every network and small synthetic clips."""
from __future__ import annotations

import numpy as np

#: A CoTracker3 small enough to run a clip in well under a second (offline; add online=True, window_len=8).
TINY_COTRACKER = dict(model_resolution=(32, 48), latent_dim=16, hidden_size=32, num_heads=2, depth=1,
                      num_virtual_tracks=4, corr_radius=1, corr_hidden=16, corr_out=8, window_len=12)
#: A LoRAT with two 32-wide blocks (patch 14, template 28, search 56).
TINY_LORAT = dict(embed_dim=32, depth=2, num_heads=2, ffn_hidden=64, template_size=28, search_size=56)
#: A DETRack with the paper's token grids (8x8 template, 16x16 search) at 4 px patches and a 32-wide ViT.
TINY_DETRACK = dict(template_size=32, search_size=64, patch_size=4, embed_dim=32, depth=4, num_heads=2,
                    ce_locations=(1, 2, 3), decoder_dim=32, num_queries=16, num_decoder_layers=3, dec_heads=4,
                    dec_points=2, dec_ffn_dim=64)


def random_video(T: int = 10, H: int = 24, W: int = 40, seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def moving_square_video(T: int = 6, H: int = 48, W: int = 64, dx: float = 3.0, size: int = 16,
                        seed: int = 0) -> np.ndarray:
    """A textured square moving right by ``dx`` px per frame over a smooth background, ``(T, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([xx * 255 // max(W - 1, 1), yy * 255 // max(H - 1, 1), np.full_like(xx, 90)], -1).astype(np.uint8)
    out = np.repeat(bg[None], T, 0)
    for t in range(T):
        x0 = int(round(4 + dx * t))
        y0 = (H - size) // 2
        x1 = min(W, x0 + size)
        if x0 < W:
            out[t, y0:y0 + size, x0:x1] = tex[:, : x1 - x0]
    return out
