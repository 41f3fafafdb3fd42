"""The MQTT 3.1.1 side of the reference server (CONTRACT §3).

One :class:`MqttSession` per connected device. Its only long-lived task is the one that
called :func:`serve_mqtt` and reads packets; messages go out from a short-lived *flush*
task, started by :meth:`MqttSession.wake` when a push for the device is committed, a
PUBACK frees room in the inflight window, or the inbox subscription is made. An idle
connection therefore costs one task, one codec object and this small slotted object.

Delivery: queued messages are sent in ``seq`` order as QoS 1 PUBLISHes, at most
``inflight_window`` unacknowledged at a time; a PUBACK marks the message delivered. What is
unacknowledged when the connection ends is resent with DUP=1, in order, after the device
reconnects (persistent session).

Storage: the queue is read directly from the store; opening a session is a write the
CONNACK waits for; everything else written here (sent and delivered marks, closed sessions,
subscriptions, receipts) is bookkeeping *posted* to the server's committer, which commits
it in batches (see ``committer.py``; immediate in a simulation).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import deque
from typing import TYPE_CHECKING

import trio

from pushsdk.protocol import (
    NEED_DATA,
    SUBACK_FAILURE,
    ConnAck,
    ConnackCode,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    RemoteProtocolError,
    Role,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

from . import writes
from .admission import ConnectAdmission
from .payloads import deleted_payload
from .validation import InvalidRequest, parse_receipt

if TYPE_CHECKING:
    from .records import Pending, TokenOwner
    from .server import PushServer

__all__ = ["Flusher", "MqttSession", "serve_mqtt", "inbox_topic", "receipt_topic"]

log = logging.getLogger("simulator.server.mqtt")

RECEIVE_SIZE = 16 * 1024
#: PINGRESP never changes: encode it once, not once per heartbeat of every device.
PINGRESP = b"\xd0\x00"
#: CONNACK 1, "unacceptable protocol level", for clients of other MQTT versions.
CONNACK_UNSUPPORTED_VERSION = b"\x20\x02\x00\x01"


#: Client id suffix of a probe connection (see ``_serve_probe``).
PROBE_SUFFIX = "/probe"


def inbox_topic(app_key: str, registration_id: str) -> str:
    return f"push/{app_key}/{registration_id}"


def receipt_topic(app_key: str, registration_id: str) -> str:
    return f"rcpt/{app_key}/{registration_id}"


def _write_now(stream: trio.abc.Stream, data: bytes) -> bytes:
    """Write what a plain TCP socket takes at once, without trio's machinery (a cancel
    scope and a scheduling round per send: about half the server's CPU per delivery in a
    broadcast); return what is left over. A stream with a ``send_nowait(data) -> rest``
    method (the simulator's links, which have no send buffer to fill) is written the same
    way. Other streams (TLS) are left alone, for trio's ``send_all``."""
    if type(stream) is not trio.SocketStream:
        send_nowait = getattr(stream, "send_nowait", None)
        return data if send_nowait is None else send_nowait(data)
    fd = stream.socket.fileno()
    if fd < 0:
        return data  # closed: send_all raises ClosedResourceError
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        return data
    except OSError as exc:  # EPIPE, ECONNRESET: as send_all would say it
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
    return data[sent:]


class _Closed(Exception):
    """Internal: close this device's connection; ``str()`` says why (it gets logged)."""


async def serve_mqtt(server: PushServer, stream: trio.abc.Stream) -> None:
    """Serve one MQTT connection until it ends. Never raises for anything the peer does."""
    server._mqtt_connections += 1
    conn = Connection(Role.SERVER, max_packet_size=server.limits.max_packet_size)
    try:
        connect = await _read_connect(server, stream, conn)
        if connect is not None:
            session = await _accept(server, stream, conn, connect)
            if session is not None:
                await session.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        server._mqtt_connections -= 1
        await trio.aclose_forcefully(stream)


def _other_mqtt_version(head: bytes) -> bool:
    """Whether ``head`` starts a CONNECT for an MQTT version other than 3.1/3.1.1 (MQTT 5)."""
    if not head or head[0] != 0x10:
        return False
    i = 1
    while i < min(len(head), 4) and head[i] & 0x80:
        i += 1
    name = i + 1  # protocol name, after the remaining length
    level = head[name + 6:name + 7]
    return head[name:name + 6] == b"\x00\x04MQTT" and level not in (b"", b"\x04")


async def _read_connect(server: PushServer, stream: trio.abc.Stream,
                        conn: Connection) -> Connect | None:
    head = b""  # the first bytes, to answer an MQTT 5 client properly
    with trio.move_on_after(server.limits.connect_timeout):
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                server.counters.mqtt_protocol_errors += 1
                log.info("closing a connection before CONNECT: %s", exc)
                if _other_mqtt_version(head):  # MQTT-3.1.2-2: CONNACK 1, then close
                    with trio.move_on_after(server.limits.send_timeout):
                        await stream.send_all(CONNACK_UNSUPPORTED_VERSION)
                return None
            if event is NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                if len(head) < 16:
                    head += data[:16]
                conn.receive_data(data)
            elif isinstance(event, Connect):
                return event
            else:  # ConnectionClosed
                return None
    log.debug("closing a connection that sent no CONNECT in %s s", server.limits.connect_timeout)
    return None


def _authenticate(server: PushServer, connect: Connect) -> tuple[int, TokenOwner | None]:
    """CONNACK return code, and who the token belongs to when accepted."""
    if not connect.client_id:
        return ConnackCode.IDENTIFIER_REJECTED, None
    if connect.username is None or connect.password is None:
        return ConnackCode.BAD_USERNAME_OR_PASSWORD, None
    owner = server.store.token_device(_token_hash(connect.password), server.clock.now())
    if owner is None:  # unknown, expired or revoked: register again
        return ConnackCode.BAD_USERNAME_OR_PASSWORD, None
    rid = owner.registration_id
    if connect.client_id not in (rid, rid + PROBE_SUFFIX) or owner.app_key != connect.username:
        return ConnackCode.NOT_AUTHORIZED, None
    if connect.will is not None:
        # A will would publish on the device's behalf; devices may publish only receipts.
        return ConnackCode.NOT_AUTHORIZED, None
    return ConnackCode.ACCEPTED, owner


def _token_hash(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()


def _revoke_after(server: PushServer, owner: TokenOwner) -> float:
    """Seconds until the token this connection authenticated with is revoked (inf: not
    scheduled); a connection never outlives its token's revocation."""
    if owner.revoke_at is None:
        return math.inf
    return max(0.0, owner.revoke_at - server.clock.now())


def _admission(server: PushServer) -> ConnectAdmission:
    """The server's CONNECT admission limiter, created on first use from its Limits."""
    admission: ConnectAdmission | None = getattr(server, "connect_admission", None)
    if admission is None:
        limits = server.limits
        admission = ConnectAdmission.from_limits(limits.connect_rate, limits.connect_burst,
                                                 trio.current_time())
        server.connect_admission = admission  # type: ignore[attr-defined]
    return admission


async def _accept(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                  connect: Connect) -> MqttSession | None:
    if not _admission(server).admit(trio.current_time()):
        # Over the admission rate (a reconnect storm): "server unavailable", before the
        # token lookup, so a refusal costs almost nothing. The SDK backs off and retries.
        server.counters.mqtt_connections_refused += 1
        log.debug("refused CONNECT of client id %r: over the admission rate",
                  connect.client_id[:64])
        await _refuse(server, stream, conn, ConnackCode.SERVER_UNAVAILABLE)
        return None
    code, owner = _authenticate(server, connect)
    if owner is None:
        server.counters.mqtt_connections_refused += 1
        log.info("refused CONNECT of client id %r: CONNACK %d", connect.client_id[:64], code)
        await _refuse(server, stream, conn, code)
        return None
    token_hash = _token_hash(connect.password or b"")
    if connect.client_id.endswith(PROBE_SUFFIX):
        await _serve_probe(server, stream, conn, connect, owner, token_hash)
        return None
    rid = connect.client_id
    _take_over(server, rid)
    opened = await server.committer.write(writes.open_session, rid, connect.clean_session)
    _take_over(server, rid)  # another connection of the device opened while this waited
    server.counters.messages_discarded += opened.discarded
    server.counters.messages_expired += opened.expired
    server.counters.mqtt_connections_accepted += 1
    session = MqttSession(server, stream, conn, rid, owner.app_key, connect.clean_session,
                          connect.keepalive, opened.sub_qos, token_hash)
    session.revoke(_revoke_after(server, owner))
    server.sessions.attach(session)
    session.connack = conn.send(ConnAck(session_present=opened.session_present))
    return session


async def _refuse(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                  code: int) -> None:
    """Answer a CONNECT with a refusing CONNACK (then the connection is closed)."""
    with trio.move_on_after(server.limits.send_timeout):
        await stream.send_all(conn.send(ConnAck(return_code=code)))


def _take_over(server: PushServer, rid: str) -> None:
    previous = server.sessions.get(rid)
    if previous is not None:
        # MQTT-3.1.4-2: a second connection with the same client id replaces the first.
        server.counters.mqtt_takeovers += 1
        log.info("device %s connected again: closing its older connection", rid)
        previous.take_over()


class _Probe:
    """A probe connection as the session registry sees it (so it can be limited per
    device and closed when the device's tokens are revoked)."""

    __slots__ = ("scope", "token_hash")

    def __init__(self, token_hash: bytes) -> None:
        self.token_hash = token_hash
        self.scope = trio.CancelScope()

    def revoke(self, after: float) -> None:
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + after)


async def _serve_probe(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                       connect: Connect, owner: TokenOwner, token_hash: bytes) -> None:
    """A *probe* connection (client id ``<registration_id>/probe``): an extension for
    heartbeat strategies that measure the NAT's idle timeout on a second connection, so the
    main one never goes silent longer than is known to be safe (docs/protocol.md).

    It has no session, no queue and does not take the device's connection over: it answers
    PINGREQ until the device disconnects, goes silent past 1.5 × keepalive, or sends
    anything else (which closes it). A device holds at most ``max_probes_per_device``
    (one more gets CONNACK 3, "server unavailable").
    """
    rid = owner.registration_id
    probe = _Probe(token_hash)
    if not server.sessions.add_probe(rid, probe):
        server.counters.mqtt_probes_refused += 1
        log.info("refused a probe connection of device %s: it holds %d already", rid,
                 server.sessions.probes(rid))
        await _refuse(server, stream, conn, ConnackCode.SERVER_UNAVAILABLE)
        return
    try:
        server.counters.mqtt_probes += 1
        probe.revoke(_revoke_after(server, owner))
        with probe.scope:
            await _answer_pings(server, stream, conn, connect.keepalive)
        if probe.scope.cancelled_caught:
            server.counters.mqtt_sessions_revoked += 1
    finally:
        server.sessions.remove_probe(rid, probe)


async def _answer_pings(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                        keepalive: int) -> None:
    grace = keepalive * 1.5 if keepalive else math.inf
    with trio.move_on_after(server.limits.send_timeout):
        await stream.send_all(conn.send(ConnAck()))
    with trio.CancelScope(deadline=trio.current_time() + grace) as silence:
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                return
            if event is NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
                continue
            if not isinstance(event, PingReq):
                return  # DISCONNECT, EOF, or anything a probe has no business sending
            silence.deadline = trio.current_time() + grace
            await stream.send_all(conn.send(PingResp()))


class MqttSession:
    """A connected device: reads its packets, sends it its queue. Owned by the server's
    routing table (``registration_id -> session``) while connected."""

    __slots__ = (
        "server", "stream", "conn", "registration_id", "app_key", "inbox", "clean",
        "keepalive", "sub_qos", "inflight", "last_seq", "next_packet_id", "exhausted",
        "flushing", "detached", "nursery", "outbox", "connack", "token_hash", "revoke_at",
    )

    def __init__(self, server: PushServer, stream: trio.abc.Stream, conn: Connection,
                 registration_id: str, app_key: str, clean: bool, keepalive: int,
                 sub_qos: int | None, token_hash: bytes = b"") -> None:
        self.server = server
        self.stream = stream
        self.conn = conn
        self.registration_id = registration_id
        self.app_key = app_key
        self.inbox = inbox_topic(app_key, registration_id)
        self.clean = clean
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

    def __repr__(self) -> str:
        return f"<MqttSession {self.registration_id} inflight={len(self.inflight)}>"

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.cancel_scope.deadline = self.revoke_at
                try:
                    if self.detached:  # taken over already
                        return
                    await self._send(self.connack)
                    self.connack = b""
                    self.wake()
                    await self._read_loop()
                finally:
                    # Detach the moment reading stops, before the nursery winds down: a
                    # flush task already scheduled must not write to a codec that is
                    # closed, and a push committed while the nursery closes must not try
                    # to start one in it (wake() and _flush() check `detached`).
                    self._detach()
                nursery.cancel_scope.cancel()
        finally:
            self._detach()
        if trio.current_time() >= self.revoke_at:
            self.server.counters.mqtt_sessions_revoked += 1
            log.info("device %s: its token was revoked: connection closed",
                     self.registration_id)

    def revoke(self, after: float) -> None:
        """End this connection ``after`` seconds from now: its token is being revoked."""
        self.revoke_at = min(self.revoke_at, trio.current_time() + after)
        if self.nursery is not None:
            self.nursery.cancel_scope.deadline = self.revoke_at

    def take_over(self) -> None:
        """Close this connection because the device connected again (synchronously
        releases the session, so the new connection starts from a consistent queue)."""
        self._detach()
        self._end()

    def superseded(self) -> None:
        """Close this connection because the device connected again to another worker
        process of a cluster. That connection owns the device's queue now, so this one
        lets go without touching the store (its in-flight messages are the new
        connection's redeliveries)."""
        if self.detached:
            return
        self.detached = True
        self.server.sessions.detach(self)
        self.inflight.clear()
        self._end()

    def _end(self) -> None:
        """Close the connection, from whichever task notices it must."""
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _detach(self) -> None:
        if self.detached:
            return
        self.detached = True
        server = self.server
        server.sessions.detach(self)
        server.committer.post(writes.close_sessions, (self.registration_id, self.clean),
                              server.count_expired)
        self.inflight.clear()

    # --- receiving ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        conn, stream = self.conn, self.stream
        # MQTT-3.1.2-24: silence for 1.5 x keepalive ends the connection; 0 disables it.
        # One scope for the whole connection, its deadline moved on by every packet: far
        # cheaper than a scope per read when thousands of devices ping.
        grace = self.keepalive * 1.5 if self.keepalive else math.inf
        try:
            with trio.CancelScope(deadline=trio.current_time() + grace) as keepalive:
                while True:
                    try:
                        event = conn.next_event()
                    except RemoteProtocolError as exc:
                        self.server.counters.mqtt_protocol_errors += 1
                        raise _Closed(f"protocol error: {exc}") from None
                    if event is NEED_DATA:
                        conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
                        continue
                    keepalive.deadline = trio.current_time() + grace
                    if isinstance(event, (ConnectionClosed, Disconnect)) or self.detached:
                        return  # detached: taken over while this packet was buffered
                    await self._handle(event)
            if keepalive.cancelled_caught:
                self.server.counters.mqtt_keepalive_timeouts += 1
                log.debug("device %s silent for %s s: closing", self.registration_id, grace)
        except _Closed as why:
            log.info("closing device %s: %s", self.registration_id, why)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _handle(self, event: object) -> None:
        if isinstance(event, PubAck):
            self._acknowledged(event.packet_id)
        elif isinstance(event, PingReq):
            await self._send(PINGRESP)
        elif isinstance(event, Publish):
            await self._on_publish(event)
        elif isinstance(event, Subscribe):
            await self._on_subscribe(event)
        elif isinstance(event, Unsubscribe):
            await self._on_unsubscribe(event)
        else:  # PUBREC, PUBREL, PUBCOMP: the QoS 2 flow, which this server does not speak
            self.server.counters.mqtt_protocol_errors += 1
            raise _Closed(f"{type(event).__name__.upper()}: QoS 2 is not supported")

    async def _on_publish(self, event: Publish) -> None:
        if event.topic != receipt_topic(self.app_key, self.registration_id):
            self.server.counters.mqtt_acl_violations += 1
            raise _Closed(f"PUBLISH to {event.topic[:200]!r} is not allowed "
                          "(devices may publish only to their rcpt/ topic)")
        if event.qos == 2:
            self.server.counters.mqtt_protocol_errors += 1
            raise _Closed("PUBLISH with QoS 2 is not supported")
        try:
            receipt = parse_receipt(event.payload)
        except InvalidRequest as exc:
            log.info("device %s sent an invalid receipt: %s", self.registration_id, exc.message)
        else:  # one for an unknown message is logged by the write
            server = self.server
            server.committer.post(writes.record_receipts,
                                  (self.registration_id, receipt.msg_id, receipt.event),
                                  server.count_receipts)
        if event.qos == 1:
            await self._send(self.conn.send(PubAck(event.packet_id)))

    async def _on_subscribe(self, event: Subscribe) -> None:
        codes = []
        granted = None
        for topic_filter, qos in event.subscriptions:
            if topic_filter == self.inbox:
                granted = min(qos, 1)  # QoS 2 is downgraded to 1 (MQTT-3.9.3 allows it)
                codes.append(granted)
            else:
                log.info("device %s may not subscribe to %r", self.registration_id,
                         topic_filter[:200])
                codes.append(SUBACK_FAILURE)
        if granted is not None and granted != self.sub_qos:
            self.sub_qos = granted
            self.server.committer.post(writes.set_subscriptions, (self.registration_id, granted))
        await self._send(self.conn.send(SubAck(event.packet_id, tuple(codes))))
        if granted is not None:
            self.wake()

    async def _on_unsubscribe(self, event: Unsubscribe) -> None:
        if self.inbox in event.topic_filters and self.sub_qos is not None:
            self.sub_qos = None
            self.server.committer.post(writes.set_subscriptions, (self.registration_id, None))
        await self._send(self.conn.send(UnsubAck(event.packet_id)))

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
        """Write ``data`` to the device, in order with every other write.

        If another task is writing, ``data`` is appended to what it will write next and
        this returns at once: no lock, no waiting task. A device that does not read for
        ``send_timeout`` is disconnected.
        """
        if self.outbox is not None:
            self.outbox += data
            return
        data = _write_now(self.stream, data)
        if not data:
            return
        self.outbox = outbox = bytearray()
        try:
            while data:
                with trio.move_on_after(self.server.limits.send_timeout) as timeout:
                    await self.stream.send_all(data)
                if timeout.cancelled_caught:
                    log.info("device %s does not read: closing", self.registration_id)
                    self._end()
                    await trio.lowlevel.checkpoint()  # raises Cancelled
                data = bytes(outbox)
                outbox.clear()
        finally:
            self.outbox = None

    def wake(self) -> None:
        """Something may be waiting for this device: send it unless a send is under way.

        Cheap and synchronous; called by the router when a push for the device has been
        committed. At most one flush runs per connection: on a plain TCP socket, while the
        server runs its :class:`Flusher`, by that task; otherwise by a task of its own.
        """
        self.exhausted = False
        if self.flushing or self.nursery is None or self.detached or self.sub_qos is None:
            return
        self.flushing = True
        flusher = self.server.flusher
        if flusher is not None and type(self.stream) is trio.SocketStream:
            flusher.add(self)
        else:
            self.nursery.start_soon(self._flush)

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
        if room <= 0:
            return None
        rows, due = server.store.pending_rows(self.registration_id, self.last_seq, room,
                                              server.clock.now())
        committer.post_all(writes.expire_rows, due, server.count_expired)
        committer.post_all(writes.mark_sent, [row.seq for row in rows])
        if len(rows) < room:
            self.exhausted = True
        if not rows:
            return None
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
            data += self.conn.send(Publish(self.inbox, payload, qos=qos,
                                           dup=row.redelivery and qos > 0,
                                           packet_id=packet_id))
            server.counters.messages_redelivered += row.redelivery
        server.counters.messages_sent += len(rows)
        return bytes(data), rows, qos

    def _written(self, rows: list[Pending], qos: int) -> None:
        if not qos:  # at most once: written is as delivered as it will get
            server = self.server
            server.committer.post_all(writes.mark_delivered, [row.seq for row in rows],
                                      server.count_delivered)

    async def _flush(self, first: tuple[bytes, list[Pending], int] | None = None) -> None:
        """Send batches until the queue or the window is exhausted (``first`` first)."""
        try:
            batch = first if first is not None else self._next_batch()
            while batch is not None:
                data, rows, qos = batch
                await self._send(data)
                self._written(rows, qos)
                batch = self._next_batch()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()
        finally:
            self.flushing = False

    def flush_now(self) -> None:
        """:meth:`_flush` without a task, for the :class:`Flusher`: what the socket takes at
        once is written here; anything left goes on in a task of the session's own."""
        try:
            while (batch := self._next_batch()) is not None:
                data, rows, qos = batch
                if self.outbox is not None:  # another task is writing: it sends this too
                    self.outbox += data
                    rest = b""
                else:
                    rest = _write_now(self.stream, data)
                if rest:
                    assert self.nursery is not None
                    self.nursery.start_soon(self._flush, (rest, rows, qos))
                    return  # that task clears `flushing`
                self._written(rows, qos)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()
        self.flushing = False

    def _new_packet_id(self) -> int:
        packet_id = self.next_packet_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id


class Flusher:
    """Flushes sessions on plain TCP sockets from one task, without a task per wake.

    A broadcast wakes thousands of sessions at once; a task each (spawned, scheduled,
    then garbage that outlives the young GC generations) costs more than the send itself.
    ``PushServer.serve_tcp`` runs one Flusher; woken sessions queue here and are flushed
    synchronously (:meth:`MqttSession.flush_now`), a checkpoint every ``chunk`` sessions so
    that other tasks keep running during a big broadcast.
    """

    def __init__(self, chunk: int = 100) -> None:
        self.chunk = chunk
        self.ready: deque[MqttSession] = deque()
        self._more = trio.Event()

    def add(self, session: MqttSession) -> None:
        self.ready.append(session)
        self._more.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        ready = self.ready
        while True:
            await self._more.wait()
            self._more = trio.Event()
            done = 0
            while ready:
                ready.popleft().flush_now()
                done += 1
                if done % self.chunk == 0:
                    await trio.lowlevel.checkpoint()
