"""``mars``: WeChat's "smart heartbeat" as implemented in Tencent Mars (``SmartHeartbeat``)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard, cast

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["MarsState", "MarsStrategy"]

# mars/stn/config.h
MIN_HEART_INTERVAL = 210  # MinHeartInterval, 3.5 min
MAX_HEART_INTERVAL = 600  # MaxHeartInterval, 10 min
HEART_STEP = 60  # HeartStep: probe step up
SUCCESS_STEP = 20  # SuccessStep: safety margin below Max, and the re-probe step
MAX_HEART_FAIL_COUNT = 2
BASE_SUCC_COUNT = 5
NET_STABLE_TEST_COUNT = 3
#: The largest interval ever used: Max - SuccessStep.
HEART_CAP = MAX_HEART_INTERVAL - SUCCESS_STEP

# mars/stn/src/smart_heartbeat.cc
REPROBE_AFTER = 7 * 24 * 3600.0  # a stable value older than this is probed +SuccessStep
DOZE_LATENESS = 20.0  # an alarm this late (s) is a doze event (JudgeDozeStyle)
# mars/baseevent active_logic: the app stays "active" this long after leaving the foreground.
ACTIVE_AFTER_FOREGROUND = 10 * 60.0
# mars/stn/src/longlink.cc __NoopReq: reply timeout, and the shorter one after a very late beat.
NOOP_TIMEOUT = 8.0
NOOP_TIMEOUT_AFTER_LATE_BEAT = 5.0
LATE_BEAT = 15 * 60.0


@attrs.frozen
class MarsState:
    """Mars's ``NetHeartbeatInfo`` for the current network plus the per-connection counters.

    The first seven fields are remembered per network (:meth:`MarsStrategy.memory`); the last
    two start at 0 on every connection, as Mars resets them when a long link is established
    or lost.
    """

    interval: int = MIN_HEART_INTERVAL
    """``cur_heart_``: the value being probed, or the learned one once ``stable``."""
    stable: bool = False
    failures: int = 0
    """``fail_heart_count_``: failures at ``interval`` since the last counted success."""
    doze_value: bool = False
    """``heart_type_ == kDozeModeHeart``: the stable value was learned while dozing."""
    modified_at: float = 0.0
    """``last_modify_time_``: wall-clock time this record was last saved."""
    doze_events: int = 0
    """``doze_mode_count_``: late alarms (each on-time one takes one away)."""
    normal_events: int = 0
    """``normal_mode_count_``: on-time alarms (each late one takes one away)."""
    successes: int = 0
    """``succ_heart_count_``: successes at ``interval`` on this connection."""
    beats_ok: int = 0
    """``success_heart_count_``: answered heartbeats of any length on this connection."""

    @property
    def dozing(self) -> bool:
        """``__IsDozeStyle``: the device's alarms are mostly late, as under Android Doze."""
        return self.doze_events >= 2 and self.doze_events > 2 * self.normal_events


