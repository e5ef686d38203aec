"""Ahead-of-time compilation of every Triton kernel of :mod:`trackers.ops` for a CUDA target, without a GPU.

``triton.compile`` lowers a kernel through TTIR, TTGIR, LLVM IR and PTX to a cubin with Triton's bundled ptxas, so
type and lowering errors surface on a CPU-only machine. It needs kernels built by the real compiler, i.e. the
kernel modules must have been imported **without** ``TRITON_INTERPRET=1`` -- run this module as a script in a clean
environment (the tests do so in a subprocess)::

    TRITON_INTERPRET=0 python -m trackers.ops._aot 80 90
"""
from __future__ import annotations

import json
import sys
import time


def compile_all(capabilities=(80, 90), dtypes=("fp32", "fp16", "bf16")) -> list[dict]:
    """Compile every kernel for every ``sm_<cap>`` and dtype; return one record per compilation."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from trackers.ops import _corr4d_triton, _msda_triton

    if _corr4d_triton.INTERPRETED or _msda_triton.INTERPRETED:
        raise RuntimeError("AOT compilation needs the kernels imported without TRITON_INTERPRET=1")
    records = []
    for cap in capabilities:
        target = GPUTarget("cuda", cap, 32)
        for dtype in dtypes:
            specs = _corr4d_triton.aot_specs(dtype) + _msda_triton.aot_specs(dtype)
            for name, kernel, signature, constexprs in specs:
                t0 = time.perf_counter()
                rec = {"kernel": name, "cap": cap, "dtype": dtype}
                try:
                    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                              target=target)
                    rec["ok"] = "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 0
                    rec["ptx_target"] = next((ln.split()[1] for ln in compiled.asm["ptx"].splitlines()
                                              if ln.startswith(".target")), None)
                    rec["shared_bytes"] = int(getattr(compiled.metadata, "shared", 0))
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    rec["ok"] = False
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                rec["seconds"] = round(time.perf_counter() - t0, 2)
                records.append(rec)
    return records


def main(argv: list[str]) -> int:
    caps = tuple(int(a) for a in argv) or (80, 90)
    records = compile_all(caps)
    print(json.dumps(records))
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
