"""Compute bounds for the speed tables: how many FLOPs a run needs and how fast this CPU can do them at best.

A speed target below ``FLOPs / best GEMM throughput`` cannot be met with the same arithmetic, whatever the code
around the matrix products does. The best GEMM throughput is measured, not taken from a data sheet: the maximum over
a few large, well-shaped matrix products (the most favourable case for the BLAS library), per dtype.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, Tuple

GEMM_SHAPES: Tuple[Tuple[int, int, int], ...] = (
    (1024, 768, 3072), (1024, 3072, 768), (2048, 384, 1536), (2048, 1536, 384), (512, 2304, 768),
)


def best_gemm_gflops(dtype_name: str = "float32", shapes: Iterable[Tuple[int, int, int]] = GEMM_SHAPES,
                     repeats: int = 20) -> Dict[str, float]:
    """Best sustained GFLOP/s of ``x @ w.T`` over ``shapes`` with the current torch thread count."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    best, per_shape = 0.0, {}
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=g).to(dtype)
        w = torch.randn(n, k, generator=g).to(dtype)
        for _ in range(3):
            torch.nn.functional.linear(a, w)
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(a, w)
        rate = 2.0 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9
        per_shape[f"{m}x{k}x{n}"] = rate
        best = max(best, rate)
    return {"best": best, **per_shape}


def count_flops(fn: Callable[[], object]) -> Tuple[float, Dict[str, float]]:
    """FLOPs of the matrix products, convolutions and attention in one call of ``fn`` (torch's own counter).

    Element-wise work (norms, activations, sampling) is not counted, so the bound derived from it is optimistic.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        # torch's counter knows the GPU attention kernels only; the CPU one does the same two products
        *batch, q_len, e = query_shape
        k_len, ev = key_shape[-2], value_shape[-1]
        n = 1
        for b in batch:
            n *= b
        return 2 * n * q_len * k_len * (e + ev)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter, torch.no_grad():
        fn()
    by_op: Dict[str, float] = {}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        by_op[str(op).split(".")[-1]] = float(n)
    return float(counter.get_total_flops()), by_op
