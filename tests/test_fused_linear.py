"""The oneDNN linear path (``trackers.ops.linear``): same outputs as the plain path, packing follows the weights
(moves, casts, in-place updates), training never takes it, and the models give the same results on both paths.

The golden CoTracker3 tests run on the default route (oneDNN on this CPU) in ``test_point_tracker_golden.py``; the
cheapest of them is repeated here on the plain path (and on forced oneDNN), so CI checks both paths against the
official outputs.
"""
from __future__ import annotations

import copy
import gc
import importlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import TINY_COTRACKER
from torch import nn

import trackers.ops as ops
from trackers.models.cotracker3 import CoTracker3, CoTrackerConfig
from trackers.nn.vit import Block

ONEDNN, WHY = ops.onednn_status()
# the submodule (``trackers.ops.linear`` the attribute is the function of the same name)
linear_mod = importlib.import_module("trackers.ops.linear")
needs_onednn = pytest.mark.skipif(not ONEDNN, reason=f"oneDNN unusable in this torch build: {WHY}")
# oneDNN refuses bf16 linears on AVX2-only CPUs: bf16 then runs plain on every backend (asserted below either way)
BF16_ONEDNN = ONEDNN and ops.bf16_packable()
# bf16 outputs: both paths accumulate in fp32 and round once, but in different orders -> a few bf16 ulps
BF16_TOL = dict(atol=3e-2, rtol=2e-2)


def _plain_reference(x, lin, activation):
    y = F.linear(x, lin.weight, lin.bias)
    return {"none": y, "relu": F.relu(y), "gelu": F.gelu(y), "gelu_tanh": F.gelu(y, approximate="tanh")}[activation]


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_plain_fp32(activation, bias):
    lin = nn.Linear(48, 80, bias=bias)
    x = torch.randn(3, 37, 48)
    with torch.no_grad():
        assert ops.linear_route(x, lin.weight, lin.bias) == "onednn"
        got = ops.linear_module(lin, x, activation)
        plain = ops.linear_module(lin, x, activation, backend="plain")
    torch.testing.assert_close(got, _plain_reference(x, lin, activation), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, _plain_reference(x, lin, activation), atol=0, rtol=0)
    assert ops.packed_count(lin) == 1


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "gelu", "gelu_tanh"])
def test_linear_matches_plain_bf16(activation):
    lin = nn.Linear(64, 96).to(torch.bfloat16)
    x = torch.randn(200, 64).to(torch.bfloat16)
    with torch.no_grad(), ops.use_linear_backend("onednn"):
        assert ops.linear_route(x, lin.weight, lin.bias) == ("onednn" if BF16_ONEDNN else "plain")
        got = ops.linear_module(lin, x, activation)
    assert got.dtype == torch.bfloat16
    assert ops.packed_count(lin) == int(BF16_ONEDNN)
    assert ops.linear_info()["linear_route_cpu_bfloat16"].startswith("plain") != BF16_ONEDNN
    ref = _plain_reference(x.float(), copy.deepcopy(lin).float(), activation)
    torch.testing.assert_close(got.float(), ref, **BF16_TOL)
    with torch.no_grad():
        torch.testing.assert_close(got.float(), ops.linear_module(lin, x, activation, backend="plain").float(),
                                   **BF16_TOL)


@needs_onednn
def test_strided_and_empty_inputs():
    lin = nn.Linear(32, 64)
    with torch.no_grad():
        xt = torch.randn(7, 5, 32).transpose(0, 1)  # not contiguous
        torch.testing.assert_close(ops.linear_module(lin, xt, "gelu"), F.gelu(lin(xt)), atol=1e-5, rtol=1e-5)
        assert ops.linear_module(lin, torch.randn(0, 32)).shape == (0, 64)


