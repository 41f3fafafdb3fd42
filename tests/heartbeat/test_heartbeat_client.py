"""Virtual-time runs of PushClient with each strategy against the SDK tests' scripted broker."""
import random

import pytest
import trio

from pushsdk import BrokerConfig, MemoryStateStore, PushClient, SdkState, VirtualClock
from pushsdk.heartbeat import parse_strategy
from pushsdk.protocol import ConnAck, Connect, PingReq
from sdk_harness import EPOCH, MemoryNetwork, ScriptedBroker

HOST, PORT = "broker.test", 1883
STABLE_370 = {"strategy": "mars", "interval": 370, "stable": True, "failures": 0,
              "doze_value": False, "modified_at": EPOCH, "doze_events": 0, "normal_events": 0}


def setup(nursery, **broker_kwargs):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(**broker_kwargs)
    net.serve(HOST, PORT, broker.handle)
    return net, broker


def client(net, spec, **kwargs):
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("network_key", "wifi_home")
    config = BrokerConfig(host=HOST, port=PORT, client_id="c1", topics=["t/#"], keepalive=60)
    return PushClient(config, connector=net, clock=VirtualClock(EPOCH),
                      strategy=parse_strategy(spec), **kwargs)


def unanswered(*numbers):
    """An ``answer_pings`` policy that ignores the given PINGREQs (1-based, over all links)."""
    count = 0

    def answer(_index):
        nonlocal count
        count += 1
        return count not in numbers

    return answer


def since_connect(broker, index):
    connected = broker.times(Connect, index)[0]
    return [t - connected for t in broker.times(PingReq, index)]


async def test_mars_warms_up_at_min_then_probes(nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, "mars", app_state="inactive") as c:
        await c.wait_connected()
        await trio.sleep(2300)
        assert c.keepalive == 580
    # 3 warm-up beats, 5 counted at 210 s, then 270 s.
    assert broker.times(PingReq) == [210, 420, 630, 840, 1050, 1260, 1470, 1680, 1950, 2220]


async def test_mars_resumes_the_learned_value_after_the_warm_up(nursery, autojump_clock):
    net, broker = setup(nursery)
    store = MemoryStateStore(SdkState(heartbeat_memory=(("wifi_home", STABLE_370),)))
    async with client(net, "mars", app_state="inactive", state_store=store) as c:
        await c.wait_connected()
        await trio.sleep(1400)
    assert broker.times(PingReq) == [210, 420, 630, 1000, 1370]


async def test_mars_in_the_foreground_stays_at_min(nursery, autojump_clock):
    net, broker = setup(nursery)
    store = MemoryStateStore(SdkState(heartbeat_memory=(("wifi_home", STABLE_370),)))
    async with client(net, "mars", state_store=store) as c:
        await c.wait_connected()
        await trio.sleep(1300)
    assert broker.times(PingReq) == [210, 420, 630, 840, 1050, 1260]


async def test_mars_settles_below_a_failed_probe_across_connections(nursery, autojump_clock):
    probing_450 = {**STABLE_370, "interval": 450, "stable": False, "failures": 1}
    store = MemoryStateStore(SdkState(heartbeat_memory=(("wifi_home", probing_450),)))
    net, broker = setup(nursery, answer_pings=unanswered(4))
    async with client(net, "mars", app_state="inactive", state_store=store):
        await broker.wait_for(lambda: len(broker.times(PingReq, 1)) == 4)
    assert broker.times(PingReq, 0) == [210, 420, 630, 1080]
    assert broker.conns[0].closed_at == 1080 + 8  # Mars's 8 s reply timeout
    assert since_connect(broker, 1) == [210, 420, 630, 1000]
    memory = store.state.memory_for("wifi_home")
    assert (memory["interval"], memory["stable"], memory["failures"]) == (370, True, 0)


@pytest.mark.parametrize("network_type, interval", [("wifi", 900), ("cellular", 1680)])
async def test_fcm_pings_by_network_type_and_waits_a_minute_for_the_ack(
        nursery, autojump_clock, network_type, interval):
    net, broker = setup(nursery, answer_pings=unanswered(3))
    async with client(net, "fcm", network_type=network_type) as c:
        await broker.wait_for(lambda: len(broker.conns) == 2)
        assert c.keepalive == 1680
    assert broker.times(PingReq, 0) == [interval, 2 * interval, 3 * interval]
    assert broker.conns[0].closed_at == 3 * interval + 60


