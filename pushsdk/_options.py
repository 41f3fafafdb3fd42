"""PushClient's grouped options, and the flat keyword spelling folded into them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import attrs

from .config import DeviceStatus, Limits, Timeouts

__all__ = ["DEFAULT_DEVICE", "DEFAULT_LIMITS", "DEFAULT_TIMEOUTS", "FlatOptions", "fold"]


class FlatOptions(TypedDict, total=False):
    """The options of :class:`Timeouts`, :class:`Limits` and :class:`DeviceStatus` as plain
    keyword arguments (the older spelling, still accepted)."""

    ping_timeout: float | None
    connect_timeout: float
    http_timeout: float
    max_packet_size: int
    dedup_window: int
    min_keepalive: int
    network_key: str | None
    network_type: str
    app_state: str


# Defaults shared by every client (frozen, so sharing is safe; thousands of clients).
DEFAULT_TIMEOUTS, DEFAULT_LIMITS, DEFAULT_DEVICE = Timeouts(), Limits(), DeviceStatus()

_FLAT = {
    "ping_timeout": ("timeouts", "ping"), "connect_timeout": ("timeouts", "connect"),
    "http_timeout": ("timeouts", "http"), "max_packet_size": ("limits", "max_packet_size"),
    "dedup_window": ("limits", "dedup_window"), "min_keepalive": ("limits", "min_keepalive"),
    "network_key": ("device", "network_key"), "network_type": ("device", "network_type"),
    "app_state": ("device", "app_state"),
}


def fold(flat: Mapping[str, Any], groups: dict[str, Any]) -> dict[str, Any]:
    """Put flat keyword options into their groups."""
    changes: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        if name not in _FLAT:
            raise TypeError(f"PushClient() got an unexpected keyword argument {name!r}")
        group, field = _FLAT[name]
        changes.setdefault(group, {})[field] = value
    return {group: attrs.evolve(value, **changes[group]) if group in changes else value
            for group, value in groups.items()}
