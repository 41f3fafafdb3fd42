"""The simulated world end to end: the real SDK and server over simulated links and NATs.

Each test runs one tiny world (one to a few handsets, one or two virtual hours) with
``run_world`` and checks its results against arithmetic on the scenario's figures. Jitter is
0 unless a test says otherwise, so virtual times are exact.
"""
import math

import pytest

from simulator.radio import get_model
from simulator.scenario import Scenario
from simulator.world import RunConfig, run_world
from simworld import one_network, pushes

PING_TIMEOUT = 10.0  # the SDK's default (pushsdk.client.DEFAULT_PING_TIMEOUT)
LATENCY = 0.04  # one way, the test scenarios' 40 ms


def run_one(scenario, strategy, hours, seed=1, observer=None):
    [result] = run_world(RunConfig(scenario, strategy, 1, hours, seed=seed), observer=observer)
    return result


def test_nat_longer_than_the_interval_costs_exactly_the_expected_beats(recorder):
    result = run_one(one_network(nat=600), "fixed:300", hours=2, observer=recorder)
    [connected_at] = recorder.connected_times()
    # Register (1 RTT on a new TCP connection + the HTTP exchange), connect, CONNACK: 0.32 s.
    assert connected_at == pytest.approx(8 * LATENCY)
    # The first ping goes 300 s after the SUBSCRIBE; each later one 300 s after the PINGRESP
    # came back (one round trip after its ping): every 300.08 s.
    first = connected_at + 300
    expected = 1 + math.floor((7200 - first) / (300 + 2 * LATENCY))
    assert result.heartbeats == expected == 23
    assert result.heartbeats_failed == 0
    assert result.reconnects == 0
    assert result.dead_s == 0
    assert result.connected_s == pytest.approx(7200 - connected_at)
    assert result.duplicates == 0


def test_nat_shorter_than_the_interval_kills_every_connection(recorder):
    result = run_one(one_network(nat=200), "fixed:300", hours=1, observer=recorder)
    assert result.heartbeats_failed > 0
    assert result.reconnects == result.heartbeats_failed == result.heartbeats
    assert result.dead_s > 0
    cycles = recorder.left_connected()[:-1]  # the last one is the end of the run
    assert len(cycles) == result.heartbeats_failed
    connects = recorder.connected_times()
    for connected_at, ended in zip(connects, cycles):
        # The NAT saw its last packet when the server sent the SUBACK (one latency after
        # the SUBSCRIBE left) and forgot the connection 200 s later.
        assert ended.dead_since == pytest.approx(connected_at + LATENCY + 200)
        # The SDK pinged 300 s after its last activity and gave up after the ping timeout.
        assert ended.reason == f"no PINGRESP within {PING_TIMEOUT:g} s"
        assert ended.t == pytest.approx(connected_at + 300 + PING_TIMEOUT)
    per_cycle = 300 + PING_TIMEOUT - 200 - LATENCY  # 109.96 s of each cycle was dead
    assert result.dead_s == pytest.approx(per_cycle * len(cycles))
    # Each cycle is 310 s up plus a backoff of U(0, 1) s and 0.16 s to connect: 11 in an hour.
    assert len(cycles) == 11


def test_rst_nat_lets_the_sdk_learn_at_once(recorder):
    result = run_one(one_network(nat=200, behaviour="rst"), "fixed:300", hours=1, observer=recorder)
    assert result.reconnects == result.heartbeats_failed > 0
    # Dead from each expiry (200 s after the last packet) until the next ping, at 300 s,
    # is answered by the RST: about 100 s per cycle, with no ping timeout on top.
    # (the run's last cycle ends before its ping: dead from its expiry to the end).
    cycles = result.heartbeats_failed
    assert 100.0 * cycles - 1 <= result.dead_s <= 100.0 * (cycles + 1) + 1
    connects = recorder.connected_times()
    for connected_at, ended in zip(connects, recorder.left_connected()[:-1]):
        assert ended.t == pytest.approx(connected_at + 300)  # at the ping, no ping timeout
        assert "reset" in ended.reason


def test_silent_drop_costs_dead_time_that_rst_does_not():
    drop = run_one(one_network(nat=200), "fixed:300", hours=1)
    rst = run_one(one_network(nat=200, behaviour="rst"), "fixed:300", hours=1)
    assert drop.dead_s / drop.connected_s > 0.3
    # RST saves the ping timeout (10 s) of every cycle.
    assert rst.dead_s < drop.dead_s


