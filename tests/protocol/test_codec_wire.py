"""Known byte encodings of every packet type, hand-encoded from the MQTT 3.1.1 spec."""
from __future__ import annotations

import pytest

from pushsdk.protocol import (
    NEED_DATA,
    SUBACK_FAILURE,
    ConnAck,
    ConnackCode,
    Connect,
    Connection,
    Disconnect,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Role,
    State,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pushsdk.protocol import _wire

CLIENT, SERVER = Role.CLIENT, Role.SERVER

# (sender, event, bytes). Each line is spelled out field by field from the spec's figures.
KNOWN = [
    # CONNECT, §3.1: "MQTT" level 4, flags 0x02 (clean session), keep alive 60, client id "a".
    (CLIENT, Connect(client_id="a"),
     b"\x10\x0d" b"\x00\x04MQTT" b"\x04" b"\x02" b"\x00\x3c" b"\x00\x01a"),
    # Every flag: username 0x80 | password 0x40 | will retain 0x20 | will QoS 2 (0x10)
    # | will 0x04, clean session off -> 0xF4; keep alive 300 = 0x012C.
    (CLIENT,
     Connect(client_id="dev1", keepalive=300, clean_session=False, username="u",
             password=b"pw", will=Will(topic="w/t", payload=b"bye", qos=2, retain=True)),
     b"\x10\x21" b"\x00\x04MQTT\x04" b"\xf4" b"\x01\x2c"
     b"\x00\x04dev1" b"\x00\x03w/t" b"\x00\x03bye" b"\x00\x01u" b"\x00\x02pw"),
    # Will QoS 1 without retain, username only, empty client id with clean session.
    (CLIENT,
     Connect(client_id="", keepalive=0, username="", will=Will(topic="t", qos=1)),
     b"\x10\x13" b"\x00\x04MQTT\x04" b"\x8e" b"\x00\x00"
     b"\x00\x00" b"\x00\x01t" b"\x00\x00" b"\x00\x00"),
    # MQTT 3.1: protocol name "MQIsdp", level 3.
    (CLIENT, Connect(client_id="c", keepalive=10, protocol_level=3),
     b"\x10\x0f" b"\x00\x06MQIsdp" b"\x03" b"\x02" b"\x00\x0a" b"\x00\x01c"),
    # CONNACK, §3.2: acknowledge flags, return code.
    (SERVER, ConnAck(), b"\x20\x02\x00\x00"),
    (SERVER, ConnAck(0, session_present=True), b"\x20\x02\x01\x00"),
    (SERVER, ConnAck(ConnackCode.NOT_AUTHORIZED), b"\x20\x02\x00\x05"),
    (SERVER, ConnAck(ConnackCode.BAD_USERNAME_OR_PASSWORD), b"\x20\x02\x00\x04"),
    # PUBLISH, §3.3: flags DUP 0x08 | QoS << 1 | RETAIN 0x01; topic; packet id if QoS > 0.
    (SERVER, Publish(topic="a/b", payload=b"hi"), b"\x30\x07\x00\x03a/b" b"hi"),
    (CLIENT, Publish(topic="a/b"), b"\x30\x05\x00\x03a/b"),
    (CLIENT, Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10),
     b"\x32\x09\x00\x03a/b\x00\x0a" b"hi"),
    (SERVER, Publish(topic="a/b", payload=b"hi", qos=1, retain=True, dup=True, packet_id=10),
     b"\x3b\x09\x00\x03a/b\x00\x0a" b"hi"),
    (SERVER, Publish(topic="a/b", payload=b"", qos=2, packet_id=0xFFFF),
     b"\x34\x07\x00\x03a/b\xff\xff"),
    (CLIENT, Publish(topic="a", payload=b"x", retain=True), b"\x31\x04\x00\x01ax"),
    # UTF-8 topic: "é" is two bytes.
    (SERVER, Publish(topic="caf\u00e9"), b"\x30\x07\x00\x05caf\xc3\xa9"),
    # Acknowledgements, §3.4-3.7 and §3.11: packet id only. PUBREL carries flags 0b0010.
    (CLIENT, PubAck(10), b"\x40\x02\x00\x0a"),
    (SERVER, PubAck(0x1234), b"\x40\x02\x12\x34"),
    (CLIENT, PubRec(1), b"\x50\x02\x00\x01"),
    (SERVER, PubRel(2), b"\x62\x02\x00\x02"),
    (CLIENT, PubComp(3), b"\x70\x02\x00\x03"),
    # SUBSCRIBE, §3.8: flags 0b0010, packet id, (filter, requested QoS)...
    (CLIENT, Subscribe(1, (("a/b", 1), ("#", 2))),
     b"\x82\x0c\x00\x01" b"\x00\x03a/b\x01" b"\x00\x01#\x02"),
    (CLIENT, Subscribe(7, (("+/x/#", 0),)), b"\x82\x0a\x00\x07" b"\x00\x05+/x/#\x00"),
    # SUBACK, §3.9: packet id, one return code per filter.
    (SERVER, SubAck(1, (0, 1, 2, SUBACK_FAILURE)), b"\x90\x06\x00\x01\x00\x01\x02\x80"),
    # UNSUBSCRIBE, §3.10: flags 0b0010; UNSUBACK, §3.11.
    (CLIENT, Unsubscribe(2, ("a/b", "c")), b"\xa2\x0a\x00\x02" b"\x00\x03a/b" b"\x00\x01c"),
    (SERVER, UnsubAck(2), b"\xb0\x02\x00\x02"),
    # PINGREQ, PINGRESP, DISCONNECT, §3.12-3.14: no variable header or payload.
    (CLIENT, PingReq(), b"\xc0\x00"),
    (SERVER, PingResp(), b"\xd0\x00"),
    (CLIENT, Disconnect(), b"\xe0\x00"),
]


