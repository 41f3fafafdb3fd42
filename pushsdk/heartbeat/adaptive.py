"""``adaptive``: this project's heartbeat — find each network's NAT timeout fast, keep it,
and ride on radio wake-ups that other apps pay for.

Why (docs/heartbeat.md has the measurements): on LTE each isolated heartbeat costs about one
radio tail (≈ 12.8 J), so energy is the number of wake-ups a day. Fixed intervals and Mars
(capped at 580 s) pay for many more wake-ups than a network with a 30-min or 2-h NAT needs;
a search that overshoots the NAT pays in dead connections and delayed pushes instead.

Rules:

- **Per-network knowledge, kept in the SDK state.** ``low`` is the longest silence known to
  have survived on this network (the NAT's timeout is above it), ``high`` the shortest known
  to have killed a connection (the timeout is at or below it). A new connection on a known
  network starts at once at the known-good value: no warm-up beats.
- **Search.** While nothing has failed, grow geometrically (×2 after ``confirm`` successes at
  a value, starting from ``initial_cellular`` or ``initial_wifi``). Once a failure brackets
  the timeout, bisect between ``low`` and ``high``; stop when the bracket is narrower than
  ``precision`` of ``low`` and settle on ``low`` (proved safe). After a failure the next
  connection always runs at ``low``: one overshoot never causes a second.
- **Only full silences teach.** A ping answered after a shorter silence than the interval
  (sent early, or after other traffic) proves nothing about the NAT and is not counted.
- **Piggybacking.** When the platform reports the radio active for another app, a ping sent
  then costs almost nothing on cellular (it lands in the radio's tail), so the strategy asks
  for one once ``piggyback_after`` of the interval has passed. The silence restarts, and the
  next paid wake-up moves out by that much.
- **Stability.** Two failures in a row at a settled value mean the network changed: the
  knowledge is dropped and the search restarts from the initial value. A settled value is
  re-tested upwards (one probe at the bracket's top) after ``reprobe_after`` seconds of wall
  time, because carriers change their NATs.
- **Doze.** Nothing special is needed: the SDK defers pings while the device is idle
  (``PushClient.set_device_idle``), and a ping that fires late still tests the silence it
  actually had (``ctx.silence``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["AdaptiveState", "AdaptiveStrategy"]

#: After one failure at a settled value, run this much below it until it proves itself again.
SUSPECT = 0.8


@attrs.frozen
class AdaptiveState:
    """What is known about the current network's NAT, and the interval in force."""

    interval: float
    low: float  # longest silence known to survive (0: none yet)
    high: float | None = None  # shortest silence known to fail (None: none yet)
    streak: int = 0  # full-silence successes at ``interval``
    failures: int = 0  # failures in a row since the value settled
    settled_at: float | None = None  # wall time the search ended (None: searching)
    inband: bool = False  # no probe connections here: search on the main connection

    @property
    def settled(self) -> bool:
        return self.settled_at is not None


