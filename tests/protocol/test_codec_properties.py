"""Property tests: every valid event round-trips; no input makes the parser misbehave."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsdk.protocol import (
    NEED_DATA,
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
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
    Will,
)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- strategies for valid events ---------------------------------------------------------

# MQTT strings: any Unicode except U+0000 and lone surrogates (which UTF-8 cannot carry).
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
level = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00+#/"),
                max_size=6)
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join).filter(bool)
topic_filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.one_of(level, st.just("+")), min_size=0, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool)
packet_ids = st.integers(1, 0xFFFF)
qos = st.integers(0, 2)
binary = st.binary(max_size=300)


@st.composite
def publishes(draw):
    level = draw(qos)
    return Publish(
        topic=draw(topic_names),
        payload=draw(binary),
        qos=level,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if level else False,
        packet_id=draw(packet_ids) if level else None,
    )


@st.composite
def connects(draw):
    client_id = draw(text)
    username = draw(st.none() | text)
    return Connect(
        client_id=client_id,
        keepalive=draw(st.integers(0, 0xFFFF)),
        clean_session=True if not client_id else draw(st.booleans()),
        username=username,
        password=None if username is None else draw(st.none() | binary),
        will=draw(st.none() | st.builds(Will, topic_names, binary, qos, st.booleans())),
        protocol_level=draw(st.sampled_from([3, 4])),
    )


@st.composite
def connacks(draw):
    code = draw(st.integers(0, 5))
    return ConnAck(code, session_present=draw(st.booleans()) if code == 0 else False)


client_session_events = st.one_of(
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    st.builds(Subscribe, packet_ids,
              st.lists(st.tuples(topic_filters, qos), min_size=1, max_size=4).map(tuple)),
    st.builds(Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4).map(tuple)),
    st.just(PingReq()),
)
server_session_events = st.one_of(
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    st.builds(SubAck, packet_ids,
              st.lists(st.sampled_from([0, 1, 2, SUBACK_FAILURE]), min_size=1, max_size=6)
              .map(tuple)),
    st.builds(UnsubAck, packet_ids),
    st.just(PingResp()),
)


def feed(conn: Connection, data: bytes, cuts: list[int]) -> list[object]:
    """Feed ``data`` to ``conn`` split at ``cuts``; return every event."""
    events = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, stop in zip(bounds, bounds[1:]):
        if start == stop:
            continue  # b"" would mean EOF
        conn.receive_data(data[start:stop])
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    return events


cuts = st.lists(st.integers(0, 10_000), max_size=8)


# --- (1) round trips ----------------------------------------------------------------------


@SETTINGS
@given(connect=connects(), connack=connacks(), split=cuts)
def test_handshake_round_trips(connect, connack, split):
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    assert feed(server, client.send(connect), split) == [connect]
    assert feed(client, server.send(connack), split) == [connack]
    assert client.state is server.state


@SETTINGS
@given(
    script=st.lists(
        st.one_of(
            st.tuples(st.just(Role.CLIENT), client_session_events),
            st.tuples(st.just(Role.SERVER), server_session_events),
        ),
        min_size=1,
        max_size=12,
    ),
    split=cuts,
)
def test_session_events_round_trip(script, split):
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(Connect(client_id="c")))
    server.next_event()
    client.receive_data(server.send(ConnAck()))
    client.next_event()
    to_server = [event for role, event in script if role is Role.CLIENT]
    to_client = [event for role, event in script if role is Role.SERVER]
    up = b"".join(client.send(event) for event in to_server)
    down = b"".join(server.send(event) for event in to_client)
    assert feed(client, down, split) == to_client
    assert feed(server, up + client.send(Disconnect()), split) == [*to_server, Disconnect()]
    assert client.state is server.state is State.CLOSED
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


# --- (2) hostile input --------------------------------------------------------------------


def _connected(role: Role) -> Connection:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(Connect(client_id="c")))
    server.next_event()
    client.receive_data(server.send(ConnAck()))
    client.next_event()
    return client if role is Role.CLIENT else server


def _fresh(role: Role) -> Connection:
    conn = Connection(role, max_packet_size=4096)
    if role is Role.CLIENT:
        conn.send(Connect(client_id="c"))
    return conn


def consume_hostile(conn: Connection, data: bytes, split: list[int]) -> None:
    """Feed ``data`` then EOF: only events, or RemoteProtocolError (then ERROR), may result."""
    try:
        feed(conn, data, split)
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
    except RemoteProtocolError as exc:
        assert str(exc)
        assert conn.state.name == "ERROR"
        try:
            conn.next_event()
        except RemoteProtocolError:
            pass
        else:
            raise AssertionError("ERROR state must keep raising") from None


@SETTINGS
@given(
    role=st.sampled_from(Role),
    connected=st.booleans(),
    data=st.binary(max_size=200),
    split=cuts,
)
def test_random_bytes_raise_only_remote_protocol_error(role, connected, data, split):
    conn = _connected(role) if connected else _fresh(role)
    consume_hostile(conn, data, split)


@st.composite
def valid_stream(draw, role: Role):
    """Bytes a correct peer of ``role`` could send to a connected Connection of ``role``."""
    peer = _connected(Role.SERVER if role is Role.CLIENT else Role.CLIENT)
    events = draw(st.lists(server_session_events if role is Role.CLIENT
                           else client_session_events, min_size=1, max_size=6))
    return b"".join(peer.send(event) for event in events)


@st.composite
def mutated(draw, role: Role):
    data = bytearray(draw(valid_stream(role)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x23, 0x2B, 0xC0, 0xED]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


@SETTINGS
@given(data=st.data(), role=st.sampled_from(Role), split=cuts)
def test_mutated_valid_streams_raise_only_remote_protocol_error(data, role, split):
    stream = data.draw(mutated(role))
    consume_hostile(_connected(role), stream, split)


@SETTINGS
@given(connect=connects(), data=st.data(), split=cuts)
def test_mutated_connect_raises_only_remote_protocol_error(connect, data, split):
    raw = bytearray(Connection(Role.CLIENT).send(connect))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    consume_hostile(Connection(Role.SERVER), bytes(raw), split)


@SETTINGS
@given(
    script=st.lists(server_session_events, min_size=1, max_size=8),
    split=cuts,
)
def test_any_chunking_gives_the_same_events(script, split):
    server = _connected(Role.SERVER)
    stream = b"".join(server.send(event) for event in script)
    assert feed(_connected(Role.CLIENT), stream, split) == script
    assert feed(_connected(Role.CLIENT), stream, list(range(len(stream)))) == script
