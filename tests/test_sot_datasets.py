"""trackers.train.data.sot_datasets (GOT-10k, LaSOT) and trackers.train.data.tapvid (TAP-Vid pickles, npz) on tiny
fake dataset trees written by the tests."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackers.train.data.sot_datasets import (GOT10kDataset, LaSOTDataset, detect_sot_layout, open_sot_dataset,
                                              read_box_file)
from trackers.train.data.tapvid import TapVidDataset, load_tapvid_pickle, resize_frames

H, W = 24, 32


def _frame(t: int) -> np.ndarray:
    """A frame whose pixels encode the frame index, so the tests can check frame order."""
    f = np.zeros((H, W, 3), np.uint8)
    f[..., 0] = 10 * t
    f[..., 1] = np.arange(W)[None, :] * 4
    return f


def _write_frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        Image.fromarray(_frame(t)).save(folder / f"{t + 1:08d}.png")  # lossless, so pixel values survive


def _lines(path: Path, rows) -> None:
    path.write_text("".join(",".join(str(v) for v in r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------------------ GOT-10k
def _got10k(root: Path) -> Path:
    """val-like sequence (4 frames, frame 2 absent) and a test-like one (first box only)."""
    root.mkdir(parents=True)
    (root / "list.txt").write_text("GOT-10k_Val_000002\nGOT-10k_Test_000001\n")
    a = root / "GOT-10k_Val_000002"
    _write_frames(a, 4)
    _lines(a / "groundtruth.txt", [(1, 2, 10, 8), (2, 3, 10, 8), (3, 4.5, 11, 9), (4, 5, 10, 8)])
    (a / "absence.label").write_text("0\n0\n1\n0\n")
    (a / "cover.label").write_text("8\n5\n0\n8\n")
    b = root / "GOT-10k_Test_000001"
    _write_frames(b, 3)
    _lines(b / "groundtruth.txt", [(5, 6, 7, 8)])
    return root


def test_got10k_reader(tmp_path):
    root = _got10k(tmp_path / "val")
    assert detect_sot_layout(root) == "got10k"
    ds = open_sot_dataset(root)
    assert isinstance(ds, GOT10kDataset)
    assert ds.names == ["GOT-10k_Val_000002", "GOT-10k_Test_000001"]  # list.txt order, not sorted
    seq = ds[0]
    assert seq.dataset == "got10k" and seq.num_frames == 4 and seq.has_groundtruth
    # x,y,w,h -> x1,y1,x2,y2, 0-based as stored
    np.testing.assert_array_equal(seq.boxes[2], [3, 4.5, 14, 13.5])
    np.testing.assert_array_equal(seq.cover, [8, 5, 0, 8])
    np.testing.assert_array_equal(seq.present, [True, True, False, True])  # cover 0 = absent
    assert seq.image_size() == (H, W)
    frames = seq.read_frames()
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, 0, 0, 0], [0, 10, 20, 30])  # frame order kept
    test_seq = ds[1]
    assert not test_seq.has_groundtruth and test_seq.boxes.shape == (1, 4) and test_seq.present is None
    np.testing.assert_array_equal(test_seq.init_box, [5, 6, 12, 14])
    # a subset in a chosen order
    assert GOT10kDataset(root, sequences="GOT-10k_Test_000001").names == ["GOT-10k_Test_000001"]
    with pytest.raises(ValueError, match="nope"):
        GOT10kDataset(root, sequences=["nope"])


def test_got10k_absence_only_and_bad_files(tmp_path):
    root = _got10k(tmp_path / "val")
    a = root / "GOT-10k_Val_000002"
    (a / "cover.label").unlink()
    np.testing.assert_array_equal(GOT10kDataset(root)[0].present, [True, True, False, True])  # from absence.label
    (a / "absence.label").write_text("0\n0\n")
    with pytest.raises(ValueError, match="absence.label.*2 entries.*4 frames"):
        GOT10kDataset(root)[0]
    (a / "absence.label").unlink()
    _lines(a / "groundtruth.txt", [(1, 2, 3, 4), (1, 2, 3, 4)])
    with pytest.raises(ValueError, match="2 boxes.*4 frames"):
        GOT10kDataset(root)[0]
    (a / "groundtruth.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="line 1: expected 4 numbers"):
        read_box_file(a / "groundtruth.txt")
    (root / "list.txt").write_text("missing_seq\n")
    with pytest.raises(ValueError, match="missing_seq"):
        GOT10kDataset(root)


# ------------------------------------------------------------------------------------------------ LaSOT
def _lasot(root: Path) -> Path:
    seq = root / "cat" / "cat-3"
    _write_frames(seq / "img", 5)
    # 1-based corners; frame 3 absent with the 0,0,0,0 marker
    _lines(seq / "groundtruth.txt", [(11, 6, 8, 9), (12, 6, 8, 9), (13, 7, 8, 9), (0, 0, 0, 0), (15, 8, 8, 9)])
    (seq / "full_occlusion.txt").write_text("0,0,0,1,0\n")
    (seq / "out_of_view.txt").write_text("0,0,1,0,0\n")
    other = root / "bird" / "bird-1"
    _write_frames(other / "img", 2)
    (other / "groundtruth.txt").write_text("1\t1\t4\t4\n2\t2\t4\t4\n")  # tab-separated is accepted too
    return root


def test_lasot_reader(tmp_path):
    root = _lasot(tmp_path / "LaSOT")
    assert detect_sot_layout(root) == "lasot"
    ds = open_sot_dataset(root)
    assert isinstance(ds, LaSOTDataset)
    assert ds.names == ["bird-1", "cat-3"]
    seq = ds[1]
    assert seq.dataset == "lasot" and seq.class_name == "cat" and seq.num_frames == 5 and seq.has_groundtruth
    # 1 is subtracted from x and y; the absent marker stays zeros
    np.testing.assert_array_equal(seq.boxes[0], [10, 5, 18, 14])
    np.testing.assert_array_equal(seq.boxes[3], [0, 0, 0, 0])
    np.testing.assert_array_equal(seq.present, [True, True, False, False, True])
    np.testing.assert_array_equal(seq.full_occlusion, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(next(iter(seq.frames()))[0, :, 1], np.arange(W) * 4)
    assert ds[0].present is None
    np.testing.assert_array_equal(ds[0].boxes[1], [1, 1, 5, 5])
    # a single class folder works as the root too
    assert LaSOTDataset(root / "cat").names == ["cat-3"]
    (root / "cat" / "cat-3" / "out_of_view.txt").write_text("0,0,1\n")
    with pytest.raises(ValueError, match="out_of_view.txt.*3 entries.*5 frames"):
        ds[1]


def test_bad_layout_names_the_folder(tmp_path):
    bad = tmp_path / "not_a_dataset"
    (bad / "stuff").mkdir(parents=True)
    (bad / "stuff" / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="not_a_dataset.*neither a GOT-10k.*nor a LaSOT"):
        open_sot_dataset(bad)
    with pytest.raises(ValueError, match="does not exist"):
        open_sot_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a LaSOT folder"):
        LaSOTDataset(bad)
    with pytest.raises(ValueError, match="not a GOT-10k split folder"):
        GOT10kDataset(bad)
    _got10k(tmp_path / "GOT10k" / "val")  # the dataset root rather than a split
    with pytest.raises(ValueError, match=r"holds GOT-10k splits \['val'\]: pass one split folder"):
        open_sot_dataset(tmp_path / "GOT10k")


# ------------------------------------------------------------------------------------------------ TAP-Vid
T, N = 5, 3


def _tapvid_video(seed: int, jpeg: bool = False):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    points = rng.uniform(0, 1, (N, T, 2)).astype(np.float32)
    points[0, :, 0] = 1.0  # a point on the right border: x = W after scaling
    occluded = rng.uniform(size=(N, T)) < 0.3
    frames = video
    if jpeg:
        frames = []
        for f in video:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=95)
            frames.append(buf.getvalue())
    return {"video": frames, "points": points, "occluded": occluded}, video


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_tapvid_davis_layout(tmp_path, protocol):
    a, va = _tapvid_video(0)
    b, _ = _tapvid_video(1)
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps({"bear": a, "camel": b}, protocol=protocol))
    ds = TapVidDataset(path, resize=None)
    assert ds.layout == "pickle" and ds.names == ["bear", "camel"]
    seq = ds[0]
    np.testing.assert_array_equal(seq.video, va)
    # (N, T, 2) normalised -> (T, N, 2) pixels (pure scaling), occluded -> visible
    np.testing.assert_allclose(seq.tracks, a["points"].transpose(1, 0, 2) * [W, H], rtol=1e-6)
    np.testing.assert_array_equal(seq.visible, ~a["occluded"].T)
    # the official 256x256 protocol: frames resized, normalised points times 256
    seq256 = TapVidDataset(path)[1]
    assert seq256.video.shape == (T, 256, 256, 3)
    np.testing.assert_allclose(seq256.tracks, b["points"].transpose(1, 0, 2) * 256, rtol=1e-6)


def test_tapvid_rgb_stacking_and_kinetics_layouts(tmp_path):
    a, va = _tapvid_video(2)
    b, _ = _tapvid_video(3)
    rgb = tmp_path / "tapvid_rgb_stacking.pkl"
    rgb.write_bytes(pickle.dumps([a, b]))
    ds = TapVidDataset(rgb, resize=None)
    assert ds.names == ["tapvid_rgb_stacking_0000", "tapvid_rgb_stacking_0001"]
    np.testing.assert_array_equal(ds[0].video, va)
    # Kinetics: a folder of shards holding JPEG bytes per frame
    kin = tmp_path / "tapvid_kinetics"
    kin.mkdir()
    c, vc = _tapvid_video(4, jpeg=True)
    (kin / "0000_of_0002.pkl").write_bytes(pickle.dumps([c]))
    (kin / "0001_of_0002.pkl").write_bytes(pickle.dumps([a, b]))
    (kin / "README.md").write_text("not a shard")
    ks = TapVidDataset(kin, resize=(16, 20))
    assert ks.layout == "kinetics"
    assert ks.names == ["0000_of_0002_0000", "0001_of_0002_0000", "0001_of_0002_0001"]
    first = TapVidDataset(kin, resize=None)[0]
    assert first.video.shape == (T, H, W, 3)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in c["video"]])
    np.testing.assert_array_equal(first.video, decoded)  # the JPEG bytes, decoded
    assert np.corrcoef(first.video.ravel(), vc.ravel())[0, 1] > 0.5  # ... and they show the encoded frames
    last = ks[2]
    assert last.video.shape == (T, 16, 20, 3)
    np.testing.assert_allclose(last.tracks, b["points"].transpose(1, 0, 2) * [20, 16], rtol=1e-6)
    np.testing.assert_array_equal(ks[0].visible, ~c["occluded"].T)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run",))


def test_tapvid_pickle_safety_and_errors(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v": {"video": _Evil(), "points": 0, "occluded": 0}}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print.*trusted=True"):
        load_tapvid_pickle(evil)
    single = tmp_path / "single.pkl"
    single.write_bytes(pickle.dumps(_tapvid_video(0)[0]))
    with pytest.raises(ValueError, match="single video dict"):
        TapVidDataset(single)
    bad = tmp_path / "bad.pkl"
    a, _ = _tapvid_video(0)
    a["points"] = a["points"][:, :2]
    bad.write_bytes(pickle.dumps({"x": a}))
    with pytest.raises(ValueError, match=r"'points' must be \(N, T=5, 2\)"):
        TapVidDataset(bad)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither TAP-Vid pickles"):
        TapVidDataset(tmp_path / "empty")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x00not a pickle")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_tapvid_pickle(junk)


def test_npz_folder_through_npz_track_dataset(tmp_path):
    from trackers.train.data.readers import save_clip_npz
    from trackers.train.data.synthetic import SyntheticConfig, generate_clip

    clip = generate_clip(5, SyntheticConfig(num_frames=4, height=32, width=48, num_points=6))
    save_clip_npz(clip, tmp_path / "clip_a.npz")
    ds = TapVidDataset(tmp_path, resize=None)
    assert ds.layout == "npz" and ds.names == ["clip_a"]
    seq = ds[0]
    np.testing.assert_array_equal(seq.video, clip.video)
    np.testing.assert_array_equal(seq.tracks, clip.tracks)
    np.testing.assert_array_equal(seq.visible, clip.visible)
    # resizing maps pixel positions centre-aligned: x' = (x + 0.5) * s - 0.5
    big = TapVidDataset(tmp_path, resize=(64, 96))[0]
    assert big.video.shape == (4, 64, 96, 3)
    np.testing.assert_allclose(big.tracks, (clip.tracks + 0.5) * 2 - 0.5, atol=1e-5)
    np.testing.assert_array_equal(resize_frames(clip.video, (32, 48)), clip.video)  # same size: untouched
