"""pushsdk.tcp.TcpStream: trio's stream conformance suite, and connecting for real."""
import errno
from functools import partial
import socket

import pytest
import trio
import trio.testing

from pushsdk.tcp import TcpStream, open_tcp


def _pair() -> tuple[TcpStream, TcpStream]:
    a, b = socket.socketpair()
    return TcpStream(a), TcpStream(b)


def _clogged_pair() -> tuple[TcpStream, TcpStream]:
    a, b = _pair()
    # Fill both directions' kernel buffers so that the next send_all blocks.
    for stream in (a, b):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    for stream in (a, b):
        try:
            while True:
                stream.socket.send(b"x" * 10000)
        except BlockingIOError:
            pass
    return a, b


async def _make_pair():
    return _pair()


async def _make_clogged_pair():
    return _clogged_pair()


async def test_trio_half_closeable_stream_conformance():
    await trio.testing.check_half_closeable_stream(_make_pair, _make_clogged_pair)


async def test_connects_from_a_source_address_and_talks(nursery):
    peers = []

    async def echo(stream):
        peers.append(stream.socket.getpeername()[0])
        async for data in stream:
            await stream.send_all(data)

    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await open_tcp("127.0.0.1", port, socket.AF_INET, "127.0.0.7")
    await stream.send_all(b"ping" * 10000)
    got = b""
    while len(got) < 40000:
        got += await stream.receive_some()
    assert got == b"ping" * 10000
    assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await stream.send_eof()
    assert await stream.receive_some() == b""  # the echo saw EOF and closed
    await stream.aclose()
    assert peers == ["127.0.0.7"]


async def test_a_refused_connection_is_an_oserror_and_leaks_no_socket():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here
    with pytest.raises(OSError) as caught:
        await open_tcp("127.0.0.1", port, socket.AF_INET, None)
    assert caught.value.errno == errno.ECONNREFUSED


async def test_cancelling_a_receive_loses_nothing():
    a, b = _pair()
    with trio.move_on_after(0.05):
        await a.receive_some()
    await b.send_all(b"after")
    assert await a.receive_some() == b"after"
    await a.aclose()
    await b.aclose()


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def on_sent(self, nbytes: int) -> None:
        self.seen.append(("sent", nbytes))

    def on_received(self, data: bytes) -> None:
        self.seen.append(("received", data))


async def test_an_observer_is_told_of_every_write_and_read_but_not_of_eof():
    a, b = _pair()
    recorder = a.observer = _Recorder()
    await a.send_all(b"hello")
    await a.send_all(b"")  # nothing written: nothing to tell
    assert a.try_send(b"ping") == 4
    got = b""
    while len(got) < 9:
        got += await b.receive_some()
    assert got == b"helloping"
    await b.send_all(b"world")
    assert await a.receive_some() == b"world"
    await b.send_eof()
    assert await a.receive_some() == b""
    assert recorder.seen == [("sent", 5), ("sent", 4), ("received", b"world")]
    await a.aclose()
    await b.aclose()


async def test_a_write_that_waits_for_the_socket_is_told_once():
    a, b = _pair()
    recorder = a.observer = _Recorder()
    payload = b"x" * 2_000_000  # more than the socket buffers: send_all waits in between

    async def drain() -> bytes:
        got = bytearray()
        while len(got) < len(payload):
            got += await b.receive_some()
        return bytes(got)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, payload)
        got = await drain()
    assert got == payload
    assert recorder.seen == [("sent", len(payload))]
    await a.aclose()
    await b.aclose()


async def test_close_ends_the_stream_at_once_and_wakes_a_blocked_receive():
    a, b = _pair()
    woken: list[type[BaseException]] = []

    async def receive() -> None:
        try:
            await a.receive_some()
        except trio.ClosedResourceError as exc:
            woken.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        a.close()  # no checkpoint: nothing else runs in between
        assert a.socket.fileno() == -1
        a.close()  # twice is harmless
    assert woken == [trio.ClosedResourceError]
    assert await b.receive_some() == b""  # the peer sees the end
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"late")
    await a.aclose()  # and aclose after close too
    await b.aclose()
