"""End-to-end encryption through the whole system: a device registers with
``ServerConfig(e2e=True)``, the provider fetches its keys from the server and encrypts, the
server stores and forwards only ciphertext, the app's callback receives the plaintext.

Virtual time over in-memory streams for the behaviour, loopback sockets and a SQLite file
for "the server never holds the plaintext"."""
import base64
import json
import random
import sqlite3
from functools import partial

import h11
import pytest
import trio
import trio.testing

from pushsdk import FileStateStore, FixedStrategy, MemoryStateStore, PushClient, ServerConfig
from pushsdk.clock import VirtualClock
from pushsdk.provider import (
    DeviceKeys,
    encrypt_for_device,
    encrypted_push_body,
    fetch_device_keys,
    post_push,
)
from pushsdk.webpush import WebPushKeys, b64url_decode
from simulator.server import PushServer, SqliteStore
from simulator.server import ServerSettings
from simulator.server.http_api import dispatch

EPOCH = 1_700_000_000.0
HTTP = ("push.test", 8480)
MQTT = ("mqtt.test", 1883)
SECRET = {"launch_code": "tangerine-4471-octopus", "amount": 1234}


class MemoryNet:
    """Connector whose streams the in-process server serves (HTTP or MQTT by port)."""

    def __init__(self, nursery, server):
        self.nursery, self.server = nursery, server
        self.registrations = []

    async def connect(self, host, port, *, tls):
        client, peer = trio.testing.memory_stream_pair()
        if (host, port) == HTTP:
            self.nursery.start_soon(self.server.handle_http_stream, peer)
        else:
            self.nursery.start_soon(self.server.handle_mqtt_stream, peer)
        return client


def keys_over_http(server, app, rid):
    """What the provider helper's GET does, through the server's real HTTP routing."""
    auth = base64.b64encode(f"{app.app_key}:{app.master_secret}".encode()).decode()
    request = h11.Request(method="GET", target=f"/v1/devices/{rid}/keys",
                          headers=[("Host", "push.test"), ("Authorization", f"Basic {auth}")])
    reply = dispatch(server, request, b"")
    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    return DeviceKeys(rid, answer["webpush"]["p256dh"], answer["webpush"]["auth"])


@pytest.fixture
def world(nursery):
    clock = VirtualClock(EPOCH)
    server = PushServer(SqliteStore(":memory:"),
                        settings=ServerSettings(admin_token="t", mqtt_host=MQTT[0],
                                              mqtt_port=MQTT[1]),
                        clock=clock, rng=random.Random(5))
    return server, server.create_app("e2e"), MemoryNet(nursery, server), clock


def device(world, store, *, e2e=True, device_id="phone-1", **kwargs):
    server, app, net, clock = world
    config = ServerConfig(server_url=f"http://{HTTP[0]}:{HTTP[1]}", app_key=app.app_key,
                          device_id=device_id, e2e=e2e)
    return PushClient(config, connector=net, state_store=store, clock=clock,
                      rng=random.Random(2), strategy=FixedStrategy(270), **kwargs)


async def wait_for(predicate):
    with trio.fail_after(60):
        while not predicate():
            await trio.sleep(0.05)


async def test_device_receives_plaintext_the_server_never_saw(world, autojump_clock):
    server, app, _, _ = world
    got = []
    store = MemoryStateStore()
    async with device(world, store, on_message=got.append) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        keys = keys_over_http(server, app, rid)
        assert client.webpush_subscription == {"p256dh": keys.p256dh, "auth": keys.auth}
        result = server.push_body(app.app_key, encrypted_push_body(keys, SECRET))
        await wait_for(lambda: got)
        stats = client.statistics()
    assert got[0].message == {"data": SECRET} and got[0].e2e
    assert got[0].msg_id == result.msg_id
    assert (stats.decrypt_errors, stats.messages_dispatched) == (0, 1)
    assert server.message_status(app.app_key, result.msg_id).delivered == 1
    stored = store.state.webpush_keys
    assert stored is not None and stored.p256dh == keys.p256dh


