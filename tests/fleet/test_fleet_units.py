"""The fleet's pure parts: sharding, push schedule, limits, SUBACK scan, ledger, timelines,
results round trip."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.fleet.plan import BrokerTarget, FleetPlan, Shard, parse_shard
from simulator.fleet.limits import (
    LimitError,
    check_local_ports,
    check_open_files,
    parse_source_ips,
)
from simulator.fleet.results import FleetResults, merge_timelines
from simulator.fleet.traffic import SubackScanner
from simulator.fleet.workload import (
    Ledger,
    Tracer,
    decode_tracer,
    encode_tracer,
    pushes_due,
    pushes_for,
)
from pushsdk.protocol import ConnAck, Connect, Connection, PingResp, Publish, Role, SubAck

TARGET = BrokerTarget.from_url("mqtt://127.0.0.1:1883")


def config(handsets: int, workers: int = 1, shard: str = "0/1", **kw) -> FleetPlan:
    return FleetPlan(target=TARGET, handsets=handsets, duration=10, workers=workers,
                       shard=parse_shard(shard), **kw)


@given(handsets=st.integers(1, 300), shards=st.integers(1, 5), workers=st.integers(1, 4))
def test_every_handset_runs_in_exactly_one_worker_of_one_shard(handsets, shards, workers):
    seen = []
    for s in range(shards):
        c = config(handsets, workers, f"{s}/{shards}")
        for w in range(workers):
            for index in c.worker_handsets(w):
                assert c.shard.owns(index) and c.worker_of(index) == w
                seen.append(index)
    assert sorted(seen) == list(range(handsets))


@given(handsets=st.integers(1, 50), total=st.integers(0, 400), parts=st.integers(1, 6))
def test_each_push_is_sent_by_the_owner_of_its_handset(handsets, total, parts):
    owners = [list(range(p, handsets, parts)) for p in range(parts)]
    sent = [list(pushes_for(own, handsets, total)) for own in owners]
    for own, seqs in zip(owners, sent):
        assert seqs == sorted(seqs)  # in the order they fall due
        assert all(seq % handsets in own for seq in seqs)
    assert sorted(seq for seqs in sent for seq in seqs) == list(range(total))
    assert [pushes_due(own, handsets, total) for own in owners] == [len(s) for s in sent]


def test_push_count_and_ramp():
    c = config(100, push_rate=10, ramp=50)
    assert c.push_count() == 100  # k / 10 < 10 s
    assert config(100, push_rate=0.3).push_count() == 3  # at 0, 3.33, 6.67 s
    assert c.ramp_seconds() == pytest.approx(99 / 50)
    assert config(100, ramp=math.inf).ramp_seconds() == 0


@pytest.mark.parametrize("text", ["", "1", "1/0", "3/2", "-1/2", "a/b", "1/2/3"])
def test_bad_shards(text):
    with pytest.raises(ValueError, match="--shard must be i/N"):
        parse_shard(text)


def test_shard_text():
    assert str(parse_shard("1/4")) == "1/4" and parse_shard(" 0/1") == Shard(0, 1)


def test_source_ip_ranges():
    assert parse_source_ips("127.0.0.2-127.0.0.4") == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert parse_source_ips("127.0.0.7") == ("127.0.0.7",)
    assert parse_source_ips("127.0.0.255-127.0.1.0") == ("127.0.0.255", "127.0.1.0")
    assert parse_source_ips("::1-::2") == ("::1", "::2")
    assert len(parse_source_ips("127.0.0.0-127.0.255.255")) == 65536
    with pytest.raises(LimitError, match="more than 65536"):
        parse_source_ips("127.0.0.0-127.1.0.0")


def test_local_port_budget():
    ports = range(32768, 61000)
    check_local_ports(28232, 0, ports)
    with pytest.raises(LimitError, match=r"need 28233 local ports each.*--source-ips "
                                         r"127\.0\.0\.2-127\.0\.0\.3"):
        check_local_ports(28233, 1, ports)
    check_local_ports(50000, 2, ports)


def test_open_files_message_says_how_to_get_more():
    with pytest.raises(LimitError) as caught:
        check_open_files(10**7, workers=1)
    message = str(caught.value)
    assert "10000000 handsets in one process need about 10000064 open files" in message
    assert "--workers" in message and "ulimit -Hn" in message
    assert check_open_files(10, workers=1) >= 74


def _packets(*events) -> bytes:
    """Bytes a broker sends after CONNECT (made by the project's codec)."""
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(Connect(client_id="x")))
    server.next_event()
    return b"".join(server.send(event) for event in events)


@given(cuts=st.lists(st.integers(0, 300), max_size=6), body=st.binary(max_size=200))
def test_suback_is_found_however_the_bytes_are_split(cuts, body):
    stream = _packets(ConnAck(), Publish(topic="t/" + "x" * len(body), payload=body * 2),
                      PingResp(), SubAck(1, (1,)), PingResp())
    suback_end = len(stream) - 2 - 3  # its fixed header ends 3 bytes before its end
    scanner, seen_at, start = SubackScanner(), None, 0
    for end in sorted({min(c, len(stream)) for c in cuts} | {len(stream)}):
        if scanner.feed(stream[start:end]) and seen_at is None:
            seen_at = end
            break
        start = end
    assert seen_at is not None and seen_at >= suback_end  # never before it


def test_scanner_needs_the_suback_itself():
    assert not SubackScanner().feed(_packets(ConnAck(), PingResp()) + b"\x90")


