"""The MQTT 5.0 rules the codec owns, each test named by the normative statement it checks
(OASIS MQTT 5.0, 7 March 2019) or by its section when the rule has no identifier."""
from __future__ import annotations

import re

import pytest

from pushsdk.protocol import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    ConnackCode,
    Connect,
    Connection,
    Disconnect,
    InvalidEventError,
    LocalProtocolError,
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

from codec_pairs import ConnectionPair

R = ReasonCode
CLIENT, SERVER = Role.CLIENT, Role.SERVER


def connect5(**props: object) -> Connect:
    return Connect(client_id="dev1", protocol_level=5, properties=Properties(**props))


def pair5(connect_properties=NO_PROPERTIES, connack_properties=NO_PROPERTIES, **kw):
    return ConnectionPair(protocol_version=5, server_version=None, **kw).connect5(
        connect_properties, connack_properties)


def expect_remote(conn: Connection, data: bytes, message: str, reason: ReasonCode,
                  answer: object = "disconnect") -> RemoteProtocolError:
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=re.escape(message)) as info:
        conn.next_event()
    assert info.value.reason_code is reason
    if answer == "disconnect":
        answer = Disconnect(reason)
    assert info.value.answer == answer
    assert conn.state is State.ERROR
    return info.value


# --- version negotiation ------------------------------------------------------------------


def test_server_takes_the_version_from_the_connect():
    for level in (3, 4, 5):
        server = Connection(SERVER, protocol_version=None)
        assert server.protocol_version is None
        client = Connection(CLIENT, protocol_version=None)
        server.receive_data(client.send(Connect(client_id="a", protocol_level=level)))
        assert server.next_event().protocol_level == level
        assert server.protocol_version == client.protocol_version == level
        client.receive_data(server.send(ConnAck()))
        assert client.next_event() == ConnAck()
        assert client.state is server.state is State.CONNECTED


def test_MQTT_3_1_2_2_unsupported_version_gets_connack_1():
    """[MQTT-3.1.2-2] (3.1.1) the Server MUST respond with CONNACK 0x01 if the level is not
    supported; (5.0) it MAY send CONNACK 0x84. The codec answers in the 3.1.1 form, which
    every client reads (a 5.0 client reads it as 0x84)."""
    v5_connect = Connection(CLIENT, protocol_version=5).send(Connect(client_id="a",
                                                                    protocol_level=5))
    v4_connect = Connection(CLIENT).send(Connect(client_id="a"))
    level6 = v5_connect[:8] + b"\x06" + v5_connect[9:]
    for server_version, data in [(4, v5_connect), (5, v4_connect), (None, level6), (4, level6)]:
        server = Connection(SERVER, protocol_version=server_version)
        server.receive_data(data)
        with pytest.raises(RemoteProtocolError, match="is not MQTT") as info:
            server.next_event()
        exc = info.value
        assert exc.reason_code is R.UNSUPPORTED_PROTOCOL_VERSION
        assert exc.connack_return_code is ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION
        assert exc.answer == ConnAck(1)
        assert server.send(exc.answer) == b"\x20\x02\x00\x01"
        with pytest.raises(LocalProtocolError):  # one answer only
            server.send(exc.answer)
    client = Connection(CLIENT, protocol_version=5)
    client.send(Connect(client_id="a", protocol_level=5))
    client.receive_data(b"\x20\x02\x00\x01")
    assert client.next_event() == ConnAck(R.UNSUPPORTED_PROTOCOL_VERSION)
    assert client.state is State.CLOSED


def test_MQTT_3_1_2_1_another_protocol_name_is_closed_without_answer():
    """[MQTT-3.1.2-1] a wrong protocol name: the Server MAY disconnect."""
    server = Connection(SERVER, protocol_version=None)
    server.receive_data(b"\x10\x0e\x00\x04MQTX\x05\x02\x00\x3c\x00\x00\x01a")
    with pytest.raises(RemoteProtocolError, match="'MQTX' level 5") as info:
        server.next_event()
    assert info.value.answer is None and info.value.connack_return_code is None


def test_server_for_one_version_names_what_it_speaks():
    server = Connection(SERVER, protocol_version=5)
    server.receive_data(Connection(CLIENT).send(Connect(client_id="a")))
    with pytest.raises(RemoteProtocolError,
                       match=re.escape("'MQTT' level 4 is not MQTT 5.0 ('MQTT' level 5)")):
        server.next_event()


def test_client_connect_must_match_its_version():
    client = Connection(CLIENT, protocol_version=5)
    with pytest.raises(LocalProtocolError, match="protocol_level 4 on a Connection made for"):
        client.send(Connect(client_id="a"))
    assert client.state is State.IDLE and client.protocol_version == 5


def test_constructor_checks_the_version():
    for bad in (3, 6, "5", True):
        with pytest.raises(ValueError, match="protocol_version"):
            Connection(CLIENT, protocol_version=bad)


def test_bad_client_id_answers_0x85_or_2():
    """§3.1.3.1: a Server that rejects the ClientID MAY answer 0x85 (5.0) / 2 (3.1.1)."""
    for level, answer, data in [
        (5, ConnAck(R.CLIENT_IDENTIFIER_NOT_VALID), b"\x20\x03\x00\x85\x00"),
        (4, ConnAck(ConnackCode.IDENTIFIER_REJECTED), b"\x20\x02\x00\x02"),
    ]:
        good = Connection(CLIENT, protocol_version=None).send(
            Connect(client_id="ab", protocol_level=level))
        bad = good.replace(b"\x00\x02ab", b"\x00\x02a\xff")
        server = Connection(SERVER, protocol_version=None)
        server.receive_data(bad)
        with pytest.raises(RemoteProtocolError, match="client id is not valid UTF-8") as info:
            server.next_event()
        assert info.value.answer == answer
        assert server.send(info.value.answer) == data


def test_malformed_5_0_connect_is_answered_with_a_connack():
    """§4.13.1: before CONNACK the Server MAY send a CONNACK with a reason >= 0x80."""
    server = Connection(SERVER, protocol_version=None)
    server.receive_data(b"\x10\x0e\x00\x04MQTT\x05\x03\x00\x3c\x00\x00\x01a")  # reserved bit
    with pytest.raises(RemoteProtocolError, match="MQTT-3.1.2-3") as info:
        server.next_event()
    assert info.value.answer == ConnAck(R.MALFORMED_PACKET)
    assert server.protocol_version == 5
    assert server.send(ConnAck(R.UNSPECIFIED_ERROR)) == b"\x20\x03\x00\x80\x00"  # any refusal