async def test_keys_survive_restarts_and_token_refreshes(world, autojump_clock):
    server, app, _, _ = world
    store = MemoryStateStore()
    async with device(world, store) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        first = client.webpush_subscription
    got = []
    async with device(world, store, on_message=got.append) as client:
        await client.wait_connected()
        assert client.statistics().registrations == 0  # stored registration and keys reused
        assert client.webpush_subscription == first
        server.push_body(app.app_key,
                         encrypted_push_body(keys_over_http(server, app, rid), {"n": 1}))
        await wait_for(lambda: got)
    assert got[0].message["data"] == {"n": 1}
    # A token refresh re-registers with the same keys, so earlier encryptions stay readable.
    await trio.sleep(31 * 86400)
    async with device(world, store) as client:
        await client.wait_connected()
        assert client.statistics().registrations == 1
        assert client.webpush_subscription == first
    assert keys_over_http(server, app, rid).p256dh == first["p256dh"]


async def test_turning_e2e_on_registers_the_keys(world, autojump_clock):
    server, app, _, _ = world
    store = MemoryStateStore()
    async with device(world, store, e2e=False) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        assert client.webpush_subscription is None
    assert server.webpush_keys(app.app_key, rid) is None
    async with device(world, store) as client:
        await client.wait_connected()
        assert client.statistics().registrations == 1
        assert client.registration.registration_id == rid
    assert server.webpush_keys(app.app_key, rid) == tuple(client.webpush_subscription.values())


async def test_a_push_that_does_not_decrypt_is_counted_acknowledged_and_skipped(
        world, autojump_clock, caplog):
    server, app, _, _ = world
    got = []
    async with device(world, MemoryStateStore(), on_message=got.append) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        stranger = WebPushKeys.generate()  # sealed for keys the device does not have
        bad = server.push_body(app.app_key, encrypted_push_body(
            DeviceKeys(rid, stranger.p256dh, stranger.auth), {"x": 1}))
        garbled = server.push_body(app.app_key, {
            "audience": {"registration_id": [rid]},
            "message": {"data": {"aes128gcm": "bm90IGEgYm9keQ"}}})
        plain = server.push_body(app.app_key, {"audience": {"registration_id": [rid]},
                                               "message": {"data": {"clear": True}}})
        good = server.push_body(app.app_key, encrypted_push_body(
            keys_over_http(server, app, rid), {"ok": 1}))
        await wait_for(lambda: len(got) == 2)
        await trio.sleep(5)
        stats = client.statistics()
        assert client.state == "connected"
    assert [(m.msg_id, m.message["data"], m.e2e) for m in got] == [
        (plain.msg_id, {"clear": True}, False), (good.msg_id, {"ok": 1}, True)]
    assert stats.decrypt_errors == 2 and stats.callback_errors == 0
    for result in (bad, garbled, plain, good):  # acknowledged: not redelivered forever
        status = server.message_status(app.app_key, result.msg_id)
        assert (status.delivered, status.pending) == (1, 0)
    assert "cannot decrypt" in caplog.text


async def test_a_message_stream_never_gets_a_push_that_did_not_decrypt(world,
                                                                       autojump_clock):
    """The iterator, like the callbacks, sees only what opened (the undecryptable push is
    counted, acknowledged and skipped, not handed over sealed)."""
    server, app, _, _ = world
    got = []
    async with device(world, MemoryStateStore()) as client, \
            client.messages(manual_ack=True) as messages:
        await client.wait_connected()
        rid = client.registration.registration_id
        stranger = WebPushKeys.generate()
        bad = server.push_body(app.app_key, encrypted_push_body(
            DeviceKeys(rid, stranger.p256dh, stranger.auth), {"x": 1}))
        good = server.push_body(app.app_key, encrypted_push_body(
            keys_over_http(server, app, rid), {"ok": 1}))
        with trio.fail_after(60):
            async for message in messages:
                got.append(message)
                await messages.ack(message)
                break
        await trio.sleep(5)
        stats = client.statistics()
    assert [(m.msg_id, m.message["data"], m.e2e) for m in got] == [
        (good.msg_id, {"ok": 1}, True)]
    assert (stats.decrypt_errors, stats.messages_dispatched) == (1, 1)
    for result in (bad, good):
        status = server.message_status(app.app_key, result.msg_id)
        assert (status.delivered, status.pending) == (1, 0)


