"""Copy the newest training checkpoint of each shipped model into the package, check the size budget, and print
what was shipped.

Usage (from anywhere)::

    python training/ship_small.py                 # both models, newest checkpoint of each run
    python training/ship_small.py --dry-run       # only say what would be shipped
    python training/ship_small.py --checkpoint detrack-small-synthetic=training/detrack-small-synthetic/run/checkpoint-2000

For each of ``cotracker3-small-synthetic`` and ``detrack-small-synthetic`` the script

1. picks ``training/<name>/run/checkpoint-<step>`` with the largest step (or the folder given with
   ``--checkpoint``) and copies it to a temporary folder first: the training runs rotate their checkpoints every
   few minutes, so the folder may disappear while it is being read;
2. checks that the checkpoint's ``config.json`` holds exactly the architecture of the model's registry entry in
   ``trackers/zoo.py`` and that its settings are the ones the entry builds (the entry is what ``from_pretrained``
   uses; a mismatch means the zoo entry must be updated first), after applying ``RUN_TIME_CONFIG`` (fields no
   weight depends on that the shipped model runs with differently from training, e.g. the point model's input
   resolution);
3. writes ``trackers/assets/<name>/model.safetensors``: the checkpoint's tensors unchanged (fp32), with the
   trackers config in the metadata naming the shipped model, plus the training step and the source folder (the
   optimizer state, ``training_state.pt``, is never shipped);
4. refreshes the block between ``<!-- ship_small:begin -->`` and ``<!-- ship_small:end -->`` of the model's
   ``MODEL_CARD.md`` (step, size, SHA-256, parameter count);
5. checks that the shipped weights together stay within the budget (10 MB, i.e. 10,000,000 bytes, by default) and
   that each file loads through ``from_pretrained(name)``; prints sizes and SHA-256 digests.

It exits with status 1 (and ships nothing) if any check fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trackers import registry  # noqa: E402
from trackers.zoo import SHIPPED_MODELS  # noqa: E402

ASSETS = ROOT / "trackers" / "assets"
BUDGET_BYTES = 10_000_000
CARD_BEGIN = "<!-- ship_small:begin -->"
CARD_END = "<!-- ship_small:end -->"


#: Config fields the shipped model runs with that differ from the checkpoint it was trained as. Only fields that no
#: weight depends on belong here. ``model_resolution`` is the size CoTracker3 resizes frames to: the network is
#: convolutional and its correlation works in feature-map pixels, so the same weights run at any size. The point
#: run trains on 128x128 clips (4x cheaper per step than 256x256); on the 256x256 held-out clips of
#: ``benchmarks/quality.py`` checkpoint 2574 scored AJ 29.6 at 128x128, 37.2 at 192x192 and 41.9 at 256x256 (LK: 36.9).
RUN_TIME_CONFIG: Dict[str, Dict[str, object]] = {
    "cotracker3-small-synthetic": {"model_resolution": [256, 256]},
}


class ShipError(Exception):
    """A check failed; the message says which and why."""


def newest_checkpoint(name: str) -> Path:
    """``training/<name>/run/checkpoint-<step>`` with the largest step."""
    run = ROOT / "training" / name / "run"
    found = []
    for p in run.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    if not found:
        raise ShipError(f"{name}: no checkpoint-<step> folder in {run}")
    return max(found)[1]


def step_of(folder: Path) -> Optional[int]:
    m = re.search(r"checkpoint-(\d+)$", folder.name)
    return int(m.group(1)) if m else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(value):
    """Tuples become lists, as they do in a config.json, so zoo entries compare with stored configs."""
    return json.loads(json.dumps(value))


def expected_doc(name: str) -> dict:
    """The trackers config the shipped file must carry: the registry entry's architecture and the settings the
    tracker builds from it (defaults + the entry's overrides)."""
    entry = registry.get_entry(name)
    cls = entry.tracker_class()
    settings = dataclasses.asdict(cls.settings_class(**dict(entry.settings)))
    # the architecture with the config class's defaults filled in: a field added later with a default that keeps
    # the old behaviour (e.g. DETRack's template_token_types) matches checkpoints saved before or after it
    config = dataclasses.asdict(cls.config_class(**dict(entry.config)))
    return {"format": "trackers", "tracker": entry.tracker_name, "name": name,
            "config": _jsonable(config), "settings": _jsonable(settings)}


def check_config(name: str, doc: dict, where: str) -> None:
    """The checkpoint's config equals the zoo entry's (architecture and settings), or a ShipError naming the
    differing fields."""
    want = expected_doc(name)
    doc = dict(doc, config={**(doc.get("config") or {}), **RUN_TIME_CONFIG.get(name, {})})
    if doc.get("tracker") != want["tracker"]:
        raise ShipError(f"{where}: tracker {doc.get('tracker')!r}, the zoo entry {name!r} runs {want['tracker']!r}")
    # a field the checkpoint does not name loads at the config class's default
    defaults = _jsonable(dataclasses.asdict(registry.get_entry(name).tracker_class().config_class()))
    for part in ("config", "settings"):
        got, exp = _jsonable(doc.get(part) or {}), want[part]
        if part == "config":
            got = {**{k: v for k, v in defaults.items() if k in exp}, **got}
        diff = sorted(k for k in set(got) | set(exp) if got.get(k, "<missing>") != exp.get(k, "<missing>"))
        if diff:
            details = ", ".join(f"{k}: checkpoint {got.get(k, '<missing>')!r} vs zoo {exp.get(k, '<missing>')!r}"
                                for k in diff)
            raise ShipError(f"{where}: {part} differs from the zoo entry {name!r} ({details}); update trackers/zoo.py "
                            "(or ship a checkpoint of the registered architecture)")


def write_shipped(name: str, checkpoint: Path, out_dir: Path, source: Optional[Path] = None) -> Tuple[Path, int]:
    """Write ``out_dir/model.safetensors`` from a checkpoint folder; returns the file and the number of values
    stored (parameters and buffers). ``source`` is the folder recorded as the origin (default ``checkpoint``;
    the script reads a copy of the run's folder and records the original)."""
    from safetensors.torch import load_file, save_file

    doc = registry.read_config_doc(checkpoint / registry.CONFIG_NAME)
    check_config(name, doc, str(checkpoint / registry.CONFIG_NAME))
    tensors = load_file(str(checkpoint / registry.WEIGHTS_NAME))
    bad = [k for k, v in tensors.items() if v.is_floating_point() and str(v.dtype) != "torch.float32"]
    if bad:
        raise ShipError(f"{checkpoint}: tensors are not fp32 ({', '.join(bad[:5])}); ship what save_pretrained writes")
    shipped_doc = expected_doc(name)
    source = Path(source) if source is not None else checkpoint
    step = step_of(source)
    meta = {
        "trackers_config": json.dumps(shipped_doc),
        "trained_steps": str(step if step is not None else "unknown"),
        "source_checkpoint": _relative(source),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / registry.WEIGHTS_NAME
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target), metadata=meta)
    return target, sum(v.numel() for v in tensors.values())


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def update_card(card: Path, lines: List[str]) -> bool:
    """Replace the generated block of a model card; False when the card or its markers are missing."""
    if not card.is_file():
        return False
    text = card.read_text()
    if CARD_BEGIN not in text or CARD_END not in text:
        return False
    head, rest = text.split(CARD_BEGIN, 1)
    _, tail = rest.split(CARD_END, 1)
    card.write_text(head + CARD_BEGIN + "\n" + "\n".join(lines) + "\n" + CARD_END + tail)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FOLDER",
                    help="ship this checkpoint folder for NAME instead of the newest of its run (repeatable)")
    ap.add_argument("--only", choices=SHIPPED_MODELS, action="append", help="ship only this model (repeatable)")
    ap.add_argument("--budget-mb", type=float, default=BUDGET_BYTES / 1e6,
                    help="size budget of all shipped weights together, in MB of 10^6 bytes (default 10)")
    ap.add_argument("--dry-run", action="store_true", help="check and print, but do not touch trackers/assets")
    args = ap.parse_args(argv)

    chosen: Dict[str, Path] = {}
    for item in args.checkpoint:
        name, sep, folder = item.partition("=")
        if not sep or name not in SHIPPED_MODELS:
            ap.error(f"--checkpoint must be NAME=FOLDER with NAME one of {', '.join(SHIPPED_MODELS)}; got {item!r}")
        chosen[name] = Path(folder)
    names = args.only or list(SHIPPED_MODELS)
    budget = int(args.budget_mb * 1e6)
    try:
        with tempfile.TemporaryDirectory(prefix="ship_small_") as tmp:
            staged = {}
            for name in names:
                src = chosen.get(name) or newest_checkpoint(name)
                if not (src / registry.WEIGHTS_NAME).is_file() or not (src / registry.CONFIG_NAME).is_file():
                    raise ShipError(f"{src} lacks {registry.WEIGHTS_NAME} or {registry.CONFIG_NAME}")
                # Copy first: the run may delete this folder when it writes its next checkpoint.
                copy = Path(tmp) / "src" / name / src.name
                copy.parent.mkdir(parents=True)
                shutil.copytree(src, copy, ignore=shutil.ignore_patterns("training_state.pt"))
                target, params = write_shipped(name, copy, Path(tmp) / "out" / name, source=src)
                staged[name] = (src, target, params)
            # Budget over everything that will ship: the staged files plus the models not re-shipped this time.
            sizes = {n: staged[n][1].stat().st_size for n in staged}
            for n in SHIPPED_MODELS:
                if n not in sizes and (ASSETS / n / registry.WEIGHTS_NAME).is_file():
                    sizes[n] = (ASSETS / n / registry.WEIGHTS_NAME).stat().st_size
            total = sum(sizes.values())
            if total > budget:
                raise ShipError(f"shipped weights total {total:,} bytes, over the budget of {budget:,} bytes "
                                f"({', '.join(f'{n} {s:,}' for n, s in sizes.items())})")
            print(f"{'model':<28} {'step':>7} {'numbers':>10} {'bytes':>11}  sha256")
            for name, (src, target, params) in staged.items():
                digest = sha256(target)
                step = step_of(src)
                print(f"{name:<28} {step if step is not None else '?':>7} {params:>10,} {sizes[name]:>11,}  {digest}")
                if args.dry_run:
                    continue
                dest = ASSETS / name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(target, dest / registry.WEIGHTS_NAME)
                card_lines = [
                    f"- shipped checkpoint: `{_relative(src)}` (step {step if step is not None else '?'})",
                    f"- file: `trackers/assets/{name}/model.safetensors`, {sizes[name]:,} bytes, fp32, "
                    f"{params:,} numbers (parameters and buffers)",
                    f"- SHA-256: `{digest}`",
                ]
                if not update_card(dest / "MODEL_CARD.md", card_lines):
                    print(f"  note: {dest / 'MODEL_CARD.md'} has no {CARD_BEGIN} block; not updated")
            print(f"{'total':<28} {'':>7} {'':>10} {total:>11,}  (budget {budget:,})")
    except ShipError as err:
        print(f"ship_small: error: {err}", file=sys.stderr)
        return 1
    if not args.dry_run:
        _check_loads(names)
    return 0


def _check_loads(names: List[str]) -> None:
    """Each shipped model loads through the registry's package-file source (no network involved)."""
    import trackers

    for name in names:
        tracker = trackers.Tracker.from_pretrained(name)
        print(f"loads: {tracker!r}")


if __name__ == "__main__":
    sys.exit(main())
