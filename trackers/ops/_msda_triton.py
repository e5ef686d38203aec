"""Triton kernels for :func:`trackers.ops.ms_deform_attn` (imported lazily, only when the Triton backend runs).

Tiling
------
One program per (batch ``n``, head ``m``, block of ``BLOCK_Q`` queries); the flat program id is
``(n*M + m) * cdiv(Lq, BLOCK_Q) + q_block``. The whole head dimension is one tile of ``BLOCK_D = next_pow2(C)``
lanes, so every per-sample reduction over channels stays inside the program.

**Forward.** A ``[BLOCK_Q, BLOCK_D]`` fp32 accumulator. For each level (its ``H``, ``W`` and start row are read from
``spatial_shapes`` / ``level_start_index`` in the kernel, so there is no host sync) and each of the ``P`` points, the
program loads the ``BLOCK_Q`` locations and weights, computes the 4 corners, gathers the 4 ``[BLOCK_Q, BLOCK_D]``
value tiles (a corner outside the map is masked to 0 = zero padding; rows of ``value`` are contiguous over channels,
so each gather row is one coalesced segment), blends them and adds ``weight * sample`` to the accumulator. The
sampled values never leave registers; the output tile is written once in the value dtype.

**Backward.** Same decomposition. Per (level, point) the program rebuilds the 4 corner tiles and the sample, then

* ``grad_attention = sum_c(grad_out * sample)`` and ``grad_location = (W, H) * sum_c(grad_out * weight *
  d sample / d(w, h))``, per query -- plain stores, since the program owns all channels of its (query, head);
* ``grad_value``: the 4 corner contributions ``weight * corner_weight * grad_out`` are scattered with fp32
  ``tl.atomic_add`` (different queries hit the same pixels) into an fp32 buffer, cast to the value dtype after.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: True when the kernels below were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import time).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@triton.jit
def _corners(vbase, sv_s, x, y, H, W, start, q_ok, d_ok):
    """Bilinear corners of normalised locations ``(x, y)`` on one level: the 4 gathered ``[BLOCK_Q, BLOCK_D]``
    value tiles (0 outside the map), the fractional parts ``lw``, ``lh``, the top-left row ``r00`` and the 4
    corner masks (shared by the forward and the backward kernel)."""
    # pixel coordinates; clamped to a range where every corner is already outside (keeps int casts safe)
    wf = tl.minimum(tl.maximum(x * W - 0.5, -2.0), W + 1.0)
    hf = tl.minimum(tl.maximum(y * H - 0.5, -2.0), H + 1.0)
    w0f = tl.floor(wf)
    h0f = tl.floor(hf)
    lw = wf - w0f
    lh = hf - h0f
    w0 = w0f.to(tl.int32)
    h0 = h0f.to(tl.int32)
    w1 = w0 + 1
    h1 = h0 + 1
    in_w0 = (w0 >= 0) & (w0 < W)
    in_w1 = (w1 >= 0) & (w1 < W)
    in_h0 = (h0 >= 0) & (h0 < H)
    in_h1 = (h1 >= 0) & (h1 < H)
    r00 = start + h0 * W + w0
    m00 = (q_ok & in_h0 & in_w0)[:, None] & d_ok
    m01 = (q_ok & in_h0 & in_w1)[:, None] & d_ok
    m10 = (q_ok & in_h1 & in_w0)[:, None] & d_ok
    m11 = (q_ok & in_h1 & in_w1)[:, None] & d_ok
    v00 = tl.load(vbase + (r00 * sv_s)[:, None], mask=m00, other=0.0).to(tl.float32)
    v01 = tl.load(vbase + ((r00 + 1) * sv_s)[:, None], mask=m01, other=0.0).to(tl.float32)
    v10 = tl.load(vbase + ((r00 + W) * sv_s)[:, None], mask=m10, other=0.0).to(tl.float32)
    v11 = tl.load(vbase + ((r00 + W + 1) * sv_s)[:, None], mask=m11, other=0.0).to(tl.float32)
    return v00, v01, v10, v11, lw, lh, r00, m00, m01, m10, m11


@triton.jit
def _program_tile(Lq, M, C, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch item ``n``, head ``m`` and block of queries ``q`` (with masks) over channels ``d``."""
    pid = tl.program_id(0).to(tl.int64)
    nqb = tl.cdiv(Lq, BLOCK_Q)
    qb = pid % nqb
    nm = pid // nqb
    q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    return nm // M, nm % M, q, q < Lq, d, (d < C)[None, :]


@triton.jit
def _level(shapes_ptr, starts_ptr, lvl):
    """Height, width and flat start offset of pyramid level ``lvl``."""
    H = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
    W = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
    return H, W, tl.load(starts_ptr + lvl).to(tl.int64)


@triton.jit
def _blend(v00, v01, v10, v11, lw, lh):
    """Bilinear combination of the four corner values (``lw``/``lh``: fractional parts along x/y)."""
    hw = 1.0 - lw
    hh = 1.0 - lh
    return (hh * hw)[:, None] * v00 + (hh * lw)[:, None] * v01 + (lh * hw)[:, None] * v10 + (lh * lw)[:, None] * v11


