"""The fleet's MQTT publisher: QoS 0, 1 or 2 over one connection that comes back by itself.

Written with the project's sans-IO codec (:mod:`pushsdk.protocol`). Several tasks publish at
once (pipelined; each waits for its own acknowledgement). When the connection breaks — the
broker restarted, a proxy dropped it — :meth:`MqttPublisher.run` reconnects like a handset
does, with exponential backoff and full jitter (:class:`pushsdk.Backoff`, the randomness
injected), and resends what was in flight: a PUBLISH with DUP=1, or the PUBREL of a QoS 2
exchange past PUBREC (MQTT 3.1.1 §4.4). For QoS 1 and 2 the session is persistent
(clean session 0), so the broker keeps its half of those exchanges across the break;
:meth:`MqttPublisher.forget_session` removes it at the end of the run.

Nothing the broker or the network does raises out of this module except
:class:`PushFailed` (one push not acknowledged in time, with the reason) and
:class:`PublisherRefused` (a CONNACK refusal, which no retry can fix).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import trio

from pushsdk import Backoff
from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Role,
    SubAck,
    Subscribe,
)
from pushsdk.transport import Connector, TransportError

from .plan import BrokerTarget

__all__ = ["MqttPublisher", "PublisherRefused", "PushFailed", "mqtt_session"]

#: Reconnect backoff of the publisher: a broker back after a restart is found within ~5 s.
PUBLISHER_BACKOFF = Backoff(initial=0.25, multiplier=2.0, max_delay=5.0, reset_after=10.0)
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ProtocolError)


class PushFailed(Exception):
    """A push was not accepted; the message says why (one line). ``transport`` is true when
    the target could not be reached at all (the sender then backs off)."""

    transport = False


class PublisherRefused(TransportError):
    """The broker refused the publisher's CONNECT (bad credentials, not authorised)."""


@attrs.define(slots=True)
class _Pending:
    publish: Publish
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent
    done: trio.Event = attrs.Factory(trio.Event)


class _Link:
    """One TCP/TLS connection with its codec state."""

    __slots__ = ("stream", "conn", "lock", "last_sent", "scope", "reason")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.scope: trio.CancelScope | None = None
        self.reason = "connection lost"
        self.conn = Connection(Role.CLIENT)
        self.lock = trio.StrictFIFOLock()
        self.last_sent = trio.current_time()

    async def send(self, event: Any) -> None:
        """Write one packet; raises one of ``_BROKEN`` if the link is gone."""
        async with self.lock:
            await self.stream.send_all(self.conn.send(event))
            self.last_sent = trio.current_time()

    async def next_event(self) -> Any:
        while (event := self.conn.next_event()) is NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(65536))
        return event


async def mqtt_session(connector: Connector, target: BrokerTarget, client_id: str, *,
                       clean: bool, timeout: float, keepalive: int = 60) -> tuple[_Link, ConnAck]:
    """Open a connection and do the CONNECT handshake within ``timeout`` seconds.

    Raises :class:`TransportError` (unreachable, TLS, no CONNACK) or
    :class:`PublisherRefused` (a CONNACK refusal)."""
    where = f"{target.host}:{target.port}"
    deadline = trio.current_time() + timeout
    try:
        with trio.fail_at(deadline):
            stream = await connector.connect(target.host, target.port, tls=target.tls)
    except trio.TooSlowError:
        raise TransportError(f"cannot connect to {where} within {timeout:g} s") from None
    link = _Link(stream)
    answer: Any = None
    try:
        with trio.fail_at(deadline):
            await link.send(Connect(
                client_id=client_id, keepalive=keepalive, clean_session=clean,
                username=target.username,
                password=target.password.encode() if target.password is not None else None))
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
            await trio.aclose_forcefully(stream)
            raise PublisherRefused(f"broker {where} refused the connection (CONNACK "
                                   f"{answer.return_code}: {_connack_text(answer.return_code)})")
        else:
            return link, answer
    await trio.aclose_forcefully(stream)
    raise TransportError(problem)


