"""``courier``: Gojek Courier's adaptive keep-alive — a shrinking-step search for the optimum,
made on a dedicated probe connection while the main connection keeps the app's keep-alive."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy
from ._params import format_params, parse_params

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
    """How many trials of ``trial`` could not be made (no answer either way)."""
    optimal: bool = False
    optimal_failures: int = 0


def _minutes(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number of at least 1, got {value!r}")


_DEFAULTS = {"min": 60.0, "max": 540.0, "step": 120.0, "reset": 10, "keepalive": 30.0}


@register_strategy("courier")
@attrs.frozen
class CourierStrategy(HeartbeatStrategy):
    """Search the keep-alive on a dedicated probe connection, upwards from 1 min in steps of
    2 min, lowering the bound and halving the step on failure; the main connection keeps the
    app's keep-alive until the optimum is known, then uses it.

    Rules (values are whole minutes, as Courier's are; parameters are given in seconds):

    - **Two connections.** While no optimum is known for the network, the main connection
      pings at the app's configured ``keepalive`` (30 s in Courier's sample app) and a
      second, dedicated connection tries values (here: a probe connection per trial, opened
      when the main connection pings). Once the optimum is known the main connection uses
      it and no probe is made.
    - Bounds ``min``–``max`` (sample app: 1–9 min), ``step`` (2 min). A new network starts
      with ``last_success = lower - step``, so the first trial is the lower bound.
    - Next trial = ``min(last_success + step, upper)``. A success records the trial as
      ``last_success``; when it reaches the current upper bound that value is the optimum.
    - A failure at the lower bound makes the lower bound the optimum. Any other failure sets
      the upper bound to ``failed value - 1``; if ``last_success`` already reaches it, that is
      the optimum, otherwise the step halves (integer division, only while it is above 1).
    - 3 tries per value: a trial that could not be made (no probe connection) counts a try;
      the third treats the value as failed.
    - At the optimum, ``reset`` (10) failures of the main connection (not necessarily
      consecutive) forget everything learned on the network and the search starts again.
    - Everything above is kept per network (``ctx.network_key``).

    Source: ``gojek/courier-android``: ``MqttClient.initialiseAdaptiveMqttClient`` (the
    dedicated adaptive client with keep-alive ``upperBoundMinutes * 60``, created only while
    ``getOptimalKASecondsForCurrentNetwork()`` is 0), ``adaptive-keep-alive/.../``
    ``AdaptiveKeepAliveStateHandler.kt`` (``calculateNextKeepAlive``,
    ``updateKeepAliveSuccessState``, ``updateKeepAliveFailureState``,
    ``MAX_CURRENT_KEEPALIVE_FAILURE = 3``, ``onNetworkChanged``) and
    ``OptimalKeepAliveCalculator.kt`` (``getUnderTrialKeepAlive``,
    ``onOptimalKeepAliveFailure``); defaults from the sample app (``app/.../MainActivity.kt``:
    ``AdaptiveKeepAliveConfig(1, 9, 2, 10)``, ``KeepAlive(timeSeconds = 30)``).
    """

    lower: int = attrs.field(default=1, validator=_minutes)
    upper: int = attrs.field(default=9, validator=_minutes)
    step: int = attrs.field(default=2, validator=_minutes)
    reset_limit: int = attrs.field(default=10, validator=_minutes)
    keepalive: float = 30.0

    def __attrs_post_init__(self) -> None:
        if self.upper < self.lower:
            raise ValueError("the upper bound must not be below the lower bound")
        if not self.keepalive > 0:
            raise ValueError("keepalive must be > 0 s")

    @classmethod
    def from_spec(cls, arg: str | None) -> CourierStrategy:
        values = {**_DEFAULTS, **parse_params(arg, {"min": float, "max": float,
                                                    "step": float, "reset": int,
                                                    "keepalive": float})}
        whole = {}
        for key in ("min", "max", "step"):
            minutes, rest = divmod(values[key], 60.0)
            if rest or minutes < 1:
                raise ValueError(f"{key} must be a whole number of minutes (60, 120, ...) "
                                 f"as Courier's are, got {values[key]:g} s")
            whole[key] = int(minutes)
        return cls(whole["min"], whole["max"], whole["step"], int(values["reset"]) or 1,
                   float(values["keepalive"]))

    @property
    def name(self) -> str:
        values = {"min": self.lower * 60.0, "max": self.upper * 60.0, "step": self.step * 60.0,
                  "reset": self.reset_limit, "keepalive": self.keepalive}
        return format_params("courier", values, _DEFAULTS)

    @property
    def max_interval(self) -> float:
        return max(self.upper * 60.0, self.keepalive)

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> CourierState:
        return self._load(memory)

    def interval(self, state: CourierState, ctx: HeartbeatContext) -> float:
        return 60.0 * state.last_success if state.optimal else self.keepalive

    def probe(self, state: CourierState, ctx: HeartbeatContext) -> float | None:
        if state.optimal:
            return None
        return 60.0 * self._schedule(state).trial

    def on_probe(self, state: CourierState, ctx: HeartbeatContext,
                 ok: bool | None) -> CourierState:
        if state.optimal:
            return state
        state = self._schedule(state)  # the value this probe tried (or could not try)
        if ok is None:
            return attrs.evolve(state, tries=state.tries + 1) if state.tries + 1 < MAX_TRIES \
                else self._failed(state, state.trial)
        if not ok:
            return self._failed(state, state.trial)
        state = attrs.evolve(state, last_success=state.trial, tries=0)
        if state.last_success >= state.upper:
            state = attrs.evolve(state, optimal=True, last_success=state.upper)
        return state

    def on_failure(self, state: CourierState, ctx: HeartbeatContext) -> CourierState:
        if not state.optimal:
            return state  # the main connection's keep-alive is not under trial
        failures = state.optimal_failures + 1
        if failures >= self.reset_limit:
            return self._fresh()
        return attrs.evolve(state, optimal_failures=failures)

    def memory(self, state: CourierState) -> Mapping[str, Any]:
        return {
            "strategy": "courier",
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
        """The value under trial (``calculateNextKeepAlive``): ``min(last + step, upper)``."""
        value = min(state.last_success + state.step, state.upper)
        if value == state.trial:
            return state
        return attrs.evolve(state, trial=value, tries=0)

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
        if not memory or memory.get("strategy") != "courier":
            return self._fresh()
        fields = ("lower", "upper", "last_success", "current_upper", "step", "trial", "tries",
                  "optimal_failures")
        values = [memory.get(key) for key in fields]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or not (
            isinstance(memory.get("optimal"), bool)
        ):
            return self._fresh()  # damaged: only a lost hint
        lower, upper, last, current_upper, step, trial, tries, optimal_failures = cast(
            "list[int]", values)  # checked above
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
