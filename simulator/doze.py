"""Android Doze and the handset's screen/app state over a run: pure models, no trio.

:class:`DozeSchedule` is one screen-off stretch as AOSP ``DeviceIdleController`` steps it:
the device turns INACTIVE when the screen goes off, deep IDLE starts after
``inactive_timeout + idle_after_inactive`` (stationary, unplugged), and IDLE alternates with
maintenance windows whose lengths grow geometrically up to a cap (60 min ×2 up to 6 h; 5 min
×2 up to 10 min). Light Doze (optional) cycles from shortly after screen-off until deep IDLE
takes over. The app's network is blocked in IDLE and LIGHT_IDLE, allowed in windows and
whenever the screen is on. Constants, sources and approximations: docs/scenarios.md.

:class:`AppStateTimeline` is when the screen is on and whether this app is in front, over
the whole run, generated from a seed. :class:`DozeTimeline` puts one DozeSchedule on every
screen-off stretch of a timeline, which is what a virtual handset asks.

All times are virtual seconds since the start of the run.
"""
from __future__ import annotations

import bisect
import enum
import functools
import math
import random
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

INF = math.inf
DAY = 86400.0


class DozeState(enum.Enum):
    ACTIVE = "active"  # screen on (Doze does not apply)
    INACTIVE = "inactive"  # screen off, not dozing yet: network allowed
    LIGHT_IDLE = "light_idle"  # light Doze: network blocked
    LIGHT_MAINTENANCE = "light_maintenance"
    IDLE = "idle"  # deep Doze: network blocked
    MAINTENANCE = "maintenance"  # deep Doze maintenance window


BLOCKED_STATES = frozenset({DozeState.LIGHT_IDLE, DozeState.IDLE})
MAINTENANCE_STATES = frozenset({DozeState.LIGHT_MAINTENANCE, DozeState.MAINTENANCE})


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"doze.{attribute.name} must be a finite number ≥ 0, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"doze.{attribute.name} must be a finite number > 0, got {value!r}")


def _factor(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value >= 1 and math.isfinite(value)):
        raise ValueError(f"doze.{attribute.name} must be ≥ 1, got {value!r}")


_seconds = dict(converter=float, validator=_non_negative)
_duration = dict(converter=float, validator=_positive)
_growth = dict(converter=float, validator=_factor)


@attrs.frozen
class DozeParams:
    """DeviceIdleController constants (AOSP defaults; all durations in seconds).

    ``deep``: deep Doze happens (the phone lies still, unplugged, screen off).
    ``light``: light Doze happens too (off by default, see docs/scenarios.md).
    ``sensing``: time spent in SENSING/LOCATING before IDLE (AOSP allows up to 4 min + 30 s;
    0 means the no-motion verdict is immediate).
    ``high_priority_grace``: network access granted to the app by a high-priority push while
    dozing (FCM-style temporary allowlist).
    """

    deep: bool = True
    light: bool = False
    inactive_timeout: float = attrs.field(default=1800.0, **_seconds)
    idle_after_inactive: float = attrs.field(default=1800.0, **_seconds)
    sensing: float = attrs.field(default=0.0, **_seconds)
    idle_timeout: float = attrs.field(default=3600.0, **_duration)
    idle_factor: float = attrs.field(default=2.0, **_growth)
    max_idle_timeout: float = attrs.field(default=21600.0, **_duration)
    maintenance: float = attrs.field(default=300.0, **_duration)
    maintenance_factor: float = attrs.field(default=2.0, **_growth)
    max_maintenance: float = attrs.field(default=600.0, **_duration)
    light_after_inactive: float = attrs.field(default=60.0, **_seconds)
    light_idle_timeout: float = attrs.field(default=300.0, **_duration)
    light_idle_factor: float = attrs.field(default=2.0, **_growth)
    light_max_idle_timeout: float = attrs.field(default=900.0, **_duration)
    light_maintenance: float = attrs.field(default=60.0, **_duration)
    high_priority_grace: float = attrs.field(default=10.0, **_seconds)
    early_exit: bool = True
    min_deep_maintenance: float = attrs.field(default=30.0, **_seconds)
    min_light_maintenance: float = attrs.field(default=5.0, **_seconds)
    maintenance_work: float = attrs.field(default=30.0, **_seconds)

    def __attrs_post_init__(self) -> None:
        for first, cap in (
            ("idle_timeout", "max_idle_timeout"),
            ("maintenance", "max_maintenance"),
            ("light_idle_timeout", "light_max_idle_timeout"),
        ):
            if getattr(self, cap) < getattr(self, first):
                raise ValueError(f"doze.{cap} must be ≥ doze.{first}")

    @classmethod
    def disabled(cls) -> DozeParams:
        """No Doze at all: the network is always allowed."""
        return cls(deep=False, light=False)

    @property
    def enabled(self) -> bool:
        return self.deep or self.light

    def window(self, budget: float, minimum: float) -> float:
        """Length of a maintenance window whose budget is ``budget``: the whole budget, or
        with ``early_exit`` (AOSP) until the pending work is done (``maintenance_work``),
        but at least ``minimum`` (MIN_DEEP/LIGHT_MAINTENANCE_TIME)."""
        if not self.early_exit:
            return budget
        return min(budget, max(minimum, self.maintenance_work))

    @property
    def deep_idle_delay(self) -> float:
        """Seconds from screen-off to the first deep IDLE (stationary, unplugged)."""
        return self.inactive_timeout + self.idle_after_inactive + self.sensing


