"""The server's wall clock: Unix seconds for message times and token expiry.

Injected into :class:`~simulator.server.server.PushServer` (a simulation passes a virtual
one; anything with ``now() -> float`` will do). Monotonic time — timeouts, rate limits —
comes from trio, never from here.
"""
from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SystemWallClock", "WallClock"]


class WallClock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""


class SystemWallClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()
