"""Virtual time for simulations: a trio clock that jumps to the next event, with timers.

:class:`SimulationClock` behaves as ``trio.testing.MockClock(autojump_threshold=0)``: time
stands still while any task can run, and when every task is blocked it jumps to the next
deadline. Two things make it cheaper, which a fleet of thousands of virtual handsets feels
on every packet:

- **One scheduler pass per virtual instant.** MockClock's autojump takes two passes of
  trio's run loop per instant (one finds nothing to do and jumps, the next expires the
  deadlines). Trio asks a clock how long it may sleep (:meth:`deadline_to_sleep_time`) only
  when no task is runnable; this clock answers by moving time to the deadline and saying
  "not at all", so the deadlines expire and their tasks run in the same pass.
- **Timers that wake a parked task without a cancel scope** (:meth:`call_at`). Waking a task
  at a time through trio means a cancel scope whose deadline expires and a ``Cancelled``
  exception raised and caught; a simulated link delivering each packet after its latency
  would pay that twice per heartbeat. A timer here is a heap entry whose callback runs when
  time reaches it, typically ``trio.lowlevel.reschedule(task)``.

Timers run inside :meth:`deadline_to_sleep_time`, i.e. inside trio's run loop between two
batches of tasks, at the time they are due: they must be quick and must not block, raise or
call into trio beyond ``reschedule``. Time never goes backwards and starts at 0, like
MockClock's.

A virtual run must not wait for real I/O: with no runnable task and no deadline the clock
cannot know how long real I/O would take, so it reports the deadlock as MockClock does (trio
sleeps "forever").
"""
from __future__ import annotations

import heapq
import math
from typing import Callable

import trio

#: What MockClock reports when virtual time has nowhere to go (trio caps it at a day).
_FOREVER = 999_999_999.0


class Timer:
    """A pending :meth:`SimulationClock.call_at`; :meth:`cancel` it if it is no longer wanted."""

    __slots__ = ("when", "_callback")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self._callback = None

    @property
    def pending(self) -> bool:
        return self._callback is not None


class SimulationClock(trio.abc.Clock):
    """Virtual time that jumps to the next deadline or timer when every task is blocked.

    Use as ``trio.run(main, clock=SimulationClock())``; inside the run,
    :func:`current_simulation_clock` returns it.
    """

    __slots__ = ("_now", "_timers", "_order")

    def __init__(self) -> None:
        self._now = 0.0
        # Heap of (when, order, timer): ``order`` keeps same-time timers first-in first-out,
        # so a run does not depend on how the heap breaks ties.
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = 0

    def __repr__(self) -> str:
        return f"<SimulationClock time={self._now!r} timers={len(self._timers)}>"

    # --- trio.abc.Clock -------------------------------------------------------------------

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Trio calls this only when no task is runnable, just before it waits for I/O:
        # everything that can happen at the current instant has happened, so time moves to
        # the next thing due — the earliest trio deadline or timer — and trio waits for
        # nothing. tests/sim/test_simclock.py checks that assumption against trio.
        timers = self._timers
        while timers and timers[0][2]._callback is None:
            heapq.heappop(timers)  # cancelled
        due = min(deadline, timers[0][0]) if timers else deadline
        if due == math.inf:
            return _FOREVER  # nothing will ever happen: a deadlock, as MockClock reports it
        if due > self._now:
            self._now = due
        self._fire_due()
        return 0.0

    # --- timers ------------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` once virtual time reaches ``when`` (at the latest in the next
        scheduler pass if ``when`` is already past). Returns the :class:`Timer`."""
        if math.isnan(when):
            raise ValueError("a timer needs a time, not NaN")
        timer = Timer(when, callback)
        self._order += 1
        heapq.heappush(self._timers, (when, self._order, timer))
        return timer

    def _fire_due(self) -> None:
        timers, now = self._timers, self._now
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            callback, timer._callback = timer._callback, None
            if callback is not None:
                callback()


def current_simulation_clock() -> SimulationClock:
    """The run's :class:`SimulationClock`; a clear error if the run uses another clock."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, SimulationClock):
        raise RuntimeError(
            "simulated links need virtual time: trio.run(..., clock=SimulationClock()) "
            f"(simulator.simclock); this run's clock is {clock!r}"
        )
    return clock
