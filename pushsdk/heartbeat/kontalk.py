"""``kontalk``: Kontalk's adaptive ping as its Android app ships it (``AdaptiveServerPingManager``);
``kontalk-344``: the first design of issue 344 (halve on failure, ×1.5 on every success)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["Kontalk344Strategy", "KontalkShippedState", "KontalkState", "KontalkStrategy"]

START_INTERVAL = 30 * 60.0
MIN_INTERVAL = 5 * 60.0
MAX_INTERVAL = 30 * 60.0
GROWTH = 1.5
SHRINK = 0.5


@attrs.frozen
class KontalkState:
    """The interval in effect on this network, in seconds."""

    interval: float = START_INTERVAL


@register_strategy("kontalk-344")
@attrs.frozen
class Kontalk344Strategy(HeartbeatStrategy):
    """Multiplicative search between 5 and 30 minutes, remembered per network.

    Rules: a network seen for the first time starts at 30 min; every answered ping multiplies
    the interval by 1.5, every failed ping halves it, always kept within [5 min, 30 min]; the
    interval in effect is remembered per network and a new connection resumes from it.

    Source: ``kontalk/androidclient`` issue 344 ("Adaptive ping", 2015): "Starting from 30
    minutes, Kontalk will half that value if a ping fails, and it will multiply it by 1.5 if a
    ping succeed. Allowed range: 5 - 30 minutes", storing the values for reuse. Interpretation:
    Kontalk saved the interval in effect after every ping (its ``setPingAlarmInterval``
    preference), so that — not the largest value that ever worked — is what is remembered.
    Kontalk kept one value for all networks; the reference design keeps one per network, and
    so does this. Later Kontalk code (``AdaptiveServerPingManager``, after issue 397) waits
    longer before growing again and has a 90 s floor: that is ``kontalk``; this is the issue
    344 design, which keeps oscillating around a NAT timeout.
    """

    @property
    def name(self) -> str:
        return "kontalk-344"

    @property
    def max_interval(self) -> float:
        return MAX_INTERVAL

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> KontalkState:
        # A missing, foreign or damaged record is only a lost hint: start from scratch.
        if not memory or memory.get("strategy") != "kontalk-344":
            return KontalkState()
        interval = memory.get("interval")
        if not _is_finite_number(interval):
            return KontalkState()
        return KontalkState(_clamp(float(interval)))

    def interval(self, state: KontalkState, ctx: HeartbeatContext) -> float:
        return state.interval

    def on_success(self, state: KontalkState, ctx: HeartbeatContext) -> KontalkState:
        return KontalkState(_clamp(state.interval * GROWTH))

    def on_failure(self, state: KontalkState, ctx: HeartbeatContext) -> KontalkState:
        return KontalkState(_clamp(state.interval * SHRINK))

    def memory(self, state: KontalkState) -> Mapping[str, Any]:
        return {"strategy": "kontalk-344", "interval": state.interval}


def _clamp(seconds: float) -> float:
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


def _is_finite_number(value: object) -> TypeGuard[float]:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


#: ``MIN_ALARM_INTERVAL`` of ``AdaptiveServerPingManager``: 90 s.
SHIPPED_MIN_INTERVAL = 90.0


@attrs.frozen
class KontalkShippedState:
    """``AdaptiveServerPingManager``'s statics. ``interval`` and ``next_increase`` are the two
    preferences it saves (``setPingAlarmInterval``, ``setPingAlarmBackoff``); the other two
    are reset on every connection (``onConnected``)."""

    interval: float = START_INTERVAL  # sInterval
    next_increase: float = START_INTERVAL  # sNextIncrease: success span needed before growing
    backoff_saved: bool = False  # setPingAlarmBackoff has been called (else it defaults)
    last_success: float | None = None  # sLastSuccess (monotonic), None = 0 in Kontalk
    last_success_interval: float = 0.0  # sLastSuccessInterval: > 0 while trying an increase


@register_strategy("kontalk")
@attrs.frozen
class KontalkStrategy(HeartbeatStrategy):
    """Kontalk as its app ships it: 30 min to start, halve on failure, try ×1.5 only after a
    success span, fall back to the last good value when an increase fails, 90 s–30 min.

    Rules (``kontalk/androidclient``, ``org.kontalk.service.msgcenter.AdaptiveServerPingManager``):

    - ``onConnected``: the interval is the saved one (default ``INTERVAL_HALF_HOUR``), the
      span before the next increase is the saved backoff (default: the interval); the last
      success and the increase under trial are forgotten.
    - ``pingSuccess``: if an increase was being tried, it worked: the backoff becomes the
      interval now in force. Otherwise, if a ping already succeeded on this connection at
      least ``next_increase`` seconds ago, try an increase: remember the interval and use
      1.5 × it. Remember the time of this success.
    - ``pingFailed``: if an increase was being tried, go back to the remembered interval and
      make the backoff 1.5 × longer; otherwise halve the interval.
    - ``setupAlarmManager``: the interval is kept within [90 s, 30 min] and saved.

    Interpretations: Kontalk's statics are one set for the whole app; here they are kept per
    network, like every strategy's memory. The ping goes out ``interval`` after the last
    stanza received (Kontalk subtracts the time since the last stanza), which is the SDK's
    silence-based interval.
    """

    @property
    def name(self) -> str:
        return "kontalk"

    @property
    def max_interval(self) -> float:
        return MAX_INTERVAL

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> KontalkShippedState:
        if not memory or memory.get("strategy") != "kontalk":
            return KontalkShippedState()
        interval, backoff = memory.get("interval"), memory.get("next_increase")
        if not _is_finite_number(interval):
            return KontalkShippedState()
        interval = _clamp_shipped(float(interval))
        if backoff is None:  # getPingAlarmBackoff(context, sInterval): defaults to the interval
            return KontalkShippedState(interval=interval, next_increase=interval)
        if not _is_finite_number(backoff) or backoff < 0:
            return KontalkShippedState()
        return KontalkShippedState(interval=interval, next_increase=float(backoff),
                                   backoff_saved=True)

    def interval(self, state: KontalkShippedState, ctx: HeartbeatContext) -> float:
        return state.interval

    def on_success(self, state: KontalkShippedState, ctx: HeartbeatContext) -> KontalkShippedState:
        interval = state.interval
        if state.last_success_interval > 0:  # the increase worked: reset the backoff
            state = attrs.evolve(state, next_increase=state.interval, last_success_interval=0.0,
                                 backoff_saved=True)
        elif state.last_success is not None and ctx.now - state.last_success >= state.next_increase:
            state = attrs.evolve(state, last_success_interval=state.interval)
            interval = state.interval * GROWTH
        return attrs.evolve(state, last_success=ctx.now, interval=_clamp_shipped(interval))

    def on_failure(self, state: KontalkShippedState, ctx: HeartbeatContext) -> KontalkShippedState:
        if state.last_success_interval > 0:
            return attrs.evolve(state, interval=_clamp_shipped(state.last_success_interval),
                                next_increase=state.next_increase * 1.5,
                                last_success_interval=0.0, backoff_saved=True)
        return attrs.evolve(state, interval=_clamp_shipped(state.interval * SHRINK))

    def memory(self, state: KontalkShippedState) -> Mapping[str, Any]:
        return {"strategy": "kontalk", "interval": state.interval,
                "next_increase": state.next_increase if state.backoff_saved else None}


def _clamp_shipped(seconds: float) -> float:
    return min(MAX_INTERVAL, max(SHIPPED_MIN_INTERVAL, seconds))
