"""simulator.link: simulated TCP connections over in-memory trio streams, in virtual time.

A scripted ``PathHooks`` stands in for the handset's network so each test decides what the
path does (pass, drop, reset, hold) and sees what the path was asked about.
"""
import math
import random

import pytest
import trio
import trio.testing

from simulator.link import SimConnection
from simulator.nat import LinkProfile, Verdict

LATENCY = 0.04


class ScriptedPath:
    """PathHooks whose verdicts the test sets; records every question it is asked."""

    def __init__(self) -> None:
        self.verdict = Verdict.PASS
        self.holding = False
        self.holding_up = False
        self.up: list[tuple[float, int]] = []
        self.down: list[tuple[float, int]] = []
        self.arrivals: list[tuple[float, int]] = []
        self.retries: list[tuple[float, int]] = []
        self.endings: list[str] = []

    def uplink(self, conn, now, nbytes):
        self.up.append((now, nbytes))
        return self.verdict

    def downlink(self, conn, now, nbytes):
        self.down.append((now, nbytes))
        return self.verdict

    def arrived(self, conn, now, nbytes):
        self.arrivals.append((now, nbytes))

    def hold_downlink(self, conn, data):
        return self.holding

    def hold_uplink(self, conn, data):
        return self.holding_up

    def retransmitted(self, conn, now, nbytes):
        self.retries.append((now, nbytes))

    def ended(self, conn, how):
        self.endings.append(how)

    def filter_downlink(self, conn, data):
        return data


def connection(path=None, latency=LATENCY, jitter=None) -> tuple[SimConnection, ScriptedPath]:
    path = path or ScriptedPath()
    return SimConnection(path, latency, jitter), path


async def nothing_arrives(stream, within: float = 1000.0) -> bool:
    """True if ``stream.receive_some`` returns nothing (not even EOF) for ``within`` seconds."""
    with trio.move_on_after(within):
        await stream.receive_some()
        return False
    return True


async def test_bytes_arrive_after_exactly_the_latency_both_ways(sim_clock):
    conn, path = connection()
    await trio.sleep(5)
    await conn.client.send_all(b"CONNECT")
    assert await conn.server.receive_some() == b"CONNECT"
    assert trio.current_time() == pytest.approx(5 + LATENCY, abs=1e-9)
    await conn.server.send_all(b"CONNACK")
    assert await conn.client.receive_some() == b"CONNACK"
    assert trio.current_time() == pytest.approx(5 + 2 * LATENCY, abs=1e-9)
    assert path.up == [(pytest.approx(5), 7)]
    assert path.down == [(pytest.approx(5 + LATENCY), 7)]
    # The handset's radio hears of downlink bytes when they reach it, not when sent.
    assert path.arrivals == [(pytest.approx(5 + 2 * LATENCY), 7)]


