"""The sans-IO core of one MQTT client connection: bytes and ``now`` in; bytes, events and a
deadline out (the shape of h11, wsproto and aioquic's ``QuicConnection``).

:class:`SessionCore` decides everything about a connection — the handshake, when a
heartbeat is due and when the link counts as dead, the QoS 0/1/2 flows both ways, packet ids,
redelivery, subscriptions — and never awaits, reads a clock or touches a socket. The driver
(:mod:`pushsdk._session`, the same code on trio and asyncio) loops::

    write core.data_to_send()            # bytes
    handle core.next_event() until None  # Accepted, Inbound, Completed, Ended, ProbeWanted
    wait for bytes until core.deadline() # then core.receive_data(data, now) or core.tick(now)

What outlives a connection — messages in flight, packet ids, the QoS 2 packet ids received
and not yet released — is a :class:`MessageStore` the client owns and hands to each core.

Heartbeat rule: a PINGREQ goes out once the strategy's interval has passed with no packet
sent *or* received, and never later than ``keepalive`` seconds after the last packet sent
(in MQTT 5 the server's Server Keep Alive replaces the declared one). The link is declared
dead when no PINGRESP came within that ping's reply timeout (the strategy's
``reply_timeout``, else ``ping_timeout``), not counting time the app spent handling messages
meanwhile (the answer may be waiting, unread, behind the message being handed over).

MQTT 5.0: the same core speaks it when the CONNECT says ``protocol_level=5``. It honours
the CONNACK's Server Keep Alive, sends QoS 1/2 messages only within the server's Receive
Maximum (the codec's ``send_quota``; the rest wait their turn, resent ones first), turns
failure reason codes into errors on the message or request concerned
(:class:`~pushsdk.errors.PublishRefused`, refused SUBACK codes) and a server's DISCONNECT
into :class:`~pushsdk.errors.ServerDisconnected`; a limit the server declared that a
message breaks (Maximum QoS, Retain Available, Maximum Packet Size) fails that message only.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Set as AbstractSet
from typing import Any

import attrs

from .clock import Clock
from .errors import (
    ConnectionLost,
    ProtocolViolation,
    PublishRefused,
    PushError,
    ServerDisconnected,
)
from .heartbeat import HeartbeatContext, HeartbeatStrategy
from .protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    Role,
    ReasonCode,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
)

__all__ = [
    "Accepted", "Completed", "Ended", "Environment", "Inbound", "MessageStore", "Outbound",
    "ProbeWanted", "Released", "Request", "SessionCore", "Tally",
]

#: Shortest heartbeat interval accepted from a strategy, in seconds.
MIN_INTERVAL = 0.1


@attrs.define
class Tally:
    """The client's running counters (see ClientStatistics for their meanings)."""

    bytes_up: int = 0
    bytes_down: int = 0
    heartbeats_sent: int = 0
    heartbeats_succeeded: int = 0
    heartbeats_failed: int = 0
    probes: int = 0
    connect_attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    registrations: int = 0
    messages_received: int = 0
    malformed_messages: int = 0
    receipts_acknowledged: int = 0
    publishes_completed: int = 0
    state_save_errors: int = 0
    connected_time: float = 0.0


@attrs.define(eq=False)
class Environment:
    """What the platform reports about the device, shared by the client and its core."""

    clock: Clock
    network_key: str | None
    network_type: str
    app_state: str
    app_state_since: float = 0.0
    foreground_changed_at: float | None = None
    device_idle: bool = False
    idle_ended_at: float = -math.inf
    #: The platform's "is the default network active?" query, or None (it cannot say).
    network_active: Callable[[], bool] | None = None


@attrs.define(eq=False)
class Outbound:
    """A message this client sends: an app ``publish()`` or a receipt.

    ``stage`` 0: PUBLISH sent (or to send), waiting for PUBACK/PUBREC; 1: PUBREL sent,
    waiting for PUBCOMP. ``waiter`` is the driver's (opaque here); ``persist`` whether the
    message belongs in the state file; ``receipt`` marks server-mode receipts; ``error``
    why it failed (MQTT 5: refused, or over a limit of the server's), once completed.
    """

    publish: Publish
    stage: int = 0
    waiter: Any = None
    persist: bool = False
    receipt: bool = False
    error: PushError | None = None


