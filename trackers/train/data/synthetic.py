"""Procedural synthetic videos with exact point, box and visibility ground truth (no downloads).

A clip is a textured background seen by a moving camera (pan and zoom) with several textured objects of varied
shapes (ellipses, rectangles, star-shaped polygons, smooth blobs) in front of it. Objects translate, rotate and
scale smoothly, occlude each other by depth and enter or leave the frame; the frames then get lighting changes,
motion blur and sensor noise. Because the whole scene is a handful of analytic maps, the ground truth is exact:

* **Point tracks.** A point is a fixed location on a surface: texture coordinates ``(u, v)`` on an object or
  world coordinates on the background. Its track is that location mapped forward into each frame.
* **Occlusion.** In each frame the renderer also writes an *id map*: the index of the object that owns each pixel
  (``-1`` for the background). A point whose track falls on pixel ``(floor(x + 0.5), floor(y + 0.5))`` is
  *occluded* when that pixel belongs to anything else than its own surface -- a nearer object covers it, or its
  own object's mask does not cover that pixel. It is *out of frame* when that pixel is outside the image, i.e.
  when ``x < -0.5`` or ``x >= W - 0.5`` (same for ``y``). The two flags are exclusive; ``visible`` is
  "in frame and not occluded".
* **Boxes.** The tight box of the object's visible, in-frame pixels in the id map, as ``(x1, y1, x2, y2)`` with
  pixel ``i`` covering ``[i, i + 1)``; all zeros in frames where no pixel of the object is visible.
* **Visible fraction.** Visible pixels divided by the object's full area in that frame (its shape area times the
  area scale of its pose, counting the parts that are hidden or outside the image), clipped to ``[0, 1]``.

Conventions: points are ``(x, y)`` with pixel centres at integer coordinates; boxes are continuous with pixel
``i`` covering ``[i, i + 1)`` (the conventions of :mod:`trackers.video`).

Rendering uses vectorised inverse warps: every object has a local square ``[-1, 1]^2`` carrying its texture and
a coverage mask (the shape, anti-aliased); per frame a 2x3 affine map takes local coordinates to image pixels
(the object's similarity pose with an anisotropic size, followed by the camera's similarity). The output pixel
grid inside the object's bounding box is mapped back through the inverse affine and sampled bilinearly
(``grid_sample``, texel ``j`` of ``n`` covering local ``[-1 + 2j/n, -1 + 2(j+1)/n)``), then composited back to
front by depth. A pixel belongs to an object in the id map when the sampled coverage is at least 0.5; colours are
blended with the coverage, so edges are anti-aliased.

Reproducibility: every random choice comes from ``numpy.random.Generator`` objects seeded from the clip seed
(never the global RNG) and all torch operations used are element-wise, so the same seed gives bit-identical
output in any process and with any number of threads.

Entry points:

* :func:`generate_clip` -- a random clip from a seed and a :class:`SyntheticConfig`;
* :func:`sample_scene` + :func:`clip_from_scene` -- the same in two steps, so a scene can be inspected or edited;
* :class:`Scene`, :class:`SceneObject`, :class:`Motion` -- explicit scene descriptions (tests build exact cases
  with them); :func:`render_scene`, :func:`point_tracks`, :func:`point_flags` for the pieces;
* :class:`SyntheticPointDataset` and :class:`SyntheticBoxDataset` -- torch datasets seeded per index.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "TRAIN_TEXTURES", "HELD_OUT_TEXTURES", "TEXTURE_KINDS", "SHAPES",
    "SyntheticConfig", "SyntheticClip", "Motion", "SceneObject", "Scene",
    "make_texture", "make_shape_mask", "photo_bank", "photo_texture", "sample_scene", "render_scene",
    "point_tracks", "point_flags",
    "clip_from_scene", "generate_clip", "part_boxes", "add_twin", "item_seed",
    "SyntheticPointDataset", "SyntheticBoxDataset",
]

#: Texture kinds used for training by default.
#: The many-coloured kinds (``palette``, ``marble``, ``patches``) were added after a box model trained on the first four
#: two-colour kinds lost its target at once on the many-coloured held-out kinds: colour variety, not the held-out
#: patterns themselves, is what a model needs to have seen.
#: ``grain`` (static texel-scale noise) was added when a point model trained without it lagged behind a square of
#: per-pixel random texture: every other kind's finest detail spans several texels, and sensor noise (which changes
#: every frame) taught it to discount pixel-scale content.
TRAIN_TEXTURES: Tuple[str, ...] = ("noise", "stripes", "checker", "gradient", "palette", "marble", "patches", "grain")
#: Texture kinds kept out of the default training config, used by :meth:`SyntheticConfig.wider` for held-out tests.
HELD_OUT_TEXTURES: Tuple[str, ...] = ("dots", "cells", "plaid")
#: Every texture kind :func:`make_texture` knows.
TEXTURE_KINDS: Tuple[str, ...] = TRAIN_TEXTURES + HELD_OUT_TEXTURES
#: Every object shape :func:`make_shape_mask` knows.
SHAPES: Tuple[str, ...] = ("ellipse", "rectangle", "polygon", "blob")

# Shapes stay inside this radius of the local square so the outermost texels have zero coverage: outside the
# square grid_sample pads with zeros, and the mask must already be zero there for the edge to be continuous.
_SHAPE_EXTENT = 0.94
# Largest texture side (texels); bigger objects are magnified a little instead.
_MAX_TEXTURE = 512
# Pixel jitter for sampled points stays inside the pixel (with room for float rounding), so the pixel a point
# was sampled from is the pixel its track falls on at its sampling frame.
_JITTER = 0.45


# =============================================================================================== configuration


def _check_range(name: str, value, lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    a, b = value
    for v in (a, b):
        if integer and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
            raise ValueError(f"{name} must hold integers, got {value!r}")
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {value!r}")
    if a > b:
        raise ValueError(f"{name} must satisfy low <= high, got {value!r}")
    if a < lo or b > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")


def _check_number(name: str, value, lo: float = 0.0, hi: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < lo or value > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Distribution of synthetic clips. Speeds are in pixels per frame at zoom 1, angles in degrees.

    Attributes:
        num_frames, height, width: clip size ``T x H x W``.
        num_objects: ``(low, high)`` number of objects per clip, both inclusive.
        object_size: ``(low, high)`` object radius as a fraction of ``min(H, W)``.
        aspect_ratio: ``(low, high)`` width/height ratio of an object's bounding square before rotation.
        shapes: shapes to draw objects from (see :data:`SHAPES`).
        textures: texture kinds for objects and background (see :data:`TEXTURE_KINDS`); the weakly textured
            ``gradient`` is used for objects only, unless it is the only kind.
        max_speed: largest object speed (px/frame).
        max_acceleration: largest object acceleration (px/frame^2), so paths curve smoothly.
        max_rotation: largest object angular speed (degrees/frame).
        max_scale_change: largest relative size change per frame (0.02 = up to 2% bigger or smaller per frame).
        camera_pan: largest camera pan speed (px/frame).
        camera_zoom: largest relative zoom change per frame.
        occlusion_prob: probability that an object is steered to cross the path of a farther object around
            the middle of the clip (so occlusions happen for sure, not just by chance).
        enter_leave_prob: probability that an object crosses the image border during the clip.
        lighting: amplitude of the lighting changes (relative brightness; 0 disables): a global gain varying
            smoothly over time with a small colour tint, and a moving linear brightness gradient.
        motion_blur: probability that a clip has motion blur.
        blur_exposure: ``(low, high)`` shutter time as a fraction of the frame interval for blurred clips.
        blur_samples: smallest number of sub-frame renders averaged for motion blur (odd, so the middle one is
            the instant the ground truth describes).
        blur_step: largest image displacement (px) between two consecutive blur sub-frames; clips with faster
            motion get more sub-frames (up to ``max_blur_samples``) so blur looks continuous, not like ghosts.
        max_blur_samples: cap on the sub-frames of one clip (odd), bounding the cost of fast blurred clips.
        noise: largest standard deviation of Gaussian pixel noise (0..255 levels, grey: the same in the three
            channels); each clip draws its own.
        num_points: number of point tracks per clip.
        object_point_fraction: fraction of the points sampled on objects (the rest on the background).
        photos: a video file or a folder of images whose crops can texture objects and background (real image
            statistics: soft edges, low-contrast regions, natural colours), or ``None``.
        photo_prob: probability that an object or the background takes a photo crop instead of a procedural
            texture kind (needs ``photos``).
    """

    num_frames: int = 24
    height: int = 256
    width: int = 256
    num_objects: Tuple[int, int] = (2, 6)
    object_size: Tuple[float, float] = (0.08, 0.25)
    aspect_ratio: Tuple[float, float] = (0.5, 2.0)
    shapes: Tuple[str, ...] = SHAPES
    textures: Tuple[str, ...] = TRAIN_TEXTURES
    max_speed: float = 4.0
    max_acceleration: float = 0.15
    max_rotation: float = 3.0
    max_scale_change: float = 0.02
    camera_pan: float = 2.0
    camera_zoom: float = 0.01
    occlusion_prob: float = 0.5
    enter_leave_prob: float = 0.3
    lighting: float = 0.2
    motion_blur: float = 0.3
    blur_exposure: Tuple[float, float] = (0.3, 1.0)
    blur_samples: int = 3
    blur_step: float = 2.0
    max_blur_samples: int = 9
    noise: float = 3.0
    num_points: int = 256
    object_point_fraction: float = 0.5
    photos: Optional[str] = None
    photo_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_frames", "height", "width", "num_points", "blur_samples", "max_blur_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"height and width must be at least 8 pixels, got {self.height}x{self.width}")
        for name in ("blur_samples", "max_blur_samples"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd (the middle sample is the ground-truth instant), "
                                 f"got {getattr(self, name)}")
        if self.max_blur_samples < self.blur_samples:
            raise ValueError(f"max_blur_samples ({self.max_blur_samples}) must be >= blur_samples "
                             f"({self.blur_samples})")
        _check_number("blur_step", self.blur_step, lo=0.1)
        _check_range("num_objects", self.num_objects, lo=0, integer=True)
        _check_range("object_size", self.object_size, lo=1e-3, hi=2.0)
        if self.object_size[0] <= 0:
            raise ValueError(f"object_size must be positive, got {self.object_size!r}")
        _check_range("aspect_ratio", self.aspect_ratio, lo=0.05, hi=20.0)
        _check_range("blur_exposure", self.blur_exposure, lo=0.0, hi=1.0)
        for name in ("max_speed", "max_acceleration", "max_rotation", "camera_pan", "lighting", "noise"):
            _check_number(name, getattr(self, name))
        _check_number("max_rotation", self.max_rotation, hi=180.0)
        _check_number("max_scale_change", self.max_scale_change, hi=0.5)
        _check_number("camera_zoom", self.camera_zoom, hi=0.5)
        _check_number("lighting", self.lighting, hi=0.9)
        for name in ("occlusion_prob", "enter_leave_prob", "motion_blur", "object_point_fraction", "photo_prob"):
            _check_number(name, getattr(self, name), hi=1.0)
        if self.photo_prob > 0 and not self.photos:
            raise ValueError(f"photo_prob={self.photo_prob} needs photos (a video file or a folder of images)")
        if self.photos is not None and not isinstance(self.photos, str):
            raise ValueError(f"photos must be a path (str) or None, got {self.photos!r}")
        for name, allowed in (("shapes", SHAPES), ("textures", TEXTURE_KINDS)):
            v = getattr(self, name)
            if isinstance(v, str) or not isinstance(v, (tuple, list)) or len(v) == 0:
                raise ValueError(f"{name} must be a non-empty tuple of names from {allowed}, got {v!r}")
            bad = [s for s in v if s not in allowed]
            if bad:
                raise ValueError(f"unknown {name} {bad!r}; choose from {allowed}")

    def replace(self, **changes) -> "SyntheticConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def wider(self) -> "SyntheticConfig":
        """The held-out evaluation preset: a harder distribution than this one.

        Motion (object speed, acceleration, rotation, scaling, camera pan and zoom) is doubled, occlusions and
        border crossings are more frequent (probabilities raised to at least 0.8 and 0.5), there are one to two
        more objects, lighting changes, blur and noise are stronger, and objects and background use the texture
        kinds kept out of training (:data:`HELD_OUT_TEXTURES`) and no photos.
        """
        lo, hi = self.num_objects
        return self.replace(
            num_objects=(lo + 1, hi + 2),
            max_speed=2.0 * self.max_speed,
            max_acceleration=2.0 * self.max_acceleration,
            max_rotation=min(180.0, 2.0 * self.max_rotation),
            max_scale_change=min(0.5, 2.0 * self.max_scale_change),
            camera_pan=2.0 * self.camera_pan,
            camera_zoom=min(0.5, 2.0 * self.camera_zoom),
            occlusion_prob=max(0.8, self.occlusion_prob),
            enter_leave_prob=max(0.5, self.enter_leave_prob),
            lighting=min(0.9, 1.5 * self.lighting),
            motion_blur=max(0.5, self.motion_blur),
            noise=2.0 * self.noise,
            textures=HELD_OUT_TEXTURES,
            photos=None,
            photo_prob=0.0,
        )


