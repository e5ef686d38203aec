"""Backend selection for the fused operators.

Every operator in :mod:`trackers.ops` has two implementations:

* ``"torch"``: a pure-PyTorch reference. It runs on any device and dtype and is the CPU path.
* ``"triton"``: fused Triton kernels. They run on CUDA tensors, or on CPU tensors through Triton's interpreter
  when ``TRITON_INTERPRET=1`` was set *before* the kernels were first imported (that is how the tests run them).

``backend="auto"`` (the default of every operator) picks Triton for CUDA tensors when Triton can be imported, the
dtype is supported and the interpreter is not requested, and the reference otherwise. The default can be overridden for a block of code with
:func:`use_backend` (handy to run a whole model on one backend) or process-wide with the environment variable
``TRACKERS_OPS_BACKEND``.

Triton is imported lazily, so importing :mod:`trackers.ops` never needs Triton or a GPU.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from typing import Iterator

import torch

BACKENDS = ("auto", "torch", "triton")
#: dtypes the Triton kernels accept (they accumulate in fp32 whatever the input dtype).
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_triton_probe: tuple[bool, str | None, str | None] | None = None


def _check_name(backend: str) -> str:
    return _switch.check(backend)


class BackendSwitch:
    """One process-wide backend choice: an environment variable, overridden for a block of code by a thread-local,
    nestable ``with`` (the mechanism behind both :func:`use_backend` and ``use_linear_backend``)."""

    def __init__(self, env: str, choices: tuple, what: str) -> None:
        self.env, self.choices, self.what = env, choices, what
        self._state = threading.local()

    def check(self, backend: str) -> str:
        if backend not in self.choices:
            raise ValueError(f"{self.what} must be one of {self.choices}, got {backend!r}")
        return backend

    def current(self) -> str:
        """The innermost ``with`` override, else the environment variable (default ``"auto"``)."""
        stack = getattr(self._state, "stack", None)
        if stack:
            return stack[-1]
        env = os.environ.get(self.env, "auto").strip().lower() or "auto"
        if env not in self.choices:
            raise ValueError(f"{self.env} must be one of {self.choices}, got {env!r}")
        return env

    @contextlib.contextmanager
    def use(self, backend: str) -> Iterator[None]:
        self.check(backend)
        stack = getattr(self._state, "stack", None)
        if stack is None:
            stack = self._state.stack = []
        stack.append(backend)
        try:
            yield
        finally:
            stack.pop()


_switch = BackendSwitch("TRACKERS_OPS_BACKEND", BACKENDS, "backend")


def default_backend() -> str:
    """The backend that ``backend="auto"`` currently stands for (``"auto"`` unless overridden)."""
    return _switch.current()


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Make ``backend="auto"`` mean ``backend`` inside a ``with`` block (thread-local, nestable).

    Example: ``with trackers.ops.use_backend("triton"): tracker.track(video)`` runs every ``corr4d`` call of the
    model through the Triton kernels.
    """
    with _switch.use(backend):
        yield


def triton_status() -> tuple[bool, str | None, str | None]:
    """``(importable, version, error)`` for Triton; probed once and cached."""
    global _triton_probe
    if _triton_probe is None:
        try:
            triton = importlib.import_module("triton")
            importlib.import_module("triton.language")
            _triton_probe = (True, getattr(triton, "__version__", "unknown"), None)
        except Exception as exc:  # noqa: BLE001 - any import failure means "no Triton"
            _triton_probe = (False, None, f"{type(exc).__name__}: {exc}")
    return _triton_probe