def test_routes():
    lin = nn.Linear(32, 64)
    x = torch.randn(4, 32)
    with ops.use_linear_backend("plain"):
        assert ops.linear_route(x, lin.weight) == "plain"
    with torch.no_grad():
        # not an nn.Parameter (no cache key), float64, narrow output, explicit plain
        assert ops.linear_route(x, lin.weight.detach().clone()) == "plain"
        assert ops.linear_route(x.double(), lin.weight.double()) == "plain"
        assert ops.linear_route(x, nn.Parameter(torch.randn(2, 32))) == "plain"
        assert ops.linear_route(x, lin.weight, backend="plain") == "plain"
        if ONEDNN:
            assert ops.linear_route(x, lin.weight) == "onednn"
            assert ops.linear_route(x, nn.Parameter(torch.randn(2, 32)), backend="onednn") == "onednn"
    # autograd records: plain, whatever the switch says
    if ONEDNN:
        with ops.use_linear_backend("onednn"):
            assert ops.linear_route(x, lin.weight) == "plain"
            with torch.no_grad():
                assert ops.linear_route(x, lin.weight) == "onednn"


def test_switch_names_and_environment(monkeypatch):
    with pytest.raises(ValueError, match="nope"):
        with ops.use_linear_backend("nope"):
            pass
    with pytest.raises(ValueError, match="activation"):
        ops.linear(torch.randn(2, 4), nn.Parameter(torch.randn(3, 4)), activation="tanh")
    monkeypatch.setenv("TRACKERS_LINEAR_BACKEND", "plain")
    assert ops.default_linear_backend() == "plain"
    assert ops.info()["linear_default_backend"] == "plain"
    with ops.use_linear_backend("onednn"):
        assert ops.default_linear_backend() == "onednn"
        with ops.use_linear_backend("auto"):
            assert ops.default_linear_backend() == "auto"
    monkeypatch.setenv("TRACKERS_LINEAR_BACKEND", "fast")
    with pytest.raises(ValueError, match="TRACKERS_LINEAR_BACKEND"):
        ops.default_linear_backend()


@needs_onednn
def test_repack_after_cast_move_and_update():
    lin = nn.Linear(32, 64)
    x = torch.randn(10, 32)
    with torch.no_grad():
        ops.linear_module(lin, x)
        first = linear_mod._cache[lin.weight].packed
        ops.linear_module(lin, x)
        assert linear_mod._cache[lin.weight].packed is first  # packed once, reused
        lin.weight.mul_(-1.5)  # in place: version bump
        torch.testing.assert_close(ops.linear_module(lin, x), lin(x), atol=1e-5, rtol=1e-5)
        assert linear_mod._cache[lin.weight].packed is not first
        lin.load_state_dict({"weight": torch.randn(64, 32), "bias": torch.randn(64)})
        torch.testing.assert_close(ops.linear_module(lin, x), lin(x), atol=1e-5, rtol=1e-5)
        lin.to(torch.bfloat16)  # new storage and dtype
        xb = x.bfloat16()
        got = ops.linear_module(lin, xb)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), F.linear(xb.float(), lin.weight.float(), lin.bias.float()),
                                   **BF16_TOL)
        lin.float()  # back: the address may be reused by the allocator, the entry must still be re-made
        torch.testing.assert_close(ops.linear_module(lin, x), lin(x), atol=1e-5, rtol=1e-5)
        lin.weight.data = torch.randn(64, 32)  # swapped storage, same version count
        torch.testing.assert_close(ops.linear_module(lin, x), lin(x), atol=1e-5, rtol=1e-5)
    assert ops.packed_count(lin) == 1  # one entry per parameter, stale ones replaced
    assert ops.release_packed(lin) == 1 and ops.packed_count(lin) == 0


@needs_onednn
def test_packed_weights_stay_out_of_state_dict_and_copies():
    model = Block(32, 2, 64)
    keys = list(model.state_dict())
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = model(x)
    assert ops.packed_count(model) == 4  # qkv, proj, fc1, fc2
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)  # the packed oneDNN tensors cannot be deep-copied: they must not be attributes
    with torch.no_grad():
        torch.testing.assert_close(twin(x), y, atol=0, rtol=0)
    del model
    gc.collect()
    assert ops.packed_count(twin) == 4


