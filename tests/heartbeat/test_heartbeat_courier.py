"""Trajectories of Gojek Courier's adaptive keep-alive against simulated NAT timeouts."""
import pytest

from heartbeat_run import WALL0, Run
from pushsdk.heartbeat import HeartbeatContext, parse_strategy
from pushsdk.heartbeat.courier import CourierState, CourierStrategy

COURIER = CourierStrategy()
CTX = HeartbeatContext(now=0.0, wall_time=WALL0, network_key="wifi_home")


def minutes(run: Run, n: int) -> list[float]:
    return [interval / 60 for interval in run.beats(n)]


def test_an_open_network_steps_up_by_2_min_to_the_9_min_bound():
    run = Run(COURIER)
    assert minutes(run, 7) == [1, 3, 5, 7, 9, 9, 9]
    assert run.state.optimal and run.state.last_success == 9


def test_a_failure_lowers_the_bound_below_it_and_halves_the_step():
    run = Run(COURIER, nat_timeout=400)  # 6 min 40 s
    assert minutes(run, 7) == [1, 3, 5, 7, 6, 6, 6]
    assert [b.ok for b in run.log] == [True, True, True, False, True, True, True]
    assert run.state == CourierState(last_success=6, upper=6, step=1, trial=6, optimal=True)


def test_the_step_keeps_halving_until_the_bound_is_reached():
    run = Run(CourierStrategy(lower=1, upper=30, step=8), nat_timeout=20.5 * 60)
    assert minutes(run, 8) == [1, 9, 17, 25, 21, 19, 20, 20]
    # 25 failed: bound 24, step 4; 21 failed: bound 20, step 2; 19 and 20 worked.
    assert run.state.optimal and (run.state.upper, run.state.step) == (20, 2)


def test_a_failure_just_above_the_last_success_is_the_optimum():
    run = Run(COURIER, nat_timeout=200)
    assert minutes(run, 6) == [1, 3, 5, 4, 3, 3]
    # 5 failed: bound 4, step 1; 4 failed: bound 3 = last success, so 3 is optimal.
    assert run.state.optimal and run.state.last_success == 3


def test_a_failure_at_the_lower_bound_makes_it_the_optimum():
    run = Run(COURIER, nat_timeout=30)
    assert minutes(run, 3) == [1, 1, 1]
    assert run.state.optimal and run.state.last_success == 1


def test_ten_failures_at_the_optimum_restart_the_search():
    run = Run(COURIER)
    run.beats(5)  # optimal at 9 min
    run.nat_timeout = 200
    assert minutes(run, 10) == [9] * 10
    assert not run.state.optimal and run.memory["optimal_failures"] == 0
    assert minutes(run, 7) == [1, 3, 5, 4, 3, 3, 3]


def test_failures_at_the_optimum_need_not_be_consecutive():
    run = Run(COURIER)
    run.beats(5)
    for _ in range(9):
        run.beat(ok=False)
        run.beat(ok=True)
    assert run.state.optimal and run.state.optimal_failures == 9
    run.beat(ok=False)
    assert not run.state.optimal and run.interval() == 60


def test_a_value_scheduled_three_times_without_an_answer_counts_as_failed():
    run = Run(COURIER)
    run.beat()  # 1 min worked; 3 min is armed
    assert (run.state.trial, run.state.tries) == (3, 0)
    for tries in (1, 2):
        run.connect()  # the connection ended before the ping went out
        assert (run.state.trial, run.state.tries) == (3, tries)
    run.connect()
    assert (run.state.trial, run.state.tries, run.state.upper, run.state.step) == (2, 0, 2, 1)
    assert minutes(run, 2) == [2, 2]
    assert run.state.optimal


def test_memory_is_per_network_and_resumes_the_search():
    run = Run(COURIER, network_key="wifi_a", nat_timeout=400)
    run.beats(3)  # 1, 3, 5 worked on wifi_a
    run.move_to("mobile_isp", "cellular")
    assert minutes(run, 2) == [1, 3]
    run.move_to("wifi_a")
    assert minutes(run, 3) == [7, 6, 6]
    restarted = Run(COURIER, network_key="wifi_a", memories=dict(run.memories))
    assert minutes(restarted, 1) == [6]


def test_memory_from_other_bounds_is_searched_again_from_its_last_success():
    run = Run(COURIER)
    run.beats(5)  # optimal at 9
    wider = CourierStrategy(upper=12)
    state = wider.start(run.memory, CTX)
    assert (state.optimal, state.upper, state.trial) == (False, 12, 11)
    assert CourierStrategy(lower=2).start(run.memory, CTX).trial == 9  # min(9 + 2, 9)


@pytest.mark.parametrize("damage", [
    {"strategy": "mars"},
    {"step": 0},
    {"tries": "1"},
    {"optimal": 1},
    {"current_upper": 10},
    {"last_success": 12},
    {"last_success": -1, "optimal": True},
])
def test_foreign_or_damaged_memory_starts_afresh(damage):
    run = Run(COURIER)
    run.beats(3)
    assert COURIER.start({**run.memory, **damage}, CTX) == COURIER.start(None, CTX)


def test_configuration_is_checked():
    with pytest.raises(ValueError, match="upper bound"):
        CourierStrategy(lower=5, upper=3)
    with pytest.raises(ValueError, match="step"):
        CourierStrategy(step=0)
    with pytest.raises(ValueError, match="lower"):
        CourierStrategy(lower=True)


def test_identity():
    assert parse_strategy("courier") == COURIER
    assert (COURIER.name, COURIER.max_interval, COURIER.ping_timeout) == ("courier", 540.0, None)
    assert COURIER.start(None, CTX) == CourierState(last_success=-1, upper=9, step=2, trial=1)
