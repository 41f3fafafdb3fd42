"""Configuration and reporting values of :class:`~pushsdk.client.PushClient`."""
from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from .heartbeat import MAX_KEEPALIVE
from .registration import parse_server_url, split_url

__all__ = ["BrokerConfig", "ClientState", "ClientStatistics", "ServerConfig"]


class ClientState(enum.StrEnum):
    IDLE = "idle"  # created, not started
    REGISTERING = "registering"
    CONNECTING = "connecting"
    CONNECTED = "connected"  # CONNACK 0 received
    WAITING = "waiting"  # backing off before the next attempt
    OFFLINE = "offline"  # no network (notify_network_changed(None))
    CLOSED = "closed"


def _to_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _check_server_url(_instance: object, _attribute: object, value: str) -> None:
    parse_server_url(value)


def _non_empty(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Server mode: register over HTTP, then MQTT to the endpoint the server names."""

    server_url: str = attrs.field(validator=_check_server_url)
    app_key: str = attrs.field(validator=_non_empty)
    device_id: str = attrs.field(validator=_non_empty)
    platform: str = "android"
    alias: str | None = None
    tags: tuple[str, ...] | None = attrs.field(default=None, converter=_to_tuple)
    #: Register again when the token expires within this many seconds.
    token_refresh_margin: float = 300.0
    #: End-to-end encryption (RFC 8291): create a P-256 key pair and auth secret, send their
    #: public part with the registration, decrypt encrypted pushes (docs/security.md).
    e2e: bool = False


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` → ``(host, port, tls)``;
    ``ValueError`` with a one-line reason otherwise."""
    parts, port, tls = split_url(url, "broker",
                                 {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True},
                                 "mqtt:// or mqtts://")
    if parts.path not in ("", "/"):
        raise ValueError(f"broker URL must not have a path: {url!r}")
    return parts.hostname, port or (8883 if tls else 1883), tls


@attrs.frozen(kw_only=True)
class BrokerConfig:
    """Broker mode: any MQTT 3.1.1 broker, static identity and topics, no registration."""

    host: str = attrs.field(validator=_non_empty)
    port: int = 1883
    client_id: str = attrs.field(validator=_non_empty)
    topics: tuple[str, ...] = attrs.field(converter=tuple)
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    clean_session: bool = False
    tls: bool = False
    qos: int = 1

    @topics.validator
    def _check_topics(self, _attribute: object, value: tuple[str, ...]) -> None:
        if not value or not all(isinstance(t, str) and t for t in value):
            raise ValueError("give at least one non-empty topic")

    def __attrs_post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        if not 0 < self.keepalive <= MAX_KEEPALIVE:
            raise ValueError(f"keepalive must be in 1..{MAX_KEEPALIVE} seconds")
        if self.qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerConfig:
        """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` plus the other fields."""
        host, port, tls = parse_broker_url(url)
        return cls(host=host, port=port, tls=tls, **kwargs)


@attrs.frozen
class ClientStatistics:
    """A snapshot of the client's counters (see :meth:`PushClient.statistics`)."""

    state: ClientState
    network_key: str | None
    network_type: str
    app_state: str
    strategy: str
    keepalive: int
    heartbeat_interval: float | None  # the interval in force, None when not connected
    bytes_up: int  # MQTT and registration bytes written to streams (no TCP/TLS overhead)
    bytes_down: int
    heartbeats_sent: int
    heartbeats_succeeded: int
    heartbeats_failed: int  # no PINGRESP in time, or the link broke while a ping was out
    probes: int  # probe connections opened to measure the NAT timeout (pushsdk._probe)
    connect_attempts: int
    connects: int  # CONNACK 0 received
    reconnects: int  # connects after the first
    registrations: int
    messages_received: int  # PUBLISH packets, duplicates included
    messages_dispatched: int  # new messages handed to the app
    duplicates: int
    malformed_messages: int
    callback_errors: int
    receipts_pending: int  # queued or sent and not yet acknowledged
    receipts_acknowledged: int
    state_save_errors: int
    connected_time: float  # seconds spent connected, current connection included
    decrypt_errors: int  # end-to-end encrypted pushes that did not open (acknowledged)
