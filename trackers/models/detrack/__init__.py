"""DETRack network: a ViT one-stream encoder with candidate elimination and a deformable-DETR target head.

Paper: "Efficient Training for Visual Tracking with Deformable Transformer" (Wei, Zeng & Zeng, arXiv:2309.02676).
No official code was released; this is an independent implementation from the paper, with the defaults of the
works it builds on (OSTrack for the encoder, Deformable-DETR and DINO for the decoder) wherever the paper is
silent. Every such choice is a :class:`DETRackConfig` field.

Network (``DETRack.forward``):

* **Encoder** (:class:`~trackers.models.detrack.encoder.CEViTEncoder`, attribute ``backbone``): ViT-B/16 over
  ``[template tokens; search tokens]`` (128 px template -> 8x8 tokens, 256 px search -> 16x16 tokens, separate
  learned position grids), with OSTrack's candidate elimination at blocks 3, 6 and 9 (0-based), keep ratio 0.7,
  ranked by the attention of the template's centre token: 256 -> 180 -> 126 -> 89 search tokens survive.
  Parameter names are OSTrack's, so OSTrack, MAE and CAE backbones load through
  :func:`trackers.models.detrack.convert.convert_encoder_checkpoint`.
* **Head** (:class:`~trackers.models.detrack.decoder.DETRHead`, attribute ``head``): Linear 768 -> 256; every kept
  search token predicts a box and a score; the top ``num_queries = 64`` become content queries with their boxes
  as 4-d reference boxes; 3 post-norm decoder layers (self-attention, deformable cross-attention with box
  references -- 8 heads, 4 points, one level -- and an FFN) with a sine box embedding + MLP as position part and
  box refinement in inverse-sigmoid space with detached references; one shared 3-layer box MLP and one shared
  Linear score head serve query selection and every decoder layer.

Decisions where the paper is silent or ambiguous (field name, default, reason):

* ``depth = 12``: the paper says "vanilla ViT-Base". Its Table 3 parameter and FLOP counts (68.9 M, 15.6 G)
  rather fit a 9-block ViT-B; ``depth=9`` (with e.g. ``ce_locations=(2, 4, 6)``) builds that variant.
* ``ce_locations = (3, 6, 9)``, ``ce_keep_ratio = 0.7``, ``ce_template_range = "centre"``: OSTrack-B's CE
  setting; the paper adopts OSTrack's CE without giving numbers. ``ce_keep_ratio = 1.0`` disables CE (the
  "no sparsity" rows of Table 3); ``forward(..., ce_keep_ratio=r)`` overrides it per call (CE warm-up).
* ``qs_anchor_wh = 0.05``: query-selection boxes are predicted relative to each token's grid cell
  (``sigmoid(mlp + inverse_sigmoid(cell centre, 0.05, 0.05))``, DINO's two-stage proposals) so that freshly
  initialised proposals already sit at their token; ``None`` predicts absolute boxes.
* ``dec_ffn_dim = 2048``, ``dec_dropout = 0.0``: DINO's decoder (the paper's parameter count fits 2048 better
  than Deformable-DETR's 1024).
* ``query_pos_every_layer = True``: the position part is recomputed from the current reference box in every
  layer (DINO; the paper's Fig. 4 -- its text says "in the first layer", which ``False`` builds).
* Tokens removed by candidate elimination enter the deformable-attention value map as **zeros** (masked after the
  value projection); only search tokens form the value map, template tokens are not used by the decoder.
* ``score_prior = 0.01``: Deformable-DETR's initial score bias; the box MLP's last layer starts at zero.
* ``detach_query_content = False``: the selected tokens enter the decoder as content queries *with* their
  gradient (the paper initialises the content part "directly with the tokens from the encoder"); the reference
  boxes are always detached (Deformable-DETR / DINO).
* ``look_forward_twice = False``: each layer's reported box is its own refinement of the detached reference
  (Deformable-DETR); ``True`` is DINO's variant (same values, extra gradient path into the previous layer).
  The post-norm layers feed the heads directly (no extra final norm).
* Denoising queries come before the matching queries (DINO's layout), so an attention mask is ``[dn; matching]``.
* ``template_token_types = False``: an addition that is not in the paper. When on, two learned vectors mark the
  template tokens that cover the target and those that do not (LoRAT's token types; ``forward(...,
  template_fg=mask)``, the tracker passes its template mask). The template crop's centre alone does not say where
  a target ends inside a larger object of the same look, such as a head on its body.

Size of the default network (``benchmarks/detrack.py``, FlopCounterMode, attention matmuls included):
90.8 M parameters (85.9 M encoder, 4.9 M head); 21.4 GMACs per frame with CE, 29.7 GMACs without; each
decoder layer costs about 0.13 GMACs. With ``depth=9, ce_locations=(2, 4, 6)``: 69.6 M, 15.8 / 22.5 GMACs, close to
the paper's 68.9 M and 15.6 / 21.4 G.

Boxes: everything the model outputs is normalised to the search crop. Raw tensors are ``(cx, cy, w, h)`` (the
parameterisation the refinement works in); :class:`DETRackOutput` exposes normalised ``(x1, y1, x2, y2)`` through
``pred_boxes`` / ``layer_boxes_xyxy`` / ``enc_boxes_xyxy`` and :meth:`DETRack.score_map`. Scores are logits
(sigmoid = predicted IoU quality when trained with the paper's quality focal loss).

One forward serves inference and training: denoising queries and a self-attention mask are optional inputs, and
``num_decoder_layers`` may run fewer layers than were trained (paper Table 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from trackers.models.detrack.decoder import (
    DenoisingQueries,
    DETRHead,
    box_cxcywh_to_xyxy,
    denoising_attn_mask,
)
from trackers.models.detrack.encoder import CEViTEncoder, EncoderOutput, centre_template_mask

__all__ = [
    "DETRack",
    "DETRackConfig",
    "DETRackOutput",
    "DenoisingQueries",
    "box_cxcywh_to_xyxy",
    "centre_template_mask",
    "denoising_attn_mask",
]


@dataclass
class DETRackConfig:
    """Architecture of a DETRack network (defaults: the paper's ViT-B/16, 128/256 crops, CE, 3-layer decoder).

    Encoder: ``template_size`` / ``search_size`` (pixels, multiples of ``patch_size``), ``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio`` (ViT FFN width = ``mlp_ratio * embed_dim``),
    ``qkv_bias``, ``layerscale_init`` (None = plain blocks as MAE/OSTrack; a value adds LayerScale as CAE),
    ``norm_eps``, ``drop_path_rate`` (training only; OSTrack trains with 0.1), ``template_token_types``
    (not in the paper, default off: learned embeddings mark the template tokens that cover the target, as LoRAT's
    token types do; ``forward`` then needs ``template_fg``).
    Candidate elimination: ``ce_locations`` (0-based block indices), ``ce_keep_ratio`` (one value or one per
    location; 1.0 = off), ``ce_template_range`` (``"centre"``: the template's centre token ranks the search
    tokens; ``"all"``: every template token) -- used when ``forward`` gets no ``template_mask``.
    Head: ``decoder_dim``, ``num_queries`` (K), ``num_decoder_layers``, ``dec_heads``, ``dec_points``,
    ``dec_ffn_dim``, ``dec_dropout``, ``box_mlp_layers``, ``qs_anchor_wh`` (None = absolute query-selection
    boxes), ``score_prior``, ``query_pos_every_layer``, ``detach_query_content``, ``look_forward_twice``.
    See the module docstring for the reasons behind the defaults.
    """

    template_size: int = 128
    search_size: int = 256
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layerscale_init: Optional[float] = None
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    template_token_types: bool = False
    ce_locations: Tuple[int, ...] = (3, 6, 9)
    ce_keep_ratio: Union[float, Tuple[float, ...]] = 0.7
    ce_template_range: str = "centre"
    decoder_dim: int = 256
    num_queries: int = 64
    num_decoder_layers: int = 3
    dec_heads: int = 8
    dec_points: int = 4
    dec_ffn_dim: int = 2048
    dec_dropout: float = 0.0
    box_mlp_layers: int = 3
    qs_anchor_wh: Optional[float] = 0.05
    score_prior: float = 0.01
    query_pos_every_layer: bool = True
    detach_query_content: bool = False
    look_forward_twice: bool = False

    def __post_init__(self) -> None:
        for name in ("template_size", "search_size"):
            v = getattr(self, name)
            if v <= 0 or v % self.patch_size:
                raise ValueError(f"DETRackConfig.{name}={v} must be a positive multiple of patch_size="
                                 f"{self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"DETRackConfig.embed_dim={self.embed_dim} is not divisible by num_heads="
                             f"{self.num_heads}")
        if self.decoder_dim % self.dec_heads or self.decoder_dim % 4:
            raise ValueError(f"DETRackConfig.decoder_dim={self.decoder_dim} must be divisible by dec_heads="
                             f"{self.dec_heads} and by 4")
        self.ce_locations = tuple(int(i) for i in self.ce_locations)
        for i in self.ce_locations:
            if not 0 <= i < self.depth:
                raise ValueError(f"DETRackConfig.ce_locations={self.ce_locations}: block {i} is outside depth="
                                 f"{self.depth}")
        ratios = (self.ce_keep_ratio,) if isinstance(self.ce_keep_ratio, (int, float)) else self.ce_keep_ratio
        if not isinstance(self.ce_keep_ratio, (int, float)):
            self.ce_keep_ratio = tuple(float(r) for r in self.ce_keep_ratio)
            if len(self.ce_keep_ratio) != len(self.ce_locations):
                raise ValueError(f"DETRackConfig.ce_keep_ratio has {len(self.ce_keep_ratio)} values for "
                                 f"{len(self.ce_locations)} ce_locations")
        for r in ratios:
            if not 0.0 < float(r) <= 1.0:
                raise ValueError(f"DETRackConfig.ce_keep_ratio={self.ce_keep_ratio} must lie in (0, 1]")
        if self.ce_template_range not in ("centre", "all"):
            raise ValueError(f"DETRackConfig.ce_template_range must be 'centre' or 'all', got "
                             f"{self.ce_template_range!r}")
        for name in ("num_queries", "num_decoder_layers", "dec_points", "box_mlp_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"DETRackConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.qs_anchor_wh is not None and not 0.0 < self.qs_anchor_wh < 1.0:
            raise ValueError(f"DETRackConfig.qs_anchor_wh={self.qs_anchor_wh} must be in (0, 1) or None")
        if not 0.0 < self.score_prior < 1.0:
            raise ValueError(f"DETRackConfig.score_prior={self.score_prior} must be in (0, 1)")

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    def num_kept_tokens(self, ce_keep_ratio: Optional[float] = None) -> int:
        """Search tokens that survive candidate elimination (256 -> 180 -> 126 -> 89 by default)."""
        n = self.search_grid ** 2
        ratios = self.ce_keep_ratio if isinstance(self.ce_keep_ratio, tuple) else \
            (self.ce_keep_ratio,) * len(self.ce_locations)
        for r in ratios:
            if r < 1.0:
                n = math.ceil((r if ce_keep_ratio is None else ce_keep_ratio) * n)
        return n

    def num_selected_queries(self, ce_keep_ratio: Optional[float] = None) -> int:
        """K actually used: ``min(num_queries, kept tokens)`` (size of the matching part of an attention mask)."""
        return min(self.num_queries, self.num_kept_tokens(ce_keep_ratio))


@dataclass
class DETRackOutput:
    """Everything one :meth:`DETRack.forward` produced. Boxes are ``(cx, cy, w, h)`` normalised to the search
    crop unless the name says ``xyxy``; scores are logits.

    Attributes:
        boxes: ``(L, B, K, 4)`` box of every matching query after each of the ``L`` run decoder layers.
        scores: ``(L, B, K)`` score of every matching query after each layer.
        query_index: ``(B, K)`` row-major search-grid cell of each query's source token.
        enc_boxes, enc_scores: ``(B, Nk, 4)`` / ``(B, Nk)`` query-selection predictions of every kept token.
        enc_index: ``(B, Nk)`` grid cell of every kept token (the top-K of ``enc_scores`` are the queries).
        memory: ``(B, Hs*Ws, decoder_dim)`` projected search tokens on the grid, zero where dropped by CE (the
            source of denoising contents); ``memory_mask`` ``(B, Hs*Ws)`` True where dropped.
        dn_boxes, dn_scores: ``(L, B, Nd, 4)`` / ``(L, B, Nd)`` for the denoising queries, if any.
        kept_index, removed_index: per CE stage, grid cells kept / removed (best CE score first).
        template_tokens: ``(B, Nz, embed_dim)`` encoder output of the template (None when the forward was asked
            for ``template_outputs=False``).
        grid: search grid ``(Hs, Ws)``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    query_index: torch.Tensor
    enc_boxes: torch.Tensor
    enc_scores: torch.Tensor
    enc_index: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor
    grid: Tuple[int, int]
    template_tokens: Optional[torch.Tensor] = None
    dn_boxes: Optional[torch.Tensor] = None
    dn_scores: Optional[torch.Tensor] = None
    kept_index: List[torch.Tensor] = field(default_factory=list)
    removed_index: List[torch.Tensor] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def pred_boxes(self) -> torch.Tensor:
        """``(B, K, 4)`` final-layer boxes, normalised ``(x1, y1, x2, y2)``."""
        return box_cxcywh_to_xyxy(self.boxes[-1])

    @property
    def pred_scores(self) -> torch.Tensor:
        """``(B, K)`` final-layer logits."""
        return self.scores[-1]

    @property
    def layer_boxes_xyxy(self) -> torch.Tensor:
        """``(L, B, K, 4)`` every layer's boxes as normalised ``(x1, y1, x2, y2)``."""
        return box_cxcywh_to_xyxy(self.boxes)

    @property
    def enc_boxes_xyxy(self) -> torch.Tensor:
        """``(B, Nk, 4)`` query-selection boxes as normalised ``(x1, y1, x2, y2)``."""
        return box_cxcywh_to_xyxy(self.enc_boxes)


class DETRack(nn.Module):
    """DETRack tracking network (see the module docstring). State-dict keys: ``backbone.*`` (OSTrack layout)
    and ``head.*`` (``input_proj``, ``score_head``, ``box_head.layers.N``, ``decoder.layers.N.*``,
    ``decoder.ref_point_head.layers.N``)."""

    def __init__(self, config: Optional[DETRackConfig] = None) -> None:
        super().__init__()
        c = config if config is not None else DETRackConfig()
        self.config = c
        self.backbone = CEViTEncoder(
            template_size=c.template_size, search_size=c.search_size, patch_size=c.patch_size,
            embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
            ffn_hidden=int(round(c.mlp_ratio * c.embed_dim)), ce_locations=c.ce_locations,
            ce_keep_ratio=c.ce_keep_ratio, qkv_bias=c.qkv_bias, layerscale_init=c.layerscale_init,
            drop_path_rate=c.drop_path_rate, norm_eps=c.norm_eps, template_token_types=c.template_token_types,
        )
        self.head = DETRHead(
            embed_dim=c.embed_dim, dim=c.decoder_dim, grid=(c.search_grid, c.search_grid),
            num_queries=c.num_queries, num_layers=c.num_decoder_layers, num_heads=c.dec_heads,
            num_points=c.dec_points, ffn_dim=c.dec_ffn_dim, dropout=c.dec_dropout, box_layers=c.box_mlp_layers,
            anchor_wh=c.qs_anchor_wh, score_prior=c.score_prior, query_pos_every_layer=c.query_pos_every_layer,
            detach_query_content=c.detach_query_content, look_forward_twice=c.look_forward_twice,
        )

    def default_template_mask(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """``(batch, gt, gt)`` bool template mask used when ``forward`` gets none (``config.ce_template_range``)."""
        g = self.config.template_grid
        if self.config.ce_template_range == "all":
            return torch.ones(batch, g, g, dtype=torch.bool, device=device)
        return centre_template_mask(batch, g, device)

    # ------------------------------------------------------------------------------------------ precision
    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> "DETRack":
        """Store the encoder blocks' attention / MLP matrices in ``dtype``; keep everything else in float32
        (patch and position embeddings, norms, the residual stream, the CE scores and the whole decoder head)."""
        self.float()
        for blk in self.backbone.blocks:
            blk.attn.to(dtype)
            blk.mlp.to(dtype)
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the encoder block matrices (the network's compute precision)."""
        if len(self.backbone.blocks) == 0:
            return self.backbone.pos_embed_x.dtype
        return self.backbone.blocks[0].attn.qkv.weight.dtype

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype the image crops must have (that of the patch embedding)."""
        return self.backbone.patch_embed.proj.weight.dtype

    # ------------------------------------------------------------------------------------------ forward
    def embed_template(self, template: torch.Tensor, template_fg: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Template tokens ``(B, gt*gt, embed_dim)`` (patches + position grid, + token types when
        ``config.template_token_types``, which need ``template_fg``). They do not depend on the search region, so a
        tracker computes them once per target and calls :meth:`forward_tokens` every frame."""
        return self.backbone.embed_template(template, template_fg)

    def encode(self, template: torch.Tensor, search: torch.Tensor, template_mask: Optional[torch.Tensor] = None,
               ce_keep_ratio: Optional[float] = None, template_fg: Optional[torch.Tensor] = None) -> EncoderOutput:
        """Run the encoder only (see :class:`~trackers.models.detrack.encoder.EncoderOutput`)."""
        return self._encode(self.embed_template(template, template_fg), search, template_mask, ce_keep_ratio)

    def _encode(self, template_tokens: torch.Tensor, search: torch.Tensor, template_mask: Optional[torch.Tensor],
                ce_keep_ratio: Optional[float], template_outputs: bool = True) -> EncoderOutput:
        if template_mask is None:
            template_mask = self.default_template_mask(search.shape[0], search.device)
        return self.backbone.forward_tokens(template_tokens, self.backbone.embed_search(search), template_mask,
                                            ce_keep_ratio, template_outputs=template_outputs)

    def forward(self, template: torch.Tensor, search: torch.Tensor, *, template_mask: Optional[torch.Tensor] = None,
                template_fg: Optional[torch.Tensor] = None, dn_queries: Optional[DenoisingQueries] = None,
                attn_mask: Optional[torch.Tensor] = None, num_decoder_layers: Optional[int] = None,
                ce_keep_ratio: Optional[float] = None, template_outputs: bool = True) -> DETRackOutput:
        """Track one search region against a template.

        Args:
            template: ``(B, 3, Ht, Wt)`` ImageNet-normalised template crop.
            search: ``(B, 3, Hs, Ws)`` ImageNet-normalised search crop.
            template_mask: ``(B, gt, gt)`` bool template tokens that rank search tokens for candidate elimination
                (default: ``config.ce_template_range``).
            template_fg: ``(B, gt, gt)`` bool / 0-1 mask of the template tokens that cover the target; needed (and
                only used) when ``config.template_token_types``.
            dn_queries: optional :class:`DenoisingQueries` (training), prepended to the matching queries.
            attn_mask: optional ``(T, T)`` or ``(B, T, T)`` bool decoder self-attention mask over the
                ``T = Nd + K`` queries (denoising first), True = blocked; see
                :func:`~trackers.models.detrack.decoder.denoising_attn_mask`.
            num_decoder_layers: decoder layers to run (default ``config.num_decoder_layers``).
            ce_keep_ratio: optional per-call keep ratio at every CE block (1.0 = no elimination).
            template_outputs: ``False`` skips the encoder work that only the template's outputs need (the last
                block's attention output, projection and MLP on template rows; the decoder reads search tokens
                only): same boxes and scores, ``template_tokens`` is then None. Trackers pass False.
        """
        return self.forward_tokens(self.embed_template(template, template_fg), search, template_mask=template_mask,
                                   dn_queries=dn_queries, attn_mask=attn_mask,
                                   num_decoder_layers=num_decoder_layers, ce_keep_ratio=ce_keep_ratio,
                                   template_outputs=template_outputs)

    def forward_tokens(self, template_tokens: torch.Tensor, search: torch.Tensor, *,
                       template_mask: Optional[torch.Tensor] = None, dn_queries: Optional[DenoisingQueries] = None,
                       attn_mask: Optional[torch.Tensor] = None, num_decoder_layers: Optional[int] = None,
                       ce_keep_ratio: Optional[float] = None, template_outputs: bool = True) -> DETRackOutput:
        """:meth:`forward` with precomputed template tokens from :meth:`embed_template` (same arguments)."""
        enc = self._encode(template_tokens, search, template_mask, ce_keep_ratio, template_outputs)
        # Contiguous: a slice after the template rows would send the head's Linear layers through batched
        # products (one per sample) instead of one product over all rows -- slower, and rounded differently from
        # the search-only encoder output of template_outputs=False, which must give the same boxes.
        tokens = enc.search_tokens.to(self.head.input_proj.weight.dtype).contiguous()
        head = self.head(tokens, enc.search_index, dn_queries=dn_queries, attn_mask=attn_mask,
                         num_layers=num_decoder_layers)
        return DETRackOutput(
            boxes=head.boxes, scores=head.scores, query_index=head.query_index, enc_boxes=head.enc_boxes,
            enc_scores=head.enc_scores, enc_index=head.enc_index, memory=head.memory,
            memory_mask=head.memory_mask, grid=enc.grid,
            template_tokens=enc.template_tokens if template_outputs else None,
            dn_boxes=head.dn_boxes, dn_scores=head.dn_scores, kept_index=enc.kept_index,
            removed_index=enc.removed_index,
        )

    @staticmethod
    def score_map(out: DETRackOutput) -> Tuple[torch.Tensor, torch.Tensor]:
        """Final-layer query scores and boxes scattered back to their source cells of the search grid.

        Returns ``scores (B, Hs, Ws)`` logits (``-inf`` where no query came from the cell) and
        ``boxes (B, Hs, Ws, 4)`` normalised ``(x1, y1, x2, y2)`` (zeros where no query came from the cell).
        ``scores.sigmoid()`` is then 0 at empty cells, ready to be weighted by a Hanning window.
        """
        hs, ws = out.grid
        scores = out.scores[-1]
        b = scores.shape[0]
        idx = out.query_index
        smap = scores.new_full((b, hs * ws), float("-inf")).scatter(1, idx, scores)
        boxes = box_cxcywh_to_xyxy(out.boxes[-1])
        bmap = boxes.new_zeros(b, hs * ws, 4).scatter(1, idx[..., None].expand(-1, -1, 4), boxes)
        return smap.view(b, hs, ws), bmap.view(b, hs, ws, 4)
