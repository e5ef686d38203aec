"""Triton kernels for :func:`trackers.ops.corr4d` (imported lazily, only when the Triton backend runs).

Tiling
------
Let ``D = 2r+1``, ``K = D^2`` and ``KP = next_pow2(max(K, 16))`` (64 for CoTracker3's r = 3).

**Forward** -- one program per (track, frame) pair; the flat program id is ``(b*N + n)*T + t``, frames fastest, so
programs that run together share the same track and its support tile stays in L2.

* The program holds a ``[KP, KP]`` fp32 accumulator (rows: target offsets ``(h, w)``, columns: support offsets
  ``(i, j)``; padding rows/columns are masked).
* It loops over channels in blocks of ``BLOCK_C`` (16 for fp32 maps, 32 for fp16/bf16: see ``CHANNEL_BLOCK``,
  chosen for shared-memory use on sm_80/sm_90). Per block it gathers the four bilinear corners of every target
  tap as ``[KP, BLOCK_C]`` tiles straight from ``fmap`` (indices clamped = border padding, loads in the input dtype,
  converted to fp32), blends them with the two fractional weights shared by all taps into the sampled patch tile
  (registers only, never written to memory), loads the ``[KP, BLOCK_C]`` support tile and accumulates
  ``tl.dot(patch, support^T)`` in fp32 (``input_precision="ieee"``: no TF32 rounding, and bf16 never reaches
  ``tl.dot``).
* Finally the ``K x K`` block is written in the output dtype. Traffic per pair: one window of channel vectors,
  one support tile (L2), ``K*K`` outputs.

**Backward** -- one program per (track, channel block); it walks all ``T`` frames, so the support gradient of its
channel block is a register accumulator written once (no atomics). Per frame it loads the ``[KP, KP]`` output
gradient ``G``, rebuilds the patch tile as in the forward pass and computes

* ``grad_support += G^T @ patch``  (``[KP, BLOCK_C]``),
* ``grad_patch = G @ support``, scattered to the four corners with fp32 ``tl.atomic_add`` into a
  ``(B, T, H, W, C)`` buffer (corners of neighbouring tracks can coincide),
* the coordinate gradient ``sum(grad_patch * d patch / d x)`` (and y), a scalar per pair, added atomically because
  channel blocks are split over programs.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: True when the kernels below were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import time).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")

#: Channel block per dtype of the feature map. fp32 operands of the IEEE ``tl.dot`` are staged through shared
#: memory at 4 bytes each: at 32 channels the forward kernel needs 88 KiB of shared memory on sm_80/sm_90 (one CTA per
#: SM), at 16 it needs 44 KiB. Half-precision loads need 16 KiB at 32 channels.
CHANNEL_BLOCK = {torch.float32: 16, torch.float16: 32, torch.bfloat16: 32}
_AOT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@triton.jit
def _window_origin(cptr, sc_x, H, W, RADIUS: tl.constexpr):
    """Integer window origin ``floor(p)`` and fractional parts of the track position at ``cptr`` (x, then y)."""
    px = tl.load(cptr).to(tl.float32)
    py = tl.load(cptr + sc_x).to(tl.float32)
    # beyond this range every tap lands on the same border pixel; the clamp keeps floor() away from int overflow
    px = tl.minimum(tl.maximum(px, -RADIUS - 2.0), W + RADIUS + 1.0)
    py = tl.minimum(tl.maximum(py, -RADIUS - 2.0), H + RADIUS + 1.0)
    fx = tl.floor(px)
    fy = tl.floor(py)
    return fx, fy, px - fx, py - fy


@triton.jit
def _corr4d_fwd_kernel(
    fmap_ptr, coords_ptr, sup_ptr, out_ptr,
    T, N, C, H, W,
    sf_b, sf_t, sf_c, sf_h, sf_w,
    sc_b, sc_t, sc_n, sc_x,
    ss_b, ss_n, ss_k, ss_c,
    RADIUS: tl.constexpr, KP: tl.constexpr, BLOCK_C: tl.constexpr,
):
    D: tl.constexpr = 2 * RADIUS + 1
    K: tl.constexpr = D * D
    pid = tl.program_id(0).to(tl.int64)
    t = pid % T
    bn = pid // T
    n = bn % N
    b = bn // N

    fx, fy, ax, ay = _window_origin(coords_ptr + b * sc_b + t * sc_t + n * sc_n, sc_x, H, W, RADIUS)

    rows = tl.arange(0, KP)
    row_ok = rows < K
    ix0 = fx.to(tl.int32) + rows // D - RADIUS  # x offset is the slow axis of the patch
    iy0 = fy.to(tl.int32) + rows % D - RADIUS
    ix1 = tl.minimum(tl.maximum(ix0 + 1, 0), W - 1)
    iy1 = tl.minimum(tl.maximum(iy0 + 1, 0), H - 1)
    ix0 = tl.minimum(tl.maximum(ix0, 0), W - 1)
    iy0 = tl.minimum(tl.maximum(iy0, 0), H - 1)
    o00 = (iy0 * sf_h + ix0 * sf_w)[:, None]
    o10 = (iy0 * sf_h + ix1 * sf_w)[:, None]
    o01 = (iy1 * sf_h + ix0 * sf_w)[:, None]
    o11 = (iy1 * sf_h + ix1 * sf_w)[:, None]
    w00 = (1.0 - ax) * (1.0 - ay)
    w10 = ax * (1.0 - ay)
    w01 = (1.0 - ax) * ay
    w11 = ax * ay

    fbase = fmap_ptr + b * sf_b + t * sf_t
    sbase = sup_ptr + b * ss_b + n * ss_n
    cols = tl.arange(0, BLOCK_C)
    acc = tl.zeros((KP, KP), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + cols
        m = row_ok[:, None] & (ch < C)[None, :]
        cofs = (ch * sf_c)[None, :]
        v00 = tl.load(fbase + o00 + cofs, mask=m, other=0.0).to(tl.float32)
        v10 = tl.load(fbase + o10 + cofs, mask=m, other=0.0).to(tl.float32)
        v01 = tl.load(fbase + o01 + cofs, mask=m, other=0.0).to(tl.float32)
        v11 = tl.load(fbase + o11 + cofs, mask=m, other=0.0).to(tl.float32)
        patch = w00 * v00 + w10 * v10 + w01 * v01 + w11 * v11
        s = tl.load(sbase + rows[:, None] * ss_k + (ch * ss_c)[None, :], mask=m, other=0.0).to(tl.float32)
        acc += tl.dot(patch, tl.trans(s), input_precision="ieee")

    obase = out_ptr + ((b * T + t) * N + n) * (K * K)  # output is (B, T, N, K*K) contiguous
    optrs = obase + rows[:, None] * K + rows[None, :]
    tl.store(optrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & row_ok[None, :])


@triton.jit
def _corr4d_bwd_kernel(
    fmap_ptr, coords_ptr, sup_ptr, gout_ptr,
    gfmap_ptr, gcoords_ptr, gsup_ptr,
    T, N, C, H, W,
    sf_b, sf_t, sf_c, sf_h, sf_w,
    sc_b, sc_t, sc_n, sc_x,
    ss_b, ss_n, ss_k, ss_c,
    RADIUS: tl.constexpr, KP: tl.constexpr, BLOCK_C: tl.constexpr,
    NEED_FMAP: tl.constexpr, NEED_COORDS: tl.constexpr, NEED_SUP: tl.constexpr,
):
    D: tl.constexpr = 2 * RADIUS + 1
    K: tl.constexpr = D * D
    bn = tl.program_id(0).to(tl.int64)
    c0 = tl.program_id(1) * BLOCK_C
    n = bn % N
    b = bn // N

    rows = tl.arange(0, KP)
    row_ok = rows < K
    ch = c0 + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    m = row_ok[:, None] & ch_ok[None, :]
    s = tl.load(sup_ptr + b * ss_b + n * ss_n + rows[:, None] * ss_k + (ch * ss_c)[None, :],
                mask=m, other=0.0).to(tl.float32)
    gs = tl.zeros((KP, BLOCK_C), dtype=tl.float32)
    cofs = (ch * sf_c)[None, :]
    # grad buffer for fmap is a contiguous (B, T, H, W, C) fp32 tensor: channels innermost for the atomics
    gcofs = ch[None, :]
    gmask = row_ok[:, None] & row_ok[None, :]
    for t in range(0, T):
        fx, fy, ax, ay = _window_origin(coords_ptr + b * sc_b + t * sc_t + n * sc_n, sc_x, H, W, RADIUS)
        ix0 = fx.to(tl.int32) + rows // D - RADIUS
        iy0 = fy.to(tl.int32) + rows % D - RADIUS
        ix1 = tl.minimum(tl.maximum(ix0 + 1, 0), W - 1)
        iy1 = tl.minimum(tl.maximum(iy0 + 1, 0), H - 1)
        ix0 = tl.minimum(tl.maximum(ix0, 0), W - 1)
        iy0 = tl.minimum(tl.maximum(iy0, 0), H - 1)
        fbase = fmap_ptr + b * sf_b + t * sf_t
        v00 = tl.load(fbase + (iy0 * sf_h + ix0 * sf_w)[:, None] + cofs, mask=m, other=0.0).to(tl.float32)
        v10 = tl.load(fbase + (iy0 * sf_h + ix1 * sf_w)[:, None] + cofs, mask=m, other=0.0).to(tl.float32)
        v01 = tl.load(fbase + (iy1 * sf_h + ix0 * sf_w)[:, None] + cofs, mask=m, other=0.0).to(tl.float32)
        v11 = tl.load(fbase + (iy1 * sf_h + ix1 * sf_w)[:, None] + cofs, mask=m, other=0.0).to(tl.float32)
        pair = (b * T + t) * N + n
        g = tl.load(gout_ptr + pair * (K * K) + rows[:, None] * K + rows[None, :], mask=gmask,
                    other=0.0).to(tl.float32)
        if NEED_SUP:
            patch = ((1.0 - ax) * (1.0 - ay)) * v00 + (ax * (1.0 - ay)) * v10 \
                + ((1.0 - ax) * ay) * v01 + (ax * ay) * v11
            gs += tl.dot(tl.trans(g), patch, input_precision="ieee")
        if NEED_FMAP or NEED_COORDS:
            gp = tl.dot(g, s, input_precision="ieee")  # gradient of the sampled patch, [KP, BLOCK_C]
            if NEED_FMAP:
                gbase = gfmap_ptr + (b * T + t) * H * W * C
                tl.atomic_add(gbase + ((iy0 * W + ix0) * C)[:, None] + gcofs, gp * ((1.0 - ax) * (1.0 - ay)), mask=m)
                tl.atomic_add(gbase + ((iy0 * W + ix1) * C)[:, None] + gcofs, gp * (ax * (1.0 - ay)), mask=m)
                tl.atomic_add(gbase + ((iy1 * W + ix0) * C)[:, None] + gcofs, gp * ((1.0 - ax) * ay), mask=m)
                tl.atomic_add(gbase + ((iy1 * W + ix1) * C)[:, None] + gcofs, gp * (ax * ay), mask=m)
            if NEED_COORDS:
                dx = (1.0 - ay) * (v10 - v00) + ay * (v11 - v01)
                dy = (1.0 - ax) * (v01 - v00) + ax * (v11 - v10)
                gx = tl.sum(tl.sum(gp * dx, axis=1), axis=0)
                gy = tl.sum(tl.sum(gp * dy, axis=1), axis=0)
                tl.atomic_add(gcoords_ptr + pair * 2, gx)
                tl.atomic_add(gcoords_ptr + pair * 2 + 1, gy)
    if NEED_SUP:
        tl.store(gsup_ptr + bn * (K * C) + rows[:, None] * C + ch[None, :], gs, mask=m)


def _kp(radius: int) -> int:
    return max(16, triton.next_power_of_2((2 * radius + 1) ** 2))


def _block_c(C: int, dtype: torch.dtype) -> int:
    return max(16, min(CHANNEL_BLOCK.get(dtype, 16), triton.next_power_of_2(C)))


def corr4d_forward(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int) -> torch.Tensor:
    """Launch the fused forward kernel; returns ``(B, T, N, K*K)`` in ``fmap``'s dtype."""
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    K = (2 * radius + 1) ** 2
    out = torch.empty(B, T, N, K * K, device=fmap.device, dtype=fmap.dtype)
    if out.numel() == 0:
        return out
    coords = coords.float()
    grid = (B * N * T,)
    _corr4d_fwd_kernel[grid](
        fmap, coords, support, out, T, N, C, H, W,
        *fmap.stride(), *coords.stride(), *support.stride(),
        RADIUS=radius, KP=_kp(radius), BLOCK_C=_block_c(C, fmap.dtype), num_warps=4,
    )
    return out