NO_CPU = 'cpu = "none"'  # radio energy alone (the CPU's share is tested apart)


def test_each_beat_also_costs_a_cpu_wake_up():
    from simulator.radio.cpu import NEXUS4
    scenario = one_network(nat=3600, radio="wifi", net_type="wifi", latency_ms=10)
    radio_only = run_one(one_network(nat=3600, radio="wifi", net_type="wifi", latency_ms=10,
                                     group=NO_CPU), "fixed:300", hours=2)
    result = run_one(scenario, "fixed:300", hours=2)
    cpu = result.energy_j - radio_only.energy_j
    wakeups = result.heartbeats + 1  # every beat, and the first connection
    rtt = 0.02
    # Each beat keeps the CPU up from the PINGREQ to 1 s after the PINGRESP; the first
    # connection's exchange (register, connect, subscribe: 0.1 s) for 1 s after its end.
    awake = (NEXUS4.awake_s + rtt) * result.heartbeats + NEXUS4.awake_s + 0.1
    expected = NEXUS4.voltage * (NEXUS4.awake_a * awake + NEXUS4.active_a * NEXUS4.active_s
                                 * wakeups)
    assert cpu == pytest.approx(expected, rel=1e-6)
    # On Wi-Fi the CPU wake costs more than the radio's promotion and tail.
    assert cpu > radio_only.energy_j


def beat_energy(radio: str, rtt: float) -> float:
    """Joules of one isolated heartbeat as the handset meters it: PINGREQ (42 B) and the
    server's delayed ACK at once, then PINGRESP (42 B) and our ACK one round trip later."""
    meter = get_model(radio).new_meter()
    meter.on_packet(0.0, "up", 42)
    meter.on_packet(0.0, "down", 40)
    meter.on_packet(rtt, "down", 42)
    meter.on_packet(rtt, "up", 40)
    return meter.statistics().joules


@pytest.mark.parametrize("radio, interval", [
    ("lte", 300), ("lte", 600), ("3g", 300), ("lte-aro", 240), ("3g-aro", 300),
])
def test_energy_of_a_fixed_heartbeat_is_beats_times_e1(radio, interval):
    hours = 2
    result = run_one(one_network(nat=3600, radio=radio, group=NO_CPU), f"fixed:{interval}",
                     hours=hours)
    # Every beat (and the first connect) finds the radio idle again: one E1 each.
    beats = hours * 3600 // interval
    assert result.promotions == beats
    e1 = get_model(radio).isolated_energy()
    assert result.energy_j == pytest.approx(beats * e1, rel=0.02)
    # Closer still: the 80 ms round trip stretches each beat's tail a little.
    assert result.energy_j == pytest.approx(beats * beat_energy(radio, 2 * LATENCY), rel=0.005)


def test_energy_on_wifi_counts_the_round_trip_in_the_tail():
    # Wi-Fi's tail (0.24 s) is short, so a 20 ms round trip adds ~6 % to E1 per beat.
    scenario = one_network(nat=3600, radio="wifi", net_type="wifi", latency_ms=10, group=NO_CPU)
    result = run_one(scenario, "fixed:300", hours=2)
    assert result.promotions == 24
    e1 = get_model("wifi").isolated_energy()
    assert result.energy_j == pytest.approx(24 * beat_energy("wifi", 0.02), rel=0.02)
    assert 24 * e1 < result.energy_j < 24 * e1 * 1.1


def test_idle_paging_baseline_is_reported_apart_from_traffic_energy():
    result = run_one(one_network(nat=3600), "fixed:300", hours=2)
    model = get_model("lte")
    # LTE pages at ~20 mW whenever the radio is idle, whatever the SDK does.
    assert result.idle_baseline_j == pytest.approx(
        model.idle_baseline_j(7200 - result.radio_active_s), rel=1e-6)
    assert result.idle_baseline_j == pytest.approx(0.02005 * 7200, rel=0.05)


