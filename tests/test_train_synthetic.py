"""Synthetic training data: determinism, exact point / occlusion / box ground truth, datasets and readers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import moving_square_video

from trackers.train.data import (
    HELD_OUT_TEXTURES,
    TRAIN_TEXTURES,
    Motion,
    NpzTrackDataset,
    Scene,
    SceneObject,
    SyntheticBoxDataset,
    SyntheticClip,
    SyntheticConfig,
    SyntheticPointDataset,
    VideoFolder,
    add_twin,
    clip_from_scene,
    generate_clip,
    part_boxes,
    point_flags,
    point_tracks,
    render_scene,
    save_clip_npz,
)

SMALL = SyntheticConfig(num_frames=8, height=64, width=64, num_points=64, object_size=(0.15, 0.3))
STILL = SMALL.replace(max_speed=0.0, max_acceleration=0.0, max_rotation=0.0, max_scale_change=0.0,
                      camera_pan=0.0, camera_zoom=0.0)
CLEAN = SMALL.replace(lighting=0.0, motion_blur=0.0, noise=0.0)


# ------------------------------------------------------------------------------------------------ scene helpers


def disc_mask(res: int, radius: float = 0.8) -> np.ndarray:
    """Hard disc of local radius ``radius`` sampled at texel centres (so its edge is known to a texel)."""
    c = -1.0 + 2.0 * (np.arange(res) + 0.5) / res
    return (c[None, :] ** 2 + c[:, None] ** 2 <= radius ** 2).astype(np.float32)


def box_mask(res: int, half: float = 0.8125) -> np.ndarray:
    """Hard square ``|u|, |v| < half`` with ``half`` on a texel edge: bilinear coverage crosses 0.5 exactly there."""
    assert float(half * res / 2).is_integer()
    c = -1.0 + 2.0 * (np.arange(res) + 0.5) / res
    return ((np.abs(c[None, :]) < half) & (np.abs(c[:, None]) < half)).astype(np.float32)


def gradient(h: int, w: int, seed: int) -> np.ndarray:
    """A colour ramp linear in both texel coordinates (bilinear sampling reproduces it exactly)."""
    rng = np.random.default_rng(seed)
    gx, gy = rng.uniform(-1, 1, 3) * 120 / w, rng.uniform(-1, 1, 3) * 120 / h
    j, i = np.meshgrid(np.arange(w), np.arange(h))
    return (128 + gx * (j[..., None] - w / 2) + gy * (i[..., None] - h / 2)).astype(np.float32)


def scene(objects, T=8, H=64, W=64, background=None) -> Scene:
    bg = np.full((H, W, 3), 90.0, np.float32) if background is None else background
    return Scene(num_frames=T, height=H, width=W, background=bg, objects=list(objects))


def sample_bilinear(tex: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """``tex`` ``(h, w, C)`` at fractional texel ``(col, row)`` (texel centres at integers, edges clamped)."""
    h, w = tex.shape[:2]
    col, row = np.clip(col, 0, w - 1), np.clip(row, 0, h - 1)
    c0, r0 = np.minimum(np.floor(col).astype(int), w - 2), np.minimum(np.floor(row).astype(int), h - 2)
    fc, fr = (col - c0)[:, None], (row - r0)[:, None]
    return ((1 - fr) * ((1 - fc) * tex[r0, c0] + fc * tex[r0, c0 + 1])
            + fr * ((1 - fc) * tex[r0 + 1, c0] + fc * tex[r0 + 1, c0 + 1]))


def surface_colour(sc: Scene, owner: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Texture colour each point was sampled from: local ``(u, v)`` -> texel ``((u + 1) w / 2 - 0.5, ...)``."""
    out = np.zeros((len(owner), 3))
    for n, (k, (a, b)) in enumerate(zip(owner, surface)):
        if k < 0:
            ox, oy = sc.background_origin
            tex, col, row = sc.background, a - ox, b - oy
        else:
            tex = sc.objects[k].texture
            h, w = tex.shape[:2]
            col, row = (a + 1) * w / 2 - 0.5, (b + 1) * h / 2 - 0.5
        out[n] = sample_bilinear(np.asarray(tex, np.float64), np.array([col]), np.array([row]))[0]
    return out


def interior(id_map: np.ndarray, tracks: np.ndarray, owner: np.ndarray, margin: int = 2) -> np.ndarray:
    """``(T, N)``: the ``(2 margin + 1)^2`` pixels around each track all belong to the point's own surface."""
    T, H, W = id_map.shape
    px = np.floor(tracks[..., 0] + 0.5).astype(int)
    py = np.floor(tracks[..., 1] + 0.5).astype(int)
    ok = (px >= margin) & (px < W - margin) & (py >= margin) & (py < H - margin)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            t = np.arange(T)[:, None]
            ok &= id_map[t, np.clip(py + dy, 0, H - 1), np.clip(px + dx, 0, W - 1)] == owner[None]
    return ok


