"""Limits on every door (docs/reliability.md): each configurable, each answered the
protocol's way, each counted — and while each is hammered, other devices keep getting their
pushes. Virtual time, in-memory connections with a source address the server is told.
(How much the floods cost other devices in latency is measured by
``power_bench/server_floods.py`` on real sockets.)
"""
from __future__ import annotations

import json
import logging
import re

import pytest
import trio

from pushsdk.protocol import PubAck, Publish
from server_harness import Harness, payload

pytestmark = pytest.mark.timeout(60)

ATTACKER, OTHER = "127.0.0.66", "127.0.0.77"


async def _bystander(harness: Harness) -> tuple[dict, dict, object]:
    app = await harness.create_app("bystander")
    device = await harness.register(app, "innocent")
    client, _ = await harness.device_client(app, device)
    return app, device, client


async def _still_served(harness: Harness, bystander: tuple[dict, dict, object]) -> None:
    app, device, client = bystander
    msg_id = await harness.push_to(app, device, "still here")
    assert payload(await client.expect_publish())["msg_id"] == msg_id  # type: ignore[attr-defined]


async def _timed_statuses(stream, start: float) -> list[tuple[float, int]]:
    """(seconds after ``start``, status) of every HTTP answer read until the server closes."""
    answers: list[tuple[float, int]] = []
    while chunk := await stream.receive_some(65536):
        answers += [(trio.current_time() - start, int(status))
                    for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", chunk)]
    return answers


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
HEALTHZ_LAST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def _pipelined_healthz(harness: Harness, count: int) -> list[tuple[float, int]]:
    """``count`` pipelined ``GET /healthz`` from ATTACKER on one connection, sent at once
    (the last asks to close): the timed answers, as :func:`_timed_statuses`."""
    stream = harness.open_stream("handle_http_stream", ATTACKER)
    start = trio.current_time()
    await stream.send_all(HEALTHZ * (count - 1) + HEALTHZ_LAST)
    return await _timed_statuses(stream, start)


async def test_registrations_per_source_address_and_per_app(make_harness,
                                                            autojump_clock) -> None:
    """Registrations: 3 at once then one a second per address, 6 at once per app over all
    addresses; each refusal a 429 with Retry-After, another device still served."""
    harness = make_harness(registration_rate_per_address=1.0,
                           registration_burst_per_address=3.0,
                           registration_rate_per_app=0.01, registration_burst_per_app=6.0)
    app = await harness.create_app()
    bystander = await _bystander(harness)

    async def register(i: int, peer: str) -> tuple[int, str | None]:
        r = await harness.request("POST", "/v1/devices",
                                  {"device_id": f"d{i}", "platform": "android"},
                                  headers={"X-App-Key": app["app_key"]}, peer=peer)
        return r.status, r.headers.get("retry-after")

    flood = [await register(i, ATTACKER) for i in range(10)]
    assert flood[:3] == [(200, None)] * 3
    assert flood[3:] == [(429, "1")] * 7
    assert (await register(100, OTHER))[0] == 200  # another address: its own bucket
    await _still_served(harness, bystander)
    await trio.sleep(1.0)
    assert (await register(11, ATTACKER))[0] == 200  # one more a second
    # Per app, over all addresses: 6 at once (5 were used above).
    answers = [(await register(200 + i, f"127.0.1.{i}"))[0] for i in range(3)]
    assert answers == [200, 429, 429]
    assert harness.server.statistics().registrations_rate_limited == 9


async def test_receipts_per_device_close_a_flooding_connection(make_harness,
                                                               autojump_clock) -> None:
    harness = make_harness(receipt_rate=1.0, receipt_burst=3.0)
    app = await harness.create_app()
    device = await harness.register(app, "flooder")
    bystander = await _bystander(harness)
    topic = f"rcpt/{app['app_key']}/{device['registration_id']}"
    client, _ = await harness.device_client(app, device)
    receipt = b'{"msg_id": "m", "event": "opened"}'
    for packet_id in range(1, 4):
        await client.send(Publish(topic, receipt, qos=1, packet_id=packet_id))
        assert isinstance(await client.receive(), PubAck)
    await client.send(Publish(topic, receipt, qos=1, packet_id=4))
    await client.expect_closed()  # over the rate: dropped, connection closed
    # The bucket belongs to the device, not to its connection: reconnecting gains nothing.
    client, _ = await harness.device_client(app, device)
    await client.send(Publish(topic, receipt, qos=0))
    await client.expect_closed()
    stats = harness.server.statistics()
    assert stats.receipts_refused == 2 and stats.receipts == 0  # none was for a message
    await _still_served(harness, bystander)
    await trio.sleep(1.0)
    client, _ = await harness.device_client(app, device)
    await client.send(Publish(topic, receipt, qos=1, packet_id=9))
    assert isinstance(await client.receive(), PubAck)


async def test_probe_connections_per_device(make_harness, autojump_clock) -> None:
    harness = make_harness(max_probes_per_device=2)
    app = await harness.create_app()
    device = await harness.register(app, "prober")
    probe_id = device["registration_id"] + "/probe"

    async def probe() -> tuple[object, int]:
        client = harness.mqtt_client()
        connack = await client.connect(probe_id, app["app_key"], device["token"], clean=True)
        return client, connack.return_code

    held = [await probe() for _ in range(2)]
    assert [code for _, code in held] == [0, 0]
    refused, code = await probe()
    assert code == 3  # "server unavailable"
    await refused.expect_closed()  # type: ignore[attr-defined]
    await held[0][0].close()  # type: ignore[attr-defined]
    await trio.sleep(0)
    assert (await probe())[1] == 0  # room again
    assert harness.server.statistics().mqtt_probes_refused == 1


async def test_concurrent_connections_per_source_address(make_harness,
                                                         autojump_clock) -> None:
    harness = make_harness(max_connections_per_address=2)
    app = await harness.create_app()
    device = await harness.register(app, "d")
    held = [harness.http_client(ATTACKER), harness.mqtt_client(ATTACKER)]
    await trio.sleep(0.1)
    over = harness.http_client(ATTACKER)
    r = await over.read_response()
    assert (r.status, r.error_code, r.headers["retry-after"]) == (429, "too_many_connections",
                                                                  "1")
    mqtt_over = harness.mqtt_client(ATTACKER)
    await mqtt_over.expect_closed()  # MQTT 3.1.1: no CONNACK before CONNECT, just a close
    client = harness.mqtt_client(OTHER)  # other addresses are not affected
    assert (await client.connect(device["registration_id"], app["app_key"],
                                 device["token"])).return_code == 0
    stats = harness.server.statistics()
    assert stats.connections_refused_per_address == 2
    for stream in held:
        await stream.close() if hasattr(stream, "close") else None  # type: ignore[func-returns-value]
    await trio.sleep(0.1)
    assert (await harness.request("GET", "/healthz", peer=ATTACKER)).status == 200


async def test_a_log_flood_costs_a_counter(harness: Harness, autojump_clock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """1,000 refused CONNECTs in a second (each logged at info) write at most a burst."""
    from simulator.server.logs import BURST, RATE

    caplog.set_level(logging.INFO, logger="simulator.server.mqtt")
    app = await harness.create_app()
    bystander = await _bystander(harness)
    start = trio.current_time()
    for _ in range(1000):
        client = harness.mqtt_client(ATTACKER)
        assert (await client.connect("x", app["app_key"], "wrong")).return_code == 4
    elapsed = trio.current_time() - start
    refused = [r for r in caplog.records if r.getMessage().startswith("refused CONNECT")]
    assert len(refused) <= BURST + RATE * elapsed + 1
    assert harness.server.statistics().log_records_suppressed >= 1000 - len(refused)
    await trio.sleep(10)
    client = harness.mqtt_client(ATTACKER)
    await client.connect("x", app["app_key"], "wrong")
    last = [r for r in caplog.records if r.getMessage().startswith("refused CONNECT")][-1]
    assert "similar records suppressed" in last.getMessage()  # the flood is reported
    await _still_served(harness, bystander)


async def test_new_connections_and_requests_per_source_address(make_harness,
                                                               autojump_clock) -> None:
    harness = make_harness(connection_rate_per_address=2.0, connection_burst_per_address=3.0,
                           request_rate_per_address=2.0, request_burst_per_address=4.0,
                           request_delay_per_address=0.0)  # refused at once, not paced
    statuses = [(await harness.request("GET", "/healthz", peer=ATTACKER)).status
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # the 4th connection: over the connection rate
    assert (await harness.request("GET", "/healthz", peer=OTHER)).status == 200
    await trio.sleep(1.0)
    client = harness.http_client(ATTACKER)  # two connections' worth refilled
    answers = [await client.request("GET", "/healthz") for _ in range(4)]
    assert [r.status for r in answers] == [200, 200, 200, 429]  # 4 requests in the burst
    assert answers[-1].headers["retry-after"] == "1"
    mqtt = harness.mqtt_client(ATTACKER)
    assert (await mqtt.connect("x", "app", "tok")).return_code == 4  # admitted
    await mqtt.expect_closed()
    over = harness.mqtt_client(ATTACKER)
    await over.expect_closed()  # over the connection rate: closed before CONNECT
    stats = harness.server.statistics()
    assert stats.requests_rate_limited == 1 and stats.connections_refused_per_address == 2


async def test_pipelined_requests_over_the_rate_wait_out_their_retry_after(
        make_harness, autojump_clock) -> None:
    """A client over its address's request rate (with no time to wait for its turn) gets
    one 429 and then nothing of its is read until the Retry-After it was given has passed:
    TCP back-pressure, not a parse and a 429 for every request it has pipelined behind."""
    harness = make_harness(request_rate_per_address=2.0, request_burst_per_address=4.0,
                           request_delay_per_address=0.0)
    bystander = await _bystander(harness)
    answers = await _pipelined_healthz(harness, 20)
    # The burst of 4, one 429 (Retry-After: 1), then each second the 2 tokens that came
    # back and the next request's 429.
    expected = [(0.0, 200)] * 4 + [(0.0, 429)] + [
        (float(second), status) for second in range(1, 6) for status in (200, 200, 429)]
    assert answers == expected
    assert harness.server.statistics().requests_rate_limited == 6  # not 16
    await _still_served(harness, bystander)


async def test_requests_over_the_rate_are_paced_one_per_interval(make_harness,
                                                                 autojump_clock) -> None:
    """Requests over the address's rate wait for their turn (up to the request delay), one
    per 1 / rate: after the burst of 4, pipelined requests at 2/s are answered 0.5 s apart,
    all 200 — an even trickle instead of a burst each second (server_floods: a burst of an
    attacker's requests delayed another app's pushes by 10-20 ms)."""
    harness = make_harness(request_rate_per_address=2.0, request_burst_per_address=4.0,
                           request_delay_per_address=1.0)
    bystander = await _bystander(harness)
    answers = await _pipelined_healthz(harness, 10)
    assert [status for _, status in answers] == [200] * 10
    assert [at for at, _ in answers] == pytest.approx([0.0] * 4 + [0.5 * k for k in range(1, 7)])
    stats = harness.server.statistics()
    assert stats.requests_delayed == 6 and stats.requests_rate_limited == 0
    await _still_served(harness, bystander)


async def test_the_wait_for_a_turn_is_bounded_then_429(make_harness, autojump_clock) -> None:
    """The turns handed out are bounded by the request delay: with the burst spent, three
    connections asking at once get turns 0.5 s and 1.0 s away; the third, 1.5 s away, is
    over the 1 s delay and gets 429 with Retry-After 2 at once."""
    harness = make_harness(request_rate_per_address=2.0, request_burst_per_address=4.0,
                           request_delay_per_address=1.0)
    client = harness.http_client(ATTACKER)
    assert [(await client.request("GET", "/healthz")).status for _ in range(4)] == [200] * 4
    start = trio.current_time()
    results: list[tuple[float, int]] = []

    async def ask() -> None:
        stream = harness.open_stream("handle_http_stream", ATTACKER)
        await stream.send_all(HEALTHZ_LAST)
        results.extend(await _timed_statuses(stream, start))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
    assert sorted(results) == [(0.0, 429), (pytest.approx(0.5), 200), (pytest.approx(1.0), 200)]
    stats = harness.server.statistics()
    assert stats.requests_delayed == 2 and stats.requests_rate_limited == 1


async def test_pipelined_registrations_over_the_rate_wait_too(make_harness,
                                                              autojump_clock) -> None:
    """Pipelined registrations over the address's registration rate wait like requests do:
    3 answered at once, one 429, then nothing read until its Retry-After (1 s) has passed."""
    harness = make_harness(registration_rate_per_address=1.0,
                           registration_burst_per_address=3.0)
    app = await harness.create_app()
    stream = harness.open_stream("handle_http_stream", ATTACKER)
    bodies = [json.dumps({"device_id": f"p{i}", "platform": "android"}).encode()
              for i in range(6)]
    await stream.send_all(b"".join(
        b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nX-App-Key: %s\r\nContent-Length: %d\r\n%s\r\n%s"
        % (app["app_key"].encode(), len(body), b"Connection: close\r\n" if i == 5 else b"",
           body) for i, body in enumerate(bodies)))
    answers = await _timed_statuses(stream, trio.current_time())
    assert answers == [(0.0, 200)] * 3 + [(0.0, 429), (1.0, 200), (1.0, 429)]