# =============================================================================================== output


@dataclass
class SyntheticClip:
    """A rendered clip with its exact ground truth (``T`` frames, ``N`` points, ``K`` objects).

    Attributes:
        video: ``(T, H, W, 3)`` ``uint8`` RGB frames.
        tracks: ``(T, N, 2)`` ``float32`` point positions ``(x, y)``, pixel centres at integers; defined in
            every frame, also where the point is hidden or outside the image.
        visible: ``(T, N)`` bool, in frame and not occluded.
        occluded: ``(T, N)`` bool, in frame but its pixel shows another surface.
        out_of_frame: ``(T, N)`` bool, outside the image.
        query_frame: ``(N,)`` ``int64`` first frame where each point is visible (every point is visible at
            least once).
        boxes: ``(T, K, 4)`` ``float32`` tight ``(x1, y1, x2, y2)`` box of each object's visible in-frame pixels
            (pixel ``i`` covers ``[i, i + 1)``); zeros where ``box_visible`` is False.
        box_visible: ``(T, K)`` bool, the object has at least one visible pixel.
        object_visible_fraction: ``(T, K)`` ``float32`` visible pixels over the object's full area.
        seed: the seed the clip was generated from.
        point_owner: ``(N,)`` ``int64`` object index of each point, ``-1`` for the background.
        point_surface: ``(N, 2)`` ``float64`` fixed surface coordinates of each point: local ``(u, v)`` in
            ``[-1, 1]^2`` for objects, world ``(x, y)`` for the background.
        id_map: ``(T, H, W)`` ``int16`` owner of each pixel (``-1`` background), kept only on request.
    """

    video: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray
    occluded: np.ndarray
    out_of_frame: np.ndarray
    query_frame: np.ndarray
    boxes: np.ndarray
    box_visible: np.ndarray
    object_visible_fraction: np.ndarray
    seed: int
    point_owner: Optional[np.ndarray] = None
    point_surface: Optional[np.ndarray] = None
    id_map: Optional[np.ndarray] = None

    @property
    def queries(self) -> np.ndarray:
        """``(N, 3)`` ``float32`` rows ``(t, x, y)``: each point at its query frame."""
        n = np.arange(self.tracks.shape[1])
        xy = self.tracks[self.query_frame, n]
        return np.concatenate([self.query_frame[:, None].astype(np.float32), xy], axis=1).astype(np.float32)


# =============================================================================================== scene


