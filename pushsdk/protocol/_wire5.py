"""Bytes <-> events for the 15 MQTT 5.0 control packets (OASIS standard, 7 March 2019).

The same conventions as ``_wire.py`` (which holds what both versions share): encoders take
a validated event and return the packet, decoders read the receive buffer in place and raise
:class:`RemoteProtocolError` with the reason code that classifies the problem. Everything
that depends on the connection (topic aliases, Receive Maximum, the peer's limits, who may
send which DISCONNECT reason) is checked by ``_session5.py``, not here.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ._errors import LocalProtocolError, malformed, protocol_error
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
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
    trusted_ack,
)
from ._primitives import (
    MAX_U16,
    U16,
    encode_binary,
    encode_str,
    header,
    read_binary,
    read_str,
)
from ._properties import EMPTY, Context, Properties, decode_properties, encode_properties
from ._reason import (
    AUTH_REASONS,
    CONNACK_REASON_FOR_RETURN_CODE,
    CONNACK_REASONS,
    DISCONNECT_REASONS,
    PUBACK_REASONS,
    PUBCOMP_REASONS,
    PUBREC_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
    ReasonCode,
    reason_code,
)
from ._topics import topic_name_problem
from ._wire import (
    DISCONNECT_BYTES,
    PINGREQ_BYTES,
    PINGRESP_BYTES,
    Decoder,
    built,
    empty_decoder,
    first_byte_problem,
    no_trailing_bytes,
    read_client_id,
    read_connect_flags,
    read_packet_id,
    bad_publish_topic,
    read_topic_filter,
    read_topic_name,
)

#: Whether each possible first byte is valid in MQTT 5.0 (type 15 is AUTH).
VALID_FIRST_BYTE: list[bool] = [first_byte_problem(b, auth=True) is None for b in range(256)]
#: Each byte value as a ReasonCode member (or the int when it is not one), for decoders.
REASON_OF: list[int] = [reason_code(value) for value in range(256)]

_NO_PROPERTIES = b"\x00"
_HEAD1_TOPIC = struct.Struct("!BBH")
_HEAD2_TOPIC = struct.Struct("!BBBH")
_ACK_SHORT = struct.Struct("!BBH")
_ACK_REASON = struct.Struct("!BBHB")
_MQTT5 = b"\x00\x04MQTT\x05"


def _props(props: Properties) -> bytes:
    return _NO_PROPERTIES if props is EMPTY else encode_properties(props)


# --- encoders -------------------------------------------------------------------------


def encode_connect(event: Connect) -> bytes:
    if event.protocol_level != 5:
        raise LocalProtocolError(
            f"CONNECT protocol_level must be 5 on an MQTT 5 connection, not "
            f"{event.protocol_level!r}"
        )
    parts = [_props(event.properties), encode_str(event.client_id)]
    flags = 0b10 if event.clean_session else 0
    will = event.will
    if will is not None:
        flags |= 0b100 | will.qos << 3 | (0b100000 if will.retain else 0)
        parts += (_props(will.properties), encode_str(will.topic), encode_binary(will.payload))
    if event.username is not None:
        flags |= 0x80
        parts.append(encode_str(event.username))
    if event.password is not None:
        flags |= 0x40
        parts.append(encode_binary(event.password))
    body = b"".join((_MQTT5, bytes((flags,)), U16.pack(event.keepalive), *parts))
    return header(0x10, len(body), "CONNECT") + body


def encode_connack(event: ConnAck) -> bytes:
    code = event.return_code
    if code not in CONNACK_REASONS:
        raise LocalProtocolError(
            f"CONNACK return_code {code!r} is not an MQTT 5 CONNACK reason code (the 3.1.1 "
            f"code {code} is {CONNACK_REASON_FOR_RETURN_CODE.get(code, 'unknown')!r} in 5.0)"
        )
    body = bytes((1 if event.session_present else 0, code)) + _props(event.properties)
    return header(0x20, len(body), "CONNACK") + body


def encode_publish(event: Publish) -> bytes:
    raw_topic = event.topic.encode("utf-8")
    topic_length = len(raw_topic)
    if topic_length > MAX_U16:
        raise LocalProtocolError(f"PUBLISH topic {topic_name_problem(event.topic)}")
    props = event.properties
    payload = event.payload
    if type(payload) is not bytes:
        payload = bytes(payload)
    qos = event.qos
    if props is EMPTY:  # the common case: packet id and property length in one pack
        tail = (_PID_NO_PROPERTIES.pack(event.packet_id, 0) if qos else b"\x00") + payload
    elif qos:
        tail = U16.pack(event.packet_id) + encode_properties(props) + payload
    else:
        tail = encode_properties(props) + payload
    first = 0x30 | qos << 1 | (0b1000 if event.dup else 0) | (1 if event.retain else 0)
    remaining = 2 + topic_length + len(tail)
    if remaining < 0x80:
        head = _HEAD1_TOPIC.pack(first, remaining, topic_length)
    elif remaining < 0x4000:
        head = _HEAD2_TOPIC.pack(first, remaining & 0x7F | 0x80, remaining >> 7, topic_length)
    else:
        head = header(first, remaining, "PUBLISH") + U16.pack(topic_length)
    return head + raw_topic + tail


_PID_NO_PROPERTIES = struct.Struct("!HB")


def _ack_encoder(first: int, name: str) -> Callable[[Any], bytes]:
    def encode(event: Any) -> bytes:
        # The short forms (§3.4.2.1): no reason code when it is 0 and there are no
        # properties; no property length when there are none.
        props = event.properties
        if props is EMPTY:
            if not event.reason_code:
                return _ACK_SHORT.pack(first, 2, event.packet_id)
            return _ACK_REASON.pack(first, 3, event.packet_id, event.reason_code)
        body = U16.pack(event.packet_id) + bytes((event.reason_code,)) + encode_properties(props)
        return header(first, len(body), name) + body

    encode.__name__ = f"encode_{name.lower()}"
    return encode


def encode_subscribe(event: Subscribe) -> bytes:
    parts = [U16.pack(event.packet_id), _props(event.properties)]
    for topic_filter, options in event.subscriptions:
        parts.append(encode_str(topic_filter))
        parts.append(bytes((options,)))
    body = b"".join(parts)
    return header(0x82, len(body), "SUBSCRIBE") + body


def encode_suback(event: SubAck) -> bytes:
    for code in event.return_codes:
        if code not in SUBACK_REASONS:
            raise LocalProtocolError(f"SUBACK reason code {code!r} is not valid in MQTT 5")
    body = U16.pack(event.packet_id) + _props(event.properties) + bytes(event.return_codes)
    return header(0x90, len(body), "SUBACK") + body


def encode_unsubscribe(event: Unsubscribe) -> bytes:
    body = b"".join((U16.pack(event.packet_id), _props(event.properties),
                     *(encode_str(f) for f in event.topic_filters)))
    return header(0xA2, len(body), "UNSUBSCRIBE") + body


def encode_unsuback(event: UnsubAck) -> bytes:
    if not event.reason_codes:
        raise LocalProtocolError(
            "UNSUBACK needs one reason code per topic filter in MQTT 5 (MQTT-3.11.3-1)"
        )
    body = U16.pack(event.packet_id) + _props(event.properties) + bytes(event.reason_codes)
    return header(0xB0, len(body), "UNSUBACK") + body


def _reason_and_properties(first: int, name: str, event: Any) -> bytes:
    """DISCONNECT and AUTH: nothing for 0 without properties, else reason (+ properties)."""
    props = event.properties
    if props is EMPTY:
        if not event.reason_code:
            return bytes((first, 0))
        if first == 0xE0:  # DISCONNECT may drop the property length (§3.14.2.2.1)
            return bytes((first, 1, event.reason_code))
    body = bytes((event.reason_code,)) + _props(props)
    return header(first, len(body), name) + body


def encode_disconnect(event: Disconnect) -> bytes:
    if not event.reason_code and event.properties is EMPTY:
        return DISCONNECT_BYTES
    return _reason_and_properties(0xE0, "DISCONNECT", event)


def encode_auth(event: Auth) -> bytes:
    return _reason_and_properties(0xF0, "AUTH", event)


ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Connect: encode_connect,
    ConnAck: encode_connack,
    Publish: encode_publish,
    PubAck: _ack_encoder(0x40, "PUBACK"),
    PubRec: _ack_encoder(0x50, "PUBREC"),
    PubRel: _ack_encoder(0x62, "PUBREL"),
    PubComp: _ack_encoder(0x70, "PUBCOMP"),
    Subscribe: encode_subscribe,
    SubAck: encode_suback,
    Unsubscribe: encode_unsubscribe,
    UnsubAck: encode_unsuback,
    PingReq: lambda event: PINGREQ_BYTES,
    PingResp: lambda event: PINGRESP_BYTES,
    Disconnect: encode_disconnect,
    Auth: encode_auth,
}


# --- decoders -------------------------------------------------------------------------


def _read_reason(value: int, allowed: frozenset[int], name: str) -> int:
    if value not in allowed:
        raise malformed(f"{name} reason code {value:#04x} is not one {name} may carry")
    return REASON_OF[value]


def decode_connect_body(level: int, buf: bytearray, pos: int, end: int) -> Connect:
    """The rest of an MQTT 5.0 CONNECT, after the protocol level."""
    flags, keepalive, pos = read_connect_flags(buf, pos, end, level)
    props, pos = decode_properties(buf, pos, end, Context.CONNECT, "CONNECT")
    client_id, pos = read_client_id(buf, pos, end)
    will = None
    if flags & 0x04:
        will_props, pos = decode_properties(buf, pos, end, Context.WILL, "CONNECT will")
        will_topic, pos = read_topic_name(buf, pos, end, "CONNECT will topic")
        will_payload, pos = read_binary(buf, pos, end, "CONNECT will message")
        will = built(Will, will_topic, will_payload, (flags >> 3) & 3, bool(flags & 0x20),
                     will_props)
    username = password = None
    if flags & 0x80:
        username, pos = read_str(buf, pos, end, "CONNECT username")
    if flags & 0x40:
        password, pos = read_binary(buf, pos, end, "CONNECT password")
    no_trailing_bytes(pos, end, "CONNECT")
    if props.authentication_data is not None and props.authentication_method is None:
        raise protocol_error("CONNECT has Authentication Data without an Authentication Method")
    return built(
        Connect, client_id=client_id, keepalive=keepalive, clean_session=bool(flags & 0x02),
        username=username, password=password, will=will, protocol_level=5, properties=props,
    )


def decode_connack(first: int, buf: bytearray, pos: int, end: int) -> ConnAck:
    if end - pos < 2:
        raise malformed(f"CONNACK remaining length is {end - pos}, must be at least 2")
    ack_flags, code = buf[pos], buf[pos + 1]
    if ack_flags & 0xFE:
        raise malformed(
            f"CONNACK acknowledge flags {ack_flags:#04x} set reserved bits (MQTT-3.2.2-1)"
        )
    if end - pos == 2 and 1 <= code <= 5:
        # A 3.1.1 server refusing our MQTT 5 CONNECT answers in its own format (3.1.1
        # §3.1.2.2): read it as the 5.0 reason code that says the same.
        return ConnAck(CONNACK_REASON_FOR_RETURN_CODE[code])
    reason = _read_reason(code, CONNACK_REASONS, "CONNACK")
    if ack_flags and reason:
        raise protocol_error(
            f"CONNACK sets session present with reason code {code:#04x} (MQTT-3.2.2-6)"
        )
    props, pos = decode_properties(buf, pos + 2, end, Context.CONNACK, "CONNACK")
    no_trailing_bytes(pos, end, "CONNACK")
    return built(ConnAck, reason, bool(ack_flags), props)


def decode_publish(first: int, buf: bytearray, pos: int, end: int) -> Publish:
    # As _wire.decode_publish (inline, for speed), with the properties after the packet id
    # and an empty topic allowed when a Topic Alias stands for it.
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1]) if pos + 2 <= end else end + 1
    if stop > end:
        raise bad_publish_topic(buf, pos, end, alias=True)
    try:
        topic = buf[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_publish_topic(buf, pos, end, alias=True) from None
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise bad_publish_topic(buf, pos, end, alias=True)
    qos = (first >> 1) & 3
    packet_id = None
    if qos:
        if stop + 2 > end:
            raise malformed("PUBLISH packet id is cut short by the end of the packet")
        packet_id = (buf[stop] << 8) | buf[stop + 1]
        if not packet_id:
            raise malformed("PUBLISH packet id is 0")
        stop += 2
    if stop < end and not buf[stop]:
        props, stop = EMPTY, stop + 1
    else:
        props, stop = decode_properties(buf, stop, end, Context.PUBLISH, "PUBLISH")
    if not topic and props.topic_alias is None:
        raise protocol_error("PUBLISH topic is empty and it has no Topic Alias",
                             ReasonCode.TOPIC_NAME_INVALID)
    event: Publish = _new(Publish)
    setattr_ = _set.__get__(event)
    setattr_("topic", topic)
    setattr_("payload", bytes(buf[stop:end]))
    setattr_("qos", qos)
    setattr_("retain", bool(first & 1))
    setattr_("dup", bool(first & 8))
    setattr_("packet_id", packet_id)
    setattr_("properties", props)
    return event


_new = object.__new__
_set = object.__setattr__


def _ack_decoder(cls: type, name: str, allowed: frozenset[int], context: int) -> Decoder:
    def decode(first: int, buf: bytearray, pos: int, end: int) -> Any:
        size = end - pos
        if size < 2:
            raise malformed(f"{name} remaining length is {size}, must be at least 2")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise malformed(f"{name} packet id is 0")
        if size == 2:
            return trusted_ack(cls, packet_id, ReasonCode.SUCCESS, EMPTY)
        reason = _read_reason(buf[pos + 2], allowed, name)
        props = EMPTY
        if size > 3:
            props, stop = decode_properties(buf, pos + 3, end, context, name)
            no_trailing_bytes(stop, end, name)
        return trusted_ack(cls, packet_id, reason, props)

    decode.__name__ = f"decode_{name.lower()}"
    return decode


def _read_options(buf: bytearray, pos: int, end: int, topic_filter: str) -> SubscriptionOptions:
    if pos >= end:
        raise malformed(f"SUBSCRIBE topic filter {topic_filter!r} has no options byte")
    byte = buf[pos]
    what = f"SUBSCRIBE options {byte:#04x} for {topic_filter!r}"
    if byte & 0xC0:
        raise malformed(f"{what} set reserved bits 6-7 (MQTT-3.8.3-5)")
    if byte & 3 == 3:
        raise malformed(f"{what} ask for QoS 3")
    if byte >> 4 == 3:
        raise protocol_error(f"{what} have Retain Handling 3")
    if byte & 4 and topic_filter.startswith("$share/"):
        raise protocol_error(f"{what} set No Local on a shared subscription (MQTT-3.8.3-4)")
    return SubscriptionOptions.from_byte(byte)


def decode_subscribe(first: int, buf: bytearray, pos: int, end: int) -> Subscribe:
    packet_id = read_packet_id(buf, pos, end, "SUBSCRIBE")
    props, pos = decode_properties(buf, pos + 2, end, Context.SUBSCRIBE, "SUBSCRIBE")
    if len(props.subscription_identifiers) > 1:
        raise protocol_error("SUBSCRIBE has more than one Subscription Identifier")
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_topic_filter(buf, pos, end, "SUBSCRIBE topic filter",
                                              shared=True)
        subscriptions.append((topic_filter, _read_options(buf, pos, end, topic_filter)))
        pos += 1
    if not subscriptions:
        raise protocol_error("SUBSCRIBE has no topic filter (MQTT-3.8.3-2)")
    return built(Subscribe, packet_id, tuple(subscriptions), props)


def _codes_after_properties(
    buf: bytearray, pos: int, end: int, name: str, context: int, allowed: frozenset[int]
) -> tuple[int, Properties, tuple[int, ...]]:
    packet_id = read_packet_id(buf, pos, end, name)
    props, pos = decode_properties(buf, pos + 2, end, context, name)
    codes = tuple(_read_reason(code, allowed, name) for code in buf[pos:end])
    if not codes:
        raise protocol_error(f"{name} has no reason code")
    return packet_id, props, codes


def decode_suback(first: int, buf: bytearray, pos: int, end: int) -> SubAck:
    packet_id, props, codes = _codes_after_properties(
        buf, pos, end, "SUBACK", Context.SUBACK, SUBACK_REASONS)
    return built(SubAck, packet_id, codes, props)


def decode_unsuback(first: int, buf: bytearray, pos: int, end: int) -> UnsubAck:
    packet_id, props, codes = _codes_after_properties(
        buf, pos, end, "UNSUBACK", Context.UNSUBACK, UNSUBACK_REASONS)
    return built(UnsubAck, packet_id, codes, props)


def decode_unsubscribe(first: int, buf: bytearray, pos: int, end: int) -> Unsubscribe:
    packet_id = read_packet_id(buf, pos, end, "UNSUBSCRIBE")
    props, pos = decode_properties(buf, pos + 2, end, Context.UNSUBSCRIBE, "UNSUBSCRIBE")
    topic_filters = []
    while pos < end:
        topic_filter, pos = read_topic_filter(buf, pos, end, "UNSUBSCRIBE topic filter",
                                              shared=True)
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise protocol_error("UNSUBSCRIBE has no topic filter (MQTT-3.10.3-2)")
    return built(Unsubscribe, packet_id, tuple(topic_filters), props)


_DISCONNECT = Disconnect()
_AUTH_SUCCESS = Auth()


def decode_disconnect(first: int, buf: bytearray, pos: int, end: int) -> Disconnect:
    if pos == end:
        return _DISCONNECT
    reason = _read_reason(buf[pos], DISCONNECT_REASONS, "DISCONNECT")
    props = EMPTY
    if end - pos > 1:
        props, stop = decode_properties(buf, pos + 1, end, Context.DISCONNECT, "DISCONNECT")
        no_trailing_bytes(stop, end, "DISCONNECT")
    return built(Disconnect, reason, props)


def decode_auth(first: int, buf: bytearray, pos: int, end: int) -> Auth:
    if pos == end:
        return _AUTH_SUCCESS
    reason = _read_reason(buf[pos], AUTH_REASONS, "AUTH")
    props = EMPTY
    if end - pos > 1:
        props, stop = decode_properties(buf, pos + 1, end, Context.AUTH, "AUTH")
        no_trailing_bytes(stop, end, "AUTH")
    if props.authentication_data is not None and props.authentication_method is None:
        raise protocol_error("AUTH has Authentication Data without an Authentication Method")
    return built(Auth, reason, props)


#: Decoder of each packet type but CONNECT, indexed by type number.
DECODERS: list[Decoder | None] = [
    None,
    None,
    decode_connack,
    decode_publish,
    _ack_decoder(PubAck, "PUBACK", PUBACK_REASONS, Context.PUBACK),
    _ack_decoder(PubRec, "PUBREC", PUBREC_REASONS, Context.PUBREC),
    _ack_decoder(PubRel, "PUBREL", PUBREL_REASONS, Context.PUBREL),
    _ack_decoder(PubComp, "PUBCOMP", PUBCOMP_REASONS, Context.PUBCOMP),
    decode_subscribe,
    decode_suback,
    decode_unsubscribe,
    decode_unsuback,
    empty_decoder(PingReq(), "PINGREQ"),
    empty_decoder(PingResp(), "PINGRESP"),
    decode_disconnect,
    decode_auth,
]
