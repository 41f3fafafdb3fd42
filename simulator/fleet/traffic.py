"""What a handset sends and receives, seen from the streams its connector hands out.

:class:`MeteredConnector` wraps the SDK's :class:`~pushsdk.transport.TcpConnector`: it times the
TCP (and TLS) connect and wraps each stream in a :class:`CountingStream`, which counts bytes
and writes/reads per direction and offers each one to the handset's radio meter — one
``send_all`` or ``receive_some`` is one packet burst, the granularity at which a radio sees
the application's traffic. TCP/IP headers, TLS records and bare ACKs are not seen here.

On the MQTT connection the stream also watches for the first SUBACK (a 2-byte fixed-header
scan, dropped once seen): only then is the handset's subscription known to exist at the
broker, and pushes to it can be counted on.
"""
from __future__ import annotations

from collections.abc import Callable

import trio

from pushsdk.transport import TcpConnector
from simulator.radio import RadioMeter

__all__ = ["CountingStream", "MeteredConnector", "SubackScanner", "Traffic"]

_SUBACK = 9


class Traffic:
    """Byte and packet counts of one handset, fed to its radio meter."""

    __slots__ = ("meter", "bytes_up", "bytes_down", "packets_up", "packets_down")

    def __init__(self, meter: RadioMeter) -> None:
        self.meter = meter
        self.bytes_up = self.bytes_down = 0
        self.packets_up = self.packets_down = 0

    def up(self, nbytes: int) -> None:
        self.bytes_up += nbytes
        self.packets_up += 1
        self.meter.on_packet(trio.current_time(), "up", nbytes)

    def down(self, nbytes: int) -> None:
        self.bytes_down += nbytes
        self.packets_down += 1
        self.meter.on_packet(trio.current_time(), "down", nbytes)


class SubackScanner:
    """Walks MQTT fixed headers in a received byte stream until it meets a SUBACK."""

    __slots__ = ("_header", "_skip")

    def __init__(self) -> None:
        self._header: list[int] = []  # first byte and remaining-length bytes so far
        self._skip = 0  # bytes of the current packet's body still to pass over

    def feed(self, data: bytes) -> bool:
        """True once a SUBACK's fixed header has been read."""
        i, end = 0, len(data)
        header = self._header
        while i < end:
            if self._skip:
                step = min(self._skip, end - i)
                self._skip -= step
                i += step
                continue
            header.append(data[i])
            i += 1
            if len(header) < 2 or (header[-1] & 0x80 and len(header) < 5):
                continue
            if header[0] >> 4 == _SUBACK:
                return True
            length = 0
            for shift, byte in enumerate(header[1:]):
                length |= (byte & 0x7F) << (7 * shift)
            self._skip = length
            header.clear()
        return False


class CountingStream(trio.abc.Stream):
    """A stream that reports its traffic (and optionally the first SUBACK) to a handset."""

    __slots__ = ("_inner", "_traffic", "_scanner", "_on_suback")

    def __init__(self, inner: trio.abc.Stream, traffic: Traffic,
                 on_suback: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._traffic = traffic
        self._on_suback = on_suback
        self._scanner = SubackScanner() if on_suback is not None else None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._traffic.up(len(data))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self._traffic.down(len(data))
            if self._scanner is not None and self._scanner.feed(data):
                self._scanner = None
                callback, self._on_suback = self._on_suback, None
                callback()
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class MeteredConnector:
    """Connector for one handset: times connects, counts traffic, spots the first SUBACK.

    ``on_connected(seconds)`` gets the TCP (+TLS) connect time of each stream; ``on_suback``
    (if given) is called once, on the first SUBACK of a stream opened while ``watch()`` says
    so.
    """

    __slots__ = ("_inner", "_traffic", "_on_connected", "_on_suback", "_watch")

    def __init__(self, inner: TcpConnector, traffic: Traffic,
                 on_connected: Callable[[float], None] | None = None,
                 on_suback: Callable[[], None] | None = None,
                 watch: Callable[[], bool] | None = None) -> None:
        self._inner = inner
        self._traffic = traffic
        self._on_connected = on_connected
        self._on_suback = on_suback
        self._watch = watch

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        started = trio.current_time()
        stream = await self._inner.connect(host, port, tls=tls)
        if self._on_connected is not None:
            self._on_connected(trio.current_time() - started)
        watching = self._on_suback is not None and (self._watch is None or self._watch())
        return CountingStream(stream, self._traffic, self._on_suback if watching else None)