@dataclass(frozen=True)
class Motion:
    """A smooth similarity trajectory, evaluated at any (also fractional) time ``t``:

    * position ``p(t) = position + velocity * dt + acceleration * dt^2 / 2`` with ``dt = t - anchor_time``;
    * angle ``angle + angular_velocity * dt`` (radians, counter-clockwise in image axes, i.e. x toward y);
    * scale ``exp(log_scale + log_scale_rate * dt)``.

    For an object it is the pose of its local square in world coordinates. For the camera, ``position`` is the
    world point seen at the image centre, the angle is the camera roll and the scale is the zoom (image pixels
    per world unit).
    """

    position: Tuple[float, float] = (0.0, 0.0)
    velocity: Tuple[float, float] = (0.0, 0.0)
    acceleration: Tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    angular_velocity: float = 0.0
    log_scale: float = 0.0
    log_scale_rate: float = 0.0
    anchor_time: float = 0.0

    def at(self, times: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(positions (T, 2), angles (T,), scales (T,))`` in float64 at the given times."""
        dt = np.asarray(times, dtype=np.float64) - self.anchor_time
        p = (np.asarray(self.position, np.float64) + dt[:, None] * np.asarray(self.velocity, np.float64)
             + 0.5 * dt[:, None] ** 2 * np.asarray(self.acceleration, np.float64))
        return p, self.angle + self.angular_velocity * dt, np.exp(self.log_scale + self.log_scale_rate * dt)


@dataclass
class SceneObject:
    """One object: a textured local square ``[-1, 1]^2`` whose coverage mask gives the shape.

    Attributes:
        texture: ``(h, w, 3)`` float colours in ``[0, 255]`` over the local square (row ``i`` at local
            ``v = -1 + 2 (i + 0.5) / h``, column ``j`` at ``u = -1 + 2 (j + 0.5) / w``).
        mask: ``(h, w)`` coverage in ``[0, 1]``; the object owns a pixel where the bilinearly sampled coverage
            is at least 0.5. Must be zero on the outermost texels.
        radius: ``(rx, ry)`` half-size of the local square in world units at scale 1.
        motion: pose of the local square over time (see :class:`Motion`).
        depth: larger is farther; objects are drawn from the farthest to the nearest.
        shape: shape name, for information only.
    """

    texture: np.ndarray
    mask: np.ndarray
    radius: Tuple[float, float]
    motion: Motion = field(default_factory=Motion)
    depth: float = 0.0
    shape: str = "custom"


@dataclass
class Scene:
    """Everything needed to render a clip; the rendering and its ground truth are deterministic functions of it.

    Attributes:
        num_frames, height, width: clip size.
        background: ``(Hb, Wb, 3)`` float colours in ``[0, 255]``; texel ``(i, j)`` has its centre at world
            ``(origin_x + j, origin_y + i)`` (one texel per world unit; mirrored beyond its border).
        background_origin: world position ``(x, y)`` of the centre of texel ``(0, 0)``.
        camera: camera trajectory (see :class:`Motion`); ``None`` is the identity camera (world = image).
        objects: the objects; index ``k`` is the object id in boxes and the id map.
        gain: optional ``(T, 3)`` per-frame multiplicative colour gain (lighting).
        light_gradient: optional ``(T, 2)`` relative brightness slope along x and y per half image size.
        exposure: shutter time as a fraction of the frame interval (0 = no motion blur).
        blur_samples: odd number of sub-frame renders averaged when ``exposure > 0``.
        noise_std: standard deviation of the Gaussian pixel noise (0..255 levels).
        noise_seed: seed of the noise.
    """

    num_frames: int
    height: int
    width: int
    background: np.ndarray
    background_origin: Tuple[float, float] = (0.0, 0.0)
    camera: Optional[Motion] = None
    objects: List[SceneObject] = field(default_factory=list)
    gain: Optional[np.ndarray] = None
    light_gradient: Optional[np.ndarray] = None
    exposure: float = 0.0
    blur_samples: int = 3
    noise_std: float = 0.0
    noise_seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        T, H, W = self.num_frames, self.height, self.width
        for name, v in (("num_frames", T), ("height", H), ("width", W)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Scene.{name} must be a positive integer, got {v!r}")
        bg = np.asarray(self.background)
        if bg.ndim != 3 or bg.shape[2] != 3 or bg.shape[0] < 1 or bg.shape[1] < 1:
            raise ValueError(f"Scene.background must be (Hb, Wb, 3), got shape {bg.shape}")
        for k, obj in enumerate(self.objects):
            tex, mask = np.asarray(obj.texture), np.asarray(obj.mask)
            if tex.ndim != 3 or tex.shape[2] != 3:
                raise ValueError(f"Scene.objects[{k}].texture must be (h, w, 3), got shape {tex.shape}")
            if mask.shape != tex.shape[:2]:
                raise ValueError(f"Scene.objects[{k}].mask must be {tex.shape[:2]} like its texture, "
                                 f"got shape {mask.shape}")
            if len(obj.radius) != 2 or min(obj.radius) <= 0:
                raise ValueError(f"Scene.objects[{k}].radius must be two positive numbers, got {obj.radius!r}")
        for name, v in (("gain", self.gain), ("light_gradient", self.light_gradient)):
            want = (T, 3) if name == "gain" else (T, 2)
            if v is not None and np.shape(v) != want:
                raise ValueError(f"Scene.{name} must have shape {want}, got {np.shape(v)}")
        if not 0.0 <= self.exposure <= 1.0:
            raise ValueError(f"Scene.exposure must lie in [0, 1], got {self.exposure!r}")
        if self.blur_samples < 1 or self.blur_samples % 2 == 0:
            raise ValueError(f"Scene.blur_samples must be a positive odd integer, got {self.blur_samples!r}")
        if self.noise_std < 0:
            raise ValueError(f"Scene.noise_std must be >= 0, got {self.noise_std!r}")
        if len(self.objects) > np.iinfo(np.int16).max:
            raise ValueError(f"too many objects for the int16 id map: {len(self.objects)}")

    def camera_matrices(self, times: np.ndarray) -> np.ndarray:
        """``(T, 2, 3)`` float64 world -> image affine maps at ``times``."""
        times = np.asarray(times, dtype=np.float64)
        out = np.zeros((len(times), 2, 3))
        if self.camera is None:
            out[:, 0, 0] = out[:, 1, 1] = 1.0
            return out
        c, phi, z = self.camera.at(times)
        # image = z R(-phi) (world - c) + image centre: the image turns opposite to the camera roll.
        cos, sin = np.cos(phi) * z, np.sin(phi) * z
        out[:, 0, 0], out[:, 0, 1] = cos, sin
        out[:, 1, 0], out[:, 1, 1] = -sin, cos
        centre = np.array([(self.width - 1) / 2.0, (self.height - 1) / 2.0])
        out[:, :, 2] = centre - np.einsum("tij,tj->ti", out[:, :, :2], c)
        return out

    def object_matrices(self, k: int, times: np.ndarray) -> np.ndarray:
        """``(T, 2, 3)`` float64 local ``(u, v)`` -> image affine maps of object ``k`` at ``times``."""
        obj = self.objects[k]
        p, theta, s = obj.motion.at(times)
        rx, ry = float(obj.radius[0]), float(obj.radius[1])
        lin = np.empty((len(p), 2, 2))
        cos, sin = np.cos(theta) * s, np.sin(theta) * s
        lin[:, 0, 0], lin[:, 0, 1] = cos * rx, -sin * ry
        lin[:, 1, 0], lin[:, 1, 1] = sin * rx, cos * ry
        cam = self.camera_matrices(times)
        out = np.empty((len(p), 2, 3))
        out[:, :, :2] = cam[:, :, :2] @ lin
        out[:, :, 2] = np.einsum("tij,tj->ti", cam[:, :, :2], p) + cam[:, :, 2]
        return out

    def surface_matrices(self, times: np.ndarray) -> np.ndarray:
        """``(K + 1, T, 2, 3)`` surface -> image maps: objects ``0..K-1``, then the background (world)."""
        mats = [self.object_matrices(k, times) for k in range(len(self.objects))]
        mats.append(self.camera_matrices(times))
        return np.stack(mats)


def _invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of 2x3 affine maps (``(..., 2, 3)``)."""
    lin_inv = np.linalg.inv(m[..., :2])
    out = np.empty_like(m)
    out[..., :2] = lin_inv
    out[..., 2] = -np.einsum("...ij,...j->...i", lin_inv, m[..., 2])
    return out


def _apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``m`` ``(..., 2, 3)`` applied to ``pts`` ``(..., 2)``."""
    return np.einsum("...ij,...j->...i", m[..., :2], pts) + m[..., 2]


# =============================================================================================== textures


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic upsampling of ``(C, gh, gw)`` to ``(C, height, width)``."""
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None]
    return F.interpolate(t, size=(height, width), mode="bicubic", align_corners=False)[0].numpy()


def _fractal(rng: np.random.Generator, channels: int, height: int, width: int, cell: float,
             persistence: float = 0.55) -> np.ndarray:
    """Multi-octave value noise ``(height, width, channels)`` in ``[0, 1]``; the coarsest cells are ``cell`` texels."""
    out = np.zeros((channels, height, width), np.float32)
    amp = 1.0
    while True:
        gh = max(2, int(round(height / cell)) + 1)
        gw = max(2, int(round(width / cell)) + 1)
        out += amp * _upsample(rng.random((channels, gh, gw), dtype=np.float32), height, width)
        amp *= persistence
        cell /= 2.0
        if cell < 1.5:
            break
    lo = out.min(axis=(1, 2), keepdims=True)
    hi = out.max(axis=(1, 2), keepdims=True)
    return ((out - lo) / np.maximum(hi - lo, 1e-6)).transpose(1, 2, 0)


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(10.0, 245.0, size=(n, 3)).astype(np.float32)


