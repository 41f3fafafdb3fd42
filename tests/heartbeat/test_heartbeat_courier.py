"""Gojek Courier's adaptive keep-alive: the search on its probe connection, the main
connection's keep-alive, and the optimum."""
import pytest

from heartbeat_run import WALL0, Run
from pushsdk.heartbeat import HeartbeatContext, UnknownStrategyError, parse_strategy
from pushsdk.heartbeat.courier import CourierState, CourierStrategy

COURIER = CourierStrategy()
CTX = HeartbeatContext(now=0.0, wall_time=WALL0, network_key="wifi_home")


def trials(run: Run) -> list[tuple[float, bool]]:
    """Minutes tried on probe connections, and whether each survived."""
    return [(silence / 60, ok) for silence, ok in run.probe_log]


def test_the_main_connection_keeps_30_s_while_probes_step_up_by_2_min_to_9_min():
    run = Run(COURIER)
    assert run.beats(8) == [30] * 5 + [540] * 3
    assert trials(run) == [(1, True), (3, True), (5, True), (7, True), (9, True)]
    assert run.state.optimal and run.state.last_success == 9
    assert all(b.ok for b in run.log)  # the search never risks the main connection


def test_a_failed_probe_lowers_the_bound_below_it_and_halves_the_step():
    run = Run(COURIER, nat_timeout=400)  # 6 min 40 s
    assert run.beats(7) == [30] * 5 + [360] * 2
    assert trials(run) == [(1, True), (3, True), (5, True), (7, False), (6, True)]
    assert run.state == CourierState(last_success=6, upper=6, step=1, trial=6, optimal=True)


def test_the_step_keeps_halving_until_the_bound_is_reached():
    run = Run(parse_strategy("courier:max=1800,step=480"), nat_timeout=20.5 * 60)
    run.beats(10)
    assert [m for m, _ in trials(run)] == [1, 9, 17, 25, 21, 19, 20]
    assert run.state.optimal and (run.state.upper, run.state.step) == (20, 2)
    assert run.interval() == 1200


def test_a_failure_just_above_the_last_success_is_the_optimum():
    run = Run(COURIER, nat_timeout=200)
    run.beats(6)
    assert trials(run) == [(1, True), (3, True), (5, False), (4, False)]
    assert run.state.optimal and run.interval() == 180


def test_a_failure_at_the_lower_bound_makes_it_the_optimum():
    run = Run(COURIER, nat_timeout=30)
    run.beats(2)
    assert trials(run) == [(1, False)]
    assert run.state.optimal and run.interval() == 60  # as Courier: even though it fails


def test_main_failures_before_the_optimum_teach_nothing():
    run = Run(COURIER)
    before = run.state
    run.beat(ok=False)
    assert (run.state.last_success, run.state.optimal) == (before.last_success, False)


def test_ten_failures_at_the_optimum_restart_the_search():
    run = Run(COURIER)
    run.beats(6)  # optimal at 9 min
    run.nat_timeout = 200
    assert run.beats(10) == [540] * 10
    assert not run.state.optimal and run.memory["optimal_failures"] == 0
    assert run.interval() == 30


def test_failures_at_the_optimum_need_not_be_consecutive():
    run = Run(COURIER)
    run.beats(6)
    for _ in range(9):
        run.beat(ok=False)
        run.beat(ok=True)
    assert run.state.optimal and run.state.optimal_failures == 9
    run.beat(ok=False)
    assert not run.state.optimal and run.interval() == 30


def test_a_value_that_cannot_be_probed_three_times_counts_as_failed():
    run = Run(COURIER, probes_allowed=False)
    run.beats(3)
    # 1 min could not be tried three times: the lower bound failed, so it is the optimum.
    assert run.state.optimal and run.interval() == 60


def test_memory_is_per_network_and_resumes_the_search():
    run = Run(COURIER, network_key="wifi_a", nat_timeout=400)
    run.beats(3)  # 1, 3, 5 worked on wifi_a
    run.move_to("mobile_isp", "cellular")
    run.beats(1)
    assert trials(run)[-1] == (1, True)
    run.move_to("wifi_a")
    run.beats(2)
    assert trials(run)[-2:] == [(7, False), (6, True)]
    restarted = Run(COURIER, network_key="wifi_a", memories=dict(run.memories))
    assert restarted.beats(1) == [360]


def test_memory_from_other_bounds_is_searched_again_from_its_last_success():
    run = Run(COURIER)
    run.beats(6)  # optimal at 9
    wider = CourierStrategy(upper=12)
    state = wider.start(run.memory, CTX)
    assert (state.optimal, state.upper) == (False, 12)
    assert wider.probe(state, CTX) == 11 * 60
    narrower_start = CourierStrategy(lower=2)
    assert narrower_start.probe(narrower_start.start(run.memory, CTX), CTX) == 9 * 60


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
    for bad in ("courier:max=100", "courier:min=0", "courier:foo=1", "courier:max",
                "courier:min=120,max=60", "courier:keepalive=0"):
        with pytest.raises(UnknownStrategyError):
            parse_strategy(bad)


def test_identity_and_parameters_in_seconds():
    assert parse_strategy("courier") == COURIER
    assert (COURIER.name, COURIER.max_interval, COURIER.ping_timeout) == ("courier", 540.0, None)
    assert COURIER.start(None, CTX) == CourierState(last_success=-1, upper=9, step=2)
    wide = parse_strategy("courier:min=60,max=1800,keepalive=240")
    assert (wide.lower, wide.upper, wide.keepalive) == (1, 30, 240)
    assert wide.name == "courier:max=1800,keepalive=240" and parse_strategy(wide.name) == wide
