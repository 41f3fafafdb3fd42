"""Simulated TCP connections between a virtual handset and the in-process server.

A :class:`SimConnection` is one TCP connection through a handset's network path. Its two
ends are :class:`trio.abc.Stream` objects: the SDK holds ``client``, the server's handler
holds ``server``. Bytes written at one end arrive at the other after the path's latency, in
order, as TCP would deliver them. No extra task runs per connection: a receiver parks until
the head of its queue is due, woken by a timer of the run's
:class:`~simulator.simclock.SimulationClock`, which keeps a virtual handset cheap.

What the path does to the bytes is decided per write by the handset's :class:`PathHooks`
(NAT verdict, Doze gate, radio accounting), so this module knows nothing about radios or
NATs. Death of a path comes in two flavours, as on a real network:

- *silent* (NAT mapping expired with drop behaviour, network switch, outage): every later
  segment in either direction vanishes and neither end is told, including FIN;
- *reset* (NAT with RST behaviour): both ends see :class:`trio.BrokenResourceError`.
"""
from __future__ import annotations

import functools
import math
import operator
from collections.abc import Coroutine
from typing import Any, Protocol

import trio

from simulator.nat import RETRANSMISSION, Retransmission, Verdict
from simulator.simclock import Timer, current_timers


class PathHooks(Protocol):
    """What the handset's network decides about each segment of one connection."""

    def uplink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        """The handset sends ``nbytes`` (``0`` for a FIN): the radio pays, the NAT decides."""

    def downlink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        """The server sends ``nbytes`` towards the handset: the NAT decides (radio pays on
        arrival)."""

    def arrived(self, conn: SimConnection, now: float, nbytes: int) -> None:
        """``nbytes`` reach the handset's radio (called when the SDK reads them)."""

    def hold_downlink(self, conn: SimConnection, data: bytes) -> bool:
        """True to hold server data at the handset's door (Doze) until :meth:`release`."""

    def hold_uplink(self, conn: SimConnection, data: bytes) -> bool:
        """True to hold the app's data in the handset (Doze firewall) until :meth:`release`."""

    def retransmitted(self, conn: SimConnection, now: float, nbytes: int) -> None:
        """TCP sends an unacknowledged uplink segment of ``nbytes`` again: the radio pays."""

    def ended(self, conn: SimConnection, how: str) -> None:
        """The connection ended: ``"closed"`` (the handset closed it) or ``"reset"``."""

    def filter_downlink(self, conn: SimConnection, data: bytes) -> bytes:
        """The part of server data to deliver now; the handset keeps the rest and hands it
        in later with :meth:`SimConnection.inject` (data a platform defers, not loses)."""


_EOF = b""
#: Due time of the unread rest of a segment that was split by ``max_bytes``: it arrived
#: (and was counted) with the segment.
_ARRIVED = -math.inf


def _checked_max_bytes(max_bytes: int | None) -> int | None:
    if max_bytes is not None:
        max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio's streams
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
    return max_bytes