def _coords(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    return xx.astype(np.float32), yy.astype(np.float32)


def _stripes(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, angle: float) -> np.ndarray:
    """Smooth-to-sharp stripes in ``[0, 1]`` across direction ``angle``."""
    period = rng.uniform(4.0, 20.0)
    d = xx * math.cos(angle) + yy * math.sin(angle)
    s = np.sin(2 * math.pi * d / period + rng.uniform(0, 2 * math.pi))
    sharp = rng.uniform(1.0, 6.0)
    return 0.5 + 0.5 * np.tanh(sharp * s) / math.tanh(sharp)


def make_texture(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``(height, width, 3)`` ``float32`` texture with values in ``[0, 255]``.

    Kinds: ``noise`` (coloured multi-octave value noise), ``stripes`` (gratings of random period, angle and
    sharpness), ``checker`` (rotated checkerboard), ``gradient`` (a linear colour ramp with faint detail, a
    weakly textured hard case), ``palette`` (smooth noise cut into 4-12 flat regions of random colours, like
    camouflage), ``marble`` (turbulent bands through a ramp of 3-6 random colours), ``patches`` (a collage of
    rotated rectangles of random colours), ``grain`` (static per-texel noise over a smooth ramp, like sand, gravel
    or distant grass); held out by default: ``dots`` (random disks on a noisy base), ``cells``
    (Voronoi cells with dark borders), ``plaid`` (two crossing gratings). All kinds except ``gradient`` carry
    some fine noise so that points on them can be tracked.
    """
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; choose from {TEXTURE_KINDS}")
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise ValueError(f"texture size must be positive, got {height}x{width}")
    xx, yy = _coords(h, w)
    a, b, c = _colours(rng, 3)
    gap = float(np.linalg.norm(b - a))
    if gap < 100.0:  # two similar main colours make a nearly flat, untrackable texture: push them apart
        direction = (b - a) / gap if gap > 1e-3 else np.array([1.0, -1.0, 1.0], np.float32) / math.sqrt(3.0)
        b = np.clip(a + 100.0 * direction, 0.0, 255.0).astype(np.float32)
        a = np.clip(b - 100.0 * direction, 0.0, 255.0).astype(np.float32)
    detail = _fractal(rng, 3, h, w, cell=rng.uniform(6.0, 16.0)) - 0.5
    if kind == "noise":
        t = _fractal(rng, 1, h, w, cell=rng.uniform(12.0, 48.0))
        out = a + (b - a) * t + 70.0 * detail
    elif kind == "stripes":
        s = _stripes(rng, xx, yy, rng.uniform(0, math.pi))[..., None]
        out = a + (b - a) * s + 35.0 * detail
    elif kind == "checker":
        size, ang = rng.uniform(4.0, 20.0), rng.uniform(0, math.pi / 2)
        xr = xx * math.cos(ang) + yy * math.sin(ang)
        yr = -xx * math.sin(ang) + yy * math.cos(ang)
        s = ((np.floor(xr / size) + np.floor(yr / size)) % 2)[..., None]
        out = a + (b - a) * s + 35.0 * detail
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * math.pi)
        d = xx * math.cos(ang) + yy * math.sin(ang)
        s = ((d - d.min()) / max(float(d.max() - d.min()), 1e-6))[..., None]
        out = a + (b - a) * s + 12.0 * detail
    elif kind == "palette":
        k = int(rng.integers(4, 13))
        t = _fractal(rng, 1, h, w, cell=rng.uniform(16.0, 64.0))[..., 0]
        levels = np.minimum((t * k).astype(np.int64), k - 1)  # t spans [0, 1]: every colour is used
        out = _colours(rng, k)[levels] + 30.0 * detail
    elif kind == "marble":
        k = int(rng.integers(3, 7))
        ang = rng.uniform(0, 2 * math.pi)
        d = (xx * math.cos(ang) + yy * math.sin(ang)) / rng.uniform(10.0, 40.0)
        turb = rng.uniform(2.0, 8.0) * _fractal(rng, 1, h, w, cell=rng.uniform(16.0, 64.0))[..., 0]
        phase = (0.5 + 0.5 * np.sin(d + turb)) * (k - 1)  # position along the colour ramp
        i0 = np.minimum(phase.astype(np.int64), k - 2)
        f = (phase - i0)[..., None]
        ramp = _colours(rng, k)
        out = ramp[i0] * (1 - f) + ramp[i0 + 1] * f + 30.0 * detail
    elif kind == "patches":
        out = _colours(rng, 1)[0] + 0.0 * xx[..., None] + 40.0 * detail
        for _ in range(max(1, int(h * w / rng.uniform(150.0, 500.0)))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            half = rng.uniform(2.0, 14.0, size=2)
            ang = rng.uniform(0, math.pi)
            r = float(np.hypot(*half)) + 1.0
            x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
            y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
            u = np.abs(dx * math.cos(ang) + dy * math.sin(ang))
            v = np.abs(-dx * math.sin(ang) + dy * math.cos(ang))
            alpha = np.clip(np.minimum(half[0] - u, half[1] - v) + 0.5, 0.0, 1.0)[..., None]  # anti-aliased edge
            out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + _colours(rng, 1)[0] * alpha
    elif kind == "grain":
        t = _fractal(rng, 1, h, w, cell=rng.uniform(16.0, 64.0))
        grain = rng.random((h, w, 3 if rng.uniform() < 0.5 else 1), dtype=np.float32) - 0.5  # one value per texel
        out = a + (b - a) * t + rng.uniform(60.0, 140.0) * grain + 20.0 * detail
    elif kind == "dots":
        out = a + 40.0 * detail
        n = max(1, int(h * w / rng.uniform(60.0, 200.0)))
        centres = rng.uniform(0, 1, size=(n, 2)) * np.array([w, h])
        radii = rng.uniform(1.5, 8.0, size=n)
        cols = _colours(rng, n)
        for (cx, cy), r, col in zip(centres, radii, cols):
            x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
            y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
            if x0 >= x1 or y0 >= y1:
                continue
            dist = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy)
            alpha = np.clip(r - dist + 0.5, 0.0, 1.0)[..., None]  # one-texel anti-aliased rim
            out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + col * alpha
    elif kind == "cells":
        out = _cells(rng, xx, yy) + 30.0 * detail
    else:  # plaid
        s1 = _stripes(rng, xx, yy, rng.uniform(0, math.pi))[..., None]
        s2 = _stripes(rng, xx, yy, rng.uniform(0, math.pi))[..., None]
        out = (a + (b - a) * s1) * (1 - 0.5 * s2) + c * 0.5 * s2 + 25.0 * detail
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _scene_texture(cfg: "SyntheticConfig", kinds, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A photo crop with probability ``cfg.photo_prob``, else a procedural texture of a random kind in ``kinds``."""
    # no extra random draw without photos, so clips of configs without photos stay what they always were
    if cfg.photo_prob > 0 and rng.uniform() < cfg.photo_prob:
        return photo_texture(photo_bank(cfg.photos), height, width, rng)
    return make_texture(str(rng.choice(kinds)), height, width, rng)


#: Largest number of images kept from one photo source (frames of a video are taken evenly spaced).
_MAX_PHOTOS = 64
_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_PHOTO_BANKS: Dict[str, Tuple[np.ndarray, ...]] = {}


def photo_bank(source: str) -> Tuple[np.ndarray, ...]:
    """The images of a photo source (``(H, W, 3)`` uint8 each): evenly spaced frames of a video file, or the image
    files of a folder in name order; at most 64, loaded once per process."""
    import os

    key = os.path.abspath(os.fspath(source))
    bank = _PHOTO_BANKS.get(key)
    if bank is not None:
        return bank
    if os.path.isdir(key):
        from trackers.train.data.sot_datasets import read_image

        names = sorted(n for n in os.listdir(key) if n.lower().endswith(_PHOTO_EXTENSIONS))
        if not names:
            raise ValueError(f"photo folder {key} has no images ({', '.join(_PHOTO_EXTENSIONS)})")
        pick = np.linspace(0, len(names) - 1, min(len(names), _MAX_PHOTOS)).round().astype(int)
        images = [read_image(os.path.join(key, names[i])) for i in np.unique(pick)]
    elif os.path.isfile(key):
        from trackers.io import read_video

        frames = np.asarray(read_video(key))
        pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), _MAX_PHOTOS)).round().astype(int))
        images = [np.ascontiguousarray(frames[i]) for i in pick]
    else:
        raise ValueError(f"photos: no such file or folder: {source}")
    bank = tuple(images)
    _PHOTO_BANKS[key] = bank
    return bank


