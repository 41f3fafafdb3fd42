"""pushsdk: a push client for devices, on trio or asyncio (or a thread of its own).

Server mode talks to the reference push server (HTTP registration, MQTT inbox, receipts);
broker mode is a full MQTT 3.1.1 client for any broker (publish and subscribe at QoS 0/1/2,
retained messages, will, runtime subscribe/unsubscribe). See docs/sdk.md.

Names are imported lazily, so ``import pushsdk.protocol`` (the sans-IO codec) does not pull
in the rest of the SDK.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AsyncioStream",
    "AuthenticationRefused",
    "CertificateFileError",
    "Backoff",
    "BlockingPushClient",
    "BrokerConfig",
    "BrokerMessage",
    "ClientClosed",
    "ClientState",
    "ClientStatistics",
    "Clock",
    "ConfigurationError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionRefused",
    "Connector",
    "DeviceKey",
    "DeviceStatus",
    "FileStateStore",
    "FixedStrategy",
    "HeartbeatContext",
    "HeartbeatStrategy",
    "IdentifierRejected",
    "KeyFileKeyStore",
    "Limits",
    "MemoryStateStore",
    "MessageCallback",
    "MessageStream",
    "NotAuthorized",
    "ProtocolViolation",
    "PushClient",
    "PushError",
    "PushMessage",
    "PushMessageCallback",
    "QueueFull",
    "Reason",
    "Registration",
    "RegistrationError",
    "RegistrationRefused",
    "SdkState",
    "ServerConfig",
    "ServerUnavailable",
    "StateChangeCallback",
    "StateStore",
    "StaticKeyStore",
    "Subscription",
    "SubscriptionRefused",
    "SystemClock",
    "TLSVerificationFailed",
    "TcpConnector",
    "Timeouts",
    "TlsError",
    "TokenCallback",
    "TokenRejected",
    "TransportError",
    "UnknownStrategyError",
    "UnsupportedProtocolVersion",
    "VirtualClock",
    "Will",
    "known_strategies",
    "parse_strategy",
    "register",
    "register_strategy",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]

_EXPORTS = {
    "Backoff": "backoff",
    "BlockingPushClient": "blocking",
    "PushClient": "client",
    "Reason": "reasons",
    "StateChangeCallback": "reasons",
    "BrokerConfig": "config",
    "ClientState": "config",
    "ClientStatistics": "config",
    "DeviceStatus": "config",
    "Limits": "config",
    "ServerConfig": "config",
    "Subscription": "config",
    "Timeouts": "config",
    "Will": "config",
    "Clock": "clock",
    "SystemClock": "clock",
    "VirtualClock": "clock",
    "BrokerMessage": "dispatcher",
    "MessageCallback": "dispatcher",
    "PushMessage": "dispatcher",
    "PushMessageCallback": "dispatcher",
    "TokenCallback": "dispatcher",
    "AuthenticationRefused": "errors",
    "CertificateFileError": "errors",
    "ClientClosed": "errors",
    "ConfigurationError": "errors",
    "ConnectTimeout": "errors",
    "ConnectionLost": "errors",
    "ConnectionRefused": "errors",
    "IdentifierRejected": "errors",
    "NotAuthorized": "errors",
    "ProtocolViolation": "errors",
    "PushError": "errors",
    "QueueFull": "errors",
    "RegistrationError": "errors",
    "RegistrationRefused": "errors",
    "ServerUnavailable": "errors",
    "SubscriptionRefused": "errors",
    "TLSVerificationFailed": "errors",
    "TlsError": "errors",
    "TokenRejected": "errors",
    "TransportError": "errors",
    "UnsupportedProtocolVersion": "errors",
    "FixedStrategy": "heartbeat",
    "HeartbeatContext": "heartbeat",
    "HeartbeatStrategy": "heartbeat",
    "UnknownStrategyError": "heartbeat",
    "known_strategies": "heartbeat",
    "parse_strategy": "heartbeat",
    "register_strategy": "heartbeat",
    "DeviceKey": "identity",
    "MessageStream": "messages",
    "Registration": "registration",
    "register": "registration",
    "FileStateStore": "state",
    "KeyFileKeyStore": "state",
    "MemoryStateStore": "state",
    "SdkState": "state",
    "StateStore": "state",
    "StaticKeyStore": "state",
    "AsyncioStream": "transport",
    "Connector": "transport",
    "TcpConnector": "transport",
    "topic_matches": "_topics",
    "validate_topic_filter": "_topics",
    "validate_topic_name": "_topics",
}



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
    from .backoff import (
        Backoff as Backoff,
    )
    from .blocking import (
        BlockingPushClient as BlockingPushClient,
    )
    from .client import (
        PushClient as PushClient,
    )
    from .reasons import (
        Reason as Reason,
        StateChangeCallback as StateChangeCallback,
    )
    from .config import (
        BrokerConfig as BrokerConfig,
        ClientState as ClientState,
        ClientStatistics as ClientStatistics,
        DeviceStatus as DeviceStatus,
        Limits as Limits,
        ServerConfig as ServerConfig,
        Subscription as Subscription,
        Timeouts as Timeouts,
        Will as Will,
    )
    from .clock import (
        Clock as Clock,
        SystemClock as SystemClock,
        VirtualClock as VirtualClock,
    )
    from .dispatcher import (
        BrokerMessage as BrokerMessage,
        MessageCallback as MessageCallback,
        PushMessage as PushMessage,
        PushMessageCallback as PushMessageCallback,
        TokenCallback as TokenCallback,
    )
    from .errors import (
        AuthenticationRefused as AuthenticationRefused,
        CertificateFileError as CertificateFileError,
        ClientClosed as ClientClosed,
        ConfigurationError as ConfigurationError,
        ConnectTimeout as ConnectTimeout,
        ConnectionLost as ConnectionLost,
        ConnectionRefused as ConnectionRefused,
        IdentifierRejected as IdentifierRejected,
        NotAuthorized as NotAuthorized,
        ProtocolViolation as ProtocolViolation,
        PushError as PushError,
        QueueFull as QueueFull,
        RegistrationError as RegistrationError,
        RegistrationRefused as RegistrationRefused,
        ServerUnavailable as ServerUnavailable,
        SubscriptionRefused as SubscriptionRefused,
        TLSVerificationFailed as TLSVerificationFailed,
        TlsError as TlsError,
        TokenRejected as TokenRejected,
        TransportError as TransportError,
        UnsupportedProtocolVersion as UnsupportedProtocolVersion,
    )
    from .heartbeat import (
        FixedStrategy as FixedStrategy,
        HeartbeatContext as HeartbeatContext,
        HeartbeatStrategy as HeartbeatStrategy,
        UnknownStrategyError as UnknownStrategyError,
        known_strategies as known_strategies,
        parse_strategy as parse_strategy,
        register_strategy as register_strategy,
    )
    from .identity import (
        DeviceKey as DeviceKey,
    )
    from .messages import (
        MessageStream as MessageStream,
    )
    from .registration import (
        Registration as Registration,
        register as register,
    )
    from .state import (
        FileStateStore as FileStateStore,
        KeyFileKeyStore as KeyFileKeyStore,
        MemoryStateStore as MemoryStateStore,
        SdkState as SdkState,
        StateStore as StateStore,
        StaticKeyStore as StaticKeyStore,
    )
    from .transport import (
        AsyncioStream as AsyncioStream,
        Connector as Connector,
        TcpConnector as TcpConnector,
    )
    from ._topics import (
        topic_matches as topic_matches,
        validate_topic_filter as validate_topic_filter,
        validate_topic_name as validate_topic_name,
    )
