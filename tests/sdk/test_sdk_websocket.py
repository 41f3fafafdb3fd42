"""MQTT over WebSocket: the SDK's ws:// transport through a loopback WebSocket bridge (wsproto's
server end) to a real Mosquitto, and the WebSocket stream's framing rules on their own."""
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from pushsdk import BrokerConfig, ConnectTimeout, ProtocolViolation, PushClient
from pushsdk.transport import open_websocket
from pushsdk.protocol import ConnAck, Connection, PingResp, Publish, Role
from sdk_harness import mosquitto
from ws_bridge import ws_bridge


@pytest.fixture
def broker(tmp_path):
    with mosquitto(tmp_path) as port:
        yield port


@pytest.mark.mosquitto
@pytest.mark.parametrize("version", ["3.1.1", "5"])
async def test_publish_and_subscribe_over_websocket_to_mosquitto(broker, version):
    async with ws_bridge(broker, chunk=5) as (ws_port, log):
        url = f"ws://127.0.0.1:{ws_port}/mqtt"
        config = BrokerConfig.from_url(url, client_id=f"ws-{version}", topics=[("ws/#", 2)],
                                       clean_session=True, mqtt_version=version)
        plain = BrokerConfig.from_url(f"mqtt://127.0.0.1:{broker}", client_id="tcp-pub",
                                      clean_session=True, mqtt_version=version)
        got = []
        async with PushClient(config) as client, client.messages() as messages:
            await client.wait_connected(timeout=10)
            await client.publish("ws/self", b"x" * 300, qos=2)  # spans many frames
            async with PushClient(plain) as publisher:
                await publisher.wait_connected(timeout=10)
                await publisher.publish("ws/a", b"one", qos=1)
                await publisher.publish("ws/b", b"two", qos=2)
            with trio.fail_after(10):
                async for message in messages:
                    got.append((message.topic, message.payload, message.qos))
                    if len(got) == 3:
                        break
    assert got == [("ws/self", b"x" * 300, 2), ("ws/a", b"one", 1), ("ws/b", b"two", 2)]
    assert log.subprotocols == [["mqtt"]] and log.targets == ["/mqtt"]
    assert log.pongs == 1  # the bridge's Ping was answered
    assert log.client_closes == [1000]  # DISCONNECT, then a WebSocket close handshake
    assert log.frames_down > 3 * 6 and log.text_frames == 0  # packets spanned frames


@pytest.mark.mosquitto
async def test_a_refused_upgrade_is_a_clear_transport_error(broker):
    async with ws_bridge(broker) as (ws_port, _log):
        config = BrokerConfig.from_url(f"ws://127.0.0.1:{ws_port}/not-mqtt", client_id="w")
        async with PushClient(config) as client:
            with pytest.raises(ConnectTimeout) as caught:
                await client.wait_connected(timeout=2)
    assert "refused the WebSocket upgrade (HTTP 404)" in str(caught.value)


async def _server_handshake(stream, ws):
    while True:
        ws.receive_data(await stream.receive_some())
        for event in ws.events():
            if isinstance(event, Request):
                assert event.subprotocols == ["mqtt"] and event.host == "h.test:9001"
                return event


async def test_frames_and_packets_are_independent():
    """One frame with two packets, one packet over three frames, a Ping, a Close."""
    client_side, server_side = trio.testing.memory_stream_pair()
    server_ws = WSConnection(ConnectionType.SERVER)
    mqtt = Connection(Role.SERVER)
    async with trio.open_nursery() as nursery:
        result = {}

        async def client():
            result["stream"] = await open_websocket(client_side, "h.test", 9001, "/mqtt",
                                                    tls=False)

        nursery.start_soon(client)
        await _server_handshake(server_side, server_ws)
        await server_side.send_all(server_ws.send(AcceptConnection(subprotocol="mqtt")))
    stream = result["stream"]
    from pushsdk.protocol import Connect
    # The server end of the codec needs a CONNECT before it may answer.
    mqtt.receive_data(Connection(Role.CLIENT).send(Connect("c")))
    mqtt.next_event()
    two = mqtt.send(ConnAck(0)) + mqtt.send(PingResp())
    publish = mqtt.send(Publish("t", b"payload", 0))
    await server_side.send_all(server_ws.send(BytesMessage(data=two)))
    assert await stream.receive_some() == two  # both packets of the one frame
    pieces = [publish[:2], publish[2:5], publish[5:]]
    for piece in pieces:
        await server_side.send_all(server_ws.send(BytesMessage(data=piece)))
    received = b""
    while len(received) < len(publish):
        received += await stream.receive_some()
    assert received == publish
    await server_side.send_all(server_ws.send(Ping(b"p")))
    await server_side.send_all(server_ws.send(CloseConnection(1001)))
    assert await stream.receive_some() == b""  # the server's Close reads as EOF
    server_ws.receive_data(await server_side.receive_some())
    events = list(server_ws.events())
    assert isinstance(events[0], Pong) and events[0].payload == b"p"
    assert isinstance(events[1], CloseConnection)  # our answer to its Close


async def test_a_text_frame_is_a_protocol_violation():
    client_side, server_side = trio.testing.memory_stream_pair()
    server_ws = WSConnection(ConnectionType.SERVER)
    async with trio.open_nursery() as nursery:
        result = {}

        async def client():
            result["stream"] = await open_websocket(client_side, "h.test", 9001, "/mqtt",
                                                    tls=False)

        nursery.start_soon(client)
        await _server_handshake(server_side, server_ws)
        # The 101 and a first frame in one write: the frame must not be lost.
        await server_side.send_all(server_ws.send(AcceptConnection(subprotocol="mqtt"))
                                   + server_ws.send(BytesMessage(data=b"\x20\x02\x00\x00")))
    stream = result["stream"]
    assert await stream.receive_some() == b"\x20\x02\x00\x00"
    await server_side.send_all(server_ws.send(TextMessage(data="hello")))
    with pytest.raises(ProtocolViolation, match="text frame"):
        await stream.receive_some()
