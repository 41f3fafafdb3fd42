"""pushsdk._tcp.TcpStream: trio's stream conformance suite, and connecting for real."""
import errno
from functools import partial
import socket

import pytest
import trio
import trio.testing

from pushsdk._tcp import TcpStream, open_tcp


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
