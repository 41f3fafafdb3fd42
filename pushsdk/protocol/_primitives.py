"""Data representations shared by MQTT 3.1.1 and 5.0 (5.0 §1.5): integers, variable byte
integers, length-prefixed binary data and UTF-8 strings.

Readers take the receive buffer and bounds and return ``(value, next position)``, raising
:class:`RemoteProtocolError` (Malformed Packet) for anything invalid; writers return bytes.
"""
from __future__ import annotations

import struct

from ._errors import LocalProtocolError, malformed

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
MAX_U16 = 0xFFFF
MAX_U32 = 0xFFFF_FFFF
#: The largest value four variable-byte-integer bytes can express (§1.5.5, §2.2.3).
MAX_VARINT = 268_435_455


def encode_varint(value: int) -> bytes:
    """A variable byte integer (§1.5.5); ``value`` must be in 0..268,435,455."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def header(first: int, remaining: int, what: str) -> bytes:
    """Fixed header: first byte plus the remaining length as a variable byte integer."""
    if remaining < 0x80:
        return bytes((first, remaining))
    if remaining > MAX_VARINT:
        raise LocalProtocolError(
            f"{what} remaining length {remaining} exceeds MQTT's limit {MAX_VARINT}"
        )
    return bytes((first,)) + encode_varint(remaining)


def read_remaining_length(
    buf: bytearray, pos: int, end: int, *, minimal: bool = False
) -> tuple[int, int] | None:
    """Decode the varint after the first byte at ``pos``: (remaining length, header length).

    None if more bytes are needed. A fourth byte with its continuation bit set is rejected at
    once, without waiting for a fifth. ``minimal`` (MQTT 5.0, [MQTT-1.5.5-1]) also rejects
    an encoding longer than needed (a last byte of 0 after a continuation byte).
    """
    value = 0
    shift = 0
    i = pos + 1
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if minimal and not byte and i > pos + 1:
                raise malformed(
                    "remaining length is not in its shortest form (MQTT-1.5.5-1)"
                )
            return value, i - pos + 1
        if i - pos == 4:
            raise malformed("remaining length is longer than 4 bytes")
        shift += 7
        i += 1
    return None


def read_varint(buf: bytearray, pos: int, end: int, what: str) -> tuple[int, int]:
    """A variable byte integer inside an MQTT 5.0 packet body: at most 4 bytes, in its
    shortest form ([MQTT-1.5.5-1])."""
    value = 0
    shift = 0
    i = pos
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if not byte and i > pos:
                raise malformed(
                    f"{what} variable byte integer is not in its shortest form (MQTT-1.5.5-1)"
                )
            return value, i + 1
        if i - pos == 3:
            raise malformed(f"{what} variable byte integer is longer than 4 bytes")
        shift += 7
        i += 1
    raise malformed(f"{what} variable byte integer is cut short by the end of the packet")


def read_u16(buf: bytearray, pos: int, end: int, what: str) -> int:
    if pos + 2 > end:
        raise malformed(f"{what} is cut short by the end of the packet")
    return (buf[pos] << 8) | buf[pos + 1]


def read_u32(buf: bytearray, pos: int, end: int, what: str) -> int:
    if pos + 4 > end:
        raise malformed(f"{what} is cut short by the end of the packet")
    return (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]


def read_binary(buf: bytearray, pos: int, end: int, what: str) -> tuple[bytes, int]:
    length = read_u16(buf, pos, end, f"{what} length")
    stop = pos + 2 + length
    if stop > end:
        raise malformed(f"{what} of {length} bytes runs past the end of the packet")
    return bytes(buf[pos + 2:stop]), stop


def read_str(buf: bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    """A UTF-8 string: [MQTT-1.5.4-1] well-formed (Python's decoder refuses surrogates and
    overlong forms), [MQTT-1.5.4-2] no U+0000; [MQTT-1.5.4-3] a BOM is kept, not stripped."""
    if pos + 2 > end:
        raise malformed(f"{what} length is cut short by the end of the packet")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise malformed(f"{what} of {stop - pos - 2} bytes runs past the end of the packet")
    try:
        text = buf[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"{what} is not valid UTF-8 ({exc.reason})") from None
    if "\x00" in text:
        raise malformed(f"{what} contains U+0000")
    return text, stop


def encode_str(value: str) -> bytes:
    """A length-prefixed UTF-8 string; ``value`` was validated when its event was built."""
    raw = value.encode("utf-8")
    return U16.pack(len(raw)) + raw


def encode_binary(value: bytes | bytearray | memoryview) -> bytes:
    """Length-prefixed binary data; ``value`` was validated when its event was built."""
    raw = bytes(value)
    return U16.pack(len(raw)) + raw
