"""MQTT gateway of the reference server (interfaces §3), over in-memory streams in virtual
time, with a test client on the project's codec."""
from __future__ import annotations

import json

import pytest
import trio

from pushsdk.protocol import (
    SUBACK_FAILURE,
    Connect,
    Disconnect,
    PubAck,
    Publish,
    PubRel,
    Subscribe,
    Unsubscribe,
    UnsubAck,
    Will,
)
from server_harness import EPOCH, Harness, payload

pytestmark = pytest.mark.timeout(30)


async def setup(harness: Harness, n: int = 1) -> tuple[dict, list[dict]]:
    app = await harness.create_app()
    devices = [await harness.register(app, f"phone-{i}") for i in range(n)]
    return app, devices


# --- CONNECT ---------------------------------------------------------------------------------

async def test_connack_codes(harness: Harness, autojump_clock) -> None:
    app, (device, other) = await setup(harness, 2)
    rid, key, token = device["registration_id"], app["app_key"], device["token"]
    cases = [
        ((rid, key, token), 0),
        ((rid, key, "not-a-token"), 4),
        ((rid, key, None), 4),
        ((rid, None, None), 4),
        ((rid, key, other["token"]), 5),  # someone else's token
        ((other["registration_id"], key, token), 5),
        ((rid, "other-app", token), 5),
        (("", key, token), 2),
    ]
    for (client_id, username, password), code in cases:
        client = harness.mqtt_client()
        connack = await client.connect(client_id, username, password, clean=code == 2)
        assert connack.return_code == code, (client_id, username, password)
        if code:
            await client.expect_closed()
        else:
            await client.send(Disconnect())
            await client.expect_closed()
    stats = harness.server.statistics()
    assert (stats.mqtt_connections_accepted, stats.mqtt_connections_refused) == (1, 7)


async def test_expired_token_gets_4(make_harness, autojump_clock) -> None:
    harness = make_harness(token_ttl=3600)
    app, (device,) = await setup(harness)
    await trio.sleep(3600)
    client = harness.mqtt_client()
    connack = await client.connect(device["registration_id"], app["app_key"], device["token"])
    assert connack.return_code == 4
    fresh = await harness.register(app, "phone-0")  # registering again fixes it
    client, connack = await harness.device_client(app, fresh)
    assert connack.return_code == 0


