"""Input the store can hold, batches that cannot be poisoned.

Every text field, over HTTP and MQTT, must be storable UTF-8 (a lone surrogate such as
``"\\ud800"`` in JSON is not): 400 naming the field, or for a receipt "not recorded". And
one bad write can never fail the group commit it shares with other clients' writes: each
write has a savepoint of its own. These tests run on a real SQLite file with the batching
committer (the mode in which writes of different clients share a transaction).
"""
from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsdk.protocol import Publish
from server_harness import Harness, basic, payload
from simulator.server import Committer, Limits, PushServer, ServerSettings, SqliteStore, writes
from simulator.server.committer import in_thread

pytestmark = pytest.mark.timeout(90)

ADMIN = "input-admin"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Harness]:
    """A server on a database file whose committer batches (on a thread)."""
    store = SqliteStore(str(tmp_path / "push.db"))
    limits = Limits(push_rate=1e6, push_burst=1e6)
    server = PushServer(store, settings=ServerSettings(admin_token=ADMIN, limits=limits),
                        rng=random.Random(3), committer=Committer(store, in_thread))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.committer.run)
            yield Harness(server, nursery, ADMIN)
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def _bystander(harness: Harness) -> tuple[dict, dict, Any]:
    """Another app with a connected device: what the hostile traffic must not touch."""
    app = await harness.create_app("bystander")
    device = await harness.register(app, "innocent")
    client, _ = await harness.device_client(app, device)
    return app, device, client


