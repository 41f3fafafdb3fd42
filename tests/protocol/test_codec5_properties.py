"""Property tests for MQTT 5.0: every packet type round-trips (events -> bytes -> events, in
any chunking); no input makes the parser misbehave; every error's answer can be sent."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsdk.protocol import (
    NEED_DATA,
    Auth,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
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
    validate_topic_filter,
)
from pushsdk.protocol._properties import SPECS, Context, Kind
from pushsdk.protocol._reason import (
    CONNACK_REASONS,
    DISCONNECT_REASONS_FROM_CLIENT,
    DISCONNECT_REASONS_FROM_SERVER,
    PUBACK_REASONS,
    PUBCOMP_REASONS,
    PUBREC_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
)

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10)
level = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00+#/"),
                max_size=5)
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join).filter(bool)


def _valid_filter(topic_filter: str) -> bool:
    try:
        validate_topic_filter(topic_filter)
    except ValueError:
        return False
    return True


topic_filters = st.one_of(
    st.builds(lambda levels, tail: "/".join(levels + tail),
              st.lists(st.one_of(level, st.just("+")), max_size=4),
              st.sampled_from([[], ["#"]])),
    st.builds(lambda group, inner: f"$share/{group}/{inner}",
              level.filter(bool), topic_names),
).filter(bool).filter(_valid_filter)
packet_ids = st.integers(1, 0xFFFF)
binary = st.binary(max_size=40)
_SKIP = {"topic_alias", "maximum_packet_size", "receive_maximum", "subscription_identifiers",
         "authentication_method", "authentication_data", "session_expiry_interval",
         "request_problem_information", "topic_alias_maximum"}


def _value(spec) -> st.SearchStrategy:
    kind = spec.kind
    if kind is Kind.BOOL:
        return st.booleans()
    if kind is Kind.BYTE:
        return st.integers(0, 1)
    if kind is Kind.TWO_BYTE:
        return st.integers(max(spec.minimum, 0), 0xFFFF)
    if kind is Kind.FOUR_BYTE:
        return st.integers(max(spec.minimum, 0), 0xFFFF_FFFF)
    if kind is Kind.VARINT:
        return st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3).map(tuple)
    if kind is Kind.BINARY:
        return binary
    if kind is Kind.UTF8_PAIR:
        return st.lists(st.tuples(text, text), min_size=1, max_size=3).map(tuple)
    return topic_names if spec.name == "response_topic" else text


def properties(context: Context, *, skip=_SKIP, extra: dict | None = None) -> st.SearchStrategy:
    """Any Properties allowed in ``context`` (leaving out those the connection's state
    rules constrain, which the rule tests cover)."""
    specs = [spec for spec in SPECS if spec.contexts & context and spec.name not in skip]
    fields = {spec.name: st.none() | _value(spec) for spec in specs}
    fields.update(extra or {})
    return st.fixed_dictionaries({}, optional=fields).map(
        lambda values: Properties(**{k: v for k, v in values.items() if v is not None}))


def reasons(allowed) -> st.SearchStrategy:
    return st.sampled_from(sorted(allowed))


def options() -> st.SearchStrategy:
    return st.builds(lambda qos, nl, rap, rh: SubscriptionOptions(qos, no_local=nl,
                                                                  retain_as_published=rap,
                                                                  retain_handling=rh),
                     st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2))


@st.composite
def publishes(draw, sender: Role):
    qos = draw(st.integers(0, 2))
    extra = {"topic_alias": st.none() | st.integers(1, 10)}
    if sender is Role.SERVER:
        extra["subscription_identifiers"] = st.none() | _value(
            next(s for s in SPECS if s.name == "subscription_identifiers"))
    return Publish(
        topic=draw(topic_names), payload=draw(binary), qos=qos, retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(packet_ids) if qos else None,
        properties=draw(properties(Context.PUBLISH, extra=extra)),
    )


@st.composite
def subscribes(draw):
    entries = draw(st.lists(st.tuples(topic_filters, st.integers(0, 2) | options()),
                            min_size=1, max_size=4))
    entries = [(f, SubscriptionOptions(o.qos) if f.startswith("$share/")
                and isinstance(o, SubscriptionOptions) else o) for f, o in entries]
    sub_id = draw(st.none() | st.integers(1, 268_435_455))
    props = draw(properties(Context.SUBSCRIBE))
    if sub_id is not None:
        props = Properties(subscription_identifiers=(sub_id,),
                           user_properties=props.user_properties)
    return Subscribe(draw(packet_ids), tuple(entries), props)


def acks(cls, allowed, context):
    return st.builds(cls, packet_ids, reasons(allowed), properties(context))


def session_events(sender: Role) -> st.SearchStrategy:
    common = [
        publishes(sender),
        acks(PubAck, PUBACK_REASONS, Context.PUBACK),
        acks(PubRec, PUBREC_REASONS, Context.PUBREC),
        acks(PubRel, PUBREL_REASONS, Context.PUBREL),
        acks(PubComp, PUBCOMP_REASONS, Context.PUBCOMP),
    ]
    if sender is Role.CLIENT:
        return st.one_of(*common, subscribes(), st.just(PingReq()), st.builds(
            Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=3).map(tuple),
            properties(Context.UNSUBSCRIBE)))
    return st.one_of(
        *common, st.just(PingResp()),
        st.builds(SubAck, packet_ids, st.lists(reasons(SUBACK_REASONS), min_size=1,
                                               max_size=4).map(tuple), properties(Context.SUBACK)),
        st.builds(UnsubAck, packet_ids, st.lists(reasons(UNSUBACK_REASONS), min_size=1,
                                                 max_size=4).map(tuple),
                  properties(Context.UNSUBACK)),
    )


@st.composite
def connects(draw):
    username = draw(st.none() | text)
    will = draw(st.none() | st.builds(Will, topic_names, binary, st.integers(0, 2),
                                      st.booleans(), properties(Context.WILL)))
    skip = _SKIP - {"maximum_packet_size", "receive_maximum", "session_expiry_interval",
                    "request_problem_information", "topic_alias_maximum"}
    return Connect(client_id=draw(text), keepalive=draw(st.integers(0, 0xFFFF)),
                   clean_session=draw(st.booleans()), username=username,
                   password=draw(st.none() | binary), will=will, protocol_level=5,
                   properties=draw(properties(Context.CONNECT, skip=skip, extra={
                       "maximum_packet_size": st.none() | st.integers(1000, 0xFFFF_FFFF)})))


@st.composite
def connacks(draw):
    code = draw(reasons(CONNACK_REASONS))
    skip = _SKIP - {"maximum_packet_size", "receive_maximum", "session_expiry_interval",
                    "topic_alias_maximum"}
    return ConnAck(code, session_present=draw(st.booleans()) if not code else False,
                   properties=draw(properties(Context.CONNACK, skip=skip)))


def feed(conn: Connection, data: bytes, cuts: list[int]) -> list[object]:
    events = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, stop in zip(bounds, bounds[1:]):
        if start == stop:
            continue
        conn.receive_data(data[start:stop])
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    return events


cuts = st.lists(st.integers(0, 10_000), max_size=8)
ALIASES = Properties(topic_alias_maximum=10)


def connected_pair() -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, protocol_version=5)
    server = Connection(Role.SERVER, protocol_version=None)
    server.receive_data(client.send(Connect(client_id="c", protocol_level=5, properties=ALIASES)))
    server.next_event()
    client.receive_data(server.send(ConnAck(properties=ALIASES)))
    client.next_event()
    return client, server


@SETTINGS
@given(connect=connects(), connack=connacks(), split=cuts)
def test_handshake_round_trips(connect, connack, split):
    client = Connection(Role.CLIENT, protocol_version=5)
    server = Connection(Role.SERVER, protocol_version=None)
    assert feed(server, client.send(connect), split) == [connect]
    assert server.protocol_version == 5
    data = server.send(connack)
    assert feed(client, data, split) == [connack]
    assert client.state is server.state


@SETTINGS
@given(
    script=st.lists(st.one_of(
        st.tuples(st.just(Role.CLIENT), session_events(Role.CLIENT)),
        st.tuples(st.just(Role.SERVER), session_events(Role.SERVER)),
    ), min_size=1, max_size=12),
    reason=reasons(DISCONNECT_REASONS_FROM_SERVER),
    split=cuts,
)
def test_session_events_round_trip(script, reason, split):
    client, server = connected_pair()
    up = [event for role, event in script if role is Role.CLIENT]
    down = [event for role, event in script if role is Role.SERVER]
    up_bytes = b"".join(client.send(event) for event in up)
    down_bytes = b"".join(server.send(event) for event in down)
    assert feed(server, up_bytes, split) == up
    goodbye = Disconnect(reason, Properties(reason_string="bye"))
    assert feed(client, down_bytes + server.send(goodbye), split) == [*down, goodbye]
    assert client.state is server.state is State.CLOSED
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


@SETTINGS
@given(reason=reasons(DISCONNECT_REASONS_FROM_CLIENT), props=properties(Context.DISCONNECT),
       split=cuts)
def test_client_disconnect_round_trips(reason, props, split):
    client, server = connected_pair()
    event = Disconnect(reason, props)
    assert feed(server, client.send(event), split) == [event]


@SETTINGS
@given(
    steps=st.lists(st.tuples(st.binary(max_size=30), properties(Context.AUTH, skip=_SKIP)),
                   min_size=1, max_size=4),
    split=cuts,
)
def test_auth_exchanges_round_trip(steps, split):
    method = Properties(authentication_method="X")
    client = Connection(Role.CLIENT, protocol_version=5)
    server = Connection(Role.SERVER, protocol_version=None)
    feed(server, client.send(Connect(client_id="c", protocol_level=5, properties=method)), split)

    def auth(reason: int, data: bytes, props: Properties) -> Auth:
        return Auth(reason, Properties(authentication_method="X", authentication_data=data,
                                       reason_string=props.reason_string,
                                       user_properties=props.user_properties))

    for data, props in steps:  # while connecting: 0x18 both ways
        for sender, receiver in ((server, client), (client, server)):
            event = auth(ReasonCode.CONTINUE_AUTHENTICATION, data, props)
            assert feed(receiver, sender.send(event), split) == [event]
    feed(client, server.send(ConnAck(properties=method)), split)
    event = auth(ReasonCode.REAUTHENTICATE, b"", Properties())
    assert feed(server, client.send(event), split) == [event]
    for data, props in steps:
        for sender, receiver in ((server, client), (client, server)):
            event = auth(ReasonCode.CONTINUE_AUTHENTICATION, data, props)
            assert feed(receiver, sender.send(event), split) == [event]
    assert feed(client, server.send(Auth(ReasonCode.SUCCESS)), split) == [Auth()]
    assert client.state is server.state is State.CONNECTED


@SETTINGS
@given(topics=st.lists(st.tuples(st.integers(1, 3), topic_names), min_size=1, max_size=10),
       split=cuts)
def test_aliased_publishes_arrive_with_their_topics(topics, split):
    """Sending each topic once with its alias, then by alias alone: the receiver's events
    carry the topics the sender meant."""
    client, server = connected_pair()
    sent, meant, known = [], [], {}
    for alias, topic in topics:
        reuse = known.get(alias) == topic
        props = Properties(topic_alias=alias)
        sent.append(Publish("" if reuse else topic, topic.encode(), properties=props))
        meant.append(Publish(topic, topic.encode(), properties=props))
        known[alias] = topic
    assert feed(client, b"".join(server.send(event) for event in sent), split) == meant


# --- hostile input ---------------------------------------------------------------------------


def consume_hostile(conn: Connection, data: bytes, split: list[int]) -> None:
    """Only events, or a RemoteProtocolError whose answer (if any) can be sent."""
    try:
        feed(conn, data, split)
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
    except RemoteProtocolError as exc:
        assert str(exc) and conn.state is State.ERROR
        if exc.answer is not None:
            assert conn.send(exc.answer)
            try:
                conn.send(exc.answer)
            except LocalProtocolError:
                pass
            else:
                raise AssertionError("a second answer was accepted") from None


@SETTINGS
@given(role=st.sampled_from(Role), connected=st.booleans(), data=st.binary(max_size=200),
       split=cuts)
def test_random_bytes_raise_only_remote_protocol_error(role, connected, data, split):
    if connected:
        client, server = connected_pair()
        conn = client if role is Role.CLIENT else server
    elif role is Role.CLIENT:
        conn = Connection(Role.CLIENT, protocol_version=5, max_packet_size=4096)
        conn.send(Connect(client_id="c", protocol_level=5))
    else:
        conn = Connection(Role.SERVER, protocol_version=None, max_packet_size=4096)
    consume_hostile(conn, data, split)


@st.composite
def mutated(draw, role: Role):
    client, server = connected_pair()
    sender = server if role is Role.CLIENT else client
    events = draw(st.lists(session_events(sender.role), min_size=1, max_size=5))
    data = bytearray(b"".join(sender.send(event) for event in events))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x23, 0x26, 0x0B, 0xED]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at:at + draw(st.integers(1, 4))]
    return bytes(data)


@SETTINGS
@given(data=st.data(), role=st.sampled_from(Role), split=cuts)
def test_mutated_valid_streams_raise_only_remote_protocol_error(data, role, split):
    stream = data.draw(mutated(role))
    client, server = connected_pair()
    consume_hostile(client if role is Role.CLIENT else server, stream, split)


@SETTINGS
@given(connect=connects(), data=st.data(), split=cuts)
def test_mutated_connect_raises_only_remote_protocol_error(connect, data, split):
    raw = bytearray(Connection(Role.CLIENT, protocol_version=5).send(connect))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    consume_hostile(Connection(Role.SERVER, protocol_version=None), bytes(raw), split)
