"""Android Doze over a run: pure models, no trio.

:class:`DozeSchedule` is one screen-off stretch as AOSP ``DeviceIdleController`` steps it:
the device turns INACTIVE when the screen goes off, deep IDLE starts after
``inactive_timeout + idle_after_inactive`` (stationary, unplugged), and IDLE alternates with
maintenance windows whose lengths grow geometrically up to a cap (60 min ×2 up to 6 h; 5 min
×2 up to 10 min). Light Doze (optional) cycles from shortly after screen-off until deep IDLE
takes over. The app's network is blocked in IDLE and LIGHT_IDLE, allowed in windows and
whenever the screen is on. Constants, sources and approximations: docs/scenarios.md.

:class:`DozeTimeline` puts one DozeSchedule on every screen-off stretch of the run (from the
handset's :class:`~simulator.app_state.AppStateTimeline`), which is what a virtual handset
asks. The screen/app state model is :mod:`simulator.app_state`, AlarmManager
:mod:`simulator.alarms`.

All times are virtual seconds since the start of the run.
"""
from __future__ import annotations

import bisect
import enum
import functools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from simulator.app_state import AppStateTimeline

INF = math.inf


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


# Keyword arguments of attrs.field, typed Any so that mypy's attrs plugin takes the annotation.
_seconds: dict[str, Any] = dict(converter=float, validator=_non_negative)
_duration: dict[str, Any] = dict(converter=float, validator=_positive)
_growth: dict[str, Any] = dict(converter=float, validator=_factor)


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
        deep = self._deep
        deep_start = deep.start if deep is not None else INF
        if deep is not None and now >= deep_start:
            phase = deep.phase_at(now)
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