@attrs.define(eq=False)
class Request:
    """A SUBSCRIBE (``subscriptions``: filter and options byte, which is the QoS without
    5.0 options) or UNSUBSCRIBE (``filters``) and, once answered, its ``result`` (the SUBACK
    return or reason codes; ``()`` for UNSUBACK) and the server's ``reason_string``."""

    subscriptions: tuple[tuple[str, int], ...] = ()
    filters: tuple[str, ...] = ()
    waiter: Any = None
    result: tuple[int, ...] | None = None
    reason_string: str | None = None


@attrs.define(eq=False)
class MessageStore:
    """Session state that outlives one connection (MQTT 3.1.1 §4.1)."""

    # Lists, not deques: they stay short, and an empty deque costs 600 bytes per client.
    queued: list[Outbound] = attrs.field(factory=list)
    inflight: dict[int, Outbound] = attrs.field(factory=dict)
    #: QoS 2 packet ids received and acknowledged (PUBREC) but not yet released (PUBREL).
    received_qos2: AbstractSet[int] = frozenset()  # a set of its own once there is one
    requests: dict[int, Request] = attrs.field(factory=dict)
    waiting_requests: list[Request] = attrs.field(factory=list)
    next_packet_id: int = 1
    #: Something the state file holds changed (outbound stages, received QoS 2 ids).
    dirty: bool = False

    def allocate(self) -> int:
        while True:
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight and packet_id not in self.requests:
                return packet_id

    def forget_session(self) -> None:
        """The server has no session for us (session present = 0): what it had is gone.
        Messages in flight are sent again as new; nothing it sent is awaiting release."""
        if self.received_qos2:
            self.received_qos2 = frozenset()
            self.dirty = True
        resent = sorted(self.inflight.values(), key=_packet_order)
        for item in resent:
            item.stage = 0
        self.queued[:0] = resent
        self.inflight.clear()

    def requeue_requests(self) -> None:
        """Unanswered SUBSCRIBE/UNSUBSCRIBE go out again on the next connection."""
        for packet_id in sorted(self.requests):
            self.waiting_requests.append(self.requests[packet_id])
        self.requests.clear()


def _packet_order(item: Outbound) -> int:
    return item.publish.packet_id or 0


# --- events the core hands to its driver ------------------------------------------------------

@attrs.frozen
class Accepted:
    session_present: bool


@attrs.frozen
class Refused:
    """CONNACK with a refusal: the 3.1.1 return code or 5.0 reason code, and in 5.0 what the
    server said about it."""

    return_code: int
    reason_string: str | None = None
    server_reference: str | None = None


@attrs.frozen
class Inbound:
    """A PUBLISH to hand to the app; then call :meth:`SessionCore.acknowledge`."""

    publish: Publish


@attrs.frozen
class Released:
    """A QoS 2 message was released (PUBREL): persist, then :meth:`SessionCore.complete`."""

    packet_id: int


@attrs.frozen
class Completed:
    """An :class:`Outbound` was acknowledged (or, QoS 0, written), or a :class:`Request`
    answered."""

    item: Outbound | Request


@attrs.frozen
class Ended:
    """The connection is over; ``error`` says why."""

    error: ConnectionLost | ProtocolViolation


@attrs.frozen
class ProbeWanted:
    """The strategy wants a probe connection to test ``target`` seconds of silence."""

    target: float


Event = Accepted | Refused | Inbound | Released | Completed | Ended | ProbeWanted


def _may_probe(strategy: HeartbeatStrategy) -> bool:
    """Whether ``strategy`` can ask for probe connections (it overrides ``probe``)."""
    return type(strategy).probe is not HeartbeatStrategy.probe