def photo_texture(bank: Tuple[np.ndarray, ...], height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(height, width, 3)`` float32 texture cut from a random image of ``bank``: a crop of random scale and
    place (mirrored half of the time), resized, with a random per-channel gain."""
    img = bank[int(rng.integers(len(bank)))]
    ih, iw = img.shape[:2]
    scale = rng.uniform(0.5, 1.5)
    ch = min(ih, max(4, int(round(height * scale))))
    cw = min(iw, max(4, int(round(width * scale))))
    # keep the crop's aspect when the image is too small for it
    if ch / max(height, 1) < cw / max(width, 1):
        cw = min(iw, max(4, int(round(ch * width / max(height, 1)))))
    else:
        ch = min(ih, max(4, int(round(cw * height / max(width, 1)))))
    y0 = int(rng.integers(ih - ch + 1))
    x0 = int(rng.integers(iw - cw + 1))
    crop = torch.from_numpy(np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])).permute(2, 0, 1)[None].float()
    out = F.interpolate(crop, size=(int(height), int(width)), mode="bilinear", align_corners=False,
                        antialias=ch > height or cw > width)[0].permute(1, 2, 0).numpy()
    if rng.uniform() < 0.5:
        out = out[:, ::-1]
    out = out * rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _cells(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Voronoi cells (one jittered seed per grid cell, nearest of the 3x3 neighbouring seeds) with dark borders."""
    h, w = xx.shape
    size = rng.uniform(8.0, 24.0)
    gh, gw = int(math.ceil(h / size)) + 2, int(math.ceil(w / size)) + 2
    jitter = rng.random((2, gh, gw))
    sx = ((np.arange(gw)[None, :] - 1 + jitter[0]) * size).astype(np.float32).ravel()
    sy = ((np.arange(gh)[:, None] - 1 + jitter[1]) * size).astype(np.float32).ravel()
    cols = _colours(rng, gh * gw)
    ci, cj = (yy // size).astype(np.int64) + 1, (xx // size).astype(np.int64) + 1
    best = np.full((h, w), np.inf, np.float32)
    second = np.full((h, w), np.inf, np.float32)
    owner = np.zeros((h, w), np.int64)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            idx = np.clip(ci + di, 0, gh - 1) * gw + np.clip(cj + dj, 0, gw - 1)
            d = (xx - sx[idx]) ** 2 + (yy - sy[idx]) ** 2  # squared distances: the order is all that matters here
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            owner = np.where(closer, idx, owner)
            best = np.where(closer, d, best)
    border = np.clip((np.sqrt(second) - np.sqrt(best)) / 2.0, 0.0, 1.0)[..., None]  # ~2-texel dark seams
    return cols[owner] * (0.35 + 0.65 * border)


# =============================================================================================== shapes


def _inside(shape: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    e = _SHAPE_EXTENT
    if shape == "ellipse":
        return u * u + v * v <= e * e
    if shape == "rectangle":
        return (np.abs(u) <= e) & (np.abs(v) <= e)
    if shape == "polygon":
        # Star-shaped around the centre: sorted random angles with random radii, so edges never cross.
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n) * 0.6 + np.arange(n) * (2 * math.pi / n) * 0.4)
        rad = rng.uniform(0.55, 1.0, n) * e
        px, py = rad * np.cos(ang), rad * np.sin(ang)
        inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
        for i in range(n):  # even-odd rule, one edge at a time
            x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
            if y1 == y2:
                continue
            crosses = (y1 > v) != (y2 > v)
            inside ^= crosses & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
        return inside
    if shape == "blob":
        # Radius as a smooth periodic function of the angle: a few low-frequency harmonics.
        ks = np.arange(2, 6)
        amps = rng.uniform(0, 0.25, len(ks)) / ks ** 0.5
        phases = rng.uniform(0, 2 * math.pi, len(ks))
        # Tabulated finely and interpolated: evaluating the harmonics at every supersample costs 5x more.
        fine = np.linspace(-math.pi, math.pi, 1441)
        table = 1.0 + (amps * np.cos(ks * fine[:, None] + phases)).sum(-1)
        table *= e / table.max()
        return np.hypot(u, v) <= np.interp(np.arctan2(v, u), fine, table)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def make_shape_mask(shape: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage ``(height, width)`` ``float32`` in ``[0, 1]`` of a random ``shape`` over the local square.

    Coverage is the fraction of supersamples inside the shape (4x4 per texel, 2x2 for big masks); the shape
    stays within radius 0.94 of the centre so the outermost texels are empty.
    """
    h, w = int(height), int(width)
    if h < 4 or w < 4:
        raise ValueError(f"shape masks need at least 4x4 texels, got {height}x{width}")
    ss = 4 if max(h, w) <= 160 else 2
    u = -1.0 + 2.0 * (np.arange(w * ss) + 0.5) / (w * ss)
    v = -1.0 + 2.0 * (np.arange(h * ss) + 0.5) / (h * ss)
    inside = _inside(shape, u[None, :], v[:, None], rng)
    inside = np.broadcast_to(inside, (h * ss, w * ss))
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)


# =============================================================================================== sampling


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def sample_scene(seed: int, config: SyntheticConfig = SyntheticConfig()) -> Scene:
    """Draw a random :class:`Scene` from ``config``; the same seed gives the same scene.

    Geometry (camera, objects, textures) is drawn before the appearance effects (lighting, blur, noise), so
    switching effects on or off in the config leaves a seed's geometry, and so its ground truth, unchanged.
    """
    rng = np.random.default_rng(seed)
    cfg = config
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    t_mid = (T - 1) / 2.0
    centre = np.array([(W - 1) / 2.0, (H - 1) / 2.0])
    span = max(T - 1, 1)

    pan = rng.uniform(0, cfg.camera_pan) * _unit(rng.uniform(0, 2 * math.pi))
    camera = Motion(
        position=tuple(centre), velocity=tuple(pan),
        acceleration=tuple(rng.uniform(-1, 1, 2) * 0.5 * cfg.camera_pan / span),
        log_scale_rate=float(rng.uniform(-1, 1) * math.log1p(cfg.camera_zoom)), anchor_time=t_mid,
    )
    scene = Scene(num_frames=T, height=H, width=W, background=np.zeros((1, 1, 3), np.float32), camera=camera)
    # Slightly past both ends of the clip, so sub-frame renders for motion blur stay covered.
    t_ext = np.linspace(-0.5, T - 0.5, 2 * T + 1)

    def to_world(t: float, q: np.ndarray) -> np.ndarray:
        return _apply_affine(_invert_affine(scene.camera_matrices(np.array([t])))[0], q)

    zoom = np.exp(camera.log_scale_rate * (t_ext - t_mid))
    num = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    depths = rng.permutation(num).astype(np.float64)
    placed: List[int] = []
    objects: List[Optional[SceneObject]] = [None] * num
    for k in np.argsort(-depths, kind="stable"):  # far to near, so occluders are placed after what they hide
        shape = str(rng.choice(cfg.shapes))
        r = rng.uniform(*cfg.object_size) * min(H, W)
        aspect = math.exp(rng.uniform(math.log(cfg.aspect_ratio[0]), math.log(cfg.aspect_ratio[1])))
        radius = (r * math.sqrt(aspect), r / math.sqrt(aspect))
        speed = rng.uniform(0, cfg.max_speed)
        direction = _unit(rng.uniform(0, 2 * math.pi))
        mode = "free"
        if placed and rng.random() < cfg.occlusion_prob:
            mode = "occlude"
        elif rng.random() < cfg.enter_leave_prob:
            mode = "border"
        if mode == "occlude":
            # Be over a farther object's centre around mid-clip: a guaranteed crossing.
            t_a = rng.uniform(0.25, 0.75) * span
            target = objects[placed[int(rng.integers(len(placed)))]]
            p_target = target.motion.at(np.array([t_a]))[0][0]
            position = p_target + rng.normal(0, 0.2, 2) * min(target.radius)
        elif mode == "border":
            # Centre on the image border mid-clip, moving across it (inward or outward).
            t_a = rng.uniform(0.3, 0.7) * span
            side = int(rng.integers(4))
            normal = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]][side], np.float64)
            along = rng.uniform(0.1, 0.9)
            q = np.array([[-0.5, along * (H - 1)], [W - 0.5, along * (H - 1)],
                          [along * (W - 1), -0.5], [along * (W - 1), H - 0.5]][side])
            position = to_world(t_a, q)
            ang = math.atan2(normal[1], normal[0]) + rng.uniform(-math.pi / 4, math.pi / 4)
            direction = _unit(ang) * (1 if rng.random() < 0.5 else -1)
            speed = rng.uniform(0.5, 1.0) * cfg.max_speed
        else:
            t_a = rng.uniform(0, span)
            position = to_world(t_a, rng.uniform(0.1, 0.9, 2) * np.array([W - 1, H - 1]))
        motion = Motion(
            position=tuple(position), velocity=tuple(speed * direction),
            acceleration=tuple(rng.uniform(0, cfg.max_acceleration) * _unit(rng.uniform(0, 2 * math.pi))),
            angle=float(rng.uniform(0, 2 * math.pi)),
            angular_velocity=float(math.radians(rng.uniform(-1, 1) * cfg.max_rotation)),
            log_scale_rate=float(rng.uniform(-1, 1) * math.log1p(cfg.max_scale_change)), anchor_time=float(t_a),
        )
        # Texels no bigger than image pixels at the largest magnification, so textures are never blurred.
        mag = float((motion.at(t_ext)[2] * zoom).max())
        th = int(np.clip(math.ceil(2 * radius[1] * mag), 8, _MAX_TEXTURE))
        tw = int(np.clip(math.ceil(2 * radius[0] * mag), 8, _MAX_TEXTURE))
        texture = _scene_texture(cfg, cfg.textures, th, tw, rng)
        mask = make_shape_mask(shape, th, tw, rng)
        objects[k] = SceneObject(texture=texture, mask=mask, radius=radius, motion=motion,
                                 depth=float(depths[k]), shape=shape)
        placed.append(int(k))
    scene.objects = list(objects)

    # Background: exactly the world region the camera sees over the clip (plus a margin), capped in size.
    corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [-0.5, H - 0.5], [W - 0.5, H - 0.5]])
    world = _apply_affine(_invert_affine(scene.camera_matrices(t_ext))[:, None], corners[None])
    lo = np.floor(world.reshape(-1, 2).min(0)) - 2
    hi = np.ceil(world.reshape(-1, 2).max(0)) + 2
    size = np.minimum(hi - lo + 1, 4 * max(H, W)).astype(int)
    # A flat gradient behind everything would leave half the points untrackable: objects only, when possible.
    kinds = [k for k in cfg.textures if k != "gradient"] or list(cfg.textures)
    scene.background = _scene_texture(cfg, kinds, int(size[1]), int(size[0]), rng)
    scene.background_origin = (float(lo[0]), float(lo[1]))

    if cfg.lighting > 0:
        t = np.arange(T, dtype=np.float64)
        amp = rng.uniform(0, cfg.lighting)
        freq = rng.uniform(0.1, 1.0) * 2 * math.pi / span
        tint = rng.uniform(-1, 1, 3) * cfg.lighting / 4
        base = 1.0 + amp * np.sin(freq * t + rng.uniform(0, 2 * math.pi))
        scene.gain = np.clip(base[:, None] + tint[None, :], 0.05, None)
        slope = rng.uniform(0, cfg.lighting)
        turn = rng.uniform(0, 2 * math.pi) + rng.uniform(-1, 1) * t / span
        scene.light_gradient = slope * np.stack([np.cos(turn), np.sin(turn)], axis=1)
    if rng.random() < cfg.motion_blur:
        scene.exposure = float(rng.uniform(*cfg.blur_exposure))
        steps = math.ceil(_max_blur_travel(scene, scene.exposure) / cfg.blur_step)
        scene.blur_samples = int(np.clip(steps + 1 + steps % 2, cfg.blur_samples, cfg.max_blur_samples))
    if cfg.noise > 0:
        scene.noise_std = float(rng.uniform(0, cfg.noise))
    scene.noise_seed = int(rng.integers(2 ** 63 - 1))
    return scene


def _max_blur_travel(scene: Scene, exposure: float) -> float:
    """Largest image displacement (px) of any object corner or background point during one exposure."""
    T, H, W = scene.num_frames, scene.height, scene.width
    times = np.arange(T, dtype=np.float64)
    lo, hi = times - exposure / 2, times + exposure / 2
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    travel = 0.0
    for k in range(len(scene.objects)):
        a = _apply_affine(scene.object_matrices(k, lo)[:, None], square[None])
        b = _apply_affine(scene.object_matrices(k, hi)[:, None], square[None])
        travel = max(travel, float(np.linalg.norm(a - b, axis=-1).max()))
    # The background point seen at each image corner at time t, seen at the start and the end of the exposure.
    corners = np.array([[0.0, 0.0], [W - 1.0, 0.0], [0.0, H - 1.0], [W - 1.0, H - 1.0]])
    world = _apply_affine(_invert_affine(scene.camera_matrices(times))[:, None], corners[None])
    a = _apply_affine(scene.camera_matrices(lo)[:, None], world)
    b = _apply_affine(scene.camera_matrices(hi)[:, None], world)
    return max(travel, float(np.linalg.norm(a - b, axis=-1).max()))


# =============================================================================================== rendering


def _affine_grid(inv: np.ndarray, x0: np.ndarray, y0: np.ndarray, h: int, w: int) -> torch.Tensor:
    """``(T, h, w, 2)`` sampling grid: ``inv[t]`` applied to the pixel centres of the ``h x w`` window at
    ``(x0[t], y0[t])``.

    Computed as an outer sum of a per-column and a per-row term written straight into the grid's two channels:
    ``F.affine_grid`` goes through a batched matmul with an inner size of 3, which is several times slower on CPU.
    """
    a = torch.from_numpy(np.asarray(inv, np.float32))
    cx = torch.from_numpy(np.asarray(x0, np.float32))[:, None] + torch.arange(w, dtype=torch.float32)[None]
    cy = torch.from_numpy(np.asarray(y0, np.float32))[:, None] + torch.arange(h, dtype=torch.float32)[None]
    grid = torch.empty((len(a), h, w, 2), dtype=torch.float32)
    for c in range(2):
        col = a[:, c, 0, None] * cx + a[:, c, 2, None]  # (T, w)
        row = a[:, c, 1, None] * cy  # (T, h)
        torch.add(col[:, None, :], row[:, :, None], out=grid[..., c])
    return grid


def _render_layers(scene: Scene, times: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """Composite the scene at ``times``: colours ``(3, T, H, W)`` float32 and id map ``(T, H, W)`` int16.

    Channels come first so the background's single ``grid_sample`` over all frames needs no copy.
    """
    T, H, W = len(times), scene.height, scene.width
    zeros = np.zeros(T)

    # Background: image -> world -> texture coordinates normalised for grid_sample (align_corners=False).
    bg = np.asarray(scene.background, np.float32)
    hb, wb = bg.shape[:2]
    ox, oy = scene.background_origin
    norm = np.array([[2.0 / wb, 0.0, (1.0 - 2.0 * ox) / wb - 1.0], [0.0, 2.0 / hb, (1.0 - 2.0 * oy) / hb - 1.0]])
    to_world = _invert_affine(scene.camera_matrices(times))
    to_tex = np.empty_like(to_world)
    to_tex[..., :2] = norm[:, :2] @ to_world[..., :2]
    to_tex[..., 2] = to_world[..., 2] @ norm[:, :2].T + norm[:, 2]
    grid = _affine_grid(to_tex, zeros, zeros, H, W)
    tex = torch.from_numpy(np.ascontiguousarray(bg.transpose(2, 0, 1)))[None]
    rgb = F.grid_sample(tex, grid.reshape(1, T * H, W, 2), mode="bilinear", padding_mode="reflection",
                        align_corners=False)[0].reshape(3, T, H, W)
    ids = torch.full((T, H, W), -1, dtype=torch.int16)

    order = sorted(range(len(scene.objects)), key=lambda k: -scene.objects[k].depth)
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    for k in order:
        obj = scene.objects[k]
        fwd = scene.object_matrices(k, times)
        corners = _apply_affine(fwd[:, None], square[None])  # (T, 4, 2)
        # Pixels whose centre may see the square (one pixel of slack for bilinear sampling).
        x0 = np.clip(np.floor(corners[..., 0].min(1)) - 1, 0, W).astype(int)
        x1 = np.clip(np.ceil(corners[..., 0].max(1)) + 2, 0, W).astype(int)
        y0 = np.clip(np.floor(corners[..., 1].min(1)) - 1, 0, H).astype(int)
        y1 = np.clip(np.ceil(corners[..., 1].max(1)) + 2, 0, H).astype(int)
        live = np.flatnonzero((x1 > x0) & (y1 > y0))
        if len(live) == 0:
            continue
        # One grid_sample for all frames over the largest window; each frame then uses its own part.
        hm, wm = int((y1 - y0)[live].max()), int((x1 - x0)[live].max())
        tex4 = np.concatenate([np.asarray(obj.texture, np.float32), np.asarray(obj.mask, np.float32)[..., None]], 2)
        tex4 = torch.from_numpy(np.ascontiguousarray(tex4.transpose(2, 0, 1)))[None]
        grid = _affine_grid(_invert_affine(fwd[live]), x0[live], y0[live], hm, wm)
        samples = F.grid_sample(tex4.expand(len(live), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        alphas = samples[:, 3].clamp_(0.0, 1.0)
        for i, t in enumerate(live):
            h, w = y1[t] - y0[t], x1[t] - x0[t]
            alpha = alphas[i, :h, :w]
            rgb[:, t, y0[t]:y1[t], x0[t]:x1[t]].lerp_(samples[i, :3, :h, :w], alpha)
            ids[t, y0[t]:y1[t], x0[t]:x1[t]].masked_fill_(alpha >= 0.5, k)
    return rgb, ids


def render_scene(scene: Scene) -> Tuple[np.ndarray, np.ndarray]:
    """Render ``scene``: video ``(T, H, W, 3)`` ``uint8`` and id map ``(T, H, W)`` ``int16`` (``-1`` background).

    Motion blur averages ``blur_samples`` renders spread over the exposure centred on each frame time; the id map
    (and so all ground truth) is that of the centre instant. Lighting multiplies the colours by the per-frame
    gain and by ``1 + gx * (x - cx) / r + gy * (y - cy) / r`` (``r`` half the larger image side). Noise is grey
    (the same in the three channels: a third of the cost of colour noise, which matters at 1.5 M pixels per
    clip), Gaussian, drawn from a ``torch.Generator`` seeded with ``noise_seed``. The result is rounded to
    ``uint8``.
    """
    scene.validate()
    T, H, W = scene.num_frames, scene.height, scene.width
    times = np.arange(T, dtype=np.float64)
    rgb, ids = _render_layers(scene, times)
    if scene.exposure > 0 and scene.blur_samples > 1:
        offsets = np.linspace(-scene.exposure / 2, scene.exposure / 2, scene.blur_samples)
        for off in offsets:
            if off != 0.0:  # the centre sample (offset 0 for odd counts) is already rendered
                rgb += _render_layers(scene, times + off)[0]
        rgb /= scene.blur_samples
    if scene.gain is not None:
        rgb *= torch.from_numpy(np.asarray(scene.gain, np.float32)).T[:, :, None, None]
    if scene.light_gradient is not None:
        r = max(H, W) / 2.0
        slope = torch.from_numpy(np.asarray(scene.light_gradient, np.float32))
        ramp_x = (torch.arange(W, dtype=torch.float32) - (W - 1) / 2.0) / r
        ramp_y = (torch.arange(H, dtype=torch.float32) - (H - 1) / 2.0) / r
        factor = 1.0 + slope[:, 0, None, None] * ramp_x[None, None, :] + slope[:, 1, None, None] * ramp_y[None, :, None]
        rgb *= factor.clamp_min_(0.0)[None]
    if scene.noise_std > 0:
        gen = torch.Generator().manual_seed(int(scene.noise_seed))
        rgb += torch.randn((1, T, H, W), generator=gen).mul_(float(scene.noise_std))
    # + 0.5 then truncation is rounding to nearest for the non-negative values left after clamping.
    video = rgb.add_(0.5).clamp_(0.0, 255.0).permute(1, 2, 3, 0).to(torch.uint8).contiguous()
    return video.numpy(), ids.numpy()


# =============================================================================================== ground truth


def point_tracks(scene: Scene, owner: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Forward-map surface points into every frame: ``(T, N, 2)`` float64 ``(x, y)``.

    Args:
        owner: ``(N,)`` object index of each point, ``-1`` for the background.
        surface: ``(N, 2)`` local ``(u, v)`` for object points, world ``(x, y)`` for background points.
    """
    owner = np.asarray(owner, np.int64)
    surface = np.asarray(surface, np.float64)
    K = len(scene.objects)
    if owner.ndim != 1 or surface.shape != (len(owner), 2):
        raise ValueError(f"owner must be (N,) and surface (N, 2), got {owner.shape} and {surface.shape}")
    if len(owner) and (owner.min() < -1 or owner.max() >= K):
        raise ValueError(f"point owners must lie in [-1, {K - 1}], got values in [{owner.min()}, {owner.max()}]")
    mats = scene.surface_matrices(np.arange(scene.num_frames, dtype=np.float64))  # (K+1, T, 2, 3)
    per_point = mats[np.where(owner < 0, K, owner)]  # (N, T, 2, 3)
    return _apply_affine(per_point, surface[:, None]).transpose(1, 0, 2)


def point_flags(id_map: np.ndarray, tracks: np.ndarray, owner: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(occluded, out_of_frame)``, both ``(T, N)`` bool, from the id map at each track's pixel.

    The pixel of position ``(x, y)`` is ``(floor(x + 0.5), floor(y + 0.5))``. Out of frame when it is outside
    the image; occluded when it is inside but owned by another surface than the point's.
    """
    T, H, W = id_map.shape
    px = np.floor(tracks[..., 0] + 0.5).astype(np.int64)
    py = np.floor(tracks[..., 1] + 0.5).astype(np.int64)
    inside = (px >= 0) & (px < W) & (py >= 0) & (py < H)
    t = np.broadcast_to(np.arange(T)[:, None], px.shape)
    seen = id_map[t, np.clip(py, 0, H - 1), np.clip(px, 0, W - 1)]
    occluded = inside & (seen != np.asarray(owner)[None, :])
    return occluded, ~inside


def _object_boxes(scene: Scene, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    T, H, W = ids.shape
    K = len(scene.objects)
    boxes = np.zeros((T, K, 4), np.float32)
    fraction = np.zeros((T, K), np.float32)
    visible = np.zeros((T, K), bool)
    times = np.arange(T, dtype=np.float64)
    for k in range(K):
        m = ids == k
        rows, cols = m.any(axis=2), m.any(axis=1)  # (T, H), (T, W)
        count = m.sum(axis=(1, 2))
        seen = count > 0
        visible[:, k] = seen
        boxes[seen, k, 0] = cols[seen].argmax(1)
        boxes[seen, k, 1] = rows[seen].argmax(1)
        boxes[seen, k, 2] = W - cols[seen, ::-1].argmax(1)
        boxes[seen, k, 3] = H - rows[seen, ::-1].argmax(1)
        mask = np.asarray(scene.objects[k].mask)
        local_area = float(mask.sum()) * 4.0 / mask.size  # the local square has area 4
        det = np.abs(np.linalg.det(scene.object_matrices(k, times)[:, :, :2]))
        fraction[:, k] = np.clip(count / np.maximum(local_area * det, 1e-9), 0.0, 1.0)
    return boxes, visible, fraction


def _sample_points(scene: Scene, ids: np.ndarray, num_points: int, object_fraction: float,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Points drawn from visible pixels (uniform frame, then uniform pixel), so each is visible at least once.

    Object points pick a visible object uniformly, then one of its visible pixels in any frame; background points
    pick a background pixel. Each point is jittered inside its pixel and mapped back to surface coordinates.
    """
    T, H, W = ids.shape
    flat = ids.reshape(-1)
    obj_idx = np.flatnonzero(flat >= 0)
    bg_idx = np.flatnonzero(flat < 0)
    n_obj = int(round(num_points * object_fraction)) if len(obj_idx) else 0
    if len(bg_idx) == 0:
        n_obj = num_points
    picks = np.empty(num_points, np.int64)
    owner = np.full(num_points, -1, np.int64)
    if n_obj:
        obj_owner = flat[obj_idx]
        order = np.argsort(obj_owner, kind="stable")
        obj_idx, obj_owner = obj_idx[order], obj_owner[order]
        present, starts, counts = np.unique(obj_owner, return_index=True, return_counts=True)
        which = rng.integers(len(present), size=n_obj)
        picks[:n_obj] = obj_idx[starts[which] + rng.integers(counts[which])]
        owner[:n_obj] = present[which]
    if num_points > n_obj:
        picks[n_obj:] = bg_idx[rng.integers(len(bg_idx), size=num_points - n_obj)]
    t, rem = np.divmod(picks, H * W)
    py, px = np.divmod(rem, W)
    xy = np.stack([px, py], axis=1) + rng.uniform(-_JITTER, _JITTER, size=(num_points, 2))
    mats = _invert_affine(scene.surface_matrices(np.arange(T, dtype=np.float64)))  # image -> surface
    K = len(scene.objects)
    surface = _apply_affine(mats[np.where(owner < 0, K, owner), t], xy)
    return owner, surface


def clip_from_scene(scene: Scene, *, num_points: int = 256, object_point_fraction: float = 0.5, seed: int = 0,
                    keep_id_map: bool = False) -> SyntheticClip:
    """Render ``scene`` and sample ``num_points`` point tracks.

    ``object_point_fraction`` of the points go on objects when any object is visible (all of them when no
    background pixel is visible). ``seed`` seeds the point sampling and is stored as ``clip.seed``;
    ``keep_id_map`` stores the id map in the clip.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if not 0.0 <= object_point_fraction <= 1.0:
        raise ValueError(f"object_point_fraction must lie in [0, 1], got {object_point_fraction}")
    video, ids = render_scene(scene)
    rng = np.random.default_rng(seed)
    owner, surface = _sample_points(scene, ids, num_points, object_point_fraction, rng)
    tracks = point_tracks(scene, owner, surface)
    occluded, out = point_flags(ids, tracks, owner)
    visible = ~occluded & ~out
    boxes, box_visible, fraction = _object_boxes(scene, ids)
    return SyntheticClip(
        video=video, tracks=tracks.astype(np.float32), visible=visible, occluded=occluded, out_of_frame=out,
        query_frame=visible.argmax(axis=0).astype(np.int64), boxes=boxes, box_visible=box_visible,
        object_visible_fraction=fraction, seed=int(seed), point_owner=owner, point_surface=surface,
        id_map=ids if keep_id_map else None,
    )


def generate_clip(seed: int, config: SyntheticConfig = SyntheticConfig(), *,
                  keep_id_map: bool = False) -> SyntheticClip:
    """A random clip with its ground truth; the same ``(seed, config)`` gives bit-identical output."""
    return _generate(seed, config, keep_id_map)[1]


def _generate(seed: int, config: SyntheticConfig, keep_id_map: bool) -> Tuple[Scene, SyntheticClip]:
    """:func:`generate_clip` that also returns the scene it rendered."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    scene_ss, point_ss = np.random.SeedSequence(int(seed)).spawn(2)
    scene = sample_scene(int(scene_ss.generate_state(1, np.uint64)[0] >> 1), config)
    clip = clip_from_scene(scene, num_points=config.num_points, object_point_fraction=config.object_point_fraction,
                           seed=int(point_ss.generate_state(1, np.uint64)[0] >> 1), keep_id_map=keep_id_map)
    clip.seed = int(seed)
    return scene, clip


def part_boxes(scene: Scene, ids: np.ndarray, k: int, centre: Tuple[float, float],
               half: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of a *part* of object ``k``: the rectangle ``|u - cu| <= hu, |v - cv| <= hv`` of its local square.

    The part moves rigidly with the object, so its box in frame ``t`` is the box of the visible pixels of object
    ``k`` (``ids[t] == k``) whose local coordinates fall in the rectangle. Returns ``boxes`` ``(T, 4)`` xyxy
    (pixel ``i`` covers ``[i, i + 1)``, zeros where not visible), ``visible`` ``(T,)`` and the visible
    ``fraction`` ``(T,)`` of the part's area (shape coverage inside the rectangle).
    """
    T = ids.shape[0]
    cu, cv = float(centre[0]), float(centre[1])
    hu, hv = float(half[0]), float(half[1])
    if hu <= 0 or hv <= 0:
        raise ValueError(f"part half-sizes must be positive, got {half}")
    times = np.arange(T, dtype=np.float64)
    fwd = scene.object_matrices(k, times)
    inv = _invert_affine(fwd)  # image -> local
    mask = np.asarray(scene.objects[k].mask)
    mh, mw = mask.shape
    tu = -1.0 + 2.0 * (np.arange(mw) + 0.5) / mw
    tv = -1.0 + 2.0 * (np.arange(mh) + 0.5) / mh
    in_rect = (np.abs(tv - cv) <= hv)[:, None] & (np.abs(tu - cu) <= hu)[None, :]
    local_area = float(mask[in_rect].sum()) * 4.0 / mask.size
    det = np.abs(np.linalg.det(fwd[:, :, :2]))
    boxes = np.zeros((T, 4), np.float32)
    visible = np.zeros(T, bool)
    fraction = np.zeros(T, np.float32)
    for t in range(T):
        py, px = np.nonzero(ids[t] == k)
        if len(px) == 0:
            continue
        # pixel (px, py) sits at image coordinates (px, py), the convention of the point tracks
        u = inv[t, 0, 0] * px + inv[t, 0, 1] * py + inv[t, 0, 2]
        v = inv[t, 1, 0] * px + inv[t, 1, 1] * py + inv[t, 1, 2]
        sel = (np.abs(u - cu) <= hu) & (np.abs(v - cv) <= hv)
        if not sel.any():
            continue
        x, y = px[sel], py[sel]
        boxes[t] = (x.min(), y.min(), x.max() + 1, y.max() + 1)
        visible[t] = True
        fraction[t] = min(1.0, sel.sum() / max(local_area * det[t], 1e-9))
    return boxes, visible, fraction


def _random_part(mask: np.ndarray, size: Tuple[float, float],
                 rng: np.random.Generator) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """A random rectangle inside the shape's bounding box (local coordinates): each side a ``size`` fraction of
    the shape's, centred on a random covered texel and shifted to stay inside the box."""
    mh, mw = mask.shape
    rows, cols = np.nonzero(mask >= 0.5)
    u0, u1 = -1.0 + 2.0 * cols.min() / mw, -1.0 + 2.0 * (cols.max() + 1) / mw
    v0, v1 = -1.0 + 2.0 * rows.min() / mh, -1.0 + 2.0 * (rows.max() + 1) / mh
    hu = 0.5 * (u1 - u0) * rng.uniform(*size)
    hv = 0.5 * (v1 - v0) * rng.uniform(*size)
    i = int(rng.integers(len(rows)))
    cu = -1.0 + 2.0 * (cols[i] + 0.5) / mw
    cv = -1.0 + 2.0 * (rows[i] + 0.5) / mh
    cu = float(np.clip(cu, u0 + hu, u1 - hu))
    cv = float(np.clip(cv, v0 + hv, v1 - hv))
    return (cu, cv), (hu, hv)


def _mirror_tile(texture: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``texture`` continued to ``(height, width)`` by mirrored tiling (seamless, same texel size), from a random
    offset: the same stuff, not the same picture."""
    h, w = texture.shape[:2]
    tile = np.concatenate([texture, texture[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    oy, ox = int(rng.integers(2 * h)), int(rng.integers(2 * w))
    rows = (oy + np.arange(height)) % (2 * h)
    cols = (ox + np.arange(width)) % (2 * w)
    return np.ascontiguousarray(tile[rows][:, cols])


def _extreme(mask: np.ndarray, radius: Tuple[float, float], angle: float, direction: np.ndarray) -> np.ndarray:
    """The covered texel of a shape (``mask`` over its local square, half-sizes ``radius``, turned by ``angle``)
    that reaches farthest along the unit ``direction``: its offset from the centre at scale 1, ``(2,)``."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask >= 0.5)
    u = (-1.0 + 2.0 * (cols + 0.5) / w) * radius[0]
    v = (-1.0 + 2.0 * (rows + 0.5) / h) * radius[1]
    c, s = math.cos(angle), math.sin(angle)
    x, y = c * u - s * v, s * u + c * v
    i = int(np.argmax(x * direction[0] + y * direction[1]))
    return np.array([x[i], y[i]])


def add_twin(scene: Scene, k: int, rng: np.random.Generator, config: SyntheticConfig) -> Optional[int]:
    """Add a *twin* of object ``k`` to ``scene``: another shape of the same stuff (its texture continued by
    mirrored tiling), touching ``k`` from just behind it and drifting slowly against it; returns its index (or
    ``None``, leaving the scene unchanged, when ``k`` covers no texel or no shape could be drawn on the twin's
    small texture).

    A head on a body of the same fur, a sleeve on a shirt: a target's look-alike neighbour is where a small
    tracker grows its box over the union. The twin is drawn behind ``k`` (``k``'s visibility and ground truth do
    not change) but in front of everything that was behind ``k``.
    """
    obj = scene.objects[k]
    if not (np.asarray(obj.mask) >= 0.5).any():
        return None
    T = scene.num_frames
    t_mid = (T - 1) / 2.0
    grow = rng.uniform(0.8, 2.0)
    aspect = math.exp(rng.uniform(math.log(config.aspect_ratio[0]), math.log(config.aspect_ratio[1])))
    r = math.sqrt(obj.radius[0] * obj.radius[1]) * grow
    radius = (r * math.sqrt(aspect), r / math.sqrt(aspect))
    th, tw = obj.texture.shape[:2]
    # the target's texel density, so the twin's stuff looks the same size
    hh = int(np.clip(round(th * radius[1] / obj.radius[1]), 8, _MAX_TEXTURE))
    ww = int(np.clip(round(tw * radius[0] / obj.radius[0]), 8, _MAX_TEXTURE))
    texture = _mirror_tile(obj.texture, hh, ww, rng)
    for _ in range(4):  # a thin shape on a small texture can cover no texel: draw again
        mask = make_shape_mask(str(rng.choice(config.shapes)), hh, ww, rng)
        if (mask >= 0.5).any():
            break
    else:
        return None

    m = obj.motion
    p, theta, scale = m.at(np.array([t_mid]))
    p, theta, scale = p[0], float(theta[0]), float(scale[0])
    # Along a random direction d: the twin's point nearest the target (its extreme along -d) goes inside the target,
    # 50-90 % of the way from the target's centre to its own extreme along d, so the two touch and the twin's body
    # lies beyond the target (its overlap is hidden behind it).
    d = _unit(rng.uniform(0, 2 * math.pi))
    twin_angle = theta + rng.uniform(-0.5, 0.5)
    reach = rng.uniform(0.5, 0.9) * _extreme(obj.mask, obj.radius, theta, d) - _extreme(mask, radius, twin_angle, -d)
    drift = rng.uniform(0, 0.25 * config.max_speed) * _unit(rng.uniform(0, 2 * math.pi))
    velocity = np.asarray(m.velocity) + np.asarray(m.acceleration) * (t_mid - m.anchor_time) + drift
    motion = Motion(
        position=tuple(p + scale * reach), velocity=tuple(velocity), acceleration=m.acceleration,
        angle=twin_angle, angular_velocity=m.angular_velocity + math.radians(rng.uniform(-1, 1)),
        log_scale=math.log(scale),
        log_scale_rate=m.log_scale_rate + float(rng.uniform(-1, 1) * math.log1p(config.max_scale_change)),
        anchor_time=t_mid,
    )
    scene.objects.append(SceneObject(texture=texture, mask=mask, radius=radius, motion=motion,
                                     depth=obj.depth + 0.5, shape="twin"))
    return len(scene.objects) - 1


# =============================================================================================== datasets


def item_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The clip seed of dataset item ``index`` (a hash of ``(seed, index, attempt)``, independent of workers)."""
    return int(np.random.SeedSequence([int(seed), int(index), int(attempt)]).generate_state(1, np.uint64)[0] >> 1)


def _video_tensor(video: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(video).permute(0, 3, 1, 2).float()


class _SeededDataset(torch.utils.data.Dataset):
    def __init__(self, num_clips: int, config: SyntheticConfig, seed: int) -> None:
        if isinstance(num_clips, bool) or not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}")
        if not isinstance(config, SyntheticConfig):
            raise ValueError(f"config must be a SyntheticConfig, got {type(config).__name__}")
        self.num_clips, self.config, self.seed = int(num_clips), config, int(seed)

    def __len__(self) -> int:
        return self.num_clips

    def _check_index(self, index: int) -> int:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self.num_clips} clips")
        return index % self.num_clips


class SyntheticPointDataset(_SeededDataset):
    """``num_clips`` synthetic clips for point tracking; item ``i`` depends only on ``(seed, i)``.

    Items are dicts of tensors: ``video`` ``(T, 3, H, W)`` float in ``[0, 255]``, ``tracks`` ``(T, N, 2)``,
    ``visible`` / ``occluded`` / ``out_of_frame`` ``(T, N)`` bool, ``queries`` ``(N, 3)`` rows ``(t, x, y)``
    at each point's first visible frame, and ``seed`` (the clip seed).
    """

    def __init__(self, num_clips: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> None:
        super().__init__(num_clips, config, seed)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        clip = generate_clip(item_seed(self.seed, self._check_index(index)), self.config)
        return {
            "video": _video_tensor(clip.video),
            "tracks": torch.from_numpy(clip.tracks),
            "visible": torch.from_numpy(clip.visible),
            "occluded": torch.from_numpy(clip.occluded),
            "out_of_frame": torch.from_numpy(clip.out_of_frame),
            "queries": torch.from_numpy(clip.queries),
            "seed": torch.tensor(clip.seed, dtype=torch.int64),
        }


class SyntheticBoxDataset(_SeededDataset):
    """Whole synthetic sequences for single-object box tracking; item ``i`` depends only on ``(seed, i)``.

    For each item one object is chosen (uniformly among the eligible ones) that is visible in the first frame
    with at least ``min_initial_visibility`` of its area and has a visible pixel in at least
    ``min_visible_frames`` of the frames. A clip with no eligible object is replaced by the next attempt's clip
    (up to ``max_attempts``; after that the object with the best first-frame visibility is used).

    With probability ``part_prob`` the target is instead a *part* of that object: a rectangle of its surface, each
    side a random ``part_size`` fraction of the shape's, that moves rigidly with it (:func:`part_boxes`). Real
    targets are often parts of something larger (a head, a tie on a shirt); without parts every synthetic target
    is a whole object on a contrasting background, and a model learns to grow its box to the whole object around
    the template. A part that fails the visibility rules above falls back to the whole object.

    With probability ``twin_prob`` the chosen object gets a *twin* first (:func:`add_twin`): a look-alike
    neighbour of the same stuff touching it from behind, so the box must stay on the target and not grow over
    both. The clip is rendered again with it; the target's ground truth is unchanged.

    Items: ``video`` ``(T, 3, H, W)`` float in ``[0, 255]``, ``boxes`` ``(T, 4)`` xyxy (pixel ``i`` covers
    ``[i, i + 1)``; zeros where not visible), ``box_visible`` ``(T,)`` bool, ``visible_fraction`` ``(T,)``,
    ``object_id``, ``is_part`` and ``has_twin`` (bools) and ``seed``.
    """

    def __init__(self, num_clips: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0, *,
                 min_initial_visibility: float = 0.5, min_visible_frames: float = 0.5, max_attempts: int = 10,
                 part_prob: float = 0.0, part_size: Tuple[float, float] = (0.3, 0.7), twin_prob: float = 0.0):
        super().__init__(num_clips, config, seed)
        _check_number("min_initial_visibility", min_initial_visibility, hi=1.0)
        _check_number("min_visible_frames", min_visible_frames, hi=1.0)
        _check_number("part_prob", part_prob, hi=1.0)
        _check_range("part_size", part_size, 0.05, 1.0)
        _check_number("twin_prob", twin_prob, hi=1.0)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.min_initial_visibility = float(min_initial_visibility)
        self.min_visible_frames = float(min_visible_frames)
        self.max_attempts = int(max_attempts)
        self.part_prob = float(part_prob)
        self.part_size = (float(part_size[0]), float(part_size[1]))
        self.twin_prob = float(twin_prob)

    def _eligible(self, first: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Targets usable for an item: ``first`` visible fraction at frame 0 (per target), ``visible`` ``(T, ...)``."""
        return (first >= self.min_initial_visibility) & (visible.mean(0) >= self.min_visible_frames)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        index = self._check_index(index)
        # Points are not needed here; one keeps the point sampler cheap.
        config = self.config.replace(num_points=1)
        best = None
        rng = None
        keep_ids = self.part_prob > 0 or self.twin_prob > 0
        for attempt in range(self.max_attempts):
            scene, clip = _generate(item_seed(self.seed, index, attempt), config, keep_ids)
            if clip.boxes.shape[1] == 0:
                continue
            first = clip.object_visible_fraction[0] * clip.box_visible[0]
            ok = self._eligible(first, clip.box_visible)
            if ok.any():
                rng = np.random.default_rng(clip.seed)
                k = int(rng.choice(np.flatnonzero(ok)))
                break
            if best is None or first.max() > best[2]:
                best = (scene, clip, float(first.max()), int(first.argmax()))
        else:
            if best is None:
                raise ValueError(f"no clip with objects in {self.max_attempts} attempts; "
                                 f"config.num_objects={self.config.num_objects}")
            scene, clip, _, k = best
        has_twin = False
        if self.twin_prob > 0:
            # its own generator: twin_prob = 0 leaves every item (and its part draws) as it was
            twin_rng = np.random.default_rng([clip.seed, 1])
            if twin_rng.uniform() < self.twin_prob:
                if add_twin(scene, k, twin_rng, config) is not None:
                    clip = clip_from_scene(scene, num_points=1, seed=clip.seed, keep_id_map=True)
                    has_twin = True
        boxes, visible, fraction = clip.boxes[:, k], clip.box_visible[:, k], clip.object_visible_fraction[:, k]
        is_part = False
        # the part draws come after the object choice, so part_prob = 0 leaves every item as it was
        if self.part_prob > 0:
            rng = rng if rng is not None else np.random.default_rng(clip.seed)
            if rng.uniform() < self.part_prob:
                centre, half = _random_part(np.asarray(scene.objects[k].mask), self.part_size, rng)
                pb, pv, pf = part_boxes(scene, clip.id_map, k, centre, half)
                if self._eligible(pf[0] * pv[0], pv):
                    boxes, visible, fraction, is_part = pb, pv, pf, True
        return {
            "video": _video_tensor(clip.video),
            "boxes": torch.from_numpy(np.array(boxes, np.float32)),
            "box_visible": torch.from_numpy(np.array(visible, bool)),
            "visible_fraction": torch.from_numpy(np.array(fraction, np.float32)),
            "object_id": torch.tensor(k, dtype=torch.int64),
            "is_part": torch.tensor(is_part),
            "has_twin": torch.tensor(has_twin),
            "seed": torch.tensor(clip.seed, dtype=torch.int64),
        }