def frame_bilinear(video: np.ndarray, t: np.ndarray, xy: np.ndarray) -> np.ndarray:
    out = np.zeros((len(t), 3))
    for n in range(len(t)):
        out[n] = sample_bilinear(video[t[n]].astype(np.float64), xy[n:n + 1, 0], xy[n:n + 1, 1])[0]
    return out


# ------------------------------------------------------------------------------------------------ config


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticConfig(num_frames=0)
    with pytest.raises(ValueError, match="num_objects"):
        SyntheticConfig(num_objects=(4, 2))
    with pytest.raises(ValueError, match="textures.*granite"):
        SyntheticConfig(textures=("noise", "granite"))
    with pytest.raises(ValueError, match="blur_samples"):
        SyntheticConfig(blur_samples=4)
    with pytest.raises(ValueError, match="max_blur_samples"):
        SyntheticConfig(blur_samples=5, max_blur_samples=3)
    with pytest.raises(ValueError, match="occlusion_prob"):
        SyntheticConfig(occlusion_prob=1.5)
    with pytest.raises(ValueError, match="max_speed"):
        SyntheticConfig(max_speed=-1.0)
    with pytest.raises(ValueError, match="seed"):
        generate_clip(-3, SMALL)


def test_wider_preset_is_harder_and_uses_unseen_textures():
    base = SyntheticConfig()
    wide = base.wider()
    assert wide.max_speed > base.max_speed and wide.camera_pan > base.camera_pan
    assert wide.max_rotation > base.max_rotation and wide.occlusion_prob >= base.occlusion_prob
    assert wide.num_objects[1] > base.num_objects[1]
    assert set(wide.textures) == set(HELD_OUT_TEXTURES) and not set(wide.textures) & set(TRAIN_TEXTURES)
    clip = generate_clip(1, SMALL.wider())
    assert clip.video.shape == (8, 64, 64, 3)


# ------------------------------------------------------------------------------------------------ generator


def test_same_seed_is_bit_identical_and_seeds_differ():
    a, b = generate_clip(11, SMALL), generate_clip(11, SMALL)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # element-wise torch ops only: the thread count must not change anything
    try:
        c = generate_clip(11, SMALL)
    finally:
        torch.set_num_threads(threads)
    for f in ("video", "tracks", "visible", "occluded", "out_of_frame", "query_frame", "boxes", "box_visible",
              "object_visible_fraction"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert np.array_equal(getattr(a, f), getattr(c, f)), f
    d = generate_clip(12, SMALL)
    assert not np.array_equal(a.video, d.video)
    assert not np.array_equal(a.tracks, d.tracks)


def test_clip_fields_are_consistent():
    for seed in range(3):
        clip = generate_clip(seed, SMALL)
        T, N = 8, 64
        K = clip.boxes.shape[1]
        assert clip.video.dtype == np.uint8 and clip.video.shape == (T, 64, 64, 3)
        assert clip.tracks.dtype == np.float32 and clip.tracks.shape == (T, N, 2)
        assert clip.visible.shape == clip.occluded.shape == clip.out_of_frame.shape == (T, N)
        assert clip.boxes.shape == (T, K, 4) and clip.box_visible.shape == (T, K)
        assert SMALL.num_objects[0] <= K <= SMALL.num_objects[1]
        assert np.array_equal(clip.visible, ~clip.occluded & ~clip.out_of_frame)
        assert not (clip.occluded & clip.out_of_frame).any()
        # Out of frame exactly when the track's pixel is outside the image.
        x, y = clip.tracks[..., 0], clip.tracks[..., 1]
        outside = (x < -0.5) | (x >= 63.5) | (y < -0.5) | (y >= 63.5)
        assert np.array_equal(outside, clip.out_of_frame)
        # Every point is visible at its query frame, and never before.
        n = np.arange(N)
        assert clip.visible[clip.query_frame, n].all()
        assert all(not clip.visible[:q, i].any() for i, q in enumerate(clip.query_frame))
        q = clip.queries
        assert np.array_equal(q[:, 0], clip.query_frame) and np.array_equal(q[:, 1:], clip.tracks[clip.query_frame, n])
        assert ((clip.object_visible_fraction > 0) == clip.box_visible).all()
        assert (clip.boxes[~clip.box_visible] == 0).all()
        # Both kinds of points are present.
        assert (clip.point_owner == -1).any() and (clip.point_owner >= 0).any()


def test_points_on_static_scene_stay_put():
    clip = generate_clip(4, STILL)
    assert np.allclose(clip.tracks, clip.tracks[:1], atol=1e-4)
    assert np.array_equal(clip.boxes, np.broadcast_to(clip.boxes[:1], clip.boxes.shape))
    assert clip.visible.all(axis=0).sum() == clip.visible.any(axis=0).sum()  # nothing moves: no flicker


def test_moving_points_follow_the_pose():
    """Forward map of an object point = its pose: centre + rotation and scale of the local offset."""
    m = Motion(position=(20.0, 30.0), velocity=(2.0, -1.0), angle=0.3, angular_velocity=0.1, log_scale_rate=0.05)
    obj = SceneObject(texture=np.zeros((16, 16, 3), np.float32), mask=disc_mask(16), radius=(8.0, 4.0), motion=m)
    sc = scene([obj])
    tracks = point_tracks(sc, np.array([0, 0, -1]), np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 7.0]]))
    t = np.arange(8)
    centre = np.stack([20 + 2.0 * t, 30 - 1.0 * t], 1)
    assert np.allclose(tracks[:, 0], centre)
    ang, s = 0.3 + 0.1 * t, np.exp(0.05 * t)
    assert np.allclose(tracks[:, 1], centre + 8.0 * s[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1))
    assert np.allclose(tracks[:, 2], [5.0, 7.0])  # identity camera: background points do not move


