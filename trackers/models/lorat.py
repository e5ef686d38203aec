"""LoRAT network: a DINOv2 ViT/14 one-stream tracker with a decoupled input embedding and MLP heads.

Paper: "Tracking Meets LoRA: Faster Training, Larger Model, Stronger Performance" (Lin et al., ECCV 2024,
arXiv:2403.05231). This is an independent implementation.

Network (``LoRAT.forward(z, x, z_feat_mask)``):

* one patch embedding (Conv 14x14, stride 14) for the template ``z`` and the search region ``x``;
* a single position grid ``pos_embed`` for the search size (``(1, Hx*Wx, C)``, bicubic-resized from DINOv2's
  37x37 grid when converting); template tokens use its **top-left** ``Hz x Wz`` crop;
* ``token_type_embed`` (3, C): 0 = template background, 1 = template foreground, 2 = search;
* the DINOv2 blocks over ``[template tokens, search tokens]`` with full attention, the final LayerNorm;
* on the search tokens only: ``cls_mlp`` (C -> C -> C -> 1, raw logit) and ``reg_mlp`` (C -> C -> C -> 4,
  sigmoid -> distances (l, t, r, b) from the cell centre, normalised to the search crop). Both MLPs act per
  token, so a tracker that needs one box (``select_cells=``: the cell its windowed argmax picks) runs ``reg_mlp``
  on that cell only; training gets the full maps.

State-dict keys are those of the official *merged inference* model (``pos_embed``, ``token_type_embed``,
``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``, ``head.{cls,reg}_mlp.layers.{0,1,2}.*``), so files move
freely between this SDK and the official code. With ``LoRATConfig.lora_rank > 0`` the blocks carry un-merged
LoRA adapters instead (the official training layout, ``blocks.N.attn.qkv.q.linear.weight``,
``blocks.N.attn.qkv.q.lora.A`` ...) for fine-tuning; :meth:`LoRAT.merge_lora` folds them back.

:func:`convert_official_checkpoint` turns an official release file (LoRA + head + type embedding only) plus the
DINOv2 backbone file into this layout.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from trackers.models.config_checks import check_floats, check_ints
from trackers.nn.lora import (
    has_lora,
    inject_lora,
    lora_scaling,
    mark_only_lora_trainable,
    merge_lora,
    merge_lora_state_dict,
    split_lora_state_dict,
)
from trackers.nn.vit import PatchEmbed, ViTSpec, interpolate_pos_embed, make_blocks, trunc_normal_init_

__all__ = ["LoRATConfig", "LoRAT", "MlpHead", "convert_official_checkpoint"]

TYPE_TEMPLATE_BG, TYPE_TEMPLATE_FG, TYPE_SEARCH = 0, 1, 2
#: Rows the box MLP runs on at least when it evaluates chosen cells only (see :meth:`MlpHead.boxes_at`).
_MIN_GEMM_ROWS = 8


@dataclass
class LoRATConfig:
    """Architecture of a LoRAT variant (defaults: LoRAT-B-224; the released variants are registry entries).

    Backbone: ``embed_dim``, ``depth``, ``num_heads``, ``ffn`` ("mlp" or "swiglu"), ``ffn_hidden``,
    ``patch_size``, ``layerscale_init``, ``norm_eps``, ``drop_path_rate`` (training only).
    ``backbone_grid``: side of the pretrained position grid (DINOv2: 518 / 14 = 37).
    Inputs: ``template_size`` / ``search_size`` in pixels (multiples of ``patch_size``).
    The tracking pipeline's choices (crop factors, window penalty) are the tracker's settings, not fields here.
    LoRA: ``lora_rank`` 0 builds the merged inference network; > 0 builds un-merged adapters
    (``lora_alpha``, ``use_rslora``) on every block Linear for fine-tuning.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn: str = "mlp"
    ffn_hidden: int = 3072
    patch_size: int = 14
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    backbone_grid: int = 37
    template_size: int = 112
    search_size: int = 224
    lora_rank: int = 0
    lora_alpha: float = 64.0
    use_rslora: bool = False

    def __post_init__(self) -> None:
        check_ints(self, "embed_dim", "depth", "num_heads", "ffn_hidden", "patch_size", "backbone_grid",
                   "template_size", "search_size")
        check_ints(self, "lora_rank", minimum=0)
        check_floats(self, "layerscale_init", "norm_eps", "drop_path_rate", "lora_alpha")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"LoRATConfig.embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        for name in ("template_size", "search_size"):
            v = getattr(self, name)
            if v <= 0 or v % self.patch_size:
                raise ValueError(f"LoRATConfig.{name}={v} must be a positive multiple of patch_size={self.patch_size}")
        if self.template_size > self.search_size:
            raise ValueError("LoRATConfig.template_size must not exceed search_size (template uses a crop of the "
                             "search position grid)")
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"LoRATConfig.ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.lora_rank < 0:
            raise ValueError(f"LoRATConfig.lora_rank must be >= 0, got {self.lora_rank}")

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    def vit_spec(self) -> ViTSpec:
        return ViTSpec(self.embed_dim, self.depth, self.num_heads, self.ffn, self.ffn_hidden)


