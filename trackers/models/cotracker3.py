"""CoTracker3 network (Karaev et al., "CoTracker3: Simpler and Better Point Tracking by Pseudo-Labelling Real
Videos", 2024), re-implemented so that the official checkpoints load unchanged and give the official outputs.

The module is a plain ``nn.Module`` with **no per-video state**: the offline pass is :meth:`CoTracker3.forward`,
and online tracking is a pure function of an explicit :class:`OnlineState` (:meth:`CoTracker3.online_init`,
:meth:`CoTracker3.online_window`). The inference wrapper with pre/post-processing is
:class:`trackers.point.tracker.PointTracker`.

Pipeline (as in the official model):

1. a CNN (:class:`Encoder`) maps every frame (normalised to [-1, 1]) to stride-4, 128-d features, which are
   L2-normalised and average-pooled into a 4-level pyramid;
2. each query samples the 7x7 neighbourhood of its position in its own frame on every level ("support");
3. starting from the query position in every frame, ``iters`` updates run: a 4D correlation between the 7x7
   neighbourhood of the current estimate and the support (``trackers.ops.corr4d``, 2401 values per level, through
   the shared ``corr_mlp``), a Fourier encoding of the motion to both neighbouring frames, the visibility and
   confidence logits and a time embedding form a 1110-d token per (track, frame); a transformer alternating
   attention over time and (through 64 learned virtual tracks) over tracks predicts the coordinate and logit
   increments.

Memory: the CNN runs a few frames at a time, the correlation tokens are built a bounded number of (frame, track)
pairs at a time and fed straight into ``input_transform``, and the transformer processes chunks of tracks (time
attention) or frames (track attention), so a long clip never materialises the 1110-d inputs, the 2401-d
correlations or attention maps of all frames at once. Only the finest feature map is kept for the whole clip (the
coarser levels are pooled from it a few frames at a time); the other full-length tensors are the 384-d tokens and the
coordinates.

Linears: at CPU inference (fp32 / bf16) the transformer's and ``corr_mlp``'s linears run through oneDNN with packed
weights and the MLPs' GELU fused into the first product (:func:`trackers.ops.linear_module`); when autograd records,
on other devices, or with ``TRACKERS_LINEAR_BACKEND=plain`` they are plain ``F.linear`` calls. The layers stay
``nn.Linear`` modules, so the state-dict keys are those of the released checkpoints either way.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackers import ops
from trackers.models.config_checks import check_floats, check_ints

__all__ = [
    "CoTrackerConfig",
    "CoTracker3",
    "Encoder",
    "OnlineState",
    "grid_points",
    "posenc",
    "sincos_time_embedding",
    "convert_official_checkpoint",
]

# Upper bounds on the number of (track, frame) tokens processed in one piece. They bound peak memory only; results
# do not depend on them beyond floating-point summation order inside BLAS.
_CORR_TOKENS = 6144      # correlation: 4 levels x 2401 floats per token
# A window's correlation pyramid is pooled once for all its updates when it takes at most this many bytes (a
# 24-frame 384x512 clip: ~200 MB in float32); longer offline clips pool it per frame chunk on every update instead,
# so their memory stays bounded by the clip's feature map.
_PYRAMID_CACHE_BYTES = 512 * 2 ** 20
_BLOCK_TOKENS = 16384    # transformer blocks: ~ (5 x 384 + 1536) floats per token
_MLP_ROWS = 512          # MLP rows per piece on the plain CPU inference path: fc1 -> GELU -> fc2 stays in the L2
                         # cache (25% faster); the oneDNN path fuses the GELU instead
#: Refinement iterations when a caller passes none: what every official predictor uses (the official network's
#: own default is 4, but no official entry point runs it that way).
DEFAULT_ITERS = 6
_CNN_FRAMES = 1          # frames per CNN call: one frame at a time keeps activations in cache (measured
                         # 7.1 s vs 10.6 s for 24 frames at 384x512 with batches of 8, 2 threads)


@dataclass
class CoTrackerConfig:
    """Hyper-parameters of CoTracker3 (defaults = the released models; ``online``/``window_len`` pick the variant).

    Attributes:
        online: sliding-window (streaming) model instead of the whole-clip offline model.
        window_len: length of the stored time embedding; for the online model also the window size
            (official: 60 offline, 16 online).
        stride: CNN output stride.
        corr_radius: neighbourhood radius of the 4D correlation (7x7 for 3).
        corr_levels: feature-pyramid levels.
        latent_dim: feature channels.
        hidden_size: transformer width.
        num_heads: attention heads.
        depth: number of time blocks (= number of track-attention steps).
        mlp_ratio: transformer MLP expansion.
        num_virtual_tracks: learned proxy tokens for attention across tracks.
        corr_hidden: hidden width of ``corr_mlp``.
        corr_out: output width of ``corr_mlp`` per level.
        model_resolution: ``(H, W)`` the predictors resize to; also the constant that normalises relative motion.
        encoder_widths: channels of the CNN's four residual stages (strides 2, 4, 8, 16); the stem convolution
            has the first width. The released models use ``(64, 96, 128, 128)`` (2.1 M of their parameters);
            narrower stages make a model small enough to ship inside a package.
    """

    online: bool = False
    window_len: int = 60
    stride: int = 4
    corr_radius: int = 3
    corr_levels: int = 4
    latent_dim: int = 128
    hidden_size: int = 384
    num_heads: int = 8
    depth: int = 3
    mlp_ratio: float = 4.0
    num_virtual_tracks: int = 64
    corr_hidden: int = 384
    corr_out: int = 256
    model_resolution: Tuple[int, int] = (384, 512)
    encoder_widths: Tuple[int, int, int, int] = (64, 96, 128, 128)

    def __post_init__(self) -> None:
        check_ints(self, "window_len", "stride", "corr_levels", "latent_dim", "hidden_size", "num_heads", "depth",
                   "num_virtual_tracks", "corr_hidden", "corr_out")
        check_ints(self, "corr_radius", minimum=0)
        check_floats(self, "mlp_ratio", strict=True)
        if not isinstance(self.online, bool):
            raise ValueError(f"CoTrackerConfig.online must be a bool, got {self.online!r}")
        try:
            self.model_resolution = tuple(int(v) for v in self.model_resolution)
        except (TypeError, ValueError):
            raise ValueError(f"model_resolution must be (H, W), got {self.model_resolution!r}") from None
        if len(self.model_resolution) != 2 or min(self.model_resolution) <= 0:
            raise ValueError(f"model_resolution must be (H, W) > 0, got {self.model_resolution}")
        try:
            self.encoder_widths = tuple(int(v) for v in self.encoder_widths)
        except (TypeError, ValueError):
            raise ValueError(f"encoder_widths must be four ints, got {self.encoder_widths!r}") from None
        if len(self.encoder_widths) != 4 or min(self.encoder_widths) < 1:
            raise ValueError(f"encoder_widths must be four widths >= 1, got {self.encoder_widths}")
        if any(v % self.stride for v in self.model_resolution):
            raise ValueError(f"model_resolution {self.model_resolution} must be divisible by stride {self.stride}")
        if self.window_len < 2 or (self.online and self.window_len % 2):
            raise ValueError(f"window_len must be >= 2 (and even for the online model), got {self.window_len}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("stride", "corr_levels", "latent_dim", "depth", "num_virtual_tracks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def support_size(self) -> int:
        """Points per neighbourhood, ``(2r+1)^2``."""
        return (2 * self.corr_radius + 1) ** 2

    @property
    def input_dim(self) -> int:
        """Token width: vis + conf logits, correlation features of all levels, 84-d motion encoding."""
        return 2 + self.corr_levels * self.corr_out + 84


# ----------------------------------------------------------------------------------------------------- utilities
def posenc(x: Tensor, min_deg: int = 0, max_deg: int = 10) -> Tensor:
    """``[x, sin(x * 2^k), cos(x * 2^k)]`` with the frequencies as the slow axis (``k * D + d``)."""
    scales = 2.0 ** torch.arange(min_deg, max_deg, device=x.device, dtype=x.dtype)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)
    # cos is written as a shifted sine, exactly as the released model computes it
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], dim=-1))], dim=-1)


def sincos_time_embedding(length: int, dim: int) -> Tensor:
    """``(1, length, dim)``: first half ``sin(p * w_k)``, second half ``cos(p * w_k)``, ``w_k = 1e4^(-k/(dim/2))``.

    Computed in float64 and rounded once, which reproduces the released ``time_emb`` buffers bit for bit.
    """
    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64) / half))
    ang = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)[None].float()


def grid_points(size: int, extent: Tuple[int, int], device=None) -> Tensor:
    """The official query grid: ``(size*size, 2)`` points ``(x, y)``, rows of x for increasing y.

    Points span ``[m, W - m] x [m, H - m]`` with ``m = W / 64`` on both axes; ``size == 1`` gives the centre.
    """
    H, W = extent
    if size == 1:
        return torch.tensor([[W / 2.0, H / 2.0]], device=device)
    margin = W / 64.0
    ys = torch.linspace(margin, H - margin, size, device=device)
    xs = torch.linspace(margin, W - margin, size, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def _spans(total: int, piece: int):
    piece = max(1, int(piece))
    for a in range(0, total, piece):
        yield a, min(total, a + piece)


# ----------------------------------------------------------------------------------------------------- CNN
def _inorm(x: Tensor) -> Tensor:
    # InstanceNorm2d(affine=False, track_running_stats=False): per image and channel, eps 1e-5
    return F.instance_norm(x, eps=1e-5)


class _InstanceNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _inorm(x)


def _relu(x: Tensor) -> Tensor:
    # In place at inference (the CNN is memory-bound around its convolutions); out of place when autograd records,
    # because ReLU's backward needs its output and the residual add would overwrite it. Same values either way.
    return F.relu(x) if torch.is_grad_enabled() else x.relu_()


class _ResBlock(nn.Module):
    """Two 3x3 convs with instance norm; a strided 1x1 conv + norm on the skip path when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), _InstanceNorm())
            if stride != 1 or cin != cout else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = _relu(_inorm(self.conv1(x)))
        y = _relu(_inorm(self.conv2(y)))
        skip = x if self.downsample is None else self.downsample(x)
        # in-place sum at inference only: autograd keeps y for the ReLU's backward
        return _relu(y + skip if torch.is_grad_enabled() else y.add_(skip))


