"""Packet captures (pcap, pcapng) as energy traces for ``pushsim energy`` (interfaces §4).

``read_capture(path, device_ip=None)`` returns the capture's IP packets as
:class:`~simulator.radio.trace.TracePacket` s, as AT&T ARO reads a capture: packets sent by
``device_ip`` (default: the source of the first IP packet) are uplink, every other IP packet
downlink; a packet's size is its IP datagram length as the capture records it (the IPv4
total length, or the IPv6 header plus payload length), link-layer framing excluded; times
are the capture's timestamps in seconds. Non-IP frames (ARP, ...) are skipped. A capture
whose timestamps step back (pcapng merges interfaces) has those packets moved forward to
the previous time, since a radio sees packets in order.

Formats: pcap (micro- or nanosecond, either byte order) and pcapng, read with ``dpkt``;
link types Ethernet, raw IP, Linux cooked (SLL and SLL2) and BSD loopback. Anything else —
not a capture, a truncated file, an unknown link type, a bad ``device_ip`` — raises
:class:`~simulator.radio.trace.TraceError` with a one-line message.
"""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from os import PathLike

import dpkt

from simulator.radio.trace import TraceError, TracePacket

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

PCAP_MAGICS = {b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

_ETHERNET, _NULL, _RAW, _LOOP, _SLL, _SLL2 = 1, 0, 101, 108, 113, 276
_RAW_ALIASES = {12, 14}  # DLT_RAW on some BSDs / OpenBSD


def is_capture(path: str | PathLike[str]) -> bool:
    """Does the file start like a pcap or pcapng capture?"""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False
    return head in PCAP_MAGICS or head == PCAPNG_MAGIC


def read_capture(path: str | PathLike[str], device_ip: str | None = None) -> list[TracePacket]:
    """The IP packets of the capture at ``path`` (see the module docstring)."""
    device = _parse_ip(device_ip) if device_ip is not None else None
    packets: list[TracePacket] = []
    last_t = float("-inf")
    try:
        with open(path, "rb") as file:
            for t, src, size in _ip_packets(file, str(path)):
                if device is None:
                    device = src
                t = max(t, last_t)
                last_t = t
                packets.append(TracePacket(t, "up" if src == device else "down", size))
    except OSError as exc:
        raise TraceError(f"cannot read capture {path}: {exc.strerror or exc}") from None
    except TraceError:  # already says what is wrong with which file
        raise
    except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, ValueError, struct.error) as exc:
        raise TraceError(f"{path}: not a readable pcap/pcapng capture "
                         f"({exc or 'truncated'})") from None
    return packets


def _parse_ip(text: str) -> _Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise TraceError(f"--device-ip: not an IPv4 or IPv6 address: {text!r}") from None


class _Truncated(ValueError):
    """The file ends inside a record."""


class _WholeReads:
    """A file whose ``read(n)`` returns ``n`` bytes or none: a short read means the capture
    was cut inside a record (dpkt would hand back the stump as a shorter packet)."""

    def __init__(self, file) -> None:
        self._file = file

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        if n is not None and n >= 0 and 0 < len(data) < n:
            raise _Truncated("the file ends inside a packet record")
        return data

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def _reader(file, name: str):
    head = file.read(4)
    file.seek(0)
    file = _WholeReads(file)
    if head in PCAP_MAGICS:
        return dpkt.pcap.Reader(file)
    if head == PCAPNG_MAGIC:
        return dpkt.pcapng.Reader(file)
    raise TraceError(f"{name}: not a pcap or pcapng capture (unknown magic number)")


def _ip_packets(file, name: str) -> Iterator[tuple[float, _Address, int]]:
    reader = _reader(file, name)
    linktype = reader.datalink()
    decode = _decoder(linktype, name)
    for timestamp, frame in reader:
        ip = decode(frame)
        if ip is None:
            continue
        if isinstance(ip, dpkt.ip.IP):
            yield float(timestamp), ipaddress.IPv4Address(ip.src), ip.len
        else:
            yield float(timestamp), ipaddress.IPv6Address(ip.src), 40 + ip.plen


def _decoder(linktype: int, name: str):
    """frame bytes -> dpkt IP/IP6 object or None (not IP), for the capture's link type."""
    if linktype == _ETHERNET:
        return lambda frame: _ip_of(dpkt.ethernet.Ethernet(frame).data)
    if linktype == _RAW or linktype in _RAW_ALIASES:
        return _raw_ip
    if linktype == _SLL:
        return lambda frame: _ip_of(dpkt.sll.SLL(frame).data)
    if linktype == _SLL2:
        return lambda frame: _ip_of(dpkt.sll2.SLL2(frame).data)
    if linktype in (_NULL, _LOOP):
        return lambda frame: _ip_of(dpkt.loopback.Loopback(frame).data)
    raise TraceError(f"{name}: unsupported link type {linktype} (Ethernet, raw IP, Linux "
                     "cooked and loopback captures are read)")


def _raw_ip(frame: bytes):
    version = frame[0] >> 4 if frame else 0
    if version == 4:
        return dpkt.ip.IP(frame)
    if version == 6:
        return dpkt.ip6.IP6(frame)
    return None


def _ip_of(payload):
    return payload if isinstance(payload, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