async def _pushes_arrive(harness: Harness, app: dict, device: dict, client: Any,
                         n: int) -> list[str]:
    """``n`` pushes to the bystander, each answered 200 and delivered once, acknowledged."""
    sent: list[str] = []

    async def push_all() -> None:
        for i in range(n):
            sent.append(await harness.push_to(app, device, i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(push_all)
        got = [payload(p)["msg_id"] for p in await client.publishes(n)]
    assert got == sent
    return sent


async def test_lone_surrogates_are_400_naming_the_field(harness: Harness,
                                                        autojump_clock) -> None:
    app = await harness.create_app()
    device = await harness.register(app, "d")
    rid = device["registration_id"]
    cases = [
        ("POST", "/v1/apps", {"name": "\ud800"},
         {"Authorization": f"Bearer {harness.admin_token}"},
         "name"),
        ("POST", "/v1/devices", {"device_id": "\ud800", "platform": "android"},
         {"X-App-Key": app["app_key"]}, "device_id"),
        ("POST", "/v1/devices", {"device_id": "x\x00y", "platform": "android"},
         {"X-App-Key": app["app_key"]}, "device_id"),
        ("POST", "/v1/devices", {"device_id": "ok", "platform": "android",
                                 "tags": ["a", "\udfff"]}, {"X-App-Key": app["app_key"]},
         "tags[1]"),
        ("PUT", f"/v1/devices/{rid}", {"alias": "al\udc00ice"},
         {"Authorization": f"Bearer {device['token']}"}, "alias"),
        ("POST", "/v1/push", {"audience": {"alias": ["\ud800"]}, "message": {"data": 1}},
         basic(app), "audience.alias[0]"),
        ("POST", "/v1/push", {"audience": "all", "message": {"data": {"k": ["\ud800"]}}},
         basic(app), "message.data.k[0]"),
        ("POST", "/v1/push", {"audience": "all", "message": {"data": {"\udfff": 1}}},
         basic(app), "message.data"),
        ("POST", "/v1/push", {"audience": "all",
                              "notification": {"title": "\ud800", "body": ""}},
         basic(app), "notification.title"),
        ("POST", "/v1/push", {"audience": "all", "message": {"data": 1},
                              "options": {"collapse_key": "\ud800"}},
         basic(app), "options.collapse_key"),
    ]
    for method, path, body, headers, field in cases:
        r = await harness.request(method, path, raw=json.dumps(body).encode(), headers=headers)
        assert r.status == 400, (path, body, r)
        assert r.json["error"]["message"].startswith(field), (field, r.json)
    # NUL and control characters are fine inside texts and data (not identifiers).
    r = await harness.push(app, {"audience": "all", "message": {"data": "a\x00b"},
                                 "notification": {"title": "line\nbreak", "body": "\t"}})
    assert r.status == 200


@pytest.mark.parametrize("raw, why", [
    (b'{"audience": "all", "message": {"data": 1e400}}', "out of range"),
    (b'{"audience": "all", "message": {"data": -1e999}}', "out of range"),
    (b'{"audience": "all", "message": {"data": ' + b"9" * 5000 + b"}}", "not valid JSON"),
    (b'{"audience": "all", "message": {"data": ' + b"[" * 65 + b"]" * 65 + b"}}",
     "nested more than 64"),
    (b"[" * 50_000, "nested too deeply"),
])
async def test_numbers_json_cannot_carry_and_deep_nesting_are_400(
        harness: Harness, autojump_clock, raw: bytes, why: str) -> None:
    app = await harness.create_app()
    r = await harness.request("POST", "/v1/push", raw=raw, headers=basic(app))
    assert (r.status, r.error_code) == (400, "bad_json")
    assert why in r.json["error"]["message"]


async def test_the_pen_test_batch_poisoning_no_longer_fails_anybody(live: Harness) -> None:
    """The reproduction: registrations of ``"\\ud800"`` with the public app key and QoS 0
    receipts of ``{"msg_id": "\\ud800"}`` from a device, while another app pushes."""
    harness = live
    attacker_app = await harness.create_app("attacker")
    attacker = await harness.register(attacker_app, "attacker-phone")
    sender, _ = await harness.device_client(attacker_app, attacker)
    app, device, client = await _bystander(harness)
    topic = f"rcpt/{attacker_app['app_key']}/{attacker['registration_id']}"
    statuses: list[int] = []

    async def poison() -> None:
        for _ in range(100):
            r = await harness.request("POST", "/v1/devices",
                                      raw=b'{"device_id": "\\ud800", "platform": "x"}',
                                      headers={"X-App-Key": attacker_app["app_key"]})
            statuses.append(r.status)
            await sender.send(Publish(topic, b'{"msg_id": "\\ud800", "event": "opened"}'))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poison)
        sent = await _pushes_arrive(harness, app, device, client, 200)
    assert set(statuses) == {400}
    await harness.server.committer.sync()
    for msg_id in sent:  # every delivery mark of the shared batches was kept
        status = await harness.status(app, msg_id)
        assert (status["delivered"], status["pending"]) == (1, 0), status
    assert harness.server.statistics().messages_redelivered == 0


async def test_a_write_that_fails_alone_fails_only_its_waiter(live: Harness) -> None:
    """Defence in depth behind validation: a write SQLite cannot bind, queued in the same
    batch as others, is rolled back to its savepoint; the batch commits."""
    harness = live
    app = await harness.create_app()
    device = await harness.register(app, "d")
    committer = harness.server.committer
    results: dict[str, Any] = {}

    def bad(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO apps (app_key, name, secret_hash, created_at) "
                   "VALUES ('bad', ?, x'00', 0)", ("\ud800",))

    async def run(name: str, *call: Any) -> None:
        try:
            results[name] = await committer.write(*call, durable=True)
        except Exception as exc:  # noqa: BLE001 - the point is which one
            results[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "good1", writes.create_app, "good1", "one", b"\x01", 0.0)
        nursery.start_soon(run, "bad", bad)
        nursery.start_soon(run, "good2", writes.create_app, "good2", "two", b"\x02", 0.0)
        # Bookkeeping merged with a bad item: the bad receipt alone is dropped.
        committer.post_all(writes.record_receipts, [
            (device["registration_id"], "\ud800", "opened"),
            (device["registration_id"], "unknown", "opened")])
    assert isinstance(results["bad"], UnicodeEncodeError)
    assert results["good1"] is None and results["good2"] is None
    assert harness.server.app_exists("good1") and harness.server.app_exists("good2")
    assert not harness.server.app_exists("bad")


# --- the property: arbitrary JSON at every door, while another app pushes ---------------

NASTY = st.sampled_from(["\ud800", "\udfff", "a\udbff", "\x00", "\x7f", "\u2028", "é",
                         "\U0001f600", "", " " * 200])
TEXT = st.text(max_size=20) | NASTY | st.builds("".join, st.lists(NASTY, max_size=4))
LEAF = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
        | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
FIELDS = ["name", "device_id", "platform", "alias", "tags", "webpush", "device_key", "proof",
          "audience", "notification", "message", "options", "data", "title", "body",
          "extras", "ttl", "collapse_key", "priority", "registration_id", "tag", "msg_id",
          "event", "challenge", "signature", "p256dh", "auth"]
JSON = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | TEXT, inner, max_size=5), max_leaves=25)


