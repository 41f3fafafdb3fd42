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

from ._errors import (
    InvalidEventError,
    InvalidEventTypeError,
    RemoteProtocolError,
    malformed,
    protocol_error,
)
from ._reason import ReasonCode
from ._primitives import (
    MAX_U16,
    MAX_U32,
    MAX_VARINT,
    U16,
    encode_varint,
    read_varint,
)
from ._topics import string_problem, topic_name_problem


class Context:
    """Where a property may appear: the packet types (bit = 1 << type number) and the Will.
    Plain ints, not an IntFlag, because ``&`` on enum flags is slow in the decoding loop."""

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
_ANYWHERE = _EVERYWHERE  # User Property fits everywhere: the start of a placement mask


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
    def zero_or_one(self) -> bool:
        """A Byte whose only values are 0 and 1 (§3.1.2.11, §3.2.2.3)."""
        return self.kind is Kind.BOOL or self.name in _ZERO_OR_ONE

    @property
    def label(self) -> str:
        """The spec's name, e.g. "Message Expiry Interval (0x02)"."""
        words = self.name.removesuffix("s") if self.repeatable else self.name
        return f"{words.replace('_', ' ').title()} ({self.ident:#04x})"


K = Kind
#: Byte properties that are not flags but still take only 0 and 1.
_ZERO_OR_ONE = frozenset(("payload_format_indicator", "maximum_qos"))
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

    # Besides the set fields (in __dict__): the packets all of them may appear in (a mask of
    # Context bits, 0 when empty), and the encoded form once known — a Properties sent to
    # many devices (a broadcast) is encoded once.
    __slots__ = ("__dict__", "_places", "_wire")

    def __init__(self, **values: Unpack[PropertyValues]) -> None:
        # Only the fields that are set are stored (the rest read as the class defaults), so
        # encoding visits only what is there, in identifier order.
        stored: dict[str, Any] = {}
        last = -1
        ordered = True
        places = _ANYWHERE
        for name, value in values.items():
            if value is None:
                continue
            rank = _RANK.get(name)
            if rank is None:
                raise TypeError(f"Properties() got an unexpected keyword argument {name!r}")
            checked = _checked(name, value)
            if checked != ():
                stored[name] = checked
                places &= SPECS[rank].contexts
                ordered = ordered and rank > last
                last = rank
        if not ordered:
            stored = {name: stored[name] for name in sorted(stored, key=_RANK.__getitem__)}
        _set(self, "__dict__", stored)
        _set(self, "_places", places if stored else 0)
        _set(self, "_wire", None)

    def __reduce__(self) -> tuple[Any, ...]:
        # Not copyreg's default, which would call __new__ without values (giving EMPTY).
        return (_restore, (dict(self.__dict__),))

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

_new = object.__new__
_set = object.__setattr__


def _restore(values: dict[str, Any]) -> Properties:
    return Properties(**values) if values else EMPTY


#: The Properties with nothing set, shared by every event that has none.
EMPTY = Properties()


# --- construction checks ----------------------------------------------------------------


_MAXIMUM = {K.BYTE: 1, K.TWO_BYTE: MAX_U16, K.FOUR_BYTE: MAX_U32, K.VARINT: MAX_VARINT}
#: name -> (least, greatest) value of the integer properties (one Subscription Identifier
#: as "subscription_identifier").
_INT_LIMITS: dict[str, tuple[int, int]] = {
    spec.name.removesuffix("s") if spec.repeatable else spec.name:
        (spec.minimum, _MAXIMUM[spec.kind])
    for spec in SPECS if spec.kind in _MAXIMUM
}


