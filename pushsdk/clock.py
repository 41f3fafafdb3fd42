"""Wall clocks.

The SDK never reads the system clock directly: anything that needs Unix time (token expiry,
message timestamps, strategy memory that must survive restarts) asks an injected clock object
with a ``now() -> float`` method. Monotonic time (timeouts, heartbeat timers) comes from trio
(``trio.current_time()``, ``trio.sleep*``, ``trio.move_on_*``), so the same code runs in real
time and, under ``trio.testing.MockClock``, in virtual time.
"""
from __future__ import annotations

import time
from typing import Protocol

import attrs
import trio

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    """Anything with ``now()`` returning Unix seconds."""

    def now(self) -> float: ...


@attrs.frozen
class SystemClock:
    """The real wall clock. The only place in the SDK allowed to call ``time.time()``."""

    def now(self) -> float:
        return time.time()


@attrs.frozen
class VirtualClock:
    """Wall clock for virtual-time runs: ``epoch + trio.current_time()``.

    Under ``trio.testing.MockClock`` trio time starts at 0, so ``now()`` starts at ``epoch``
    and advances with the virtual clock. Must be called from inside a trio run.
    """

    epoch: float

    def now(self) -> float:
        return self.epoch + trio.current_time()
