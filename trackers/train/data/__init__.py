"""Training and evaluation data: a procedural synthetic-video generator with exact ground truth
(:mod:`.synthetic`) and readers for annotations and videos on disk (:mod:`.readers`)."""
from trackers.train.data.readers import VIDEO_EXTENSIONS, NpzTrackDataset, VideoFolder, save_clip_npz
from trackers.train.data.synthetic import (
    HELD_OUT_TEXTURES,
    SHAPES,
    TEXTURE_KINDS,
    TRAIN_TEXTURES,
    Motion,
    Scene,
    SceneObject,
    SyntheticBoxDataset,
    SyntheticClip,
    SyntheticConfig,
    SyntheticPointDataset,
    add_twin,
    clip_from_scene,
    generate_clip,
    item_seed,
    make_shape_mask,
    make_texture,
    part_boxes,
    point_flags,
    point_tracks,
    render_scene,
    sample_scene,
)

__all__ = [
    "HELD_OUT_TEXTURES", "SHAPES", "TEXTURE_KINDS", "TRAIN_TEXTURES", "VIDEO_EXTENSIONS",
    "Motion", "Scene", "SceneObject", "SyntheticBoxDataset", "SyntheticClip", "SyntheticConfig",
    "SyntheticPointDataset", "NpzTrackDataset", "VideoFolder",
    "add_twin", "clip_from_scene", "generate_clip", "item_seed", "make_shape_mask", "make_texture", "part_boxes", "point_flags",
    "point_tracks", "render_scene", "sample_scene", "save_clip_npz",
]
