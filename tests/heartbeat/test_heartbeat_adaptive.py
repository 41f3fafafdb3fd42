"""The project's own strategy: doubling, bisection, per-network knowledge, piggybacking."""
import math

import attrs

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
    for _ in range(14):
        run.beat()
    # The main connection runs at 270 (the initial value) until probes on a second
    # connection, opened from the first beat on, bracket the timeout: 540 ✗, 405 ✗,
    # 337.5 ✗, 303.75 ✗, 286.875 ✓, ... down to a bracket worth no further probe (1 %).
    assert run.probe_log[:5] == [(540, False), (405, False), (337.5, False), (303.75, False),
                                 (286.875, True)]
    assert all(b.ok for b in run.log)  # no main beat ever fails
    assert run.state.settled and 297 <= run.interval() < 300
    assert run.state.high - run.state.low < 0.014 * run.state.low


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
    intervals = [run.beat().interval for _ in range(16)]
    # ×2 after two successes; 540 fails; back to the proved 270 once; then bisect
    # 405 (fails), 270, 337.5 (fails), 270, 303.75 (fails), 270, 286.875 ...
    assert intervals[:4] == [270, 270, 270, 540]
    assert intervals[4:8] == [270, 405, 270, 337.5]
    state = run.state
    assert state.low < 300 <= state.high and state.interval == state.low
    assert sum(not b.ok for b in run.log) == 4
    assert all(b.ok for b in run.log[-4:])


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


def test_a_changed_nat_costs_one_failure_then_probes_find_the_new_timeout():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    run.nat_timeout = 300  # the carrier changed its NAT (an evening's table pressure)
    run.beat()
    assert not run.log[-1].ok
    # At once a safe fallback on the main connection (a quarter of the old value, at most
    # the initial one), while a probe re-tests 90 % of the old value.
    assert run.interval() == ADAPTIVE.initial_cellular
    assert run.state.retest == pytest.approx(0.9 * run.log[-1].interval)
    for _ in range(25):
        run.beat()
    assert all(b.ok for b in run.log[-25:])  # a single failure, never a second
    assert run.state.settled and run.state.changing and 290 <= run.interval() < 300
    assert (0.9 * 1755.0, False) in run.probe_log


def test_a_changing_nat_is_re_checked_upwards_every_hour():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    run.nat_timeout = 300
    for _ in range(30):
        run.beat()
    assert run.state.changing and run.state.settled
    run.nat_timeout = 1800  # the evening is over
    while run.interval() < 500:
        run.beat()
    assert any(ok and 590 < s < 600 for s, ok in run.probe_log)
    while not run.state.settled:
        run.beat()
    assert run.interval() > 1500 and all(b.ok for b in run.log[-20:])


def test_bad_luck_at_a_settled_value_keeps_90_percent_of_it():
    run = cellular(1800)
    while not run.state.settled:
        run.beat()
    settled = run.interval()
    run.beat(ok=False)  # a sweep's phase, a lost cell: the NAT did not change
    assert run.interval() == ADAPTIVE.initial_cellular  # fallback while re-testing
    while run.state.retest is not None:
        run.beat()
    assert run.state.settled and run.interval() == pytest.approx(0.9 * settled)
    assert not run.state.changing


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
    assert attrs.evolve(early, last_ping_at=state.last_ping_at) == state
    full = ADAPTIVE.on_success(state, ctx(network_type="cellular", silence=270))
    assert full.low == 270


def test_a_failure_after_a_doze_length_silence_teaches_nothing():
    state = ADAPTIVE.start(None, ctx(network_type="cellular"))
    state = ADAPTIVE.on_success(state, ctx(network_type="cellular", silence=270))
    slept = ADAPTIVE.on_failure(state, ctx(network_type="cellular", silence=3 * 3600))
    assert slept == state
    assert ADAPTIVE.reply_timeout(state, ctx(network_type="cellular", silence=3 * 3600)) == 10
    known = attrs.evolve(state, high=600.0)
    assert ADAPTIVE.reply_timeout(known, ctx(network_type="cellular", silence=3600)) == 3


