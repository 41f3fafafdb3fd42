"""MQTT over WebSocket (MQTT 3.1.1 §6, 5.0 §6): a byte stream on top of another one.

:func:`open_websocket` does the opening handshake (HTTP/1.1 Upgrade, subprotocol ``mqtt``)
over a stream a connector opened, and returns a :class:`WebSocketStream`, which the session
uses like any byte stream: MQTT bytes go out as binary frames; received binary frames are
handed on as a byte stream, so one MQTT packet may span frames and a frame may hold several
packets (the codec does not care where frames end). A Ping is answered with a Pong; a text
frame is a protocol violation (MQTT-6.0.0-1) and ends the stream; the server's Close is
answered and reads as end of stream. :meth:`WebSocketStream.close_handshake` sends our Close
and waits (bounded by the caller) for the server's, after the MQTT DISCONNECT.

The WebSocket protocol itself is ``wsproto``'s (sans-IO, h11's companion); this module only
moves bytes, on whichever loop runs it.
"""
from __future__ import annotations

from collections.abc import Iterable
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
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import ProtocolViolation, TransportError

if TYPE_CHECKING:
    from ._session import ByteStream

__all__ = ["SUBPROTOCOL", "WebSocketStream", "open_websocket"]

#: The subprotocol MQTT over WebSocket must use (MQTT-6.0.0-3, -4).
SUBPROTOCOL = "mqtt"
_READ = 16384
_NORMAL_CLOSURE = 1000
_UNSUPPORTED_DATA = 1003


class WebSocketStream:
    """A WebSocket connection (client side) as the SDK's byte stream."""

    __slots__ = ("_closed", "_eof", "_pending", "_ws", "stream")

    def __init__(self, stream: ByteStream, ws: WSConnection) -> None:
        self.stream = stream
        self._ws = ws
        self._pending = bytearray()  # received MQTT bytes not handed out yet
        self._eof = False
        self._closed = False

    async def send_all(self, data: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        try:
            frame = self._ws.send(BytesMessage(data=bytes(data)))
        except LocalProtocolError as exc:  # the WebSocket is closing
            raise trio.BrokenResourceError(f"WebSocket closed: {exc}") from None
        await self.stream.send_all(frame)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """MQTT bytes as they arrive (whatever the frames); ``b""`` once the server closed
        the WebSocket (or the TCP stream)."""
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        while not self._pending and not self._eof:
            data = await self.stream.receive_some(_READ)
            if not data:
                self._eof = True
                break
            await self._feed(data)
        limit = max_bytes or len(self._pending) or 1
        out = bytes(self._pending[:limit])
        del self._pending[:limit]
        return out

    async def _feed(self, data: bytes | bytearray) -> None:
        try:
            self._ws.receive_data(bytes(data))
            await self._absorb(self._ws.events())
        except RemoteProtocolError as exc:
            raise ProtocolViolation(f"WebSocket protocol error from the server: {exc}") \
                from None

    async def _absorb(self, events: Iterable[Event]) -> None:
        """Take received WebSocket events: keep MQTT bytes, answer Ping and Close."""
        ws = self._ws
        replies = bytearray()
        for event in events:
            if isinstance(event, BytesMessage):
                self._pending += event.data
            elif isinstance(event, Ping):
                replies += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    replies += ws.send(event.response())
                self._eof = True
            elif isinstance(event, TextMessage):
                replies += ws.send(CloseConnection(_UNSUPPORTED_DATA, "binary frames only"))
                await self.stream.send_all(bytes(replies))
                self._eof = True
                raise ProtocolViolation("the server sent a WebSocket text frame; MQTT "
                                        "travels in binary frames (MQTT-6.0.0-1)")
        if replies:
            await self.stream.send_all(bytes(replies))

    async def close_handshake(self) -> None:
        """Send our Close (normal closure) and read until the server's comes back. The
        caller bounds the time; the TCP stream is closed by :meth:`aclose`."""
        ws = self._ws
        if self._closed or ws.state is not ConnectionState.OPEN:
            return
        await self.stream.send_all(ws.send(CloseConnection(_NORMAL_CLOSURE)))
        while not self._eof:
            data = await self.stream.receive_some(_READ)
            if not data:
                return
            try:
                ws.receive_data(bytes(data))
                closed = any(isinstance(e, CloseConnection) for e in ws.events())
            except RemoteProtocolError:
                return
            self._eof = closed

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.stream.aclose()


async def open_websocket(stream: ByteStream, host: str, port: int, path: str, *,
                         tls: bool) -> WebSocketStream:
    """The WebSocket handshake for MQTT at ``path`` over ``stream`` (already connected to
    ``host:port``); the caller bounds the time it takes and closes ``stream`` on failure.
    Raises :class:`TransportError` when the server does not upgrade (an HTTP status, no
    ``mqtt`` subprotocol)."""
    ws = WSConnection(ConnectionType.CLIENT)
    default = 443 if tls else 80
    authority = host if port == default else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        authority = f"[{host}]" if port == default else f"[{host}]:{port}"
    await stream.send_all(ws.send(Request(host=authority, target=path,
                                          subprotocols=[SUBPROTOCOL])))
    where = f"ws{'s' if tls else ''}://{authority}{path}"
    while True:
        data = await stream.receive_some(_READ)
        if not data:
            raise TransportError(f"{where} closed the connection during the WebSocket "
                                 "handshake")
        try:
            ws.receive_data(bytes(data))
            events = list(ws.events())
        except RemoteProtocolError as exc:
            raise TransportError(f"{where} answered the WebSocket handshake with something "
                                 f"else: {exc}") from None
        for index, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                if event.subprotocol != SUBPROTOCOL:
                    raise TransportError(f"{where} did not accept the WebSocket "
                                         f"subprotocol 'mqtt' (got {event.subprotocol!r})")
                websocket = WebSocketStream(stream, ws)
                await websocket._absorb(events[index + 1:])  # frames right after the 101
                return websocket
            if isinstance(event, RejectConnection):
                raise TransportError(f"{where} refused the WebSocket upgrade (HTTP "
                                     f"{event.status_code}): is this an MQTT WebSocket "
                                     "endpoint?")
            if isinstance(event, RejectData):
                continue
