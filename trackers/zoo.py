"""Registry entries of every named model, as data: the only table of variants, settings and weight sources.

Tracker classes and converters are named by import string, so listing models imports no network code. Every Hub
id here is a real, public repository holding the named file.
"""
from __future__ import annotations

from trackers.registry import ModelEntry, hub_file, manual_file, package_file, register_model, unreleased_file

#: The models shipped inside the package (``trackers/assets/<name>/``): they load with no network and are the
#: defaults of the command line (``trackers demo``, ``trackers track`` without ``--model``) and the examples.
DEFAULT_POINT_MODEL = "cotracker3-small-synthetic"
DEFAULT_BOX_MODEL = "detrack-small-synthetic"
SHIPPED_MODELS = (DEFAULT_POINT_MODEL, DEFAULT_BOX_MODEL)
#: Package holding the shipped files; each model's weights are ``<name>/model.safetensors`` inside it.
ASSETS_PACKAGE = "trackers.assets"

# ----------------------------------------------------------------------------------------------- CoTracker3

_COTRACKER_PAPER = ("CoTracker3: Simpler and Better Point Tracking by Pseudo-Labelling Real Videos "
                    "(Karaev et al., arXiv:2410.11831)")
# The released checkpoints are CC-BY-NC-4.0: research and other non-commercial use only.
_COTRACKER_LICENSE = "CC-BY-NC-4.0 (non-commercial use only)"

for _name, _file, _online, _what in [
    ("cotracker3-offline", "scaled_offline.pth", False, "CoTracker3 offline (whole clip, both directions), scaled training"),
    ("cotracker3-online", "scaled_online.pth", True, "CoTracker3 online (sliding window, streaming), scaled training"),
    ("cotracker3-offline-baseline", "baseline_offline.pth", False, "CoTracker3 offline, trained on Kubric only"),
    ("cotracker3-online-baseline", "baseline_online.pth", True, "CoTracker3 online, trained on Kubric only"),
]:
    register_model(ModelEntry(
        name=_name,
        tracker="trackers.point.tracker:PointTracker",
        config={"online": _online, "window_len": 16 if _online else 60},
        files={"weights": hub_file("facebook/cotracker3", _file)},
        converter="trackers.models.cotracker3:convert_official_checkpoint",
        license=_COTRACKER_LICENSE,
        paper=_COTRACKER_PAPER,
        description=_what,
        tags=("point", "online" if _online else "offline"),
    ))

# ----------------------------------------------------------------------------------------------- LoRAT

_LORAT_PAPER = ("Tracking Meets LoRA: Faster Training, Larger Model, Stronger Performance "
                "(Lin et al., ECCV 2024, arXiv:2403.05231)")
# The official LoRAT weights are a Google Drive folder linked from the project README, not a Hub repository, so
# they are a manual download; the DINOv2 backbones are timm's copies on the Hub (Apache-2.0).
_LORAT_RELEASE = "https://github.com/LitingLin/LoRAT (README, 'Models': a Google Drive folder)"
#: DINOv2 backbone of each size: architecture and timm's Hub repository.
_DINOV2 = {
    "b": (dict(embed_dim=768, depth=12, num_heads=12, ffn="mlp", ffn_hidden=3072), "ViT-B/14",
          "timm/vit_base_patch14_dinov2.lvd142m", "base"),
    "l": (dict(embed_dim=1024, depth=24, num_heads=16, ffn="mlp", ffn_hidden=4096), "ViT-L/14",
          "timm/vit_large_patch14_dinov2.lvd142m", "large"),
    "g": (dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", ffn_hidden=4096), "ViT-g/14",
          "timm/vit_giant_patch14_dinov2.lvd142m", "giant"),
}
#: Input resolution of each variant: network crop sizes (architecture) and search factor (tracker setting).
_LORAT_RES = {
    224: (dict(template_size=112, search_size=224), dict(search_factor=4.0)),
    378: (dict(template_size=196, search_size=378), dict(search_factor=5.0)),
}

for _size, (_arch, _size_name, _dino_repo, _stem) in _DINOV2.items():
    for _res, (_crops, _settings) in _LORAT_RES.items():
        _file = f"{_stem}{'' if _res == 224 else '_378'}.bin"
        register_model(ModelEntry(
            name=f"lorat-{_size}-{_res}",
            tracker="trackers.box.lorat:LoRATracker",
            config={**_arch, **_crops},
            settings=_settings,
            files={
                "weights": manual_file(_LORAT_RELEASE, _file),
                "backbone": hub_file(_dino_repo, "model.safetensors"),
            },
            converter="trackers.models.lorat:convert_official_checkpoint",
            license="LoRAT weights: terms of the official release page; DINOv2 backbone: Apache-2.0",
            paper=_LORAT_PAPER,
            description=(
                f"LoRAT-{_size.upper() if _size != 'g' else 'g'}-{_res} single-object box tracker (DINOv2 {_size_name}, "
                f"{_res}px search, LoRA merged at load); download {_file} from the official release and pass "
                "checkpoint=; the backbone comes from the Hub"
            ),
            tags=("box", "sot", "online"),
        ))

