"""CoTracker3's 4D local correlation.

For every batch item ``b``, frame ``t`` and track ``n`` the operator compares the ``(2r+1)^2`` neighbourhood of the
track position ``p = coords[b, t, n]`` in frame ``t`` with the ``(2r+1)^2`` neighbourhood features of the query
(``support[b, n]``, sampled once at the query frame), forming all ``(2r+1)^4`` dot products::

    out[b, t, n, (h, w, i, j)] = < bilinear(fmap[b, t], p + (dx_h, dy_w)), support[b, n, (i, j)] >

Conventions (those of the official CoTracker3 model):

* ``fmap`` is one pyramid level, ``(B, T, C, H, W)``; ``coords`` are ``(x, y)`` in that level's pixels with pixel
  centres at integers (``align_corners=True``), and samples outside the map take the nearest border pixel
  (``padding_mode="border"``).
* Offsets run over ``-r..r``; in both the target patch ``(h, w)`` and the support patch ``(i, j)`` the **x offset is
  the slow axis**. The flattened output order is ``(h, w, i, j)``; there is no ``1/sqrt(C)`` scaling.

Implementation notes (the reference, also the CPU path):

All ``(2r+1)^2`` sample points of one track share the fractional part of ``p``. The reference therefore gathers the
``(2r+2)^2`` integer pixels around ``floor(p)`` (indices clamped into the map, which is exactly border padding),
takes their dot products with the ``K`` support vectors as one batched matmul per track (all frames at once), and
only then applies the bilinear weights -- two ``lerp`` passes over the small ``(2r+2)^2 x K`` result. Neither
``grid_sample`` nor the sampled ``(B, T, N, K, C)`` neighbourhood is ever built, and tracks are processed in chunks
so the working set stays bounded (the output itself is the only full-size tensor). The backward pass recomputes the
chunk instead of keeping activations.

Gradients flow to ``fmap``, ``support`` and ``coords`` (CoTracker detaches ``coords``, but the gradient is cheap:
it is the difference of neighbouring integer-pixel products). Like ``grid_sample`` the coordinate gradient is zero
where a sample point is clamped to the border, and undefined exactly on integer coordinates.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from trackers.ops._backend import load_kernels, resolve_backend

__all__ = [
    "corr4d", "corr4d_read_dtype", "corr4d_reference", "corr4d_grid_sample", "sample_patches", "corr4d_bytes_moved",
]

#: Elements of the largest temporary of one reference chunk (gathered pixels). On the CPU a chunk that stays in the
#: L2/L3 caches (2**20 fp32 = 4 MiB) runs the gather -> matmul -> lerp chain about twice as fast as 128 MiB chunks;
#: on an accelerator fewer, larger chunks are better (each op is a kernel launch).
_CHUNK_ELEMS_CPU = 1 << 20
_CHUNK_ELEMS = 1 << 25


def _offsets(radius: int, device: torch.device) -> torch.Tensor:
    return torch.arange(-radius, radius + 2, device=device)  # 2r+2 integer taps starting at floor(p) - r


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int) -> None:
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"corr4d: radius must be a non-negative int, got {radius!r}")
    if fmap.dim() != 5:
        raise ValueError(f"corr4d: fmap must be (B,T,C,H,W), got shape {tuple(fmap.shape)}")
    B, T, C, H, W = fmap.shape
    if coords.dim() != 4 or coords.shape[:2] != (B, T) or coords.shape[-1] != 2:
        raise ValueError(f"corr4d: coords must be (B,T,N,2) = ({B},{T},N,2) matching fmap, got {tuple(coords.shape)}")
    N = coords.shape[2]
    K = (2 * radius + 1) ** 2
    if support.dim() != 4 or tuple(support.shape) != (B, N, K, C):
        raise ValueError(f"corr4d: support must be (B,N,K,C) = ({B},{N},{K},{C}) for radius {radius}, "
                         f"got {tuple(support.shape)}")
    if H < 1 or W < 1:
        raise ValueError(f"corr4d: empty feature map {H}x{W}")
    for name, t in (("fmap", fmap), ("coords", coords), ("support", support)):
        if not t.is_floating_point():
            raise ValueError(f"corr4d: {name} must be a floating-point tensor, got {t.dtype}")
        if t.device != fmap.device:
            raise ValueError(f"corr4d: {name} is on {t.device} but fmap is on {fmap.device}")


def _window(coords: torch.Tensor, radius: int, H: int, W: int, cdtype: torch.dtype):
    """Integer window origin and fractional parts for coords ``(..., 2)``.

    Returns ``xi (..., 2r+2)``, ``yi (..., 2r+2)`` clamped pixel indices and ``ax, ay (...)`` in [0, 1).
    Coordinates are first clamped to ``[-r-2, size+r+1]``: beyond that every tap is clamped to the same border pixel
    anyway, so results are unchanged, and the clamp keeps ``floor`` far from integer overflow.
    """
    c = coords.to(cdtype)
    px = c[..., 0].clamp(-radius - 2.0, W + radius + 1.0)
    py = c[..., 1].clamp(-radius - 2.0, H + radius + 1.0)
    fx, fy = torch.floor(px), torch.floor(py)
    ax, ay = px - fx, py - fy
    taps = _offsets(radius, coords.device)
    xi = (fx.long()[..., None] + taps).clamp_(0, W - 1)
    yi = (fy.long()[..., None] + taps).clamp_(0, H - 1)
    return xi, yi, ax, ay


def _chunk_size(B: int, T: int, E: int, C: int, K: int, N: int, device: torch.device) -> int:
    per_track = B * T * E * E * max(C, K)
    budget = _CHUNK_ELEMS_CPU if device.type == "cpu" else _CHUNK_ELEMS
    return max(1, min(N, budget // max(per_track, 1)))


class _Corr4dTorch(torch.autograd.Function):
    """Chunked reference with a recomputing backward (memory stays bounded by one chunk)."""

    @staticmethod
    def forward(ctx, fmap, coords, support, radius: int, out_dtype: torch.dtype):
        ctx.radius = radius
        ctx.save_for_backward(fmap, coords, support)
        with torch.no_grad():
            return _corr4d_torch_fwd(fmap, coords, support, radius, out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        fmap, coords, support = ctx.saved_tensors
        need = ctx.needs_input_grad
        with torch.no_grad():
            gf, gc, gs = _corr4d_torch_bwd(fmap, coords, support, ctx.radius, grad_out, need[0], need[1], need[2])
        return gf, gc, gs, None, None


def _prepare(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int):
    """What the forward and backward passes share: compute dtype, pixel rows, support, chunk size and windows.

    Returns ``(cdtype, rows, support, step, idx, ax, ay)`` with ``idx (B, N, T, E, E)`` contiguous flat row indices
    of every track's window and ``ax, ay (B, N, T)`` its fractional parts.
    """
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    D, E = 2 * radius + 1, 2 * radius + 2
    cdtype = _compute_dtype(fmap, coords, support)
    # channels-last rows: one row per (b, t, y, x) pixel so that a window gather is a single index_select
    rows = fmap.permute(0, 1, 3, 4, 2).reshape(B * T * H * W, C).to(cdtype)
    step = _chunk_size(B, T, E, C, D * D, N, fmap.device)
    idx, ax, ay = _chunk_window(coords, radius, B, T, H, W, cdtype)
    return cdtype, rows, support.to(cdtype), step, idx.contiguous(), ax, ay


def _chunk_window(coords_c, radius, B, T, H, W, cdtype):
    """Flat row indices ``(B, Nc, T, E, E)`` and fractional parts ``(B, Nc, T)`` for a chunk of tracks."""
    xi, yi, ax, ay = _window(coords_c, radius, H, W, cdtype)  # coords_c (B, T, Nc, 2)
    base = (torch.arange(B, device=coords_c.device)[:, None] * T
            + torch.arange(T, device=coords_c.device)[None, :]) * (H * W)  # (B, T)
    idx = base[:, :, None, None, None] + yi[..., None, :] * W + xi[..., :, None]  # (B,T,Nc,E(x),E(y))
    return idx.transpose(1, 2), ax.transpose(1, 2), ay.transpose(1, 2)


def _corr4d_torch_fwd(fmap, coords, support, radius, out_dtype=None):
    B, T, C = fmap.shape[:3]
    N = coords.shape[2]
    D, E = 2 * radius + 1, 2 * radius + 2
    K = D * D
    cdtype, rows, sup, step, idx_all, ax_all, ay_all = _prepare(fmap, coords, support, radius)
    sup_t = sup.transpose(2, 3).contiguous()  # (B, N, C, K): a plain right-hand operand is ~15% faster in bmm
    out = torch.empty(B, T, N, D, D, K, device=fmap.device, dtype=fmap.dtype if out_dtype is None else out_dtype)
    # Workspaces are allocated once and reused by every chunk: on CPU, freshly allocated large tensors are paid for
    # again in page faults, which cost more than the arithmetic here.
    kw = dict(device=fmap.device, dtype=cdtype)
    g_buf = torch.empty(B * step * T * E * E * C, **kw)
    d_buf = torch.empty(B * step * T * E * E * K, **kw)
    t_buf = torch.empty(B * step * T * D * E * K, **kw)
    direct = out.dtype == cdtype
    r_buf = None if direct else torch.empty(B * step * T * D * D * K, **kw)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        nc = n1 - n0
        idx, ax, ay = idx_all[:, n0:n1], ax_all[:, n0:n1], ay_all[:, n0:n1]
        g = g_buf[:B * nc * T * E * E * C].view(B * nc * T * E * E, C)
        torch.index_select(rows, 0, idx.reshape(-1), out=g)
        dots = d_buf[:B * nc * T * E * E * K].view(B * nc, T * E * E, K)
        torch.bmm(g.view(B * nc, T * E * E, C), sup_t[:, n0:n1].reshape(B * nc, C, K), out=dots)
        dots = dots.view(B, nc, T, E, E, K)
        tx = t_buf[:B * nc * T * D * E * K].view(B, nc, T, D, E, K)
        torch.lerp(dots[:, :, :, :-1], dots[:, :, :, 1:], ax[..., None, None, None], out=tx)  # along x
        dest = out[:, :, n0:n1].transpose(1, 2)
        if not direct:
            dest_c = r_buf[:B * nc * T * D * D * K].view(B, nc, T, D, D, K)
            torch.lerp(tx[:, :, :, :, :-1], tx[:, :, :, :, 1:], ay[..., None, None, None], out=dest_c)  # along y
            dest.copy_(dest_c)
        else:
            torch.lerp(tx[:, :, :, :, :-1], tx[:, :, :, :, 1:], ay[..., None, None, None], out=dest)
    return out.view(B, T, N, K * K)


def _corr4d_torch_bwd(fmap, coords, support, radius, grad_out, need_f, need_c, need_s):
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    D, E = 2 * radius + 1, 2 * radius + 2
    K = D * D
    cdtype, rows, sup, step, idx_all, ax_all, ay_all = _prepare(fmap, coords, support, radius)
    gout = grad_out.reshape(B, T, N, D, D, K)
    g_rows = torch.zeros_like(rows) if need_f else None
    g_coords = torch.zeros(B, T, N, 2, device=coords.device, dtype=cdtype) if need_c else None
    g_sup = torch.zeros(B, N, K, C, device=support.device, dtype=cdtype) if need_s else None
    kw = dict(device=fmap.device, dtype=cdtype)
    g_buf = torch.empty(B * step * T * E * E * C, **kw)
    gt_buf = torch.empty(B * step * T * D * E * K, **kw)
    gd_buf = torch.empty(B * step * T * E * E * K, **kw)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        nc = n1 - n0
        idx, ax, ay = idx_all[:, n0:n1].reshape(-1), ax_all[:, n0:n1], ay_all[:, n0:n1]
        wx = ax[..., None, None, None]
        wy = ay[..., None, None, None]
        g = g_buf[:B * nc * T * E * E * C].view(B * nc, T * E * E, C)
        torch.index_select(rows, 0, idx, out=g.view(-1, C))
        s = sup[:, n0:n1].reshape(B * nc, K, C)
        go = gout[:, :, n0:n1].transpose(1, 2).to(cdtype)  # (B, nc, T, D, D, K)
        # transpose of the y lerp (res = tx[y] + wy * (tx[y+1] - tx[y])) ...
        g_tx = gt_buf[:B * nc * T * D * E * K].view(B, nc, T, D, E, K)
        torch.mul(go, 1 - wy, out=g_tx[:, :, :, :, :-1])
        g_tx[:, :, :, :, -1:].zero_()
        g_tx[:, :, :, :, 1:].addcmul_(go, wy)
        # ... and of the x lerp
        g_dots = gd_buf[:B * nc * T * E * E * K].view(B, nc, T, E, E, K)
        torch.mul(g_tx, 1 - wx, out=g_dots[:, :, :, :-1])
        g_dots[:, :, :, -1:].zero_()
        g_dots[:, :, :, 1:].addcmul_(g_tx, wx)
        g_dots = g_dots.view(B * nc, T * E * E, K)
        if need_c:
            dots = torch.bmm(g, s.transpose(1, 2)).view(B, nc, T, E, E, K)
            tx = torch.lerp(dots[:, :, :, :-1], dots[:, :, :, 1:], wx)
            gy = (go * (tx[:, :, :, :, 1:] - tx[:, :, :, :, :-1])).sum(dim=(3, 4, 5))
            gx = (g_tx * (dots[:, :, :, 1:] - dots[:, :, :, :-1])).sum(dim=(3, 4, 5))
            g_coords[:, :, n0:n1] = torch.stack([gx, gy], dim=-1).transpose(1, 2)
        if need_s:
            g_sup[:, n0:n1] = torch.bmm(g_dots.transpose(1, 2), g).view(B, nc, K, C)
        if need_f:
            torch.bmm(g_dots, s, out=g)  # gradient of the gathered pixels, reusing the gather buffer
            g_rows.index_add_(0, idx, g.view(-1, C))
    if need_c:
        # the clamp in _window has zero slope outside its range
        px, py = coords[..., 0], coords[..., 1]
        inside_x = (px >= -radius - 2.0) & (px <= W + radius + 1.0)
        inside_y = (py >= -radius - 2.0) & (py <= H + radius + 1.0)
        g_coords = g_coords * torch.stack([inside_x, inside_y], dim=-1).to(cdtype)
    gf = g_rows.view(B, T, H, W, C).permute(0, 1, 4, 2, 3).to(fmap.dtype) if need_f else None
    gc = g_coords.to(coords.dtype) if need_c else None
    gs = g_sup.to(support.dtype) if need_s else None
    return gf, gc, gs


def corr4d_reference(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int) -> torch.Tensor:
    """Pure-PyTorch 4D correlation (the CPU path); same contract as :func:`corr4d`. Differentiable."""
    _check(fmap, coords, support, radius)
    return _Corr4dTorch.apply(fmap, coords, support, radius, fmap.dtype)


def corr4d_grid_sample(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int) -> torch.Tensor:
    """The unfused formulation: ``grid_sample`` every target neighbourhood, then one einsum.

    This is how the official model computes the correlation. It materialises the sampled ``(B,T,N,K,C)`` tensor and
    is kept as an independent oracle for tests and as the baseline in ``benchmarks/ops.py``.
    """
    _check(fmap, coords, support, radius)
    B, T, C, H, W = fmap.shape
    N = coords.shape[2]
    r = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    dx, dy = torch.meshgrid(r, r, indexing="ij")  # x offset slow
    pts = coords[:, :, :, None, :] + torch.stack([dx, dy], -1).reshape(-1, 2)  # (B,T,N,K,2)
    gx = 2 * pts[..., 0] / max(W - 1, 1) - 1
    gy = 2 * pts[..., 1] / max(H - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).reshape(B * T, N, -1, 2).to(fmap.dtype)
    patches = F.grid_sample(fmap.reshape(B * T, C, H, W), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)  # (BT, C, N, K)
    patches = patches.view(B, T, C, N, -1)
    return torch.einsum("btcnh,bnic->btnhi", patches, support).reshape(B, T, N, -1)


def sample_patches(fmap: torch.Tensor, coords: torch.Tensor, radius: int,
                   frames: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinearly sample ``(2r+1)^2`` neighbourhoods with :func:`corr4d`'s conventions (the query ``support``).

    Args:
        fmap: ``(B, C, H, W)``, or ``(B, T, C, H, W)`` together with ``frames``.
        coords: ``(B, N, 2)`` centres ``(x, y)`` in the map's pixels (centres at integers, border padding).
        radius: neighbourhood radius ``r``.
        frames: ``(B, N)`` integer frame index per point when ``fmap`` has a time axis.

    Returns:
        ``(B, N, K, C)`` with ``K = (2r+1)^2``, x offset slow; differentiable w.r.t. ``fmap`` and ``coords``.
        Computed in fp32 (fp64 for fp64 inputs) and returned in ``fmap``'s dtype.
    """
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"sample_patches: radius must be a non-negative int, got {radius!r}")
    if fmap.dim() == 4:
        if frames is not None:
            raise ValueError("sample_patches: frames is only used with a 5-D fmap (B,T,C,H,W)")
        fmap = fmap[:, None]
        frames_ = None
    elif fmap.dim() == 5:
        if frames is None:
            raise ValueError("sample_patches: a 5-D fmap (B,T,C,H,W) needs frames (B,N)")
        frames_ = frames
    else:
        raise ValueError(f"sample_patches: fmap must be (B,C,H,W) or (B,T,C,H,W), got {tuple(fmap.shape)}")
    B, T, C, H, W = fmap.shape
    if coords.dim() != 3 or coords.shape[0] != B or coords.shape[-1] != 2:
        raise ValueError(f"sample_patches: coords must be (B,N,2) with B={B}, got {tuple(coords.shape)}")
    N = coords.shape[1]
    if frames_ is None:
        frames_ = torch.zeros(B, N, dtype=torch.long, device=coords.device)
    elif tuple(frames_.shape) != (B, N):
        raise ValueError(f"sample_patches: frames must be (B,N) = ({B},{N}), got {tuple(frames_.shape)}")
    else:
        frames_ = frames_.long()
        if frames_.numel() and (int(frames_.min()) < 0 or int(frames_.max()) >= T):
            raise ValueError(f"sample_patches: frames must lie in [0, {T - 1}]")
    D, E = 2 * radius + 1, 2 * radius + 2
    cdtype = _compute_dtype(fmap, coords)
    xi, yi, ax, ay = _window(coords, radius, H, W, cdtype)  # (B,N,E), (B,N)
    base = (torch.arange(B, device=coords.device)[:, None] * T + frames_) * (H * W)  # (B,N)
    idx = base[..., None, None] + yi[..., None, :] * W + xi[..., :, None]  # (B,N,E(x),E(y))
    rows = fmap.permute(0, 1, 3, 4, 2).reshape(B * T * H * W, C).to(cdtype)
    g = rows.index_select(0, idx.reshape(-1)).view(B, N, E, E, C)
    # gradient w.r.t. coords flows through ax / ay (the clamp in _window has zero slope outside its range)
    tx = torch.lerp(g[:, :, :-1], g[:, :, 1:], ax[..., None, None, None])
    res = torch.lerp(tx[:, :, :, :-1], tx[:, :, :, 1:], ay[..., None, None, None])
    return res.reshape(B, N, D * D, C).to(fmap.dtype)


