"""Training configurations: dataclasses whose defaults are a paper's hyper-parameters, overridable from YAML and CLI.

Every recipe has one config dataclass that extends :class:`TrainConfig` (the engine's settings: optimiser,
schedule, batch, logging, checkpoints). A resolved config comes from three layers, later ones winning:

1. the dataclass defaults (the paper's values),
2. a YAML file (``--config run.yaml``): a mapping of field names; dict fields (e.g. ``model:``) are merged key by key,
3. command-line options generated from the fields (``--lr 2e-4``, ``--no-amp``, ``--model hidden_size=128``).

The resolved config is written as ``config.yaml`` into the run folder, and that file can be passed back with
``--config`` to repeat a run.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

__all__ = [
    "TrainConfig",
    "add_config_arguments",
    "config_from_args",
    "config_to_yaml_dict",
    "load_yaml",
    "resolve_config",
    "save_yaml",
]

C = TypeVar("C", bound="TrainConfig")


@dataclass
class TrainConfig:
    """Settings of the training engine shared by every recipe.

    Attributes:
        output_dir: run folder: ``config.yaml``, ``metrics.csv``, TensorBoard events and ``checkpoint-<step>``.
        max_steps: optimiser steps of the whole run (the cosine schedule spans them).
        batch_size: samples per process and micro-step; the global batch is
            ``batch_size * world_size * grad_accum``.
        grad_accum: micro-steps whose gradients are summed before each optimiser step.
        lr: peak learning rate (reached at the end of the warm-up).
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW ``(beta1, beta2)``.
        eps: AdamW epsilon.
        warmup_steps: linear warm-up from 0 to ``lr``; then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: maximal global gradient norm (0 disables clipping).
        amp: autocast dtype: ``"auto"`` (bfloat16 on a GPU that supports it, off on CPU), ``"bf16"``, ``"fp16"``
            (CUDA only) or ``"off"``.
        seed: seeds model initialisation, data order and every random draw of the run.
        num_workers: data-loading worker processes per training process (0 loads in the training process).
        device: ``"auto"`` (the local GPU when there is one, else CPU), ``"cpu"`` or ``"cuda"``.
        log_every: steps between logged training metrics (averaged over those steps).
        val_every: steps between validations (0: only at the end, when the recipe has a validation set).
        save_every: steps between checkpoints (0: only at the end).
        keep_checkpoints: keep only the newest N checkpoints (0 keeps all).
        resume: ``"latest"`` (newest checkpoint of ``output_dir``), a checkpoint folder, or ``None``.
        progress: show a progress bar (rank 0 only).
    """

    output_dir: str = "runs/train"
    max_steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 1e-5
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    amp: str = "auto"
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    log_every: int = 10
    val_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 0
    resume: Optional[str] = field(default=None, metadata={"nargs": "?", "const": "latest"})
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "num_workers", "log_every", "val_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


# ------------------------------------------------------------------------------------------------ field types
def _field_types(cls: type) -> Dict[str, Any]:
    # annotations are strings (postponed evaluation); resolve them against the defining modules
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> Tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check / convert one YAML or CLI value to the field type; ValueError names the field and value."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} may not be null")
    if isinstance(value, str) and optional and value.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if origin in (tuple, typing.Tuple):
            args = typing.get_args(base)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            value = list(value)
            if args and args[-1] is not Ellipsis and len(args) != len(value):
                raise ValueError
            item = args[0] if args else str
            return tuple(_coerce(f"{name}[{i}]", item, v) for i, v in enumerate(value))
        if origin in (dict, typing.Dict) or base is dict:
            if not isinstance(value, Mapping):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ValueError(f"bad value for {name}: {value!r} (expected {_type_name(tp)})") from None
    return value


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    name = getattr(base, "__name__", None) or str(base).replace("typing.", "")
    return f"{name} or null" if optional else name


# ------------------------------------------------------------------------------------------------ YAML
def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML config file: a mapping of field names (``{}`` for an empty file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return data


def config_to_yaml_dict(config: Any) -> Dict[str, Any]:
    """The config as plain YAML-ready data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def save_yaml(data: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Write ``data`` as YAML (keys in insertion order)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        yaml.safe_dump(dict(data), fh, sort_keys=False, default_flow_style=None)
    return path


# ------------------------------------------------------------------------------------------------ resolution
def resolve_config(cls: Type[C], *layers: Optional[Mapping[str, Any]]) -> C:
    """Build ``cls`` from its defaults updated by each mapping in ``layers`` in turn (later layers win).

    Dict-valued fields are merged key by key; unknown keys raise ValueError naming them.
    """
    types_ = _field_types(cls)
    values: Dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        unknown = sorted(set(layer) - set(types_))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(map(str, unknown))}; "
                             f"valid fields: {', '.join(sorted(types_))}")
        for name, raw in layer.items():
            value = _coerce(name, types_[name], raw)
            if isinstance(value, dict) and isinstance(values.get(name), dict):
                value = {**values[name], **value}
            values[name] = value
    # dict fields merge onto their defaults too
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], dict) and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if isinstance(default, dict):
                values[f.name] = {**default, **values[f.name]}
    return cls(**values)