def test_bytes_count_tcp_ip_overhead_of_each_heartbeat():
    short = run_one(one_network(nat=3600), "fixed:300", hours=1)
    long = run_one(one_network(nat=3600), "fixed:300", hours=2)
    extra_beats = long.heartbeats - short.heartbeats
    # A PINGREQ is 2 B of MQTT + 40 B of IPv4/TCP headers up, acknowledged by the
    # PINGRESP's 42 B down plus a 40 B delayed ACK each way.
    per_beat_up = (long.bytes_up - short.bytes_up) / extra_beats
    per_beat_down = (long.bytes_down - short.bytes_down) / extra_beats
    assert per_beat_up == pytest.approx(42 + 40)
    assert per_beat_down == pytest.approx(42 + 40)


def test_other_apps_traffic_is_not_billed_to_the_sdk():
    background = "background = { wakeups_per_hour = 6 }"
    for interval in (120, 300, 600):
        quiet = run_one(one_network(nat=3600), f"fixed:{interval}", hours=2, seed=4)
        busy = run_one(one_network(nat=3600, group=background), f"fixed:{interval}", hours=2,
                       seed=4)
        spec = one_network(nat=3600, group=background).handset_spec(0, 4, hours=2)
        wakeups = len(spec.background.times)
        assert wakeups >= 6
        own_cost = wakeups * get_model("lte").isolated_energy()
        # Other apps wake the radio more often (more promotions) ...
        assert busy.promotions > quiet.promotions
        assert busy.heartbeats == quiet.heartbeats
        # ... but the SDK is billed only what its own packets add: never the other apps'
        # cost, and no more than when it had the radio to itself (shared tails help it).
        assert busy.energy_j <= quiet.energy_j + 1e-6
        assert busy.energy_j < quiet.energy_j + 0.05 * own_cost


SWITCH = """
[networks.home]
type = "wifi"
radio = "wifi"
nat_timeout_s = 3600
latency_ms = 10
jitter_ms = 0

[[groups.switches]]
at = "00:30"
to = "home"
"""


def test_network_switch_reconnects_at_once_and_keeps_delivering(recorder):
    scenario = one_network(nat=3600, group=SWITCH, workload=pushes(400))
    result = run_one(scenario, "fixed:270", hours=1, observer=recorder)
    moved = [s for s in recorder.states if s.old == "CONNECTED" and s.t == 1800.0]
    assert len(moved) == 1
    back = [t for t in recorder.connected_times() if t >= 1800]
    # No backoff: the new TCP handshake and CONNECT/CONNACK on Wi-Fi (10 ms each way).
    assert back[0] == pytest.approx(1800 + 4 * 0.010)
    assert result.reconnects == 1
    assert result.heartbeats_failed == 0
    assert result.dead_s == 0  # the SDK was told: no zombie time
    after = [d for d in recorder.deliveries if d.t > 1800]
    assert after, "the workload puts pushes after the switch"
    assert result.pushes_sent == result.pushes_delivered > 0


def _seed_with_outage(scenario, lo, hi):
    """The first seed whose handset 0 has an outage starting and ending within [lo, hi]."""
    for seed in range(1, 200):
        events = scenario.handset_spec(0, seed, hours=1).network_events
        starts = [e.t for e in events if e.kind == "outage_start"]
        ends = [e.t for e in events if e.kind == "outage_end"]
        for start, end in zip(starts, ends):
            if lo < start and end < hi:
                return seed, start, end
    raise AssertionError("no seed with a suitable outage")


def test_outage_holds_pushes_until_connectivity_returns(recorder):
    outages = "outages = { per_day = 24, duration_s = 600 }"
    scenario = one_network(nat=3600, group=outages, workload=pushes(2000))
    seed, start, end = _seed_with_outage(scenario, 300, 0.9 * 3600 - 300)
    result = run_one(scenario, "fixed:270", hours=1, seed=seed, observer=recorder)
    plans = {p.plan_id: p for p in scenario.workload.schedule(
        scenario.handset_specs(1, seed, hours=1), 1, seed)}
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    # Nothing reaches the app while the handset is offline (a segment already in flight
    # when the outage began may land within one latency of its start).
    assert not [t for t in delivered.values() if start + 0.1 < t < end]
    during = [p for p in plans.values() if start < p.t < end]
    assert during, "the workload puts pushes inside the outage"
    for plan in during:
        # Delivered after connectivity returns: reconnect at once (no backoff wait), no
        # registration (the token is still valid), then the stored pushes flow.
        assert end <= delivered[plan.plan_id] < end + 1.0
    assert result.pushes_delivered == result.pushes_sent
    assert result.reconnects >= 1
    assert result.dead_s == pytest.approx(0, abs=0.1)