def test_malformed_3_1_1_connect_has_no_answer():
    server = Connection(SERVER, protocol_version=None)
    server.receive_data(b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01a")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.answer is None
    with pytest.raises(LocalProtocolError):
        server.send(ConnAck(ConnackCode.SERVER_UNAVAILABLE))


def test_error_before_connack_answers_connack_not_disconnect():
    """[MQTT-3.14.0-1] A Server MUST NOT send a DISCONNECT until after it has sent a
    CONNACK with Reason Code of less than 0x80."""
    pair = ConnectionPair(protocol_version=5, server_version=None)
    pair.send(pair.client, Connect(client_id="a", protocol_level=5))
    expect_remote(pair.server, b"\x30\x07\x00\x00\x03\x23\x00\x01x",
                  "Topic Alias 1 is outside 1..0", R.TOPIC_ALIAS_INVALID,
                  answer=ConnAck(R.PROTOCOL_ERROR))  # 0x94 is not a CONNACK code
    assert pair.server.send(ConnAck(R.PROTOCOL_ERROR)) == b"\x20\x03\x00\x82\x00"
    with pytest.raises(LocalProtocolError):
        pair.server.send(Disconnect(R.PROTOCOL_ERROR))


def test_connack_code_translates_3_1_1_return_codes():
    v4 = ConnectionPair().connect()
    v5 = pair5()
    assert v4.server.connack_code(ConnackCode.NOT_AUTHORIZED) == 5
    assert v5.server.connack_code(ConnackCode.NOT_AUTHORIZED) is R.NOT_AUTHORIZED
    assert v5.server.connack_code(ConnackCode.BAD_USERNAME_OR_PASSWORD) is \
        R.BAD_USER_NAME_OR_PASSWORD
    assert v5.server.connack_code(ConnackCode.IDENTIFIER_REJECTED) is R.CLIENT_IDENTIFIER_NOT_VALID


# --- properties: placement, duplicates, values ----------------------------------------------


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Publish("t", properties=Properties(session_expiry_interval=1)),
     "PUBLISH may not carry property Session Expiry Interval (0x11)"),
    (lambda: PubAck(1, properties=Properties(message_expiry_interval=1)),
     "PUBACK may not carry property Message Expiry Interval (0x02)"),
    (lambda: Connect(client_id="a", protocol_level=5, properties=Properties(topic_alias=1)),
     "CONNECT may not carry property Topic Alias (0x23)"),
    (lambda: Will("t", properties=Properties(reason_string="x")),
     "Will may not carry property Reason String (0x1f)"),
    (lambda: Subscribe(1, (("t", 0),), Properties(subscription_identifiers=(1, 2))),
     "SUBSCRIBE may carry one Subscription Identifier"),
    (lambda: ConnAck(properties=Properties(will_delay_interval=1)),
     "CONNACK may not carry property Will Delay Interval (0x18)"),
    (lambda: Disconnect(properties=Properties(receive_maximum=1)),
     "DISCONNECT may not carry property Receive Maximum (0x21)"),
    (lambda: Auth(R.CONTINUE_AUTHENTICATION, Properties(server_reference="x")),
     "AUTH may not carry property Server Reference (0x1c)"),
    (lambda: Connect(client_id="a", properties=Properties(session_expiry_interval=1)),
     "CONNECT properties need protocol_level 5, not 4"),
])
def test_property_in_a_packet_that_may_not_carry_it_cannot_be_built(build, message):
    """§2.2.2.2: each property may appear only in the packets the table lists."""
    with pytest.raises(InvalidEventError, match=re.escape(message)):
        build()


def test_property_in_the_wrong_packet_is_malformed():
    """§2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
    packet type ... is a Malformed Packet"."""
    conn = pair5().client
    # PUBLISH with Session Expiry Interval (0x11).
    expect_remote(conn, b"\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01",
                  "PUBLISH may not carry property Session Expiry Interval (0x11)",
                  R.MALFORMED_PACKET)
    conn = pair5().server
    expect_remote(conn, b"\x40\x06\x00\x01\x00\x02\x23\x00",
                  "PUBACK may not carry property Topic Alias", R.MALFORMED_PACKET)


def test_unknown_property_identifier_is_malformed():
    expect_remote(pair5().client, b"\x30\x06\x00\x01t\x02\x04\x00",
                  "unknown property identifier 0x04", R.MALFORMED_PACKET)


@pytest.mark.parametrize("prop", [b"\x02\x00\x00\x00\x01", b"\x03\x00\x01x", b"\x23\x00\x01",
                                  b"\x08\x00\x01r", b"\x01\x00"])
def test_non_repeatable_property_twice_is_a_protocol_error(prop):
    """§2.2.2.2 / §3.3.2.3: "It is a Protocol Error to include the X more than once"."""
    body = b"\x00\x01t" + bytes((2 * len(prop),)) + prop + prop
    expect_remote(pair5(connect_properties=Properties(topic_alias_maximum=5)).client,
                  bytes((0x30, len(body))) + body, "more than once", R.PROTOCOL_ERROR)


def test_user_properties_repeat_and_keep_their_order():
    """§3.3.2.3.7 / [MQTT-3.3.2-18]: User Properties may repeat, names too; order kept."""
    pairs = (("b", "1"), ("a", "2"), ("b", "3"), ("", ""))
    event = Publish("t", properties=Properties(user_properties=pairs))
    pair = pair5()
    assert pair.send(pair.server, event)[0].properties.user_properties == pairs
    assert pair.send(pair.client, event) == [event]


def test_subscription_identifiers_repeat_in_a_publish_from_the_server():
    """§3.3.2.3.8: multiple Subscription Identifiers in a PUBLISH to a client."""
    pair = pair5()
    pair.send(pair.server, Publish("t", properties=Properties(subscription_identifiers=(1, 9))))


