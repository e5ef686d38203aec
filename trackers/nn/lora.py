"""Low-rank adaptation (LoRA) for any ``nn.Linear``, with an exact fp32 merge.

Training ("un-merged") form: a :class:`LoRALinear` keeps the frozen base layer as ``linear`` and the adapter as
``lora`` (parameters ``A`` of shape ``(r, in)`` and ``B`` of shape ``(out, r)``)::

    y = linear(x) + scaling * B (A x),    scaling = alpha / r        (rsLoRA: alpha / sqrt(r))

Inference ("merged") form: a plain ``nn.Linear`` with ``W' = float32(W) + scaling * float32(B) @ float32(A)``
cast back to ``W``'s dtype; the bias is unchanged. A fused attention ``qkv`` projection is adapted as three
separate layers ``q``, ``k``, ``v`` (:class:`SplitLoRALinear`), each with its own adapter; merging concatenates
the three merged weights along the output dimension (q rows first).

State-dict keys of the un-merged form therefore are ``<name>.linear.weight``, ``<name>.lora.A``,
``<name>.lora.B`` and, for a split layer, ``<name>.{q,k,v}.linear.weight`` ... -- the layout of the LoRAT
training model. :func:`merge_lora_state_dict` performs the same merge directly on state dicts, so a converter
never has to build the un-merged model.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "lora_scaling",
    "merge_weight",
    "LoRAAdapter",
    "LoRALinear",
    "SplitLoRALinear",
    "inject_lora",
    "merge_lora",
    "has_lora",
    "lora_parameters",
    "mark_only_lora_trainable",
    "merge_lora_state_dict",
    "split_lora_state_dict",
]

QKV_PARTS = ("q", "k", "v")


def lora_scaling(rank: int, alpha: Optional[float], use_rslora: bool = False) -> float:
    """Adapter scale: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA); 1.0 when ``alpha`` is None."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if alpha is None:
        return 1.0
    return float(alpha) / (math.sqrt(rank) if use_rslora else float(rank))


def merge_weight(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """``W + scaling * B @ A`` computed in float32 and cast back to ``weight.dtype``."""
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0] or weight.shape != (B.shape[0], A.shape[1]):
        raise ValueError(
            f"merge_weight: shapes do not fit W {tuple(weight.shape)} = B {tuple(B.shape)} @ A {tuple(A.shape)}"
        )
    delta = B.to(device=weight.device, dtype=torch.float32) @ A.to(device=weight.device, dtype=torch.float32)
    return (weight.float() + scaling * delta).to(weight.dtype)


class LoRAAdapter(nn.Module):
    """The low-rank pair ``A (r, in)``, ``B (out, r)``.

    ``init``: ``"bert"`` (A and B ~ trunc_normal(0.02), the LoRAT default -- B is *not* zero), ``"lora"``
    (Kaiming-uniform A, zero B: the adapted layer starts identical to the base) or ``"gaussian"``
    (A ~ N(0, 1/r), zero B).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, init: str = "bert") -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "bert":
            nn.init.trunc_normal_(self.A, std=0.02)
            nn.init.trunc_normal_(self.B, std=0.02)
        elif self.init == "lora":
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            nn.init.zeros_(self.B)
        elif self.init == "gaussian":
            nn.init.normal_(self.A, std=1.0 / self.A.shape[0])
            nn.init.zeros_(self.B)
        else:
            raise ValueError(f"unknown LoRA init {self.init!r} (expected 'bert', 'lora' or 'gaussian')")

    @property
    def rank(self) -> int:
        return self.A.shape[0]


class LoRALinear(nn.Module):
    """``nn.Linear`` plus a low-rank adapter (un-merged form). ``merged()`` returns the equivalent ``nn.Linear``."""

    def __init__(
        self,
        linear: nn.Linear,
        rank: int,
        alpha: Optional[float] = None,
        use_rslora: bool = False,
        dropout: float = 0.0,
        init: str = "bert",
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        self.lora = LoRAAdapter(linear.in_features, linear.out_features, rank, init=init)
        self.lora.to(device=linear.weight.device, dtype=linear.weight.dtype)
        self.alpha = alpha
        self.use_rslora = use_rslora
        self.scaling = lora_scaling(rank, alpha, use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if freeze_base:
            linear.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(F.linear(self.dropout(x), self.lora.A), self.lora.B)
        return self.linear(x) + self.scaling * low

    def merged_weight(self) -> torch.Tensor:
        return merge_weight(self.linear.weight.detach(), self.lora.A.detach(), self.lora.B.detach(), self.scaling)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (weight merged in fp32)."""
        w = self.linear.weight
        out = nn.Linear(self.in_features, self.out_features, bias=self.linear.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(self.merged_weight())
            if self.linear.bias is not None:
                out.bias.copy_(self.linear.bias)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.lora.rank}, scaling={self.scaling:g}"