@needs_onednn
def test_pack_failure_falls_back_to_plain(monkeypatch):
    def broken(weight):
        raise RuntimeError("no reorder today")

    monkeypatch.setattr(linear_mod, "_pack", broken)
    monkeypatch.setattr(linear_mod, "_warned", False)
    lin = nn.Linear(16, 32)
    x = torch.randn(3, 16)
    with torch.no_grad(), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.testing.assert_close(ops.linear_module(lin, x, "gelu"), F.gelu(lin(x)), atol=0, rtol=0)
        ops.linear_module(lin, x)
    assert sum("no reorder today" in str(w.message) for w in seen) == 1
    assert ops.packed_count(lin) == 0


def test_hooked_or_wrapped_layers_run_as_modules():
    lin = nn.Linear(8, 16)
    calls = []
    lin.register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad():
        ops.linear_module(lin, torch.randn(2, 8), "relu")
        ops.linear_module(nn.Sequential(nn.Linear(8, 16)), torch.randn(2, 8), "gelu")
    assert calls == [1]


# ----------------------------------------------------------------------------------------------------- models
def _both_paths(fn):
    with torch.no_grad():
        with ops.use_linear_backend("plain"):
            plain = fn()
        with ops.use_linear_backend("onednn"):
            fused = fn()
    return plain, fused


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vit_block_same_on_both_paths(dtype):
    torch.manual_seed(1)
    block = Block(64, 4, 256, layerscale_init=1.0).to(dtype)
    x = torch.randn(2, 50, 64).to(dtype)
    plain, fused = _both_paths(lambda: block(x))
    assert ops.packed_count(block) == (4 if dtype == torch.float32 or BF16_ONEDNN else 0)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else BF16_TOL
    torch.testing.assert_close(fused.float(), plain.float(), **tol)


@needs_onednn
def test_training_gradients_equal_plain_path():
    torch.manual_seed(2)
    block = Block(32, 2, 64, layerscale_init=1.0)
    x = torch.randn(2, 9, 32, requires_grad=True)

    def grads(backend):
        block.zero_grad()
        x.grad = None
        with ops.use_linear_backend(backend):
            block(x).square().sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]

    ops.release_packed(block)
    g_plain, g_forced = grads("plain"), grads("onednn")
    assert ops.packed_count(block) == 0  # autograd recorded: the oneDNN path was never taken
    for a, b in zip(g_plain, g_forced):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def _tiny_cotracker(online: bool) -> CoTracker3:
    torch.manual_seed(3)
    return CoTracker3(CoTrackerConfig(**dict(TINY_COTRACKER, online=online))).eval()


def _tiny_inputs():
    gen = torch.Generator().manual_seed(4)
    video = torch.rand(1, 14, 3, 32, 48, generator=gen) * 255
    q = torch.stack([torch.tensor([0.0, 3.0, 7.0, 13.0]), torch.rand(4, generator=gen) * 47,
                     torch.rand(4, generator=gen) * 31], -1)[None]
    return video, q


