"""The fleet's pure parts: sharding, push schedule, limits, SUBACK scan, ledger, timelines,
results round trip."""
from __future__ import annotations

import math
import random
import re

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from simulator.fleet.gates import GATE_FIELDS, GateError, evaluate, parse_gate
from simulator.fleet.limits import (
    LimitError,
    check_local_ports,
    check_open_files,
    parse_source_ips,
)
from simulator.fleet.measure import LIVE_BOUNDS, Histograms, LiveBuckets, PerSecond
from simulator.fleet.observer import FleetObserver
from simulator.fleet.plan import BrokerTarget, FleetPlan, Shard, Workload, parse_shard
from simulator.fleet.pushing import PushGenerator
from simulator.fleet.results import merge_timelines
from simulator.fleet.socket_handset import SocketHandset
from simulator.fleet.stages import (
    PushSchedule,
    RampSchedule,
    Stage,
    StageError,
    check_stages,
    cli_stages,
    storm_members,
)
from simulator.fleet.traffic import SubackScanner
from simulator.fleet.workload import (
    Ledger,
    Tracer,
    decode_tracer,
    encode_tracer,
    pushes_due,
    pushes_for,
)
from simulator.radio import get_model
from pushsdk import BrokerConfig
from pushsdk.transport import TcpConnector
from pushsdk.protocol import ConnAck, Connect, Connection, PingResp, Publish, Role, SubAck

TARGET = BrokerTarget.from_url("mqtt://127.0.0.1:1883")


def config(handsets: int, workers: int = 1, shard: str = "0/1", *, fan_out: int = 1,
           push_rate: float = 10, ramp: float = 1000) -> FleetPlan:
    return FleetPlan(target=TARGET, handsets=handsets,
                     stages=cli_stages(handsets, 10, ramp, push_rate, 5), workers=workers,
                     shard=parse_shard(shard), workload=Workload(fan_out=fan_out))


@given(handsets=st.integers(1, 300), shards=st.integers(1, 5), workers=st.integers(1, 4),
       fan_out=st.integers(1, 7))
def test_every_handset_runs_in_exactly_one_worker_of_one_shard(handsets, shards, workers,
                                                               fan_out):
    seen = []
    for s in range(shards):
        c = config(handsets, workers, f"{s}/{shards}", fan_out=fan_out, ramp=0)
        for w in range(workers):
            for index in c.worker_handsets(w):
                assert c.owns(index) and c.worker_of_group(c.group_of(index)) == w
                # every member of a handset's group is in the same worker
                assert set(c.members(c.group_of(index))) <= set(c.worker_handsets(w))
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
    assert config(100, ramp=0).ramp_seconds() == 0
    assert [c.ramp_schedule().start_of(i) for i in (0, 1, 50)] == pytest.approx([0, 0.02, 1])


@given(rates=st.lists(st.tuples(st.floats(0, 50), st.floats(0, 20)), min_size=1, max_size=5))
def test_push_schedule_is_the_integral_of_the_stage_rates(rates):
    stages = [Stage(kind="hold", duration=d, push_rate=r) for r, d in rates]
    schedule = PushSchedule(stages)
    total = sum(r * d for r, d in rates)
    assert schedule.count == (math.ceil(total - 1e-9) if total > 0 else 0)
    dues = [schedule.due(k) for k in range(schedule.count)]
    assert dues == sorted(dues)
    assert all(0 <= t < sum(d for _, d in rates) + 1e-6 for t in dues)
    # Within a stage of rate r, consecutive pushes are 1/r apart.
    start = 0.0
    for r, d in rates:
        inside = [t for t in dues if start <= t < start + d]
        assert len(inside) in range(math.floor(r * d - 1e-6), math.ceil(r * d + 1e-6) + 1)
        start += d


def test_cli_stages_and_a_ramp_in_two_parts():
    assert [s.kind for s in cli_stages(100, 10, 50, 5, 3)] == ["ramp", "hold", "drain"]
    assert [s.kind for s in cli_stages(100, 2, 50, 5, 3)] == ["ramp", "drain"]
    with pytest.raises(StageError, match="take 2.0 s to start"):
        cli_stages(100, 1, 50, 5, 3)
    stages = [Stage(kind="ramp", duration=2, handsets=10), Stage(kind="hold", duration=1),
              Stage(kind="ramp", duration=1, handsets=30)]
    check_stages(stages, 30)
    ramp = RampSchedule(stages)
    assert [ramp.start_of(i) for i in (0, 5, 10, 20)] == pytest.approx([0, 1, 3, 3.5])
    assert ramp.rate_at(0) == 5 and ramp.rate_at(29) == 20
    with pytest.raises(StageError, match="start 30 handsets, the fleet has 31"):
        check_stages(stages, 31)
    with pytest.raises(StageError, match="fraction must be in"):
        check_stages([*stages, Stage(kind="storm", duration=1, fraction=0)], 30)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("push_rate", 1e300, "push_rate must be a number from 0 to 1,000,000 per second"),
    ("push_rate", math.nan, "push_rate must be a number from 0 to 1,000,000 per second"),
    ("push_rate", -1.0, "push_rate must be a number from 0 to 1,000,000 per second"),
    ("duration", 1e300, "duration must be a number of seconds from 0 to 31,536,000 (a year)"),
    ("duration", math.inf, "duration must be a number of seconds from 0 to 31,536,000"),
])
def test_absurd_stage_figures_are_refused_before_anything_runs(field, value, message):
    hold = attrs.evolve(Stage(kind="hold", duration=10, push_rate=5), **{field: value})
    with pytest.raises(StageError, match=re.escape(f"stage 2 (hold): {message}")):
        check_stages([Stage(kind="ramp", duration=1, handsets=2), hold], 2)
    check_stages([Stage(kind="ramp", duration=1, handsets=2),
                  Stage(kind="hold", duration=365 * 86400, push_rate=1e6)], 2)


