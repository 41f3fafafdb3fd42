"""The reference server on real sockets: TCP (and TLS) listeners for HTTP and MQTT.

:func:`serve_tcp` listens and hands each accepted connection, with its source address, to
``PushServer.handle_http_stream`` / ``handle_mqtt_stream``; it also runs the server's
group committer, :class:`~.mqtt_session.Flusher` and ``SendGuard`` while it serves.
:func:`run_server` adds opening and closing the store. ``reuse_port=True`` listens with
``SO_REUSEPORT``, so that the worker processes of ``pushsim server --workers N`` share the
ports (:func:`reuseport_socket`, also used by ``supervisor.py`` to reserve them).

The plain MQTT and HTTP ports are accepted by the server itself (:mod:`.accept`): each
connection is a :class:`pushsdk.tcp.TcpStream`, a slotted trio stream over the OS socket
(no trio socket object, no conflict detectors) that writes what the kernel takes at once
without a scheduler round trip (``TcpStream.try_send``), and a connection refused for its
address's limits costs no task. TLS and WebSocket ports use trio's listeners.
"""
from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from pushsdk.tcp import TcpStream

from .accept import DIRECT_KINDS, serve_listener
from .gctune import server_gc
from .websocket import PATH as WS_PATH
from .mqtt_session import Flusher
from .store import SqliteStore
from .logs import server_logger

if TYPE_CHECKING:
    from .server import PushServer
    from .settings import ServerSettings
    from .wallclock import WallClock

__all__ = ["RunningServer", "listening_sockets", "peer_address", "reuseport_socket",
           "run_server", "serve_tcp"]

log = server_logger("simulator.server")

Handler = Callable[[trio.abc.Stream, "str | None"], Awaitable[None]]


