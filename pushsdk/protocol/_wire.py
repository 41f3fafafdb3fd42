"""Bytes <-> events for the 14 MQTT 3.1.1 control packets (OASIS standard, 29 Oct 2014).

Encoders take an event and return the whole packet as bytes; a field MQTT forbids raises
:class:`LocalProtocolError`. Decoders take the receive buffer, the packet's first byte and the
bounds of its body (everything after the remaining length) and return an event; anything that
is not valid 3.1.1 raises :class:`RemoteProtocolError` saying what was wrong. Decoders read the
caller's ``bytearray`` in place so a packet costs no extra copy beyond its own fields.

Only syntax lives here. Which packets may flow in which state is the business of
``_state.py``; packet-id bookkeeping belongs to the session layer above the codec.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable

from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    SUBACK_FAILURE,
    ConnAck,
    ConnackCode,
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
)


class PacketType(enum.IntEnum):
    """Control packet types, the high nibble of the first byte (§2.2.1)."""

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


#: Event class of each packet type, indexed by type number (0 and 15 are reserved).
EVENT_CLASS: list[type | None] = [
    None, Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp,
    Subscribe, SubAck, Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, None,
]
PACKET_TYPE: dict[type, PacketType] = {
    cls: PacketType(n) for n, cls in enumerate(EVENT_CLASS) if cls is not None
}

#: Fixed-header flags each packet type must carry (§2.2.2); PUBLISH carries DUP/QoS/RETAIN.
REQUIRED_FLAGS: dict[PacketType, int] = {
    t: 0b0010 if t in (PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE) else 0
    for t in PacketType if t is not PacketType.PUBLISH
}

#: The largest remaining length four varint bytes can express (§2.2.3).
MAX_REMAINING_LENGTH = 268_435_455

_U16 = struct.Struct("!H")
_ACK = struct.Struct("!BBH")  # first byte, remaining length 2, packet id
_MAX_U16 = 0xFFFF


def first_byte_problem(first: int) -> str | None:
    """Why ``first`` cannot start a packet, or None if its type and flags are valid."""
    kind, flags = first >> 4, first & 0x0F
    if kind in (0, 15):
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


def read_remaining_length(buf: bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """Decode the varint after the first byte at ``pos``: (remaining length, header length).

    None if more bytes are needed. A fourth byte with its continuation bit set is rejected at
    once, without waiting for a fifth.
    """
    value = 0
    shift = 0
    i = pos + 1
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i - pos + 1
        if i - pos == 4:
            raise RemoteProtocolError("remaining length is longer than 4 bytes")
        shift += 7
        i += 1
    return None


def _header(first: int, remaining: int, what: str) -> bytes:
    """Fixed header: first byte plus the remaining length as a varint."""
    if remaining < 0x80:
        return bytes((first, remaining))
    if remaining > MAX_REMAINING_LENGTH:
        raise LocalProtocolError(
            f"{what} remaining length {remaining} exceeds MQTT's limit {MAX_REMAINING_LENGTH}"
        )
    out = bytearray((first,))
    while True:
        digit = remaining & 0x7F
        remaining >>= 7
        if remaining:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


# --- field validation shared by both directions ---------------------------------------


def _wildcard_in_topic(topic: str) -> str | None:
    if "+" in topic:
        return "+"
    if "#" in topic:
        return "#"
    return None


def topic_filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid topic filter (§4.7), or None."""
    if not topic_filter:
        return "is empty"
    if "+" not in topic_filter and "#" not in topic_filter:
        return None
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "uses '#' other than as the whole last level"
        if "+" in level and level != "+":
            return "uses '+' other than as a whole level"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_packet_id(packet_id: object, what: str) -> int:
    if not _is_int(packet_id) or not 0 < packet_id <= _MAX_U16:  # type: ignore[operator]
        raise LocalProtocolError(f"{what} packet_id must be an int in 1..65535, not {packet_id!r}")
    return packet_id


def _check_qos(qos: object, what: str) -> int:
    if not _is_int(qos) or qos not in (0, 1, 2):
        raise LocalProtocolError(f"{what} QoS must be 0, 1 or 2, not {qos!r}")
    return int(qos)  # type: ignore[call-overload]