@register_strategy("mars")
@attrs.frozen
class MarsStrategy(HeartbeatStrategy):
    """Probe the NAT timeout upwards in 60 s steps from 210 s, settle just below what failed.

    Constants (``mars/stn/config.h``): Min 210 s, Max 600 s (values are capped at
    Max - SuccessStep = 580 s), HeartStep 60 s, SuccessStep 20 s, MaxHeartFailCount 2,
    BaseSuccCount 5, NetStableTestCount 3; reply timeout 8 s.

    Rules (``mars/stn/src/smart_heartbeat.cc``, ``SmartHeartbeat``):

    - Warm-up: the first 3 heartbeats of every connection use Min and teach nothing.
    - An *active* app — foreground, or less than 10 min since it last entered or left the
      foreground (``active_logic.cc``; screen on/off does not count) — always uses Min; those
      beats teach nothing unless the learned value is Min itself.
    - Probing: 5 successes at the current value add 60 s, capped at 580 s; 5 successes at
      580 s make it stable. A success at the value resets its failure count.
    - A failure at Min teaches nothing. Probing: the 2nd failure at a value sets it 80 s lower
      (never below Min) and stable. Stable: the 2nd failure resets to Min and probing restarts.
      Failures count across connections (each one ends its connection).
    - Re-probe: a success at a stable value below 580 s whose record is at least 7 days old
      (wall clock) adds 20 s and probing resumes.
    - Doze (cellular, app not active): every heartbeat sent ≥ 20 s late (``ctx.lateness``) is
      a doze event, every other one a normal event, each cancelling one of the other kind.
      With doze events ≥ 2 and > 2 × normal events the device is *dozing*: probing then jumps
      from the current value straight to 580 s after 5 successes, the 2nd failure goes to Min,
      and a learned value not found while dozing (other than 580 s) falls back to Min.
    - Memory: the record above, per ``ctx.network_key``; the SDK state file keeps at most 20
      networks, evicting the oldest, as Mars does with ``Heartbeat.ini``.

    Interpretations (details in ``docs/heartbeat.md``): Mars arms the next interval when it
    sends a heartbeat, so an answer is booked against the *next* interval and the first answer
    after a change is discarded (``pre_heart_``); here the client waits the interval and then
    pings, so each answer is booked against the silence it survived and the discard is not
    needed — the trajectory (3 warm-up beats, 5 per value) is the same. The doze counters,
    process-wide in Mars, are remembered per network here. The reply timeout is 8 s, 5 s when
    the beat's alarm spanned ≥ 15 min (:meth:`reply_timeout`). MIUI's 5-minute alarm
    alignment is not modelled.
    """

    ping_timeout = NOOP_TIMEOUT

    @property
    def name(self) -> str:
        return "mars"

    @property
    def max_interval(self) -> float:
        return float(HEART_CAP)

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> MarsState:
        """A new connection: the network's record (or a new one), counters at zero."""
        state = _load(memory, ctx.wall_time)
        if state is None:  # first time on this network: Mars creates and saves the record
            state = MarsState(modified_at=ctx.wall_time)
        return state

    def interval(self, state: MarsState, ctx: HeartbeatContext) -> float:
        return float(self._next_interval(state, ctx))

    def on_success(self, state: MarsState, ctx: HeartbeatContext) -> MarsState:
        return self._on_result(state, ctx, success=True)

    def on_failure(self, state: MarsState, ctx: HeartbeatContext) -> MarsState:
        return self._on_result(state, ctx, success=False)

    def reply_timeout(self, state: MarsState, ctx: HeartbeatContext) -> float:
        """``__NoopReq``: 8 s, or 5 s when the alarm that sends this beat spanned ≥ 15 min
        (``has_late_toomuch`` in ``LongLink::__RunReadWrite``: a dozing device)."""
        span = self._next_interval(state, ctx) + max(0.0, ctx.lateness)
        return NOOP_TIMEOUT_AFTER_LATE_BEAT if span >= LATE_BEAT else NOOP_TIMEOUT

    def memory(self, state: MarsState) -> Mapping[str, Any]:
        return {
            "strategy": self.name,
            "interval": state.interval,
            "stable": state.stable,
            "failures": state.failures,
            "doze_value": state.doze_value,
            "modified_at": state.modified_at,
            "doze_events": state.doze_events,
            "normal_events": state.normal_events,
        }

    # -- the rules ---------------------------------------------------------------------------

    def _next_interval(self, state: MarsState, ctx: HeartbeatContext) -> int:
        """``GetNextHeartbeatInterval``."""
        if _uses_min(state, ctx):
            return MIN_HEART_INTERVAL
        return _distrust_if_dozing(state).interval

    def _on_result(self, state: MarsState, ctx: HeartbeatContext, *, success: bool) -> MarsState:
        """``JudgeDozeStyle`` then ``OnHeartResult`` for the beat that just ended."""
        started = self._silence_start(state, ctx, success=success)
        if not _uses_min(state, started):
            # Choosing this beat's interval also rewrote cur_heart_ in Mars.
            state = _distrust_if_dozing(state)
        used = self._next_interval(state, started)
        state = _judge_doze(state, ctx)

        warming_up = state.beats_ok < NET_STABLE_TEST_COUNT
        if success:
            state = attrs.evolve(state, beats_ok=state.beats_ok + 1)
        if warming_up or used != state.interval:
            return state  # a Min beat (warm-up, active app) says nothing about this value

        if not success:
            return self._failed(attrs.evolve(state, failures=state.failures + 1), ctx)
        state = attrs.evolve(state, successes=state.successes + 1, failures=0)
        if state.stable:
            return self._maybe_reprobe(state, ctx)
        return self._probed(state, ctx)

    def _silence_start(
        self, state: MarsState, ctx: HeartbeatContext, *, success: bool
    ) -> HeartbeatContext:
        """The context as it was when the silence before this beat began.

        That is when the client chose the beat's interval: if the app stopped being active
        during the silence, the beat still used Min. The interface does not say which interval
        was used, so this goes back by the learned value plus the alarm's lateness (plus the
        reply timeout for a failure): if the app was active then, the beat used Min.
        """
        waited = _distrust_if_dozing(state).interval + abs(ctx.lateness)
        if not success:
            waited += NOOP_TIMEOUT
        return attrs.evolve(ctx, now=ctx.now - waited)

    def _probed(self, state: MarsState, ctx: HeartbeatContext) -> MarsState:
        if state.successes >= BASE_SUCC_COUNT:
            if state.interval >= HEART_CAP:
                state = attrs.evolve(state, interval=HEART_CAP, successes=0, stable=True,
                                     doze_value=state.dozing)
            elif state.dozing:
                state = attrs.evolve(state, interval=HEART_CAP, successes=0)
            else:
                state = attrs.evolve(
                    state, interval=min(state.interval + HEART_STEP, HEART_CAP), successes=0)
        return _saved(state, ctx)

    def _maybe_reprobe(self, state: MarsState, ctx: HeartbeatContext) -> MarsState:
        if state.interval >= HEART_CAP or ctx.wall_time - state.modified_at < REPROBE_AFTER:
            return state  # nothing changed: Mars does not save here
        state = attrs.evolve(state, interval=state.interval + SUCCESS_STEP, successes=0,
                             stable=False, failures=0)
        return _saved(state, ctx)

    def _failed(self, state: MarsState, ctx: HeartbeatContext) -> MarsState:
        if state.interval == MIN_HEART_INTERVAL:
            return state  # nothing shorter to try (Mars counts it but neither acts nor saves)
        if state.failures >= MAX_HEART_FAIL_COUNT:
            if state.stable:  # the learned value stopped working: learn again from Min
                state = attrs.evolve(state, interval=MIN_HEART_INTERVAL, successes=0,
                                     stable=False, failures=0)
            else:
                value = (MIN_HEART_INTERVAL if state.dozing
                         else max(state.interval - HEART_STEP - SUCCESS_STEP, MIN_HEART_INTERVAL))
                state = attrs.evolve(state, interval=value, successes=0, failures=0,
                                     stable=True, doze_value=state.dozing)
        return _saved(state, ctx)