def test_failures_outrank_successes():
    state = ADAPTIVE.start(None, ctx(network_type="cellular"))
    state = ADAPTIVE.on_success(state, ctx(network_type="cellular", silence=270))
    state = ADAPTIVE.on_probe(state, ctx(network_type="cellular", silence=350), False)
    lucky = ADAPTIVE.on_probe(state, ctx(network_type="cellular", silence=360), True)
    assert lucky.low == 270 and lucky.high == 350  # a success within 10 % above a failure
    far = ADAPTIVE.on_probe(state, ctx(network_type="cellular", silence=700), True)
    assert far.low == 700 and far.high is None  # well above: the NAT grew, bracket reopens
    below = ADAPTIVE.on_probe(attrs.evolve(state, low=340.0), ctx(network_type="cellular",
                                                                  silence=330), False)
    assert below.low == pytest.approx(0.97 * 330)  # low stays below every failure


def test_free_beats_on_radio_activity_and_as_a_screen_session_ends():
    state = ADAPTIVE.start(None, ctx(network_type="cellular"))
    assert not ADAPTIVE.piggyback(state, ctx(network_type="cellular"), silence=26)
    assert ADAPTIVE.piggyback(state, ctx(network_type="cellular"), silence=0.1 * 270)
    wifi = ADAPTIVE.start(None, ctx())  # on Wi-Fi the CPU's wake dominates: 60 % of 120 s
    assert ADAPTIVE.piggyback(wifi, ctx(), silence=72) and not ADAPTIVE.piggyback(wifi, ctx(), 71)
    pinged = ADAPTIVE.on_success(state, screen_ctx(now=100.0, silence=270))
    off = screen_ctx(now=500.0, since=499.5)  # the screen went off half a second ago
    assert ADAPTIVE.interval(pinged, off) == 0.0  # ping now, in the session's tail
    assert ADAPTIVE.interval(pinged, screen_ctx(now=505.0, since=499.5)) == 270  # too late
    assert ADAPTIVE.interval(pinged, screen_ctx(now=110.0, since=109.5)) == 270  # too soon
    answered = ADAPTIVE.on_success(pinged, screen_ctx(now=500.2, since=499.5, silence=400))
    assert ADAPTIVE.interval(answered, screen_ctx(now=500.3, since=499.5)) == 400  # once
    assert AdaptiveStrategy(screen_hints=False).interval(pinged, off) == 270


def test_no_screen_off_ping_when_the_platform_says_the_network_is_not_active():
    """A session that sent nothing left no radio tail to ride on (``screen-dark``)."""
    pinged = ADAPTIVE.on_success(ADAPTIVE.start(None, ctx(network_type="cellular")),
                                 screen_ctx(now=100.0, silence=270))
    assert ADAPTIVE.interval(pinged, screen_ctx(500.0, 499.5, active=False)) == 270
    assert ADAPTIVE.interval(pinged, screen_ctx(500.0, 499.5, active=True)) == 0.0
    assert ADAPTIVE.interval(pinged, screen_ctx(500.0, 499.5, active=None)) == 0.0


def test_a_free_ping_as_the_screen_comes_on_even_on_wifi():
    """With the screen on the CPU is awake and the app in front holds the radio: a ping then
    costs nothing, so 10 % of the interval is enough on Wi-Fi too (off, it needs 60 %)."""
    wifi = ADAPTIVE.start(None, ctx())  # 120 s on Wi-Fi
    pinged = ADAPTIVE.on_success(wifi, screen_ctx(now=100.0, silence=120, net="wifi"))
    on = screen_ctx(now=112.5, since=112.0, net="wifi", app="background")
    assert ADAPTIVE.interval(pinged, on) == 0.0  # 12.5 s of silence ≥ 10 % of 120 s
    assert ADAPTIVE.interval(pinged, screen_ctx(111.5, 111.0, net="wifi",
                                                app="background")) == 120  # too soon
    assert ADAPTIVE.interval(pinged, screen_ctx(112.5, 112.0, net="wifi")) == 120  # off
    assert ADAPTIVE.interval(pinged, screen_ctx(112.5, 112.0, net="wifi", app="foreground",
                                                active=False)) == 120  # radio idle
    assert ADAPTIVE.interval(pinged, screen_ctx(150.0, 112.0, net="wifi",
                                                app="background")) == 120  # on for long


def screen_ctx(now, since=-1e6, silence=0.0, active=None, net="cellular", app="inactive"):
    return HeartbeatContext(now=now, wall_time=1_700_000_000.0 + now, network_key="k",
                            network_type=net, app_state=app,
                            app_state_since=since, silence=silence, network_active=active)


@pytest.mark.parametrize("memory", [None, {}, {"strategy": "mars", "low": 1},
                                    {"strategy": "adaptive"},
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
