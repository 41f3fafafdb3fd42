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
sent *or* received, and never later than ``keepalive`` seconds after the last packet sent.
The link is declared dead when no PINGRESP came ``ping_timeout`` seconds after the ping, not
counting time the app spent handling messages meanwhile (the answer may be waiting, unread,
behind the message being handed over).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Set as AbstractSet
from typing import Any

import attrs

from .clock import Clock
from .errors import ConnectionLost, ProtocolViolation
from .heartbeat import HeartbeatContext, HeartbeatStrategy
from .protocol import (
    NEED_DATA,
    SUBACK_FAILURE,
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
    SubAck,
    Subscribe,
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
    device_idle: bool = False
    idle_ended_at: float = -math.inf


@attrs.define(eq=False)
class Outbound:
    """A message this client sends: an app ``publish()`` or a receipt.

    ``stage`` 0: PUBLISH sent (or to send), waiting for PUBACK/PUBREC; 1: PUBREL sent,
    waiting for PUBCOMP. ``waiter`` is the driver's (opaque here); ``persist`` whether the
    message belongs in the state file; ``receipt`` marks server-mode receipts.
    """

    publish: Publish
    stage: int = 0
    waiter: Any = None
    persist: bool = False
    receipt: bool = False


@attrs.define(eq=False)
class Request:
    """A SUBSCRIBE (``subscriptions``) or UNSUBSCRIBE (``filters``) and, once answered, its
    ``result`` (the SUBACK return codes; ``()`` for UNSUBACK)."""

    subscriptions: tuple[tuple[str, int], ...] = ()
    filters: tuple[str, ...] = ()
    waiter: Any = None
    result: tuple[int, ...] | None = None


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
    return_code: int


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
        "_conn", "_events", "_out", "accepted", "connected_at", "env", "hb", "interval",
        "keepalive", "last_activity", "last_sent", "max_inflight", "memory", "memory_dirty",
        "network_key", "piggyback_now", "ping_lateness", "ping_paused", "ping_sent_at",
        "ping_silence", "ping_timeout", "probing", "store", "strategy", "tally",
        "ping_unwritten",
    )

    def __init__(self, connect: Connect, *, now: float, store: MessageStore,
                 strategy: HeartbeatStrategy, env: Environment, tally: Tally,
                 ping_timeout: float, max_inflight: int, max_packet_size: int) -> None:
        self._conn = Connection(Role.CLIENT, max_packet_size=max_packet_size)
        self._events: list[Event] = []
        self._out = bytearray(self._conn.send(connect))
        self.store = store
        self.strategy = strategy
        self.env = env
        self.tally = tally
        self.keepalive = connect.keepalive
        self.ping_timeout = ping_timeout
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

    # --- outputs ----------------------------------------------------------------------------

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
            return (max(self.ping_sent_at, env.idle_ended_at) + self.ping_timeout
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
        conn.receive_data(data)  # type: ignore[arg-type]  # bytes-like is fine
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                when = "from the server" if self.accepted else "before CONNACK"
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
            self._end(ConnectionLost(f"no PINGRESP within {self.ping_timeout:g} s"))
            return
        deadline = self.deadline(now)
        self.ping_lateness = max(0.0, now - deadline)
        self.ping_silence = now - self.last_activity
        self.ping_sent_at = now
        self.ping_paused = 0.0
        self.piggyback_now = False
        self.ping_unwritten = True
        self._send(PingReq())

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
        """Send a SUBSCRIBE or UNSUBSCRIBE; :class:`Completed` when answered."""
        packet_id = self.store.allocate()
        self.store.requests[packet_id] = request
        if request.subscriptions:
            self._send(Subscribe(packet_id, request.subscriptions))
        else:
            self._send(Unsubscribe(packet_id, request.filters))

    def resend_inflight(self) -> None:
        """After reconnecting to a session that still exists: what was in flight goes out
        again, in order (DUP=1 for PUBLISH, PUBREL as it was)."""
        for packet_id in sorted(self.store.inflight, key=self._send_order):
            item = self.store.inflight[packet_id]
            if item.stage == 0:
                self._send(attrs.evolve(item.publish, dup=True))
            else:
                self._send(PubRel(packet_id))
        self.store.dirty = self.store.dirty or any(
            i.persist for i in self.store.inflight.values())

    def _send_order(self, packet_id: int) -> int:
        # Packet ids wrap at 65535: order by distance behind the next id to allocate.
        return (packet_id - self.store.next_packet_id) % 65536

    def pump(self) -> None:
        """Move queued messages and requests onto the wire while the window allows."""
        store = self.store
        while store.waiting_requests:
            self.subscribe(store.waiting_requests.pop(0))
        while store.queued and len(store.inflight) < self.max_inflight:
            item = store.queued.pop(0)
            if item.publish.qos == 0:
                self._send(item.publish)
                self._events.append(Completed(item))
                continue
            packet_id = store.allocate()
            item.publish = attrs.evolve(item.publish, packet_id=packet_id, dup=False)
            store.inflight[packet_id] = item
            store.dirty = store.dirty or item.persist
            self._send(item.publish)

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
        )

    def heartbeat_failed(self, now: float) -> None:
        """The outstanding ping failed (no answer, or the link broke while it was out)."""
        self.tally.heartbeats_failed += 1
        self.ping_sent_at = None
        self.hb = self.strategy.on_failure(
            self.hb, self.context(now, self.ping_lateness, self.ping_silence))
        self._note_memory()

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
        if self.probing or not _may_probe(self.strategy):
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
            request = self.store.requests.pop(event.packet_id, None)
            if request is not None:
                request.result = event.return_codes if isinstance(event, SubAck) else ()
                self._events.append(Completed(request))
        elif isinstance(event, ConnAck):
            if event.return_code:
                self._events.append(Refused(event.return_code))
            else:
                self.accepted = True
                self.connected_at = self.last_activity = now
                self._events.append(Accepted(event.session_present))
        elif isinstance(event, ConnectionClosed):
            self._end(ConnectionLost("the server closed the connection"))

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
        codes = request.result or ()
        return tuple(f for (f, _), code in zip(request.subscriptions, codes)
                     if code == SUBACK_FAILURE)
