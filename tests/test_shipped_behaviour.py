"""What the shipped weights can do (a test of the trained models, not of the pipeline): a textured square sliding
over a smooth background is followed within 2 px by the small point tracker and with IoU > 0.7 by the small box
tracker, over the whole clip."""
from __future__ import annotations

import numpy as np
import pytest
from _helpers import moving_square_video

import trackers
from trackers.zoo import DEFAULT_BOX_MODEL, DEFAULT_POINT_MODEL

# 24 frames of 128x128 (the point model's own resolution, so no resizing blurs the texture); a 40 px square
# moving right by 3 px per frame from x = 4 to x = 73, always fully inside the frame.
T, H, W, DX, SIZE = 24, 128, 128, 3.0, 40
Y0 = (H - SIZE) // 2


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return moving_square_video(T=T, H=H, W=W, dx=DX, size=SIZE, seed=0)


def _truth_shift(t: int) -> float:
    # the helper rounds the square's position to whole pixels
    return float(int(round(4 + DX * t)) - 4)


def test_small_point_tracker_follows_the_square_within_2px(clip):
    tracker = trackers.PointTracker.from_pretrained(DEFAULT_POINT_MODEL)
    # a 3x3 grid of points inside the square (away from its edges, where the background shows through the window)
    rel = np.array([0.25, 0.5, 0.75])
    qx, qy = np.meshgrid(4 + rel * SIZE, Y0 + rel * SIZE)
    queries = np.stack([np.zeros(qx.size), qx.ravel(), qy.ravel()], 1).astype(np.float32)
    result = tracker.track(clip, queries=queries).numpy()
    truth = queries[None, :, 1:] + np.array([[[_truth_shift(t), 0.0]] for t in range(T)])
    err = np.linalg.norm(result.tracks - truth, axis=-1)  # (T, N) pixels
    per_frame = err.mean(1)
    assert per_frame.mean() < 2.0, f"mean error {per_frame.mean():.2f} px (per frame: {np.round(per_frame, 1)})"
    assert per_frame[-1] < 2.0, f"error on the last frame {per_frame[-1]:.2f} px"


def test_small_box_tracker_keeps_iou_above_0_7(clip):
    tracker = trackers.BoxTracker.from_pretrained(DEFAULT_BOX_MODEL)
    first = (4.0, float(Y0), 4.0 + SIZE, float(Y0 + SIZE))
    result = tracker.track(clip, init_box=first)
    pred = np.asarray(result.boxes, dtype=np.float64)
    truth = np.array([[4 + _truth_shift(t), Y0, 4 + _truth_shift(t) + SIZE, Y0 + SIZE] for t in range(T)], float)
    iw = np.clip(np.minimum(pred[:, 2], truth[:, 2]) - np.maximum(pred[:, 0], truth[:, 0]), 0, None)
    ih = np.clip(np.minimum(pred[:, 3], truth[:, 3]) - np.maximum(pred[:, 1], truth[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(pred) + area(truth) - inter)
    tracked = iou[1:]  # frame 0 is the given box
    assert tracked.mean() > 0.7, f"mean IoU {tracked.mean():.3f} (per frame: {np.round(tracked, 2)})"
    assert tracked[-1] > 0.7, f"IoU on the last frame {tracked[-1]:.3f}"
