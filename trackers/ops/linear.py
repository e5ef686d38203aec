"""Inference linears through oneDNN with pre-packed weights and the bias and activation fused into the product.

``linear(x, weight, bias, activation)`` computes ``act(x @ weight.T + bias)``. Two backends:

``"plain"``
    ``torch.nn.functional.linear`` followed by the activation: any device and dtype, differentiable. Always the
    fallback.
``"onednn"``
    PyTorch's private oneDNN entry points (the ones ``torch.compile`` uses on CPU): the weight is reordered once into
    oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``) and every call runs one fused
    ``torch.ops.mkldnn._linear_pointwise`` (matrix product + bias + activation, one pass over the output). Measured
    on a 2-core AMD EPYC (AVX-512 BF16, no AMX), one thread: 0.7-1.0x the plain time for fp32 and 0.6-0.95x for
    bf16 on the ViT / CoTracker3 shapes, the largest gains where a GELU is fused; outputs agree within a few
    ulps (oneDNN sums in another order).

Choice (``backend="auto"``, the default): oneDNN for CPU float32 / bfloat16 inputs whose weight is an
``nn.Parameter`` with at least 16 outputs (narrower heads run faster plain) when oneDNN works in this process
(``torch.backends.mkldnn`` available and enabled, the private ops present and a one-off probe matching
``F.linear``; bfloat16 additionally needs native bf16 support), and the plain path for everything else: other devices or dtypes, ``torch.compile`` / TorchScript tracing, and whenever
autograd records (grad enabled and an input requires grad), so training never sees the oneDNN path. A failure of
the private API while packing falls back to the plain path for that weight (with one warning per process).

Override for a block with :func:`use_linear_backend` (thread-local, nestable), or process-wide with the environment
variable ``TRACKERS_LINEAR_BACKEND=auto|onednn|plain``. ``"onednn"`` means "use oneDNN wherever it can run" (as
``auto``, but also narrow layers and bfloat16 without native support) and raises if oneDNN cannot run in this
process at all; ``"plain"`` never touches oneDNN. On CPUs where oneDNN refuses bfloat16 linears altogether (AVX2
only: :func:`bf16_packable` is False) bfloat16 always takes the plain path.

Packed weights are a cache outside the modules (state dicts and checkpoints are unchanged; the packed tensors are
never saved, copied or pickled with a model). Each entry is keyed by the parameter object and remembers which
storage, offset, shape, strides, dtype and version counter it was packed from: moving or casting a model
(new storage), loading a state dict or any in-place update (version bump) makes the entry stale, and the next call
re-packs it, replacing the stale one. Entries die with their parameter; :func:`release_packed` drops them at once
(``Tracker.to`` does so after moving or casting).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.weak import WeakIdKeyDictionary

from trackers.ops._backend import BackendSwitch

__all__ = [
    "ACTIVATIONS",
    "bf16_packable",
    "LINEAR_BACKENDS",
    "default_linear_backend",
    "linear",
    "linear_info",
    "linear_module",
    "linear_route",
    "onednn_status",
    "packed_count",
    "release_packed",
    "use_linear_backend",
]

LINEAR_BACKENDS = ("auto", "onednn", "plain")
#: activations fused into the product: name -> (oneDNN attribute, oneDNN algorithm)
_ONEDNN_ACT = {"none": ("none", ""), "relu": ("relu", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}
ACTIVATIONS = tuple(_ONEDNN_ACT)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
#: ``auto`` keeps layers with fewer outputs on the plain path: oneDNN's blocked kernels waste most of their width on
#: them (a 384 -> 2 head over 2400 rows measured 2x slower through oneDNN).
_MIN_OUT = 16

_switch = BackendSwitch("TRACKERS_LINEAR_BACKEND", LINEAR_BACKENDS, "linear backend")
_lock = threading.Lock()
_cache: "WeakIdKeyDictionary" = WeakIdKeyDictionary()
_probe: Optional[tuple[bool, Optional[str]]] = None
_warned = False


# ----------------------------------------------------------------------------------------------------- selection
def _check_backend(backend: str) -> str:
    return _switch.check(backend)


def _check_activation(activation: str) -> str:
    if activation not in _ONEDNN_ACT:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def default_linear_backend() -> str:
    """What ``backend="auto"`` stands for right now: the innermost :func:`use_linear_backend`, else the
    environment variable ``TRACKERS_LINEAR_BACKEND`` (default ``"auto"``)."""
    return _switch.current()


@contextlib.contextmanager
def use_linear_backend(backend: str) -> Iterator[None]:
    """Make ``backend="auto"`` mean ``backend`` inside a ``with`` block (thread-local, nestable).

    Example: ``with trackers.ops.use_linear_backend("plain"): tracker.track(video)`` runs every linear of the model
    through ``F.linear``.
    """
    with _switch.use(backend):
        yield


def onednn_status() -> tuple[bool, Optional[str]]:
    """``(usable, reason)``: whether the oneDNN linear runs in this process (probed once, then cached).

    The probe packs a small fp32 weight and compares one fused product with ``F.linear``; ``reason`` says why
    oneDNN is not used when it is not.
    """
    global _probe
    if _probe is None:
        _probe = _run_probe()
    if _probe[0] and not torch.backends.mkldnn.enabled:
        return False, "torch.backends.mkldnn.enabled is False"
    return _probe


def _run_probe() -> tuple[bool, Optional[str]]:
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(16, 8, generator=gen)
        b = torch.randn(16, generator=gen)
        x = torch.randn(3, 8, generator=gen)
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
        if not torch.allclose(y, F.gelu(F.linear(x, w, b)), atol=1e-5, rtol=1e-5):
            return False, "the oneDNN probe disagreed with F.linear"
    except Exception as exc:  # noqa: BLE001 - any failure of the private API means "not usable"
        return False, f"{type(exc).__name__}: {exc}"
    return True, None


@functools.lru_cache(maxsize=None)
def _bf16_native() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - missing private op: treat as no native support
        return False


@functools.lru_cache(maxsize=None)
def bf16_packable() -> bool:
    """Whether oneDNN can pack and run bfloat16 linears on this CPU at all (probed once per process).

    Native bf16 dot products (:func:`_bf16_native`) make the bf16 path fast; without them oneDNN still emulates bf16
    on CPUs with AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT, and refuses on plain AVX2 CPUs. Where it refuses, bf16 linears
    run on the plain path whatever backend is asked for.
    """
    if not onednn_status()[0]:
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(16, 8, generator=gen).bfloat16()
        x = torch.randn(3, 8, generator=gen).bfloat16()
        with torch.no_grad():
            y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, None), None,
                                                   "none", [], "none")
        return bool(torch.allclose(y.float(), F.linear(x, w).float(), atol=0.1, rtol=0.02))
    except Exception:  # noqa: BLE001 - private API: any failure means "bf16 stays on the plain path"
        return False


def _records(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _tracing() -> bool:
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def linear_route(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 backend: str = "auto") -> str:
    """The backend (``"onednn"`` or ``"plain"``) that :func:`linear` uses for these arguments.

    Raises ``RuntimeError`` when ``"onednn"`` is requested (explicitly or through the default) and oneDNN cannot
    run in this process at all.
    """
    _check_backend(backend)
    if backend == "auto":
        backend = default_linear_backend()
    if backend == "plain":
        return "plain"
    ok, why = onednn_status()
    if backend == "onednn" and not ok:
        raise RuntimeError(f"linear backend 'onednn' requested but oneDNN cannot run here ({why}); "
                           "use TRACKERS_LINEAR_BACKEND=auto or plain")
    if not ok or _records(x, weight, bias) or _tracing():
        return "plain"
    if x.device.type != "cpu" or weight.device.type != "cpu" or not isinstance(weight, nn.Parameter):
        return "plain"
    if x.dtype not in _ONEDNN_DTYPES or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return "plain"
    if x.dtype == torch.bfloat16 and not bf16_packable():
        return "plain"  # oneDNN cannot run bf16 linears on this CPU (e.g. AVX2 only), whatever was asked
    if backend == "auto":
        if x.dtype == torch.bfloat16 and not _bf16_native():
            return "plain"
        if weight.shape[0] < _MIN_OUT:
            return "plain"
    return "onednn"


# ----------------------------------------------------------------------------------------------------- packing
class _Packed:
    """A packed weight and the identity of the tensor it was packed from."""

    __slots__ = ("storage", "signature", "packed")

    def __init__(self, storage: StorageWeakRef, signature: tuple, packed: Optional[torch.Tensor]):
        self.storage = storage
        self.signature = signature
        self.packed = packed  # None: packing failed, use the plain path for this weight

    def matches(self, weight: torch.Tensor, storage: torch.UntypedStorage, signature: tuple) -> bool:
        # The weak reference keeps the storage's control block alive, so while this entry exists no other storage
        # can appear at the same address: equal addresses mean the same storage.
        return (not self.storage.expired() and self.storage.cdata == storage._cdata
                and self.signature == signature)


def _signature(weight: torch.Tensor) -> Optional[tuple]:
    try:
        version = weight._version
    except RuntimeError:  # inference tensors have no version counter: in-place changes would go unseen
        return None
    return (weight.storage_offset(), tuple(weight.shape), tuple(weight.stride()), weight.dtype, version)


def _pack(weight: torch.Tensor) -> torch.Tensor:
    # no batch-size hint: one layout serves every row count (a hint measured no faster on the shapes used here)
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def _packed_weight(weight: torch.Tensor) -> Optional[torch.Tensor]:
    """The oneDNN layout of ``weight`` (packed now if the cached one is missing or stale), or None on failure."""
    global _warned
    signature = _signature(weight)
    if signature is None:
        return None
    storage = weight.untyped_storage()
    with _lock:
        entry = _cache.get(weight)
        if entry is not None and entry.matches(weight, storage, signature):
            return entry.packed
        # drop the stale entry first so old and new packed weights never coexist
        _cache.pop(weight, None)
        try:
            packed = _pack(weight)
        except Exception as exc:  # noqa: BLE001 - private API: any failure means "use the plain path"
            packed = None
            if not _warned:
                _warned = True
                warnings.warn(f"trackers.ops.linear: packing a {tuple(weight.shape)} {weight.dtype} weight for oneDNN "
                              f"failed ({type(exc).__name__}: {exc}); such weights use the plain path",
                              RuntimeWarning, stacklevel=3)
        _cache[weight] = _Packed(StorageWeakRef(storage), signature, packed)
        return packed


def release_packed(module: Optional[nn.Module] = None) -> int:
    """Drop the packed weights of ``module``'s parameters (all packed weights when ``module`` is None).

    Returns how many were dropped. Never needed for correctness (stale entries are detected and re-packed), but it
    frees their memory at once, e.g. after moving or casting a model.
    """
    with _lock:
        if module is None:
            n = len(_cache)
            _cache.clear()
            return n
        n = 0
        for p in module.parameters():
            if _cache.pop(p, None) is not None:
                n += 1
        return n


def packed_count(module: Optional[nn.Module] = None) -> int:
    """Number of live packed weights (of ``module``'s parameters, or in the whole process)."""
    with _lock:
        if module is None:
            return sum(1 for e in _cache.values() if e.packed is not None)
        return sum(1 for p in module.parameters() if (e := _cache.get(p)) is not None and e.packed is not None)


# ----------------------------------------------------------------------------------------------------- compute
def _plain(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    return _plain_act(F.linear(x, weight, bias), activation)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, activation: str = "none",
           *, backend: str = "auto") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` for ``x (..., in)``, ``weight (out, in)``; ``activation`` in :data:`ACTIVATIONS`
    (``"gelu"`` is the exact erf GELU, ``"gelu_tanh"`` its tanh approximation).

    Pass the ``nn.Parameter`` itself as ``weight`` (not a view or a copy): the packed layout is cached per
    parameter object, and other tensors take the plain path. See the module docstring for the backends.
    """
    _check_activation(activation)
    if linear_route(x, weight, bias, backend) == "onednn":
        packed = _packed_weight(weight)
        if packed is not None:
            attr, algorithm = _ONEDNN_ACT[activation]
            b = None if bias is None else bias.detach()
            try:
                return torch.ops.mkldnn._linear_pointwise(x, packed, b, attr, [], algorithm)
            except Exception:  # noqa: BLE001 - private API: the plain path computes (or reports) the same thing
                pass
    return _plain(x, weight, bias, activation)


def linear_module(module: nn.Module, x: torch.Tensor, activation: str = "none", *,
                  backend: str = "auto") -> torch.Tensor:
    """``act(module(x))`` for a linear layer, through :func:`linear` when ``module`` is a plain ``nn.Linear``.

    Any other module (e.g. a LoRA wrapper injected in place of the layer) or an ``nn.Linear`` with hooks is called
    as usual and the activation applied after it, so replacing ``act(layer(x))`` by this never changes behaviour.
    """
    _check_activation(activation)
    if type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks):
        return linear(x, module.weight, module.bias, activation, backend=backend)
    return _plain_act(module(x), activation)


def _plain_act(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return y
    if activation == "relu":
        return F.relu(y)
    return F.gelu(y, approximate="tanh" if activation == "gelu_tanh" else "none")


def linear_info() -> dict:
    """Which linear backend runs: the default, oneDNN status and the route of CPU fp32 / bf16 inference."""
    default = default_linear_backend()
    if default == "plain":
        ok, why = onednn_status()
        fp32 = bf16 = "plain (forced)"
    else:
        ok, why = onednn_status()
        if not ok:
            fp32 = bf16 = ("error (oneDNN unusable)" if default == "onednn" else "plain") + f": {why}"
        else:
            fp32 = "onednn (packed weights, fused bias + activation)"
            if not bf16_packable():
                bf16 = "plain (oneDNN cannot run bf16 linears on this CPU)"
            else:
                bf16 = fp32 if (default == "onednn" or _bf16_native()) else "plain (no native bf16 in oneDNN)"
    return {
        "linear_default_backend": default,
        "linear_onednn": "usable" if ok else f"unusable ({why})",
        "linear_route_cpu_float32": fp32,
        "linear_route_cpu_bfloat16": bf16,
        "linear_route_other": "plain (other devices / dtypes, autograd recording, torch.compile)",
        "linear_packed_weights": packed_count(),
    }
