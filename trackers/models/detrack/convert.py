"""Initialise DETRack's encoder from OSTrack, MAE or CAE checkpoints, with a readable report.

Accepted inputs (a state dict, or a file / dict wrapping one under ``"net"``, ``"model"`` or ``"state_dict"``):

* **OSTrack** (``backbone.*`` + ``box_head.*``): the backbone keys already have our names. ``pos_embed_z`` /
  ``pos_embed_x`` are used as they are (bicubic-resized if the crop sizes differ); ``backbone.cls_token`` and
  ``backbone.pos_embed`` are never read by OSTrack's forward and are skipped; the convolutional ``box_head`` has no
  counterpart (DETRack's head is a decoder) and is skipped.
* **MAE / plain timm ViT** (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``):
  the patch part of ``pos_embed`` (a square grid after the class token, 14x14 for ImageNet-224) is resized with
  bicubic interpolation (``align_corners=False``) to the template grid (``pos_embed_z``) and to the search grid
  (``pos_embed_x``) -- OSTrack's recipe when it fine-tunes an MAE backbone; pretraining-only keys (``decoder_*``,
  ``mask_token``) are skipped.
* **CAE** (keys under ``encoder.``): as MAE, plus ``attn.q_bias`` / ``attn.v_bias`` become the fused qkv bias
  ``[q_bias, 0, v_bias]`` (CAE has no key bias) and the LayerScale ``gamma_1`` / ``gamma_2`` become ``ls1.gamma`` /
  ``ls2.gamma`` when the config has LayerScale (``layerscale_init`` set), otherwise they are folded exactly into the
  preceding projections (``attn.proj`` and ``mlp.fc2``: ``W <- diag(gamma) W``, ``b <- gamma * b``), which gives the
  same function in plain OSTrack-layout blocks.

Blocks beyond ``config.depth`` are skipped and reported (e.g. a 12-block checkpoint into the 9-block variant).
Every source key ends up either loaded or listed with the reason it was skipped; every encoder key the
checkpoint did not provide is listed as missing. :func:`load_encoder_checkpoint` also loads the result into a
:class:`~trackers.models.detrack.DETRack` (decoder keys are left at their initialisation and reported).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

import torch

from trackers.nn.vit import interpolate_pos_embed

__all__ = ["ConversionReport", "convert_encoder_checkpoint", "load_encoder_checkpoint", "unwrap_checkpoint"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_PRETRAIN_ONLY = ("decoder", "mask_token", "teacher", "regressor", "lm_head", "head.", "fc_norm", "rel_pos_bias")


@dataclass
class ConversionReport:
    """What a conversion did.

    Attributes:
        source_format: ``"ostrack"``, ``"mae"`` or ``"cae"``.
        loaded: our encoder keys filled from the checkpoint (``backbone.*``).
        missing: our keys the checkpoint did not provide (left at their initial values).
        skipped: source key -> reason it was not used.
        transformed: our key -> how it was derived (resizing, bias assembly, LayerScale folding).
    """

    source_format: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    transformed: Dict[str, str] = field(default_factory=dict)

    @property
    def missing_encoder(self) -> List[str]:
        """Missing keys that belong to the encoder (a complete backbone checkpoint leaves this empty)."""
        return [k for k in self.missing if k.startswith("backbone.")]

    def __str__(self) -> str:
        lines = [f"DETRack encoder conversion from a {self.source_format} checkpoint:",
                 f"  loaded {len(self.loaded)} encoder tensors"]
        for k, how in sorted(self.transformed.items()):
            lines.append(f"    {k}: {how}")
        enc_missing = self.missing_encoder
        other_missing = [k for k in self.missing if not k.startswith("backbone.")]
        if enc_missing:
            lines.append(f"  MISSING {len(enc_missing)} encoder tensors (left at initialisation): "
                         + ", ".join(_summarise(enc_missing)))
        if other_missing:
            lines.append(f"  not in the checkpoint (left at initialisation): {len(other_missing)} tensors: "
                         + ", ".join(_summarise(other_missing)))
        by_reason: Dict[str, List[str]] = {}
        for k, why in self.skipped.items():
            by_reason.setdefault(why, []).append(k)
        for why, keys in by_reason.items():
            lines.append(f"  skipped {len(keys)} source tensors ({why}): " + ", ".join(_summarise(keys)))
        return "\n".join(lines)


def _summarise(keys: List[str], limit: int = 6) -> List[str]:
    """Group keys by their first two dotted components for printing (``head.decoder.* (96)``)."""
    groups: Dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
        groups[g] = groups.get(g, 0) + 1
    items = [f"{g} ({n})" if n > 1 else g for g, n in groups.items()]
    return items[:limit] + ([f"... {len(items) - limit} more groups"] if len(items) > limit else [])


def unwrap_checkpoint(obj: Union[str, Path, Mapping]) -> Dict[str, torch.Tensor]:
    """Load a checkpoint file (or take a dict) and return the tensor state dict inside it (``net`` for OSTrack,
    ``model`` for MAE / CAE, ``state_dict`` for others)."""
    if isinstance(obj, (str, Path)):
        obj = torch.load(str(obj), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint must be a mapping of tensors, got {type(obj).__name__}")
    for key in ("net", "model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError("checkpoint holds no tensors")
    return sd


def _expected_keys(config) -> Dict[str, Tuple[int, ...]]:
    """Our encoder's parameter names and shapes, built on the meta device (no memory, no initialisation cost)."""
    from trackers.models.detrack import DETRack

    with torch.device("meta"):
        model = DETRack(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _detect(sd: Mapping[str, torch.Tensor]) -> Tuple[str, str]:
    """(format, prefix to strip)."""
    keys = list(sd)
    if any(k.startswith("backbone.") for k in keys):
        return "ostrack", "backbone."
    if any(k.startswith("encoder.") for k in keys):
        return "cae", "encoder."
    if "patch_embed.proj.weight" in sd or any(k.startswith("blocks.") for k in keys):
        cae = any(k.endswith(("attn.q_bias", "gamma_1")) for k in keys)
        return ("cae" if cae else "mae"), ""
    raise ValueError("unrecognised checkpoint: expected OSTrack (backbone.*), MAE/ViT (patch_embed, blocks.N) or "
                     "CAE (encoder.*) keys; first keys: " + ", ".join(keys[:5]))


def _grid_of(pos: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Patch part of a ``(1, [1 +] g*g, C)`` position table and its side ``g``."""
    n = pos.shape[1]
    g = int(round(math.sqrt(n)))
    if g * g == n:
        return pos, g
    g = int(round(math.sqrt(n - 1)))
    if g * g == n - 1:
        return pos[:, 1:], g
    raise ValueError(f"position embedding of shape {tuple(pos.shape)} is not a square grid (with or without a "
                     "class token)")


def convert_encoder_checkpoint(checkpoint: Union[str, Path, Mapping], config) -> Tuple[Dict[str, torch.Tensor],
                                                                                     ConversionReport]:
    """Convert an OSTrack / MAE / CAE checkpoint into ``backbone.*`` tensors of ``DETRack(config)``.

    Returns the partial state dict (load it with ``strict=False``) and a :class:`ConversionReport`.
    Raises ValueError for shapes that cannot be adapted (other width or patch size, relative position bias).
    """
    src = unwrap_checkpoint(checkpoint)
    fmt, prefix = _detect(src)
    expected = _expected_keys(config)
    report = ConversionReport(fmt)
    out: Dict[str, torch.Tensor] = {}
    gt, gs = config.template_grid, config.search_grid
    fold_gamma = config.layerscale_init is None
    qv_bias: Dict[int, Dict[str, torch.Tensor]] = {}
    gammas: Dict[Tuple[int, str], torch.Tensor] = {}

    def put(key: str, value: torch.Tensor, source: str) -> None:
        want = expected.get(key)
        if want is None:
            report.skipped[source] = "no such encoder tensor"
            return
        if tuple(value.shape) != want:
            raise ValueError(f"{source}: shape {tuple(value.shape)} does not fit {key} {want} (is the checkpoint "
                             f"the same ViT width / patch size as the config: embed_dim={config.embed_dim}, "
                             f"patch_size={config.patch_size}?)")
        out[key] = value.detach().to(torch.float32).clone()

    has_zx = f"{prefix}pos_embed_z" in src and f"{prefix}pos_embed_x" in src
    for skey, value in src.items():
        if not skey.startswith(prefix):
            report.skipped[skey] = "not part of the encoder" if fmt != "ostrack" or not skey.startswith("box_head.") \
                else "OSTrack convolutional head (DETRack uses a decoder head)"
            continue
        key = skey[len(prefix):]
        if "relative_position" in key or "rel_pos" in key:
            raise ValueError(f"{skey}: relative position bias is not supported by the DETRack encoder")
        if key == "cls_token":
            report.skipped[skey] = "class token (unused by the one-stream encoder)"
        elif key == "pos_embed":
            if has_zx:
                report.skipped[skey] = "superseded by pos_embed_z / pos_embed_x"
                continue
            grid, g = _grid_of(value)
            for name, side in (("pos_embed_z", gt), ("pos_embed_x", gs)):
                put(f"backbone.{name}", interpolate_pos_embed(grid, (g, g), (side, side)), skey)
                report.transformed[f"backbone.{name}"] = f"{skey} {g}x{g} grid -> {side}x{side} (bicubic)"
        elif key in ("pos_embed_z", "pos_embed_x"):
            side = gt if key == "pos_embed_z" else gs
            grid, g = _grid_of(value)
            if g != side:
                grid = interpolate_pos_embed(grid, (g, g), (side, side))
                report.transformed[f"backbone.{key}"] = f"{g}x{g} -> {side}x{side} (bicubic)"
            put(f"backbone.{key}", grid, skey)
        elif key.startswith(("patch_embed.", "norm.")):
            put(f"backbone.{key}", value, skey)
        elif (m := _BLOCK.match(key)) is not None:
            i, rest = int(m.group(1)), m.group(2)
            if i >= config.depth:
                report.skipped[skey] = f"block beyond depth={config.depth}"
            elif rest in ("attn.q_bias", "attn.v_bias"):
                qv_bias.setdefault(i, {})[rest[5]] = value
            elif rest in ("gamma_1", "gamma_2"):
                gammas[(i, rest)] = value
            else:
                put(f"backbone.blocks.{i}.{rest}", value, skey)
        elif key.startswith(_PRETRAIN_ONLY):
            report.skipped[skey] = "pretraining-only tensor"
        else:
            report.skipped[skey] = "not part of the encoder"

    for i, qv in qv_bias.items():
        if set(qv) != {"q", "v"}:
            raise ValueError(f"block {i}: found {sorted(qv)} of CAE's q_bias / v_bias, need both")
        key = f"backbone.blocks.{i}.attn.qkv.bias"
        put(key, torch.cat([qv["q"], torch.zeros_like(qv["q"]), qv["v"]]), f"blocks.{i}.attn.q_bias/v_bias")
        report.transformed[key] = "[q_bias, 0, v_bias] (CAE)"
    for (i, name), gamma in gammas.items():
        ls = "ls1" if name == "gamma_1" else "ls2"
        if not fold_gamma:
            put(f"backbone.blocks.{i}.{ls}.gamma", gamma, f"blocks.{i}.{name}")
            report.transformed[f"backbone.blocks.{i}.{ls}.gamma"] = f"{name} (CAE LayerScale)"
            continue
        proj = f"backbone.blocks.{i}.attn.proj" if ls == "ls1" else f"backbone.blocks.{i}.mlp.fc2"
        if f"{proj}.weight" not in out:
            raise ValueError(f"block {i}: {name} found but {proj}.weight is missing, cannot fold the LayerScale")
        g = gamma.to(torch.float32)
        out[f"{proj}.weight"] = out[f"{proj}.weight"] * g[:, None]
        if f"{proj}.bias" in out:
            out[f"{proj}.bias"] = out[f"{proj}.bias"] * g
        report.transformed[f"{proj}.weight"] = f"{name} folded in (CAE LayerScale; config has none)"

    report.loaded = sorted(out)
    report.missing = sorted(k for k in expected if k not in out)
    return out, report


def load_encoder_checkpoint(model: torch.nn.Module, checkpoint: Union[str, Path, Mapping]) -> ConversionReport:
    """Convert ``checkpoint`` (see :func:`convert_encoder_checkpoint`) and load it into ``model`` (a
    :class:`~trackers.models.detrack.DETRack`); keys the checkpoint lacks keep their current values."""
    sd, report = convert_encoder_checkpoint(checkpoint, model.config)
    ref = next(model.parameters())
    result = model.load_state_dict({k: v.to(ref.device) for k, v in sd.items()}, strict=False)
    if result.unexpected_keys:  # convert_encoder_checkpoint only emits our own names
        raise RuntimeError(f"internal error: converted keys not in the model: {result.unexpected_keys}")
    return report
