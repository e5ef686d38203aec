"""Model registry, model sources and weight files.

The registry maps a short model name (``"cotracker3-offline"``) to a :class:`ModelEntry`: which tracker class runs
it (an import string, resolved only when the model is loaded), the network's architecture config, the tracker's
settings, where each weight file comes from, the converter that turns an official checkpoint into our layout, and
the license. Entries live in :mod:`trackers.zoo` as plain data, so listing models imports no network code.

Where a string points is decided in exactly one place, :func:`parse_source`:

* ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a Hugging Face repository in our own format
  (``config.json`` + ``model.safetensors``, written by ``save_pretrained``);
* a string that looks like a path (contains a separator, starts with ``.`` or ``~``, or ends in a weight-file
  suffix) or names an existing folder/file that is not also a registry name: that folder or file;
* anything else: a registry name (unknown names raise a ``ValueError`` with close matches). A bare registry name
  always means the registry entry, even if a folder of that name exists: write ``./name`` for the folder.

Weight files come from the Hub, a plain URL, the package itself (small models shipped with ``trackers``), or, for
releases that cannot be downloaded automatically, a page where the user downloads them (``manual``); the error
then says which file to fetch and how to pass it. Safetensors are read natively; ``.pth``/``.bin``/``.pt`` pickles
only through ``torch.load(weights_only=True)``, which refuses arbitrary objects. A corrupt or truncated file gives
one ``ValueError`` naming the file.
"""
from __future__ import annotations

import difflib
import importlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from trackers.errors import InputError

__all__ = [
    "WeightFile",
    "ModelEntry",
    "Source",
    "WeightsNotAvailableError",
    "register_model",
    "list_models",
    "get_entry",
    "parse_source",
    "fetch_file",
    "hub_file",
    "url_file",
    "package_file",
    "manual_file",
    "unreleased_file",
    "read_config_doc",
    "load_checkpoint_file",
    "safetensors_metadata",
    "normalize_state_dict",
    "load_state_dict_strict",
    "import_string",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "HF_PREFIX",
]

PathLike = Union[str, os.PathLike]
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_PREFIX = "hf-hub:"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
LoadFile = Callable[[str], dict]


# ----------------------------------------------------------------------------------------------- entries

@dataclass(frozen=True)
class WeightFile:
    """Where one weight file comes from: exactly one of ``repo_id`` (Hugging Face Hub), ``url`` (plain
    download), ``package`` (a file inside an installed Python package), ``manual`` (a web page where the user
    downloads ``filename`` and passes it with ``checkpoint=``) or ``unreleased`` (no weights exist anywhere yet; the
    text says how to train or load your own). Build them with :func:`hub_file`, :func:`url_file`,
    :func:`package_file`, :func:`manual_file` or :func:`unreleased_file`."""

    filename: str
    repo_id: Optional[str] = None
    url: Optional[str] = None
    package: Optional[str] = None
    manual: Optional[str] = None
    unreleased: Optional[str] = None
    revision: Optional[str] = None

    def __post_init__(self) -> None:
        n = sum(v is not None for v in (self.repo_id, self.url, self.package, self.manual, self.unreleased))
        if n != 1:
            raise InputError(f"WeightFile {self.filename!r} needs exactly one of repo_id, url, package, manual, "
                             "unreleased")

    @property
    def kind(self) -> str:
        """``"hub"``, ``"url"``, ``"package"``, ``"manual"`` or ``"unreleased"``."""
        for kind, value in (("hub", self.repo_id), ("url", self.url), ("package", self.package),
                            ("manual", self.manual)):
            if value is not None:
                return kind
        return "unreleased"

    def describe(self) -> str:
        """Where the file comes from, in one short phrase (for ``trackers list``)."""
        if self.kind == "hub":
            return f"hf.co/{self.repo_id}/{self.filename}"
        if self.kind == "url":
            return self.url
        if self.kind == "package":
            return f"shipped in {self.package} ({self.filename})"
        if self.kind == "unreleased":
            return "no released weights"
        return f"manual download of {self.filename} from {self.manual}"