@register_strategy("adaptive")
@attrs.frozen
class AdaptiveStrategy(HeartbeatStrategy):
    """Find the NAT timeout by doubling then bisection, per network; piggyback on radio
    wake-ups. See the module docstring and docs/heartbeat.md."""

    initial_cellular: float = 270.0  # WeChat's old fixed value: safe on most carriers [§1]
    initial_wifi: float = 120.0  # Wi-Fi wake-ups are nearly free; home gateways go to 2 min
    floor: float = 60.0
    cap: float = 3 * 3600.0  # RFC 5382's 2 h 4 min NAT minimum fits under it
    growth: float = 2.0
    confirm: int = 2  # successes before growing (one lucky answer is not enough)
    precision: float = 0.06  # stop bisecting when (high - low) < precision × low
    piggyback_after: float = 0.3  # fraction of the interval after which a free ping is taken
    reprobe_after: float = 7 * 86400.0  # wall seconds, as Mars
    ping_timeout: float | None = 10.0

    @property
    def name(self) -> str:
        return "adaptive"

    @property
    def max_interval(self) -> float:
        return self.cap

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> AdaptiveState:
        state = _from_memory(memory)
        if state is None:
            return self._fresh(ctx)
        if state.settled and ctx.wall_time - state.settled_at >= self.reprobe_after:
            state = attrs.evolve(state, high=None, settled_at=None)  # carriers change NATs
        # A new connection runs at the known-good value; probing resumes from there. While
        # bisecting, one success there (it proved itself already) is enough to go on.
        streak = self.confirm - 1 if state.high is not None and not state.settled else 0
        interval = state.low or state.interval
        if state.settled and state.failures:
            interval *= SUSPECT  # the settled value failed once: stay clear of it for now
        return attrs.evolve(state, interval=max(self.floor, interval), streak=streak)

    def interval(self, state: AdaptiveState, ctx: HeartbeatContext) -> float:
        return state.interval

    def probe(self, state: AdaptiveState, ctx: HeartbeatContext) -> float | None:
        if state.inband or state.settled or state.low <= 0:
            return None  # nothing proved yet: the main connection proves the first value
        return self._candidate(state)

    def on_probe(self, state: AdaptiveState, ctx: HeartbeatContext,
                 ok: bool | None) -> AdaptiveState:
        if ok is None:  # the server or network refuses probes: search in-band instead
            return attrs.evolve(state, inband=True)
        if ok:
            state = attrs.evolve(state, low=max(state.low, min(ctx.silence, self.cap)))
        else:
            high = ctx.silence if state.high is None else min(state.high, ctx.silence)
            state = attrs.evolve(state, high=high)
        if self._narrow(state) or (state.high is None and state.low >= self.cap):
            state = attrs.evolve(state, settled_at=ctx.wall_time)
        # The main connection always runs at the longest silence proved so far.
        return attrs.evolve(state, interval=max(self.floor, state.low))

    def piggyback(self, state: AdaptiveState, ctx: HeartbeatContext, silence: float) -> bool:
        # On Wi-Fi a wake-up costs ~0.04 J: nothing worth riding on.
        return ctx.network_type == "cellular" and silence >= self.piggyback_after * state.interval

    def memory(self, state: AdaptiveState) -> Mapping[str, Any]:
        return {"strategy": self.name, "low": state.low, "high": state.high,
                "interval": state.interval, "settled_at": state.settled_at,
                "failures": state.failures, "inband": state.inband}

    # --- learning -----------------------------------------------------------------------

    def on_success(self, state: AdaptiveState, ctx: HeartbeatContext) -> AdaptiveState:
        if ctx.silence < 0.99 * state.interval:
            return state  # an early ping: it says nothing about the NAT
        suspect = state.settled and state.failures > 0
        low = max(state.low, min(ctx.silence, self.cap))
        state = attrs.evolve(state, low=low, failures=0, streak=state.streak + 1)
        if state.settled:  # after a lone failure, a success restores the settled value
            return attrs.evolve(state, interval=max(self.floor, low)) if suspect else state
        if not state.inband:
            return state  # probes do the searching; the main connection stays proved
        if state.streak < self.confirm:
            return state
        if state.high is None:
            if state.interval >= self.cap:
                return attrs.evolve(state, settled_at=ctx.wall_time)
            return attrs.evolve(state, interval=min(self.cap, state.interval * self.growth),
                                streak=0)
        return self._bisect(state, ctx)

    def on_failure(self, state: AdaptiveState, ctx: HeartbeatContext) -> AdaptiveState:
        tested = max(ctx.silence, state.interval)
        if state.settled:
            if state.failures + 1 >= 2:  # twice at a value that held: the network changed
                return self._fresh(ctx)
            return attrs.evolve(state, failures=state.failures + 1, streak=0,
                                interval=max(self.floor, SUSPECT * state.low))
        if tested <= state.low:  # the known-good value failed: that knowledge is stale
            low = max(0.0, min(state.low, tested) * 0.5)
            return attrs.evolve(state, low=low, high=tested, streak=0,
                                interval=max(self.floor, low or self.floor))
        high = tested if state.high is None else min(state.high, tested)
        state = attrs.evolve(state, high=high, streak=0)
        # The next connection runs at the proved value; bisection continues from there.
        return self._bisect(state, ctx, after_failure=True)

    def _bisect(self, state: AdaptiveState, ctx: HeartbeatContext, *,
                after_failure: bool = False) -> AdaptiveState:
        low, high = state.low, state.high
        assert high is not None
        if low <= 0:
            return attrs.evolve(state, interval=max(self.floor, high / 2), streak=0)
        if self._narrow(state):
            return attrs.evolve(state, interval=max(self.floor, low), streak=0,
                                settled_at=ctx.wall_time)
        if after_failure:
            # Run at the proved value first (one success confirms it), then try the middle.
            return attrs.evolve(state, interval=max(self.floor, low), streak=self.confirm - 1)
        return attrs.evolve(state, interval=(low + high) / 2, streak=0)

    def _candidate(self, state: AdaptiveState) -> float:
        if state.high is None:
            return min(self.cap, max(state.low, state.interval) * self.growth)
        return (state.low + state.high) / 2

    def _narrow(self, state: AdaptiveState) -> bool:
        """The bracket around the NAT timeout is tight enough to stop searching."""
        return (state.high is not None and state.low > 0
                and state.high - state.low < self.precision * state.low)

    def _fresh(self, ctx: HeartbeatContext) -> AdaptiveState:
        initial = self.initial_cellular if ctx.network_type == "cellular" else self.initial_wifi
        return AdaptiveState(interval=max(self.floor, min(self.cap, initial)), low=0.0)


def _from_memory(memory: Mapping[str, Any] | None) -> AdaptiveState | None:
    """The stored knowledge of a network, or None if absent, foreign or damaged."""
    if not memory or memory.get("strategy") != "adaptive":
        return None
    try:
        low = float(memory["low"])
        interval = float(memory["interval"])
        high = memory.get("high")
        high = None if high is None else float(high)
        settled_at = memory.get("settled_at")
        settled_at = None if settled_at is None else float(settled_at)
        failures = int(memory.get("failures", 0))
        inband = bool(memory.get("inband", False))
    except (KeyError, TypeError, ValueError):
        return None
    values = [low, interval] + [v for v in (high, settled_at) if v is not None]
    if not all(math.isfinite(v) and v >= 0 for v in values) or interval <= 0:
        return None
    return AdaptiveState(interval=interval, low=low, high=high, settled_at=settled_at,
                         failures=max(0, failures), inband=inband)
