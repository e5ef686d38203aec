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
