"""Frozen event classes: one per MQTT 3.1.1 control packet, plus :class:`ConnectionClosed`.

Events are plain values. ``Connection.send(event)`` turns one into bytes and
``Connection.next_event()`` produces them from received bytes. Field validation happens in
the codec (``send`` raises :class:`LocalProtocolError`, parsing raises
:class:`RemoteProtocolError`), so constructing an event never raises for bad values.
"""
from __future__ import annotations

import enum

import attrs


class ConnackCode(enum.IntEnum):
    """CONNACK return codes (MQTT 3.1.1 §3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


#: SUBACK return code for a refused subscription (§3.9.3).
SUBACK_FAILURE = 0x80


@attrs.frozen
class Will:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


@attrs.frozen
class Connect:
    client_id: str
    keepalive: int = 60
    clean_session: bool = True
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    protocol_level: int = 4  # 4 = MQTT 3.1.1; 3 (MQIsdp, 3.1) is parsed too


@attrs.frozen
class ConnAck:
    return_code: int = ConnackCode.ACCEPTED
    session_present: bool = False


@attrs.frozen
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # required for QoS 1 and 2, absent for QoS 0


@attrs.frozen
class PubAck:
    packet_id: int


@attrs.frozen
class PubRec:
    packet_id: int


@attrs.frozen
class PubRel:
    packet_id: int


@attrs.frozen
class PubComp:
    packet_id: int


@attrs.frozen
class Subscribe:
    packet_id: int
    subscriptions: tuple[tuple[str, int], ...]  # (topic filter, requested QoS)


@attrs.frozen
class SubAck:
    packet_id: int
    return_codes: tuple[int, ...]  # granted QoS 0-2, or SUBACK_FAILURE


@attrs.frozen
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]


@attrs.frozen
class UnsubAck:
    packet_id: int


@attrs.frozen
class PingReq:
    pass


@attrs.frozen
class PingResp:
    pass


@attrs.frozen
class Disconnect:
    pass


@attrs.frozen
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``) at a packet boundary."""


Event = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
    | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect | ConnectionClosed
)
