"""Choosing a compute dtype: ``dtype="auto"``.

Whether bfloat16 beats float32 depends on the processor, not on the model: on CPUs with native bf16 dot products
(AVX512-BF16, AMX) bf16 matrix products can run well above the fp32 rate, while elsewhere they are emulated and run
at a fraction of it (both were measured on this project's 2-core machines: an AMD EPYC with AVX512-BF16 ran
CoTracker3 1.6x faster in bf16; an Intel Xeon with the same flag but a different oneDNN path ran bf16 GEMMs at ~60 %
of fp32). So ``"auto"`` measures instead of guessing: a one-off micro-probe times the same matrix product in both
dtypes (cached for the process) and picks bf16 only when it is clearly faster. On CUDA it picks bf16 where the GPU
supports it. float32 stays the default everywhere, because it reproduces the official outputs exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch

__all__ = ["AutoDtype", "auto_dtype", "cpu_flags"]

# bf16 must beat fp32 by this factor to be chosen: a close race is not worth the precision.
_MARGIN = 1.15
_CACHE: Dict[str, "AutoDtype"] = {}


@dataclass(frozen=True)
class AutoDtype:
    """The outcome of ``dtype="auto"`` for one device: the dtype and why."""

    dtype: torch.dtype
    reason: str
    fp32_gflops: Optional[float] = None
    bf16_gflops: Optional[float] = None


def cpu_flags() -> set:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where it is not available)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _gflops(dtype: torch.dtype, n: int = 384, reps: int = 6) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up (first call picks kernels)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def auto_dtype(device: Union[None, str, torch.device] = None) -> AutoDtype:
    """The dtype ``"auto"`` resolves to on ``device`` (default CPU), measured once per process and device type."""
    dev = torch.device(device or "cpu")
    key = dev.type
    if key in _CACHE:
        return _CACHE[key]
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        choice = AutoDtype(torch.bfloat16 if ok else torch.float16,
                           "the GPU supports bf16" if ok else "the GPU lacks bf16; fp16 instead")
    elif dev.type != "cpu":
        choice = AutoDtype(torch.float32, f"no probe for {dev.type}; float32")
    else:
        flags = cpu_flags()
        native = {"avx512_bf16", "amx_bf16"} & flags
        if not native:
            choice = AutoDtype(torch.float32, "the CPU has no native bf16 dot products (no AVX512-BF16 / AMX)")
        else:
            f32, b16 = _gflops(torch.float32), _gflops(torch.bfloat16)
            if b16 > _MARGIN * f32:
                choice = AutoDtype(torch.bfloat16, f"bf16 matrix products measured {b16 / f32:.2f}x the fp32 rate "
                                   f"({', '.join(sorted(native))})", f32, b16)
            else:
                choice = AutoDtype(torch.float32, f"bf16 matrix products measured only {b16 / f32:.2f}x the fp32 "
                                   f"rate despite {', '.join(sorted(native))}", f32, b16)
    _CACHE[key] = choice
    return choice
