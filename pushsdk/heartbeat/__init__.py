"""Heartbeat strategies (see :mod:`pushsdk.heartbeat._base` for the interface).

Adding a strategy: write it in its own module here as a frozen attrs subclass of
:class:`HeartbeatStrategy`, decorate it with ``@register_strategy("<name>")`` and import the
module below so the registration runs.
"""
from ._base import (
    APP_STATES,
    MAX_KEEPALIVE,
    NETWORK_TYPES,
    FixedStrategy,
    HeartbeatContext,
    HeartbeatStrategy,
    UnknownStrategyError,
    known_strategies,
    parse_strategy,
    register_strategy,
)

# Strategy modules register themselves on import; add new ones here.
from . import adaptive, courier, fcm, kontalk, mars  # noqa: F401

__all__ = [
    "APP_STATES",
    "MAX_KEEPALIVE",
    "NETWORK_TYPES",
    "FixedStrategy",
    "HeartbeatContext",
    "HeartbeatStrategy",
    "UnknownStrategyError",
    "known_strategies",
    "parse_strategy",
    "register_strategy",
]
