"""The MQTT 3.1.1 side of the reference server (CONTRACT §3): accepting connections.

:func:`serve_mqtt` serves one connection: it reads CONNECT (within ``connect_timeout``),
applies the admission limit, checks the token, refuses with the right CONNACK, and hands
an accepted device to its :class:`~.mqtt_session.MqttSession` — or serves a *probe*
connection (``<registration_id>/probe``) itself. Opening the session is a write the
CONNACK waits for; a second connection of the same device takes the first one over.
"""
from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import trio

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    ConnackCode,
    Connect,
    Connection,
    PingReq,
    PingResp,
    RemoteProtocolError,
    Role,
)

from . import writes
from .codec_gaps import UNSUPPORTED_VERSION_CONNACK, other_mqtt_version
from .logs import server_logger
from .mqtt_session import MqttSession, inbox_topic, receipt_topic

if TYPE_CHECKING:
    from .records import TokenOwner
    from .server import PushServer

__all__ = ["PROBE_SUFFIX", "inbox_topic", "receipt_topic", "serve_mqtt"]

log = server_logger("simulator.server.mqtt")

RECEIVE_SIZE = 16 * 1024

#: Client id suffix of a probe connection (see ``_serve_probe``).
PROBE_SUFFIX = "/probe"


async def serve_mqtt(server: PushServer, stream: trio.abc.Stream,
                     peer: str | None = None) -> None:
    """Serve one MQTT connection until it ends. Never raises for anything the peer does.

    A connection from an address holding ``max_connections_per_address`` already is
    closed at once, before CONNECT (MQTT 3.1.1 allows no CONNACK before it)."""
    connections = server.connections
    if not connections.enter("mqtt", peer):
        log.debug("closing a connection from %s: too many from that address", peer)
        await trio.aclose_forcefully(stream)
        return
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
        connections.leave("mqtt", peer)
        await trio.aclose_forcefully(stream)


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
                if other_mqtt_version(head):  # MQTT-3.1.2-2: CONNACK 1, then close
                    with trio.move_on_after(server.limits.send_timeout):
                        await stream.send_all(UNSUPPORTED_VERSION_CONNACK)
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


async def _accept(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                  connect: Connect) -> MqttSession | None:
    received = trio.current_time()
    if not server.admission.admit(trio.current_time()):
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
    server.counters.connect_latency.observe(trio.current_time() - received)
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
