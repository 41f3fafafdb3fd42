"""One MQTT connection of a :class:`~pushsdk.client.PushClient`, from CONNECT to its end.

A :class:`Session` runs in one task, the client's: a loop that reads packets, answers them,
calls the app, sends heartbeats and receipts, and otherwise waits for the next packet or the
next heartbeat, whichever comes first (``receive_some`` under a deadline; trio's socket, TLS
— after its handshake — and in-memory streams all lose nothing when such a wait is
cancelled). One task and no channel per connection keeps a fleet of clients small.

Heartbeat rule: a PINGREQ goes out once the strategy's interval has passed with no packet sent
*or* received (traffic either way refreshes NAT state and proves the link), and never later
than ``keepalive`` seconds after the last packet sent (the MQTT rule, which matters when only
QoS 0 traffic arrives). The link is declared dead when no PINGRESP came ``ping_timeout``
seconds after the ping, not counting time the app spent in callbacks meanwhile (the answer
may be waiting, unread, behind the message being handed over).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .config import BrokerConfig, ClientState
from .dispatcher import BrokerMessage, PushMessage, broker_dedup_key
from ._probe import run_probe
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
)

if TYPE_CHECKING:
    from .client import PushClient

log = logging.getLogger("pushsdk.client")

#: Bytes asked of the transport per read; small so 10,000 clients stay small.
RECEIVE_SIZE = 4096
#: Receipts sent and not yet acknowledged, at most (Paho's max_inflight is 20 too).
MAX_INFLIGHT = 20
#: Shortest heartbeat interval accepted from a strategy, in seconds.
MIN_INTERVAL = 0.1

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@attrs.define
class Counters:
    """The client's counters that sessions update (see ClientStatistics for meanings)."""

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
    state_save_errors: int = 0
    connected_time: float = 0.0


def _may_probe(strategy: HeartbeatStrategy) -> bool:
    """Whether ``strategy`` can ask for probe connections (it overrides ``probe``)."""
    return type(strategy).probe is not HeartbeatStrategy.probe


class LinkEnded(Exception):
    """The connection is over; the message says why."""


