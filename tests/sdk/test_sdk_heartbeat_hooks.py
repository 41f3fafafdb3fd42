"""The hooks the faithful strategies need, in exact virtual time: ``foreground_changed_at``
(set on foreground changes only), ``reply_timeout`` (each ping's own answer deadline) and
``doze_exempt`` (Doze ignored for an exempt connection)."""
import random

import attrs
import pytest
import trio

from pushsdk import BrokerConfig, ClientState, FixedStrategy, PushClient, VirtualClock
from pushsdk.heartbeat import parse_strategy
from pushsdk.heartbeat.mars import MarsStrategy
from pushsdk.protocol import PingReq
from sdk_harness import EPOCH, MemoryNetwork, ScriptedBroker

HOST, PORT = "broker.test", 1883


def setup(nursery, **broker_kwargs):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(**broker_kwargs)
    net.serve(HOST, PORT, broker.handle)
    return net, broker


def client(net, strategy, **kwargs):
    config = BrokerConfig(host=HOST, port=PORT, client_id="h1", topics=["t/#"])
    return PushClient(config, connector=net, clock=VirtualClock(EPOCH), strategy=strategy,
                      rng=random.Random(1), **kwargs)


@attrs.frozen
class Recording(FixedStrategy):
    seen: list = attrs.field(factory=list, eq=False)

    def interval(self, state, ctx):
        self.seen.append((ctx.now, ctx.app_state, ctx.app_state_since,
                          ctx.foreground_changed_at))
        return super().interval(state, ctx)


async def test_foreground_changed_at_moves_on_foreground_changes_only(nursery, autojump_clock):
    net, broker = setup(nursery)
    strategy = Recording(1000)
    async with client(net, strategy) as c:
        await c.wait_connected()
        start = trio.current_time()
        for at, state in ((10, "background"), (20, "inactive"), (30, "background"),
                          (40, "foreground"), (50, "foreground")):
            await trio.sleep_until(start + at)
            c.set_app_state(state)
            await trio.sleep(0.001)  # the session looks again (it is woken)
        await trio.sleep(1)
    last = {}
    for now, state, since, changed in strategy.seen:
        last[round(now - start)] = (state, round(since - start), round(changed - start))
    assert last[0] == ("foreground", 0, 0)
    assert last[10] == ("background", 10, 10)
    assert last[20] == ("inactive", 20, 10)  # screen off: no foreground change
    assert last[30] == ("background", 30, 10)  # screen on again: none either
    assert last[40] == ("foreground", 40, 40)
    assert 50 not in last or last[50] == ("foreground", 40, 40)  # no change at all


@attrs.frozen
class LateShort(FixedStrategy):
    """A reply timeout of its own: 3 s after a late beat, 7 s otherwise (Mars's rule in
    miniature)."""

    def reply_timeout(self, state, ctx):
        return 3.0 if ctx.lateness > 0 else 7.0


async def test_each_ping_gets_the_strategys_reply_timeout(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=lambda i: False)
    async with client(net, LateShort(100)) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await broker.wait_for(lambda: len(broker.conns) == 2)
    assert broker.times(PingReq, 0) == [t0 + 100]
    assert broker.conns[0].closed_at == pytest.approx(t0 + 107)  # its 7 s, not 10


async def test_a_late_beat_gets_the_short_timeout(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=lambda i: False)
    async with client(net, LateShort(100)) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(50)
        c.set_device_idle(True)  # Doze holds the beat due at 100 until 160
        await trio.sleep(110)
        c.set_device_idle(False)
        await broker.wait_for(lambda: len(broker.conns) == 2)
    assert broker.times(PingReq, 0) == [pytest.approx(t0 + 160)]
    assert broker.conns[0].closed_at == pytest.approx(t0 + 163)  # late: 3 s


async def test_an_explicit_ping_timeout_wins_over_the_strategy(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=lambda i: False)
    async with client(net, LateShort(100), ping_timeout=12) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await broker.wait_for(lambda: len(broker.conns) == 2)
    assert broker.conns[0].closed_at == pytest.approx(t0 + 112)


async def test_mars_reply_timeout_is_used(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=lambda i: False)
    mars = parse_strategy("mars")
    assert isinstance(mars, MarsStrategy)
    async with client(net, mars) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await broker.wait_for(lambda: len(broker.conns) == 2)
    (ping,) = broker.times(PingReq, 0)
    assert broker.conns[0].closed_at == pytest.approx(ping + 8)  # __NoopReq's 8 s
    assert ping > t0


@attrs.frozen
class Exempt(FixedStrategy):
    doze_exempt = True


async def test_doze_is_ignored_for_an_exempt_strategy(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, Exempt(100)) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(50)
        c.set_device_idle(True)
        assert not c.device_idle
        await trio.sleep(300)
        assert c.state is ClientState.CONNECTED
    assert broker.times(PingReq) == [t0 + 100, t0 + 200, t0 + 300]  # on time, idle or not


async def test_doze_defers_a_non_exempt_strategy(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, FixedStrategy(100)) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(50)
        c.set_device_idle(True)
        assert c.device_idle
        await trio.sleep(300)
        c.set_device_idle(False)
        await trio.sleep(1)
    assert broker.times(PingReq) == [pytest.approx(t0 + 350)]  # held until Doze ended