def test_point_behind_an_occluder_is_occluded():
    T = 12
    back = SceneObject(texture=gradient(64, 64, 0), mask=box_mask(64, 0.875), radius=(24.0, 24.0),
                       motion=Motion(position=(32.0, 32.0)), depth=2.0)
    front = SceneObject(texture=np.full((64, 64, 3), 250.0, np.float32), mask=disc_mask(64, 0.8),
                        radius=(8.0, 8.0), motion=Motion(position=(0.0, 32.0), velocity=(6.0, 0.0)), depth=1.0)
    sc = scene([back, front], T=T)
    video, ids = render_scene(sc)
    # Points of the back object along the path of the front one, plus one off the path.
    u = np.linspace(-0.8, 0.8, 9)
    surface = np.concatenate([np.stack([u, np.zeros_like(u)], 1), [[0.0, 0.8]]])
    owner = np.zeros(len(surface), np.int64)
    tracks = point_tracks(sc, owner, surface)
    occluded, out = point_flags(ids, tracks, owner)
    assert not out.any()
    # Independent check: distance of each track to the front disc's centre in disc radii (edge at 0.8).
    front_centre = np.stack([6.0 * np.arange(T), np.full(T, 32.0)], 1)
    d = np.linalg.norm(tracks - front_centre[:, None], axis=-1) / 8.0
    assert occluded[d < 0.7].all() and (d < 0.7).sum() > 5
    assert not occluded[d > 0.9].any()
    assert not occluded[:, -1].any()  # off the path: never covered
    # The renderer shows the occluder's colour where the point is occluded.
    t, n = np.nonzero(occluded)
    px, py = np.floor(tracks[t, n] + 0.5).astype(int).T
    assert (video[t, py, px] >= 249).all()
    # Sampled points behave the same: clip_from_scene flags them from the same id map.
    clip = clip_from_scene(sc, num_points=50, object_point_fraction=1.0, seed=0, keep_id_map=True)
    on_back = clip.point_owner == 0
    d = np.linalg.norm(clip.tracks[:, on_back] - front_centre[:, None], axis=-1) / 8.0
    assert clip.occluded[:, on_back][d < 0.7].all() and (d < 0.7).any()