@attrs.define(eq=False)
class Session:
    """One connection: :meth:`handshake`, then if accepted :meth:`serve` (inside the
    attempt's cancel scope) and :meth:`finish` (after it)."""

    client: PushClient
    stream: trio.abc.Stream
    conn: Connection
    network_key: str = ""
    connected_at: float = 0.0
    last_activity: float = 0.0  # last packet sent or received (trio time)
    last_sent: float = 0.0
    hb: Any = None  # the heartbeat strategy's state
    interval: float | None = None  # the interval in force
    ping_sent_at: float | None = None
    ping_lateness: float = 0.0
    ping_silence: float = 0.0  # the idle time the outstanding ping tests
    ping_paused: float = 0.0  # time spent in app callbacks since the ping went out
    piggyback_now: bool = False  # the radio is active and the strategy wants a ping now
    nursery: trio.Nursery | None = None
    probing: bool = False  # a probe connection is out (see pushsdk._probe)
    memory_dirty: bool = False  # the strategy learned something not saved yet
    end_reason: str | None = None
    scope: trio.CancelScope | None = None  # the connection attempt's (see PushClient._attempt)
    serving: bool = False  # past the handshake
    uptime: float = 0.0
    wait_scope: trio.CancelScope | None = None  # the loop's wait for input; cancel to wake it
    stall_timeout: float | None = None  # set while a write runs under the session deadline
    pending: Any = None  # a packet the wait read for the loop to handle

    @classmethod
    def over(cls, client: PushClient, stream: trio.abc.Stream,
             scope: trio.CancelScope) -> Session:
        """A session on ``stream``, ended by cancelling ``scope`` (the attempt's), whose
        deadline the caller sets for the handshake and the session sets for each write."""
        return cls(client, stream, Connection(Role.CLIENT,
                                              max_packet_size=client._max_packet_size),
                   scope=scope)

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    def wake(self) -> None:
        """Make the loop look again at its deadline, outbox and flags."""
        if self.wait_scope is not None:
            self.wait_scope.cancel()

    # --- opening --------------------------------------------------------------------------

    async def handshake(self, connect: Connect) -> ConnAck:
        """Send CONNECT, return the CONNACK. Raises :class:`LinkEnded`."""
        await self.send(connect)
        while True:
            try:
                event = self.conn.next_event()
                if event is NEED_DATA:
                    await self._receive()
                    continue
            except RemoteProtocolError as exc:
                raise LinkEnded(f"protocol error before CONNACK: {exc}") from None
            except _STREAM_ERRORS as exc:
                raise LinkEnded(f"connection lost before CONNACK: {exc}") from None
            if isinstance(event, ConnAck):
                return event
            raise LinkEnded("server closed the connection before CONNACK")

    async def serve(self) -> None:
        """Run the accepted connection until it ends (inside the attempt's scope); then
        :meth:`finish` outside it."""
        client = self.client
        self.connected_at = self.last_activity = trio.current_time()
        self.serving = True
        self.network_key = client._network_key or ""
        self.hb = client._strategy.start(client._sdk_state.memory_for(self.network_key),
                                         self.context())
        await self._remember_strategy()  # a strategy may note the attempt itself (Courier)
        client._session = self
        # Probe connections run as tasks beside the loop; a strategy that never probes
        # needs no nursery, which a fleet of thousands of clients feels.
        tasks = trio.open_nursery() if _may_probe(client._strategy) else contextlib.nullcontext()
        try:
            async with tasks as self.nursery:
                try:  # inside: a nursery would wrap it in an exception group
                    await self._subscribe()
                    for publish in list(client._inflight.values()):
                        await self.send(attrs.evolve(publish, dup=True))
                    client._set_state(ClientState.CONNECTED, "connected")
                    await self._loop()
                except LinkEnded as exc:
                    self.end(str(exc))
        finally:
            client._session = None
            self.uptime = trio.current_time() - self.connected_at
            client._counters.connected_time += self.uptime

    async def finish(self) -> float:
        """After the attempt's scope: settle the heartbeat state; return the uptime."""
        scope = self.scope
        if (self.end_reason is None and scope is not None and scope.cancelled_caught
                and self.stall_timeout is not None):
            self.end_reason = f"sending stalled for {self.stall_timeout:g} s"
        if self.ping_sent_at is not None and not self.client._closing:
            await self._heartbeat_failed()  # broke while a ping was out: it failed
        elif self.memory_dirty:  # learned from the last answer; the loop had no time to save
            self.memory_dirty = False
            await self.client._save_state()
        return self.uptime

    async def _subscribe(self) -> None:
        cfg = self.client._config
        if isinstance(cfg, BrokerConfig):
            topics = tuple((topic, cfg.qos) for topic in cfg.topics)
        else:
            reg = self.client._sdk_state.registration
            assert reg is not None
            topics = ((reg.inbox, 1),)
        await self.send(Subscribe(self.client._allocate_packet_id(), topics))

    async def say_goodbye(self) -> None:
        """DISCONNECT, best effort (the client is closing; shielded, at most 1 s)."""
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                data = self.conn.send(Disconnect())
                await self.stream.send_all(data)
                self.client._counters.bytes_up += len(data)
            except (LocalProtocolError, trio.BusyResourceError, *_STREAM_ERRORS):
                pass

    # --- the loop: heartbeats, sending, callbacks ---------------------------------------------

    async def _loop(self) -> None:
        client = self.client
        while True:
            if self.memory_dirty:
                self.memory_dirty = False
                await self.client._save_state()
            await self._flush_outbox()
            # Packets already received come first: one of them may answer the ping.
            event, self.pending = self.pending, None
            if event is None:
                event = self._next_event()
            if event is not NEED_DATA:
                await self._handle(event)
                continue
            deadline = self._deadline()
            now = trio.current_time()
            if now < deadline:
                await self._wait(deadline)
                continue
            if self.ping_sent_at is not None:
                await self._heartbeat_failed()
                raise LinkEnded(f"no PINGRESP within {client._ping_timeout:g} s")
            self.ping_lateness = max(0.0, now - deadline)
            self.ping_silence = now - self.last_activity
            await self._wait(now + client._ping_timeout, ping=True)

    def _deadline(self) -> float:
        """When the loop must act next with nothing received: the next heartbeat, or the
        outstanding ping's timeout."""
        client = self.client
        if client._device_idle:
            self.piggyback_now = False  # no radio for us, nothing to ride on
            return math.inf  # Doze defers our alarms; set_device_idle(False) wakes us
        if self.ping_sent_at is not None:
            # A ping sent before Doze gets a full timeout after it: its answer was held.
            return (max(self.ping_sent_at, client._idle_ended_at) + client._ping_timeout
                    + self.ping_paused)
        if self.piggyback_now:
            return trio.current_time()  # the radio is up: ping now (cleared when sent)
        interval = client._strategy.interval(self.hb, self.context())
        # A strategy bug (0, negative, NaN) must not become a busy loop.
        self.interval = interval if interval >= MIN_INTERVAL else MIN_INTERVAL
        return min(self.last_activity + self.interval, self.last_sent + client._keepalive)

    async def _wait(self, deadline: float, *, ping: bool = False) -> None:
        """Read until ``deadline``, a :meth:`wake`, or a packet the loop must act on; with
        ``ping``, send a PINGREQ first (``deadline`` is then its timeout).

        Packets that need only bookkeeping (PINGRESP, PUBACK, SUBACK) are settled here and
        the wait goes on under the same cancel scope, its deadline moved to the next beat;
        the ping is written under that scope too, so the ping timeout also bounds a stalled
        write of it. One cancel scope and two deadline changes per heartbeat, which
        thousands of simulated clients feel. Cancelling the wait loses no data (trio's
        socket and TLS streams, after the handshake, and in-memory streams all guarantee it).
        """
        client = self.client
        conn = self.conn
        with trio.move_on_at(deadline) as scope:
            if ping:  # not wakeable (wait_scope unset) while the write may be under way
                self.ping_sent_at = trio.current_time()
                self.ping_paused = 0.0
                self.piggyback_now = False
                self.stall_timeout = client._ping_timeout  # cleared once written
                await self.send(PingReq(), guarded=False)
                self.stall_timeout = None
                client._counters.heartbeats_sent += 1
                self._maybe_probe()
            self.wait_scope = scope
            while True:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except _STREAM_ERRORS as exc:
                    raise LinkEnded(f"connection lost: {exc or type(exc).__name__}") from None
                self.last_activity = trio.current_time()
                client._counters.bytes_down += len(data)
                conn.receive_data(data)  # b"": the server closed (ConnectionClosed next)
                while (event := self._next_event()) is not NEED_DATA:
                    if not isinstance(event, (PingResp, PubAck, SubAck)):
                        self.pending = event
                        self.wait_scope = None
                        return
                    self._settle(event)
                if self.memory_dirty or (client._outbox and len(client._inflight) < MAX_INFLIGHT):
                    break  # the loop has writing to do
                deadline = self._deadline()
                if deadline <= self.last_activity:
                    break
                scope.deadline = deadline
        self.wait_scope = None
        if self.stall_timeout is not None:  # the ping itself could not be written in time
            self.ping_sent_at = None  # not a heartbeat the strategy should learn from
            raise LinkEnded(f"sending stalled for {self.stall_timeout:g} s")

    def _next_event(self) -> Any:
        try:
            return self.conn.next_event()
        except RemoteProtocolError as exc:
            raise LinkEnded(f"protocol error from server: {exc}") from None

    def _settle(self, event: PingResp | PubAck | SubAck) -> None:
        client = self.client
        if isinstance(event, PingResp):
            self._pong()
        elif isinstance(event, PubAck):
            if client._inflight.pop(event.packet_id, None) is not None:
                client._counters.receipts_acknowledged += 1
        elif SUBACK_FAILURE in event.return_codes:
            log.error("%s: subscription refused: %s", client._name, event)

    async def _handle(self, event: Any) -> None:
        if isinstance(event, (Publish, PubRel)):
            began = trio.current_time()
            await self._handle_inbound(event)
            if self.ping_sent_at is not None:  # the ping's answer may be waiting unread
                self.ping_paused += trio.current_time() - max(began, self.ping_sent_at)
        elif isinstance(event, (PingResp, PubAck, SubAck)):
            self._settle(event)
        elif isinstance(event, ConnectionClosed):
            raise LinkEnded("server closed the connection")
        else:
            log.debug("%s: ignoring %s", self.client._name, event)

    def _maybe_probe(self) -> None:
        """Start a probe connection now, while the radio is up for our heartbeat, if the
        strategy wants one measured (pushsdk._probe)."""
        if self.probing or self.nursery is None:
            return
        target = self.client._strategy.probe(self.hb, self.context())
        if target is not None and target > 0 and math.isfinite(target):
            self.probing = True
            self.client._counters.probes += 1
            self.nursery.start_soon(run_probe, self, target)

    def probe_done(self, ok: bool | None, silence: float) -> None:
        """A probe ended: ``ok`` True/False = the silence survived/failed; None = no probe."""
        self.probing = False
        self.hb = self.client._strategy.on_probe(self.hb, self.context(silence=silence), ok)
        self.memory_dirty = self._note_memory() or self.memory_dirty
        self.wake()  # the interval in force may have changed

    def radio_active(self) -> None:
        """The platform reports radio activity: ping now if the strategy finds it worth it."""
        client = self.client
        if self.ping_sent_at is not None or client._device_idle or self.hb is None:
            return
        silence = trio.current_time() - self.last_activity
        if client._strategy.piggyback(self.hb, self.context(), silence):
            self.piggyback_now = True
            self.wake()

    def _pong(self) -> None:
        """A PINGRESP: the heartbeat succeeded."""
        if self.ping_sent_at is None:
            return
        client = self.client
        self.ping_sent_at = None
        client._counters.heartbeats_succeeded += 1
        self.hb = client._strategy.on_success(self.hb, self.context(self.ping_lateness,
                                                                   self.ping_silence))
        self.memory_dirty = self._note_memory() or self.memory_dirty  # the loop saves it

    async def _heartbeat_failed(self) -> None:
        self.client._counters.heartbeats_failed += 1
        self.ping_sent_at = None
        self.hb = self.client._strategy.on_failure(self.hb, self.context(self.ping_lateness,
                                                                         self.ping_silence))
        await self._remember_strategy()

    async def _remember_strategy(self) -> None:
        if self._note_memory():
            await self.client._save_state()

    def _note_memory(self) -> bool:
        """Put the strategy's memory for this network into the client's state (not saved
        yet); True if it changed."""
        client = self.client
        memory = client._strategy.memory(self.hb)
        if memory == client._sdk_state.memory_for(self.network_key):
            return False
        client._sdk_state = client._sdk_state.with_memory(self.network_key, memory)
        return True

    def context(self, lateness: float = 0.0, silence: float = 0.0) -> HeartbeatContext:
        client = self.client
        return HeartbeatContext(
            now=trio.current_time(),
            wall_time=client._clock.now(),
            network_key=self.network_key,
            network_type=client._network_type,  # type: ignore[arg-type]
            app_state=client._app_state,  # type: ignore[arg-type]
            app_state_since=client._app_state_since,
            connected_since=self.connected_at,
            lateness=lateness,
            silence=silence,
        )

    async def _handle_inbound(self, event: Publish | PubRel) -> None:
        if isinstance(event, PubRel):
            await self.send(PubComp(event.packet_id))
            return
        client = self.client
        client._counters.messages_received += 1
        key, check, message = self._parse(event)
        new = False
        if message is not None:
            new = await client._dispatcher.deliver(key, message, check=check)
        # Once the app has seen the message, finish recording and acknowledging it even if
        # the client is being closed or moved to another network meanwhile.
        with trio.CancelScope(shield=True), trio.move_on_after(client._ping_timeout):
            if new and key is not None:
                await client._save_state()
            if event.qos == 1:
                await self.send(PubAck(event.packet_id))  # type: ignore[arg-type]
            elif event.qos == 2:
                await self.send(PubRec(event.packet_id))  # type: ignore[arg-type]

    def _parse(
        self, publish: Publish
    ) -> tuple[str | None, bool, PushMessage | BrokerMessage | None]:
        """``(dedup key, look the key up?, message or None if malformed)``."""
        if self.client._broker:
            message = BrokerMessage(publish.topic, publish.payload, publish.qos,
                                    publish.retain, publish.dup)
            if publish.qos == 0:
                return None, False, message
            key = broker_dedup_key(publish.packet_id or 0, publish.topic, publish.payload)
            # Packet ids are reused, so only a DUP=1 redelivery is checked against the window.
            return key, publish.dup, message
        try:
            push = PushMessage.from_payload(publish.payload, topic=publish.topic,
                                            dup=publish.dup)
        except ValueError as exc:
            # Acknowledged and dropped: redelivering it would fail the same way forever.
            self.client._counters.malformed_messages += 1
            log.warning("%s: dropping malformed push on %s: %s", self.client._name,
                        publish.topic, exc)
            return None, False, None
        return push.msg_id, True, push

    async def _flush_outbox(self) -> None:
        client = self.client
        reg = client._sdk_state.registration
        while client._outbox and reg is not None and len(client._inflight) < MAX_INFLIGHT:
            msg_id, event = client._outbox.pop(0)
            publish = Publish(
                topic=reg.receipt_topic,
                payload=json.dumps({"msg_id": msg_id, "event": event}).encode(),
                qos=1,
                packet_id=client._allocate_packet_id(),
            )
            client._inflight[publish.packet_id] = publish  # type: ignore[index]
            await self.send(publish)

    # --- bytes --------------------------------------------------------------------------------

    async def send(self, event: Any, *, guarded: bool = True) -> None:
        """Write one packet. Raises :class:`LinkEnded` if the link is broken; a write that
        stalls ``ping_timeout`` seconds ends the session (the attempt's scope expires).
        ``guarded=False``: the caller's own deadline bounds the write."""
        try:
            data = self.conn.send(event)
        except LocalProtocolError as exc:
            raise LinkEnded(f"cannot send {type(event).__name__}: {exc}") from None
        if self.serving and guarded:
            # Give the attempt's scope a deadline for the write rather than opening a scope
            # per packet (thousands of clients ping). Before the session (handshake) the
            # scope's connect deadline is in force.
            scope = self.scope
            timeout = self.stall_timeout = self.client._ping_timeout
            scope.deadline = trio.current_time() + timeout
            await self._send_all(data)
            scope.deadline = math.inf
            self.stall_timeout = None
        else:
            await self._send_all(data)
        self.client._counters.bytes_up += len(data)
        self.last_sent = self.last_activity = trio.current_time()

    async def _send_all(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise LinkEnded(f"connection lost: {exc or type(exc).__name__}") from None

    async def _receive(self) -> None:
        data = await self.stream.receive_some(RECEIVE_SIZE)
        self.client._counters.bytes_down += len(data)
        self.conn.receive_data(data)
