"""Virtual time for simulations: a trio clock that jumps to the next event, with timers.

:class:`SimulationClock` behaves as ``trio.testing.MockClock(autojump_threshold=0)``: time
stands still while any task can run, and when every task is blocked it jumps to the next
deadline. It stays within trio's documented :class:`trio.abc.Clock` contract and public API:

- The clock's methods only answer questions. :meth:`~SimulationClock.deadline_to_sleep_time`
  computes a sleep time (none if the deadline is due, "forever" otherwise: virtual time
  does not pass by waiting) and remembers the deadline trio asked about — trio asks only
  when no task is runnable, with the earliest pending deadline.
- Time moves in a **driver**, a system task (``trio.lowlevel.spawn_system_task``) waiting in
  ``trio.testing.wait_all_tasks_blocked()``. When trio wakes it, every task is blocked; it
  moves time to the next thing due — that deadline or the earliest timer, whichever comes
  first — and fires the timers due then, from task context. Trio then expires the deadline
  and runs the tasks the timers rescheduled, in one pass.
- Tasks that themselves wait in ``wait_all_tasks_blocked()`` keep MockClock's priority over
  the jump: they are woken with the driver, and the driver does not move time when
  anything but itself was woken or made runnable (a :class:`trio.abc.Instrument` with one
  hook, ``task_scheduled``, counts that); it waits again instead.

The price of moving time from a task is the one MockClock pays too: a pass of trio's run
loop per virtual instant in which only the driver runs, then the pass that runs the tasks
due. (An earlier version moved time inside ``deadline_to_sleep_time`` and saved that pass,
beyond the contract.)

The driver starts with the first :func:`current_simulation_clock` or
:func:`current_timers` call in a run (every simulated link and world makes one), or with
:func:`run`. Without it time cannot move: a run that only sleeps under a bare
``trio.run(..., clock=SimulationClock())`` waits forever, like MockClock without autojump.

**Timers** (:meth:`~SimulationClock.call_at`) wake a parked task without a cancel scope.
Waking a task at a time through trio means a cancel scope whose deadline expires and a
``Cancelled`` exception raised and caught; a simulated link delivering each packet after
its latency would pay that twice per heartbeat. A timer is a heap entry whose callback the
driver runs when time reaches it, typically ``trio.lowlevel.reschedule(task)``. Callbacks
run in the driver task, so they may call trio's synchronous functions, but must not block;
one that raises crashes the run (``trio.TrioInternalError``), as a crashing system task does.

Under another clock (trio's MockClock, to compare), :func:`current_timers` gives the run's
:class:`TaskTimers`, the same timers kept by a task that sleeps until the next one.

Time never goes backwards and starts at 0, like MockClock's. With nothing due (no deadline,
no timer) the run is deadlocked as far as virtual time goes; the driver then checks again
a tenth of a real second later (something outside the run, such as a thread's
``trio.from_thread.run_sync``, may yet wake a task) instead of spinning.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

#: What MockClock reports when virtual time has nowhere to go (trio caps it at a day).
_FOREVER = 999_999_999.0
#: Real seconds between the driver's checks while nothing at all is due.
_DEADLOCK_POLL_S = 0.1


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


class _WakeCounter(trio.abc.Instrument):
    """Counts the tasks trio makes runnable (one hook: ``task_scheduled``).

    The clock notes the count when trio asks it for a sleep time, which trio does only
    when no task is runnable, just before it wakes the tasks waiting for idleness: when
    the driver then runs, one task scheduled since means it was woken alone and nothing
    else has been made runnable; more means another task (a test's own
    ``wait_all_tasks_blocked``) is running at this instant, so time must wait for it.
    """

    __slots__ = ("scheduled",)

    def __init__(self) -> None:
        self.scheduled = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.scheduled += 1


class SimulationClock(trio.abc.Clock):
    """Virtual time that jumps to the next deadline or timer when every task is blocked.

    Use as :func:`run` ``(main)`` or ``trio.run(main, clock=SimulationClock())`` with a
    :func:`current_simulation_clock` call early in ``main`` (see the module docstring).
    """

    __slots__ = ("_now", "_timers", "_order", "_deadline", "_driver", "_wakes", "_idle_mark",
                 "jumps")

    def __init__(self) -> None:
        self._now = 0.0
        # Heap of (when, order, timer): ``order`` keeps same-time timers first-in first-out,
        # so a run does not depend on how the heap breaks ties.
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = 0
        self._deadline = math.inf  # the next trio deadline, as trio last reported it
        self._driver: trio.lowlevel.Task | None = None
        self._wakes = _WakeCounter()
        self._idle_mark = 0  # the wake count when trio last asked for a sleep time
        #: Virtual instants the driver has moved to (a measure of a run's work).
        self.jumps = 0

    def __repr__(self) -> str:
        return f"<SimulationClock time={self._now!r} timers={len(self._timers)}>"

    # --- trio.abc.Clock -------------------------------------------------------------------

    def start_clock(self) -> None:
        self._driver = None  # a new run: its driver starts with it

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Trio asks only when no task is runnable, with its earliest deadline: the driver
        # reads it from here when it wakes in this same pass of the run loop.
        self._deadline = deadline
        self._idle_mark = self._wakes.scheduled
        return 0.0 if deadline <= self._now else _FOREVER

    # --- timers ------------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` once virtual time reaches ``when`` (at the next point where
        every task is blocked if ``when`` is already past). Returns the :class:`Timer`."""
        if math.isnan(when):
            raise ValueError("a timer needs a time, not NaN")
        timer = Timer(when, callback)
        self._order += 1
        heapq.heappush(self._timers, (when, self._order, timer))
        return timer

    # --- the driver --------------------------------------------------------------------------

    def start_driver(self) -> None:
        """Start this run's driver if it is not running (idempotent; call from a task)."""
        if self._driver is None:
            trio.lowlevel.add_instrument(self._wakes)
            self._driver = trio.lowlevel.spawn_system_task(
                self._drive, name="simulator.simclock driver")

    async def _drive(self) -> None:
        wakes = self._wakes
        cushion = 0.0
        while True:
            await trio.testing.wait_all_tasks_blocked(cushion)
            if wakes.scheduled - self._idle_mark > 1:
                cushion = 0.0  # another task woke at this instant: time waits for it
            else:
                cushion = 0.0 if self._advance() else _DEADLOCK_POLL_S

    def _advance(self) -> bool:
        """Every task is blocked: move to the next deadline or timer, fire the timers due.
        False if nothing at all is due."""
        timers = self._timers
        while timers and timers[0][2]._callback is None:
            heapq.heappop(timers)  # cancelled
        due = self._deadline
        if timers and timers[0][0] < due:
            due = timers[0][0]
        if due == math.inf:
            return False
        if due > self._now:
            self._now = due
            self.jumps += 1
        now = self._now
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            callback, timer._callback = timer._callback, None
            if callback is not None:
                callback()
        return True