async def test_courier_searches_on_a_probe_connection_while_the_main_one_keeps_30_s(
        nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, "courier") as c:
        await c.wait_connected()
        await trio.sleep(2900)
    main = broker.times(PingReq, 0)
    # The main connection pings every 30 s until the probes found the optimum (1, 3, 5, 7 and
    # 9 min tried one after the other, each opened with a main ping), then every 9 min.
    probe_silences = [broker.times(PingReq, i)[0] - broker.times(Connect, i)[0]
                      for i in range(1, len(broker.conns))]
    assert [round(s / 60) for s in probe_silences] == [1, 3, 5, 7, 9]
    assert main[:3] == [30, 60, 90]
    assert [b - a for a, b in zip(main[-3:], main[-2:])] == [540, 540]


async def test_kontalk_halves_after_a_failed_ping_and_remembers_it(nursery, autojump_clock):
    net, broker = setup(nursery, answer_pings=unanswered(1))
    store = MemoryStateStore()
    async with client(net, "kontalk-344", state_store=store):
        await broker.wait_for(lambda: len(broker.times(PingReq, 1)) == 2)
    assert broker.times(PingReq, 0) == [1800]
    assert broker.conns[0].closed_at == 1810  # the client's default reply timeout
    assert since_connect(broker, 1) == [900, 900 + 1350]
    # 900 worked (x1.5); the answer to the ping at 900 + 1350 is still on its way.
    assert store.state.memory_for("wifi_home") == {"strategy": "kontalk-344", "interval": 1350}


async def test_a_probing_strategy_ends_a_dead_connection_cleanly_and_reconnects(
        nursery, autojump_clock):
    """``adaptive`` runs its session in a nursery (probe connections): a dead link must end
    the session with its reason, not escape as an exception group."""
    net, broker = setup(nursery, answer_pings=lambda index: index != 0)
    reasons = []
    async with client(net, "adaptive",
                      on_state_change=lambda old, new, why: reasons.append(why)) as c:
        await c.wait_connected()
        await broker.wait_for(lambda: c.statistics().heartbeats_failed >= 1
                              and c.statistics().connects >= 2)
        stats = c.statistics()
    assert any(why.startswith("no PINGRESP within") for why in reasons)
    assert stats.heartbeats_failed >= 1 and stats.connects >= 2


@pytest.mark.parametrize("version, busy, refused", [
    (4, 3, 2),  # 3.1.1: "server unavailable" is for now; "identifier rejected" for good
    (5, 0x97, 0x85),  # 5.0: "quota exceeded" for now; "client identifier not valid" for good
])
async def test_a_probe_refused_for_now_is_tried_again_later_not_given_up(
        nursery, autojump_clock, version, busy, refused):
    """A server that holds the device's earlier probes (their NAT died under them) refuses
    the next one for now: the strategy learns nothing and keeps probing, after 1.5 × the
    refused probe's keepalive. A refusal for good sends the search in-band."""
    for code, gives_up in ((busy, False), (refused, True)):
        def connack(connect, index, code=code):
            return ConnAck(code) if connect.client_id.endswith("/probe") else ConnAck(0)

        net, broker = setup(nursery, connack=connack, protocol_version=version)
        store = MemoryStateStore()
        config = BrokerConfig(host=HOST, port=PORT, client_id="c1", topics=["t/#"],
                              keepalive=60, mqtt_version="5" if version == 5 else "3.1.1")
        async with PushClient(config, connector=net, clock=VirtualClock(EPOCH),
                              strategy=parse_strategy("adaptive"), rng=random.Random(1),
                              network_key="wifi_home", state_store=store) as c:
            await c.wait_connected()
            await trio.sleep(1000)
        probes = [(broker.times(Connect, i)[0], broker.conns[i].connect.keepalive)
                  for i in range(1, len(broker.conns))]
        memory = store.state.memory_for("wifi_home")
        assert memory["inband"] is gives_up
        if gives_up:
            assert len(probes) == 1
        else:
            (first, keepalive), (second, _) = probes[:2]
            assert second - first >= 1.5 * keepalive
            assert second - first < 1.5 * keepalive + 121  # at the next main beat
