"""The MQTT side of the reference server (interfaces §3): accepting connections, 3.1.1 and 5.0.

:func:`serve_mqtt` serves one connection: it reads CONNECT (within ``connect_timeout``;
the codec learns the version from it), applies the admission limit, checks the token,
refuses with the right CONNACK (a 3.1.1 return code, or a 5.0 reason code with a Reason
String), and hands an accepted device to its :class:`~.mqtt_session.MqttSession` — or
serves a *probe* connection (``<registration_id>/probe``) itself. Opening the session is
a write the CONNACK waits for; a second connection of the same device takes the first one
over (a 5.0 one is told so: DISCONNECT 0x8E).
"""
from __future__ import annotations

import hashlib
import math
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from pushsdk.protocol import (
    NEED_DATA,
    PINGRESP_BYTES,
    ConnAck,
    ConnackCode,
    Connect,
    Connection,
    PingReq,
    ReasonCode,
    RemoteProtocolError,
    Role,
)

from . import mqtt5, writes
from .connections import close_stream
from .logs import server_logger
from .mqtt_session import MqttSession, inbox_topic, receipt_topic

if TYPE_CHECKING:
    from .records import TokenOwner
    from .server import PushServer

__all__ = ["PROBE_SUFFIX", "inbox_topic", "receipt_topic", "refusal_answer", "refusal_codec",
           "refuse_connection", "serve_mqtt"]

log = server_logger("simulator.server.mqtt")

RECEIVE_SIZE = 16 * 1024

#: Client id suffix of a probe connection (see ``_serve_probe``).
PROBE_SUFFIX = "/probe"


async def serve_mqtt(server: PushServer, stream: trio.abc.Stream,
                     peer: str | None = None, *, entered: bool = False) -> None:
    """Serve one MQTT connection until it ends; closes ``stream``. Never raises for
    anything the peer does.

    A connection from an address over its limits (``max_connections_per_address``, the
    per-address connection rate) is refused before anything else is done for it:
    :func:`refuse_connection`. ``entered``: the caller has entered it in
    ``server.connections`` already, and it was admitted (the plain MQTT listener, which
    refuses without a task; MQTT over WebSocket); it is left here all the same. One
    function, not two, because its frame stays on every idle connection's stack; it is
    also the task's root on sockets (``accept.serve_listener``)."""
    connections = server.connections
    if not entered and not connections.enter("mqtt", peer):
        await refuse_connection(server, stream, peer)
        return
    conn = Connection(Role.SERVER, protocol_version=None,
                      max_packet_size=server.limits.max_packet_size)
    try:
        connect = await _read_connect(server, stream, conn)
        session = None if connect is None else await _accept(server, stream, conn, connect)
        del connect  # this frame lasts as long as the connection: its token need not
        if session is not None:
            await session.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:  # a bug: logged, this connection ends, the listener goes on
        log.exception("MQTT connection handler failed")
    finally:
        connections.leave("mqtt", peer)
        await close_stream(stream)


#: A connection refused for its address's limits waits at most this long for its CONNECT,
#: so that an MQTT 5.0 client can be told why; at most REFUSALS_READ such at a time (the
#: others, and every 3.1.1 client, are closed without a word: 3.1.1 has no CONNACK for it).
REFUSAL_WAIT = 0.5
REFUSALS_READ = 64


async def refuse_connection(server: PushServer, stream: trio.abc.Stream,
                            peer: str | None) -> None:
    """End a connection refused for its source address's limits (it was not counted).

    An MQTT 5.0 CONNECT that is already there (or comes within ``REFUSAL_WAIT``) gets
    CONNACK 0x9F "connection rate exceeded" or 0x97 "quota exceeded" (too many
    connections held); nothing is authenticated or stored."""
    log.debug("closing a connection from %s: over that address's limits", peer)
    connections = server.connections
    try:
        if connections.refusing < REFUSALS_READ:
            connections.refusing += 1
            try:
                with trio.move_on_after(REFUSAL_WAIT):
                    await _tell_refused(server, stream, connections.over_rate(peer))
            finally:
                connections.refusing -= 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _tell_refused(server: PushServer, stream: trio.abc.Stream, rate: bool) -> None:
    conn = refusal_codec()
    while (answer := refusal_answer(conn, rate)) == b"":
        conn.receive_data(await stream.receive_some(4096))
    if answer is not None:
        await stream.send_all(answer)


