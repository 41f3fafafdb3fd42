"""Incremental parsing, EOF, max_packet_size, the buffer, and the package's surface."""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pushsdk.protocol as protocol
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
    Publish,
    RemoteProtocolError,
    Role,
    State,
    SubAck,
    Will,
)

SESSION_FROM_SERVER = [
    ConnAck(0, session_present=True),
    Publish(topic="push/app/reg", payload=b'{"msg_id": "1"}', qos=1, packet_id=1),
    Publish(topic="push/app/reg", payload=b"y" * 300, qos=1, dup=True, packet_id=2),
    SubAck(7, (1, 0x80)),
    PingResp(),
    Publish(topic="x", payload=b"", qos=0, retain=True),
]


def _server_stream() -> bytes:
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(Connect(client_id="a")))
    server.next_event()
    return b"".join(server.send(event) for event in SESSION_FROM_SERVER)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64, None])
def test_chunking_gives_the_same_events(make_pair, chunk_size):
    pair = make_pair()
    pair.client.send(Connect(client_id="a"))
    assert pair.deliver(pair.client, _server_stream(), chunk_size=chunk_size) == SESSION_FROM_SERVER


def test_byte_at_a_time_returns_need_data_until_complete():
    client = Connection(Role.CLIENT)
    client.send(Connect(client_id="a"))
    packet = b"\x20\x02\x01\x00"
    for byte in packet[:-1]:
        client.receive_data(bytes((byte,)))
        assert client.next_event() is NEED_DATA
        assert client.state is State.CONNECTING
    client.receive_data(packet[-1:])
    assert client.next_event() == ConnAck(0, session_present=True)
    assert client.next_event() is NEED_DATA


def test_many_packets_in_one_chunk_and_the_buffer_stays_small(connected):
    # 20,000 packets in chunks that split packets anywhere: the parsed prefix is dropped, so
    # the buffer never holds more than one chunk plus a partial packet.
    one = connected.server.send(Publish(topic="t", payload=b"p" * 50, qos=1, packet_id=9))
    stream = one * 20_000
    largest = 0
    count = 0
    for start in range(0, len(stream), 4093):
        connected.client.receive_data(stream[start : start + 4093])
        largest = max(largest, len(connected.client._buf))  # private: memory is the point
        while connected.client.next_event() is not NEED_DATA:
            count += 1
    assert count == 20_000
    assert largest < 4093 + len(one)


def test_events_generator(connected):
    connected.client.receive_data(b"\xd0\x00" * 3)
    assert list(connected.client.events()) == [PingResp()] * 3
    connected.client.receive_data(b"\xd0\x00")
    connected.client.receive_data(b"")
    assert list(connected.client.events()) == [PingResp(), ConnectionClosed()]
    assert connected.client.state is State.CLOSED


# --- EOF ----------------------------------------------------------------------------------


def test_eof_at_a_boundary_is_connection_closed_once(connected):
    connected.server.receive_data(b"\xc0\x00")
    connected.server.receive_data(b"")
    assert connected.server.next_event() == PingReq()  # buffered packets come first
    assert connected.server.state is State.CONNECTED
    assert connected.server.next_event() == ConnectionClosed()
    assert connected.server.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="after ConnectionClosed"):
        connected.server.next_event()
    connected.server.receive_data(b"")  # a repeated EOF is harmless
    with pytest.raises(LocalProtocolError, match="data after EOF"):
        connected.server.receive_data(b"\xc0\x00")


def test_eof_before_anything():
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.send(ConnAck())


def test_eof_after_disconnect(connected):
    connected.send(connected.client, Disconnect())
    connected.server.receive_data(b"")
    assert connected.server.next_event() == ConnectionClosed()
    assert connected.server.state is State.CLOSED


@pytest.mark.parametrize("partial",
                         [b"\x30", b"\x30\x85", b"\x30\x05\x00", b"\x30\x85\x01\x00\x01"])
