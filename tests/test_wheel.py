"""The built wheel carries the shipped models: ``pip wheel`` on a copy of the sources (so the working tree gets no
``build/`` folder), then the file list is checked and the unpacked wheel loads both models with no network."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
from conftest import REPO_ROOT

from trackers.zoo import SHIPPED_MODELS

SHIPPED_FILES = [f"trackers/assets/{name}/{f}" for name in SHIPPED_MODELS for f in ("model.safetensors",
                                                                                     "MODEL_CARD.md")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "trackers", src / "trackers",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    # With setuptools installed here, build with it (fast, no network); otherwise (e.g. a Python 3.12+ venv, which
    # has no setuptools) let pip fetch the build backend that pyproject.toml names, as `pip install` would.
    isolation = (["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") is not None
                 else [])
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation,
                          "-w", str(dist), "-q"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheels = list(dist.glob("trackers-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_shipped_models(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [f for f in SHIPPED_FILES if f not in names]
        assert not missing, f"not in the wheel: {missing}"
        # byte for byte the files of the repository
        for f in SHIPPED_FILES:
            assert hashlib.sha256(zf.read(f)).digest() == hashlib.sha256((REPO_ROOT / f).read_bytes()).digest(), f
    assert not [n for n in names if n.endswith("training_state.pt") or "/training/" in n]


def test_unpacked_wheel_loads_the_shipped_models_offline(wheel, tmp_path):
    """A wheel is a zip: unpacked onto PYTHONPATH it is an installed package. The registry finds the weights inside
    it (not in the repository), with the Hub switched off and every connection refused."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = textwrap.dedent(f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        import trackers
        from trackers import registry
        assert trackers.__file__.startswith({str(site)!r}), trackers.__file__
        for name in {list(SHIPPED_MODELS)!r}:
            path = registry.fetch_file(trackers.get_entry(name).files["weights"], model_name=name)
            assert str(path).startswith({str(site)!r}), path
            print(type(trackers.Tracker.from_pretrained(name)).__name__)
    """)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TRACKERS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["PointTracker", "BoxTracker"]
