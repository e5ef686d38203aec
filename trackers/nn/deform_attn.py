"""Deformable attention module (Deformable-DETR's ``MSDeformAttn`` layout) over :func:`trackers.ops.ms_deform_attn`.

Each query predicts, from its own feature, ``num_points`` sampling offsets and attention logits per head and level;
the value map is bilinearly sampled at those points and the samples are summed with the softmax-normalised weights:

    out_q = W_o  concat_m [ sum_{l,p} A_{m,q,l,p} * (W_v x)_m (loc_{m,q,l,p}) ]

Parameters (names as in Deformable-DETR / DINO, so their decoder weights load unchanged):

* ``sampling_offsets``  Linear(dim -> heads * levels * points * 2)
* ``attention_weights`` Linear(dim -> heads * levels * points), softmax over ``levels * points`` per head
* ``value_proj`` / ``output_proj`` Linear(dim -> dim)

Reference geometry (normalised to the value map, ``(0, 0)`` the top-left edge, ``(1, 1)`` the bottom-right edge):

* 2-d reference points ``(x, y)``: ``loc = ref + offset / (W_l, H_l)`` -- the offset is in pixels of level ``l``;
* 4-d reference boxes ``(cx, cy, w, h)``: ``loc = (cx, cy) + offset / points * (w, h) * 0.5``, so an offset of
  ``+-points`` reaches the box border and the sampling pattern scales with the box (DETRack's box-reference
  deformable attention, and Deformable-DETR's two-stage / box-refinement form).

Reference tensors may be ``(N, Lq, 2|4)`` (shared by all levels) or ``(N, Lq, levels, 2|4)``.
A ``value_padding_mask`` ``(N, S)`` (True = padding) zeroes those value rows *after* ``value_proj``; that is how a
sparse token set (e.g. tokens dropped by candidate elimination) enters a dense map: the dropped cells contribute
exactly zero wherever they are sampled.

Initialisation follows Deformable-DETR: zero offset weights with a bias that points head ``m`` along angle
``2*pi*m/heads`` (normalised so the larger of ``|cos|, |sin|`` is 1) scaled by ``p + 1`` for point ``p``; zero
attention-weight projection (uniform weights at start); Xavier-uniform value / output projections with zero bias.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from trackers.ops import ms_deform_attn

__all__ = ["MSDeformAttn", "level_start_index", "sampling_locations"]


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum of ``H * W`` per level: where each level's rows start in the flattened value."""
    hw = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cumsum(hw, 0) - hw


def sampling_locations(reference: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Normalised ``(x, y)`` sampling locations ``(N, Lq, M, L, P, 2)`` from a reference and raw offsets.

    Args:
        reference: ``(N, Lq, 2)`` points ``(x, y)`` or ``(N, Lq, 4)`` boxes ``(cx, cy, w, h)``, optionally with a
            level axis ``(N, Lq, L, 2|4)``; normalised to the map.
        offsets: ``(N, Lq, M, L, P, 2)`` raw outputs of the offset projection.
        spatial_shapes: ``(L, 2)`` integer rows ``(H, W)``.
    """
    if reference.dim() == 3:
        reference = reference[:, :, None].expand(-1, -1, offsets.shape[3], -1)
    if reference.dim() != 4 or reference.shape[-1] not in (2, 4):
        raise ValueError(f"reference must be (N, Lq, [L,] 2 or 4), got shape {tuple(reference.shape)}")
    ref = reference[:, :, None, :, None, :]  # (N, Lq, 1, L, 1, 2|4)
    if reference.shape[-1] == 2:
        # offsets are in pixels of each level; (W, H) because locations are (x, y)
        norm = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets.dtype)
        return ref + offsets / norm[None, None, None, :, None, :]
    n_points = offsets.shape[4]
    return ref[..., :2] + offsets / n_points * ref[..., 2:] * 0.5


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with point or box references (see the module docstring).

    Args:
        dim: feature width (queries and values).
        num_heads: attention heads; ``dim`` must be divisible by it.
        num_levels: value-map levels.
        num_points: sampling points per head and level.
        backend: forwarded to :func:`trackers.ops.ms_deform_attn` (``"auto"`` / ``"torch"`` / ``"triton"``).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 backend: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MSDeformAttn: dim {dim} is not divisible by num_heads {num_heads}")
        for name, v in (("num_heads", num_heads), ("num_levels", num_levels), ("num_points", num_points)):
            if v < 1:
                raise ValueError(f"MSDeformAttn: {name} must be >= 1, got {v}")
        self.dim, self.num_heads, self.num_levels, self.num_points = dim, num_heads, num_levels, num_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR's initialisation (see the module docstring)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def sampling(self, query: torch.Tensor, reference: torch.Tensor,
                 spatial_shapes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Where and how strongly every head samples: ``locations (N, Lq, M, L, P, 2)`` normalised ``(x, y)`` and
        ``weights (N, Lq, M, L, P)`` (softmax over ``L * P``)."""
        n, lq, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape != (lv, 2):
            raise ValueError(f"MSDeformAttn: spatial_shapes must be ({lv}, 2), got {tuple(spatial_shapes.shape)}")
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        return sampling_locations(reference.to(offsets.dtype), offsets, spatial_shapes), weights

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor, value_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend from ``query (N, Lq, dim)`` into ``value (N, S, dim)``.

        Args:
            query: query features (content + position already added by the caller).
            reference: ``(N, Lq, [L,] 2)`` points or ``(N, Lq, [L,] 4)`` boxes ``(cx, cy, w, h)``, normalised.
            value: flattened value map, levels row-major and concatenated (``S = sum H_l * W_l``).
            spatial_shapes: ``(L, 2)`` integer ``(H, W)`` rows.
            value_padding_mask: optional ``(N, S)`` bool, True where the value row is padding (set to 0).

        Returns:
            ``(N, Lq, dim)``.
        """
        n, s, c = value.shape
        if c != self.dim or query.shape[-1] != self.dim:
            raise ValueError(f"MSDeformAttn: expected width {self.dim}, got query {tuple(query.shape)} and "
                             f"value {tuple(value.shape)}")
        v = self.value_proj(value)
        if value_padding_mask is not None:
            if value_padding_mask.shape != (n, s):
                raise ValueError(f"MSDeformAttn: value_padding_mask must be ({n}, {s}), got "
                                 f"{tuple(value_padding_mask.shape)}")
            v = v.masked_fill(value_padding_mask[..., None], 0.0)
        v = v.view(n, s, self.num_heads, c // self.num_heads)
        loc, weights = self.sampling(query, reference, spatial_shapes)
        shapes = spatial_shapes.to(device=value.device, dtype=torch.long)
        out = ms_deform_attn(v, shapes, level_start_index(shapes), loc, weights, backend=self.backend)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, levels={self.num_levels}, points={self.num_points}"