class Encoder(nn.Module):
    """Feature CNN: four residual stages (strides 2, 4, 8, 16) resampled to stride 4 and fused by two convs.

    ``widths`` are the stages' channels (the 7x7 stem has the first one); the default is the released model's.
    """

    def __init__(self, out_dim: int = 128, stride: int = 4, widths: Sequence[int] = (64, 96, 128, 128)):
        super().__init__()
        self.stride = stride
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"Encoder widths must be four channel counts >= 1, got {widths}")
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        strides = (1, 2, 2, 2)
        cin = widths[0]
        for i, (w, s) in enumerate(zip(widths, strides)):
            setattr(self, f"layer{i + 1}", nn.Sequential(_ResBlock(cin, w, s), _ResBlock(w, w, 1)))
            cin = w
        self.conv2 = nn.Conv2d(sum(widths), out_dim * 2, 3, padding=1)
        self.conv3 = nn.Conv2d(out_dim * 2, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, 3, H, W) in [-1, 1] -> (B, out_dim, H/stride, W/stride), not normalised."""
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = _relu(_inorm(self.conv1(x)))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            # resampling to the same size with align_corners=True is the identity, so skip it
            feats.append(x if x.shape[-2:] == size else
                         F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = _relu(_inorm(self.conv2(torch.cat(feats, dim=1))))
        return self.conv3(x)


# ----------------------------------------------------------------------------------------------------- transformer
class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, approximate: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.fc1, nn.Linear) and ops.linear_route(x, self.fc1.weight, self.fc1.bias) == "onednn":
            # GELU fused into fc1's product, whole tensor at once (pieces measured no faster once the GELU is fused)
            act = "gelu" if self.approximate == "none" else "gelu_tanh"
            return ops.linear_module(self.fc2, ops.linear_module(self.fc1, x, act))
        rows = x.numel() // x.shape[-1]
        if torch.is_grad_enabled() or x.device.type != "cpu" or rows <= _MLP_ROWS:
            return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))
        return self._forward_pieces(x.reshape(rows, x.shape[-1])).view(*x.shape[:-1], self.fc2.out_features)

    def _forward_pieces(self, x: Tensor) -> Tensor:
        # Same arithmetic as the plain path, piece by piece into preallocated buffers: the hidden activations of a
        # piece never leave the cache, and the GELU runs in place.
        out = x.new_empty(x.shape[0], self.fc2.out_features)
        hidden = x.new_empty(min(_MLP_ROWS, x.shape[0]), self.fc1.out_features)
        w1, w2 = self.fc1.weight.t(), self.fc2.weight.t()
        for a, b in _spans(x.shape[0], _MLP_ROWS):
            h = hidden[:b - a]
            torch.addmm(self.fc1.bias, x[a:b], w1, out=h)
            torch._C._nn.gelu_(h, approximate=self.approximate)
            torch.addmm(self.fc2.bias, h, w2, out=out[a:b])
        return out


class _Attention(nn.Module):
    """Multi-head attention with a fused key/value projection (keys first); no masks in CoTracker3."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        context = x if context is None else context
        L, S, D = x.shape
        h = self.heads
        q = ops.linear_module(self.to_q, x).view(L, S, h, D // h).transpose(1, 2)
        k, v = ops.linear_module(self.to_kv, context).view(L, context.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return ops.linear_module(self.to_out, y.transpose(1, 2).reshape(L, S, D))


class _AttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), dim, "tanh")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(F.layer_norm(x, x.shape[-1:], eps=1e-6))
        return x + self.mlp(F.layer_norm(x, x.shape[-1:], eps=1e-6))


