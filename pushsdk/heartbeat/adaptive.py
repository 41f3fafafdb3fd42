"""``adaptive``: this project's heartbeat — find each network's NAT timeout without risking
the main connection, keep it, notice when it changes, and ride on radio wake-ups that other
apps pay for.

Why (docs/heartbeat.md has the measurements): on cellular each isolated heartbeat costs about
one radio tail (≈ 12.8 J on LTE), so energy is the number of wake-ups a day; a search that
overshoots the NAT pays in dead connections and delayed pushes instead.

Rules:

- **Per-network knowledge, kept in the SDK state.** ``low`` is the longest silence known to
  survive on this network, ``high`` the shortest known to kill a connection, ``least_failure``
  the shortest silence that ever failed here. A new connection on a known network starts at
  once at the known-good value: no warm-up beats.
- **Search on a probe connection.** The main connection only ever runs at a silence already
  proved (or, before anything is proved, at ``initial_cellular``/``initial_wifi``). A second,
  short-lived connection tests longer silences: ×2 while nothing failed (a multiple of the
  main interval, so its ping lands on a main beat's radio wake-up), then bisection, stopping
  when the bracket is narrower than ``precision`` of ``low``. A server that refuses probes
  makes the same search run on the main connection (``inband``).
- **Failures outrank successes.** ``low`` always stays below every failure seen: behind a
  NAT that sweeps its table, or one whose timeout differs per connection, a lucky success
  above the timeout is not believed.
- **A settled value that fails** means a changed NAT or bad luck. The main connection drops
  at once to a safe guess (a quarter of the old value, at most the initial one) while a probe
  re-tests 90 % of the old value: if that holds, the failure was luck (a NAT that sweeps its
  table, timeouts that differ per connection) and the main connection settles there; if
  not, the NAT changed (``changing``) and the search restarts from what the main connection
  proves meanwhile. Either way a single failure, never a second at the same value.
- **Changing NATs are re-checked upwards** every ``recheck_after`` seconds (one aligned
  probe at twice the interval), other networks after ``reprobe_after`` (7 days, as Mars).
- **Only full silences teach.** A ping answered after a shorter silence than the interval
  (sent early) proves nothing. A ping that failed after a silence much longer than the
  interval (the device slept: Doze) teaches nothing about the NAT either.
- **Free beats.** When the platform reports the radio active for another app, a ping then
  costs a fraction of a wake-up, so the strategy takes one once ``piggyback_after`` of the
  interval has passed (on Wi-Fi ``piggyback_after_wifi``: there the CPU's wake costs more
  than the radio's, so a free ping pays only when it replaces most of a beat). With
  ``screen_hints`` it also pings the moment the screen comes on or goes off (the app in
  front keeps the radio up: docs/energy.md, screen-on sharing; as the screen comes on the
  CPU is awake too, so then ``piggyback_after`` suffices on Wi-Fi as well), if that much
  silence has passed and the platform does not say the network is idle
  (``ctx.network_active is False``: the session sent nothing, so there is no radio up).
  Each free beat moves the next paid one out.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy
from .hooks import screen_just_changed, screen_share

__all__ = ["AdaptiveState", "AdaptiveStrategy"]

#: Stay this far below a silence that failed (sweeps, jitter, per-connection spread).
BELOW_FAILURE = 0.97
#: A settled value that failed once and then held again: the NAT is not deterministic there
#: (a sweep's phase, timeouts that differ per connection); stay this far below the failure.
NOISY = 0.9
#: After a settled value fails, the main connection runs at this share of it meanwhile.
FALLBACK = 0.25
#: A failed ping whose silence exceeded the interval this much slept (Doze): no lesson.
LATE = 1.5


@attrs.frozen
class AdaptiveState:
    """What is known about the current network's NAT, and the interval in force."""

    interval: float
    low: float  # longest silence known to survive (0: none yet)
    high: float | None = None  # shortest silence known to fail (None: none yet)
    streak: int = 0  # full-silence successes at ``interval`` (in-band search)
    settled_at: float | None = None  # wall time the search ended (None: searching)
    inband: bool = False  # no probe connections here: search on the main connection
    least_failure: float | None = None  # shortest silence that ever failed here
    retest: float | None = None  # a settled value that failed once, to re-test by probe
    changing: bool = False  # this network's NAT timeout has been seen to change
    checked_at: float | None = None  # wall time of the last upward re-check
    last_ping_at: float = -math.inf  # monotonic time of the last answered ping (not kept)

    @property
    def settled(self) -> bool:
        return self.settled_at is not None


