"""DETRack's target head: query selection, a deformable transformer decoder and layer-wise box refinement.

Flow (``DETRHead.forward``):

1. **Projection.** The kept search tokens of the encoder go through one Linear ``embed_dim -> decoder_dim``. The
   projected tokens serve both as query candidates and as the decoder's value map.
2. **Query selection.** Every kept search token predicts a foreground logit (the shared ``score_head``,
   Linear(d, 1)) and a box (the shared ``box_head``, a 3-layer MLP). By default the box is predicted relative to the
   token's grid cell: ``sigmoid(box_head(t) + inverse_sigmoid(anchor))`` with ``anchor = (cell centre, w = h =
   anchor_wh)`` (DINO's two-stage proposals; the paper does not say). The ``K = min(num_queries, kept)`` tokens
   with the highest logits become the content queries; their boxes, detached, the 4-d reference boxes.
3. **Value map.** The projected search tokens are scattered back onto the ``Hs x Ws`` grid. Tokens dropped by
   candidate elimination have no feature: their cells enter the map as **zeros** (masked after the
   attention's value projection, Deformable-DETR's padding rule), so sampling near a dropped cell blends towards
   zero. This is our reading of the paper, which only says the decoder works on the reserved tokens; only the
   search tokens form the map (the template tokens are not used by the decoder).
4. **Decoder layers** (post-norm, Deformable-DETR / DINO order): self-attention among queries (``q = k = content
   + pos``, optional boolean mask, True = blocked) -> deformable cross-attention on the value map with the
   reference box (``loc = centre + offset / points * wh * 0.5``; ``dec_heads`` heads, ``dec_points`` points, one
   level) -> FFN (ReLU). The position part is recomputed from the current reference box in every layer:
   the sine embedding of ``(cx, cy, w, h)`` (128 channels per coordinate, temperature 10000, coordinates scaled by
   2*pi, sin/cos interleaved per frequency, concatenated in the order y, x, w, h) followed by a 2-layer MLP
   ``ref_point_head`` (512 -> d -> d).
5. **Refinement.** After each layer the shared ``box_head`` predicts ``(dx, dy, dw, dh)``; the layer's box is
   ``sigmoid(delta + inverse_sigmoid(reference))`` and its score ``score_head(output)``. The next layer takes that
   box, detached, as its reference (Deformable-DETR's iterative refinement). Fewer layers than built may be run.
6. **Denoising queries** (training) are prepended to the matching queries: their content is given directly or
   gathered from the value map at given grid cells, their reference boxes are given. A self-attention mask keeps
   them from leaking into the matching queries (see :func:`denoising_attn_mask`).

All boxes are ``(cx, cy, w, h)`` normalised to the search crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from trackers.nn.deform_attn import MSDeformAttn

__all__ = [
    "DETRHead",
    "DecoderLayer",
    "DenoisingQueries",
    "HeadOutput",
    "MLP",
    "box_cxcywh_to_xyxy",
    "box_sine_embedding",
    "denoising_attn_mask",
    "inverse_sigmoid",
]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to [0, 1] and both terms to at least ``eps`` (finite at 0 and 1)."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre-size boxes -> corner boxes."""
    c, s = boxes[..., :2], boxes[..., 2:]
    return torch.cat([c - 0.5 * s, c + 0.5 * s], dim=-1)


