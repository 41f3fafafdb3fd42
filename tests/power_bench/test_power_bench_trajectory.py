"""Each strategy's interval, measured in the simulated world, follows its published rules.

The trace wrapper (``power_bench.trajectory``) sits between the SDK and the real strategy in
a one-handset world: real client, real server, simulated link and NAT. A beat records the
interval the strategy had in force and the silence the SDK measured before its ping
(``ctx.silence``); with no pushes, no other apps and no link jitter the two must be equal,
which proves the SDK really waited what the strategy asked (less one round trip at the
strategy's maximum: the MQTT keepalive rule, see ``_measured_equals_asked``). The expected
sequences are built from each strategy's rules (docs/heartbeat.md), not copied from a run.
"""
import pytest

from power_bench.trajectory import (
    TracingStrategy, capture, is_adaptive, pick_handsets,
)
from pushsdk.heartbeat import HeartbeatStrategy, parse_strategy
from simulator.scenario import Scenario
from simulator.world import RunConfig, run_world
from simworld import NO_PUSHES, one_network


def _trace(scenario, strategy, hours, *, index=0, handsets=1):
    return capture(scenario, strategy, index, handsets=handsets, hours=hours, seed=1)


RTT = 0.08  # one_network: 40 ms each way, no jitter


def _measured_equals_asked(trajectory):
    for beat in trajectory.beats:
        # The SDK pings after `interval` of silence, or `keepalive` (= ceil(max_interval))
        # after its last *sent* packet, whichever is first (the MQTT rule): at the strategy's
        # maximum the ping goes one round trip early, since the last PINGRESP came in RTT
        # after the last PINGREQ went out.
        assert beat.interval - RTT - 1e-6 <= beat.silence <= beat.interval + 1e-6, beat
        assert beat.lateness == pytest.approx(0, abs=1e-6)


def _intervals(trajectory):
    return [(round(b.interval, 6), b.ok) for b in trajectory.beats]


def _mars_probe(start: float = 210, cap: float = 580, step: float = 60, per_value: int = 5):
    """Mars without failures: 3 warm-up beats at Min, then 5 successes per value, +60 s each
    time, capped at Max − SuccessStep; the cap is then kept."""
    values = [start] * 3
    value = start
    while value < cap:
        values += [value] * per_value
        value = min(value + step, cap)
    return values, cap


def test_mars_warms_up_then_steps_60_s_every_5_successes_up_to_580():
    trajectory = _trace(one_network(nat=3600), "mars", hours=6)
    _measured_equals_asked(trajectory)
    climb, cap = _mars_probe()
    expected = climb + [cap] * (len(trajectory.beats) - len(climb))
    assert len(trajectory.beats) > len(climb) + 5
    assert _intervals(trajectory) == [(v, True) for v in expected]
    assert len(trajectory.starts) == 1


def test_mars_backs_off_below_a_nat_it_overshot():
    # NAT 400 s: the climb fails at 450 s twice (each failure ends the connection and the
    # next one warms up with 3 beats at 210 s); the 2nd failure sets 450 − 80 = 370 s, stable.
    trajectory = _trace(one_network(nat=400), "mars", hours=6)
    _measured_equals_asked(trajectory)
    climb = [210] * 8 + [270] * 5 + [330] * 5 + [390] * 5
    prefix = ([(v, True) for v in climb] + [(450, False)] + [(210, True)] * 3
              + [(450, False)] + [(210, True)] * 3)
    observed = _intervals(trajectory)
    assert observed[:len(prefix)] == prefix
    assert observed[len(prefix):] == [(370, True)] * (len(observed) - len(prefix))
    assert len(observed) - len(prefix) > 10
    assert len(trajectory.starts) == 3


def test_courier_probes_2_minute_steps_then_settles_below_the_failure():
    # Probes of 1, 3, 5, 7 min; 7 fails at a 400 s NAT → upper bound 6 min; 6 min works: the
    # optimum. Meanwhile the main connection pings every 30 s, then every 6 min, never failing.
    trajectory = _trace(one_network(nat=400), "courier", hours=4)
    _measured_equals_asked(trajectory)
    probes = [(round(p.silence / 60), p.ok) for p in trajectory.probes]
    assert probes == [(1, True), (3, True), (5, True), (7, False), (6, True)]
    observed = _intervals(trajectory)
    assert all(ok for _, ok in observed)
    first_long = next(i for i, (v, _) in enumerate(observed) if v != 30)
    assert observed[:first_long] == [(30, True)] * first_long
    assert observed[first_long:] == [(360, True)] * (len(observed) - first_long)


def test_kontalk_344_multiplies_by_1_5_on_success_and_halves_on_failure():
    nat = 400
    trajectory = _trace(one_network(nat=nat), "kontalk-344", hours=12)
    _measured_equals_asked(trajectory)
    beats = trajectory.beats
    assert beats[0].interval == 1800
    assert len(beats) > 20
    for previous, beat in zip(beats, beats[1:]):
        factor = 1.5 if previous.ok else 0.5
        assert beat.interval == pytest.approx(min(1800, max(300, previous.interval * factor)))
    for beat in beats:
        assert beat.ok == (beat.interval < nat)  # the NAT decides, nothing else
    assert {b.interval for b in beats} == {1800, 900, 450, 300}



SWITCHING = """
name = "switching"
description = "Wi-Fi until 03:00, then LTE"
[networks.home]
type = "wifi"
radio = "wifi"
nat_timeout_s = {wifi_nat}
jitter_ms = 0
[networks.lte]
type = "cellular"
radio = "lte"
nat_timeout_s = {lte_nat}
jitter_ms = 0
[[groups]]
name = "g"
network = "home"
app = {{ model = "background" }}
[[groups.switches]]
at = "03:00"
to = "lte"
""" + NO_PUSHES