@pytest.mark.parametrize(("data", "message"), [
    (b"\x20\x05\x00\x00\x02\x24\x02", "Maximum Qos (0x24) is 2, must be 0 or 1"),
    (b"\x20\x05\x00\x00\x02\x25\x02", "Retain Available (0x25) is 2, must be 0 or 1"),
    (b"\x20\x06\x00\x00\x03\x21\x00\x00", "Receive Maximum (0x21) is 0, must be at least 1"),
    (b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x00", "Maximum Packet Size (0x27) is 0"),
])
def test_property_values_out_of_range_are_protocol_errors(data, message):
    """§3.2.2.3: e.g. "It is a Protocol Error to include Maximum QoS more than once, or to
    have a value other than 0 or 1"; Receive Maximum / Maximum Packet Size of 0."""
    client = Connection(CLIENT, protocol_version=5)
    client.send(connect5())
    expect_remote(client, data, message, R.PROTOCOL_ERROR)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(receive_maximum=0), "receive_maximum must be in 1..65535, not 0"),
    (dict(topic_alias=0), "topic_alias must be in 1..65535, not 0"),
    (dict(maximum_packet_size=0), "maximum_packet_size must be in 1..4294967295"),
    (dict(message_expiry_interval=1 << 32), "message_expiry_interval must be in 0..4294967295"),
    (dict(maximum_qos=2), "maximum_qos must be in 0..1, not 2"),
    (dict(retain_available=2), "retain_available must be a bool"),
    (dict(subscription_identifiers=(0,)), "must be in 1..268435455, not 0"),
    (dict(subscription_identifiers=5), "subscription_identifiers must be a tuple"),
    (dict(response_topic="a/#"), "response_topic 'a/#' contains wildcard '#'"),
    (dict(content_type=b"x"), "content_type must be str, not bytes"),
    (dict(correlation_data="x"), "correlation_data must be bytes, not str"),
    (dict(user_properties=(("a",),)), "entries must be (name, value) pairs"),
    (dict(server_keep_alive=True), "server_keep_alive must be an int, not bool"),
    (dict(colour="red"), "unexpected keyword argument 'colour'"),
])
def test_invalid_property_values_cannot_be_built(kwargs, message):
    with pytest.raises((InvalidEventError, TypeError), match=re.escape(message)):
        Properties(**kwargs)


def test_MQTT_3_3_2_14_response_topic_with_wildcards_is_refused_on_receipt():
    """[MQTT-3.3.2-14] The Response Topic MUST NOT contain wildcard characters."""
    expect_remote(pair5().client, b"\x30\x09\x00\x01t\x05\x08\x00\x02a+",
                  "Response Topic (0x08) 'a+' contains wildcard '+'", R.TOPIC_NAME_INVALID)


def test_properties_value():
    props = Properties(user_properties=[("a", "b")], message_expiry_interval=5,
                       correlation_data=bytearray(b"c"))
    assert props.user_properties == (("a", "b"),)  # lists become tuples
    assert props.correlation_data == b"c" and type(props.correlation_data) is bytes
    assert props.topic_alias is None and props.subscription_identifiers == ()
    assert props == Properties(message_expiry_interval=5, correlation_data=b"c",
                               user_properties=(("a", "b"),))
    assert hash(props) == hash(Properties(message_expiry_interval=5, correlation_data=b"c",
                                          user_properties=(("a", "b"),)))
    assert repr(props) == ("Properties(message_expiry_interval=5, correlation_data=b'c', "
                           "user_properties=(('a', 'b'),))")
    assert props.as_dict() == {"message_expiry_interval": 5, "correlation_data": b"c",
                               "user_properties": (("a", "b"),)}
    assert bool(props) and not NO_PROPERTIES and Properties() == NO_PROPERTIES
    with pytest.raises(AttributeError):
        props.topic_alias = 5  # type: ignore[misc]
    assert Properties(subscription_identifiers=[4]).subscription_identifier == 4


# --- reason codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "message"), [
    (lambda: PubAck(1, R.PACKET_IDENTIFIER_NOT_FOUND), "PUBACK reason_code must be one of"),
    (lambda: PubRec(1, R.SERVER_BUSY), "PUBREC reason_code must be one of"),
    (lambda: PubRel(1, R.QUOTA_EXCEEDED), "PUBREL reason_code must be one of 0x00, 0x92"),
    (lambda: PubComp(1, 0x80), "PUBCOMP reason_code must be one of 0x00, 0x92"),
    (lambda: SubAck(1, (R.NO_MATCHING_SUBSCRIBERS,)), "SUBACK return code must be one of"),
    (lambda: UnsubAck(1, (R.GRANTED_QOS_1,)), "UNSUBACK reason code must be one of"),
    (lambda: Disconnect(R.CONTINUE_AUTHENTICATION), "DISCONNECT reason_code must be one of"),
    (lambda: Auth(R.NOT_AUTHORIZED), "AUTH reason_code must be one of 0x00, 0x18, 0x19"),
    (lambda: ConnAck(R.NO_MATCHING_SUBSCRIBERS), "CONNACK code must be one of"),
])
def test_reason_code_the_packet_may_not_carry_cannot_be_built(build, message):
    """[MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1], [MQTT-3.7.2-1], [MQTT-3.9.3-2],
    [MQTT-3.11.3-2], [MQTT-3.14.2-1], [MQTT-3.15.2-1], [MQTT-3.2.2-8]: the sender MUST
    use one of the packet's reason codes."""
    with pytest.raises(InvalidEventError, match=re.escape(message)):
        build()


@pytest.mark.parametrize(("receiver", "data", "message"), [
    ("client", b"\x40\x03\x00\x01\x92", "PUBACK reason code 0x92"),
    ("server", b"\x50\x03\x00\x01\x11", "PUBREC reason code 0x11"),
    ("client", b"\x62\x03\x00\x01\x80", "PUBREL reason code 0x80"),
    ("server", b"\x70\x03\x00\x01\x97", "PUBCOMP reason code 0x97"),
    ("client", b"\x90\x04\x00\x01\x00\x10", "SUBACK reason code 0x10"),
    ("client", b"\xb0\x04\x00\x01\x00\x01", "UNSUBACK reason code 0x01"),
    ("server", b"\xe0\x01\x18", "DISCONNECT reason code 0x18"),
])
def test_reason_code_the_packet_may_not_carry_is_malformed(receiver, data, message):
    conn = getattr(pair5(), receiver)
    expect_remote(conn, data, message, R.MALFORMED_PACKET)


def test_MQTT_3_2_2_6_session_present_with_a_refusal():
    """[MQTT-3.2.2-6] If a Server sends a CONNACK packet containing a non-zero Reason Code
    it MUST set Session Present to 0."""
    with pytest.raises(InvalidEventError, match="MQTT-3.2.2-6"):
        ConnAck(R.BANNED, session_present=True)
    client = Connection(CLIENT, protocol_version=5)
    client.send(connect5())
    expect_remote(client, b"\x20\x03\x01\x8a\x00", "MQTT-3.2.2-6", R.PROTOCOL_ERROR)


def test_refusing_connack_closes():
    """[MQTT-3.2.2-7] a CONNACK with a reason code of 0x80 or greater closes."""
    pair = ConnectionPair(protocol_version=5, server_version=None)
    pair.send(pair.client, connect5())
    pair.send(pair.server, ConnAck(R.BAD_USER_NAME_OR_PASSWORD))
    assert pair.client.state is pair.server.state is State.CLOSED