def _ready(role: Role, event: object) -> Connection:
    """A Connection of ``role`` in a state where ``event`` may be sent."""
    conn = Connection(role)
    if role is SERVER and not isinstance(event, Connect):
        conn.receive_data(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a")
        conn.next_event()
        if not isinstance(event, ConnAck):
            conn.send(ConnAck())
    elif role is CLIENT and not isinstance(event, Connect):
        conn.send(Connect(client_id="a"))
        conn.receive_data(b"\x20\x02\x00\x00")
        conn.next_event()
    return conn


def _receiver(sender_role: Role, event: object) -> Connection:
    """A Connection of the other role, in a state where ``event`` may be received."""
    peer = Role.SERVER if sender_role is CLIENT else CLIENT
    conn = Connection(peer)
    if peer is SERVER:
        if not isinstance(event, Connect):
            conn.receive_data(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a")
            conn.next_event()
            conn.send(ConnAck())
    else:
        conn.send(Connect(client_id="a"))
        if not isinstance(event, ConnAck):
            conn.receive_data(b"\x20\x02\x00\x00")
            conn.next_event()
    return conn


def _id(case: tuple) -> str:
    return f"{case[0].name}-{type(case[1]).__name__}"


@pytest.mark.parametrize("case", KNOWN, ids=[_id(c) for c in KNOWN])
def test_encode_known(case):
    role, event, data = case
    assert _ready(role, event).send(event) == data


@pytest.mark.parametrize("case", KNOWN, ids=[_id(c) for c in KNOWN])
def test_decode_known(case):
    role, event, data = case
    conn = _receiver(role, event)
    conn.receive_data(data)
    assert conn.next_event() == event
    assert conn.next_event() is NEED_DATA


def test_every_packet_type_has_a_known_encoding():
    assert {type(event) for _, event, _ in KNOWN} == set(_wire.PACKET_TYPE)


def test_decoded_connack_code_is_the_enum():
    conn = _receiver(SERVER, ConnAck())
    conn.receive_data(b"\x20\x02\x00\x05")
    event = conn.next_event()
    assert event.return_code is ConnackCode.NOT_AUTHORIZED
    assert conn.state is State.CLOSED


def test_decoded_fields_have_the_documented_types():
    conn = _receiver(CLIENT, Connect(client_id="x"))
    conn.receive_data(KNOWN[1][2])
    connect = conn.next_event()
    assert type(connect.password) is bytes and type(connect.will.payload) is bytes
    assert connect.keepalive == 300 and connect.protocol_level == 4
    pub = _receiver(SERVER, Publish(topic="t"))
    pub.receive_data(b"\x3b\x09\x00\x03a/b\x00\x0ahi")
    event = pub.next_event()
    assert type(event.payload) is bytes
    assert (event.qos, event.dup, event.retain, event.packet_id) == (1, True, True, 10)
    sub = _receiver(CLIENT, Subscribe(1, (("a", 0),)))
    sub.receive_data(b"\x82\x0c\x00\x01\x00\x03a/b\x01\x00\x01#\x02")
    assert type(sub.next_event().subscriptions) is tuple


# Remaining length varint, §2.2.3, with the spec's table of boundaries.
VARINTS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_remaining_length_encoding(value, encoded):
    assert _wire._header(0x30, value, "PUBLISH") == b"\x30" + encoded
    buf = bytearray(b"\x30" + encoded)
    assert _wire.read_remaining_length(buf, 0, len(buf)) == (value, 1 + len(encoded))
    # Any proper prefix needs more data.
    assert _wire.read_remaining_length(buf, 0, len(buf) - 1) is None


@pytest.mark.parametrize("payload_size", [120, 121, 122, 16_375, 16_376, 16_377, 100_000])
def test_publish_across_varint_boundaries(make_pair, payload_size):
    pair = make_pair(connected=True, max_packet_size=1 << 20)
    event = Publish(topic="a/b", payload=bytes(range(256)) * (payload_size // 256)
                    + b"z" * (payload_size % 256), qos=1, packet_id=1)
    data = pair.server.send(event)
    remaining = 2 + 3 + 2 + payload_size
    varint_length = 1 if remaining < 128 else 2 if remaining < 16_384 else 3
    assert len(data) == 1 + varint_length + remaining
    assert pair.deliver(pair.client, data) == [event]
    assert pair.deliver(pair.client, data, chunk_size=7) == [event]


def test_send_refuses_mqtts_absolute_limit_only():
    with pytest.raises(LocalProtocolError, match="remaining length 268435456 exceeds MQTT's limit"):
        _wire._header(0x30, 268_435_456, "PUBLISH")
    # The receive limit does not apply to what we send.
    pair_client = Connection(Role.CLIENT, max_packet_size=100)
    pair_client.send(Connect(client_id="a"))
    pair_client.receive_data(b"\x20\x02\x00\x00")
    pair_client.next_event()
    assert len(pair_client.send(Publish(topic="t", payload=b"x" * 1000))) > 1000
