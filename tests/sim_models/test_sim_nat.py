"""NAT bindings and link delays (simulator.nat): exact boundaries, drop vs rst, refresh."""
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.nat import LinkProfile, NatBinding, NatConfig, NatTimeout, Verdict

EPS = 1e-6


def test_packet_just_before_expiry_passes_and_at_expiry_drops():
    binding = NatConfig(300, "drop").open(now=100.0)
    assert binding.expires_at == 400.0
    assert not binding.expired(400.0 - EPS)
    assert binding.expired(400.0)

    probe = NatConfig(300, "drop").open(now=100.0)
    assert probe.on_packet(400.0 - EPS) is Verdict.PASS
    assert binding.on_packet(400.0) is Verdict.DROP


def test_every_passing_packet_restarts_the_idle_timer():
    binding = NatConfig(300).open(now=0.0)
    for t in (299.0, 598.0, 897.0):
        assert binding.on_packet(t) is Verdict.PASS
        assert binding.expires_at == t + 300
    assert binding.packets == 3
    assert binding.remaining(1000.0) == pytest.approx(197.0)
    assert binding.on_packet(1197.0) is Verdict.DROP


def test_silent_drop_swallows_both_directions_for_ever():
    binding = NatConfig(60, "drop").open(now=0.0)
    assert binding.on_packet(61.0) is Verdict.DROP  # server -> handset
    assert binding.on_packet(61.5) is Verdict.DROP  # handset -> server: no resurrection
    assert binding.on_packet(10_000.0) is Verdict.DROP
    assert binding.expired(61.0) and binding.remaining(61.0) == 0.0
    assert binding.expires_at == 60.0  # frozen at the moment it expired
    assert binding.packets == 0


def test_rst_nat_answers_the_next_packet_with_a_reset():
    binding = NatConfig(60, "rst").open(now=0.0)
    assert binding.on_packet(59.0) is Verdict.PASS
    assert binding.on_packet(119.0 - EPS) is Verdict.PASS
    assert binding.on_packet(300.0) is Verdict.RESET
    assert binding.on_packet(301.0) is Verdict.RESET


def test_a_new_connection_gets_a_fresh_binding():
    config = NatConfig(120)
    old = config.open(now=0.0)
    assert old.on_packet(500.0) is Verdict.DROP
    new = config.open(now=500.0)
    assert new.on_packet(600.0) is Verdict.PASS
    assert new.expires_at == 720.0


def test_out_of_order_calls_never_move_the_timer_back():
    binding = NatConfig(100).open(now=0.0)
    assert binding.on_packet(50.0) is Verdict.PASS
    assert binding.on_packet(40.0) is Verdict.PASS  # the other direction, timed a bit earlier
    assert binding.expires_at == 150.0


@pytest.mark.parametrize("timeout", [0, -1, math.nan])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match="timeout"):
        NatConfig(timeout)


def test_unknown_behaviour_is_refused():
    with pytest.raises(ValueError, match="behaviour"):
        NatConfig(300, "reject")


@given(
    timeout=st.floats(min_value=1.0, max_value=10_000.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=20_000.0), min_size=1, max_size=30),
    behaviour=st.sampled_from(["drop", "rst"]),
)
def test_verdicts_follow_the_largest_idle_gap(timeout, gaps, behaviour):
    """A packet passes iff no gap up to it (including its own) reached the timeout."""
    binding = NatConfig(timeout, behaviour).open(now=0.0)
    dead = Verdict.DROP if behaviour == "drop" else Verdict.RESET
    t, alive = 0.0, True
    for gap in gaps:
        t += gap
        alive = alive and gap < timeout
        assert binding.on_packet(t) is (Verdict.PASS if alive else dead)


def test_link_delay_is_latency_plus_uniform_jitter():
    link = LinkProfile(latency=0.040, jitter=0.020)
    rng = random.Random(7)
    delays = [link.sample_delay(rng) for _ in range(2000)]
    assert all(0.040 <= d <= 0.060 for d in delays)
    assert sum(delays) / len(delays) == pytest.approx(0.050, abs=0.001)
    again = random.Random(7)
    assert [link.sample_delay(again) for _ in range(2000)] == delays  # same seed, same delays


