"""Frozen event classes: one per MQTT control packet, plus :class:`ConnectionClosed`.

Events are plain immutable values (attrs, frozen) with a common base class :class:`Event`.
``Connection.send(event)`` turns one into bytes and ``Connection.next_event()`` produces
them from received bytes. One set of classes serves MQTT 3.1.1 and 5.0: the 5.0 fields
(``properties``, ``reason_code``, ...) have defaults that mean "none", which is all 3.1.1
can carry.

An event that no valid packet could carry cannot be built: the constructor raises
:class:`InvalidEventError` (a LocalProtocolError and a ValueError; also a TypeError, as
:class:`InvalidEventTypeError`, when a field has the wrong type). What depends on the
connection — the protocol version, the state, the peer's limits — is checked by
``Connection.send`` (LocalProtocolError). Decoders validate the wire data first and raise
RemoteProtocolError, then build events without running these checks again.
"""
from __future__ import annotations

from typing import Any

import attrs

from ._errors import InvalidEventError, InvalidEventTypeError
from ._properties import EMPTY, Context, Properties, misplaced
from ._reason import (
    AUTH_REASONS,
    CONNACK_REASONS,
    CONNACK_RETURN_CODES,
    DISCONNECT_REASONS,
    PUBACK_REASONS,
    PUBCOMP_REASONS,
    PUBREC_REASONS,
    PUBREL_REASONS,
    SUBACK_FAILURE,
    SUBACK_REASONS,
    SUBACK_RETURN_CODES,
    UNSUBACK_REASONS,
    ConnackCode,
    ReasonCode,
)
from ._topics import shared_subscription, string_problem, topic_filter_problem

_MAX_U16 = 0xFFFF
_FLAGS = (False, True)
_new = object.__new__
_set = object.__setattr__
_PUBLISH = Context.PUBLISH


# --- checks shared by the constructors ----------------------------------------------------


def _type_error(what: str, expected: str, value: object) -> InvalidEventTypeError:
    return InvalidEventTypeError(f"{what} must be {expected}, not {type(value).__name__}")


def _check_int(value: object, low: int, high: int, what: str) -> None:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise _type_error(what, "an int", value)
    if not low <= value <= high:
        raise InvalidEventError(f"{what} must be an int in {low}..{high}, not {value!r}")


def _check_packet_id(value: object, what: str) -> None:
    if type(value) is not int or not 0 < value <= _MAX_U16:
        raise InvalidEventError(f"{what} packet_id must be an int in 1..65535, not {value!r}")


def _check_qos(value: object, what: str) -> None:
    if type(value) is not int or not 0 <= value <= 2:
        raise InvalidEventError(f"{what} QoS must be 0, 1 or 2, not {value!r}")


def _check_flag(value: object, what: str) -> None:
    if value not in _FLAGS:
        raise InvalidEventError(f"{what} must be a bool, not {value!r}")


def _check_str(value: object, what: str) -> None:
    if type(value) is not str:
        raise _type_error(what, "str", value)
    problem = string_problem(value)
    if problem:
        raise InvalidEventError(f"{what} {problem}")


def _check_bytes(value: object, what: str, limit: int | None = _MAX_U16) -> None:
    if type(value) is not bytes and not isinstance(value, (bytearray, memoryview)):
        raise _type_error(what, "bytes", value)
    if limit is not None and len(value) > limit:
        raise InvalidEventError(f"{what} is {len(value)} bytes, over {limit}")


def _check_topic_name(topic: object, what: str, *, alias: bool = False) -> None:
    # The common case (a short ASCII topic) costs four tests.
    if type(topic) is not str:
        raise _type_error(what, "str", topic)
    if not topic:
        if alias:
            return  # 5.0 §3.3.2.3.4: a zero-length topic takes its name from the alias
        raise InvalidEventError(f"{what} is empty")
    if "+" in topic or "#" in topic:
        raise InvalidEventError(f"{what} contains wildcard {'+' if '+' in topic else '#'!r}")
    if "\x00" in topic or not topic.isascii() or len(topic) > _MAX_U16:
        problem = string_problem(topic)
        if problem:
            raise InvalidEventError(f"{what} {problem}")


