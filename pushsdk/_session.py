"""The driver of one connection: moves bytes between a stream and a
:class:`~pushsdk._core.SessionCore`, and hands the core's events to the client.

It is the same code on trio and asyncio (the loop primitives come from
:mod:`pushsdk._backend`) and in virtual time. A connection is one task: it reads, hands
messages to the app, acknowledges and pings; otherwise it waits for the next packet or the
core's deadline, whichever comes first. The client never cancels it: to stop it or make it
look again at its flags it calls :meth:`Session.wake`, which ends only the wait for input
(trio's and asyncio's streams both lose nothing when such a wait is cancelled), so a message
the app has seen is always recorded and acknowledged before the session stops.

What the session needs from the client is the small :class:`SessionHost` interface.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

import trio

from ._backend import Backend, Scope
from ._core import (
    Accepted,
    Completed,
    Ended,
    Inbound,
    ProbeWanted,
    Refused,
    Released,
    SessionCore,
    _may_probe,
)
from ._probe import ProbeResult
from .errors import ConnectionLost, ProtocolViolation, PushError
from .protocol import Publish

__all__ = ["ByteStream", "Session", "SessionHost"]

log = logging.getLogger("pushsdk.client")

#: Bytes asked of the transport per read; small so 10,000 clients stay small.
RECEIVE_SIZE = 4096
#: A DISCONNECT at close gets at most this long to be written.
GOODBYE_TIMEOUT = 1.0

STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
#: The task group of a session that never starts tasks: one shared, stateless context
#: (a fresh nullcontext per connection is 82 B held while it idles).
_NO_TASKS = contextlib.nullcontext()


class ByteStream(Protocol):
    """What a connector returns: trio's ``Stream`` has this shape, and so has the SDK's
    asyncio stream (:class:`pushsdk.transport.AsyncioStream`)."""

    async def send_all(self, data: bytes) -> None: ...
    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...
    async def aclose(self) -> None: ...


class SessionHost(Protocol):
    """What a session asks of its client."""

    @property
    def stopping(self) -> bool:
        """True once the client closes or moves to another network."""

    async def remember(self, network_key: str, memory: Mapping[str, Any] | None) -> None:
        """Store (and save) the strategy's memory for ``network_key``."""

    async def save_state(self) -> None: ...

    async def deliver(self, publish: Publish) -> bool | None:
        """Hand ``publish`` to the app and record it (returns when that is saved); False
        if the app did not finish with it (the client is closing): no acknowledgement;
        None if a message stream holds it (see :meth:`delivery_pending`)."""

    def delivery_pending(self) -> bool:
        """A message stream still holds the message handed over last."""

    async def finish_delivery(self) -> bool:
        """Record the message the streams are done with; True to acknowledge it."""

    async def release(self, packet_id: int) -> None:
        """Forget a released QoS 2 packet id (returns when that is saved)."""

    def completed(self, item: Any) -> None:
        """An outbound message or a (un)subscribe request finished."""

    async def probe(self, target: float) -> ProbeResult:
        """Run a probe connection; how it ended."""