@attrs.frozen
class Phase:
    """``state`` holds over ``[start, end)``."""

    start: float
    end: float
    state: DozeState

    @property
    def network_allowed(self) -> bool:
        return self.state not in BLOCKED_STATES


@functools.lru_cache(maxsize=64)
def _cycle_shape(
    idle: float, idle_factor: float, idle_cap: float,
    window: float, window_factor: float, window_cap: float,
    idle_state: DozeState, window_state: DozeState,
) -> tuple[tuple[tuple[DozeState, float], ...], tuple[tuple[DozeState, float], ...]]:
    """(growing prefix, repeating pair) of an IDLE/window alternation.

    AOSP steps each length as ``next = min(cap, current × factor)``, never below the initial
    value; once neither length grows any more the pair repeats for ever.
    """
    prefix: list[tuple[DozeState, float]] = []
    while True:
        next_idle = max(min(idle_cap, idle * idle_factor), idle)
        next_window = max(min(window_cap, window * window_factor), window)
        if (next_idle, next_window) == (idle, window):
            return tuple(prefix), ((idle_state, idle), (window_state, window))
        prefix += [(idle_state, idle), (window_state, window)]
        idle, window = next_idle, next_window


@attrs.frozen
class _Cycle:
    """IDLE/window alternation from ``start``: a growing prefix, then a repeating pair."""

    start: float
    prefix: tuple[tuple[DozeState, float], ...]
    period: tuple[tuple[DozeState, float], ...]

    @classmethod
    def geometric(
        cls, start: float, idle: float, idle_factor: float, idle_cap: float,
        window: float, window_factor: float, window_cap: float,
        idle_state: DozeState, window_state: DozeState,
    ) -> _Cycle:
        prefix, period = _cycle_shape(
            idle, idle_factor, idle_cap, window, window_factor, window_cap, idle_state, window_state
        )
        return cls(start, prefix, period)

    def phase_at(self, t: float) -> Phase:
        begin = self.start
        for state, length in self.prefix:
            if t < begin + length:
                return Phase(begin, begin + length, state)
            begin += length
        period = sum(length for _, length in self.period)
        begin += math.floor((t - begin) / period) * period
        for state, length in self.period:
            if t < begin + length:
                return Phase(begin, begin + length, state)
            begin += length
        # floating-point edge: t sits exactly on the end of the period
        state, length = self.period[0]
        return Phase(begin, begin + length, state)