def _checked(name: str, value: Any) -> Any:
    """``value`` validated (and normalised: tuples, bytes, bool) for property ``name``. The
    common cases return at once; messages are built only for the errors."""
    limits = _INT_LIMITS.get(name)
    if limits is not None:
        low, high = limits
        if type(value) is int and low <= value <= high:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEventTypeError(
                f"property {name} must be an int, not {type(value).__name__}")
        raise InvalidEventError(f"property {name} must be in {low}..{high}, not {value!r}")
    spec = BY_NAME[name]
    kind = spec.kind
    if kind is K.UTF8_PAIR and type(value) is tuple:  # the common case: a tuple of plain pairs
        for pair in value:
            if not (type(pair) is tuple and len(pair) == 2 and _plain(pair[0])
                    and _plain(pair[1])):
                break
        else:
            return value
    if spec.repeatable:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise InvalidEventTypeError(
                f"property {name} must be a tuple, not {type(value).__name__}")
        if kind is K.UTF8_PAIR:
            return tuple([_checked_pair(item, spec) for item in value])
        return tuple([_checked("subscription_identifier", item) for item in value])
    if kind is K.UTF8:
        return _checked_str(spec, value)
    if kind is K.BOOL:
        if value not in (False, True) or not isinstance(value, int):
            raise InvalidEventError(f"property {name} must be a bool, not {value!r}")
        return bool(value)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidEventTypeError(f"property {name} must be bytes, not {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > MAX_U16:
        raise InvalidEventError(f"property {name} is {len(raw)} bytes, over 65535")
    return raw


def _plain(text: object) -> bool:
    """A str that is certainly a valid MQTT string: short ASCII without U+0000."""
    return (type(text) is str and text.isascii()
            and len(text) <= MAX_U16 and "\x00" not in text)


def _checked_str(spec: Spec, value: object) -> str:
    if _plain(value) and spec.name != "response_topic":
        return value  # type: ignore[return-value]
    what = f"property {spec.name}"
    if type(value) is not str:
        raise InvalidEventTypeError(f"{what} must be str, not {type(value).__name__}")
    check = topic_name_problem if spec.name == "response_topic" else string_problem
    problem = check(value)
    if problem:
        raise InvalidEventError(f"{what} {value!r} {problem}")
    return value


def _checked_pair(value: object, spec: Spec) -> tuple[str, str]:
    if type(value) is tuple and len(value) == 2 and _plain(value[0]) and _plain(value[1]):
        return value
    what = f"property {spec.name}"
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
    if props._places & context:  # type: ignore[attr-defined]
        return None
    for name in props.__dict__:
        spec = BY_NAME[name]
        if not spec.contexts & context:
            return spec
    return None


# --- encoding -------------------------------------------------------------------------------

_U32_ID = struct.Struct("!BI")
_U16_ID = struct.Struct("!BH")


def _write_byte(ident: int, value: Any) -> bytes:
    return bytes((ident, int(value)))


def _write_two(ident: int, value: Any) -> bytes:
    return _U16_ID.pack(ident, value)


def _write_four(ident: int, value: Any) -> bytes:
    return _U32_ID.pack(ident, value)


def _write_varints(ident: int, value: Any) -> bytes:
    return b"".join(bytes((ident,)) + encode_varint(item) for item in value)


def _write_str(ident: int, value: Any) -> bytes:
    raw: bytes = value.encode("utf-8")
    return _U16_ID.pack(ident, len(raw)) + raw


def _write_binary(ident: int, value: Any) -> bytes:
    raw: bytes = value
    return _U16_ID.pack(ident, len(raw)) + raw


def _write_pairs(ident: int, value: Any) -> bytes:
    parts: list[bytes] = []
    for name, text in value:
        raw_name = name.encode("utf-8")
        raw_text = text.encode("utf-8")
        parts += (_U16_ID.pack(ident, len(raw_name)), raw_name, U16.pack(len(raw_text)), raw_text)
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
    data: bytes | None = props._wire  # type: ignore[attr-defined]
    if data is not None:
        return data
    values = props.__dict__
    if not values:
        return b"\x00"
    encode = _ENCODE
    parts = []
    for name, value in values.items():
        ident, write = encode[name]
        parts.append(write(ident, value))
    body = b"".join(parts)
    size = len(body)
    data = (bytes((size,)) if size < 0x80 else encode_varint(size)) + body
    _set(props, "_wire", data)
    return data


# --- decoding -------------------------------------------------------------------------------
# Readers take (spec, buffer, position, end of the properties, packet name) and return
# (value, next position). Messages are formatted only when something is wrong.

Reader = Callable[[Spec, bytearray, int, int, str], tuple[Any, int]]


def _cut(spec: Spec, what: str) -> RemoteProtocolError:
    return malformed(f"{what} property {spec.label} is cut short by the end of the properties")


def _read_byte(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    if pos >= stop:
        raise _cut(spec, what)
    value = buf[pos]
    if value > 1 and spec.zero_or_one:
        raise protocol_error(f"{what} property {spec.label} is {value}, must be 0 or 1")
    return (value == 1 if spec.kind is K.BOOL else value), pos + 1


def _too_small(spec: Spec, what: str, value: int) -> RemoteProtocolError:
    return protocol_error(
        f"{what} property {spec.label} is {value}, must be at least {spec.minimum}")


def _read_two(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    if pos + 2 > stop:
        raise _cut(spec, what)
    value = buf[pos] << 8 | buf[pos + 1]
    if value < spec.minimum and spec.name != "topic_alias":  # alias 0: the connection's 0x94
        raise _too_small(spec, what, value)
    return value, pos + 2


def _read_four(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    if pos + 4 > stop:
        raise _cut(spec, what)
    value = buf[pos] << 24 | buf[pos + 1] << 16 | buf[pos + 2] << 8 | buf[pos + 3]
    if value < spec.minimum:
        raise _too_small(spec, what, value)
    return value, pos + 4


def _read_varint(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    value, pos = read_varint(buf, pos, stop, f"{what} property {spec.label}")
    if value < spec.minimum:
        raise _too_small(spec, what, value)
    return value, pos


def _utf8(buf: bytearray, pos: int, stop: int) -> tuple[str, int]:
    """A UTF-8 string; raises ValueError (with the reason only) when it is not one."""
    if pos + 2 > stop:
        raise ValueError("is cut short by the end of the properties")
    end = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if end > stop:
        raise ValueError(f"of {end - pos - 2} bytes runs past the end of the properties")
    try:
        text = buf[pos + 2:end].decode("utf-8")
    except UnicodeDecodeError as exc:  # [MQTT-1.5.4-1]
        raise ValueError(f"is not valid UTF-8 ({exc.reason})") from None
    if "\x00" in text:  # [MQTT-1.5.4-2]
        raise ValueError("contains U+0000")
    return text, end


def _read_str(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    try:
        text, pos = _utf8(buf, pos, stop)
    except ValueError as exc:
        raise malformed(f"{what} property {spec.label} {exc}") from None
    if spec.name == "response_topic":
        problem = topic_name_problem(text)
        if problem:  # [MQTT-3.3.2-14]
            raise protocol_error(f"{what} property {spec.label} {text!r} {problem}",
                                 ReasonCode.TOPIC_NAME_INVALID)
    return text, pos


def _read_pair(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    part = "name"
    try:
        name, pos = _utf8(buf, pos, stop)
        part = "value"
        text, pos = _utf8(buf, pos, stop)
    except ValueError as exc:
        raise malformed(f"{what} property {spec.label} {part} {exc}") from None
    return (name, text), pos


def _read_binary(spec: Spec, buf: bytearray, pos: int, stop: int, what: str) -> tuple[Any, int]:
    if pos + 2 > stop:
        raise _cut(spec, what)
    end = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if end > stop:
        raise malformed(f"{what} property {spec.label} runs past the end of the properties")
    return bytes(buf[pos + 2:end]), end


_READERS: dict[Kind, Reader] = {
    K.BYTE: _read_byte, K.BOOL: _read_byte, K.TWO_BYTE: _read_two, K.FOUR_BYTE: _read_four,
    K.VARINT: _read_varint, K.UTF8: _read_str, K.BINARY: _read_binary, K.UTF8_PAIR: _read_pair,
}
#: identifier byte -> (spec, name, places, repeatable, reader); None where undefined.
_DECODE: list[tuple[Spec, str, int, bool, Reader] | None] = [
    None if spec is None else (spec, spec.name, spec.contexts, spec.repeatable,
                               _READERS[spec.kind])
    for spec in BY_ID
]


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
    pairs: list[tuple[str, str]] = []
    mask = _ANYWHERE
    decode = _DECODE
    while pos < stop:
        ident = buf[pos]
        # The commonest properties of a push are read inline: User Property (allowed in every
        # packet that has properties) and Message Expiry Interval. Anything unusual about
        # them falls through to the general path, which says what is wrong.
        if ident == 0x26:
            p = pos + 1
            e = p + 2 + (buf[p] << 8 | buf[p + 1]) if p + 2 <= stop else stop + 1
            e2 = e + 2 + (buf[e] << 8 | buf[e + 1]) if e + 2 <= stop else stop + 1
            if e2 <= stop:
                try:
                    name, text = buf[p + 2:e].decode("utf-8"), buf[e + 2:e2].decode("utf-8")
                except UnicodeDecodeError:
                    pass
                else:
                    if "\x00" not in name and "\x00" not in text:
                        pairs.append((name, text))
                        pos = e2
                        continue
        elif (ident == 0x02 and context & _MESSAGE and pos + 5 <= stop
              and "message_expiry_interval" not in found):
            found["message_expiry_interval"] = (
                buf[pos + 1] << 24 | buf[pos + 2] << 16 | buf[pos + 3] << 8 | buf[pos + 4])
            mask &= _MESSAGE
            pos += 5
            continue
        entry = decode[ident]
        if entry is None:
            raise malformed(f"{what} has unknown property identifier {ident:#04x}")
        spec, key, places, repeatable, read = entry
        if not places & context:
            raise malformed(f"{what} may not carry property {spec.label}")
        mask &= places
        value, pos = read(spec, buf, pos + 1, stop, what)
        if repeatable:
            found[key] = found.get(key, ()) + (value,)
        elif key in found:
            raise protocol_error(f"{what} has property {spec.label} more than once")
        else:
            found[key] = value
    if pairs:
        found["user_properties"] = tuple(pairs)
    props: Properties = _new(Properties)
    _set(props, "__dict__", found)
    _set(props, "_places", mask)
    _set(props, "_wire", None)
    return props, stop