def test_MQTT_3_14_2_1_disconnect_reason_by_sender():
    """[MQTT-3.14.2-1] the sender MUST use one of the DISCONNECT reason codes — the table
    says which end may send each."""
    pair = pair5()
    with pytest.raises(LocalProtocolError, match="a client may not send DISCONNECT reason "
                                                 "code 0x8e") as info:
        pair.client.send(Disconnect(R.SESSION_TAKEN_OVER))
    assert info.value.reason_code is R.PROTOCOL_ERROR
    with pytest.raises(LocalProtocolError, match="a server may not send DISCONNECT reason "
                                                 "code 0x04"):
        pair.server.send(Disconnect(R.DISCONNECT_WITH_WILL_MESSAGE))
    expect_remote(pair.server, b"\xe0\x01\x9c", "a client may not send DISCONNECT reason code 0x9c",
                  R.PROTOCOL_ERROR)


# --- DISCONNECT from the server --------------------------------------------------------------


def test_server_may_disconnect_in_5_0():
    """§3.14: in 5.0 either end sends DISCONNECT; afterwards nothing more [MQTT-3.14.4-1]."""
    pair = pair5()
    pair.send(pair.server, Disconnect(R.SERVER_SHUTTING_DOWN,
                                      Properties(reason_string="maintenance")))
    assert pair.client.state is pair.server.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="cannot send PINGRESP in state CLOSED"):
        pair.server.send(PingResp())


def test_MQTT_3_14_2_2_server_must_not_send_session_expiry():
    """[MQTT-3.14.2-2] The Session Expiry Interval MUST NOT be sent on a DISCONNECT by the
    Server."""
    pair = pair5(connect_properties=Properties(session_expiry_interval=60))
    with pytest.raises(LocalProtocolError, match="MQTT-3.14.2-2"):
        pair.server.send(Disconnect(properties=Properties(session_expiry_interval=0)))
    expect_remote(pair.client, b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00", "MQTT-3.14.2-2",
                  R.PROTOCOL_ERROR)


def test_client_may_not_set_session_expiry_when_connect_had_none():
    """§3.14.2.2.2: if the CONNECT's Session Expiry Interval was zero, a non-zero one in the
    client's DISCONNECT is a Protocol Error."""
    pair = pair5()
    with pytest.raises(LocalProtocolError, match="CONNECT's was zero"):
        pair.client.send(Disconnect(properties=Properties(session_expiry_interval=30)))
    pair.send(pair.client, Disconnect(properties=Properties(session_expiry_interval=0)))
    pair = pair5(connect_properties=Properties(session_expiry_interval=60))
    pair.send(pair.client, Disconnect(properties=Properties(session_expiry_interval=3600)))


def test_errors_after_connack_answer_with_disconnect():
    """§4.13.1: after CONNACK, either end SHOULD send DISCONNECT with the reason code."""
    pair = pair5()
    exc = expect_remote(pair.client, b"\x30\x03\x00\x01+", "contains wildcard '+'",
                        R.MALFORMED_PACKET)
    assert pair.client.send(exc.answer) == b"\xe0\x01\x81"
    with pytest.raises(LocalProtocolError):
        pair.client.send(PingReq())
    pair = pair5()
    exc = expect_remote(pair.server, b"\x62\x01\x00", "PUBREL remaining length is 1",
                        R.MALFORMED_PACKET)
    assert pair.server.send(exc.answer) == b"\xe0\x01\x81"


def test_errors_in_3_1_1_after_connack_have_no_answer():
    pair = ConnectionPair().connect()
    pair.client.receive_data(b"\x30\x03\x00\x01+")
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.next_event()
    assert info.value.answer is None and info.value.reason_code is R.MALFORMED_PACKET


# --- topic aliases (§3.3.2.3.4) ------------------------------------------------------------


def test_topic_alias_is_resolved_on_receipt():
    """A receiver maps alias -> topic from a PUBLISH with both, and an empty topic with the
    alias then stands for it; the event carries the real topic."""
    pair = pair5(connect_properties=Properties(topic_alias_maximum=2))
    first = Publish("push/app/reg", b"1", properties=Properties(topic_alias=2))
    assert pair.send(pair.server, first) == [first]
    second = Publish("", b"2", properties=Properties(topic_alias=2))
    assert pair.send(pair.server, second, expect=None)[0] == Publish(
        "push/app/reg", b"2", properties=Properties(topic_alias=2))
    # A new topic for the same alias replaces the mapping.
    pair.send(pair.server, Publish("other", properties=Properties(topic_alias=2)))
    assert pair.send(pair.server, second, expect=None)[0].topic == "other"


def test_MQTT_3_3_2_7_aliases_do_not_outlive_the_connection():
    """[MQTT-3.3.2-7] A receiver MUST NOT carry forward any Topic Alias mappings from one
    Network Connection to another."""
    pair = pair5(connect_properties=Properties(topic_alias_maximum=2))
    pair.send(pair.server, Publish("a", properties=Properties(topic_alias=1)))
    pair = pair5(connect_properties=Properties(topic_alias_maximum=2))
    with pytest.raises(LocalProtocolError, match="which no PUBLISH on this connection has set"):
        pair.server.send(Publish("", properties=Properties(topic_alias=1)))
    expect_remote(pair.client, b"\x30\x06\x00\x00\x03\x23\x00\x01",
                  "Topic Alias 1, which no PUBLISH on this connection has set", R.PROTOCOL_ERROR)


def test_MQTT_3_3_2_8_topic_alias_zero():
    """[MQTT-3.3.2-8] A sender MUST NOT send a PUBLISH packet containing a Topic Alias which
    has the value 0 (receiving one: 0x94)."""
    with pytest.raises(InvalidEventError, match="topic_alias must be in 1..65535, not 0"):
        Properties(topic_alias=0)
    pair = pair5(connect_properties=Properties(topic_alias_maximum=5))
    expect_remote(pair.client, b"\x30\x07\x00\x01t\x03\x23\x00\x00",
                  "Topic Alias 0 is outside 1..5", R.TOPIC_ALIAS_INVALID)


def test_MQTT_3_3_2_9_client_alias_above_the_servers_maximum():
    """[MQTT-3.3.2-9] / [MQTT-3.2.2-17] A Client MUST NOT send a Topic Alias greater than the
    Topic Alias Maximum returned by the Server; [MQTT-3.2.2-18] none if it is absent."""
    pair = pair5(connack_properties=Properties(topic_alias_maximum=3))
    pair.send(pair.client, Publish("t", properties=Properties(topic_alias=3)))
    with pytest.raises(LocalProtocolError, match="Topic Alias 4 exceeds the peer's Topic "
                                                 "Alias Maximum 3") as info:
        pair.client.send(Publish("t", properties=Properties(topic_alias=4)))
    assert info.value.reason_code is R.TOPIC_ALIAS_INVALID
    with pytest.raises(LocalProtocolError, match="Topic Alias Maximum 0"):
        pair5().client.send(Publish("t", properties=Properties(topic_alias=1)))


