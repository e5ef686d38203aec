"""Backend selection, info(), import without Triton, and AOT compilation of every kernel for sm_80 / sm_90."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import trackers.ops as ops
from trackers.ops._backend import load_kernels, resolve_backend

REPO = Path(__file__).resolve().parents[1]
try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:  # pragma: no cover
    HAVE_TRITON = False
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not importable")


def _fake(device: str, dtype=torch.float32):
    """Stands in for a tensor: resolve_backend only looks at .device and .dtype (no GPU here)."""
    return SimpleNamespace(device=torch.device(device), dtype=dtype)


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRACKERS_OPS_BACKEND")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(overrides)
    return env


def test_auto_uses_reference_on_cpu_and_for_float64():
    assert resolve_backend("auto", "op", (_fake("cpu"),)) == "torch"
    assert resolve_backend("auto", "op", (_fake("cuda", torch.float64),)) == "torch"
    assert resolve_backend("torch", "op", (_fake("cuda"),)) == "torch"


@needs_triton
def test_auto_uses_triton_on_cuda_unless_interpreting(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        assert resolve_backend("auto", "op", (_fake("cuda", dt),)) == "triton"
    assert ops.info()["route_cuda_tensors"] == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # interpreted kernels are never picked implicitly
    assert resolve_backend("auto", "op", (_fake("cuda"),)) == "torch"
    assert ops.info()["route_cuda_tensors"].startswith("torch")


@needs_triton
def test_explicit_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", "corr4d", (_fake("cpu"),))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", "corr4d", (_fake("cpu"),)) == "triton"


@needs_triton
def test_kernels_built_for_one_mode_refuse_the_other():
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    wrong = "cuda" if interpreted else "cpu"
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        load_kernels("_corr4d_triton", "corr4d", torch.device(wrong))


def test_use_backend_and_environment_override(monkeypatch):
    monkeypatch.delenv("TRACKERS_OPS_BACKEND", raising=False)
    assert ops.default_backend() == "auto"
    with ops.use_backend("torch"):
        assert ops.default_backend() == "torch"
        assert resolve_backend("auto", "op", (_fake("cuda"),)) == "torch"
        with ops.use_backend("auto"):
            assert ops.default_backend() == "auto"
        assert ops.default_backend() == "torch"
    assert ops.default_backend() == "auto"
    monkeypatch.setenv("TRACKERS_OPS_BACKEND", "torch")
    assert resolve_backend("auto", "op", (_fake("cuda"),)) == "torch"
    monkeypatch.setenv("TRACKERS_OPS_BACKEND", "gpu")
    with pytest.raises(ValueError, match="TRACKERS_OPS_BACKEND"):
        ops.default_backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend("fast"):
            pass


def test_use_backend_routes_model_calls_through_triton(monkeypatch):
    """`with use_backend("triton")` reaches corr4d calls that pass no backend (how the model calls it)."""
    calls = []
    mod = sys.modules["trackers.ops.corr4d"]

    class Spy:
        @staticmethod
        def apply(*args):
            calls.append("triton")
            return torch.zeros(())

    monkeypatch.setattr(mod, "_Corr4dTriton", Spy)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    f, c, s = torch.zeros(1, 1, 2, 3, 3), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 9, 2)
    if HAVE_TRITON:
        with ops.use_backend("triton"):
            ops.corr4d(f, c, s, 1)
        assert calls == ["triton"]
    assert ops.corr4d(f, c, s, 1).shape == (1, 1, 2, 81)  # outside the block: reference again
    assert calls == (["triton"] if HAVE_TRITON else [])


def test_info_reports_routes():
    info = ops.info()
    for key in ("torch", "triton", "triton_interpreter", "cuda_available", "route_cuda_tensors",
                "route_cpu_tensors", "default_backend"):
        assert key in info
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["route_cpu_tensors"] == "torch"
    if HAVE_TRITON:
        assert info["triton"] == triton.__version__
    text = str(info)
    assert "route_cpu_tensors" in text and "trackers.ops backends" in text
    with ops.use_backend("triton"):
        assert ops.info()["default_backend"] == "triton"


def test_import_and_reference_work_without_triton():
    """Block `import triton` entirely: the package imports, the reference runs, Triton requests fail clearly."""
    code = r"""
import sys
sys.modules["triton"] = None  # "import triton" now fails as if it were not installed
import torch, trackers, trackers.ops as ops
f, c, s = torch.randn(1, 2, 3, 5, 6), torch.rand(1, 2, 4, 2) * 5, torch.randn(1, 4, 9, 3)
out = ops.corr4d(f, c, s, 1)
v = torch.randn(1, 6, 1, 2); ss = torch.tensor([[2, 3]]); st = torch.tensor([0])
o2 = ops.ms_deform_attn(v, ss, st, torch.rand(1, 2, 1, 1, 2, 2), torch.rand(1, 2, 1, 1, 2))
info = ops.info()
try:
    ops.corr4d(f, c, s, 1, backend="triton")
    err = None
except RuntimeError as e:
    err = str(e)
print("RESULT", tuple(out.shape), tuple(o2.shape), info["triton"].startswith("unavailable"),
      info["route_cuda_tensors"], err is not None and "cannot be imported" in err)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")][0]
    assert line == "RESULT (1, 2, 4, 81) (1, 2, 2) True torch (Triton missing) True"


@needs_triton
@pytest.mark.slow
def test_aot_compile_every_kernel_for_sm80_and_sm90():
    """triton.compile(ASTSource, GPUTarget("cuda", cap, 32)) for all kernels x fp32/fp16/bf16: lowering and type
    errors surface without a GPU. Runs in a subprocess because the kernels must be built without the interpreter."""
    res = subprocess.run([sys.executable, "-m", "trackers.ops._aot", "80", "90"], capture_output=True, text=True,
                         env=_env(), timeout=1200)
    assert res.stdout.strip(), res.stderr[-3000:]
    records = json.loads(res.stdout.strip().splitlines()[-1])
    failed = [r for r in records if not r["ok"]]
    assert not failed, failed
    kernels = {r["kernel"] for r in records}
    assert kernels == {"corr4d_fwd", "corr4d_bwd", "msda_fwd", "msda_bwd"}
    assert {(r["cap"], r["dtype"]) for r in records} == {(c, d) for c in (80, 90) for d in ("fp32", "fp16", "bf16")}
    assert {r["ptx_target"] for r in records if r["cap"] == 80} == {"sm_80"}
    assert {r["ptx_target"] for r in records if r["cap"] == 90} == {"sm_90a"}
    assert res.returncode == 0


def test_cpu_calls_do_not_import_triton():
    """Triton is imported lazily: the reference path on CPU never pays its import cost."""
    code = (
        "import sys, torch, trackers.ops as ops\n"
        "ops.corr4d(torch.randn(1, 1, 2, 4, 4), torch.rand(1, 1, 3, 2), torch.randn(1, 3, 9, 2), 1)\n"
        "ops.sample_patches(torch.randn(1, 2, 4, 4), torch.rand(1, 3, 2), 1)\n"
        "print('RESULT', 'triton' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "RESULT False" in res.stdout
