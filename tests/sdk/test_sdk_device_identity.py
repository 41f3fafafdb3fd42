"""Device identity, the SDK side (DESIGN.md "Device identity"), against a small but real
HTTP server (h11 on loopback TCP) that implements the registration protocol as specified:
device_key binding, the 401 ``proof_required`` challenge and the signed retry, legacy
registrations proved by their token, 403 ``device_bound``, PUT alias/tags with 409
``alias_taken``, DELETE. The MQTT side is the scripted broker, also over loopback TCP."""
from __future__ import annotations

import base64
import json
import secrets
from functools import partial
from typing import Any

import attrs
import h11
import pytest
import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pushsdk import (
    ClientState,
    MemoryStateStore,
    PushClient,
    RegistrationRefused,
    SdkState,
    ServerConfig,
)
from pushsdk.identity import proof_message
from sdk_harness import ScriptedBroker

APP_KEY = "app-1"
NOW = 1_700_000_000.0


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.define
class Device:
    registration_id: str
    key: bytes | None  # raw Ed25519 public key bound to it, if any
    tokens: list[str] = attrs.field(factory=list)
    alias: str | None = None
    tags: list[str] = attrs.field(factory=list)


class IdentityServer:
    """``POST /v1/devices``, ``PUT`` and ``DELETE /v1/devices/<id>`` as DESIGN.md says."""

    def __init__(self, mqtt_port: int) -> None:
        self.mqtt_port = mqtt_port
        self.devices: dict[str, Device] = {}  # device_id -> Device
        self.challenges: dict[str, set[str]] = {}  # device_id -> challenges outstanding
        self.log: list[tuple[str, str, int, dict[str, Any]]] = []  # method, path, status, body
        self.headers: list[dict[bytes, bytes]] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        request, body = None, b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            assert request is not None
            headers = dict(request.headers)
            payload = json.loads(body) if body else {}
            status, answer = self.answer(request.method.decode(), request.target.decode(),
                                         headers, payload)
            self.log.append((request.method.decode(), request.target.decode(), status,
                             payload))
            self.headers.append(headers)
            data = json.dumps(answer).encode()
            out = conn.send(h11.Response(status_code=status, headers=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(data)))]))
            out += conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage())
            await stream.send_all(out)
        finally:
            await trio.aclose_forcefully(stream)

    def answer(self, method: str, path: str, headers: dict[bytes, bytes],
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        bearer = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        if method == "POST" and path == "/v1/devices":
            return self.register(headers.get(b"x-app-key", b"").decode(), bearer, body)
        device = next((d for d in self.devices.values()
                       if path == f"/v1/devices/{d.registration_id}"), None)
        if device is None or bearer not in device.tokens:
            return 401, {"error": {"code": "unauthorized", "message": "bad token"}}
        if method == "PUT":
            alias = body.get("alias")
            if alias is not None and any(d.alias == alias and d is not device
                                         for d in self.devices.values()):
                return 409, {"error": {"code": "alias_taken", "message": "alias in use"}}
            device.alias = alias if "alias" in body else device.alias
            device.tags = body.get("tags", device.tags)
            return 200, {"alias": device.alias, "tags": device.tags}
        if method == "DELETE":
            self.devices = {k: v for k, v in self.devices.items() if v is not device}
            return 200, {}
        return 404, {"error": {"code": "not_found", "message": path}}

    def register(self, app_key: str, bearer: str,
                 body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if app_key != APP_KEY:
            return 401, {"error": {"code": "bad_app_key", "message": "unknown app key"}}
        device_id = body["device_id"]
        key = b64decode(body["device_key"]) if "device_key" in body else None
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = Device(f"reg-{device_id}", key)
        elif device.key is None:  # unbound (legacy): one of its tokens is the proof
            if bearer not in device.tokens:
                return 403, {"error": {"code": "device_bound", "message": "no proof"}}
            device.key = key
        elif "proof" not in body:
            challenge = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            self.challenges.setdefault(device_id, set()).add(challenge)
            return 401, {"error": {"code": "proof_required", "message": "prove it"},
                         "challenge": challenge, "challenge_expires_in": 60}
        elif not self.verify(device, device_id, app_key, body["proof"]):
            return 403, {"error": {"code": "device_bound", "message": "wrong proof"}}
        if "alias" in body:
            device.alias = body["alias"]
        token = f"tok-{device_id}-{len(device.tokens) + 1}"
        device.tokens.append(token)
        return 200, {"registration_id": device.registration_id, "token": token,
                     "token_expires_at": NOW + 86400,
                     "mqtt": {"host": "127.0.0.1", "port": self.mqtt_port, "tls": False},
                     "inbox": f"push/{APP_KEY}/{device.registration_id}"}

    def verify(self, device: Device, device_id: str, app_key: str,
               proof: dict[str, str]) -> bool:
        challenge = proof.get("challenge", "")
        outstanding = self.challenges.get(device_id, set())
        if challenge not in outstanding or device.key is None:
            return False
        outstanding.discard(challenge)  # single use
        try:
            Ed25519PublicKey.from_public_bytes(device.key).verify(
                b64decode(proof["signature"]), proof_message(app_key, device_id, challenge))
        except (InvalidSignature, ValueError):
            return False
        return True


class Clock:
    def __init__(self) -> None:
        self.now_value = NOW

    def now(self) -> float:
        return self.now_value


async def start(nursery: trio.Nursery) -> tuple[IdentityServer, ScriptedBroker, str]:
    broker = ScriptedBroker()
    mqtt = await nursery.start(partial(trio.serve_tcp, broker.handle, 0, host="127.0.0.1"))
    server = IdentityServer(mqtt[0].socket.getsockname()[1])
    http = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    return server, broker, f"http://127.0.0.1:{http[0].socket.getsockname()[1]}"


def config(url: str, **kwargs: Any) -> ServerConfig:
    return ServerConfig(server_url=url, app_key=APP_KEY, device_id="phone", **kwargs)


async def run_once(url: str, store: MemoryStateStore, **kwargs: Any) -> PushClient:
    cfg_kwargs = {k: kwargs.pop(k) for k in ("alias", "tags") if k in kwargs}
    kwargs.setdefault("clock", Clock())
    async with PushClient(config(url, **cfg_kwargs), state_store=store, **kwargs) as client:
        with trio.fail_after(10):
            await client.wait_connected()
    return client


async def test_first_registration_binds_the_key_and_re_registration_proves_it(nursery):
    server, _, url = await start(nursery)
    store, clock, tokens = MemoryStateStore(), Clock(), []
    await run_once(url, store, clock=clock, on_new_token=tokens.append)
    key = store.state.device_key
    assert server.log[0][3]["device_key"] == key.public
    assert server.devices["phone"].key == b64decode(key.public)
    # Token about to expire: the SDK registers again, is challenged, signs, gets a token.
    clock.now_value = NOW + 86400 - 10
    client = await run_once(url, store, clock=clock, on_new_token=tokens.append)
    assert [(m, s) for m, _, s, _ in server.log] == [("POST", 200), ("POST", 401),
                                                     ("POST", 200)]
    proof = server.log[2][3]["proof"]
    assert set(proof) == {"challenge", "signature"}
    assert client.registration.registration_id == "reg-phone"
    assert tokens == ["tok-phone-1", "tok-phone-2"]  # rotation reaches the app
    assert store.state.device_key == key  # the same installation key, kept in the state


async def test_another_installation_is_refused_and_gets_no_token(nursery):
    server, _, url = await start(nursery)
    await run_once(url, MemoryStateStore())
    intruder = MemoryStateStore()  # same app key and device id, its own (new) key
    with pytest.raises(RegistrationRefused) as info:
        await run_once(url, intruder)
    assert info.value.code == "device_bound" and info.value.status == 403
    assert info.value.permanent
    assert server.devices["phone"].tokens == ["tok-phone-1"]
    assert intruder.state is None or intruder.state.registration is None


async def test_a_legacy_state_file_proves_itself_with_its_token(nursery):
    server, _, url = await start(nursery)
    # A registration made before device keys: unbound on the server, no key in the state.
    legacy = MemoryStateStore()
    await run_once(url, legacy)
    server.devices["phone"].key = None
    legacy.state = attrs.evolve(legacy.state, device_key=None)
    clock = Clock()
    clock.now_value = NOW + 86400  # expired: the token still proves the installation
    await run_once(url, legacy, clock=clock)
    post = server.log[-1]
    assert post[:3] == ("POST", "/v1/devices", 200)
    assert server.headers[-1][b"authorization"] == b"Bearer tok-phone-1"
    assert server.devices["phone"].key == b64decode(legacy.state.device_key.public)


async def test_alias_and_tags_follow_the_config_and_conflicts_surface(nursery):
    server, _, url = await start(nursery)
    store = MemoryStateStore()
    await run_once(url, store, alias="alice", tags=["a"])
    assert [m for m, *_ in server.log] == ["POST"]  # sent with the registration
    await run_once(url, store, alias="alice", tags=["a"])
    assert [m for m, *_ in server.log] == ["POST"]  # unchanged: nothing to do
    await run_once(url, store, alias="alice2", tags=["a", "b"])
    assert server.log[-1][:3] == ("PUT", "/v1/devices/reg-phone", 200)
    assert (server.devices["phone"].alias, server.devices["phone"].tags) == ("alice2",
                                                                             ["a", "b"])
    assert store.state.registration.alias == "alice2"
    # Another device holds "bob": 409 alias_taken is a permanent, typed error.
    server.devices["other"] = Device("reg-other", None, alias="bob")
    with pytest.raises(RegistrationRefused) as info:
        await run_once(url, store, alias="bob")
    assert (info.value.status, info.value.code) == (409, "alias_taken")


async def test_update_and_unregister(nursery):
    server, _, url = await start(nursery)
    store = MemoryStateStore()
    async with PushClient(config(url), state_store=store, clock=Clock()) as client:
        with trio.fail_after(10):
            await client.wait_connected()
            reg = await client.update(alias="carol", tags=["x"])
            assert (reg.alias, reg.tags) == ("carol", ("x",))
            await client.unregister()
        assert client.state is ClientState.CLOSED
    assert server.log[-2][:3] == ("PUT", "/v1/devices/reg-phone", 200)
    assert server.log[-1][:3] == ("DELETE", "/v1/devices/reg-phone", 200)
    assert "phone" not in server.devices
    assert isinstance(store.state, SdkState) and store.state.registration is None
