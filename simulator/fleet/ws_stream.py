"""MQTT over WebSocket for the fleet's own MQTT connections (publisher, pre-flight,
clean-up): a client byte stream on top of a connector's stream (MQTT 5.0 §6, 3.1.1 §6).

The handsets get WebSocket from the SDK itself (``BrokerConfig.websocket_path``); this is the
same protocol for the connections the fleet writes with the codec: the opening handshake
with subprotocol ``mqtt``, MQTT bytes out as binary frames, binary frames in as a byte
stream (a packet may span frames), Pings answered, the server's Close read as end of
stream. The WebSocket protocol is ``wsproto``'s (sans-IO); this module only moves bytes.
"""
from __future__ import annotations

from collections.abc import Iterable

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
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WebSocketError

from pushsdk.transport import TransportError

__all__ = ["WebSocketClientStream", "open_websocket_stream"]

SUBPROTOCOL = "mqtt"
_READ = 65536


class WebSocketClientStream(trio.abc.Stream):
    """A WebSocket connection (client side) as a trio byte stream of MQTT bytes."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._pending = bytearray()  # received MQTT bytes not handed out yet
        self._eof = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closed")
        await self._stream.send_all(self._ws.send(BytesMessage(data=bytes(data))))

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while not self._pending and not self._eof:
            data = await self._stream.receive_some(_READ)
            if not data:
                self._eof = True
                break
            try:
                self._ws.receive_data(bytes(data))
                await self.absorb(self._ws.events())
            except WebSocketError as exc:
                raise trio.BrokenResourceError(f"WebSocket protocol error: {exc}") from None
        size = len(self._pending) if max_bytes is None else max_bytes
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    async def absorb(self, events: Iterable[Event]) -> None:
        """Take in what the connection produced (received frames)."""
        for event in events:
            if isinstance(event, BytesMessage):
                self._pending += event.data
            elif isinstance(event, Ping):
                await self._stream.send_all(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._stream.send_all(self._ws.send(event.response()))
                self._eof = True
            elif isinstance(event, TextMessage):  # MQTT-6.0.0-1: binary frames only
                raise trio.BrokenResourceError("the server sent a WebSocket text frame")

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


async def open_websocket_stream(stream: trio.abc.Stream, host: str, port: int, path: str, *,
                                tls: bool) -> WebSocketClientStream:
    """The opening handshake for MQTT at ``path`` over ``stream`` (connected to
    ``host:port``); the caller bounds the time and closes ``stream`` on failure.
    :class:`TransportError` when the server does not upgrade with subprotocol ``mqtt``."""
    ws = WSConnection(ConnectionType.CLIENT)
    default = 443 if tls else 80
    authority = f"[{host}]" if ":" in host else host
    if port != default:
        authority = f"{authority}:{port}"
    where = f"ws{'s' if tls else ''}://{authority}{path}"
    await stream.send_all(ws.send(Request(host=authority, target=path,
                                          subprotocols=[SUBPROTOCOL])))
    while True:
        data = await stream.receive_some(_READ)
        if not data:
            raise TransportError(f"{where} closed the connection during the WebSocket "
                                 "handshake")
        try:
            ws.receive_data(bytes(data))
            events = list(ws.events())
        except WebSocketError as exc:
            raise TransportError(f"{where} answered the WebSocket handshake with something "
                                 f"else: {exc}") from None
        for index, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                if event.subprotocol != SUBPROTOCOL:
                    raise TransportError(f"{where} did not accept the WebSocket subprotocol "
                                         f"'mqtt' (got {event.subprotocol!r})")
                websocket = WebSocketClientStream(stream, ws)
                await websocket.absorb(events[index + 1:])  # frames that came with the 101
                return websocket
            if isinstance(event, RejectConnection):
                raise TransportError(f"{where} refused the WebSocket upgrade (HTTP "
                                     f"{event.status_code})")
