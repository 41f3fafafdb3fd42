"""TcpConnector's bound on connection handshakes at once (``handshake_limiter``).

Clients on real loopback sockets against a broker made of the project's codec that answers
each CONNECT after a pause, so handshakes overlap unless something keeps them apart; the
broker counts how many are under way at once. Real time, bounded.
"""
from __future__ import annotations

from functools import partial

import pytest
import trio

from pushsdk import BrokerConfig, ClientState, PushClient, Timeouts
from pushsdk.protocol import NEED_DATA, ConnAck, Connect, Connection, Role, SubAck, Subscribe
from pushsdk.transport import MAX_HANDSHAKES, TcpConnector

pytestmark = pytest.mark.timeout(30)


class SlowBroker:
    """Answers each CONNECT ``pause`` s after it came; counts handshakes at once."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.handshaking = 0
        self.most = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = Connection(Role.SERVER)
        self.handshaking += 1
        self.most = max(self.most, self.handshaking)
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, Connect):
                    await trio.sleep(self.pause)
                    self.handshaking -= 1
                    await stream.send_all(conn.send(ConnAck(0)))
                elif isinstance(event, Subscribe):
                    await stream.send_all(conn.send(SubAck(event.packet_id, (1,))))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def connect_all(broker: SlowBroker, connectors: list[TcpConnector],
                      connect_timeout: float = 10.0) -> tuple[list[float], int]:
    """Start one client per connector at once: the times after which each was connected,
    and the connection attempts they made in all."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    took: list[float] = []
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, broker.handle, listeners))

        def on_state(old: ClientState, new: ClientState, reason: object) -> None:
            if new is ClientState.CONNECTED:
                took.append(trio.current_time() - start)

        clients = [PushClient(BrokerConfig(host="127.0.0.1", port=port, client_id=f"c{i}",
                                           topics=(f"t/{i}",)),
                              connector=connector, on_message=lambda m: None,
                              on_state_change=on_state,
                              timeouts=Timeouts(connect=connect_timeout))
                   for i, connector in enumerate(connectors)]
        for client in clients:
            nursery.start_soon(client.run)
        with trio.fail_after(20):
            for client in clients:
                await client.wait_connected()
        attempts = sum(client.statistics().connect_attempts for client in clients)
        nursery.cancel_scope.cancel()
    return sorted(took), attempts


async def test_the_run_shares_one_limit_across_connectors() -> None:
    a, b = TcpConnector(), TcpConnector(source_ip="127.0.0.1")
    assert a.handshake_limiter is b.handshake_limiter is not None
    assert a.handshake_limiter.total_tokens == MAX_HANDSHAKES
    own = trio.CapacityLimiter(3)
    assert TcpConnector(handshake_limiter=own).handshake_limiter is own
    assert TcpConnector(handshake_limiter=None).handshake_limiter is None


def test_each_trio_run_has_its_own_limit() -> None:
    connector = TcpConnector()

    async def limiter() -> trio.CapacityLimiter | None:
        return connector.handshake_limiter

    assert trio.run(limiter) is not trio.run(limiter)


async def test_handshakes_wait_for_a_slot_one_at_a_time() -> None:
    broker = SlowBroker(pause=0.1)
    one = trio.CapacityLimiter(1)
    took, _ = await connect_all(broker, [TcpConnector(handshake_limiter=one) for _ in range(3)])
    assert broker.most == 1
    assert took[2] >= 0.3  # three pauses, one after another


async def test_unlimited_handshakes_overlap() -> None:
    broker = SlowBroker(pause=0.2)
    took, _ = await connect_all(broker,
                                [TcpConnector(handshake_limiter=None) for _ in range(3)])
    assert broker.most == 3
    assert took[2] < 0.4  # the pauses overlapped


async def test_the_connect_timeout_runs_from_the_slot_not_from_the_wait() -> None:
    """Each handshake takes 0.3 s and the timeout is 0.5 s: the third client waits 0.6 s
    for its slot and still connects at its first attempt."""
    broker = SlowBroker(pause=0.3)
    one = trio.CapacityLimiter(1)
    took, attempts = await connect_all(
        broker, [TcpConnector(handshake_limiter=one) for _ in range(3)], connect_timeout=0.5)
    assert broker.most == 1 and took[2] >= 0.9
    assert attempts == 3
