"""Connections refused for their source address's limits on the plain MQTT port.

The listener refuses them itself, without a task, when what they have sent settles the
answer (``listeners._refused_at_once``): an MQTT 5.0 CONNECT is told why (CONNACK 0x9F or
0x97), anything else is closed without a word. One that has sent nothing yet is waited for
in a task (``mqtt_gateway.refuse_connection``), at most ``REFUSALS_READ`` at a time.
Unit tests over a socket pair (no event loop), then the listener on loopback.
"""
from __future__ import annotations

import functools
import random
import socket
from collections.abc import Iterator

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
    SqliteStore,
    run_server,
)
from simulator.server.listeners import _refused_at_once
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
    assert _refused_at_once(server, accepted, PEER)
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
    assert _refused_at_once(server, accepted, PEER)
    connack, _ = answer_to(client, 5)
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == ReasonCode.QUOTA_EXCEEDED


@pytest.mark.parametrize("sent", [connect_bytes(4), b"GET / HTTP/1.1\r\n\r\n", b"\x10\xff\xff\x7f"],
                         ids=["3.1.1 CONNECT", "not MQTT", "over 4 KiB"])
def test_anything_but_a_5_0_connect_is_closed_without_a_word(server, pair, sent) -> None:
    accepted, client = pair
    client.sendall(sent)
    assert _refused_at_once(server, accepted, PEER)
    assert accepted.fileno() == -1
    events = answer_to(client, 5)
    assert not any(isinstance(event, ConnAck) for event in events)


@pytest.mark.parametrize("sent", [b"", connect_bytes(5)[:7]], ids=["nothing", "half a CONNECT"])
def test_a_connection_without_a_whole_connect_is_left_to_a_task(server, pair, sent) -> None:
    accepted, client = pair
    client.sendall(sent)
    assert not _refused_at_once(server, accepted, PEER)
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
    assert _refused_at_once(server, accepted, PEER)
    assert accepted.fileno() == -1
    assert client.recv(16) == b""


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


async def test_the_listener_refuses_over_the_rate_and_serves_the_admitted() -> None:
    settings = ServerSettings(admin_token=ADMIN, limits=Limits(
        connection_rate_per_address=0.001, connection_burst_per_address=1.0))
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(functools.partial(
            run_server, settings, http_port=0, mqtt_port=0))
        admitted, told, closed, late = await trio.to_thread.run_sync(refusals_seen, running)
        connections = running.server.connections
        with trio.fail_after(5):
            while connections.open["mqtt"]:
                await trio.sleep(0.01)
        stats = running.server.statistics()
        nursery.cancel_scope.cancel()
    assert [type(event) for event in admitted] == [ConnAck, ConnectionClosed]
    assert admitted[0].reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    for refused in (told, late):
        assert [type(event) for event in refused] == [ConnAck, ConnectionClosed]
        assert refused[0].reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED
    assert not any(isinstance(event, ConnAck) for event in closed)
    assert connections.refused == 3 and not connections.by_address
    assert stats.mqtt_connections_refused == 1  # the admitted one, by the gateway
