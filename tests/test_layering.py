"""The import structure of the package, enforced: layers only import downward, training is imported by nothing,
no module reaches for another module's private names, and ``import trackers`` stays cheap.

Layers (each may import its own layer and the ones below):

1. foundation: ``video``, ``geometry``, ``errors``, ``precision``, ``results``, ``io``, ``registry``, ``zoo``;
2. numerics: ``ops/``, ``nn/``, ``models/`` (and, from layer 1, only ``geometry`` and ``errors``);
3. tracker families: ``base``, ``point/``, ``box/`` (``point`` and ``box`` do not import each other);
4. faces: ``viz`` (layer 1 only), ``cli``, ``__main__``;
5. ``train/``: may import anything; nothing outside it imports it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trackers"

LAYER1 = {"video", "geometry", "errors", "precision", "results", "io", "registry", "zoo"}
LAYER2 = {"ops", "nn", "models"}
LAYER3 = {"base", "point", "box"}


def _room(module: str) -> str:
    """``trackers.box.lorat`` -> ``box``; ``trackers`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def _is_module(name: str) -> bool:
    p = PKG.parent / Path(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports(path: Path, module: str, top_level_only: bool = False):
    """(imported module, imported names, line) of every import of a trackers module in the file.

    ``from trackers import registry`` counts as importing ``trackers.registry``; with ``top_level_only`` the
    imports inside functions (deliberately lazy) are left out.
    """
    tree = ast.parse(path.read_text())
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "trackers":
                    yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "trackers":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            for sub in subs:
                yield sub, [], node.lineno
            names = [a.name for a in node.names if f"{target}.{a.name}" not in subs]
            if names or not subs:
                yield target, names, node.lineno


def _allowed(src: str, dst: str) -> bool:
    if src == dst or dst == "__init__" and src == "__init__":
        return True
    if dst == "train":
        return src == "train"
    if src in LAYER1:
        return dst in LAYER1
    if src in LAYER2:
        return dst in LAYER2 or dst in {"geometry", "errors"}
    if src in LAYER3:
        if {src, dst} == {"point", "box"}:
            return False
        return dst in LAYER1 | LAYER2 | {"base"}
    if src == "viz":
        return dst in LAYER1
    if src in {"cli", "__main__"}:
        return dst != "train"
    if src == "train":
        return True
    if src == "__init__":
        return False  # the package root resolves its public names lazily, by string
    raise AssertionError(f"module room {src!r} has no layering rule; add it to tests/test_layering.py")


def test_every_import_goes_down_the_layers():
    bad = []
    for module, path in _modules():
        src = _room(module)
        for target, _, line in _imports(path, module):
            dst = _room(target)
            if not _allowed(src, dst):
                bad.append(f"{path.relative_to(PKG.parent)}:{line} ({src}) imports {target} ({dst})")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for module, path in _modules():
        for target, names, line in _imports(path, module):
            # a private module or name is fine inside its own sub-package (ops/_backend from ops/corr4d)
            same_pkg = target.rsplit(".", 1)[0] == module.rsplit(".", 1)[0] or target.startswith(module + ".")
            private = [n for n in names if n.startswith("_")]
            private_module = any(p.startswith("_") and p != "__init__" for p in target.split(".")[1:])
            if (private or private_module) and not same_pkg:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {target} {private}")
    assert not bad, "private imports across modules:\n" + "\n".join(bad)


def test_no_module_level_import_cycles():
    modules = dict(_modules())
    graph = {m: {t for t, _, _ in _imports(p, m, top_level_only=True) if t in modules and t != m}
             for m, p in modules.items()}
    done, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        stack.append(m)
        for d in sorted(graph[m]):
            visit(d)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=str(PKG.parent)).stdout


def test_import_trackers_is_cheap():
    out = _run("import sys, trackers; print(sorted(m for m in sys.modules if m.startswith(('torch', 'triton', "
               "'trackers.'))))")
    assert out.strip() == "[]", out


@pytest.mark.parametrize("kind", ["points", "boxes"])
def test_tracking_never_loads_training_code(kind):
    setup = {
        "points": "t = trackers.PointTracker.from_config(dict(model_resolution=(32, 48), latent_dim=16, "
                  "hidden_size=32, num_heads=2, depth=1, num_virtual_tracks=4, corr_radius=1, corr_hidden=16, "
                  "corr_out=8, window_len=12), seed=0); t.track(v, grid_size=2)",
        "boxes": "t = trackers.LoRATracker.from_config(dict(embed_dim=32, depth=1, num_heads=2, ffn_hidden=64, "
                 "template_size=28, search_size=56), seed=0); t.track(v, (4, 4, 20, 20))",
    }[kind]
    out = _run("import sys, numpy as np, trackers, trackers.viz, trackers.cli; "
               "v = np.random.default_rng(0).integers(0, 255, (4, 32, 40, 3), dtype=np.uint8); " + setup +
               "; print([m for m in sys.modules if m.startswith('trackers.train')])")
    assert out.strip() == "[]", out