def _switching(wifi_nat: float, lte_nat: float) -> Scenario:
    return Scenario.from_text(SWITCHING.format(wifi_nat=wifi_nat, lte_nat=lte_nat))


def test_fcm_uses_15_minutes_on_wifi_and_28_on_cellular():
    trajectory = _trace(_switching(7200, 7200), "fcm", hours=8)
    _measured_equals_asked(trajectory)
    by_type = {(b.network_type, b.interval, b.ok) for b in trajectory.beats}
    assert by_type == {("wifi", 900, True), ("cellular", 1680, True)}
    assert all(b.network_type == ("wifi" if b.t < 3 * 3600 else "cellular")
               for b in trajectory.beats)
    assert len(trajectory.starts) == 2  # reconnected once, after the switch


def test_nat_aware_beats_5_s_under_each_nat_it_is_told():
    trajectory = _trace(_switching(1200, 300), "nat-aware", hours=6)
    _measured_equals_asked(trajectory)
    assert {(b.network_type, b.interval, b.ok) for b in trajectory.beats} == {
        ("wifi", 1195, True), ("cellular", 295, True)}


def test_fixed_keeps_its_interval():
    trajectory = _trace(one_network(nat=3600), "fixed:300", hours=2)
    _measured_equals_asked(trajectory)
    assert _intervals(trajectory) == [(300, True)] * len(trajectory.beats)


@pytest.mark.parametrize("nat, net_type, radio", [
    (300, "cellular", "lte"), (600, "cellular", "lte"), (1800, "cellular", "lte"),
    (3000, "wifi", "wifi"),
])
def test_adaptive_only_runs_proved_silences_and_settles_just_under_the_nat(nat, net_type,
                                                                             radio):
    # pushsdk/heartbeat/adaptive.py: the main connection runs at the longest silence proved
    # so far (by its own answered pings or by a probe connection); the search brackets the
    # NAT timeout and settles on the proved side of it.
    trajectory = _trace(one_network(nat=nat, net_type=net_type, radio=radio), "adaptive",
                        hours=12)
    _measured_equals_asked(trajectory)
    assert all(b.ok for b in trajectory.beats)  # the main connection never overshoots
    events = sorted([(b.t, "beat", b) for b in trajectory.beats]
                    + [(p.t, "probe", p) for p in trajectory.probes], key=lambda e: e[0])
    proved = trajectory.beats[0].interval  # the initial value is a guess, tried first
    for _, kind, event in events:
        if kind == "beat":
            assert event.interval <= proved + 1e-6, event
            proved = max(proved, event.silence)
        elif event.ok:
            proved = max(proved, event.silence)
    final = trajectory.beats[-1].interval
    assert 0.85 * nat <= final < nat
    assert len(trajectory.starts) == 1


TRANSPARENT = ["mars", "courier", "kontalk", "fcm", "nat-aware", "adaptive"]


@pytest.mark.parametrize("strategy", TRANSPARENT)
def test_tracing_changes_nothing_the_handset_does(strategy):
    # The busy `mixed` world (pushes, other apps, outages, screen sessions): a traced handset
    # must do exactly what the same handset does untraced, to the bit.
    scenario, handsets, index, hours = Scenario.builtin("mixed"), 8, 1, 4
    trajectory = capture(scenario, strategy, index, handsets=handsets, hours=hours, seed=3)
    [plain] = run_world(RunConfig(scenario, strategy, handsets, hours, seed=3,
                                  shard=(index, handsets)))
    assert trajectory.result == plain
    assert plain.heartbeats > 5 and plain.pushes_delivered > 0
    # Every ping's outcome reached the strategy (one may still be out when the run ends).
    assert plain.heartbeats - 1 <= len(trajectory.beats) <= plain.heartbeats
    assert sum(not b.ok for b in trajectory.beats) == plain.heartbeats_failed


def test_the_wrapper_delegates_every_hook_of_the_interface():
    # A hook the wrapper left to the base class would silently change the wrapped strategy.
    for name in vars(HeartbeatStrategy):
        if not name.startswith("_"):
            assert name in vars(TracingStrategy), name
    inner = parse_strategy("kontalk")
    tracer = TracingStrategy(inner)
    assert (tracer.name, tracer.max_interval, tracer.ping_timeout) == (
        inner.name, inner.max_interval, inner.ping_timeout)


def test_unknown_trace_token_is_a_clear_error():
    capture(one_network(nat=3600), "fixed:600", 0, handsets=1, hours=0.5, seed=1)
    with pytest.raises(ValueError, match="trace:<token>"):
        parse_strategy("trace:no-such-token")


def test_pick_handsets_covers_every_group_of_mixed():
    scenario = Scenario.builtin("mixed")
    picked = pick_handsets(scenario, 40, 1, 24, 4)
    groups = {scenario.handset_spec(i, 1, hours=24).group for i in picked}
    assert groups == {"carrierA", "carrierB", "carrierC", "wifi"}
    assert picked == pick_handsets(scenario, 40, 1, 24, 4)
    assert len(pick_handsets(scenario, 40, 1, 24, 2)) == 2


def test_only_strategies_that_can_change_their_interval_are_traced():
    assert [s for s in ("fixed:270", "fcm", "oracle", "mars", "courier", "kontalk", "adaptive")
            if is_adaptive(s)] == ["mars", "courier", "kontalk", "adaptive"]