def _check_properties(props: object, context: int, what: str) -> Properties:
    """``props`` if it may appear in ``context``; an empty one becomes EMPTY, so that the
    codec can test "no properties" by identity."""
    if props is EMPTY:
        return EMPTY
    if type(props) is not Properties:
        raise _type_error(f"{what} properties", "a Properties", props)
    if not props:
        return EMPTY
    spec = misplaced(props, context)
    if spec is not None:
        raise InvalidEventError(f"{what} may not carry property {spec.label}")
    return props


def _store_properties(event: Any, context: int, what: str) -> None:
    """Check an attrs event's properties and store the normalised value."""
    props = _check_properties(event.properties, context, what)
    if props is not event.properties:
        _set(event, "properties", props)


def _check_code(value: object, allowed: frozenset[int], what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        codes = ", ".join(f"{code:#04x}" for code in sorted(allowed))
        raise InvalidEventError(f"{what} must be one of {codes}, not {value!r}")


def _check_tuple(value: object, what: str, *, empty: str | None = None) -> tuple[Any, ...]:
    """``value`` if it is a tuple; ``empty`` is the complaint about an empty one (None:
    an empty tuple is fine)."""
    if type(value) is not tuple:
        raise _type_error(what, "a tuple", value)
    if not value and empty is not None:
        raise InvalidEventError(empty)
    return value


# --- events -------------------------------------------------------------------------------


@attrs.frozen
class Event:
    """Base class of every event."""


class SubscriptionOptions(int):
    """A SUBSCRIBE's options byte (5.0 §3.8.3.1), as the int it is on the wire.

    Bits 0-1 maximum QoS, bit 2 No Local, bit 3 Retain As Published, bits 4-5 Retain
    Handling (0 send retained messages, 1 only for a new subscription, 2 never). With the
    other options off it equals its QoS, so ``("t", 1)`` and ``("t", SubscriptionOptions(1))``
    are the same subscription; MQTT 3.1.1 can carry only those.
    """

    __slots__ = ()

    def __new__(
        cls,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> SubscriptionOptions:
        _check_qos(qos, "subscription")
        _check_flag(no_local, "subscription no_local")
        _check_flag(retain_as_published, "subscription retain_as_published")
        if type(retain_handling) is not int or not 0 <= retain_handling <= 2:
            raise InvalidEventError(
                f"subscription retain_handling must be 0, 1 or 2, not {retain_handling!r}"
            )
        value = qos | no_local << 2 | retain_as_published << 3 | retain_handling << 4
        return super().__new__(cls, value)

    @classmethod
    def from_byte(cls, value: int) -> SubscriptionOptions:
        """The options of a byte already checked by the decoder."""
        return int.__new__(cls, value)

    @property
    def qos(self) -> int:
        return self & 3

    @property
    def no_local(self) -> bool:
        return bool(self & 4)

    @property
    def retain_as_published(self) -> bool:
        return bool(self & 8)

    @property
    def retain_handling(self) -> int:
        return (self >> 4) & 3

    def __repr__(self) -> str:
        return (
            f"SubscriptionOptions(qos={self.qos}, no_local={self.no_local}, "
            f"retain_as_published={self.retain_as_published}, "
            f"retain_handling={self.retain_handling})"
        )


@attrs.frozen
class Will:
    """The Will Message of a CONNECT. ``properties``: Will Properties (5.0 §3.1.3.2)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_topic_name(self.topic, "Will topic")
        _check_bytes(self.payload, "Will payload")
        _check_qos(self.qos, "Will")
        _check_flag(self.retain, "Will retain")
        _store_properties(self, Context.WILL, "Will")


@attrs.frozen
class Connect(Event):
    """CONNECT. ``protocol_level``: 4 = MQTT 3.1.1, 5 = MQTT 5.0, 3 = MQTT 3.1 (MQIsdp).
    In 5.0 ``clean_session`` is the Clean Start flag."""

    client_id: str
    keepalive: int = 60
    clean_session: bool = True
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    protocol_level: int = 4
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        level = self.protocol_level
        if level not in (3, 4, 5) or type(level) is not int:
            raise InvalidEventError(
                f"CONNECT protocol_level must be 5 (MQTT 5.0), 4 (MQTT 3.1.1) or 3 (MQTT 3.1),"
                f" not {level!r}"
            )
        _check_str(self.client_id, "CONNECT client_id")
        _check_int(self.keepalive, 0, _MAX_U16, "CONNECT keepalive")
        _check_flag(self.clean_session, "CONNECT clean_session")
        if self.username is not None:
            _check_str(self.username, "CONNECT username")
        if self.password is not None:
            _check_bytes(self.password, "CONNECT password")
            if self.username is None and level != 5:
                raise InvalidEventError(
                    "CONNECT has a password but no username (MQTT-3.1.2-22; MQTT 5 allows it)"
                )
        if self.will is not None and type(self.will) is not Will:
            raise _type_error("CONNECT will", "a Will", self.will)
        _store_properties(self, Context.CONNECT, "CONNECT")
        if level != 5 and (self.properties or (self.will and self.will.properties)):
            raise InvalidEventError(f"CONNECT properties need protocol_level 5, not {level}")
        props = self.properties
        if props.authentication_data is not None and props.authentication_method is None:
            raise InvalidEventError(
                "CONNECT has Authentication Data without an Authentication Method (§3.1.2.11.10)"
            )


@attrs.frozen
class ConnAck(Event):
    """CONNACK. ``return_code`` is the 3.1.1 return code (:class:`ConnackCode`) or, on an
    MQTT 5.0 connection, the reason code (:class:`ReasonCode`); 0 accepts in both."""

    return_code: int = ConnackCode.ACCEPTED
    session_present: bool = False
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_code(self.return_code, CONNACK_RETURN_CODES | CONNACK_REASONS, "CONNACK code")
        _check_flag(self.session_present, "CONNACK session_present")
        if self.session_present and self.return_code:
            raise InvalidEventError(
                "CONNACK session_present must be 0 when the return code is not 0 "
                "(MQTT-3.2.2-4, MQTT-3.2.2-6)"
            )
        _store_properties(self, Context.CONNACK, "CONNACK")

    @property
    def reason_code(self) -> int:
        """``return_code`` under its MQTT 5.0 name."""
        return self.return_code


def _check_publish(event: Publish) -> None:
    """Every PUBLISH rule, each failure with its own message (the slow path)."""
    props = event.properties
    if type(props) is not Properties:
        raise _type_error("PUBLISH properties", "a Properties", props)
    _check_topic_name(event.topic, "PUBLISH topic", alias=props.topic_alias is not None)
    if type(event.payload) is not bytes:
        _check_bytes(event.payload, "PUBLISH payload", None)
    qos = event.qos
    _check_qos(qos, "PUBLISH")
    _check_flag(event.retain, "PUBLISH retain")
    if qos:
        _check_packet_id(event.packet_id, f"PUBLISH QoS {qos}")
    elif event.packet_id is not None:
        raise InvalidEventError("PUBLISH with QoS 0 must not have a packet_id")
    _check_flag(event.dup, "PUBLISH dup")
    if not qos and event.dup:
        raise InvalidEventError("PUBLISH with QoS 0 must not set dup (MQTT-3.3.1-2)")
    _store_properties(event, Context.PUBLISH, "PUBLISH")


@attrs.frozen(init=False)
class Publish(Event):
    """PUBLISH. ``topic`` may be empty only with a Topic Alias property (5.0); a received
    aliased PUBLISH carries the topic the alias stands for."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # required for QoS 1 and 2, absent for QoS 0
    properties: Properties = EMPTY

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int | None = None,
        properties: Properties = EMPTY,
    ) -> None:
        # Built once per push by the server: the common case (a short ASCII topic, bytes,
        # no properties) is checked inline, anything else by _check_publish.
        setattr_ = _set.__get__(self)
        setattr_("topic", topic)
        setattr_("payload", payload)
        setattr_("qos", qos)
        setattr_("retain", retain)
        setattr_("dup", dup)
        setattr_("packet_id", packet_id)
        setattr_("properties", properties)
        if not (
            type(topic) is str and topic.isascii() and 0 < len(topic) <= _MAX_U16
            and "+" not in topic and "#" not in topic and "\x00" not in topic
            and type(payload) is bytes
            and (properties is EMPTY or (type(properties) is Properties
                                         and properties._places & _PUBLISH))  # type: ignore[attr-defined]
            and (retain is False or retain is True)
            and (
                (qos == 0 and packet_id is None and dup is False)
                or ((qos == 1 or qos == 2) and type(qos) is int and type(packet_id) is int
                    and 0 < packet_id <= _MAX_U16 and (dup is False or dup is True))
            )
        ):
            _check_publish(self)


def _check_ack(
    name: str, packet_id: object, reason_code: object, properties: object,
    allowed: frozenset[int], context: int,
) -> Properties:
    _check_packet_id(packet_id, name)
    if reason_code:
        _check_code(reason_code, allowed, f"{name} reason_code")
    return _check_properties(properties, context, name)


class _Ack(Event):
    """What PUBACK, PUBREC, PUBREL and PUBCOMP share: a packet id, in 5.0 a reason code and
    properties. The constructor checks the common case inline."""

    __slots__ = ()
    _NAME = ""
    _ALLOWED: frozenset[int] = frozenset()
    _CONTEXT = 0

    packet_id: int
    reason_code: int
    properties: Properties

    def __init__(
        self, packet_id: int, reason_code: int = ReasonCode.SUCCESS,
        properties: Properties = EMPTY,
    ) -> None:
        if (type(packet_id) is not int or not 0 < packet_id <= _MAX_U16 or reason_code
                or properties is not EMPTY):
            properties = _check_ack(self._NAME, packet_id, reason_code, properties,
                                    self._ALLOWED, self._CONTEXT)
        setattr_ = _set.__get__(self)
        setattr_("packet_id", packet_id)
        setattr_("reason_code", reason_code)
        setattr_("properties", properties)


@attrs.frozen(init=False)
class PubAck(_Ack):
    _NAME, _ALLOWED, _CONTEXT = "PUBACK", PUBACK_REASONS, Context.PUBACK
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY


@attrs.frozen(init=False)
class PubRec(_Ack):
    _NAME, _ALLOWED, _CONTEXT = "PUBREC", PUBREC_REASONS, Context.PUBREC
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY


@attrs.frozen(init=False)
class PubRel(_Ack):
    _NAME, _ALLOWED, _CONTEXT = "PUBREL", PUBREL_REASONS, Context.PUBREL
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY


@attrs.frozen(init=False)
class PubComp(_Ack):
    _NAME, _ALLOWED, _CONTEXT = "PUBCOMP", PUBCOMP_REASONS, Context.PUBCOMP
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY


def _check_filters(filters: tuple[Any, ...], what: str) -> None:
    for topic_filter in filters:
        if type(topic_filter) is not str:
            raise _type_error(what, "str", topic_filter)
        problem = topic_filter_problem(topic_filter)
        if problem:
            raise InvalidEventError(f"{what} {topic_filter!r} {problem}")


@attrs.frozen
class Subscribe(Event):
    """SUBSCRIBE. Each subscription is ``(topic filter, options)``: the requested QoS as an
    int, or :class:`SubscriptionOptions` for MQTT 5.0's other options."""

    packet_id: int
    subscriptions: tuple[tuple[str, int], ...]
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, "SUBSCRIBE")
        entries = _check_tuple(self.subscriptions, "SUBSCRIBE subscriptions",
                               empty="SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-3)")
        for entry in entries:
            if type(entry) is not tuple or len(entry) != 2:
                raise InvalidEventTypeError(
                    f"SUBSCRIBE subscriptions must be (topic filter, QoS) pairs, not {entry!r}"
                )
            topic_filter, options = entry
            _check_filters((topic_filter,), "SUBSCRIBE topic filter")
            if type(options) is not SubscriptionOptions:
                _check_qos(options, "SUBSCRIBE requested")
            elif options.no_local and shared_subscription(topic_filter):
                raise InvalidEventError(
                    f"SUBSCRIBE sets No Local on shared subscription {topic_filter!r} "
                    "(MQTT-3.8.3-4)"
                )
        _store_properties(self, Context.SUBSCRIBE, "SUBSCRIBE")
        if len(self.properties.subscription_identifiers) > 1:
            raise InvalidEventError("SUBSCRIBE may carry one Subscription Identifier, not several")