# ----------------------------------------------------------------------------------------------- DETRack

register_model(ModelEntry(
    name="detrack-vitb-256",
    tracker="trackers.box.detrack:BoxTracker",
    config={},  # the paper's ViT-B/16, 128/256 crops, candidate elimination, 3-layer deformable decoder
    files={"weights": unreleased_file(
        "DETRack has no official code or weights; this is a re-implementation from the paper. Train it with "
        "`trackers-train box` (the encoder can start from an OSTrack/MAE checkpoint: --init-encoder PATH), or build "
        "the architecture with random weights: trackers.BoxTracker.from_config('detrack-vitb-256')."
    )},
    license="Apache-2.0 (code; no weights released)",
    paper="Efficient Training for Visual Tracking with Deformable Transformer (Wei, Zeng & Zeng, arXiv:2309.02676)",
    description="DETRack ViT-B/16 one-stream tracker with candidate elimination and a deformable-DETR head "
                "(re-implementation from the paper; no released weights)",
    tags=("box", "sot", "online"),
))

# ----------------------------------------------------------------------------------------------- shipped models
# Trained by us from scratch with `trackers-train` on the procedural synthetic clips only (no real video, no
# third-party weights), so the weights are ours: Apache-2.0 like the code. Training commands, seeds, steps and the
# evaluation table are in trackers/assets/<name>/MODEL_CARD.md. The configs below are the complete architecture
# the checkpoints were trained with (every field, so a later change of a dataclass default cannot change what
# the shipped file means); tests/test_shipped_models.py checks them against the config stored in each file.

register_model(ModelEntry(
    name=DEFAULT_POINT_MODEL,
    tracker="trackers.point.tracker:PointTracker",
    config={
        # online (sliding windows of 16 frames advancing by 8): the same weights serve track() and stream()
        "online": True, "window_len": 16, "stride": 4,
        "corr_radius": 3, "corr_levels": 3, "corr_hidden": 64, "corr_out": 32,
        "latent_dim": 48, "hidden_size": 96, "num_heads": 4, "depth": 2, "mlp_ratio": 2.0,
        # trained on 128x128 clips, run at 256x256: no weight depends on the input size, and the finer feature
        # maps track more precisely (see training/ship_small.py, RUN_TIME_CONFIG)
        "num_virtual_tracks": 16, "model_resolution": (256, 256), "encoder_widths": (32, 32, 48, 64),
    },
    files={"weights": package_file(ASSETS_PACKAGE, f"{DEFAULT_POINT_MODEL}/model.safetensors")},
    license="Apache-2.0 (ours)",
    paper=_COTRACKER_PAPER + " -- architecture only",
    description="small online CoTracker3 (1.2 M parameters, runs at 256x256) trained by us on synthetic data; "
                "shipped inside the package, loads with no download",
    tags=("point", "online", "shipped"),
))

register_model(ModelEntry(
    name=DEFAULT_BOX_MODEL,
    tracker="trackers.box.detrack:BoxTracker",
    config={
        # 64 px template, 128 px search, 8 px patches: the paper's 8x8 / 16x16 token grids at half the pixels
        "template_size": 64, "search_size": 128, "patch_size": 8,
        "embed_dim": 96, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "qkv_bias": True, "layerscale_init": None,
        "norm_eps": 1e-6, "drop_path_rate": 0.0,
        "ce_locations": (1, 2), "ce_keep_ratio": 0.7, "ce_template_range": "centre",
        "decoder_dim": 96, "num_queries": 32, "num_decoder_layers": 3, "dec_heads": 4, "dec_points": 4,
        "dec_ffn_dim": 384, "dec_dropout": 0.0, "box_mlp_layers": 3, "qs_anchor_wh": 0.05, "score_prior": 0.01,
        "query_pos_every_layer": True, "detach_query_content": False, "look_forward_twice": False,
    },
    files={"weights": package_file(ASSETS_PACKAGE, f"{DEFAULT_BOX_MODEL}/model.safetensors")},
    license="Apache-2.0 (ours)",
    paper="Efficient Training for Visual Tracking with Deformable Transformer (Wei, Zeng & Zeng, arXiv:2309.02676) "
          "-- architecture only",
    description="small DETRack (0.96 M parameters, 64/128 px crops) trained by us on synthetic data; shipped inside "
                "the package, loads with no download",
    tags=("box", "sot", "online", "shipped"),
))
