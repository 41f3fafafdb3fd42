"""The fleet's MQTT publisher: QoS 0, 1 or 2 over one connection that comes back by itself.

Written with the project's sans-IO codec (:mod:`pushsdk.protocol`), in MQTT 3.1.1 or 5.0,
over TCP, TLS or WebSocket (the SDK's :func:`pushsdk.transport.open_websocket`). Several
tasks publish at once (pipelined; each waits for its own acknowledgement). When the
connection breaks — the broker restarted, a proxy dropped it — :meth:`MqttPublisher.run`
reconnects like a handset does, with exponential backoff and full jitter
(:class:`pushsdk.Backoff`, the randomness injected), and each push in flight is written
again: a PUBLISH with DUP=1, or the PUBREL of a QoS 2 exchange past PUBREC (MQTT 3.1.1 §4.4,
5.0 §4.4). For QoS 1 and 2 the session is persistent (clean session 0; in 5.0 a Session
Expiry Interval), so the broker keeps its half of those exchanges across the break; the
clean-up (:mod:`.cleanup`) removes it at the end of the run.

Nothing the broker or the network does raises out of this module except
:class:`PushFailed` (one push not acknowledged in time, or refused by a 5.0 reason code,
with the reason) and :class:`PublisherRefused` (a CONNACK refusal, which no retry can fix).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import trio

from pushsdk import Backoff, ProtocolViolation
from pushsdk.protocol import (
    NEED_DATA,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    Properties,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    Role,
    SubAck,
    Subscribe,
)
from pushsdk.transport import ByteStream, Connector, TransportError, open_websocket

from .plan import BrokerTarget

__all__ = ["MqttPublisher", "PublisherRefused", "PushFailed", "mqtt_session"]

#: MQTT 5's Session Expiry Interval for "never" (what 3.1.1's clean session 0 means).
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
#: Reconnect backoff of the publisher: a broker back after a restart is found within ~5 s.
PUBLISHER_BACKOFF = Backoff(initial=0.25, multiplier=2.0, max_delay=5.0, reset_after=10.0)
# ProtocolViolation: the WebSocket layer's (a text frame, a malformed frame).
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ProtocolError,
           ProtocolViolation)


class PushFailed(Exception):
    """A push was not accepted; the message says why (one line). ``transport`` is true when
    the target could not be reached at all (the sender then backs off)."""

    transport = False


class PublisherRefused(TransportError):
    """The broker refused the publisher's CONNECT (bad credentials, not authorised)."""


@attrs.define(slots=True, eq=False)
class _Pending:
    publish: Publish
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent
    link: _Link | None = None  # the connection it was last written on
    written: bool = False  # written at least once: a resend has DUP=1
    done: bool = False  # acknowledged (or refused: ``refused`` says why)
    refused: str = ""
    wake: trio.Event = attrs.Factory(trio.Event)  # done, or its connection lost


class _Link:
    """One TCP/TLS (or WebSocket) connection with its codec state."""

    __slots__ = ("conn", "freed", "last_sent", "lock", "reason", "scope", "stream")

    def __init__(self, stream: ByteStream, version: int = 4) -> None:
        self.stream = stream
        self.scope: trio.CancelScope | None = None
        self.reason = "connection lost"
        self.conn = Connection(Role.CLIENT, protocol_version=version)
        self.lock = trio.StrictFIFOLock()
        self.last_sent = trio.current_time()
        self.freed = trio.Event()  # 5.0: an acknowledgement freed Receive Maximum quota

    async def send(self, event: Any) -> None:
        """Write one packet; raises one of ``_BROKEN`` if the link is gone."""
        async with self.lock:
            await self.stream.send_all(self.conn.send(event))
            self.last_sent = trio.current_time()

    async def next_event(self) -> Any:
        while (event := self.conn.next_event()) is NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(65536))
        return event

    def free(self) -> None:
        self.freed.set()
        self.freed = trio.Event()

    async def close(self) -> None:
        """Close the connection at once (no DISCONNECT, no WebSocket close handshake)."""
        await _close_forcefully(self.stream)


async def _close_forcefully(stream: ByteStream) -> None:
    # trio.aclose_forcefully for any ByteStream (the SDK's WebSocket stream is not a
    # trio.abc.AsyncResource): close in a cancelled scope, so nothing waits on the peer.
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.aclose()