@attrs.frozen
class DozeSchedule:
    """Doze during one screen-off stretch ``[screen_off_at, screen_on_at)``.

    Before ``screen_off_at`` and from ``screen_on_at`` on the state is ACTIVE. ``grants``
    are ``[start, end)`` intervals of network access given by high-priority pushes.
    """

    params: DozeParams
    screen_off_at: float
    screen_on_at: float = INF
    grants: tuple[tuple[float, float], ...] = ()
    _deep: _Cycle | None = attrs.field(init=False, repr=False, eq=False)
    _light: _Cycle | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.screen_on_at >= self.screen_off_at:
            raise ValueError("screen_on_at must not be before screen_off_at")
        p = self.params
        deep = light = None
        if p.deep:
            if p.early_exit:  # every window ends once the work is done: a constant length
                window = p.window(p.maintenance, p.min_deep_maintenance)
                windows = (window, 1.0, window)
            else:
                windows = (p.maintenance, p.maintenance_factor, p.max_maintenance)
            deep = _Cycle.geometric(
                self.screen_off_at + p.deep_idle_delay,
                p.idle_timeout, p.idle_factor, p.max_idle_timeout, *windows,
                DozeState.IDLE, DozeState.MAINTENANCE,
            )
        if p.light:
            window = p.window(p.light_maintenance, p.min_light_maintenance)
            light = _Cycle.geometric(
                self.screen_off_at + p.light_after_inactive,
                p.light_idle_timeout, p.light_idle_factor, p.light_max_idle_timeout,
                window, 1.0, window,
                DozeState.LIGHT_IDLE, DozeState.LIGHT_MAINTENANCE,
            )
        object.__setattr__(self, "_deep", deep)
        object.__setattr__(self, "_light", light)

    @classmethod
    def from_screen_off(
        cls, t_off: float, params: DozeParams, screen_on_at: float = INF
    ) -> DozeSchedule:
        """The schedule of a screen turned off at ``t_off`` (and back on at ``screen_on_at``)."""
        return cls(params, t_off, screen_on_at)

    @property
    def deep_idle_start(self) -> float:
        """When deep IDLE begins (inf without deep Doze or if the screen comes on first)."""
        start = self._deep.start if self._deep is not None else INF
        return start if start < self.screen_on_at else INF

    def screen_on(self, t: float) -> DozeSchedule:
        """The same schedule ended by the screen coming on at ``t`` (Doze exits at once)."""
        return attrs.evolve(self, screen_on_at=max(self.screen_off_at, min(t, self.screen_on_at)))

    def with_grant(self, t: float, duration: float | None = None) -> DozeSchedule:
        """A high-priority push at ``t`` grants network access for ``high_priority_grace`` s."""
        length = self.params.high_priority_grace if duration is None else duration
        if length <= 0:
            return self
        return attrs.evolve(self, grants=tuple(sorted(self.grants + ((t, t + length),))))

    # -- queries -------------------------------------------------------------------------
    def phase_at(self, now: float) -> Phase:
        """The Doze phase containing ``now`` (without grants)."""
        if now < self.screen_off_at:
            return Phase(-INF, self.screen_off_at, DozeState.ACTIVE)
        if now >= self.screen_on_at:
            return Phase(self.screen_on_at, INF, DozeState.ACTIVE)
        deep_start = self._deep.start if self._deep is not None else INF
        if now >= deep_start:
            phase = self._deep.phase_at(now)
            end = phase.end
        elif self._light is not None and now >= self._light.start:
            phase = self._light.phase_at(now)
            end = min(phase.end, deep_start)  # deep IDLE overrides light Doze
        else:
            light_start = self._light.start if self._light is not None else INF
            phase = Phase(self.screen_off_at, min(light_start, deep_start), DozeState.INACTIVE)
            end = phase.end
        if end > self.screen_on_at or end != phase.end:
            phase = Phase(phase.start, min(end, self.screen_on_at), phase.state)
        return phase

    def state(self, now: float) -> DozeState:
        return self.phase_at(now).state

    def in_grant(self, now: float) -> bool:
        return any(start <= now < end for start, end in self.grants)

    def network_allowed(self, now: float) -> bool:
        """May the app use the network at ``now``?"""
        return self.phase_at(now).network_allowed or self.in_grant(now)

    def in_maintenance(self, now: float) -> bool:
        return self.phase_at(now).state in MAINTENANCE_STATES

    def next_change(self, now: float) -> float:
        """The next time ``network_allowed`` flips after ``now`` (inf if it never does)."""
        allowed = self.network_allowed(now)
        t = now
        while True:
            t = min([self.phase_at(t).end] + [b for g in self.grants for b in g if b > t])
            if t == INF or self.network_allowed(t) != allowed:
                return t

    def phases(self, start: float, end: float) -> Iterator[Phase]:
        """The phases overlapping ``[start, end)``, in order (grants not included)."""
        t = start
        while t < end:
            phase = self.phase_at(t)
            yield phase
            t = phase.end

    def maintenance_windows(self, end: float) -> list[Phase]:
        """Maintenance windows (light and deep) starting before ``end``."""
        return [p for p in self.phases(self.screen_off_at, end) if p.state in MAINTENANCE_STATES]


