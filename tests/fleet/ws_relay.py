"""A WebSocket front for a real Mosquitto, for the fleet's broker-mode WebSocket tests.

Debian's Mosquitto is built without websockets, so this process plays the part of the
broker's websockets listener (what ``listener P`` + ``protocol websockets`` does in a
Mosquitto built with it): each WebSocket connection (subprotocol ``mqtt``) is relayed byte
for byte to a TCP connection to the broker; every MQTT decision is the broker's. The
WebSocket side is ``wsproto``'s server.

    python ws_relay.py UPSTREAM_PORT     prints "ws://127.0.0.1:PORT/mqtt" once listening
"""
from __future__ import annotations

import sys

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
)
from wsproto.utilities import ProtocolError as WebSocketError

_READ = 65536


async def _to_broker(client: trio.SocketStream, ws: WSConnection,
                     broker: trio.SocketStream, done: trio.CancelScope) -> None:
    while data := await client.receive_some(_READ):
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, BytesMessage):
                await broker.send_all(event.data)
            elif isinstance(event, Ping):
                await client.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                await client.send_all(ws.send(event.response()))
                done.cancel()
                return
    done.cancel()


async def _to_client(client: trio.SocketStream, ws: WSConnection,
                     broker: trio.SocketStream, done: trio.CancelScope) -> None:
    while data := await broker.receive_some(_READ):
        await client.send_all(ws.send(BytesMessage(data=data)))
    await client.send_all(ws.send(CloseConnection(code=1000)))
    done.cancel()


async def _handshake(client: trio.SocketStream, ws: WSConnection) -> bool:
    while data := await client.receive_some(_READ):
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Request):
                if event.target != "/mqtt" or "mqtt" not in event.subprotocols:
                    await client.send_all(ws.send(RejectConnection(status_code=404)))
                    return False
                await client.send_all(ws.send(AcceptConnection(subprotocol="mqtt")))
                return True
    return False


async def _relay(client: trio.SocketStream, upstream: int) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    try:
        if not await _handshake(client, ws):
            return
        broker = await trio.open_tcp_stream("127.0.0.1", upstream)
        async with broker, trio.open_nursery() as nursery:
            nursery.start_soon(_to_broker, client, ws, broker, nursery.cancel_scope)
            nursery.start_soon(_to_client, client, ws, broker, nursery.cancel_scope)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # either side went away: so does the other
    except WebSocketError as exc:  # drop this connection only
        print(f"ws_relay: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        await trio.aclose_forcefully(client)


async def main(upstream: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"ws://127.0.0.1:{port}/mqtt", flush=True)

    async def handler(stream: trio.SocketStream) -> None:
        await _relay(stream, upstream)
    await trio.serve_listeners(handler, listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