def hub_file(repo_id: str, filename: str, revision: Optional[str] = None) -> WeightFile:
    """A file in a Hugging Face Hub repository."""
    return WeightFile(filename=filename, repo_id=repo_id, revision=revision)


def url_file(url: str, filename: Optional[str] = None) -> WeightFile:
    """A file downloaded from ``url`` into the trackers cache."""
    return WeightFile(filename=filename or url.rsplit("/", 1)[-1], url=url)


def package_file(package: str, filename: str) -> WeightFile:
    """A file shipped inside an installed package (no network)."""
    return WeightFile(filename=filename, package=package)


def manual_file(page: str, filename: str) -> WeightFile:
    """A file the user downloads from ``page`` and passes with ``checkpoint=``."""
    return WeightFile(filename=filename, manual=page)


def unreleased_file(how: str, filename: str = WEIGHTS_NAME) -> WeightFile:
    """No weights exist anywhere yet; ``how`` tells the user how to train or load their own."""
    return WeightFile(filename=filename, unreleased=how)


@dataclass(frozen=True)
class ModelEntry:
    """A named, loadable model.

    Attributes:
        name: registry name, e.g. ``"cotracker3-offline"``.
        tracker: ``"module:Class"`` of the :class:`trackers.base.Tracker` subclass that runs it.
        config: keyword arguments of that tracker's network config dataclass (architecture only).
        settings: keyword arguments of the tracker's settings dataclass (pipeline choices such as crop factors or
            refinement iterations) that differ from its defaults.
        files: role -> :class:`WeightFile`; ``"weights"`` is the main checkpoint, other roles (e.g.
            ``"backbone"``) are fetched lazily by the converter.
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
    settings: Mapping[str, Any] = field(default_factory=dict)
    converter: Optional[str] = None
    license: str = "unknown"
    paper: str = ""
    description: str = ""
    tags: tuple = field(default_factory=tuple)

    @property
    def tracker_name(self) -> str:
        return self.tracker.rsplit(":", 1)[-1]

    def tracker_class(self) -> type:
        """The tracker class, imported from :attr:`tracker`."""
        return import_string(self.tracker)

    @property
    def weights_source(self) -> str:
        return self.files["weights"].describe()


class WeightsNotAvailableError(FileNotFoundError):
    """Weights could not be found locally and could not be downloaded (offline, missing, or manual download)."""


_REGISTRY: dict[str, ModelEntry] = {}
_ZOO_LOADED = False


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an entry to the registry (the name must be new)."""
    if entry.name in _REGISTRY:
        raise InputError(f"model {entry.name!r} is already registered")
    if "weights" not in entry.files:
        raise InputError(f"model {entry.name!r} must declare a 'weights' file")
    if ":" not in entry.tracker:
        raise InputError(f"model {entry.name!r}: tracker must be 'module:Class', got {entry.tracker!r}")
    _REGISTRY[entry.name] = entry
    return entry


def _ensure_zoo() -> None:
    # The zoo registers its entries when imported; registering is data only, so this stays cheap. The one
    # sanctioned upward reach of the registry is through the entries' import strings, at load time.
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
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise InputError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}. "
            "A local checkpoint folder/file or 'hf-hub:org/repo' is also accepted."
        ) from None


def import_string(path: str) -> Any:
    """Import ``"package.module:attr"``."""
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"cannot import {path!r}: {err}") from err


# ----------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class Source:
    """What a ``name_or_path`` string points at (see :func:`parse_source`).

    ``kind`` is ``"registry"`` (``value`` = model name), ``"hub"`` (``value`` = repo id, ``revision`` optional),
    ``"dir"`` or ``"file"`` (``value`` = the path).
    """

    kind: str
    value: str
    revision: Optional[str] = None

    @property
    def path(self) -> Path:
        return Path(self.value)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith((".", "~")) or s.lower().endswith(WEIGHT_SUFFIXES)


