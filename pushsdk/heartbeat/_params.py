"""``name:key=value,key=value`` — the parameters of a strategy spec.

Baselines take the parameters their sources expose (``courier:min=60,max=1800``,
``fcm:cellular=600``); each strategy declares which keys it accepts and of what kind, and
gets a clear :class:`ValueError` for anything else. Durations are seconds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["format_params", "parse_params"]


def parse_params(arg: str | None, kinds: Mapping[str, type]) -> dict[str, float | int]:
    """``"min=60,max=1800"`` → ``{"min": 60.0, "max": 1800.0}``.

    ``kinds`` maps each accepted key to ``float`` (finite, ≥ 0) or ``int`` (whole, ≥ 0).
    Raises ValueError naming the bad key or value and the accepted keys.
    """
    values: dict[str, float | int] = {}
    if not arg:
        return values
    accepted = ", ".join(kinds) or "none"
    for item in arg.split(","):
        key, sep, text = item.strip().partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item.strip()!r} (keys: {accepted})")
        if key not in kinds:
            raise ValueError(f"unknown parameter {key!r} (keys: {accepted})")
        if key in values:
            raise ValueError(f"parameter {key!r} given twice")
        values[key] = _number(key, text.strip(), kinds[key])
    return values


def _number(key: str, text: str, kind: type) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}: not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}: must be a finite number >= 0, got {text!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"{key}: must be a whole number, got {text!r}")
        return int(value)
    return value


def format_params(name: str, values: Mapping[str, float | int],
                  defaults: Mapping[str, float | int]) -> str:
    """The spec that parses back into these values: only those differing from the defaults,
    in the order of ``defaults``."""
    parts = [f"{key}={values[key]:g}" for key in defaults if values[key] != defaults[key]]
    return f"{name}:{','.join(parts)}" if parts else name