@triton.jit
def _load_point(lptr, sl_x, aptr, q_ok):
    """Sampling location (x, y) and attention weight of one point for a block of queries, in fp32."""
    x = tl.load(lptr, mask=q_ok, other=0.0).to(tl.float32)
    y = tl.load(lptr + sl_x, mask=q_ok, other=0.0).to(tl.float32)
    a = tl.load(aptr, mask=q_ok, other=0.0).to(tl.float32)
    return x, y, a


@triton.jit
def _msda_fwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
    Lq, M, C, L, P,
    sv_n, sv_s, sv_m, sv_c,
    sl_n, sl_q, sl_m, sl_l, sl_p, sl_x,
    sa_n, sa_q, sa_m, sa_l, sa_p,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    n, m, q, q_ok, d, d_ok = _program_tile(Lq, M, C, BLOCK_Q, BLOCK_D)
    vbase = value_ptr + n * sv_n + m * sv_m + (d * sv_c)[None, :]
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in range(0, L):
        H, W, start = _level(shapes_ptr, starts_ptr, lvl)
        for p in range(0, P):
            x, y, a = _load_point(loc_ptr + n * sl_n + q * sl_q + m * sl_m + lvl * sl_l + p * sl_p, sl_x,
                                  attn_ptr + n * sa_n + q * sa_q + m * sa_m + lvl * sa_l + p * sa_p, q_ok)
            v00, v01, v10, v11, lw, lh, r00, m00, m01, m10, m11 = _corners(vbase, sv_s, x, y, H, W, start, q_ok, d_ok)
            acc += a[:, None] * _blend(v00, v01, v10, v11, lw, lh)
    optrs = out_ptr + (n * Lq + q)[:, None] * (M * C) + m * C + d[None, :]
    tl.store(optrs, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & d_ok)


@triton.jit
def _msda_bwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, gout_ptr,
    gvalue_ptr, gloc_ptr, gattn_ptr,
    S, Lq, M, C, L, P,
    sv_n, sv_s, sv_m, sv_c,
    sl_n, sl_q, sl_m, sl_l, sl_p, sl_x,
    sa_n, sa_q, sa_m, sa_l, sa_p,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
    NEED_VALUE: tl.constexpr, NEED_LOC: tl.constexpr, NEED_ATTN: tl.constexpr,
):
    n, m, q, q_ok, d, d_ok = _program_tile(Lq, M, C, BLOCK_Q, BLOCK_D)
    vbase = value_ptr + n * sv_n + m * sv_m + (d * sv_c)[None, :]
    # fp32 grad buffer is a contiguous (N, S, M, C) tensor
    gvbase = gvalue_ptr + (n * S * M + m) * C + d[None, :]
    g = tl.load(gout_ptr + (n * Lq + q)[:, None] * (M * C) + m * C + d[None, :], mask=q_ok[:, None] & d_ok,
                other=0.0).to(tl.float32)
    for lvl in range(0, L):
        H, W, start = _level(shapes_ptr, starts_ptr, lvl)
        for p in range(0, P):
            x, y, a = _load_point(loc_ptr + n * sl_n + q * sl_q + m * sl_m + lvl * sl_l + p * sl_p, sl_x,
                                  attn_ptr + n * sa_n + q * sa_q + m * sa_m + lvl * sa_l + p * sa_p, q_ok)
            v00, v01, v10, v11, lw, lh, r00, m00, m01, m10, m11 = _corners(vbase, sv_s, x, y, H, W, start, q_ok, d_ok)
            hw = 1.0 - lw
            hh = 1.0 - lh
            lidx = ((n * Lq + q) * M + m) * (L * P) + lvl * P + p  # contiguous grad layouts
            if NEED_ATTN:
                sample = _blend(v00, v01, v10, v11, lw, lh)
                tl.store(gattn_ptr + lidx, tl.sum(g * sample, axis=1), mask=q_ok)
            if NEED_LOC:
                ga = g * a[:, None]
                dw = hh[:, None] * (v01 - v00) + lh[:, None] * (v11 - v10)
                dh = hw[:, None] * (v10 - v00) + lw[:, None] * (v11 - v01)
                # zero slope where the clamp above was active
                sx = tl.where((x * W - 0.5 > -2.0) & (x * W - 0.5 < W + 1.0), W * 1.0, 0.0)
                sy = tl.where((y * H - 0.5 > -2.0) & (y * H - 0.5 < H + 1.0), H * 1.0, 0.0)
                tl.store(gloc_ptr + lidx * 2, tl.sum(ga * dw, axis=1) * sx, mask=q_ok)
                tl.store(gloc_ptr + lidx * 2 + 1, tl.sum(ga * dh, axis=1) * sy, mask=q_ok)
            if NEED_VALUE:
                ga2 = g * a[:, None]
                gptr = gvbase + (r00 * (M * C))[:, None]
                tl.atomic_add(gptr, ga2 * (hh * hw)[:, None], mask=m00)
                tl.atomic_add(gptr + M * C, ga2 * (hh * lw)[:, None], mask=m01)
                tl.atomic_add(gptr + W * (M * C), ga2 * (lh * hw)[:, None], mask=m10)
                tl.atomic_add(gptr + (W + 1) * (M * C), ga2 * (lh * lw)[:, None], mask=m11)


