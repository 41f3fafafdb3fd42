"""The state machine: which packets each end may send and receive in each state."""
from __future__ import annotations

import re

import pytest

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    Role,
    State,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from pushsdk.protocol._state import TRANSITIONS, Direction

CLIENT, SERVER = Role.CLIENT, Role.SERVER
IDLE, CONNECTING, CONNECTED, CLOSED, ERROR = State

# One valid sample of every packet, with its bytes (checked in test_codec_wire).
SAMPLES = {
    Connect: (Connect(client_id="a"), b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"),
    ConnAck: (ConnAck(), b"\x20\x02\x00\x00"),
    Publish: (Publish(topic="t", payload=b"p", qos=1, packet_id=1), b"\x32\x06\x00\x01t\x00\x01p"),
    PubAck: (PubAck(1), b"\x40\x02\x00\x01"),
    PubRec: (PubRec(1), b"\x50\x02\x00\x01"),
    PubRel: (PubRel(1), b"\x62\x02\x00\x01"),
    PubComp: (PubComp(1), b"\x70\x02\x00\x01"),
    Subscribe: (Subscribe(1, (("t", 1),)), b"\x82\x06\x00\x01\x00\x01t\x01"),
    SubAck: (SubAck(1, (1,)), b"\x90\x03\x00\x01\x01"),
    Unsubscribe: (Unsubscribe(1, ("t",)), b"\xa2\x05\x00\x01\x00\x01t"),
    UnsubAck: (UnsubAck(1), b"\xb0\x02\x00\x01"),
    PingReq: (PingReq(), b"\xc0\x00"),
    PingResp: (PingResp(), b"\xd0\x00"),
    Disconnect: (Disconnect(), b"\xe0\x00"),
}

# The rules written out independently of the codec's table (MQTT 3.1.1 §2.2.1, §3.1.4).
FROM_CLIENT = {
    Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq, Disconnect
}
FROM_SERVER = {Publish, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, PingResp}
NOTHING: set[type] = set()
EXPECTED = {
    # (role, state): (may send, may receive)
    (CLIENT, IDLE): ({Connect}, NOTHING),
    (CLIENT, CONNECTING): (FROM_CLIENT, {ConnAck}),
    (CLIENT, CONNECTED): (FROM_CLIENT, FROM_SERVER),
    (CLIENT, CLOSED): (NOTHING, NOTHING),
    (CLIENT, ERROR): (NOTHING, NOTHING),
    (SERVER, IDLE): (NOTHING, {Connect}),
    (SERVER, CONNECTING): ({ConnAck}, FROM_CLIENT),
    (SERVER, CONNECTED): (FROM_SERVER, FROM_CLIENT),
    (SERVER, CLOSED): (NOTHING, NOTHING),
    (SERVER, ERROR): (NOTHING, NOTHING),
}


def in_state(role: Role, state: State) -> Connection:
    """A Connection driven into ``state`` by real packets."""
    conn = Connection(role)
    if state is IDLE:
        return conn
    if role is CLIENT:
        conn.send(Connect(client_id="a"))
        if state is CONNECTED or state is CLOSED:
            conn.receive_data(b"\x20\x02\x00\x00")
            conn.next_event()
        if state is CLOSED:
            conn.send(Disconnect())
        if state is ERROR:
            conn.receive_data(b"\x10\x00")
            with pytest.raises(RemoteProtocolError):
                conn.next_event()
    else:
        if state is ERROR:
            conn.receive_data(b"\x20\x02\x00\x00")
            with pytest.raises(RemoteProtocolError):
                conn.next_event()
            return conn
        conn.receive_data(SAMPLES[Connect][1])
        conn.next_event()
        if state is CONNECTED:
            conn.send(ConnAck())
        if state is CLOSED:
            conn.send(ConnAck(5))
    assert conn.state is state
    return conn


def _cases():
    for (role, state), (may_send, may_receive) in EXPECTED.items():
        for cls in SAMPLES:
            yield pytest.param(role, state, cls, cls in may_send, cls in may_receive,
                               id=f"{role.name}-{state.name}-{cls.__name__}")


@pytest.mark.parametrize(("role", "state", "cls", "may_send", "may_receive"), list(_cases()))
def test_send_and_receive_rules(role, state, cls, may_send, may_receive):
    event, data = SAMPLES[cls]

    conn = in_state(role, state)
    if may_send:
        assert conn.send(event) == data
    else:
        with pytest.raises(LocalProtocolError):
            conn.send(event)
        assert conn.state is state  # a refused send changes nothing

    conn = in_state(role, state)
    conn.receive_data(data)
    if may_receive:
        assert conn.next_event() == event
    else:
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.state is ERROR


def test_table_keys_are_role_state_direction_packet():
    assert TRANSITIONS[CLIENT, IDLE, Direction.SEND, Connect] is CONNECTING
    assert TRANSITIONS[SERVER, IDLE, Direction.RECV, Connect] is CONNECTING
    assert TRANSITIONS[SERVER, CONNECTING, Direction.SEND, ConnAck] is CONNECTED
    assert TRANSITIONS[CLIENT, CONNECTED, Direction.SEND, Disconnect] is CLOSED
    assert (CLIENT, IDLE, Direction.RECV, Connect) not in TRANSITIONS


def test_handshake_and_disconnect(pair):
    assert pair.client.state is pair.server.state is IDLE
    pair.send(pair.client, Connect(client_id="dev1"))
    assert pair.client.state is pair.server.state is CONNECTING
    pair.send(pair.server, ConnAck(0, session_present=True))
    assert pair.client.state is pair.server.state is CONNECTED
    pair.send(pair.client, PingReq())
    pair.send(pair.server, PingResp())
    assert pair.client.state is pair.server.state is CONNECTED
    pair.send(pair.client, Disconnect())
    assert pair.client.state is pair.server.state is CLOSED


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_refused_connack_closes_both_ends(pair, code):
    pair.send(pair.client, Connect(client_id="dev1"))
    pair.send(pair.server, ConnAck(code))
    assert pair.client.state is pair.server.state is CLOSED
    with pytest.raises(LocalProtocolError, match="cannot send PINGREQ in state CLOSED"):
        pair.client.send(PingReq())


def test_client_may_pipeline_packets_behind_connect(pair):
    # MQTT 3.1.1 §3.1.4: "Clients need not wait for a CONNACK Packet to arrive".
    data = pair.client.send(Connect(client_id="dev1"))
    data += pair.client.send(Subscribe(1, (("inbox", 1),)))
    data += pair.client.send(PingReq())
    assert pair.client.state is CONNECTING
    events = pair.deliver(pair.server, data)
    assert [type(e) for e in events] == [Connect, Subscribe, PingReq]
    assert pair.server.state is CONNECTING
    # ... but the server's first packet must be CONNACK (MQTT-3.2.0-1).
    with pytest.raises(LocalProtocolError, match="server cannot send SUBACK in state CONNECTING"):
        pair.server.send(SubAck(1, (1,)))
    pair.send(pair.server, ConnAck())
    pair.send(pair.server, SubAck(1, (1,)))


def test_disconnect_while_connecting_closes(pair):
    pair.send(pair.client, Connect(client_id="dev1"))
    pair.send(pair.client, Disconnect())
    assert pair.client.state is pair.server.state is CLOSED


def test_packet_after_disconnect_is_a_remote_error(connected):
    connected.send(connected.client, Disconnect())
    connected.server.receive_data(b"\xc0\x00")
    with pytest.raises(RemoteProtocolError, match="server received PINGREQ in state CLOSED"):
        connected.server.next_event()
    assert connected.server.state is ERROR


def test_forbidden_send_messages_are_specific():
    client = Connection(CLIENT)
    message = "client cannot send PUBLISH in state IDLE (allowed: CONNECT)"
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        client.send(Publish(topic="t"))
    with pytest.raises(LocalProtocolError, match="a client never sends SUBACK"):
        client.send(SubAck(1, (0,)))
    server = Connection(SERVER)
    with pytest.raises(LocalProtocolError, match="a server never sends CONNECT"):
        server.send(Connect(client_id="x"))
    with pytest.raises(LocalProtocolError, match="ConnectionClosed is not a packet"):
        server.send(ConnectionClosed())
    with pytest.raises(LocalProtocolError, match="cannot send a str"):
        server.send("PINGRESP")  # type: ignore[arg-type]
    assert client.state is server.state is IDLE


def test_forbidden_receive_messages_are_specific():
    client = Connection(CLIENT)
    client.receive_data(b"\x10\x00")
    with pytest.raises(RemoteProtocolError, match="a client never receives CONNECT"):
        client.next_event()
    server = Connection(SERVER)
    server.receive_data(b"\xc0\x00")
    message = "server received PINGREQ in state IDLE (allowed: CONNECT)"
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        server.next_event()
    server = Connection(SERVER)
    server.receive_data(b"\x20")  # refused from its first byte, before the rest arrives
    with pytest.raises(RemoteProtocolError, match="a server never receives CONNACK"):
        server.next_event()


def test_error_state_is_sticky():
    server = Connection(SERVER)
    server.receive_data(b"\x30\x00")
    with pytest.raises(RemoteProtocolError) as first:
        server.next_event()
    for _ in range(3):
        message = f"in state ERROR after: {first.value}"
        with pytest.raises(RemoteProtocolError, match=re.escape(message)):
            server.next_event()
    server.receive_data(SAMPLES[Connect][1])  # ignored: nothing more is parsed
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError, match="cannot send CONNACK in state ERROR"):
        server.send(ConnAck())
    assert server.state is ERROR


def test_events_before_an_error_are_delivered():
    server = Connection(SERVER)
    server.receive_data(SAMPLES[Connect][1] + b"\xd0\x00")
    assert isinstance(server.next_event(), Connect)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_connected_rules_hold_for_a_long_session(connected):
    for packet_id in range(1, 200):
        publish = Publish(topic="t", payload=b"x", qos=2, packet_id=packet_id)
        connected.send(connected.server, publish)
        connected.send(connected.client, PubRec(packet_id))
        connected.send(connected.server, PubRel(packet_id))
        connected.send(connected.client, PubComp(packet_id))
        connected.send(connected.client, PingReq())
        connected.send(connected.server, PingResp())
    assert connected.client.state is connected.server.state is CONNECTED
    assert NEED_DATA is connected.client.next_event()
