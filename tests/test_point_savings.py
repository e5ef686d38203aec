"""Work PointTracker leaves out because its result would not be used (tiny random-weight models; fast)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import TINY_COTRACKER as TINY

from trackers import PointTracker


def _video(T=10, H=24, W=40):
    base = np.random.default_rng(0).integers(0, 255, size=(H + T, W + 2 * T, 3)).astype(np.uint8)
    return np.stack([base[t:t + H, 2 * t:2 * t + W] for t in range(T)])


@pytest.mark.parametrize("online", [False, True])
def test_backward_pass_skipped_when_every_point_starts_at_frame_0(online, monkeypatch):
    tracker = PointTracker.from_config(dict(TINY, online=online, window_len=8 if online else 12), seed=0,
                                       settings=dict(iters=2, support_grid_size=2))
    calls = []
    if online:  # one _track_online call per pass
        original = PointTracker._track_online

        def counted(self, *args, **kwargs):
            calls.append(1)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(PointTracker, "_track_online", counted)
    else:  # one network call per pass
        tracker.model.register_forward_pre_hook(lambda *_: calls.append(1))
    video = _video()
    q0 = [[0, 5.0, 6.0], [0, 30.0, 12.0]]
    plain = tracker.track(video, q0)
    n_plain = len(calls)
    both = tracker.track(video, q0, backward=True)
    assert len(calls) - n_plain == n_plain  # no second (time-reversed) network pass
    for a, b in zip((plain.tracks, plain.visibility, plain.confidence, plain.visible),
                    (both.tracks, both.visibility, both.confidence, both.visible)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    # a grid on frame 0 likewise; one point later in the clip brings the backward pass back
    tracker.track(video, grid_size=2, backward=True)
    before = len(calls)
    tracker.track(video, [[0, 5.0, 6.0], [4, 30.0, 12.0]], backward=True)
    assert len(calls) - before == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("online", [False, True])
def test_pyramid_pooled_once_per_window_changes_nothing(online, dtype, monkeypatch):
    """Refinement pools the correlation pyramid once per window (float32 levels on CPU) instead of on every update:
    tracks, visibility and confidence are bit-identical to pooling per update, in float32 and in bfloat16, and
    on the training path gradients flow through the shared levels the same way."""
    from trackers.models import cotracker3 as ct3

    tracker = PointTracker.from_config(dict(TINY, online=online, window_len=8 if online else 12), seed=0,
                                       settings=dict(iters=3, support_grid_size=2)).to(dtype=dtype)
    pools = []
    original = ct3.CoTracker3.pyramid

    def counted(self, fmap, dtype=None):
        pools.append(fmap.shape[1])
        return original(self, fmap, dtype)

    monkeypatch.setattr(ct3.CoTracker3, "pyramid", counted)
    video, q = _video(T=12), [[0, 5.0, 6.0], [3, 30.0, 12.0], [7, 20.0, 9.0]]
    cached = tracker.track(video, q)
    n_cached = len(pools)
    monkeypatch.setattr(ct3, "_PYRAMID_CACHE_BYTES", 0)  # every update pools its own frames again
    pools.clear()
    fresh = tracker.track(video, q)
    assert len(pools) > n_cached  # the cache really was bypassed ...
    for a, b in zip((cached.tracks, cached.visibility, cached.confidence),
                    (fresh.tracks, fresh.visibility, fresh.confidence)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))  # ... and made no difference

    if dtype == torch.float32 and not online:  # training: the same gradients either way
        model = ct3.CoTracker3(ct3.CoTrackerConfig(**TINY))
        clip = torch.rand(1, 6, 3, 32, 48) * 255
        queries = torch.tensor([[[0.0, 10.0, 12.0], [2.0, 30.0, 20.0]]])
        grads = []
        for budget in (ct3._PYRAMID_CACHE_BYTES, 2 ** 30):
            monkeypatch.setattr(ct3, "_PYRAMID_CACHE_BYTES", budget)
            model.zero_grad()
            tracks, vis, conf = model(clip, queries, iters=2)
            (tracks.square().mean() + vis.sum() + conf.sum()).backward()
            grads.append(model.fnet.conv1.weight.grad.clone())
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
        assert grads[0].abs().sum() > 0


def test_window_pyramid_respects_its_memory_budget(monkeypatch):
    from trackers.models import cotracker3 as ct3

    model = ct3.CoTracker3(ct3.CoTrackerConfig(**TINY)).to(torch.bfloat16)
    fmap = torch.randn(1, 4, 16, 8, 12).to(torch.bfloat16)
    levels = model.window_pyramid(fmap)
    # float32 on CPU (what the CPU correlation computes in), same values as the bf16 pyramid, channels-last
    assert [lv.dtype for lv in levels] == [torch.float32] * model.config.corr_levels
    for lv, ref in zip(levels, model.pyramid(fmap)):
        assert torch.equal(lv, ref.float())
        assert lv.permute(0, 1, 3, 4, 2).is_contiguous()
    need = sum(lv.numel() * 4 for lv in levels)
    monkeypatch.setattr(ct3, "_PYRAMID_CACHE_BYTES", need)
    assert model.window_pyramid(fmap) is not None
    monkeypatch.setattr(ct3, "_PYRAMID_CACHE_BYTES", need - 1)
    assert model.window_pyramid(fmap) is None
