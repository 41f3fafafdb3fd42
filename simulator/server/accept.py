"""The server's own accept loop for its plain ports (HTTP and MQTT over TCP).

Each admitted connection is a :class:`pushsdk.tcp.TcpStream` whose task root is the
protocol's ``serve_*`` function (``serve_http``, ``serve_mqtt``) with ``entered=True``: no
trio socket object, no conflict detectors, and no handler wrapped twice (trio's
``serve_listeners`` and ours, each closing the stream again) — two frames fewer on every
idle connection's stack, and one close instead of three when it ends.

A connection refused for its source address's limits (``ConnectionTable.enter``) costs no
task when what it has sent so far settles the answer: an accept, a non-blocking peek or
read, at most one non-blocking write, and a close. Under a flood of refused connections
that is the whole cost of each (``python -m power_bench.server_floods``).

* HTTP: what has arrived is read (so that the close is a FIN, not a reset under the
  answer) and :data:`~.http_api.TOO_MANY_CONNECTIONS` (429, ``Retry-After``) is written.
* MQTT: a whole 5.0 CONNECT already there gets CONNACK 0x9F or 0x97
  (``mqtt_gateway.refusal_answer``); anything else is closed without a word. A CONNECT
  still coming is waited for in a task (``refuse_connection``), at most
  ``REFUSALS_READ`` at a time.
"""
from __future__ import annotations

import errno
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import trio

from pushsdk.tcp import TcpStream

from .http_api import TOO_MANY_CONNECTIONS, serve_http
from .http_connection import count_reply, reply_bytes
from .logs import server_logger
from .mqtt_gateway import (
    REFUSALS_READ,
    refusal_answer,
    refusal_codec,
    refuse_connection,
    serve_mqtt,
)

if TYPE_CHECKING:
    from .server import PushServer

__all__ = ["DIRECT_KINDS", "refuse_http_at_once", "refuse_mqtt_at_once", "serve_listener"]

log = server_logger("simulator.server")

#: The ports whose connections this module accepts (TLS and WebSocket use trio's listeners).
DIRECT_KINDS = frozenset({"http", "mqtt"})
#: What a refused HTTP connection is read of, at most, before the answer.
_HTTP_READ = 65536

#: Accept errors that mean "out of descriptors or buffers for now" (what trio's
#: serve_listeners sleeps over too); any other error ends the listener.
_ACCEPT_RETRY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Accept errors about the connection being accepted, not the listener: skipped, as
#: trio's SocketListener skips them.
_ACCEPT_SKIP = frozenset(getattr(errno, name) for name in (
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH") if hasattr(errno, name))


async def serve_listener(server: PushServer, sock: socket.socket, kind: str) -> None:
    """Accept ``kind`` ("http" or "mqtt") connections on the listening ``sock`` and serve
    each in a task of its own, until cancelled; closes ``sock``."""
    serve = serve_http if kind == "http" else serve_mqtt
    task_name = f"{serve.__module__}.{serve.__qualname__}"
    refused_answer = reply_bytes(h11.Connection(h11.SERVER), TOO_MANY_CONNECTIONS)
    async with trio.open_nursery() as nursery:
        try:
            while True:
                accepted = _accept(sock)
                if accepted is None:  # nothing to accept: wait outside any except block
                    await trio.lowlevel.wait_readable(sock)
                    continue
                if isinstance(accepted, OSError):
                    log.error("accept failed: %s; retrying in 0.1 s", accepted)
                    await trio.sleep(0.1)
                    continue
                conn, address = accepted
                # Interned: devices behind one address (a carrier's NAT) share the string.
                peer = sys.intern(str(address[0])) if isinstance(address, tuple) else None
                if server.connections.enter(kind, peer):
                    # A name given: trio would otherwise format one string per task.
                    nursery.start_soon(partial(serve, server, TcpStream(conn), peer,
                                               entered=True), name=task_name)
                elif kind == "http":
                    refuse_http_at_once(server, conn, peer, refused_answer)
                elif not refuse_mqtt_at_once(server, conn, peer):
                    nursery.start_soon(refuse_connection, server, TcpStream(conn), peer)
                await trio.lowlevel.checkpoint()  # a stream of connections yields too
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()


def refuse_http_at_once(server: PushServer, sock: socket.socket, peer: str | None,
                        answer: bytes) -> None:
    """End an HTTP connection refused for its address's limits: read what it has sent
    (up to 64 KiB, without waiting), write ``answer`` if the socket takes it now, close.
    Counted like any answer (``http_requests``, ``http_responses``)."""
    log.debug("answering 429 to a connection from %s: over that address's limits", peer)
    try:
        sock.recv(_HTTP_READ, socket.MSG_DONTWAIT)
    except OSError:  # nothing yet, or reset already
        pass
    try:
        sock.send(answer, socket.MSG_DONTWAIT)
        count_reply(server.counters, TOO_MANY_CONNECTIONS)
    except OSError:
        pass
    sock.close()


def refuse_mqtt_at_once(server: PushServer, sock: socket.socket, peer: str | None) -> bool:
    """End, without a task, an MQTT connection refused for its address's limits when what
    it has sent so far settles the answer (``refusal_answer``: an MQTT 5.0 CONNECT is told
    why, all else is closed without a word), or when the gateway is waiting on
    ``REFUSALS_READ`` refused connections already. False when it has sent no whole CONNECT
    yet and there is room to wait for one (``refuse_connection``, in a task)."""
    waiting = False  # for (the rest of) a CONNECT
    try:
        data = sock.recv(4096, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        data, waiting = b"", True
    except OSError:  # reset already
        data = b""
    answer = None
    if data:
        codec = refusal_codec()
        codec.receive_data(data)
        answer = refusal_answer(codec, server.connections.over_rate(peer))
        waiting = answer == b""
    if waiting and server.connections.refusing < REFUSALS_READ:
        return False
    log.debug("closing a connection from %s: over that address's limits", peer)
    if answer:
        try:  # read what was peeked, so that the close is a FIN after the CONNACK, not a RST
            sock.recv(len(data), socket.MSG_DONTWAIT)
            sock.send(answer, socket.MSG_DONTWAIT)
        except OSError:
            pass
    sock.close()
    return True


def _accept(sock: socket.socket) -> tuple[socket.socket, Any] | OSError | None:
    """A new connection and its address; None if none is waiting (or the one waiting
    went away first), the error if out of descriptors or buffers for now."""
    try:
        return sock.accept()
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in _ACCEPT_SKIP:
            return None
        if exc.errno in _ACCEPT_RETRY:
            return exc
        raise
