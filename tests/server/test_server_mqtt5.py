"""MQTT 5.0 devices on the reference server (interfaces §3, docs/server.md "MQTT 5.0"), over
in-memory streams in virtual time, with a 5.0 test client on the project's codec.

The 3.1.1 behaviour is test_server_mqtt.py's; this file checks what 5.0 adds or says
differently: reason codes with Reason Strings, Message Expiry Interval, user properties,
Receive Maximum, Session Expiry, Server Keep Alive, DISCONNECT before the server closes.
"""
from __future__ import annotations

from typing import Any

import pytest
import trio

from pushsdk.protocol import (
    ConnAck,
    ConnectionClosed,
    Disconnect,
    PubAck,
    Properties,
    Publish,
    ReasonCode,
    Subscribe,
    SubscriptionOptions,
    Unsubscribe,
    UnsubAck,
)
from server_harness import Harness, MqttTestClient, payload

pytestmark = pytest.mark.timeout(30)
PERSISTENT = Properties(session_expiry_interval=0xFFFFFFFF)


async def setup(harness: Harness, n: int = 1) -> tuple[dict[str, str], list[dict[str, Any]]]:
    app = await harness.create_app()
    return app, [await harness.register(app, f"phone-{i}") for i in range(n)]


async def connect5(harness: Harness, app: dict[str, str], device: dict[str, Any], *,
                   properties: Properties = PERSISTENT, subscribe: bool = True,
                   **kw: Any) -> tuple[MqttTestClient, ConnAck]:
    return await harness.device_client(app, device, version=5, properties=properties,
                                       subscribe=subscribe, **kw)


async def refused(harness: Harness, client_id: str, username: str | None,
                  password: str | None, peer: str | None = None) -> ConnAck:
    client = harness.mqtt_client(peer, version=5)
    connack = await client.connect(client_id, username, password)
    await client.expect_closed()
    return connack


async def expect_disconnect(client: MqttTestClient) -> Disconnect:
    event = await client.receive()
    assert isinstance(event, Disconnect), event
    await client.expect_closed()
    return event


# --- CONNECT ---------------------------------------------------------------------------------

async def test_refusals_are_reason_codes_with_reason_strings(harness: Harness,
                                                            autojump_clock) -> None:
    app, (device, other) = await setup(harness, 2)
    rid, key, token = device["registration_id"], app["app_key"], device["token"]
    cases = [
        ((rid, key, "not-a-token"), ReasonCode.BAD_USER_NAME_OR_PASSWORD, "register again"),
        ((rid, key, None), ReasonCode.BAD_USER_NAME_OR_PASSWORD, "required"),
        ((rid, key, other["token"]), ReasonCode.NOT_AUTHORIZED, "another device"),
        ((rid, "other-app", token), ReasonCode.NOT_AUTHORIZED, "another device"),
        (("", key, token), ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "registration id"),
    ]
    for (client_id, username, password), code, words in cases:
        connack = await refused(harness, client_id, username, password)
        assert connack.reason_code == code, (client_id, username, password)
        assert words in (connack.properties.reason_string or ""), connack
    assert harness.server.statistics().mqtt_connections_refused == len(cases)


async def test_a_deleted_device_gets_0x87_and_an_expired_token_0x86(make_harness,
                                                                    autojump_clock) -> None:
    harness = make_harness(token_ttl=3600)
    app, (device, other) = await setup(harness, 2)
    client, _ = await connect5(harness, app, device)
    r = await harness.request("DELETE", f"/v1/devices/{device['registration_id']}",
                              headers={"Authorization": f"Bearer {device['token']}"})
    assert r.status == 200
    # The connected session is told why before it is closed.
    farewell = await expect_disconnect(client)
    assert farewell.reason_code == ReasonCode.NOT_AUTHORIZED
    # Its token belonged to a device that is gone: "not authorised" (0x87; registering
    # again would not help), while 3.1.1 keeps CONNACK 4.
    connack = await refused(harness, device["registration_id"], app["app_key"], device["token"])
    assert connack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert "unregistered" in (connack.properties.reason_string or "")
    client311 = harness.mqtt_client()
    connack = await client311.connect(device["registration_id"], app["app_key"],
                                      device["token"])
    assert connack.return_code == 4
    await trio.sleep(3600)  # the other device's token expired: 0x86, register again
    connack = await refused(harness, other["registration_id"], app["app_key"], other["token"])
    assert connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


