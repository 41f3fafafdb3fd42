"""MQTT 5.0 properties (§2.2.2): the typed :class:`Properties` value and its wire form.

Every property of the spec's table (§2.2.2.2) is a named field of :class:`Properties`, with
its wire type and the packets it may appear in written once in :data:`SPECS`. Encoding
writes the set fields in the order they are stored (ascending identifier when built by
hand, wire order when decoded); decoding keeps the order of repeated User Properties.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from typing import Any, TypedDict, Unpack

import attrs

from ._errors import InvalidEventError, InvalidEventTypeError, malformed, protocol_error
from ._reason import ReasonCode
from ._primitives import (
    MAX_U16,
    MAX_U32,
    MAX_VARINT,
    U16,
    encode_varint,
    read_binary,
    read_str,
    read_u16,
    read_u32,
    read_varint,
)
from ._topics import string_problem, topic_name_problem


class Context(enum.IntFlag):
    """Where a property may appear: the packet types (bit = 1 << type number) and the Will."""

    CONNECT = 1 << 1
    CONNACK = 1 << 2
    PUBLISH = 1 << 3
    PUBACK = 1 << 4
    PUBREC = 1 << 5
    PUBREL = 1 << 6
    PUBCOMP = 1 << 7
    SUBSCRIBE = 1 << 8
    SUBACK = 1 << 9
    UNSUBSCRIBE = 1 << 10
    UNSUBACK = 1 << 11
    DISCONNECT = 1 << 14
    AUTH = 1 << 15
    WILL = 1 << 16


C = Context
_MESSAGE = C.PUBLISH | C.WILL
_ACKS = C.PUBACK | C.PUBREC | C.PUBREL | C.PUBCOMP
_EVERYWHERE = (
    C.CONNECT | C.CONNACK | _MESSAGE | _ACKS | C.SUBSCRIBE | C.SUBACK | C.UNSUBSCRIBE
    | C.UNSUBACK | C.DISCONNECT | C.AUTH
)


class Kind(enum.Enum):
    """Wire data types of property values (§1.5, §2.2.2.2)."""

    BYTE = "Byte"
    BOOL = "Byte (0 or 1)"
    TWO_BYTE = "Two Byte Integer"
    FOUR_BYTE = "Four Byte Integer"
    VARINT = "Variable Byte Integer"
    UTF8 = "UTF-8 Encoded String"
    BINARY = "Binary Data"
    UTF8_PAIR = "UTF-8 String Pair"


@attrs.frozen
class Spec:
    """One row of the property table: identifier, field name, type, where it may appear,
    whether it may repeat, and the least value allowed (for integers)."""

    ident: int
    name: str
    kind: Kind
    contexts: int
    repeatable: bool = False
    minimum: int = 0

    @property
    def label(self) -> str:
        """The spec's name, e.g. "Message Expiry Interval (0x02)"."""
        words = self.name.removesuffix("s") if self.repeatable else self.name
        return f"{words.replace('_', ' ').title()} ({self.ident:#04x})"


K = Kind
#: §2.2.2.2, in identifier order.
SPECS: tuple[Spec, ...] = (
    Spec(0x01, "payload_format_indicator", K.BYTE, _MESSAGE),
    Spec(0x02, "message_expiry_interval", K.FOUR_BYTE, _MESSAGE),
    Spec(0x03, "content_type", K.UTF8, _MESSAGE),
    Spec(0x08, "response_topic", K.UTF8, _MESSAGE),
    Spec(0x09, "correlation_data", K.BINARY, _MESSAGE),
    Spec(0x0B, "subscription_identifiers", K.VARINT, C.PUBLISH | C.SUBSCRIBE, True, 1),
    Spec(0x11, "session_expiry_interval", K.FOUR_BYTE, C.CONNECT | C.CONNACK | C.DISCONNECT),
    Spec(0x12, "assigned_client_identifier", K.UTF8, C.CONNACK),
    Spec(0x13, "server_keep_alive", K.TWO_BYTE, C.CONNACK),
    Spec(0x15, "authentication_method", K.UTF8, C.CONNECT | C.CONNACK | C.AUTH),
    Spec(0x16, "authentication_data", K.BINARY, C.CONNECT | C.CONNACK | C.AUTH),
    Spec(0x17, "request_problem_information", K.BOOL, C.CONNECT),
    Spec(0x18, "will_delay_interval", K.FOUR_BYTE, C.WILL),
    Spec(0x19, "request_response_information", K.BOOL, C.CONNECT),
    Spec(0x1A, "response_information", K.UTF8, C.CONNACK),
    Spec(0x1C, "server_reference", K.UTF8, C.CONNACK | C.DISCONNECT),
    Spec(0x1F, "reason_string", K.UTF8,
         C.CONNACK | _ACKS | C.SUBACK | C.UNSUBACK | C.DISCONNECT | C.AUTH),
    Spec(0x21, "receive_maximum", K.TWO_BYTE, C.CONNECT | C.CONNACK, minimum=1),
    Spec(0x22, "topic_alias_maximum", K.TWO_BYTE, C.CONNECT | C.CONNACK),
    Spec(0x23, "topic_alias", K.TWO_BYTE, C.PUBLISH, minimum=1),
    Spec(0x24, "maximum_qos", K.BYTE, C.CONNACK),
    Spec(0x25, "retain_available", K.BOOL, C.CONNACK),
    Spec(0x26, "user_properties", K.UTF8_PAIR, _EVERYWHERE, True),
    Spec(0x27, "maximum_packet_size", K.FOUR_BYTE, C.CONNECT | C.CONNACK, minimum=1),
    Spec(0x28, "wildcard_subscription_available", K.BOOL, C.CONNACK),
    Spec(0x29, "subscription_identifier_available", K.BOOL, C.CONNACK),
    Spec(0x2A, "shared_subscription_available", K.BOOL, C.CONNACK),
)
BY_NAME = {spec.name: spec for spec in SPECS}
BY_ID: list[Spec | None] = [None] * 256
for _spec in SPECS:
    BY_ID[_spec.ident] = _spec