def _blocks(C: int) -> tuple[int, int]:
    block_d = max(16, triton.next_power_of_2(C))
    block_q = max(1, min(64, 2048 // block_d))
    return block_q, block_d


def _int_meta(spatial_shapes: torch.Tensor, level_start_index: torch.Tensor):
    return spatial_shapes.to(torch.int64).contiguous(), level_start_index.to(torch.int64).contiguous()


def msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Launch the fused forward kernel; returns ``(N, Lq, M*C)`` in ``value``'s dtype."""
    N, S, M, C = value.shape
    Lq, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    shapes, starts = _int_meta(spatial_shapes, level_start_index)
    loc = sampling_locations.float()
    attn = attention_weights.float()
    out = torch.empty(N, Lq, M * C, device=value.device, dtype=value.dtype)
    if out.numel() == 0:
        return out
    if L * P == 0:
        return out.zero_()
    bq, bd = _blocks(C)
    grid = (N * M * triton.cdiv(Lq, bq),)
    _msda_fwd_kernel[grid](value, shapes, starts, loc, attn, out, Lq, M, C, L, P,
                           *value.stride(), *loc.stride(), *attn.stride(), BLOCK_Q=bq, BLOCK_D=bd, num_warps=4)
    return out


def msda_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_out,
                  need_value=True, need_loc=True, need_attn=True):
    """Launch the backward kernel; returns ``(grad_value, grad_locations, grad_weights)`` (``None`` if not needed)."""
    N, S, M, C = value.shape
    Lq, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    shapes, starts = _int_meta(spatial_shapes, level_start_index)
    loc = sampling_locations.float()
    attn = attention_weights.float()
    dev = value.device
    gv = torch.zeros(N, S, M, C, device=dev, dtype=torch.float32) if need_value else None
    gl = torch.zeros(N, Lq, M, L, P, 2, device=dev, dtype=torch.float32) if need_loc else None
    ga = torch.zeros(N, Lq, M, L, P, device=dev, dtype=torch.float32) if need_attn else None
    dummy = torch.empty(1, device=dev, dtype=torch.float32)
    if N * Lq * M * L * P > 0 and (need_value or need_loc or need_attn):
        bq, bd = _blocks(C)
        grid = (N * M * triton.cdiv(Lq, bq),)
        _msda_bwd_kernel[grid](value, shapes, starts, loc, attn, grad_out.contiguous(),
                               gv if gv is not None else dummy, gl if gl is not None else dummy,
                               ga if ga is not None else dummy,
                               S, Lq, M, C, L, P, *value.stride(), *loc.stride(), *attn.stride(),
                               BLOCK_Q=bq, BLOCK_D=bd, NEED_VALUE=need_value, NEED_LOC=need_loc,
                               NEED_ATTN=need_attn, num_warps=4)
    return (gv.to(value.dtype) if need_value else None,
            gl.to(sampling_locations.dtype) if need_loc else None,
            ga.to(attention_weights.dtype) if need_attn else None)


def aot_specs(dtype: str = "fp32", C: int = 32):
    """``(name, kernel, signature, constexprs)`` for ahead-of-time compilation checks (see ``trackers.ops._aot``)."""
    i32 = "i32"
    p = f"*{dtype}"
    strides = ({f"sv_{k}": i32 for k in "nsmc"} | {f"sl_{k}": i32 for k in "nqmlpx"}
               | {f"sa_{k}": i32 for k in "nqmlp"})
    bq, bd = _blocks(C)
    fwd_sig = ({"value_ptr": p, "shapes_ptr": "*i64", "starts_ptr": "*i64", "loc_ptr": "*fp32", "attn_ptr": "*fp32",
                "out_ptr": p} | {"Lq": i32, "M": i32, "C": i32, "L": i32, "P": i32} | strides)
    bwd_sig = ({"value_ptr": p, "shapes_ptr": "*i64", "starts_ptr": "*i64", "loc_ptr": "*fp32", "attn_ptr": "*fp32",
                "gout_ptr": p, "gvalue_ptr": "*fp32", "gloc_ptr": "*fp32", "gattn_ptr": "*fp32"}
               | {"S": i32, "Lq": i32, "M": i32, "C": i32, "L": i32, "P": i32} | strides)
    return [("msda_fwd", _msda_fwd_kernel, fwd_sig, {"BLOCK_Q": bq, "BLOCK_D": bd}),
            ("msda_bwd", _msda_bwd_kernel, bwd_sig, {"BLOCK_Q": bq, "BLOCK_D": bd, "NEED_VALUE": True,
                                                       "NEED_LOC": True, "NEED_ATTN": True})]
