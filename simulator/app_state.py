"""The handset's screen and app state over a run: a pure, seeded model, no trio.

:class:`AppStateTimeline` says, for every moment of the run, whether the screen is on and
whether this app is in front (:class:`AppState`): a user model with a night and Poisson
screen sessions (:class:`AppStateModel`, kind ``"user"``), or a constant state. Doze
(:mod:`simulator.doze`) starts from its screen-off stretches; strategies such as Mars read
the state. Constants and sources: docs/scenarios.md §5.

All times are virtual seconds since the start of the run.
"""
from __future__ import annotations

import bisect
import enum
import math
import random
from collections.abc import Sequence
from typing import Literal

import attrs

INF = math.inf
DAY = 86400.0


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
        """Screen-on sessions ``(start, end, state)`` (sorted, not overlapping); INACTIVE
        between."""
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


