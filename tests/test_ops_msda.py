"""trackers.ops.ms_deform_attn: golden data (Deformable-DETR reference), gradients, Triton parity (interpreter)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trackers.ops import ms_deform_attn, ms_deform_attn_reference

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
needs_interp = pytest.mark.skipif(not INTERP, reason="Triton kernels on CPU need TRITON_INTERPRET=1 (see conftest)")
try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:  # pragma: no cover
    HAVE_TRITON = False
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not importable")

CASES = ["case1_single_level_small", "case2_four_levels_nonsquare", "case3_points_outside", "case4_detrack_4d_refbox"]


@pytest.fixture(scope="module")
def golden(golden_dir):
    path = golden_dir / "deformable_attn" / "golden_msda.npz"
    data = np.load(path)
    return {k: torch.from_numpy(data[k]) for k in data.files if "/" in k}


def _case(golden, name, dtype=torch.float64, grad=True):
    g = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith(name + "/")}
    value, loc, attn = (g[k].to(dtype).clone().requires_grad_(grad) for k in
                        ("value", "sampling_locations", "attention_weights"))
    return g, (value, g["spatial_shapes"], g["level_start_index"], loc, attn)


@pytest.mark.parametrize("name", CASES)
def test_golden_reference_fp64(golden, name):
    g, args = _case(golden, name)
    out = ms_deform_attn(*args, backend="torch")
    grads = torch.autograd.grad(out, (args[0], args[3], args[4]), g["grad_output"])
    torch.testing.assert_close(out, g["output"], rtol=0, atol=1e-5)
    for got, key in zip(grads, ("grad_value", "grad_sampling_locations", "grad_attention_weights")):
        torch.testing.assert_close(got, g[key], rtol=0, atol=1e-5, msg=lambda m, k=key: f"{name} {k}: {m}")
    # much tighter than required: same maths in the same precision
    assert (out - g["output"]).abs().max() < 1e-12


def test_golden_case4_locations_from_reference_boxes(golden):
    """DETRack's 4-d reference boxes: loc = ref_xy + offset / P * ref_wh * 0.5."""
    g, _ = _case(golden, "case4_detrack_4d_refbox", grad=False)
    ref, off = g["reference_boxes"], g["sampling_offsets"]
    P = off.shape[-2]
    loc = ref[:, :, None, :, None, :2] + off / P * ref[:, :, None, :, None, 2:] * 0.5
    torch.testing.assert_close(loc, g["sampling_locations"], rtol=0, atol=1e-14)


@needs_triton
@needs_interp
@pytest.mark.parametrize("name", CASES)
def test_golden_triton_fp32(golden, name):
    g, args = _case(golden, name, dtype=torch.float32)
    out = ms_deform_attn(*args, backend="triton")
    grads = torch.autograd.grad(out, (args[0], args[3], args[4]), g["grad_output"].float())
    # fp32 against the fp64 golden: the golden's own fp32 run differs by <= 8.6e-7
    torch.testing.assert_close(out.double(), g["output"], rtol=0, atol=5e-6)
    for got, key in zip(grads, ("grad_value", "grad_sampling_locations", "grad_attention_weights")):
        exp = g[key]
        err = (got.double() - exp).abs().max() / exp.abs().max().clamp_min(1.0)
        assert err < 1e-5, f"{name} {key}: relative error {err:.2e}"


def _random(N=2, Lq=5, M=2, C=8, shapes=((6, 9), (3, 5), (2, 1)), P=3, lo=-0.3, hi=1.3, dtype=torch.float64,
            seed=0):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long)
    hw = ss[:, 0] * ss[:, 1]
    starts = torch.cumsum(hw, 0) - hw
    L = len(shapes)
    value = torch.randn(N, int(hw.sum()), M, C, generator=g, dtype=dtype)
    loc = lo + (hi - lo) * torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype)
    attn = torch.softmax(torch.randn(N, Lq, M, L * P, generator=g, dtype=dtype), -1).view(N, Lq, M, L, P)
    return value, ss, starts, loc, attn


def test_reference_gradcheck_fp64():
    value, ss, starts, loc, attn = _random(N=1, Lq=3, M=2, C=3, shapes=((4, 5), (2, 3)), P=2, seed=1)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn_reference(v, ss, starts, l, a),
                                    (value, loc, attn), fast_mode=True)


