"""Multi-scale deformable attention (Deformable-DETR semantics), as used by DETRack.

Given a flattened multi-level value map, every query and head bilinearly samples ``P`` points on each of ``L`` levels
and returns their weighted sum::

    out[n, q, m*C + c] = sum_{l, p} A[n, q, m, l, p] * bilinear(value_l[n, :, :, m, c], loc[n, q, m, l, p])

Conventions (those of Deformable-DETR's reference implementation):

* ``value`` ``(N, S, M, C)`` with ``S = sum_l H_l * W_l``; each level is flattened row-major (``h * W + w``) and the
  levels are concatenated starting at ``level_start_index``.
* ``spatial_shapes`` ``(L, 2)`` integer rows ``(H, W)``; locations are ``(x, y)`` -- note the swap.
* ``sampling_locations`` ``(N, Lq, M, L, P, 2)`` normalised: ``(0, 0)`` is the top-left *edge* of the map,
  ``(1, 1)`` the bottom-right edge, pixel ``(i, j)`` has its centre at ``((j + .5)/W, (i + .5)/H)``
  (``align_corners=False``). In pixels: ``w = x*W - 0.5``, ``h = y*H - 0.5``.
* Bilinear interpolation with zero padding: each of the 4 corners contributes only when it lies inside the map, so
  samples in the half-pixel border band are attenuated and samples further out give 0 (with 0 gradient).
* ``attention_weights`` ``(N, Lq, M, L, P)``, already normalised (softmax over ``L*P``) by the caller.
* Output ``(N, Lq, M*C)``, heads concatenated head-major.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from trackers.ops._backend import load_kernels, resolve_backend

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "msda_bytes_moved"]


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N,S,heads,C), got shape {tuple(value.shape)}")
    N, S, M, C = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"ms_deform_attn: spatial_shapes must be (L,2) rows (H,W), got {tuple(spatial_shapes.shape)}")
    L = spatial_shapes.shape[0]
    if tuple(level_start_index.shape) != (L,):
        raise ValueError(f"ms_deform_attn: level_start_index must be ({L},), got {tuple(level_start_index.shape)}")
    if spatial_shapes.is_floating_point() or level_start_index.is_floating_point():
        raise ValueError("ms_deform_attn: spatial_shapes and level_start_index must be integer tensors")
    if sampling_locations.dim() != 6 or sampling_locations.shape[0] != N or sampling_locations.shape[2] != M \
            or sampling_locations.shape[3] != L or sampling_locations.shape[5] != 2:
        raise ValueError(f"ms_deform_attn: sampling_locations must be (N,Lq,heads,L,P,2) = ({N},Lq,{M},{L},P,2), "
                         f"got {tuple(sampling_locations.shape)}")
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:5]):
        raise ValueError(f"ms_deform_attn: attention_weights must be (N,Lq,heads,L,P) = "
                         f"{tuple(sampling_locations.shape[:5])}, got {tuple(attention_weights.shape)}")
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if not t.is_floating_point():
            raise ValueError(f"ms_deform_attn: {name} must be floating point, got {t.dtype}")
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index),
                    ("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if t.device != value.device:
            raise ValueError(f"ms_deform_attn: {name} is on {t.device} but value is on {value.device}")
    if spatial_shapes.device.type == "cpu":  # value checks would force a device sync on GPUs
        hw = spatial_shapes[:, 0] * spatial_shapes[:, 1]
        if bool((spatial_shapes < 1).any()):
            raise ValueError(f"ms_deform_attn: spatial_shapes must be positive, got {spatial_shapes.tolist()}")
        if int(hw.sum()) != S:
            raise ValueError(f"ms_deform_attn: value has S={S} rows but spatial_shapes sum to {int(hw.sum())}")
        starts = torch.cumsum(hw, 0) - hw
        if not torch.equal(starts, level_start_index.to(starts.dtype)):
            raise ValueError(f"ms_deform_attn: level_start_index {level_start_index.tolist()} does not match the "
                             f"exclusive cumsum of H*W {starts.tolist()}")


def ms_deform_attn_reference(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                             sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention (the CPU path); same contract as :func:`ms_deform_attn`.

    One ``grid_sample`` per level (bilinear, zero padding, ``align_corners=False``) whose ``(N*M, C, Lq, P)`` result
    is contracted with that level's weights straight away, so only one level's samples exist at a time. Computes in
    fp32 (fp64 for fp64 inputs); differentiable through autograd.
    """
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    N, S, M, C = value.shape
    Lq, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    cdtype = torch.float64 if value.dtype == torch.float64 or sampling_locations.dtype == torch.float64 \
        else torch.float32
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    grids = (2 * sampling_locations.to(cdtype) - 1).permute(0, 2, 1, 3, 4, 5).reshape(N * M, Lq, L, P, 2)
    weights = attention_weights.to(cdtype).permute(0, 2, 1, 3, 4).reshape(N * M, Lq, L, P)
    out = None
    for lvl, ((H, W), start) in enumerate(zip(shapes, starts)):
        v = value[:, start:start + H * W].to(cdtype).permute(0, 2, 3, 1).reshape(N * M, C, H, W)
        sampled = F.grid_sample(v, grids[:, :, lvl], mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N*M, C, Lq, P)
        part = torch.einsum("bcqp,bqp->bcq", sampled, weights[:, :, lvl])
        out = part if out is None else out + part
    if out is None:
        out = value.new_zeros(N * M, C, Lq, dtype=cdtype)
    return out.view(N, M, C, Lq).permute(0, 3, 1, 2).reshape(N, Lq, M * C).to(value.dtype)