def interpreter_requested() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value in the environment right now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_backend(backend: str, op: str, tensors: tuple[torch.Tensor, ...]) -> str:
    """Turn ``"auto" | "torch" | "triton"`` into the backend that will really run, or raise a clear error.

    ``op`` names the operator in error messages; ``tensors`` are its floating-point inputs.
    """
    _check_name(backend)
    if backend == "auto":
        backend = default_backend()
    device = tensors[0].device
    dtype = tensors[0].dtype
    if backend == "torch":
        return "torch"
    if backend == "auto":
        # under TRITON_INTERPRET=1 the kernels are interpreted Python: never pick them implicitly
        if device.type == "cuda" and dtype in TRITON_DTYPES and not interpreter_requested() and triton_status()[0]:
            return "triton"
        return "torch"
    ok, _, err = triton_status()
    # explicit "triton"
    if not ok:
        raise RuntimeError(f"{op}: backend='triton' requested but Triton cannot be imported ({err})")
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"{op}: the Triton backend supports float32, float16 and bfloat16 inputs, got {dtype}; "
                         "use backend='torch' (the reference also handles float64)")
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu":
        if not interpreter_requested():
            raise RuntimeError(
                f"{op}: backend='triton' on CPU tensors needs Triton's interpreter: set the environment variable "
                "TRITON_INTERPRET=1 before trackers.ops imports its kernels (e.g. at the top of the script or in "
                "conftest.py), or use backend='torch' / move the tensors to a CUDA device")
        return "triton"
    raise RuntimeError(f"{op}: backend='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), "
                       f"got device {device}")


def load_kernels(module: str, op: str, device: torch.device):
    """Import a Triton kernel module of this package and check it was built in the mode ``device`` needs.

    ``@triton.jit`` decides between the interpreter and the GPU compiler when the module is first imported, so a
    module imported without ``TRITON_INTERPRET=1`` cannot run CPU tensors later (and vice versa for CUDA).
    """
    mod = importlib.import_module(f"trackers.ops.{module}")
    if device.type == "cpu" and not mod.INTERPRETED:
        raise RuntimeError(f"{op}: the Triton kernels were imported without TRITON_INTERPRET=1, so they cannot run "
                           "CPU tensors; set TRITON_INTERPRET=1 before the first Triton call of the process")
    if device.type == "cuda" and mod.INTERPRETED:
        raise RuntimeError(f"{op}: the Triton kernels were imported under TRITON_INTERPRET=1 (interpreter); unset it "
                           "to run compiled kernels on CUDA tensors")
    return mod


class OpsInfo(dict):
    """``dict`` describing which backend runs where; ``str()`` gives a readable table."""

    def __str__(self) -> str:
        lines = ["trackers.ops backends"]
        width = max(len(k) for k in self)
        for k, v in self.items():
            lines.append(f"  {k:<{width}} : {v}")
        return "\n".join(lines)


def info() -> OpsInfo:
    """Report the Triton version, interpreter mode, CUDA availability and which backend each device uses, and which
    linear backend runs (``linear_*`` rows, see :mod:`trackers.ops.linear`).

    Returns a :class:`OpsInfo` (a ``dict``); ``print(trackers.ops.info())`` shows it as a table.
    """
    ok, version, err = triton_status()
    cuda = torch.cuda.is_available()
    interp = interpreter_requested()
    default = default_backend()
    if default == "torch":
        cuda_route = cpu_route = "torch"
    elif default == "triton":
        cuda_route = "triton" if ok else "error (Triton missing)"
        cpu_route = "triton (interpreter)" if ok and interp else "error (set TRITON_INTERPRET=1)"
    else:
        cuda_route = ("torch (TRITON_INTERPRET=1)" if interp else "triton") if ok else "torch (Triton missing)"
        cpu_route = "torch"
    built = {}
    for name in ("_corr4d_triton", "_msda_triton"):
        mod = sys.modules.get(f"trackers.ops.{name}")
        built[name] = ("not imported yet" if mod is None else
                       ("interpreter" if getattr(mod, "INTERPRETED", False) else "compiled (JIT)"))
    from trackers.ops.linear import linear_info  # lazy: keeps the two backend switches independent

    return OpsInfo(
        torch=torch.__version__,
        triton=version if ok else f"unavailable ({err})",
        triton_interpreter=interp,
        cuda_available=cuda,
        cuda_device=torch.cuda.get_device_name(0) if cuda else None,
        default_backend=default,
        route_cuda_tensors=cuda_route,
        route_cpu_tensors=cpu_route,
        triton_dtypes="float32, float16, bfloat16 (fp32 accumulation); float64 -> torch reference",
        corr4d_kernels=built["_corr4d_triton"],
        ms_deform_attn_kernels=built["_msda_triton"],
        **linear_info(),
    )