def test_out_of_frame_is_flagged_and_boxes_are_clipped():
    T = 10
    obj = SceneObject(texture=np.full((64, 64, 3), 200.0, np.float32), mask=box_mask(64), radius=(10.0, 10.0),
                      motion=Motion(position=(40.25, 30.0), velocity=(7.5, 0.0)))
    sc = scene([obj], T=T)
    clip = clip_from_scene(sc, num_points=20, seed=1, keep_id_map=True)
    tracks = point_tracks(sc, np.zeros(1, np.int64), np.zeros((1, 2)))[:, 0]
    occluded, out = point_flags(clip.id_map, tracks[:, None], np.zeros(1, np.int64))
    x = 40.25 + 7.5 * np.arange(T)
    assert np.allclose(tracks[:, 0], x)
    assert np.array_equal(out[:, 0], x >= 63.5) and out[:, 0].any() and not out[:, 0].all()
    assert not (occluded & out).any()
    # The square spans x +- 8.125 (edges kept away from pixel centres): the box holds the pixel centres inside,
    # is clipped at the image border and disappears once the square is fully out.
    left, right = x - 8.125, x + 8.125
    assert np.array_equal(clip.box_visible[:, 0], left < 63.5)
    seen = clip.box_visible[:, 0]
    assert np.array_equal(clip.boxes[seen, 0, 0], np.ceil(left[seen]))
    assert np.array_equal(clip.boxes[seen, 0, 2], np.minimum(np.floor(right[seen]) + 1, 64))
    assert (clip.boxes[~seen, 0] == 0).all()
    # The visible fraction drops as the square leaves.
    frac = clip.object_visible_fraction[:, 0]
    expected = np.clip((np.minimum(right, 63.5) - np.minimum(left, 63.5)) / 16.25, 0, 1)
    assert np.allclose(frac, expected, atol=0.05)
    assert frac[0] > 0.97 and frac[-1] == 0


def test_boxes_are_tight_around_visible_pixels():
    for seed in range(4):
        clip = generate_clip(seed, SMALL.replace(num_objects=(3, 5)), keep_id_map=True)
        ids = clip.id_map
        T, K = clip.box_visible.shape
        for t in range(T):
            for k in range(K):
                ys, xs = np.nonzero(ids[t] == k)
                assert clip.box_visible[t, k] == (len(xs) > 0)
                if len(xs):
                    x1, y1, x2, y2 = clip.boxes[t, k]
                    # Pixel i covers [i, i + 1): contained, and every edge touches a visible pixel.
                    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_box_of_a_known_rectangle():
    """Unrotated square of half-size 0.8125 * radius at a known place: the box is the set of pixel centres inside."""
    obj = SceneObject(texture=np.full((96, 96, 3), 30.0, np.float32), mask=box_mask(96), radius=(15.0, 10.0),
                      motion=Motion(position=(30.5, 25.3)))
    clip = clip_from_scene(scene([obj], T=2), num_points=8, seed=0)
    # x in 30.5 -+ 12.1875 = [18.31, 42.69] -> centres 19..42 -> [19, 43);
    # y in 25.3 -+ 8.125 = [17.18, 33.43] -> centres 18..33 -> [18, 34).
    assert np.array_equal(clip.boxes[:, 0], [[19, 18, 43, 34]] * 2)
    # Visible fraction: 24 x 16 visible pixels over the exact area (2 * 0.8125)^2 * 15 * 10 of the square.
    assert np.allclose(clip.object_visible_fraction[:, 0], 24 * 16 / (1.625 ** 2 * 150), atol=1e-5)


def test_visible_points_show_their_texture_colour():
    """With blur, lighting and noise off the frame at a visible track equals the texture where it was sampled."""
    T = 8
    back = SceneObject(texture=gradient(48, 48, 1), mask=disc_mask(48, 0.9), radius=(18.0, 14.0),
                       motion=Motion(position=(30.0, 30.0), velocity=(1.3, 0.4), angle=0.2, angular_velocity=0.05,
                                     log_scale_rate=0.02), depth=2.0)
    front = SceneObject(texture=gradient(40, 40, 2), mask=box_mask(40, 0.85), radius=(9.0, 7.0),
                        motion=Motion(position=(10.0, 20.0), velocity=(3.0, 2.0), angular_velocity=-0.08), depth=1.0)
    sc = scene([back, front], T=T, background=gradient(80, 80, 3))
    sc.background_origin = (-8.0, -8.0)
    sc.camera = Motion(position=(31.5, 31.5), velocity=(0.7, -0.4), log_scale_rate=0.01, anchor_time=3.5)
    clip = clip_from_scene(sc, num_points=300, object_point_fraction=0.6, seed=3, keep_id_map=True)
    ok = clip.visible & interior(clip.id_map, clip.tracks.astype(np.float64), clip.point_owner)
    t, n = np.nonzero(ok)
    assert len(t) > 500 and len(np.unique(clip.point_owner[n])) == 3
    want = surface_colour(sc, clip.point_owner[n], clip.point_surface[n])
    got = frame_bilinear(clip.video, t, clip.tracks[t, n].astype(np.float64))
    assert np.abs(got - want).max() < 1.0  # linear textures: exact up to uint8 rounding
    shifted = frame_bilinear(clip.video, t, clip.tracks[t, n].astype(np.float64) + [2.0, 0.0])
    assert np.abs(shifted - want).mean() > 3.0  # the check is sensitive to a 2-pixel error


