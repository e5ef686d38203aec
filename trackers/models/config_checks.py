"""Validation shared by the network config dataclasses: every field is checked before a network is built, so a
bad value fails with a message naming it instead of a ``ZeroDivisionError`` or a negative tensor size deep inside."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["check_ints", "check_floats", "check_choice"]


def _owner(cfg: Any) -> str:
    return type(cfg).__name__


def check_ints(cfg: Any, *names: str, minimum: int = 1) -> None:
    """Each named field is an ``int`` (not a bool) ``>= minimum``."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{_owner(cfg)}.{name} must be an int >= {minimum}, got {v!r}")


def check_floats(cfg: Any, *names: str, minimum: float = 0.0, strict: bool = False) -> None:
    """Each named field is a finite number ``>= minimum`` (``> minimum`` with ``strict``)."""
    for name in names:
        v = getattr(cfg, name)
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if not ok or v < minimum or (strict and v == minimum):
            rel = ">" if strict else ">="
            raise ValueError(f"{_owner(cfg)}.{name} must be a finite number {rel} {minimum}, got {v!r}")


def check_choice(cfg: Any, name: str, choices: tuple) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ValueError(f"{_owner(cfg)}.{name} must be one of {choices}, got {v!r}")
