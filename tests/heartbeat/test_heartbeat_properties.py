"""Whatever happens, every strategy stays within its bounds and its memory stays JSON."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat_run import DAY, Run
from pushsdk.heartbeat import APP_STATES, parse_strategy
from pushsdk.heartbeat.courier import CourierStrategy
from pushsdk.heartbeat.mars import MarsStrategy

#: Each strategy with the smallest interval it may use.
FLOORS = {
    "mars": 210,
    "courier": 30,  # the main connection's keep-alive while the probes search
    "courier:max=1800,keepalive=240": 60,
    "kontalk": 90,
    "kontalk-344": 300,
    "fcm": 900,
    "mars+hooks": 210,
}
STRATEGIES = st.sampled_from(sorted(FLOORS)).map(lambda name: (parse_strategy(name), FLOORS[name]))
CUSTOM_COURIER = st.builds(
    lambda lower, span, step: CourierStrategy(lower=lower, upper=lower + span, step=step),
    st.integers(1, 20), st.integers(0, 40), st.integers(1, 16),
).map(lambda s: (s, min(s.lower * 60, s.keepalive)))

EVENTS = st.lists(st.one_of(
    st.tuples(st.just("beat"), st.booleans(), st.sampled_from([0.0, 5.0, 19.9, 20.0, 900.0])),
    st.tuples(st.just("app"), st.sampled_from(APP_STATES)),
    st.tuples(st.just("network"), st.sampled_from(["wifi_a", "wifi_b", "mobile_isp"]),
              st.sampled_from(["wifi", "cellular"])),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("wait"), st.floats(0, 30 * DAY)),
), max_size=120)


def play(run: Run, events, check) -> None:
    check(run)
    for event in events:
        kind = event[0]
        if kind == "beat":
            run.lateness = event[2]
            run.beat(ok=event[1])
        elif kind == "app":
            run.set_app_state(event[1])
        elif kind == "network":
            run.move_to(event[1], event[2])
        elif kind == "reconnect":
            run.connect()
        else:
            run.now += event[1]
        check(run)  # Run also asserts that memory survives JSON unchanged


@settings(max_examples=150, deadline=None)
@given(st.one_of(STRATEGIES, CUSTOM_COURIER), EVENTS)
def test_intervals_stay_within_bounds(strategy_and_floor, events):
    strategy, floor = strategy_and_floor

    def check(run: Run) -> None:
        interval = run.interval()
        assert math.isfinite(interval)
        assert floor <= interval <= strategy.max_interval

    play(Run(strategy), events, check)


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_mars_uses_min_whenever_the_app_is_in_the_foreground(events):
    mars = MarsStrategy()

    def check(run: Run) -> None:
        if run.app_state == "foreground":
            assert run.interval() == 210
        assert run.state.interval in range(210, 581, 10)

    play(Run(mars), events, check)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["mars", "courier", "kontalk"]), EVENTS)
def test_a_restart_resumes_what_was_learned(name, events):
    strategy = parse_strategy(name)
    run = Run(strategy)
    play(run, events, lambda run: None)
    restarted = Run(strategy, memories=dict(run.memories), network_key=run.network_key,
                    now=run.now)
    if name == "mars":
        assert restarted.state.interval == run.state.interval
        assert restarted.state.stable == run.state.stable
    elif name == "courier":
        assert (restarted.state.last_success, restarted.state.optimal) == (
            run.state.last_success, run.state.optimal)
    elif name == "kontalk":
        assert restarted.interval() == run.interval()