def _encode_str(value: object, what: str) -> bytes:
    """A length-prefixed UTF-8 string (§1.5.3)."""
    if type(value) is not str:
        raise LocalProtocolError(f"{what} must be str, not {type(value).__name__}")
    if "\x00" in value:
        raise LocalProtocolError(f"{what} contains U+0000")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} is not encodable as UTF-8 (lone surrogate)") from None
    if len(raw) > _MAX_U16:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes of UTF-8, over 65535")
    return _U16.pack(len(raw)) + raw


def _encode_binary(value: object, what: str) -> bytes:
    """Length-prefixed binary data (will message, password)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"{what} must be bytes, not {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > _MAX_U16:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes, over 65535")
    return _U16.pack(len(raw)) + raw


def _encode_topic_name(topic: object, what: str) -> bytes:
    encoded = _encode_str(topic, what)
    if len(encoded) == 2:
        raise LocalProtocolError(f"{what} is empty")
    wildcard = _wildcard_in_topic(topic)  # type: ignore[arg-type]
    if wildcard:
        raise LocalProtocolError(f"{what} contains wildcard {wildcard!r}")
    return encoded


def _encode_topic_filter(topic_filter: object, what: str) -> bytes:
    encoded = _encode_str(topic_filter, what)
    problem = topic_filter_problem(topic_filter)  # type: ignore[arg-type]
    if problem:
        raise LocalProtocolError(f"{what} {topic_filter!r} {problem}")
    return encoded


# --- encoders -------------------------------------------------------------------------

_PROTOCOL_HEADER = {4: b"\x00\x04MQTT\x04", 3: b"\x00\x06MQIsdp\x03"}

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


def encode_connect(event: Connect) -> bytes:
    level = event.protocol_level
    header = _PROTOCOL_HEADER.get(level) if _is_int(level) else None
    if header is None:
        raise LocalProtocolError(
            f"CONNECT protocol_level must be 4 (MQTT 3.1.1) or 3 (MQTT 3.1), "
            f"not {event.protocol_level!r}"
        )
    keepalive = event.keepalive
    if not _is_int(keepalive) or not 0 <= keepalive <= _MAX_U16:
        raise LocalProtocolError(f"CONNECT keepalive must be an int in 0..65535, not {keepalive!r}")
    if not event.client_id and not event.clean_session:
        raise LocalProtocolError(
            "CONNECT with an empty client_id must set clean_session (MQTT-3.1.3-7)"
        )
    payload = [_encode_str(event.client_id, "CONNECT client_id")]
    flags = 0b10 if event.clean_session else 0
    will = event.will
    if will is not None:
        if not isinstance(will, Will):
            raise LocalProtocolError(f"CONNECT will must be a Will, not {type(will).__name__}")
        qos = _check_qos(will.qos, "CONNECT will")
        flags |= 0b100 | qos << 3 | (0b100000 if will.retain else 0)
        payload.append(_encode_topic_name(will.topic, "CONNECT will topic"))
        payload.append(_encode_binary(will.payload, "CONNECT will payload"))
    if event.username is not None:
        flags |= 0x80
        payload.append(_encode_str(event.username, "CONNECT username"))
    if event.password is not None:
        if event.username is None:
            raise LocalProtocolError("CONNECT has a password but no username (MQTT-3.1.2-22)")
        flags |= 0x40
        payload.append(_encode_binary(event.password, "CONNECT password"))
    body = b"".join((header, bytes((flags,)), _U16.pack(keepalive), *payload))
    return _header(0x10, len(body), "CONNECT") + body


def encode_connack(event: ConnAck) -> bytes:
    code = event.return_code
    if not _is_int(code) or code not in range(6):
        raise LocalProtocolError(f"CONNACK return_code must be 0..5, not {code!r}")
    if event.session_present and code != 0:
        raise LocalProtocolError(
            "CONNACK session_present must be 0 when the return code is not 0 (MQTT-3.2.2-4)"
        )
    return bytes((0x20, 2, 1 if event.session_present else 0, code))


def encode_publish(event: Publish) -> bytes:
    # Hot path (millions of pushes in a simulation): cheap checks inline, and only when one
    # fails do we call the helper that names the problem.
    topic = event.topic
    if type(topic) is not str or not topic or "+" in topic or "#" in topic or "\x00" in topic:
        _encode_topic_name(topic, "PUBLISH topic")  # raises
    try:
        raw_topic = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            "PUBLISH topic is not encodable as UTF-8 (lone surrogate)"
        ) from None
    if len(raw_topic) > _MAX_U16:
        raise LocalProtocolError(f"PUBLISH topic is {len(raw_topic)} bytes of UTF-8, over 65535")
    payload = event.payload
    if type(payload) is not bytes:
        if not isinstance(payload, (bytearray, memoryview)):
            raise LocalProtocolError(
                f"PUBLISH payload must be bytes, not {type(payload).__name__}"
            )
        payload = bytes(payload)
    qos = event.qos
    if type(qos) is not int or not 0 <= qos <= 2:
        qos = _check_qos(qos, "PUBLISH")
    if qos:
        packet_id = event.packet_id
        if type(packet_id) is not int or not 0 < packet_id <= _MAX_U16:
            packet_id = _check_packet_id(packet_id, f"PUBLISH QoS {qos}")
        tail = _U16.pack(packet_id) + payload
    else:
        if event.packet_id is not None:
            raise LocalProtocolError("PUBLISH with QoS 0 must not have a packet_id")
        if event.dup:
            raise LocalProtocolError("PUBLISH with QoS 0 must not set dup (MQTT-3.3.1-2)")
        tail = payload
    first = 0x30 | qos << 1 | (0b1000 if event.dup else 0) | (1 if event.retain else 0)
    topic_length = len(raw_topic)
    remaining = 2 + topic_length + len(tail)
    # Fixed header and topic length in one struct call for 1- and 2-byte remaining lengths.
    if remaining < 0x80:
        head = _HEAD1_TOPIC.pack(first, remaining, topic_length)
    elif remaining < 0x4000:
        head = _HEAD2_TOPIC.pack(first, remaining & 0x7F | 0x80, remaining >> 7, topic_length)
    else:
        head = _header(first, remaining, "PUBLISH") + _U16.pack(topic_length)
    return head + raw_topic + tail


_HEAD1_TOPIC = struct.Struct("!BBH")
_HEAD2_TOPIC = struct.Struct("!BBBH")


def _ack_encoder(first: int, name: str) -> Callable[[object], bytes]:
    def encode(event: object) -> bytes:
        packet_id = event.packet_id  # type: ignore[attr-defined]
        return _ACK.pack(first, 2, _check_packet_id(packet_id, name))

    encode.__name__ = f"encode_{name.lower()}"
    return encode


encode_puback = _ack_encoder(0x40, "PUBACK")
encode_pubrec = _ack_encoder(0x50, "PUBREC")
encode_pubrel = _ack_encoder(0x62, "PUBREL")
encode_pubcomp = _ack_encoder(0x70, "PUBCOMP")
encode_unsuback = _ack_encoder(0xB0, "UNSUBACK")


def encode_subscribe(event: Subscribe) -> bytes:
    parts = [_U16.pack(_check_packet_id(event.packet_id, "SUBSCRIBE"))]
    for entry in event.subscriptions:
        try:
            topic_filter, qos = entry
        except (TypeError, ValueError):
            raise LocalProtocolError(
                f"SUBSCRIBE subscriptions must be (topic filter, QoS) pairs, not {entry!r}"
            ) from None
        parts.append(_encode_topic_filter(topic_filter, "SUBSCRIBE topic filter"))
        parts.append(bytes((_check_qos(qos, "SUBSCRIBE requested"),)))
    if len(parts) == 1:
        raise LocalProtocolError("SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-3)")
    body = b"".join(parts)
    return _header(0x82, len(body), "SUBSCRIBE") + body


_SUBACK_CODES = frozenset((0, 1, 2, SUBACK_FAILURE))


def encode_suback(event: SubAck) -> bytes:
    codes = tuple(event.return_codes)
    if not codes:
        raise LocalProtocolError("SUBACK needs at least one return code")
    for code in codes:
        if not _is_int(code) or code not in _SUBACK_CODES:
            raise LocalProtocolError(f"SUBACK return code must be 0, 1, 2 or 0x80, not {code!r}")
    body = _U16.pack(_check_packet_id(event.packet_id, "SUBACK")) + bytes(codes)
    return _header(0x90, len(body), "SUBACK") + body


def encode_unsubscribe(event: Unsubscribe) -> bytes:
    parts = [_U16.pack(_check_packet_id(event.packet_id, "UNSUBSCRIBE"))]
    if isinstance(event.topic_filters, str):
        raise LocalProtocolError("UNSUBSCRIBE topic_filters must be a tuple of str, not a str")
    for topic_filter in event.topic_filters:
        parts.append(_encode_topic_filter(topic_filter, "UNSUBSCRIBE topic filter"))
    if len(parts) == 1:
        raise LocalProtocolError("UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)")
    body = b"".join(parts)
    return _header(0xA2, len(body), "UNSUBSCRIBE") + body


def _constant(data: bytes) -> Callable[[object], bytes]:
    return lambda event: data


ENCODERS: dict[type, Callable[[object], bytes]] = {
    Connect: encode_connect,  # type: ignore[dict-item]
    ConnAck: encode_connack,  # type: ignore[dict-item]
    Publish: encode_publish,  # type: ignore[dict-item]
    PubAck: encode_puback,
    PubRec: encode_pubrec,
    PubRel: encode_pubrel,
    PubComp: encode_pubcomp,
    Subscribe: encode_subscribe,  # type: ignore[dict-item]
    SubAck: encode_suback,  # type: ignore[dict-item]
    Unsubscribe: encode_unsubscribe,  # type: ignore[dict-item]
    UnsubAck: encode_unsuback,
    PingReq: _constant(PINGREQ_BYTES),
    PingResp: _constant(PINGRESP_BYTES),
    Disconnect: _constant(DISCONNECT_BYTES),
}


# --- decoders -------------------------------------------------------------------------
# Each takes (first byte, buffer, body start, body end). The caller has checked the first
# byte (type and flags) and that the whole body is in the buffer.


def _read_u16(buf: bytearray, pos: int, end: int, what: str) -> int:
    if pos + 2 > end:
        raise RemoteProtocolError(f"{what} is cut short by the end of the packet")
    return (buf[pos] << 8) | buf[pos + 1]


def _read_binary(buf: bytearray, pos: int, end: int, what: str) -> tuple[bytes, int]:
    length = _read_u16(buf, pos, end, f"{what} length")
    stop = pos + 2 + length
    if stop > end:
        raise RemoteProtocolError(
            f"{what} of {length} bytes runs past the end of the packet"
        )
    return bytes(buf[pos + 2:stop]), stop


def _read_str(buf: bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    raw, stop = _read_binary(buf, pos, end, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{what} is not valid UTF-8 ({exc.reason})") from None
    if "\x00" in text:
        raise RemoteProtocolError(f"{what} contains U+0000")
    return text, stop


def _read_topic_name(buf: bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    topic, stop = _read_str(buf, pos, end, what)
    if not topic:
        raise RemoteProtocolError(f"{what} is empty")
    wildcard = _wildcard_in_topic(topic)
    if wildcard:
        raise RemoteProtocolError(f"{what} contains wildcard {wildcard!r}")
    return topic, stop


def _read_topic_filter(buf: bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    topic_filter, stop = _read_str(buf, pos, end, what)
    problem = topic_filter_problem(topic_filter)
    if problem:
        raise RemoteProtocolError(f"{what} {topic_filter!r} {problem}")
    return topic_filter, stop


def _no_trailing_bytes(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise RemoteProtocolError(f"{name} has {end - pos} unexpected trailing bytes")


def _decode_fixed_length(end: int, pos: int, expected: int, name: str) -> None:
    if end - pos != expected:
        raise RemoteProtocolError(
            f"{name} remaining length is {end - pos}, must be {expected}"
        )


def decode_connect(first: int, buf: bytearray, pos: int, end: int) -> Connect:
    name, pos = _read_str(buf, pos, end, "CONNECT protocol name")
    if pos >= end:
        raise RemoteProtocolError("CONNECT is cut short before the protocol level")
    level = buf[pos]
    if (name, level) not in (("MQTT", 4), ("MQIsdp", 3)):
        raise RemoteProtocolError(
            f"CONNECT protocol {name!r} level {level} is not MQTT 3.1.1 ('MQTT' level 4) "
            f"or 3.1 ('MQIsdp' level 3)"
        )
    if pos + 1 >= end:
        raise RemoteProtocolError("CONNECT is cut short before the connect flags")
    flags = buf[pos + 1]
    keepalive = _read_u16(buf, pos + 2, end, "CONNECT keep alive")
    pos += 4
    if flags & 0x01:
        raise RemoteProtocolError("CONNECT reserved flag (bit 0) is set (MQTT-3.1.2-3)")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise RemoteProtocolError("CONNECT will QoS is 3 (MQTT-3.1.2-14)")
    if not will_flag and (will_qos or will_retain):
        raise RemoteProtocolError(
            "CONNECT sets will QoS or will retain without the will flag (MQTT-3.1.2-11)"
        )
    has_username, has_password = flags & 0x80, flags & 0x40
    if has_password and not has_username:
        raise RemoteProtocolError(
            "CONNECT sets the password flag without the username flag (MQTT-3.1.2-22)"
        )
    client_id, pos = _read_str(buf, pos, end, "CONNECT client id")
    will = None
    if will_flag:
        will_topic, pos = _read_topic_name(buf, pos, end, "CONNECT will topic")
        will_payload, pos = _read_binary(buf, pos, end, "CONNECT will message")
        will = Will(will_topic, will_payload, will_qos, will_retain)
    username = password = None
    if has_username:
        username, pos = _read_str(buf, pos, end, "CONNECT username")
    if has_password:
        password, pos = _read_binary(buf, pos, end, "CONNECT password")
    _no_trailing_bytes(pos, end, "CONNECT")
    return Connect(
        client_id=client_id,
        keepalive=keepalive,
        clean_session=bool(flags & 0x02),
        username=username,
        password=password,
        will=will,
        protocol_level=level,
    )


def decode_connack(first: int, buf: bytearray, pos: int, end: int) -> ConnAck:
    _decode_fixed_length(end, pos, 2, "CONNACK")
    ack_flags, code = buf[pos], buf[pos + 1]
    if ack_flags & 0xFE:
        raise RemoteProtocolError(
            f"CONNACK acknowledge flags {ack_flags:#04x} set reserved bits (MQTT-3.2.2-1)"
        )
    if code > 5:
        raise RemoteProtocolError(f"CONNACK return code {code} is not one of 0..5")
    if ack_flags and code:
        raise RemoteProtocolError(
            f"CONNACK sets session present with return code {code} (MQTT-3.2.2-4)"
        )
    return ConnAck(ConnackCode(code), bool(ack_flags))


def decode_publish(first: int, buf: bytearray, pos: int, end: int) -> Publish:
    # The hot path: the common checks are inlined rather than going through _read_str.
    if pos + 2 > end:
        raise RemoteProtocolError("PUBLISH topic length is cut short by the end of the packet")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise RemoteProtocolError("PUBLISH topic runs past the end of the packet")
    try:
        topic = buf[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"PUBLISH topic is not valid UTF-8 ({exc.reason})") from None
    if not topic:
        raise RemoteProtocolError("PUBLISH topic is empty")
    if "+" in topic or "#" in topic or "\x00" in topic:
        wildcard = _wildcard_in_topic(topic)
        if wildcard:
            raise RemoteProtocolError(f"PUBLISH topic contains wildcard {wildcard!r}")
        raise RemoteProtocolError("PUBLISH topic contains U+0000")
    qos = (first >> 1) & 3
    packet_id = None
    if qos:
        if stop + 2 > end:
            raise RemoteProtocolError("PUBLISH packet id is cut short by the end of the packet")
        packet_id = (buf[stop] << 8) | buf[stop + 1]
        if not packet_id:
            raise RemoteProtocolError("PUBLISH packet id is 0")
        stop += 2
    return Publish(topic, bytes(buf[stop:end]), qos, bool(first & 1), bool(first & 8), packet_id)


def _ack_decoder(cls: type, name: str) -> Callable[[int, bytearray, int, int], object]:
    def decode(first: int, buf: bytearray, pos: int, end: int) -> object:
        if end - pos != 2:
            raise RemoteProtocolError(f"{name} remaining length is {end - pos}, must be 2")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise RemoteProtocolError(f"{name} packet id is 0")
        return cls(packet_id)

    decode.__name__ = f"decode_{name.lower()}"
    return decode


def _read_packet_id(buf: bytearray, pos: int, end: int, name: str) -> int:
    packet_id = _read_u16(buf, pos, end, f"{name} packet id")
    if not packet_id:
        raise RemoteProtocolError(f"{name} packet id is 0")
    return packet_id


def decode_subscribe(first: int, buf: bytearray, pos: int, end: int) -> Subscribe:
    packet_id = _read_packet_id(buf, pos, end, "SUBSCRIBE")
    pos += 2
    subscriptions = []
    while pos < end:
        topic_filter, pos = _read_topic_filter(buf, pos, end, "SUBSCRIBE topic filter")
        if pos >= end:
            raise RemoteProtocolError(f"SUBSCRIBE topic filter {topic_filter!r} has no QoS byte")
        requested = buf[pos]
        if requested > 2:
            raise RemoteProtocolError(
                f"SUBSCRIBE requested QoS byte {requested:#04x} for {topic_filter!r} "
                f"is not 0, 1 or 2 (MQTT-3.8.3-4)"
            )
        subscriptions.append((topic_filter, requested))
        pos += 1
    if not subscriptions:
        raise RemoteProtocolError("SUBSCRIBE has no topic filter (MQTT-3.8.3-3)")
    return Subscribe(packet_id, tuple(subscriptions))


def decode_suback(first: int, buf: bytearray, pos: int, end: int) -> SubAck:
    packet_id = _read_packet_id(buf, pos, end, "SUBACK")
    codes = tuple(buf[pos + 2:end])
    if not codes:
        raise RemoteProtocolError("SUBACK has no return code")
    for code in codes:
        if code not in _SUBACK_CODES:
            raise RemoteProtocolError(f"SUBACK return code {code:#04x} is not 0, 1, 2 or 0x80")
    return SubAck(packet_id, codes)


def decode_unsubscribe(first: int, buf: bytearray, pos: int, end: int) -> Unsubscribe:
    packet_id = _read_packet_id(buf, pos, end, "UNSUBSCRIBE")
    pos += 2
    topic_filters = []
    while pos < end:
        topic_filter, pos = _read_topic_filter(buf, pos, end, "UNSUBSCRIBE topic filter")
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise RemoteProtocolError("UNSUBSCRIBE has no topic filter (MQTT-3.10.3-2)")
    return Unsubscribe(packet_id, tuple(topic_filters))


def _empty_decoder(event: object, name: str) -> Callable[[int, bytearray, int, int], object]:
    def decode(first: int, buf: bytearray, pos: int, end: int) -> object:
        if end != pos:
            raise RemoteProtocolError(f"{name} remaining length is {end - pos}, must be 0")
        return event

    decode.__name__ = f"decode_{name.lower()}"
    return decode


#: Decoder of each packet type, indexed by type number.
DECODERS: list[Callable[[int, bytearray, int, int], object] | None] = [
    None,
    decode_connect,
    decode_connack,
    decode_publish,
    _ack_decoder(PubAck, "PUBACK"),
    _ack_decoder(PubRec, "PUBREC"),
    _ack_decoder(PubRel, "PUBREL"),
    _ack_decoder(PubComp, "PUBCOMP"),
    decode_subscribe,
    decode_suback,
    decode_unsubscribe,
    _ack_decoder(UnsubAck, "UNSUBACK"),
    # Empty packets are frozen values, so one instance each serves every decode.
    _empty_decoder(PingReq(), "PINGREQ"),
    _empty_decoder(PingResp(), "PINGRESP"),
    _empty_decoder(Disconnect(), "DISCONNECT"),
    None,
]