@attrs.frozen
class SubAck(Event):
    """SUBACK. ``return_codes``: one per filter, granted QoS 0-2 or a failure (3.1.1: 0x80;
    5.0: a SUBACK reason code)."""

    packet_id: int
    return_codes: tuple[int, ...]
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, "SUBACK")
        codes = _check_tuple(self.return_codes, "SUBACK return_codes",
                             empty="SUBACK needs at least one return code (MQTT-3.9.3-1)")
        for code in codes:
            _check_code(code, SUBACK_RETURN_CODES | SUBACK_REASONS, "SUBACK return code")
        _store_properties(self, Context.SUBACK, "SUBACK")

    @property
    def reason_codes(self) -> tuple[int, ...]:
        """``return_codes`` under its MQTT 5.0 name."""
        return self.return_codes


@attrs.frozen
class Unsubscribe(Event):
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, "UNSUBSCRIBE")
        if isinstance(self.topic_filters, str):
            raise InvalidEventTypeError(
                "UNSUBSCRIBE topic_filters must be a tuple of str, not a str"
            )
        filters = _check_tuple(
            self.topic_filters, "UNSUBSCRIBE topic_filters",
            empty="UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)")
        _check_filters(filters, "UNSUBSCRIBE topic filter")
        _store_properties(self, Context.UNSUBSCRIBE, "UNSUBSCRIBE")


