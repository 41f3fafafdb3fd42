"""The reference server's side of end-to-end encryption: devices register their public keys
(``POST /v1/devices`` with ``"webpush"``), providers read them
(``GET /v1/devices/<registration_id>/keys``, HTTP Basic), the store keeps them (schema v2)."""
import base64
import json
import random
import sqlite3

import h11
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pushsdk.webpush import WebPushKeys, b64url_encode
from simulator.server import PushServer, ServerSettings, SqliteStore
from simulator.server.http_api import dispatch
from simulator.server.schema import MIGRATIONS

KEYS = WebPushKeys.generate()
OFF_CURVE = b64url_encode(b"\x04" + (1).to_bytes(32, "big") * 2)  # (1, 1) is not on P-256


@pytest.fixture
def server():
    return PushServer(SqliteStore(":memory:"), settings=ServerSettings(admin_token="admin"),
                      rng=random.Random(1))


def call(server, method, path, body=None, headers=()):
    raw = b"" if body is None else json.dumps(body).encode()
    request = h11.Request(method=method, target=path,
                          headers=[("Host", "push.test"), *headers])
    reply = dispatch(server, request, raw)
    return reply.status, json.loads(reply.body)


def basic(app):
    raw = f"{app.app_key}:{app.master_secret}".encode()
    return ("Authorization", "Basic " + base64.b64encode(raw).decode())


DEVICE_KEY = Ed25519PrivateKey.generate()


def register(server, app, **extra):
    """Register "phone" with its identity key; again (the same device) with a proof."""
    body = {"device_id": "phone", "platform": "android",
            "device_key": b64url_encode(DEVICE_KEY.public_key().public_bytes_raw()), **extra}
    status, answer = call(server, "POST", "/v1/devices", body, [("X-App-Key", app.app_key)])
    if status == 401:
        challenge = answer["challenge"]
        message = f"pushsim-device-proof-v1\n{app.app_key}\nphone\n{challenge}".encode()
        body["proof"] = {"challenge": challenge,
                         "signature": b64url_encode(DEVICE_KEY.sign(message))}
        status, answer = call(server, "POST", "/v1/devices", body,
                              [("X-App-Key", app.app_key)])
    return status, answer


def test_keys_registered_with_the_device_are_returned_to_its_app(server):
    app = server.create_app("a")
    status, reg = register(server, app, webpush=KEYS.subscription())
    assert status == 200
    rid = reg["registration_id"]
    status, answer = call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(app)])
    assert status == 200
    assert answer == {"registration_id": rid, "webpush": KEYS.subscription()}
    # HEAD works where GET does.
    assert call(server, "HEAD", f"/v1/devices/{rid}/keys", headers=[basic(app)])[0] == 200


def test_keys_are_kept_replaced_and_removed_like_alias(server):
    app = server.create_app("a")
    rid = register(server, app, webpush=KEYS.subscription())[1]["registration_id"]
    register(server, app)  # absent: kept
    assert call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(app)])[1][
        "webpush"] == KEYS.subscription()
    new = WebPushKeys.generate()
    register(server, app, webpush=new.subscription())  # replaced
    assert call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(app)])[1][
        "webpush"] == new.subscription()
    register(server, app, webpush=None)  # removed
    status, answer = call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(app)])
    assert status == 404 and answer["error"]["code"] == "not_found"


def test_reading_keys_needs_the_apps_own_credentials(server):
    app, other = server.create_app("a"), server.create_app("b")
    rid = register(server, app, webpush=KEYS.subscription())[1]["registration_id"]
    status, answer = call(server, "GET", f"/v1/devices/{rid}/keys")
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    assert call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(other)])[0] == 404
    assert call(server, "GET", "/v1/devices/nope/keys", headers=[basic(app)])[0] == 404
    assert call(server, "POST", f"/v1/devices/{rid}/keys", {}, [basic(app)])[0] == 405


def test_device_without_keys_is_404(server):
    app = server.create_app("a")
    rid = register(server, app)[1]["registration_id"]
    status, answer = call(server, "GET", f"/v1/devices/{rid}/keys", headers=[basic(app)])
    assert status == 404 and "no end-to-end keys" in answer["error"]["message"]


@pytest.mark.parametrize("webpush, field", [
    ({"p256dh": KEYS.p256dh}, "auth"),
    ({"p256dh": KEYS.p256dh, "auth": KEYS.auth, "x": 1}, "'x'"),
    ({"p256dh": OFF_CURVE, "auth": KEYS.auth}, "webpush.p256dh"),
    ({"p256dh": KEYS.p256dh[:40], "auth": KEYS.auth}, "webpush.p256dh"),
    ({"p256dh": KEYS.p256dh, "auth": "c2hvcnQ"}, "webpush.auth"),
    ({"p256dh": KEYS.p256dh, "auth": "a+b/"}, "webpush.auth"),
    ({"p256dh": 5, "auth": KEYS.auth}, "webpush.p256dh"),
    ("keys", "webpush"),
])
def test_bad_keys_are_refused_naming_the_field(server, webpush, field):
    app = server.create_app("a")
    status, answer = register(server, app, webpush=webpush)
    assert status == 400 and answer["error"]["code"] == "invalid_request"
    assert field in answer["error"]["message"]


def test_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path)
    raw.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    raw.close()
    store = SqliteStore(str(path))
    server = PushServer(store, settings=ServerSettings(admin_token="admin"), rng=random.Random(2))
    app = server.create_app("a")
    rid = register(server, app, webpush=KEYS.subscription())[1]["registration_id"]
    assert server.webpush_keys(app.app_key, rid) == (KEYS.p256dh, KEYS.auth)
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
    raw.close()
