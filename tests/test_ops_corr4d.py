"""trackers.ops.corr4d: reference vs the unfused grid_sample formulation, gradients, and the Triton kernels
(through Triton's interpreter; tests/conftest.py sets TRITON_INTERPRET=1 before anything imports the kernels)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from trackers.ops import corr4d, corr4d_grid_sample, corr4d_reference, sample_patches

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
needs_interp = pytest.mark.skipif(not INTERP, reason="Triton kernels on CPU need TRITON_INTERPRET=1 (see conftest)")
try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:  # pragma: no cover - triton ships with Linux torch wheels
    HAVE_TRITON = False
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not importable")


def _inputs(B, T, C, H, W, N, r, dtype=torch.float64, spread=6.0, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    K = (2 * r + 1) ** 2
    fmap = torch.randn(B, T, C, H, W, generator=g, dtype=dtype)
    # positions inside the map and up to `spread` pixels beyond every border
    lo = torch.tensor([-spread, -spread], dtype=dtype)
    hi = torch.tensor([W - 1 + spread, H - 1 + spread], dtype=dtype)
    coords = lo + torch.rand(B, T, N, 2, generator=g, dtype=dtype) * (hi - lo)
    support = torch.randn(B, N, K, C, generator=g, dtype=dtype)
    if grad:
        for t in (fmap, coords, support):
            t.requires_grad_(True)
    return fmap, coords, support


SHAPES = [  # B, T, C, H, W, N, r
    (1, 2, 4, 6, 9, 5, 1),     # non-square
    (2, 3, 5, 7, 4, 6, 2),     # taller than wide, batch 2
    (1, 2, 3, 5, 5, 4, 3),     # CoTracker radius, window wider than the map
    (1, 1, 2, 1, 7, 3, 1),     # a single row
    (1, 2, 3, 4, 3, 3, 0),     # radius 0
]


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_grid_sample(shape):
    fmap, coords, support = _inputs(*shape)
    coords[0, 0, 0] = torch.tensor([-1e6, 3e7], dtype=coords.dtype)  # absurdly far outside
    coords[0, -1, -1] = torch.tensor([2.0, 1.0], dtype=coords.dtype) if shape[3] > 1 else coords[0, -1, -1]
    ref = corr4d_reference(fmap, coords, support, shape[-1])
    gs = corr4d_grid_sample(fmap, coords, support, shape[-1])
    K = (2 * shape[-1] + 1) ** 2
    assert ref.shape == (shape[0], shape[1], shape[5], K * K)
    torch.testing.assert_close(ref, gs, rtol=1e-12, atol=1e-12)


def test_reference_on_cotracker_like_coords():
    """Level-scaled coordinates of a smooth track set (as the model feeds them) on every pyramid level."""
    g = torch.Generator().manual_seed(1)
    B, T, N, C, r = 1, 6, 20, 16, 3
    H0, W0 = 24, 32
    start = torch.rand(B, 1, N, 2, generator=g) * torch.tensor([W0 - 1.0, H0 - 1.0])
    drift = torch.cumsum(torch.randn(B, T, N, 2, generator=g) * 1.5, dim=1)
    coords0 = (start + drift).double()
    fmap = torch.randn(B, T, C, H0, W0, generator=g, dtype=torch.float64)
    fmap = fmap / fmap.norm(dim=2, keepdim=True)
    for lvl in range(4):
        f = fmap if lvl == 0 else F.avg_pool2d(fmap.flatten(0, 1), 2 ** lvl).unflatten(0, (B, T))
        c = coords0 / 2 ** lvl
        sup = sample_patches(f[:, 0], c[:, 0], r)
        torch.testing.assert_close(corr4d_reference(f, c, sup, r), corr4d_grid_sample(f, c, sup, r),
                                   rtol=1e-12, atol=1e-12)


def test_reference_gradients_match_grid_sample_autograd():
    fmap, coords, support = _inputs(2, 2, 3, 5, 6, 4, 2, grad=True, seed=3)
    go = torch.randn(2, 2, 4, 625, dtype=torch.float64)
    g_ref = torch.autograd.grad((corr4d_reference(fmap, coords, support, 2) * go).sum(), (fmap, coords, support))
    g_gs = torch.autograd.grad((corr4d_grid_sample(fmap, coords, support, 2) * go).sum(), (fmap, coords, support))
    for a, b in zip(g_ref, g_gs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("r", [1, 2])
def test_reference_gradcheck_fp64(r):
    fmap, coords, support = _inputs(1, 2, 3, 4, 5, 3, r, grad=True, spread=3.0, seed=5)
    assert torch.autograd.gradcheck(lambda f, c, s: corr4d_reference(f, c, s, r), (fmap, coords, support),
                                    fast_mode=True)
    # only fmap/support (what CoTracker trains through: coords are detached there)
    c = coords.detach()
    assert torch.autograd.gradcheck(lambda f, s: corr4d_reference(f, c, s, r), (fmap, support), fast_mode=True)


def test_chunking_is_invisible(monkeypatch):
    import sys
    mod = sys.modules["trackers.ops.corr4d"]
    fmap, coords, support = _inputs(2, 3, 4, 5, 6, 7, 1, grad=True, seed=2)
    full = corr4d_reference(fmap, coords, support, 1)
    g_full = torch.autograd.grad(full.square().sum(), (fmap, coords, support))
    monkeypatch.setattr(mod, "_CHUNK_ELEMS", 1)  # one track per chunk
    monkeypatch.setattr(mod, "_CHUNK_ELEMS_CPU", 1)
    small = corr4d_reference(fmap, coords, support, 1)
    g_small = torch.autograd.grad(small.square().sum(), (fmap, coords, support))
    torch.testing.assert_close(full, small, rtol=1e-13, atol=1e-13)
    for a, b in zip(g_full, g_small):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_sample_patches_matches_grid_sample_and_frames():
    g = torch.Generator().manual_seed(4)
    B, T, C, H, W, N, r = 2, 3, 4, 5, 7, 6, 2
    fmap = torch.randn(B, T, C, H, W, generator=g, dtype=torch.float64)
    coords = torch.rand(B, N, 2, generator=g, dtype=torch.float64) * torch.tensor([W + 4.0, H + 4.0]) - 2
    frames = torch.randint(0, T, (B, N), generator=g)
    got = sample_patches(fmap, coords, r, frames=frames)
    assert got.shape == (B, N, (2 * r + 1) ** 2, C)
    rr = torch.arange(-r, r + 1, dtype=torch.float64)
    dx, dy = torch.meshgrid(rr, rr, indexing="ij")  # x offset slow
    pts = coords[:, :, None] + torch.stack([dx, dy], -1).reshape(-1, 2)
    for b in range(B):
        for n in range(N):
            grid = torch.stack([2 * pts[b, n, :, 0] / (W - 1) - 1, 2 * pts[b, n, :, 1] / (H - 1) - 1], -1)
            exp = F.grid_sample(fmap[b, frames[b, n]][None], grid[None, None], mode="bilinear",
                                padding_mode="border", align_corners=True)[0, :, 0].T
            torch.testing.assert_close(got[b, n], exp, rtol=1e-12, atol=1e-12)
    # 4-D map = the 5-D map with every point at frame 0
    torch.testing.assert_close(sample_patches(fmap[:, 0], coords, r),
                               sample_patches(fmap, coords, r, frames=torch.zeros(B, N, dtype=torch.long)))


def test_corr4d_equals_dot_of_two_sampled_patches():
    """out[t, n, h, i] = <patch_t[n, h], support[n, i]>: ties corr4d's layout to sample_patches."""
    fmap, coords, support = _inputs(1, 3, 6, 8, 10, 5, 3, seed=7)
    out = corr4d_reference(fmap, coords, support, 3).view(1, 3, 5, 49, 49)
    for t in range(3):
        patch = sample_patches(fmap[:, t], coords[:, t], 3)
        torch.testing.assert_close(out[:, t], torch.einsum("bnhc,bnic->bnhi", patch, support),
                                   rtol=1e-12, atol=1e-12)


