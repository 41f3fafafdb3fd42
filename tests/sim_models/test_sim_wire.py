"""TCP/IPv4 and TLS wire overhead (simulator.nat.WireModel): the arithmetic of docs/scenarios.md."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.nat import WIRE, Flight, WireModel, totals


def test_a_heartbeat_is_one_segment_and_one_ack():
    # MQTT PINGREQ: 2 bytes
    assert WIRE.write(2, "up") == (Flight("up", 1, 42), Flight("down", 1, 40))
    assert WIRE.write(2, "up", tls=True) == (Flight("up", 1, 2 + 29 + 40), Flight("down", 1, 40))


def test_segmentation_at_the_mss_and_delayed_acks():
    # 4000 bytes: 1460 + 1460 + 1080 -> 3 segments, ACKs for every second one -> 2
    data, acks = WIRE.write(4000, "down")
    assert data == Flight("down", 3, 4000 + 3 * 40)
    assert acks == Flight("up", 2, 80)
    data, acks = WIRE.write(2920, "down")
    assert (data.packets, acks.packets) == (2, 1)


def test_tls_adds_one_record_overhead_per_16k():
    assert WIRE.tls_bytes(16384) == 16384 + 29
    assert WIRE.tls_bytes(16385) == 16385 + 2 * 29
    data, _ = WIRE.write(16385, "up", tls=True)
    assert data.packets == -(-(16385 + 58) // 1460) == 12
    assert data.wire_bytes == 16385 + 58 + 12 * 40


def test_an_empty_write_costs_nothing():
    assert WIRE.write(0, "up") == ()


@pytest.mark.parametrize("bad", ["sideways", "UP"])
def test_direction_is_checked(bad):
    with pytest.raises(ValueError, match="direction"):
        WIRE.write(10, bad)


def test_negative_write_is_refused():
    with pytest.raises(ValueError):
        WIRE.write(-1, "up")


def test_tcp_handshake_without_tls():
    assert WIRE.open() == (Flight("up", 1, 60), Flight("down", 1, 60), Flight("up", 1, 52))
    assert totals(WIRE.open()) == {"up_packets": 2, "up_bytes": 112, "down_packets": 1,
                                   "down_bytes": 60}


def test_tcp_and_tls13_handshake():
    flights = WIRE.open(tls=True)
    assert [f.direction for f in flights] == ["up", "down", "up", "down", "up", "down", "up"]
    # handshake ACK travels with the ClientHello (320 B of TLS -> one 360 B segment)
    assert flights[2] == Flight("up", 2, 52 + 320 + 40)
    assert flights[3] == Flight("down", 1, 1200 + 40)
    assert flights[4] == Flight("up", 1, 64 + 40)
    assert flights[5] == Flight("down", 1, 500 + 40)
    assert flights[6] == Flight("up", 1, 40)  # ACK of the session tickets
    assert totals(flights) == {
        "up_packets": 5, "up_bytes": 60 + 412 + 104 + 40,
        "down_packets": 3, "down_bytes": 60 + 1240 + 540,
    }


def test_orderly_close_and_reset():
    assert WIRE.close("up") == (Flight("up", 1, 40), Flight("down", 1, 40), Flight("up", 1, 40))
    assert WIRE.close("down", tls=True) == (
        Flight("down", 1, 71), Flight("up", 1, 71), Flight("down", 1, 40))
    assert WIRE.reset("down") == Flight("down", 1, 40)


def test_the_model_is_configurable():
    every_segment = WireModel(segments_per_ack=1, header_bytes=52)
    data, acks = every_segment.write(3000, "up")
    assert data == Flight("up", 3, 3000 + 3 * 52)
    assert acks == Flight("down", 3, 3 * 52)


@given(n=st.integers(min_value=1, max_value=200_000), tls=st.booleans())
def test_write_accounting_is_consistent(n, tls):
    data, acks = WIRE.write(n, "up", tls=tls)
    stream = WIRE.tls_bytes(n) if tls else n
    assert data.wire_bytes == stream + 40 * data.packets
    assert (data.packets - 1) * 1460 < stream <= data.packets * 1460
    assert acks.packets == (data.packets + 1) // 2
    assert acks.wire_bytes == 40 * acks.packets
