"""What every tracker shares: loading, saving, settings, device moves, and the streaming-session contract.

A tracker wraps one plain ``nn.Module`` (``tracker.model``, built from a config dataclass that holds the
architecture only) and a frozen *settings* dataclass (``tracker.settings``: how the pipeline around the network
runs, e.g. refinement iterations or crop factors). It holds no per-video state: whole clips go through
``track()``, live video through session objects returned by ``stream()``, so one model serves many streams.

Loading (one door for every tracker)::

    tracker = SomeTracker.from_pretrained(name_or_path, *, checkpoint=None, device=None, dtype=None,
                                          revision=None, cache_dir=None, **settings)

``name_or_path`` is classified by :func:`trackers.registry.parse_source`; ``**settings`` override fields of the
tracker's settings dataclass. ``Tracker.from_pretrained`` (on the base class) picks the right tracker class.
:meth:`Tracker.from_config` builds random weights (to try the pipeline offline, for tests and for training), and
:meth:`Tracker.save_pretrained` writes ``config.json`` (tracker, config, settings) and ``model.safetensors`` (which
carries the same document in its metadata, so the file alone loads back).

Streaming sessions (:class:`Stream`) follow one rule on every tracker:

* ``session.step(frames)`` takes one frame or several and returns a typed result (``PointTracks`` /
  ``BoxTracks``) for **the frames whose estimates this call produced or revised**; ``result.start_frame`` is the
  index of its first frame. For box trackers these are exactly the frames passed in. An online point tracker works
  in overlapping windows: a call may return nothing new (the window is not full yet), or frames it received
  earlier whose estimates the new window refined.
* ``session.results()`` returns everything so far (a copy); ``session.close()`` finishes pending work and returns
  the final result for the whole stream. ``session.frame_index`` counts the frames received.
* Sessions are context managers (``with tracker.stream(...) as s:``); a closed session raises ``RuntimeError``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, TypeVar, Union

import torch
from torch import nn

from trackers import ops, registry
from trackers.errors import InputError
from trackers.precision import auto_dtype

__all__ = ["Tracker", "Stream", "Settings", "load_tracker", "tracker_class_of", "config_to_dict"]

T = TypeVar("T", bound="Tracker")
PathLike = Union[str, os.PathLike]
Device = Union[None, str, torch.device]
DType = Union[None, str, torch.dtype]


@dataclass(frozen=True)
class Settings:
    """Base of every tracker's settings dataclass (no fields): pipeline choices, not architecture."""


