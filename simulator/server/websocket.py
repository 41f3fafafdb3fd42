"""MQTT over WebSocket (MQTT 5.0 §6, the same for 3.1.1): ``ws://HOST:PORT/mqtt``.

:func:`serve_websocket` serves one accepted connection: the opening handshake (HTTP/1.1
Upgrade, path :data:`PATH`, subprotocol ``mqtt``) with ``wsproto``, then the MQTT gateway
on a :class:`WebSocketStream` — a trio ``Stream`` whose bytes are the payloads of binary
frames, so MQTT packets may span frames and a frame may hold several. Ping is answered by
Pong; a Close from the client is answered and ends the stream; the server closes with
status 1000 (1002 for a text frame or a broken frame). Refusals are proper HTTP answers:
404 for another path, 400 without the ``mqtt`` subprotocol or for a request that is not a
WebSocket upgrade, 429 with ``Retry-After`` for an address over its limits (the same
per-address limits as every other connection: ``connections.py``).
"""
from __future__ import annotations

import http
import json
from typing import TYPE_CHECKING

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .logs import server_logger
from .mqtt_gateway import serve_mqtt

if TYPE_CHECKING:
    from .server import PushServer

__all__ = ["PATH", "SUBPROTOCOL", "WebSocketStream", "serve_websocket"]

log = server_logger("simulator.server.ws")

PATH = "/mqtt"
SUBPROTOCOL = "mqtt"
RECEIVE_SIZE = 16 * 1024
#: How long the server's closing handshake may take (its Close, the client's answer).
CLOSE_TIMEOUT = 1.0


def _http_refusal(status: int, reason: str, code: str, message: str,
                  retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error answer (JSON body, as the HTTP API's), then close."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close", "Server: pushsim"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_MANY = _http_refusal(429, "Too Many Requests", "too_many_connections",
                         "too many connections from your address", retry_after=1)


class WebSocketStream(trio.abc.Stream):
    """The MQTT byte stream inside an open WebSocket: what :func:`~.mqtt_gateway.serve_mqtt` reads
    and writes. Writes from several tasks (the reader's Pong, a flush) are coalesced, as
    in ``MqttSession._send``: one task writes to the transport at a time."""

    __slots__ = ("transport", "ws", "_outbox", "_eof", "_reply")

    def __init__(self, transport: trio.abc.Stream, ws: WSConnection) -> None:
        self.transport = transport
        self.ws = ws
        self._outbox: bytearray | None = None  # not None while a task is writing
        self._eof = False
        self._reply = b""  # control frames to answer, written by receive_some

    async def _write(self, data: bytes) -> None:
        if self._outbox is not None:
            self._outbox += data
            return
        self._outbox = outbox = bytearray()
        try:
            while data:
                await self.transport.send_all(data)
                data = bytes(outbox)
                outbox.clear()
        finally:
            self._outbox = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        await self._write(self.ws.send(BytesMessage(data=bytes(data))))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next payload bytes of binary frames; b"" once the WebSocket is closed."""
        while not self._eof:
            data = bytearray()
            try:
                for event in self.ws.events():
                    self._on_event(event, data)
            except RemoteProtocolError as exc:  # a broken frame: 1002, and the end
                log.info("closing a WebSocket: %s", exc)
                self._eof = True
                if self.ws.state is ConnectionState.OPEN:
                    self._reply += self.ws.send(CloseConnection(1002, str(exc)[:100]))
            if self._reply:
                reply, self._reply = self._reply, b""
                await self._write(reply)
            if data:
                return bytes(data)
            if self._eof:
                break
            chunk = await self.transport.receive_some(RECEIVE_SIZE)
            if not chunk:
                self._eof = True
                break
            # wsproto appends what it gets to a bytearray, so a bytearray is fine (its
            # annotation says bytes; a bytes() copy would cost on this hot path).
            self.ws.receive_data(chunk)  # type: ignore[arg-type]
        return b""

    def _on_event(self, event: Event, data: bytearray) -> None:
        if isinstance(event, BytesMessage):
            data += event.data
        elif isinstance(event, Ping):
            self._reply += self.ws.send(event.response())
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self._reply += self.ws.send(event.response())
            self._eof = True
        elif isinstance(event, TextMessage):  # MQTT-6.0.0-1: binary frames only
            log.info("closing a WebSocket that sent a text frame")
            self._reply += self.ws.send(CloseConnection(1003, "MQTT needs binary frames"))
            self._eof = True

    async def aclose(self) -> None:
        """Nothing here: :func:`serve_websocket` closes the WebSocket and the transport."""
        self._eof = True
        await trio.lowlevel.checkpoint()


async def serve_websocket(server: PushServer, stream: trio.abc.Stream,
                          peer: str | None = None) -> None:
    """Serve one MQTT-over-WebSocket connection until it ends. Never raises for
    anything the peer does."""
    connections = server.connections
    if not connections.enter("mqtt", peer):
        log.debug("refusing a WebSocket connection from %s: over that address's limits", peer)
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await stream.send_all(TOO_MANY)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(stream)
        return
    handed_over = False  # to serve_mqtt, which leaves the connection table
    try:
        ws = WSConnection(ConnectionType.SERVER)
        inner = None
        with trio.move_on_after(server.limits.connect_timeout):
            inner = await _handshake(stream, ws)
        if inner is not None:
            handed_over = True
            await serve_mqtt(server, inner, peer, entered=True)
            await _close(stream, ws, inner)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if not handed_over:
            connections.leave("mqtt", peer)
        await trio.aclose_forcefully(stream)


async def _handshake(stream: trio.abc.Stream, ws: WSConnection) -> WebSocketStream | None:
    """Read the opening handshake and accept or refuse it; the open stream, or None."""
    while True:
        try:
            for event in ws.events():
                if isinstance(event, Request):
                    return await _answer(stream, ws, event)
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return None
            ws.receive_data(data)  # type: ignore[arg-type]  # takes bytearray too, as above
        except RemoteProtocolError as exc:  # not a WebSocket handshake at all
            log.debug("refusing a WebSocket handshake: %s", exc)
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            await stream.send_all(_http_refusal(status, http.HTTPStatus(status).phrase,
                                                "bad_websocket_handshake", str(exc)[:200]))
            return None


async def _answer(stream: trio.abc.Stream, ws: WSConnection,
                  request: Request) -> WebSocketStream | None:
    path = request.target.partition("?")[0]
    if path != PATH:
        await _reject(stream, ws, 404, "not_found", f"MQTT over WebSocket is at {PATH}")
        return None
    if SUBPROTOCOL not in request.subprotocols:
        await _reject(stream, ws, 400, "subprotocol_required",
                      f"the WebSocket subprotocol must be {SUBPROTOCOL!r}")
        return None
    await stream.send_all(ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
    return WebSocketStream(stream, ws)


async def _reject(stream: trio.abc.Stream, ws: WSConnection, status: int, code: str,
                  message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
    data += ws.send(RejectData(data=body, body_finished=True))
    await stream.send_all(data)


async def _close(stream: trio.abc.Stream, ws: WSConnection, inner: WebSocketStream) -> None:
    """The closing handshake, when the server ends the connection (status 1000), bounded
    by CLOSE_TIMEOUT; nothing when the client closed first."""
    if ws.state is not ConnectionState.OPEN:
        return
    with trio.move_on_after(CLOSE_TIMEOUT):
        await inner._write(ws.send(CloseConnection(1000)))
        while ws.state is ConnectionState.LOCAL_CLOSING:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            ws.receive_data(data)
            for _ in ws.events():
                pass
