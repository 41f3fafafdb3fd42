"""Bytes <-> events for the 14 MQTT 3.1.1 control packets (OASIS standard, 29 Oct 2014).

Encoders take an event (already validated when it was built) and return the whole packet;
what 3.1.1 cannot carry (properties, reason codes, MQTT 5 subscription options) raises
:class:`LocalProtocolError`. Decoders take the receive buffer, the packet's first byte and
the bounds of its body (everything after the remaining length) and return an event;
anything that is not valid 3.1.1 raises :class:`RemoteProtocolError` saying what was wrong.
Decoders read the caller's ``bytearray`` in place so a packet costs no extra copy beyond
its own fields. The 5.0 forms are in ``_wire5.py``.

Only syntax lives here. Which packets may flow in which state is the business of
``_state.py``; packet-id bookkeeping belongs to the session layer above the codec.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._errors import InvalidEventError, LocalProtocolError, RemoteProtocolError, malformed
from ._events import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    trusted_ack,
)
from ._primitives import (
    MAX_U16,
    MAX_VARINT,
    U16,
    encode_binary,
    encode_str,
    header,
    read_binary,
    read_remaining_length,
    read_str,
    read_u16,
)
from ._properties import EMPTY
from ._reason import SUBACK_RETURN_CODES, ConnackCode, ReasonCode
from ._topics import topic_filter_problem, topic_name_problem


class PacketType(enum.IntEnum):
    """Control packet types, the high nibble of the first byte (§2.2.1; AUTH is 5.0's)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


#: Event class of each 3.1.1 packet type, indexed by type number (0 and 15 are reserved).
EVENT_CLASS: list[type | None] = [
    None, Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp,
    Subscribe, SubAck, Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, None,
]
PACKET_TYPE: dict[type, PacketType] = {
    cls: PacketType(n) for n, cls in enumerate(EVENT_CLASS) if cls is not None
}
#: Every packet event class of either version (AUTH exists only in 5.0).
ALL_PACKET_TYPES: dict[type, PacketType] = {**PACKET_TYPE, Auth: PacketType.AUTH}

#: Fixed-header flags each packet type must carry (§2.2.2); PUBLISH carries DUP/QoS/RETAIN.
REQUIRED_FLAGS: dict[PacketType, int] = {
    t: 0b0010 if t in (PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE) else 0
    for t in PacketType if t is not PacketType.PUBLISH
}

#: The largest remaining length four varint bytes can express (§2.2.3).
MAX_REMAINING_LENGTH = MAX_VARINT

_ACK = struct.Struct("!BBH")  # first byte, remaining length 2, packet id
_header = header  # the name the tests and older callers use


def first_byte_problem(first: int, *, auth: bool = False) -> str | None:
    """Why ``first`` cannot start a packet, or None if its type and flags are valid.
    ``auth``: type 15 is AUTH (MQTT 5.0) rather than reserved."""
    kind, flags = first >> 4, first & 0x0F
    if kind == 0 or (kind == 15 and not auth):
        return f"reserved packet type {kind}"
    ptype = PacketType(kind)
    if ptype is PacketType.PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            return "PUBLISH with QoS 3 (fixed header flags 0b0110 are invalid)"
        if qos == 0 and flags & 0b1000:
            return "PUBLISH with QoS 0 has the DUP flag set"
        return None
    if flags != REQUIRED_FLAGS[ptype]:
        return (
            f"{ptype.name} fixed header flags are {flags:#06b}, "
            f"must be {REQUIRED_FLAGS[ptype]:#06b}"
        )
    return None


#: Whether each possible first byte is a valid packet type with valid flags (a fast check).
VALID_FIRST_BYTE: list[bool] = [first_byte_problem(b) is None for b in range(256)]


def _v5_only(what: str) -> LocalProtocolError:
    return LocalProtocolError(f"{what} needs MQTT 5 (this connection speaks 3.1.1)")


# --- encoders -------------------------------------------------------------------------

_PROTOCOL_HEADER = {4: b"\x00\x04MQTT\x04", 3: b"\x00\x06MQIsdp\x03"}

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


def encode_connect(event: Connect) -> bytes:
    header_bytes = _PROTOCOL_HEADER.get(event.protocol_level)
    if header_bytes is None:
        raise LocalProtocolError(
            f"CONNECT protocol_level must be 4 (MQTT 3.1.1) or 3 (MQTT 3.1), "
            f"not {event.protocol_level!r}"
        )
    if not event.client_id and not event.clean_session:
        raise LocalProtocolError(
            "CONNECT with an empty client_id must set clean_session (MQTT-3.1.3-7)"
        )
    payload = [encode_str(event.client_id)]
    flags = 0b10 if event.clean_session else 0
    will = event.will
    if will is not None:
        flags |= 0b100 | will.qos << 3 | (0b100000 if will.retain else 0)
        payload.append(encode_str(will.topic))
        payload.append(encode_binary(will.payload))
    if event.username is not None:
        flags |= 0x80
        payload.append(encode_str(event.username))
    if event.password is not None:
        flags |= 0x40
        payload.append(encode_binary(event.password))
    body = b"".join((header_bytes, bytes((flags,)), U16.pack(event.keepalive), *payload))
    return header(0x10, len(body), "CONNECT") + body


def encode_connack(event: ConnAck) -> bytes:
    code = event.return_code
    if code > 5:
        raise LocalProtocolError(
            f"CONNACK return_code must be 0..5, not {code:#04x} (MQTT 5 reason codes need MQTT 5)"
        )
    if event.properties is not EMPTY:
        raise _v5_only("CONNACK properties")
    return bytes((0x20, 2, 1 if event.session_present else 0, code))


def encode_publish(event: Publish) -> bytes:
    # Hot path (millions of pushes in a simulation): the event was validated when built,
    # so what is left is the one check construction cannot make cheaply (UTF-8 size).
    if event.properties is not EMPTY:
        raise _v5_only("PUBLISH properties")
    raw_topic = event.topic.encode("utf-8")
    topic_length = len(raw_topic)
    if topic_length > MAX_U16 or not topic_length:
        problem = topic_name_problem(event.topic) or "is empty"
        raise LocalProtocolError(f"PUBLISH topic {problem}")
    payload = event.payload
    if type(payload) is not bytes:
        payload = bytes(payload)
    qos = event.qos
    tail = U16.pack(event.packet_id) + payload if qos else payload
    first = 0x30 | qos << 1 | (0b1000 if event.dup else 0) | (1 if event.retain else 0)
    remaining = 2 + topic_length + len(tail)
    # Fixed header and topic length in one struct call for 1- and 2-byte remaining lengths.
    if remaining < 0x80:
        head = _HEAD1_TOPIC.pack(first, remaining, topic_length)
    elif remaining < 0x4000:
        head = _HEAD2_TOPIC.pack(first, remaining & 0x7F | 0x80, remaining >> 7, topic_length)
    else:
        head = header(first, remaining, "PUBLISH") + U16.pack(topic_length)
    return head + raw_topic + tail


_HEAD1_TOPIC = struct.Struct("!BBH")
_HEAD2_TOPIC = struct.Struct("!BBBH")


def _ack_encoder(first: int, name: str) -> Callable[[Any], bytes]:
    def encode(event: Any) -> bytes:
        if event.reason_code:
            raise _v5_only(f"{name} reason_code {event.reason_code:#04x}")
        if event.properties is not EMPTY:
            raise _v5_only(f"{name} properties")
        return _ACK.pack(first, 2, event.packet_id)

    encode.__name__ = f"encode_{name.lower()}"
    return encode


encode_puback = _ack_encoder(0x40, "PUBACK")
encode_pubrec = _ack_encoder(0x50, "PUBREC")
encode_pubrel = _ack_encoder(0x62, "PUBREL")
encode_pubcomp = _ack_encoder(0x70, "PUBCOMP")


def encode_unsuback(event: UnsubAck) -> bytes:
    if event.reason_codes:
        raise _v5_only("UNSUBACK reason_codes")
    if event.properties is not EMPTY:
        raise _v5_only("UNSUBACK properties")
    return _ACK.pack(0xB0, 2, event.packet_id)


def encode_subscribe(event: Subscribe) -> bytes:
    if event.properties is not EMPTY:
        raise _v5_only("SUBSCRIBE properties")
    parts = [U16.pack(event.packet_id)]
    for topic_filter, options in event.subscriptions:
        if options > 2:
            raise _v5_only(f"SUBSCRIBE options {options!r} for {topic_filter!r}")
        parts.append(encode_str(topic_filter))
        parts.append(bytes((options,)))
    body = b"".join(parts)
    return header(0x82, len(body), "SUBSCRIBE") + body


def encode_suback(event: SubAck) -> bytes:
    for code in event.return_codes:
        if code not in SUBACK_RETURN_CODES:
            raise LocalProtocolError(
                f"SUBACK return code must be 0, 1, 2 or 0x80, not {code!r} "
                "(MQTT 5 reason codes need MQTT 5)"
            )
    if event.properties is not EMPTY:
        raise _v5_only("SUBACK properties")
    body = U16.pack(event.packet_id) + bytes(event.return_codes)
    return header(0x90, len(body), "SUBACK") + body


def encode_unsubscribe(event: Unsubscribe) -> bytes:
    if event.properties is not EMPTY:
        raise _v5_only("UNSUBSCRIBE properties")
    body = U16.pack(event.packet_id) + b"".join(encode_str(f) for f in event.topic_filters)
    return header(0xA2, len(body), "UNSUBSCRIBE") + body


def encode_disconnect(event: Disconnect) -> bytes:
    if event.reason_code:
        raise _v5_only(f"DISCONNECT reason_code {event.reason_code:#04x}")
    if event.properties is not EMPTY:
        raise _v5_only("DISCONNECT properties")
    return DISCONNECT_BYTES


def _constant(data: bytes) -> Callable[[Any], bytes]:
    return lambda event: data


ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Connect: encode_connect,
    ConnAck: encode_connack,
    Publish: encode_publish,
    PubAck: encode_puback,
    PubRec: encode_pubrec,
    PubRel: encode_pubrel,
    PubComp: encode_pubcomp,
    Subscribe: encode_subscribe,
    SubAck: encode_suback,
    Unsubscribe: encode_unsubscribe,
    UnsubAck: encode_unsuback,
    PingReq: _constant(PINGREQ_BYTES),
    PingResp: _constant(PINGRESP_BYTES),
    Disconnect: encode_disconnect,
}


