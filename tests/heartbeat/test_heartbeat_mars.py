"""Trajectories of the Mars smart heartbeat against simulated NAT timeouts."""
import math

import pytest

from heartbeat_run import DAY, WALL0, Run, runs
from pushsdk.heartbeat import HeartbeatContext, UnknownStrategyError, parse_strategy
from pushsdk.heartbeat.mars import MarsState, MarsStrategy

MARS = MarsStrategy()
#: The whole probe from Min to the cap on a network that never times out.
FULL_PROBE = runs((210, 3 + 5), (270, 5), (330, 5), (390, 5), (450, 5), (510, 5), (570, 5),
                  (580, 5))


def learned(nat_timeout: float, **kwargs) -> Run:
    """A run that has learned ``nat_timeout`` (390 < NAT < 450 ends stable at 370)."""
    run = Run(MARS, nat_timeout=nat_timeout, **kwargs)
    run.beats(3 + 5 + 5 + 5 + 5 + 1 + 3 + 1 + 3)
    return run


def test_probes_up_in_60_s_steps_and_settles_80_s_below_the_failed_value():
    run = Run(MARS, nat_timeout=400)
    assert run.beats(3 + 5 + 5 + 5 + 5 + 1 + 3 + 1 + 3 + 4) == (
        runs((210, 3), (210, 5), (270, 5), (330, 5), (390, 5))  # warm-up, then 5 per value
        + [450]  # NAT says no: failure 1, the connection is gone
        + runs((210, 3), (450, 1))  # new connection: warm-up at Min, then failure 2
        + runs((210, 3), (370, 4))  # 450 - 60 - 20, stable
    )
    assert [b.ok for b in run.log].count(False) == 2
    assert run.connections == 3
    assert run.state.stable and run.state.interval == 370
    assert run.memory == {"strategy": "mars", "interval": 370, "stable": True, "failures": 0,
                          "doze_value": False, "modified_at": run.memory["modified_at"],
                          "doze_events": 0, "normal_events": 0}


def test_an_open_network_is_probed_up_to_the_580_s_cap():
    run = Run(MARS)
    assert run.beats(len(FULL_PROBE)) == FULL_PROBE
    assert run.state.stable and run.state.interval == 580
    assert run.beats(3) == [580, 580, 580]


def test_a_stable_value_that_fails_twice_restarts_probing_from_min():
    run = learned(400)
    assert run.interval() == 370
    run.nat_timeout = 300  # the NAT got stricter
    assert run.beats(1 + 3 + 1 + 3 + 5 + 5 + 1 + 3 + 1 + 3 + 2) == (
        [370]  # stable failure 1
        + runs((210, 3), (370, 1))  # stable failure 2: back to Min, probing again
        + runs((210, 3), (210, 5), (270, 5), (330, 1))  # 330 > 300: probing failure 1
        + runs((210, 3), (330, 1))  # probing failure 2: 330 - 80
        + runs((210, 3), (250, 2))
    )
    assert run.state.stable and run.state.interval == 250


def test_warm_up_repeats_on_every_connection_but_keeps_what_was_learned():
    run = learned(400)
    run.connect()  # e.g. the server closed the connection
    assert run.beats(5) == [210, 210, 210, 370, 370]


def test_a_stable_value_is_probed_20_s_higher_after_7_days():
    run = learned(400)
    stabilised_at = run.memory["modified_at"]
    # Stable successes do not touch the record; the first success >= 7 days after the
    # record was written adds SuccessStep and probing resumes (5 successes, then +60 s).
    while run.interval() != 390:
        assert run.beat().interval in (210, 370)
        assert run.memory["modified_at"] in (stabilised_at, run.wall_time)
    assert run.wall_time - stabilised_at >= 7 * DAY > run.wall_time - 370 - stabilised_at
    assert run.memory["modified_at"] == run.wall_time and not run.memory["stable"]
    assert run.beats(5 + 1 + 3 + 1 + 3 + 1) == (
        runs((390, 5), (450, 1), (210, 3), (450, 1), (210, 3), (370, 1)))