@register_strategy("adaptive")
@attrs.frozen
class AdaptiveStrategy(HeartbeatStrategy):
    """Probe the NAT timeout on a second connection, per network; believe failures over
    successes; re-test on failure; piggyback on radio wake-ups. See the module docstring
    and docs/heartbeat.md."""

    initial_cellular: float = 270.0  # WeChat's old fixed value: safe on most carriers
    initial_wifi: float = 120.0  # home gateways go down to 2 min
    floor: float = 15.0  # below the shortest NATs seen for UDP (30 s)
    cap: float = 3 * 3600.0  # RFC 5382's 2 h 4 min NAT minimum fits under it
    growth: float = 2.0  # in-band growth
    probe_growth: float = 2.0  # probes: a multiple of the main interval (lands on its beat)
    confirm: int = 2  # in-band: successes before growing
    #: Stop bisecting when (high - low) < precision × low, the precision being what one
    #: more probe (two wake-ups) can still save in a day: 4 × high / 86,400, in [1 %, 10 %].
    min_precision: float = 0.01
    max_precision: float = 0.10
    piggyback_after: float = 0.1  # share of the interval after which a free ping is taken
    #: On Wi-Fi a wake-up's radio energy is small next to the CPU's (0.04 vs 0.06 J), and a
    #: free ping still wakes the CPU: it pays only when it replaces most of a beat.
    piggyback_after_wifi: float = 0.6
    screen_hints: bool = True  # ping as the screen comes on and goes off (its radio is up)
    recheck_after: float = 3600.0  # wall seconds between upward re-checks of changing NATs
    reprobe_after: float = 7 * 86400.0  # wall seconds, as Mars, for the others
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
        # (``settled`` is ``settled_at is not None``, which mypy cannot see through a property.)
        if state.settled and not state.changing and \
                ctx.wall_time - state.settled_at >= self.reprobe_after:  # type: ignore[operator]
            state = attrs.evolve(state, high=None, settled_at=None)  # carriers change NATs
        streak = self.confirm - 1 if state.high is not None and not state.settled else 0
        return attrs.evolve(state, interval=self._main(state, ctx), streak=streak)

    def interval(self, state: AdaptiveState, ctx: HeartbeatContext) -> float:
        if self.screen_hints and screen_just_changed(
                ctx, state.last_ping_at, state.interval,
                screen_share(ctx, self.piggyback_after, self.piggyback_after_wifi)):
            return 0.0  # the screen just came on or went off: its radio is still up
        return state.interval

    def piggyback(self, state: AdaptiveState, ctx: HeartbeatContext, silence: float) -> bool:
        return silence >= self._share(ctx) * state.interval

    def _share(self, ctx: HeartbeatContext) -> float:
        return self.piggyback_after_wifi if ctx.network_type == "wifi" else self.piggyback_after

    def reply_timeout(self, state: AdaptiveState, ctx: HeartbeatContext) -> float | None:
        if ctx.silence > LATE * state.interval and state.high is not None \
                and ctx.silence >= state.high:
            return 3.0  # far past a silence known to fail: do not keep the radio up for it
        return self.ping_timeout

    def memory(self, state: AdaptiveState) -> Mapping[str, Any]:
        return {"strategy": self.name, "low": state.low, "high": state.high,
                "interval": state.interval, "settled_at": state.settled_at,
                "inband": state.inband, "least_failure": state.least_failure,
                "retest": state.retest, "changing": state.changing,
                "checked_at": state.checked_at}

    # --- probes -------------------------------------------------------------------------

    def probe(self, state: AdaptiveState, ctx: HeartbeatContext) -> float | None:
        if state.inband:
            return None
        if state.retest is not None:
            return state.retest
        if state.settled:
            every = self.recheck_after if state.changing else None
            last = state.checked_at if state.checked_at is not None else state.settled_at
            if every is not None and ctx.wall_time - last >= every:  # type: ignore[operator]
                return min(self.cap, self.growth * state.interval)  # lands on a main beat
            return None
        if state.low <= 0 and state.high is not None:
            return None  # the initial value failed: the main connection proves a lower one
        return self._candidate(state)

    def on_probe(self, state: AdaptiveState, ctx: HeartbeatContext,
                 ok: bool | None) -> AdaptiveState:
        if ok is None:  # the server or network refuses probes: search in-band instead
            return attrs.evolve(state, inband=True, retest=None)
        silence = min(ctx.silence, self.cap)
        if state.retest is not None:
            return self._retested(state, ctx, ok, silence)
        if state.settled:  # an upward re-check
            if not ok:
                return attrs.evolve(state, checked_at=ctx.wall_time)
            state = attrs.evolve(state, high=None, settled_at=None, least_failure=None,
                                 checked_at=ctx.wall_time)
        state = self._learn(state, silence, ok)
        if self._narrow(state) or (state.high is None and state.low >= self.cap):
            state = attrs.evolve(state, settled_at=ctx.wall_time)
        return attrs.evolve(state, interval=self._main(state, ctx))

    def _retested(self, state: AdaptiveState, ctx: HeartbeatContext, ok: bool,
                  silence: float) -> AdaptiveState:
        """The re-test of a settled value that failed once."""
        if ok:  # bad luck (a sweep's phase, a lost cell): keep it, just below the failure
            state = attrs.evolve(state, retest=None, low=min(state.low, silence),
                                 settled_at=ctx.wall_time)
        else:  # the NAT changed: search again from what the main connection proves now
            state = attrs.evolve(state, retest=None, changing=True, settled_at=None,
                                 high=silence, low=min(state.low, state.interval),
                                 least_failure=_least(state.least_failure, silence))
        return attrs.evolve(state, interval=self._main(state, ctx))

    # --- the main connection's beats ----------------------------------------------------

    def on_success(self, state: AdaptiveState, ctx: HeartbeatContext) -> AdaptiveState:
        state = attrs.evolve(state, last_ping_at=ctx.now)
        if ctx.silence < 0.99 * state.interval:
            return state  # an early ping: it says nothing about the NAT
        silence = min(ctx.silence, self.cap)
        if state.retest is not None or state.settled or not state.inband:
            if silence > state.low and state.retest is None and not state.settled:
                state = self._learn(state, silence, True)
            elif state.retest is not None and silence > state.low:
                state = attrs.evolve(state, low=silence)  # the fallback proves itself
            return attrs.evolve(state, interval=self._main(state, ctx))
        state = attrs.evolve(self._learn(state, silence, True), streak=state.streak + 1)
        if state.streak < self.confirm:
            return state
        if state.high is None:
            if state.interval >= self.cap:
                return attrs.evolve(state, settled_at=ctx.wall_time)
            return attrs.evolve(state, interval=min(self.cap, state.interval * self.growth),
                                streak=0)
        return self._bisect(state, ctx)

    def on_failure(self, state: AdaptiveState, ctx: HeartbeatContext) -> AdaptiveState:
        if ctx.silence > LATE * state.interval:
            return state  # the device slept through it (Doze): nothing learned of the NAT
        tested = ctx.silence if ctx.silence > 0 else state.interval
        if state.retest is not None:  # the fallback failed too: the NAT is short now
            state = attrs.evolve(state, retest=None, changing=True, settled_at=None,
                                 low=0.0, high=None)
        elif state.settled:  # changed NAT or bad luck: fall back, re-test by probe
            fallback = max(self.floor, min(self._initial(ctx), FALLBACK * state.low))
            least = _least(state.least_failure, tested)
            if not state.inband:
                return attrs.evolve(state, retest=NOISY * state.low, least_failure=least,
                                    interval=fallback, streak=0)
            return attrs.evolve(state, settled_at=None, least_failure=least, high=tested,
                                low=fallback, interval=fallback, streak=0)
        state = attrs.evolve(self._learn(state, tested, False), streak=0)
        if state.low <= 0:  # nothing proved: the next connection runs well below this
            return attrs.evolve(state, interval=max(self.floor, tested / 8))
        if state.inband:
            return self._bisect(state, ctx, after_failure=True)
        return attrs.evolve(state, interval=self._main(state, ctx))

    # --- learning -----------------------------------------------------------------------

    def _learn(self, state: AdaptiveState, silence: float, ok: bool) -> AdaptiveState:
        """Book one result. Failures outrank successes: ``low`` stays below every failure,
        and a success well above a failure (more than the bracket's precision) reopens the
        bracket above it (the NAT grew, or its timeouts vary: only failures bound it)."""
        least = state.least_failure
        if ok:
            if least is not None and silence >= least:
                if silence - least <= 0.1 * silence:
                    return state  # luck within a sweep's width: not believed
                least = None  # the NAT grew since that failure
                state = attrs.evolve(state, high=None, least_failure=None)
            return attrs.evolve(state, low=max(state.low, silence))
        least = _least(least, silence)
        high = silence if state.high is None else min(state.high, silence)
        low = state.low if state.low < silence else BELOW_FAILURE * silence
        return attrs.evolve(state, low=low if state.low > 0 else 0.0, high=high,
                            least_failure=least)

    def _bisect(self, state: AdaptiveState, ctx: HeartbeatContext, *,
                after_failure: bool = False) -> AdaptiveState:
        low, high = state.low, state.high
        assert high is not None
        if low <= 0:
            return attrs.evolve(state, interval=max(self.floor, high / 8), streak=0)
        if self._narrow(state):
            return attrs.evolve(state, interval=max(self.floor, low), streak=0,
                                settled_at=ctx.wall_time)
        if after_failure:
            return attrs.evolve(state, interval=max(self.floor, low), streak=self.confirm - 1)
        return attrs.evolve(state, interval=(low + high) / 2, streak=0)

    def _main(self, state: AdaptiveState, ctx: HeartbeatContext) -> float:
        """The main connection's interval: the proved value; while a failed settled value is
        being re-tested, the safe fallback; before anything is proved, the initial value."""
        if state.retest is not None:
            return max(self.floor, min(self._initial(ctx), FALLBACK * state.retest,
                                       state.low or math.inf))
        if state.low > 0:
            return max(self.floor, min(self.cap, state.low))
        if state.high is not None:
            return max(self.floor, state.high / 8)
        return self._fresh(ctx).interval

    def _candidate(self, state: AdaptiveState) -> float:
        if state.high is None:
            return min(self.cap, max(state.low, state.interval) * self.probe_growth)
        return (state.low + state.high) / 2

    def _narrow(self, state: AdaptiveState) -> bool:
        """The bracket around the NAT timeout is tight enough to stop searching: one more
        probe costs about two wake-ups and could save at most (high - low) / high of the
        beats of a day, ``86,400 / low``."""
        if state.high is None or state.low <= 0:
            return False
        precision = min(self.max_precision, max(self.min_precision, 4 * state.high / 86400))
        return state.high - state.low < precision * state.low

    def _initial(self, ctx: HeartbeatContext) -> float:
        return self.initial_cellular if ctx.network_type == "cellular" else self.initial_wifi

    def _fresh(self, ctx: HeartbeatContext) -> AdaptiveState:
        return AdaptiveState(interval=max(self.floor, min(self.cap, self._initial(ctx))), low=0.0)


def _least(current: float | None, silence: float) -> float:
    return silence if current is None else min(current, silence)


def _from_memory(memory: Mapping[str, Any] | None) -> AdaptiveState | None:
    """The stored knowledge of a network, or None if absent, foreign or damaged."""
    if not memory or memory.get("strategy") != "adaptive":
        return None
    try:
        low = float(memory["low"])
        interval = float(memory["interval"])
        optional: dict[str, Any] = {key: None if memory.get(key) is None else float(memory[key])
                    for key in ("high", "settled_at", "least_failure", "retest", "checked_at")}
        inband = bool(memory.get("inband", False))
        changing = bool(memory.get("changing", False))
    except (KeyError, TypeError, ValueError):
        return None
    values = [low, interval] + [v for v in optional.values() if v is not None]
    if not all(math.isfinite(v) and v >= 0 for v in values) or interval <= 0:
        return None
    return AdaptiveState(interval=interval, low=low, inband=inband, changing=changing,
                         **optional)