def test_reference_matches_loop_restatement():
    """Independent scalar re-statement of the semantics (corner-wise zero padding, align_corners=False)."""
    value, ss, starts, loc, attn = _random(N=1, Lq=2, M=2, C=3, shapes=((3, 4), (2, 2)), P=2, seed=2)
    out = ms_deform_attn_reference(value, ss, starts, loc, attn)
    exp = torch.zeros_like(out)
    for q in range(2):
        for m in range(2):
            acc = torch.zeros(3, dtype=torch.float64)
            for lvl, ((H, W), s0) in enumerate(zip(ss.tolist(), starts.tolist())):
                for p in range(2):
                    x, y = loc[0, q, m, lvl, p].tolist()
                    w, h = x * W - 0.5, y * H - 0.5
                    w0, h0 = int(np.floor(w)), int(np.floor(h))
                    for hh, ww in ((h0, w0), (h0, w0 + 1), (h0 + 1, w0), (h0 + 1, w0 + 1)):
                        if 0 <= hh < H and 0 <= ww < W:
                            wt = (1 - abs(h - hh)) * (1 - abs(w - ww))
                            acc += attn[0, q, m, lvl, p] * wt * value[0, s0 + hh * W + ww, m]
            exp[0, q, m * 3:(m + 1) * 3] = acc
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad, msg", [
    (dict(value=torch.zeros(1, 20, 2)), "value must be"),
    (dict(spatial_shapes=torch.tensor([[4, 4], [3, 2]])), "value has S=20"),
    (dict(level_start_index=torch.tensor([0, 3])), "level_start_index"),
    (dict(sampling_locations=torch.zeros(1, 3, 2, 2, 2, 3)), "sampling_locations must be"),
    (dict(attention_weights=torch.zeros(1, 3, 2, 2, 3)), "attention_weights must be"),
    (dict(spatial_shapes=torch.tensor([[4.0, 4.0], [2.0, 2.0]])), "integer"),
])
def test_bad_arguments_raise(bad, msg):
    args = dict(value=torch.zeros(1, 20, 2, 4), spatial_shapes=torch.tensor([[4, 4], [2, 2]]),
                level_start_index=torch.tensor([0, 16]), sampling_locations=torch.zeros(1, 3, 2, 2, 2, 2),
                attention_weights=torch.zeros(1, 3, 2, 2, 2))
    args.update(bad)
    with pytest.raises(ValueError, match=msg):
        ms_deform_attn(**args)


@needs_triton
@needs_interp
@pytest.mark.parametrize("kw", [
    dict(),                                                        # 3 non-square levels, 1-px-wide level
    dict(N=1, Lq=70, M=1, C=20, shapes=((5, 3),), P=2, lo=-1.0, hi=2.0),  # two query blocks, ragged C, far outside
])
def test_triton_matches_reference(kw):
    value, ss, starts, loc, attn = _random(dtype=torch.float32, seed=3, **kw)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    out_t = ms_deform_attn(value, ss, starts, loc, attn, backend="triton")
    out_r = ms_deform_attn(value, ss, starts, loc, attn, backend="torch")
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-6)
    go = torch.randn_like(out_r)
    g_t = torch.autograd.grad(out_t, (value, loc, attn), go)
    g_r = torch.autograd.grad(out_r, (value, loc, attn), go)
    for name, a, b in zip(("value", "locations", "weights"), g_t, g_r):
        assert (a - b).abs().max() / b.abs().max().clamp_min(1.0) < 1e-5, name


@needs_triton
@needs_interp
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(dtype):
    value, ss, starts, loc, attn = _random(N=1, Lq=4, M=2, C=16, dtype=torch.float32, seed=4)
    v = value.to(dtype).requires_grad_(True)
    out_t = ms_deform_attn(v, ss, starts, loc, attn, backend="triton")
    assert out_t.dtype == dtype
    exp = ms_deform_attn_reference(v.detach().float(), ss, starts, loc, attn)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out_t.float(), exp, rtol=tol, atol=tol)
    (gv,) = torch.autograd.grad(out_t.float().sum(), (v,))
    assert gv.dtype == dtype
    vf = v.detach().float().requires_grad_(True)
    (gv_ref,) = torch.autograd.grad(ms_deform_attn_reference(vf, ss, starts, loc, attn).sum(), (vf,))
    torch.testing.assert_close(gv.float(), gv_ref, rtol=tol, atol=tol)
