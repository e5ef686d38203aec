"""Compute bounds for the speed tables: how many FLOPs a run needs and how fast this CPU can do them at best.

A speed target below ``FLOPs / best GEMM throughput`` cannot be met with the same arithmetic, whatever the code
around the matrix products does. The best GEMM throughput is measured, not taken from a data sheet: the maximum over
a few large, well-shaped matrix products (the most favourable case for the BLAS library) and over the linear
backends this process can run (``F.linear``, and oneDNN with a pre-packed weight through
``trackers.ops.linear(..., backend="onednn")`` when that exists), per dtype, at the current torch thread count.
On a machine shared with other jobs each rate is the best of several timed batches, i.e. the rate of the least
disturbed one, which estimates what the CPU can do rather than what it did under load.

``fraction`` = bound / measured time: the share of the machine's best matrix-product rate a run reaches end to end
(1.0 = every cycle spent in matrix products at the best rate).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

# (M, K, N) of x (M, K) @ w.T (K, N): the two FFN products of a ViT-B over 1024 tokens, a ViT-S pair, a qkv-like
# product, and the qkv / FFN products of LoRAT-B-224's 320 tokens.
GEMM_SHAPES: Tuple[Tuple[int, int, int], ...] = (
    (1024, 768, 3072), (1024, 3072, 768), (2048, 384, 1536), (2048, 1536, 384), (512, 2304, 768),
    (320, 768, 2304), (320, 768, 3072), (320, 3072, 768),
)
BACKENDS = ("plain", "onednn")


def _onednn_linear() -> Optional[Callable]:
    """``trackers.ops.linear`` if this checkout has it and oneDNN runs in this process, else None."""
    try:
        from trackers import ops
    except ImportError:
        return None
    fn, status = getattr(ops, "linear", None), getattr(ops, "onednn_status", None)
    if fn is None or status is None or not status()[0]:
        return None
    return fn


def best_gemm_gflops(dtype_name: str = "float32", shapes: Iterable[Tuple[int, int, int]] = GEMM_SHAPES,
                     repeats: int = 5, trials: int = 4, backend: str = "plain") -> Dict[str, float]:
    """Best sustained GFLOP/s of ``x @ w.T`` over ``shapes`` with the current torch thread count.

    ``backend``: ``"plain"`` (``torch.nn.functional.linear``) or ``"onednn"`` (pre-packed weight, see the module
    docstring; ``{"best": nan}`` when it is not available). Each shape is timed ``trials`` times over
    ``repeats`` calls and its fastest trial counts. Returns ``{"best": ..., "best_cpu": ..., "<M>x<K>x<N>": ...}``:
    ``best`` in wall time; ``best_cpu`` per CPU second given to each thread (FLOPs / (process CPU time / threads)),
    the rate the threads reach while they actually run -- less sensitive to other jobs taking the cores.
    """
    import torch

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dtype = getattr(torch, dtype_name)
    if backend == "plain":
        def run(a, w):
            return torch.nn.functional.linear(a, w)
    else:
        fn = _onednn_linear()
        if fn is None:
            return {"best": float("nan"), "best_cpu": float("nan")}

        def run(a, w):
            return fn(a, w, None, backend="onednn")
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    best, best_cpu, per_shape = 0.0, 0.0, {}
    with torch.inference_mode():
        for m, k, n in shapes:
            a = torch.randn(m, k, generator=g).to(dtype)
            # A Parameter: the oneDNN path packs (and caches) only parameters.
            w = torch.nn.Parameter(torch.randn(n, k, generator=g).to(dtype), requires_grad=False)
            for _ in range(2):
                run(a, w)
            rate = 0.0
            flop = 2.0 * m * k * n * repeats
            for _ in range(trials):
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(repeats):
                    run(a, w)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                rate = max(rate, flop / wall / 1e9)
                best_cpu = max(best_cpu, flop / max(cpu / threads, 1e-9) / 1e9)
            per_shape[f"{m}x{k}x{n}"] = rate
            best = max(best, rate)
    return {"best": best, "best_cpu": best_cpu, **per_shape}


def gemm_probe(dtype_names: Iterable[str] = ("float32", "bfloat16"), **kwargs) -> Dict[str, Dict[str, float]]:
    """``{dtype: {"plain": GFLOP/s, "onednn": GFLOP/s or nan, "best": max of both, and the same per CPU second
    with a "_cpu" suffix}}`` (see :func:`best_gemm_gflops`)."""
    out: Dict[str, Dict[str, float]] = {}
    for d in dtype_names:
        res = {b: best_gemm_gflops(d, backend=b, **kwargs) for b in BACKENDS}
        row: Dict[str, float] = {}
        for suffix, key in (("", "best"), ("_cpu", "best_cpu")):
            rates = {b + suffix: res[b][key] for b in BACKENDS}
            valid = [r for r in rates.values() if r == r]
            row.update(rates)
            row["best" + suffix] = max(valid) if valid else float("nan")
        out[d] = row
    return out


@contextlib.contextmanager
def plain_linears() -> Iterator[None]:
    """Route every linear through ``F.linear`` inside the block (when this checkout has a linear-backend switch).

    Used while counting FLOPs: torch's counter sees ``F.linear`` (as ``mm`` / ``addmm``) but not oneDNN's fused
    products, which do the same arithmetic.
    """
    try:
        from trackers import ops

        switch = getattr(ops, "use_linear_backend", None)
    except ImportError:
        switch = None
    if switch is None:
        yield
        return
    with switch("plain"):
        yield


def count_flops(fn: Callable[[], object]) -> Tuple[float, Dict[str, float]]:
    """FLOPs of the matrix products, convolutions and attention in one call of ``fn`` (torch's own counter).

    Element-wise work (norms, activations, sampling) is not counted, so the bound derived from it is optimistic.
    Linears run through ``F.linear`` while counting (:func:`plain_linears`).
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
    with plain_linears(), counter, torch.no_grad():
        fn()
    by_op: Dict[str, float] = {}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        by_op[str(op).split(".")[-1]] = float(n)
    return float(counter.get_total_flops()), by_op


def bound(gflop: float, gflops_rate: float, seconds: float) -> Tuple[float, float]:
    """``(bound s, fraction)``: ``gflop / rate`` seconds at the best GEMM rate, and that bound / ``seconds``."""
    b = gflop / gflops_rate if gflops_rate and gflops_rate == gflops_rate else float("nan")
    return b, (b / seconds if seconds else float("nan"))


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (``lscpu``'s Model name), or "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_flags(*wanted: str) -> str:
    """Which of ``wanted`` ISA flags (e.g. ``avx512_bf16``, ``amx_bf16``) the CPU reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return ", ".join(f"{w} {'yes' if w in have else 'no'}" for w in wanted)
    except OSError:
        pass
    return "flags unknown"


def one_step_boxes(tracker, video, init_box, steps: int = 6) -> list:
    """Boxes (search-crop pixels) the tracker picks on fixed inputs: the template of frame 0 and search crops of
    frames 1..steps around the initial box. Every configuration sees the same crops, so differences are the
    network's numerics alone -- unlike whole tracks, where a small difference moves the next crop and can grow."""
    import torch

    from trackers.box.pipeline import search_crop, select_box

    session = tracker.stream(video[0], init_box)
    st = session.targets[0]
    crops = [search_crop(torch.from_numpy(video[t]).permute(2, 0, 1).float(), st, tracker.settings,
                         tracker.crop_sizes)[0] for t in range(1, steps + 1)]
    x = torch.stack(crops).to(tracker.input_dtype)
    with torch.inference_mode():
        score_map, boxes = tracker._predict(st.template.expand(len(crops), *st.template.shape[1:]), x)
    chosen, _ = select_box(score_map, boxes, tracker.settings, tracker.crop_sizes.search)
    return chosen.double().tolist()