def test_nat_aware_beats_under_the_nat_and_spends_less_than_fixed_270():
    """`nat-aware` (the former simulated oracle) knows each NAT's timeout and beats 5 s under it."""
    scenario = Scenario.builtin("carrier-nat-5min")  # NAT 300 s, silent drop

    def run(strategy):
        return run_world(RunConfig(scenario, strategy, 3, 2, seed=5))

    aware, fixed270, fixed600 = run("nat-aware"), run("fixed:270"), run("fixed:600")
    assert sum(r.reconnects for r in aware) == 0
    assert sum(r.heartbeats_failed for r in aware) == 0
    assert sum(r.dead_s for r in aware) == 0
    # Beating at 295 s instead of 270 s: fewer beats, less energy, same delivery.
    assert sum(r.heartbeats for r in aware) < sum(r.heartbeats for r in fixed270)
    assert sum(r.energy_j for r in aware) < sum(r.energy_j for r in fixed270)
    assert sum(r.pushes_delivered for r in aware) == sum(r.pushes_sent for r in aware)
    # 600 s behind a 300 s NAT: every connection dies before its first ping.
    assert all(r.heartbeats_failed > 0 and r.reconnects > 0 for r in fixed600)
    assert all(r.dead_s > 0 for r in fixed600)


def test_dead_time_counts_an_expired_nat_nobody_probed_before_the_run_ended(recorder):
    # A 28-min heartbeat behind a 5-min NAT, for 15 min: the NAT forgets the connection at
    # 300 s after the SUBACK passed it, and nothing crosses it again before the run ends.
    result = run_one(one_network(nat=300), "fixed:1680", hours=0.25, observer=recorder)
    [connected_at] = recorder.connected_times()
    assert result.heartbeats == 0
    assert result.connected_s == pytest.approx(900 - connected_at)
    dead_from = connected_at + LATENCY + 300
    assert result.dead_s == pytest.approx(900 - dead_from)


def test_dead_time_counts_an_expired_nat_before_a_network_switch(recorder):
    switch = SWITCH.replace('at = "00:30"', 'at = "00:04"')
    result = run_one(one_network(nat=200, group=switch), "fixed:300", hours=0.25, observer=recorder)
    [first, *_] = recorder.connected_times()
    # Dead from the NAT's expiry (200 s after the SUBACK) until the switch at 240 s told
    # the SDK to move: that stretch was CONNECTED over a dead path.
    assert result.heartbeats_failed == 0
    assert result.dead_s == pytest.approx(240 - (first + LATENCY + 200))


def test_collapsed_pushes_count_as_delivered_when_the_newest_arrives(recorder):
    outages = "outages = { per_day = 24, duration_s = 600 }"
    scenario = one_network(nat=3600, group=outages, workload=pushes(2000, collapse_share=1.0))
    seed, start, end = _seed_with_outage(scenario, 300, 0.9 * 3600 - 300)
    result = run_one(scenario, "fixed:270", hours=1, seed=seed, observer=recorder)
    plans = scenario.workload.schedule(scenario.handset_specs(1, seed, hours=1), 1, seed)
    during = [p for p in plans if start < p.t < end]
    newest = {p.collapse_key: p.plan_id for p in during}  # plans are in time order
    assert len(during) > len(newest), "some key was pushed twice while offline"
    dispatched = [d.plan_id for d in recorder.deliveries]
    for plan in during:
        # The server replaced the older ones: the app sees only the newest of each key ...
        assert (plan.plan_id in dispatched) == (plan.plan_id == newest[plan.collapse_key])
    # ... and the user has seen the latest content, so every push counts as delivered.
    assert result.pushes_delivered == result.pushes_sent
    sent = [p for p in plans if 120 <= p.t <= 0.9 * 3600]  # warm-up and drain excluded
    assert len(sent) == result.pushes_sent
    for plan in sent:
        if plan.plan_id not in dispatched:  # replaced by a newer push with its key
            assert any(q.collapse_key == plan.collapse_key and q.t > plan.t
                       and q.plan_id in dispatched for q in sent)
    assert len(result.latencies) == len(dispatched)  # latency only for what reached the app
    assert result.duplicates == 0


