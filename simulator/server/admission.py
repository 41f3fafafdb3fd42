"""Admission control for MQTT CONNECTs: a token bucket that keeps a reconnect storm from
swamping the server.

After a restart every device comes back at once. Each accepted CONNECT costs a token
lookup, a session row and a queue scan; thousands in the same second starve the devices
already connected (their PINGRESPs and PUBLISHes wait behind the storm) and the HTTP API.
Over the configured rate the server answers CONNACK 3, "server unavailable", and closes:
MQTT's way of saying "come back later", which the SDK answers with its (jittered) backoff.
The check happens before authentication, so a refused CONNECT costs almost nothing.

Pure: time is passed in, so the limiter is tested without trio.
"""
from __future__ import annotations

import attrs

from .ratelimit import TokenBucket

__all__ = ["ConnectAdmission"]


@attrs.define
class ConnectAdmission:
    """Admits at most ``rate`` CONNECTs per second on average, ``burst`` at once.

    ``rate=None`` admits everything (the default: no limit).
    """

    bucket: TokenBucket | None
    admitted: int = 0
    refused: int = 0

    @classmethod
    def unlimited(cls) -> ConnectAdmission:
        return cls(bucket=None)

    @classmethod
    def limited(cls, rate: float, burst: float, now: float | None = None) -> ConnectAdmission:
        """Full at ``now`` (or at the first CONNECT)."""
        return cls(bucket=TokenBucket.full(rate, burst, now))

    @classmethod
    def from_limits(cls, rate: float | None, burst: float | None,
                    now: float | None = None) -> ConnectAdmission:
        """``rate`` per second with bursts of ``burst`` (default: one second's worth)."""
        if rate is None:
            return cls.unlimited()
        return cls.limited(rate, burst if burst is not None else max(rate, 1.0), now)

    def admit(self, now: float) -> bool:
        """Whether a CONNECT arriving at monotonic time ``now`` may proceed (counted)."""
        if self.bucket is None or self.bucket.take(now) == 0.0:
            self.admitted += 1
            return True
        self.refused += 1
        return False
