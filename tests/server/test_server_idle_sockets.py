"""Device connections on real loopback sockets, where no cancel scope ends them.

On a plain TCP socket with the server's Flusher running, a connection is its task and
nothing more: the read waits in the idle hub with the connection's deadline, and whatever
else ends it (a takeover, a token's revocation, a device that stops reading) must reach
that wait or the one blocking write under way (``MqttSession.run``). Each way a
connection ends is checked here on that path, in real time on loopback, with the server's
own MQTT handler on a TCP pair made by the test (its send buffer can be made small, so a
write really blocks). HTTP goes over in-memory streams, as in the other server tests.
"""
from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from pushsdk.protocol import (
    NO_PROPERTIES,
    ConnectionClosed,
    Disconnect,
    Properties,
    PubAck,
    ReasonCode,
    Subscribe,
)
from pushsdk.tcp import TcpStream
from server_harness import Harness, MqttTestClient, make_server, payload
from simulator.server import RunningServer, serve_tcp

pytestmark = pytest.mark.timeout(60)
ADMIN = "idle-admin"
PERSISTENT = Properties(session_expiry_interval=0xFFFFFFFF)


class SocketHarness(Harness):
    """MQTT clients on real TCP connections to ``server.handle_mqtt_stream`` (a
    :class:`TcpStream` on the server's end, as the plain listener makes)."""

    server_sndbuf: int | None = None  # SO_SNDBUF of the server's end (locks it: no autotuning)
    client_rcvbuf: int | None = None

    def mqtt_client(self, peer: str | None = None, version: int = 4) -> MqttTestClient:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.socket()
            if self.client_rcvbuf is not None:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.client_rcvbuf)
            client.connect(listener.getsockname())  # loopback: done when connect returns
            server_end, _ = listener.accept()
        if self.server_sndbuf is not None:
            server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server_sndbuf)
        self.nursery.start_soon(self.server.handle_mqtt_stream, TcpStream(server_end), peer)
        client.setblocking(False)
        return MqttTestClient(trio.SocketStream(trio.socket.from_stdlib_socket(client)),
                              version)


@pytest.fixture
def start(nursery: trio.Nursery) -> Callable[..., Awaitable[SocketHarness]]:
    """``await start(**settings_or_limits)``: a server whose Flusher and SendGuard run
    (``serve_tcp`` on free loopback ports), and a :class:`SocketHarness` for it."""
    async def make(**overrides: Any) -> SocketHarness:
        server = make_server(ADMIN, **overrides)
        running: RunningServer = await nursery.start(functools.partial(
            serve_tcp, server, http_port=0, mqtt_port=0))
        assert running.server.flusher is not None and running.server.send_guard.running
        return SocketHarness(server, nursery, ADMIN)

    return make


async def connected(harness: Harness, version: int = 5, keepalive: int = 60,
                    ) -> tuple[dict[str, str], dict[str, Any], MqttTestClient]:
    app = await harness.create_app()
    device = await harness.register(app, "phone-1")
    properties = PERSISTENT if version == 5 else NO_PROPERTIES
    client, _ = await harness.device_client(app, device, version=version, keepalive=keepalive,
                                            properties=properties)
    return app, device, client


async def farewell(client: MqttTestClient) -> int:
    """The 5.0 DISCONNECT's reason code; the connection must then close."""
    event = await client.receive()
    assert isinstance(event, Disconnect), event
    await client.expect_closed()
    return event.reason_code


async def test_silence_ends_the_connection_at_one_and_a_half_keepalives(start) -> None:
    harness = await start()
    _, _, client = await connected(harness, keepalive=1)
    silent_since = trio.current_time()  # the SUBACK came: nothing sent since
    with trio.fail_after(10):
        assert await farewell(client) == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert trio.current_time() - silent_since >= 1.5
    assert harness.server.statistics().mqtt_keepalive_timeouts == 1


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "pinging"])
async def test_a_revoked_token_ends_its_connection_after_the_grace(start, busy: bool) -> None:
    """The revocation comes while the read is parked (idle) or between packets (pinging
    every 20 ms): either way the connection ends at its token's revocation."""
    harness = await start(token_grace=0.5)
    app, _, client = await connected(harness)
    revoked_from = trio.current_time()
    await harness.register(app, "phone-1")  # registering again: older tokens revoked

    async def ping() -> None:
        while True:
            await client.ping()
            await trio.sleep(0.02)

    async with trio.open_nursery() as pinging:
        if busy:
            pinging.start_soon(ping)
        with trio.fail_after(10):
            while not isinstance(event := await client.receive(), Disconnect):
                pass  # PINGRESPs
        pinging.cancel_scope.cancel()
    assert event.reason_code == ReasonCode.NOT_AUTHORIZED
    assert trio.current_time() - revoked_from >= 0.5
    assert harness.server.statistics().mqtt_sessions_revoked == 1


async def test_a_second_connect_takes_over_and_the_first_is_told(start) -> None:
    harness = await start()
    app, device, old = await connected(harness)
    new, connack = await harness.device_client(app, device, version=5, subscribe=False,
                                               properties=PERSISTENT)
    assert connack.session_present
    with trio.fail_after(10):
        assert await farewell(old) == ReasonCode.SESSION_TAKEN_OVER
    msg_id = await harness.push_to(app, device, "after")
    with trio.fail_after(10):
        publish = await new.expect_publish()
    assert payload(publish)["msg_id"] == msg_id
    await new.send(PubAck(publish.packet_id))
    assert harness.server.statistics().mqtt_takeovers == 1


async def test_a_device_that_stops_reading_an_answer_is_closed_after_send_timeout(
        start) -> None:
    """The reader itself is the blocked writer (a SUBACK bigger than what the socket
    buffers hold, to a device that reads nothing): the send timeout must end that write,
    and with it the connection, and the server goes on serving others."""
    harness = await start(send_timeout=0.5, max_packet_size=1 << 20)
    app, device, first = await connected(harness, version=4)
    harness.server_sndbuf, harness.client_rcvbuf = 4096, 4096
    other, _ = await harness.device_client(app, await harness.register(app, "phone-2"),
                                           subscribe=False)
    # A 40,000-byte SUBACK, where the two ends' buffers hold about 16 kB.
    filters = tuple((f"t/{n}", 1) for n in range(40_000))
    await other.send(Subscribe(1, filters))
    stalled_from = trio.current_time()
    assert harness.server.statistics().mqtt_connections == 2
    with trio.fail_after(10):  # reading nothing meanwhile: the write can only be ended
        while harness.server.statistics().mqtt_connections == 2:
            await trio.sleep(0.02)  # polls the server's gauge
    assert trio.current_time() - stalled_from >= 0.5
    with trio.fail_after(10):  # what got through, then the end
        while not isinstance(await other.receive(), ConnectionClosed):
            pass
    # The first device was not held up: it still gets its pushes.
    msg_id = await harness.push_to(app, device, "still served")
    with trio.fail_after(10):
        assert payload(await first.expect_publish())["msg_id"] == msg_id
