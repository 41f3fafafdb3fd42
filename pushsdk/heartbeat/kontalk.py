"""``kontalk``: Kontalk's first adaptive ping: halve on failure, ×1.5 on success, 5–30 min."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["KontalkState", "KontalkStrategy"]

START_INTERVAL = 30 * 60.0
MIN_INTERVAL = 5 * 60.0
MAX_INTERVAL = 30 * 60.0
GROWTH = 1.5
SHRINK = 0.5


@attrs.frozen
class KontalkState:
    """The interval in effect on this network, in seconds."""

    interval: float = START_INTERVAL


@register_strategy("kontalk")
@attrs.frozen
class KontalkStrategy(HeartbeatStrategy):
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
    longer before growing again and has a 90 s floor; this is the issue 344 design, which
    keeps oscillating around a NAT timeout.
    """

    @property
    def name(self) -> str:
        return "kontalk"

    @property
    def max_interval(self) -> float:
        return MAX_INTERVAL

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> KontalkState:
        # A missing, foreign or damaged record is only a lost hint: start from scratch.
        if not memory or memory.get("strategy") != self.name:
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
        return {"strategy": "kontalk", "interval": state.interval}


def _clamp(seconds: float) -> float:
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


def _is_finite_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