def parse_source(name_or_path: Any) -> Source:
    """Classify ``name_or_path``: registry name, ``hf-hub:org/repo[@rev]``, local folder or local file.

    Raises:
        ValueError: an empty or non-string value, a malformed Hub id, or an unknown name (with suggestions).
        FileNotFoundError: something that looks like a path but does not exist.
    """
    if isinstance(name_or_path, Source):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"model must be a registry name, 'hf-hub:org/repo' or a path; got "
                         f"{type(name_or_path).__name__} {name_or_path!r}")
    s = os.fspath(name_or_path)
    if not s.strip():
        raise InputError("model name is empty; see trackers.list_models()")
    if s.startswith(HF_PREFIX):
        repo, _, rev = s[len(HF_PREFIX):].partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InputError(f"{s!r} is not a Hub id; expected 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
        return Source("hub", repo, rev or None)
    _ensure_zoo()
    if not isinstance(name_or_path, os.PathLike) and not _looks_like_path(s) and s in _REGISTRY:
        return Source("registry", s)
    p = Path(s).expanduser()
    if p.is_dir():
        return Source("dir", str(p))
    if p.is_file():
        return Source("file", str(p))
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(s):
        raise FileNotFoundError(f"no such file or folder: {s}")
    get_entry(s)  # raises the unknown-name error with suggestions
    return Source("registry", s)


# ----------------------------------------------------------------------------------------------- fetching

_HUB_REACHABLE: Optional[bool] = None


def _env_offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRACKERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (checked once per process).

    Without this, a machine with no network waits through huggingface_hub's retries (~20 s) before failing;
    with it, an unreachable Hub is treated as ``HF_HUB_OFFLINE=1`` (cached files still load).
    """
    global _HUB_REACHABLE
    if _env_offline():
        return False
    if _HUB_REACHABLE is None:
        try:
            from urllib.parse import urlparse

            from huggingface_hub import constants

            host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
            with socket.create_connection((host, 443), timeout=timeout):
                _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def _not_available(file: WeightFile, role: str, model_name: Optional[str], reason: str) -> WeightsNotAvailableError:
    who = f"model {model_name!r}: " if model_name else ""
    local = "checkpoint=PATH (CLI: --checkpoint PATH)" if role == "weights" else f"checkpoints={{{role!r}: PATH}}"
    where = f"Hugging Face repo {file.repo_id!r}" if file.kind == "hub" else file.describe()
    return WeightsNotAvailableError(
        f"{who}{role} file {file.filename!r} from {where} is {reason}. Download it once with network access, or "
        f"pass a local file with {local}. To try the pipeline without weights, build a randomly initialised model "
        f"with Tracker.from_config({model_name!r})."
    )


def fetch_file(
    file: WeightFile,
    *,
    role: str = "weights",
    model_name: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
) -> Path:
    """Return a local path for ``file``: from the package, the Hugging Face cache (downloading when possible),
    or the trackers URL cache.

    Raises:
        WeightsNotAvailableError: offline and not cached, missing at the source, or a manual download; the
            message names the model, the file and how to pass a local copy instead.
    """
    if file.kind == "package":
        from importlib import resources

        path = Path(str(resources.files(file.package).joinpath(file.filename)))
        if not path.is_file():
            raise _not_available(file, role, model_name, "missing from the installed package (a broken install?)")
        return path
    if file.kind == "unreleased":
        who = f"model {model_name!r}" if model_name else "this model"
        raise WeightsNotAvailableError(f"no released weights exist for {who}. {file.unreleased}")
    if file.kind == "manual":
        who = f"model {model_name!r}: " if model_name else ""
        flag = "checkpoint=PATH (CLI: --checkpoint PATH)" if role == "weights" else f"checkpoints={{{role!r}: PATH}}"
        raise WeightsNotAvailableError(
            f"{who}the {role} file {file.filename!r} is not on any hub that can be downloaded from automatically. "
            f"Download it from {file.manual} and pass it with {flag}."
        )
    if file.kind == "url":
        return _fetch_url(file, role, model_name, cache_dir)
    return _fetch_hub(file, role=role, model_name=model_name, revision=revision, cache_dir=cache_dir)


def _fetch_hub(file: WeightFile, *, role: str, model_name: Optional[str], revision: Optional[str],
               cache_dir: Optional[PathLike]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = not hub_reachable()
    try:
        return Path(hf_hub_download(
            file.repo_id, file.filename, revision=revision or file.revision,
            cache_dir=None if cache_dir is None else str(cache_dir), local_files_only=offline,
        ))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        reason = ("not in the local Hugging Face cache and the Hub cannot be reached (offline)"
                  if offline or isinstance(err, LocalEntryNotFoundError)
                  else f"not downloadable ({type(err).__name__})")
        raise _not_available(file, role, model_name, reason) from None


def _fetch_url(file: WeightFile, role: str, model_name: Optional[str], cache_dir: Optional[PathLike]) -> Path:
    root = Path(cache_dir) if cache_dir is not None else Path(
        os.environ.get("TRACKERS_CACHE", Path.home() / ".cache" / "trackers"))
    target = root / "url" / file.filename
    if target.is_file():
        return target
    if _env_offline():
        raise _not_available(file, role, model_name, "not in the trackers cache and offline mode is on")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(file.url, str(target), progress=True)
    except Exception as err:  # urllib raises many types (URLError, HTTPError, timeouts)
        raise _not_available(file, role, model_name, f"not downloadable ({type(err).__name__})") from None
    return target


# ----------------------------------------------------------------------------------------------- files

def read_config_doc(path: PathLike) -> dict:
    """Read a ``config.json`` written by ``save_pretrained``; one ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); it was not written by save_pretrained()") from None
    return _check_config_doc(doc, str(path))