def corr4d_backward(fmap, coords, support, radius, grad_out, need_fmap=True, need_coords=True, need_support=True):
    """Launch the backward kernel; returns ``(grad_fmap, grad_coords, grad_support)`` (``None`` where not needed)."""
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    K = (2 * radius + 1) ** 2
    dev = fmap.device
    coords32 = coords.float()
    gout = grad_out.contiguous()
    gf = torch.zeros(B, T, H, W, C, device=dev, dtype=torch.float32) if need_fmap else None
    gc = torch.zeros(B, T, N, 2, device=dev, dtype=torch.float32) if need_coords else None
    gs = torch.empty(B, N, K, C, device=dev, dtype=torch.float32) if need_support else None
    dummy = torch.empty(1, device=dev, dtype=torch.float32)
    bc = _block_c(C, fmap.dtype)
    if B * N * T > 0 and (need_fmap or need_coords or need_support):
        grid = (B * N, triton.cdiv(C, bc))
        _corr4d_bwd_kernel[grid](
            fmap, coords32, support, gout,
            gf if gf is not None else dummy, gc if gc is not None else dummy, gs if gs is not None else dummy,
            T, N, C, H, W,
            *fmap.stride(), *coords32.stride(), *support.stride(),
            RADIUS=radius, KP=_kp(radius), BLOCK_C=bc,
            NEED_FMAP=need_fmap, NEED_COORDS=need_coords, NEED_SUP=need_support, num_warps=4,
        )
    elif need_support:
        gs.zero_()
    if need_coords:
        inside_x = (coords[..., 0] >= -radius - 2.0) & (coords[..., 0] <= W + radius + 1.0)
        inside_y = (coords[..., 1] >= -radius - 2.0) & (coords[..., 1] <= H + radius + 1.0)
        gc = gc * torch.stack([inside_x, inside_y], dim=-1)
    return (gf.permute(0, 1, 4, 2, 3).to(fmap.dtype) if need_fmap else None,
            gc.to(coords.dtype) if need_coords else None,
            gs.to(support.dtype) if need_support else None)