async def _open(connector: Connector, target: BrokerTarget) -> ByteStream:
    stream = await connector.connect(target.host, target.port, tls=target.tls)
    if target.websocket_path is None:
        return stream
    try:
        return await open_websocket(stream, target.host, target.port, target.websocket_path,
                                    tls=target.tls)
    except BaseException:
        await _close_forcefully(stream)
        raise


async def mqtt_session(connector: Connector, target: BrokerTarget, client_id: str, *,
                       clean: bool, timeout: float, keepalive: int = 60, version: int = 4,
                       session_expiry: int = 0) -> tuple[_Link, ConnAck]:
    """Open a connection (TCP, TLS, WebSocket as the target says) and do the CONNECT
    handshake within ``timeout`` seconds, in MQTT 3.1.1 (``version`` 4) or 5.0 (5, asking
    for ``session_expiry`` seconds of Session Expiry Interval).

    Raises :class:`TransportError` (unreachable, TLS, no CONNACK, a 5.0 refusal that says
    to retry later) or :class:`PublisherRefused` (a CONNACK refusal)."""
    where = f"{target.host}:{target.port}"
    deadline = trio.current_time() + timeout
    try:
        with trio.fail_at(deadline):
            stream = await _open(connector, target)
    except trio.TooSlowError:
        raise TransportError(f"cannot connect to {where} within {timeout:g} s") from None
    link = _Link(stream, version)
    answer: Any = None
    try:
        with trio.fail_at(deadline):
            await link.send(Connect(
                client_id=client_id, keepalive=keepalive, clean_session=clean,
                username=target.username,
                password=target.password.encode() if target.password is not None else None,
                protocol_level=version,
                properties=Properties(session_expiry_interval=session_expiry)
                if version == 5 and session_expiry else NO_PROPERTIES))
            answer = await link.next_event()
    except trio.TooSlowError:
        problem = f"no CONNACK from {where} within {timeout:g} s"
    except _BROKEN as exc:
        problem = (f"broker {where} closed the connection during CONNECT "
                   f"({exc or type(exc).__name__})")
    else:
        if not isinstance(answer, ConnAck):
            problem = f"broker {where} closed the connection before CONNACK"
        elif answer.return_code != 0:
            await _close_forcefully(stream)
            text = f"broker {where} refused the connection ({_connack_text(answer, version)})"
            if version == 5 and answer.return_code in _RETRY_LATER:
                raise TransportError(text)
            refused = PublisherRefused(text)
            refused.mqtt_reason_code = answer.return_code
            raise refused
        else:
            return link, answer
    await _close_forcefully(stream)
    raise TransportError(problem)


#: 5.0 CONNACK refusals that say "later" (server unavailable, busy, quota, rate): retried.
_RETRY_LATER = frozenset({0x88, 0x89, 0x97, 0x9F})


def _connack_text(answer: ConnAck, version: int) -> str:
    code = answer.return_code
    if version == 5:
        return f"CONNACK {_reason_text(code, answer.properties)}"
    return f"CONNACK {code}: " + {
        1: "unacceptable protocol version", 2: "client id rejected",
        3: "server unavailable", 4: "bad user name or password",
        5: "not authorised"}.get(code, "refused")


def _reason_text(code: int, properties: Properties) -> str:
    """``0x87: not authorized`` plus the Reason String of a 5.0 answer, if any."""
    try:
        name = ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        name = "refused"
    said = f' "{properties.reason_string}"' if properties.reason_string else ""
    return f"{code:#04x}: {name}{said}"


async def check_subscribe(link: _Link, topic: str, qos: int, timeout: float) -> int | None:
    """SUBSCRIBE ``topic`` once on ``link``; the granted QoS, or ``None`` for a refusal
    (0x80; in 5.0 any reason code from 0x80). :class:`TransportError` if no SUBACK comes."""
    with trio.move_on_after(timeout):
        try:
            await link.send(Subscribe(1, ((topic, qos),)))
            while True:
                event = await link.next_event()
                if isinstance(event, SubAck):
                    code = event.return_codes[0]
                    return None if code & 0x80 else code
                if isinstance(event, ConnectionClosed | Disconnect):
                    break
        except _BROKEN:
            pass
    raise TransportError(f"no SUBACK for {topic!r} within {timeout:g} s")