# ---------------------------------------------------------------------------------------
# Screen and app state over a run


class AppState(enum.Enum):
    FOREGROUND = "foreground"  # screen on, this app in front
    BACKGROUND = "background"  # screen on, another app in front
    INACTIVE = "inactive"  # screen off


AppModelKind = Literal["user", "background", "foreground"]
APP_MODEL_KINDS: tuple[str, ...] = ("user", "background", "foreground")


@attrs.frozen
class AppPeriod:
    start: float
    end: float
    state: AppState


@attrs.frozen
class AppStateModel:
    """How a handset's user behaves (assumptions, docs/scenarios.md).

    ``kind="user"``: screen sessions at random times while awake — about ``opens_per_day``
    of them, exponential lengths with mean ``mean_session_s`` (at least ``min_session_s``),
    this app in front in a ``foreground_share`` of them — and a night with the screen off
    from ``night_start`` to ``night_end`` (seconds after midnight, each end jittered by
    U(±``night_jitter_s``) per night).
    ``kind="background"``: screen off for the whole run. ``kind="foreground"``: this app on
    screen for the whole run.
    """

    kind: AppModelKind = "user"
    opens_per_day: float = 50.0
    mean_session_s: float = 180.0
    min_session_s: float = 10.0
    foreground_share: float = 0.2
    night_start: float = 23 * 3600.0
    night_end: float = 7 * 3600.0
    night_jitter_s: float = 1800.0

    def __attrs_post_init__(self) -> None:
        if self.kind not in APP_MODEL_KINDS:
            raise ValueError(f"app.model must be one of {APP_MODEL_KINDS}, got {self.kind!r}")
        for name in ("opens_per_day", "mean_session_s", "min_session_s", "night_jitter_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"app.{name} must be a finite number ≥ 0, got {value!r}")
        if not 0 <= self.foreground_share <= 1:
            raise ValueError("app.foreground_share must be between 0 and 1")
        for name in ("night_start", "night_end"):
            if not 0 <= getattr(self, name) < DAY:
                raise ValueError(f"app.{name} must be a time of day (0 ≤ s < 86400)")
        if not self.night_length > 2 * self.night_jitter_s:
            raise ValueError("app.night_jitter_s must be less than half the night")
        if not DAY - self.night_length > 2 * self.night_jitter_s:
            raise ValueError("app.night_jitter_s must be less than half the waking day")

    @property
    def night_length(self) -> float:
        return (self.night_end - self.night_start) % DAY


@attrs.frozen
class AppStateTimeline:
    """Contiguous periods covering ``[0, duration)``; the last state continues afterwards."""

    periods: tuple[AppPeriod, ...]
    _starts: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.periods:
            raise ValueError("a timeline needs at least one period")
        object.__setattr__(self, "_starts", tuple(p.start for p in self.periods))

    @classmethod
    def constant(cls, state: AppState, duration: float) -> AppStateTimeline:
        return cls((AppPeriod(0.0, duration, state),))

    @classmethod
    def generate(
        cls, model: AppStateModel, duration: float, start_of_day: float, rng: random.Random
    ) -> AppStateTimeline:
        """A timeline for a run of ``duration`` s starting ``start_of_day`` s after midnight."""
        if model.kind == "background":
            return cls.constant(AppState.INACTIVE, duration)
        if model.kind == "foreground":
            return cls.constant(AppState.FOREGROUND, duration)
        sessions = _user_sessions(model, start_of_day, start_of_day + duration, rng)
        return cls.from_sessions(
            [(s - start_of_day, e - start_of_day, state) for s, e, state in sessions], duration
        )

    @classmethod
    def from_sessions(
        cls, sessions: Sequence[tuple[float, float, AppState]], duration: float
    ) -> AppStateTimeline:
        """Screen-on sessions ``(start, end, state)`` (sorted, not overlapping); INACTIVE between."""
        periods: list[AppPeriod] = []
        t = 0.0
        for start, end, state in sessions:
            start, end = max(start, t), min(end, duration)
            if end <= start:
                continue
            if start > t:
                periods.append(AppPeriod(t, start, AppState.INACTIVE))
            periods.append(AppPeriod(start, end, state))
            t = end
        if t < duration or not periods:
            periods.append(AppPeriod(t, max(duration, t), AppState.INACTIVE))
        merged = [periods[0]]
        for period in periods[1:]:
            if period.state is merged[-1].state:
                merged[-1] = AppPeriod(merged[-1].start, period.end, period.state)
            else:
                merged.append(period)
        return cls(tuple(merged))

    @property
    def duration(self) -> float:
        return self.periods[-1].end

    def period_at(self, now: float) -> AppPeriod:
        index = max(0, bisect.bisect_right(self._starts, now) - 1)
        period = self.periods[index]
        return attrs.evolve(period, end=INF) if index == len(self.periods) - 1 else period

    def state_at(self, now: float) -> AppState:
        return self.period_at(now).state

    def screen_on(self, now: float) -> bool:
        return self.state_at(now) is not AppState.INACTIVE

    def next_change(self, now: float) -> float:
        """When the state changes next (inf after the last change)."""
        return self.period_at(now).end

    def since_foreground(self, now: float) -> float:
        """Seconds since this app was last in front (0 while it is; inf if never)."""
        current = self.period_at(now)
        if current.state is AppState.FOREGROUND:
            return 0.0
        index = max(0, bisect.bisect_right(self._starts, now) - 1)
        for period in reversed(self.periods[:index]):
            if period.state is AppState.FOREGROUND:
                return now - period.end
        return INF

    def screen_off_intervals(self) -> list[tuple[float, float]]:
        """``(off, on)`` for every INACTIVE period; ``on`` is inf for a trailing one."""
        last = len(self.periods) - 1
        return [
            (p.start, INF if i == last else p.end)
            for i, p in enumerate(self.periods)
            if p.state is AppState.INACTIVE
        ]

    def screen_sessions(self) -> int:
        """How many times the screen comes on during the run (a session at t = 0 counts)."""
        count, screen_was_on = 0, False
        for period in self.periods:
            screen_is_on = period.state is not AppState.INACTIVE
            count += screen_is_on and not screen_was_on
            screen_was_on = screen_is_on
        return count


def _user_sessions(
    model: AppStateModel, begin: float, end: float, rng: random.Random
) -> list[tuple[float, float, AppState]]:
    """Screen sessions in absolute seconds since midnight of day 0, covering [begin, end)."""
    first_day = math.floor(begin / DAY) - 1
    last_day = math.floor(end / DAY) + 1
    jitter = model.night_jitter_s
    nights = []
    for day in range(first_day, last_day + 1):
        sleep = day * DAY + model.night_start + rng.uniform(-jitter, jitter)
        wake = day * DAY + model.night_start + model.night_length + rng.uniform(-jitter, jitter)
        nights.append((sleep, wake))
    awake_per_day = DAY - model.night_length
    sessions: list[tuple[float, float, AppState]] = []
    if model.opens_per_day <= 0:
        return sessions
    # Screen-off gaps are exponential, sized so that about opens_per_day sessions fit in a day.
    mean_gap = max(awake_per_day / model.opens_per_day - model.mean_session_s, 1.0)
    for (_, wake), (sleep, _) in zip(nights, nights[1:]):
        if sleep <= begin or wake >= end:
            continue  # this waking day lies outside the run
        t = wake + rng.expovariate(1.0 / mean_gap)
        while t < sleep:
            length = max(model.min_session_s, rng.expovariate(1.0 / model.mean_session_s)
                         if model.mean_session_s > 0 else 0.0)
            state = (AppState.FOREGROUND if rng.random() < model.foreground_share
                     else AppState.BACKGROUND)
            stop = min(t + length, sleep)
            if stop > begin and t < end:
                sessions.append((t, stop, state))
            t = stop + rng.expovariate(1.0 / mean_gap)
    return sessions


# ---------------------------------------------------------------------------------------
# Doze over a whole run


@attrs.frozen
class DozeTimeline:
    """One :class:`DozeSchedule` per screen-off stretch of a run."""

    params: DozeParams
    schedules: tuple[DozeSchedule, ...] = ()
    _offs: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_offs", tuple(s.screen_off_at for s in self.schedules))

    @classmethod
    def from_screen_off_intervals(
        cls, params: DozeParams, intervals: Sequence[tuple[float, float]]
    ) -> DozeTimeline:
        if not params.enabled:
            return cls(params)
        return cls(params, tuple(DozeSchedule(params, off, on) for off, on in intervals))

    @classmethod
    def from_app_timeline(cls, timeline: AppStateTimeline, params: DozeParams) -> DozeTimeline:
        return cls.from_screen_off_intervals(params, timeline.screen_off_intervals())

    def schedule_at(self, now: float) -> DozeSchedule | None:
        """The schedule whose screen-off stretch contains ``now``, if any."""
        index = bisect.bisect_right(self._offs, now) - 1
        if index >= 0 and now < self.schedules[index].screen_on_at:
            return self.schedules[index]
        return None

    def state(self, now: float) -> DozeState:
        schedule = self.schedule_at(now)
        return schedule.state(now) if schedule is not None else DozeState.ACTIVE

    def network_allowed(self, now: float) -> bool:
        schedule = self.schedule_at(now)
        return schedule is None or schedule.network_allowed(now)

    def in_maintenance(self, now: float) -> bool:
        schedule = self.schedule_at(now)
        return schedule is not None and schedule.in_maintenance(now)

    def next_change(self, now: float) -> float:
        """The next time ``network_allowed`` flips after ``now`` (inf if it never does)."""
        allowed = self.network_allowed(now)
        t = now
        while True:
            schedule = self.schedule_at(t)
            if schedule is not None:
                t = min(schedule.next_change(t), schedule.screen_on_at)
            else:
                index = bisect.bisect_right(self._offs, t)
                t = self._offs[index] if index < len(self._offs) else INF
            if t == INF or self.network_allowed(t) != allowed:
                return t

    def with_grant(self, now: float, duration: float | None = None) -> DozeTimeline:
        """Record a high-priority push's network grant at ``now`` (no-op with the screen on)."""
        index = bisect.bisect_right(self._offs, now) - 1
        if index < 0 or now >= self.schedules[index].screen_on_at:
            return self
        schedules = list(self.schedules)
        schedules[index] = schedules[index].with_grant(now, duration)
        return attrs.evolve(self, schedules=tuple(schedules))

    def maintenance_windows(self, end: float) -> list[Phase]:
        """Every maintenance window (light and deep) starting before ``end``, in order."""
        windows: list[Phase] = []
        for schedule in self.schedules:
            if schedule.screen_off_at >= end:
                break
            windows += [w for w in schedule.maintenance_windows(min(end, schedule.screen_on_at))
                        if w.start < end]
        return windows

    def defer(self, t: float) -> float:
        """``t`` if the network is allowed then, else the time it next becomes allowed."""
        return t if self.network_allowed(t) else self.next_change(t)


# ---------------------------------------------------------------------------------------
# Alarms: when a timer an app asks AlarmManager for actually fires


class AlarmKind(enum.Enum):
    """How an app set its alarm (android.app.AlarmManager)."""

    INEXACT = "inexact"  # set(): batched with other alarms, deferred out of Doze
    EXACT = "exact"  # setExact(): on time, but deferred out of Doze
    ALLOW_WHILE_IDLE = "allow_while_idle"  # setAndAllowWhileIdle(): inexact, fires in Doze
    EXACT_ALLOW_WHILE_IDLE = "exact_allow_while_idle"  # setExactAndAllowWhileIdle()


#: App Standby bucket -> minimum delay between two alarms of the app (AlarmManagerService,
#: Android 9, DEFAULT_APP_STANDBY_DELAYS: active 0, working set 6 min, frequent 30 min,
#: rare 2 h).
STANDBY_DELAYS: dict[str, float] = {
    "active": 0.0, "working_set": 360.0, "frequent": 1800.0, "rare": 7200.0,
}


@attrs.frozen
class AlarmParams:
    """AlarmManagerService constants (AOSP defaults, seconds; docs/scenarios.md §4).

    ``allow_while_idle_long``: an app's allow-while-idle alarms fire at most once per this
    long in deep Doze (ALLOW_WHILE_IDLE_LONG_TIME, 9 min); ``allow_while_idle_short`` in
    light Doze (ALLOW_WHILE_IDLE_SHORT_TIME, 5 s). ``allow_while_idle_grant``: network
    access the app gets when one fires (ALLOW_WHILE_IDLE_WHITELIST_DURATION, 10 s).
    ``window_factor``: an inexact alarm may be batched up to this fraction of its delay
    late (AlarmManager's 75 % window); delays under ``min_fuzzable`` (10 s) are exact.
    ``bucket``: the app's App Standby bucket (``STANDBY_DELAYS``).
    """

    allow_while_idle_long: float = 540.0
    allow_while_idle_short: float = 5.0
    allow_while_idle_grant: float = 10.0
    window_factor: float = 0.75
    min_fuzzable: float = 10.0
    bucket: str = "active"

    def __attrs_post_init__(self) -> None:
        if self.bucket not in STANDBY_DELAYS:
            raise ValueError(f"bucket must be one of {', '.join(STANDBY_DELAYS)}, got {self.bucket!r}")


class Alarms:
    """One app's AlarmManager on one handset: ``fires_at(set_at, trigger_at, kind)`` says
    when an alarm asked for ``trigger_at`` at ``set_at`` really fires; ``fired(t, kind)``
    records a delivery (the allow-while-idle and standby limits count from deliveries).

    The model, pure given the handset's Doze timeline and other apps' wake-ups:

    - **batching** (inexact kinds): the alarm joins the first other wake-up of the device
      (another app's alarm or job; the day's radio activity is their trace) inside its window
      ``[trigger, trigger + 0.75 × (trigger − set_at)]``, else fires at ``trigger``;
    - **Doze**: while the device is in IDLE or LIGHT_IDLE, EXACT and INEXACT alarms wait for
      the next maintenance window or the end of Doze; allow-while-idle alarms fire, but at
      most one per ``allow_while_idle_long`` (deep) / ``_short`` (light) per app;
    - **App Standby**: outside Doze, two alarms of the app are at least the bucket's delay
      apart.
    """

    __slots__ = ("doze", "wakeups", "params", "_last", "_last_allow_while_idle")

    def __init__(self, doze: DozeTimeline, wakeups: Sequence[float] = (),
                 params: AlarmParams = AlarmParams()) -> None:
        self.doze = doze
        self.wakeups = tuple(sorted(wakeups))
        self.params = params
        self._last = -INF
        self._last_allow_while_idle = -INF

    def fires_at(self, set_at: float, trigger_at: float,
                 kind: AlarmKind = AlarmKind.INEXACT) -> float:
        p = self.params
        t = max(trigger_at, set_at)
        if kind in (AlarmKind.INEXACT, AlarmKind.ALLOW_WHILE_IDLE):
            t = self._batched(set_at, t)
        t = max(t, self._last + STANDBY_DELAYS[p.bucket])
        if kind in (AlarmKind.ALLOW_WHILE_IDLE, AlarmKind.EXACT_ALLOW_WHILE_IDLE):
            state = self.doze.state(t)
            if state in BLOCKED_STATES:
                gap = (p.allow_while_idle_long if state is DozeState.IDLE
                       else p.allow_while_idle_short)
                return max(t, self._last_allow_while_idle + gap)
            return t
        return self.doze.defer(t)

    def _batched(self, set_at: float, t: float) -> float:
        delay = t - set_at
        if delay < self.params.min_fuzzable:
            return t
        window_end = t + self.params.window_factor * delay
        i = bisect.bisect_left(self.wakeups, t)
        if i < len(self.wakeups) and self.wakeups[i] <= window_end:
            return self.wakeups[i]
        return t

    def fired(self, t: float, kind: AlarmKind = AlarmKind.INEXACT) -> float:
        """Record a delivery at ``t``; returns the seconds of network access it grants
        while the app's network is blocked (allow-while-idle in Doze), else 0."""
        self._last = t
        if kind in (AlarmKind.ALLOW_WHILE_IDLE, AlarmKind.EXACT_ALLOW_WHILE_IDLE):
            if not self.doze.network_allowed(t):
                self._last_allow_while_idle = t
                return self.params.allow_while_idle_grant
        return 0.0
