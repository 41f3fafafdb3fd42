"""Idle waits of many connections in one place: what :meth:`TcpStream.receive_until` parks in.

A push connection spends nearly all its life waiting: for the server's next packet, or until
its next heartbeat is due. Waiting in trio costs, per connection, a registration in trio's
epoll (its waiter record and an abort closure), three coroutine frames (``wait_readable``
and the two under it) and, for the deadline, a cancel scope and its cancel status: about
2.5 KB, measured with 5,000 tasks on socket pairs (4.45 KB per task waiting that way,
1.91 KB per task merely parked). A process holding tens of thousands of idle connections
(a fleet, the reference server) feels that.

:class:`IdleHub` keeps those waits instead: one ``select.epoll`` instance and one trio
system task per run. A parked task registers its socket there (one ``epoll_ctl``, as trio
does per wait), puts its deadline on the hub's heap and sleeps in
``trio.lowlevel.wait_task_rescheduled``; the hub's task waits on the epoll's own descriptor
(nested epoll) under one cancel scope whose deadline is the earliest of all, and
reschedules whoever is ready or due. A parked wait is cancellable like any trio wait (its
abort unregisters it). Only public trio API is used (``trio.lowlevel``).

Linux only (``select.epoll``): elsewhere :data:`AVAILABLE` is False and callers wait the
ordinary way.
"""
from __future__ import annotations

import heapq
import itertools
import math
import select
from typing import Any

import trio

__all__ = ["AVAILABLE", "CLOSED", "IdleHub", "Parked", "READY", "TIMEOUT", "WOKEN", "hub"]

AVAILABLE = hasattr(select, "epoll")

#: Why a parked task was resumed (0 while it is still parked).
READY, TIMEOUT, WOKEN, CLOSED = 1, 2, 3, 4

_EVENTS = getattr(select, "EPOLLIN", 1) | getattr(select, "EPOLLRDHUP", 0x2000)


class Parked:
    """One task waiting in the hub for its socket to become readable or its deadline."""

    __slots__ = ("fd", "hub", "result", "task")

    def __init__(self, hub: IdleHub, task: trio.lowlevel.Task, fd: int) -> None:
        self.hub = hub
        self.task = task
        self.fd = fd
        self.result = 0

    def abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        """The parked task is cancelled: leave the hub (trio then raises Cancelled in it)."""
        self.result = CLOSED
        self.hub.drop(self)
        return trio.lowlevel.Abort.SUCCEEDED

    # The record is its own abort function: no bound method is kept per parked wait.
    __call__ = abort


class IdleHub:
    """The parked waits of one trio run (see the module docstring); :func:`hub` gives it."""

    __slots__ = ("_epoll", "_parked", "_scope", "_seq", "_timers")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, Parked] = {}  # by file descriptor
        # (deadline, tie-breaker, parked); entries of waits that ended are skipped when they
        # come up, and swept out when there are a quarter more of them than live waits.
        self._timers: list[tuple[float, int, Parked]] = []
        self._seq = itertools.count()
        self._scope: trio.CancelScope | None = None  # the hub task's wait, while it waits

    def park(self, fd: int, deadline: float) -> Parked:
        """Register the calling task's wait on ``fd`` until ``deadline`` (it must then call
        ``trio.lowlevel.wait_task_rescheduled(parked)`` at once: it is its abort function)."""
        parked = Parked(self, trio.lowlevel.current_task(), fd)
        self._epoll.register(fd, _EVENTS)
        self._parked[fd] = parked
        if deadline < math.inf:
            timers = self._timers
            # Swept once stale entries pass a quarter of the live ones (each holds its
            # Parked record: ~190 B an idle connection would otherwise keep): amortised,
            # a sweep costs a few steps per entry pushed.
            if len(timers) > len(self._parked) * 5 // 4 + 64:
                self._timers = timers = [t for t in timers if not t[2].result]
                heapq.heapify(timers)
            heapq.heappush(timers, (deadline, next(self._seq), parked))
            scope = self._scope
            if scope is not None and deadline < scope.deadline:
                scope.deadline = deadline
        return parked

    def resume(self, parked: Parked, result: int) -> None:
        """Wake ``parked`` with ``result`` (nothing if it was resumed already)."""
        if parked.result:
            return
        parked.result = result
        self.drop(parked)
        trio.lowlevel.reschedule(parked.task)

    def drop(self, parked: Parked) -> None:
        """Forget ``parked``'s registration (its timer entry is skipped later)."""
        if self._parked.get(parked.fd) is parked:
            del self._parked[parked.fd]
            try:
                self._epoll.unregister(parked.fd)
            except (OSError, ValueError):  # the socket is closed already: the kernel forgot it
                pass

    def _next_deadline(self) -> float:
        timers = self._timers
        while timers and timers[0][2].result:
            heapq.heappop(timers)
        return timers[0][0] if timers else math.inf

    async def run(self) -> None:
        """The hub's system task: wait for the first ready socket or deadline, resume."""
        epoll, parked = self._epoll, self._parked
        try:
            while True:
                with trio.CancelScope(deadline=self._next_deadline()) as self._scope:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                self._scope = None
                for fd, _events in epoll.poll(0):
                    waiter = parked.get(fd)
                    if waiter is not None:
                        self.resume(waiter, READY)
                now = trio.current_time()
                timers = self._timers
                while timers and timers[0][0] <= now:
                    waiter = heapq.heappop(timers)[2]
                    if not waiter.result:
                        self.resume(waiter, TIMEOUT)
        finally:
            epoll.close()


_HUB: trio.lowlevel.RunVar[IdleHub | None] = trio.lowlevel.RunVar("pushsdk_idle_hub",
                                                                  default=None)


def hub() -> IdleHub:
    """This trio run's hub, started on first use."""
    current = _HUB.get()
    if current is None:
        current = IdleHub()
        _HUB.set(current)
        trio.lowlevel.spawn_system_task(current.run, name="pushsdk idle hub")
    return current