def aot_specs(dtype: str = "fp32", radius: int = 3, C: int = 128):
    """``(kernel, signature, constexprs)`` triples for ahead-of-time compilation checks (see ``trackers.ops._aot``)."""
    i32 = "i32"
    p = f"*{dtype}"
    strides = {f"sf_{k}": i32 for k in "btchw"} | {f"sc_{k}": i32 for k in "btnx"} | {f"ss_{k}": i32 for k in "bnkc"}
    dims = {"T": i32, "N": i32, "C": i32, "H": i32, "W": i32}
    fwd_sig = {"fmap_ptr": p, "coords_ptr": "*fp32", "sup_ptr": p, "out_ptr": p} | dims | strides
    fwd_const = {"RADIUS": radius, "KP": _kp(radius), "BLOCK_C": _block_c(C, _AOT_DTYPES[dtype])}
    bwd_sig = {"fmap_ptr": p, "coords_ptr": "*fp32", "sup_ptr": p, "gout_ptr": p,
               "gfmap_ptr": "*fp32", "gcoords_ptr": "*fp32", "gsup_ptr": "*fp32"} | dims | strides
    bwd_const = {"RADIUS": radius, "KP": _kp(radius), "BLOCK_C": _block_c(C, _AOT_DTYPES[dtype]),
                 "NEED_FMAP": True, "NEED_COORDS": True, "NEED_SUP": True}
    return [("corr4d_fwd", _corr4d_fwd_kernel, fwd_sig, fwd_const),
            ("corr4d_bwd", _corr4d_bwd_kernel, bwd_sig, bwd_const)]
