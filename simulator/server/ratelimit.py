"""Token bucket for the per-app push rate limit (pure: time is passed in)."""
from __future__ import annotations

import attrs

__all__ = ["TokenBucket"]


@attrs.define
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; each push takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, now: float) -> float:
        """Take a token at monotonic time ``now``. Returns 0.0 on success, else how many
        seconds until one is available (nothing is taken)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