@attrs.frozen
class UnsubAck(Event):
    """UNSUBACK. ``reason_codes``: one per filter in MQTT 5.0, none in 3.1.1."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, "UNSUBACK")
        for code in _check_tuple(self.reason_codes, "UNSUBACK reason_codes"):
            _check_code(code, UNSUBACK_REASONS, "UNSUBACK reason code")
        _store_properties(self, Context.UNSUBACK, "UNSUBACK")


@attrs.frozen
class PingReq(Event):
    pass


@attrs.frozen
class PingResp(Event):
    pass


@attrs.frozen
class Disconnect(Event):
    """DISCONNECT. MQTT 5.0 adds a reason code and properties, and lets the server send it."""

    reason_code: int = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        if self.reason_code:
            _check_code(self.reason_code, DISCONNECT_REASONS, "DISCONNECT reason_code")
        _store_properties(self, Context.DISCONNECT, "DISCONNECT")


@attrs.frozen
class Auth(Event):
    """AUTH (MQTT 5.0 only): a step of enhanced authentication (§4.12)."""

    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY

    def __attrs_post_init__(self) -> None:
        _check_code(self.reason_code, AUTH_REASONS, "AUTH reason_code")
        _store_properties(self, Context.AUTH, "AUTH")
        props = self.properties
        if props.authentication_data is not None and props.authentication_method is None:
            raise InvalidEventError("AUTH has Authentication Data without an Authentication Method")


@attrs.frozen
class ConnectionClosed(Event):
    """The peer closed its side (``receive_data(b"")``) at a packet boundary."""


# --- building already-validated events (the decoders) ---------------------------------------


def trusted_publish(
    topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int | None,
    properties: Properties,
) -> Publish:
    """A Publish from fields the decoder has validated (no checks run)."""
    event: Publish = _new(Publish)
    _set(event, "topic", topic)
    _set(event, "payload", payload)
    _set(event, "qos", qos)
    _set(event, "retain", retain)
    _set(event, "dup", dup)
    _set(event, "packet_id", packet_id)
    _set(event, "properties", properties)
    return event


def trusted_ack(cls: type[Any], packet_id: int, reason_code: int, properties: Properties) -> Any:
    """A PubAck/PubRec/PubRel/PubComp from validated fields."""
    event = _new(cls)
    _set(event, "packet_id", packet_id)
    _set(event, "reason_code", reason_code)
    _set(event, "properties", properties)
    return event


def trusted(cls: type[Any], **fields: Any) -> Any:
    """Any event from validated fields (for the rarer packets)."""
    event = _new(cls)
    for field in attrs.fields(cls):
        _set(event, field.name, fields.get(field.name, field.default))
    return event


__all__ = [
    "SUBACK_FAILURE",
    "ConnackCode",
    "ReasonCode",
    "Event",
    "SubscriptionOptions",
    "Will",
    "Connect",
    "ConnAck",
    "Publish",
    "PubAck",
    "PubRec",
    "PubRel",
    "PubComp",
    "Subscribe",
    "SubAck",
    "Unsubscribe",
    "UnsubAck",
    "PingReq",
    "PingResp",
    "Disconnect",
    "Auth",
    "ConnectionClosed",
]
