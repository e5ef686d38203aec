"""Fused operators for the trackers' hot spots, each with a pure-PyTorch reference.

* :func:`corr4d` -- CoTracker3's 4D local correlation for one pyramid level (and :func:`sample_patches` to build
  its ``support`` argument with the same conventions).
* :func:`ms_deform_attn` -- multi-scale deformable attention with Deformable-DETR semantics (DETRack).

Backends (``backend=`` argument of every op):

``"auto"`` (default)
    Triton kernels for CUDA tensors of dtype fp32/fp16/bf16 when Triton can be imported (and ``TRITON_INTERPRET``
    is not set); the PyTorch reference otherwise (CPU tensors, float64, no Triton). Override for a block with :func:`use_backend`, or process-wide with
    ``TRACKERS_OPS_BACKEND=torch|triton|auto``.
``"torch"``
    The reference: lean in memory, any device and floating dtype, differentiable.
``"triton"``
    The fused kernels: CUDA tensors, or CPU tensors through Triton's interpreter when ``TRITON_INTERPRET=1`` is set
    before the kernels are first used (slow; for tests). Anything else raises a clear error.

Linear layers (:mod:`trackers.ops.linear`): :func:`linear` / :func:`linear_module` compute ``act(x @ W.T + b)``
through oneDNN with the weight packed once and the bias and activation fused (CPU fp32/bf16 inference), or through
``F.linear`` (everything else, and whenever autograd records). Force one for a block with :func:`use_linear_backend`,
or process-wide with ``TRACKERS_LINEAR_BACKEND=auto|onednn|plain``.

fp16/bf16 inputs are accumulated in fp32 by both backends. ``print(trackers.ops.info())`` shows what runs where.
Importing this package never imports Triton. ``python -m trackers.ops._aot 80 90`` (without ``TRITON_INTERPRET``)
compiles every kernel for sm_80 / sm_90 without a GPU, which catches lowering and type errors.
"""
from trackers.ops._backend import BACKENDS, OpsInfo, default_backend, info, use_backend
from trackers.ops.corr4d import (corr4d, corr4d_bytes_moved, corr4d_grid_sample, corr4d_read_dtype, corr4d_reference,
                                 sample_patches)
from trackers.ops.linear import (
    ACTIVATIONS,
    LINEAR_BACKENDS,
    bf16_packable,
    default_linear_backend,
    linear,
    linear_info,
    linear_module,
    linear_route,
    onednn_status,
    packed_count,
    release_packed,
    use_linear_backend,
)
from trackers.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference, msda_bytes_moved

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "LINEAR_BACKENDS",
    "OpsInfo",
    "corr4d",
    "corr4d_bytes_moved",
    "corr4d_grid_sample",
    "corr4d_read_dtype",
    "corr4d_reference",
    "default_backend",
    "default_linear_backend",
    "info",
    "linear",
    "linear_info",
    "bf16_packable",
    "linear_module",
    "linear_route",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "msda_bytes_moved",
    "onednn_status",
    "packed_count",
    "release_packed",
    "sample_patches",
    "use_backend",
    "use_linear_backend",
]