def test_jitter_source_draws_from_the_injected_rng():
    link = LinkProfile(0.01, 0.005)
    source = link.jitter_source(random.Random(3))
    expected = random.Random(3)
    assert [source(float(t)) for t in range(5)] == [expected.uniform(0, 0.005) for _ in range(5)]
    assert LinkProfile(0.01, 0.0).jitter_source(random.Random(3)) is None


def test_negative_latency_is_refused():
    with pytest.raises(ValueError, match="latency"):
        LinkProfile(-0.001)


def test_binding_is_a_plain_record_of_its_state():
    binding = NatBinding(NatConfig(10).for_connection(), last_activity=5.0)
    assert binding.timeout == 10 and binding.expires_at == 15.0
    assert binding.config.base == 10


HOUR = 3600.0


def test_a_daily_schedule_shortens_the_timeout_in_the_evening():
    # 30 min all day, a quarter of it from 18:00 to 23:00 (the run starts at midnight).
    nat = NatTimeout(1800, schedule=((0.0, 1.0), (18 * HOUR, 0.25), (23 * HOUR, 1.0)))
    assert nat.timeout_at(17 * HOUR) == 1800 and nat.timeout_at(19 * HOUR) == 450
    assert nat.expiry(10 * HOUR) == 10 * HOUR + 1800
    # Refreshed at 17:54: at 18:00 only 360 s have passed, so it goes at 17:54 + 450 s.
    assert nat.expiry(17.9 * HOUR) == pytest.approx(17.9 * HOUR + 450)
    # Refreshed at 22:59: the short timeout holds until 23:00, then 30 min again.
    assert nat.expiry(22.99 * HOUR) == pytest.approx(22.99 * HOUR + 1800)
    # The schedule repeats every day and follows the scenario's start time of day.
    assert nat.expiry(24 * HOUR + 17.9 * HOUR) == pytest.approx(41.9 * HOUR + 450)
    evening = NatTimeout(1800, schedule=nat.schedule, start_of_day=18 * HOUR)
    assert evening.timeout_at(0.0) == 450 and evening.timeout_at(5 * HOUR) == 1800


def test_a_sweep_timer_expires_bindings_between_t_and_t_plus_the_sweep():
    nat = NatTimeout(300, sweep=60, sweep_phase=17)
    assert nat.expiry(0.0) == 317.0  # the first sweep at or after 300 s
    assert nat.expiry(100.0) == 437.0
    assert nat.expiry(17.0) == 317.0  # exactly T after a refresh: that sweep takes it


@given(timeout=st.floats(10, 5000), sweep=st.floats(1, 600), phase=st.floats(0, 600),
       last=st.floats(0, 1e5))
def test_sweep_expiry_lies_in_the_window(timeout, sweep, phase, last):
    expiry = NatTimeout(timeout, sweep=sweep, sweep_phase=phase).expiry(last)
    assert last + timeout - 1e-6 <= expiry < last + timeout + sweep + 1e-6


def test_outbound_only_refresh_ignores_the_servers_packets():
    binding = NatBinding(NatTimeout(300, refresh="outbound"), 0.0)
    assert binding.on_packet(200.0, "down") is Verdict.PASS  # passes, but does not refresh
    assert binding.expires_at == 300.0
    assert binding.on_packet(299.0, "up") is Verdict.PASS
    assert binding.expires_at == 599.0
    both = NatBinding(NatTimeout(300), 0.0)
    both.on_packet(200.0, "down")
    assert both.expires_at == 500.0


def test_per_connection_spread_scales_the_network_timeout():
    config = NatConfig(600, spread=0.25)
    assert config.for_connection(0.0).base == 450
    assert config.for_connection(0.5).base == 600
    assert config.for_connection(1.0).base == 750
    with pytest.raises(ValueError, match="spread"):
        NatConfig(600, spread=1.0)


def test_retransmission_follows_rfc6298_backoff():
    from simulator.nat import RETRANSMISSION as R
    assert [R.attempt(0, k) for k in range(9)] == [0, 1, 3, 7, 15, 31, 63, 127, 247]
    assert R.attempt(0, 15) == 1087.0 and R.give_up_at(0) == 1207.0
    assert R.next_attempt(0, 100) == 127 and R.next_attempt(0, 2000) is None
