"""The server's token buckets (``simulator/server/ratelimit.py``): pure, time passed in."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.server.ratelimit import KeyedBuckets, TokenBucket


def test_take_spends_the_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3.0, now=10.0)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.5)  # nothing taken: still 0.5 s away
    assert bucket.take(10.25) == pytest.approx(0.25)
    assert bucket.take(10.5) == 0.0


def test_reserve_hands_out_turns_one_interval_apart_up_to_the_bound() -> None:
    bucket = TokenBucket.full(rate=4.0, burst=1.0, now=0.0)
    turns = [bucket.reserve(0.0, max_wait=0.5) for _ in range(4)]
    assert turns == [(True, 0.0), (True, 0.25), (True, 0.5), (False, pytest.approx(0.75))]
    assert bucket.reserve(0.25, max_wait=0.5) == (True, pytest.approx(0.5))  # one came back


def test_unlimited_keys_always_go_on_at_once() -> None:
    buckets = KeyedBuckets(None, 1.0)
    assert buckets.take("a", 0.0) == 0.0 and buckets.reserve("a", 0.0, 0.0) == (True, 0.0)


@given(rate=st.floats(0.5, 100.0), burst=st.floats(1.0, 50.0), max_wait=st.floats(0.0, 3.0),
       gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200))
def test_reservations_never_exceed_the_rate_and_waits_stay_bounded(
        rate: float, burst: float, max_wait: float, gaps: list[float]) -> None:
    """Whatever the arrivals: every admitted caller goes on within ``max_wait``; by any
    time T at most burst + rate x (T - start) callers have gone on; a refusal only when
    the next turn is over ``max_wait`` away."""
    bucket = TokenBucket.full(rate, burst, now=0.0)
    now, go_on = 0.0, []
    for gap in gaps:
        now += gap
        admitted, wait = bucket.reserve(now, max_wait)
        assert wait >= 0.0
        if admitted:
            assert wait <= max_wait
            go_on.append(now + wait)
        else:
            assert wait > max_wait
    for k, at in enumerate(sorted(go_on), start=1):
        assert k <= burst + rate * at + 1e-6


def test_keyed_buckets_forget_the_least_recently_used_key() -> None:
    buckets = KeyedBuckets(1.0, 1.0, max_keys=2)
    assert buckets.take("a", 0.0) == 0.0 and buckets.take("b", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0.0  # "a" is now the most recent
    buckets.take("c", 0.0)  # forgets "b", the least recently used
    assert buckets.take("a", 0.0) > 0.0  # remembered (empty)
    assert buckets.take("b", 0.0) == 0.0  # forgotten: full again (and "c" is forgotten)
    assert buckets.take("a", 0.0) > 0.0