def test_eof_in_the_middle_of_a_packet(connected, partial):
    connected.client.receive_data(partial)
    assert connected.client.next_event() is NEED_DATA
    connected.client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="connection closed in the middle of a packet"):
        connected.client.next_event()
    assert connected.client.state is State.ERROR
    with pytest.raises(RemoteProtocolError, match="connection closed in the middle of a packet"):
        connected.client.next_event()


# --- max_packet_size ----------------------------------------------------------------------


def test_oversized_packet_refused_from_its_header(connected):
    # Remaining length 70,000 = 0xF0 0xA2 0x04: a 4-byte fixed header, 70,004 bytes in all.
    connected.server.receive_data(b"\x30\xf0\xa2\x04")
    with pytest.raises(
        RemoteProtocolError,
        match=r"PUBLISH of 70004 bytes \(remaining length 70000\) exceeds max_packet_size 65536",
    ):
        connected.server.next_event()
    assert connected.server.state is State.ERROR


@pytest.mark.parametrize("limit", [20, 127, 128, 200, 20_000])
def test_max_packet_size_counts_the_whole_packet(make_pair, limit):
    pair = make_pair(connected=True, max_packet_size=limit)

    def publish_of_size(size: int) -> bytes:
        header = 2 if size - 2 < 128 else 3 if size - 3 < 16_384 else 4
        data = pair.client.send(Publish(topic="t", payload=b"x" * (size - header - 3)))
        assert len(data) == size
        return data

    assert pair.deliver(pair.server, publish_of_size(limit))[0].topic == "t"
    pair.server.receive_data(publish_of_size(limit + 1)[:4])  # the header is enough
    with pytest.raises(RemoteProtocolError,
                       match=f"of {limit + 1} bytes .* max_packet_size {limit}"):
        pair.server.next_event()


@pytest.mark.parametrize("bad", [0, 1, -5, "big", 2.5])
def test_max_packet_size_must_be_sane(bad):
    with pytest.raises(ValueError, match="max_packet_size"):
        Connection(Role.CLIENT, max_packet_size=bad)


def test_role_must_be_a_role():
    with pytest.raises(TypeError):
        Connection("client")  # type: ignore[arg-type]


# --- surface ------------------------------------------------------------------------------


def test_need_data_is_a_singleton():
    assert repr(NEED_DATA) == "NEED_DATA"
    assert type(NEED_DATA)() is NEED_DATA
    assert copy.copy(NEED_DATA) is NEED_DATA
    assert copy.deepcopy(NEED_DATA) is NEED_DATA
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA


def test_properties_and_repr():
    conn = Connection(Role.SERVER, max_packet_size=1000)
    assert conn.role is Role.SERVER and conn.state is State.IDLE
    assert conn.max_packet_size == 1000
    conn.receive_data(b"\x10")
    assert repr(conn) == "<Connection SERVER IDLE, 1 bytes buffered>"


def test_all_exports_the_public_names():
    expected = {
        "Connection", "Role", "State", "NEED_DATA", "ProtocolError", "LocalProtocolError",
        "RemoteProtocolError", "ConnackCode", "SUBACK_FAILURE", "Will", "Connect", "ConnAck",
        "Publish", "PubAck", "PubRec", "PubRel", "PubComp", "Subscribe", "SubAck",
        "Unsubscribe", "UnsubAck", "PingReq", "PingResp", "Disconnect", "ConnectionClosed",
    }
    assert expected <= set(protocol.__all__)
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
    assert issubclass(protocol.LocalProtocolError, protocol.ProtocolError)
    assert issubclass(protocol.RemoteProtocolError, protocol.ProtocolError)
    assert Will("t") == Will(topic="t", payload=b"", qos=0, retain=False)
    assert PubAck(1) == PubAck(packet_id=1)


def test_protocol_never_imports_trio():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; import pushsdk.protocol; from pushsdk.protocol import *; "
        "bad = [m for m in sys.modules if m == 'trio' or m.startswith('trio.')]; "
        "assert not bad, bad; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(root), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
