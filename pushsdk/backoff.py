"""Reconnect backoff: exponential with full jitter (Brooker, "Exponential Backoff And Jitter").

``delay(n) ~ U(0, min(max_delay, initial · multiplier^n))`` for the ``n``-th consecutive failed
attempt (``n = 0`` for the first retry). Full jitter spreads a fleet that lost its server at the
same moment over the whole window instead of reconnecting in synchronised waves, which is what
plain doubling (Paho) does. The attempt counter goes back to 0 once a connection has stayed up
``reset_after`` seconds, so a link that flaps right after connecting keeps backing off.
"""
from __future__ import annotations

import math
import random

import attrs

__all__ = ["Backoff"]


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class Backoff:
    """Backoff policy (pure: no clock, randomness passed in)."""

    initial: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=300.0, validator=_positive)
    reset_after: float = attrs.field(default=60.0)

    def __attrs_post_init__(self) -> None:
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_delay < self.initial:
            raise ValueError("max_delay must be at least initial")
        if not (math.isfinite(self.reset_after) and self.reset_after >= 0):
            raise ValueError("reset_after must be a non-negative number")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be non-negative")
        if self.multiplier == 1:
            return self.initial
        # Compare exponents instead of computing multiplier**attempt, which overflows.
        if attempt >= math.log(self.max_delay / self.initial, self.multiplier):
            return self.max_delay
        return min(self.max_delay, self.initial * self.multiplier**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt``: ``U(0, ceiling(attempt))``."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def should_reset(self, uptime: float) -> bool:
        """Whether a connection that stayed up ``uptime`` seconds resets the attempt count."""
        return uptime >= self.reset_after