def refusal_codec() -> Connection:
    """The codec that reads a refused connection's CONNECT (:func:`refusal_answer`)."""
    return Connection(Role.SERVER, protocol_version=5, max_packet_size=4096)


def refusal_answer(conn: Connection, rate: bool) -> bytes | None:
    """What to tell a connection refused for its address's limits, from what ``conn``
    (:func:`refusal_codec`) has been given: for an MQTT 5.0 CONNECT, CONNACK 0x9F
    "connection rate exceeded" (``rate``) or 0x97 "quota exceeded"; None (close without a
    word) for anything else, 3.1.1 included, which has no CONNACK for it; ``b""`` while the
    CONNECT is not whole. Pure: the callers do the I/O."""
    try:
        event = conn.next_event()
    except RemoteProtocolError:
        return None  # not an MQTT 5.0 CONNECT (or not whole in 4 KiB)
    if event is NEED_DATA:
        return b""
    if not isinstance(event, Connect):
        return None
    if rate:
        code, text = ReasonCode.CONNECTION_RATE_EXCEEDED, \
            "too many new connections from your address; retry later"
    else:
        code, text = ReasonCode.QUOTA_EXCEEDED, "too many connections from your address"
    return conn.send(mqtt5.refusal(conn, 3, code, text))


async def _read_connect(server: PushServer, stream: trio.abc.Stream,
                        conn: Connection) -> Connect | None:
    with trio.move_on_after(server.limits.connect_timeout):
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                server.counters.mqtt_protocol_errors += 1
                log.info("closing a connection before CONNECT: %s", exc)
                if exc.answer is not None:  # e.g. CONNACK 1 / 0x84 (MQTT-3.1.2-2), 0x85
                    with trio.move_on_after(server.limits.send_timeout):
                        await stream.send_all(conn.send(exc.answer))
                return None
            if event is NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
            elif isinstance(event, Connect):
                return event
            else:  # ConnectionClosed
                return None
    log.debug("closing a connection that sent no CONNECT in %s s", server.limits.connect_timeout)
    return None


def _authenticate(server: PushServer, connect: Connect
                  ) -> tuple[int, str, TokenOwner | None]:
    """CONNACK return code (3.1.1), why (the 5.0 Reason String), and who the token
    belongs to when accepted."""
    if not connect.client_id:
        return ConnackCode.IDENTIFIER_REJECTED, "the client id must be the registration id", \
            None
    if connect.username is None or connect.password is None:
        return ConnackCode.BAD_USERNAME_OR_PASSWORD, "user name (app key) and password " \
            "(device token) are required", None
    token_hash, now = _token_hash(connect.password), server.clock.now()
    owner = server.store.token_device(token_hash, now)
    if owner is None:
        if connect.protocol_level == 5 and server.store.token_of_deleted_device(token_hash, now):
            # 5.0 can say "revoked for good" (0x87); 3.1.1 keeps its 4 ("register again").
            return ConnackCode.NOT_AUTHORIZED, "this device was unregistered", None
        # unknown, expired or revoked: register again
        return ConnackCode.BAD_USERNAME_OR_PASSWORD, "unknown, expired or revoked token: " \
            "register again", None
    rid = owner.registration_id
    if connect.client_id not in (rid, rid + PROBE_SUFFIX) or owner.app_key != connect.username:
        return ConnackCode.NOT_AUTHORIZED, "this token belongs to another device or app", None
    if connect.will is not None:
        # A will would publish on the device's behalf; devices may publish only receipts.
        return ConnackCode.NOT_AUTHORIZED, "a will is not allowed", None
    if connect.properties.authentication_method is not None:
        return ConnackCode.NOT_AUTHORIZED, "enhanced authentication is not supported", None
    return ConnackCode.ACCEPTED, "", owner


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
        # Over the admission rate (a reconnect storm): "server unavailable" (5.0: "server
        # busy"), before the token lookup, so a refusal costs almost nothing. The SDK
        # backs off and retries.
        server.counters.mqtt_connections_refused += 1
        log.debug("refused CONNECT of client id %r: over the admission rate",
                  connect.client_id[:64])
        await _refuse(server, stream, conn, ConnackCode.SERVER_UNAVAILABLE,
                      "too many devices connecting; retry later", ReasonCode.SERVER_BUSY)
        return None
    code, why, owner = _authenticate(server, connect)
    if owner is None:
        server.counters.mqtt_connections_refused += 1
        log.info("refused CONNECT of client id %r: %s (CONNACK %#x)", connect.client_id[:64],
                 why, conn.connack_code(code))
        await _refuse(server, stream, conn, code, why)
        return None
    token_hash = _token_hash(connect.password or b"")
    keepalive, server_keep_alive = mqtt5.keepalive_terms(connect, server.limits.max_keepalive)
    connack = ConnAck() if conn.protocol_version != 5 else ConnAck(
        properties=mqtt5.connack_properties(server.limits.max_packet_size, server_keep_alive))
    if connect.client_id.endswith(PROBE_SUFFIX):
        await _serve_probe(server, stream, conn, connack, keepalive, owner, token_hash)
        return None
    rid = connect.client_id
    _take_over(server, rid)
    opened = await server.committer.write(writes.open_session, rid, connect.clean_session,
                                          server.clock.now())
    _take_over(server, rid)  # another connection of the device opened while this waited
    server.counters.messages_discarded += opened.discarded
    server.counters.messages_expired += opened.expired
    server.counters.mqtt_connections_accepted += 1
    # Interned: the devices of one app share one string, not a copy each from the store.
    session = MqttSession(server, stream, conn, rid, sys.intern(owner.app_key),
                          mqtt5.session_expiry(connect), keepalive, opened.sub_qos, token_hash)
    session.revoke(_revoke_after(server, owner))
    server.sessions.attach(session)
    if opened.session_present:
        connack = attrs.evolve(connack, session_present=True)
    session.connack = conn.send(connack)
    server.counters.connect_latency.observe(trio.current_time() - received)
    return session


