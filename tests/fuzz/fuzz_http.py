"""Fuzz harness: the HTTP request handling of the reference server, end to end.

Arbitrary bytes as what a client sends on one connection, served by the real connection
code (``http_connection.HttpConnection``: framing, smuggling checks, limits, then routing,
authentication, validation and the store) over an in-memory stream in a trio run. Every
request must be answered below 500, and nothing may escape the handler.
"""
from __future__ import annotations

import random

import trio
import trio.testing

from simulator.server import Limits, PushServer, ServerSettings, SqliteStore

_SERVER: list[PushServer] = []
_PREFIXES = [b"", b"POST /v1/push HTTP/1.1\r\nHost: x\r\n", b"POST /v1/devices HTTP/1.1\r\n",
             b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"PUT /v1/devices/r HTTP/1.1\r\n"]


def configure(args: list[str]) -> None:
    server = PushServer(SqliteStore(":memory:"),
                        settings=ServerSettings(admin_token="fuzz", limits=Limits(
                            request_timeout=0.5, idle_timeout=0.5)),
                        rng=random.Random(1))
    app = server.create_app("fuzz")
    _PREFIXES.append(f"POST /v1/devices HTTP/1.1\r\nHost: x\r\nX-App-Key: {app.app_key}\r\n"
                     .encode())
    _SERVER.append(server)


async def _serve(data: bytes, chunks: list[int]) -> bytes:
    server = _SERVER[0]
    client, server_side = trio.testing.memory_stream_pair()
    answer = bytearray()
    async with trio.open_nursery() as nursery:
        # No source address: the per-address limits would make every run after the first
        # few thousand a refusal, and runs must not depend on each other.
        nursery.start_soon(server.handle_http_stream, server_side, None)
        pieces = []
        position = 0
        for size in chunks:
            pieces.append(data[position:position + size])
            position += size
        pieces.append(data[position:])
        try:
            for piece in pieces:
                if piece:
                    await client.send_all(piece)
            await client.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server answered and closed before reading everything: allowed
        while chunk := await client.receive_some(65536):
            answer += chunk
    return bytes(answer)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    # The first byte picks a request start to build on, the second how the bytes are cut.
    prefix = _PREFIXES[data[0] % len(_PREFIXES)]
    chunks = [1 + (data[1] >> shift) % 64 for shift in (0, 2, 4)][: data[1] % 4]
    body = prefix + data[2:]
    answer = trio.run(_serve, body, chunks, clock=trio.testing.MockClock(autojump_threshold=0))
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 5"):
            raise AssertionError(f"a 5xx answer: {line!r} for {body[:200]!r}")
