"""Virtual-time tests of the connection loop: heartbeats, dead links, backoff, networks."""
import itertools
import random
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio

from pushsdk import (
    ClientClosed,
    NotAuthorized,
    Backoff,
    BrokerConfig,
    ClientState,
    FixedStrategy,
    HeartbeatContext,
    HeartbeatStrategy,
    PushClient,
    VirtualClock,
)
from pushsdk.protocol import ConnAck, Connect, Disconnect, PingReq, Subscribe
from sdk_harness import EPOCH, MemoryNetwork, ScriptedBroker

HOST, PORT = "broker.test", 1883


def broker_config(**kwargs):
    return BrokerConfig(host=HOST, port=PORT, client_id="c1", topics=["t/#"], **kwargs)


def setup(nursery, **broker_kwargs):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(**broker_kwargs)
    net.serve(HOST, PORT, broker.handle)
    return net, broker


def client(net, **kwargs):
    kwargs.setdefault("strategy", FixedStrategy(100))
    kwargs.setdefault("rng", random.Random(1))
    return PushClient(broker_config(), connector=net, clock=VirtualClock(EPOCH), **kwargs)


async def test_fixed_pings_every_n_seconds(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(350)
        stats = c.statistics()
    assert broker.times(PingReq) == [t0 + 100, t0 + 200, t0 + 300]
    assert (stats.heartbeats_sent, stats.heartbeats_succeeded, stats.heartbeats_failed) == (3, 3, 0)
    assert stats.heartbeat_interval == 100
    connect = broker.events(Connect)[0]
    assert (connect.client_id, connect.keepalive, connect.clean_session) == ("c1", 100, False)
    assert broker.events(Subscribe)[0].subscriptions == (("t/#", 1),)
    assert broker.events(Disconnect)  # aclose says goodbye
    assert len(net.attempts) == 1


async def test_traffic_postpones_the_ping(nursery, autojump_clock):
    from pushsdk.protocol import Publish

    net, broker = setup(nursery)
    async with client(net) as c:
        await c.wait_connected()
        await trio.sleep(60)
        await broker.current.send(Publish("t/x", b"hello", qos=1, packet_id=7))
        await trio.sleep(150)
    assert broker.times(PingReq) == [160]  # 100 s of silence after the message at t=60


async def test_keepalive_is_declared_from_the_strategy(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with PushClient(broker_config(keepalive=30), connector=net,
                          strategy=FixedStrategy(90.5)) as c:
        await c.wait_connected()
        assert c.keepalive == 91
    assert broker.events(Connect)[0].keepalive == 91


async def test_dead_link_detected_at_interval_plus_ping_timeout(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=lambda i: i > 0)
    reasons = []
    async with client(net, ping_timeout=7,
                      on_state_change=lambda o, n, r: reasons.append((n, r))) as c:
        await c.wait_connected()
        await broker.wait_for(lambda: len(broker.conns) == 2)
        await c.wait_connected()
        stats = c.statistics()
    assert broker.times(PingReq, index=0) == [100]
    assert broker.conns[0].closed_at == 107  # exactly interval + ping timeout
    assert (ClientState.WAITING, "no PINGRESP within 7 s") in reasons
    assert stats.heartbeats_failed == 1 and stats.reconnects == 1
    # The link was up more than reset_after (60 s): the retry uses attempt 0, U(0, 1 s).
    assert 107 <= net.attempts[1][0] <= 108


async def test_backoff_delays_follow_the_policy_exactly(nursery, autojump_clock):
    net, broker = setup(nursery)
    net.refuse = True
    policy = Backoff(initial=2, multiplier=3, max_delay=50)
    async with client(net, backoff=policy, rng=random.Random(42)) as c:
        await net.wait_for(lambda: len(net.attempts) == 7)
        net.refuse = False
        await c.wait_connected()
    times = [a[0] for a in net.attempts]
    replica = random.Random(42)
    expected = [0.0]
    for n in range(7):
        expected.append(expected[-1] + policy.delay(n, replica))
    assert times == pytest.approx(expected[:len(times)], abs=1e-9)
    for n, (a, b) in enumerate(itertools.pairwise(times)):
        assert 0 <= b - a <= policy.ceiling(n)


async def test_backoff_grows_while_flapping_and_resets_after_a_stable_link(
        nursery, autojump_clock):
    # Connections 0-3 are cut after 5 s; connection 4 lasts 61 s (> reset_after = 60).
    lifetimes = [5, 5, 5, 5, 61, 5]
    net, broker = setup(nursery, close_after=lambda i: lifetimes[i] if i < 6 else None)
    policy = Backoff(initial=4, multiplier=2, max_delay=1000, reset_after=60)
    async with client(net, backoff=policy, rng=random.Random(3)) as c:
        await net.wait_for(lambda: len(net.attempts) == 7)
        stats = c.statistics()
    times = [a[0] for a in net.attempts]
    ends = [conn.closed_at for conn in broker.conns]
    waits = [times[i + 1] - ends[i] for i in range(6)]
    replica = random.Random(3)
    # attempt counter: 0,1,2,3 while flapping; reset by the stable link; then 0 again... but
    # the short link after the reset increments it to 1.
    expected = [policy.delay(n, replica) for n in (0, 1, 2, 3, 0, 1)]
    assert waits == pytest.approx(expected, abs=1e-9)
    assert stats.connects == 6 and stats.reconnects == 5


async def test_connack_3_backs_off_and_connack_5_ends_the_client(nursery, autojump_clock):
    codes = [3, 3, 5, 0]
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(codes[i]))
    reasons = []
    policy = Backoff(initial=1, max_delay=300)
    with pytest.raises(NotAuthorized):
        async with client(net, backoff=policy, rng=random.Random(9),
                          on_state_change=lambda o, n, r: reasons.append((n, r))) as c:
            await c.wait_connected()
    times = [a[0] for a in net.attempts]
    rng = random.Random(9)
    first = policy.delay(0, rng)
    second = policy.delay(1, rng)
    assert times == pytest.approx([0, first, first + second])  # no fourth attempt
    waiting = [r for n, r in reasons if n is ClientState.WAITING]
    assert [r.code for r in waiting] == ["server_unavailable", "server_unavailable"]
    assert reasons[-1][0] is ClientState.CLOSED and reasons[-1][1].code == "not_authorized"
    assert c.error.return_code == 5


async def test_network_change_reconnects_at_once(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net) as c:
        await c.wait_connected()
        await trio.sleep(50)
        c.notify_network_changed("cell_1", network_type="cellular")
        await broker.wait_for(lambda: len(broker.conns) == 2 and broker.online())
        assert trio.current_time() == 50
        assert c.statistics().network_type == "cellular"
        await trio.sleep(120)
        # Offline: no attempts until a network is back, then at once.
        c.notify_network_changed(None)
        await trio.sleep(1000)
        assert c.state is ClientState.OFFLINE
        c.notify_network_changed("wifi_2")
        await c.wait_connected()
    assert [a[0] for a in net.attempts] == [0, 50, 1170]
    assert broker.conns[0].closed_at == 50
    assert broker.times(PingReq) == [150]  # connection 1 pinged once, at 50 + 100


async def test_network_change_during_backoff_skips_the_wait(nursery, autojump_clock):
    net, broker = setup(nursery)
    net.refuse = True
    async with client(net, backoff=Backoff(initial=100, max_delay=100)) as c:
        await net.wait_for(lambda: len(net.attempts) == 2)
        await trio.sleep(1)
        t = trio.current_time()
        net.refuse = False
        c.notify_network_changed("other")
        await c.wait_connected()
        assert trio.current_time() == t


@attrs.frozen
class Learning(HeartbeatStrategy):
    """Adds 10 s per success, halves on failure, remembers the value per network."""

    name = "learning"
    max_interval = 1000.0
    ping_timeout = 5.0
    seen: list = attrs.field(factory=list, eq=False)

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> float:
        self.seen.append(("start", ctx.network_key, dict(memory) if memory else None))
        return memory["interval"] if memory else 100.0

    def interval(self, state: float, ctx: HeartbeatContext) -> float:
        return state if ctx.app_state == "foreground" else 3 * state

    def on_success(self, state: float, ctx: HeartbeatContext) -> float:
        return state + 10

    def on_failure(self, state: float, ctx: HeartbeatContext) -> float:
        self.seen.append(("failure", ctx.network_key, ctx.now))
        return state / 2

    def memory(self, state: float) -> Mapping[str, Any]:
        return {"interval": state}


async def test_strategy_memory_per_network(nursery, autojump_clock):
    from pushsdk import MemoryStateStore

    net, broker = setup(nursery, answer_pings=lambda i: i != 2)
    strategy = Learning()
    store = MemoryStateStore()
    async with client(net, strategy=strategy, state_store=store, network_key="wifi_a") as c:
        await c.wait_connected()
        assert c.keepalive == 1000
        await trio.sleep(100 + 110 + 1)  # two successes: 100 -> 110 -> 120
        c.notify_network_changed("cell_b", "cellular")
        await broker.wait_for(lambda: len(broker.conns) == 2)
        await trio.sleep(1)
        c.notify_network_changed("wifi_a")
        # connection 2 ignores pings: failure after 120 + 5 s, the value halves to 60
        await broker.wait_for(lambda: len(broker.conns) == 4)
    assert strategy.seen[:3] == [
        ("start", "wifi_a", None),
        ("start", "cell_b", None),
        ("start", "wifi_a", {"interval": 120.0}),
    ]
    assert strategy.seen[3][:2] == ("failure", "wifi_a")
    assert broker.conns[2].closed_at - broker.times(Connect, index=2)[0] == 125
    assert store.state.memory_for("wifi_a") == {"interval": 60.0}
    # Nothing learned on cell_b yet: what is stored is the strategy's own starting point,
    # saved as soon as the connection started (strategies may count attempts there).
    assert store.state.memory_for("cell_b") == {"interval": 100.0}


async def test_app_state_change_reevaluates_the_interval(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, strategy=Learning()) as c:
        await c.wait_connected()
        await trio.sleep(50)
        c.set_app_state("background")  # interval 100 -> 300, counted from the last packet
        await trio.sleep(400)
        with pytest.raises(ValueError):
            c.set_app_state("asleep")
    assert broker.times(PingReq) == [300]


async def test_link_breaking_while_a_ping_is_out_counts_as_failure(nursery, autojump_clock):
    # Connection 0 ignores pings and is cut 3 s after the ping, before the 10 s timeout.
    net, broker = setup(nursery, answer_pings=lambda i: i > 0,
                        close_after=lambda i: 103 if i == 0 else None)
    async with client(net) as c:
        await broker.wait_for(lambda: len(broker.conns) == 2)
        assert c.statistics().heartbeats_failed == 1


async def test_keepalive_bound_pings_when_only_receiving(nursery, autojump_clock):
    # QoS 0 traffic every 30 s keeps the link busy, but the broker needs to hear from the
    # client within the keepalive: it pings at 100 s after its last sent packet.
    from pushsdk.protocol import Publish

    net, broker = setup(nursery)
    async with client(net, strategy=FixedStrategy(100)) as c:
        await c.wait_connected()
        for _ in range(8):
            await trio.sleep(30)
            await broker.current.send(Publish("t/x", b"tick", qos=0))
    assert broker.times(PingReq) == [100, 200]


async def test_statistics_count_every_byte(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net) as c:
        await c.wait_connected()
        await trio.sleep(250)
        stats = c.statistics()
    assert stats.bytes_up == broker.bytes_received - 2  # all but the final DISCONNECT
    assert stats.bytes_down == broker.bytes_sent
    assert stats.connected_time == 250
    assert stats.state is ClientState.CONNECTED
    assert c.state is ClientState.CLOSED


async def test_wait_connected_raises_once_closed(nursery, autojump_clock):
    net, _ = setup(nursery)
    net.refuse = True
    c = client(net)
    async with c:
        await trio.sleep(5)
        await c.aclose()
        with pytest.raises(ClientClosed):
            await c.wait_connected()
    assert c.state is ClientState.CLOSED


async def test_body_exception_propagates_unwrapped(nursery, autojump_clock):
    net, _ = setup(nursery)
    with pytest.raises(KeyError):
        async with client(net) as c:
            await c.wait_connected()
            raise KeyError("mine")


async def test_run_in_a_caller_nursery(nursery, autojump_clock):
    # How a simulation runs thousands of clients: no nursery per client.
    net, broker = setup(nursery)
    clients = [PushClient(BrokerConfig(host=HOST, port=PORT, client_id=f"c{i}", topics=["t"]),
                          connector=net, strategy=FixedStrategy(60)) for i in range(50)]
    async with trio.open_nursery() as fleet:
        for c in clients:
            fleet.start_soon(c.run)
        for c in clients:
            await c.wait_connected()
        await trio.sleep(130)
        for c in clients:
            await c.aclose()
    assert len(broker.times(PingReq)) == 100
    assert all(c.state is ClientState.CLOSED for c in clients)
    with pytest.raises(RuntimeError):
        await clients[0].run()


@attrs.frozen
class Broken(HeartbeatStrategy):
    name = "broken"
    max_interval = 10.0

    def start(self, memory, ctx):
        return None

    def interval(self, state, ctx):
        return 0.0


async def test_a_zero_interval_does_not_spin(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, strategy=Broken()) as c:
        await c.wait_connected()
        await trio.sleep(1.05)
    assert broker.times(PingReq) == pytest.approx([0.1 * k for k in range(1, 11)])


async def test_device_idle_defers_heartbeats_to_the_end_of_doze(nursery, autojump_clock):
    # Doze from t0+150 to t0+1000: the ping due at t0+200 waits for the end of Doze and goes
    # out at once then (800 s late); the next one follows 100 s after its answer.
    net, broker = setup(nursery)
    async with client(net) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(150)
        c.set_device_idle(True)
        await trio.sleep(850)
        assert broker.times(PingReq) == [t0 + 100]
        c.set_device_idle(False)
        await trio.sleep(150)
        stats = c.statistics()
    pings = broker.times(PingReq)
    assert pings[:2] == [t0 + 100, t0 + 1000]
    assert pings[2] == pytest.approx(t0 + 1100, abs=0.01)
    assert stats.heartbeats_failed == 0 and stats.connects == 1


async def test_ping_outstanding_when_doze_starts_gets_a_full_timeout_after_it(nursery,
                                                                              autojump_clock):
    # The broker ignores the first ping; Doze starts 1 s after it. Without the idle rule the
    # link would be declared dead 10 s after the ping; with it, 10 s after Doze ends.
    net, broker = setup(nursery, answer_pings=lambda i: i != 0)
    async with client(net) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(101)
        c.set_device_idle(True)
        await trio.sleep(499)
        assert c.state is ClientState.CONNECTED
        c.set_device_idle(False)
        await broker.wait_for(lambda: len(broker.conns) == 2)
    assert broker.conns[0].closed_at == pytest.approx(t0 + 600 + 10)


async def test_no_connection_attempt_while_device_idle(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net) as c:
        c.set_device_idle(True)
        await trio.sleep(3600)
        assert net.attempts == []
        c.set_device_idle(False)
        await c.wait_connected()
        assert trio.current_time() == pytest.approx(3600, abs=1)


class _StallingStream(trio.abc.Stream):
    """Passes bytes through until ``stall`` is set; then every write blocks forever (a peer
    that stopped reading with full TCP buffers)."""

    def __init__(self, inner):
        self.inner, self.stall = inner, False

    async def send_all(self, data):
        if self.stall:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.inner.receive_some(max_bytes)

    async def aclose(self):
        await self.inner.aclose()


async def test_a_stalled_write_ends_the_session_after_the_ping_timeout(nursery, autojump_clock):
    net, broker = setup(nursery)
    streams = []

    class Stalling:
        async def connect(self, host, port, *, tls):
            stream = _StallingStream(await net.connect(host, port, tls=tls))
            streams.append(stream)
            return stream

    reasons = []
    c = PushClient(broker_config(), connector=Stalling(), clock=VirtualClock(EPOCH),
                   strategy=FixedStrategy(100), rng=random.Random(1),
                   on_state_change=lambda old, new, why: reasons.append((trio.current_time(), why)))
    async with c:
        await c.wait_connected()
        t0 = trio.current_time()
        streams[0].stall = True  # the ping due at t0 + 100 cannot be written
        await broker.wait_for(lambda: len(broker.conns) == 2)
        stats = c.statistics()
    ended = [(t, why) for t, why in reasons if "stalled" in why]
    assert ended and ended[0][0] == pytest.approx(t0 + 100 + 10)
    assert ended[0][1] == "sending stalled for 10 s"
    # A ping never written is no heartbeat: the strategy learns nothing from the stall.
    assert (stats.heartbeats_sent, stats.heartbeats_failed) == (0, 0)


async def test_an_answer_queued_behind_a_slow_callback_still_counts(nursery, autojump_clock):
    """The PINGRESP arrives while the app spends 30 s (> ping timeout) in a callback: time in
    callbacks does not count against the ping, so the answer, read afterwards, is a success."""
    from pushsdk.protocol import PingResp, Publish

    net, broker = setup(nursery, answer_pings=lambda i: False)

    async def slow(message):
        await trio.sleep(30)

    async with client(net, ping_timeout=10, on_message=slow) as c:
        await c.wait_connected()
        await broker.wait_for(lambda: broker.events(PingReq))
        await broker.current.send(Publish(topic="t/x", payload=b"hello", qos=1, packet_id=7))
        await broker.current.send(PingResp())
        await trio.sleep(90)  # the next ping (100 s after the PUBACK at 130) is not due yet
        stats = c.statistics()
    assert (stats.heartbeats_sent, stats.heartbeats_succeeded, stats.heartbeats_failed) == (1, 1, 0)
    assert (stats.messages_dispatched, stats.reconnects) == (1, 0)
    assert len(net.attempts) == 1


@pytest.mark.parametrize("where", ["connected", "backing off", "offline", "doze"])
async def test_aclose_returns_at_once_wherever_the_client_waits(nursery, autojump_clock, where):
    net, broker = setup(nursery)
    net.refuse = where == "backing off"
    c = client(net)
    async with trio.open_nursery() as own:
        own.start_soon(c.run)
        if where == "connected":
            await c.wait_connected()
        await trio.sleep(30)
        if where == "offline":
            c.notify_network_changed(None)
        elif where == "doze":
            c.set_device_idle(True)
        await trio.sleep(30)
        expected = {"connected": ClientState.CONNECTED, "backing off": ClientState.WAITING,
                    "offline": ClientState.OFFLINE}.get(where)
        if expected is not None:
            assert c.state is expected
        t = trio.current_time()
        await c.aclose()
        assert trio.current_time() == t
    assert c.state is ClientState.CLOSED
    # Doze keeps the connection (only the pings stop), so closing says goodbye there too.
    assert bool(broker.events(Disconnect)) == (where in ("connected", "doze"))