class _MSDATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        kern = load_kernels("_msda_triton", "ms_deform_attn", value.device)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return kern.msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        kern = load_kernels("_msda_triton", "ms_deform_attn", value.device)
        need = ctx.needs_input_grad
        gv, gl, ga = kern.msda_backward(value, shapes, starts, loc, attn, grad_out, need[0], need[3], need[4])
        return gv, None, None, gl, ga


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor, *,
                   backend: str = "auto") -> torch.Tensor:
    """Multi-scale deformable attention core (no projections).

    Args:
        value: ``(N, S, heads, C)``, levels flattened row-major and concatenated.
        spatial_shapes: ``(L, 2)`` integer ``(H, W)`` per level.
        level_start_index: ``(L,)`` exclusive cumulative sum of ``H*W``.
        sampling_locations: ``(N, Lq, heads, L, P, 2)`` normalised ``(x, y)`` in [0, 1] (may lie outside).
        attention_weights: ``(N, Lq, heads, L, P)``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``, see :mod:`trackers.ops`.

    Returns:
        ``(N, Lq, heads*C)`` in ``value``'s dtype (accumulated in fp32 for fp16/bf16). Differentiable w.r.t.
        ``value``, ``sampling_locations`` and ``attention_weights``.
    """
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    which = resolve_backend(backend, "ms_deform_attn", (value,))
    if which == "triton":
        return _MSDATriton.apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def msda_bytes_moved(N: int, Lq: int, M: int, C: int, shapes: list[tuple[int, int]], P: int,
                     elem_bytes: int = 4) -> dict[str, int]:
    """Forward global-memory traffic, fused kernel vs the per-level ``grid_sample`` + weighted-sum path, from shapes.

    Both read 4 corner vectors per sample (upper bound without cache reuse). The unfused path writes the sampled
    ``(N*M, C, Lq, L, P)`` tensor and reads it back for the weighted sum (and the Deformable-DETR reference also
    transposes ``value`` per level); the fused kernel keeps samples in registers.
    """
    L = len(shapes)
    S = sum(h * w for h, w in shapes)
    samples = N * Lq * M * L * P
    gather = samples * 4 * C * elem_bytes
    locs = samples * 2 * elem_bytes
    attn = samples * elem_bytes
    out = N * Lq * M * C * elem_bytes
    sampled = samples * C * elem_bytes
    value_copy = 2 * N * S * M * C * elem_bytes  # per-level permute of value into (N*M, C, H, W)
    fused = gather + locs + attn + out
    unfused = value_copy + gather + locs + sampled + sampled + attn + out
    return {"fused": fused, "unfused": unfused, "output": out, "sampled_intermediate": sampled}