async def test_without_e2e_the_app_gets_the_sealed_object_untouched(world, autojump_clock):
    server, app, _, _ = world
    got = []
    sealed_for = WebPushKeys.generate()
    async with device(world, MemoryStateStore(), e2e=False, on_message=got.append) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        body = encrypted_push_body(DeviceKeys(rid, sealed_for.p256dh, sealed_for.auth), SECRET)
        server.push_body(app.app_key, body)
        await wait_for(lambda: got)
    assert got[0].message == body["message"] and not got[0].e2e


def test_provider_body_shape_and_size_limit():
    keys = WebPushKeys.generate()
    target = DeviceKeys("rid-1", keys.p256dh, keys.auth)
    body = encrypted_push_body(target, SECRET, notification={"title": "New order", "body": ""},
                               ttl=60, collapse_key="orders", priority="high")
    assert body["audience"] == {"registration_id": ["rid-1"]}
    assert body["options"] == {"ttl": 60, "collapse_key": "orders", "priority": "high"}
    assert body["notification"] == {"title": "New order", "body": ""}
    assert list(body["message"]["data"]) == ["aes128gcm"]
    assert "tangerine" not in json.dumps(body)
    assert encrypted_push_body(target, "x" * 2900)  # fits in the 4096-byte payload limit
    with pytest.raises(ValueError, match="4096"):
        encrypted_push_body(target, "x" * 3000)
    sealed = encrypt_for_device(keys.p256dh, keys.auth, "hello")
    assert keys.decrypt(b64url_decode(sealed)) == b"hello"
    with pytest.raises(ValueError):
        DeviceKeys("rid-1", keys.p256dh[:-4], keys.auth)


async def test_over_loopback_the_database_holds_only_ciphertext(tmp_path):
    db = tmp_path / "push.db"
    store = SqliteStore(str(db))
    server = PushServer(store, settings=ServerSettings(admin_token="t"), rng=random.Random(9))
    app = server.create_app("e2e")
    async with trio.open_nursery() as servers:
        running = await servers.start(partial(server.serve_tcp, http_port=0, mqtt_port=0))
        answer, got = await _device_and_provider(tmp_path, server, app, running)
        servers.cancel_scope.cancel()
    store.close()
    assert answer["targets"] == 1 and got[0].msg_id == answer["msg_id"]
    assert got[0].message["data"] == SECRET and got[0].e2e
    raw = sqlite3.connect(db)
    (payload,) = raw.execute("SELECT payload FROM messages WHERE msg_id = ?",
                             (answer["msg_id"],)).fetchone()
    raw.close()
    stored = json.loads(payload)
    assert list(stored["message"]["data"]) == ["aes128gcm"]  # what the server kept
    assert b"tangerine" not in payload
    # The device's private key is in its state file only encrypted.
    state_file = tmp_path / "device-state.bin"
    private = FileStateStore(state_file).load_sync().webpush_keys.to_dict()["private_key"]
    assert private.encode() not in state_file.read_bytes()


async def _device_and_provider(tmp_path, server, app, running):
    state_file = tmp_path / "device-state.bin"
    got = []
    config = ServerConfig(server_url=running.http_url, app_key=app.app_key,
                          device_id="phone-1", e2e=True)
    async with PushClient(config, state_store=FileStateStore(state_file),
                          on_message=got.append) as client:
        with trio.fail_after(20):
            await client.wait_connected()
        rid = client.registration.registration_id

        def provider():  # a provider back end: blocking HTTP, standard library only
            keys = fetch_device_keys(running.http_url, app.app_key, app.master_secret, rid)
            body = encrypted_push_body(keys, SECRET)
            return body, post_push(running.http_url, app.app_key, app.master_secret, body)

        body, answer = await trio.to_thread.run_sync(provider)
        ciphertext = body["message"]["data"]["aes128gcm"].encode()
        with trio.fail_after(20):
            while not got:
                await trio.sleep(0.01)
        # While the server runs: neither the database nor its WAL holds the plaintext.
        files = [p for p in tmp_path.iterdir() if p.name.startswith("push.db")]
        contents = {path.name: path.read_bytes() for path in files}
        assert any(ciphertext in raw for raw in contents.values())  # we look in the right place
        for name, raw in contents.items():
            assert b"tangerine-4471-octopus" not in raw and b"launch_code" not in raw, name
    return answer, got