_RANK = {spec.name: i for i, spec in enumerate(SPECS)}
#: Byte properties whose only values are 0 and 1 (§3.1.2.11, §3.2.2.3).
_ZERO_OR_ONE = frozenset(("payload_format_indicator", "maximum_qos"))


class PropertyValues(TypedDict, total=False):
    """The keyword arguments of :class:`Properties` (for type checkers)."""

    payload_format_indicator: int | None
    message_expiry_interval: int | None
    content_type: str | None
    response_topic: str | None
    correlation_data: bytes | None
    subscription_identifiers: Iterable[int]
    session_expiry_interval: int | None
    assigned_client_identifier: str | None
    server_keep_alive: int | None
    authentication_method: str | None
    authentication_data: bytes | None
    request_problem_information: bool | None
    will_delay_interval: int | None
    request_response_information: bool | None
    response_information: str | None
    server_reference: str | None
    reason_string: str | None
    receive_maximum: int | None
    topic_alias_maximum: int | None
    topic_alias: int | None
    maximum_qos: int | None
    retain_available: bool | None
    user_properties: Iterable[tuple[str, str]]
    maximum_packet_size: int | None
    wildcard_subscription_available: bool | None
    subscription_identifier_available: bool | None
    shared_subscription_available: bool | None


_EMPTY: Properties | None = None


def _unset(value: object) -> bool:
    return value is None or (type(value) in (tuple, list) and not value)


