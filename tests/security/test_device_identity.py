"""Device identity on the reference server (docs/security.md, "Device identity"): a
registration is bound to the device's Ed25519 key; registering the same device id again
needs a signed challenge (or, for a registration from before keys, one of its own
tokens); re-registration revokes older tokens after a grace; DELETE unregisters.

Everything runs over in-memory HTTP/MQTT connections in virtual time, with real Ed25519
keys (``cryptography``) standing in for the SDK and for an attacker who knows the public
app key and the victim's device id.
"""
from __future__ import annotations

from typing import Any

import pytest
import trio

from server_harness import DeviceKey, Harness, basic, payload

pytestmark = pytest.mark.timeout(30)


async def _challenge(harness: Harness, app: dict, device_id: str, **fields: Any) -> str:
    r = await harness.register_raw(app, {"device_id": device_id, "platform": "android",
                                         **fields})
    assert r.status == 401, r
    assert r.error_code == "proof_required"
    assert r.json["challenge_expires_in"] == 60
    assert "token" not in r.json and "registration_id" not in r.json
    return r.json["challenge"]


async def _answer(harness: Harness, app: dict, device_id: str, key: DeviceKey,
                  challenge: str, **fields: Any):
    return await harness.register_raw(app, {
        "device_id": device_id, "platform": "android", "device_key": key.public,
        "proof": key.proof(app["app_key"], device_id, challenge), **fields})


def _tokens(harness: Harness) -> int:
    (n,) = harness.server.store._db.execute("SELECT COUNT(*) FROM tokens").fetchone()
    return n


