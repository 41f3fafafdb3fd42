"""A loopback WebSocket-to-TCP bridge in front of a real MQTT broker, for the SDK's
MQTT-over-WebSocket tests (Debian's Mosquitto cannot open a websockets listener).

The WebSocket side is wsproto's server end (an implementation independent of the SDK's use of
its client end only in role; the MQTT side is a real Mosquitto). What the broker sends is cut
into binary frames of at most ``chunk`` bytes, so MQTT packets span frames; the bridge pings
the client once after the handshake and records the Pong, the subprotocol asked for, and
whether the client closed with a Close frame.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
)


@attrs.define
class BridgeLog:
    subprotocols: list[list[str]] = attrs.Factory(list)
    targets: list[str] = attrs.Factory(list)
    pongs: int = 0
    client_closes: list[int] = attrs.Factory(list)
    frames_down: int = 0
    bytes_down: int = 0
    text_frames: int = 0


async def _upgrade(client: trio.SocketStream, ws: WSConnection, broker_port: int, path: str,
                   log: BridgeLog) -> trio.SocketStream | None:
    """The WebSocket handshake: accept ``path`` with the ``mqtt`` subprotocol (and ping the
    client once), and open the broker connection; None if the client left or was refused."""
    while True:
        data = await client.receive_some(65536)
        if not data:
            return None
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Request):
                log.subprotocols.append(list(event.subprotocols))
                log.targets.append(event.target)
                if event.target != path or "mqtt" not in event.subprotocols:
                    await client.send_all(ws.send(RejectConnection(status_code=404)))
                    return None
                await client.send_all(ws.send(AcceptConnection(subprotocol="mqtt")))
                upstream = await trio.open_tcp_stream("127.0.0.1", broker_port)
                await client.send_all(ws.send(Ping(b"bridge")))
                return upstream


async def _serve_one(client: trio.SocketStream, broker_port: int, chunk: int, path: str,
                     log: BridgeLog) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    async with client, trio.open_nursery() as nursery:
        upstream = await _upgrade(client, ws, broker_port, path, log)
        if upstream is None:
            return
        lock = trio.Lock()

        async def down() -> None:  # broker -> client, in frames of at most `chunk` bytes
            while True:
                data = await upstream.receive_some(65536)
                if not data:
                    break
                async with lock:
                    for i in range(0, len(data), chunk):
                        log.frames_down += 1
                        await client.send_all(ws.send(BytesMessage(data=data[i:i + chunk])))
                    log.bytes_down += len(data)
            with contextlib.suppress(Exception):
                async with lock:
                    await client.send_all(ws.send(CloseConnection(1000)))
            nursery.cancel_scope.cancel()

        nursery.start_soon(down)
        async with upstream:
            while True:
                try:
                    data = await client.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, BytesMessage):
                        await upstream.send_all(event.data)
                    elif isinstance(event, Pong):
                        log.pongs += 1
                    elif isinstance(event, CloseConnection):
                        log.client_closes.append(event.code)
                        async with lock:
                            with contextlib.suppress(Exception):
                                await client.send_all(ws.send(event.response()))
                        nursery.cancel_scope.cancel()
                        return
                    elif not isinstance(event, Ping):
                        log.text_frames += 1
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def ws_bridge(broker_port: int, *, chunk: int = 5,
                    path: str = "/mqtt") -> AsyncIterator[tuple[int, BridgeLog]]:
    """Serve WebSocket on a free loopback port, bridging to ``broker_port``; yields
    ``(port, log)``."""
    log = BridgeLog()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def handler(stream: trio.SocketStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError):
                await _serve_one(stream, broker_port, chunk, path, log)

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        try:
            yield port, log
        finally:
            nursery.cancel_scope.cancel()
