"""MQTT 5.0 packets byte by byte, hand-encoded from the spec (OASIS MQTT 5.0, 7 March 2019),
and the data representations of §1.5: variable byte integers, UTF-8 strings, properties."""
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
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RemoteProtocolError,
    Role,
    State,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pushsdk.protocol import _wire5

CLIENT, SERVER = Role.CLIENT, Role.SERVER
R = ReasonCode
AUTH_CONNECT = Connect(client_id="a", protocol_level=5,
                       properties=Properties(authentication_method="SCRAM"))

# (sender, event, bytes). Property bytes are written "identifier, value" per §2.2.2.2.
KNOWN = [
    # CONNECT §3.1: "MQTT" level 5, flags 0x02, keep alive 60, property length 0, id "a".
    (CLIENT, Connect(client_id="a", protocol_level=5),
     b"\x10\x0e" b"\x00\x04MQTT\x05" b"\x02" b"\x00\x3c" b"\x00" b"\x00\x01a"),
    # Session Expiry 3600, Receive Maximum 20, Topic Alias Maximum 10, User Property a=b,
    # Maximum Packet Size 1024, in identifier order; 23 bytes of properties.
    (CLIENT, Connect(client_id="a", protocol_level=5, properties=Properties(
        maximum_packet_size=1024, user_properties=(("a", "b"),), session_expiry_interval=3600,
        topic_alias_maximum=10, receive_maximum=20)),
     b"\x10\x25\x00\x04MQTT\x05\x02\x00\x3c" b"\x17"
     b"\x11\x00\x00\x0e\x10" b"\x21\x00\x14" b"\x22\x00\x0a" b"\x26\x00\x01a\x00\x01b"
     b"\x27\x00\x00\x04\x00" b"\x00\x01a"),
    # A password without a user name is allowed in 5.0 (flag 0x40 alone); Will with all
    # six Will Properties (§3.1.3.2), QoS 1, retain: flags 0x40|0x20|0x08|0x04 = 0x6c.
    (CLIENT, Connect(client_id="c", clean_session=False, password=b"pw", protocol_level=5,
                     will=Will("w", b"bye", qos=1, retain=True, properties=Properties(
                         will_delay_interval=5, payload_format_indicator=1,
                         message_expiry_interval=60, content_type="t", response_topic="r",
                         correlation_data=b"c"))),
     b"\x10\x33\x00\x04MQTT\x05\x6c\x00\x3c\x00" b"\x00\x01c"
     b"\x18" b"\x01\x01" b"\x02\x00\x00\x00\x3c" b"\x03\x00\x01t" b"\x08\x00\x01r"
     b"\x09\x00\x01c" b"\x18\x00\x00\x00\x05"
     b"\x00\x01w" b"\x00\x03bye" b"\x00\x02pw"),
    # CONNACK §3.2: flags, reason code, properties (always with their length).
    (SERVER, ConnAck(), b"\x20\x03\x00\x00\x00"),
    (SERVER, ConnAck(R.NOT_AUTHORIZED), b"\x20\x03\x00\x87\x00"),
    (SERVER, ConnAck(0, session_present=True, properties=Properties(
        assigned_client_identifier="x", receive_maximum=10, topic_alias_maximum=5,
        maximum_qos=1, retain_available=False, wildcard_subscription_available=True,
        server_keep_alive=120)),
     b"\x20\x16\x01\x00\x13" b"\x12\x00\x01x" b"\x13\x00\x78" b"\x21\x00\x0a" b"\x22\x00\x05"
     b"\x24\x01" b"\x25\x00" b"\x28\x01"),
    # PUBLISH §3.3: topic, packet id, properties, payload.
    (SERVER, Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10),
     b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"),
    (CLIENT, Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10, properties=Properties(
        message_expiry_interval=3600, user_properties=(("k", "v"), ("k", "w")))),
     b"\x32\x1d\x00\x03a/b\x00\x0a" b"\x13" b"\x02\x00\x00\x0e\x10"
     b"\x26\x00\x01k\x00\x01v" b"\x26\x00\x01k\x00\x01w" b"hi"),
    (SERVER, Publish(topic="t", payload=b"x", properties=Properties(
        subscription_identifiers=(1, 200), content_type="text/plain")),
     b"\x30\x17\x00\x01t" b"\x12" b"\x03\x00\x0atext/plain" b"\x0b\x01" b"\x0b\xc8\x01" b"x"),
    # Acknowledgements §3.4-3.7: the reason code and property length may be left out.
    (CLIENT, PubAck(10), b"\x40\x02\x00\x0a"),
    (CLIENT, PubAck(10, R.NO_MATCHING_SUBSCRIBERS), b"\x40\x03\x00\x0a\x10"),
    (SERVER, PubAck(10, R.QUOTA_EXCEEDED, Properties(reason_string="q")),
     b"\x40\x08\x00\x0a\x97\x04\x1f\x00\x01q"),
    (CLIENT, PubRec(3, R.PAYLOAD_FORMAT_INVALID), b"\x50\x03\x00\x03\x99"),
    (SERVER, PubRel(2, R.PACKET_IDENTIFIER_NOT_FOUND), b"\x62\x03\x00\x02\x92"),
    (CLIENT, PubComp(2, 0, Properties(user_properties=(("a", ""),))),
     b"\x70\x0a\x00\x02\x00\x06\x26\x00\x01a\x00\x00"),
    # SUBSCRIBE §3.8: options QoS 1 | No Local 0x04 | Retain As Published 0x08 | Retain
    # Handling 2 << 4 = 0x2d; one Subscription Identifier (5).
    (CLIENT, Subscribe(1, (("a/b", SubscriptionOptions(1, no_local=True,
                                                      retain_as_published=True,
                                                      retain_handling=2)),
                           ("$share/g/c", 2)),
                       Properties(subscription_identifiers=(5,))),
     b"\x82\x18\x00\x01\x02\x0b\x05" b"\x00\x03a/b\x2d" b"\x00\x0a$share/g/c\x02"),
    (SERVER, SubAck(1, (1, 0x80, R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)),
     b"\x90\x06\x00\x01\x00\x01\x80\xa2"),
    (CLIENT, Unsubscribe(2, ("a",)), b"\xa2\x06\x00\x02\x00\x00\x01a"),
    (SERVER, UnsubAck(2, (0, R.NO_SUBSCRIPTION_EXISTED)), b"\xb0\x05\x00\x02\x00\x00\x11"),
    (CLIENT, PingReq(), b"\xc0\x00"),
    (SERVER, PingResp(), b"\xd0\x00"),
    # DISCONNECT §3.14: nothing for 0 without properties; the reason code alone otherwise.
    (CLIENT, Disconnect(), b"\xe0\x00"),
    (CLIENT, Disconnect(R.DISCONNECT_WITH_WILL_MESSAGE), b"\xe0\x01\x04"),
    (SERVER, Disconnect(R.SESSION_TAKEN_OVER, Properties(reason_string="bye")),
     b"\xe0\x08\x8e\x06\x1f\x00\x03bye"),
    (SERVER, Disconnect(R.USE_ANOTHER_SERVER, Properties(server_reference="h:1")),
     b"\xe0\x08\x9c\x06\x1c\x00\x03h:1"),
]

