"""The few event-loop primitives the SDK's async code uses, for trio and for asyncio.

The SDK's logic lives in sans-IO objects (:mod:`pushsdk._core`, the codec, h11); the async
code around them — one connection loop, registration, the probe — is written once against
this small interface and runs on whichever loop calls it (detected with ``sniffio``). Each
primitive maps to one native construct, so a connection costs what the loop itself costs:

=====================  ==============================  =======================================
primitive              trio                            asyncio
=====================  ==============================  =======================================
``now()``              ``trio.current_time()``         ``loop.time()``
``scope(deadline)``    ``trio.CancelScope``            ``asyncio.timeout_at`` (``reschedule``
                                                       to cancel)
``event()``            ``trio.Event``                  ``asyncio.Event``
``task_group()``       nursery                         ``asyncio.TaskGroup``
``to_thread(f)``       ``trio.to_thread.run_sync``     ``asyncio.to_thread``
=====================  ==============================  =======================================

A *scope* is entered with ``async with``; ``cancel()`` ends the wait inside it (that is how
the client wakes a waiting connection), ``deadline`` can be moved, and afterwards
``cancelled_caught`` says whether it ended early. Virtual time works because trio's time is
whatever clock the run was given.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

import sniffio
import trio

__all__ = ["Backend", "Event", "Scope", "TaskGroup", "current"]

T = TypeVar("T")


class Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> Any: ...


class Scope(Protocol):
    @property
    def deadline(self) -> float: ...
    @deadline.setter
    def deadline(self, value: float) -> None: ...
    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...
    async def __aenter__(self) -> Scope: ...
    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool: ...


class TaskGroup(Protocol):
    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None: ...
    def cancel(self) -> None: ...


class Backend(Protocol):
    name: str

    def now(self) -> float: ...
    def scope(self, deadline: float = math.inf) -> Scope: ...
    def event(self) -> Event: ...
    def task_group(self) -> Any: ...
    async def sleep_until(self, deadline: float) -> None: ...
    async def checkpoint(self) -> None: ...
    async def to_thread(self, fn: Callable[..., T], *args: Any) -> T: ...
    async def close_stream(self, stream: Any) -> None: ...
    def current_task(self) -> object: ...


# --- trio ----------------------------------------------------------------------------------

class _TrioScope:
    __slots__ = ("_scope",)

    def __init__(self, deadline: float) -> None:
        self._scope = trio.CancelScope(deadline=deadline)

    async def __aenter__(self) -> _TrioScope:
        self._scope.__enter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        return bool(self._scope.__exit__(exc_type, exc, tb))

    def cancel(self) -> None:
        self._scope.cancel()

    @property
    def deadline(self) -> float:
        return self._scope.deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._scope.deadline = value

    @property
    def cancelled_caught(self) -> bool:
        return self._scope.cancelled_caught


class _TrioTaskGroup:
    """A nursery behind ``async with`` (kept so that both backends look alike)."""

    __slots__ = ("_manager", "_nursery")

    def __init__(self) -> None:
        self._manager = trio.open_nursery()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> _TrioTaskGroup:
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        return bool(await self._manager.__aexit__(exc_type, exc, tb))

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def cancel(self) -> None:
        """Cancel every task in the group (and the body, at its next checkpoint)."""
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()


class _Trio:
    name = "trio"

    def now(self) -> float:
        return trio.current_time()

    def scope(self, deadline: float = math.inf) -> _TrioScope:
        return _TrioScope(deadline)

    def event(self) -> trio.Event:
        return trio.Event()

    def task_group(self) -> _TrioTaskGroup:
        return _TrioTaskGroup()

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    async def to_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args)

    async def close_stream(self, stream: Any) -> None:
        """Close at once, without waiting for a polite TLS goodbye."""
        await trio.aclose_forcefully(stream)

    def current_task(self) -> object:
        return trio.lowlevel.current_task()


# --- asyncio -------------------------------------------------------------------------------

class _AsyncioScope:
    __slots__ = ("_caught", "_deadline", "_loop", "_timeout")

    def __init__(self, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = deadline
        self._timeout: asyncio.Timeout | None = None
        self._caught = False

    @property
    def cancelled_caught(self) -> bool:
        return self._caught

    async def __aenter__(self) -> _AsyncioScope:
        when = self._deadline if math.isfinite(self._deadline) else None
        self._timeout = asyncio.timeout_at(when)
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        timeout = self._timeout
        assert timeout is not None
        try:
            await timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if not timeout.expired():
                raise
            self._caught = True
            return True
        return False

    def cancel(self) -> None:
        self.deadline = -math.inf

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        timeout = self._timeout
        if timeout is not None and not timeout.expired():
            if value == -math.inf:
                value = self._loop.time()
            timeout.reschedule(value if math.isfinite(value) else None)


class _AsyncioTaskGroup:
    __slots__ = ("_group", "_tasks")

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> _AsyncioTaskGroup:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        await self._group.__aexit__(exc_type, exc, tb)
        return False

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        coro = fn(*args)
        assert isinstance(coro, Coroutine)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(self._group.create_task(coro))

    def cancel(self) -> None:
        """Cancel the tasks started in the group (not the body)."""
        for task in self._tasks:
            task.cancel()


class _Asyncio:
    name = "asyncio"

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def scope(self, deadline: float = math.inf) -> _AsyncioScope:
        return _AsyncioScope(deadline)

    def event(self) -> asyncio.Event:
        return asyncio.Event()

    def task_group(self) -> _AsyncioTaskGroup:
        return _AsyncioTaskGroup()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - asyncio.get_running_loop().time()
        if math.isfinite(delay):
            await asyncio.sleep(delay)
        else:
            await asyncio.Event().wait()  # for ever (until cancelled)

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    async def to_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def close_stream(self, stream: Any) -> None:
        await stream.aclose()

    def current_task(self) -> object:
        return asyncio.current_task()


TRIO = _Trio()
ASYNCIO = _Asyncio()


def current() -> Backend:
    """The backend of the event loop running the caller; a clear error outside one."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("pushsdk needs a running trio or asyncio event loop here "
                           "(or use pushsdk.BlockingPushClient)") from None
    if library == "trio":
        return TRIO
    if library == "asyncio":
        return ASYNCIO
    raise RuntimeError(f"pushsdk runs on trio or asyncio, not {library}")
