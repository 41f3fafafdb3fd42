"""``courier``: Gojek Courier's adaptive keep-alive — a shrinking-step search for the optimum."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["CourierState", "CourierStrategy"]

#: ``MAX_CURRENT_KEEPALIVE_FAILURE``: schedulings of one value without an answer.
MAX_TRIES = 3


@attrs.frozen
class CourierState:
    """Courier's ``AdaptiveKeepAliveState`` for one network. Values are whole minutes."""

    last_success: int
    """The largest value that worked so far (``lower - step`` before the first success)."""
    upper: int
    """The current upper bound: one below the smallest value that failed."""
    step: int
    trial: int = -1
    """The value under trial (``-1``: none yet)."""
    tries: int = 0
    """How many more times ``trial`` was scheduled without an answer."""
    optimal: bool = False
    optimal_failures: int = 0


def _minutes(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number of at least 1, got {value!r}")


@register_strategy("courier")
@attrs.frozen
class CourierStrategy(HeartbeatStrategy):
    """Probe upwards from 1 min in steps of 2 min; on failure lower the bound and halve the step.

    Rules (all values whole minutes; defaults are those Courier's sample apps configure):

    - Bounds 1–9 min, step 2 min. A new network starts with ``last_success = lower - step``,
      so the first trial is the lower bound.
    - Next trial = ``min(last_success + step, upper)``. A success records the trial as
      ``last_success``; when it reaches the current upper bound that value is the *optimum*
      and is used from then on.
    - A failure at the lower bound makes the lower bound the optimum. Any other failure sets
      the upper bound to ``failed value - 1``; if ``last_success`` already reaches it, that is
      the optimum, otherwise the step halves (integer division, only while it is above 1).
    - 3 tries per value: scheduling the value under trial again without having had an answer
      counts a try; the fourth scheduling treats the value as failed.
    - At the optimum, 10 failures (not necessarily consecutive) forget everything learned on
      the network and the search starts again.
    - Everything above is kept per network (``ctx.network_key``).

    Source: ``gojek/courier-android``, ``adaptive-keep-alive/.../AdaptiveKeepAliveStateHandler.kt``
    and ``OptimalKeepAliveCalculator.kt``; defaults from its ``AdaptiveKeepAliveConfig`` in the
    sample apps (1, 9, 2, reset limit 10).

    Interpretations: Courier probes on a second, dedicated MQTT connection and reports failures
    of the main connection at the optimum separately (``onOptimalKeepAliveFailure``); here one
    connection does both — before the optimum a failure is a failed trial, after it an optimum
    failure. Courier schedules a value whenever it arms a ping (on connect and after each
    success); here that is :meth:`start` and :meth:`on_success`. Courier keeps the count of
    optimum failures in memory only; here it is remembered with the rest, because every failure
    ends the connection and the count must survive the reconnect.
    """

    lower: int = attrs.field(default=1, validator=_minutes)
    upper: int = attrs.field(default=9, validator=_minutes)
    step: int = attrs.field(default=2, validator=_minutes)
    reset_limit: int = attrs.field(default=10, validator=_minutes)

    def __attrs_post_init__(self) -> None:
        if self.upper < self.lower:
            raise ValueError("the upper bound must not be below the lower bound")

    @property
    def name(self) -> str:
        return "courier"

    @property
    def max_interval(self) -> float:
        return self.upper * 60.0

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> CourierState:
        return self._schedule(self._load(memory))

    def interval(self, state: CourierState, ctx: HeartbeatContext) -> float:
        return 60.0 * (state.last_success if state.optimal else state.trial)

    def on_success(self, state: CourierState, ctx: HeartbeatContext) -> CourierState:
        if state.optimal:
            return state
        state = attrs.evolve(state, last_success=state.trial, tries=0)
        if state.last_success == state.upper:
            state = attrs.evolve(state, optimal=True)
        return self._schedule(state)

    def on_failure(self, state: CourierState, ctx: HeartbeatContext) -> CourierState:
        if not state.optimal:
            return self._failed(state, state.trial)
        failures = state.optimal_failures + 1
        if failures >= self.reset_limit:
            return self._fresh()
        return attrs.evolve(state, optimal_failures=failures)

    def memory(self, state: CourierState) -> Mapping[str, Any]:
        return {
            "strategy": self.name,
            "lower": self.lower,
            "upper": self.upper,
            "last_success": state.last_success,
            "current_upper": state.upper,
            "step": state.step,
            "trial": state.trial,
            "tries": state.tries,
            "optimal": state.optimal,
            "optimal_failures": state.optimal_failures,
        }

    # -- the rules ---------------------------------------------------------------------------

    def _fresh(self) -> CourierState:
        return CourierState(last_success=self.lower - self.step, upper=self.upper, step=self.step)

    def _schedule(self, state: CourierState) -> CourierState:
        """Arm the next ping: pick the value to try (``getUnderTrialKeepAlive``)."""
        # Terminates: every failure below either finds the optimum or halves a step > 1.
        while not state.optimal:
            value = min(state.last_success + state.step, state.upper)
            if value == state.trial:
                state = attrs.evolve(state, tries=state.tries + 1)
            else:
                state = attrs.evolve(state, trial=value, tries=0)
            if state.tries < MAX_TRIES:
                break
            state = self._failed(state, value)
        return state

    def _failed(self, state: CourierState, value: int) -> CourierState:
        """``value`` did not keep the connection alive (``updateKeepAliveFailureState``)."""
        if value == self.lower:
            return attrs.evolve(state, optimal=True, last_success=self.lower, tries=0)
        upper = value - 1
        if state.last_success >= upper:
            return attrs.evolve(state, upper=upper, optimal=True, tries=0)
        if state.step > 1:
            return attrs.evolve(state, upper=upper, step=state.step // 2, tries=0)
        # Courier changes nothing here. Unreachable with a step of 1 (the trial is then at most
        # last_success + 1); the reset keeps _schedule finite whatever the record says.
        return attrs.evolve(state, tries=0)

    def _load(self, memory: Mapping[str, Any] | None) -> CourierState:
        if not memory or memory.get("strategy") != self.name:
            return self._fresh()
        fields = ("lower", "upper", "last_success", "current_upper", "step", "trial", "tries",
                  "optimal_failures")
        values = [memory.get(key) for key in fields]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or not (
            isinstance(memory.get("optimal"), bool)
        ):
            return self._fresh()  # damaged: only a lost hint
        lower, upper, last, current_upper, step, trial, tries, optimal_failures = values
        optimal = memory["optimal"]
        if step < 1 or tries < 0 or optimal_failures < 0 or not (
            (self.lower if optimal else self.lower - step) <= last <= self.upper
            and self.lower <= current_upper <= self.upper
        ):
            return self._fresh()
        state = CourierState(last, current_upper, step, trial, tries, optimal, optimal_failures)
        # Like Courier, a record learned under other bounds is re-searched from its last success.
        if upper != self.upper:
            state = attrs.evolve(state, upper=self.upper, optimal=False, step=self.step)
        if lower != self.lower:
            state = attrs.evolve(state, optimal=False, step=self.step)
        return state