def test_generated_textures_match_at_tracks():
    """Random procedural textures: colours at true tracks match the sampled texture far better than shifted ones."""
    for seed in range(2):
        clip = generate_clip(seed, CLEAN.replace(num_points=200), keep_id_map=True)
        from trackers.train.data.synthetic import sample_scene  # the scene generate_clip rendered
        ss = np.random.SeedSequence(seed).spawn(2)[0]
        sc = sample_scene(int(ss.generate_state(1, np.uint64)[0] >> 1), CLEAN.replace(num_points=200))
        ok = clip.visible & interior(clip.id_map, clip.tracks.astype(np.float64), clip.point_owner)
        t, n = np.nonzero(ok)
        want = surface_colour(sc, clip.point_owner[n], clip.point_surface[n])
        true_err = np.abs(frame_bilinear(clip.video, t, clip.tracks[t, n].astype(np.float64)) - want).mean()
        wrong_err = np.abs(frame_bilinear(clip.video, t, clip.tracks[t, n].astype(np.float64) + 3.0) - want).mean()
        assert true_err < 4.0 and wrong_err > 3 * true_err, (true_err, wrong_err)


def test_motion_blur_lighting_and_noise_change_only_the_pixels():
    base = generate_clip(5, CLEAN)
    effects = generate_clip(5, CLEAN.replace(lighting=0.5, motion_blur=1.0, noise=8.0))
    assert not np.array_equal(base.video, effects.video)
    for f in ("tracks", "visible", "boxes", "box_visible"):
        assert np.array_equal(getattr(base, f), getattr(effects, f)), f


def test_motion_blur_spreads_a_moving_edge_over_its_travel():
    def render(exposure: float) -> np.ndarray:
        obj = SceneObject(texture=np.full((64, 64, 3), 255.0, np.float32), mask=box_mask(64), radius=(10.0, 10.0),
                          motion=Motion(position=(20.0, 32.0), velocity=(6.0, 0.0)))
        sc = scene([obj], T=4, background=np.zeros((64, 64, 3), np.float32))
        sc.exposure, sc.blur_samples = exposure, 13
        return clip_from_scene(sc, num_points=4, seed=0)

    sharp, blurred = render(0.0), render(1.0)
    row_sharp, row_blur = sharp.video[2, 32, :, 0].astype(int), blurred.video[2, 32, :, 0].astype(int)
    ramp = lambda row: int(((row > 10) & (row < 245)).sum())  # noqa: E731 -- partly covered pixels
    assert ramp(row_sharp) <= 2 and ramp(row_blur) >= 8  # two edges, each smeared over ~6 px of travel
    assert abs(int(row_blur.sum()) - int(row_sharp.sum())) < 0.05 * row_sharp.sum()  # blur keeps the energy
    assert np.array_equal(sharp.boxes, blurred.boxes) and np.array_equal(sharp.tracks, blurred.tracks)


def test_faster_clips_get_more_blur_samples():
    from trackers.train.data.synthetic import sample_scene

    slow = SMALL.replace(motion_blur=1.0, blur_exposure=(1.0, 1.0), max_speed=0.5, camera_pan=0.0, max_rotation=0.0,
                         max_scale_change=0.0, camera_zoom=0.0)
    fast = slow.replace(max_speed=12.0, camera_pan=6.0)
    n_slow = [sample_scene(s, slow).blur_samples for s in range(5)]
    n_fast = [sample_scene(s, fast).blur_samples for s in range(5)]
    assert max(n_slow) == 3 and min(n_fast) > 3 and max(n_fast) <= fast.max_blur_samples
    assert all(n % 2 == 1 for n in n_slow + n_fast)


# ------------------------------------------------------------------------------------------------ datasets


def _items_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_point_dataset_items_and_workers():
    ds = SyntheticPointDataset(3, SMALL, seed=7)
    items = [ds[i] for i in range(3)]
    it = items[0]
    assert it["video"].shape == (8, 3, 64, 64) and it["video"].dtype == torch.float32
    assert it["tracks"].shape == (8, 64, 2) and it["visible"].dtype == torch.bool
    assert it["queries"].shape == (64, 3)
    n = torch.arange(64)
    assert it["visible"][it["queries"][:, 0].long(), n].all()
    assert not torch.equal(items[0]["video"], items[1]["video"])
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for a, b in zip(items, loader):
        _items_equal(a, b)
    with pytest.raises(IndexError):
        ds[3]