def config_to_dict(config: Any) -> dict:
    """A dataclass config as JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _from_dict(cls: type, data: Mapping[str, Any], what: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputError(f"{what} must be a mapping of {cls.__name__} fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[f.name] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    try:
        return cls(**kwargs)
    except TypeError as err:  # a wrong type that the dataclass' own checks did not catch
        raise InputError(f"invalid {cls.__name__}: {err}") from None


def _resolve_dtype(dtype: DType, device: Device = None) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() == "auto":
        return auto_dtype(device).dtype
    aliases = {
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    }
    try:
        return aliases[str(dtype).lower()]
    except KeyError:
        raise InputError(f"unsupported dtype {dtype!r}; use float32, bfloat16, float16 or 'auto'") from None


@dataclass
class _Spec:
    """Everything :meth:`Tracker.from_pretrained` learned about a source before touching weights."""

    tracker_class: type
    config: Dict[str, Any]
    settings: Dict[str, Any]
    name: Optional[str]
    entry: Optional[registry.ModelEntry] = None
    weights: Optional[Path] = None


class Tracker:
    """Shared loading/saving machinery; subclasses set :attr:`config_class`, :attr:`model_class` and
    :attr:`settings_class`."""

    config_class: ClassVar[type]
    model_class: ClassVar[type]
    settings_class: ClassVar[type] = Settings
    #: What the tracker follows: ``"points"`` or ``"boxes"`` (lets tools choose inputs without sniffing).
    task: ClassVar[str] = ""

    def __init__(self, model: nn.Module, settings: Optional[Any] = None):
        if not isinstance(model, self.model_class):
            raise TypeError(f"{type(self).__name__} needs a {self.model_class.__name__}, got {type(model).__name__}")
        self.model = model.eval()
        self.settings = self.settings_class() if settings is None else settings
        self.name: Optional[str] = None

    # ------------------------------------------------------------------------------------------ properties
    @property
    def config(self):
        """The network's architecture configuration dataclass."""
        return self.model.config

    @property
    def settings(self):
        """The tracker's settings (frozen dataclass); assign a new one, or use :meth:`with_settings`."""
        return self._settings

    @settings.setter
    def settings(self, value: Any) -> None:
        if isinstance(value, Mapping):
            value = _from_dict(self.settings_class, value, "settings")
        if not isinstance(value, self.settings_class):
            raise TypeError(f"settings must be a {self.settings_class.__name__}, got {type(value).__name__}")
        self._settings = value

    def with_settings(self: T, **changes: Any) -> T:
        """Replace settings fields in place (validated); returns ``self``."""
        self.settings = _from_dict(self.settings_class, {**dataclasses.asdict(self.settings), **changes}, "settings")
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the network (float32, bfloat16 or float16)."""
        return next(self.model.parameters()).dtype

    def to(self: T, device: Device = None, dtype: DType = None) -> T:
        """Move the network to ``device`` and/or cast it to ``dtype`` (in place; returns ``self``).

        ``dtype="auto"`` picks bf16 where this device runs it clearly faster than fp32, else fp32 (see
        :mod:`trackers.precision`); the default stays fp32, which matches the official outputs exactly.
        """
        dtype = _resolve_dtype(dtype, device if device is not None else self.device)
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(f"dtype must be a floating point type, got {dtype}")
        if device is not None:
            self.model.to(device=device)
        if dtype is not None:
            self._cast(dtype)
        # the oneDNN layouts of the old weights are stale now: free them at once (the next call re-packs)
        ops.release_packed(self.model)
        return self

    def _cast(self, dtype: torch.dtype) -> None:
        """Set the network's compute dtype; trackers with a mixed-precision layout override this."""
        self.model.to(dtype=dtype)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        name = f"{self.name!r}, " if self.name else ""
        return f"{type(self).__name__}({name}params={n / 1e6:.1f}M, device={self.device}, dtype={self.dtype})"

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def _build(cls, config: Mapping[str, Any], settings: Mapping[str, Any], overrides: Mapping[str, Any]):
        """Config and settings dataclasses from stored dicts; fields that moved from the config to the settings
        in an earlier release (e.g. ``iters``) are moved over, so old folders keep loading."""
        config = dict(config)
        settings = dict(settings)
        setting_names = {f.name for f in dataclasses.fields(cls.settings_class)}
        config_names = {f.name for f in dataclasses.fields(cls.config_class)}
        for k in list(config):
            if k not in config_names and k in setting_names:
                settings.setdefault(k, config.pop(k))
        config.update(overrides)
        return (_from_dict(cls.config_class, config, f"{cls.__name__} config"),
                _from_dict(cls.settings_class, settings, f"{cls.__name__} settings"))

    @classmethod
    def from_config(
        cls: type[T],
        config: Any = None,
        *,
        device: Device = None,
        dtype: DType = None,
        settings: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
        **overrides: Any,
    ) -> T:
        """A tracker with randomly initialised weights (to try the pipeline offline, for training and tests).

        Args:
            config: a config dataclass, a dict of its fields, a registry name (its architecture and settings), or
                ``None`` for the defaults.
            settings: settings fields to override.
            seed: seed for the initialisation only (the global RNG state is left as it was).
            overrides: config fields to replace.
        """
        stored_settings: Dict[str, Any] = {}
        name = None
        if isinstance(config, str):
            entry = registry.get_entry(config)
            if cls is Tracker:
                cls = entry.tracker_class()
            _check_tracker(cls, entry.tracker_class(), config)
            name, stored_settings, config = entry.name, dict(entry.settings), dict(entry.config)
        elif cls is Tracker:
            raise InputError("Tracker.from_config needs a registry name; or call it on a tracker class")
        if config is None:
            config = {}
        if isinstance(config, cls.config_class):
            config = dataclasses.asdict(config)
        cfg, sts = cls._build(config, {**stored_settings, **dict(settings or {})}, overrides)
        if seed is None:
            model = cls.model_class(cfg)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls.model_class(cfg)
        tracker = cls(model, sts)
        tracker.name = name
        return tracker.to(device=device, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls: type[T],
        name_or_path: PathLike,
        *,
        checkpoint: Optional[PathLike] = None,
        device: Device = None,
        dtype: DType = None,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
        checkpoints: Optional[Mapping[str, PathLike]] = None,
        **settings: Any,
    ) -> T:
        """Load a tracker with weights.

        Args:
            name_or_path: a registry name (see :func:`trackers.list_models`), ``"hf-hub:org/repo[@revision]"`` (a
                repository written by :meth:`save_pretrained`), a local folder written by :meth:`save_pretrained`,
                or a ``.safetensors`` file written by it.
            checkpoint: a local weights file that replaces the registry's main file: how to load an official
                checkpoint you downloaded yourself (e.g. ``scaled_offline.pth``). Converted like the Hub file.
            device: where to put the network (default: CPU).
            dtype: compute dtype (``torch.float32``, ``torch.bfloat16``, ``torch.float16``, their short names, or
                ``"auto"``: bf16 where this device runs it clearly faster, else fp32; see :mod:`trackers.precision`).
            revision: Hub revision (branch, tag or commit).
            cache_dir: download cache folder (default: the standard Hugging Face cache).
            checkpoints: local files for the entry's other roles, e.g. ``{"backbone": path}``.
            settings: fields of the tracker's settings to override (e.g. ``iters=4``).

        Raises:
            ValueError: unknown name (with suggestions), a bad setting, or weights that do not fit the model.
            FileNotFoundError: a local path that does not exist.
            trackers.WeightsNotAvailableError: weights neither cached nor downloadable; the message says how to
                pass a local file or build random weights with :meth:`from_config`.
        """
        config_overrides = settings.pop("_config_overrides", None) or {}
        spec = _resolve(registry.parse_source(name_or_path), revision=revision, cache_dir=cache_dir, hint=cls)
        target = spec.tracker_class if cls is Tracker else cls
        _check_tracker(target, spec.tracker_class, str(name_or_path))
        if target is not cls:
            return target.from_pretrained(
                name_or_path, checkpoint=checkpoint, device=device, dtype=dtype, revision=revision,
                cache_dir=cache_dir, checkpoints=checkpoints, **settings,
            )
        config, sts = cls._build(spec.config, {**spec.settings, **settings}, config_overrides)
        files = _LocalFiles(spec, checkpoint, checkpoints, revision, cache_dir)
        weights_path = files.path("weights")
        state_dict = registry.normalize_state_dict(registry.load_checkpoint_file(weights_path))
        if spec.entry is not None and spec.entry.converter:
            converter = registry.import_string(spec.entry.converter)
            state_dict = converter(state_dict, config, files.load)
        model = cls.model_class(config)
        registry.load_state_dict_strict(model, state_dict, source=f"checkpoint {weights_path}")
        tracker = cls(model, sts)
        tracker.name = spec.name
        return tracker.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, directory: PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (fp32) that :meth:`from_pretrained` reads back."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": "trackers",
            "tracker": type(self).__name__,
            "name": self.name,
            "config": config_to_dict(self.config),
            "settings": config_to_dict(self.settings),
        }
        with open(directory / registry.CONFIG_NAME, "w") as fh:
            json.dump(doc, fh, indent=2)
        state = {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
            for k, v in self.model.state_dict().items()
        }
        save_file(state, str(directory / registry.WEIGHTS_NAME), metadata={"trackers_config": json.dumps(doc)})
        return directory