class _Corr4dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, coords, support, radius: int, out_dtype: torch.dtype):
        kern = load_kernels("_corr4d_triton", "corr4d", fmap.device)
        ctx.radius = radius
        ctx.save_for_backward(fmap, coords, support)
        return kern.corr4d_forward(fmap, coords, support, radius).to(out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        fmap, coords, support = ctx.saved_tensors
        kern = load_kernels("_corr4d_triton", "corr4d", fmap.device)
        need = ctx.needs_input_grad
        gf, gc, gs = kern.corr4d_backward(fmap, coords, support, ctx.radius, grad_out.to(fmap.dtype), need[0], need[1],
                                          need[2])
        return gf, gc, gs, None, None


def corr4d(fmap: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int, *,
           backend: str = "auto", out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """CoTracker3's 4D correlation for one pyramid level.

    Args:
        fmap: ``(B, T, C, H, W)`` feature map of one pyramid level.
        coords: ``(B, T, N, 2)`` track positions ``(x, y)`` in that level's pixels (pixel centres at integers).
        support: ``(B, N, K, C)``, ``K = (2r+1)^2``: the query neighbourhood features, x offset slow
            (see :func:`sample_patches`).
        radius: neighbourhood radius ``r`` (3 in CoTracker3).
        backend: ``"auto"`` (Triton for CUDA tensors when available, else the reference), ``"torch"`` or
            ``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1``). See :mod:`trackers.ops`.
        out_dtype: dtype of the result (default ``fmap``'s): e.g. a float32 map read by a bf16 model, rounded once.

    Returns:
        ``(B, T, N, K*K)`` in ``out_dtype``, flattened ``(h, w, i, j)``: ``(h, w)`` target offsets and ``(i, j)``
        support offsets, both x-slow. fp16/bf16 inputs are accumulated in fp32. Differentiable w.r.t. all three
        tensor inputs.
    """
    _check(fmap, coords, support, radius)
    out_dtype = fmap.dtype if out_dtype is None else out_dtype
    if not out_dtype.is_floating_point:
        raise ValueError(f"corr4d: out_dtype must be a floating-point dtype, got {out_dtype}")
    which = resolve_backend(backend, "corr4d", (fmap,))
    if which == "triton":
        return _Corr4dTriton.apply(fmap, coords, support, radius, out_dtype)
    return _Corr4dTorch.apply(fmap, coords, support, radius, out_dtype)


def corr4d_read_dtype(fmap: torch.Tensor, *, backend: str = "auto") -> torch.dtype:
    """The dtype in which :func:`corr4d` reads a level of ``fmap``'s dtype and device without converting it: the
    reference's compute dtype (float32, or float64) on the PyTorch path, the map's own dtype on the Triton path.
    A caller that keeps levels for several calls can store them in it once."""
    if resolve_backend(backend, "corr4d", (fmap,)) == "triton":
        return fmap.dtype
    return _compute_dtype(fmap)


def corr4d_bytes_moved(B: int, T: int, N: int, C: int, H: int, W: int, radius: int,
                       elem_bytes: int = 4, out_bytes: int = 4) -> dict[str, int]:
    """Global-memory traffic of one forward call, fused kernel vs the unfused path, counted from shapes.

    Both sides are charged the same idealised gather cost (each ``(2r+2)^2`` window of channel vectors is read once
    per track and frame; the 4 bilinear corners of neighbouring taps hit in cache). The unfused path additionally
    writes the sampled ``(B,T,N,K,C)`` tensor (fp32 in the official model, grid_sample's output dtype = input dtype
    here) and reads it back for the einsum; the fused kernel keeps it in registers.
    """
    E, K = 2 * radius + 2, (2 * radius + 1) ** 2
    pf = B * T * N  # (track, frame) pairs
    gather = pf * E * E * C * elem_bytes
    coords = pf * 2 * 4
    support = B * N * K * C * elem_bytes  # read once per track (L2-resident across frames)
    out = pf * K * K * out_bytes
    sampled = pf * K * C * elem_bytes
    fused = gather + coords + support + out
    unfused_sample = gather + coords * K + sampled  # grid_sample reads the grid (K points per track-frame)
    unfused_einsum = sampled + support + out
    return {"fused": fused, "unfused": unfused_sample + unfused_einsum, "output": out, "sampled_intermediate": sampled,
            "fmap": B * T * C * H * W * elem_bytes}