def test_box_dataset_picks_a_visible_object_and_matches_workers():
    ds = SyntheticBoxDataset(2, SMALL, seed=3)
    items = [ds[i] for i in range(2)]
    for it in items:
        assert it["video"].shape == (8, 3, 64, 64) and it["boxes"].shape == (8, 4)
        assert it["box_visible"][0] and it["visible_fraction"][0] >= 0.5
        assert it["box_visible"].float().mean() >= 0.5
        b = it["boxes"][0]
        assert 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for a, b in zip(items, loader):
        _items_equal(a, b)


def test_part_of_a_known_rectangle_moves_with_it():
    """A part (the right half, top half of the local square) of an unrotated square sliding 3 px per frame: its
    box is the pixel centres inside that quarter, shifted by the motion, and its visible fraction is the object's."""
    obj = SceneObject(texture=np.full((96, 96, 3), 30.0, np.float32), mask=box_mask(96), radius=(15.0, 10.0),
                      motion=Motion(position=(30.5, 25.3), velocity=(3.0, 0.0)))
    clip = clip_from_scene(scene([obj], T=3), num_points=8, seed=0, keep_id_map=True)
    sc = scene([obj], T=3)
    boxes, visible, fraction = part_boxes(sc, clip.id_map, 0, centre=(0.5, -0.5), half=(0.5, 0.5))
    # u in [0, 1] -> x in [30.5, 45.5] clipped by the shape at 30.5 + 12.1875; v in [-1, 0] -> y in [15.3, 25.3]
    # clipped at 25.3 - 8.125: centres x 31..42, y 18..25 -> [31, 18, 43, 26) at t = 0, then 3 px further per frame
    assert visible.all()
    assert np.array_equal(boxes, [[31 + 3 * t, 18, 43 + 3 * t, 26] for t in range(3)])
    assert np.allclose(fraction, 12 * 8 / (0.8125 ** 2 * 150), atol=1e-5)
    # the whole local square is the whole object
    whole = part_boxes(sc, clip.id_map, 0, centre=(0.0, 0.0), half=(1.0, 1.0))
    assert np.array_equal(whole[0], clip.boxes[:, 0]) and np.array_equal(whole[1], clip.box_visible[:, 0])
    assert np.allclose(whole[2], clip.object_visible_fraction[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="half-sizes"):
        part_boxes(sc, clip.id_map, 0, centre=(0.0, 0.0), half=(0.0, 0.5))


def test_box_dataset_parts_lie_inside_their_object():
    whole = SyntheticBoxDataset(4, SMALL, seed=3)
    parts = SyntheticBoxDataset(4, SMALL, seed=3, part_prob=1.0)
    n_parts = 0
    for i in range(4):
        a, b = whole[i], parts[i]
        assert not a["is_part"]
        assert torch.equal(a["video"], b["video"]) and a["object_id"] == b["object_id"]  # same clip, same object
        if not b["is_part"]:
            continue
        n_parts += 1
        assert b["box_visible"][0] and b["visible_fraction"][0] >= 0.5
        on = b["box_visible"]
        assert (a["box_visible"][on]).all()  # a part is seen only where its object is
        pb, ob = b["boxes"][on], a["boxes"][on]
        assert (pb[:, :2] >= ob[:, :2]).all() and (pb[:, 2:] <= ob[:, 2:]).all()
        area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
        assert (area(pb) < area(ob)).any()
    assert n_parts >= 2
    with pytest.raises(ValueError, match="part_prob"):
        SyntheticBoxDataset(2, SMALL, part_prob=1.5)


def test_twin_touches_its_target_from_behind_in_the_same_stuff():
    rng = np.random.default_rng(0)
    tex = np.stack([gradient(32, 32, 1)[..., 0], rng.uniform(0, 255, (32, 32)), np.full((32, 32), 40.0)], -1)
    tex = tex.astype(np.float32)
    obj = SceneObject(texture=tex, mask=disc_mask(32), radius=(9.0, 9.0),
                      motion=Motion(position=(32.0, 32.0), velocity=(1.0, 0.5)))
    n_touch = 0
    for seed in range(6):
        sc = scene([obj], background=np.full((4, 4, 3), 250.0, np.float32))
        k2 = add_twin(sc, 0, np.random.default_rng(seed), CLEAN)
        assert k2 == 1 and sc.objects[1].depth > sc.objects[0].depth  # behind the target
        twin = sc.objects[1]
        # the same stuff: the target's texels, rearranged (mirrored tiles), at the target's texel density
        assert set(np.unique(twin.texture[..., 2])) == {40.0}
        assert np.isin(twin.texture[..., 1], tex[..., 1]).all()
        assert twin.texture.shape[0] / twin.radius[1] == pytest.approx(32 / 9.0, rel=0.1)
        alone = clip_from_scene(scene([obj]), num_points=4, seed=0, keep_id_map=True)
        both = clip_from_scene(sc, num_points=4, seed=0, keep_id_map=True)
        # the target's ground truth does not change: the twin is behind it
        assert np.array_equal(alone.boxes[:, 0], both.boxes[:, 0])
        assert np.array_equal(alone.id_map == 0, both.id_map == 0)
        # ... and it touches the target: at the middle frame a twin pixel is next to a target pixel
        ids = both.id_map[len(both.id_map) // 2]
        t, w = ids == 0, ids == 1
        near = np.zeros_like(t)
        near[1:] |= t[:-1]
        near[:-1] |= t[1:]
        near[:, 1:] |= t[:, :-1]
        near[:, :-1] |= t[:, 1:]
        n_touch += bool((near & w).any())
    assert n_touch == 6  # every seed


def test_twin_of_an_empty_shape_is_not_added():
    obj = SceneObject(texture=np.full((8, 8, 3), 100.0, np.float32), mask=np.zeros((8, 8), np.float32),
                      radius=(3.0, 3.0))
    sc = scene([obj])
    assert add_twin(sc, 0, np.random.default_rng(0), CLEAN) is None
    assert len(sc.objects) == 1


def test_box_dataset_twins_keep_the_target_and_its_ground_truth():
    plain = SyntheticBoxDataset(3, SMALL, seed=3)
    twins = SyntheticBoxDataset(3, SMALL, seed=3, twin_prob=1.0)
    for i in range(3):
        a, b = plain[i], twins[i]
        assert not a["has_twin"] and b["has_twin"]
        assert a["object_id"] == b["object_id"]
        for key in ("boxes", "box_visible", "visible_fraction"):
            assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a["video"], b["video"])  # the twin is drawn
    with pytest.raises(ValueError, match="twin_prob"):
        SyntheticBoxDataset(2, SMALL, twin_prob=-0.1)


def _photo_folder(tmp_path, colours):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, c in enumerate(colours):
        img = np.zeros((40, 60, 3), np.uint8) + np.array(c, np.uint8)
        img[::2, ::3] = 255 - img[::2, ::3]  # some structure, so crops differ
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_photo_textures_come_from_the_photos(tmp_path):
    from trackers.train.data.synthetic import photo_bank, photo_texture

    folder = _photo_folder(tmp_path, [(200, 20, 20), (20, 200, 20)])
    bank = photo_bank(str(folder))
    assert len(bank) == 2 and bank[0].shape == (40, 60, 3) and bank[0].dtype == np.uint8
    rng = np.random.default_rng(0)
    for size in [(16, 24), (100, 30), (8, 8)]:
        tex = photo_texture(bank, *size, rng)
        assert tex.shape == size + (3,) and tex.dtype == np.float32
        assert 0 <= tex.min() and tex.max() <= 255
        mean = tex.reshape(-1, 3).mean(0)
        assert mean.max() > 1.5 * np.sort(mean)[1]  # one channel dominates, as in each source image
    # a video file works the same way (frames evenly spaced, at most 64)
    clip = moving_square_video(T=5, H=32, W=40)
    from trackers.io import write_video

    write_video(tmp_path / "v.mp4", clip, fps=5)
    frames = photo_bank(str(tmp_path / "v.mp4"))
    assert len(frames) == 5 and frames[0].shape == (32, 40, 3)
    with pytest.raises(ValueError, match="no such file"):
        photo_bank(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        photo_bank(str(tmp_path / "empty"))


def test_photo_config_changes_only_what_it_should(tmp_path):
    folder = str(_photo_folder(tmp_path, [(200, 20, 20)]))
    # photo_prob 0 draws nothing more: the clips are the ones without photos
    a, b = generate_clip(7, SMALL), generate_clip(7, SMALL.replace(photos=folder, photo_prob=0.0))
    assert np.array_equal(a.video, b.video) and np.array_equal(a.tracks, b.tracks)
    # photo_prob 1: objects and background are red photo crops (CLEAN: no lighting tint or noise to hide it)
    c = generate_clip(7, CLEAN.replace(photos=folder, photo_prob=1.0))
    mean = c.video.reshape(-1, 3).astype(float).mean(0)
    assert mean[0] > 1.5 * mean[1] and mean[0] > 1.5 * mean[2]
    with pytest.raises(ValueError, match="needs photos"):
        SMALL.replace(photo_prob=0.5)
    assert SMALL.replace(photos=folder, photo_prob=0.5).wider().photo_prob == 0.0  # held out: no photos


# ------------------------------------------------------------------------------------------------ readers


def test_npz_round_trip(tmp_path):
    clips = [generate_clip(s, SMALL) for s in (0, 1)]
    for i, c in enumerate(clips):
        save_clip_npz(c, tmp_path / f"clip{i}.npz")
    ds = NpzTrackDataset(tmp_path)
    assert len(ds) == 2
    for c, item in zip(clips, ds):
        assert torch.equal(item["video"], torch.from_numpy(c.video).permute(0, 3, 1, 2).float())
        assert torch.equal(item["tracks"], torch.from_numpy(c.tracks))
        assert torch.equal(item["visible"], torch.from_numpy(c.visible))
        assert torch.equal(item["queries"], torch.from_numpy(c.queries))
        assert torch.equal(item["occluded"], torch.from_numpy(c.occluded))
    with np.load(tmp_path / "clip0.npz") as z:
        assert np.array_equal(z["boxes"], clips[0].boxes) and int(z["seed"]) == 0
    # Synthetic and stored items have the same keys for the shared fields.
    synth = SyntheticPointDataset(1, SMALL)[0]
    assert {"video", "tracks", "visible", "queries"} <= set(synth) & set(ds[0])


def test_npz_reader_rejects_bad_files(tmp_path):
    v = np.zeros((4, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "a_missing.npz", video=v, tracks=np.zeros((4, 5, 2), np.float32))
    ds = NpzTrackDataset(tmp_path)
    with pytest.raises(ValueError, match=r"a_missing\.npz.*visible"):
        ds[0]
    (tmp_path / "a_missing.npz").unlink()
    np.savez(tmp_path / "b_shape.npz", video=v, tracks=np.zeros((4, 5, 2), np.float32), visible=np.ones((4, 6), bool))
    with pytest.raises(ValueError, match=r"b_shape\.npz.*visible must be"):
        NpzTrackDataset(tmp_path)[0]
    (tmp_path / "b_shape.npz").unlink()
    np.savez(tmp_path / "c_tracks.npz", video=v, tracks=np.zeros((3, 5, 2), np.float32), visible=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match=r"c_tracks\.npz.*tracks must be"):
        NpzTrackDataset(tmp_path)[0]
    (tmp_path / "c_tracks.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"c_tracks\.npz"):
        NpzTrackDataset(tmp_path)[0]
    with pytest.raises(ValueError, match="does not exist"):
        NpzTrackDataset(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files"):
        NpzTrackDataset(empty)
    with pytest.raises(ValueError, match=r"\.npz"):
        save_clip_npz(generate_clip(0, SMALL), tmp_path / "clip.bin")


def test_video_folder_lists_and_reads_videos(tmp_path):
    from trackers.io import write_video

    clip = generate_clip(2, SMALL)
    write_video(tmp_path / "b.mp4", clip.video, fps=10)
    write_video(tmp_path / "a.avi", clip.video[:5], fps=10)
    (tmp_path / "notes.txt").write_text("not a video")
    vf = VideoFolder(tmp_path)
    assert [p.name for p in vf.paths] == ["a.avi", "b.mp4"]
    item = vf[1]
    assert item["video"].shape == (8, 3, 64, 64) and item["path"].endswith("b.mp4")
    assert np.abs(vf.read(1).astype(float) - clip.video).mean() < 12  # lossy codec, same picture
    assert vf.read(0).shape[0] == 5
    assert len(VideoFolder(tmp_path, max_frames=3).read(1)) == 3
    with pytest.raises(ValueError, match="no video files"):
        VideoFolder(tmp_path, extensions=[".mkv"])
    with pytest.raises(ValueError, match="not a folder"):
        VideoFolder(tmp_path / "b.mp4")


def test_clip_is_a_dataclass_with_the_documented_fields():
    clip = generate_clip(0, SMALL)
    assert isinstance(clip, SyntheticClip) and clip.seed == 0 and clip.id_map is None
    assert clip.query_frame.dtype == np.int64 and clip.object_visible_fraction.dtype == np.float32


@pytest.mark.parametrize("kind", ["palette", "marble", "patches"])
def test_many_coloured_training_textures(kind):
    """The many-coloured training kinds really carry several distinct colours (what the two-colour kinds lack)."""
    from trackers.train.data.synthetic import make_texture

    tex = make_texture(kind, 96, 96, np.random.default_rng(3))
    assert tex.shape == (96, 96, 3) and tex.dtype == np.float32
    assert 0.0 <= tex.min() and tex.max() <= 255.0
    coarse = np.unique((tex // 64).astype(np.int64).reshape(-1, 3), axis=0)  # 4 bins per channel
    assert len(coarse) >= 4, (kind, len(coarse))
    assert not np.array_equal(tex, make_texture(kind, 96, 96, np.random.default_rng(4)))
