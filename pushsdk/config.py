"""Configuration and reporting values of :class:`~pushsdk.client.PushClient`.

Everything here is validated when it is built, so a mistake fails at once with a
:class:`~pushsdk.errors.ConfigurationError` (a ``ValueError``) naming the field — not later as
a silent retry loop: a ``str`` where a list of topics or tags is expected is refused (it would
otherwise be split into characters), topic filters and names are checked against MQTT's
rules, and secrets stay out of ``repr``.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ._topics import validate_topic_filter, validate_topic_name
from .errors import ConfigurationError
from .registration import parse_server_url, split_url

__all__ = [
    "APP_STATES",
    "NETWORK_TYPES",
    "BrokerConfig",
    "ClientState",
    "ClientStatistics",
    "DeviceStatus",
    "Limits",
    "MqttVersion",
    "ServerConfig",
    "Subscription",
    "Timeouts",
    "Will",
    "parse_broker_url",
]

#: Network types the platform may report. Heartbeat strategies treat anything but
#: ``"cellular"`` as an unmetered link without a radio tail.
NETWORK_TYPES = ("wifi", "cellular", "ethernet", "other")
APP_STATES = ("foreground", "background", "inactive")
#: Largest keepalive MQTT can declare (16 bits).
MAX_KEEPALIVE = 65535

MqttVersion = Literal["3.1.1", "5"]
_MQTT_VERSIONS = ("3.1.1", "5")


class ClientState(enum.StrEnum):
    IDLE = "idle"  # created, not started
    REGISTERING = "registering"
    CONNECTING = "connecting"
    CONNECTED = "connected"  # CONNACK 0 received
    WAITING = "waiting"  # backing off before the next attempt
    OFFLINE = "offline"  # no network (notify_network_changed(None))
    CLOSED = "closed"


# --- validators -------------------------------------------------------------------------------

def _fail(message: str) -> ConfigurationError:
    return ConfigurationError(message)


def _strings(what: str, value: Iterable[str] | None) -> tuple[str, ...] | None:
    """A tuple of non-empty strings from a list/tuple; a lone ``str`` is refused."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise _fail(f"{what} must be a list of strings, not a single string {value!r} "
                    f"(write [{value!r}])")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise _fail(f"{what} must hold non-empty strings; got {item!r}")
    return items


