"""What a handset sends and receives, seen from the streams its connector hands out.

:class:`MeteredConnector` wraps the SDK's :class:`~pushsdk.transport.TcpConnector`: it times the
TCP (and TLS) connect and has each stream's writes and reads counted per direction and
offered to the handset's radio meter — one write or one ``receive_some`` is one packet
burst, the granularity at which a radio sees the application's traffic. A plain TCP stream
tells its observer (the handset) itself; TLS streams are wrapped in a :class:`CountingStream`.
TCP/IP headers, TLS records and bare ACKs are not seen here.

On the MQTT connection the handset also watches for the first SUBACK (a 2-byte fixed-header
scan, dropped once seen; over WebSocket, inside the frames): only then is the handset's
subscription known to exist at the broker, and pushes to it can be counted on.
"""
from __future__ import annotations

from typing import Protocol, cast

import trio

from pushsdk.transport import TcpConnector, TcpStream, TrafficObserver

__all__ = ["CountingStream", "MeteredConnector", "PlainTraffic", "SubackScanner",
           "WebSocketSubackScanner"]

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
    """Where a handset's traffic goes: the handset itself (see ``SocketHandset``)."""

    def up(self, nbytes: int) -> None: ...
    def down(self, nbytes: int) -> None: ...
    def on_sent(self, nbytes: int) -> None: ...
    def on_received(self, data: bytes) -> None: ...
    def on_tcp(self, seconds: float, stream: trio.abc.Stream,
               scanner: SubackScanner | WebSocketSubackScanner | None) -> None: ...
    def watching_suback(self) -> bool: ...


class PlainTraffic:
    """The observer of a connection that is not the MQTT one (the SDK's HTTP requests):
    counted, not scanned."""

    __slots__ = ("_meter",)

    def __init__(self, meter: _Meter) -> None:
        self._meter = meter

    def on_sent(self, nbytes: int) -> None:
        self._meter.up(nbytes)

    def on_received(self, data: bytes) -> None:
        self._meter.down(len(data))


class CountingStream(trio.abc.Stream):
    """A stream that tells a :class:`~pushsdk.transport.TrafficObserver` of its traffic,
    for streams that have no observer slot of their own (TLS, names resolved by trio)."""

    __slots__ = ("_inner", "_observer")

    def __init__(self, inner: trio.abc.Stream, observer: TrafficObserver) -> None:
        self._inner = inner
        self._observer = observer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._observer.on_sent(len(data))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self._observer.on_received(data if type(data) is bytes else bytes(data))
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class MeteredConnector:
    """Connector for one handset: times connects, has each stream's traffic counted, and
    has the first SUBACK of each MQTT connection opened while the handset is not yet
    subscribed looked for. A plain TCP stream (:class:`~pushsdk.transport.TcpStream`)
    reports to its observer itself; other streams are wrapped in a :class:`CountingStream`
    (which keeps one more coroutine frame alive per idle connection)."""

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
        observer: TrafficObserver = self._meter if self._mqtt else PlainTraffic(self._meter)
        if isinstance(stream, TcpStream):
            stream.observer = observer
        else:
            stream = CountingStream(stream, observer)
        if self._mqtt:
            scanner: SubackScanner | WebSocketSubackScanner | None = None
            if self._meter.watching_suback():
                scanner = WebSocketSubackScanner() if self._websocket else SubackScanner()
            self._meter.on_tcp(trio.current_time() - started, stream, scanner)
        return stream