class _LocalFiles:
    """Local paths of a source's weight files by role: the caller's overrides first, then the registry entry's
    sources (fetched lazily, so a converter only downloads what it needs), then the folder's own file."""

    def __init__(self, spec: _Spec, checkpoint, checkpoints, revision, cache_dir):
        self.spec, self.revision, self.cache_dir = spec, revision, cache_dir
        self.overrides = {k: Path(v) for k, v in dict(checkpoints or {}).items() if v is not None}
        if checkpoint is not None:
            self.overrides["weights"] = Path(checkpoint)
        for role, p in self.overrides.items():
            if not p.is_file():
                raise FileNotFoundError(f"{role} checkpoint not found: {p}")

    def path(self, role: str) -> Path:
        if role in self.overrides:
            return self.overrides[role]
        entry = self.spec.entry
        if entry is not None:
            if role not in entry.files:
                raise InputError(f"model {entry.name!r} has no {role!r} file")
            return registry.fetch_file(entry.files[role], role=role, model_name=entry.name,
                                       revision=self.revision, cache_dir=self.cache_dir)
        if role == "weights" and self.spec.weights is not None:
            return self.spec.weights
        raise InputError(f"{self.spec.name or 'this model'} has no {role!r} file; pass checkpoints={{{role!r}: PATH}}")

    def load(self, role: str) -> dict:
        return registry.normalize_state_dict(registry.load_checkpoint_file(self.path(role)))


def _check_tracker(cls: type, found: type, source: str) -> None:
    if cls is not Tracker and not issubclass(found, cls):
        raise InputError(
            f"{source!s} is a {found.__name__} model, not a {cls.__name__} one; "
            f"load it with trackers.{found.__name__}.from_pretrained(...)"
        )