# AUTH §3.15 needs a CONNECT with an Authentication Method.
KNOWN_AUTH = [
    (SERVER, Auth(R.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM",
                                                        authentication_data=b"xy")),
     b"\xf0\x0f\x18\x0d\x15\x00\x05SCRAM\x16\x00\x02xy"),
    (CLIENT, Auth(R.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM")),
     b"\xf0\x0a\x18\x08\x15\x00\x05SCRAM"),
]


def _ready(role: Role, event: object, connect: Connect) -> Connection:
    """A 5.0 Connection of ``role`` in which ``event`` may be sent."""
    client, server = Connection(CLIENT, protocol_version=5), Connection(SERVER, protocol_version=5)
    if isinstance(event, Connect):
        return client
    server.receive_data(client.send(connect))
    server.next_event()
    if isinstance(event, (ConnAck, Auth)):
        return server if role is SERVER else client
    client.receive_data(server.send(ConnAck()))
    client.next_event()
    return server if role is SERVER else client


def _receiver(role: Role, event: object, connect: Connect) -> Connection:
    """The 5.0 Connection of the other role, in which ``event`` may be received."""
    peer = _ready(SERVER if role is CLIENT else CLIENT, event, connect)
    if isinstance(event, Connect):
        return Connection(SERVER, protocol_version=5)
    return peer


