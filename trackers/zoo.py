"""Registry entries of every named model, as data.

Tracker classes and converters are named by import string so that listing models imports no network code.
"""
from __future__ import annotations

from trackers.hub import ModelEntry, WeightFile, register_model

_COTRACKER_PAPER = "CoTracker3: Simpler and Better Point Tracking by Pseudo-Labelling Real Videos (Karaev et al., arXiv:2410.11831)"
_COTRACKER_LICENSE = "CC-BY-NC-4.0"

for _name, _file, _online, _what in [
    ("cotracker3-offline", "scaled_offline.pth", False, "CoTracker3 offline (whole clip, both directions), scaled training"),
    ("cotracker3-online", "scaled_online.pth", True, "CoTracker3 online (sliding window, streaming), scaled training"),
    ("cotracker3-offline-baseline", "baseline_offline.pth", False, "CoTracker3 offline, trained on Kubric only"),
    ("cotracker3-online-baseline", "baseline_online.pth", True, "CoTracker3 online, trained on Kubric only"),
]:
    register_model(
        ModelEntry(
            name=_name,
            tracker="trackers.point_tracker:PointTracker",
            config={"online": _online, "window_len": 16 if _online else 60},
            files={"weights": WeightFile("facebook/cotracker3", _file)},
            converter="trackers.models.cotracker3:convert_official_checkpoint",
            license=_COTRACKER_LICENSE,
            paper=_COTRACKER_PAPER,
            description=_what,
            tags=("point", "online" if _online else "offline"),
        )
    )

# LoRAT entries (trackers.lorat_tracker:LoRATracker) are appended below.

_LORAT_PAPER = (
    "Tracking Meets LoRA: Faster Training, Larger Model, Stronger Performance (Lin et al., ECCV 2024, arXiv:2403.05231)"
)
# The official release is a Google Drive folder (LitingLin/LoRAT README) and DINOv2 comes from
# dl.fbaipublicfiles.com; the Hub repositories below are assumed mirrors whose ids and file names are unverified.
# Release file names after the official config mixins (only base.bin for B-224 is attested).
_LORAT_MIRROR = "LitingLin/LoRAT"
_DINOV2_MIRROR = "trackers-mirrors/dinov2-pretrain"
for _size, _size_name, _file_stem, _dino in [
    ("b", "ViT-B/14", "base", "dinov2_vitb14_pretrain.pth"),
    ("l", "ViT-L/14", "large", "dinov2_vitl14_pretrain.pth"),
    ("g", "ViT-g/14", "giant", "dinov2_vitg14_pretrain.pth"),
]:
    for _res in (224, 378):
        _cfg = {
            "b": dict(embed_dim=768, depth=12, num_heads=12, ffn="mlp", ffn_hidden=3072),
            "l": dict(embed_dim=1024, depth=24, num_heads=16, ffn="mlp", ffn_hidden=4096),
            "g": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", ffn_hidden=4096),
        }[_size]
        _cfg.update(
            dict(template_size=112, search_size=224, search_factor=4.0) if _res == 224
            else dict(template_size=196, search_size=378, search_factor=5.0)
        )
        register_model(
            ModelEntry(
                name=f"lorat-{_size}-{_res}",
                tracker="trackers.lorat_tracker:LoRATracker",
                config=_cfg,
                files={
                    "weights": WeightFile(_LORAT_MIRROR, f"{_file_stem}{'' if _res == 224 else '_378'}.bin"),
                    "backbone": WeightFile(_DINOV2_MIRROR, _dino),
                },
                converter="trackers.models.lorat:convert_official_checkpoint",
                license="LoRAT release (unverified); DINOv2: Apache-2.0",
                paper=_LORAT_PAPER,
                description=(
                    f"LoRAT-{_size.upper() if _size != 'g' else 'g'}-{_res} single-object box tracker "
                    f"(DINOv2 {_size_name}, {_res}px search, LoRA merged at load); Hub files are unverified mirrors "
                    "of the Google Drive release and Meta's DINOv2 pretrain file"
                ),
                tags=("box", "sot", "online"),
            )
        )
