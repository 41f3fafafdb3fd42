"""A connected device's MQTT session: reading its packets, delivering its queue.

One :class:`MqttSession` per connected device (accepted by ``mqtt_gateway.py``). Its only
long-lived task reads packets; messages go out from a *flush* — in a lane of the server's
:class:`Flusher` on sockets, in a short-lived task of the session otherwise — started by
:meth:`MqttSession.wake` when a push for the device is committed, a PUBACK frees room in
the inflight window, or the inbox subscription is made. An idle connection therefore costs
one task, one codec object and this small slotted object. Every write goes through the
stream's ``send_all``; :class:`SendGuard` ends connections whose device stops reading.

Delivery: queued messages are sent in ``seq`` order as QoS 1 PUBLISHes, at most
``inflight_window`` unacknowledged at a time; a PUBACK marks the message delivered. What is
unacknowledged when the connection ends is resent with DUP=1, in order, after the device
reconnects (persistent session) — and after a server restart or crash (docs/server.md).

Storage: the queue is read directly from the store; everything written here (sent and
delivered marks, closed sessions, subscriptions, receipts) is bookkeeping *posted* to the
server's committer, which commits it in batches (``committer.py``; immediate in a
simulation).
"""
from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import trio

from pushsdk.protocol import (
    NEED_DATA,
    PINGRESP_BYTES,
    SUBACK_FAILURE,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    PubAck,
    Publish,
    ReasonCode,
    RemoteProtocolError,
    State,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from pushsdk.tcp import TcpStream

from . import mqtt5, writes
from .logs import server_logger
from .payloads import deleted_payload
from .validation import InvalidRequest, parse_receipt

if TYPE_CHECKING:
    from .records import Pending
    from .server import PushServer

__all__ = ["Flusher", "MqttSession", "SendGuard", "inbox_topic", "receipt_topic"]

log = server_logger("simulator.server.mqtt")

RECEIVE_SIZE = 16 * 1024
#: How long a closing 5.0 connection may take to write its DISCONNECT.
FAREWELL_TIMEOUT = 2.0


def inbox_topic(app_key: str, registration_id: str) -> str:
    return f"push/{app_key}/{registration_id}"


def receipt_topic(app_key: str, registration_id: str) -> str:
    return f"rcpt/{app_key}/{registration_id}"


class _Closed(Exception):
    """Internal: close this device's connection; ``str()`` says why (it gets logged),
    ``reason`` is the 5.0 DISCONNECT reason code sent first on a 5.0 connection."""

    def __init__(self, why: str, reason: int = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(why)
        self.reason = reason


class MqttSession:
    """A connected device: reads its packets, sends it its queue. Owned by the server's
    routing table (``registration_id -> session``) while connected."""

    __slots__ = (
        "server", "stream", "conn", "registration_id", "app_key", "expiry",
        "keepalive", "sub_qos", "inflight", "last_seq", "next_packet_id", "exhausted",
        "flushing", "detached", "nursery", "outbox", "connack", "token_hash", "revoke_at",
        "v5", "farewell", "scope", "tcp", "serving", "ending", "write_scope",
    )

    def __init__(self, server: PushServer, stream: trio.abc.Stream, conn: Connection,
                 registration_id: str, app_key: str, expiry: float, keepalive: int,
                 sub_qos: int | None, token_hash: bytes = b"") -> None:
        self.server = server
        self.stream = stream
        self.conn = conn
        self.registration_id = registration_id
        self.app_key = app_key
        #: Seconds the session outlives the connection (0: ends with it; inf: for ever).
        self.expiry = expiry
        self.keepalive = keepalive
        self.sub_qos = sub_qos  # granted QoS of the inbox subscription; None = not subscribed
        self.inflight: dict[int, int] = {}  # packet id -> deliveries.seq, in send order
        self.last_seq = 0  # highest seq taken from the queue on this connection
        self.next_packet_id = 1
        self.exhausted = False  # the last look at the queue found nothing more
        self.flushing = False
        self.detached = False
        self.nursery: trio.Nursery | None = None  # cancelling its scope ends the connection
        self.outbox: bytearray | None = None  # not None while a task is writing
        self.connack = b""
        self.token_hash = token_hash  # of the token this connection authenticated with
        self.revoke_at = math.inf  # trio time at which that token is revoked
        self.v5 = conn.protocol_version == 5
        #: A 5.0 DISCONNECT to send before closing (why the server ends the connection).
        self.farewell: bytes | None = None
        #: Ends the connection where one is used (not on plain TCP sockets, see :meth:`run`):
        #: cancelled by a takeover; deadline = keepalive, revocation.
        self.scope: trio.CancelScope | None = None
        #: ``stream`` when it is a plain TCP stream, whose fast path writes use, else None.
        self.tcp = stream if type(stream) is TcpStream else None
        self.serving = False  # CONNACK sent: the queue may be flushed
        self.ending = False  # the connection must end (a takeover, a stall)
        #: Where no ``scope`` ends the connection: the blocking write under way, if any.
        self.write_scope: trio.CancelScope | None = None

    @property
    def inbox(self) -> str:
        """The device's inbox topic (made when used: not a string kept per connection)."""
        return inbox_topic(self.app_key, self.registration_id)

    def __repr__(self) -> str:
        return f"<MqttSession {self.registration_id} inflight={len(self.inflight)}>"

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Send CONNACK, then serve the device until its connection ends.

        On a plain TCP socket with a :class:`Flusher` running, the connection holds its
        task and nothing more: its read waits in the run's idle hub with the deadline
        (the earlier of the keepalive's and the token's revocation), and whatever else
        ends it (a takeover, a stall) sets ``ending`` and interrupts that wait, or
        cancels the one blocking write under way (:meth:`_end`). A cancel scope of its
        own would cost each idle device about 1 kB. Elsewhere one cancel scope does
        all that, and without a Flusher a nursery hosts the flushes too."""
        try:
            if self.server.flusher is None:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    try:
                        await self._read_scoped()
                    finally:
                        # Detach the moment reading stops, before the nursery winds
                        # down: a flush task already scheduled must not write to a codec
                        # that is closed, and a push committed while the nursery closes
                        # must not start one in it (wake() and flush() check `detached`).
                        self._detach()
                    nursery.cancel_scope.cancel()  # flushes still scheduled end here
            elif self.tcp is not None:
                await self._read_loop()
            else:
                await self._read_scoped()
        finally:
            self._detach()
        await self._send_farewell()

    async def _read_scoped(self) -> None:
        """:meth:`_read_loop` under the connection's cancel scope."""
        self.scope = scope = trio.CancelScope(deadline=self.revoke_at)
        with scope:
            await self._read_loop()
        if scope.cancelled_caught and trio.current_time() >= scope.deadline:
            self._expired()  # not when cancelled by another task (a takeover, a stall)

    def _expired(self) -> None:
        """Count and say why the deadline ended the connection (revocation, keepalive)."""
        if trio.current_time() >= self.revoke_at:
            self.server.counters.mqtt_sessions_revoked += 1
            log.info("device %s: its token was revoked: connection closed",
                     self.registration_id)
            self._say_farewell(ReasonCode.NOT_AUTHORIZED, "the device token was revoked")
        else:
            grace = self.keepalive * 1.5
            self.server.counters.mqtt_keepalive_timeouts += 1
            log.debug("device %s silent for %s s: closing", self.registration_id, grace)
            self._say_farewell(ReasonCode.KEEP_ALIVE_TIMEOUT,
                               f"silent for {grace:g} s (1.5 x keepalive)")

    def revoke(self, after: float) -> None:
        """End this connection ``after`` seconds from now: its token is being revoked."""
        self.revoke_at = min(self.revoke_at, trio.current_time() + after)
        if self.scope is not None:
            self.scope.deadline = min(self.scope.deadline, self.revoke_at)
        elif self.tcp is not None:
            self.tcp.interrupt()  # a parked read takes the new deadline

    def take_over(self) -> None:
        """Close this connection because the device connected again (synchronously
        releases the session, so the new connection starts from a consistent queue)."""
        self._say_farewell(ReasonCode.SESSION_TAKEN_OVER, "the device connected again")
        self._detach()
        self._end()

    def superseded(self) -> None:
        """Close this connection because the device connected again to another worker
        process of a cluster. That connection owns the device's queue now, so this one
        lets go without touching the store (its in-flight messages are the new
        connection's redeliveries)."""
        if self.detached:
            return
        self._say_farewell(ReasonCode.SESSION_TAKEN_OVER, "the device connected again")
        self.detached = True
        self.server.sessions.detach(self)
        self.inflight.clear()
        self._end()

    def _end(self) -> None:
        """Close the connection, from whichever task notices it must."""
        self.ending = True
        if self.scope is not None:
            self.scope.cancel()
        elif self.tcp is not None:
            self.tcp.interrupt()  # the reader, if parked, sees `ending`
            if self.write_scope is not None:
                self.write_scope.cancel()

    def _detach(self) -> None:
        if self.detached:
            return
        self.detached = True
        server = self.server
        server.sessions.detach(self)
        expiry = self.expiry
        expires_at = None if expiry == math.inf else server.clock.now() + expiry
        server.committer.post(writes.close_sessions,
                              (self.registration_id, not expiry, expires_at),
                              server.count_expired)
        self.inflight.clear()

    def _say_farewell(self, reason: int, why: str) -> None:
        """On a 5.0 connection, DISCONNECT with ``reason`` before closing (the first
        reason given wins)."""
        if self.v5 and self.farewell is None and self.conn.state is State.CONNECTED:
            self._queue_farewell(self.conn.send(mqtt5.disconnect(reason, why)))

    def _queue_farewell(self, data: bytes) -> None:
        """``data`` is the last thing written: by the write under way if there is one,
        else by :meth:`run` once reading has stopped."""
        if self.outbox is not None:
            self.outbox += data
            self.farewell = b""
        else:
            self.farewell = data

    async def _send_farewell(self) -> None:
        data, self.farewell = self.farewell, b""
        if not data:
            return
        if self.outbox is not None:
            self.outbox += data
            return
        with trio.move_on_after(FAREWELL_TIMEOUT):
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # --- receiving ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """CONNACK, then the device's packets until the connection ends."""
        if self.detached:  # taken over already
            return
        await self._send(self.connack)
        self.connack = b""
        self.serving = True
        self.wake()
        conn, stream, tcp = self.conn, self.stream, self.tcp
        # MQTT-3.1.2-24: silence for 1.5 x keepalive ends the connection; 0 disables it.
        # The deadline is moved on by every packet (never past the token's revocation):
        # far cheaper than a scope per read.
        grace = self.keepalive * 1.5 if self.keepalive else math.inf
        deadline = min(trio.current_time() + grace, self.revoke_at)
        if self.scope is not None:
            self.scope.deadline = deadline
        try:
            while not self.ending:
                event = self._next_event()
                if event is NEED_DATA:
                    if tcp is None:
                        conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
                        continue
                    # Parked in the run's idle hub: no trio wait of its own.
                    data = await tcp.receive_until(RECEIVE_SIZE, deadline)
                    if data is not None:
                        conn.receive_data(data)
                        del data
                        continue
                    # None: the deadline, an interrupt (_end, revoke) or nothing after all.
                    deadline = min(deadline, self.revoke_at)
                    if not self.ending and trio.current_time() >= deadline:
                        self._expired()
                        return
                    continue
                moved = self._moved_on(grace)
                if moved is None:
                    return
                deadline = moved
                if isinstance(event, (ConnectionClosed, Disconnect)) or self.detached:
                    if isinstance(event, Disconnect):
                        self._on_disconnect(event)
                    return  # detached: taken over while this packet was buffered
                await self._handle(event)
        except _Closed as why:
            log.info("closing device %s: %s", self.registration_id, why)
            if why.reason >= 0:
                self._say_farewell(why.reason, str(why)[:200])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def _moved_on(self, grace: float) -> float | None:
        """A packet has come: the connection's new deadline (also the scope's, if it has
        one), or None if the token's revocation has come (the connection is ending)."""
        now = trio.current_time()
        scope = self.scope
        if scope is None and now >= self.revoke_at:
            self._expired()  # no scope's deadline fires on a busy connection
            return None
        deadline = min(now + grace, self.revoke_at)
        if scope is not None:
            scope.deadline = deadline
        return deadline

    def _next_event(self) -> object:
        conn = self.conn
        try:
            return conn.next_event()
        except RemoteProtocolError as exc:
            self.server.counters.mqtt_protocol_errors += 1
            if exc.answer is not None:  # 5.0: the DISCONNECT saying why
                self._queue_farewell(conn.send(exc.answer))
            raise _Closed(f"protocol error: {exc}", -1) from None

    def _on_disconnect(self, event: Disconnect) -> None:
        """A 5.0 client may change its Session Expiry Interval when it disconnects (the
        codec refuses a non-zero one after a CONNECT with none, MQTT-3.14.2-2)."""
        interval = event.properties.session_expiry_interval
        if interval is not None:
            self.expiry = math.inf if interval == mqtt5.NEVER else float(interval)

    async def _handle(self, event: object) -> None:
        if isinstance(event, PubAck):
            self._acknowledged(event.packet_id)
        elif isinstance(event, PingReq):
            await self._send(PINGRESP_BYTES)
        elif isinstance(event, Publish):
            await self._on_publish(event)
        elif isinstance(event, Subscribe):
            await self._on_subscribe(event)
        elif isinstance(event, Unsubscribe):
            await self._on_unsubscribe(event)
        else:  # PUBREC, PUBREL, PUBCOMP: the QoS 2 flow, which this server does not speak
            self.server.counters.mqtt_protocol_errors += 1
            raise _Closed(f"{type(event).__name__.upper()}: QoS 2 is not supported",
                          ReasonCode.QOS_NOT_SUPPORTED)

    async def _on_publish(self, event: Publish) -> None:
        if event.topic != receipt_topic(self.app_key, self.registration_id):
            self.server.counters.mqtt_acl_violations += 1
            raise _Closed(f"PUBLISH to {event.topic[:200]!r} is not allowed "
                          "(devices may publish only to their rcpt/ topic)",
                          ReasonCode.NOT_AUTHORIZED)
        if event.qos == 2:
            self.server.counters.mqtt_protocol_errors += 1
            raise _Closed("PUBLISH with QoS 2 is not supported", ReasonCode.QOS_NOT_SUPPORTED)
        if self.server.receipt_limit.take(self.registration_id, trio.current_time()):
            # A flood: the receipt is dropped, and the connection closed (MQTT 3.1.1 has
            # no negative PUBACK; 5.0 is told 0x96). The bucket is the device's, not the
            # connection's.
            self.server.counters.receipts_refused += 1
            raise _Closed("receipts over the device's receipt rate",
                          ReasonCode.MESSAGE_RATE_TOO_HIGH)
        code = ReasonCode.SUCCESS
        try:
            receipt = parse_receipt(event.payload)
        except InvalidRequest as exc:
            log.info("device %s sent an invalid receipt: %s", self.registration_id, exc.message)
            code = ReasonCode.PAYLOAD_FORMAT_INVALID
        else:  # one for an unknown message is logged by the write
            server = self.server
            server.committer.post(writes.record_receipts,
                                  (self.registration_id, receipt.msg_id, receipt.event),
                                  server.count_receipts)
        if event.packet_id is not None:  # QoS 1
            await self._send(self.conn.send(
                PubAck(event.packet_id, code if self.v5 else ReasonCode.SUCCESS)))

    async def _on_subscribe(self, event: Subscribe) -> None:
        codes = []
        granted = None
        inbox = self.inbox
        refused = ReasonCode.NOT_AUTHORIZED if self.v5 else SUBACK_FAILURE
        for topic_filter, options in event.subscriptions:
            if topic_filter == inbox:
                # QoS 2 is downgraded to 1 (MQTT-3.9.3 allows it); 5.0's other option
                # bits (No Local, Retain Handling, ...) change nothing for an inbox.
                granted = min(options & 3, 1)
                codes.append(granted)
            else:
                log.info("device %s may not subscribe to %r", self.registration_id,
                         topic_filter[:200])
                codes.append(refused)
        if granted is not None and granted != self.sub_qos:
            self.sub_qos = granted
            self.server.committer.post(writes.set_subscriptions, (self.registration_id, granted))
        await self._send(self.conn.send(SubAck(event.packet_id, tuple(codes))))
        if granted is not None:
            self.wake()

    async def _on_unsubscribe(self, event: Unsubscribe) -> None:
        subscribed = self.sub_qos is not None
        inbox = self.inbox
        if inbox in event.topic_filters and subscribed:
            self.sub_qos = None
            self.server.committer.post(writes.set_subscriptions, (self.registration_id, None))
        codes: tuple[int, ...] = ()
        if self.v5:
            codes = tuple(ReasonCode.SUCCESS if f == inbox and subscribed
                          else ReasonCode.NO_SUBSCRIPTION_EXISTED for f in event.topic_filters)
        await self._send(self.conn.send(UnsubAck(event.packet_id, codes)))

    def _acknowledged(self, packet_id: int) -> None:
        seq = self.inflight.pop(packet_id, None)
        if seq is None:
            log.debug("device %s acknowledged unknown packet id %d", self.registration_id,
                      packet_id)
            return
        server = self.server
        server.committer.post(writes.mark_delivered, seq, server.count_delivered)
        if not self.exhausted:
            self.wake()

    # --- sending ------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        """Write ``data`` to the device (``stream.send_all``), in order with every other
        write.

        If another task is writing, ``data`` is appended to what it will write next and
        this returns at once: no lock, no waiting task. On a plain TCP stream what the
        kernel takes at once is written with ``TcpStream.try_send`` (no scheduler round
        trip, which ``send_all`` costs twice per write); the rest, and everything on
        other streams, goes through ``send_all``. A device that does not read for
        ``send_timeout`` is disconnected (:class:`SendGuard`).
        """
        if self.outbox is not None:
            self.outbox += data
            return
        self.outbox = outbox = bytearray()
        guard = self.server.send_guard
        tcp = self.tcp
        try:
            while data:
                if tcp is not None:  # what the kernel takes at once, without waiting
                    data = data[tcp.try_send(data):]
                if data:
                    if self.scope is None and tcp is not None:
                        await self._blocking_write(data)
                    else:
                        await guard.send(self, data)
                data = bytes(outbox)
                outbox.clear()
        finally:
            self.outbox = None

    async def _blocking_write(self, data: bytes) -> None:
        """``guard.send(self, data)`` under a scope that :meth:`_end` cancels, where no
        cancel scope of the connection would end it (the writer may be the reader or a
        Flusher lane)."""
        with trio.CancelScope() as self.write_scope:
            await self.server.send_guard.send(self, data)
        self.write_scope = None
        if self.ending:
            raise trio.ClosedResourceError("the connection is ending")

    def stalled(self) -> None:
        """The device has not read what was written to it for ``send_timeout``: close."""
        log.info("device %s does not read: closing", self.registration_id)
        self._end()

    def wake(self) -> None:
        """Something may be waiting for this device: send it unless a send is under way.

        Cheap and synchronous; called by the router when a push for the device has been
        committed. At most one flush runs per connection: while the server runs its
        :class:`Flusher` (on sockets), in one of that one's lanes; otherwise in a task of
        the session's own.
        """
        self.exhausted = False
        if self.flushing or not self.serving or self.detached or self.sub_qos is None:
            return
        self.flushing = True
        flusher = self.server.flusher
        if flusher is not None:
            flusher.add(self)
        elif self.nursery is not None:
            self.nursery.start_soon(self.flush)
        else:  # the Flusher stopped (the server is shutting down): nothing more is sent
            self.flushing = False

    def _next_batch(self) -> tuple[bytes, list[Pending], int] | None:
        """The queued messages that fit the inflight window, taken (marked sent) and
        encoded: ``(PUBLISH bytes, rows, qos)``; None when there is nothing to send now."""
        if self.detached or self.sub_qos is None or self.exhausted:
            return None
        server = self.server
        committer = server.committer
        qos = self.sub_qos
        window = server.limits.inflight_window
        room = window - len(self.inflight) if qos else window
        if self.v5 and qos:  # the device's Receive Maximum (5.0 §4.9)
            room = min(room, self.conn.send_quota or 0)
        if room <= 0:
            return None
        # 5.0: a Message Expiry Interval is whole seconds, never 0: less than 1 s left
        # is expired here.
        rows, due = server.store.pending_rows(self.registration_id, self.last_seq, room,
                                              server.clock.now(), 1.0 if self.v5 else 0.0)
        committer.post_all(writes.expire_rows, due, server.count_expired)
        committer.post_all(writes.mark_sent, [row.seq for row in rows])
        if len(rows) < room:
            self.exhausted = True
        if not rows:
            return None
        return self._encode(rows, qos), rows, qos

    def _encode(self, rows: list[Pending], qos: int) -> bytes:
        """PUBLISH packets for ``rows``, registered as in flight (QoS 1)."""
        counters = self.server.counters
        conn = self.conn
        now = self.server.clock.now() if self.v5 else 0.0
        inbox = self.inbox
        data = bytearray()
        for row in rows:
            self.last_seq = row.seq
            payload = row.payload
            if payload is None:
                payload = deleted_payload(row.msg_id, row.notice_count or 0,
                                          row.sent_at, row.expires_at)
            packet_id = None
            if qos:
                packet_id = self._new_packet_id()
                self.inflight[packet_id] = row.seq
            if self.v5:
                data += conn.send(Publish(inbox, payload, qos=qos,
                                          dup=row.redelivery and qos > 0, packet_id=packet_id,
                                          properties=mqtt5.push_properties(row, now)))
            else:
                data += conn.send(Publish(inbox, payload, qos=qos,
                                          dup=row.redelivery and qos > 0, packet_id=packet_id))
            counters.messages_redelivered += row.redelivery
        counters.messages_sent += len(rows)
        return bytes(data)

    def _written(self, rows: list[Pending], qos: int) -> None:
        if not qos:  # at most once: written is as delivered as it will get
            server = self.server
            server.committer.post_all(writes.mark_delivered, [row.seq for row in rows],
                                      server.count_delivered)

    async def flush(self) -> None:
        """Send batches until the queue or the window is exhausted."""
        try:
            while (batch := self._next_batch()) is not None:
                data, rows, qos = batch
                await self._send(data)
                self._written(rows, qos)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()
        finally:
            self.flushing = False

    def _new_packet_id(self) -> int:
        packet_id = self.next_packet_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id


class Flusher:
    """Flushes woken sessions from a few long-lived *lanes* instead of a task per wake.

    A broadcast wakes thousands of sessions at once; a task each (spawned, scheduled,
    then garbage that outlives the young GC generations) costs more than the send itself.
    :func:`~.listeners.serve_tcp` runs one Flusher; woken sessions queue here and each
    lane flushes one session at a time through ``stream.send_all``. A device that does not
    read holds one lane until :class:`SendGuard` closes it; the other lanes go on.
    """

    def __init__(self, lanes: int = 32) -> None:
        self.lanes = lanes
        self.ready: deque[MqttSession] = deque()
        self._idle = trio.lowlevel.ParkingLot()

    def add(self, session: MqttSession) -> None:
        self.ready.append(session)
        if self._idle:
            self._idle.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.lanes):
                nursery.start_soon(self._lane)
            task_status.started()

    async def _lane(self) -> None:
        ready = self.ready
        while True:
            if not ready:
                await self._idle.park()
                continue
            session = ready.popleft()
            try:
                await session.flush()
            except Exception:  # a bug: that device's flush ends, the lane goes on
                log.exception("flushing device %s failed", session.registration_id)
                session.stalled()
            # A flush whose writes all went straight to the socket never yielded: let
            # the readers and the HTTP side run between two devices of a broadcast.
            await trio.lowlevel.checkpoint()


class SendGuard:
    """Closes connections whose device does not read: a write pending ``timeout`` s.

    While :meth:`run` runs (:func:`~.listeners.serve_tcp` starts it), writes are tracked
    in a table that one task checks at the earliest deadline, so a write costs no cancel
    scope. Otherwise (a simulation) each write gets a ``move_on_after`` of its own.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.running = False
        self.sending: dict[MqttSession, float] = {}
        self._sooner = trio.Event()

    async def send(self, session: MqttSession, data: bytes) -> None:
        stream = session.stream
        if not self.running:
            with trio.move_on_after(self.timeout) as scope:
                await stream.send_all(data)
            if scope.cancelled_caught:
                session.stalled()
                await trio.lowlevel.checkpoint()  # raises Cancelled: the session ends
            return
        if not self.sending:
            self._sooner.set()  # the checker sleeps without a deadline: give it one
        self.sending[session] = trio.current_time() + self.timeout
        try:
            await stream.send_all(data)
        finally:
            self.sending.pop(session, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        self.running = True
        task_status.started()
        try:
            while True:
                deadline = min(self.sending.values(), default=math.inf)
                with trio.move_on_at(deadline):
                    await self._sooner.wait()
                self._sooner = trio.Event()
                now = trio.current_time()
                for session, due in list(self.sending.items()):
                    if due <= now:
                        del self.sending[session]
                        session.stalled()
        finally:
            self.running = False