def test_offset_order_x_is_slow_axis():
    """A map that is x (resp. y) tells which patch axis moves along x: the first one, as in the model."""
    H, W, r = 9, 11, 1
    xs = torch.arange(W, dtype=torch.float64).expand(H, W)
    ys = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    fmap = torch.stack([xs, ys])[None, None]  # (1,1,2,H,W): channel 0 = x, channel 1 = y
    patch = sample_patches(fmap[:, 0], torch.tensor([[[5.25, 4.5]]], dtype=torch.float64), r)[0, 0]
    assert torch.allclose(patch[:, 0], torch.tensor([4.25] * 3 + [5.25] * 3 + [6.25] * 3, dtype=torch.float64))
    assert torch.allclose(patch[:, 1], torch.tensor([3.5, 4.5, 5.5] * 3, dtype=torch.float64))


def test_half_inputs_accumulate_in_fp32():
    fmap, coords, support = _inputs(1, 2, 64, 6, 7, 3, 1, dtype=torch.float32, seed=8)
    exact = corr4d_reference(fmap.double(), coords.double(), support.double(), 1)
    for dt in (torch.float16, torch.bfloat16):
        out = corr4d_reference(fmap.to(dt), coords, support.to(dt), 1)
        assert out.dtype == dt
        # inputs rounded to dt, fp32 accumulation, one final rounding of the output
        exp = corr4d_reference(fmap.to(dt).double(), coords.double(), support.to(dt).double(), 1)
        torch.testing.assert_close(out.double(), exp, rtol=1e-2 if dt == torch.bfloat16 else 2e-3, atol=0.05)
        assert (out.double() - exact).abs().max() < 1.0