def _parse_key_values(items: Sequence[str], name: str) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        for part in _split_top_level(item):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"--{name.replace('_', '-')} expects KEY=VALUE, got {part!r}")
            k, v = part.split("=", 1)
            out[k.strip()] = yaml.safe_load(v)
    return out


def _split_top_level(text: str) -> List[str]:
    """Split ``a=1,b=[2, 3]`` at the commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--option`` per field of the config dataclass ``cls`` (defaults suppressed: unset stays unset).

    bool fields get ``--flag/--no-flag``; tuple fields take several values; dict fields take ``KEY=VALUE`` items
    (values parsed as YAML, repeatable, comma-separated); Optional fields accept ``none``. ``--config FILE``
    reads a YAML layer below the command line.
    """
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="YAML file of config fields (the command line overrides it)")
    doc = _attribute_docs(cls)
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = types_[f.name]
        base, optional = _unwrap_optional(tp)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_ = f"{doc.get(f.name, '')} (default: {default!r})".strip().replace("%", "%%")
        kwargs: Dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        origin = typing.get_origin(base)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if origin in (tuple, typing.Tuple):
            args = typing.get_args(base)
            kwargs["nargs"] = len(args) if args and args[-1] is not Ellipsis else "+"
            kwargs["metavar"] = f.name.upper()
        elif origin in (dict, typing.Dict) or base is dict:
            kwargs["action"] = "append"
            kwargs["metavar"] = "KEY=VALUE"
        else:
            kwargs["metavar"] = f.name.upper()
        for key in ("nargs", "const"):
            if key in f.metadata:
                kwargs[key] = f.metadata[key]
        parser.add_argument(flag, **kwargs)


def config_from_args(cls: Type[C], args: argparse.Namespace, recipe: Optional[str] = None) -> C:
    """Resolve ``cls`` from defaults, the ``--config`` YAML file and the explicit command-line options.

    A ``recipe:`` key in the YAML file (the engine writes one into every run's ``config.yaml``) must name
    ``recipe`` when that is given; it is not a config field.
    """
    types_ = _field_types(cls)
    yaml_layer = load_yaml(args.config) if getattr(args, "config", None) else {}
    saved_recipe = yaml_layer.pop("recipe", None)
    if recipe is not None and saved_recipe is not None and saved_recipe != recipe:
        raise ValueError(f"{args.config} is a config of recipe {saved_recipe!r}, not {recipe!r}")
    cli_layer: Dict[str, Any] = {}
    for name, tp in types_.items():
        if name not in vars(args):
            continue
        value = getattr(args, name)
        base, _ = _unwrap_optional(tp)
        if typing.get_origin(base) in (dict, typing.Dict) or base is dict:
            value = _parse_key_values(value, name)
        cli_layer[name] = value
    return resolve_config(cls, yaml_layer, cli_layer)


def _attribute_docs(cls: type) -> Dict[str, str]:
    """Field descriptions from the ``Attributes:`` sections of the class docstrings (first sentence)."""
    out: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = klass.__dict__.get("__doc__") or ""
        if "Attributes:" not in text:
            continue
        current = None
        for line in text.split("Attributes:", 1)[1].splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            head, sep, rest = stripped.partition(":")
            if sep and head.isidentifier() and len(line) - len(line.lstrip()) <= 8:
                current = head
                out[current] = rest.strip()
            elif current is not None:
                out[current] += " " + stripped
    return {k: v.split(". ")[0].rstrip(".") for k, v in out.items()}
