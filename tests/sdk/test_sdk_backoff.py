import math
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsdk.backoff import Backoff

policies = st.builds(
    lambda initial, mult, extra: Backoff(initial=initial, multiplier=mult,
                                         max_delay=initial * extra),
    st.floats(0.01, 100), st.floats(1, 10), st.floats(1, 1000),
)


@given(policies, st.integers(0, 10_000), st.integers(0, 2**32))
def test_delay_is_within_full_jitter_bounds(policy, attempt, seed):
    delay = policy.delay(attempt, random.Random(seed))
    # Reference in Decimal, which does not overflow: min(cap, base * mult^n).
    exact = Decimal(policy.initial) * Decimal(policy.multiplier) ** attempt
    ceiling = min(policy.max_delay, float(min(exact, Decimal(policy.max_delay))))
    assert 0 <= delay <= policy.ceiling(attempt) <= policy.max_delay
    assert math.isclose(policy.ceiling(attempt), ceiling, rel_tol=1e-9)


@given(policies, st.integers(0, 200))
def test_ceiling_is_monotonic(policy, attempt):
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


def test_default_ceilings():
    b = Backoff()
    assert [b.ceiling(n) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert b.ceiling(10**6) == 300
    assert (b.initial, b.multiplier, b.max_delay, b.reset_after) == (1, 2, 300, 60)


def test_full_jitter_spreads_over_the_whole_window():
    # Full jitter is uniform on [0, ceiling): a fleet retrying at attempt 8 (ceiling 256 s)
    # spreads evenly instead of clumping near the ceiling.
    rng = random.Random(1)
    delays = [Backoff().delay(8, rng) for _ in range(20_000)]
    assert min(delays) < 2.56 and max(delays) > 253.4
    deciles = [sum(1 for d in delays if k * 25.6 <= d < (k + 1) * 25.6) for k in range(10)]
    assert all(1800 < n < 2200 for n in deciles)


def test_delay_is_pure_given_the_rng():
    assert Backoff().delay(3, random.Random(5)) == Backoff().delay(3, random.Random(5))
    assert Backoff().delay(3, random.Random(5)) == random.Random(5).uniform(0, 8)


def test_reset_after():
    b = Backoff(reset_after=60)
    assert not b.should_reset(59.9)
    assert b.should_reset(60)


@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": -1}, {"multiplier": 0.5}, {"max_delay": 0.5},
    {"reset_after": -1}, {"initial": float("nan")}, {"max_delay": float("inf")},
])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_negative_attempt_is_refused():
    with pytest.raises(ValueError):
        Backoff().delay(-1, random.Random())