def box_sine_embedding(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of ``(..., 4)`` boxes ``(cx, cy, w, h)`` -> ``(..., 4 * num_feats)``.

    Per coordinate ``u`` (scaled by 2*pi): ``[sin(u/f_0), cos(u/f_0), sin(u/f_1), cos(u/f_1), ...]`` with
    ``f_k = temperature ** (2k / num_feats)``; the four blocks are concatenated in the order (cy, cx, w, h).
    """
    k = torch.arange(num_feats // 2, dtype=torch.float32, device=boxes.device)
    freq = temperature ** (2.0 * k / num_feats)
    u = boxes.float()[..., None] * (2.0 * math.pi) / freq  # (..., 4, num_feats/2)
    emb = torch.stack([u.sin(), u.cos()], dim=-1).flatten(-2)  # interleave sin/cos -> (..., 4, num_feats)
    emb = emb[..., [1, 0, 2, 3], :]
    return emb.flatten(-2).to(boxes.dtype)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (``layers.N``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP: num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def denoising_attn_mask(num_groups: int, group_size: int, num_queries: int, dn_sees_matching: bool = True,
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """Self-attention mask for ``num_groups`` denoising groups of ``group_size`` queries placed **before**
    ``num_queries`` matching queries: ``(T, T)`` bool, True = blocked, ``T = num_groups * group_size + num_queries``.

    Matching queries never see denoising queries (the ground truth must not leak into them) and denoising
    groups never see each other. By default a denoising query may look at the matching queries (DN-DETR / DINO);
    ``dn_sees_matching=False`` isolates the parts in both directions.
    """
    if num_groups < 0 or group_size < 1 or num_queries < 0:
        raise ValueError(f"denoising_attn_mask: invalid sizes groups={num_groups}, group_size={group_size}, "
                         f"queries={num_queries}")
    nd = num_groups * group_size
    t = nd + num_queries
    mask = torch.zeros(t, t, dtype=torch.bool, device=device)
    mask[nd:, :nd] = True
    group = torch.arange(nd, device=device) // group_size
    mask[:nd, :nd] = group[:, None] != group[None, :]
    if not dn_sees_matching:
        mask[:nd, nd:] = True
    return mask


@dataclass
class DenoisingQueries:
    """Extra training queries placed before the matching queries.

    Attributes:
        boxes: ``(B, Nd, 4)`` reference boxes ``(cx, cy, w, h)`` normalised to the search crop (e.g. noised GT).
        content: ``(B, Nd, decoder_dim)`` content vectors, or None to gather them from the value map at
            ``token_index``.
        token_index: ``(B, Nd)`` row-major search-grid cells whose projected encoder token is the content (a cell
            dropped by candidate elimination gives a zero vector). Used when ``content`` is None.
    """

    boxes: torch.Tensor
    content: Optional[torch.Tensor] = None
    token_index: Optional[torch.Tensor] = None


@dataclass
class HeadOutput:
    """Raw outputs of :class:`DETRHead` (boxes ``(cx, cy, w, h)`` normalised; scores are logits)."""

    boxes: torch.Tensor  # (L, B, K, 4) per run decoder layer, matching queries
    scores: torch.Tensor  # (L, B, K)
    query_index: torch.Tensor  # (B, K) search-grid cell of each query's source token
    enc_boxes: torch.Tensor  # (B, Nk, 4) query-selection boxes of every kept token
    enc_scores: torch.Tensor  # (B, Nk)
    enc_index: torch.Tensor  # (B, Nk) grid cell of every kept token
    memory: torch.Tensor  # (B, Hs*Ws, d) projected search tokens on the grid, zeros where dropped
    memory_mask: torch.Tensor  # (B, Hs*Ws) bool, True where the token was dropped
    dn_boxes: Optional[torch.Tensor] = None  # (L, B, Nd, 4)
    dn_scores: Optional[torch.Tensor] = None  # (L, B, Nd)


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention -> deformable cross-attention (box reference) -> FFN.

    Sub-module names follow DINO's deformable decoder layer (``self_attn``, ``norm2``, ``cross_attn``, ``norm1``,
    ``linear1``, ``linear2``, ``norm3``).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, num_points: int = 4, ffn_dim: int = 2048,
                 dropout: float = 0.0, num_levels: int = 1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, num_heads, num_levels, num_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: torch.Tensor, memory_mask: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``tgt, query_pos (B, T, d)``, ``reference (B, T, 4)``, ``memory (B, S, d)`` -> ``(B, T, d)``.
        ``attn_mask``: ``(T, T)`` or ``(B * heads, T, T)`` bool, True = blocked."""
        q = tgt + query_pos
        sa = self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(sa))
        ca = self.cross_attn(tgt + query_pos, reference, memory, spatial_shapes, memory_mask)
        tgt = self.norm1(tgt + self.dropout1(ca))
        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class DeformableDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` plus the box-to-position MLP ``ref_point_head`` (shared by all layers)."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, num_points: int, ffn_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, num_points, ffn_dim, dropout) for _ in range(num_layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)


class DETRHead(nn.Module):
    """Query selection + deformable decoder + shared box / score heads (see the module docstring).

    Args:
        embed_dim: encoder width.
        dim: decoder width.
        grid: search grid ``(Hs, Ws)``.
        num_queries: K, the number of selected tokens (capped by the number of kept tokens).
        num_layers: decoder layers built.
        num_heads, num_points: deformable (and self-) attention heads, sampling points per head.
        ffn_dim, dropout: decoder FFN width and dropout.
        box_layers: layers of the shared box MLP.
        anchor_wh: side of the cell anchor for query-selection boxes; None = absolute boxes ``sigmoid(box_head)``.
        score_prior: initial foreground probability of the score head (bias ``-log((1 - p) / p)``).
        query_pos_every_layer: recompute the position part from the current reference box in every layer (DINO);
            False computes it once from the proposals and reuses it.
        detach_query_content: cut the gradient from the decoder into the selected tokens' content.
        look_forward_twice: report each layer's box relative to the previous layer's *undetached* box (DINO), so
            a layer's box loss also trains the previous layer's refinement; forward values are unchanged.
    """

    def __init__(self, embed_dim: int = 768, dim: int = 256, grid: Tuple[int, int] = (16, 16),
                 num_queries: int = 64, num_layers: int = 3, num_heads: int = 8, num_points: int = 4,
                 ffn_dim: int = 2048, dropout: float = 0.0, box_layers: int = 3,
                 anchor_wh: Optional[float] = 0.05, score_prior: float = 0.01, query_pos_every_layer: bool = True,
                 detach_query_content: bool = False, look_forward_twice: bool = False) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"DETRHead: decoder width {dim} must be a multiple of 4")
        self.dim = dim
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_queries = int(num_queries)
        self.anchor_wh = anchor_wh
        self.query_pos_every_layer = query_pos_every_layer
        self.detach_query_content = detach_query_content
        self.look_forward_twice = look_forward_twice
        self.input_proj = nn.Linear(embed_dim, dim)
        self.score_head = nn.Linear(dim, 1)
        self.box_head = MLP(dim, dim, 4, box_layers)
        self.decoder = DeformableDecoder(num_layers, dim, num_heads, num_points, ffn_dim, dropout)
        h, w = self.grid
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("cell_centres", torch.stack([cx, cy], -1).reshape(h * w, 2), persistent=False)
        self.register_buffer("spatial_shapes", torch.tensor([[h, w]], dtype=torch.long), persistent=False)
        self.reset_parameters(score_prior)

    def reset_parameters(self, score_prior: float = 0.01) -> None:
        """Deformable-DETR's decoder init: Xavier-uniform weights in the decoder layers (then the deformable
        attention's own init), score bias at the prior, zero last box layer (boxes start at the references)."""
        for layer in self.decoder.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            layer.cross_attn.reset_parameters()
        nn.init.constant_(self.score_head.bias, -math.log((1.0 - score_prior) / score_prior))
        nn.init.zeros_(self.box_head.layers[-1].weight)
        nn.init.zeros_(self.box_head.layers[-1].bias)

    @property
    def num_layers(self) -> int:
        return len(self.decoder.layers)

    def _proposals(self, memory: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Query-selection boxes ``(B, Nk, 4)`` of the kept tokens ``memory (B, Nk, d)`` at grid cells ``index``."""
        delta = self.box_head(memory)
        if self.anchor_wh is None:
            return delta.sigmoid()
        centre = self.cell_centres.to(memory.dtype)[index]  # (B, Nk, 2)
        anchor = torch.cat([centre, torch.full_like(centre, float(self.anchor_wh))], dim=-1)
        return (delta + inverse_sigmoid(anchor)).sigmoid()

    def forward(self, search_tokens: torch.Tensor, search_index: torch.Tensor,
                dn_queries: Optional[DenoisingQueries] = None, attn_mask: Optional[torch.Tensor] = None,
                num_layers: Optional[int] = None) -> HeadOutput:
        """Run the head on the kept search tokens.

        Args:
            search_tokens: ``(B, Nk, embed_dim)`` encoder output for the kept search tokens.
            search_index: ``(B, Nk)`` their row-major grid cells.
            dn_queries: optional denoising queries (prepended to the matching queries).
            attn_mask: optional ``(T, T)`` or ``(B, T, T)`` bool self-attention mask over the ``T = Nd + K``
                queries (denoising first), True = blocked.
            num_layers: decoder layers to run (default all; fewer trades accuracy for speed).
        """
        n_layers = self.num_layers if num_layers is None else int(num_layers)
        if not 1 <= n_layers <= self.num_layers:
            raise ValueError(f"num_decoder_layers must be in [1, {self.num_layers}], got {num_layers}")
        b, nk, _ = search_tokens.shape
        hw = self.grid[0] * self.grid[1]
        mem = self.input_proj(search_tokens)  # (B, Nk, d)

        # Query selection on every kept token.
        enc_scores = self.score_head(mem).squeeze(-1)
        enc_boxes = self._proposals(mem, search_index)
        k = min(self.num_queries, nk)
        top = enc_scores.detach().topk(k, dim=1).indices  # (B, K) positions in the kept list
        content = mem.gather(1, top[..., None].expand(-1, -1, self.dim))
        if self.detach_query_content:
            content = content.detach()
        reference = enc_boxes.gather(1, top[..., None].expand(-1, -1, 4)).detach()
        query_index = search_index.gather(1, top)

        # Dense value map: kept tokens at their cells, zeros (masked) where candidate elimination dropped one.
        value = mem.new_zeros(b, hw, self.dim).scatter(1, search_index[..., None].expand(-1, -1, self.dim), mem)
        dropped = torch.ones(b, hw, dtype=torch.bool, device=mem.device).scatter(1, search_index, False)
        value_mask = dropped if nk < hw else None

        nd = 0
        if dn_queries is not None:
            dn_content, dn_boxes = self._denoising(dn_queries, value, b)
            nd = dn_boxes.shape[1]
            content = torch.cat([dn_content, content], dim=1)
            reference = torch.cat([dn_boxes.detach(), reference], dim=1)
        mask = self._self_attn_mask(attn_mask, b, nd + k)

        shapes = self.spatial_shapes
        boxes: List[torch.Tensor] = []
        scores: List[torch.Tensor] = []
        out = content
        previous = reference  # last reported boxes (with their graph under look_forward_twice)
        pos = None
        for layer in self.decoder.layers[:n_layers]:
            if pos is None or self.query_pos_every_layer:
                pos = self.decoder.ref_point_head(box_sine_embedding(reference, self.dim // 2))
            out = layer(out, pos, reference, value, shapes, value_mask, mask)
            base = previous if self.look_forward_twice else reference
            refined = (self.box_head(out) + inverse_sigmoid(base)).sigmoid()
            boxes.append(refined)
            scores.append(self.score_head(out).squeeze(-1))
            previous, reference = refined, refined.detach()
        all_boxes, all_scores = torch.stack(boxes), torch.stack(scores)
        return HeadOutput(
            boxes=all_boxes[:, :, nd:], scores=all_scores[:, :, nd:], query_index=query_index,
            enc_boxes=enc_boxes, enc_scores=enc_scores, enc_index=search_index,
            memory=value, memory_mask=dropped,
            dn_boxes=all_boxes[:, :, :nd] if dn_queries is not None else None,
            dn_scores=all_scores[:, :, :nd] if dn_queries is not None else None,
        )

    def _denoising(self, dn: DenoisingQueries, value: torch.Tensor, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
        boxes = dn.boxes
        if boxes.dim() != 3 or boxes.shape[0] != b or boxes.shape[-1] != 4:
            raise ValueError(f"dn_queries.boxes must be ({b}, Nd, 4), got {tuple(boxes.shape)}")
        nd = boxes.shape[1]
        if dn.content is not None:
            content = dn.content
            if content.shape != (b, nd, self.dim):
                raise ValueError(f"dn_queries.content must be ({b}, {nd}, {self.dim}), got {tuple(content.shape)}")
        elif dn.token_index is not None:
            idx = dn.token_index
            if idx.shape != (b, nd):
                raise ValueError(f"dn_queries.token_index must be ({b}, {nd}), got {tuple(idx.shape)}")
            hw = value.shape[1]
            if bool(((idx < 0) | (idx >= hw)).any()):
                raise ValueError(f"dn_queries.token_index must lie in [0, {hw}), got values outside")
            content = value.gather(1, idx.long()[..., None].expand(-1, -1, self.dim))
        else:
            raise ValueError("dn_queries needs either content or token_index")
        return content.to(value.dtype), boxes.to(value.dtype)

    def _self_attn_mask(self, attn_mask: Optional[torch.Tensor], b: int, t: int) -> Optional[torch.Tensor]:
        if attn_mask is None:
            return None
        if attn_mask.dtype != torch.bool:
            raise ValueError(f"attn_mask must be a bool tensor (True = blocked), got {attn_mask.dtype}")
        if attn_mask.shape == (t, t):
            return attn_mask
        if attn_mask.shape == (b, t, t):
            heads = self.decoder.layers[0].self_attn.num_heads
            return attn_mask.repeat_interleave(heads, dim=0)
        raise ValueError(f"attn_mask must be ({t}, {t}) or ({b}, {t}, {t}) for {t} queries "
                         f"(denoising + matching), got {tuple(attn_mask.shape)}")