@pytest.mark.parametrize("bad, msg", [
    (dict(fmap=torch.zeros(1, 2, 3, 4)), "fmap must be"),
    (dict(coords=torch.zeros(1, 2, 5, 3)), "coords must be"),
    (dict(support=torch.zeros(1, 5, 8, 3)), "support must be"),
    (dict(radius=-1), "radius"),
    (dict(coords=torch.zeros(1, 2, 5, 2, dtype=torch.long)), "floating-point"),
])
def test_bad_arguments_raise(bad, msg):
    args = dict(fmap=torch.zeros(1, 2, 3, 4, 4), coords=torch.zeros(1, 2, 5, 2), support=torch.zeros(1, 5, 9, 3),
                radius=1)
    args.update(bad)
    with pytest.raises(ValueError, match=msg):
        corr4d(args["fmap"], args["coords"], args["support"], args["radius"])


def test_bad_backend_name():
    fmap, coords, support = _inputs(1, 1, 2, 3, 3, 2, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        corr4d(fmap, coords, support, 1, backend="cuda")


# --------------------------------------------------------------------------------------------- Triton kernels
TRITON_SHAPES = [  # B, T, C, H, W, N, r -- small: every program runs in the Python interpreter
    (1, 2, 40, 5, 9, 4, 1),   # C spans two channel blocks with a ragged tail
    (2, 2, 6, 7, 4, 3, 2),    # non-square, batch 2, K=25 padded to 32
    (1, 1, 8, 4, 5, 3, 3),    # CoTracker radius (K=49 padded to 64), map smaller than the window
]


@needs_triton
@needs_interp
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_matches_reference_forward_and_backward(shape):
    r = shape[-1]
    fmap, coords, support = _inputs(*shape, dtype=torch.float32, grad=True, seed=11)
    with torch.no_grad():
        coords[0, 0, 0] = torch.tensor([-50.3, 1e7])  # far outside: clamped taps, zero coordinate gradient
    out_t = corr4d(fmap, coords, support, r, backend="triton")
    out_r = corr4d(fmap, coords, support, r, backend="torch")
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    go = torch.randn_like(out_r)
    g_t = torch.autograd.grad(out_t, (fmap, coords, support), go)
    g_r = torch.autograd.grad(out_r, (fmap, coords, support), go)
    for name, a, b in zip(("fmap", "coords", "support"), g_t, g_r):
        scale = b.abs().max().clamp_min(1.0)
        assert (a - b).abs().max() / scale < 2e-5, name
    assert g_t[1][0, 0, 0].abs().max() == 0


@needs_triton
@needs_interp
def test_triton_partial_gradients_and_noncontiguous_inputs():
    fmap, coords, support = _inputs(1, 3, 5, 6, 6, 3, 1, dtype=torch.float32, seed=12)
    fmap_nc = fmap.transpose(3, 4).contiguous().transpose(3, 4).requires_grad_(True)  # W-major strides
    sup = support.requires_grad_(True)
    c_nc = coords.transpose(1, 2).contiguous().transpose(1, 2)  # (B,T,N,2) with N-major strides
    out_t = corr4d(fmap_nc, c_nc, sup, 1, backend="triton")
    out_r = corr4d_reference(fmap, coords, support, 1)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    (g_s,) = torch.autograd.grad(out_t.sum(), (sup,))  # fmap gradient not requested
    (g_s_ref,) = torch.autograd.grad(corr4d_reference(fmap, coords, sup, 1).sum(), (sup,))
    torch.testing.assert_close(g_s, g_s_ref, rtol=1e-5, atol=1e-4)


@needs_triton
@needs_interp
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision_forward(dtype):
    fmap, coords, support = _inputs(1, 2, 32, 5, 6, 3, 1, dtype=torch.float32, seed=13)
    f, s = fmap.to(dtype), support.to(dtype)
    out_t = corr4d(f, coords, s, 1, backend="triton")
    assert out_t.dtype == dtype
    exp = corr4d_reference(f.float(), coords, s.float(), 1)  # same rounded inputs, fp32 math
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(out_t.float(), exp, rtol=tol, atol=tol * 4)
    out_r = corr4d(f, coords, s, 1, backend="torch")
    torch.testing.assert_close(out_t.float(), out_r.float(), rtol=tol, atol=tol * 4)


@needs_triton
def test_triton_rejects_float64():
    fmap, coords, support = _inputs(1, 1, 2, 3, 3, 2, 1)
    with pytest.raises(ValueError, match="float32, float16 and bfloat16"):
        corr4d(fmap, coords, support, 1, backend="triton")


def test_out_dtype_rounds_the_float32_result_once():
    """``out_dtype`` gives the float32 correlation rounded once to that dtype (a float32 map read by a bf16 model),
    and gradients flow back to float32 inputs."""
    fmap, coords, support = _inputs(1, 3, 16, 6, 7, 4, 2, dtype=torch.float32, seed=21, grad=True)
    full = corr4d(fmap, coords, support, 2)
    for dt in (torch.bfloat16, torch.float16):
        out = corr4d(fmap, coords, support, 2, out_dtype=dt)
        assert out.dtype == dt
        assert torch.equal(out, full.detach().to(dt))
    go = torch.randn_like(full).to(torch.bfloat16)
    g_full = torch.autograd.grad(full, (fmap, coords, support), go.float())
    g_bf = torch.autograd.grad(corr4d(fmap, coords, support, 2, out_dtype=torch.bfloat16), (fmap, coords, support),
                               go)
    for a, b in zip(g_bf, g_full):  # the backward pass runs in float32 either way
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out_dtype must be a floating-point dtype"):
        corr4d(fmap, coords, support, 2, out_dtype=torch.int32)


@needs_triton
@needs_interp
def test_triton_out_dtype_matches_reference():
    fmap, coords, support = _inputs(1, 2, 8, 5, 6, 3, 1, dtype=torch.float32, seed=22, grad=True)
    out_t = corr4d(fmap, coords, support, 1, backend="triton", out_dtype=torch.bfloat16)
    out_r = corr4d(fmap, coords, support, 1, backend="torch", out_dtype=torch.bfloat16)
    assert out_t.dtype == out_r.dtype == torch.bfloat16
    torch.testing.assert_close(out_t.float(), out_r.float(), rtol=1e-2, atol=1e-2)
    go = torch.randn_like(out_r)
    g_t = torch.autograd.grad(out_t, (fmap, support), go)
    g_r = torch.autograd.grad(out_r, (fmap, support), go)
    for a, b in zip(g_t, g_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_read_dtype_is_what_the_path_computes_in():
    from trackers.ops import corr4d_read_dtype

    for dt, want in ((torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)):
        assert corr4d_read_dtype(torch.zeros(1, 1, 2, 3, 3, dtype=dt), backend="torch") == want
    if HAVE_TRITON and INTERP:
        assert corr4d_read_dtype(torch.zeros(1, 1, 2, 3, 3, dtype=torch.bfloat16), backend="triton") == torch.bfloat16