def _tracker_class_by_name(name: str, where: str, hint: Optional[type]) -> type:
    """Tracker class named in a saved config: the calling class when the name is its own, else the class of a
    registry entry of that name (through the entry's import string; saved files never name modules to import)."""
    if hint is not None and hint is not Tracker and hint.__name__ == name:
        return hint
    for model in registry.list_models():
        entry = registry.get_entry(model)
        if entry.tracker_name == name:
            return entry.tracker_class()
    raise InputError(f"{where} names an unknown tracker class {name!r}")


def _spec_from_doc(doc: dict, weights: Path, where: str, hint: Optional[type]) -> _Spec:
    return _Spec(
        tracker_class=_tracker_class_by_name(doc["tracker"], where, hint), config=dict(doc["config"]),
        settings=dict(doc.get("settings") or {}), name=doc.get("name"), weights=weights,
    )


def _resolve(source: registry.Source, *, revision: Optional[str], cache_dir: Optional[PathLike],
             hint: Optional[type] = None) -> _Spec:
    """Tracker class, config, settings and weights location of a parsed source (no weights are read)."""
    if source.kind == "registry":
        entry = registry.get_entry(source.value)
        return _Spec(entry.tracker_class(), dict(entry.config), dict(entry.settings), entry.name, entry=entry)
    if source.kind == "hub":
        rev = revision or source.revision
        name = registry.HF_PREFIX + source.value
        cfg = registry.fetch_file(registry.hub_file(source.value, registry.CONFIG_NAME), model_name=name,
                                  revision=rev, cache_dir=cache_dir)
        weights = registry.fetch_file(registry.hub_file(source.value, registry.WEIGHTS_NAME), model_name=name,
                                      revision=rev, cache_dir=cache_dir)
        return _spec_from_doc(registry.read_config_doc(cfg), weights, name, hint)
    path = source.path
    if source.kind == "dir":
        cfg = path / registry.CONFIG_NAME
        if not cfg.is_file():
            raise FileNotFoundError(f"{path} has no {registry.CONFIG_NAME}; it was not written by save_pretrained()")
        weights = path / registry.WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {registry.WEIGHTS_NAME}; it was not written by save_pretrained()")
        return _spec_from_doc(registry.read_config_doc(cfg), weights, str(cfg), hint)
    doc = registry.config_doc_from_safetensors(path)
    if doc is not None:
        return _spec_from_doc(doc, path, str(path), hint)
    if (path.parent / registry.CONFIG_NAME).is_file():
        return _spec_from_doc(registry.read_config_doc(path.parent / registry.CONFIG_NAME), path, str(path), hint)
    raise InputError(
        f"{path} carries no trackers config. To load an official checkpoint, name the model and pass the "
        f"file: from_pretrained('<model name>', checkpoint={str(path)!r}); see trackers.list_models()."
    )


def tracker_class_of(name_or_path: PathLike, *, revision: Optional[str] = None,
                     cache_dir: Optional[PathLike] = None) -> type:
    """The tracker class that would load ``name_or_path``, without reading any weights."""
    return _resolve(registry.parse_source(name_or_path), revision=revision, cache_dir=cache_dir).tracker_class


def load_tracker(name_or_path: PathLike, *, pretrained: bool = True, **kwargs: Any) -> Tracker:
    """Load any tracker by registry name, Hub repo or local path, picking the right tracker class.

    With ``pretrained=False`` the registry entry's architecture and settings are built with random weights
    (``device``/``dtype`` are honoured, other keyword arguments ignored).
    """
    if not pretrained:
        source = registry.parse_source(name_or_path)
        if source.kind != "registry":
            raise InputError("pretrained=False needs a registry name")
        return Tracker.from_config(source.value, device=kwargs.get("device"), dtype=kwargs.get("dtype"))
    return Tracker.from_pretrained(name_or_path, **kwargs)


class Stream:
    """Base of streaming sessions (see the module docstring for the contract shared by every tracker).

    Subclasses implement :meth:`_step`, :meth:`results` and optionally :meth:`_finish`.
    """

    def __init__(self) -> None:
        self._closed = False
        self.frame_index = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")

    def step(self, frames: Any):
        """Feed one frame or several; returns the typed result of the frames this call produced or revised."""
        self._check_open()
        return self._step(frames)

    def close(self):
        """Finish pending work, end the session and return the final result for the whole stream."""
        self._check_open()
        self._finish()
        self._closed = True
        return self.results()

    def _step(self, frames: Any):  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        """Pending work run by :meth:`close` (e.g. a last partial window)."""

    def results(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            if exc_type is None:
                self.close()
            else:
                self._closed = True
