"""MQTT over WebSocket on the reference server (``simulator/server/websocket.py``), over
in-memory streams in virtual time, with a WebSocket client made of ``wsproto`` and the
project's codec. Real sockets and third-party clients: tests/interop/."""
from __future__ import annotations

from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Properties,
    Publish,
    ReasonCode,
    Role,
    SubAck,
    Subscribe,
)
from server_harness import Harness, payload

pytestmark = pytest.mark.timeout(30)


class WsClient:
    """A WebSocket client on one in-memory stream: frames in, events out."""

    def __init__(self, harness: Harness, peer: str | None = None) -> None:
        self.stream = harness.open_stream("handle_ws_stream", peer)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []

    async def handshake(self, target: str = "/mqtt", subprotocols: tuple[str, ...] = ("mqtt",),
                        ) -> Any:
        await self.stream.send_all(self.ws.send(Request(
            host="push.test", target=target, subprotocols=list(subprotocols))))
        return await self.next_event()

    async def next_event(self) -> Any:
        while not self.events:
            self.events.extend(self.ws.events())
            if self.events:
                break
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)
        return self.events.pop(0)

    async def send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))


class MqttOverWs:
    """The project's MQTT codec over a :class:`WsClient` (one frame per ``send`` unless
    told otherwise)."""

    def __init__(self, client: WsClient, version: int = 5) -> None:
        self.client = client
        self.conn = Connection(Role.CLIENT, protocol_version=version)

    async def send(self, *events: Any, split: int | None = None) -> None:
        data = b"".join(self.conn.send(e) for e in events)
        if split is None:
            await self.client.send(Message(data=data))
        else:  # across two frames
            await self.client.send(Message(data=data[:split], message_finished=False))
            await self.client.send(Message(data=data[split:]))

    async def receive(self) -> Any:
        while (event := self.conn.next_event()) is NEED_DATA:
            frame = await self.client.next_event()
            if not isinstance(frame, BytesMessage):
                return frame  # a Close, a Pong, or None at EOF
            self.conn.receive_data(frame.data)
        return event


async def device(harness: Harness) -> tuple[dict[str, str], dict[str, Any]]:
    app = await harness.create_app()
    return app, await harness.register(app, "phone-ws")


def connect_event(app: dict[str, str], dev: dict[str, Any], version: int = 5,
                  keepalive: int = 60) -> Connect:
    return Connect(client_id=dev["registration_id"], username=app["app_key"],
                   password=dev["token"].encode(), clean_session=False, keepalive=keepalive,
                   protocol_level=version,
                   properties=Properties(session_expiry_interval=0xFFFFFFFF)
                   if version == 5 else Properties())


async def test_mqtt_5_across_frames_and_several_per_frame(harness: Harness,
                                                          autojump_clock) -> None:
    app, dev = await device(harness)
    ws = WsClient(harness)
    accepted = await ws.handshake()
    assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "mqtt"
    mqtt = MqttOverWs(ws)
    await mqtt.send(connect_event(app, dev), split=7)  # CONNECT cut in two frames
    assert isinstance(await mqtt.receive(), ConnAck)
    await mqtt.send(Subscribe(1, ((dev["inbox"], 1),)), PingReq())  # two in one frame
    assert isinstance(await mqtt.receive(), SubAck)
    assert isinstance(await mqtt.receive(), PingResp)
    msg_id = await harness.push_to(app, dev, {"over": "ws"}, ttl=600)
    publish = await mqtt.receive()
    assert isinstance(publish, Publish) and payload(publish)["msg_id"] == msg_id
    assert publish.properties.message_expiry_interval == 600
    await mqtt.send(PubAck(publish.packet_id))
    await ws.send(Ping(b"hi"))
    assert await ws.next_event() == Pong(b"hi")
    await mqtt.send(Disconnect())
    await ws.send(CloseConnection(1000))
    closed = await ws.next_event()
    assert isinstance(closed, CloseConnection) and closed.code == 1000
    assert await ws.next_event() is None  # then the server closes the TCP connection
    assert (await harness.status(app, msg_id))["delivered"] == 1
    assert harness.server.statistics().mqtt_connections == 0


async def test_mqtt_3_1_1_and_the_servers_closing_handshake(harness: Harness,
                                                            autojump_clock) -> None:
    app, dev = await device(harness)
    ws = WsClient(harness)
    await ws.handshake()
    mqtt = MqttOverWs(ws, version=4)
    await mqtt.send(connect_event(app, dev, version=4, keepalive=10))
    assert (await mqtt.receive()).return_code == 0
    start = trio.current_time()
    close = await mqtt.receive()  # silent past 1.5 x keepalive: the server closes
    assert trio.current_time() - start == pytest.approx(15)
    assert isinstance(close, CloseConnection) and close.code == 1000
    await ws.send(close.response())
    assert await ws.next_event() is None


async def test_a_5_0_connection_hears_why_before_the_close(harness: Harness,
                                                           autojump_clock) -> None:
    app, dev = await device(harness)
    ws = WsClient(harness)
    await ws.handshake()
    mqtt = MqttOverWs(ws)
    await mqtt.send(connect_event(app, dev, keepalive=10))
    assert isinstance(await mqtt.receive(), ConnAck)
    farewell = await mqtt.receive()
    assert isinstance(farewell, Disconnect)
    assert farewell.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert isinstance(await mqtt.receive(), CloseConnection)


@pytest.mark.parametrize("target, subprotocols, status", [
    ("/other", ("mqtt",), 404),
    ("/mqtt", (), 400),
    ("/mqtt", ("mqttv3.1",), 400),
])
async def test_refused_handshakes_get_http_answers(harness: Harness, autojump_clock,
                                                   target: str, subprotocols: tuple[str, ...],
                                                   status: int) -> None:
    ws = WsClient(harness)
    answer = await ws.handshake(target, subprotocols)
    assert isinstance(answer, RejectConnection) and answer.status_code == status
    body = await ws.next_event()
    assert isinstance(body, RejectData) and b'"error"' in body.data


async def test_plain_http_gets_400(harness: Harness, autojump_clock) -> None:
    stream = harness.open_stream("handle_ws_stream")
    await stream.send_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_text_frames_close_with_1003(harness: Harness, autojump_clock) -> None:
    app, dev = await device(harness)
    ws = WsClient(harness)
    await ws.handshake()
    await ws.send(TextMessage("MQTT please"))
    close = await ws.next_event()
    assert isinstance(close, CloseConnection) and close.code == 1003


async def test_address_limits_get_429_with_retry_after(make_harness, autojump_clock) -> None:
    harness = make_harness(max_connections_per_address=1)
    first = WsClient(harness, peer="10.0.0.9")
    assert isinstance(await first.handshake(), AcceptConnection)
    stream = harness.open_stream("handle_ws_stream", "10.0.0.9")
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 429 ") and b"retry-after: 1" in head
    assert first.ws.state is ConnectionState.OPEN
