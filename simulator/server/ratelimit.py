"""Token buckets for the server's rate limits (pure: time is passed in)."""
from __future__ import annotations

import attrs

__all__ = ["KeyedBuckets", "TokenBucket"]


@attrs.define
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; each push takes one."""

    rate: float
    burst: float
    tokens: float
    #: When ``tokens`` was last brought up to date; None: full at the first ``take``.
    updated: float | None

    @classmethod
    def full(cls, rate: float, burst: float, now: float | None = None) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, now: float) -> float:
        """Take a token at monotonic time ``now``. Returns 0.0 on success, else how many
        seconds until one is available (nothing is taken)."""
        admitted, seconds = self.reserve(now, 0.0)
        return 0.0 if admitted else seconds

    def reserve(self, now: float, max_wait: float) -> tuple[bool, float]:
        """Take a token at monotonic time ``now``, or one that will be there within
        ``max_wait`` seconds (the bucket goes into debt; later callers wait behind it).
        Returns ``(True, wait)``: go on ``wait`` seconds from now (0.0: at once);
        ``(False, wait)``: nothing taken, and a token is ``wait`` seconds away — more than
        ``max_wait``. Reserved waits are spaced ``1 / rate`` apart: callers over the rate
        are paced, not let through in bursts."""
        if self.updated is None:
            self.updated = now
        elif now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0
        wait = (1.0 - self.tokens) / self.rate
        if wait <= max_wait:
            self.tokens -= 1.0
            return True, wait
        return False, wait


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a device, an address, an app), created full on
    first use; ``rate=None`` means no limit. At most ``max_keys`` buckets are kept: the
    least recently used is forgotten (it would be full again soon anyway)."""

    def __init__(self, rate: float | None, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> float:
        """0.0 if the key may go on now, else seconds until it may (nothing taken)."""
        if self.rate is None:
            return 0.0
        return self._bucket(key, now).take(now)

    def reserve(self, key: str, now: float, max_wait: float) -> tuple[bool, float]:
        """:meth:`TokenBucket.reserve` on the key's bucket; ``(True, 0.0)`` when unlimited."""
        if self.rate is None:
            return True, 0.0
        return self._bucket(key, now).reserve(now, max_wait)

    def _bucket(self, key: str, now: float) -> TokenBucket:
        assert self.rate is not None
        buckets = self._buckets
        bucket = buckets.pop(key, None)  # re-inserted last: dict order is recency
        if bucket is None:
            bucket = TokenBucket.full(self.rate, self.burst, now)
            if len(buckets) >= self.max_keys:
                del buckets[next(iter(buckets))]
        buckets[key] = bucket
        return bucket