@needs_onednn
@pytest.mark.parametrize("online", [False, True])
def test_tiny_cotracker_same_on_both_paths(online):
    """One update (random weights make later updates chaotic: a 1e-7 relative change of the transformer weights
    moves tracks after 3 updates by ~0.05 px, so only one update can test 1e-5-level agreement)."""
    model = _tiny_cotracker(online)
    video, q = _tiny_inputs()
    plain, fused = _both_paths(lambda: model(video, q, 1))
    assert ops.packed_count(model) > 0
    torch.testing.assert_close(fused[0], plain[0], atol=5e-5, rtol=1e-6)  # pixels up to ~50: a few fp32 ulps
    torch.testing.assert_close(fused[1], plain[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[2], plain[2], atol=1e-5, rtol=1e-5)
    # casting after packing: bf16 runs on freshly packed bf16 weights and agrees with the plain bf16 path
    model.to(torch.bfloat16)
    p16, f16 = _both_paths(lambda: model(video, q, 1))
    # (without bf16 oneDNN on this CPU the cast weights are never packed: only the stale fp32 entries remain)
    assert all((linear_mod._cache[m.weight].signature[3] == torch.bfloat16) == BF16_ONEDNN
               for m in model.modules() if isinstance(m, nn.Linear) and m.weight in linear_mod._cache)
    assert (f16[0] - p16[0]).abs().max() < 0.5 and (f16[1] - p16[1]).abs().max() < 0.05


@needs_onednn
def test_tiny_cotracker_training_step_equal_on_both_paths():
    model = _tiny_cotracker(False).train()
    video = torch.rand(1, 6, 3, 32, 48, generator=torch.Generator().manual_seed(5)) * 255
    q = torch.tensor([[[0.0, 10.0, 12.0], [2.0, 30.0, 20.0]]])

    def grads(backend):
        model.zero_grad()
        with ops.use_linear_backend(backend):
            tracks, vis, conf = model(video, q, 2)
            (tracks.square().mean() + vis.mean() + conf.mean()).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    g_plain, g_forced = grads("plain"), grads("onednn")
    assert len(g_plain) > 10
    for a, b in zip(g_plain, g_forced):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------------- goldens
@pytest.fixture(scope="module")
def golden_offline(golden_dir, tmp_path_factory):
    from golden_weights import synth_state_dict

    from trackers import PointTracker

    sd = synth_state_dict(golden_dir / "cotracker3" / "state_dict_offline.tsv", 0)
    path = tmp_path_factory.mktemp("fused_ckpt") / "scaled_offline.pth"
    torch.save(sd, path)
    return PointTracker.from_pretrained("cotracker3-offline", checkpoint=path)


@pytest.mark.parametrize("backend", ["plain", pytest.param("onednn", marks=needs_onednn)])
def test_golden_offline_raw_forward_on_each_path(golden_offline, golden_dir, backend):
    """The official offline outputs (tracks 1e-3 px, probabilities 1e-4) on the plain and the oneDNN path."""
    with np.load(golden_dir / "cotracker3" / "golden_offline_raw.npz") as d:
        video = torch.from_numpy(d["video"]).float()
        q = torch.from_numpy(d["queries"])
        want = {k: torch.from_numpy(d[k]) for k in ("tracks", "vis", "conf")}
    ops.release_packed(golden_offline.model)
    with torch.inference_mode(), ops.use_linear_backend(backend):
        tracks, vis, conf = golden_offline.model(video, q, 6)
    assert (ops.packed_count(golden_offline.model) > 0) == (backend == "onednn")
    assert (tracks - want["tracks"]).abs().max() <= 1e-3
    assert (vis - want["vis"]).abs().max() <= 1e-4
    assert (conf - want["conf"]).abs().max() <= 1e-4


@needs_onednn
def test_tracker_to_releases_packed_weights():
    from _helpers import random_video

    from trackers import PointTracker

    tracker = PointTracker.from_config(TINY_COTRACKER, seed=0, settings=dict(iters=1))
    video = random_video(T=6, H=32, W=48)
    queries = np.array([[0.0, 10.0, 12.0], [3.0, 30.0, 20.0]])
    tracker.track(video, queries)
    assert ops.packed_count(tracker.model) > 0
    tracker.to(dtype=torch.bfloat16)
    assert ops.packed_count(tracker.model) == 0  # stale layouts freed at once
    got = tracker.track(video, queries).tracks
    assert (ops.packed_count(tracker.model) > 0) == BF16_ONEDNN
    with ops.use_linear_backend("plain"):
        want = tracker.track(video, queries).tracks
    np.testing.assert_allclose(got, want, atol=0.5)
    tracker.to(dtype=torch.float32)  # back to fp32 (weights now bf16-rounded): re-packed, same as plain
    got = tracker.track(video, queries).tracks
    with ops.use_linear_backend("plain"):
        want = tracker.track(video, queries).tracks
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_lora_wrapped_layers_still_run():
    """Layers replaced by LoRA wrappers (not nn.Linear) take the module path in the ViT and CoTracker3 MLPs."""
    from trackers.models.cotracker3 import _Mlp
    from trackers.nn import inject_lora
    from trackers.nn.vit import Mlp

    for mlp in (Mlp(16, 32), _Mlp(16, 32, 16, "tanh")):
        x = torch.randn(3, 16)
        with torch.no_grad():
            want = mlp(x)
            inject_lora(mlp, rank=2, init="lora")  # zero B: same function
            torch.testing.assert_close(mlp(x), want, atol=1e-5, rtol=1e-5)