def _check_config_doc(doc: Any, where: str) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("tracker"), str) or not isinstance(doc.get("config"), dict):
        raise InputError(f"{where} is not a trackers config (needs a 'tracker' name and a 'config' object)")
    if not isinstance(doc.get("settings", {}), dict):
        raise InputError(f"{where}: 'settings' must be an object")
    return doc


def config_doc_from_safetensors(path: PathLike) -> Optional[dict]:
    """The trackers config stored in a safetensors file's metadata, or ``None`` when it has none."""
    meta = safetensors_metadata(path)
    if "trackers_config" not in meta:
        return None
    try:
        doc = json.loads(meta["trackers_config"])
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: the trackers config in its metadata is not valid JSON ({err})") from None
    return _check_config_doc(doc, f"{path} (metadata)")


def load_checkpoint_file(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint from disk: safetensors natively, pickles only with ``weights_only=True``.

    Files named ``.bin``/``.pth`` that really hold safetensors data (as some releases do) are detected by content.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, or a file that is corrupt, truncated or not a plain state dict (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected a checkpoint file, got a folder: {path}")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as err:  # SafetensorError, OSError, ... for truncated or corrupt files
            raise InputError(f"could not read safetensors file {path}: it is truncated or corrupt "
                             f"({_first_line(err)})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or non-weights pickles
        raise InputError(
            f"could not read checkpoint {path}: {err.__class__.__name__}: {_first_line(err)}. "
            "Only safetensors files and plain tensor state dicts (torch.load weights_only=True) are accepted."
        ) from None
    if not isinstance(obj, Mapping):
        raise InputError(f"checkpoint {path} does not hold a state dict (found {type(obj).__name__})")
    return dict(obj)


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < (1 << 28) and head[8:9] == b"{"


def safetensors_metadata(path: PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when absent or not safetensors).

    Raises:
        ValueError: a safetensors header that is truncated or not valid JSON (the message names the file).
    """
    path = Path(path)
    if not _is_safetensors(path):
        return {}
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
    try:
        if len(raw) < n:
            raise InputError(f"header needs {n} bytes, file has {len(raw)}")
        header = json.loads(raw)
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise InputError("__metadata__ is not an object")
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise InputError(f"could not read safetensors file {path}: its header is truncated or corrupt ({err})") from None
    return dict(meta)


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

        raise InputError(
            f"{source} does not match {type(model).__name__}:"
            + fmt("missing keys", missing)
            + fmt("unexpected keys", unexpected)
            + fmt("shape mismatches", shapes)
            + fmt("non-tensor values", not_tensors)
        )
    with torch.no_grad():
        model.load_state_dict(dict(state_dict), strict=True)
