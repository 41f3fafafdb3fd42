"""NAT bindings and link delays (simulator.nat): exact boundaries, drop vs rst, refresh."""
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.nat import LinkProfile, NatBinding, NatConfig, Verdict

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
    binding = NatBinding(config=NatConfig(10), last_activity=5.0)
    assert binding.timeout == 10 and binding.expires_at == 15.0
