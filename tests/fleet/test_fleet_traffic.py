"""simulator.fleet.traffic.MeteredConnector: how a handset's streams are metered — a plain TCP
stream tells the handset itself, any other stream is wrapped — over real loopback sockets."""
from __future__ import annotations

import trio
import trio.testing

from pushsdk.transport import TcpConnector, TcpStream
from simulator.fleet.traffic import (
    CountingStream,
    MeteredConnector,
    PlainTraffic,
    SubackScanner,
    WebSocketSubackScanner,
)

SUBACK = b"\x90\x03\x00\x01\x01"
CONNACK = b"\x20\x02\x00\x00"


class _Meter:
    """What a SocketHandset offers its connector, recorded."""

    def __init__(self, watching: bool = True) -> None:
        self.up_bytes: list[int] = []
        self.down_bytes: list[int] = []
        self.scanner: SubackScanner | WebSocketSubackScanner | None = None
        self.link: trio.abc.Stream | None = None
        self.subacks = 0
        self.watching = watching

    def up(self, nbytes: int) -> None:
        self.up_bytes.append(nbytes)

    def down(self, nbytes: int) -> None:
        self.down_bytes.append(nbytes)

    on_sent = up

    def on_received(self, data: bytes) -> None:
        self.down(len(data))
        if self.scanner is not None and self.scanner.feed(data):
            self.scanner = None
            self.subacks += 1

    def on_tcp(self, seconds: float, stream: trio.abc.Stream,
               scanner: SubackScanner | WebSocketSubackScanner | None) -> None:
        assert seconds >= 0
        self.link, self.scanner = stream, scanner

    def watching_suback(self) -> bool:
        return self.watching


async def _talk(connector: MeteredConnector, port: int) -> tuple[trio.abc.Stream, bytes]:
    """Connect, send 7 bytes, receive CONNACK then SUBACK; what the server got."""
    stream = await connector.connect("127.0.0.1", port, tls=False)
    await stream.send_all(b"CONNECT")
    got = b""
    while len(got) < len(CONNACK + SUBACK):
        got += await stream.receive_some()
    await stream.aclose()
    return stream, got


async def _serve_once(listener: trio.SocketListener) -> bytes:
    server = await listener.accept()
    got = await server.receive_some()
    await server.send_all(CONNACK)
    await server.send_all(SUBACK)
    await server.aclose()
    return got


async def test_a_plain_mqtt_stream_tells_the_handset_itself_and_finds_the_suback():
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    meter = _Meter()
    connector = MeteredConnector(TcpConnector(connect_timeout=5), meter, mqtt=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_once, listener)
        stream, got = await _talk(connector, port)
    assert type(stream) is TcpStream and stream.observer is meter  # no wrapper
    assert meter.link is stream
    assert got == CONNACK + SUBACK
    assert meter.up_bytes == [7]
    assert sum(meter.down_bytes) == len(CONNACK + SUBACK)
    assert meter.subacks == 1 and meter.scanner is None
    await listener.aclose()


async def test_a_subscribed_handset_gets_no_scanner_and_http_is_only_counted():
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    meter = _Meter(watching=False)
    for mqtt in (True, False):
        connector = MeteredConnector(TcpConnector(connect_timeout=5), meter, mqtt=mqtt)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_once, listener)
            stream, _ = await _talk(connector, port)
        assert isinstance(stream, TcpStream)
        if not mqtt:
            assert isinstance(stream.observer, PlainTraffic)
    assert meter.subacks == 0 and meter.scanner is None
    assert meter.up_bytes == [7, 7]
    assert sum(meter.down_bytes) == 2 * len(CONNACK + SUBACK)
    await listener.aclose()


class _MemoryConnector:
    """Hands out one end of a trio memory stream pair: a stream that is not a TcpStream."""

    source_ip = None

    def __init__(self) -> None:
        self.peer: trio.abc.Stream | None = None

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        ours, self.peer = trio.testing.memory_stream_pair()
        return ours


async def test_any_other_stream_is_wrapped_and_counted_alike():
    inner = _MemoryConnector()
    meter = _Meter()
    connector = MeteredConnector(inner, meter, mqtt=True)  # type: ignore[arg-type]
    stream = await connector.connect("127.0.0.1", 1, tls=True)
    assert isinstance(stream, CountingStream) and meter.link is stream
    assert inner.peer is not None
    await stream.send_all(b"CONNECT")
    await stream.send_all(b"")  # nothing written: nothing counted
    assert await inner.peer.receive_some() == b"CONNECT"
    await inner.peer.send_all(CONNACK + SUBACK)
    assert await stream.receive_some() == CONNACK + SUBACK
    assert meter.up_bytes == [7] and meter.down_bytes == [9] and meter.subacks == 1