def test_storm_members_are_about_the_fraction_and_the_same_everywhere():
    hit = [i for i in range(10000) if storm_members(i, 0.25)]
    assert 2300 < len(hit) < 2700
    assert hit == [i for i in range(10000) if storm_members(i, 0.25)]
    assert all(storm_members(i, 1.0) for i in range(100))


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
    ledger = Ledger(groups=10)  # handset of group 7: pushes 7, 17, 27, ...
    assert ledger.on_expected(7) is False
    assert ledger.on_received(Tracer("run", 7, 7, 100.0), "run", 7) is True
    assert ledger.on_received(Tracer("run", 17, 7, 100.0), "run", 7) is True  # not confirmed yet
    assert ledger.delivered == 1 and ledger.unexpected == 1
    assert ledger.on_expected(17) is True  # the answer came after the push itself
    ledger.on_expected(27)
    assert ledger.on_received(Tracer("run", 7, 7, 100.0), "run", 7) is False  # again
    ledger.on_received(Tracer("old", 9, 7, 1.0), "run", 7)  # a previous run's
    ledger.on_received(Tracer("run", 8, 8, 1.0), "run", 7)  # another group's
    ledger.on_received(Tracer("run", 37, 8, 1.0), "run", 7)  # says 8, is 7's number
    ledger.on_received(None, "run", 7)  # not a tracer at all
    ledger.on_received(Tracer("run", 47, 7, 1.0), "run", 7)  # the sender never heard back
    assert (ledger.expected, ledger.delivered, ledger.lost) == (3, 2, 1)
    assert (ledger.duplicates, ledger.stale, ledger.misrouted, ledger.unexpected) == (1, 2, 2, 1)


@given(expected=st.sets(st.integers(0, 200)), received=st.lists(st.integers(0, 200)))
def test_delivered_never_exceeds_expected(expected, received):
    ledger = Ledger(groups=3)
    for cycle in expected:
        ledger.on_expected(cycle * 3 + 1)
    for cycle in received:
        ledger.on_received(Tracer("r", cycle * 3 + 1, 1, 0.0), "r", 1)
    assert ledger.delivered == len(expected & set(received)) <= ledger.expected
    assert ledger.lost == len(expected - set(received))
    assert ledger.unexpected == len(set(received) - expected)
    assert ledger.duplicates == len(received) - len(set(received))


@given(size=st.integers(0, 3000))
def test_tracer_payloads_round_trip_at_any_size(size):
    tracer = Tracer("ab12", 42, 7, 1767225600.123456)
    payload = encode_tracer(tracer, size)
    assert decode_tracer(payload) == tracer
    assert len(payload) == max(size, len(encode_tracer(tracer)))
    assert decode_tracer(tracer.as_data()) == tracer
    for junk in (b"", b"\xff", b"[]", b'{"run": "x"}', {"run": "x", "seq": True, "to": 1,
                                                          "ts": 1.0}, 17):
        assert decode_tracer(junk) is None


def test_timelines_add_up_and_carry_the_last_sample_forward():
    a = [{"t": 0, "connected": 0, "rss_bytes": 1}, {"t": 1, "connected": 3},
         {"t": 2, "connected": 5}]
    b = [{"t": 0, "connected": 0}, {"t": 1, "connected": 2}]
    assert merge_timelines([a, b]) == [{"t": 0, "connected": 0}, {"t": 1, "connected": 5},
                                       {"t": 2, "connected": 7}]
    assert merge_timelines([[], []]) == []