async def test_will_is_not_authorised(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client = harness.mqtt_client()
    await client.send(Connect(client_id=device["registration_id"], username=app["app_key"],
                              password=device["token"].encode(), clean_session=False,
                              will=Will(topic="anything", payload=b"bye")))
    connack = await client.receive()
    assert connack.return_code == 5


async def test_session_present_is_honest(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)

    async def connect(clean: bool) -> bool:
        client, connack = await harness.device_client(app, device, clean=clean, subscribe=False)
        await client.send(Disconnect())
        await client.expect_closed()
        return connack.session_present

    assert await connect(False) is False  # first persistent session
    assert await connect(False) is True
    assert await connect(True) is False  # clean: discarded
    assert await connect(False) is False  # the clean one left nothing behind
    assert await connect(False) is True


async def test_connection_without_connect_is_closed(harness: Harness, autojump_clock) -> None:
    client = harness.mqtt_client()
    await client.expect_closed()
    assert trio.current_time() == 10.0


# --- ACL -------------------------------------------------------------------------------------

async def test_subscribe_only_to_own_inbox(harness: Harness, autojump_clock) -> None:
    app, (device, other) = await setup(harness, 2)
    client, _ = await harness.device_client(app, device, subscribe=False)
    suback = await client.subscribe(other["inbox"], "push/#", "#", device["inbox"],
                                    f"rcpt/{app['app_key']}/{device['registration_id']}")
    assert suback.return_codes == (SUBACK_FAILURE, SUBACK_FAILURE, SUBACK_FAILURE, 1,
                                   SUBACK_FAILURE)
    # QoS 2 is downgraded to 1; QoS 0 is granted as asked.
    assert (await client.subscribe(device["inbox"], qos=2)).return_codes == (1,)


async def test_publish_outside_rcpt_closes_only_that_connection(harness: Harness,
                                                                autojump_clock) -> None:
    app, (bad, good) = await setup(harness, 2)
    bad_client, _ = await harness.device_client(app, bad)
    good_client, _ = await harness.device_client(app, good)
    await bad_client.send(Publish(topic=good["inbox"], payload=b"spoof", qos=1, packet_id=1))
    await bad_client.expect_closed()
    msg_id = await harness.push_to(app, good, "still here")
    assert payload(await good_client.expect_publish())["msg_id"] == msg_id
    assert harness.server.statistics().mqtt_acl_violations == 1


async def test_qos2_publish_is_refused_by_closing(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    rcpt = f"rcpt/{app['app_key']}/{device['registration_id']}"
    await client.send(Publish(topic=rcpt, payload=b"{}", qos=2, packet_id=3))
    await client.expect_closed()
    client, _ = await harness.device_client(app, device)
    await client.send(PubRel(7))
    await client.expect_closed()


# --- delivery ------------------------------------------------------------------------------

async def test_push_to_online_device(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    await trio.sleep(5)
    r = await harness.push(app, {
        "audience": {"registration_id": [device["registration_id"]]},
        "notification": {"title": "Hello", "body": "World", "extras": {"k": [1]}},
        "message": {"data": {"n": 1}},
        "options": {"ttl": 600, "collapse_key": "news", "priority": "high"},
    })
    msg_id = r.json["msg_id"]
    publish = await client.expect_publish()
    assert (publish.topic, publish.qos, publish.dup, publish.retain) == (
        device["inbox"], 1, False, False)
    assert list(payload(publish)) == ["msg_id", "kind", "notification", "message", "sent_at",
                                      "expires_at", "collapse_key", "priority"]
    assert payload(publish) == {
        "msg_id": msg_id, "kind": "notification",
        "notification": {"title": "Hello", "body": "World", "extras": {"k": [1]}},
        "message": {"data": {"n": 1}}, "sent_at": EPOCH + 5, "expires_at": EPOCH + 605,
        "collapse_key": "news", "priority": "high",
    }
    assert trio.current_time() == 5  # delivered at once
    status = await harness.status(app, msg_id)
    assert (status["delivered"], status["pending"]) == (0, 1)  # sent, not acknowledged
    await client.send(PubAck(publish.packet_id))
    await trio.sleep(0.1)
    status = await harness.status(app, msg_id)
    assert (status["delivered"], status["pending"]) == (1, 0)
    stats = harness.server.statistics()
    assert (stats.messages_delivered, stats.inflight, stats.queue_depth) == (1, 0, 0)


async def test_message_payload_defaults(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    msg_id = await harness.push_to(app, device, [1, "two"])
    assert payload(await client.expect_publish()) == {
        "msg_id": msg_id, "kind": "message", "message": {"data": [1, "two"]},
        "sent_at": EPOCH, "expires_at": EPOCH + 86400, "priority": "normal",
    }


async def test_offline_device_gets_messages_in_order_on_reconnect(harness: Harness,
                                                                  autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    await client.send(Disconnect())
    await client.expect_closed()
    sent = [await harness.push_to(app, device, i) for i in range(25)]
    client, connack = await harness.device_client(app, device)
    assert connack.session_present
    got = await client.publishes(25)
    assert [payload(p)["msg_id"] for p in got] == sent
    assert not any(p.dup for p in got)
    assert await client.nothing_within(60)


async def test_subscription_persists_in_session(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    await client.close()
    msg_id = await harness.push_to(app, device, 1)
    client, connack = await harness.device_client(app, device, subscribe=False)
    assert connack.session_present
    assert payload(await client.expect_publish())["msg_id"] == msg_id  # no SUBSCRIBE needed


async def test_no_delivery_without_subscription(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device, subscribe=False)
    msg_id = await harness.push_to(app, device, 1)
    assert await client.nothing_within(5)
    await client.subscribe(device["inbox"])
    assert payload(await client.expect_publish())["msg_id"] == msg_id
    await client.send(Unsubscribe(9, (device["inbox"],)))
    assert await client.receive() == UnsubAck(9)
    await harness.push_to(app, device, 2)
    assert await client.nothing_within(5)


async def test_unacked_messages_redelivered_with_dup_in_order(harness: Harness,
                                                              autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    sent = [await harness.push_to(app, device, i) for i in range(5)]
    first = await client.publishes(5, ack=False)
    assert [payload(p)["msg_id"] for p in first] == sent
    await client.send(PubAck(first[1].packet_id))  # only the second one is acknowledged
    await trio.sleep(0.1)
    await client.close()  # connection lost

    later = await harness.push_to(app, device, "later")
    client, connack = await harness.device_client(app, device)
    assert connack.session_present
    again = await client.publishes(5)
    assert [payload(p)["msg_id"] for p in again] == [sent[0], *sent[2:], later]
    assert [p.dup for p in again] == [True, True, True, True, False]
    assert await client.nothing_within(30)
    for msg_id in sent:
        assert (await harness.status(app, msg_id))["delivered"] == 1
    assert harness.server.statistics().messages_redelivered == 4


async def test_inflight_window_limits_unacked_messages(make_harness, autojump_clock) -> None:
    harness = make_harness(inflight_window=3)
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    sent = [await harness.push_to(app, device, i) for i in range(7)]
    first = await client.publishes(3, ack=False)
    assert await client.nothing_within(10)
    assert harness.server.statistics().inflight == 3
    await client.send(PubAck(first[0].packet_id))
    (fourth,) = await client.publishes(1, ack=False)
    assert payload(fourth)["msg_id"] == sent[3]
    for p in [*first[1:], fourth]:
        await client.send(PubAck(p.packet_id))
    rest = await client.publishes(3)
    assert [payload(p)["msg_id"] for p in rest] == sent[4:]


async def test_collapse_key_replaces_undelivered_older_push(harness: Harness,
                                                            autojump_clock) -> None:
    app, (device, other) = await setup(harness, 2)
    old = await harness.push_to(app, device, "score 1-0", collapse_key="score")
    unrelated = await harness.push_to(app, device, "hello")
    new = await harness.push_to(app, device, "score 2-0", collapse_key="score")
    other_key = await harness.push_to(app, device, "x", collapse_key="weather")
    client, _ = await harness.device_client(app, device)
    got = await client.publishes(3)
    assert [payload(p)["msg_id"] for p in got] == [unrelated, new, other_key]
    assert await client.nothing_within(10)
    status = await harness.status(app, old)
    assert (status["collapsed"], status["pending"], status["delivered"]) == (1, 0, 0)
    assert harness.server.statistics().messages_collapsed == 1
    # A delivered message is not collapsed again; other devices are not affected.
    newest = await harness.push_to(app, device, "score 3-0", collapse_key="score")
    assert payload((await client.publishes(1))[0])["msg_id"] == newest
    assert (await harness.status(app, new))["delivered"] == 1


async def test_ttl_expiry(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    short = await harness.push_to(app, device, "short", ttl=60)
    long = await harness.push_to(app, device, "long", ttl=3600)
    await trio.sleep(60)  # the short one expires exactly now (expires_at <= now)
    client, _ = await harness.device_client(app, device)
    got = await client.publishes(1)
    assert payload(got[0])["msg_id"] == long
    assert payload(got[0])["expires_at"] == EPOCH + 3600
    assert await client.nothing_within(10)
    status = await harness.status(app, short)
    assert (status["expired"], status["pending"], status["delivered"]) == (1, 0, 0)
    assert harness.server.statistics().messages_expired == 1


async def test_expiry_is_counted_without_the_device_coming_back(harness: Harness,
                                                                autojump_clock) -> None:
    app, (device,) = await setup(harness)
    msg_id = await harness.push_to(app, device, "x", ttl=10)
    assert (await harness.status(app, msg_id))["pending"] == 1
    await trio.sleep(10)
    assert (await harness.status(app, msg_id))["expired"] == 1
    r = await harness.request("GET", "/metrics")
    assert "pushsim_messages_expired_total 1" in r.body.decode().splitlines()


async def test_ttl_zero_only_reaches_devices_online_now(harness: Harness,
                                                        autojump_clock) -> None:
    app, (online, offline) = await setup(harness, 2)
    client, _ = await harness.device_client(app, online)
    r = await harness.push(app, {"audience": "all", "message": {"data": "now"},
                                 "options": {"ttl": 0}})
    msg_id = r.json["msg_id"]
    assert r.json["targets"] == 2
    publish = await client.expect_publish()
    assert payload(publish)["expires_at"] == payload(publish)["sent_at"] == EPOCH
    await client.send(PubAck(publish.packet_id))
    await trio.sleep(1)
    status = await harness.status(app, msg_id)
    assert (status["delivered"], status["expired"], status["pending"]) == (1, 1, 0)
    late, _ = await harness.device_client(app, offline)
    assert await late.nothing_within(10)


async def test_ttl_zero_unacked_expires_when_connection_drops(harness: Harness,
                                                              autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    msg_id = await harness.push_to(app, device, "now", ttl=0)
    await client.expect_publish()
    await client.close()  # gone before acknowledging
    client, _ = await harness.device_client(app, device)
    assert await client.nothing_within(10)
    assert (await harness.status(app, msg_id))["expired"] == 1


async def test_queue_cap_drops_oldest_with_deleted_notice(harness: Harness,
                                                          autojump_clock) -> None:
    app, (device,) = await setup(harness)
    sent = [await harness.push_to(app, device, i) for i in range(105)]
    assert harness.server.statistics().queue_depth == 101  # 100 messages + the notice
    client, _ = await harness.device_client(app, device)
    got = [payload(p) for p in await client.publishes(101)]
    assert [p["msg_id"] for p in got if p["kind"] == "message"] == sent[5:]
    (notice,) = [p for p in got if p["kind"] == "deleted"]
    # One notice, queued when the first message was dropped and grown while unsent.
    assert notice["deleted"] == {"count": 5}
    assert got.index(notice) == 96
    assert notice["msg_id"] not in sent
    assert await client.nothing_within(10)
    assert (await harness.status(app, sent[0]))["dropped"] == 1
    stats = harness.server.statistics()
    assert (stats.messages_dropped, stats.deleted_notices, stats.messages_delivered) == (5, 5, 101)


async def test_deleted_notice_in_flight_is_not_grown(make_harness, autojump_clock) -> None:
    harness = make_harness(queue_cap=2, inflight_window=1)
    app, (device,) = await setup(harness)
    first = [await harness.push_to(app, device, i) for i in range(3)]  # drops first[0]
    client, _ = await harness.device_client(app, device)
    got = [payload(p) for p in await client.publishes(2)]
    assert [p["msg_id"] for p in got] == first[1:]
    notice = await client.expect_publish()  # sent, not acknowledged yet
    assert payload(notice)["deleted"] == {"count": 1}
    later = [await harness.push_to(app, device, i) for i in range(3)]  # drops later[0]
    await client.send(PubAck(notice.packet_id))
    got = [payload(p) for p in await client.publishes(3)]
    assert [p.get("msg_id") for p in got[:2]] == later[1:]
    assert got[2]["kind"] == "deleted" and got[2]["deleted"] == {"count": 1}
    assert got[2]["msg_id"] != payload(notice)["msg_id"]


async def test_receipts_are_recorded(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device)
    msg_id = await harness.push_to(app, device, 1)
    await client.publishes(1)
    rcpt = f"rcpt/{app['app_key']}/{device['registration_id']}"
    await client.send(Publish(topic=rcpt, qos=1, packet_id=11,
                              payload=json.dumps({"msg_id": msg_id, "event": "opened"}).encode()))
    assert await client.receive() == PubAck(11)
    await client.send(Publish(topic=rcpt, qos=0, payload=json.dumps(
        {"msg_id": msg_id, "event": "dismissed"}).encode()))
    # Invalid receipts are acknowledged and ignored, the connection stays up.
    for bad in (b"nope", b'{"msg_id": "x", "event": "opened"}', b'{"msg_id": 1}'):
        await client.send(Publish(topic=rcpt, qos=1, packet_id=12, payload=bad))
        assert await client.receive() == PubAck(12)
    status = await harness.status(app, msg_id)
    assert (status["opened"], status["dismissed"], status["delivered"]) == (1, 1, 1)
    assert harness.server.statistics().receipts == 2


async def test_qos0_subscription_gets_qos0_messages(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device, subscribe=False)
    assert (await client.subscribe(device["inbox"], qos=0)).return_codes == (0,)
    msg_id = await harness.push_to(app, device, 1)
    publish = await client.expect_publish()
    assert publish.qos == 0 and publish.packet_id is None
    await trio.sleep(0.1)
    assert (await harness.status(app, msg_id))["delivered"] == 1


async def test_clean_session_discards_queued_messages(harness: Harness,
                                                      autojump_clock) -> None:
    app, (device,) = await setup(harness)
    msg_id = await harness.push_to(app, device, "old")
    client, connack = await harness.device_client(app, device, clean=True)
    assert not connack.session_present
    assert await client.nothing_within(5)
    assert (await harness.status(app, msg_id))["dropped"] == 1
    fresh = await harness.push_to(app, device, "new")  # delivered while connected
    assert payload(await client.expect_publish())["msg_id"] == fresh


# --- keepalive -------------------------------------------------------------------------------

async def test_keepalive_enforced_at_one_and_a_half_times(harness: Harness,
                                                          autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device, keepalive=10, subscribe=False)
    start = trio.current_time()
    await trio.sleep(14.9)
    await client.ping()
    assert await client.receive() is not None  # PINGRESP
    pinged = trio.current_time()
    await client.expect_closed()
    assert trio.current_time() - pinged == pytest.approx(15.0, abs=1e-9)
    assert pinged - start == pytest.approx(14.9)
    assert harness.server.statistics().mqtt_keepalive_timeouts == 1


async def test_keepalive_zero_means_no_timeout(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device, keepalive=0)
    await trio.sleep(7 * 86400)
    msg_id = await harness.push_to(app, device, 1)
    assert payload(await client.expect_publish())["msg_id"] == msg_id


# --- broken peers ----------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"\xf0\x00",  # reserved packet type
    b"\x82\x05\x00\x01\x00\x00\x01",  # SUBSCRIBE with a truncated topic filter
    b"\x30\xff\xff\xff\xff\x7f",  # remaining length over 4 bytes
    b"\x30\xff\xff\x04" + b"\x00" * 10,  # announces a 65 KiB+ packet: over the limit
])
async def test_malformed_or_oversized_packet_closes_only_that_connection(
        harness: Harness, autojump_clock, garbage: bytes) -> None:
    app, (bad, good) = await setup(harness, 2)
    bad_client, _ = await harness.device_client(app, bad)
    good_client, _ = await harness.device_client(app, good)
    await bad_client.send_raw(garbage)
    await bad_client.expect_closed()
    msg_id = await harness.push_to(app, good, 1)
    assert payload(await good_client.expect_publish())["msg_id"] == msg_id
    assert harness.server.statistics().mqtt_protocol_errors == 1


async def test_other_mqtt_level_gets_connack_1(harness: Harness, autojump_clock) -> None:
    stream = harness.open_stream("handle_mqtt_stream")
    # CONNECT, protocol "MQTT" level 6 (no such version), clean start, keepalive 60, id "abc".
    await stream.send_all(b"\x10\x10\x00\x04MQTT\x06\x02\x00\x3c\x00\x00\x03abc")
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    assert answer == b"\x20\x02\x00\x01"  # CONNACK "unacceptable protocol level", closed


async def test_garbage_before_connect_is_closed(harness: Harness, autojump_clock) -> None:
    client = harness.mqtt_client()
    await client.send_raw(b"GET / HTTP/1.1\r\n\r\n")
    await client.expect_closed()
    assert trio.current_time() == 0


async def test_second_connect_takes_over(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    first, _ = await harness.device_client(app, device)
    msg_id = await harness.push_to(app, device, 1)
    unacked = await first.expect_publish()
    second, connack = await harness.device_client(app, device)
    assert connack.session_present
    await first.expect_closed()
    redelivered = await second.expect_publish()
    assert payload(redelivered)["msg_id"] == msg_id and redelivered.dup
    assert redelivered.packet_id == unacked.packet_id == 1
    await second.send(PubAck(redelivered.packet_id))
    await trio.sleep(1)
    stats = harness.server.statistics()
    assert (stats.sessions, stats.mqtt_takeovers, stats.messages_delivered) == (1, 1, 1)
    newer = await harness.push_to(app, device, 2)
    assert payload(await second.expect_publish())["msg_id"] == newer


async def test_many_devices_broadcast(harness: Harness, autojump_clock) -> None:
    app, devices = await setup(harness, 50)
    clients = [(await harness.device_client(app, d))[0] for d in devices[:40]]
    r = await harness.push(app, {"audience": "all", "message": {"data": "all"}})
    assert r.json["targets"] == 50
    for client in clients:
        await client.publishes(1)
    await trio.sleep(1)
    status = await harness.status(app, r.json["msg_id"])
    assert (status["delivered"], status["pending"]) == (40, 10)
    stats = harness.server.statistics()
    assert (stats.sessions, stats.queue_depth, stats.inflight) == (40, 10, 0)


async def test_subscribe_packet_with_many_filters(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await harness.device_client(app, device, subscribe=False)
    await client.send(Subscribe(5, tuple((f"t/{i}", 1) for i in range(100))))
    suback = await client.receive()
    assert suback.return_codes == (SUBACK_FAILURE,) * 100
