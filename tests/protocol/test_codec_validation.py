"""Every MQTT 3.1.1 rule the codec checks, from both sides: what we receive, what cannot be
built, and what we may not send. (The MQTT 5.0 rules are in test_codec5_*.py.)"""
from __future__ import annotations

import re

import pytest

from pushsdk.protocol import (
    NEED_DATA,
    Auth,
    ConnAck,
    Connect,
    Connection,
    Disconnect,
    InvalidEventError,
    InvalidEventTypeError,
    LocalProtocolError,
    Properties,
    ReasonCode,
    SubscriptionOptions,
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
    Will,
)

CONNECT_BYTES = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"


def server_idle() -> Connection:
    return Connection(Role.SERVER)


def server_connected() -> Connection:
    conn = Connection(Role.SERVER)
    conn.receive_data(CONNECT_BYTES)
    conn.next_event()
    conn.send(ConnAck())
    return conn


def client_connecting() -> Connection:
    conn = Connection(Role.CLIENT)
    conn.send(Connect(client_id="a"))
    return conn


def client_connected() -> Connection:
    conn = client_connecting()
    conn.receive_data(b"\x20\x02\x00\x00")
    conn.next_event()
    return conn


def connect_packet(body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


MQTT4 = b"\x00\x04MQTT\x04"

# (receiver, bytes, what the error must say)
RECEIVED = [
    # Fixed header: reserved types, flags, QoS.
    (server_connected, b"\x00\x00", "reserved packet type 0"),
    (client_connected, b"\xf0\x00", "reserved packet type 15"),
    (server_connected, b"\x80\x06\x00\x01\x00\x01t\x01", "SUBSCRIBE fixed header flags are 0b0000, must be 0b0010"),
    (server_connected, b"\xa0\x05\x00\x01\x00\x01t", "UNSUBSCRIBE fixed header flags are 0b0000, must be 0b0010"),
    (server_connected, b"\x60\x02\x00\x01", "PUBREL fixed header flags are 0b0000, must be 0b0010"),
    (client_connected, b"\x63\x02\x00\x01", "PUBREL fixed header flags are 0b0011"),
    (server_connected, b"\x42\x02\x00\x01", "PUBACK fixed header flags are 0b0010, must be 0b0000"),
    (server_connected, b"\xc1\x00", "PINGREQ fixed header flags"),
    (server_idle, b"\x11" + CONNECT_BYTES[1:], "CONNECT fixed header flags"),
    (client_connected, b"\xd8\x00", "PINGRESP fixed header flags"),
    (server_connected, b"\x36\x05\x00\x01t\x00\x01", "PUBLISH with QoS 3"),
    (server_connected, b"\x38\x03\x00\x01t", "PUBLISH with QoS 0 has the DUP flag set"),
    # Remaining length: at most 4 bytes; then trailing/missing bytes inside the packet.
    (server_connected, b"\x30\xff\xff\xff\xff", "remaining length is longer than 4 bytes"),
    (server_connected, b"\xc0\x01\x00", "PINGREQ remaining length is 1, must be 0"),
    (server_connected, b"\xe0\x02\x00\x00", "DISCONNECT remaining length is 2, must be 0"),
    (client_connected, b"\xd0\x01\x00", "PINGRESP remaining length is 1"),
    (server_connected, b"\x40\x03\x00\x01\x00", "PUBACK remaining length is 3, must be 2"),
    (client_connected, b"\xb0\x01\x01", "UNSUBACK remaining length is 1, must be 2"),
    (client_connecting, b"\x20\x03\x00\x00\x00", "CONNACK remaining length is 3, must be 2"),
    (server_idle, connect_packet(MQTT4 + b"\x02\x00\x3c\x00\x01a" + b"!"), "CONNECT has 1 unexpected trailing bytes"),
    # Packet ids.
    (server_connected, b"\x32\x05\x00\x01t\x00\x00", "PUBLISH packet id is 0"),
    (server_connected, b"\x34\x05\x00\x01t\x00\x00", "PUBLISH packet id is 0"),
    (server_connected, b"\x32\x04\x00\x01t\x00", "PUBLISH packet id is cut short"),
    (server_connected, b"\x40\x02\x00\x00", "PUBACK packet id is 0"),
    (client_connected, b"\x50\x02\x00\x00", "PUBREC packet id is 0"),
    (client_connected, b"\x62\x02\x00\x00", "PUBREL packet id is 0"),
    (server_connected, b"\x70\x02\x00\x00", "PUBCOMP packet id is 0"),
    (server_connected, b"\x82\x06\x00\x00\x00\x01t\x01", "SUBSCRIBE packet id is 0"),
    (client_connected, b"\x90\x03\x00\x00\x01", "SUBACK packet id is 0"),
    (server_connected, b"\xa2\x05\x00\x00\x00\x01t", "UNSUBSCRIBE packet id is 0"),
    (client_connected, b"\xb0\x02\x00\x00", "UNSUBACK packet id is 0"),
    # PUBLISH topic.
    (server_connected, b"\x30\x05\x00\x03a/+", "PUBLISH topic contains wildcard '+'"),
    (client_connected, b"\x30\x05\x00\x03a/#", "PUBLISH topic contains wildcard '#'"),
    (server_connected, b"\x30\x02\x00\x00", "PUBLISH topic is empty"),
    (server_connected, b"\x30\x03\x00\x01\x00", "PUBLISH topic contains U+0000"),
    (server_connected, b"\x30\x03\x00\x01\xff", "PUBLISH topic is not valid UTF-8"),
    # A UTF-16 surrogate encoded as UTF-8 is ill-formed (§1.5.3, MQTT-1.5.3-1).
    (server_connected, b"\x30\x05\x00\x03\xed\xa0\x80", "PUBLISH topic is not valid UTF-8"),
    (server_connected, b"\x30\x04\x00\x05ab", "PUBLISH topic runs past the end of the packet"),
    (server_connected, b"\x30\x01\x00", "PUBLISH topic length is cut short"),
    # CONNECT.
    (server_idle, connect_packet(b"\x00\x04MQTT\x03\x02\x00\x3c\x00\x01a"), "CONNECT protocol 'MQTT' level 3 is not MQTT 3.1.1"),
    (server_idle, connect_packet(b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x01a"), "CONNECT protocol 'MQTT' level 5"),
    (server_idle, connect_packet(b"\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x01a"), "CONNECT protocol 'MQIsdp' level 4"),
    (server_idle, connect_packet(b"\x00\x04HTTP\x04\x02\x00\x3c\x00\x01a"), "CONNECT protocol 'HTTP' level 4"),
    (server_idle, connect_packet(b"\x00\x04MQ\xffT\x04\x02\x00\x3c\x00\x01a"), "CONNECT protocol name is not valid UTF-8"),
    (server_idle, connect_packet(MQTT4 + b"\x03\x00\x3c\x00\x01a"), "CONNECT reserved flag (bit 0) is set"),
    (server_idle, connect_packet(MQTT4 + b"\x42\x00\x3c\x00\x01a\x00\x01p"), "password flag without the username flag"),
    (server_idle, connect_packet(MQTT4 + b"\x0a\x00\x3c\x00\x01a"), "will QoS or will retain without the will flag"),
    (server_idle, connect_packet(MQTT4 + b"\x22\x00\x3c\x00\x01a"), "will QoS or will retain without the will flag"),
    (server_idle, connect_packet(MQTT4 + b"\x1e\x00\x3c\x00\x01a\x00\x01t\x00\x00"), "CONNECT will QoS is 3"),
    (server_idle, connect_packet(MQTT4 + b"\x06\x00\x3c\x00\x01a\x00\x01+\x00\x00"), "CONNECT will topic contains wildcard '+'"),
    (server_idle, connect_packet(MQTT4 + b"\x06\x00\x3c\x00\x01a\x00\x01t"), "CONNECT will message length is cut short"),
    (server_idle, connect_packet(MQTT4 + b"\x82\x00\x3c\x00\x01a"), "CONNECT username length is cut short"),
    (server_idle, connect_packet(MQTT4 + b"\xc2\x00\x3c\x00\x01a\x00\x01u\x00\x05p"), "CONNECT password of 5 bytes runs past"),
    (server_idle, connect_packet(MQTT4 + b"\x02\x00\x3c\x00\x02a\x00"), "CONNECT client id contains U+0000"),
    (server_idle, connect_packet(MQTT4 + b"\x02\x00"), "CONNECT keep alive is cut short"),
    (server_idle, connect_packet(b"\x00\x04MQTT"), "CONNECT is cut short before the protocol level"),
    (server_idle, connect_packet(MQTT4), "CONNECT is cut short before the connect flags"),
    (server_idle, connect_packet(MQTT4 + b"\x02\x00\x3c"), "CONNECT client id length is cut short"),
    # CONNACK.
    (client_connecting, b"\x20\x02\x00\x06", "CONNACK return code 6 is not one of 0..5"),
    (client_connecting, b"\x20\x02\x01\x05", "CONNACK sets session present with return code 5"),
    (client_connecting, b"\x20\x02\x02\x00", "CONNACK acknowledge flags 0x02 set reserved bits"),
    # SUBSCRIBE / SUBACK / UNSUBSCRIBE.
    (server_connected, b"\x82\x02\x00\x01", "SUBSCRIBE has no topic filter"),
    (server_connected, b"\x82\x06\x00\x01\x00\x01t\x03", "SUBSCRIBE requested QoS byte 0x03 for 't' is not 0, 1 or 2"),
    (server_connected, b"\x82\x06\x00\x01\x00\x01t\x41", "SUBSCRIBE requested QoS byte 0x41"),
    (server_connected, b"\x82\x05\x00\x01\x00\x01t", "SUBSCRIBE topic filter 't' has no QoS byte"),
    (server_connected, b"\x82\x08\x00\x01\x00\x03#/a\x00", "SUBSCRIBE topic filter '#/a' uses '#' other than as the whole last level"),
    (server_connected, b"\x82\x07\x00\x01\x00\x02a#\x00", "uses '#' other than as the whole last level"),
    (server_connected, b"\x82\x08\x00\x01\x00\x03a+b\x00", "SUBSCRIBE topic filter 'a+b' uses '+' other than as a whole level"),
    (server_connected, b"\x82\x05\x00\x01\x00\x00\x00", "SUBSCRIBE topic filter '' is empty"),
    (client_connected, b"\x90\x02\x00\x01", "SUBACK has no return code"),
    (client_connected, b"\x90\x04\x00\x01\x00\x03", "SUBACK return code 0x03 is not 0, 1, 2 or 0x80"),
    (client_connected, b"\x90\x03\x00\x01\x81", "SUBACK return code 0x81"),
    (server_connected, b"\xa2\x02\x00\x01", "UNSUBSCRIBE has no topic filter"),
    (server_connected, b"\xa2\x06\x00\x01\x00\x02+a", "UNSUBSCRIBE topic filter '+a' uses '+'"),
    (server_connected, b"\xa2\x03\x00\x01\x00", "UNSUBSCRIBE topic filter length is cut short"),
]


@pytest.mark.parametrize(("make", "data", "message"), RECEIVED,
                         ids=[f"{i}-{m[:40]}" for i, (_, _, m) in enumerate(RECEIVED)])
def test_received_violation(make, data, message):
    conn = make()
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        conn.next_event()
    assert conn.state is State.ERROR


@pytest.mark.parametrize(("make", "data", "message"), RECEIVED,
                         ids=[f"{i}" for i in range(len(RECEIVED))])
def test_received_violation_byte_at_a_time(make, data, message):
    conn = make()
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
            conn.next_event()
    assert conn.state is State.ERROR


def test_fixed_header_problems_are_caught_from_the_first_byte():
    conn = server_connected()
    conn.receive_data(b"\x80")  # SUBSCRIBE with flags 0: no need to wait for more
    with pytest.raises(RemoteProtocolError, match="SUBSCRIBE fixed header flags"):
        conn.next_event()


def test_four_byte_remaining_length_is_accepted():
    conn = Connection(Role.SERVER, max_packet_size=300_000_000)
    conn.receive_data(CONNECT_BYTES)
    conn.next_event()
    conn.send(ConnAck())
    conn.receive_data(b"\x30\xff\xff\xff\x7f")  # 268,435,455: the largest; body not sent
    assert conn.next_event() is NEED_DATA and conn.state is State.CONNECTED


def test_mqtt31_connect_is_accepted():
    conn = server_idle()
    conn.receive_data(connect_packet(b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01a"))
    assert conn.next_event() == Connect(client_id="a", protocol_level=3)


def test_empty_client_id_without_clean_session_is_left_to_the_server():
    # MQTT-3.1.3-8: the server answers CONNACK 2; that is a session decision, not a codec one.
    conn = server_idle()
    conn.receive_data(connect_packet(MQTT4 + b"\x00\x00\x3c\x00\x00"))
    assert conn.next_event() == Connect(client_id="", clean_session=False)
    conn.send(ConnAck(2))
    assert conn.state is State.CLOSED


def test_subscribe_filters_that_are_valid():
    conn = server_connected()
    filters = ["#", "+", "a/+/b", "+/+", "a/#", "/", "a//b", "$SYS/#", "sport/tennis/+"]
    body = b"\x00\x09" + b"".join(
        len(f).to_bytes(2, "big") + f.encode() + b"\x01" for f in filters
    )
    conn.receive_data(bytes((0x82, len(body))) + body)
    assert conn.next_event() == Subscribe(9, tuple((f, 1) for f in filters))


# --- events that cannot exist are refused when built ------------------------------------
# (InvalidEventError: a LocalProtocolError and a ValueError; InvalidEventTypeError for a
# field of the wrong type, also a TypeError.)

BUILT = [
    (lambda: Publish(topic="a/+"), "PUBLISH topic contains wildcard '+'"),
    (lambda: Publish(topic="#"), "PUBLISH topic contains wildcard '#'"),
    (lambda: Publish(topic=""), "PUBLISH topic is empty"),
    (lambda: Publish(topic="a\x00b"), "PUBLISH topic contains U+0000"),
    (lambda: Publish(topic="\ud800"), "PUBLISH topic is not encodable as UTF-8"),
    (lambda: Publish(topic=b"t"), "PUBLISH topic must be str, not bytes"),
    (lambda: Publish(topic="t" * 70000), "PUBLISH topic is 70000 bytes of UTF-8, over 65535"),
    (lambda: Publish(topic="é" * 40000), "PUBLISH topic is 80000 bytes of UTF-8, over 65535"),
    (lambda: Publish(topic="t", payload="text"), "PUBLISH payload must be bytes, not str"),
    (lambda: Publish(topic="t", qos=3, packet_id=1), "PUBLISH QoS must be 0, 1 or 2, not 3"),
    (lambda: Publish(topic="t", qos=1), "PUBLISH QoS 1 packet_id must be an int in 1..65535, not None"),
    (lambda: Publish(topic="t", qos=2, packet_id=0), "PUBLISH QoS 2 packet_id must be an int in 1..65535, not 0"),
    (lambda: Publish(topic="t", qos=1, packet_id=65536), "not 65536"),
    (lambda: Publish(topic="t", packet_id=5), "PUBLISH with QoS 0 must not have a packet_id"),
    (lambda: Publish(topic="t", dup=True), "PUBLISH with QoS 0 must not set dup"),
    (lambda: Publish(topic="t", retain="yes"), "PUBLISH retain must be a bool"),
    (lambda: PubAck(0), "PUBACK packet_id must be an int in 1..65535, not 0"),
    (lambda: PubRec(-1), "PUBREC packet_id"),
    (lambda: PubRel(None), "PUBREL packet_id"),
    (lambda: PubComp(True), "PUBCOMP packet_id"),
    (lambda: UnsubAck(70000), "UNSUBACK packet_id"),
    (lambda: Subscribe(1, ()), "SUBSCRIBE needs at least one topic filter"),
    (lambda: Subscribe(1, (("t", 3),)), "SUBSCRIBE requested QoS must be 0, 1 or 2, not 3"),
    (lambda: Subscribe(1, (("a/#/b", 0),)), "SUBSCRIBE topic filter 'a/#/b' uses '#'"),
    (lambda: Subscribe(1, ("t",)), "SUBSCRIBE subscriptions must be (topic filter, QoS) pairs"),
    (lambda: Subscribe(1, [("t", 0)]), "SUBSCRIBE subscriptions must be a tuple, not list"),
    (lambda: Subscribe(0, (("t", 0),)), "SUBSCRIBE packet_id"),
    (lambda: SubAck(1, ()), "SUBACK needs at least one return code"),
    (lambda: SubAck(1, (3,)), "SUBACK return code must be one of 0x00, 0x01, 0x02, 0x80"),
    (lambda: Unsubscribe(1, ()), "UNSUBSCRIBE needs at least one topic filter"),
    (lambda: Unsubscribe(1, "t"), "UNSUBSCRIBE topic_filters must be a tuple of str"),
    (lambda: Unsubscribe(1, ("a+",)), "UNSUBSCRIBE topic filter 'a+' uses '+'"),
    (lambda: Connect(client_id="a", password=b"p"), "CONNECT has a password but no username"),
    (lambda: Connect(client_id="a", keepalive=65536), "CONNECT keepalive must be an int in 0..65535, not 65536"),
    (lambda: Connect(client_id="a", keepalive=-1), "CONNECT keepalive"),
    (lambda: Connect(client_id="a", protocol_level=6), "CONNECT protocol_level must be 5 (MQTT 5.0), 4 (MQTT 3.1.1) or 3 (MQTT 3.1), not 6"),
    (lambda: Will(topic="w/+"), "Will topic contains wildcard '+'"),
    (lambda: Will(topic="w", qos=3), "Will QoS must be 0, 1 or 2, not 3"),
    (lambda: Will(topic="w", payload="x"), "Will payload must be bytes"),
    (lambda: Connect(client_id="a", will="w"), "CONNECT will must be a Will, not str"),
    (lambda: Connect(client_id="a", username="u", password="p"), "CONNECT password must be bytes, not str"),
    (lambda: Connect(client_id="a\x00"), "CONNECT client_id contains U+0000"),
    (lambda: Connect(client_id=7), "CONNECT client_id must be str, not int"),
    (lambda: Connect(client_id="a", username="u", password=b"x" * 65536), "CONNECT password is 65536 bytes"),
    (lambda: ConnAck(6), "CONNACK code must be one of 0x00, 0x01"),
    (lambda: ConnAck(1, session_present=True), "session_present must be 0 when the return code is not 0"),
]

# What depends on the connection (version, role) is refused by send(), state unchanged.
SENT = [
    (client_connected, Subscribe(1, (("t", SubscriptionOptions(1, no_local=True)),)),
     "SUBSCRIBE options SubscriptionOptions(qos=1, no_local=True"),
    (server_connected, ConnAck(ReasonCode.NOT_AUTHORIZED), "cannot send CONNACK in state CONNECTED"),
    (server_connected, PubAck(1, ReasonCode.QUOTA_EXCEEDED), "PUBACK reason_code 0x97 needs MQTT 5"),
    (client_connected, Publish(topic="t", properties=Properties(message_expiry_interval=5)),
     "PUBLISH properties needs MQTT 5"),
    (server_connected, UnsubAck(1, (0,)), "UNSUBACK reason_codes needs MQTT 5"),
    (client_connected, Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE), "DISCONNECT reason_code 0x04 needs MQTT 5"),
    (client_connected, Auth(ReasonCode.REAUTHENTICATE), "a client sends AUTH only in MQTT 5"),
    (server_connected, Disconnect(), "a server sends DISCONNECT only in MQTT 5"),
]

CONNECT_SENT = [
    (Connect(client_id="", clean_session=False), "empty client_id must set clean_session"),
    (Connect(client_id="a", protocol_level=5),
     "CONNECT protocol_level 5 on a Connection made for MQTT 3.1.1 (protocol_version=4)"),
]

CONNACK_SENT = [
    (ConnAck(ReasonCode.NOT_AUTHORIZED), "CONNACK return_code must be 0..5, not 0x87"),
]


@pytest.mark.parametrize(("build", "message"), BUILT, ids=[m[:40] for _, m in BUILT])
def test_invalid_event_cannot_be_built(build, message):
    with pytest.raises(InvalidEventError, match=re.escape(message)) as info:
        build()
    assert isinstance(info.value, LocalProtocolError) and isinstance(info.value, ValueError)


def test_a_field_of_the_wrong_type_is_also_a_type_error():
    with pytest.raises(TypeError, match="PUBLISH payload must be bytes, not str"):
        Publish(topic="t", payload="text")
    with pytest.raises(InvalidEventTypeError):
        Connect(client_id=7)


@pytest.mark.parametrize(("make", "event", "message"), SENT,
                         ids=[f"{i}-{m[:40]}" for i, (_, _, m) in enumerate(SENT)])
def test_sent_violation(make, event, message):
    conn = make()
    before = conn.state
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        conn.send(event)
    assert conn.state is before


@pytest.mark.parametrize(("event", "message"), CONNECT_SENT,
                         ids=[m[:40] for _, m in CONNECT_SENT])
def test_sent_connect_violation(event, message):
    conn = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        conn.send(event)
    assert conn.state is State.IDLE
    conn.send(Connect(client_id="ok"))  # still usable
    assert conn.state is State.CONNECTING


@pytest.mark.parametrize(("event", "message"), CONNACK_SENT, ids=[m[:40] for _, m in CONNACK_SENT])
def test_sent_connack_violation(event, message):
    conn = server_idle()
    conn.receive_data(CONNECT_BYTES)
    conn.next_event()
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        conn.send(event)
    assert conn.state is State.CONNECTING


def test_payload_may_be_any_bytes_like(connected):
    for payload in (bytearray(b"abc"), memoryview(b"abc")):
        connected.send(connected.server, Publish(topic="t", payload=payload),
                       expect=[Publish(topic="t", payload=b"abc")])