def test_a_stable_value_at_the_cap_is_never_reprobed():
    run = Run(MARS)
    run.beats(len(FULL_PROBE))
    run.now += 30 * DAY
    assert run.beats(3) == [580, 580, 580]


def test_an_active_app_always_uses_min_and_learns_nothing_from_it():
    run = learned(400)
    run.set_app_state("foreground")
    assert run.beats(4) == [210] * 4
    assert run.state.interval == 370 and run.state.successes == 0
    # Leaving the foreground: still active for 10 minutes (210 + 210 + 210 = 630 s).
    run.set_app_state("background")
    assert run.beats(4) == [210, 210, 210, 370]


def test_while_probing_min_beats_of_an_active_app_do_not_count_for_the_next_value():
    run = Run(MARS)
    run.beats(3 + 5)  # now probing 270
    run.set_app_state("foreground")
    run.beats(10)
    run.set_app_state("inactive")
    assert run.beats(3 + 5 + 1) == runs((210, 3), (270, 5), (330, 1))


def test_a_nat_shorter_than_min_teaches_nothing():
    run = Run(MARS, nat_timeout=200)
    assert run.beats(6) == [210] * 6
    assert all(not b.ok for b in run.log)
    assert run.connections == 7
    assert run.state == MarsState(modified_at=WALL0)


def test_failures_at_min_are_ignored_while_probing_min():
    run = Run(MARS, nat_timeout=math.inf)
    run.beats(3 + 2)  # probing 210, two successes counted
    run.beat(ok=False)  # a failure at Min: nothing shorter to try
    assert run.state.interval == 210 and not run.state.stable
    assert run.beats(3 + 5 + 1) == runs((210, 3), (210, 5), (270, 1))


def test_doze_mode_jumps_to_the_cap_after_5_successes():
    run = Run(MARS, network_key="mobile_isp", network_type="cellular", lateness=30)
    assert run.beats(3 + 5 + 5 + 1) == runs((210, 3 + 5), (580, 5 + 1))
    assert run.state.stable and run.state.doze_value
    assert run.state.doze_events > 2 * run.state.normal_events


def test_doze_mode_failure_goes_to_min():
    run = Run(MARS, nat_timeout=400, network_key="mobile_isp", network_type="cellular",
              lateness=30)
    assert run.beats(3 + 5 + 1 + 3 + 1 + 3 + 2) == runs(
        (210, 8), (580, 1), (210, 3), (580, 1), (210, 3), (210, 2))
    assert run.state.stable and run.state.doze_value and run.state.interval == 210


def test_a_value_learned_before_dozing_falls_back_to_min():
    run = learned(400, network_key="mobile_isp", network_type="cellular")
    run.state = MARS.start({**run.memory, "normal_events": 0}, run.ctx())
    run.lateness = 30  # two late alarms make the device "dozing"
    assert run.beats(5) == [210] * 5
    assert run.state.interval == 210 and run.state.stable and not run.state.doze_value


@pytest.mark.parametrize("network_type, app_state", [("wifi", "inactive"),
                                                     ("cellular", "foreground")])
def test_late_alarms_count_as_doze_only_on_cellular_with_an_inactive_app(network_type,
                                                                       app_state):
    run = Run(MARS, network_type=network_type, app_state=app_state, lateness=30)
    run.beats(3 + 5 + 1)
    assert run.state.doze_events == 0
    assert run.interval() == (270 if app_state == "inactive" else 210)


def test_on_time_alarms_cancel_late_ones():
    run = Run(MARS, network_key="mobile_isp", network_type="cellular")
    for lateness, expected in [(25, (1, 0)), (0, (0, 1)), (0, (0, 2)), (40, (1, 1)),
                               (40, (2, 0)), (40, (3, 0))]:
        run.lateness = lateness
        run.beat()
        assert (run.state.doze_events, run.state.normal_events) == expected
    assert run.state.dozing


def test_memory_resumes_the_learned_value_on_that_network_only():
    run = learned(400, network_key="wifi_a")
    run.move_to("wifi_b")
    assert run.beats(3 + 5 + 1) == runs((210, 3 + 5), (270, 1))
    run.move_to("wifi_a")
    assert run.beats(4) == [210, 210, 210, 370]
    fresh = Run(MARS, memories=dict(run.memories), network_key="wifi_a")
    assert fresh.beats(4) == [210, 210, 210, 370]