def _connack_text(code: int) -> str:
    return {1: "unacceptable protocol version", 2: "client id rejected",
            3: "server unavailable", 4: "bad user name or password",
            5: "not authorised"}.get(code, "refused")


async def check_subscribe(link: _Link, topic: str, qos: int, timeout: float) -> int | None:
    """SUBSCRIBE ``topic`` once on ``link``; the granted QoS, or ``None`` for a refusal
    (0x80). :class:`TransportError` if no SUBACK comes."""
    with trio.move_on_after(timeout):
        try:
            await link.send(Subscribe(1, ((topic, qos),)))
            while True:
                event = await link.next_event()
                if isinstance(event, SubAck):
                    code = event.return_codes[0]
                    return None if code & 0x80 else code
                if isinstance(event, ConnectionClosed):
                    break
        except _BROKEN:
            pass
    raise TransportError(f"no SUBACK for {topic!r} within {timeout:g} s")


class MqttPublisher:
    """Publishes at ``qos`` under ``client_id``; run :meth:`run` in a nursery first."""

    def __init__(self, connector: Connector, target: BrokerTarget, client_id: str, *,
                 qos: int, rng: random.Random, connect_timeout: float = 10.0,
                 keepalive: int = 60, backoff: Backoff = PUBLISHER_BACKOFF,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self._connector = connector
        self._target = target
        self.client_id = client_id
        self.qos = qos
        self._rng = rng
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._backoff = backoff
        self._on_event = on_event  # ("connected" | "lost" | "failed", reason)
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
        (trio time), the connection being down meanwhile included."""
        with trio.move_on_at(deadline):
            if self.qos == 0:
                await self._publish_once(topic, payload)
                return
            packet_id = self._allocate()
            pending = self._pending[packet_id] = _Pending(
                Publish(topic=topic, payload=payload, qos=self.qos, packet_id=packet_id))
            try:
                await self._send_when_up(pending.publish)
                await pending.done.wait()
                return
            finally:
                self._pending.pop(packet_id, None)
        raise PushFailed(self._why_late())

    async def _publish_once(self, topic: str, payload: bytes) -> None:
        while True:
            link = await self._wait_up()
            try:
                await link.send(Publish(topic=topic, payload=payload))
                return
            except _BROKEN:
                self._lost(link, "connection lost while publishing")

    async def _send_when_up(self, event: Any) -> None:
        # A break before the packet is written: it goes out after the reconnect (run()
        # resends every pending exchange), so waiting for the next connection is enough.
        link = await self._wait_up()
        try:
            await link.send(event)
        except _BROKEN:
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
                link, _ = await mqtt_session(self._connector, self._target, self.client_id,
                                             clean=self.qos == 0, timeout=self._connect_timeout,
                                             keepalive=self._keepalive)
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
        """Use ``link`` until it breaks; how long it was up."""
        since = trio.current_time()
        self.connects += 1
        try:
            for pending in sorted(self._pending.items()):  # resend in order (§4.6)
                packet_id, exchange = pending
                await link.send(PubRel(packet_id) if exchange.released
                                else attrs.evolve(exchange.publish, dup=self.connects > 1))
        except _BROKEN:
            await trio.aclose_forcefully(link.stream)
            return 0.0
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
            await trio.aclose_forcefully(link.stream)
        return trio.current_time() - since

    async def _read(self, link: _Link) -> str:
        try:
            while True:
                event = await link.next_event()
                if isinstance(event, PubAck | PubComp):
                    pending = self._pending.get(event.packet_id)
                    if pending is not None:
                        pending.done.set()
                elif isinstance(event, PubRec):
                    pending = self._pending.get(event.packet_id)
                    if pending is not None:
                        pending.released = True
                    await link.send(PubRel(event.packet_id))
                elif isinstance(event, ConnectionClosed):
                    return "broker closed the connection"
        except _BROKEN as exc:
            return str(exc) or type(exc).__name__

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
            await trio.aclose_forcefully(link.stream)


def _signal_all(event: trio.Event) -> None:
    event.set()
