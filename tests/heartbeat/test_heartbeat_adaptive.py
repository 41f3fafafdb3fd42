"""The project's own strategy: doubling, bisection, per-network knowledge, piggybacking."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat_run import Run
from pushsdk.heartbeat import HeartbeatContext, parse_strategy
from pushsdk.heartbeat.adaptive import AdaptiveStrategy

ADAPTIVE = AdaptiveStrategy()


def cellular(nat: float, **kwargs) -> Run:
    return Run(ADAPTIVE, nat_timeout=nat, network_key="mobile_x", network_type="cellular",
               **kwargs)


def test_registered_by_name():
    assert parse_strategy("adaptive") == ADAPTIVE


def test_probes_find_a_5_min_nat_while_the_main_connection_never_fails():
    run = cellular(300)
    for _ in range(12):
        run.beat()
    # The main connection runs at 270 (the initial value, proved by its first beat) until
    # probes on a second connection bracket the timeout: 540 ✗, 405 ✗, 337.5 ✗, 303.75 ✗,
    # 286.875 ✓ — then settles on the proved value. No main beat ever fails.
    assert run.probe_log == [(540, False), (405, False), (337.5, False), (303.75, False),
                             (286.875, True)]
    assert all(b.ok for b in run.log)
    assert run.state.settled and run.interval() == pytest.approx(286.875)
    assert {b.interval for b in run.log} == {270, 286.875}


def test_probes_climb_to_a_long_nat_timeout_in_a_few_hours():
    run = cellular(7440)
    while not run.state.settled:
        run.beat()
    assert all(b.ok for b in run.log)
    assert 7000 < run.interval() < 7440
    assert len(run.probe_log) <= 10
    assert run.now < 86400 / 2


def test_doubles_then_bisects_in_band_where_probes_are_refused():
    run = cellular(300, probes_allowed=False)
    intervals = [run.beat().interval for _ in range(14)]
    # ×2 after two successes; 540 fails; back to the proved 270 once; then bisect
    # 405 (fails), 270, 337.5 (fails), 270, 303.75 (fails), 270 ... until the bracket is
    # under 6 % of the proved value: settled at 286.875 (the last success).
    assert intervals[:4] == [270, 270, 540, 270]
    assert intervals[4:7] == [405, 270, 337.5]
    state = run.state
    assert state.settled and state.interval == pytest.approx(286.875)
    assert state.low < 300 <= state.high
    assert (state.high - state.low) < 0.06 * state.low
    assert all(b.ok for b in run.log[-3:])  # settled: no more failures
    failures = sum(not b.ok for b in run.log)
    assert failures == 4


def test_reaches_long_nat_timeouts_in_a_few_beats_in_band():
    run = cellular(7440, probes_allowed=False)
    while not run.state.settled:
        run.beat()
    assert 7000 < run.state.interval < 7440
    assert sum(not b.ok for b in run.log) <= 3
    assert run.now < 86400  # learned within the first day


def test_caps_at_three_hours_where_no_nat_forgets():
    run = cellular(math.inf)
    while not run.state.settled:
        run.beat()
    assert run.state.interval == ADAPTIVE.cap == 10800
    assert all(b.ok for b in run.log)


def test_knowledge_is_kept_per_network_and_resumed_without_warm_up():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    learned = run.state.interval
    run.move_to("wifi_home", "wifi")
    assert run.interval() == ADAPTIVE.initial_wifi  # a new network starts afresh
    run.move_to("mobile_x", "cellular")
    assert run.interval() == learned  # the first beat on a known network is the learned one
    assert run.state.settled


def test_two_failures_at_a_settled_value_restart_the_search():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    run.nat_timeout = 300  # the carrier changed its NAT
    run.beat()
    assert not run.log[-1].ok and run.state.failures == 1
    while run.log[-1].ok is False and run.state.settled:
        run.beat()
    assert not run.state.settled and run.state.high is None
    assert run.interval() == ADAPTIVE.initial_cellular


def test_reprobes_upwards_after_seven_days():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    assert run.state.high is not None
    run.now += 8 * 86400
    run.connect()
    assert run.state.high is None and not run.state.settled  # try above again


def test_an_early_ping_teaches_nothing():
    state = ADAPTIVE.start(None, ctx(network_type="cellular"))
    early = ADAPTIVE.on_success(state, ctx(network_type="cellular", silence=100))
    assert early == state
    full = ADAPTIVE.on_success(state, ctx(network_type="cellular", silence=270))
    assert full.streak == 1 and full.low == 270


def test_piggybacks_only_on_cellular_after_a_share_of_the_interval():
    state = ADAPTIVE.start(None, ctx(network_type="cellular"))
    assert not ADAPTIVE.piggyback(state, ctx(network_type="cellular"), silence=60)
    assert ADAPTIVE.piggyback(state, ctx(network_type="cellular"), silence=0.3 * 270)
    wifi = ADAPTIVE.start(None, ctx())
    assert not ADAPTIVE.piggyback(wifi, ctx(), silence=1000)


@pytest.mark.parametrize("memory", [None, {}, {"strategy": "mars", "low": 1}, {"strategy": "adaptive"},
                                    {"strategy": "adaptive", "low": "x", "interval": 5},
                                    {"strategy": "adaptive", "low": -1, "interval": 5},
                                    {"strategy": "adaptive", "low": 1, "interval": math.nan}])
def test_foreign_or_damaged_memory_means_start_afresh(memory):
    assert ADAPTIVE.start(memory, ctx(network_type="cellular")).interval == 270


@settings(max_examples=300, deadline=None)
@given(nat=st.floats(min_value=90, max_value=20000), beats=st.integers(1, 60),
       probes=st.booleans())
def test_within_bounds_and_one_overshoot_never_causes_a_second(nat, beats, probes):
    run = cellular(nat, probes_allowed=probes)
    for _ in range(beats):
        run.beat()
        assert ADAPTIVE.floor <= run.interval() <= ADAPTIVE.cap
    # Once some silence has survived, a failure is followed by a beat that succeeds: the
    # next connection runs at the proved value, never at another guess.
    for i, beat in enumerate(run.log[:-1]):
        if not beat.ok and any(b.ok for b in run.log[:i]):
            assert run.log[i + 1].ok


def ctx(network_type="wifi", silence=0.0):
    return HeartbeatContext(now=0.0, wall_time=1_700_000_000.0, network_key="k",
                            network_type=network_type, app_state="background", silence=silence)


def test_a_lone_failure_at_a_settled_value_is_forgiven_after_a_success():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    settled = run.state.low
    run.beat(ok=False)  # a transient loss (an outage, a flaky cell)
    assert run.interval() == pytest.approx(0.8 * settled)
    run.beat()
    assert run.interval() == settled and run.state.failures == 0
