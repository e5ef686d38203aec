"""One-stream ViT encoder with candidate elimination (the OSTrack backbone that DETRack uses as its encoder).

Template ``z`` and search region ``x`` are patchified by one shared patch embedding, each gets its own learned
position grid (``pos_embed_z`` for the template grid, ``pos_embed_x`` for the search grid; no class token, no
segment embedding), the two token sets are concatenated ``[z; x]`` and run through plain pre-norm ViT blocks with
full self-attention, then a final LayerNorm.

Candidate elimination (CE). In the blocks listed in ``ce_locations`` (0-based block indices; OSTrack-B uses 3, 6
and 9 with keep ratio 0.7 each) the search tokens are ranked right after the attention sub-layer (and its
residual): a token's score is the post-softmax attention it receives from the template rows selected by the
template mask, averaged over those rows and over heads. The ``ceil(keep_ratio * n)`` best search tokens (sorted
by descending score) continue into the block's MLP and the following blocks; the others are dropped for good.
Template tokens are never dropped. With the default template mask -- the single template token at row and column
``g // 2 - 1`` of the ``g x g`` template grid (index 27 of 8x8), OSTrack's "centre point" -- a 256-token search grid
shrinks 256 -> 180 -> 126 -> 89. Keep ratio 1.0 (in the config or per call) turns CE off; the network is then
a plain ViT. Scores are computed in full precision from ``q_template @ k^T`` so the selection matches OSTrack's
explicit attention matrix; the block output itself uses fused scaled-dot-product attention.

:meth:`EncoderOutput.recover` puts the kept search tokens back into their row-major grid positions with zero
vectors for the dropped ones (OSTrack's recovery, after the final norm).

Parameter names are OSTrack's (``patch_embed.proj``, ``pos_embed_z``, ``pos_embed_x``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1|fc2``, ``norm``), which are
also MAE's block names, so MAE / CAE / OSTrack backbones load through :mod:`trackers.models.detrack.convert`.
With ``layerscale_init`` set the blocks carry per-channel ``ls1.gamma`` / ``ls2.gamma`` (CAE's ``gamma_1`` /
``gamma_2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from trackers import ops
from trackers.nn.vit import Block, PatchEmbed, trunc_normal_init_

__all__ = ["CEViTEncoder", "EncoderOutput", "centre_template_mask"]


def centre_template_mask(batch: int, grid: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """OSTrack's "centre point" template mask: ``(batch, grid, grid)`` bool, True only at row = col = grid//2 - 1
    (index 27 of an 8x8 grid; clamped to 0 for a 1x1 grid)."""
    mask = torch.zeros(batch, grid, grid, dtype=torch.bool, device=device)
    c = max(grid // 2 - 1, 0)
    mask[:, c, c] = True
    return mask


@dataclass
class EncoderOutput:
    """What the encoder produced for one batch.

    Attributes:
        tokens: ``(B, Nz + Nk, C)`` final-normed tokens: the ``Nz`` template tokens, then the ``Nk`` search tokens
            that survived candidate elimination, in the encoder's internal order (not grid order). ``Nz`` is
            ``num_template``: 0 when the encoder was asked for no template outputs.
        search_index: ``(B, Nk)`` row-major search-grid index of each kept search token (same order as tokens).
        kept_index: per CE stage, ``(B, n_kept)`` grid indices kept at that stage, best score first.
        removed_index: per CE stage, ``(B, n_removed)`` grid indices dropped at that stage, best score first.
        ce_scores: per CE stage, ``(B, Hs*Ws)`` the CE score of every search token by grid index (NaN where the
            token had already been dropped), detached.
        num_template: ``Nz`` (template tokens at the start of ``tokens``).
        grid: search grid ``(Hs, Ws)``.
    """

    tokens: torch.Tensor
    search_index: torch.Tensor
    num_template: int
    grid: Tuple[int, int]
    kept_index: List[torch.Tensor] = field(default_factory=list)
    removed_index: List[torch.Tensor] = field(default_factory=list)
    ce_scores: List[torch.Tensor] = field(default_factory=list)

    @property
    def template_tokens(self) -> torch.Tensor:
        return self.tokens[:, : self.num_template]

    @property
    def search_tokens(self) -> torch.Tensor:
        """Kept search tokens ``(B, Nk, C)`` in internal order (see ``search_index``)."""
        return self.tokens[:, self.num_template:]

    def recover(self) -> torch.Tensor:
        """``(B, Nz + Hs*Ws, C)``: template tokens, then all search tokens in row-major grid order, zero vectors
        where candidate elimination dropped a token."""
        b, _, c = self.tokens.shape
        n = self.grid[0] * self.grid[1]
        search = self.search_tokens
        full = search.new_zeros(b, n, c).scatter(1, self.search_index[..., None].expand(-1, -1, c), search)
        return torch.cat([self.template_tokens, full], dim=1)


class CEViTEncoder(nn.Module):
    """ViT one-stream encoder with candidate elimination (see the module docstring).

    Args:
        template_size, search_size: input sides in pixels (multiples of ``patch_size``).
        patch_size: patch side (16 for ViT-B/16).
        embed_dim, depth, num_heads: ViT width, number of blocks, attention heads.
        ffn_hidden: MLP hidden width (ViT: 4 * embed_dim).
        ce_locations: 0-based indices of the blocks that eliminate candidates.
        ce_keep_ratio: fraction of the current search tokens kept at each CE block (one value for all or one
            per location); 1.0 disables that stage.
        qkv_bias: bias on the fused qkv projection (MAE / OSTrack: True; CAE: loaded as [q_bias, 0, v_bias]).
        layerscale_init: None for plain blocks (MAE / OSTrack), a value to add per-channel LayerScale (CAE).
        drop_path_rate: stochastic depth, increasing linearly from 0 to this value over the blocks (training).
        norm_eps: LayerNorm epsilon.
        template_token_types: add ``token_type_embed`` ``(2, C)`` to the template tokens: row 1 where the token
            covers the target, row 0 elsewhere (LoRAT's template token types; not in DETRack or OSTrack). The
            centre of the template crop alone does not say where a target ends inside a larger object of the
            same look (a head on its body); the mask does.
    """

    def __init__(
        self,
        template_size: int = 128,
        search_size: int = 256,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        ffn_hidden: int = 3072,
        ce_locations: Sequence[int] = (3, 6, 9),
        ce_keep_ratio: Union[float, Sequence[float]] = 0.7,
        qkv_bias: bool = True,
        layerscale_init: Optional[float] = None,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        template_token_types: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("template_size", template_size), ("search_size", search_size)):
            if v <= 0 or v % patch_size:
                raise ValueError(f"CEViTEncoder: {name}={v} must be a positive multiple of patch_size={patch_size}")
        self.patch_size = patch_size
        self.template_grid = template_size // patch_size
        self.search_grid = search_size // patch_size
        self.ce_locations = tuple(int(i) for i in ce_locations)
        ratios = [float(ce_keep_ratio)] * len(self.ce_locations) if isinstance(ce_keep_ratio, (int, float)) \
            else [float(r) for r in ce_keep_ratio]
        if len(ratios) != len(self.ce_locations):
            raise ValueError(f"CEViTEncoder: {len(ratios)} keep ratios for {len(self.ce_locations)} CE locations")
        for i in self.ce_locations:
            if not 0 <= i < depth:
                raise ValueError(f"CEViTEncoder: CE location {i} is outside the {depth} blocks")
        for r in ratios:
            if not 0.0 < r <= 1.0:
                raise ValueError(f"CEViTEncoder: keep ratio {r} must be in (0, 1]")
        self.ce_keep_ratio = dict(zip(self.ce_locations, ratios))

        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed_z = nn.Parameter(torch.zeros(1, self.template_grid ** 2, embed_dim))
        self.pos_embed_x = nn.Parameter(torch.zeros(1, self.search_grid ** 2, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, ffn_hidden, layerscale_init=layerscale_init, drop_path=rates[i],
                  norm_eps=norm_eps, qkv_bias=qkv_bias)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.token_type_embed = nn.Parameter(torch.zeros(2, embed_dim)) if template_token_types else None
        trunc_normal_init_(self, self.pos_embed_z, self.pos_embed_x, self.token_type_embed)

    def _keep_ratio(self, block: int, override: Optional[float]) -> float:
        """Keep ratio of ``block`` for this call (1.0 = no elimination). A per-call value replaces the configured
        ratio at every CE location (a training-time keep-rate schedule); blocks configured with 1.0 never prune."""
        cfg = self.ce_keep_ratio.get(block, 1.0)
        if cfg >= 1.0:
            return 1.0
        return cfg if override is None else float(override)

    def embed_template(self, z: torch.Tensor, fg: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Template tokens ``(B, gt*gt, C)``: patches + ``pos_embed_z`` (+ ``token_type_embed[fg]`` when the
        encoder has token types; ``fg`` is the ``(B, gt, gt)`` target mask). Constant per target: compute once."""
        tz = self.patch_embed(z)
        gt = self.template_grid
        if tz.shape[1] != gt ** 2:
            raise ValueError(f"CEViTEncoder: expected a {gt * self.patch_size}px template, got "
                             f"{tuple(z.shape[-2:])}")
        tz = tz + self.pos_embed_z.to(tz.dtype)
        if self.token_type_embed is None:
            return tz
        if fg is None:
            raise ValueError("this encoder marks the target in its template (template_token_types): pass the "
                             f"({tz.shape[0]}, {gt}, {gt}) template foreground mask")
        if tuple(fg.shape) != (tz.shape[0], gt, gt):
            raise ValueError(f"template foreground mask must be ({tz.shape[0]}, {gt}, {gt}), got {tuple(fg.shape)}")
        types = fg.reshape(tz.shape[0], gt * gt).to(device=tz.device).bool().long()
        return tz + self.token_type_embed.to(tz.dtype)[types]

    def embed_search(self, x: torch.Tensor) -> torch.Tensor:
        """Search tokens ``(B, gs*gs, C)``: patches + ``pos_embed_x``."""
        tx = self.patch_embed(x)
        if tx.shape[1] != self.search_grid ** 2:
            raise ValueError(f"CEViTEncoder: expected a {self.search_grid * self.patch_size}px search region, got "
                             f"{tuple(x.shape[-2:])}")
        return tx + self.pos_embed_x.to(tx.dtype)

    def forward(self, z: torch.Tensor, x: torch.Tensor, template_mask: Optional[torch.Tensor] = None,
                ce_keep_ratio: Optional[float] = None, template_fg: Optional[torch.Tensor] = None) -> EncoderOutput:
        """Encode ``z (B,3,Ht,Wt)`` and ``x (B,3,Hs,Ws)`` (ImageNet-normalised).

        Args:
            template_mask: ``(B, gt, gt)`` bool, the template tokens whose attention ranks the search tokens;
                None = the centre token.
            ce_keep_ratio: optional per-call keep ratio for every CE block (e.g. a warm-up schedule), 1.0 = no CE.
            template_fg: ``(B, gt, gt)`` target mask for the token types (encoders built with them only).
        """
        return self.forward_tokens(self.embed_template(z, template_fg), self.embed_search(x), template_mask,
                                   ce_keep_ratio)

    def forward_tokens(self, z_tokens: torch.Tensor, x_tokens: torch.Tensor,
                       template_mask: Optional[torch.Tensor] = None,
                       ce_keep_ratio: Optional[float] = None, template_outputs: bool = True) -> EncoderOutput:
        """Same as :meth:`forward` from embedded tokens (:meth:`embed_template` / :meth:`embed_search`).

        ``template_outputs=False`` leaves out what only the template's encoder outputs need: the last block
        computes its attention output, projection and MLP for the search tokens only (the template tokens still
        serve as keys and values, and still rank candidates if that block eliminates), and the final norm runs on
        the search tokens. The search tokens come out the same; ``tokens`` then holds them alone
        (``num_template = 0``). A tracker's decoder reads only search tokens.
        """
        if ce_keep_ratio is not None and not 0.0 < ce_keep_ratio <= 1.0:
            raise ValueError(f"ce_keep_ratio must be in (0, 1], got {ce_keep_ratio}")
        gt, gs = self.template_grid, self.search_grid
        b = x_tokens.shape[0]
        if z_tokens.shape[:2] != (b, gt * gt) or x_tokens.shape[1] != gs * gs:
            raise ValueError(f"CEViTEncoder: expected ({b}, {gt * gt}, C) template and ({b}, {gs * gs}, C) search "
                             f"tokens, got {tuple(z_tokens.shape)} and {tuple(x_tokens.shape)}")
        if template_mask is None:
            template_mask = centre_template_mask(b, gt, x_tokens.device)
        elif template_mask.shape != (b, gt, gt):
            raise ValueError(f"template_mask must be ({b}, {gt}, {gt}), got {tuple(template_mask.shape)}")
        elif not bool(template_mask.reshape(b, -1).any(-1).all()):
            raise ValueError("template_mask selects no template token for some batch item")
        rows = template_mask.reshape(b, gt * gt).to(torch.float32)

        nz = gt * gt
        h = torch.cat([z_tokens, x_tokens.to(z_tokens.dtype)], dim=1)
        search_index = torch.arange(gs * gs, device=h.device).expand(b, -1)
        out = EncoderOutput(h, search_index, nz, (gs, gs))
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            search_only = not template_outputs and i == last
            h, search_index = self._block(blk, h, nz, rows, search_index, self._keep_ratio(i, ce_keep_ratio), out,
                                          search_only)
        if not template_outputs:
            h = h[:, h.shape[1] - search_index.shape[1]:]  # no-op after a search-only last block
            out.num_template = 0
        out.tokens = self.norm(h)
        out.search_index = search_index
        return out

    def _block(self, blk: Block, h: torch.Tensor, nz: int, rows: torch.Tensor, search_index: torch.Tensor,
               keep_ratio: float, out: EncoderOutput, search_only: bool = False
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One pre-norm block with an optional elimination step between its attention and MLP sub-layers.

        ``h`` holds ``nz`` template tokens, then the search tokens. ``search_only``: return the search tokens'
        outputs alone (all tokens still serve as keys / values and the template rows' queries still rank the
        candidates).
        """
        b, n, c = h.shape
        attn = blk.attn
        # Mixed precision: the residual stream keeps its dtype, the block matrices may be lower precision.
        mm = attn.qkv.weight.dtype
        # Linears through trackers.ops (pre-packed oneDNN at CPU inference, F.linear otherwise), as the ViT blocks.
        qkv = ops.linear_module(attn.qkv, blk.norm1(h).to(mm))
        qkv = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        start = nz if search_only else 0
        y = F.scaled_dot_product_attention(q[:, :, start:], k, v).transpose(1, 2).reshape(b, n - start, c)
        h = h[:, start:] + blk.drop_path(blk.ls1(ops.linear_module(attn.proj, y).to(h.dtype)))
        if keep_ratio < 1.0:
            h, search_index = self._eliminate(h, q, k, nz, rows, search_index, keep_ratio, out)
        return h + blk.drop_path(blk.ls2(blk.mlp(blk.norm2(h).to(mm)).to(h.dtype))), search_index

    @staticmethod
    def _eliminate(h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, nz: int, rows: torch.Tensor,
                   search_index: torch.Tensor, keep_ratio: float,
                   out: EncoderOutput) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keep the best search tokens. ``q``, ``k`` cover all ``nz`` template + ``ns`` search tokens; ``h`` holds
        the ``ns`` search tokens last, after the template tokens or alone (a search-only last block)."""
        b, n_h, c = h.shape
        ns = search_index.shape[1]
        nz_h = n_h - ns  # template tokens in h: nz, or 0
        scale = q.shape[-1] ** -0.5
        # Attention probabilities of the template rows only (each softmax still runs over all n keys).
        # scores in at least fp32 even when the block matrices run in bf16 (they decide which tokens survive)
        acc = torch.promote_types(q.dtype, torch.float32)
        logits = (q[:, :, :nz].to(acc) @ k.to(acc).transpose(-2, -1)) * scale
        probs = logits.softmax(dim=-1)[..., nz:]  # (B, heads, nz, ns)
        w = rows.to(probs.dtype)
        score = (probs * w[:, None, :, None]).sum(2) / w.sum(-1)[:, None, None]  # mean over selected rows
        score = score.mean(dim=1)  # mean over heads -> (B, ns)
        keep = math.ceil(keep_ratio * ns)
        order = torch.sort(score, dim=1, descending=True).indices
        kept, dropped = order[:, :keep], order[:, keep:]
        new_index = search_index.gather(1, kept)
        out.kept_index.append(new_index)
        out.removed_index.append(search_index.gather(1, dropped))
        n_grid = out.grid[0] * out.grid[1]
        full = score.new_full((b, n_grid), float("nan")).scatter(1, search_index, score.detach())
        out.ce_scores.append(full)
        search = h[:, nz_h:].gather(1, kept[..., None].expand(-1, -1, c))
        return torch.cat([h[:, :nz_h], search], dim=1), new_index