# --- decoders -------------------------------------------------------------------------
# Each takes (first byte, buffer, body start, body end). The caller has checked the first
# byte (type and flags) and that the whole body is in the buffer.

Decoder = Callable[[int, bytearray, int, int], Any]
_P = ParamSpec("_P")
_T = TypeVar("_T")


def read_topic_name(buf: bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    topic, stop = read_str(buf, pos, end, what)
    problem = topic_name_problem(topic)
    if problem:
        raise malformed(f"{what} {problem}")
    return topic, stop


def read_topic_filter(
    buf: bytearray, pos: int, end: int, what: str, *, shared: bool = False
) -> tuple[str, int]:
    topic_filter, stop = read_str(buf, pos, end, what)
    problem = topic_filter_problem(topic_filter, shared=shared)
    if problem:
        raise malformed(f"{what} {topic_filter!r} {problem}")
    return topic_filter, stop


def no_trailing_bytes(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise malformed(f"{name} has {end - pos} unexpected trailing bytes")


def built(factory: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Build a (rare) event with its constructor's checks; a problem the decoder did not
    catch first is still the peer's, so it becomes a RemoteProtocolError."""
    try:
        return factory(*args, **kwargs)
    except InvalidEventError as exc:
        raise malformed(str(exc)) from None


def connect_level(buf: bytearray, pos: int, end: int) -> tuple[str, int, int]:
    """Protocol name, protocol level and the position after them, at the start of a
    CONNECT's variable header (both versions)."""
    name, pos = read_str(buf, pos, end, "CONNECT protocol name")
    if pos >= end:
        raise malformed("CONNECT is cut short before the protocol level")
    return name, buf[pos], pos + 1


def read_connect_flags(
    buf: bytearray, pos: int, end: int, level: int
) -> tuple[int, int, int]:
    """Connect flags and keep alive after the level: (flags, keepalive, next position)."""
    if pos >= end:
        raise malformed("CONNECT is cut short before the connect flags")
    flags = buf[pos]
    keepalive = read_u16(buf, pos + 1, end, "CONNECT keep alive")
    if flags & 0x01:
        raise malformed("CONNECT reserved flag (bit 0) is set (MQTT-3.1.2-3)")
    will_qos = (flags >> 3) & 3
    if will_qos == 3:
        raise malformed("CONNECT will QoS is 3 (MQTT-3.1.2-14)")
    if not flags & 0x04 and (will_qos or flags & 0x20):
        raise malformed(
            "CONNECT sets will QoS or will retain without the will flag (MQTT-3.1.2-11)"
        )
    if flags & 0x40 and not flags & 0x80 and level != 5:
        raise malformed(
            "CONNECT sets the password flag without the username flag (MQTT-3.1.2-22)"
        )
    return flags, keepalive, pos + 3


def read_client_id(buf: bytearray, pos: int, end: int) -> tuple[str, int]:
    """The client id. One that is not a valid string is answered CONNACK 2 (identifier
    rejected) or 0x85 (Client Identifier not valid), not just a closed connection."""
    raw, stop = read_binary(buf, pos, end, "CONNECT client id")
    try:
        client_id = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"CONNECT client id is not valid UTF-8 ({exc.reason})"
    else:
        if "\x00" not in client_id:
            return client_id, stop
        problem = "CONNECT client id contains U+0000"
    raise RemoteProtocolError(
        problem,
        reason_code=ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
        connack_return_code=ConnackCode.IDENTIFIER_REJECTED,
    )


def decode_connect_body(
    level: int, buf: bytearray, pos: int, end: int
) -> Connect:
    """The rest of a 3.1/3.1.1 CONNECT, after the protocol level."""
    flags, keepalive, pos = read_connect_flags(buf, pos, end, level)
    client_id, pos = read_client_id(buf, pos, end)
    will = None
    if flags & 0x04:
        will_topic, pos = read_topic_name(buf, pos, end, "CONNECT will topic")
        will_payload, pos = read_binary(buf, pos, end, "CONNECT will message")
        will = Will(will_topic, will_payload, (flags >> 3) & 3, bool(flags & 0x20))
    username = password = None
    if flags & 0x80:
        username, pos = read_str(buf, pos, end, "CONNECT username")
    if flags & 0x40:
        password, pos = read_binary(buf, pos, end, "CONNECT password")
    no_trailing_bytes(pos, end, "CONNECT")
    return built(
        Connect, client_id=client_id, keepalive=keepalive, clean_session=bool(flags & 0x02),
        username=username, password=password, will=will, protocol_level=level,
    )


def decode_connack(first: int, buf: bytearray, pos: int, end: int) -> ConnAck:
    if end - pos != 2:
        raise malformed(f"CONNACK remaining length is {end - pos}, must be 2")
    ack_flags, code = buf[pos], buf[pos + 1]
    if ack_flags & 0xFE:
        raise malformed(
            f"CONNACK acknowledge flags {ack_flags:#04x} set reserved bits (MQTT-3.2.2-1)"
        )
    if code > 5:
        raise malformed(f"CONNACK return code {code} is not one of 0..5")
    if ack_flags and code:
        raise malformed(f"CONNACK sets session present with return code {code} (MQTT-3.2.2-4)")
    return ConnAck(ConnackCode(code), bool(ack_flags))


def bad_publish_topic(buf: bytearray, pos: int, end: int, *, alias: bool) -> RemoteProtocolError:
    """Why the PUBLISH topic at ``pos`` is invalid (the decoders' slow path)."""
    if pos + 2 > end:
        return malformed("PUBLISH topic length is cut short by the end of the packet")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        return malformed("PUBLISH topic runs past the end of the packet")
    try:
        topic = buf[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        return malformed(f"PUBLISH topic is not valid UTF-8 ({exc.reason})")
    if not topic and not alias:
        return malformed("PUBLISH topic is empty")
    return malformed(f"PUBLISH topic {topic_name_problem(topic)}")


def decode_publish(first: int, buf: bytearray, pos: int, end: int) -> Publish:
    # The hot path (every push): the topic, the packet id and the event are done inline
    # rather than in helpers; any problem is worked out again by bad_publish_topic.
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1]) if pos + 2 <= end else end + 1
    if stop > end:
        raise bad_publish_topic(buf, pos, end, alias=False)
    try:
        topic = buf[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError:
        topic = ""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise bad_publish_topic(buf, pos, end, alias=False)
    qos = (first >> 1) & 3
    packet_id = None
    if qos:
        if stop + 2 > end:
            raise malformed("PUBLISH packet id is cut short by the end of the packet")
        packet_id = (buf[stop] << 8) | buf[stop + 1]
        if not packet_id:
            raise malformed("PUBLISH packet id is 0")
        stop += 2
    event: Publish = _new(Publish)
    setattr_ = _set.__get__(event)
    setattr_("topic", topic)
    setattr_("payload", bytes(buf[stop:end]))
    setattr_("qos", qos)
    setattr_("retain", bool(first & 1))
    setattr_("dup", bool(first & 8))
    setattr_("packet_id", packet_id)
    setattr_("properties", EMPTY)
    return event


_new = object.__new__
_set = object.__setattr__


def _ack_decoder(cls: type, name: str) -> Decoder:
    def decode(first: int, buf: bytearray, pos: int, end: int) -> Any:
        if end - pos != 2:
            raise malformed(f"{name} remaining length is {end - pos}, must be 2")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise malformed(f"{name} packet id is 0")
        return trusted_ack(cls, packet_id, 0, EMPTY)

    decode.__name__ = f"decode_{name.lower()}"
    return decode


def decode_unsuback(first: int, buf: bytearray, pos: int, end: int) -> UnsubAck:
    if end - pos != 2:
        raise malformed(f"UNSUBACK remaining length is {end - pos}, must be 2")
    return UnsubAck(read_packet_id(buf, pos, end, "UNSUBACK"))


def read_packet_id(buf: bytearray, pos: int, end: int, name: str) -> int:
    packet_id = read_u16(buf, pos, end, f"{name} packet id")
    if not packet_id:
        raise malformed(f"{name} packet id is 0")
    return packet_id


def decode_subscribe(first: int, buf: bytearray, pos: int, end: int) -> Subscribe:
    packet_id = read_packet_id(buf, pos, end, "SUBSCRIBE")
    pos += 2
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_topic_filter(buf, pos, end, "SUBSCRIBE topic filter")
        if pos >= end:
            raise malformed(f"SUBSCRIBE topic filter {topic_filter!r} has no QoS byte")
        requested = buf[pos]
        if requested > 2:
            raise malformed(
                f"SUBSCRIBE requested QoS byte {requested:#04x} for {topic_filter!r} "
                f"is not 0, 1 or 2 (MQTT-3.8.3-4)"
            )
        subscriptions.append((topic_filter, requested))
        pos += 1
    if not subscriptions:
        raise malformed("SUBSCRIBE has no topic filter (MQTT-3.8.3-3)")
    return built(Subscribe, packet_id, tuple(subscriptions))


def decode_suback(first: int, buf: bytearray, pos: int, end: int) -> SubAck:
    packet_id = read_packet_id(buf, pos, end, "SUBACK")
    codes = tuple(buf[pos + 2:end])
    if not codes:
        raise malformed("SUBACK has no return code")
    for code in codes:
        if code not in SUBACK_RETURN_CODES:
            raise malformed(f"SUBACK return code {code:#04x} is not 0, 1, 2 or 0x80")
    return built(SubAck, packet_id, codes)


def decode_unsubscribe(first: int, buf: bytearray, pos: int, end: int) -> Unsubscribe:
    packet_id = read_packet_id(buf, pos, end, "UNSUBSCRIBE")
    pos += 2
    topic_filters = []
    while pos < end:
        topic_filter, pos = read_topic_filter(buf, pos, end, "UNSUBSCRIBE topic filter")
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise malformed("UNSUBSCRIBE has no topic filter (MQTT-3.10.3-2)")
    return built(Unsubscribe, packet_id, tuple(topic_filters))


def empty_decoder(event: object, name: str) -> Decoder:
    def decode(first: int, buf: bytearray, pos: int, end: int) -> object:
        if end != pos:
            raise malformed(f"{name} remaining length is {end - pos}, must be 0")
        return event

    decode.__name__ = f"decode_{name.lower()}"
    return decode


#: Decoder of each packet type but CONNECT (the Connection reads it: see decode_connect_*),
#: indexed by type number.
DECODERS: list[Decoder | None] = [
    None,
    None,
    decode_connack,
    decode_publish,
    _ack_decoder(PubAck, "PUBACK"),
    _ack_decoder(PubRec, "PUBREC"),
    _ack_decoder(PubRel, "PUBREL"),
    _ack_decoder(PubComp, "PUBCOMP"),
    decode_subscribe,
    decode_suback,
    decode_unsubscribe,
    decode_unsuback,
    # Empty packets are frozen values, so one instance each serves every decode.
    empty_decoder(PingReq(), "PINGREQ"),
    empty_decoder(PingResp(), "PINGRESP"),
    empty_decoder(Disconnect(), "DISCONNECT"),
    None,
]

__all__ = ["read_remaining_length", "MAX_REMAINING_LENGTH"]