class MqttPublisher:
    """Publishes at ``qos`` under ``client_id``; run :meth:`run` in a nursery first.

    ``version`` 5 speaks MQTT 5.0: the persistent session (QoS 1 and 2) asks for
    ``session_expiry`` seconds (default: never), every PUBLISH carries ``message_expiry``
    as its Message Expiry Interval when given, the broker's Receive Maximum bounds the
    PUBLISHes in flight, and a PUBACK/PUBREC reason code from 0x80 fails that push (with
    the code). 0x10 "no matching subscribers" is a success."""

    def __init__(self, connector: Connector, target: BrokerTarget, client_id: str, *,
                 qos: int, rng: random.Random, connect_timeout: float = 10.0,
                 keepalive: int = 60, backoff: Backoff = PUBLISHER_BACKOFF,
                 on_event: Callable[[str, str], None] | None = None, version: int = 4,
                 session_expiry: int | None = None,
                 message_expiry: int | None = None) -> None:
        self._connector = connector
        self._target = target
        self.client_id = client_id
        self.qos = qos
        self._rng = rng
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._backoff = backoff
        self._on_event = on_event  # ("connected" | "lost" | "failed", reason)
        self.version = version
        self._session_expiry = 0 if qos == 0 else (
            SESSION_NEVER_EXPIRES if session_expiry is None else session_expiry)
        self._properties = (Properties(message_expiry_interval=message_expiry)
                            if version == 5 and message_expiry else NO_PROPERTIES)
        self._link: _Link | None = None
        self._up = trio.Event()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._closing = False
        self.connects = 0
        self.refused: str | None = None

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, deadline: float) -> None:
        """Publish once; returns when written (QoS 0) or acknowledged (QoS 1: PUBACK,
        QoS 2: PUBCOMP). Raises :class:`PushFailed` if that has not happened by ``deadline``
        (trio time), the connection being down meanwhile included, or if the broker
        refused it (5.0: a reason code from 0x80)."""
        with trio.move_on_at(deadline):
            if self.qos == 0:
                await self._publish_once(topic, payload)
                return
            packet_id = self._allocate()
            pending = self._pending[packet_id] = _Pending(
                Publish(topic=topic, payload=payload, qos=self.qos, packet_id=packet_id,
                        properties=self._properties))
            try:
                await self._exchange(pending)
            finally:
                self._pending.pop(packet_id, None)
            if pending.refused:
                raise PushFailed(pending.refused)
            return
        raise PushFailed(self._why_late())

    async def _publish_once(self, topic: str, payload: bytes) -> None:
        while True:
            link = await self._wait_up()
            try:
                await link.send(Publish(topic=topic, payload=payload,
                                        properties=self._properties))
                return
            except _BROKEN:
                self._lost(link, "connection lost while publishing")

    async def _exchange(self, pending: _Pending) -> None:
        """Write ``pending`` on each new connection until it is acknowledged: a PUBLISH
        (DUP=1 once written before), or its PUBREL past a PUBREC (MQTT 3.1.1 §4.4)."""
        while not pending.done:
            link = await self._wait_up()
            if pending.link is not link:
                await self._write(link, pending)
                continue
            pending.wake = trio.Event()
            await pending.wake.wait()

    async def _write(self, link: _Link, pending: _Pending) -> None:
        # 5.0: no more QoS 1/2 PUBLISHes in flight than the broker's Receive Maximum.
        while not pending.released and link.conn.send_quota == 0 and self._link is link:
            await link.freed.wait()
        if self._link is not link:
            return
        packet: Any = PubRel(pending.publish.packet_id or 0) if pending.released else (
            attrs.evolve(pending.publish, dup=True) if pending.written else pending.publish)
        pending.link, pending.written = link, True
        try:
            await link.send(packet)
        except _BROKEN:
            pending.link = None
            self._lost(link, "connection lost while publishing")

    async def _wait_up(self) -> _Link:
        while self._link is None:
            if self.refused:
                raise PushFailed(self.refused)
            await self._up.wait()
        return self._link

    def _why_late(self) -> str:
        if self.refused:
            return self.refused
        if self._link is None:
            return "publisher not connected (broker unreachable)"
        return {0: "not written", 1: "no PUBACK", 2: "no PUBCOMP"}[self.qos] + " in time"

    def _allocate(self) -> int:
        while True:
            packet_id, self._next_id = self._next_id, self._next_id % 65535 + 1
            if packet_id not in self._pending:
                return packet_id

    # --- the connection -------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up until cancelled; reports started at once."""
        task_status.started()
        failures = 0
        while not self._closing:
            started = trio.current_time()
            try:
                link, _ = await mqtt_session(
                    self._connector, self._target, self.client_id, clean=self.qos == 0,
                    timeout=self._connect_timeout, keepalive=self._keepalive,
                    version=self.version, session_expiry=self._session_expiry)
            except PublisherRefused as exc:
                self.refused = f"publisher refused: {exc}"
                self._notify("failed", str(exc))
                _signal_all(self._up)
                return
            except (TransportError, OSError) as exc:
                self._notify("failed", str(exc) or type(exc).__name__)
            else:
                failures = 0 if await self._serve(link) >= self._backoff.reset_after else failures
                if self._closing:
                    return
                started = trio.current_time()
            await trio.sleep_until(started + self._backoff.delay(failures, self._rng))
            failures += 1

    async def _serve(self, link: _Link) -> float:
        """Use ``link`` until it breaks; how long it was up. The pushes in flight write
        themselves again on it (:meth:`_exchange`)."""
        since = trio.current_time()
        self.connects += 1
        self._link = link
        self._up.set()
        self._notify("connected", "")
        try:
            async with trio.open_nursery() as nursery:
                link.scope = nursery.cancel_scope
                nursery.start_soon(self._keep_alive, link)
                link.reason = await self._read(link)
                nursery.cancel_scope.cancel()
        finally:
            self._lost(link, link.reason)
            await link.close()
        return trio.current_time() - since

    async def _read(self, link: _Link) -> str:
        try:
            while True:
                event = await link.next_event()
                if isinstance(event, PubAck | PubComp | PubRec):
                    await self._acknowledged(link, event)
                elif isinstance(event, Disconnect):
                    why = _reason_text(event.reason_code, event.properties)
                    return f"broker sent DISCONNECT {why}"
                elif isinstance(event, ConnectionClosed):
                    return "broker closed the connection"
        except _BROKEN as exc:
            return str(exc) or type(exc).__name__

    async def _acknowledged(self, link: _Link, event: PubAck | PubComp | PubRec) -> None:
        pending = self._pending.get(event.packet_id)
        refused = link.conn.protocol_version == 5 and event.reason_code >= 0x80
        if isinstance(event, PubRec) and not refused:
            if pending is not None:
                pending.released = True
            await link.send(PubRel(event.packet_id))
            return
        link.free()
        if pending is not None:
            if refused and not isinstance(event, PubComp):  # PUBCOMP 0x92: it was accepted
                name = "PUBACK" if isinstance(event, PubAck) else "PUBREC"
                pending.refused = (f"broker refused the push ({name} "
                                   f"{_reason_text(event.reason_code, event.properties)})")
            pending.done = True
            pending.wake.set()

    async def _keep_alive(self, link: _Link) -> None:
        half = self._keepalive / 2
        while True:
            await trio.sleep_until(link.last_sent + half)
            if trio.current_time() - link.last_sent >= half:
                try:
                    await link.send(PingReq())
                except _BROKEN:
                    self._lost(link, "connection lost while pinging")
                    return

    def _lost(self, link: _Link, reason: str) -> None:
        if self._link is link:
            self._link = None
            self._up = trio.Event()
            link.reason = reason
            self._notify("lost", reason)
            for pending in self._pending.values():
                if pending.link is link:
                    pending.link = None
                    pending.wake.set()
            link.free()
        if link.scope is not None:
            link.scope.cancel()  # the reader may still wait on a half-dead socket

    def _notify(self, kind: str, reason: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, reason)

    async def aclose(self) -> None:
        """DISCONNECT (best effort, ≤ 1 s) and close; pending pushes fail at their deadline."""
        self._closing = True
        link, self._link = self._link, None
        if link is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await link.send(Disconnect())
                except _BROKEN:
                    pass
            await link.close()


def _signal_all(event: trio.Event) -> None:
    event.set()
