"""Packet captures as energy traces (simulator.radio.capture): pcap and pcapng, IPv4 and
IPv6, written here with dpkt's writers, and bad files."""
import ipaddress
import json
import subprocess
import sys

import dpkt
import pytest

from simulator.radio import TraceError, energy_command, energy_of_trace, get_model
from simulator.radio.capture import read_capture
from simulator.radio.trace import TracePacket

PHONE4, SERVER4 = "127.0.0.2", "127.0.0.3"  # addresses inside the files only: nothing is sent
PHONE6, SERVER6 = "::1", "::2"


def tcp_ip(src: str, dst: str, payload: bytes):
    segment = dpkt.tcp.TCP(sport=40000, dport=1883, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
                           data=payload)
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        ip = dpkt.ip.IP(src=a.packed, dst=b.packed, p=dpkt.ip.IP_PROTO_TCP, data=segment)
        ip.len = len(bytes(ip))
        return ip
    ip = dpkt.ip6.IP6(src=a.packed, dst=b.packed, nxt=dpkt.ip.IP_PROTO_TCP, hlim=64,
                      data=segment)
    ip.plen = len(bytes(segment))
    return ip


def ethernet(ip) -> bytes:
    kind = dpkt.ethernet.ETH_TYPE_IP if isinstance(ip, dpkt.ip.IP) else dpkt.ethernet.ETH_TYPE_IP6
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=kind, data=ip))


def write_capture(path, frames, *, ng=False, linktype=dpkt.pcap.DLT_EN10MB):
    with open(path, "wb") as file:
        writer = (dpkt.pcapng.Writer(file, linktype=linktype) if ng
                  else dpkt.pcap.Writer(file, linktype=linktype))
        for t, frame in frames:
            writer.writepkt(frame, ts=t)


def ping_exchange(phone, server, start=100.0):
    """An MQTT PINGREQ from the phone and the PINGRESP 80 ms later, plus an ARP frame."""
    up = tcp_ip(phone, server, b"\xc0\x00")
    down = tcp_ip(server, phone, b"\xd0\x00")
    arp = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\xff" * 6,
                                       type=dpkt.ethernet.ETH_TYPE_ARP, data=dpkt.arp.ARP()))
    return [(start, ethernet(up)), (start + 0.05, arp), (start + 0.08, ethernet(down))], up, down


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("phone, server", [(PHONE4, SERVER4), (PHONE6, SERVER6)],
                         ids=["ipv4", "ipv6"])
def test_a_capture_reads_as_a_trace(tmp_path, ng, phone, server):
    path = tmp_path / ("beat.pcapng" if ng else "beat.pcap")
    frames, up, down = ping_exchange(phone, server)
    write_capture(path, frames, ng=ng)
    size = len(bytes(up))  # IP datagram: 20 (v4) or 40 (v6) + 20 TCP + 2 MQTT
    assert size == (42 if ":" not in phone else 62)
    packets = read_capture(path)
    assert packets == [TracePacket(pytest.approx(100.0), "up", size),
                       TracePacket(pytest.approx(100.08), "down", size)]
    # The first packet's source is the device unless told otherwise.
    flipped = read_capture(path, device_ip=server)
    assert [p.direction for p in flipped] == ["down", "up"]
    result = energy_command("lte", path)
    expected = energy_of_trace(get_model("lte"), packets)
    assert result["joules"] == pytest.approx(expected.joules, abs=1e-6)
    assert result["promotions"] == 1 and abs(result["joules"] - 12.76) < 0.1


def test_raw_ip_captures_and_out_of_order_timestamps(tmp_path):
    path = tmp_path / "raw.pcap"
    a = bytes(tcp_ip(PHONE4, SERVER4, b"x" * 100))
    b = bytes(tcp_ip(SERVER4, PHONE4, b"y" * 10))
    write_capture(path, [(5.0, a), (4.9, b)], linktype=dpkt.pcap.DLT_RAW)
    packets = read_capture(path)
    assert [(p.t, p.direction, p.nbytes) for p in packets] == [(5.0, "up", 140), (5.0, "down", 50)]


def test_bad_captures_are_one_line_errors(tmp_path):
    truncated = tmp_path / "cut.pcap"
    frames, _, _ = ping_exchange(PHONE4, SERVER4)
    write_capture(truncated, frames)
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(TraceError, match="cut.pcap"):
        read_capture(truncated)
    with pytest.raises(TraceError, match="--device-ip"):
        read_capture(truncated, device_ip="phone")
    odd = tmp_path / "odd.pcap"
    write_capture(odd, frames, linktype=147)  # DLT_USER0
    with pytest.raises(TraceError) as info:
        read_capture(odd)
    assert str(info.value) == (f"{odd}: unsupported link type 147 (Ethernet, raw IP, Linux "
                               "cooked and loopback captures are read)")  # said once
    csv = tmp_path / "t.csv"
    csv.write_text("t,dir,bytes\n0,up,2\n")
    with pytest.raises(TraceError, match="--device-ip applies to pcap"):
        energy_command("lte", csv, device_ip=PHONE4)


def pushsim(*args):
    return subprocess.run([sys.executable, "-m", "simulator", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_command_reads_captures_and_reports_bad_ones_in_one_line(tmp_path):
    path = tmp_path / "beat.pcapng"
    frames, _, _ = ping_exchange(PHONE6, SERVER6)
    write_capture(path, frames, ng=True)
    done = pushsim("energy", "--model", "lte", "--trace", str(path), "--device-ip", PHONE6)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bytes_up"] == result["bytes_down"] == 62 and result["promotions"] == 1
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 7)
    done = pushsim("energy", "--model", "lte", "--trace", str(junk))
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "junk.pcap" in done.stderr
