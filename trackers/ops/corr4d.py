"""CoTracker3's 4D local correlation (naive reference; to be replaced by a lean one)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _offsets(radius: int, device, dtype) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dx, dy = torch.meshgrid(r, r, indexing="ij")  # x offset is the slow axis
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


def corr4d(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int, *, backend: str = "auto") -> torch.Tensor:
    """All (2r+1)^4 dot products between target neighbourhoods and query neighbourhoods.

    fmap (B,T,C,H,W); coords (B,T,N,2) in level pixels; support (B,N,K,C); returns (B,T,N,K*K).
    """
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    off = _offsets(radius, coords.device, coords.dtype)
    pts = coords[:, :, :, None, :] + off  # B,T,N,K,2
    gx = 2 * pts[..., 0] / max(W - 1, 1) - 1
    gy = 2 * pts[..., 1] / max(H - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).reshape(B * T, N, -1, 2)
    patches = F.grid_sample(fmap.reshape(B * T, C, H, W), grid.to(fmap.dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)  # BT,C,N,K
    patches = patches.reshape(B, T, C, N, -1).permute(0, 1, 3, 4, 2)  # B,T,N,K,C
    return torch.einsum("btnhc,bnic->btnhi", patches, support).reshape(B, T, N, -1)
