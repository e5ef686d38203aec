"""PointTracker / PointStream behaviour on tiny random-weight CoTracker3 models (fast; no golden data needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import TINY_COTRACKER as TINY

from trackers import PointTracker
from trackers.models import cotracker3 as ct
from trackers.models.cotracker3 import CoTracker3, CoTrackerConfig, convert_official_checkpoint

SETTINGS = dict(iters=2, support_grid_size=2)


def _tiny(online: bool, seed: int = 0) -> PointTracker:
    tracker = PointTracker.from_config(dict(TINY, online=online, window_len=8 if online else 12), seed=seed,
                                       settings=SETTINGS)
    # default init moves points by tens of pixels per step; damp the update so the tracks stay meaningful
    with torch.no_grad():
        tracker.model.updateformer.flow_head.weight.mul_(0.05)
    return tracker


@pytest.fixture(scope="module")
def offline():
    return _tiny(False)


@pytest.fixture(scope="module")
def online():
    return _tiny(True)


def _video(T=10, H=24, W=40, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 255, size=(H + T, W + 2 * T, 3)).astype(np.uint8)
    return np.stack([base[t:t + H, 2 * t:2 * t + W] for t in range(T)])  # (T, H, W, 3), panning texture


QUERIES = [[0, 10.0, 8.0], [3, 30.5, 12.25], [7, 0.0, 0.0], [9, 39.0, 23.0]]


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, message", [
    (dict(queries=[[0, 41.0, 5.0]]), "outside"),
    (dict(queries=[[0, 5.0, -1.0]]), "outside"),
    (dict(queries=[[10, 5.0, 5.0]]), "frames"),
    (dict(queries=[[-1, 5.0, 5.0]]), ">= 0"),
    (dict(queries=[[1.5, 5.0, 5.0]]), "integer"),
    (dict(queries=[[0, 5.0]]), "shape"),
    (dict(queries=np.zeros((0, 3))), "empty"),
    (dict(queries=[[0, float("nan"), 5.0]]), "NaN"),
    (dict(grid_size=-2), "grid_size"),
    (dict(), "nothing to track"),
    (dict(queries=[[0, 5.0, 5.0]], grid_size=3), "either"),
    (dict(grid_size=3, segm_mask=np.ones((10, 10))), "segm_mask"),
    (dict(grid_size=3, segm_mask=np.zeros((24, 40))), "none of the grid"),
    (dict(grid_size=3, grid_query_frame=10), "grid_query_frame"),
    (dict(grid_size=2, iters=0), "iters"),
    (dict(grid_size=2, iters=-3), "iters"),
    (dict(grid_size=2, iters=2.5), "iters"),
    (dict(grid_size=100_000), "grid_size"),
])
def test_bad_input_raises(offline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        offline.track(_video(), **kwargs)


def test_bad_frames_raise(offline, online):
    v = _video().astype(np.float32)
    v[2, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        offline.track(v, grid_size=2)
    with pytest.raises(ValueError):
        offline.track(np.zeros((5, 24, 40)), grid_size=2)  # no channel axis
    session = online.stream(grid_size=2)
    with pytest.raises(ValueError, match="non-finite"):
        session.step(v)
    with pytest.raises(ValueError, match="online model"):
        offline.stream(grid_size=2)


# ------------------------------------------------------------------------------------------------ offline
def test_offline_result_and_query_frame(offline):
    res = offline.track(_video(), QUERIES)
    assert res.tracks.shape == (10, 4, 2) and res.visibility.shape == (10, 4) and res.visible.dtype == torch.bool
    assert res.image_size == (24, 40) and torch.isfinite(res.tracks).all()
    q = torch.tensor(QUERIES)
    t = q[:, 0].long()
    n = torch.arange(4)
    # the query's own frame is reset to the query point and marked visible (official offline predictor)
    assert torch.allclose(res.tracks[t, n], q[:, 1:], atol=1e-4)
    assert res.visible[t, n].all()
    assert torch.equal(res.visible.sum(), ((res.visibility > 0.9) | (torch.arange(10)[:, None] == t)).sum())
    assert torch.equal(res.queries, q)


def test_offline_chunking_does_not_change_results(offline, monkeypatch):
    full = offline.track(_video(), QUERIES, backward=True)
    monkeypatch.setattr(ct, "_CORR_TOKENS", 7)
    monkeypatch.setattr(ct, "_BLOCK_TOKENS", 9)
    monkeypatch.setattr(ct, "_CNN_FRAMES", 3)
    monkeypatch.setattr(ct, "_MLP_ROWS", 5)
    chunked = offline.track(_video(), QUERIES, backward=True)
    assert torch.allclose(full.tracks, chunked.tracks, atol=1e-4)
    assert torch.allclose(full.visibility, chunked.visibility, atol=1e-5)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_mlp_pieces_equal_plain_mlp(monkeypatch, approximate):
    # inference runs the MLPs piece by piece into preallocated buffers; training (grad enabled) takes the plain path
    monkeypatch.setattr(ct, "_MLP_ROWS", 7)
    torch.manual_seed(0)
    mlp = ct._Mlp(12, 20, 6, approximate)
    x = torch.randn(3, 11, 12)[:, ::2]  # non-contiguous, 18 rows = 3 pieces (7, 7, 4)
    plain = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x), approximate=approximate))
    with torch.no_grad():
        pieces = mlp(x)
    assert pieces.shape == (3, 6, 6)
    torch.testing.assert_close(pieces, plain.detach(), rtol=1e-6, atol=1e-6)
    assert mlp(x).requires_grad


def test_offline_backward_uses_reversed_clip(offline):
    v = _video()
    q = torch.tensor(QUERIES)
    # without the support grid: the backward pass reverses the support points' frames too
    both = offline.track(v, q, backward=True, support_grid=False)
    fwd = offline.track(v, q, support_grid=False)
    rq = q.clone()
    rq[:, 0] = 9 - rq[:, 0]
    rev = offline.track(v[::-1].copy(), rq, support_grid=False)
    before = torch.arange(10)[:, None] < q[None, :, 0]
    expect = torch.where(before[..., None], rev.tracks.flip(0), fwd.tracks)
    assert torch.allclose(both.tracks, expect, atol=1e-4)
    assert torch.allclose(both.visibility, torch.where(before, rev.visibility.flip(0), fwd.visibility), atol=1e-5)


def test_grid_and_mask(offline):
    res = offline.track(_video(), grid_size=3, grid_query_frame=2)
    assert res.tracks.shape == (10, 9, 2)
    assert torch.equal(res.queries[:, 0], torch.full((9,), 2.0))
    mask = np.zeros((24, 40), np.uint8)
    mask[:, :20] = 1
    left = offline.track(_video(), grid_size=3, segm_mask=mask)
    assert left.tracks.shape[1] in (3, 6) and (left.queries[:, 1] < 20).all()


# ------------------------------------------------------------------------------------------------ online
def test_stream_any_chunking_equals_track(online):
    v = _video(T=21)
    ref = online.track(v, QUERIES)
    assert ref.tracks.shape == (21, 4, 2) and torch.isfinite(ref.tracks).all()
    for chunks in ([1] * 21, [5, 3, 9, 4], [21]):
        session = online.stream(QUERIES)
        a = 0
        latest = torch.full((21, 4, 2), float("nan"))
        for n in chunks:
            step = session.step(v[a:a + n])
            # each step returns the frames it produced or revised; overwriting with them rebuilds the history
            latest[step.start_frame:step.start_frame + step.num_frames] = step.tracks
            a += n
        assert torch.allclose(latest[:session.results().num_frames], session.results().tracks,
                              equal_nan=True)
        out = session.close()
        assert torch.allclose(out.tracks, ref.tracks, atol=1e-4), chunks
        assert torch.allclose(out.visibility, ref.visibility, atol=1e-5)
        assert torch.equal(out.visible, (out.visibility * out.confidence) > 0.6)


def test_stream_steps_return_the_frames_they_produced(online):
    session = online.stream(grid_size=2)
    steps = [session.step(f) for f in _video(T=13)]
    # window 8, step 4: the first window needs 8 frames (0-7), the next runs at frame 12 and revises frames 4-11
    assert [s.num_frames for s in steps] == [0] * 7 + [8, 0, 0, 0, 8, 0]
    assert steps[7].start_frame == 0 and steps[11].start_frame == 4 and steps[12].start_frame == 12
    assert session.results().num_frames == 12 and session.frame_index == 13
    assert session.close().num_frames == 13
    with pytest.raises(RuntimeError, match="closed"):
        session.step(_video(T=1))
    with online.stream(grid_size=2) as s2:
        s2.step(_video(T=5))
    assert s2.closed and s2.results().num_frames == 5


@pytest.mark.parametrize("T", [1, 3, 6])
def test_online_short_videos_are_tracked(online, T):
    v = _video(T=T, H=32, W=48)  # model resolution: no resize
    res = online.track(v, [[0, 10.0, 8.0], [0, 30.0, 20.0]])
    assert res.tracks.shape == (T, 2, 2)
    assert torch.isfinite(res.tracks).all() and (res.tracks.abs().sum() > 0)
    with torch.inference_mode():
        video = torch.from_numpy(v).permute(0, 3, 1, 2)[None].float()
        raw, _, _ = online.model(video, torch.tensor([[[0, 10.0, 8.0], [0, 30.0, 20.0]]]), online.settings.iters)
    assert torch.allclose(res.tracks, raw[0], atol=1e-4)


def test_online_backward(online):
    v = _video(T=14)
    q = torch.tensor([[0, 10.0, 8.0], [9, 20.0, 12.0]])
    both = online.track(v, q, backward=True)
    fwd = online.track(v, q)
    rq = q.clone()
    rq[:, 0] = 13 - rq[:, 0]
    rev = online.track(v[::-1].copy(), rq)
    before = torch.arange(14)[:, None] < q[None, :, 0]
    assert torch.allclose(both.tracks, torch.where(before[..., None], rev.tracks.flip(0), fwd.tracks), atol=1e-4)
    assert torch.equal(both.tracks[:, 0], fwd.tracks[:, 0])  # query at frame 0: nothing before it


def test_add_and_remove_queries(online):
    v = _video(T=20)
    session = online.stream([[0, 10.0, 8.0], [0, 20.0, 10.0]])
    session.step(v[:12])  # windows at 0 and 4 ran -> next window starts at frame 8
    assert session.earliest_query_frame == 8
    with pytest.raises(ValueError, match="already been processed"):
        session.add_queries([[3, 5.0, 5.0]])
    new = session.add_queries([[9, 30.0, 12.0]])
    assert new == [2] and session.ids == [0, 1, 2]
    session.step(v[12:16])
    res = session.results()
    assert res.tracks.shape == (16, 3, 2)
    assert torch.isnan(res.tracks[:8, 2]).all() and torch.isfinite(res.tracks[8:, 2]).all()
    assert not res.visible[:8, 2].any()
    session.remove([0])
    assert session.ids == [1, 2]
    with pytest.raises(ValueError, match="unknown"):
        session.remove(0)
    out = session.close()
    assert out.tracks.shape == (16, 2, 2)
    assert torch.equal(out.queries, torch.tensor([[0, 20.0, 10.0], [9, 30.0, 12.0]]))


def test_sessions_share_one_model(online):
    a, b = _video(T=12, seed=1), _video(T=12, seed=2)
    ref_a, ref_b = online.track(a, QUERIES[:2]), online.track(b, grid_size=2)
    sa, sb = online.stream(QUERIES[:2]), online.stream(grid_size=2)
    for t in range(12):
        sa.step(a[t])
        sb.step(b[t])
    assert torch.allclose(sa.close().tracks, ref_a.tracks, atol=1e-4)
    assert torch.allclose(sb.close().tracks, ref_b.tracks, atol=1e-4)


def test_stream_queries_checked_against_first_frame(online):
    session = online.stream([[0, 100.0, 5.0]])
    with pytest.raises(ValueError, match="outside"):
        session.step(_video(T=2))
    with pytest.raises(ValueError, match="outside"):
        online.stream([[0, 100.0, 5.0]], image_size=(24, 40))


# ------------------------------------------------------------------------------------------------ precision, weights
def test_bfloat16_close_to_float32():
    fp32 = _tiny(False)
    bf16 = _tiny(False).to(dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    a = fp32.track(_video(), QUERIES)
    b = bf16.track(_video(), QUERIES)
    assert b.tracks.dtype == torch.float32 and torch.isfinite(b.tracks).all()
    assert (a.tracks - b.tracks).abs().max() < 1.0


def test_converter_checks_time_embedding():
    cfg = CoTrackerConfig(**dict(TINY, window_len=12))
    model = CoTracker3(cfg)
    sd = model.state_dict()
    out = convert_official_checkpoint({k: v for k, v in sd.items() if k != "time_emb"}, cfg, None)
    assert torch.equal(out["time_emb"], sd["time_emb"])
    bad = dict(sd, time_emb=torch.zeros(1, 16, cfg.input_dim))
    with pytest.raises(ValueError, match="time_emb"):
        convert_official_checkpoint(bad, cfg, None)


def test_state_dict_layout_matches_official(golden_dir):
    tsv = golden_dir / "cotracker3" / "state_dict_online.tsv"
    rows = [line.rstrip("\n").split("\t") for line in open(tsv) if line.strip()]
    expected = {k: tuple(int(s) for s in shape.split("x")) for k, shape, _ in rows}
    sd = CoTracker3(CoTrackerConfig(online=True, window_len=16)).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


@pytest.mark.parametrize("T", [1, 2, 30])
def test_offline_any_length(offline, T):
    """Any clip length works (time embedding resampled from its 12 stored steps, as the official model does)."""
    res = offline.track(_video(T=T), [[0, 10.0, 8.0], [T - 1, 20.0, 12.0]], backward=True)
    assert res.tracks.shape == (T, 2, 2) and torch.isfinite(res.tracks).all()
    assert torch.allclose(res.tracks[T - 1, 1], torch.tensor([20.0, 12.0]), atol=1e-4)


def test_save_and_reload(online, tmp_path):
    online.save_pretrained(tmp_path / "tiny")
    again = PointTracker.from_pretrained(tmp_path / "tiny")
    assert again.config == online.config and again.online and again.settings == online.settings
    v = _video(T=9)
    assert torch.equal(again.track(v, QUERIES[:2]).tracks, online.track(v, QUERIES[:2]).tracks)


def test_settings_are_stored_and_overridable(online, tmp_path):
    online.save_pretrained(tmp_path / "tiny")
    assert PointTracker.from_pretrained(tmp_path / "tiny").settings.iters == 2
    four = PointTracker.from_pretrained(tmp_path / "tiny", iters=4, online_threshold=0.5)
    assert four.settings.iters == 4 and four.settings.online_threshold == 0.5
    v = _video(T=9)
    assert not torch.equal(four.track(v, QUERIES[:2]).tracks, online.track(v, QUERIES[:2]).tracks)
    assert torch.equal(four.track(v, QUERIES[:2], iters=2).tracks, online.track(v, QUERIES[:2]).tracks)
    with pytest.raises(ValueError, match="iters"):
        PointTracker.from_pretrained(tmp_path / "tiny", iters=0)
    with pytest.raises(ValueError, match="unknown PointSettings field"):
        PointTracker.from_pretrained(tmp_path / "tiny", itres=4)


def test_old_folders_with_settings_in_the_config_still_load(online, tmp_path):
    """Folders saved before settings were split from the config carry ``iters`` inside ``config``."""
    import json

    folder = online.save_pretrained(tmp_path / "old")
    doc = json.loads((folder / "config.json").read_text())
    doc["config"].update(doc.pop("settings"))
    (folder / "config.json").write_text(json.dumps(doc))
    old = PointTracker.from_pretrained(folder)
    assert old.config == online.config and old.settings == online.settings


def test_a_grid_too_large_for_memory_is_refused_before_allocating():
    full = PointTracker.from_config(seed=0)  # hidden 384: 400x400 points over 24 frames would need ~130 GiB
    with pytest.raises(ValueError, match="GiB of working memory"):
        full.track(np.zeros((24, 48, 64, 3), np.uint8), grid_size=400)