async def test_a_receiver_waiting_first_is_woken_by_the_arrival(sim_clock):
    conn, _ = connection()
    got = []

    async def receive():
        got.append((await conn.server.receive_some(), trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.sleep(3)
        await conn.client.send_all(b"late")
    assert got == [(b"late", pytest.approx(3 + LATENCY))]


async def test_receive_until_returns_none_at_the_deadline_or_the_data_before_it(sim_clock):
    conn, path = connection()
    assert await conn.client.receive_until(100, 7.5) is None
    assert trio.current_time() == 7.5
    await conn.server.send_all(b"PINGRESP")  # arrives at 7.54, before the deadline
    assert await conn.client.receive_until(100, 9.0) == b"PINGRESP"
    assert trio.current_time() == pytest.approx(7.5 + LATENCY, abs=1e-9)
    await conn.server.send_all(b"late")  # arrives at 7.58, after this deadline
    assert await conn.client.receive_until(100, 7.56) is None
    assert trio.current_time() == 7.56
    assert await conn.client.receive_some() == b"late"
    assert path.arrivals == [(pytest.approx(7.54), 8), (pytest.approx(7.58), 4)]


async def test_interrupt_ends_a_receive_until_even_without_a_deadline(sim_clock):
    conn, _ = connection()
    got = []

    async def receive(method, *args):
        got.append((method.__name__, await method(*args), trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive, conn.client.receive_until, 100, math.inf)
        await trio.sleep(2)
        conn.client.interrupt()
    assert got == [("receive_until", None, 2.0)]
    conn.client.interrupt()  # nothing under way: the next wait is not ended by it
    got.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive, conn.client.receive_some)
        await trio.sleep(2)
        conn.client.interrupt()  # a receive_some goes on waiting
        await conn.server.send_all(b"x")
    assert got == [("receive_some", b"x", pytest.approx(4 + LATENCY))]


async def test_jitter_never_reorders_segments(sim_clock):
    delays = iter([0.5, 0.1, 0.0, 0.3])
    conn, _ = connection(jitter=lambda now: next(delays))
    for chunk in (b"a", b"b", b"c", b"d"):
        await conn.client.send_all(chunk)
    received = []
    for _ in range(4):
        received.append((await conn.server.receive_some(), trio.current_time()))
    # In order; a segment never overtakes the one before it (TCP delivers in sequence).
    assert [data for data, _ in received] == [b"a", b"b", b"c", b"d"]
    times = [t for _, t in received]
    assert times == sorted(times)
    assert times[0] == pytest.approx(LATENCY + 0.5)
    assert times[-1] == pytest.approx(LATENCY + 0.5)  # held back behind "a", not earlier


async def test_random_jitter_keeps_a_long_stream_in_order(sim_clock):
    jitter = LinkProfile(LATENCY, 0.02).jitter_source(random.Random(7))
    conn, _ = connection(jitter=jitter)
    sent = [f"{k:04d}".encode() for k in range(200)]

    async def sender():
        for chunk in sent:
            await conn.client.send_all(chunk)
            await trio.sleep(0.001)  # closer together than the jitter: naive delays would swap

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        received = b""
        while len(received) < 4 * len(sent):
            received += await conn.server.receive_some()
    assert received == b"".join(sent)


async def test_receive_some_max_bytes_splits_a_segment_without_delay(sim_clock):
    conn, path = connection()
    await conn.server.send_all(b"abcdefghij")
    assert await conn.client.receive_some(4) == b"abcd"
    t_first = trio.current_time()
    assert await conn.client.receive_some(4) == b"efgh"
    assert await conn.client.receive_some() == b"ij"
    assert trio.current_time() == t_first == pytest.approx(LATENCY)
    await conn.server.send_all(b"next")
    assert await conn.client.receive_some(100) == b"next"


async def test_split_reads_tell_the_radio_each_byte_once(sim_clock):
    # The radio meter is fed from ``arrived``: a segment read in pieces arrived once.
    conn, path = connection()
    await conn.server.send_all(b"x" * 10)
    for _ in range(3):
        await conn.client.receive_some(4)
    assert sum(n for _, n in path.arrivals) == 10


async def test_fin_reads_as_end_of_stream(sim_clock):
    conn, path = connection()
    await conn.client.send_all(b"bye")
    await conn.client.aclose()
    assert await conn.server.receive_some() == b"bye"
    assert await conn.server.receive_some() == b""
    assert trio.current_time() == pytest.approx(LATENCY)
    assert path.up[-1][1] == 0  # the FIN went through the path (the radio pays for it)
    with pytest.raises(trio.ClosedResourceError):
        await conn.client.send_all(b"more")
    with pytest.raises(trio.ClosedResourceError):
        await conn.client.receive_some()


async def test_closing_an_end_wakes_its_own_waiting_reader(sim_clock):
    conn, _ = connection()
    async with trio.open_nursery() as nursery:
        async def reader():
            with pytest.raises(trio.ClosedResourceError):
                await conn.client.receive_some()

        nursery.start_soon(reader)
        await trio.sleep(1)
        conn.client.close()


async def test_silent_death_loses_later_segments_both_ways_and_the_fin(sim_clock):
    conn, path = connection()
    await conn.client.send_all(b"alive")
    assert await conn.server.receive_some() == b"alive"
    conn.kill_silently(trio.current_time())
    assert not conn.alive
    assert conn.dead_since == pytest.approx(LATENCY)
    await conn.client.send_all(b"ping")  # no error: the sender cannot know
    await conn.server.send_all(b"push")
    assert await nothing_arrives(conn.server, 1000)
    assert await nothing_arrives(conn.client, 1000)
    await conn.client.aclose()  # its FIN vanishes too: the server is never told
    assert await nothing_arrives(conn.server, 1000)
    # The radio still transmitted the uplink segments (the path decides after the radio).
    assert [n for _, n in path.up] == [5, 4, 0]


async def test_kill_keeps_the_first_death_time(sim_clock):
    conn, _ = connection()
    conn.kill_silently(10.0)
    conn.kill_silently(20.0)
    assert conn.dead_since == 10.0


async def test_a_drop_verdict_loses_that_segment_only(sim_clock):
    conn, path = connection()
    path.verdict = Verdict.DROP
    await conn.client.send_all(b"lost")
    path.verdict = Verdict.PASS
    await conn.client.send_all(b"kept")
    assert await conn.server.receive_some() == b"kept"


async def test_reset_breaks_both_ends(sim_clock):
    conn, _ = connection()
    await conn.server.send_all(b"in flight")
    conn.reset()
    assert not conn.alive
    for end in (conn.client, conn.server):
        with pytest.raises(trio.BrokenResourceError):
            await end.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await end.send_all(b"x")
    conn.client.close()  # closing a reset end sends nothing and does not raise


async def test_a_reset_verdict_on_a_ping_breaks_the_waiting_reader(sim_clock):
    # NAT with RST behaviour: the first segment after expiry is answered with a reset.
    conn, path = connection()
    async with trio.open_nursery() as nursery:
        async def reader():
            with pytest.raises(trio.BrokenResourceError):
                await conn.client.receive_some()
            assert trio.current_time() == pytest.approx(300.0)

        nursery.start_soon(reader)
        await trio.sleep(300)
        path.verdict = Verdict.RESET
        await conn.client.send_all(b"\xc0\x00")  # PINGREQ
    with pytest.raises(trio.BrokenResourceError):
        await conn.server.receive_some()


async def test_held_downlink_goes_through_at_the_senders_next_retransmission(sim_clock):
    conn, path = connection()
    path.holding = True  # Doze: the device's firewall keeps our traffic out
    await conn.server.send_all(b"push-1")
    await conn.server.send_all(b"push-2")
    assert conn.held.segments == [b"push-1", b"push-2"]
    assert await nothing_arrives(conn.client, 100)
    path.holding = False
    conn.release()
    # The server's TCP resends at 1, 3, 7, ..., 63, 127 s (RFC 6298, doubling from 1 s):
    # the first try after the door opened at 100 s is the one at 127 s.
    assert await conn.client.receive_some() == b"push-1"
    assert trio.current_time() == pytest.approx(127 + LATENCY)
    assert await conn.client.receive_some() == b"push-2"
    assert conn.held is None


async def test_a_sender_held_past_its_last_retry_gives_up(sim_clock):
    conn, path = connection()
    path.holding = True
    await conn.server.send_all(b"push")
    # 15 retries (1 + 2 + ... + 64, then 120 s each) and one more RTO: 1,207 s.
    await trio.sleep(1206)
    assert conn.held is not None
    await trio.sleep(2)
    assert conn.held is None
    with pytest.raises(trio.BrokenResourceError):
        await conn.server.send_all(b"more")  # the server's TCP aborted (ETIMEDOUT)
    path.holding = False
    conn.release()
    # The client is not told; its next segment meets the server host's RST.
    await conn.client.send_all(b"ping")
    with pytest.raises(trio.BrokenResourceError):
        await conn.client.receive_some()


async def test_held_uplink_never_reaches_the_radio_until_released(sim_clock):
    conn, path = connection()
    path.holding_up = True  # Doze blocks the app's network in both directions
    await conn.client.send_all(b"puback")
    assert path.up == []  # the firewall kept it from the radio
    await trio.sleep(5)
    path.holding_up = False
    conn.release()
    assert await conn.server.receive_some() == b"puback"
    assert path.up == [(pytest.approx(7.0), 6)]  # sent again at the 7 s retry
    assert trio.current_time() == pytest.approx(7.0 + LATENCY)


async def test_a_segment_into_a_dead_path_is_retransmitted_until_the_app_closes(sim_clock):
    conn, path = connection()
    conn.kill_silently(0.0)
    await conn.client.send_all(b"\xc0\x00")
    await trio.sleep(10)  # the SDK's ping timeout
    conn.client.close()
    await trio.sleep(100)
    assert [t for t, _ in path.retries] == pytest.approx([1.0, 3.0, 7.0])
    assert path.endings == ["closed"]


async def test_lost_tries_delay_delivery_by_the_backoff_and_cost_the_radio(sim_clock):
    draws = iter([0.0, 0.0, 0.9])  # two tries lost, the third gets through
    conn = SimConnection(ScriptedPath(), LATENCY, loss=0.5, loss_draw=lambda: next(draws))
    path = conn.hooks
    await conn.client.send_all(b"data")
    assert await conn.server.receive_some() == b"data"
    assert trio.current_time() == pytest.approx(3.0 + LATENCY)
    assert [t for t, _ in path.retries] == pytest.approx([1.0, 3.0])


async def test_uplink_is_not_held_by_a_downlink_hold(sim_clock):
    conn, path = connection()
    path.holding = True
    await conn.client.send_all(b"puback")
    assert await conn.server.receive_some() == b"puback"


async def test_release_of_a_dead_connection_delivers_nothing(sim_clock):
    conn, path = connection()
    path.holding = True
    await conn.server.send_all(b"push")
    await trio.sleep(100)
    conn.kill_silently(trio.current_time())
    conn.release()
    assert await nothing_arrives(conn.client, 1000)


async def test_release_with_nothing_held_is_harmless(sim_clock):
    conn, _ = connection()
    conn.release()
    await conn.server.send_all(b"ok")
    assert await conn.client.receive_some() == b"ok"


async def test_data_let_through_never_overtakes_held_data(sim_clock):
    # Doze holds a normal push; a high-priority one right behind it is let through (and
    # opens a grant that releases the first). TCP delivers a byte stream in order: the
    # second write cannot reach the app before the first.
    conn, path = connection()
    path.holding = True
    await conn.server.send_all(b"normal")
    path.holding = False
    await conn.server.send_all(b"high")
    conn.release(immediate=True)
    received = b""
    while len(received) < len(b"normalhigh"):
        received += await conn.client.receive_some()
    assert received == b"normalhigh"


async def test_each_end_passes_trios_half_closeable_stream_checks(sim_clock):
    async def stream_maker():
        conn, _ = connection()
        return conn.client, conn.server

    # No clogged_stream_maker: the path has no send buffer to fill, nothing ever clogs.
    await trio.testing.check_half_closeable_stream(stream_maker, None)


async def test_reading_after_eof_keeps_returning_eof(sim_clock):
    conn, _ = connection()
    await conn.client.send_eof()
    assert await conn.server.receive_some() == b""
    assert await conn.server.receive_some() == b""
    await conn.server.send_all(b"still open this way")
    assert await conn.client.receive_some() == b"still open this way"
    with pytest.raises(trio.ClosedResourceError):
        await conn.client.send_all(b"after eof")