def _tags(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return _strings("tags", value)


def _non_empty(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(f"{attribute.name} must be a non-empty string")


def _optional_str(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise _fail(f"{attribute.name} must be a string or None")


def _qos(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise _fail(f"{attribute.name} must be 0, 1 or 2; got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise _fail(f"{attribute.name} must be a positive number of seconds; got {value!r}")


def _mqtt_version(_instance: object, _attribute: object, value: Any) -> None:
    if value not in _MQTT_VERSIONS:
        raise _fail(f"mqtt_version must be \"3.1.1\" or \"5\"; got {value!r}")


def _check_server_url(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str):
        raise _fail("server_url must be a string")
    try:
        parse_server_url(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None


# --- the two modes ------------------------------------------------------------------------------

@attrs.frozen(kw_only=True)
class ServerConfig:
    """Server mode: register over HTTP, then MQTT to the endpoint the server names.

    ``alias`` and ``tags`` are applied on every start: when they differ from what the stored
    registration holds, the client updates them (``PUT /v1/devices/<id>``).
    """

    server_url: str = attrs.field(validator=_check_server_url)
    app_key: str = attrs.field(validator=_non_empty)
    device_id: str = attrs.field(validator=_non_empty)
    platform: str = attrs.field(default="android", validator=_non_empty)
    alias: str | None = attrs.field(default=None, validator=_optional_str)
    tags: tuple[str, ...] | None = attrs.field(default=None, converter=_tags)
    #: Register again when the token expires within this many seconds.
    token_refresh_margin: float = 300.0
    #: End-to-end encryption (RFC 8291): create a P-256 key pair and auth secret, send their
    #: public part with the registration, decrypt encrypted pushes (docs/security.md).
    e2e: bool = False
    #: MQTT version spoken to the server's endpoint; only "3.1.1" is implemented so far.
    mqtt_version: MqttVersion = attrs.field(default="3.1.1", validator=_mqtt_version)


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` → ``(host, port, tls)``;
    ``ValueError`` with a one-line reason otherwise."""
    parts, port, tls = split_url(url, "broker",
                                 {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True},
                                 "mqtt:// or mqtts://")
    if parts.path not in ("", "/"):
        raise ValueError(f"broker URL must not have a path: {url!r}")
    assert parts.hostname is not None  # split_url checked it
    return parts.hostname, port or (8883 if tls else 1883), tls


@attrs.frozen
class Subscription:
    """A topic filter and the QoS asked for it."""

    topic_filter: str = attrs.field()
    qos: int = attrs.field(default=1, validator=_qos)

    @topic_filter.validator
    def _check(self, _attribute: object, value: object) -> None:
        try:
            validate_topic_filter(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None


def _payload(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _fail(f"a payload must be bytes or str, not {type(value).__name__}")
    return bytes(value)


@attrs.frozen
class Will:
    """The message the broker publishes for this client if it vanishes without DISCONNECT."""

    topic: str = attrs.field()
    payload: bytes = attrs.field(default=b"", converter=_payload)
    qos: int = attrs.field(default=0, validator=_qos)
    retain: bool = False

    @topic.validator
    def _check(self, _attribute: object, value: object) -> None:
        try:
            validate_topic_name(value)
        except ValueError as exc:
            raise _fail(f"will: {exc}") from None


def subscriptions_of(value: Iterable[str | Subscription | tuple[str, int]],
                     default_qos: int) -> tuple[Subscription, ...]:
    """Subscriptions from a list of filters (at ``default_qos``), ``(filter, qos)`` pairs or
    :class:`Subscription` objects; a lone ``str`` is refused."""
    if isinstance(value, (str, bytes)):
        raise _fail(f"topics must be a list of topic filters, not a single string {value!r} "
                    f"(write [{value!r}])")
    result = []
    for item in value:
        if isinstance(item, Subscription):
            result.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            result.append(Subscription(item[0], item[1]))
        else:
            result.append(Subscription(item, default_qos))
    return tuple(result)


@attrs.frozen(kw_only=True)
class BrokerConfig:
    """Broker mode: any MQTT 3.1.1 broker, static identity, no registration.

    ``topics`` are subscribed on connect: filters (at ``qos``), ``(filter, qos)`` pairs or
    :class:`Subscription` objects; more can be added at run time with
    ``client.subscribe()``. On a persistent session (``clean_session=False``) filters that
    were subscribed before and are no longer wanted are unsubscribed.
    """

    host: str = attrs.field(validator=_non_empty)
    port: int = 1883
    client_id: str = attrs.field(validator=_non_empty)
    topics: tuple[Subscription, ...] = attrs.field(default=())
    username: str | None = attrs.field(default=None, validator=_optional_str)
    password: str | None = attrs.field(default=None, repr=False, validator=_optional_str)
    keepalive: int = 60
    clean_session: bool = False
    tls: bool = False
    qos: int = attrs.field(default=1, validator=_qos)
    will: Will | None = None
    mqtt_version: MqttVersion = attrs.field(default="3.1.1", validator=_mqtt_version)

    def __attrs_post_init__(self) -> None:
        # ``topics`` is converted here, where ``qos`` (the default for bare filters) is known.
        object.__setattr__(self, "topics", subscriptions_of(self.topics, self.qos))
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 0 < self.port < 65536:
            raise _fail("port must be in 1..65535")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int) \
                or not 0 < self.keepalive <= MAX_KEEPALIVE:
            raise _fail(f"keepalive must be in 1..{MAX_KEEPALIVE} seconds")
        if self.password is not None and self.username is None:
            raise _fail("a password needs a username (MQTT 3.1.1 §3.1.2.9)")
        if self.will is not None and not isinstance(self.will, Will):
            raise _fail("will must be a pushsdk.Will")

    @property
    def filters(self) -> tuple[str, ...]:
        """The configured topic filters."""
        return tuple(s.topic_filter for s in self.topics)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerConfig:
        """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` plus the other fields."""
        try:
            host, port, tls = parse_broker_url(url)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return cls(host=host, port=port, tls=tls, **kwargs)


# --- grouped options of PushClient --------------------------------------------------------------

@attrs.frozen(kw_only=True)
class Timeouts:
    """How long the client waits for each thing, in seconds."""

    connect: float = attrs.field(default=10.0, validator=_positive)
    """TCP + TLS + CONNECT/CONNACK of one attempt."""
    http: float = attrs.field(default=30.0, validator=_positive)
    """One registration exchange."""
    ping: float | None = attrs.field(default=None, validator=_positive)
    """PINGRESP deadline (also the limit of a stalled write); None: the strategy's own
    ``ping_timeout`` or 10 s."""


def _non_negative_int(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"{attribute.name} must be a non-negative integer; got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """Sizes and bounds."""

    max_packet_size: int = attrs.field(default=65536, validator=_non_negative_int)
    """Largest packet accepted from the server, in bytes."""
    dedup_window: int = attrs.field(default=1000, validator=_non_negative_int)
    """How many delivered message ids are remembered to suppress duplicates."""
    min_keepalive: int = attrs.field(default=0, validator=_non_negative_int)
    """Declare at least this MQTT keepalive (the server waits 1.5 x it), e.g. the longest
    Doze idle period, so the session survives times when no heartbeat can be sent."""
    max_inflight: int = attrs.field(default=20, validator=_non_negative_int)
    """QoS 1/2 messages sent and not yet acknowledged, at most (Paho's default too)."""
    max_queued: int = attrs.field(default=1000, validator=_non_negative_int)
    """Messages (and receipts) waiting for a connection, at most."""

    def __attrs_post_init__(self) -> None:
        if self.max_packet_size < 2:
            raise _fail("max_packet_size must be at least 2 bytes")
        if self.max_inflight < 1:
            raise _fail("max_inflight must be at least 1")


@attrs.frozen(kw_only=True)
class DeviceStatus:
    """What the platform says about the device when the client starts (later changes go
    through ``notify_network_changed`` and ``set_app_state``)."""

    network_key: str | None = attrs.field(default="default", validator=_optional_str)
    """Identifies the current network (heartbeat memory is kept per key); None: offline."""
    network_type: str = "wifi"
    app_state: str = "foreground"

    def __attrs_post_init__(self) -> None:
        check_choice("network_type", self.network_type, NETWORK_TYPES)
        check_choice("app_state", self.app_state, APP_STATES)


def check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(f"{what} must be one of {', '.join(choices)}; got {value!r}")


# --- reporting ---------------------------------------------------------------------------------

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
    publishes_pending: int = 0  # app messages queued or sent and not yet acknowledged
    publishes_completed: int = 0  # app messages written (QoS 0) or acknowledged (QoS 1/2)
    consecutive_failures: int = 0  # failed attempts since the last good connection
    last_reason: str | None = None  # reason_code of the last failure (PushError.reason_code)
    last_error: str | None = None  # its one-line message
