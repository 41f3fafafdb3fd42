"""Pure parts of the fleet's MQTT 5 and WebSocket support: the shared group's ledger, the
SUBACK scan inside WebSocket frames (frames made by wsproto's server, the real peer's
library), the plan's topic filters and the options' checks."""
from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Ping, Request

from pushsdk.protocol import (
    ConnAck,
    Connect,
    Connection,
    PingResp,
    Publish,
    Role,
    SubAck,
)
from simulator.cli import CommandError
from simulator.commands.fleet import add_arguments
from simulator.fleet.options import build_plan
from simulator.fleet.traffic import WebSocketSubackScanner
from simulator.fleet.workload import MemberLedger, SharedLedger, Tracer

RUN = "r"
GROUPS = 3


def _members(count: int) -> list[MemberLedger]:
    shared = SharedLedger(GROUPS)
    return [MemberLedger(shared, lead=i == 0) for i in range(count)]


@given(expected=st.sets(st.integers(0, 20)),
       receipts=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 25)), max_size=60))
def test_a_shared_group_counts_each_push_once(expected, receipts):
    """Group 1 of 3 (pushes 1, 4, 7, ...), four members: whatever members get which pushes,
    the sums over the members are the group's figures, and a second copy anywhere is a
    duplicate."""
    members = _members(4)
    seqs = {1 + GROUPS * k for k in expected}
    for seq in seqs:
        members[0].on_expected(seq)
    first: set[int] = set()
    copies = 0
    for member, k in receipts:
        seq = 1 + GROUPS * k
        new = members[member].on_received(Tracer(RUN, seq, 1, 0.0), RUN, 1)
        assert new == (seq not in first)
        copies += not new
        first.add(seq)
    assert sum(m.delivered for m in members) == len(seqs & first)
    assert sum(m.lost for m in members) == members[0].lost == len(seqs - first)
    assert sum(m.expected for m in members) == len(seqs)
    assert sum(m.duplicates for m in members) == copies
    assert sum(m.unexpected for m in members) == len(first - seqs)
    assert all(m.lost == 0 for m in members[1:])
    assert all(m.was_expected(s) for m in members for s in seqs)


def test_a_shared_group_tells_strangers_apart():
    member = _members(2)[1]
    assert member.on_received(Tracer("other", 1, 1, 0.0), RUN, 1) is False
    assert member.on_received(Tracer(RUN, 2, 2, 0.0), RUN, 1) is False
    assert member.on_received(None, RUN, 1) is False
    assert (member.stale, member.misrouted, member.delivered) == (2, 1, 0)


def _websocket_bytes(*events) -> bytes:
    """What a WebSocket server (wsproto) sends a client: the 101 answer, then the MQTT
    packets (made by the codec) in binary frames of varied sizes, with a Ping between."""
    server, client = WSConnection(ConnectionType.SERVER), WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/mqtt", subprotocols=["mqtt"])))
    list(server.events())
    out = server.send(AcceptConnection(subprotocol="mqtt"))
    broker = Connection(Role.SERVER)
    broker.receive_data(Connection(Role.CLIENT).send(Connect(client_id="x")))
    broker.next_event()
    mqtt = b"".join(broker.send(event) for event in events)
    # Split the MQTT bytes across frames at awkward places (inside a fixed header too).
    for start in range(0, len(mqtt), 7):
        out += server.send(BytesMessage(data=mqtt[start:start + 7]))
        if start == 14:
            out += server.send(Ping(payload=b"\x90\x03\x00\x01\x01"))  # looks like a SUBACK
    return out


@given(cuts=st.lists(st.integers(0, 600), max_size=8), body=st.binary(max_size=300))
def test_suback_is_found_inside_websocket_frames(cuts, body):
    stream = _websocket_bytes(ConnAck(), Publish(topic="t", payload=body), PingResp(),
                              SubAck(1, (1,)), PingResp())
    scanner, found, start = WebSocketSubackScanner(), False, 0
    for end in sorted({min(c, len(stream)) for c in cuts} | {len(stream)}):
        if scanner.feed(stream[start:end]):
            found = True
            # Not before the SUBACK's own frame bytes: the two PINGRESPs (4 bytes) and at
            # most one frame after it remain.
            assert len(stream) - end <= 2 + 7 + 2 + 7
            break
        start = end
    assert found


def test_websocket_scan_needs_a_suback_in_the_data():
    stream = _websocket_bytes(ConnAck(), PingResp(), PingResp())  # the Ping mimics one
    assert not WebSocketSubackScanner().feed(stream)


def _plan(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_plan(parser.parse_args(["--handsets", "8", "--duration", "2", *argv]))


def test_shared_group_topic_filters_and_defaults():
    plan = _plan("--broker", "ws://127.0.0.1:9001/mqtt", "--mqtt-version", "5", "--fan-out",
                 "4", "--shared-group", "g", "--run-id", "abc")
    assert plan.shared and plan.mqtt_level == 5
    assert plan.topic_filter(1) == "$share/g/pushsim/abc/1"
    assert plan.topic(1) == "pushsim/abc/1"
    assert plan.target.websocket_path == "/mqtt"
    assert _plan("--broker", "mqtt://127.0.0.1:1").workload.mqtt_version == "3.1.1"
    server = _plan("--server", "http://127.0.0.1:1", "--admin-token", "t")
    assert (server.workload.mqtt_version, server.workload.mqtt_transport) == ("auto", "tcp")
    assert not server.shared and server.topic_filter(0) == server.topic(0)


@pytest.mark.parametrize(("argv", "message"), [
    (("--broker", "mqtt://h:1", "--mqtt-version", "5", "--session-expiry", "0"),
     "argument --session-expiry"),
    (("--server", "http://h:1", "--admin-token", "t", "--session-expiry", "5"),
     "are for --broker"),
])
def test_mqtt5_option_mistakes(argv, message, capsys):
    with pytest.raises((CommandError, SystemExit)) as caught:
        _plan(*argv)
    assert message in (str(caught.value) + capsys.readouterr().err)
