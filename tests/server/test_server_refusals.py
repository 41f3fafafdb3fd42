"""Connections refused for their source address's limits on the plain MQTT and HTTP ports.

The listener refuses them itself, without a task, when what they have sent settles the
answer (``accept.refuse_mqtt_at_once``): an MQTT 5.0 CONNECT is told why (CONNACK 0x9F or
0x97), anything else is closed without a word. One that has sent nothing yet is waited for
in a task (``mqtt_gateway.refuse_connection``), at most ``REFUSALS_READ`` at a time. An
HTTP connection always gets its 429 at once (``accept.refuse_http_at_once``), after what it
has sent is read. Unit tests over a socket pair (no event loop), then the listener on
loopback.
"""
from __future__ import annotations

import functools
import json
import random
import socket
from collections.abc import Iterator

import h11
import pytest
import trio

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    ReasonCode,
    Role,
)
from simulator.server import (
    Limits,
    PushServer,
    RunningServer,
    ServerSettings,
    ServerStatistics,
    SqliteStore,
    run_server,
)
from simulator.server.accept import refuse_http_at_once, refuse_mqtt_at_once
from simulator.server.http_api import TOO_MANY_CONNECTIONS
from simulator.server.http_connection import reply_bytes
from simulator.server.mqtt_gateway import REFUSALS_READ

pytestmark = pytest.mark.timeout(60)
PEER = "127.0.0.9"
ADMIN = "refusals-admin"


def connect_bytes(version: int) -> bytes:
    return Connection(Role.CLIENT, protocol_version=version).send(
        Connect(client_id="over", protocol_level=version, keepalive=30))


def answer_to(client: socket.socket, version: int) -> list[object]:
    """What a client of ``version`` reads until its connection ends ("reset" for a RST)."""
    codec = Connection(Role.CLIENT, protocol_version=version)
    codec.send(Connect(client_id="over", protocol_level=version))
    events: list[object] = []
    client.settimeout(5)
    while not events or not isinstance(events[-1], ConnectionClosed):
        event = codec.next_event()
        if event is not NEED_DATA:
            events.append(event)
            continue
        try:
            data = client.recv(4096)
        except ConnectionResetError:
            events.append("reset")
            data = b""
        codec.receive_data(data)
    return events


@pytest.fixture
def server() -> Iterator[PushServer]:
    store = SqliteStore(":memory:")
    yield PushServer(store, settings=ServerSettings(
        admin_token=ADMIN, limits=Limits(max_connections_per_address=2)), rng=random.Random(1))
    store.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    accepted, client = socket.socketpair()
    yield accepted, client
    accepted.close()
    client.close()


def test_a_5_0_connect_over_the_rate_is_told_so_and_closed_with_a_fin(server, pair) -> None:
    accepted, client = pair
    client.sendall(connect_bytes(5))
    assert refuse_mqtt_at_once(server, accepted, PEER)
    assert accepted.fileno() == -1
    events = answer_to(client, 5)
    assert "reset" not in events  # the CONNECT was read before the close
    (connack, closed) = events
    assert isinstance(connack, ConnAck) and isinstance(closed, ConnectionClosed)
    assert connack.reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED
    assert "retry later" in (connack.properties.reason_string or "")


async def test_an_address_holding_its_most_connections_is_told_its_quota(server, pair) -> None:
    accepted, client = pair
    for _ in range(2):
        assert server.connections.enter("mqtt", PEER)
    assert not server.connections.enter("mqtt", PEER)  # the third is refused
    client.sendall(connect_bytes(5))
    assert refuse_mqtt_at_once(server, accepted, PEER)
    connack, _ = answer_to(client, 5)
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == ReasonCode.QUOTA_EXCEEDED


@pytest.mark.parametrize("sent", [connect_bytes(4), b"GET / HTTP/1.1\r\n\r\n", b"\x10\xff\xff\x7f"],
                         ids=["3.1.1 CONNECT", "not MQTT", "over 4 KiB"])
def test_anything_but_a_5_0_connect_is_closed_without_a_word(server, pair, sent) -> None:
    accepted, client = pair
    client.sendall(sent)
    assert refuse_mqtt_at_once(server, accepted, PEER)
    assert accepted.fileno() == -1
    events = answer_to(client, 5)
    assert not any(isinstance(event, ConnAck) for event in events)


@pytest.mark.parametrize("sent", [b"", connect_bytes(5)[:7]], ids=["nothing", "half a CONNECT"])
def test_a_connection_without_a_whole_connect_is_left_to_a_task(server, pair, sent) -> None:
    accepted, client = pair
    client.sendall(sent)
    assert not refuse_mqtt_at_once(server, accepted, PEER)
    rest = connect_bytes(5)[len(sent):]
    client.sendall(rest)
    accepted.settimeout(5)
    got = b""
    while len(got) < len(sent) + len(rest):
        got += accepted.recv(4096)
    assert got == connect_bytes(5)  # what was peeked is still there for the task to read


