"""Base class of every inference wrapper (``PointTracker``, ``LoRATracker``, ...).

A tracker wraps one plain ``nn.Module`` (``tracker.model``) and holds no per-video state: whole clips go through
``track()``, live video through session objects returned by ``stream()``, so one model can serve many streams.
This module provides what every tracker shares: construction from a registry name, a Hub repository or a local
folder/file (:meth:`Tracker.from_pretrained`), random initialisation (:meth:`Tracker.from_config`), saving
(:meth:`Tracker.save_pretrained`) and device/dtype moves.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, TypeVar, Union

import torch
from torch import nn

from trackers import hub

__all__ = ["Tracker", "load_tracker", "config_to_dict"]

T = TypeVar("T", bound="Tracker")
PathLike = Union[str, os.PathLike]
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def config_to_dict(config: Any) -> dict:
    """A dataclass config as JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _config_from_dict(config_class: type, data: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields: {', '.join(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(config_class):
        if f.name in data:
            v = data[f.name]
            # JSON has no tuples; restore them where the field default is one.
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[f.name] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    return config_class(**kwargs)


def _resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    }
    try:
        return aliases[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16") from None


class Tracker:
    """Shared loading/saving machinery; subclasses set :attr:`config_class` and :attr:`model_class`."""

    config_class: ClassVar[type]
    model_class: ClassVar[type]

    def __init__(self, model: nn.Module):
        if not isinstance(model, self.model_class):
            raise TypeError(f"{type(self).__name__} needs a {self.model_class.__name__}, got {type(model).__name__}")
        self.model = model.eval()
        self.name: Optional[str] = None

    # ------------------------------------------------------------------------------------------ properties
    @property
    def config(self):
        """The model's configuration dataclass."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the network (float32, bfloat16 or float16)."""
        return next(self.model.parameters()).dtype

    def to(self: T, device: Union[None, str, torch.device] = None, dtype: Union[None, str, torch.dtype] = None) -> T:
        """Move the network to ``device`` and/or cast it to ``dtype`` (in place; returns ``self``)."""
        dtype = _resolve_dtype(dtype)
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        if device is not None:
            self.model.to(device=device)
        if dtype is not None:
            self._cast(dtype)
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
    def from_config(
        cls: type[T],
        config: Any = None,
        *,
        device: Union[None, str, torch.device] = None,
        dtype: Union[None, str, torch.dtype] = None,
        seed: Optional[int] = None,
        **overrides: Any,
    ) -> T:
        """A tracker with randomly initialised weights (for training, tests and demos).

        ``config`` is a config dataclass, a dict of its fields, a registry name (its architecture), or ``None``
        for the defaults; ``overrides`` replace single fields.
        """
        if isinstance(config, str):
            entry = hub.get_entry(config)
            _check_tracker(cls, entry.tracker_name, config)
            config = dict(entry.config)
        if config is None:
            config = cls.config_class()
        elif isinstance(config, Mapping):
            config = _config_from_dict(cls.config_class, config)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        if seed is not None:
            torch.manual_seed(seed)
        tracker = cls(cls.model_class(config))
        return tracker.to(device=device, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls: type[T],
        name_or_path: PathLike,
        *,
        checkpoint: Optional[PathLike] = None,
        device: Union[None, str, torch.device] = None,
        dtype: Union[None, str, torch.dtype] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
        checkpoints: Optional[Mapping[str, PathLike]] = None,
        config_overrides: Optional[Mapping[str, Any]] = None,
    ) -> T:
        """Load a tracker with weights.

        Args:
            name_or_path: a registry name (see :func:`trackers.list_models`), ``"hf-hub:org/repo"`` (a repository
                written by :meth:`save_pretrained`), a local folder written by :meth:`save_pretrained`, or a local
                ``.safetensors`` file written by it.
            checkpoint: a local weights file that replaces the registry's main file: how to load an official
                checkpoint you downloaded yourself (e.g. ``scaled_offline.pth``). Converted like the Hub file.
            device: where to put the network (default: CPU).
            dtype: compute dtype (``torch.float32``, ``torch.bfloat16``, ``torch.float16`` or their short names).
            revision: Hub revision (branch, tag or commit) for Hub downloads.
            cache_dir: Hugging Face cache folder (default: the standard cache).
            checkpoints: local files for the entry's other roles, e.g. ``{"backbone": path}``.
            config_overrides: config fields to replace before the network is built and the converter runs
                (e.g. LoRAT's ``{"lora_rank": 64}`` for the un-merged fine-tuning form).

        Raises:
            ValueError: unknown name (with suggestions), or weights that do not fit the model.
            FileNotFoundError: a local path that does not exist.
            trackers.hub.WeightsNotAvailableError: weights neither cached nor downloadable.
        """
        if cls is Tracker:
            extra = {"config_overrides": config_overrides} if config_overrides else {}
            return load_tracker(
                name_or_path, checkpoint=checkpoint, device=device, dtype=dtype, revision=revision,
                cache_dir=cache_dir, checkpoints=checkpoints, **extra,
            )
        overrides = {k: Path(v) for k, v in dict(checkpoints or {}).items() if v is not None}
        if checkpoint is not None:
            overrides["weights"] = Path(checkpoint)
        for role, p in overrides.items():
            if not p.exists():
                raise FileNotFoundError(f"{role} checkpoint not found: {p}")

        spec = _resolve_source(name_or_path, revision=revision, cache_dir=cache_dir)
        _check_tracker(cls, spec["tracker"], str(name_or_path))
        config = _config_from_dict(cls.config_class, spec["config"])
        if config_overrides:
            config = dataclasses.replace(config, **dict(config_overrides))
        entry: Optional[hub.ModelEntry] = spec.get("entry")

        def fetch(role: str) -> Path:
            if role in overrides:
                return overrides[role]
            if entry is not None:
                if role not in entry.files:
                    raise ValueError(f"model {entry.name!r} has no {role!r} file")
                f = entry.files[role]
                return hub.download_file(
                    f.repo_id, f.filename, revision=revision or f.revision, cache_dir=cache_dir, model_name=entry.name,
                    role=role,
                )
            if role == "weights":
                return spec["weights"]
            raise ValueError(f"{name_or_path} has no {role!r} file; pass checkpoints={{{role!r}: PATH}}")

        weights_path = fetch("weights")
        state_dict = hub.normalize_state_dict(hub.load_checkpoint_file(weights_path))
        if entry is not None and entry.converter:
            converter = hub.import_string(entry.converter)

            def load_file(role: str) -> dict:
                return hub.normalize_state_dict(hub.load_checkpoint_file(fetch(role)))

            state_dict = converter(state_dict, config, load_file)
        model = cls.model_class(config)
        hub.load_state_dict_strict(model, state_dict, source=f"checkpoint {weights_path}")
        tracker = cls(model)
        tracker.name = entry.name if entry is not None else spec.get("name")
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
        }
        with open(directory / hub.CONFIG_NAME, "w") as fh:
            json.dump(doc, fh, indent=2)
        state = {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
            for k, v in self.model.state_dict().items()
        }
        save_file(state, str(directory / hub.WEIGHTS_NAME), metadata={"trackers_config": json.dumps(doc)})
        return directory


def _check_tracker(cls: type, tracker_name: str, source: str) -> None:
    if cls is not Tracker and tracker_name != cls.__name__:
        raise ValueError(
            f"{source!s} is a {tracker_name} model, not a {cls.__name__} one; "
            f"load it with trackers.{tracker_name}.from_pretrained(...)"
        )


def _read_config_doc(path: Path) -> dict:
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or "tracker" not in doc or "config" not in doc:
        raise ValueError(f"{path} is not a trackers config (needs 'tracker' and 'config')")
    return doc


def _resolve_source(name_or_path: PathLike, *, revision, cache_dir) -> dict:
    """Work out tracker class, config and weights for any accepted ``name_or_path``."""
    source = os.fspath(name_or_path)
    if source.startswith(hub.HF_PREFIX):
        repo_id = source[len(hub.HF_PREFIX):]
        cfg, weights = hub.resolve_hf_repo(repo_id, revision=revision, cache_dir=cache_dir)
        doc = _read_config_doc(cfg)
        return {**doc, "weights": weights}
    path = Path(source)
    if path.is_dir():
        cfg = path / hub.CONFIG_NAME
        if not cfg.exists():
            raise FileNotFoundError(f"{path} has no {hub.CONFIG_NAME}; it was not written by save_pretrained()")
        return {**_read_config_doc(cfg), "weights": path / hub.WEIGHTS_NAME}
    if path.is_file():
        meta = hub.safetensors_metadata(path)
        if "trackers_config" in meta:
            return {**json.loads(meta["trackers_config"]), "weights": path}
        if (path.parent / hub.CONFIG_NAME).exists():
            return {**_read_config_doc(path.parent / hub.CONFIG_NAME), "weights": path}
        raise ValueError(
            f"{path} carries no trackers config. To load an official checkpoint, name the model and pass the "
            f"file: from_pretrained('<model name>', checkpoint={str(path)!r}); see trackers.list_models()."
        )
    if source.endswith(_WEIGHT_SUFFIXES) or os.sep in source or source.startswith("."):
        raise FileNotFoundError(f"no such file or folder: {source}")
    entry = hub.get_entry(source)
    return {"tracker": entry.tracker_name, "config": dict(entry.config), "entry": entry, "name": entry.name}


def _tracker_class(tracker_name: str) -> type:
    import trackers

    cls = getattr(trackers, tracker_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Tracker)):
        raise ValueError(f"unknown tracker class {tracker_name!r}")
    return cls


def load_tracker(name_or_path: PathLike, *, pretrained: bool = True, **kwargs: Any) -> Tracker:
    """Load any tracker by registry name, Hub repo or local path, picking the right tracker class.

    With ``pretrained=False`` the registry entry's architecture is built with random weights
    (``device``/``dtype`` are honoured, other keyword arguments ignored).
    """
    source = os.fspath(name_or_path)
    if source.startswith(hub.HF_PREFIX) or Path(source).exists():
        if not pretrained:
            raise ValueError("pretrained=False needs a registry name")
        if Path(source).exists():
            spec = _resolve_source(source, revision=None, cache_dir=None)
        else:
            spec = _resolve_source(source, revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"))
        return _tracker_class(spec["tracker"]).from_pretrained(source, **kwargs)
    entry = hub.get_entry(source)
    cls = _tracker_class(entry.tracker_name)
    if not pretrained:
        tracker = cls.from_config(dict(entry.config), device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        tracker.name = entry.name
        return tracker
    return cls.from_pretrained(source, **kwargs)