async def test_a_known_device_id_needs_the_bound_key(harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    victim = await harness.register(app, "victim-phone")
    key = harness.key_of(app, "victim-phone")
    tokens = _tokens(harness)
    attacker = DeviceKey()

    # Knowing the app key and the device id is not proof: a challenge, no token.
    challenge = await _challenge(harness, app, "victim-phone", device_key=attacker.public)
    # Signed by another key: 403, and the challenge is used up.
    r = await _answer(harness, app, "victim-phone", attacker, challenge)
    assert (r.status, r.error_code) == (403, "device_bound")
    r = await _answer(harness, app, "victim-phone", key, challenge)
    assert (r.status, r.error_code) == (403, "device_bound")  # single use
    # Garbage proofs, a bearer token that is not the device's, a new key: all refused.
    challenge = await _challenge(harness, app, "victim-phone")
    r = await harness.register_raw(app, {
        "device_id": "victim-phone", "platform": "android",
        "proof": {"challenge": challenge, "signature": "A" * 86}})
    assert (r.status, r.error_code) == (403, "device_bound")
    r = await harness.register_raw(app, {"device_id": "victim-phone", "platform": "ios"},
                                   headers={"Authorization": "Bearer forged"})
    assert (r.status, r.error_code) == (401, "proof_required")  # a bound device: key only
    assert _tokens(harness) == tokens  # no token was issued for the victim's registration
    assert harness.server.statistics().devices == 1  # and no second registration made

    # The real device proves itself: the same registration, a fresh token.
    challenge = await _challenge(harness, app, "victim-phone")
    r = await _answer(harness, app, "victim-phone", key, challenge)
    assert r.status == 200 and r.json["registration_id"] == victim["registration_id"]
    assert r.json["token"] != victim["token"]
    # Bound to its key: another key with a valid proof of the old one is refused.
    challenge = await _challenge(harness, app, "victim-phone")
    r = await harness.register_raw(app, {
        "device_id": "victim-phone", "platform": "android", "device_key": attacker.public,
        "proof": key.proof(app["app_key"], "victim-phone", challenge)})
    assert (r.status, r.error_code) == (403, "device_bound")


async def test_challenges_expire_and_only_the_newest_few_stay_valid(
        harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    await harness.register(app, "phone")
    key = harness.key_of(app, "phone")

    old = await _challenge(harness, app, "phone")
    await trio.sleep(60.0)  # expired exactly at 60 s
    r = await _answer(harness, app, "phone", key, old)
    assert (r.status, r.error_code) == (403, "device_bound")

    flood = [await _challenge(harness, app, "phone") for _ in range(50)]
    (held,) = harness.server.store._db.execute(
        "SELECT COUNT(*) FROM challenges").fetchone()
    assert held == harness.server.settings.max_challenges_per_device == 4
    r = await _answer(harness, app, "phone", key, flood[-5])  # pushed out by newer ones
    assert r.status == 403
    r = await _answer(harness, app, "phone", key, flood[-1])
    assert r.status == 200


async def test_an_unbound_registration_is_proven_by_its_own_token_and_then_bound(
        make_harness, autojump_clock) -> None:
    harness = make_harness(token_ttl=3600)
    app = await harness.create_app()
    legacy = await harness.register_raw(app, {"device_id": "old-phone", "platform": "ios"})
    assert legacy.status == 200  # registered without a key, as before this change
    other = await harness.register(app, "someone-else")
    key = DeviceKey()
    await trio.sleep(7200)  # its token expired: still good as a proof, not for MQTT
    body = {"device_id": "old-phone", "platform": "ios", "device_key": key.public}
    r = await harness.register_raw(app, body,
                                   headers={"Authorization": f"Bearer {other['token']}"})
    assert (r.status, r.error_code) == (403, "device_bound")
    r = await harness.register_raw(
        app, body, headers={"Authorization": f"Bearer {legacy.json['token']}"})
    assert r.status == 200 and r.json["registration_id"] == legacy.json["registration_id"]
    # Now bound: tokens prove nothing any more; the key does.
    r = await harness.register_raw(app, body,
                                   headers={"Authorization": f"Bearer {r.json['token']}"})
    assert (r.status, r.error_code) == (401, "proof_required")
    r = await _answer(harness, app, "old-phone", key, r.json["challenge"])
    assert r.status == 200


async def test_re_registration_revokes_older_tokens_and_their_sessions_after_the_grace(
        harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    first = await harness.register(app, "phone")
    client, _ = await harness.device_client(app, first, keepalive=0)
    probe = harness.mqtt_client()
    assert (await probe.connect(first["registration_id"] + "/probe", app["app_key"],
                                first["token"], clean=True, keepalive=0)).return_code == 0
    start = trio.current_time()
    second = await harness.register(app, "phone")
    await client.expect_closed()
    await probe.expect_closed()
    assert trio.current_time() - start == 300.0  # token_grace
    assert harness.server.statistics().mqtt_sessions_revoked == 2
    refused = harness.mqtt_client()
    assert (await refused.connect(first["registration_id"], app["app_key"],
                                  first["token"])).return_code == 4
    client, _ = await harness.device_client(app, second)  # the new token works
    msg_id = await harness.push_to(app, second, "after")
    assert payload(await client.expect_publish())["msg_id"] == msg_id


async def test_a_session_on_a_token_in_its_grace_ends_when_the_grace_does(
        harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    first = await harness.register(app, "phone")
    await harness.register(app, "phone")
    await trio.sleep(100.0)
    client, _ = await harness.device_client(app, first, keepalive=0)  # 200 s left
    await client.expect_closed()
    assert trio.current_time() == pytest.approx(300.0)


async def test_delete_unregisters_at_once(harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    device = await harness.register(app, "phone")
    rid = device["registration_id"]
    client, _ = await harness.device_client(app, device)
    await client.close()
    queued = await harness.push_to(app, device, "waiting")
    client, _ = await harness.device_client(app, device)
    await client.publishes(1, ack=False)  # in flight, then the device is deleted
    own = {"Authorization": f"Bearer {device['token']}"}
    start = trio.current_time()
    r = await harness.request("DELETE", f"/v1/devices/{rid}", headers=own)
    assert (r.status, r.json) == (200, {})
    await client.expect_closed()
    assert trio.current_time() == start  # closed at once
    r = await harness.request("PUT", f"/v1/devices/{rid}", {"alias": "x"}, headers=own)
    assert r.status == 401
    assert (await harness.mqtt_client().connect(rid, app["app_key"], device["token"])
            ).return_code == 4
    status = await harness.status(app, queued)
    assert (status["pending"], status["dropped"]) == (0, 1)
    r = await harness.push(app, {"audience": {"registration_id": [rid]},
                                 "message": {"data": 1}})
    assert r.json["targets"] == 0  # nothing more is queued for it
    # The device id is free again: a new registration, with a new id.
    harness.keys.pop((app["app_key"], "phone"))
    again = await harness.register(app, "phone")
    assert again["registration_id"] != rid


async def test_delete_by_the_app_server_or_the_admin_and_nobody_else(
        harness: Harness, autojump_clock) -> None:
    app, other_app = await harness.create_app(), await harness.create_app("other")
    a = await harness.register(app, "a")
    b = await harness.register(app, "b")
    c = await harness.register(app, "c")
    cases = [  # (headers, registration, status)
        ({}, a, 401),
        ({"Authorization": "Bearer forged"}, a, 401),
        ({"Authorization": f"Bearer {b['token']}"}, a, 403),  # another device's token
        (basic(other_app), a, 404),  # another app's master secret
        ({"X-App-Key": app["app_key"]}, a, 401),  # the public app key is no credential
    ]
    for headers, device, status in cases:
        r = await harness.request("DELETE", f"/v1/devices/{device['registration_id']}",
                                  headers=headers)
        assert r.status == status, (headers, r)
    assert harness.server.statistics().devices == 3
    r = await harness.request("DELETE", f"/v1/devices/{a['registration_id']}",
                              headers=basic(app))
    assert r.status == 200
    r = await harness.request("DELETE", f"/v1/devices/{b['registration_id']}",
                              headers={"Authorization": f"Bearer {harness.admin_token}"})
    assert r.status == 200
    r = await harness.request("DELETE", f"/v1/devices/{b['registration_id']}",
                              headers={"Authorization": f"Bearer {harness.admin_token}"})
    assert r.status == 404
    assert harness.server.statistics().devices == 1
    assert harness.server.is_online(c["registration_id"]) is False


async def test_what_an_attacker_with_the_app_key_cannot_do(harness: Harness,
                                                          autojump_clock) -> None:
    """The pen test's hijack, step by step, against a connected victim."""
    app = await harness.create_app()
    victim = await harness.register(app, "victim", alias="alice", tags=["vip"])
    client, _ = await harness.device_client(app, victim)
    attacker = DeviceKey()
    # 1. Register the victim's device id to get a token: refused.
    challenge = await _challenge(harness, app, "victim")
    r = await _answer(harness, app, "victim", attacker, challenge)
    assert r.status == 403
    # 2. Without a token: no MQTT session (so no clean session 1 to discard the queue),
    #    no alias/tag change, no new end-to-end keys, no delete.
    rid = victim["registration_id"]
    assert (await harness.mqtt_client().connect(rid, app["app_key"], "guess", clean=True)
            ).return_code == 4
    r = await harness.request("PUT", f"/v1/devices/{rid}", {"alias": "mallory"},
                              headers={"X-App-Key": app["app_key"]})
    assert r.status == 401
    # 3. The victim's connection is untouched and still gets its pushes.
    msg_id = await harness.push_to(app, victim, "still mine")
    assert payload(await client.expect_publish())["msg_id"] == msg_id
    device = harness.server.store.device(rid)
    assert (device.alias, device.tags) == ("alice", ("vip",))