def _raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # ASCII: surrogates travel as \ud800 escapes


BODIES = st.one_of(
    JSON.map(_raw),
    st.fixed_dictionaries({"device_id": TEXT, "platform": TEXT},
                          optional={"alias": TEXT | st.none(), "tags": st.lists(TEXT),
                                    "device_key": TEXT, "proof": JSON}).map(_raw),
    st.fixed_dictionaries({"audience": st.just("all") | st.fixed_dictionaries(
        {"alias": st.lists(TEXT, min_size=1, max_size=3)})},
        optional={"message": st.fixed_dictionaries({"data": JSON}),
                  "notification": st.fixed_dictionaries({"title": TEXT, "body": TEXT}),
                  "options": st.fixed_dictionaries({}, optional={
                      "ttl": LEAF, "collapse_key": TEXT, "priority": TEXT})}).map(_raw),
    st.integers(60, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b"1e400", b"-" + b"9" * 4500, b'{"msg_id": 1e999}', b"\xff\xfe",
                     b'"\\ud800"', b'{"\\ud800": 1}']),
    st.binary(max_size=200),
)


async def test_hostile_json_at_every_door_never_500s_or_touches_others(live: Harness) -> None:
    harness = live
    hostile = await harness.create_app("hostile")
    device = await harness.register(hostile, "hostile-phone")
    sender, _ = await harness.device_client(hostile, device)
    rcpt = f"rcpt/{hostile['app_key']}/{device['registration_id']}"
    doors = {
        "/v1/apps": ("POST", {"Authorization": f"Bearer {ADMIN}"}),
        "/v1/devices": ("POST", {"X-App-Key": hostile["app_key"]}),
        f"/v1/devices/{device['registration_id']}": (
            "PUT", {"Authorization": f"Bearer {device['token']}"}),
        "/v1/push": ("POST", basic(hostile)),
        "mqtt receipt": ("PUBLISH", {}),
    }
    examples: list[tuple[str, bytes]] = []

    @settings(max_examples=250, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(doors)), BODIES)
    def collect(door: str, body: bytes) -> None:
        examples.append((door, body))

    collect()
    app, bystander, client = await _bystander(harness)
    answers: list[tuple[str, int]] = []
    sending = trio.Lock()  # one MQTT connection, shared by the attacking tasks

    async def attack(mine: list[tuple[str, bytes]]) -> None:
        for door, body in mine:
            method, headers = doors[door]
            if method == "PUBLISH":
                async with sending:
                    await sender.send(Publish(rcpt, body, qos=0))
                continue
            r = await harness.request(method, door, raw=body, headers=headers)
            answers.append((door, r.status))
            assert r.status < 500, (door, body, r)
            assert r.status < 300 or r.json["error"]["code"]

    async with trio.open_nursery() as nursery:
        for k in range(4):  # four hostile connections at once, sharing the batches
            nursery.start_soon(attack, examples[k::4])
        sent = await _pushes_arrive(harness, app, bystander, client, 100)
    assert len(answers) == sum(1 for door, _ in examples if door != "mqtt receipt")
    await harness.server.committer.sync()
    for msg_id in sent:
        status = await harness.status(app, msg_id)
        assert (status["delivered"], status["pending"]) == (1, 0)
    stats = harness.server.statistics()
    assert all(code < 500 for code, _ in stats.http_responses)
    assert stats.messages_redelivered == 0