async def test_will_and_enhanced_auth_are_not_authorised(harness: Harness,
                                                         autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client = harness.mqtt_client(version=5)
    connack = await client.connect(device["registration_id"], app["app_key"], device["token"],
                                   properties=Properties(authentication_method="SCRAM"))
    assert connack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert "enhanced authentication" in (connack.properties.reason_string or "")


async def test_accepted_connack_declares_what_the_server_does(harness: Harness,
                                                              autojump_clock) -> None:
    app, (device,) = await setup(harness)
    _, connack = await connect5(harness, app, device, subscribe=False)
    props = connack.properties
    assert connack.reason_code == 0 and not connack.session_present
    assert (props.maximum_qos, props.retain_available, props.maximum_packet_size,
            props.subscription_identifier_available) == (1, False, 65536, False)
    assert props.server_keep_alive is None  # no maximum configured


async def test_server_keep_alive_caps_the_keepalive(make_harness, autojump_clock) -> None:
    harness = make_harness(max_keepalive=100)
    app, (device,) = await setup(harness)
    client, connack = await connect5(harness, app, device, keepalive=600)
    assert connack.properties.server_keep_alive == 100
    start = trio.current_time()
    farewell = await expect_disconnect(client)  # silent: held to 1.5 x 100 s, not 600 s
    assert trio.current_time() - start == pytest.approx(150)
    assert farewell.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    # A keepalive under the maximum is kept and not echoed; 3.1.1 clients keep theirs.
    _, connack = await connect5(harness, app, device, keepalive=60)
    assert connack.properties.server_keep_alive is None
    client311, _ = await harness.device_client(app, device, keepalive=600)
    assert await client311.nothing_within(500)


async def test_takeover_tells_the_old_connection_0x8e(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    old, _ = await connect5(harness, app, device)
    new, connack = await connect5(harness, app, device, subscribe=False)
    assert connack.session_present
    farewell = await expect_disconnect(old)
    assert farewell.reason_code == ReasonCode.SESSION_TAKEN_OVER
    msg_id = await harness.push_to(app, device, "after")
    assert payload(await new.expect_publish())["msg_id"] == msg_id


# --- pushes ----------------------------------------------------------------------------------

async def test_push_properties_and_expiry_counting_down(harness: Harness,
                                                        autojump_clock) -> None:
    app, (device,) = await setup(harness)
    msg_id = await harness.push_to(app, device, {"n": 1}, ttl=100)
    await trio.sleep(30)  # stored for 30 s: 70 s of its TTL are left
    client, _ = await connect5(harness, app, device)
    publish = await client.expect_publish()
    props = publish.properties
    assert props.message_expiry_interval == 70
    assert props.user_properties == (("msg_id", msg_id), ("kind", "message"))
    assert (props.payload_format_indicator, props.content_type) == (1, "application/json")
    assert payload(publish)["msg_id"] == msg_id and publish.qos == 1
    await client.send(PubAck(publish.packet_id))
    note = await harness.push(app, {"audience": "all",
                                    "notification": {"title": "t", "body": "b"}})
    publish = await client.expect_publish()
    assert publish.properties.user_properties == (("msg_id", note.json["msg_id"]),
                                                  ("kind", "notification"))
    assert publish.properties.message_expiry_interval == 86400
    await client.send(PubAck(publish.packet_id))
    assert (await harness.status(app, msg_id))["delivered"] == 1


async def test_never_delivered_with_under_a_second_left(harness: Harness,
                                                        autojump_clock) -> None:
    app, (device,) = await setup(harness)
    late = await harness.push_to(app, device, "late", ttl=10)
    fine = await harness.push_to(app, device, "fine", ttl=20)
    await trio.sleep(9.5)
    client, _ = await connect5(harness, app, device)
    publish = await client.expect_publish()
    assert payload(publish)["msg_id"] == fine
    assert publish.properties.message_expiry_interval == 10
    assert await client.nothing_within(5)
    assert (await harness.status(app, late))["expired"] == 1


async def test_ttl_0_goes_without_an_expiry_interval(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device)
    msg_id = await harness.push_to(app, device, "now", ttl=0)
    publish = await client.expect_publish()
    assert payload(publish)["msg_id"] == msg_id
    assert publish.properties.message_expiry_interval is None


async def test_receive_maximum_is_respected(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    ids = [await harness.push_to(app, device, i) for i in range(5)]
    client, _ = await connect5(harness, app, device, properties=Properties(
        session_expiry_interval=0xFFFFFFFF, receive_maximum=2))
    first = [await client.expect_publish() for _ in range(2)]
    assert await client.nothing_within(10)  # 2 unacknowledged: the device's maximum
    await client.send(PubAck(first[0].packet_id))
    third = await client.expect_publish()
    assert await client.nothing_within(10)
    got = [payload(p)["msg_id"] for p in (*first, third)]
    for p in (first[1], third):
        await client.send(PubAck(p.packet_id))
    got += [payload(p)["msg_id"] for p in await client.publishes(2)]
    assert got == ids


# --- sessions --------------------------------------------------------------------------------

async def test_session_expiry_0_ends_at_disconnect(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device, properties=Properties())
    await client.send(Disconnect())
    await client.expect_closed()
    msg_id = await harness.push_to(app, device, "while away")
    client, connack = await connect5(harness, app, device, subscribe=False)
    assert not connack.session_present
    assert await client.nothing_within(5)  # no subscription: nothing is sent before one
    await client.subscribe(device["inbox"])
    assert payload(await client.expect_publish())["msg_id"] == msg_id


async def test_persistent_session_is_kept_for_its_interval(harness: Harness,
                                                          autojump_clock) -> None:
    app, (device,) = await setup(harness)
    minute = Properties(session_expiry_interval=60)
    client, _ = await connect5(harness, app, device, properties=minute)
    await client.send(Disconnect())
    await client.expect_closed()
    kept = await harness.push_to(app, device, "kept")
    await trio.sleep(59)
    client, connack = await connect5(harness, app, device, properties=minute, subscribe=False)
    assert connack.session_present
    publish = await client.expect_publish()  # the stored subscription: no SUBSCRIBE needed
    assert payload(publish)["msg_id"] == kept
    await client.send(PubAck(publish.packet_id))
    await client.send(Disconnect())
    await client.expect_closed()
    lost = await harness.push_to(app, device, "lost with the session")
    await trio.sleep(61)
    client, connack = await connect5(harness, app, device, properties=minute, subscribe=False)
    assert not connack.session_present
    assert (await harness.status(app, lost))["dropped"] == 1
    assert harness.server.statistics().messages_discarded == 1


async def test_disconnect_may_change_the_session_expiry(harness: Harness,
                                                        autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device, properties=Properties(
        session_expiry_interval=3600))
    await client.send(Disconnect(properties=Properties(session_expiry_interval=0)))
    await client.expect_closed()
    _, connack = await connect5(harness, app, device, subscribe=False)
    assert not connack.session_present


async def test_clean_start_discards_the_queue(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device)
    await client.close()
    msg_id = await harness.push_to(app, device, "discarded")
    _, connack = await connect5(harness, app, device, clean=True)
    assert not connack.session_present
    assert (await harness.status(app, msg_id))["dropped"] == 1


# --- subscriptions and publishing -----------------------------------------------------------

async def test_suback_and_unsuback_reason_codes(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device, subscribe=False)
    inbox = device["inbox"]
    await client.send(Subscribe(1, ((inbox, SubscriptionOptions(2, no_local=True)),
                                    (f"push/{app['app_key']}/+", 1), ("#", 0))))
    suback = await client.receive()
    assert suback.reason_codes == (1, ReasonCode.NOT_AUTHORIZED, ReasonCode.NOT_AUTHORIZED)
    await client.send(Unsubscribe(2, (inbox, "other/topic")))
    unsuback = await client.receive()
    assert isinstance(unsuback, UnsubAck)
    assert unsuback.reason_codes == (ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED)


async def test_receipts_and_acl(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device)
    msg_id = await harness.push_to(app, device, "x")
    publish = await client.expect_publish()
    await client.send(PubAck(publish.packet_id))
    rcpt = f"rcpt/{app['app_key']}/{device['registration_id']}"
    await client.send(Publish(rcpt, b"not json", qos=1, packet_id=7))
    ack = await client.receive()
    assert (ack.packet_id, ack.reason_code) == (7, ReasonCode.PAYLOAD_FORMAT_INVALID)
    body = b'{"msg_id": "%s", "event": "opened"}' % msg_id.encode()
    await client.send(Publish(rcpt, body, qos=1, packet_id=8))
    ack = await client.receive()
    assert (ack.packet_id, ack.reason_code) == (8, ReasonCode.SUCCESS)
    await client.send(Publish(device["inbox"], b"{}", qos=0))
    farewell = await expect_disconnect(client)
    assert farewell.reason_code == ReasonCode.NOT_AUTHORIZED
    assert (await harness.status(app, msg_id))["opened"] == 1


async def test_qos_2_is_refused_by_maximum_qos(harness: Harness, autojump_clock) -> None:
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device)
    rcpt = f"rcpt/{app['app_key']}/{device['registration_id']}"
    # The codec refuses to send what the CONNACK forbade; a hostile client sends bytes.
    await client.send_raw(b"\x34" + bytes([2 + len(rcpt) + 2 + 1 + 2])
                          + len(rcpt).to_bytes(2, "big") + rcpt.encode() + b"\x00\x01\x00{}")
    farewell = await expect_disconnect(client)
    assert farewell.reason_code == ReasonCode.QOS_NOT_SUPPORTED


# --- limits ----------------------------------------------------------------------------------

async def test_receipt_flood_is_message_rate_too_high(make_harness, autojump_clock) -> None:
    harness = make_harness(receipt_rate=1.0, receipt_burst=3.0)
    app, (device,) = await setup(harness)
    client, _ = await connect5(harness, app, device)
    rcpt = f"rcpt/{app['app_key']}/{device['registration_id']}"
    for _ in range(4):
        await client.send(Publish(rcpt, b'{"msg_id": "m", "event": "opened"}', qos=0))
    farewell = await expect_disconnect(client)
    assert farewell.reason_code == ReasonCode.MESSAGE_RATE_TOO_HIGH


async def test_admission_and_probe_limits(make_harness, autojump_clock) -> None:
    harness = make_harness(connect_rate=1.0, connect_burst=1.0, max_probes_per_device=1)
    app, (device,) = await setup(harness)
    rid = device["registration_id"]
    probe = harness.mqtt_client(version=5)
    assert (await probe.connect(rid + "/probe", app["app_key"], device["token"])).reason_code == 0
    connack = await refused(harness, rid, app["app_key"], device["token"])
    assert connack.reason_code == ReasonCode.SERVER_BUSY  # 3.1.1: 3
    await trio.sleep(1)
    connack = await refused(harness, rid + "/probe", app["app_key"], device["token"])
    assert connack.reason_code == ReasonCode.QUOTA_EXCEEDED  # 3.1.1: 3
    assert "probe" in (connack.properties.reason_string or "")


async def test_per_address_limits_are_told_to_5_0_clients(make_harness,
                                                         autojump_clock) -> None:
    harness = make_harness(connection_rate_per_address=1.0, connection_burst_per_address=2.0,
                           max_connections_per_address=2)
    app, (device,) = await setup(harness)
    held = [harness.mqtt_client("10.0.0.1", version=5) for _ in range(2)]
    await trio.sleep(0)  # their handlers run (and count them) before the next one starts
    connack = await refused(harness, "x", "y", "z", peer="10.0.0.1")
    assert connack.reason_code == ReasonCode.QUOTA_EXCEEDED  # holds 2 already
    for client in held:
        await client.close()
    await trio.sleep(0.1)
    connack = await refused(harness, "x", "y", "z", peer="10.0.0.1")
    assert connack.reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED  # 2 in 0.1 s
    # A 3.1.1 client over the same limit is closed without a word (it has no such CONNACK).
    client = harness.mqtt_client("10.0.0.1")
    await client.send_raw(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x")
    assert isinstance(await client.receive(), ConnectionClosed)