def current_simulation_clock() -> SimulationClock:
    """The run's :class:`SimulationClock`, its driver started; a clear error if the run
    uses another clock. Call from a task."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, SimulationClock):
        raise RuntimeError(
            "this needs the simulation's clock: trio.run(..., clock=SimulationClock()) "
            f"(simulator.simclock); this run's clock is {clock!r}"
        )
    clock.start_driver()
    return clock


class TaskTimers:
    """:meth:`SimulationClock.call_at` for a run under any other clock (trio's MockClock,
    for comparisons): one system task sleeps until the earliest timer and fires the timers
    due. It costs a cancel scope's expiry per instant with timers, which the simulation
    clock's driver does not; the times are the clock's."""

    __slots__ = ("_timers", "_order", "_scope")

    def __init__(self) -> None:
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = 0
        self._scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._fire, name="simulator.simclock timers")

    def current_time(self) -> float:
        return trio.current_time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """As :meth:`SimulationClock.call_at`."""
        if math.isnan(when):
            raise ValueError("a timer needs a time, not NaN")
        timer = Timer(when, callback)
        self._order += 1
        heapq.heappush(self._timers, (when, self._order, timer))
        if when < self._scope.deadline:
            self._scope.deadline = when
        return timer

    async def _fire(self) -> None:
        timers = self._timers
        while True:
            with self._scope:
                await trio.sleep_forever()
            now = trio.current_time()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                callback, timer._callback = timer._callback, None
                if callback is not None:
                    callback()
            self._scope = trio.CancelScope(deadline=timers[0][0] if timers else math.inf)


_TASK_TIMERS: trio.lowlevel.RunVar[TaskTimers] = trio.lowlevel.RunVar("simulator timers")


def current_timers() -> SimulationClock | TaskTimers:
    """What the run's simulated parts schedule timers with: the :class:`SimulationClock`
    (its driver started) or, under any other clock, the run's :class:`TaskTimers`.
    Both have ``call_at(when, callback)`` and ``current_time()``. Call from a task."""
    clock = trio.lowlevel.current_clock()
    if isinstance(clock, SimulationClock):
        clock.start_driver()
        return clock
    try:
        return _TASK_TIMERS.get()
    except LookupError:
        timers = TaskTimers()
        _TASK_TIMERS.set(timers)
        return timers


def run(async_fn: Callable[..., Awaitable[Any]], *args: Any,
        clock: SimulationClock | None = None, **run_kwargs: Any) -> Any:
    """``trio.run(async_fn, *args)`` in virtual time: under ``clock`` (a new
    :class:`SimulationClock` by default), its driver started before ``async_fn`` runs."""
    clock = SimulationClock() if clock is None else clock

    async def driven() -> Any:
        clock.start_driver()
        return await async_fn(*args)

    return trio.run(driven, clock=clock, **run_kwargs)
