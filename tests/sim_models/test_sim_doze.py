"""Doze schedules (simulator.doze): AOSP step times, windows, screen-on, grants, timelines."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.app_state import AppState, AppStateTimeline
from simulator.doze import (
    INF,
    DozeParams,
    DozeSchedule,
    DozeState,
    DozeTimeline,
)

MIN, HOUR = 60.0, 3600.0
EPS = 1e-6


def deep(t_off=0.0, **kw):
    """A schedule whose windows last their whole budget (``early_exit=False``) unless asked."""
    kw.setdefault("early_exit", False)
    return DozeSchedule.from_screen_off(t_off, DozeParams(**kw))


def test_deep_doze_starts_after_inactive_plus_idle_pending():
    schedule = deep(t_off=1000.0)
    assert schedule.deep_idle_start == 1000.0 + 30 * MIN + 30 * MIN
    assert schedule.state(1000.0) is DozeState.INACTIVE
    assert schedule.network_allowed(1000.0 + HOUR - EPS)
    assert schedule.state(1000.0 + HOUR) is DozeState.IDLE
    assert not schedule.network_allowed(1000.0 + HOUR)


def test_deep_windows_follow_aosp_growth():
    """IDLE 1 h, window 5 min, IDLE 2 h, window 10 min, IDLE 4 h, 10 min, then 6 h + 10 min."""
    schedule = deep()
    idle = HOUR  # deep IDLE starts 1 h after screen-off
    windows = [(w.start - idle, w.end - w.start)
               for w in schedule.maintenance_windows(idle + 30 * HOUR)]
    flat = [x for window in windows for x in window]
    expected_gaps = [1 * HOUR, 2 * HOUR, 4 * HOUR, 6 * HOUR, 6 * HOUR, 6 * HOUR]
    expected_lengths = [5 * MIN, 10 * MIN, 10 * MIN, 10 * MIN, 10 * MIN, 10 * MIN]
    t, starts = 0.0, []
    for gap, length in zip(expected_gaps, expected_lengths):
        starts.append((t + gap, length))
        t += gap + length
    assert flat[: 2 * len(starts)] == pytest.approx([x for window in starts for x in window])
    # so windows open ≈ 1 h, 3 h 5 min, 7 h 15 min, 13 h 25 min after idle starts
    assert [w for w, _ in windows[:4]] == pytest.approx([1 * HOUR, 3 * HOUR + 5 * MIN,
                                                         7 * HOUR + 15 * MIN, 13 * HOUR + 25 * MIN])


def test_network_only_in_windows_while_idle():
    schedule = deep()
    first = HOUR + HOUR  # screen-off + 1 h to idle + 1 h idle
    assert not schedule.network_allowed(first - EPS)
    assert schedule.network_allowed(first)
    assert schedule.in_maintenance(first)
    assert schedule.network_allowed(first + 5 * MIN - EPS)
    assert not schedule.network_allowed(first + 5 * MIN)
    assert not schedule.in_maintenance(first + 5 * MIN)


def test_next_change_walks_the_flips():
    schedule = deep()
    flips, t = [], 0.0
    for _ in range(6):
        t = schedule.next_change(t)
        flips.append(t)
    assert flips == pytest.approx([
        1 * HOUR, 2 * HOUR, 2 * HOUR + 5 * MIN, 4 * HOUR + 5 * MIN,
        4 * HOUR + 15 * MIN, 8 * HOUR + 15 * MIN,
    ])


def test_screen_on_ends_doze_at_once():
    schedule = deep().screen_on(2.5 * HOUR)
    assert not schedule.network_allowed(2.5 * HOUR - EPS)
    assert schedule.state(2.5 * HOUR) is DozeState.ACTIVE
    assert schedule.network_allowed(2.5 * HOUR)
    assert schedule.next_change(2.2 * HOUR) == 2.5 * HOUR
    assert schedule.next_change(2.5 * HOUR) == INF


def test_short_screen_off_never_reaches_idle():
    schedule = DozeSchedule.from_screen_off(0.0, DozeParams(), screen_on_at=59 * MIN)
    assert schedule.deep_idle_start == INF
    assert all(p.network_allowed for p in schedule.phases(0.0, 2 * HOUR))
    assert schedule.next_change(0.0) == INF


def test_light_doze_cycles_until_deep_idle_takes_over():
    schedule = deep(light=True)
    phases = [(p.start / MIN, p.end / MIN, p.state) for p in schedule.phases(0.0, 2.1 * HOUR)]
    assert phases[:7] == [
        (0, 1, DozeState.INACTIVE),
        (1, 6, DozeState.LIGHT_IDLE),
        (6, 7, DozeState.LIGHT_MAINTENANCE),
        (7, 17, DozeState.LIGHT_IDLE),
        (17, 18, DozeState.LIGHT_MAINTENANCE),
        (18, 33, DozeState.LIGHT_IDLE),
        (33, 34, DozeState.LIGHT_MAINTENANCE),
    ]
    assert phases[-4:] == [(50, 60, DozeState.LIGHT_IDLE), (60, 120, DozeState.IDLE),
                           (120, 125, DozeState.MAINTENANCE), (125, 245, DozeState.IDLE)]
    # light idle running into deep idle is one blocked stretch
    assert schedule.next_change(55 * MIN) == 120 * MIN


def test_light_only_when_the_phone_moves():
    schedule = deep(deep=False, light=True)
    assert schedule.deep_idle_start == INF
    assert schedule.state(10 * HOUR + 2 * MIN) in (DozeState.LIGHT_IDLE,
                                                   DozeState.LIGHT_MAINTENANCE)
    windows = schedule.maintenance_windows(5 * HOUR)
    assert all(w.end - w.start == MIN for w in windows)
    assert [b.start - a.end for a, b in zip(windows[2:], windows[3:])] == \
        pytest.approx([15 * MIN] * (len(windows) - 3))


def test_disabled_doze_always_allows_the_network():
    schedule = DozeSchedule.from_screen_off(0.0, DozeParams.disabled())
    assert schedule.network_allowed(100 * HOUR)
    assert schedule.next_change(0.0) == INF


def test_high_priority_push_grants_network_for_the_grace_period():
    schedule = deep().with_grant(1.5 * HOUR)
    assert schedule.params.high_priority_grace == 10.0
    assert schedule.network_allowed(1.5 * HOUR)
    assert schedule.network_allowed(1.5 * HOUR + 10 - EPS)
    assert not schedule.network_allowed(1.5 * HOUR + 10)
    assert schedule.state(1.5 * HOUR) is DozeState.IDLE  # the device still dozes
    assert schedule.next_change(1.2 * HOUR) == 1.5 * HOUR
    assert schedule.next_change(1.5 * HOUR) == 1.5 * HOUR + 10


def test_aosp_constants_can_be_overridden():
    schedule = deep(inactive_timeout=15 * MIN, idle_after_inactive=15 * MIN, sensing=4.5 * MIN)
    assert schedule.deep_idle_start == 34.5 * MIN


def test_caps_below_initial_values_are_refused():
    with pytest.raises(ValueError, match="max_idle_timeout"):
        DozeParams(max_idle_timeout=60.0)


@given(
    t_off=st.floats(min_value=0, max_value=1e5),
    on_after=st.floats(min_value=0, max_value=3e5),
    light=st.booleans(),
    probe=st.floats(min_value=0, max_value=4e5),
)
def test_next_change_is_the_first_flip(t_off, on_after, light, probe):
    schedule = DozeSchedule.from_screen_off(t_off, DozeParams(light=light), t_off + on_after)
    change = schedule.next_change(probe)
    allowed = schedule.network_allowed(probe)
    if change < INF:
        assert change > probe
        assert schedule.network_allowed(change) != allowed
        # nothing flips in between (sampled)
        for k in range(1, 20):
            assert schedule.network_allowed(probe + (change - probe) * k / 20) == allowed
    else:
        assert schedule.network_allowed(probe + 1e6) == allowed


def test_doze_timeline_follows_the_screen():
    app = AppStateTimeline.from_sessions(
        [(0.0, 10 * MIN, AppState.FOREGROUND), (5 * HOUR, 5 * HOUR + 5 * MIN, AppState.BACKGROUND)],
        duration=12 * HOUR,
    )
    doze = DozeTimeline.from_app_timeline(app, DozeParams(early_exit=False))
    assert doze.network_allowed(5 * MIN) and doze.state(5 * MIN) is DozeState.ACTIVE
    # screen off at 10 min -> idle at 70 min, windows at 130 and 255 min, screen on at 5 h
    assert doze.next_change(0.0) == pytest.approx(70 * MIN)
    assert doze.in_maintenance(131 * MIN)
    assert not doze.network_allowed(4 * HOUR)
    assert doze.next_change(4 * HOUR) == pytest.approx(255 * MIN)
    assert doze.next_change(270 * MIN) == 5 * HOUR
    assert doze.network_allowed(5 * HOUR)
    # second screen-off at 5 h 5 min: idle again an hour later
    assert doze.next_change(5 * HOUR) == pytest.approx(6 * HOUR + 5 * MIN)
    assert doze.defer(4.5 * HOUR) == 5 * HOUR
    assert doze.defer(5 * MIN) == 5 * MIN


def test_doze_timeline_grants_and_disabled():
    app = AppStateTimeline.constant(AppState.INACTIVE, 10 * HOUR)
    doze = DozeTimeline.from_app_timeline(app, DozeParams()).with_grant(3 * HOUR)
    assert doze.network_allowed(3 * HOUR + 5) and not doze.network_allowed(3 * HOUR + 11)
    off = DozeTimeline.from_app_timeline(app, DozeParams.disabled())
    assert off.network_allowed(3 * HOUR) and off.next_change(0.0) == INF


def test_windows_end_when_the_work_is_done():
    """AOSP leaves a maintenance window once no work is pending, after at least
    MIN_DEEP_MAINTENANCE_TIME (30 s) / MIN_LIGHT_MAINTENANCE_TIME (5 s); the next idle period
    starts then, so the schedule moves earlier by what the window did not use."""
    schedule = deep(early_exit=True)
    windows = schedule.maintenance_windows(20 * HOUR)
    assert [w.end - w.start for w in windows[:4]] == pytest.approx([30.0] * 4)
    # IDLE 1 h, 30 s window, IDLE 2 h, 30 s window, IDLE 4 h, ...
    assert [w.start for w in windows[:3]] == pytest.approx(
        [2 * HOUR, 4 * HOUR + 30, 8 * HOUR + 60])
    quick = DozeSchedule.from_screen_off(0.0, DozeParams(deep=False, light=True,
                                                         maintenance_work=0))
    assert quick.maintenance_windows(HOUR)[0].end - quick.maintenance_windows(HOUR)[0].start == 5.0
    busy = DozeSchedule.from_screen_off(0.0, DozeParams(maintenance_work=1000))
    first = busy.maintenance_windows(3 * HOUR)[0]
    assert first.end - first.start == 300.0  # never longer than the budget (5 min)


def _screen_off_all_day():
    from simulator.app_state import AppState, AppStateTimeline
    app = AppStateTimeline.constant(AppState.INACTIVE, 24 * HOUR)
    return DozeTimeline.from_app_timeline(app, DozeParams(early_exit=False))


def test_alarms_wait_for_the_window_unless_allowed_while_idle():
    from simulator.alarms import AlarmKind, Alarms
    alarms = Alarms(_screen_off_all_day())  # IDLE 1 h - 2 h, window 2 h - 2 h 05, ...
    assert alarms.fires_at(0.0, 30 * MIN, AlarmKind.EXACT) == 30 * MIN  # not dozing yet
    assert alarms.fires_at(HOUR, 90 * MIN, AlarmKind.EXACT) == 2 * HOUR
    assert alarms.fires_at(HOUR, 90 * MIN, AlarmKind.INEXACT) == 2 * HOUR
    assert alarms.fires_at(HOUR, 90 * MIN, AlarmKind.EXACT_ALLOW_WHILE_IDLE) == 90 * MIN
    assert alarms.fired(90 * MIN, AlarmKind.EXACT_ALLOW_WHILE_IDLE) == 10.0  # network grant
    # at most one allow-while-idle alarm per 9 min in deep IDLE
    assert alarms.fires_at(90 * MIN, 92 * MIN, AlarmKind.EXACT_ALLOW_WHILE_IDLE) == 99 * MIN


def test_inexact_alarms_join_other_wakeups_in_their_window():
    from simulator.alarms import AlarmKind, AlarmParams, Alarms
    app_on = DozeTimeline.from_screen_off_intervals(DozeParams.disabled(), [])
    alarms = Alarms(app_on, wakeups=[500.0, 1300.0])
    # asked at 0 for 1000 s: window [1000, 1750]; the 1300 s wake-up takes it along
    assert alarms.fires_at(0.0, 1000.0) == 1300.0
    assert alarms.fires_at(0.0, 1000.0, AlarmKind.EXACT) == 1000.0
    assert alarms.fires_at(0.0, 200.0) == 200.0  # window [200, 350]: nobody to join
    rare = Alarms(app_on, params=AlarmParams(bucket="rare"))
    rare.fired(100.0)
    assert rare.fires_at(100.0, 400.0, AlarmKind.EXACT) == 100.0 + 7200.0