def test_MQTT_3_3_2_10_client_accepts_aliases_up_to_its_maximum():
    """[MQTT-3.3.2-10] A Client MUST accept all Topic Alias values greater than 0 and less
    than or equal to the Topic Alias Maximum it sent; above it: 0x94."""
    pair = pair5(connect_properties=Properties(topic_alias_maximum=3))
    for alias in (1, 2, 3):
        pair.send(pair.server, Publish(f"t{alias}", properties=Properties(topic_alias=alias)))
    expect_remote(pair.client, b"\x30\x07\x00\x01t\x03\x23\x00\x04",
                  "Topic Alias 4 is outside 1..3", R.TOPIC_ALIAS_INVALID)


def test_MQTT_3_3_2_11_server_alias_above_the_clients_maximum():
    """[MQTT-3.3.2-11] / [MQTT-3.1.2-26] A Server MUST NOT send a Topic Alias greater than the
    Topic Alias Maximum sent by the Client; [MQTT-3.1.2-27] none if it is absent or zero."""
    pair = pair5(connect_properties=Properties(topic_alias_maximum=1))
    with pytest.raises(LocalProtocolError, match="exceeds the peer's Topic Alias Maximum 1"):
        pair.server.send(Publish("t", properties=Properties(topic_alias=2)))
    with pytest.raises(LocalProtocolError, match="Topic Alias Maximum 0"):
        pair5().server.send(Publish("t", properties=Properties(topic_alias=1)))
    assert pair.server.peer_topic_alias_maximum == 1


def test_MQTT_3_3_2_12_server_accepts_aliases_up_to_its_maximum():
    """[MQTT-3.3.2-12] A Server MUST accept all Topic Alias values greater than 0 and less
    than or equal to the Topic Alias Maximum that it returned in the CONNACK."""
    pair = pair5(connack_properties=Properties(topic_alias_maximum=2))
    pair.send(pair.client, Publish("a/b", qos=1, packet_id=1, properties=Properties(topic_alias=2)))
    assert pair.send(pair.client, Publish("", qos=1, packet_id=2, properties=Properties(
        topic_alias=2)), expect=None)[0].topic == "a/b"
    expect_remote(pair.server, b"\x30\x07\x00\x01t\x03\x23\x00\x03",
                  "Topic Alias 3 is outside 1..2", R.TOPIC_ALIAS_INVALID)


def test_empty_topic_without_alias():
    """§3.3.2.1: a zero-length Topic Name needs a Topic Alias (0x82 Protocol Error)."""
    with pytest.raises(InvalidEventError, match="PUBLISH topic is empty"):
        Publish("")
    expect_remote(pair5().client, b"\x30\x03\x00\x00\x00", "PUBLISH topic is empty and it has no "
                  "Topic Alias", R.TOPIC_NAME_INVALID)


# --- Receive Maximum (§4.9 flow control) ---------------------------------------------------


def test_MQTT_3_3_4_9_server_must_not_exceed_the_clients_receive_maximum():
    """[MQTT-3.3.4-9] The Server MUST NOT send more than Receive Maximum QoS 1 and QoS 2
    PUBLISH packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a Reason
    Code of 128 or greater; [MQTT-4.9.0-2] at a send quota of zero, no more QoS > 0."""
    pair = pair5(connect_properties=Properties(receive_maximum=2))
    server = pair.server
    assert server.send_quota == 2
    pair.send(server, Publish("t", qos=1, packet_id=1))
    pair.send(server, Publish("t", qos=2, packet_id=2))
    assert server.send_quota == 0
    with pytest.raises(LocalProtocolError, match="exceed the peer's Receive Maximum 2") as info:
        server.send(Publish("t", qos=1, packet_id=3))
    assert info.value.reason_code is R.RECEIVE_MAXIMUM_EXCEEDED
    pair.send(server, Publish("t", qos=0))  # QoS 0 is not counted
    pair.send(server, Publish("t", qos=1, packet_id=1, dup=True))  # a resend is not new
    pair.send(pair.client, PubAck(1))
    assert server.send_quota == 1
    pair.send(server, Publish("t", qos=1, packet_id=3))
    pair.send(pair.client, PubRec(2))          # QoS 2 stays counted until PUBCOMP ...
    assert server.send_quota == 0
    pair.send(server, PubRel(2))
    pair.send(pair.client, PubComp(2))         # ... here
    assert server.send_quota == 1
    pair.send(server, Publish("t", qos=2, packet_id=4))
    pair.send(pair.client, PubRec(4, R.QUOTA_EXCEEDED))  # or a failing PUBREC
    assert server.send_quota == 1


def test_MQTT_3_3_4_7_client_must_not_exceed_the_servers_receive_maximum():
    """[MQTT-3.3.4-7] The Client MUST NOT send more than Receive Maximum QoS 1 and QoS 2
    PUBLISH packets ...; and the receiver sees 0x93 if it does."""
    pair = pair5(connack_properties=Properties(receive_maximum=1))
    pair.send(pair.client, Publish("t", qos=1, packet_id=7))
    with pytest.raises(LocalProtocolError, match="Receive Maximum 1"):
        pair.client.send(Publish("t", qos=1, packet_id=8))
    # A peer that ignores the limit:
    rogue = Connection(CLIENT, protocol_version=5)
    rogue.send(connect5())
    rogue.receive_data(b"\x20\x03\x00\x00\x00")
    rogue.next_event()
    expect_remote(pair.server, rogue.send(Publish("t", qos=1, packet_id=8)),
                  "more unacknowledged QoS 1/2 PUBLISHes than our Receive Maximum 1",
                  R.RECEIVE_MAXIMUM_EXCEEDED)


def test_receive_maximum_frees_a_slot_when_we_acknowledge():
    pair = pair5(connack_properties=Properties(receive_maximum=1))
    rogue = pair5(connack_properties=NO_PROPERTIES).client  # a client that ignores limits
    for packet_id in range(1, 5):
        pair.deliver(pair.server, rogue.send(Publish("t", qos=1, packet_id=packet_id)))
        pair.send(pair.server, PubAck(packet_id))
    pair.deliver(pair.server, rogue.send(Publish("t", qos=2, packet_id=9)))
    pair.send(pair.server, PubRec(9))
    pair.deliver(pair.server, rogue.send(PubRel(9)))
    pair.send(pair.server, PubComp(9))
    pair.deliver(pair.server, rogue.send(Publish("t", qos=1, packet_id=10)))


