"""Model registry and weight loading.

The registry maps a short model name (``"cotracker3-offline"``) to a :class:`ModelEntry`: which tracker class
runs it, the model configuration, the weight files on the Hugging Face Hub, and the converter that turns the
official checkpoint layout into ours. Entries live in :mod:`trackers.zoo` as plain data.

Weights are read from safetensors natively; ``.pth``/``.bin``/``.pt`` pickles are only opened through
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""
from __future__ import annotations

import difflib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

__all__ = [
    "WeightFile",
    "ModelEntry",
    "WeightsNotAvailableError",
    "register_model",
    "list_models",
    "get_entry",
    "download_file",
    "load_checkpoint_file",
    "normalize_state_dict",
    "load_state_dict_strict",
    "import_string",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
]

PathLike = Union[str, os.PathLike]
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class WeightFile:
    """One file on the Hugging Face Hub."""

    repo_id: str
    filename: str
    revision: Optional[str] = None


@dataclass(frozen=True)
class ModelEntry:
    """A named, loadable model.

    Attributes:
        name: registry name, e.g. ``"cotracker3-offline"``.
        tracker: ``"module:Class"`` of the :class:`trackers.base.Tracker` subclass that runs it.
        config: keyword arguments of that tracker's model config dataclass.
        files: role -> file; ``"weights"`` is the main checkpoint, other roles (e.g. ``"backbone"``) are
            resolved lazily by the converter.
        converter: ``"module:function"`` turning the official checkpoint into our state dict, or ``None`` when
            the file already has our layout. Called as ``fn(state_dict, config, load_file)``.
        license: license of the weights.
        paper: paper reference (title and arXiv id).
        description: one line for ``trackers list``.
    """

    name: str
    tracker: str
    config: Mapping[str, Any]
    files: Mapping[str, WeightFile]
    converter: Optional[str] = None
    license: str = "unknown"
    paper: str = ""
    description: str = ""
    tags: tuple = field(default_factory=tuple)

    @property
    def tracker_name(self) -> str:
        return self.tracker.rsplit(":", 1)[-1]


class WeightsNotAvailableError(FileNotFoundError):
    """Weights could not be found locally and could not be downloaded (offline, or missing on the Hub)."""


_REGISTRY: dict[str, ModelEntry] = {}
_ZOO_LOADED = False


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an entry to the registry (the name must be new)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    if "weights" not in entry.files:
        raise ValueError(f"model {entry.name!r} must declare a 'weights' file")
    _REGISTRY[entry.name] = entry
    return entry


def _ensure_zoo() -> None:
    global _ZOO_LOADED
    if not _ZOO_LOADED:
        _ZOO_LOADED = True
        importlib.import_module("trackers.zoo")


def list_models(pattern: Optional[str] = None, *, tracker: Optional[str] = None) -> list[str]:
    """Names of all registered models, sorted; filter with a shell-style ``pattern`` or a tracker class name."""
    import fnmatch

    _ensure_zoo()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if tracker:
        names = [n for n in names if _REGISTRY[n].tracker_name == tracker]
    return names


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a ``ValueError`` suggesting close names when unknown."""
    _ensure_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}. "
            "A local checkpoint folder/file or 'hf-hub:org/repo' is also accepted."
        ) from None


def import_string(path: str) -> Any:
    """Import ``"package.module:attr"``."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ----------------------------------------------------------------------------------------------- files


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    model_name: Optional[str] = None,
    role: str = "weights",
) -> Path:
    """Fetch one file through huggingface_hub into its standard cache and return the local path.

    ``role`` is the file's role in its registry entry; it only shapes the error message.

    Raises:
        WeightsNotAvailableError: offline and not cached, or missing on the Hub; the message names the model,
            the repository and the file, and says how to pass a local checkpoint instead.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(repo_id, filename, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir))
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        who = f"model {model_name!r}: " if model_name else ""
        reason = (
            "not in the local Hugging Face cache and the Hub cannot be reached (offline)"
            if isinstance(err, LocalEntryNotFoundError)
            else f"download failed ({type(err).__name__})"
        )
        local = (
            "checkpoint=PATH (CLI: --checkpoint PATH)" if role == "weights" else f"checkpoints={{{role!r}: PATH}}"
        )
        raise WeightsNotAvailableError(
            f"{who}{role} file {filename!r} from Hugging Face repo {repo_id!r} is {reason}. "
            f"Download it once with network access, or pass a local file with {local}."
        ) from None


def load_checkpoint_file(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint from disk: safetensors natively, pickles only with ``weights_only=True``.

    Files named ``.bin``/``.pth`` that really hold safetensors data (as some releases do) are detected by content.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected a checkpoint file, got a folder: {path}")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or non-weights pickles
        raise ValueError(
            f"could not read checkpoint {path}: {err.__class__.__name__}: {str(err).splitlines()[0][:200]}. "
            "Only safetensors files and plain tensor state dicts (torch.load weights_only=True) are accepted."
        ) from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path} does not hold a state dict (found {type(obj).__name__})")
    return dict(obj)


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < (1 << 28) and head[8:9] == b"{"


def safetensors_metadata(path: PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when absent or not safetensors)."""
    path = Path(path)
    if not _is_safetensors(path):
        return {}
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return dict(header.get("__metadata__") or {})


def normalize_state_dict(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Undo common wrappers: ``{"model": sd}`` / ``{"state_dict": sd}`` and DDP's ``module.`` prefix."""
    sd: Mapping[str, Any] = obj
    for key in ("model", "state_dict", "model_state_dict", "net"):
        inner = sd.get(key) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            sd = inner
            break
    out = {}
    for k, v in sd.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, Any], *, source: str = "checkpoint") -> None:
    """Load with strict key and shape matching; a ``ValueError`` lists what is missing, unexpected or misshaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    not_tensors = [k for k in own if k in state_dict and not isinstance(state_dict[k], torch.Tensor)]
    if missing or unexpected or shapes or not_tensors:

        def fmt(title: str, items: list) -> str:
            if not items:
                return ""
            more = f" ... (+{len(items) - 12} more)" if len(items) > 12 else ""
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:12]) + more

        raise ValueError(
            f"{source} does not match {type(model).__name__}:"
            + fmt("missing keys", missing)
            + fmt("unexpected keys", unexpected)
            + fmt("shape mismatches", shapes)
            + fmt("non-tensor values", not_tensors)
        )
    with torch.no_grad():
        model.load_state_dict(dict(state_dict), strict=True)


def resolve_hf_repo(
    repo_id: str, *, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None
) -> tuple[Path, Path]:
    """Fetch ``config.json`` and ``model.safetensors`` of a repository in our own format."""
    cfg = download_file(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir, model_name=HF_PREFIX + repo_id)
    weights = download_file(repo_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir, model_name=HF_PREFIX + repo_id)
    return cfg, weights


LoadFile = Callable[[str], dict]
