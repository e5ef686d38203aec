"""What the shipped weights can do (a test of the trained models, not of the pipeline): a textured square sliding
over a smooth background is followed within 2 px on average (and within 3 px on every frame) by the small point
tracker and with IoU > 0.7 by the small box tracker, over the whole clip."""
from __future__ import annotations

import numpy as np
import pytest
from _helpers import moving_square_video

import trackers
from trackers.zoo import DEFAULT_BOX_MODEL, DEFAULT_POINT_MODEL

# A 40 px square moving right by 3 px per frame from x = 4 to x = 73 for 24 frames, always fully inside the frame:
# at the point model's own resolution (256x256, so no resizing blurs the per-pixel texture) for the point tracker,
# in a 128x128 frame for the box tracker.
T, DX, SIZE = 24, 3.0, 40
H, W = trackers.registry.get_entry(DEFAULT_POINT_MODEL).config["model_resolution"]
BOX_FRAME = 128


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return moving_square_video(T=T, H=H, W=W, dx=DX, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def box_clip() -> np.ndarray:
    return moving_square_video(T=T, H=BOX_FRAME, W=BOX_FRAME, dx=DX, size=SIZE, seed=0)


def test_clip_is_at_the_point_model_resolution():
    tracker = trackers.PointTracker.from_pretrained(DEFAULT_POINT_MODEL)
    assert (H, W) == (256, 256) and tuple(tracker.config.model_resolution) == (H, W)


def _truth_shift(t: int) -> float:
    # the helper rounds the square's position to whole pixels
    return float(int(round(4 + DX * t)) - 4)


def test_small_point_tracker_follows_the_square_within_2px(clip):
    tracker = trackers.PointTracker.from_pretrained(DEFAULT_POINT_MODEL)
    # a 3x3 grid of points inside the square (away from its edges, where the background shows through the window)
    rel = np.array([0.25, 0.5, 0.75])
    qx, qy = np.meshgrid(4 + rel * SIZE, (H - SIZE) // 2 + rel * SIZE)
    queries = np.stack([np.zeros(qx.size), qx.ravel(), qy.ravel()], 1).astype(np.float32)
    result = tracker.track(clip, queries=queries).numpy()
    truth = queries[None, :, 1:] + np.array([[[_truth_shift(t), 0.0]] for t in range(T)])
    err = np.linalg.norm(result.tracks - truth, axis=-1)  # (T, N) pixels
    per_frame = err.mean(1)
    # within 2 px over the clip, and no frame far off (a drifting track fails the second check)
    assert per_frame.mean() < 2.0, f"mean error {per_frame.mean():.2f} px (per frame: {np.round(per_frame, 1)})"
    assert per_frame.max() < 3.0, f"worst frame {per_frame.max():.2f} px (per frame: {np.round(per_frame, 1)})"


def test_small_box_tracker_keeps_iou_above_0_7(box_clip):
    tracker = trackers.BoxTracker.from_pretrained(DEFAULT_BOX_MODEL)
    Y0 = (BOX_FRAME - SIZE) // 2
    first = (4.0, float(Y0), 4.0 + SIZE, float(Y0 + SIZE))
    result = tracker.track(box_clip, init_box=first)
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