def test_MQTT_4_9_0_3_other_packets_flow_at_zero_quota():
    """[MQTT-4.9.0-3] / [MQTT-3.3.4-8] at a send quota of zero every other packet (and QoS 0)
    may still be sent."""
    pair = pair5(connect_properties=Properties(receive_maximum=1),
                 connack_properties=Properties(receive_maximum=1))
    pair.send(pair.client, Publish("t", qos=1, packet_id=1))
    pair.send(pair.server, Publish("t", qos=1, packet_id=1))
    assert pair.client.send_quota == pair.server.send_quota == 0
    pair.send(pair.server, PubAck(1))
    pair.send(pair.client, PubAck(1))
    pair.send(pair.client, PingReq())
    pair.send(pair.client, Subscribe(2, (("x", 1),)))
    pair.send(pair.server, SubAck(2, (1,)))


def test_3_1_1_has_no_send_quota(connected):
    assert connected.server.send_quota is None
    for packet_id in range(1, 200):
        connected.send(connected.server, Publish("t", qos=1, packet_id=packet_id))


# --- Maximum Packet Size ----------------------------------------------------------------------


def test_MQTT_3_1_2_24_server_must_not_send_over_the_clients_maximum():
    """[MQTT-3.1.2-24] The Server MUST NOT send packets exceeding Maximum Packet Size to the
    Client (the refused send changes nothing: MQTT-3.1.2-25 lets the server drop it)."""
    pair = pair5(connect_properties=Properties(maximum_packet_size=100, receive_maximum=5))
    assert pair.server.peer_maximum_packet_size == 100
    data = pair.server.send(Publish("t", b"x" * 92, qos=1, packet_id=1))
    assert len(data) == 100
    pair.deliver(pair.client, data)
    with pytest.raises(LocalProtocolError, match="of 101 bytes exceeds the peer's Maximum "
                                                 "Packet Size 100") as info:
        pair.server.send(Publish("t", b"x" * 93, qos=1, packet_id=2))
    assert info.value.reason_code is R.PACKET_TOO_LARGE
    assert pair.server.send_quota == 4  # the refused PUBLISH was not counted


def test_MQTT_3_2_2_15_client_must_not_send_over_the_servers_maximum():
    """[MQTT-3.2.2-15] The Client MUST NOT send packets exceeding Maximum Packet Size to the
    Server."""
    pair = pair5(connack_properties=Properties(maximum_packet_size=10))
    pair.send(pair.client, Publish("t", b"x" * 4))
    with pytest.raises(LocalProtocolError, match="exceeds the peer's Maximum Packet Size 10"):
        pair.client.send(Publish("t", b"x" * 5))
    assert pair5().client.peer_maximum_packet_size is None


def test_receiving_over_our_declared_maximum_is_0x95():
    """§3.1.2.11.4: a packet over the Maximum Packet Size we declared is a Protocol Error
    (0x95 Packet too large); checked from the fixed header, before the body arrives."""
    pair = ConnectionPair(protocol_version=5, server_version=None, max_packet_size=4096)
    pair.connect5(connect_properties=Properties(maximum_packet_size=50))
    big = pair5().server.send(Publish("t", b"x" * 60))
    exc = expect_remote(pair.client, big[:3], "of 66 bytes (remaining length 64) exceeds "
                        "max_packet_size 50", R.PACKET_TOO_LARGE)
    assert pair.client.send(exc.answer) == b"\xe0\x01\x95"


def test_the_constructor_limit_stays_when_we_declare_more():
    pair = ConnectionPair(protocol_version=5, server_version=None, max_packet_size=64)
    pair.connect5(connack_properties=Properties(maximum_packet_size=1000))
    big = pair5().client.send(Publish("t", b"x" * 60))
    expect_remote(pair.server, big, "exceeds max_packet_size 64", R.PACKET_TOO_LARGE)


# --- Maximum QoS, Retain Available, subscription availability ------------------------------


def test_MQTT_3_2_2_11_client_respects_maximum_qos():
    """[MQTT-3.2.2-11] If a Client receives a Maximum QoS from a Server, it MUST NOT send
    PUBLISH packets at a QoS level exceeding it (a server receiving one: 0x9B)."""
    pair = pair5(connack_properties=Properties(maximum_qos=0))
    pair.send(pair.client, Publish("t"))
    with pytest.raises(LocalProtocolError, match="exceeds the server's Maximum QoS 0") as info:
        pair.client.send(Publish("t", qos=1, packet_id=1))
    assert info.value.reason_code is R.QOS_NOT_SUPPORTED
    rogue = pair5().client
    expect_remote(pair.server, rogue.send(Publish("t", qos=1, packet_id=1)),
                  "PUBLISH QoS 1 exceeds our Maximum QoS 0", R.QOS_NOT_SUPPORTED)


def test_MQTT_3_2_2_14_retain_not_available():
    """[MQTT-3.2.2-14] A Client receiving Retain Available set to 0 from the Server MUST NOT
    send a PUBLISH packet with the RETAIN flag set to 1 (a server receiving one: 0x9A)."""
    pair = pair5(connack_properties=Properties(retain_available=False))
    with pytest.raises(LocalProtocolError, match="MQTT-3.2.2-14"):
        pair.client.send(Publish("t", retain=True))
    expect_remote(pair.server, pair5().client.send(Publish("t", retain=True)),
                  "Retain Available 0", R.RETAIN_NOT_SUPPORTED)