def _id(case: tuple) -> str:
    return f"{case[0].name}-{type(case[1]).__name__}"


CASES = [(role, event, data, Connect(client_id="a", protocol_level=5))
         for role, event, data in KNOWN]
CASES += [(role, event, data, AUTH_CONNECT) for role, event, data in KNOWN_AUTH]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_encode_known(case):
    role, event, data, connect = case
    assert _ready(role, event, connect).send(event) == data


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_decode_known(case):
    role, event, data, connect = case
    conn = _receiver(role, event, connect)
    conn.receive_data(data)
    assert conn.next_event() == event
    assert conn.next_event() is NEED_DATA


def test_every_packet_type_has_a_known_5_0_encoding():
    assert {type(event) for _, event, _ in KNOWN + KNOWN_AUTH} == set(_wire5.ENCODERS)


def test_no_properties_is_a_property_length_of_zero():
    """[MQTT-2.2.2-1] If there are no properties, this MUST be indicated by including a
    Property Length of zero."""
    pub = _ready(SERVER, Publish(topic="t"), Connect(client_id="a", protocol_level=5))
    assert pub.send(Publish(topic="t")) == b"\x30\x04\x00\x01t\x00"


def test_short_forms_are_read():
    """§3.4.2.1 / §3.14.2.1 / §3.15.2.1: "The Reason Code and Property Length can be omitted
    if the Reason Code is 0x00 and there are no Properties"; "If the Remaining Length is
    less than 4 there is no Property Length and the value of 0 is used"."""
    conn = _receiver(CLIENT, PubAck(1), Connect(client_id="a", protocol_level=5))
    conn.receive_data(b"\x40\x02\x00\x01" b"\x40\x03\x00\x01\x10" b"\x40\x04\x00\x01\x10\x00")
    assert list(conn.events()) == [PubAck(1), PubAck(1, 0x10), PubAck(1, 0x10)]


def test_decoded_reason_codes_are_the_enum():
    conn = _receiver(SERVER, SubAck(1, (0,)), Connect(client_id="a", protocol_level=5))
    conn.receive_data(b"\x90\x05\x00\x01\x00\x01\x97")
    event = conn.next_event()
    assert event.reason_codes == (R.GRANTED_QOS_1, R.QUOTA_EXCEEDED)
    assert type(event.reason_codes[1]) is ReasonCode


# --- §1.5.5 variable byte integers --------------------------------------------------------


def server5_connected() -> Connection:
    return _receiver(CLIENT, Publish(topic="t"), Connect(client_id="a", protocol_level=5))


def client5_connected() -> Connection:
    return _receiver(SERVER, Publish(topic="t"), Connect(client_id="a", protocol_level=5))


@pytest.mark.parametrize("data", [
    b"\x30\x80\x00",                      # 0 in two bytes
    b"\x30\x81\x00",                      # 1 in two bytes
    b"\x30\x80\x80\x00",                  # 0 in three bytes
    b"\x30\xff\xff\x80\x00",              # 16,383 in four bytes
])
def test_remaining_length_must_be_minimal(data):
    """[MQTT-1.5.5-1] The encoded value MUST use the minimum number of bytes necessary to
    represent the value (5.0 only: 3.1.1 has no such rule)."""
    conn = server5_connected()
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="not in its shortest form") as info:
        conn.next_event()
    assert info.value.reason_code is R.MALFORMED_PACKET
    assert info.value.answer == Disconnect(R.MALFORMED_PACKET)