def test_gates_parse_and_judge():
    assert str(parse_gate("lost>0")) == "lost>0"
    assert str(parse_gate(" delivery_ratio < 0.999 ")) == "delivery_ratio<0.999"
    for text in ("latency_p99_s>=0.5", "connect_failures!=0", "handsets_connected==3",
                 "warnings<=1"):
        parse_gate(text)
    for text, message in (("lost>>0", "not a number"), ("x>0", "not a field"),
                          ("lost>inf", "finite"), ("lost", "expected FIELD")):
        with pytest.raises(GateError, match=message):
            parse_gate(text)
    assert {"lost", "delivery_ratio", "latency_p99_s", "connect_failures"} <= set(GATE_FIELDS)
    verdicts = evaluate([parse_gate("lost>0"), parse_gate("latency_p99_s>0.5"),
                         parse_gate("delivery_ratio<0.999")],
                        {"lost": 0, "latency_p99_s": None, "delivery_ratio": 0.99,
                         "missing_parts": 0})
    assert [(v["gate"], v["missed"]) for v in verdicts] == [
        ("lost>0", False), ("latency_p99_s>0.5", True), ("delivery_ratio<0.999", True),
        ("missing_parts>0", False)]
    assert verdicts[1]["why"] == "latency_p99_s has no value"
    assert verdicts[2]["why"] == "delivery_ratio = 0.99"


def test_histograms_add_up_across_workers():
    a, b, both = Histograms(), Histograms(), Histograms()
    for i in range(1, 1001):
        (a if i % 2 else b).record("latency", i / 1000)
        both.record("latency", i / 1000)
    merged = Histograms.decode([a.encoded(), b.encoded()])
    assert merged.distribution("latency") == both.distribution("latency")
    figures = merged.distribution("latency")
    assert figures["count"] == 1000
    assert figures["p50"] == pytest.approx(0.5, rel=1e-3)
    assert figures["p99"] == pytest.approx(0.99, rel=1e-3)
    assert math.isnan(Histograms().distribution("handshake")["p50"])


def test_per_second_counts_merge_by_second():
    a, b = PerSecond(), PerSecond()
    a.add("connects", 0.5)
    a.add("connects", 2.9, 3)
    b.add("connects", 2.0)
    a.latency(1.2, 0.25)
    b.latency(1.7, 0.5)
    merged = PerSecond.merge([a.as_dict(), b.as_dict()])
    assert merged.counts["connects"] == [1, 0, 4]
    assert merged.peak("connects") == 4
    assert merged.latency_sum[1] == 0.75 and merged.latency_max[1] == 0.5


def test_live_buckets_are_cumulative():
    live = LiveBuckets()
    for x in (0.0005, 0.003, 0.003, 100.0):
        live.observe(x)
    snap = live.snapshot()
    assert snap["count"] == 4 and snap["sum"] == pytest.approx(100.0065)
    assert snap["buckets"][0] == 1 and snap["buckets"][LIVE_BOUNDS.index(0.005)] == 3
    assert snap["buckets"][-1] == 3  # 100 s is only in +Inf


def test_the_shards_of_one_run_preflight_under_ids_of_their_own():
    """Shards started at once with one run id: a shared pre-flight client id would make the
    broker take one shard's pre-flight over with the other's (no SUBACK for the first)."""
    from simulator.fleet.preflight import _preflight_id

    plans = [attrs.evolve(config(12, shard=f"{i}/3"), run_id="byhand") for i in range(3)]
    ids = [_preflight_id(plan) for plan in plans]
    assert ids == ["pushsim-byhand-preflight-0", "pushsim-byhand-preflight-1",
                   "pushsim-byhand-preflight-2"]
    assert not set(ids) & {plans[0].device_id(i) for i in range(12)}


def _generator_with_one_handset():
    plan = config(1)
    observer = FleetObserver(plan.run_id)
    handset = SocketHandset(
        0, observer, group=0, groups=plan.groups, device_id="h-0", connector=TcpConnector(),
        config=BrokerConfig.from_url(TARGET.url, client_id="h-0", topics=["t"]), strategy=None,
        radio=get_model("lte"), network_type="cellular", connect_timeout=5.0, rng=random.Random(0))
    return PushGenerator(plan, 0, observer, {0: handset}, random.Random(0)), handset


@pytest.mark.parametrize("stop_grace_over", [False, True])
def test_a_push_in_flight_at_a_stop_is_lost_only_if_answered_in_time(stop_grace_over):
    generator, handset = _generator_with_one_handset()
    answer = trio.Event()

    async def send(seq, receivers, scheduled_wall):
        await answer.wait()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(generator._send_one, send, 0, trio.current_time(), [handset])
            await trio.testing.wait_all_tasks_blocked()
            # Waiting for its answer, the push is in transit: a stop's grace waits for it.
            assert not generator.nothing_in_transit()
            generator.cut_short = stop_grace_over
            answer.set()

    trio.run(main)
    counters = generator.counters()
    if stop_grace_over:  # answered after the grace: in flight when the run ended
        assert (counters["pushes_sent"], counters["pushes_unanswered"]) == (0, 1)
        assert (handset.ledger.expected, handset.ledger.lost) == (0, 0)
        assert generator.nothing_in_transit()
    else:  # answered in time: expected, and lost until it arrives
        assert (counters["pushes_sent"], counters["pushes_unanswered"]) == (1, 0)
        assert (handset.ledger.expected, handset.ledger.lost) == (1, 1)
        assert not generator.nothing_in_transit()