@pytest.mark.parametrize(("connack", "subscribe", "reason"), [
    (Properties(wildcard_subscription_available=False), Subscribe(1, (("a/+", 0),)),
     R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
    (Properties(shared_subscription_available=False), Subscribe(1, (("$share/g/a", 0),)),
     R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
    (Properties(subscription_identifier_available=False),
     Subscribe(1, (("a", 0),), Properties(subscription_identifiers=(3,))),
     R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED),
])
def test_subscription_features_the_server_does_not_offer(connack, subscribe, reason):
    """§3.2.2.3.12-14: a SUBSCRIBE using a feature the server declared unavailable is a
    Protocol Error the server answers with DISCONNECT 0xA2 / 0x9E / 0xA1."""
    pair = pair5(connack_properties=connack)
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send(subscribe)
    assert info.value.reason_code is reason
    expect_remote(pair.server, pair5().client.send(subscribe), "SUBSCRIBE has", reason)


# --- subscription options (§3.8.3.1) --------------------------------------------------------


def test_subscription_options_round_trip():
    pair = pair5()
    options = SubscriptionOptions(2, no_local=True, retain_as_published=True, retain_handling=1)
    received = pair.send(pair.client, Subscribe(3, (("a/#", options), ("b", 1))))[0]
    got = received.subscriptions[0][1]
    assert (got.qos, got.no_local, got.retain_as_published, got.retain_handling) == \
        (2, True, True, 1)
    assert received.subscriptions[1][1] == 1 and received.subscriptions[1][1].qos == 1
    assert SubscriptionOptions(1) == 1 and repr(options).startswith("SubscriptionOptions(qos=2")


def test_MQTT_3_8_3_4_no_local_on_a_shared_subscription():
    """[MQTT-3.8.3-4] It is a Protocol Error to set the No Local bit to 1 on a Shared
    Subscription."""
    with pytest.raises(InvalidEventError, match="MQTT-3.8.3-4"):
        Subscribe(1, (("$share/g/t", SubscriptionOptions(0, no_local=True)),))
    expect_remote(pair5().server, b"\x82\x10\x00\x01\x00\x00\x0a$share/g/t\x04",
                  "MQTT-3.8.3-4", R.PROTOCOL_ERROR)


def test_MQTT_3_8_3_5_reserved_option_bits():
    """[MQTT-3.8.3-5] The Server MUST treat a SUBSCRIBE packet as malformed if any of the
    Reserved bits in the Payload are non-zero."""
    for options in (b"\x40", b"\x80", b"\xc1"):
        expect_remote(pair5().server, b"\x82\x07\x00\x01\x00\x00\x01t" + options,
                      "set reserved bits 6-7 (MQTT-3.8.3-5)", R.MALFORMED_PACKET)


def test_retain_handling_3_and_qos_3():
    with pytest.raises(InvalidEventError, match="retain_handling must be 0, 1 or 2"):
        SubscriptionOptions(retain_handling=3)
    expect_remote(pair5().server, b"\x82\x07\x00\x01\x00\x00\x01t\x30",
                  "Retain Handling 3", R.PROTOCOL_ERROR)
    expect_remote(pair5().server, b"\x82\x07\x00\x01\x00\x00\x01t\x03",
                  "ask for QoS 3", R.MALFORMED_PACKET)


def test_MQTT_3_8_3_2_subscribe_needs_a_filter():
    """[MQTT-3.8.3-2] The Payload MUST contain at least one Topic Filter and Subscription
    Options pair."""
    expect_remote(pair5().server, b"\x82\x03\x00\x01\x00", "SUBSCRIBE has no topic filter",
                  R.PROTOCOL_ERROR)


def test_MQTT_4_8_2_shared_subscription_syntax_in_5_0():
    """[MQTT-4.8.2-1] a ShareName at least one character long; [MQTT-4.8.2-2] no '/', '+'
    or '#' in it, followed by '/' and a Topic Filter."""
    pair = pair5()
    for bad in ("$share//t", "$share/g", "$share/g/", "$share/+/t", "$share/#"):
        with pytest.raises(LocalProtocolError, match="shared subscription") as info:
            pair.client.send(Subscribe(1, ((bad, 0),)))
        assert info.value.reason_code is R.TOPIC_FILTER_INVALID
    # The same filters are ordinary ones in 3.1.1.
    v4 = ConnectionPair().connect()
    v4.send(v4.client, Subscribe(1, (("$share/g", 0), ("$share//t", 1))))


def test_suback_and_unsuback_codes_per_filter():
    pair = pair5()
    pair.send(pair.client, Unsubscribe(4, ("a", "b/#")))
    pair.send(pair.server, UnsubAck(4, (R.SUCCESS, R.NO_SUBSCRIPTION_EXISTED)))
    with pytest.raises(LocalProtocolError, match="UNSUBACK needs one reason code per topic "
                                                 "filter in MQTT 5"):
        pair.server.send(UnsubAck(4))
    expect_remote(pair.client, b"\xb0\x03\x00\x04\x00", "UNSUBACK has no reason code",
                  R.PROTOCOL_ERROR)


# --- Will properties (§3.1.3.2) ---------------------------------------------------------------


def test_will_properties_round_trip():
    pair = ConnectionPair(protocol_version=5, server_version=None)
    will = Will("dev/status", b"offline", 1, True, Properties(
        will_delay_interval=30, message_expiry_interval=600, payload_format_indicator=1,
        content_type="text/plain", response_topic="dev/ack", correlation_data=b"\x01",
        user_properties=(("why", "lost"),)))
    pair.send(pair.client, Connect(client_id="a", protocol_level=5, will=will))


def test_will_properties_need_5_0():
    with pytest.raises(InvalidEventError, match="CONNECT properties need protocol_level 5"):
        Connect(client_id="a", will=Will("w", properties=Properties(will_delay_interval=1)))


def test_will_property_that_is_not_a_will_property_is_malformed():
    # Will Properties with Topic Alias (0x23).
    server = Connection(SERVER, protocol_version=5)
    server.receive_data(b"\x10\x17\x00\x04MQTT\x05\x06\x00\x3c\x00\x00\x01a"
                        b"\x03\x23\x00\x01\x00\x01w\x00\x00")
    with pytest.raises(RemoteProtocolError, match="CONNECT will may not carry property Topic "
                                                  "Alias") as info:
        server.next_event()
    assert info.value.answer == ConnAck(R.MALFORMED_PACKET)


def test_connect_password_without_user_name_is_fine_in_5_0_only():
    """5.0 §3.1.2.9 allows a Password without a User Name; 3.1.1 [MQTT-3.1.2-22] does not."""
    pair = ConnectionPair(protocol_version=5, server_version=None)
    pair.send(pair.client, Connect(client_id="a", password=b"tok", protocol_level=5))
    server = Connection(SERVER)
    server.receive_data(b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3c\x00\x01a\x00\x01p")
    with pytest.raises(RemoteProtocolError, match="MQTT-3.1.2-22"):
        server.next_event()


# --- PUBLISH from a client ----------------------------------------------------------------------


def test_MQTT_3_3_4_6_no_subscription_identifier_from_a_client():
    """[MQTT-3.3.4-6] A PUBLISH packet sent from a Client to a Server MUST NOT contain a
    Subscription Identifier."""
    pair = pair5()
    event = Publish("t", properties=Properties(subscription_identifiers=(1,)))
    with pytest.raises(LocalProtocolError, match="MQTT-3.3.4-6"):
        pair.client.send(event)
    expect_remote(pair.server, pair5().server.send(event), "MQTT-3.3.4-6", R.PROTOCOL_ERROR)


def test_MQTT_3_1_2_29_request_problem_information_zero():
    """[MQTT-3.1.2-29] If Request Problem Information is 0, the Server MAY return a Reason
    String or User Properties on a CONNACK or DISCONNECT, but MUST NOT send them on any
    packet other than PUBLISH, CONNACK, or DISCONNECT."""
    pair = pair5(connect_properties=Properties(request_problem_information=False),
                 connack_properties=Properties(reason_string="welcome"))
    pair.send(pair.client, Publish("t", qos=1, packet_id=1))
    with pytest.raises(LocalProtocolError, match="MQTT-3.1.2-29"):
        pair.server.send(PubAck(1, properties=Properties(reason_string="ok")))
    pair.send(pair.server, PubAck(1))
    pair.send(pair.server, Publish("t", properties=Properties(user_properties=(("a", "b"),))))
    pair.send(pair.client, Publish("t", qos=1, packet_id=2))
    # A server that ignores it: PUBACK 2 with Reason String "why".
    expect_remote(pair.client, b"\x40\x0a\x00\x02\x00\x06\x1f\x00\x03why", "MQTT-3.1.2-29",
                  R.PROTOCOL_ERROR)


# --- AUTH and enhanced authentication (§4.12) ---------------------------------------------------


def auth_pair() -> ConnectionPair:
    pair = ConnectionPair(protocol_version=5, server_version=None)
    pair.send(pair.client, connect5(authentication_method="SCRAM-SHA-1",
                                    authentication_data=b"client-first"))
    return pair


def scram(reason: int, data: bytes | None = None) -> Auth:
    return Auth(reason, Properties(authentication_method="SCRAM-SHA-1", authentication_data=data))


def test_enhanced_authentication_exchange():
    """§4.12: CONNECT (method, data) -> AUTH 0x18 -> AUTH 0x18 -> CONNACK 0 ([MQTT-4.12.0-2],
    [MQTT-4.12.0-3]); then re-authentication AUTH 0x19 -> AUTH 0x18 -> AUTH 0x18 -> AUTH 0
    ([MQTT-4.12.1-1])."""
    pair = auth_pair()
    pair.send(pair.server, scram(0x18, b"server-first"))
    pair.send(pair.client, scram(0x18, b"client-final"))
    pair.send(pair.server, ConnAck(0, properties=Properties(authentication_method="SCRAM-SHA-1",
                                                            authentication_data=b"server-final")))
    assert pair.client.state is pair.server.state is State.CONNECTED
    pair.send(pair.client, scram(0x19, b"again"))
    pair.send(pair.client, Publish("t", qos=1, packet_id=1))  # traffic goes on meanwhile
    pair.send(pair.server, scram(0x18, b"challenge"))
    pair.send(pair.client, scram(0x18, b"response"))
    pair.send(pair.server, scram(0x00))
    pair.send(pair.client, scram(0x19))  # and again later


def test_MQTT_3_1_2_30_only_auth_before_connack():
    """[MQTT-3.1.2-30] If a Client sets an Authentication Method in the CONNECT, the Client
    MUST NOT send any packets other than AUTH or DISCONNECT packets until it has received a
    CONNACK packet."""
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="MQTT-3.1.2-30"):
        pair.client.send(Publish("t"))
    rogue = ConnectionPair(protocol_version=5, server_version=None)
    rogue.send(rogue.client, Connect(client_id="x", protocol_level=5))
    expect_remote(pair.server, rogue.client.send(PingReq()), "MQTT-3.1.2-30", R.PROTOCOL_ERROR,
                  answer=ConnAck(R.PROTOCOL_ERROR))


def test_MQTT_4_12_0_6_and_7_no_auth_without_a_method():
    """[MQTT-4.12.0-6] If the Client does not include an Authentication Method in the CONNECT,
    the Server MUST NOT send an AUTH packet; [MQTT-4.12.0-7] nor the Client."""
    pair = pair5()
    with pytest.raises(LocalProtocolError, match="no Authentication Method"):
        pair.server.send(scram(0x18))
    with pytest.raises(LocalProtocolError, match="no Authentication Method"):
        pair.client.send(scram(0x19))
    expect_remote(pair.client, b"\xf0\x00", "no Authentication Method", R.PROTOCOL_ERROR)


def test_MQTT_4_12_0_5_auth_uses_the_connects_method():
    """[MQTT-4.12.0-5] all AUTH packets MUST include an Authentication Method with the same
    value as in the CONNECT."""
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="'PLAIN' is not the CONNECT's 'SCRAM-SHA-1'"):
        pair.server.send(Auth(0x18, Properties(authentication_method="PLAIN")))
    with pytest.raises(LocalProtocolError, match="without its Authentication Method"):
        pair.server.send(Auth(0x18))


def test_auth_reason_codes_by_phase():
    """§4.12: 0x18 while connecting; 0x19 starts a re-authentication (client); 0x00 ends it
    (server); [MQTT-3.15.2-1] nothing else."""
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="before the CONNACK"):
        pair.server.send(scram(0x00))
    with pytest.raises(LocalProtocolError, match="before the CONNACK"):
        pair.client.send(scram(0x19))
    pair.send(pair.server, ConnAck())
    with pytest.raises(LocalProtocolError, match="outside a re-authentication"):
        pair.server.send(scram(0x18))
    with pytest.raises(LocalProtocolError, match="not re-authenticating"):
        pair.client.send(scram(0x18))
    pair.send(pair.client, scram(0x19))
    with pytest.raises(LocalProtocolError, match="already under way"):
        pair.client.send(scram(0x19))
    with pytest.raises(LocalProtocolError, match="outside a re-authentication"):
        pair.server.send(scram(0x19))