class _End(trio.abc.HalfCloseableStream):
    """One end of a :class:`SimConnection`: a :class:`trio.abc.HalfCloseableStream` that passes
    ``trio.testing.check_half_closeable_stream``.

    Kept lean because a simulation holds two per handset: the inbox is a list (a deque
    costs half a kilobyte empty) and at most one task waits on it, parked with
    ``wait_task_rescheduled`` rather than a ParkingLot, and woken by a clock timer rather than
    a cancel scope's deadline (no exception per packet). ``send_all`` never waits for the
    path (it has no buffer limit) but is a checkpoint, as the Stream contract asks;
    ``receive_some`` yields once, either while it waits or before it returns ready data.
    ``receive_until`` and ``interrupt`` are those of ``pushsdk.tcp.TcpStream``, so the SDK
    waits here as it does on a real socket: its deadline is a clock timer too.
    ``send_nowait`` writes without a checkpoint, for the server's gateway.
    """

    __slots__ = ("_conn", "_is_client", "_inbox", "_waiter", "_timer", "_closed", "_broken",
                 "_last_due", "_eof_sent", "_eof_received", "_sending", "_until",
                 "_interrupted")

    def __init__(self, conn: SimConnection, is_client: bool) -> None:
        self._conn = conn
        self._is_client = is_client
        self._inbox: list[tuple[float, bytes]] = []
        self._waiter: trio.lowlevel.Task | None = None  # the task parked in receive_some
        self._timer: Timer | None = None  # wakes the waiter when the head of the inbox is due
        self._closed = False  # this end was closed locally
        self._broken = False  # a reset reached this end
        self._last_due = -math.inf  # TCP delivers in order: jitter never reorders
        self._eof_sent = False  # send_eof (or close) sent our FIN
        self._eof_received = False  # the peer's FIN was read: receive_some returns b""
        self._sending = False  # a task is inside send_all / wait_send_all_might_not_block
        self._until = False  # the waiter is in receive_until: interrupt() may end it
        self._interrupted = False  # interrupt() ended a receive_until that has not seen it

    # -- sending -----------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self.send_nowait(data)
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bytes:
        """Write ``data`` at once (the path has no send buffer to fill) and return what is
        left unwritten: always ``b""``. The server's gateway uses it to skip a cancel scope
        per packet (see ``mqtt_gateway._write_now``)."""
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("connection closed for sending")
        if self._broken:
            raise trio.BrokenResourceError("connection reset by peer")
        peer = self._conn.server if self._is_client else self._conn.client
        if peer._closed and self._conn.dead_since is None:
            self._broken = True  # the peer's host answers with a RST
            raise trio.BrokenResourceError("connection reset by peer (peer closed)")
        if data:
            self._conn._transmit(self, bytes(data))
        return b""

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("connection closed")
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Half-close: send our FIN; we can still receive."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending")
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        await trio.lowlevel.checkpoint()
        if not self._eof_sent and not self._broken:
            self._eof_sent = True
            self._conn._transmit(self, _EOF)

    # -- receiving ---------------------------------------------------------------------
    # receive_some and receive_until are plain functions handing back _receive's coroutine:
    # a waiting reader's stack is then one frame, not two (a simulation holds thousands).
    def receive_some(  # type: ignore[override]
            self, max_bytes: int | None = None) -> Coroutine[Any, Any, bytes]:
        return self._receive(max_bytes, math.inf, until=False)  # type: ignore[return-value]

    def receive_until(self, max_bytes: int, deadline: float) -> Coroutine[Any, Any, bytes | None]:
        """:meth:`receive_some`, or None once ``deadline`` (trio time) has passed or
        :meth:`interrupt` was called: the idle wait of a push connection, as
        ``pushsdk.tcp.TcpStream.receive_until`` (which the SDK then uses). The deadline is a
        clock timer, like a packet's arrival: no cancel scope, no ``Cancelled`` raised."""
        return self._receive(max_bytes, deadline, until=True)

    def interrupt(self) -> None:
        """End a :meth:`receive_until` under way, which then returns None (nothing if none
        is): how another task wakes an idle connection."""
        if self._waiter is not None and self._until:
            self._interrupted = True
            self._wake()

    async def _receive(self, max_bytes: int | None, deadline: float, *,
                       until: bool) -> bytes | None:
        # Without a deadline (receive_some) it returns bytes, never None.
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already receiving")
        max_bytes = _checked_max_bytes(max_bytes)
        clock = self._conn.clock
        self._interrupted = False  # only a wait under way is interrupted
        yielded = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("connection closed")
            if self._broken:
                raise trio.BrokenResourceError("connection reset by peer")
            if self._eof_received:
                await trio.lowlevel.checkpoint()
                return b""
            inbox = self._inbox
            now = clock.current_time()  # trio.current_time(), minus two calls
            due = inbox[0][0] if inbox else math.inf
            if due > now:
                if self._interrupted or now >= deadline:
                    self._interrupted = False
                    if not yielded:
                        await trio.lowlevel.checkpoint()
                    return None
                # Park until data due now arrives, or until the head of the inbox or the
                # deadline is due (a time a later delivery may bring forward, see
                # _deliver): one scheduler pass per delivery, no helper task, no cancel
                # scope. Then re-check: a reset or close may have happened meanwhile.
                self._waiter = trio.lowlevel.current_task()
                self._until = until
                wake_at = min(due, deadline)
                if wake_at < math.inf:
                    self._timer = clock.call_at(wake_at, self._wake)
                await trio.lowlevel.wait_task_rescheduled(self._abort)
                yielded = True
                continue
            if not yielded:
                await trio.lowlevel.checkpoint()
                yielded = True
                continue  # re-check after yielding
            return self._take_head(now, max_bytes)

    def _take_head(self, now: float, max_bytes: int | None) -> bytes:
        """The head of the inbox, due by ``now``: up to ``max_bytes`` of it."""
        inbox = self._inbox
        due, data = inbox.pop(0)
        if self._is_client and due != _ARRIVED:
            self._conn.hooks.arrived(self._conn, now, len(data))
        if not data:
            self._eof_received = True  # the peer's FIN: end of stream, for good
        elif max_bytes is not None and len(data) > max_bytes:
            inbox.insert(0, (_ARRIVED, data[max_bytes:]))  # the radio has it already
            data = data[:max_bytes]
        return data

    def _abort(self, _raise_cancel) -> trio.lowlevel.Abort:
        self._waiter = None
        self._cancel_timer()
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        self._cancel_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # -- closing -----------------------------------------------------------------------
    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close this end and send a FIN along the path (which may lose it)."""
        if self._closed:
            return
        self._closed = True
        self._inbox.clear()
        self._wake()
        if not self._broken:
            if not self._eof_sent:
                self._eof_sent = True
                self._conn._transmit(self, _EOF)
            if self._is_client:
                self._conn.hooks.ended(self._conn, "closed")

    def _deliver(self, due: float, data: bytes) -> None:
        if self._closed:
            return
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._inbox.append((due, data))
        if due <= self._conn.clock.current_time():
            self._wake()
        elif self._waiter is not None and (self._timer is None or due < self._timer.when):
            self._cancel_timer()  # the receiver wakes when the new head is due
            self._timer = self._conn.clock.call_at(due, self._wake)

    def _reset(self) -> None:
        self._broken = True
        self._inbox.clear()
        self._wake()


class _Held:
    """Segments of one direction held at the handset's door (Doze firewall), in order.

    ``first`` is when the oldest was first sent: its sender's TCP retransmits it on the
    RFC 6298 schedule from then, so once the door opens it gets through at the sender's
    next retransmission, and if the door stays shut past the last one the sender gives up
    (``give_up`` is that timer)."""

    __slots__ = ("first", "segments", "give_up")

    def __init__(self, first: float) -> None:
        self.first = first
        self.segments: list[bytes] = []
        self.give_up: Timer | None = None


class SimConnection:
    """One simulated TCP connection; ``client`` and ``server`` are its two stream ends.

    ``loss`` is the probability that one try of a data segment is lost on the radio link;
    a lost try is sent again on the RFC 6298 schedule of ``retransmission``
    (:class:`~simulator.nat.Retransmission`), each uplink retry costing the radio
    (``hooks.retransmitted``), and after the last retry the sender aborts. ``loss_draw``
    is the callable giving uniform draws for it (the handset's seeded stream).
    """

    __slots__ = ("client", "server", "hooks", "latency", "rng_jitter", "dead_since", "tag",
                 "held", "held_up", "clock", "loss", "loss_draw", "retransmission",
                 "server_gone_at")

    def __init__(self, hooks: PathHooks, latency: float, jitter=None, tag: Any = None, *,
                 loss: float = 0.0, loss_draw=None,
                 retransmission: Retransmission = RETRANSMISSION) -> None:
        self.clock = current_timers()
        self.hooks = hooks
        self.latency = latency
        self.rng_jitter = jitter  # callable(now) -> extra one-way delay, or None
        self.dead_since: float | None = None  # when the path died silently (None = alive)
        self.tag = tag  # free slot for the owner (e.g. a NAT binding)
        self.held: _Held | None = None  # server data held at the handset's door (Doze)
        self.held_up: _Held | None = None  # the app's data held by the firewall (Doze)
        self.loss = loss
        self.loss_draw = loss_draw
        self.retransmission = retransmission
        #: When the server's TCP aborted (gave up retransmitting): from then its host
        #: answers with RST, and the connection is dead to pushes though the handset
        #: does not know it yet. None: it has not.
        self.server_gone_at: float | None = None
        self.client = _End(self, True)
        self.server = _End(self, False)

    @property
    def server_gone(self) -> bool:
        return self.server_gone_at is not None

    @property
    def dead_from(self) -> float | None:
        """Since when pushes can no longer reach the handset over this connection: the path
        died, or the server gave up (None: neither yet)."""
        times = [t for t in (self.dead_since, self.server_gone_at) if t is not None]
        return min(times) if times else None

    @property
    def alive(self) -> bool:
        return self.dead_since is None and not self.client._broken

    def kill_silently(self, now: float) -> None:
        """The path is gone (NAT expiry, network switch): later segments vanish unannounced."""
        if self.dead_since is None:
            self.dead_since = now

    def release(self, *, immediate: bool = False) -> None:
        """The door opens: held data goes through at its sender's next retransmission
        (``immediate``: at once, for data a server deferred rather than lost)."""
        now = self.clock.current_time()
        for up in (True, False):
            held = self.held_up if up else self.held
            if held is None:
                continue
            at = now if immediate else self.retransmission.next_attempt(held.first, now)
            if at is None:
                continue  # the give-up timer fires now
            self.clock.call_at(at, functools.partial(self._flush, up, held))

    def inject(self, data: bytes) -> None:
        """Deliver server data the handset kept back (``filter_downlink``), one latency from now."""
        if self.dead_since is None and not self.client._broken:
            self.client._deliver(self.clock.current_time() + self.latency, data)

    def _flush(self, up: bool, held: _Held) -> None:
        if (self.held_up if up else self.held) is not held:
            return  # flushed already, or given up
        if up:
            self.held_up = None
        else:
            self.held = None
        if held.give_up is not None:
            held.give_up.cancel()
        sender = self.client if up else self.server
        for data in held.segments:
            self._transmit(sender, data, first=held.first)

    def reset(self) -> None:
        """Both ends learn the connection is gone (a RST reached them)."""
        ended = not (self.client._broken or self.client._closed)
        self.client._reset()
        self.server._reset()
        if ended:
            self.hooks.ended(self, "reset")

    def _hold(self, up: bool, first: float, data: bytes) -> None:
        held = self.held_up if up else self.held
        if held is None:
            held = _Held(first)
            held.give_up = self.clock.call_at(self.retransmission.give_up_at(first),
                                              lambda: self._give_up(up, held))
            if up:
                self.held_up = held
            else:
                self.held = held
        held.segments.append(data)

    def _give_up(self, up: bool, held: _Held) -> None:
        """The sender's TCP ran out of retries: it aborts (its own end breaks, ETIMEDOUT);
        the peer is not told, but the server's host answers later packets with a RST."""
        if up:
            if self.held_up is held:
                self.held_up = None
            self.client._reset()
        else:
            if self.held is held:
                self.held = None
            self.server._reset()
            self.server_gone_at = self.clock.current_time()

    def _transmit(self, sender: _End, data: bytes, first: float | None = None) -> None:
        now = self.clock.current_time()
        first = now if first is None else first
        up = sender._is_client
        if up:
            if self.held_up is not None or self.hooks.hold_uplink(self, data):
                self._hold(True, first, data)
                return
            verdict = self.hooks.uplink(self, now, len(data))
            receiver = self.server
            if self.server_gone and verdict is Verdict.PASS:
                verdict = Verdict.RESET
        else:
            verdict = self.hooks.downlink(self, now, len(data))
            receiver = self.client
        if self.dead_since is not None or verdict is Verdict.DROP:
            if up:
                self._retry_into_the_void(now, len(data))
            return
        if verdict is Verdict.RESET:
            self.reset()
            return
        # Once something is held, everything after it waits too: TCP keeps byte order.
        if not up:
            if self.held is not None or self.hooks.hold_downlink(self, data):
                self._hold(False, first, data)
                return
            if data:
                data = self.hooks.filter_downlink(self, data)
                if not data:
                    return
        sent = now
        if self.loss and data:
            got_through = self._lossy(up, now, len(data))
            if got_through is None:
                return
            sent = got_through
        delay = self.latency + (self.rng_jitter(now) if self.rng_jitter is not None else 0.0)
        receiver._deliver(sent + delay, data)

    def _lossy(self, up: bool, now: float, nbytes: int) -> float | None:
        """Draw the tries lost before one gets through; the time of the good try, or None
        if every try is lost (the sender aborts at its give-up time)."""
        policy, tries = self.retransmission, 0
        while self.loss_draw() < self.loss:
            tries += 1
            if tries > policy.max_retries:
                self.clock.call_at(policy.give_up_at(now), lambda: self._give_up_lost(up))
                if up:
                    _Retries(self, now, nbytes, policy.max_retries)
                return None
        if tries and up:
            _Retries(self, now, nbytes, tries)
        return policy.attempt(now, tries)

    def _give_up_lost(self, up: bool) -> None:
        (self.client if up else self.server)._reset()
        if not up:
            self.server_gone_at = self.clock.current_time()

    def _retry_into_the_void(self, now: float, nbytes: int) -> None:
        """An uplink segment into a dead path is never acknowledged: TCP sends it again and
        again, each try waking the radio, until the app closes the connection or TCP gives
        up. (A FIN counts as a segment: ``nbytes`` 0.)"""
        if not self.client._closed:
            _Retries(self, now, nbytes, self.retransmission.max_retries)


class _Retries:
    """Radio cost of an uplink segment's retransmissions: one clock timer at a time."""

    __slots__ = ("conn", "first", "nbytes", "left", "k")

    def __init__(self, conn: SimConnection, first: float, nbytes: int, tries: int) -> None:
        self.conn, self.first, self.nbytes, self.left, self.k = conn, first, nbytes, tries, 0
        self._next()

    def _next(self) -> None:
        if self.k < self.left:
            self.k += 1
            when = self.conn.retransmission.attempt(self.first, self.k)
            self.conn.clock.call_at(when, self._fire)

    def _fire(self) -> None:
        client = self.conn.client
        if client._closed or client._broken:
            return  # the app closed the socket (its retries stop with it) or TCP aborted
        self.conn.hooks.retransmitted(self.conn, self.conn.clock.current_time(), self.nbytes)
        self._next()