def test_remaining_length_of_five_bytes_is_malformed():
    """§1.5.5: at most four bytes."""
    conn = server5_connected()
    conn.receive_data(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(RemoteProtocolError, match="longer than 4 bytes"):
        conn.next_event()


@pytest.mark.parametrize(("props", "message"), [
    (b"\x80\x00", "property length variable byte integer is not in its shortest form"),
    (b"\x80\x80\x80\x80\x01", "property length variable byte integer is longer than 4 bytes"),
    (b"\x02\x0b\x80", "variable byte integer is cut short"),
    (b"\x03\x0b\x80\x00", "Subscription Identifier (0x0b) variable byte integer is not in its "
                          "shortest form"),
    (b"\x02\x0b\x00", "Subscription Identifier (0x0b) is 0, must be at least 1"),
])
def test_malformed_variable_byte_integers_in_properties(props, message):
    conn = client5_connected()
    body = b"\x00\x01t" + props
    conn.receive_data(bytes((0x30, len(body))) + body)
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        conn.next_event()
    assert conn.state is State.ERROR


def test_largest_variable_byte_integer_in_a_property():
    conn = client5_connected()
    body = b"\x00\x01t" b"\x05\x0b\xff\xff\xff\x7f"
    conn.receive_data(bytes((0x30, len(body))) + body)
    assert conn.next_event().properties.subscription_identifiers == (268_435_455,)


# --- §1.5.4 UTF-8 strings -----------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xed\xa0\x80", "is not valid UTF-8"),        # U+D800, a surrogate
    (b"\xed\xbf\xbf", "is not valid UTF-8"),        # U+DFFF
    (b"\xc0\xaf", "is not valid UTF-8"),            # overlong '/'
    (b"\xff", "is not valid UTF-8"),
])
def test_utf8_must_be_well_formed(raw, message):
    """[MQTT-1.5.4-1] The character data MUST be well-formed UTF-8 ... MUST NOT include
    encodings of code points between U+D800 and U+DFFF (Malformed Packet)."""
    for prop in (b"\x03", b"\x26\x00\x01k"):  # Content Type, a User Property value
        conn = client5_connected()
        body = b"\x00\x01t" + bytes((len(prop) + 2 + len(raw),)) + prop + bytes((0, len(raw))) + raw
        conn.receive_data(bytes((0x30, len(body))) + body)
        with pytest.raises(RemoteProtocolError, match=message) as info:
            conn.next_event()
        assert info.value.reason_code is R.MALFORMED_PACKET


def test_utf8_must_not_contain_null():
    """[MQTT-1.5.4-2] A UTF-8 Encoded String MUST NOT include an encoding of the null
    character U+0000."""
    conn = client5_connected()
    # PUBACK 1, reason 0x80, Reason String "a\0".
    conn.receive_data(b"\x40\x09\x00\x01\x80" b"\x05\x1f\x00\x02a\x00")
    with pytest.raises(RemoteProtocolError, match="contains U\\+0000"):
        conn.next_event()
    with pytest.raises(ValueError, match="contains U\\+0000"):
        Properties(reason_string="a\x00")


def test_utf8_bom_is_kept():
    """[MQTT-1.5.4-3] 0xEF 0xBB 0xBF is always U+FEFF and MUST NOT be skipped over or
    stripped off by a packet receiver."""
    conn = client5_connected()
    body = b"\x00\x04\xef\xbb\xbft" b"\x07\x03\x00\x04\xef\xbb\xbfx" b"p"
    conn.receive_data(bytes((0x30, len(body))) + body)
    event = conn.next_event()
    assert event.topic == "\ufefft" and event.properties.content_type == "\ufeffx"


def test_lone_surrogates_cannot_be_sent():
    with pytest.raises(ValueError, match="lone surrogate"):
        Properties(content_type="\udc80")
    with pytest.raises(ValueError, match="lone surrogate"):
        Properties(user_properties=(("k", "\ud800"),))


def test_string_and_binary_lengths_are_bounded():
    with pytest.raises(ValueError, match="over 65535"):
        Properties(reason_string="x" * 65536)
    with pytest.raises(ValueError, match="over 65535"):
        Properties(correlation_data=b"x" * 65536)
    Properties(reason_string="x" * 65535, correlation_data=b"x" * 65535)


def test_protocol_imports_no_io_library():
    """Sans-IO: importing the codec pulls in no networking, event-loop or trio module."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; import pushsdk.protocol; from pushsdk.protocol import *; "
        "io = ('trio', 'anyio', 'asyncio', 'socket', '_socket', 'ssl', 'selectors', 'select'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in io); "
        "assert not bad, bad; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": str(root), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