def _is_active(ctx: HeartbeatContext) -> bool:
    """``ActiveLogic::IsActive``: foreground, or less than 10 minutes since the last change
    of foreground state (``ActiveLogic::OnForeground`` restarts its 10-minute alarm only when
    ``isforeground_`` changes; screen on/off is no foreground change).

    ``ctx.foreground_changed_at`` is that moment; a platform that does not give it leaves
    only ``app_state_since`` (any change of app state), which also counts screen changes.
    """
    if ctx.app_state == "foreground":
        return True
    since = ctx.foreground_changed_at
    if since is None:
        since = ctx.app_state_since
    return ctx.now - since < ACTIVE_AFTER_FOREGROUND


def _uses_min(state: MarsState, ctx: HeartbeatContext) -> bool:
    """Warm-up or an active app: Min, whatever has been learned."""
    return _is_active(ctx) or state.beats_ok < NET_STABLE_TEST_COUNT


def _distrust_if_dozing(state: MarsState) -> MarsState:
    """A value learned before the device began dozing (other than the cap) drops to Min."""
    if state.dozing and not state.doze_value and state.interval != HEART_CAP:
        return attrs.evolve(state, interval=MIN_HEART_INTERVAL)
    return state


def _judge_doze(state: MarsState, ctx: HeartbeatContext) -> MarsState:
    """``JudgeDozeStyle``: was this heartbeat's alarm late? Only cellular, app not active."""
    if _is_active(ctx) or ctx.network_type != "cellular":
        return state
    if abs(ctx.lateness) >= DOZE_LATENESS:
        return attrs.evolve(state, doze_events=state.doze_events + 1,
                            normal_events=max(state.normal_events - 1, 0))
    return attrs.evolve(state, normal_events=state.normal_events + 1,
                        doze_events=max(state.doze_events - 1, 0))


def _saved(state: MarsState, ctx: HeartbeatContext) -> MarsState:
    """``__SaveINI`` stamps the record with the wall-clock time."""
    return attrs.evolve(state, modified_at=ctx.wall_time)


def _load(memory: Mapping[str, Any] | None, wall_time: float) -> MarsState | None:
    """``__LoadINI``: the record, repaired like Mars repairs it; ``None`` if absent or foreign.

    A damaged record is treated as absent: it only holds hints, and relearning is safe.
    """
    if not memory or memory.get("strategy") != "mars":
        return None
    interval, modified_at = memory.get("interval"), memory.get("modified_at")
    counts = [memory.get(k) for k in ("failures", "doze_events", "normal_events")]
    flags = [memory.get(k) for k in ("stable", "doze_value")]
    if not (_is_int(interval) and all(_is_int(c) and c >= 0 for c in counts)
            and all(isinstance(f, bool) for f in flags) and _is_number(modified_at)):
        return None
    if interval < MIN_HEART_INTERVAL:
        interval = MIN_HEART_INTERVAL
    elif interval > HEART_CAP:
        interval = HEART_CAP
    failures, doze_events, normal_events = cast("list[int]", counts)  # checked above
    stable, doze_value = cast("list[bool]", flags)
    return MarsState(interval=interval, stable=stable, failures=failures, doze_value=doze_value,
                     modified_at=min(modified_at, wall_time), doze_events=doze_events,
                     normal_events=normal_events)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return _is_int(value) or isinstance(value, float) and math.isfinite(value)