class _CrossAttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        # the only normalisation with parameters in the model (affine, eps 1e-5)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), dim, "tanh")

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.cross_attn(F.layer_norm(x, x.shape[-1:], eps=1e-6), self.norm_context(context))
        return x + self.mlp(F.layer_norm(x, x.shape[-1:], eps=1e-6))


class _UpdateFormer(nn.Module):
    """Alternates attention along time (per track) and across tracks (per frame, through virtual tracks)."""

    def __init__(self, cfg: CoTrackerConfig):
        super().__init__()
        D, h, r = cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio
        self.input_transform = nn.Linear(cfg.input_dim, D)
        # (sic) the misspelt name is the key in the released checkpoints
        self.virual_tracks = nn.Parameter(torch.zeros(1, cfg.num_virtual_tracks, 1, D))
        self.time_blocks = nn.ModuleList(_AttnBlock(D, h, r) for _ in range(cfg.depth))
        self.space_virtual_blocks = nn.ModuleList(_AttnBlock(D, h, r) for _ in range(cfg.depth))
        self.space_point2virtual_blocks = nn.ModuleList(_CrossAttnBlock(D, h, r) for _ in range(cfg.depth))
        self.space_virtual2point_blocks = nn.ModuleList(_CrossAttnBlock(D, h, r) for _ in range(cfg.depth))
        self.flow_head = nn.Linear(D, 2)
        self.vis_conf_head = nn.Linear(D, 2)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` (B, N, T, D) already through ``input_transform`` -> (B, N, T, 4) = (dx, dy, dvis, dconf).

        At inference ``points`` is updated in place (it is a temporary of the caller). When autograd records,
        the frame pieces are concatenated instead: layer norm keeps its input (a view of ``points`` at batch 1) for
        the backward pass, so it must not be overwritten. Both paths compute the same values.
        """
        B, N, T, D = points.shape
        M = self.virual_tracks.shape[1]
        virtual = self.virual_tracks.to(points.dtype).expand(B, M, T, D).contiguous()
        per_track = max(1, _BLOCK_TOKENS // T)
        per_frame = max(1, _BLOCK_TOKENS // (N + M))
        for i, tblock in enumerate(self.time_blocks):
            # attention along time: every track (virtual ones included) on its own
            points = _along_time(tblock, points, per_track)
            virtual = _along_time(tblock, virtual, per_track)
            # attention across tracks, frame by frame: virtual <- points, virtual <-> virtual, points <- virtual
            record = torch.is_grad_enabled()
            p_out, v_out = [], []
            for a, b in _spans(T, per_frame):
                p = points[:, :, a:b].transpose(1, 2).reshape(B * (b - a), N, D)
                v = virtual[:, :, a:b].transpose(1, 2).reshape(B * (b - a), M, D)
                v = self.space_virtual2point_blocks[i](v, p)
                v = self.space_virtual_blocks[i](v)
                p = self.space_point2virtual_blocks[i](p, v)
                if record:
                    p_out.append(p.view(B, b - a, N, D).transpose(1, 2))
                    v_out.append(v.view(B, b - a, M, D).transpose(1, 2))
                else:
                    points[:, :, a:b] = p.view(B, b - a, N, D).transpose(1, 2)
                    virtual[:, :, a:b] = v.view(B, b - a, M, D).transpose(1, 2)
            if record:
                points, virtual = torch.cat(p_out, dim=2), torch.cat(v_out, dim=2)
        return torch.cat([self.flow_head(points), self.vis_conf_head(points)], dim=-1)


def _along_time(block: nn.Module, tokens: Tensor, per_piece: int) -> Tensor:
    """Apply ``block`` to each track's sequence over time; in pieces for long inputs.

    The pieces are written back in place at inference; when autograd records they are concatenated instead (the
    block's layer norm keeps its input, a view of ``tokens``, for the backward pass).
    """
    B, M, T, D = tokens.shape
    rows = tokens.view(B * M, T, D)
    if rows.shape[0] <= per_piece:
        return block(rows).view(B, M, T, D)
    if torch.is_grad_enabled():
        return torch.cat([block(rows[a:b]) for a, b in _spans(rows.shape[0], per_piece)]).view(B, M, T, D)
    for a, b in _spans(rows.shape[0], per_piece):
        rows[a:b] = block(rows[a:b])
    return tokens


# ----------------------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class OnlineState:
    """Everything the online model carries from one window to the next (immutable; each step returns a new one).

    Attributes:
        queries: ``(B, N, 3)`` queries ``(t, x, y)`` at model resolution, ``t`` absolute frame index.
        support: per pyramid level ``(B, N, K, C)`` query neighbourhood features; zeros until sampled.
        sampled: ``(B, N)`` bool, whether the support of a query has been taken (exactly once, from the first
            window that contains its frame).
        next_frame: absolute index of the first frame of the next window.
        windows: number of windows run so far.
        carry_coords: ``(B, S - S//2, N, 2)`` last estimates (feature units) of the frames the next window starts
            with, or ``None`` before the first window.
        carry_vis: ``(B, S - S//2, N)`` visibility logits of those frames.
        carry_conf: ``(B, S - S//2, N)`` confidence logits.
        carry_valid: ``(B, N)`` bool, which queries took part in the previous window.
    """

    queries: Tensor
    support: Tuple[Tensor, ...]
    sampled: Tensor
    next_frame: int = 0
    windows: int = 0
    carry_coords: Optional[Tensor] = None
    carry_vis: Optional[Tensor] = None
    carry_conf: Optional[Tensor] = None
    carry_valid: Optional[Tensor] = None

    @property
    def num_queries(self) -> int:
        return int(self.queries.shape[1])

    def select(self, keep: Tensor) -> "OnlineState":
        """The state restricted to the queries where ``keep`` (N,) is True (drops tracks mid-stream)."""
        keep = keep.to(self.queries.device)
        pick = lambda t, dim: None if t is None else t.index_select(dim, keep.nonzero().flatten())  # noqa: E731
        return dataclasses.replace(
            self,
            queries=pick(self.queries, 1),
            support=tuple(pick(s, 1) for s in self.support),
            sampled=pick(self.sampled, 1),
            carry_coords=pick(self.carry_coords, 2),
            carry_vis=pick(self.carry_vis, 2),
            carry_conf=pick(self.carry_conf, 2),
            carry_valid=pick(self.carry_valid, 1),
        )

    def extend(self, queries: Tensor, model: "CoTracker3") -> "OnlineState":
        """The state with extra queries ``(B, M, 3)`` (model resolution) appended; they start fresh."""
        B, M, _ = queries.shape
        blank = model.online_init(queries)
        cat = lambda a, b, dim: None if a is None else torch.cat([a, b], dim)  # noqa: E731
        pad = lambda t, shape: None if t is None else t.new_zeros(shape)  # noqa: E731
        ov = None if self.carry_coords is None else self.carry_coords.shape[1]
        return dataclasses.replace(
            self,
            queries=torch.cat([self.queries, queries.to(self.queries)], 1),
            support=tuple(torch.cat([a, b.to(a)], 1) for a, b in zip(self.support, blank.support)),
            sampled=torch.cat([self.sampled, blank.sampled], 1),
            carry_coords=cat(self.carry_coords, pad(self.carry_coords, (B, ov or 0, M, 2)), 2),
            carry_vis=cat(self.carry_vis, pad(self.carry_vis, (B, ov or 0, M)), 2),
            carry_conf=cat(self.carry_conf, pad(self.carry_conf, (B, ov or 0, M)), 2),
            carry_valid=cat(self.carry_valid, torch.zeros(B, M, dtype=torch.bool, device=queries.device), 1),
        )


# ----------------------------------------------------------------------------------------------------- model
class CoTracker3(nn.Module):
    """The CoTracker3 network (offline or online variant, same parameters; see :class:`CoTrackerConfig`).

    State-dict keys are those of the released checkpoints (``fnet.*``, ``corr_mlp.*``, ``updateformer.*`` incl.
    ``updateformer.virual_tracks``, and the persistent ``time_emb`` buffer).
    """

    def __init__(self, config: Optional[CoTrackerConfig] = None):
        super().__init__()
        config = CoTrackerConfig() if config is None else config
        self.config = config
        self.fnet = Encoder(config.latent_dim, config.stride, config.encoder_widths)
        self.corr_mlp = _Mlp(config.support_size ** 2, config.corr_hidden, config.corr_out, "none")
        self.updateformer = _UpdateFormer(config)
        self.register_buffer("time_emb", sincos_time_embedding(config.window_len, config.input_dim), persistent=True)

    # --------------------------------------------------------------------------------------------- helpers
    @property
    def compute_dtype(self) -> torch.dtype:
        return self.updateformer.input_transform.weight.dtype

    def time_embedding(self, length: int) -> Tensor:
        """``(length, input_dim)`` float32: the stored table, linearly resampled (align_corners=False) if needed."""
        table = self.time_emb.float()
        if table.shape[1] != length:
            table = F.interpolate(table.permute(0, 2, 1), size=length, mode="linear").permute(0, 2, 1)
        return table[0]

    # --------------------------------------------------------------------------------------------- features
    def encode(self, video: Tensor, *, size: Optional[Tuple[int, int]] = None,
               chunk: int = _CNN_FRAMES) -> Tensor:
        """Stride-4 feature maps of a clip (level 0 of the correlation pyramid; see :meth:`pyramid`).

        Args:
            video: ``(B, T, 3, H, W)`` float in [0, 255].
            size: resize frames to ``(H', W')`` first (bilinear, align_corners=True, as the official predictors).
            chunk: frames per CNN call (memory only; frames are independent).

        Returns:
            ``(B, T, C, H/stride, W/stride)`` L2-normalised features in :attr:`compute_dtype`. The coarser levels are
            not stored: they are pooled from a few frames at a time where needed, so a long clip holds only this map.
        """
        B, T, _, H, W = video.shape
        if size is not None:
            H, W = size
        if H % self.config.stride or W % self.config.stride:
            raise ValueError(f"frame size {H}x{W} must be divisible by the stride {self.config.stride}")
        cdt = self.compute_dtype
        out: Optional[Tensor] = None
        for a, b in _spans(T, chunk):
            x = video[:, a:b].reshape(B * (b - a), *video.shape[2:]).float()
            if size is not None and tuple(x.shape[-2:]) != tuple(size):
                x = F.interpolate(x, size, mode="bilinear", align_corners=True)
            # frames decoded as (T, H, W, 3) arrive as a channels-last view; the CNN runs faster on plain NCHW
            x = (2 * (x / 255.0) - 1.0).contiguous()
            f = self.fnet(x.to(cdt)).float()
            f = f / torch.sqrt(torch.clamp(f.square().sum(dim=1, keepdim=True), min=1e-12))
            if out is None:
                # channels-last storage: the correlation gathers whole channel vectors, and ops.corr4d /
                # ops.sample_patches then read the map without a transposed copy
                C, h, w = f.shape[1:]
                out = video.new_empty((B, T, h, w, C), dtype=cdt).permute(0, 1, 4, 2, 3)
            out[:, a:b] = f.view(B, b - a, *f.shape[1:])
        return out

    def pyramid(self, fmap: Tensor, dtype: Optional[torch.dtype] = None) -> List[Tensor]:
        """``corr_levels`` maps ``(B, T, C, H_l, W_l)``: ``fmap`` and its repeated 2x2 average poolings (floor).

        Levels are stored channels-last in ``dtype`` (default ``fmap.dtype``); pooled levels are rounded to
        ``fmap.dtype`` first, so their values do not depend on ``dtype``.
        """
        B, T = fmap.shape[:2]
        dtype = fmap.dtype if dtype is None else dtype
        fmap = channels_last(fmap)
        levels = [channels_last(fmap.to(dtype))]
        f = (levels[0] if dtype == torch.float32 else fmap).reshape(B * T, *fmap.shape[2:]).float()
        for _ in range(1, self.config.corr_levels):
            f = F.avg_pool2d(f, 2, stride=2)
            levels.append(channels_last(f.view(B, T, *f.shape[1:]).to(fmap.dtype).to(dtype)))
        return levels

    def window_pyramid(self, fmap: Tensor) -> Optional[List[Tensor]]:
        """:meth:`pyramid` of all frames of a window, pooled once for all its updates (the features do not change
        between updates), or ``None`` when it would exceed ``_PYRAMID_CACHE_BYTES``.

        The levels are kept in the dtype the correlation reads without converting (:func:`ops.corr4d_read_dtype`:
        float32 on the CPU path for a bf16 model), so it does not convert every level again on every update.
        """
        B, T, C, H, W = fmap.shape
        dtype = ops.corr4d_read_dtype(fmap)
        elems = sum(B * T * C * (H >> lvl) * (W >> lvl) for lvl in range(self.config.corr_levels))
        if elems * torch.empty((), dtype=dtype).element_size() > _PYRAMID_CACHE_BYTES:
            return None
        return self.pyramid(fmap, dtype)

    def sample_support(self, fmap: Tensor, queries: Tensor, frame_offset: int = 0) -> List[Tensor]:
        """Query neighbourhoods ``(B, N, K, C)`` per level; ``queries`` (B, N, 3) at the resolution of the frames.

        ``fmap`` is :meth:`encode` output; the query frame ``t - frame_offset`` indexes its time axis (clamped).
        """
        B, T = fmap.shape[:2]
        frames = (queries[..., 0].round().long() - frame_offset).clamp(0, T - 1)
        used, local = torch.unique(frames, return_inverse=True)
        out = []
        # only the frames that hold queries are pooled and handed over
        for lvl, level in enumerate(self.pyramid(channels_last(fmap[:, used]))):
            xy = queries[..., 1:].float() / (self.config.stride * 2 ** lvl)
            out.append(ops.sample_patches(level, xy, self.config.corr_radius, frames=local))
        return out

    def token_features(self, fmap: Tensor, support: Sequence[Tensor], coords: Tensor, vis: Tensor,
                       conf: Tensor, time_emb: Tensor, start: int = 0, stop: Optional[int] = None,
                       levels: Optional[Sequence[Tensor]] = None) -> Tensor:
        """The 1110-d transformer input of frames ``[start, stop)`` as ``(B, stop-start, N, input_dim)``.

        ``coords`` (B, T, N, 2) in stride-4 feature pixels, ``vis``/``conf`` (B, T, N) logits, ``time_emb``
        (T, input_dim). Token = [vis, conf, correlation of every level, motion encoding] + time embedding.
        ``levels``: :meth:`window_pyramid` of all ``T`` frames of ``fmap`` if already pooled (else the frames
        ``[start, stop)`` are pooled here).
        """
        cfg = self.config
        T = coords.shape[1]
        stop = T if stop is None else stop
        cdt = self.compute_dtype
        c = coords[:, start:stop]
        corr = []
        pyr = self.pyramid(fmap[:, start:stop]) if levels is None else [lv[:, start:stop] for lv in levels]
        for lvl, (level, sup) in enumerate(zip(pyr, support)):
            raw = ops.corr4d(level, c / (2 ** lvl), sup, cfg.corr_radius, out_dtype=cdt)
            corr.append(self.corr_mlp(raw))  # already in the compute dtype (out_dtype)
        # motion to the next / previous frame, zero at the clip ends, in units of the model resolution
        lo, hi = max(start - 1, 0), min(stop + 1, T)
        ext = coords[:, lo:hi]
        fwd = torch.zeros_like(ext)
        bwd = torch.zeros_like(ext)
        fwd[:, :-1] = ext[:, :-1] - ext[:, 1:]
        bwd[:, 1:] = ext[:, 1:] - ext[:, :-1]
        sl = slice(start - lo, start - lo + (stop - start))
        scale = torch.tensor([cfg.model_resolution[1] / cfg.stride, cfg.model_resolution[0] / cfg.stride],
                             device=coords.device, dtype=coords.dtype)
        motion = posenc(torch.cat([fwd[:, sl] / scale, bwd[:, sl] / scale], dim=-1))
        x = torch.cat([vis[:, start:stop, :, None].to(cdt), conf[:, start:stop, :, None].to(cdt),
                       *corr, motion.to(cdt)], dim=-1)
        return x + time_emb[start:stop, None, :].to(cdt)

    # --------------------------------------------------------------------------------------------- refinement
    def refine(self, fmap: Tensor, support: Sequence[Tensor], coords: Tensor, vis: Tensor, conf: Tensor,
               iters: int, *, on_iteration: Optional[Callable[[int, Tensor, Tensor, Tensor], None]] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
        """Run ``iters`` updates on one window (all frames of ``fmap``).

        Args:
            fmap: ``(B, T, C, H, W)`` features (:meth:`encode`).
            support: per level ``(B, N, K, C)``.
            coords: ``(B, T, N, 2)`` initial positions in stride-4 feature pixels (float32).
            vis, conf: ``(B, T, N)`` initial logits.
            iters: number of updates.
            on_iteration: called as ``fn(i, coords, vis, conf)`` after each update, with that update's estimates
                (feature pixels and logits): the per-iteration predictions that training supervises.

        Each update starts from detached estimates, as in the paper's training: every update is supervised on its
        own and no gradient flows back through earlier ones (the values are unchanged).

        Returns:
            coords (B, T, N, 2) feature pixels, vis and conf logits (B, T, N), float32.
        """
        B, T, N, _ = coords.shape
        D = self.config.hidden_size
        time_emb = self.time_embedding(T)
        cdt = self.compute_dtype
        coords, vis, conf = coords.float(), vis.float(), conf.float()
        per_chunk = max(1, _CORR_TOKENS // max(N, 1))
        levels = self.window_pyramid(fmap)
        for it in range(iters):
            coords, vis, conf = coords.detach(), vis.detach(), conf.detach()
            tokens = coords.new_empty(B, N, T, D, dtype=cdt)
            for a, b in _spans(T, per_chunk):
                feats = self.token_features(fmap, support, coords, vis, conf, time_emb, a, b, levels)
                tokens[:, :, a:b] = ops.linear_module(self.updateformer.input_transform, feats).transpose(1, 2)
                del feats
            delta = self.updateformer(tokens).float().transpose(1, 2)  # (B, T, N, 4)
            del tokens
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
            if on_iteration is not None:
                on_iteration(it, coords, vis, conf)
        return coords, vis, conf

    # --------------------------------------------------------------------------------------------- offline
    def forward(self, video: Tensor, queries: Tensor, iters: Optional[int] = None, *,
                features: Optional[Tensor] = None,
                on_iteration: Optional[Callable[[int, Tensor, Tensor, Tensor], None]] = None
                ) -> Tuple[Tensor, Tensor, Tensor]:
        """Raw network call, as the official ``model(video, queries, iters)``.

        Args:
            video: ``(B, T, 3, H, W)`` float in [0, 255], H and W divisible by the stride.
            queries: ``(B, N, 3)`` rows ``(t, x, y)`` in pixels of ``video``, ``t`` an integer frame index.
            iters: refinement steps (default :data:`DEFAULT_ITERS`).
            features: precomputed :meth:`encode` output (skips the CNN; ``video`` may then be ``None``).
            on_iteration: see :meth:`refine`, called with the estimates of the refined window: the whole clip for
                the offline model; for the online model every window in turn (window ``w`` covers frames
                ``[w*S/2, w*S/2 + S)``, padded past the clip end), ``iters`` calls per window.

        Returns:
            tracks ``(B, T, N, 2)`` in pixels of ``video``, sigmoid(visibility) and sigmoid(confidence) ``(B, T, N)``.
            The offline model processes the clip in one window (time embedding resampled to T); the online model
            slides its windows over the clip (the official ``is_online=False`` mode, except that clips of <= S/2
            frames get one window instead of none).
        """
        iters = DEFAULT_ITERS if iters is None else iters
        fmap = self.encode(video) if features is None else features
        queries = queries.float()
        if self.config.online:
            coords, vis, conf = self._forward_windows(fmap, queries, iters, on_iteration)
        else:
            support = self.sample_support(fmap, queries)
            B, T = fmap.shape[:2]
            N = queries.shape[1]
            start = (queries[:, None, :, 1:] / self.config.stride).expand(B, T, N, 2)
            zeros = start.new_zeros(B, T, N)
            coords, vis, conf = self.refine(fmap, support, start, zeros, zeros, iters, on_iteration=on_iteration)
        return coords * self.config.stride, torch.sigmoid(vis), torch.sigmoid(conf)

    # --------------------------------------------------------------------------------------------- online
    def online_init(self, queries: Tensor) -> OnlineState:
        """Fresh streaming state for ``queries`` (B, N, 3) at model resolution (absolute frame indices)."""
        B, N, _ = queries.shape
        C, K = self.config.latent_dim, self.config.support_size
        support = tuple(queries.new_zeros(B, N, K, C, dtype=self.compute_dtype)
                        for _ in range(self.config.corr_levels))
        return OnlineState(queries=queries.float(), support=support,
                           sampled=torch.zeros(B, N, dtype=torch.bool, device=queries.device))

    def online_window(self, state: OnlineState, fmap: Tensor, iters: Optional[int] = None, *,
                      on_iteration: Optional[Callable[[int, Tensor, Tensor, Tensor], None]] = None
                      ) -> Tuple[OnlineState, Tensor, Tensor, Tensor]:
        """One sliding window of the online model, as a pure function of ``state``.

        Args:
            state: from :meth:`online_init` or the previous call.
            fmap: ``(B, S, C, H, W)`` (:meth:`encode`): features of frames ``[state.next_frame,
                state.next_frame + S)``, ``S = window_len``; a short final chunk is padded by repeating its last
                frame (what the official model does).
            iters: refinement steps (default :data:`DEFAULT_ITERS`).
            on_iteration: see :meth:`refine` (window-local estimates of each update, feature pixels and logits).

        Returns:
            ``(new_state, coords, vis, conf)`` with coords ``(B, S, N, 2)`` in model pixels and vis/conf logits
            ``(B, S, N)`` for the window's frames. The new state starts the next window ``S/2`` frames later.
        """
        cfg = self.config
        iters = DEFAULT_ITERS if iters is None else iters
        S = cfg.window_len
        step = S // 2
        overlap = S - step
        if fmap.shape[1] != S:
            raise ValueError(f"online_window needs features of exactly {S} frames, got {fmap.shape[1]}")
        ind = state.next_frame
        q = state.queries
        B, N, _ = q.shape
        tq = q[..., 0]
        # each query takes its support once, from the first window that contains its frame
        take = (~state.sampled) & (tq >= ind) & (tq < ind + S)
        support = state.support
        if bool(take.any()):
            fresh = self.sample_support(fmap, q, frame_offset=ind)
            support = tuple(torch.where(take[..., None, None], f.to(s.dtype), s) for f, s in zip(fresh, support))
        sampled = state.sampled | take
        # queries whose frame lies after this window see no correlation signal (all-zero support)
        support_w = tuple(s * (tq < ind + S)[..., None, None].to(s.dtype) for s in support)

        coords = (q[:, None, :, 1:] / cfg.stride).expand(B, S, N, 2).clone()
        vis = coords.new_zeros(B, S, N)
        conf = coords.new_zeros(B, S, N)
        if state.carry_coords is not None:
            # continue from the previous window: its estimates for the overlapping frames, the last one repeated
            use = state.carry_valid & (tq < ind + overlap)
            rep = lambda t: torch.cat([t, t[:, -1:].expand(-1, step, *t.shape[2:])], 1)  # noqa: E731
            coords = torch.where(use[:, None, :, None], rep(state.carry_coords), coords)
            vis = torch.where(use[:, None], rep(state.carry_vis), vis)
            conf = torch.where(use[:, None], rep(state.carry_conf), conf)
        coords, vis, conf = self.refine(fmap, support_w, coords, vis, conf, iters, on_iteration=on_iteration)
        new_state = dataclasses.replace(
            state, support=support, sampled=sampled, next_frame=ind + step, windows=state.windows + 1,
            carry_coords=coords[:, step:step + overlap], carry_vis=vis[:, step:step + overlap],
            carry_conf=conf[:, step:step + overlap], carry_valid=torch.ones_like(sampled),
        )
        return new_state, coords * cfg.stride, vis, conf

    def _forward_windows(self, fmap: Tensor, queries: Tensor, iters: int,
                         on_iteration: Optional[Callable[[int, Tensor, Tensor, Tensor], None]] = None):
        S = self.config.window_len
        step = S // 2
        B, T = fmap.shape[:2]
        N = queries.shape[1]
        n_windows = max(1, -(-(T - step) // step))
        coords = queries.new_zeros(B, T, N, 2)
        vis = queries.new_zeros(B, T, N)
        conf = queries.new_zeros(B, T, N)
        state = self.online_init(queries)
        for w in range(n_windows):
            ind = w * step
            window = pad_frames(fmap[:, ind:ind + S], S)
            state, c, v, k = self.online_window(state, window, iters, on_iteration=on_iteration)
            n = min(T - ind, S)
            coords[:, ind:ind + n] = c[:, :n] / self.config.stride
            vis[:, ind:ind + n] = v[:, :n]
            conf[:, ind:ind + n] = k[:, :n]
        return coords, vis, conf


def pad_frames(x: Tensor, length: int) -> Tensor:
    """Pad the time axis (dim 1) of ``(B, T, C, H, W)`` features to ``length`` by repeating the last frame."""
    n = x.shape[1]
    if n >= length:
        return x
    out = channels_last(x.new_empty(x.shape[0], length, *x.shape[2:]))
    out[:, :n] = x
    out[:, n:] = x[:, -1:]
    return out


def channels_last(x: Tensor) -> Tensor:
    """``(B, T, C, H, W)`` view whose memory is laid out ``(B, T, H, W, C)`` (no copy if it already is)."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


# ----------------------------------------------------------------------------------------------------- checkpoints
def convert_official_checkpoint(state_dict: Mapping[str, Tensor], config: CoTrackerConfig,
                                load_file: Optional[Callable[[str], Mapping[str, Tensor]]] = None
                                ) -> dict:
    """Registry converter for ``facebook/cotracker3`` files (already unwrapped and prefix-stripped by the base).

    The released files are flat state dicts of exactly this model; only ``time_emb`` gets attention: it is a fixed
    sin/cos table, so a missing one is regenerated, and one whose length differs from ``config.window_len``
    (e.g. an online checkpoint loaded into an offline config) is rejected with a clear message.
    """
    sd = dict(state_dict)
    expected = (1, config.window_len, config.input_dim)
    if "time_emb" not in sd:
        sd["time_emb"] = sincos_time_embedding(config.window_len, config.input_dim)
    elif tuple(sd["time_emb"].shape) != expected:
        got = tuple(sd["time_emb"].shape)
        kind = "online (16)" if len(got) == 3 and got[1] == 16 else f"length {got[1] if len(got) == 3 else got}"
        raise ValueError(
            f"checkpoint time_emb has shape {got} but this {'online' if config.online else 'offline'} model expects "
            f"{expected}: the file looks like a {kind} checkpoint; load it with the matching model name "
            f"(cotracker3-online / cotracker3-offline)")
    return sd