class SplitLoRALinear(nn.Module):
    """A fused ``(n*C, C)`` projection (e.g. attention ``qkv``) split into ``n`` equal layers with one adapter each.

    The outputs are concatenated in ``parts`` order, so it is a drop-in replacement for the fused layer.
    """

    def __init__(
        self,
        linear: nn.Linear,
        rank: int,
        alpha: Optional[float] = None,
        use_rslora: bool = False,
        dropout: float = 0.0,
        init: str = "bert",
        parts: Sequence[str] = QKV_PARTS,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        n = len(parts)
        if linear.out_features % n:
            raise ValueError(f"SplitLoRALinear: out_features {linear.out_features} is not divisible by {n}")
        self.parts = tuple(parts)
        chunk = linear.out_features // n
        w = linear.weight
        for i, name in enumerate(self.parts):
            sub = nn.Linear(linear.in_features, chunk, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                sub.weight.copy_(w[i * chunk:(i + 1) * chunk])
                if linear.bias is not None:
                    sub.bias.copy_(linear.bias[i * chunk:(i + 1) * chunk])
            self.add_module(name, LoRALinear(sub, rank, alpha, use_rslora, dropout, init, freeze_base))

    @property
    def in_features(self) -> int:
        return getattr(self, self.parts[0]).in_features

    @property
    def out_features(self) -> int:
        return sum(getattr(self, p).out_features for p in self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, p)(x) for p in self.parts], dim=-1)

    def merged(self) -> nn.Linear:
        subs: List[LoRALinear] = [getattr(self, p) for p in self.parts]
        w = subs[0].linear.weight
        has_bias = subs[0].linear.bias is not None
        out = nn.Linear(self.in_features, self.out_features, bias=has_bias, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.cat([s.merged_weight() for s in subs], dim=0))
            if has_bias:
                out.bias.copy_(torch.cat([s.linear.bias for s in subs], dim=0))
        return out


def _default_target(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: Optional[float] = None,
    use_rslora: bool = False,
    dropout: float = 0.0,
    init: str = "bert",
    target: Union[Callable[[str, nn.Module], bool], str, None] = None,
    split: Union[Callable[[str], bool], str, None] = r"(^|\.)qkv$",
    freeze_base: bool = True,
) -> nn.Module:
    """Wrap matching ``nn.Linear`` layers of ``model`` (in place) with LoRA adapters; returns ``model``.

    ``target``: predicate ``(qualified_name, module) -> bool`` or a regex searched in the qualified name
    (default: every ``nn.Linear``). ``split``: layers whose name matches (predicate or regex; default names ending
    in ``qkv``) become a :class:`SplitLoRALinear` with q/k/v parts. Already-wrapped layers are left alone.
    """
    if isinstance(target, str):
        pattern = re.compile(target)
        target_fn: Callable[[str, nn.Module], bool] = (
            lambda n, m: isinstance(m, nn.Linear) and pattern.search(n) is not None
        )
    else:
        target_fn = target or _default_target
    if isinstance(split, str):
        split_pattern = re.compile(split)
        split_fn: Callable[[str], bool] = lambda n: split_pattern.search(n) is not None
    else:
        split_fn = split or (lambda n: False)

    chosen = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and target_fn(name, mod)
        and not _inside_lora(model, name)
    ]
    for name, mod in chosen:
        if split_fn(name):
            new: nn.Module = SplitLoRALinear(mod, rank, alpha, use_rslora, dropout, init, freeze_base=freeze_base)
        else:
            new = LoRALinear(mod, rank, alpha, use_rslora, dropout, init, freeze_base=freeze_base)
        _set_submodule(model, name, new)
    return model


