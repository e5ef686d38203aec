"""``dtype="auto"``: measured per device, cached, and reported."""
from __future__ import annotations

import pytest
import torch
from _helpers import TINY_LORAT

import trackers
from trackers import precision


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(precision, "_CACHE", {})


def test_no_native_bf16_means_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    choice = precision.auto_dtype("cpu")
    assert choice.dtype == torch.float32 and "no native bf16" in choice.reason
    assert trackers.LoRATracker.from_config(TINY_LORAT, dtype="auto").dtype == torch.float32


@pytest.mark.parametrize("f32, b16, want", [(100.0, 300.0, torch.bfloat16), (100.0, 105.0, torch.float32),
                                            (100.0, 60.0, torch.float32)])
def test_the_probe_decides(monkeypatch, f32, b16, want):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(precision, "_gflops", lambda dtype, **kw: b16 if dtype == torch.bfloat16 else f32)
    choice = precision.auto_dtype()
    assert choice.dtype == want and choice.fp32_gflops == f32 and choice.bf16_gflops == b16
    calls = []
    monkeypatch.setattr(precision, "_gflops", lambda dtype, **kw: calls.append(dtype) or 1.0)
    assert precision.auto_dtype().dtype == want and not calls  # cached for the process


def test_real_probe_gives_a_floating_dtype_and_info_reports_it(capsys):
    choice = precision.auto_dtype("cpu")
    assert choice.dtype in (torch.float32, torch.bfloat16) and choice.reason
    from trackers import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "dtype=auto (cpu)" in out and choice.reason in out
    with pytest.raises(ValueError, match="'auto'"):
        trackers.LoRATracker.from_config(TINY_LORAT, dtype="fp8")