def test_an_evening_timeout_kills_connections_only_in_the_evening(recorder):
    scenario = one_network(nat=1800, start="17:00", network=(
        'nat_schedule = [{ at = "00:00", factor = 1.0 }, { at = "18:00", factor = 0.1667 }]'))
    result = run_one(scenario, "fixed:600", hours=3, observer=recorder)
    expiries = [t for _, _, t in recorder.expiries]
    assert expiries and min(expiries) >= 3600  # nothing dies before 18:00 ...
    assert result.heartbeats_failed >= 10  # ... and nearly every 600 s beat fails after it


def test_the_scenarios_refresh_rule_reaches_the_connections_binding(recorder):
    # (The rule's semantics are unit-tested in tests/sim_models/test_sim_nat.py.)
    outbound = one_network(nat=300, network='nat_refresh = "outbound"')
    run_one(outbound, "fixed:600", hours=0.5, observer=recorder)
    [(_, _, push)] = [o for o in recorder.opened if o[2].purpose == "push"][:1]
    assert push.nat.refresh == "outbound"
    assert recorder.expiries  # the 600 s beat outlived the 300 s binding


def test_loss_delays_pushes_by_retransmissions_and_costs_energy():
    clean = one_network(nat=3600, workload=pushes(400))
    lossy = one_network(nat=3600, workload=pushes(400), network="loss = 0.2")
    a = run_one(clean, "fixed:300", hours=2, seed=3)
    b = run_one(lossy, "fixed:300", hours=2, seed=3)
    assert a.pushes_delivered == a.pushes_sent == b.pushes_sent == b.pushes_delivered
    assert max(b.latencies) >= 1.0 > max(a.latencies)  # at least one 1 s RTO somewhere
    assert b.energy_j > a.energy_j


def test_screen_on_the_app_in_front_holds_the_radio_and_the_sdk_pays_almost_nothing():
    def scenario(screen_radio):
        return Scenario.from_text(f"""
name = "screen"
description = "screen on all run"
[networks.net]
type = "cellular"
radio = "lte"
nat_timeout_s = 3600
jitter_ms = 0
[[groups]]
name = "g"
network = "net"
app = {{ model = "foreground" }}
cpu = "none"
screen_radio = {str(screen_radio).lower()}
[workload]
direct_per_handset_day = 0
tag_per_day = 0
broadcast_per_day = 0
""")
    shared = run_one(scenario(True), "fixed:300", hours=2)
    alone = run_one(scenario(False), "fixed:300", hours=2)
    assert shared.heartbeats == alone.heartbeats == 23
    assert alone.energy_j == pytest.approx(24 * get_model("lte").isolated_energy(), rel=0.02)
    # Only the transfers of its own bytes: well under a millijoule per beat.
    assert shared.energy_j < 0.001 * 24


def test_a_screen_off_ping_goes_out_only_when_the_session_left_the_network_active():
    """``+hooks`` pings as a screen session starts and ends, when the handset's
    ``network_active`` (Android's isDefaultNetworkActive: traffic within 10 s on cellular)
    says the session holds the radio or its tail is running; where the app on screen sent
    nothing it is the plain schedule."""
    def scenario(screen_radio):
        return one_network(nat=3600, start="10:00",
                           app='{ model = "user", opens_per_day = 200 }',
                           group=f'cpu = "none"\nscreen_radio = {str(screen_radio).lower()}')
    plain = run_one(scenario(False), "fixed:600", hours=6, seed=5)
    dark = run_one(scenario(False), "fixed:600+hooks", hours=6, seed=5)
    shared = run_one(scenario(True), "fixed:600+hooks", hours=6, seed=5)
    # Without the check the dark run sends 73 beats and spends twice the plain energy.
    assert (dark.heartbeats, dark.energy_j) == (plain.heartbeats, plain.energy_j)
    assert plain.heartbeats == 35 and plain.energy_j == pytest.approx(459.7, abs=0.1)
    alone = run_one(scenario(True), "fixed:600", hours=6, seed=5)
    assert shared.heartbeats == 102  # pings in the sessions and their tails ...
    assert shared.energy_j < 0.2 * alone.energy_j  # ... which cost almost nothing