def test_ledger_counts_losses_duplicates_and_strangers():
    ledger = Ledger()
    assert ledger.on_accepted(1) == 0
    assert ledger.on_received(Tracer("run", 1, 7, 100.0), "run", 7, 100.25) == 1
    assert ledger.on_received(Tracer("run", 2, 7, 100.0), "run", 7, 100.5) == 0  # not yet
    assert ledger.on_accepted(2) == 1  # the answer came after the push itself
    ledger.on_accepted(3)
    ledger.on_received(Tracer("run", 1, 7, 100.0), "run", 7, 101.0)  # again
    ledger.on_received(Tracer("old", 9, 7, 1.0), "run", 7, 101.0)  # a previous run's
    ledger.on_received(Tracer("run", 4, 8, 1.0), "run", 7, 101.0)  # another handset's
    ledger.on_received(None, "run", 7, 101.0)  # not a tracer at all
    assert (ledger.delivered, ledger.lost, ledger.duplicates) == (2, 1, 1)
    assert (ledger.stale, ledger.misrouted) == (2, 1)
    assert ledger.latencies == [0.25, 0.5]


def test_tracer_payloads_round_trip():
    tracer = Tracer("ab12", 42, 7, 1767225600.123456)
    assert decode_tracer(encode_tracer(tracer)) == tracer
    assert decode_tracer(tracer.as_data()) == tracer
    for junk in (b"", b"\xff", b"[]", b'{"run": "x"}', {"run": "x", "seq": True, "h": 1,
                                                          "ts": 1.0}, 17):
        assert decode_tracer(junk) is None


def test_timelines_add_up_and_carry_the_last_sample_forward():
    a = [{"t": 0, "connected": 0, "rss_bytes": 1}, {"t": 1, "connected": 3},
         {"t": 2, "connected": 5}]
    b = [{"t": 0, "connected": 0}, {"t": 1, "connected": 2}]
    assert merge_timelines([a, b]) == [{"t": 0, "connected": 0}, {"t": 1, "connected": 5},
                                       {"t": 2, "connected": 7}]
    assert merge_timelines([[], []]) == []


def test_results_survive_a_write_and_read(tmp_path: Path):
    from simulator.metrics import HandsetResult

    def row(index: int, latencies: tuple[float, ...]):
        result = HandsetResult(
            index=index, device_id=f"pushsim-{index}", strategy="fixed:60",
            scenario="fleet-broker", radio_model="lte-huang2012", network_type="cellular",
            nat_timeout_s=math.nan, duration_s=20.0, energy_j=10.5, idle_baseline_j=0.1,
            promotions=2, radio_active_s=12.0, heartbeats=1, heartbeats_failed=0,
            reconnects=0, bytes_up=100, bytes_down=200, pushes_sent=len(latencies),
            pushes_delivered=len(latencies), duplicates=0, connected_s=19.0, dead_s=math.nan,
            latencies=latencies)
        extras = {"source_ip": "127.0.0.2", "connect_attempts": 1, "connects": 1,
                  "connect_failures": 0, "first_connect_s": 0.01 * index,
                  "tcp_connect_s": 0.001, "handshake_s": 0.002, "registration_s": math.nan,
                  "lost": 0, "stale": 0, "misrouted": 0, "packets_up": 4, "packets_down": 5,
                  "sdk_duplicates_suppressed": 0}
        return result, extras
    report = {
        "rows": [row(0, (0.001, 0.002)), row(1, (0.003,))],
        "events": [(0, 0.01, "connected", 0.001, 0.002, math.nan, ""),
                   (1, 0.02, "connected", 0.001, 0.002, math.nan, "")],
        "timeline": [{"t": 0, "connected": 0, "handsets_connected": 0, "connects": 0,
                      "connect_failures": 0},
                     {"t": 1, "connected": 2, "handsets_connected": 2, "connects": 2,
                      "connect_failures": 0}],
        "counters": {"connects": 2}, "failure_reasons": {}, "disconnect_reasons": {},
        "push_failures": {}, "max_send_lag_s": 0.0,
        "process": {"name": "w", "pid": 1, "handsets": 2, "connected_peak": 2,
                    "rss_start_bytes": 1000, "rss_connected_bytes": 3000,
                    "rss_peak_bytes": 3000, "cpu_user_s": 1.0, "cpu_system_s": 0.5,
                    "wall_s": 3.0},
    }
    run = {"mode": "broker", "fleet_handsets": 2, "shards": ["0/1"], "run_ids": ["r"],
           "duration_s": 20.0, "workers": 1}
    results = FleetResults.from_workers(run, [report])
    fleet, summary = results.write(tmp_path)
    assert fleet["processes"][0]["memory_per_connection_bytes"] == 1000
    assert fleet["processes"][0]["cpu_percent_avg"] == 50.0
    assert fleet["pushes"]["latency_s"]["p50"] == pytest.approx(0.002)
    assert summary[0]["pushes_sent"] == 3
    again = FleetResults.read(tmp_path)
    for (read, read_extras), (written, extras) in zip(again.rows, results.rows, strict=True):
        assert read.csv_row() == written.csv_row()
        assert math.isnan(read.nat_timeout_s) and math.isnan(read.dead_s)
        assert read.latencies == written.latencies
        assert read_extras["source_ip"] == "127.0.0.2" and read_extras["packets_down"] == 5
    fleet_again, summary_again = again.write(tmp_path / "again")
    assert summary_again[0]["latency_p95_s"] == pytest.approx(summary[0]["latency_p95_s"])
    assert fleet_again["connect"] == fleet["connect"]
