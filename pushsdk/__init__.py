"""pushsdk: a trio push client for devices.

Server mode talks to the reference push server (HTTP registration, MQTT inbox, receipts);
broker mode talks to any MQTT 3.1.1 broker. See docs/sdk.md.

Names are imported lazily, so ``import pushsdk.protocol`` (the sans-IO codec) does not pull
in trio or the rest of the SDK.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backoff": "backoff",
    "BrokerConfig": "config",
    "ClientState": "config",
    "ClientStatistics": "config",
    "PushClient": "client",
    "ServerConfig": "config",
    "Clock": "clock",
    "SystemClock": "clock",
    "VirtualClock": "clock",
    "BrokerMessage": "dispatcher",
    "PushMessage": "dispatcher",
    "FixedStrategy": "heartbeat",
    "HeartbeatContext": "heartbeat",
    "HeartbeatStrategy": "heartbeat",
    "UnknownStrategyError": "heartbeat",
    "known_strategies": "heartbeat",
    "parse_strategy": "heartbeat",
    "register_strategy": "heartbeat",
    "Registration": "registration",
    "RegistrationError": "registration",
    "register": "registration",
    "FileStateStore": "state",
    "KeyFileKeyStore": "state",
    "MemoryStateStore": "state",
    "SdkState": "state",
    "StateStore": "state",
    "StaticKeyStore": "state",
    "Connector": "transport",
    "TcpConnector": "transport",
    "TlsError": "transport",
    "TransportError": "transport",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pushsdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ does this
    # ruff: noqa: F401
    from .backoff import Backoff
    from .client import PushClient
    from .config import BrokerConfig, ClientState, ClientStatistics, ServerConfig
    from .clock import Clock, SystemClock, VirtualClock
    from .dispatcher import BrokerMessage, PushMessage
    from .heartbeat import (
        FixedStrategy,
        HeartbeatContext,
        HeartbeatStrategy,
        UnknownStrategyError,
        known_strategies,
        parse_strategy,
        register_strategy,
    )
    from .registration import Registration, RegistrationError, register
    from .state import (
        FileStateStore,
        KeyFileKeyStore,
        MemoryStateStore,
        SdkState,
        StateStore,
        StaticKeyStore,
    )
    from .transport import Connector, TcpConnector, TlsError, TransportError
