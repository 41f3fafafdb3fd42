"""AlarmManager: when a timer an app asks for actually fires, given the handset's Doze.

:class:`Alarms` models batching of inexact alarms with other apps' wake-ups, deferral out
of Doze, allow-while-idle alarms (at most once per 9 min in deep Doze, with a 10 s network
grant) and App Standby delays — pure, given a :class:`~simulator.doze.DozeTimeline` and the
wake-up times of other apps. ``VirtualHandset.alarms`` is one on the handset's day.
Constants and sources: docs/scenarios.md §4.
"""
from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence

import attrs

from simulator.doze import BLOCKED_STATES, INF, DozeState, DozeTimeline


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
            raise ValueError(f"bucket must be one of {', '.join(STANDBY_DELAYS)}, "
                             f"got {self.bucket!r}")


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