def test_auth_is_5_0_only():
    """Packet type 15 is reserved in 3.1.1 and AUTH in 5.0 (§2.1.2)."""
    pair = ConnectionPair().connect()
    with pytest.raises(LocalProtocolError, match="sends AUTH only in MQTT 5"):
        pair.client.send(scram(0x19))
    pair.client.receive_data(b"\xf0\x00")
    with pytest.raises(RemoteProtocolError, match="reserved packet type 15"):
        pair.client.next_event()


def test_MQTT_3_15_1_1_auth_reserved_flags():
    """[MQTT-3.15.1-1] Bits 3,2,1 and 0 of the AUTH Fixed Header are reserved and MUST be 0."""
    expect_remote(auth_pair().server, b"\xf1\x00", "AUTH fixed header flags are 0b0001",
                  R.MALFORMED_PACKET, answer=ConnAck(R.MALFORMED_PACKET))


def test_MQTT_3_1_0_2_second_connect_in_5_0():
    """[MQTT-3.1.0-2] The Server MUST process a second CONNECT packet sent from a Client as a
    Protocol Error and close the Network Connection."""
    pair = pair5()
    expect_remote(pair.server, Connection(CLIENT, protocol_version=5).send(connect5()),
                  "server received CONNECT in state CONNECTED", R.PROTOCOL_ERROR)


def test_error_state_is_sticky_and_answers_once():
    pair = pair5()
    exc = expect_remote(pair.client, b"\x00\x00", "reserved packet type 0", R.MALFORMED_PACKET)
    with pytest.raises(RemoteProtocolError, match="in state ERROR after") as again:
        pair.client.next_event()
    assert again.value.answer is None
    assert pair.client.send(exc.answer) == b"\xe0\x01\x81"
    with pytest.raises(LocalProtocolError, match="cannot send DISCONNECT in state ERROR"):
        pair.client.send(exc.answer)
