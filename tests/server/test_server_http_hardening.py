"""HTTP request smuggling defences, over raw loopback sockets against a real listener.

h11 on its own accepts ``Content-Length`` with ``Transfer-Encoding`` (and frames by chunked),
repeated ``Authorization`` headers, obs-fold continuation lines and bare LF line endings —
each a way for two parsers to disagree about where a request ends or who sent it. The
server refuses them all: 400, ``Connection: close``, and nothing after the refused head is
ever answered. (A repeated ``Host`` h11 refuses itself; checked too.)
"""
from __future__ import annotations

import functools

import pytest
import trio

from simulator.server import Limits, RunningServer, ServerSettings, run_server

pytestmark = pytest.mark.timeout(60)
ADMIN = "hardening-admin"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(data)
        received = bytearray()
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return bytes(received)
    finally:
        await stream.aclose()


@pytest.fixture
async def server(nursery: trio.Nursery) -> RunningServer:
    config = ServerSettings(admin_token=ADMIN, limits=Limits(max_requests_per_connection=3))
    running: RunningServer = await nursery.start(functools.partial(
        run_server, config, http_port=0, mqtt_port=0))
    return running


SMUGGLING = {
    "content-length with transfer-encoding":
        b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HEALTH,
    "transfer-encoding with content-length":
        b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 40\r\n\r\n0\r\n\r\n" + HEALTH,
    "two authorization headers":
        b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN.encode()
        + b"\r\nAuthorization: Bearer other\r\nContent-Length: 2\r\n\r\n{}" + HEALTH,
    "two x-app-key headers":
        b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nX-App-Key: a\r\nX-App-Key: b\r\n"
        b"Content-Length: 2\r\n\r\n{}" + HEALTH,
    "two host headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" + HEALTH,
    "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n" + HEALTH,
    "obs-fold with a tab": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    "bare LF everywhere": b"GET /healthz HTTP/1.1\nHost: x\n\n" + HEALTH,
    "one bare LF": b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: y\r\n\r\n" + HEALTH,
    # Found by fuzzing: h11 hints 501 for a transfer coding it does not support.
    "unknown transfer coding": b"POST /v1/devices HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + HEALTH,
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_smuggling_attempts_are_400_and_close(server: RunningServer, case: str) -> None:
    answer = await _exchange(server.http_port, SMUGGLING[case])
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing smuggled behind it was answered
    assert b"connection: close" in answer.lower()
    assert b'"code":"bad_http"' in answer
    stats = server.server.statistics()
    assert stats.apps == 0 and dict(stats.http_responses) == {400: 1}


async def test_honest_pipelining_and_leading_empty_lines_still_work(
        server: RunningServer) -> None:
    answer = await _exchange(server.http_port, b"\r\n" + HEALTH + HEALTH
                             + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 3


async def test_a_connection_serves_at_most_max_requests(server: RunningServer) -> None:
    answer = await _exchange(server.http_port, HEALTH * 5)
    assert answer.count(b"HTTP/1.1 200 OK") == 3  # max_requests_per_connection
    last = answer[answer.rindex(b"HTTP/1.1 200 OK"):]
    assert b"Connection: close" in last and answer.count(b"Connection: close") == 1