class Mlp3(nn.Module):
    """Three Linear layers with GELU between them (``layers.{0,1,2}``)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.layers[0](x))
        x = F.gelu(self.layers[1](x))
        return self.layers[2](x)


class MlpHead(nn.Module):
    """Anchor-free head on an ``H x W`` token grid: per-cell logit and (l, t, r, b) -> normalised xyxy box."""

    def __init__(self, dim: int, grid: Tuple[int, int]) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.cls_mlp = Mlp3(dim, dim, 1)
        self.reg_mlp = Mlp3(dim, dim, 4)
        h, w = self.grid
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        ref = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        self.register_buffer("bbox_offset", ref, persistent=False)

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B, H*W, C)`` -> ``score_map (B, H, W)`` logits and ``boxes (B, H, W, 4)``, both float32."""
        return self.score_map(tokens), self.boxes(tokens)

    def score_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, H*W, C)`` -> per-cell logits ``(B, H, W)`` (float32)."""
        h, w = self.grid
        return self.cls_mlp(tokens).float().reshape(tokens.shape[0], h, w)

    def boxes(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, H*W, C)`` -> normalised xyxy box of every cell ``(B, H, W, 4)`` (float32)."""
        h, w = self.grid
        ltrb = self.reg_mlp(tokens).float().sigmoid().reshape(tokens.shape[0], h, w, 4)
        ref = self.bbox_offset.float()
        return torch.cat([ref - ltrb[..., :2], ref + ltrb[..., 2:]], dim=-1)

    def boxes_at(self, tokens: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Box of one cell per sample: ``tokens (B, H*W, C)``, ``cells (B,)`` row-major cell indices ->
        normalised xyxy ``(B, 4)`` (float32), equal to ``boxes(tokens).reshape(B, -1, 4)[arange(B), cells]``.

        The regression MLP is per token, so running it on the chosen tokens alone gives the same boxes at a
        ``1 / (H*W)`` of the cost.
        """
        b = tokens.shape[0]
        h, w = self.grid
        if cells.shape != (b,):
            raise ValueError(f"cells must be ({b},) cell indices, got shape {tuple(cells.shape)}")
        cells = cells.to(device=tokens.device, dtype=torch.long)
        if bool(((cells < 0) | (cells >= h * w)).any()):
            raise ValueError(f"cells must lie in [0, {h * w}), got {cells.tolist()}")
        chosen = tokens[torch.arange(b, device=tokens.device), cells]  # (B, C)
        rows = -(-b // _MIN_GEMM_ROWS) * _MIN_GEMM_ROWS
        if rows > b:
            # Bit-equality with the full map needs the same kernels. With fewer than 4 rows MKL switches from its
            # GEMM kernel to a matrix-vector one that sums in another order, and element-wise ops run the last
            # elements that do not fill a vector register through scalar code (another sigmoid rounding): either
            # moves boxes by ~1 ulp (~1e-5 px). Padding with copies to a multiple of 8 rows (32 box numbers, whole
            # AVX-512 vectors) keeps the full map's kernels, so the box is the same bit for bit (tests check it).
            chosen = torch.cat([chosen, chosen[:1].expand(rows - b, -1)])
        ltrb = self.reg_mlp(chosen).float().sigmoid()[:b]
        ref = self.bbox_offset.float().reshape(h * w, 2)[cells]
        return torch.cat([ref - ltrb[:, :2], ref + ltrb[:, 2:]], dim=-1)


class LoRAT(nn.Module):
    """LoRAT one-stream tracking network (see the module docstring)."""

    def __init__(self, config: LoRATConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        dim = c.embed_dim
        hx = c.search_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, hx * hx, dim))
        self.token_type_embed = nn.Parameter(torch.zeros(3, dim))
        self.patch_embed = PatchEmbed(c.patch_size, 3, dim)
        self.blocks = make_blocks(c.vit_spec(), c.layerscale_init, c.drop_path_rate, norm_eps=c.norm_eps)
        self.norm = nn.LayerNorm(dim, eps=c.norm_eps)
        self.head = MlpHead(dim, (hx, hx))
        self.reset_parameters()
        if c.lora_rank > 0:
            self.add_lora(c.lora_rank, c.lora_alpha, c.use_rslora)

    def reset_parameters(self) -> None:
        """Random init as in training: trunc_normal(0.02) linears, embeddings and type embedding, zero biases."""
        trunc_normal_init_(self, self.pos_embed, self.token_type_embed)

    # ------------------------------------------------------------------------------------------ LoRA
    def add_lora(self, rank: int = 64, alpha: Optional[float] = 64.0, use_rslora: bool = False,
                 init: str = "bert") -> "LoRAT":
        """Wrap every Linear of the blocks with an adapter (qkv split into q, k, v); freeze the backbone.

        Trainable afterwards: adapters, ``token_type_embed`` and the head (the LoRAT recipe).
        """
        inject_lora(self.blocks, rank, alpha, use_rslora, init=init)
        mark_only_lora_trainable(self, extra=("token_type_embed", "head."))
        self.config = dataclasses.replace(
            self.config, lora_rank=rank, lora_alpha=float(alpha) if alpha is not None else float(rank),
            use_rslora=use_rslora,
        )
        return self

    def merge_lora(self) -> "LoRAT":
        """Fold every adapter into its Linear (exact fp32 merge) and return the plain inference network."""
        merge_lora(self.blocks)
        self.config = dataclasses.replace(self.config, lora_rank=0)
        return self

    @property
    def has_lora(self) -> bool:
        return has_lora(self)

    # ------------------------------------------------------------------------------------------ precision
    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> "LoRAT":
        """Store the attention/FFN weights of the blocks in ``dtype``; keep the rest (embeddings, norms,
        LayerScale, head, residual stream) in float32.

        Nearly all compute is in those matrices, so this is as fast as casting everything, while the residual
        stream and the box/score head keep full precision (casting the whole network to bf16 moves boxes more).
        """
        self.float()
        for blk in self.blocks:
            blk.attn.to(dtype)
            blk.mlp.to(dtype)
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the block matrices (the network's compute precision)."""
        if len(self.blocks) == 0:
            return self.pos_embed.dtype
        return next(self.blocks[0].attn.parameters()).dtype

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype the image crops must have (that of the patch embedding)."""
        return self.patch_embed.proj.weight.dtype

    # ------------------------------------------------------------------------------------------ forward
    def embed_template(self, z: torch.Tensor, z_feat_mask: torch.Tensor) -> torch.Tensor:
        """Template tokens ``(B, Hz*Wz, C)``: patches + top-left crop of the position grid + token type."""
        hz = self.config.template_grid
        hx = self.config.search_grid
        if z_feat_mask.shape[-2:] != (hz, hz):
            raise ValueError(f"z_feat_mask must be (B, {hz}, {hz}), got {tuple(z_feat_mask.shape)}")
        tokens = self.patch_embed(z)
        pos = self.pos_embed.reshape(1, hx, hx, -1)[:, :hz, :hz].reshape(1, hz * hz, -1)
        types = self.token_type_embed[z_feat_mask.reshape(z_feat_mask.shape[0], -1).long()]
        return tokens + pos + types

    def embed_search(self, x: torch.Tensor) -> torch.Tensor:
        """Search tokens ``(B, Hx*Wx, C)``: patches + position grid + search type embedding."""
        return self.patch_embed(x) + self.pos_embed + self.token_type_embed[TYPE_SEARCH]

    def fuse(self, z_tokens: torch.Tensor, x_tokens: torch.Tensor) -> torch.Tensor:
        """Run the blocks over ``[template, search]`` and return the normalised search tokens."""
        n_z = z_tokens.shape[1]
        h = torch.cat([z_tokens, x_tokens.to(z_tokens.dtype)], dim=1)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            # The template outputs of the last block are never used: compute search outputs only.
            h = blk(h, query_start=n_z if i == last else 0)
        if last < 0:
            h = h[:, n_z:]
        return self.norm(h)

    def forward_tokens(self, z_tokens: torch.Tensor, x: torch.Tensor,
                       select_cells: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                       ) -> Dict[str, torch.Tensor]:
        """Forward with precomputed template tokens (from :meth:`embed_template`, reused across frames).

        Without ``select_cells``: ``score_map (B,Hx,Wx)`` and ``boxes (B,Hx,Wx,4)`` (every cell; training).
        With ``select_cells`` (a function ``score_map (B,Hx,Wx) -> (B,)`` row-major cell indices, e.g. a
        tracker's windowed argmax): ``score_map``, ``cells (B,)`` and ``box (B,4)``, the box of the chosen cell
        only -- what a tracking step uses, without running the box MLP on the other cells.
        """
        tokens = self.fuse(z_tokens, self.embed_search(x))
        score = self.head.score_map(tokens)
        if select_cells is None:
            return {"score_map": score, "boxes": self.head.boxes(tokens)}
        cells = select_cells(score)
        return {"score_map": score, "cells": cells, "box": self.head.boxes_at(tokens, cells)}

    def forward(self, z: torch.Tensor, x: torch.Tensor, z_feat_mask: torch.Tensor,
                select_cells: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """``z (B,3,Ht,Wt)`` normalised template, ``x (B,3,Hs,Ws)`` normalised search, ``z_feat_mask (B,Hz,Wz)``
        in {0, 1}. Returns ``score_map (B,Hx,Wx)`` raw logits and ``boxes (B,Hx,Wx,4)`` xyxy in [0,1] of the
        search crop (float32); with ``select_cells`` only the chosen cells' boxes (see :meth:`forward_tokens`)."""
        return self.forward_tokens(self.embed_template(z, z_feat_mask), x, select_cells)


# ---------------------------------------------------------------------------------------------- conversion

def _dinov2_backbone(dino: Mapping[str, torch.Tensor], config: LoRATConfig) -> Dict[str, torch.Tensor]:
    """Plain-layout backbone tensors (patch_embed, blocks, norm, resized pos_embed) from a DINOv2 state dict."""
    if "pos_embed" not in dino or "patch_embed.proj.weight" not in dino:
        raise ValueError("the backbone file is not a DINOv2 ViT state dict (no 'pos_embed' / 'patch_embed.proj.weight')")
    c = config
    pos = dino["pos_embed"]
    n = pos.shape[1]
    grid = int(round(math.sqrt(n - 1)))
    if grid * grid + 1 != n:
        raise ValueError(f"DINOv2 pos_embed of shape {tuple(pos.shape)} is not 1 + a square grid")
    if pos.shape[-1] != c.embed_dim:
        raise ValueError(
            f"backbone width {pos.shape[-1]} does not match the LoRAT config (embed_dim={c.embed_dim}); "
            "is this the right DINOv2 size (vitb14 / vitl14 / vitg14)?"
        )
    # Chunked DINOv2 checkpoints (block_chunks > 0) name blocks "blocks.<chunk>.<index>."; flatten them.
    chunked = re.compile(r"^blocks\.\d+\.(\d+)\.(?=[a-z])")
    out = {chunked.sub(r"blocks.\1.", k): v for k, v in dino.items()
           if k.startswith(("patch_embed.", "blocks.", "norm."))}
    if c.ffn == "swiglu":
        # timm's DINOv2 files (vit_giant_patch14_dinov2.lvd142m) call the packed SwiGLU input projection
        # mlp.fc1 and the output mlp.fc2; Meta's files and this network call them mlp.w12 / mlp.w3.
        out = {k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v for k, v in out.items()}
    out["pos_embed"] = interpolate_pos_embed(pos[:, 1:], (grid, grid), (c.search_grid, c.search_grid), "bicubic")
    return out


def _unfuse_qkv(sd: Dict[str, torch.Tensor], parts=("q", "k", "v")) -> Dict[str, torch.Tensor]:
    """Plain layout -> un-merged training layout: split qkv and move block Linears under ``.linear``."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and ".attn.qkv." in k:
            layer, _, leaf = k.rpartition(".")
            for i, chunk in enumerate(v.chunk(len(parts), dim=0)):
                out[f"{layer}.{parts[i]}.linear.{leaf}"] = chunk.clone()
        elif k.startswith("blocks.") and any(s in k for s in (".attn.proj.", ".mlp.")):
            layer, _, leaf = k.rpartition(".")
            out[f"{layer}.linear.{leaf}"] = v
        else:
            out[k] = v
    return out


def _fuse_linear_layout(sd: Mapping[str, torch.Tensor], parts=("q", "k", "v")) -> Dict[str, torch.Tensor]:
    """Training layout without LoRA keys -> plain layout (``x.linear.w`` -> ``x.w``; q/k/v concatenated)."""
    out: Dict[str, torch.Tensor] = {}
    split: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if ".linear." not in k:
            out[k] = v
            continue
        layer, _, leaf = k.replace(".linear.", ".").rpartition(".")
        parent, _, part = layer.rpartition(".")
        if part in parts and parent.endswith("qkv"):
            split.setdefault(f"{parent}.{leaf}", {})[part] = v
        else:
            out[f"{layer}.{leaf}"] = v
    for key, pieces in split.items():
        if set(pieces) != set(parts):
            raise ValueError(f"incomplete q/k/v split for {key}: found {sorted(pieces)}")
        out[key] = torch.cat([pieces[p] for p in parts], dim=0)
    return out


def _lora_scalars(sd: Mapping[str, torch.Tensor], config: LoRATConfig) -> Tuple[Optional[float], bool]:
    """``lora_alpha`` / ``use_rslora`` stored in the file (release files have both), else the config's values
    (the official default alpha = r = 64 gives the same scale 1.0 the official loader assumes without them)."""
    alpha_t = sd.get("lora_alpha")
    rs_t = sd.get("use_rslora")
    alpha = float(alpha_t.item()) if isinstance(alpha_t, torch.Tensor) else float(config.lora_alpha)
    use_rslora = bool(rs_t.item()) if isinstance(rs_t, torch.Tensor) else bool(config.use_rslora)
    return alpha, use_rslora


def convert_official_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    config: LoRATConfig,
    load_file: Optional[Callable[[str], Dict[str, torch.Tensor]]] = None,
) -> Dict[str, torch.Tensor]:
    """Turn any LoRAT weights into the state dict of ``LoRAT(config)``.

    Accepted inputs:

    * an official **release file** (``token_type_embed``, ``blocks.N.*.lora.{A,B}``, ``head.*``, ``lora_alpha``,
      ``use_rslora``; no backbone): the DINOv2 weights come from ``load_file("backbone")``
      (``dinov2_vit{b,l,g}14_pretrain.pth``), ``pos_embed`` is bicubic-resized from its 37x37 grid and the LoRA is
      merged in fp32 (``W + scale * B @ A``, ``scale = lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA);
    * a full **official training** state dict (``*.linear.weight`` + LoRA): merged the same way;
    * an already **merged** state dict in the official inference layout (also what ``save_pretrained`` writes):
      used as is.

    With ``config.lora_rank > 0`` (fine-tuning) the adapters are kept un-merged instead; a merged input then gets
    fresh adapters with ``B = 0`` (so the network computes exactly the merged function).
    """
    sd = {k: v for k, v in state_dict.items()}
    alpha, use_rslora = _lora_scalars(sd, config)
    sd.pop("lora_alpha", None)
    sd.pop("use_rslora", None)
    adapters, rest = split_lora_state_dict(sd)
    want_unmerged = config.lora_rank > 0

    plain = _fuse_linear_layout(rest)
    if "patch_embed.proj.weight" not in plain:
        if not adapters and "token_type_embed" not in plain:
            raise ValueError("unrecognised LoRAT checkpoint: no backbone, no LoRA adapters and no token_type_embed")
        if load_file is None:
            raise ValueError(
                "this LoRAT release file holds only the LoRA adapters, head and type embedding; the DINOv2 backbone "
                "is needed as well (pass backbone_checkpoint='dinov2_vitX14_pretrain.pth')"
            )
        try:
            dino = load_file("backbone")
        except (ValueError, FileNotFoundError) as err:
            # Keep the exception type (e.g. WeightsNotAvailableError) but say which file is missing and why.
            raise type(err)(
                "the LoRAT release file holds no backbone weights and the DINOv2 backbone could not be loaded "
                f"({err}); pass backbone_checkpoint='dinov2_vitX14_pretrain.pth'"
            ) from err
        backbone = _dinov2_backbone(dino, config)
        plain = {**backbone, **plain}
    elif "pos_embed" in plain and plain["pos_embed"].shape[1] != config.search_grid ** 2:
        # A DINOv2-style grid (with or without cls) in a full state dict: resize like the official builder.
        pos = plain["pos_embed"]
        n = pos.shape[1]
        g = int(round(math.sqrt(n)))
        if g * g != n:
            pos = pos[:, 1:]
            g = int(round(math.sqrt(n - 1)))
        plain["pos_embed"] = interpolate_pos_embed(pos, (g, g), (config.search_grid, config.search_grid))
    plain.pop("cls_token", None)
    plain.pop("mask_token", None)
    plain.pop("head.bbox_offset", None)

    if adapters:
        ranks = {ab["A"].shape[0] for ab in adapters.values()}
        if want_unmerged:
            if ranks != {config.lora_rank}:
                raise ValueError(f"checkpoint LoRA rank {sorted(ranks)} differs from config.lora_rank={config.lora_rank}")
            want = lora_scaling(config.lora_rank, config.lora_alpha, config.use_rslora)
            have = lora_scaling(config.lora_rank, alpha, use_rslora)
            if abs(want - have) > 1e-12:
                raise ValueError(
                    f"checkpoint LoRA scale {have:g} (lora_alpha={alpha}, use_rslora={use_rslora}) differs from the "
                    f"config's {want:g} (lora_alpha={config.lora_alpha}, use_rslora={config.use_rslora})"
                )
            out = _unfuse_qkv(plain)
            for prefix, ab in adapters.items():
                out[f"{prefix}.lora.A"] = ab["A"]
                out[f"{prefix}.lora.B"] = ab["B"]
            return out
        return merge_lora_state_dict(plain, adapters, alpha=alpha, use_rslora=use_rslora)

    if want_unmerged:
        out = _unfuse_qkv(plain)
        gen = torch.Generator().manual_seed(0)
        for k in list(out):
            if k.endswith(".linear.weight"):
                prefix = k[: -len(".linear.weight")]
                w = out[k]
                out[f"{prefix}.lora.A"] = torch.randn(config.lora_rank, w.shape[1], generator=gen) * 0.02
                out[f"{prefix}.lora.B"] = torch.zeros(w.shape[0], config.lora_rank)
        return out
    return plain