def test_no_task_waits_once_the_gateway_waits_on_refusals_read(server, pair) -> None:
    accepted, client = pair
    server.connections.refusing = REFUSALS_READ
    assert refuse_mqtt_at_once(server, accepted, PEER)
    assert accepted.fileno() == -1
    assert client.recv(16) == b""


async def start_one_connection_server(nursery: trio.Nursery) -> RunningServer:
    """A server on loopback that admits one new connection per address, then ~none."""
    settings = ServerSettings(admin_token=ADMIN, limits=Limits(
        connection_rate_per_address=0.001, connection_burst_per_address=1.0))
    running: RunningServer = await nursery.start(functools.partial(
        run_server, settings, http_port=0, mqtt_port=0))
    return running


def refusals_seen(running: RunningServer) -> list[list[object]]:
    """From 127.0.0.1, over a rate of one new connection: the admitted one, then three
    refused ones (a 5.0 CONNECT, a 3.1.1 CONNECT, a 5.0 CONNECT sent only once the gateway
    waits for it). What each read, in that order."""
    port = running.mqtt_port
    connections = running.server.connections
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        admitted, told, closed, late = socks
        admitted.sendall(connect_bytes(5))  # no such app: refused by the gateway, in a task
        told.sendall(connect_bytes(5))
        closed.sendall(connect_bytes(4))
        seen = [answer_to(admitted, 5), answer_to(told, 5), answer_to(closed, 4)]
        while connections.refusing == 0:  # test-side polling of a real server's state
            trio.from_thread.run_sync(lambda: None)
        late.sendall(connect_bytes(5))
        return [*seen, answer_to(late, 5)]
    finally:
        for sock in socks:
            sock.close()


async def statistics_once_closed(running: RunningServer, kind: str) -> ServerStatistics:
    """The server's statistics once its last ``kind`` connection has ended (within 5 s)."""
    with trio.fail_after(5):
        while running.server.connections.open[kind]:
            await trio.sleep(0.01)
    return running.server.statistics()


async def test_the_listener_refuses_over_the_rate_and_serves_the_admitted() -> None:
    async with trio.open_nursery() as nursery:
        running = await start_one_connection_server(nursery)
        admitted, told, closed, late = await trio.to_thread.run_sync(refusals_seen, running)
        connections = running.server.connections
        stats = await statistics_once_closed(running, "mqtt")
        nursery.cancel_scope.cancel()
    assert [type(event) for event in admitted] == [ConnAck, ConnectionClosed]
    assert admitted[0].reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    for refused in (told, late):
        assert [type(event) for event in refused] == [ConnAck, ConnectionClosed]
        assert refused[0].reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED
    assert not any(isinstance(event, ConnAck) for event in closed)
    assert connections.refused == 3 and not connections.by_address
    assert stats.mqtt_connections_refused == 1  # the admitted one, by the gateway


# --- HTTP ------------------------------------------------------------------------------------

def read_to_end(client: socket.socket) -> bytes:
    """All a client reads until its connection ends; a reset fails the test."""
    client.settimeout(5)
    got = b""
    while data := client.recv(65536):
        got += data
    return got


def too_many(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close" in head
    assert json.loads(body)["error"]["code"] == "too_many_connections"


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3],
                         ids=["nothing yet", "requests already sent"])
def test_a_refused_http_connection_reads_its_429_and_an_end_not_a_reset(server, pair,
                                                                         sent) -> None:
    accepted, client = pair
    client.sendall(sent)
    refuse_http_at_once(server, accepted, PEER,
                        reply_bytes(h11.Connection(h11.SERVER), TOO_MANY_CONNECTIONS))
    assert accepted.fileno() == -1
    too_many(read_to_end(client))
    assert server.counters.http_responses[429] == 1 and server.counters.http_requests == 1


def http_answers(running: RunningServer) -> tuple[bytes, bytes]:
    """From 127.0.0.1, over a rate of one new connection: what the admitted connection
    (one request, ``Connection: close``) and a refused one (sending nothing) read."""
    port = running.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as admitted, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
        admitted.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_to_end(admitted), read_to_end(refused)


async def test_the_http_listener_answers_429_over_the_rate_and_serves_the_admitted() -> None:
    async with trio.open_nursery() as nursery:
        running = await start_one_connection_server(nursery)
        served, refused = await trio.to_thread.run_sync(http_answers, running)
        connections = running.server.connections
        stats = await statistics_once_closed(running, "http")
        nursery.cancel_scope.cancel()
    assert served.startswith(b"HTTP/1.1 200 ")
    too_many(refused)
    assert connections.refused == 1 and not connections.by_address
    assert dict(stats.http_responses) == {200: 1, 429: 1}