def _inside_lora(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), (LoRALinear, SplitLoRALinear)):
            return True
    return False


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer of ``model`` (in place) by its merged ``nn.Linear``; returns ``model``.

    A LoRA layer at the top level cannot be replaced in place: pass its parent, or call ``layer.merged()``.
    """
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, (LoRALinear, SplitLoRALinear)) and n]
    # Outermost first; the inner LoRALinear of a SplitLoRALinear disappears with its parent.
    done: List[str] = []
    for name, mod in targets:
        if any(name.startswith(d + ".") for d in done):
            continue
        _set_submodule(model, name, mod.merged())
        done.append(name)
    return model


def has_lora(model: nn.Module) -> bool:
    """True if ``model`` still contains LoRA layers."""
    return any(isinstance(m, (LoRALinear, SplitLoRALinear, LoRAAdapter)) for m in model.modules())


def lora_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    """All adapter parameters (A and B) of ``model``."""
    for m in model.modules():
        if isinstance(m, LoRAAdapter):
            yield m.A
            yield m.B


def mark_only_lora_trainable(model: nn.Module, extra: Sequence[str] = ()) -> None:
    """Freeze everything except LoRA adapters and parameters whose name starts with one of ``extra``."""
    for name, p in model.named_parameters():
        p.requires_grad_(".lora." in f".{name}" or any(name.startswith(e) for e in extra))


_LORA_KEY = re.compile(r"^(?P<layer>.+?)(?P<part>\.[qkv])?\.lora\.(?P<mat>[AB])$")


def split_lora_state_dict(
    sd: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
    """Separate LoRA keys from the rest.

    Returns ``(adapters, rest)`` where ``adapters[prefix] = {"A": ..., "B": ...}`` with ``prefix`` the module
    holding the adapter (``blocks.0.mlp.fc1`` or ``blocks.0.attn.qkv.q``).
    """
    adapters: Dict[str, Dict[str, torch.Tensor]] = {}
    rest: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = _LORA_KEY.match(k)
        if m is None:
            rest[k] = v
            continue
        prefix = m.group("layer") + (m.group("part") or "")
        adapters.setdefault(prefix, {})[m.group("mat")] = v
    for prefix, ab in adapters.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"LoRA adapter {prefix!r} is missing its {'B' if 'A' in ab else 'A'} matrix")
    return adapters, rest


def merge_lora_state_dict(
    base: Mapping[str, torch.Tensor],
    adapters: Mapping[str, Mapping[str, torch.Tensor]],
    alpha: Optional[float] = None,
    use_rslora: bool = False,
    parts: Sequence[str] = QKV_PARTS,
) -> Dict[str, torch.Tensor]:
    """Merge adapters into a plain (fused-layout) state dict and return a new dict.

    ``base`` holds ``<layer>.weight`` for every adapted layer; ``adapters`` maps ``<layer>`` or
    ``<layer>.<part>`` (a q/k/v slice of a fused layer, in ``parts`` order) to ``{"A", "B"}``. The scale is
    :func:`lora_scaling` with the adapter's rank. Every adapter must find its base weight.
    """
    out = dict(base)
    for prefix, ab in adapters.items():
        A, B = ab["A"], ab["B"]
        scaling = lora_scaling(A.shape[0], alpha, use_rslora)
        layer, _, part = prefix.rpartition(".")
        if part in parts and f"{layer}.weight" in base and f"{prefix}.weight" not in base:
            key = f"{layer}.weight"
            w = out[key]
            n = len(parts)
            if w.shape[0] % n:
                raise ValueError(f"cannot split {key} of shape {tuple(w.shape)} into {n} parts")
            chunk = w.shape[0] // n
            i = parts.index(part)
            merged = merge_weight(w[i * chunk:(i + 1) * chunk], A, B, scaling)
            w = w.clone() if w is base[key] else w
            w[i * chunk:(i + 1) * chunk] = merged
            out[key] = w
        else:
            key = f"{prefix}.weight"
            if key not in base:
                raise ValueError(f"LoRA adapter {prefix!r} has no base weight {key!r} to merge into")
            out[key] = merge_weight(base[key], A, B, scaling)
    return out
