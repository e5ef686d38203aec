"""trackers.train.eval.baselines: Lucas-Kanade points and CSRT boxes on a synthetic clip with known motion."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from trackers.results import BoxTracks, PointTracks
from trackers.train.eval import metrics as M
from trackers.train.eval.baselines import CSRTTracker, LucasKanadeTracker

import cv2  # noqa: E402,F401 - the test extra installs OpenCV; without it these tests must fail, not skip

T, H, W, SIZE = 12, 96, 128, 32
X0, Y0, SPEED = 20, 30, 2  # the square's top-left corner at frame 0 and its speed (px/frame, to the right)


def _clip(seed: int = 0) -> np.ndarray:
    """A random-noise textured square translating SPEED px/frame over a smooth background, (T, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    background = 100 + 40 * np.sin(xx / 17.0) + 40 * np.cos(yy / 23.0)
    texture = rng.uniform(0, 255, (SIZE, SIZE))
    frames = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        f = background.copy()
        x = X0 + SPEED * t
        f[Y0:Y0 + SIZE, x:x + SIZE] = texture
        frames[t] = np.clip(f, 0, 255).astype(np.uint8)[..., None]
    return frames


def _truth(queries: np.ndarray) -> np.ndarray:
    """Where points on the square are at every frame: (T, N, 2)."""
    dt = np.arange(T)[:, None] - queries[None, :, 0]
    return np.stack([queries[None, :, 1] + SPEED * dt, np.broadcast_to(queries[None, :, 2], dt.shape)], axis=-1)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(1)
    return inter / ((a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter)


# ------------------------------------------------------------------------------------------------ Lucas-Kanade
def test_lk_tracks_square_forward_and_backward():
    frames = _clip()
    # points well inside the square, queried at the first, a middle and the last frame
    queries = np.array([[0, X0 + 10, Y0 + 10], [0, X0 + 20, Y0 + 14], [5, X0 + 10 + 5 * SPEED, Y0 + 20],
                        [T - 1, X0 + 16 + (T - 1) * SPEED, Y0 + 16]], float)
    res = LucasKanadeTracker().track(frames, queries)
    assert isinstance(res, PointTracks)
    assert res.tracks.shape == (T, 4, 2) and res.visible.shape == (T, 4) and res.image_size == (H, W)
    truth = _truth(queries)
    assert np.abs(res.tracks.numpy() - truth).max() < 1.0
    assert bool(res.visible.all())
    np.testing.assert_array_equal(res.tracks.numpy()[queries[:, 0].astype(int), np.arange(4)], queries[:, 1:])
    # scored with the TAP-Vid metrics ('strided': every frame but the query frame), everything is within 1 px
    r = M.tapvid_metrics(res.tracks, res.visible, truth, np.ones((T, 4), bool), queries, query_mode="strided")
    assert r["pts_within_1"] == 1.0 and r["average_jaccard"] == 1.0


def test_lk_input_layouts_agree_and_grid():
    frames = _clip()
    tracker = LucasKanadeTracker()
    q = [[0, X0 + 12.0, Y0 + 12.0]]
    a = tracker.track(frames, q)
    b = tracker.track(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), torch.tensor(q))
    np.testing.assert_allclose(a.tracks.numpy(), b.tracks.numpy(), atol=1e-4)
    grid = tracker.track(frames, grid_size=3, grid_query_frame=4)
    assert grid.tracks.shape == (T, 9, 2)
    assert bool((grid.queries[:, 0] == 4).all())
    np.testing.assert_allclose(grid.tracks.numpy()[4], grid.queries.numpy()[:, 1:])
    # a 3x3 grid spans [m, W - m] x [m, H - m] with m = W / 64, so its middle point is the frame centre
    np.testing.assert_allclose(grid.queries.numpy()[[0, 4, 8], 1:], [[2, 2], [W / 2, H / 2], [W - 2, H - 2]])


def test_lk_loses_occluded_point():
    frames = _clip()
    rng = np.random.default_rng(5)
    # from frame 6 a patch of fresh noise (new in every frame) covers the tracked point
    frames[6:, 25:60, 30:70] = rng.uniform(0, 255, (T - 6, 35, 40, 1)).astype(np.uint8)
    res = LucasKanadeTracker(fb_threshold=1.0).track(frames, [[0, 40, 45]])
    vis = res.visible.numpy()[:, 0]
    assert vis[:6].all() and not vis[6:].any()
    assert np.abs(res.tracks.numpy()[5, 0] - [40 + 5 * SPEED, 45]).max() < 1.0
    np.testing.assert_array_equal(res.tracks.numpy()[6:, 0], np.repeat(res.tracks.numpy()[5:6, 0], T - 6, 0))
    np.testing.assert_array_equal(res.visibility.numpy(), res.visible.numpy().astype(np.float32))


def test_lk_bad_requests():
    frames = _clip()[:3]
    lk = LucasKanadeTracker()
    with pytest.raises(ValueError, match="either queries or grid_size"):
        lk.track(frames, [[0, 1, 1]], grid_size=2)
    with pytest.raises(ValueError, match="nothing to track"):
        lk.track(frames)
    with pytest.raises(ValueError, match="frames must be integers"):
        lk.track(frames, [[3, 1, 1]])
    with pytest.raises(ValueError, match="outside"):
        lk.track(frames, [[0, W + 5, 1]])
    with pytest.raises(ValueError, match="fb_threshold"):
        LucasKanadeTracker(fb_threshold=0)
    with pytest.raises(ValueError, match="0, 1"):
        lk.track(frames.astype(np.float32) / 255.0, [[0, 1, 1]])  # [0, 1] floats are refused by as_video


# ------------------------------------------------------------------------------------------------ CSRT
def test_csrt_tracks_square():
    frames = _clip()
    init = np.array([X0, Y0, X0 + SIZE, Y0 + SIZE], float)
    res = CSRTTracker().track(frames, init)
    assert isinstance(res, BoxTracks) and res.boxes.shape == (T, 4) and res.image_size == (H, W)
    boxes = res.boxes.numpy()
    np.testing.assert_array_equal(boxes[0], init)
    truth = np.array([[X0 + SPEED * t, Y0, X0 + SPEED * t + SIZE, Y0 + SIZE] for t in range(T)], float)
    assert _box_iou(boxes, truth).min() > 0.8
    np.testing.assert_array_equal(res.scores.numpy(), np.ones(T))
    assert M.got10k_metrics(boxes, truth, image_size=(H, W)).sr50 == 1.0


def test_csrt_failure_keeps_last_box(monkeypatch):
    """CSRT reporting failure: the previous box is kept and the score is 0."""
    from trackers.train.eval import baselines

    class FakeTracker:
        def __init__(self):
            self.calls = 0

        def init(self, frame, rect):
            assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
            self.rect = rect

        def update(self, frame):
            self.calls += 1
            x, y, w, h = self.rect
            return (self.calls != 2), (x + self.calls, y, w, h)

    fake = types.SimpleNamespace(TrackerCSRT_create=FakeTracker)
    monkeypatch.setattr(baselines, "_import_cv2", lambda need_contrib=False: fake)
    res = CSRTTracker().track(_clip()[:4], [10.4, 20, 30, 40])
    np.testing.assert_array_equal(res.scores.numpy(), [1, 1, 0, 1])
    np.testing.assert_array_equal(res.boxes.numpy()[1], [11, 20, 31, 40])   # init rect rounded to (10, 20, 20, 20)
    np.testing.assert_array_equal(res.boxes.numpy()[2], res.boxes.numpy()[1])
    np.testing.assert_array_equal(res.boxes.numpy()[3], [13, 20, 33, 40])


def test_csrt_bad_box_and_params():
    frames = _clip()[:2]
    with pytest.raises(ValueError, match="empty"):
        CSRTTracker().track(frames, [10, 10, 10.2, 30])
    with pytest.raises(ValueError, match="outside"):
        CSRTTracker().track(frames, [W + 1, 0, W + 20, 20])
    with pytest.raises(ValueError, match="unknown CSRT parameter"):
        CSRTTracker({"not_a_param": 1}).track(frames, [10, 10, 40, 40])


def test_missing_opencv_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "trackers\[baselines\]"'):
        LucasKanadeTracker().track(_clip()[:2], [[0, 1, 1]])
    with pytest.raises(ImportError, match="trackers\\[baselines\\]"):
        CSRTTracker().track(_clip()[:2], [10, 10, 40, 40])
