"""Generic plain Vision Transformer building blocks (DINOv2 / MAE style).

The layers here are deliberately generic so that several trackers can share them:

* :class:`PatchEmbed` -- non-overlapping conv patchifier returning ``(B, N, C)`` tokens;
* :class:`Attention` -- multi-head self-attention with a fused ``qkv`` projection, computed with
  :func:`torch.nn.functional.scaled_dot_product_attention`;
* :class:`Mlp` (``fc1`` -> GELU -> ``fc2``) and :class:`SwiGLUFFN` (``w12`` -> SiLU gate -> ``w3``);
* :class:`LayerScale` (per-channel ``gamma``) and :class:`DropPath` (stochastic depth, training only);
* :class:`Block` -- pre-norm transformer block ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``;
* :class:`VisionTransformer` -- patch embedding + blocks + final norm, with an optional class token and
  learned position embedding (the DINOv2 checkpoint layout: ``cls_token``, ``pos_embed``, ``mask_token``,
  ``patch_embed.proj``, ``blocks.N.*``, ``norm``).

Parameter names follow the DINOv2 / timm convention (``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``,
``blocks.N.ls1.gamma`` ...), so official checkpoints load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trackers import ops

__all__ = [
    "ViTSpec",
    "swiglu_hidden_dim",
    "PatchEmbed",
    "Attention",
    "Mlp",
    "SwiGLUFFN",
    "LayerScale",
    "DropPath",
    "Block",
    "VisionTransformer",
    "interpolate_pos_embed",
    "make_blocks",
    "trunc_normal_init_",
]


def swiglu_hidden_dim(dim: int, mlp_ratio: float = 4.0) -> int:
    """Hidden width DINOv2 uses for its SwiGLU FFN: 2/3 of the MLP width rounded up to a multiple of 8."""
    hidden = int(dim * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class ViTSpec:
    """Size of a plain ViT: embedding width, depth, heads, FFN kind and hidden width."""

    dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (GELU) or "swiglu"
    ffn_hidden: int = 0  # 0 = 4 * dim (mlp) or the DINOv2 SwiGLU rule

    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        return swiglu_hidden_dim(self.dim) if self.ffn == "swiglu" else 4 * self.dim


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``patch_size`` patches and project each to ``dim`` channels.

    Input ``(B, C, H, W)`` with H and W multiples of the patch size; output ``(B, H/p * W/p, dim)``
    in row-major patch order.
    """

    def __init__(self, patch_size: int = 14, in_chans: int = 3, dim: int = 768) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"PatchEmbed: image size {tuple(x.shape[-2:])} is not a multiple of patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (q rows first, then k, then v)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, query_start: int = 0) -> torch.Tensor:
        """Self-attention of ``x (B, N, C)``; with ``query_start > 0`` only tokens ``query_start:`` are returned
        (they still attend to all tokens), which saves work when the earlier outputs are not needed."""
        b, n, c = x.shape
        qkv = ops.linear_module(self.qkv, x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = qkv[0][:, :, query_start:] if query_start else qkv[0]
        if attn_mask is not None and query_start:
            attn_mask = attn_mask[..., query_start:, :]
        out = F.scaled_dot_product_attention(q, qkv[1], qkv[2], attn_mask=attn_mask)
        return ops.linear_module(self.proj, out.transpose(1, 2).reshape(b, n - query_start, c))


class Mlp(nn.Module):
    """Two-layer FFN ``fc2(GELU(fc1(x)))`` (exact erf GELU, as in DINOv2 and MAE).

    At CPU inference the GELU is fused into ``fc1``'s product (:func:`trackers.ops.linear_module`); ``act`` stays a
    module so the layout matches timm's, and the fused path is taken only while it is the exact ``nn.GELU()``.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act
        # fuse only the plain GELU module (a replaced or hooked activation is called as a module)
        if type(act) is nn.GELU and not (act._forward_hooks or act._forward_pre_hooks):
            h = ops.linear_module(self.fc1, x, "gelu" if act.approximate == "none" else "gelu_tanh")
        else:
            h = act(self.fc1(x))
        return ops.linear_module(self.fc2, h)


class SwiGLUFFN(nn.Module):
    """SwiGLU FFN: ``w12`` projects to two halves (x1, x2); output ``w3(silu(x1) * x2)``."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = ops.linear_module(self.w12, x).chunk(2, dim=-1)
        return ops.linear_module(self.w3, F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel learned scale ``x * gamma`` (CaiT / DINOv2)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: during training, zero a residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block with optional LayerScale and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_hidden: int,
        ffn: str = "mlp",
        layerscale_init: Optional[float] = 1e-5,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if ffn == "mlp":
            self.mlp: nn.Module = Mlp(dim, ffn_hidden, bias=ffn_bias)
        elif ffn == "swiglu":
            self.mlp = SwiGLUFFN(dim, ffn_hidden, bias=ffn_bias)
        else:
            raise ValueError(f"Block: unknown ffn kind {ffn!r} (expected 'mlp' or 'swiglu')")
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, query_start: int = 0) -> torch.Tensor:
        """``x (B, N, C)`` -> ``(B, N - query_start, C)``: outputs of tokens ``query_start:`` only (all tokens
        serve as keys/values). Use it in a last block whose leading tokens (e.g. a template) are discarded."""
        # Mixed precision: the residual stream keeps its own dtype (e.g. fp32) while the attention / FFN weights may
        # be lower precision (bf16); casts are no-ops when everything shares one dtype.
        mm = self._matmul_dtype()
        y = self.attn(self.norm1(x).to(mm), attn_mask, query_start).to(x.dtype)
        if query_start:
            x = x[:, query_start:]
        x = self._residual(x, y, self.ls1)
        y = self.mlp(self.norm2(x).to(mm)).to(x.dtype)
        return self._residual(x, y, self.ls2)

    def _residual(self, x: torch.Tensor, y: torch.Tensor, ls: nn.Module) -> torch.Tensor:
        if isinstance(ls, LayerScale) and isinstance(self.drop_path, nn.Identity):
            # x + gamma * y in one pass (no temporary for gamma * y); this is memory-bound work on CPU.
            return torch.addcmul(x, y, ls.gamma)
        return x + self.drop_path(ls(y))

    def _matmul_dtype(self) -> torch.dtype:
        return next(self.attn.parameters()).dtype


def make_blocks(
    spec: ViTSpec,
    layerscale_init: Optional[float] = 1e-5,
    drop_path_rate: float = 0.0,
    drop_path_uniform: bool = True,
    norm_eps: float = 1e-6,
) -> nn.ModuleList:
    """Build ``spec.depth`` :class:`Block` s. Drop path is uniform (DINOv2) or linearly increasing."""
    if drop_path_uniform:
        rates: Sequence[float] = [drop_path_rate] * spec.depth
    else:
        rates = [drop_path_rate * i / max(spec.depth - 1, 1) for i in range(spec.depth)]
    return nn.ModuleList(
        Block(spec.dim, spec.num_heads, spec.hidden(), ffn=spec.ffn, layerscale_init=layerscale_init,
              drop_path=rates[i], norm_eps=norm_eps)
        for i in range(spec.depth)
    )


def trunc_normal_init_(module: nn.Module, *params: Optional[torch.Tensor], std: float = 0.02) -> None:
    """The usual ViT initialisation: truncated-normal(``std``) weights and zero biases for every Linear of
    ``module``, then truncated-normal(``std``) for each of ``params`` (``None`` entries are skipped)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for p in params:
        if p is not None:
            nn.init.trunc_normal_(p, std=std)


def interpolate_pos_embed(pos: torch.Tensor, src_hw: Sequence[int], dst_hw: Sequence[int],
                          mode: str = "bicubic") -> torch.Tensor:
    """Resize a ``(1, h*w, C)`` grid of position embeddings to ``(1, H*W, C)``.

    Computed in float32 with ``align_corners=False`` and no antialias (the DINOv2 / LoRAT rule when the grid
    size is given explicitly), then cast back to the input dtype.
    """
    h, w = int(src_hw[0]), int(src_hw[1])
    if pos.ndim != 3 or pos.shape[1] != h * w:
        raise ValueError(f"interpolate_pos_embed: expected (1, {h * w}, C), got {tuple(pos.shape)}")
    c = pos.shape[-1]
    grid = pos.float().reshape(1, h, w, c).permute(0, 3, 1, 2)
    if (h, w) != (int(dst_hw[0]), int(dst_hw[1])):
        grid = F.interpolate(grid, size=(int(dst_hw[0]), int(dst_hw[1])), mode=mode, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, c).to(pos.dtype)


class VisionTransformer(nn.Module):
    """Plain ViT encoder (DINOv2 layout): patch embed, optional cls token + learned position grid, blocks, norm.

    ``forward(x)`` returns the normalised tokens ``(B, [1 +] N, C)``; the position grid (stored for
    ``img_size // patch_size`` squared patches) is bicubically resized to the input's patch grid.
    """

    def __init__(
        self,
        spec: ViTSpec,
        patch_size: int = 14,
        img_size: int = 518,
        in_chans: int = 3,
        cls_token: bool = True,
        pos_embed: bool = True,
        layerscale_init: Optional[float] = 1e-5,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, spec.dim)
        n_prefix = 1 if cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim)) if cls_token else None
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, self.grid * self.grid + n_prefix, spec.dim)) if pos_embed else None
        )
        self.blocks = make_blocks(spec, layerscale_init, drop_path_rate, norm_eps=norm_eps)
        self.norm = nn.LayerNorm(spec.dim, eps=norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) linears and embeddings, zero biases (the usual ViT initialisation)."""
        trunc_normal_init_(self, self.cls_token, self.pos_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        if self.pos_embed is not None:
            prefix = 1 if self.cls_token is not None else 0
            grid = interpolate_pos_embed(self.pos_embed[:, prefix:], (self.grid, self.grid), (h, w))
            tokens = tokens + grid
            if self.cls_token is not None:
                cls = self.cls_token + self.pos_embed[:, :1]
                tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        elif self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)
