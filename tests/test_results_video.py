"""Result objects (save/load, exports) and the single input normaliser."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from trackers.results import BoxTracks, PointTracks
from trackers.video import as_frame, as_video


def _points(batched: bool = False) -> PointTracks:
    g = torch.Generator().manual_seed(0)
    lead = (2,) if batched else ()
    vis = torch.rand(*lead, 5, 3, generator=g)
    conf = torch.rand(*lead, 5, 3, generator=g)
    return PointTracks(
        tracks=torch.rand(*lead, 5, 3, 2, generator=g) * 100,
        visibility=vis,
        confidence=conf,
        visible=vis * conf > 0.6,
        queries=torch.tensor([[0.0, 1, 2], [1, 3, 4], [4, 5, 6]]).expand(*lead, 3, 3).clone(),
        image_size=(48, 64),
    )


@pytest.mark.parametrize("batched", [False, True])
def test_point_tracks_save_load_round_trip(tmp_path, batched):
    r = _points(batched)
    r.save(tmp_path / "t.npz")
    back = PointTracks.load(tmp_path / "t.npz")
    assert back.image_size == (48, 64)
    for name in ("tracks", "visibility", "confidence", "visible", "queries"):
        assert torch.equal(getattr(back, name), getattr(r, name)), name
    assert back.num_frames == 5 and back.num_points == 3
    # Plain numpy can read the file too.
    with np.load(tmp_path / "t.npz") as data:
        np.testing.assert_array_equal(data["tracks"], r.tracks.numpy())


def test_point_tracks_numpy_to_and_thresholds():
    r = _points()
    n = r.numpy()
    assert isinstance(n.tracks, np.ndarray) and n.visible.dtype == np.bool_
    assert isinstance(r.to("cpu").tracks, torch.Tensor)
    assert torch.equal(r.visible_at(0.6, use_confidence=True), r.visible)
    assert torch.equal(r.visible_at(0.5), r.visibility > 0.5)
    with pytest.raises(ValueError, match="no confidence"):
        PointTracks(r.tracks, r.visibility, r.visible, r.queries).visible_at(0.5, use_confidence=True)


def test_point_tracks_exports(tmp_path):
    r = _points()
    r.to_csv(tmp_path / "t.csv")
    rows = list(csv.reader(open(tmp_path / "t.csv")))
    assert rows[0] == ["frame", "point", "x", "y", "visibility", "confidence", "visible"]
    assert len(rows) == 1 + 5 * 3
    assert float(rows[1 + 3 * 2 + 1][2]) == pytest.approx(float(r.tracks[2, 1, 0]), abs=1e-4)
    doc = json.loads(r.to_json(tmp_path / "t.json"))
    assert doc["kind"] == "point_tracks" and np.allclose(doc["tracks"], r.tracks.numpy())
    assert json.loads((tmp_path / "t.json").read_text()) == doc


def test_box_tracks_round_trip_and_exports(tmp_path):
    boxes = torch.tensor([[10.0, 20, 30, 60], [12, 21, 33, 62]])
    r = BoxTracks(boxes=boxes, scores=torch.tensor([1.0, 0.7]), image_size=(100, 200))
    r.save(tmp_path / "b.npz")
    back = BoxTracks.load(tmp_path / "b.npz")
    assert torch.equal(back.boxes, boxes) and back.image_size == (100, 200)
    assert torch.equal(r.xywh()[1], torch.tensor([12.0, 21, 21, 41]))
    r.to_csv(tmp_path / "b.csv")
    rows = list(csv.reader(open(tmp_path / "b.csv")))
    assert rows[0] == ["frame", "x1", "y1", "x2", "y2", "score"] and rows[2][0] == "1"
    with pytest.raises(ValueError, match="box_tracks results, not point_tracks"):
        PointTracks.load(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError):
        BoxTracks.load(tmp_path / "missing.npz")


def test_as_video_layouts_agree():
    rng = np.random.default_rng(0)
    thwc = rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    a = as_video(thwc)
    b = as_video(torch.from_numpy(thwc).permute(0, 3, 1, 2))
    c = as_video(thwc.astype(np.float64))
    assert a.shape == (4, 3, 6, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(as_video(list(thwc)), a)
    assert as_frame(thwc[0]).shape == (3, 6, 8)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((6, 8, 3), np.uint8), "must be 4-D"),
        (np.zeros((2, 6, 8, 4), np.uint8), "3 RGB channels"),
        (np.zeros((0, 6, 8, 3), np.uint8), "no frames"),
        (np.zeros((2, 0, 8, 3), np.uint8), "empty frames"),
        (np.full((2, 6, 8, 3), np.nan, np.float32), "non-finite"),
        (np.zeros((2, 6, 8, 3), bool), "dtype bool"),
        ("not a video object".split(), "numpy array, a torch tensor"),
        ("clip.mp4", "read it with trackers.io.read_video"),
        ([np.zeros((6, 8, 3), np.uint8), np.zeros((6, 9, 3), np.uint8)], r"same size.*\(6, 8, 3\).*\(6, 9, 3\)"),
        (np.full((2, 6, 8, 3), 300, np.int32), "integer values"),
        (np.full((2, 6, 8, 3), 4000, np.uint16), "16-bit"),
        (np.full((2, 6, 8, 3), -1.8, np.float32), "normalised"),
        (np.full((2, 6, 8, 3), 0.5, np.float32), r"not \[0, 1\]"),
        (np.full((2, 6, 8, 3), 1e4, np.float32), "up to"),
        (np.array([["a"]]), "numpy dtype <U1"),
    ],
)
def test_as_video_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        as_video(bad)


def test_as_frame_rejects_bad_input():
    with pytest.raises(ValueError, match="3-D"):
        as_frame(np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="3 RGB channels"):
        as_frame(np.zeros((4, 4, 2)))


def test_value_range_accepts_what_is_legal():
    assert as_video(np.full((2, 4, 4, 3), 200, np.int64)).max() == 200  # python ints, in range
    assert as_video(np.full((2, 4, 4, 3), 40000, np.uint16) // 257).max() == 155
    assert as_video(np.zeros((2, 4, 4, 3), np.float32)).sum() == 0  # a black float clip is fine
    assert as_video(np.full((2, 4, 4, 3), 255.4, np.float32)).max() > 255  # resampling overshoot
    assert as_frame(np.full((4, 4, 3), 0.5, np.float32)).max() == 0.5  # one dark frame is not judged


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"not an npz at all", b"\x00" * 100])
def test_results_load_rejects_bad_files(tmp_path, content):
    p = tmp_path / "r.npz"
    p.write_bytes(content)
    for cls in (PointTracks, BoxTracks):
        with pytest.raises(ValueError, match="r.npz"):
            cls.load(p)


def test_results_load_rejects_a_truncated_save(tmp_path):
    r = BoxTracks(boxes=torch.zeros(50, 4), scores=torch.ones(50), image_size=(10, 10))
    r.save(tmp_path / "ok.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        BoxTracks.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        BoxTracks.load(tmp_path / "other.npz")


def test_resized_results_use_the_pixel_conventions():
    p = PointTracks(tracks=torch.tensor([[[0.0, 0.0], [9.0, 4.0]]]), visibility=torch.ones(1, 2),
                    visible=torch.ones(1, 2, dtype=torch.bool), queries=torch.tensor([[0, 0.0, 0.0], [0, 9.0, 4.0]]),
                    image_size=(5, 10))
    big = p.resized((10, 20))
    # pixel centres at integers: x' = (x + 0.5) * 2 - 0.5, so 0 -> 0.5 and 9 -> 18.5
    assert torch.allclose(big.tracks[0], torch.tensor([[0.5, 0.5], [18.5, 8.5]]))
    assert big.image_size == (10, 20) and torch.allclose(big.queries[:, 1:], big.tracks[0])
    b = BoxTracks(boxes=torch.tensor([[0.0, 0.0, 10.0, 5.0]]), scores=torch.ones(1), image_size=(5, 10))
    assert torch.equal(b.resized((10, 20)).boxes, torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