@attrs.frozen(slots=False, init=False, eq=False, repr=False)
class Properties:
    """The properties of one MQTT 5.0 packet (or of a Will): immutable, every field named.

    Unset fields are None (``user_properties`` and ``subscription_identifiers``: an empty
    tuple). ``user_properties`` is a tuple of ``(name, value)`` pairs in wire order, names
    may repeat. ``subscription_identifiers`` may hold several values only in a PUBLISH from
    a server; use :attr:`subscription_identifier` for the single one of a SUBSCRIBE.
    Building an invalid value raises :class:`InvalidEventError`; which fields a packet may
    carry is checked when the packet's event is built. ``bool(props)`` is False when no field
    is set.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None

    def __new__(cls, **values: Unpack[PropertyValues]) -> Properties:
        # Every empty Properties is the one EMPTY, so "no properties" is an identity test.
        if _EMPTY is not None and all(_unset(value) for value in values.values()):
            return _EMPTY
        return super().__new__(cls)

    def __init__(self, **values: Unpack[PropertyValues]) -> None:
        # Only the fields that are set are stored (the rest read as the class defaults), so
        # encoding visits only what is there, in identifier order.
        stored: dict[str, Any] = {}
        for name, value in values.items():
            spec = BY_NAME.get(name)
            if spec is None:
                raise TypeError(f"Properties() got an unexpected keyword argument {name!r}")
            if value is None:
                continue
            checked = _checked(spec, value)
            if not spec.repeatable or checked:
                stored[name] = checked
        if len(stored) > 1 and list(stored) != sorted(stored, key=_RANK.__getitem__):
            stored = {name: stored[name] for name in sorted(stored, key=_RANK.__getitem__)}
        object.__setattr__(self, "__dict__", stored)

    @property
    def subscription_identifier(self) -> int | None:
        """The first (in a SUBSCRIBE: the only) subscription identifier, or None."""
        ids = self.subscription_identifiers
        return ids[0] if ids else None

    def as_dict(self) -> dict[str, Any]:
        """The set fields, by name (a copy)."""
        return dict(self.__dict__)

    def __bool__(self) -> bool:
        return bool(self.__dict__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Properties:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(frozenset(self.__dict__.items()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"Properties({fields})"


# attrs removed the class attributes; put the defaults back so an unset field reads its
# default from the class while instances store only what is set.
for _field in attrs.fields(Properties):
    setattr(Properties, _field.name, _field.default)

#: The Properties with nothing set, shared by every event that has none.
EMPTY = Properties()
_EMPTY = EMPTY
_new = object.__new__
_set = object.__setattr__


def from_wire(found: dict[str, Any]) -> Properties:
    """A Properties over already-validated decoded values (no checks, no copy)."""
    props: Properties = _new(Properties)
    _set(props, "__dict__", found)
    return props


# --- construction checks ----------------------------------------------------------------


_MAXIMUM = {K.BYTE: 1, K.TWO_BYTE: MAX_U16, K.FOUR_BYTE: MAX_U32, K.VARINT: MAX_VARINT}


def _checked(spec: Spec, value: Any) -> Any:
    """``value`` validated (and normalised: tuples, bytes, bool) for ``spec``."""
    what = f"property {spec.name}"
    kind = spec.kind
    if spec.repeatable:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise InvalidEventTypeError(f"{what} must be a tuple, not {type(value).__name__}")
        single = attrs.evolve(spec, repeatable=False)
        return tuple(_checked(single, item) for item in value)
    if kind is K.BOOL:
        if value not in (False, True) or not isinstance(value, int):
            raise InvalidEventError(f"{what} must be a bool, not {value!r}")
        return bool(value)
    if kind in _MAXIMUM:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEventTypeError(f"{what} must be an int, not {type(value).__name__}")
        top = _MAXIMUM[kind]
        if not spec.minimum <= value <= top:
            raise InvalidEventError(f"{what} must be in {spec.minimum}..{top}, not {value!r}")
        return value
    if kind is K.BINARY:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidEventTypeError(f"{what} must be bytes, not {type(value).__name__}")
        raw = bytes(value)
        if len(raw) > MAX_U16:
            raise InvalidEventError(f"{what} is {len(raw)} bytes, over 65535")
        return raw
    if kind is K.UTF8:
        return _checked_str(spec, value, what)
    return _checked_pair(value, what)


def _checked_str(spec: Spec, value: object, what: str) -> str:
    if type(value) is not str:
        raise InvalidEventTypeError(f"{what} must be str, not {type(value).__name__}")
    check = topic_name_problem if spec.name == "response_topic" else string_problem
    problem = check(value)
    if problem:
        raise InvalidEventError(f"{what} {value!r} {problem}")
    return value


def _checked_pair(value: object, what: str) -> tuple[str, str]:
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidEventTypeError(f"{what} entries must be (name, value) pairs, not {value!r}")
    for part in value:
        if type(part) is not str:
            raise InvalidEventTypeError(f"{what} entries must be pairs of str, not {value!r}")
        problem = string_problem(part)
        if problem:
            raise InvalidEventError(f"{what} {part!r} {problem}")
    return value


def misplaced(props: Properties, context: int) -> Spec | None:
    """The first set property that may not appear in ``context``, or None."""
    for name in props.__dict__:
        spec = BY_NAME[name]
        if not spec.contexts & context:
            return spec
    return None


# --- encoding -------------------------------------------------------------------------------

_U32 = struct.Struct("!BI")
_U16_ID = struct.Struct("!BH")


def _write_byte(ident: int, value: Any) -> bytes:
    return bytes((ident, int(value)))


def _write_two(ident: int, value: Any) -> bytes:
    return _U16_ID.pack(ident, value)


def _write_four(ident: int, value: Any) -> bytes:
    return _U32.pack(ident, value)


def _write_varints(ident: int, value: Any) -> bytes:
    return b"".join(bytes((ident,)) + encode_varint(item) for item in value)


def _write_str(ident: int, value: Any) -> bytes:
    raw: bytes = value.encode("utf-8")
    return _U16_ID.pack(ident, len(raw)) + raw


def _write_binary(ident: int, value: Any) -> bytes:
    raw: bytes = value
    return _U16_ID.pack(ident, len(raw)) + raw


def _write_pairs(ident: int, value: Any) -> bytes:
    parts = []
    for name, text in value:
        raw_name = name.encode("utf-8")
        raw_text = text.encode("utf-8")
        parts.append(_U16_ID.pack(ident, len(raw_name)) + raw_name
                     + U16.pack(len(raw_text)) + raw_text)
    return b"".join(parts)


_WRITERS: dict[Kind, Callable[[int, Any], bytes]] = {
    K.BYTE: _write_byte, K.BOOL: _write_byte, K.TWO_BYTE: _write_two,
    K.FOUR_BYTE: _write_four, K.VARINT: _write_varints, K.UTF8: _write_str,
    K.BINARY: _write_binary, K.UTF8_PAIR: _write_pairs,
}
#: name -> (identifier, writer), for the encoder's loop.
_ENCODE = {spec.name: (spec.ident, _WRITERS[spec.kind]) for spec in SPECS}


def encode_properties(props: Properties) -> bytes:
    """Property length and properties (§2.2.2.1). The caller has checked placement."""
    values = props.__dict__
    if not values:
        return b"\x00"
    encode = _ENCODE
    body = b"".join([encode[name][1](encode[name][0], value) for name, value in values.items()])
    size = len(body)
    return (bytes((size,)) if size < 0x80 else encode_varint(size)) + body


# --- decoding -------------------------------------------------------------------------------


def _read_byte(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    if pos >= stop:
        raise malformed(f"{what} property {spec.label} is cut short")
    value = buf[pos]
    if spec.kind is K.BOOL or spec.name in _ZERO_OR_ONE:
        if value > 1:
            raise protocol_error(f"{what} property {spec.label} is {value}, must be 0 or 1")
        if spec.kind is K.BOOL:
            return value == 1, pos + 1
    return value, pos + 1


def _read_number(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    label = f"{what} property {spec.label}"
    if spec.kind is K.TWO_BYTE:
        value, pos = read_u16(buf, pos, stop, label), pos + 2
    elif spec.kind is K.FOUR_BYTE:
        value, pos = read_u32(buf, pos, stop, label), pos + 4
    else:
        value, pos = read_varint(buf, pos, stop, label)
    if value < spec.minimum and spec.name != "topic_alias":  # alias 0: the connection's 0x94
        raise protocol_error(f"{label} is {value}, must be at least {spec.minimum}")
    return value, pos


def _read_text(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    label = f"{what} property {spec.label}"
    if spec.kind is K.BINARY:
        return read_binary(buf, pos, stop, label)
    if spec.kind is K.UTF8_PAIR:
        name, pos = read_str(buf, pos, stop, f"{label} name")
        value, pos = read_str(buf, pos, stop, f"{label} value")
        return (name, value), pos
    text, pos = read_str(buf, pos, stop, label)
    if spec.name == "response_topic":
        problem = topic_name_problem(text)
        if problem:  # [MQTT-3.3.2-14]
            raise protocol_error(f"{label} {text!r} {problem}", ReasonCode.TOPIC_NAME_INVALID)
    return text, pos


_READERS: dict[Kind, Callable[[Spec, bytearray, int, int, str], tuple[Any, int]]] = {
    K.BYTE: _read_byte, K.BOOL: _read_byte, K.TWO_BYTE: _read_number,
    K.FOUR_BYTE: _read_number, K.VARINT: _read_number, K.UTF8: _read_text,
    K.BINARY: _read_text, K.UTF8_PAIR: _read_text,
}
#: identifier -> (spec, reader), None for identifiers the spec does not define.
_DECODE: list[tuple[Spec, Callable[[Spec, bytearray, int, int, str], tuple[Any, int]]] | None]
_DECODE = [None if spec is None else (spec, _READERS[spec.kind]) for spec in BY_ID]


def decode_properties(
    buf: bytearray, pos: int, end: int, context: int, what: str
) -> tuple[Properties, int]:
    """Property length and properties at ``pos``; returns (properties, next position).

    An identifier the spec does not define, or one not allowed in ``context``, is a
    Malformed Packet (§2.2.2.2); a non-repeatable property given twice is a Protocol Error.
    """
    if pos >= end:
        raise malformed(f"{what} property length is cut short by the end of the packet")
    length = buf[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = read_varint(buf, pos, end, f"{what} property length")
    if not length:
        return EMPTY, pos
    stop = pos + length
    if stop > end:
        raise malformed(f"{what} properties ({length} bytes) run past the end of the packet")
    found: dict[str, Any] = {}
    while pos < stop:
        entry = _DECODE[buf[pos]]
        if entry is None:
            raise malformed(f"{what} has unknown property identifier {buf[pos]:#04x}")
        spec, read = entry
        if not spec.contexts & context:
            raise malformed(f"{what} may not carry property {spec.label}")
        value, pos = read(spec, buf, pos + 1, stop, what)
        name = spec.name
        if spec.repeatable:
            found[name] = found.get(name, ()) + (value,)
        elif name in found:
            raise protocol_error(f"{what} has property {spec.label} more than once")
        else:
            found[name] = value
    return from_wire(found), stop