@attrs.frozen
class RunningServer:
    """What :func:`serve_tcp` / :func:`run_server` report once listening."""

    server: PushServer
    host: str
    http_port: int
    mqtt_port: int
    #: None when TLS is off (or HTTPS was not asked for).
    mqtts_port: int | None = None
    https_port: int | None = None
    #: MQTT over WebSocket (``/mqtt``), None when not served; ``wss`` needs TLS.
    ws_port: int | None = None
    wss_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.http_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{_url_host(self.host)}:{self.mqtt_port}"

    @property
    def mqtts_url(self) -> str | None:
        return None if self.mqtts_port is None else \
            f"mqtts://{_url_host(self.host)}:{self.mqtts_port}"

    @property
    def https_url(self) -> str | None:
        return None if self.https_port is None else \
            f"https://{_url_host(self.host)}:{self.https_port}"

    @property
    def ws_url(self) -> str | None:
        return None if self.ws_port is None else \
            f"ws://{_url_host(self.host)}:{self.ws_port}{WS_PATH}"

    @property
    def wss_url(self) -> str | None:
        return None if self.wss_port is None else \
            f"wss://{_url_host(self.host)}:{self.wss_port}{WS_PATH}"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def peer_address(stream: trio.abc.Stream) -> str | None:
    """The source address of an accepted TCP stream (under TLS too), None if it has none."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, (trio.SocketStream, TcpStream)):
        return None
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else None


# --- listening with SO_REUSEPORT ----------------------------------------------------------

def _addresses(host: str, port: int) -> list[tuple[int, Any]]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    seen: set[tuple[int, Any]] = set()
    result: list[tuple[int, Any]] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.add((family, sockaddr))
            result.append((family, sockaddr))
    return result


def reuseport_socket(host: str, port: int, family: int | None = None,
                     sockaddr: Any = None) -> socket.socket:
    """A bound, not yet listening ``SO_REUSEPORT`` TCP socket on ``host``'s first address
    (or on ``sockaddr``)."""
    if sockaddr is None:
        family, sockaddr = _addresses(host, port)[0]
    assert family is not None
    return _bound_socket(family, sockaddr, reuse_port=True)


def _bound_socket(family: int, sockaddr: Any, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


#: As trio's listeners ask: the kernel caps it at net.core.somaxconn.
_BACKLOG = 0xFFFF


def listening_sockets(port: int, host: str, *, reuse_port: bool) -> list[socket.socket]:
    """Non-blocking listening TCP sockets on every address of ``host``, bound as trio's
    ``open_tcp_listeners`` binds them (``SO_REUSEADDR``, IPv6 only on IPv6 addresses);
    with ``reuse_port`` also ``SO_REUSEPORT``: several processes may listen on the same
    port and the kernel spreads new connections among them."""
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in _addresses(host, port):
            sock = _bound_socket(family, sockaddr, reuse_port=reuse_port)
            sockets.append(sock)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# --- serving -------------------------------------------------------------------------------

def _handlers(server: PushServer, tls: ssl.SSLContext | None, ports: dict[str, int | None],
              ) -> dict[str, tuple[int, Callable[[trio.abc.Stream], Awaitable[None]]]]:
    """kind -> (port, handler of one accepted stream)."""

    def handle(serve: Handler) -> Callable[[trio.abc.Stream], Awaitable[None]]:
        async def guarded(stream: trio.abc.Stream) -> None:
            try:
                await serve(stream, peer_address(stream))
            except Exception:  # a bug: logged, the listener goes on
                log.exception("connection handler failed")

        return guarded

    # The plain "http" and "mqtt" ports are served by accept.serve_listener (DIRECT_KINDS),
    # not by these handlers; the http one is what HTTPS wraps.
    handlers = {"http": (ports["http"] or 0, handle(server.handle_http_stream)),
                "mqtt": (ports["mqtt"] or 0, handle(server.handle_mqtt_stream))}
    if ports["ws"] is not None:
        handlers["ws"] = (ports["ws"], handle(server.handle_ws_stream))
    if tls is not None:
        from .tls import tls_handler  # imports cryptography: only when TLS is on

        limits = server.limits
        # A client that never finishes its handshake is given the same time it would
        # have had to send CONNECT or an HTTP request on a plain connection.
        handlers["mqtts"] = (ports["mqtts"] or 0, tls_handler(
            handle(server.handle_mqtt_stream), tls, handshake_timeout=limits.connect_timeout))
        if ports["https"] is not None:
            handlers["https"] = (ports["https"], tls_handler(
                handlers["http"][1], tls, handshake_timeout=limits.request_timeout))
        if ports["wss"] is not None:
            handlers["wss"] = (ports["wss"], tls_handler(
                handle(server.handle_ws_stream), tls, handshake_timeout=limits.connect_timeout))
    return handlers


def _open(handlers: dict[str, Any], host: str, reuse_port: bool,
          ) -> dict[str, list[socket.socket]]:
    """kind -> its listening sockets; none is left open if one cannot be bound."""
    opened: dict[str, list[socket.socket]] = {}
    try:
        for kind, (port, _) in handlers.items():
            opened[kind] = listening_sockets(port, host, reuse_port=reuse_port)
    except BaseException:
        _close(opened)
        raise
    return opened


def _close(opened: dict[str, list[socket.socket]]) -> None:
    for sockets in opened.values():
        for sock in sockets:
            sock.close()


async def serve_tcp(server: PushServer, *, host: str = "127.0.0.1", http_port: int = 8480,
                    mqtt_port: int = 1883, tls: ssl.SSLContext | None = None,
                    mqtts_port: int = 8883, https_port: int | None = None,
                    ws_port: int | None = None, wss_port: int | None = None,
                    reuse_port: bool = False,
                    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
    """Listen on TCP (port 0 = any free port) and serve ``server`` until cancelled.

    With a server-side ``tls`` context (see :mod:`simulator.server.tls`) MQTT over TLS
    is served on ``mqtts_port`` as well, and HTTPS on ``https_port`` if given; the
    registration answer then advertises the MQTTS endpoint (``"tls": true``), while
    plain MQTT stays open for broker-style clients.

    ``ws_port`` serves MQTT over WebSocket (``ws://HOST:PORT/mqtt``, :mod:`.websocket`),
    and with ``tls`` ``wss_port`` over TLS; registration answers advertise it as
    ``mqtt.ws`` (``wss://`` when served).

    Reports a :class:`RunningServer` with the real ports. Raises ``OSError`` when a port
    cannot be bound (nothing is left listening then).
    """
    if (https_port is not None or wss_port is not None) and tls is None:
        raise ValueError("https_port and wss_port need a TLS context")
    handlers = _handlers(server, tls, {"http": http_port, "mqtt": mqtt_port,
                                       "mqtts": mqtts_port, "https": https_port,
                                       "ws": ws_port, "wss": wss_port})
    opened = _open(handlers, host, reuse_port)
    try:
        await _serve(server, tls, host, handlers, opened, task_status)
    finally:
        _close(opened)


async def _serve(server: PushServer, tls: ssl.SSLContext | None, host: str,
                 handlers: dict[str, tuple[int, Callable[[trio.abc.Stream], Awaitable[None]]]],
                 opened: dict[str, list[socket.socket]],
                 task_status: trio.TaskStatus[RunningServer]) -> None:
    ports = {kind: sockets[0].getsockname()[1] for kind, sockets in opened.items()}
    # What registration answers advertise: TLS whenever it is on (that is how the SDK
    # learns to use it), with the port really bound.
    if tls is not None:
        server.advertise(ports["mqtts"], tls=True)
    else:
        server.advertise(ports["mqtt"], tls=False)
    running = RunningServer(server, host, ports["http"], ports["mqtt"],
                            mqtts_port=ports.get("mqtts"), https_port=ports.get("https"),
                            ws_port=ports.get("ws"), wss_port=ports.get("wss"))
    server.advertise_ws(running.wss_url or running.ws_url)
    with server_gc():
        async with trio.open_nursery() as nursery:
            committer = server.committer
            if committer.batched and not committer.running:
                # First in, last out: on cancellation it commits what is still queued.
                await nursery.start(committer.run)
            if server.flusher is None:
                await nursery.start(_run_flusher, server)
            if not server.send_guard.running:
                await nursery.start(server.send_guard.run)
            for kind, (_, handler) in handlers.items():
                if kind in DIRECT_KINDS:
                    for sock in opened[kind]:
                        nursery.start_soon(serve_listener, server, sock, kind)
                else:
                    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                                 for sock in opened[kind]]
                    nursery.start_soon(trio.serve_listeners, handler, listeners)
            task_status.started(running)
            log.info("listening on %s: %s", host,
                     ", ".join(f"{kind.upper()} port {port}" for kind, port in ports.items()))


async def _run_flusher(server: PushServer, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    flusher = server.flusher = Flusher()
    try:
        await flusher.run(task_status=task_status)
    finally:
        if server.flusher is flusher:
            server.flusher = None  # sessions woken from now on flush in tasks of their own


async def run_server(
    settings: ServerSettings,
    *,
    db: str = ":memory:",
    host: str = "127.0.0.1",
    http_port: int = 8480,
    mqtt_port: int = 1883,
    tls: ssl.SSLContext | None = None,
    mqtts_port: int = 8883,
    https_port: int | None = None,
    ws_port: int | None = None,
    wss_port: int | None = None,
    clock: WallClock | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the store, listen, serve until cancelled, then close connections and the store.

    ``tls``, ``mqtts_port``, ``https_port``, ``ws_port`` and ``wss_port`` are as for
    :func:`serve_tcp`.

    Raises :class:`~simulator.server.store.StoreError` for an unusable database and
    ``OSError`` for a port that cannot be bound, before reporting started.
    """
    from .server import PushServer

    store = SqliteStore(db)
    try:
        server = PushServer(store, settings=settings, clock=clock, rng=rng)
        await serve_tcp(server, host=host, http_port=http_port, mqtt_port=mqtt_port, tls=tls,
                        mqtts_port=mqtts_port, https_port=https_port, ws_port=ws_port,
                        wss_port=wss_port, task_status=task_status)
    finally:
        store.close()
        log.info("stopped; database closed")
