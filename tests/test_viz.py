"""Visualisation: the right pixels change, occluded points are hollow, boxes carry their score."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trackers import io, viz
from trackers.results import BoxTracks, PointTracks

H, W, T = 64, 96, 6
BG = 30


def _frames(t=T, h=H, w=W):
    return np.full((t, h, w, 3), BG, np.uint8)


def _points(visible_first=True, batch=False):
    # Point 0 moves right by 8 px per frame; point 1 stays at (70, 40).
    t = torch.arange(T, dtype=torch.float32)
    p0 = torch.stack([10 + 8 * t, torch.full_like(t, 16.0)], -1)
    p1 = torch.tensor([70.0, 40.0]).expand(T, 2)
    tracks = torch.stack([p0, p1], 1)  # (T, 2, 2)
    vis = torch.ones(T, 2)
    vis[:, 1] = 0.2  # point 1 is occluded everywhere
    if not visible_first:
        vis[:, 0] = 0.0
    res = PointTracks(tracks=tracks, visibility=vis, visible=vis > 0.5,
                      queries=torch.tensor([[0, 10.0, 16.0], [0, 70.0, 40.0]]), image_size=(H, W))
    if batch:
        res = PointTracks(tracks=tracks[None], visibility=vis[None], visible=(vis > 0.5)[None],
                          queries=res.queries[None], image_size=(H, W))
    return res


def _changed(a, b):
    return np.abs(a.astype(int) - b.astype(int)).sum(-1) > 0


def test_points_drawn_where_the_tracks_are():
    frames = _frames()
    out = viz.draw_points(frames, _points(), trail=0, radius=3)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for t in range(T):
        x = 10 + 8 * t
        # A visible point is a filled disc: its centre takes the point's colour.
        assert _changed(out[t, 16, x], frames[t, 16, x])
        # Far away from both points nothing changes.
        assert not _changed(out[t, 55:, :40], frames[t, 55:, :40]).any()
    # Frame 0 is untouched where the point sits in frame 5.
    assert not _changed(out[0, 16, 50], frames[0, 16, 50])


def test_occluded_points_hollow_dim_or_hidden():
    frames = _frames()
    tr = _points()
    hollow = viz.draw_points(frames, tr, trail=0, radius=5, occluded="hollow")
    # Occluded point 1 at (70, 40): ring drawn, centre left as it was.
    assert not _changed(hollow[2, 40, 70], frames[2, 40, 70])
    assert _changed(hollow[2, 40, 65:76], frames[2, 40, 65:76]).any()
    ring = _changed(hollow[2, 34:47, 64:77], frames[2, 34:47, 64:77])
    assert 10 < ring.sum() < 0.8 * ring.size
    # Visible point 0: filled centre.
    assert _changed(hollow[2, 16, 26], frames[2, 16, 26])
    dim = viz.draw_points(frames, tr, trail=0, radius=5, occluded="dim")
    assert _changed(dim[2, 40, 70], frames[2, 40, 70])
    # Dimmed means blended: closer to the background than the same colour fully drawn as visible.
    full = viz.draw_points(frames, tr, trail=0, radius=5, visible=np.ones((T, 2), bool))
    assert np.abs(dim[2, 40, 70].astype(int) - BG).sum() < np.abs(full[2, 40, 70].astype(int) - BG).sum()
    hidden = viz.draw_points(frames, tr, trail=0, radius=5, occluded="hide")
    assert not _changed(hidden[2, 34:47, 64:77], frames[2, 34:47, 64:77]).any()
    # A threshold below the occluded point's visibility (0.2) turns it into a filled disc.
    thr = viz.draw_points(frames, tr, trail=0, radius=5, threshold=0.1)
    assert _changed(thr[2, 40, 70], frames[2, 40, 70])


def test_trails_fade_behind_moving_points():
    frames = _frames()
    out = viz.draw_points(frames, _points(), trail=4, radius=2, line_width=2)
    # In frame 5 the point is at x=50; its trail covers x in [18, 50) on row 16, fading with age.
    row = np.abs(out[5, 16].astype(int) - BG).sum(-1)
    assert row[20] > 0 and row[45] > 0
    assert row[45] > row[22]  # newer segments are more opaque
    assert row[12] == 0  # older than the trail: nothing
    no_trail = viz.draw_points(frames, _points(), trail=0, radius=2)
    assert np.abs(no_trail[5, 16, 20:40].astype(int) - BG).sum() == 0


def test_colours_are_per_query_and_stable():
    frames = _frames()
    out = viz.draw_points(frames, _points(), trail=0, radius=4, visible=np.ones((T, 2), bool))
    c0, c1 = out[0, 16, 10], out[0, 40, 70]
    assert tuple(c0) != tuple(c1)
    assert tuple(out[3, 16, 34]) == tuple(c0)  # same query, same colour in another frame
    cols = viz.point_colors(torch.tensor([[0, 0, 0], [0, 50, 0], [0, 95, 0]]), "x", image_size=(H, W))
    assert cols.shape == (3, 3) and len({tuple(c) for c in cols}) == 3
    fixed = viz.draw_points(frames, _points(), trail=0, radius=4, colors=(0, 255, 0))
    assert tuple(fixed[0, 16, 10]) == (0, 255, 0)
    with pytest.raises(ValueError, match="colour mode"):
        viz.point_colors(torch.zeros(2, 3), "rainbow")


def test_tracks_rescaled_to_the_frames():
    # Tracks computed on a half-size clip drawn on the full-size one.
    tr = _points()
    half = PointTracks(tracks=(tr.tracks + 0.5) / 2 - 0.5, visibility=tr.visibility, visible=tr.visible,
                       queries=tr.queries, image_size=(H // 2, W // 2))
    out = viz.draw_points(_frames(), half, trail=0, radius=3)
    assert _changed(out[5, 16, 50], _frames()[5, 16, 50])


def test_batched_tracks_and_layouts():
    frames = torch.from_numpy(_frames()).permute(0, 3, 1, 2).float()  # (T, 3, H, W) float
    out = viz.draw_points(frames, _points(batch=True), trail=0, radius=3)
    assert out.shape == (T, H, W, 3)
    assert _changed(out[0, 16, 10], _frames()[0, 16, 10])
    two = PointTracks(tracks=torch.zeros(2, T, 1, 2), visibility=torch.ones(2, T, 1),
                      visible=torch.ones(2, T, 1, dtype=torch.bool), queries=torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="batch_index"):
        viz.draw_points(_frames(), two)
    assert viz.draw_points(_frames(), two, batch_index=1).shape == (T, H, W, 3)


def test_frame_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="frames"):
        viz.draw_points(_frames(t=T - 1), _points())


def test_boxes_with_score():
    frames = _frames()
    boxes = torch.tensor([[20.0, 24.0, 60.0, 56.0]]).repeat(T, 1)
    boxes[:, 0::2] += torch.arange(T)[:, None] * 2
    scores = torch.linspace(1.0, 0.5, T)
    bt = BoxTracks(boxes=boxes, scores=scores, image_size=(H, W))
    out = viz.draw_boxes(frames, bt, color=(255, 0, 0), thickness=2)
    # Edges are drawn in the box colour, the inside is untouched.
    assert tuple(out[0, 40, 20]) == (255, 0, 0)
    assert tuple(out[0, 40, 60]) == (255, 0, 0)
    assert tuple(out[5, 40, 30]) == (255, 0, 0)  # left edge moved by 10 px in frame 5
    assert not _changed(out[0, 30:50, 25:55], frames[0, 30:50, 25:55]).any()
    # The score label sits above the box: pixels above y1 change only when scores are shown.
    label = _changed(out[0, :22, 20:60], frames[0, :22, 20:60]).sum()
    plain = viz.draw_boxes(frames, bt, color=(255, 0, 0), thickness=2, show_score=False)
    assert label > 20 and _changed(plain[0, :22, 20:60], frames[0, :22, 20:60]).sum() == 0
    # Different scores render differently.
    assert _changed(out[0, :22, 20:60], out[5, :22, 30:70]).any()


def test_annotate_video_from_file_and_array(tmp_path):
    clip = io.write_video(tmp_path / "in.mp4", np.full((T + 3, H, W, 3), 90, np.uint8), fps=10)
    out = viz.annotate_video(clip, _points(), tmp_path / "ann.mp4", trail=3, title="hello")
    info = io.video_info(out)
    # Only the T tracked frames are annotated; fps follows the input.
    assert (info.num_frames, info.width, info.height) == (T, W, H)
    assert info.fps == pytest.approx(10.0)
    back = io.read_video(out)
    assert np.abs(back[0, 14:19, 8:13].astype(int) - 90).max() > 40  # point 0 at frame 0
    # Box tracks through the same function, resized output (tracks rescaled).
    bt = BoxTracks(boxes=torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(T, 1), scores=torch.ones(T),
                   image_size=(H, W))
    out2 = viz.annotate_video(clip, bt, tmp_path / "box.mp4", resize=(H * 2, W * 2), color=(255, 255, 0))
    assert io.video_info(out2).size == (2 * H, 2 * W)
    arr = viz.annotate_video(np.full((T, H, W, 3), 90, np.uint8), _points(), tmp_path / "arr.mp4", fps=5)
    assert io.video_info(arr).num_frames == T
    with pytest.raises(ValueError, match="only 2 frames"):
        viz.annotate_video(clip, _points(), tmp_path / "short.mp4", start=T + 1)
    assert not (tmp_path / "short.mp4").exists()  # no truncated result left behind
    with pytest.raises(ValueError, match="unexpected arguments"):
        viz.annotate_video(clip, bt, tmp_path / "bad.mp4", trail=3)


# ----------------------------------------------------------------------------------------------- legend and band


def _bright(h=96, w=160):
    return np.full((T, h, w, 3), 200, np.uint8)


def _points_on(h=96, w=160):
    """The two points of :func:`_points`, at the same pixels of a larger ``(h, w)`` frame."""
    p = _points()
    return PointTracks(tracks=p.tracks, visibility=p.visibility, visible=p.visible, queries=p.queries,
                       image_size=(h, w))


def test_legend_shows_a_filled_and_a_hollow_symbol_on_a_translucent_band():
    frames = _bright()
    out = viz.draw_points(frames, _points_on(), trail=0, radius=3, legend=True)
    layout = viz.overlay_layout(frames.shape[1:3], legend="hollow")
    y0, y1 = layout["band"]
    assert y1 == frames.shape[1] and 0 < y1 - y0 < frames.shape[1] // 3  # a small band along the bottom
    # Translucent: darker than the frame, but the frame still shows through (not black).
    corner = out[0, y1 - 1, 0].astype(int)
    assert (corner < 200).all() and (corner > 40).all()
    # nothing else changes between the points (point 0 starts at (10, 16), point 1 sits at (70, 40)) and the band
    assert not _changed(out[0, 24:y0, :40], frames[0, 24:y0, :40]).any()
    kinds = [item[0] for item in layout["items"]]
    assert kinds == ["visible", "hollow"]
    (_, (vx, vy), vr, _, vtext), (_, (ox, oy), orad, _, otext) = layout["items"]
    assert (vtext, otext) == ("visible", "occluded")
    # The "visible" symbol is filled: its centre has the legend colour.
    assert tuple(out[0, vy, vx]) == viz.LEGEND_COLOR
    # The "occluded" symbol is a ring: band colour in the middle, legend colour on the rim.
    assert tuple(out[0, oy, ox]) == tuple(corner)
    rim = out[0, oy, ox - orad: ox + orad + 1]
    assert any(tuple(p) == viz.LEGEND_COLOR for p in rim)
    # Legend entries lie inside the band and do not overlap.
    assert y0 <= vy - vr and vy + vr < y1 and vx + vr < ox - orad


def test_dim_and_hidden_occlusion_styles_change_the_legend():
    layout = viz.overlay_layout((96, 160), legend="dim")
    assert [i[0] for i in layout["items"]] == ["visible", "dim"]
    layout = viz.overlay_layout((96, 160), legend="hide")
    assert [i[0] for i in layout["items"]] == ["visible"]
    assert viz.overlay_layout((96, 160)) is None
    with pytest.raises(ValueError, match="legend"):
        viz.overlay_layout((96, 160), legend="ring")


def test_tracks_are_drawn_over_the_band_not_under_it():
    frames = _bright()
    Hb = frames.shape[1]
    t = torch.arange(T, dtype=torch.float32)
    # one visible point sitting inside the band
    tracks = torch.stack([torch.full_like(t, 20.0), torch.full_like(t, Hb - 5.0)], -1)[:, None]
    pts = PointTracks(tracks=tracks, visibility=torch.ones(T, 1), visible=torch.ones(T, 1, dtype=torch.bool),
                      queries=torch.tensor([[0, 20.0, Hb - 5.0]]), image_size=frames.shape[1:3])
    plain = viz.draw_points(frames, pts, trail=0, radius=3, colors=(0, 255, 0))
    labelled = viz.draw_points(frames, pts, trail=0, radius=3, colors=(0, 255, 0), legend=True, title="a title")
    assert tuple(plain[0, Hb - 5, 20]) == (0, 255, 0)
    assert tuple(labelled[0, Hb - 5, 20]) == (0, 255, 0)  # the band did not darken the point
    # the title is on the band (bottom left), not over the top of the frame
    layout = viz.overlay_layout(frames.shape[1:3], title="a title", legend="hollow")
    y0 = layout["band"][0]
    assert _changed(labelled[0, y0:, :60], plain[0, y0:, :60]).any()
    assert not _changed(labelled[0, :y0 - 1], plain[0, :y0 - 1]).any()


def test_long_title_moves_the_legend_to_a_second_row():
    one = viz.overlay_layout((96, 400), title="short", legend="hollow")
    two = viz.overlay_layout((96, 160), title="a rather long title for a narrow frame", legend="hollow")
    assert two["band"][1] - two["band"][0] == 2 * (one["band"][1] - one["band"][0])
    assert two["items"][0][1][1] > two["title"][1]  # legend below the title


def test_annotated_point_video_has_the_legend_by_default(tmp_path):
    frames = _bright()
    out = viz.annotate_video(frames, _points_on(), tmp_path / "a.mp4", fps=5)
    back = io.read_video(out)
    layout = viz.overlay_layout(frames.shape[1:3], legend="hollow")
    (_, (vx, vy), _, _, _), (_, (ox, oy), _, _, _) = layout["items"]
    assert back[0, vy, vx].min() > 200  # filled white dot (lossy video: close, not exact)
    assert back[0, oy, ox].max() < 180  # hollow: the darker band shows through
    y0 = layout["band"][0]
    assert np.abs(back[0, y0 + 1:, :5].astype(int) - 200).min() > 40  # the band, left of the legend
    none = io.read_video(viz.annotate_video(frames, _points_on(), tmp_path / "b.mp4", fps=5, legend=False))
    assert np.abs(none[0, y0 + 1:, :5].astype(int) - 200).max() < 10
    bt = BoxTracks(boxes=torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(T, 1), scores=torch.ones(T),
                   image_size=frames.shape[1:3])
    with pytest.raises(ValueError, match="legend"):
        viz.annotate_video(frames, bt, tmp_path / "c.mp4", legend=True)