def test_failures_are_remembered_across_connections_and_restarts():
    run = Run(MARS, nat_timeout=400)
    run.beats(3 + 5 + 5 + 5 + 5 + 1)
    assert run.memory["failures"] == 1 and not run.memory["stable"]
    restarted = Run(MARS, nat_timeout=400, memories=dict(run.memories))
    assert restarted.beats(3 + 1 + 3 + 1) == runs((210, 3), (450, 1), (210, 3), (370, 1))


CTX = HeartbeatContext(now=0.0, wall_time=WALL0, network_key="wifi_home",
                       app_state="inactive", app_state_since=-DAY)
GOOD = {"strategy": "mars", "interval": 370, "stable": True, "failures": 1,
        "doze_value": False, "modified_at": WALL0 - DAY, "doze_events": 0, "normal_events": 4}


def test_memory_is_read_back_like_mars_repairs_its_ini():
    assert MARS.memory(MARS.start(GOOD, CTX)) == GOOD
    assert MARS.start({**GOOD, "interval": 100}, CTX).interval == 210
    assert MARS.start({**GOOD, "interval": 900}, CTX).interval == 580
    assert MARS.start({**GOOD, "modified_at": WALL0 + DAY}, CTX).modified_at == WALL0


@pytest.mark.parametrize("memory", [
    None,
    {},
    {**GOOD, "strategy": "kontalk"},
    {key: value for key, value in GOOD.items() if key != "strategy"},
    {**GOOD, "interval": "370"},
    {**GOOD, "interval": 370.5},
    {**GOOD, "stable": 1},
    {**GOOD, "failures": -1},
    {**GOOD, "modified_at": float("nan")},
    {**GOOD, "doze_events": None},
])
def test_missing_foreign_or_damaged_memory_starts_afresh(memory):
    assert MARS.start(memory, CTX) == MarsState(modified_at=WALL0)


def test_identity_and_constants():
    assert parse_strategy("mars") == MARS
    assert (MARS.name, MARS.max_interval, MARS.ping_timeout) == ("mars", 580.0, 8.0)
    with pytest.raises(UnknownStrategyError, match="takes no argument"):
        parse_strategy("mars:300")


def _ctx(**kwargs):
    from pushsdk.heartbeat import HeartbeatContext

    return HeartbeatContext(**{"now": 5000.0, "wall_time": 0.0, "network_key": "mobile_isp",
                               "network_type": "cellular", **kwargs})


def test_screen_changes_do_not_make_mars_active_only_foreground_changes_do():
    from pushsdk.heartbeat.mars import MarsState, MarsStrategy

    mars, learned = MarsStrategy(), MarsState(interval=370, stable=True, beats_ok=3)
    # The screen went off 1 min ago; the app left the foreground an hour ago: not active.
    screen_off = _ctx(app_state="inactive", app_state_since=4940.0,
                      foreground_changed_at=1400.0)
    assert mars.interval(learned, screen_off) == 370
    # It left the foreground 5 min ago: active (Min) for 10 min after that change.
    left = _ctx(app_state="background", app_state_since=4700.0, foreground_changed_at=4700.0)
    assert mars.interval(learned, left) == 210
    # Without the platform's foreground time, the last change of any kind is all there is.
    assert mars.interval(learned, _ctx(app_state="inactive", app_state_since=4940.0)) == 210


def test_mars_waits_5_s_instead_of_8_s_for_a_beat_whose_alarm_spanned_15_min():
    from pushsdk.heartbeat.mars import MarsState, MarsStrategy

    mars, learned = MarsStrategy(), MarsState(interval=580, stable=True, beats_ok=3)
    idle = dict(app_state="inactive", app_state_since=0.0, foreground_changed_at=0.0)
    assert mars.reply_timeout(learned, _ctx(lateness=0.0, **idle)) == 8.0
    assert mars.reply_timeout(learned, _ctx(lateness=319.0, **idle)) == 8.0  # 899 s
    assert mars.reply_timeout(learned, _ctx(lateness=320.0, **idle)) == 5.0  # 900 s
