"""What a handset sends and receives, seen from the streams its connector hands out.

:class:`MeteredConnector` wraps the SDK's :class:`~pushsdk.transport.TcpConnector`: it times the
TCP (and TLS) connect and wraps each stream in a :class:`CountingStream`, which counts
writes/reads per direction and offers each one to the handset's radio meter — one
``send_all`` or ``receive_some`` is one packet burst, the granularity at which a radio sees
the application's traffic. TCP/IP headers, TLS records and bare ACKs are not seen here.

On the MQTT connection the stream also watches for the first SUBACK (a 2-byte fixed-header
scan, dropped once seen; over WebSocket, inside the frames): only then is the handset's
subscription known to exist at the broker, and pushes to it can be counted on.
"""
from __future__ import annotations

from typing import Protocol, cast

import trio

from pushsdk.transport import TcpConnector

__all__ = ["CountingStream", "MeteredConnector", "SubackScanner", "WebSocketSubackScanner"]

_SUBACK = 9


class SubackScanner:
    """Walks MQTT fixed headers in a received byte stream until it meets a SUBACK."""

    __slots__ = ("_header", "_skip")

    def __init__(self) -> None:
        self._header: list[int] = []  # first byte and remaining-length bytes so far
        self._skip = 0  # bytes of the current packet's body still to pass over

    def feed(self, data: bytes | bytearray) -> bool:
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


class WebSocketSubackScanner:
    """:class:`SubackScanner` for MQTT over WebSocket: skips the server's HTTP 101 answer
    and the frame headers (RFC 6455 §5.2), and scans the payload of data frames (binary,
    text and continuation; control frames are passed over)."""

    __slots__ = ("_data", "_header", "_http", "_inner", "_left")

    def __init__(self) -> None:
        self._inner = SubackScanner()
        self._http: bytearray | None = bytearray()  # the HTTP answer so far; None after
        self._header = bytearray()  # the current frame's header so far
        self._left = 0  # payload bytes of the current frame still to come
        self._data = False  # whether the current frame carries MQTT bytes

    def feed(self, data: bytes | bytearray) -> bool:
        """True once a SUBACK's fixed header has been read."""
        view = memoryview(data)
        if self._http is not None:
            start = len(self._http)
            self._http += view
            end = self._http.find(b"\r\n\r\n", max(0, start - 3))
            if end < 0:
                return False
            view = memoryview(bytes(self._http[end + 4:]))
            self._http = None
        while view:
            if self._left:
                step = min(self._left, len(view))
                if self._data and self._inner.feed(bytes(view[:step])):
                    return True
                self._left -= step
                view = view[step:]
                continue
            self._header.append(view[0])
            view = view[1:]
            self._frame_header()
        return False

    def _frame_header(self) -> None:
        header = self._header
        if len(header) < 2:
            return
        short, masked = header[1] & 0x7F, header[1] & 0x80
        extra = {126: 2, 127: 8}.get(short, 0)
        if len(header) < 2 + extra + (4 if masked else 0):
            return
        self._left = short if not extra else int.from_bytes(header[2:2 + extra], "big")
        self._data = header[0] & 0x0F in (0x0, 0x1, 0x2)
        header.clear()


class _Meter(Protocol):
    """Where a stream reports its traffic: the handset (see ``SocketHandset``)."""

    def up(self, nbytes: int) -> None: ...
    def down(self, nbytes: int) -> None: ...
    def on_tcp(self, seconds: float, stream: CountingStream | None) -> None: ...
    def watching_suback(self) -> bool: ...
    def on_suback(self) -> None: ...


class CountingStream(trio.abc.Stream):
    """A stream that reports its traffic (and optionally the first SUBACK) to a handset."""

    __slots__ = ("_inner", "_meter", "_scanner")

    def __init__(self, inner: trio.abc.Stream, meter: _Meter, watch_suback: bool,
                 websocket: bool = False) -> None:
        self._inner = inner
        self._meter = meter
        self._scanner: SubackScanner | WebSocketSubackScanner | None = None
        if watch_suback:
            self._scanner = WebSocketSubackScanner() if websocket else SubackScanner()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._meter.up(len(data))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self._meter.down(len(data))
            if self._scanner is not None and self._scanner.feed(data):
                self._scanner = None
                self._meter.on_suback()
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class MeteredConnector:
    """Connector for one handset: times connects, counts traffic, spots the first SUBACK
    of each MQTT connection opened while the handset is not yet subscribed."""

    __slots__ = ("_inner", "_meter", "_mqtt", "_websocket")

    def __init__(self, inner: TcpConnector, meter: _Meter, *, mqtt: bool,
                 websocket: bool = False) -> None:
        self._inner = inner
        self._meter = meter
        self._mqtt = mqtt
        self._websocket = websocket  # the MQTT bytes come in WebSocket frames

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        started = trio.current_time()
        # The fleet runs on trio, so the connector's streams are trio streams (pushsdk's
        # ByteStream protocol is their subset; CountingStream needs all of trio's Stream).
        stream = cast(trio.abc.Stream, await self._inner.connect(host, port, tls=tls))
        if not self._mqtt:
            return CountingStream(stream, self._meter, False)
        counting = CountingStream(stream, self._meter, self._meter.watching_suback(),
                                  self._websocket)
        self._meter.on_tcp(trio.current_time() - started, counting)
        return counting