class Session:
    """One accepted connection. :meth:`handshake`, then :meth:`serve`, then :meth:`finish`."""

    __slots__ = ("core", "error", "host", "io", "session_present", "stream", "_deferred",
                 "_held", "_tasks", "_wait_scope", "_woken", "uptime")

    def __init__(self, core: SessionCore, stream: ByteStream, host: SessionHost,
                 io: Backend) -> None:
        self.core = core
        self.stream = stream
        self.host = host
        self.io = io
        self.error: PushError | None = None  # why it ended (None: the client stopped it)
        self.uptime = 0.0
        self.session_present = False  # from the CONNACK
        # A message stream holds _held (not acknowledged yet); later PUBLISHes wait in
        # _deferred, so that messages reach the app, and are acknowledged, in order.
        self._held: Inbound | None = None
        self._deferred: list[Inbound] | None = None
        self._wait_scope: Scope | None = None
        self._woken = False  # wake() was called since the loop last looked at everything
        self._tasks: Any = None

    def wake(self) -> None:
        """Make the loop look again at its deadline, outbox and the host's flags (also when
        it is not waiting yet: it then does not start to)."""
        self._woken = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        interrupt = getattr(self.stream, "interrupt", None)
        if interrupt is not None:  # a receive_until under way returns
            interrupt()

    # --- opening ----------------------------------------------------------------------------

    async def handshake(self) -> Accepted | Refused:
        """Send CONNECT, return the CONNACK's meaning. The caller bounds the time it takes.
        Raises :class:`ConnectionLost` or :class:`ProtocolViolation`."""
        core, stream = self.core, self.stream
        receive_until = getattr(stream, "receive_until", None) if self.io.name == "trio" else None
        await self._write(core.data_to_send(), guard=None)
        while True:
            event = core.next_event()
            if isinstance(event, (Accepted, Refused)):
                self.session_present = isinstance(event, Accepted) and event.session_present
                return event
            if isinstance(event, Ended):
                if isinstance(event.error, ProtocolViolation):
                    raise event.error
                raise ConnectionLost("the server closed the connection before CONNACK")
            if event is not None:
                continue
            try:
                if receive_until is not None:  # parked (the caller's scope bounds it)
                    data = await receive_until(RECEIVE_SIZE, math.inf)
                    if data is None:
                        continue
                else:
                    data = await stream.receive_some(RECEIVE_SIZE)
            except STREAM_ERRORS as exc:
                raise ConnectionLost(f"connection lost before CONNACK: {_why(exc)}") from None
            core.receive_data(data, self.io.now())

    # --- the accepted connection ------------------------------------------------------------

    async def serve(self) -> None:
        """Run until the link ends or the host stops; :meth:`finish` afterwards."""
        core, io, stream = self.core, self.io, self.stream
        tasks: Any = io.task_group() if _may_probe(core.strategy) else _NO_TASKS
        # The stream itself, not its bound method: that would be one more object per
        # idle connection.
        parked: Any = stream if io.name == "trio" and hasattr(stream, "receive_until") else None
        try:
            async with tasks as self._tasks:
                # The loop is inline, not a method, and so is its wait: an idle connection's
                # stack is two coroutine frames (0.6 KB) shorter.
                while True:
                    stopping = await self._settle()
                    if not stopping:
                        core.pump()
                    # Acknowledgements of messages the app has seen go out even when stopping.
                    if not await self.flush() or stopping:
                        break
                    event = self._next_event()
                    if isinstance(event, Ended):
                        self.error = self.error or event.error
                        break
                    if event is not None:
                        await self._handle(event)
                        continue
                    deadline = self._tick_if_due()
                    if deadline is None or self._woken:  # woken while busy: look again first
                        continue
                    # Bytes until the deadline or a wake(), whichever comes first.
                    if parked is not None:  # a plain TCP stream: parked, lighter
                        try:
                            data = await parked.receive_until(RECEIVE_SIZE, deadline)
                        except STREAM_ERRORS as exc:
                            self.error = ConnectionLost(f"connection lost: {_why(exc)}")
                            break
                        if data is not None:
                            core.receive_data(data, io.now())
                            del data
                        continue
                    async with io.scope(deadline) as scope:
                        self._wait_scope = scope
                        try:
                            data = await stream.receive_some(RECEIVE_SIZE)
                        except STREAM_ERRORS as exc:
                            self.error = ConnectionLost(f"connection lost: {_why(exc)}")
                            break
                        finally:
                            self._wait_scope = None
                        core.receive_data(data, io.now())
                        del data  # not held by this frame while the connection idles
                if self._tasks is not None:
                    self._tasks.cancel()  # a probe still out dies with the connection
        finally:
            self._tasks = None
            self.uptime = io.now() - core.connected_at
            core.tally.connected_time += self.uptime

    async def _settle(self) -> bool:
        """Save what changed and acknowledge a message the app has finished with; whether
        the host is stopping."""
        self._woken = False
        core, host = self.core, self.host
        if core.memory_dirty:
            core.memory_dirty = False
            await host.remember(core.network_key, core.memory)
        if core.store.dirty:
            await host.save_state()
        if self._held is not None and not host.delivery_pending():
            await self._acknowledge_held()
        return host.stopping

    def _next_event(self) -> Any:
        if self._deferred and self._held is None:
            return self._deferred.pop(0)
        return self.core.next_event()

    def _tick_if_due(self) -> float | None:
        """The core's deadline, or None if it has passed (then the core pinged or ended)."""
        now = self.io.now()
        deadline = self.core.deadline(now)
        if now >= deadline:
            self.core.tick(now)
            return None
        return deadline

    async def _handle(self, event: Any) -> None:
        core = self.core
        if isinstance(event, Inbound):
            if self._held is not None:
                if self._deferred is None:
                    self._deferred = []
                self._deferred.append(event)  # in order, after the one the app holds
                return
            began = self.io.now()
            done = await self.host.deliver(event.publish)
            if done:
                core.acknowledge(event.publish)
            elif done is None:
                self._held = event
            core.paused(began, self.io.now())
        elif isinstance(event, Released):
            await self.host.release(event.packet_id)
            core.complete(event.packet_id)
        elif isinstance(event, Completed):
            self.host.completed(event.item)
        elif isinstance(event, ProbeWanted) and self._tasks is not None:
            self._tasks.start_soon(self._probe, event.target)

    async def _acknowledge_held(self) -> None:
        held, self._held = self._held, None
        assert held is not None
        if await self.host.finish_delivery():
            self.core.acknowledge(held.publish)

    async def _probe(self, target: float) -> None:
        result = await self.host.probe(target)
        if result.retry_after > 0:  # refused for now: no lesson, and no probe meanwhile
            self.core.probe_deferred(self.io.now() + result.retry_after)
        else:
            self.core.probe_done(result.ok, result.silence, self.io.now())
        self.wake()  # the interval in force may have changed

    async def flush(self) -> bool:
        """Write what the core has to send, each write bounded by the ping timeout (a
        stalled write ends the session). False if the link is over."""
        data = self.core.data_to_send()
        if not data:
            return True
        try:
            await self._write(data, guard=self.core.ping_timeout)
        except ConnectionLost as exc:
            if self.core.ping_unwritten:  # not a heartbeat the strategy should learn from
                self.core.ping_unwritten = False
                self.core.ping_sent_at = None
            self.error = self.error or exc
            return False
        return True

    async def _write(self, data: bytes, *, guard: float | None) -> None:
        io = self.io
        total = len(data)
        try:
            try_send = getattr(self.stream, "try_send", None)
            if try_send is not None:  # most writes complete at once: no deadline scope
                sent = try_send(data)
                if sent == total:
                    self.core.sent(total, io.now())
                    return
                data = data[sent:]
            if guard is None:
                await self.stream.send_all(data)
            else:
                async with io.scope(io.now() + guard) as scope:
                    await self.stream.send_all(data)
                if scope.cancelled_caught:
                    raise ConnectionLost(f"sending stalled for {guard:g} s")
        except STREAM_ERRORS as exc:
            raise ConnectionLost(f"connection lost: {_why(exc)}") from None
        self.core.sent(total, io.now())

    # --- closing ----------------------------------------------------------------------------

    async def say_goodbye(self) -> None:
        """DISCONNECT, best effort (the client is closing; at most 1 s); over WebSocket
        then the close handshake (at most 1 s more)."""
        data = self.core.disconnect()
        if not data:
            return
        with contextlib.suppress(ConnectionLost, trio.BusyResourceError):
            await self._write(data, guard=GOODBYE_TIMEOUT)
        close_handshake = getattr(self.stream, "close_handshake", None)
        if close_handshake is not None:
            io = self.io
            with contextlib.suppress(*STREAM_ERRORS, PushError):
                async with io.scope(io.now() + GOODBYE_TIMEOUT):
                    await close_handshake()

    async def finish(self, closing: bool) -> None:
        """After the loop: settle the heartbeat state (a ping outstanding when the link
        broke failed; one outstanding at close did not)."""
        core = self.core
        if core.ping_sent_at is not None and not closing:
            core.heartbeat_failed(self.io.now())
        if core.memory_dirty:
            core.memory_dirty = False
            await self.host.remember(core.network_key, core.memory)


def _why(exc: BaseException) -> str:
    """A non-empty reason for a stream error (some carry no message at all)."""
    text = str(exc)
    cause = exc.__cause__
    if not text and cause is not None:
        text = str(cause)
    return text or type(exc).__name__