async def _refuse(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                  code: int, why: str, reason: int | None = None) -> None:
    """Answer a CONNECT with a refusing CONNACK (then the connection is closed): the
    3.1.1 ``code``, or in 5.0 ``reason`` (default: ``code``'s 5.0 code) and ``why``."""
    with trio.move_on_after(server.limits.send_timeout):
        await stream.send_all(conn.send(mqtt5.refusal(conn, code, reason, why)))


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
                       connack: ConnAck, keepalive: int, owner: TokenOwner,
                       token_hash: bytes) -> None:
    """A *probe* connection (client id ``<registration_id>/probe``): an extension for
    heartbeat strategies that measure the NAT's idle timeout on a second connection, so the
    main one never goes silent longer than is known to be safe (docs/protocol.md).

    It has no session, no queue and does not take the device's connection over: it answers
    PINGREQ until the device disconnects, goes silent past 1.5 × keepalive, or sends
    anything else (which closes it). A device holds at most ``max_probes_per_device``
    (one more gets CONNACK 3 "server unavailable", 5.0: 0x97 "quota exceeded").
    """
    rid = owner.registration_id
    probe = _Probe(token_hash)
    if not server.sessions.add_probe(rid, probe):
        server.counters.mqtt_probes_refused += 1
        log.info("refused a probe connection of device %s: it holds %d already", rid,
                 server.sessions.probes(rid))
        await _refuse(server, stream, conn, ConnackCode.SERVER_UNAVAILABLE,
                      "too many probe connections of this device", ReasonCode.QUOTA_EXCEEDED)
        return
    try:
        server.counters.mqtt_probes += 1
        probe.revoke(_revoke_after(server, owner))
        with probe.scope:
            await _answer_pings(server, stream, conn, connack, keepalive)
        if probe.scope.cancelled_caught:
            server.counters.mqtt_sessions_revoked += 1
    finally:
        server.sessions.remove_probe(rid, probe)


async def _answer_pings(server: PushServer, stream: trio.abc.Stream, conn: Connection,
                        connack: ConnAck, keepalive: int) -> None:
    grace = keepalive * 1.5 if keepalive else math.inf
    with trio.move_on_after(server.limits.send_timeout):
        await stream.send_all(conn.send(connack))
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
            await stream.send_all(PINGRESP_BYTES)