class SessionCore:
    """One connection, from CONNECT to its end. See the module docstring."""

    __slots__ = (
        "_conn", "_events", "_out", "_resend", "accepted", "ask_reply", "connected_at",
        "env", "hb", "interval", "keepalive", "last_activity", "last_sent", "max_inflight",
        "memory", "memory_dirty", "network_key", "piggyback_now", "ping_lateness",
        "ping_paused", "ping_sent_at", "ping_silence", "ping_timeout", "probe_not_before",
        "probing", "reply_timeout", "server_keepalive", "store", "strategy", "tally",
        "ping_unwritten",
    )

    def __init__(self, connect: Connect, *, now: float, store: MessageStore,
                 strategy: HeartbeatStrategy, env: Environment, tally: Tally,
                 ping_timeout: float, max_inflight: int, max_packet_size: int,
                 ask_reply_timeout: bool = False) -> None:
        version = 5 if connect.protocol_level == 5 else 4
        self._conn = Connection(Role.CLIENT, protocol_version=version,
                                max_packet_size=max_packet_size)
        self._events: list[Event] = []
        self._out = bytearray(self._conn.send(connect))
        self._resend: list[int] | None = None  # in flight, to send again as quota allows
        self.store = store
        self.strategy = strategy
        self.env = env
        self.tally = tally
        self.keepalive: float = connect.keepalive or math.inf
        self.server_keepalive: int | None = None  # MQTT 5 CONNACK's Server Keep Alive
        self.ping_timeout = ping_timeout
        self.reply_timeout = ping_timeout  # of the ping outstanding (the strategy's say)
        self.ask_reply = ask_reply_timeout  # ask strategy.reply_timeout for each ping
        self.max_inflight = max_inflight
        self.accepted = False
        self.network_key = env.network_key or ""
        self.connected_at = self.last_activity = self.last_sent = now
        self.hb: Any = None  # the strategy's state
        self.memory: Mapping[str, Any] | None = None  # the strategy memory last stored
        self.memory_dirty = False
        self.interval: float | None = None
        self.ping_sent_at: float | None = None
        self.ping_unwritten = False  # the PINGREQ is in _out, not yet written
        self.ping_lateness = self.ping_silence = self.ping_paused = 0.0
        self.piggyback_now = False
        self.probing = False
        self.probe_not_before = -math.inf  # after a probe refused for now (probe_deferred)

    # --- outputs ----------------------------------------------------------------------------

    @property
    def protocol_version(self) -> int:
        """4 (MQTT 3.1.1) or 5."""
        return 5 if self._conn.protocol_version == 5 else 4

    def data_to_send(self) -> bytes:
        """Bytes to write now (possibly empty)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def deadline(self, now: float) -> float:
        """When to call :meth:`tick` if nothing arrives: the next heartbeat, or the
        outstanding ping's timeout (``inf`` while the device is idle)."""
        env = self.env
        if not self.accepted:
            return math.inf  # the driver bounds the handshake itself (connect timeout)
        if env.device_idle:
            self.piggyback_now = False  # no radio for us, nothing to ride on
            return math.inf  # Doze defers our alarms; leaving Doze wakes the driver
        if self.ping_sent_at is not None:
            # A ping sent before Doze gets a full timeout after it: its answer was held.
            return (max(self.ping_sent_at, env.idle_ended_at) + self.reply_timeout
                    + self.ping_paused)
        if self.piggyback_now:
            return now  # the radio is up: ping now (cleared when sent)
        interval = self.strategy.interval(self.hb, self.context(now))
        # A strategy bug (0, negative, NaN) must not become a busy loop.
        self.interval = interval if interval >= MIN_INTERVAL else MIN_INTERVAL
        return min(self.last_activity + self.interval, self.last_sent + self.keepalive)

    # --- inputs -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Bytes from the server (``b""``: it closed its side)."""
        self.tally.bytes_down += len(data)
        self.last_activity = now
        conn = self._conn
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                when = "from the server" if self.accepted else "before CONNACK"
                if exc.answer is not None:  # MQTT 5: say why before closing
                    self._out += conn.send(exc.answer)
                self._end(ProtocolViolation(f"protocol error {when}: {exc}"))
                return
            except LocalProtocolError:  # next_event after ConnectionClosed: already ended
                return
            if event is NEED_DATA:
                return
            self._handle(event, now)

    def sent(self, nbytes: int, now: float) -> None:
        """The driver wrote ``nbytes`` of :meth:`data_to_send` at ``now``."""
        self.tally.bytes_up += nbytes
        self.last_sent = self.last_activity = now
        if self.ping_unwritten:
            self.ping_unwritten = False
            self.tally.heartbeats_sent += 1
            self._maybe_probe(now)

    def tick(self, now: float) -> None:
        """Time passed :meth:`deadline` with nothing received: ping, or end the link."""
        if self.ping_sent_at is not None:
            self.heartbeat_failed(now)
            self._end(ConnectionLost(f"no PINGRESP within {self.reply_timeout:g} s"))
            return
        deadline = self.deadline(now)
        self.ping_lateness = max(0.0, now - deadline)
        self.ping_silence = now - self.last_activity
        self.ping_sent_at = now
        self.ping_paused = 0.0
        self.piggyback_now = False
        self.ping_unwritten = True
        self.reply_timeout = self._reply_timeout(now)
        self._send(PingReq())

    def _reply_timeout(self, now: float) -> float:
        """The answer deadline of the ping going out now: the strategy's for this beat
        (Mars: shorter after a very late one), unless the app fixed it (Timeouts.ping)."""
        if not self.ask_reply:
            return self.ping_timeout
        ctx = self.context(now, self.ping_lateness, self.ping_silence)
        timeout = self.strategy.reply_timeout(self.hb, ctx)
        if timeout is None or not timeout > 0 or not math.isfinite(timeout):
            return self.ping_timeout
        return float(timeout)

    def paused(self, since: float, now: float) -> None:
        """The app held the connection from ``since`` to ``now`` (a message being handed
        over): that time does not count against an outstanding ping."""
        if self.ping_sent_at is not None:
            self.ping_paused += now - max(since, self.ping_sent_at)

    def acknowledge(self, publish: Publish) -> None:
        """The app is done with ``publish`` (and whatever must be saved is saved)."""
        if publish.qos == 1:
            self._send(PubAck(publish.packet_id))  # type: ignore[arg-type]
        elif publish.qos == 2:
            self._send(PubRec(publish.packet_id))  # type: ignore[arg-type]

    def complete(self, packet_id: int) -> None:
        """A released QoS 2 message is forgotten (and that is saved): PUBCOMP."""
        self._send(PubComp(packet_id))

    def disconnect(self) -> bytes:
        """The DISCONNECT packet (empty if the connection cannot send it any more)."""
        try:
            return self._conn.send(Disconnect())
        except LocalProtocolError:
            return b""

    def radio_active(self, now: float) -> None:
        """The platform reports radio activity: ping now if the strategy finds it worth it."""
        if self.ping_sent_at is not None or self.env.device_idle or self.hb is None:
            return
        silence = now - self.last_activity
        if self.strategy.piggyback(self.hb, self.context(now), silence):
            self.piggyback_now = True

    def begin(self, now: float, memory: Mapping[str, Any] | None) -> None:
        """After CONNACK 0: start the strategy from this network's ``memory``."""
        self.memory = memory
        self.hb = self.strategy.start(memory, self.context(now))
        self._note_memory()

    def subscribe(self, request: Request) -> None:
        """Send a SUBSCRIBE or UNSUBSCRIBE; :class:`Completed` when answered (at once, with
        the reason code, if a limit the server declared forbids it: MQTT 5 wildcards or
        shared subscriptions not available)."""
        packet_id = self.store.allocate()
        if request.subscriptions:
            event: Subscribe | Unsubscribe = Subscribe(packet_id, tuple(
                (f, o if o <= 2 else SubscriptionOptions.from_byte(o))
                for f, o in request.subscriptions))
        else:
            event = Unsubscribe(packet_id, request.filters)
        try:
            self._send(event)
        except LocalProtocolError as exc:
            code = exc.reason_code or ReasonCode.UNSPECIFIED_ERROR
            request.result = tuple(code for _ in request.subscriptions or request.filters)
            request.reason_string = str(exc)
            self._events.append(Completed(request))
            return
        self.store.requests[packet_id] = request

    def resend_inflight(self) -> None:
        """After reconnecting to a session that still exists: what was in flight goes out
        again, in order (DUP=1 for PUBLISH, PUBREL as it was), within the server's Receive
        Maximum (MQTT 5; the rest as acknowledgements free room)."""
        self._resend = sorted(self.store.inflight, key=self._send_order)
        self._resend_some()
        self.store.dirty = self.store.dirty or any(
            i.persist for i in self.store.inflight.values())

    def _resend_some(self) -> None:
        pending = self._resend
        inflight = self.store.inflight
        while pending:
            item = inflight.get(pending[0])
            if item is None:
                pending.pop(0)
            elif item.stage:
                self._send(PubRel(pending.pop(0)))
            elif not self._quota():
                return
            else:
                pending.pop(0)
                self._send_publish(item, attrs.evolve(item.publish, dup=True))
        self._resend = None

    def _quota(self) -> bool:
        """Room for one more QoS 1/2 PUBLISH within the server's Receive Maximum."""
        quota = self._conn.send_quota
        return quota is None or quota > 0

    def _send_publish(self, item: Outbound, publish: Publish) -> bool:
        """Send ``publish`` for ``item``; False, with the item failed and forgotten, if a
        limit the server declared forbids it (MQTT 5)."""
        try:
            self._send(publish)
        except LocalProtocolError as exc:
            if publish.packet_id is not None:
                self.store.inflight.pop(publish.packet_id, None)
            code = exc.reason_code or ReasonCode.UNSPECIFIED_ERROR
            item.error = PublishRefused(f"cannot publish to {publish.topic!r}: {exc}", code)
            self._events.append(Completed(item))
            return False
        return True

    def _send_order(self, packet_id: int) -> int:
        # Packet ids wrap at 65535: order by distance behind the next id to allocate.
        return (packet_id - self.store.next_packet_id) % 65536

    def pump(self) -> None:
        """Move queued messages and requests onto the wire while the window allows (our
        ``max_inflight``, and in MQTT 5 the server's Receive Maximum; messages to resend
        go first)."""
        store = self.store
        while store.waiting_requests:
            self.subscribe(store.waiting_requests.pop(0))
        if self._resend:
            self._resend_some()
            if self._resend:
                return
        while store.queued and len(store.inflight) < self.max_inflight:
            item = store.queued[0]
            if item.publish.qos == 0:
                store.queued.pop(0)
                if self._send_publish(item, item.publish):
                    self._events.append(Completed(item))
                continue
            if not self._quota():
                return
            store.queued.pop(0)
            packet_id = store.allocate()
            item.publish = attrs.evolve(item.publish, packet_id=packet_id, dup=False)
            store.inflight[packet_id] = item
            if self._send_publish(item, item.publish):
                store.dirty = store.dirty or item.persist

    # --- heartbeats ---------------------------------------------------------------------------

    def context(self, now: float, lateness: float = 0.0,
                silence: float = 0.0) -> HeartbeatContext:
        env = self.env
        return HeartbeatContext(
            now=now,
            wall_time=env.clock.now(),
            network_key=self.network_key,
            network_type=env.network_type,  # type: ignore[arg-type]
            app_state=env.app_state,  # type: ignore[arg-type]
            app_state_since=env.app_state_since,
            connected_since=self.connected_at,
            lateness=lateness,
            silence=silence,
            foreground_changed_at=env.foreground_changed_at,
            server_keepalive=self.server_keepalive,
            network_active=None if env.network_active is None else env.network_active(),
        )

    def heartbeat_failed(self, now: float) -> None:
        """The outstanding ping failed (no answer, or the link broke while it was out)."""
        self.tally.heartbeats_failed += 1
        self.ping_sent_at = None
        self.hb = self.strategy.on_failure(
            self.hb, self.context(now, self.ping_lateness, self.ping_silence))
        self._note_memory()

    def probe_deferred(self, until: float) -> None:
        """A probe was refused for now: none is asked for before ``until`` (the strategy is
        not told; on this connection only)."""
        self.probing = False
        self.probe_not_before = until

    def probe_done(self, ok: bool | None, silence: float, now: float) -> None:
        """A probe ended: ``ok`` True/False = the silence survived/failed; None = no probe."""
        self.probing = False
        self.hb = self.strategy.on_probe(self.hb, self.context(now, silence=silence), ok)
        self._note_memory()

    def _pong(self, now: float) -> None:
        if self.ping_sent_at is None:
            return
        self.ping_sent_at = None
        self.tally.heartbeats_succeeded += 1
        self.hb = self.strategy.on_success(
            self.hb, self.context(now, self.ping_lateness, self.ping_silence))
        self._note_memory()

    def _note_memory(self) -> None:
        memory = self.strategy.memory(self.hb)
        if memory != self.memory:
            self.memory = memory
            self.memory_dirty = True

    def _maybe_probe(self, now: float) -> None:
        """Ask for a probe connection now, while the radio is up for our heartbeat, if the
        strategy wants one measured (pushsdk._probe)."""
        if self.probing or now < self.probe_not_before or not _may_probe(self.strategy):
            return
        target = self.strategy.probe(self.hb, self.context(now))
        if target is not None and target > 0 and math.isfinite(target):
            self.probing = True
            self.tally.probes += 1
            self._events.append(ProbeWanted(target))

    # --- packets --------------------------------------------------------------------------------

    def _send(self, event: Any) -> None:
        self._out += self._conn.send(event)

    def _end(self, error: ConnectionLost | ProtocolViolation) -> None:
        self._events.append(Ended(error))

    def _handle(self, event: Any, now: float) -> None:
        if isinstance(event, PingResp):
            self._pong(now)
        elif isinstance(event, (Publish, PubRel)):
            self._inbound(event)
        elif isinstance(event, (PubAck, PubRec, PubComp)):
            self._outbound_ack(event)
        elif isinstance(event, (SubAck, UnsubAck)):
            requests = self.store.requests
            request = requests.pop(event.packet_id, None)
            if not requests:
                requests.clear()  # an emptied dict keeps its table (160 B); this frees it
            if request is not None:
                request.result = event.return_codes if isinstance(event, SubAck) else ()
                request.reason_string = event.properties.reason_string
                self._events.append(Completed(request))
        elif isinstance(event, ConnAck):
            self._connack(event, now)
        elif isinstance(event, Disconnect):
            self._end(_disconnected(event))
        elif isinstance(event, ConnectionClosed):
            self._end(ConnectionLost("the server closed the connection"))

    def _connack(self, event: ConnAck, now: float) -> None:
        props = event.properties
        if event.return_code:
            self._events.append(Refused(event.return_code, props.reason_string,
                                        props.server_reference))
            return
        self.accepted = True
        self.connected_at = self.last_activity = now
        if props.server_keep_alive is not None:
            # MQTT-3.2.2-21: the server's value replaces the one we declared.
            self.server_keepalive = props.server_keep_alive
            self.keepalive = props.server_keep_alive or math.inf
        self._events.append(Accepted(event.session_present))

    def _inbound(self, event: Publish | PubRel) -> None:
        if isinstance(event, PubRel):
            if event.packet_id in self.store.received_qos2:
                self._events.append(Released(event.packet_id))
            else:
                self._send(PubComp(event.packet_id))  # released before (or never known)
            return
        self.tally.messages_received += 1
        if event.qos == 2 and event.packet_id in self.store.received_qos2:
            self._send(PubRec(event.packet_id or 0))  # seen before: acknowledge, not dispatch
            return
        self._events.append(Inbound(event))

    def _outbound_ack(self, event: PubAck | PubRec | PubComp) -> None:
        store = self.store
        item = store.inflight.get(event.packet_id)
        if item is None:
            if isinstance(event, PubRec):  # we completed it before: finish the exchange
                self._send(PubRel(event.packet_id))
            return
        if event.reason_code >= 0x80 and not isinstance(event, PubComp):
            # MQTT 5: refused (a PUBREC so ends the exchange)
            del store.inflight[event.packet_id]
            store.dirty = store.dirty or item.persist
            item.error = _publish_refused(event, item.publish.topic)
            self._events.append(Completed(item))
            return
        if isinstance(event, PubRec):
            if item.stage == 0:
                item.stage = 1
                store.dirty = store.dirty or item.persist
            self._send(PubRel(event.packet_id))
            return
        del store.inflight[event.packet_id]
        store.dirty = store.dirty or item.persist
        if item.receipt:
            self.tally.receipts_acknowledged += 1
        self._events.append(Completed(item))

    # --- what suback codes mean -----------------------------------------------------------------

    @staticmethod
    def refused_filters(request: Request) -> tuple[str, ...]:
        return tuple(f for f, _ in SessionCore.refusals(request))

    @staticmethod
    def refusals(request: Request) -> tuple[tuple[str, int], ...]:
        """``(filter, code)`` of each filter the server refused (SUBACK 0x80; in 5.0 any
        reason code from 0x80)."""
        codes = request.result or ()
        return tuple((f, code) for (f, _), code in zip(request.subscriptions, codes)
                     if code >= 0x80)


def _reason_name(code: int) -> str:
    try:
        return ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        return "unknown reason"


def _disconnected(event: Disconnect) -> ServerDisconnected:
    """The error for an MQTT 5 DISCONNECT from the server."""
    code = int(event.reason_code)
    props = event.properties
    said = f": \"{props.reason_string}\"" if props.reason_string else ""
    moved = f" (use {props.server_reference})" if props.server_reference else ""
    return ServerDisconnected(
        f"the server disconnected ({code:#04x} {_reason_name(code)}{said}){moved}", code,
        props.server_reference)


def _publish_refused(event: PubAck | PubRec | PubComp, topic: str) -> PublishRefused:
    code = int(event.reason_code)
    reason = event.properties.reason_string
    said = f": \"{reason}\"" if reason else ""
    return PublishRefused(f"the broker refused the message to {topic!r} "
                          f"({code:#04x} {_reason_name(code)}{said})", code)
