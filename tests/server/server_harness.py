"""Test peers for the reference server: an HTTP client on h11 and an MQTT client on the
project's codec, both over any trio stream (in-memory pairs for most tests, TCP for a few).
"""
from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import h11
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pushsdk.protocol import (
    NEED_DATA,
    NO_PROPERTIES,
    Properties,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Event,
    PingReq,
    PubAck,
    Publish,
    RemoteProtocolError,
    Role,
    SubAck,
    Subscribe,
)
from simulator.server import PushServer

EPOCH = 1_700_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DeviceKey:
    """A device's Ed25519 identity key, as the SDK keeps one (docs/security.md)."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public = b64url(self.private.public_key().public_bytes_raw())

    def proof(self, app_key: str, device_id: str, challenge: str) -> dict[str, str]:
        message = f"pushsim-device-proof-v1\n{app_key}\n{device_id}\n{challenge}"
        return {"challenge": challenge, "signature": b64url(self.private.sign(message.encode()))}


def basic(app: dict[str, str]) -> dict[str, str]:
    raw = f"{app['app_key']}:{app['master_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return self.json["error"]["code"]


class HttpTestClient:
    """HTTP/1.1 client on one stream; several requests reuse the connection (keep-alive)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, body: Any = None, *,
                      headers: dict[str, str] | None = None, raw: bytes | None = None,
                      ) -> HttpResponse:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        data = raw if raw is not None else (
            b"" if body is None else json.dumps(body).encode()
        )
        hdrs = [("Host", "push.test"), ("Content-Length", str(len(data)))]
        hdrs += list((headers or {}).items())
        out = self.conn.send(h11.Request(method=method, target=path, headers=hdrs))
        out += self.conn.send(h11.Data(data=data)) if data else b""
        out += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)
        return await self.read_response()

    async def read_response(self) -> HttpResponse:
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return HttpResponse(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("server closed the connection")


async def read_raw_response(stream: trio.abc.Stream) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; and whether it did close."""
    data = bytearray()
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(data), True
        data += chunk


class MqttTestClient:
    """A minimal MQTT client on the codec: send events, receive events, nothing hidden."""

    def __init__(self, stream: trio.abc.Stream, version: int = 4) -> None:
        self.stream = stream
        self.conn = Connection(Role.CLIENT, protocol_version=version, max_packet_size=1 << 20)
        self.next_packet_id = 1
        self.early: list[Event] = []  # events that arrived while waiting for an ack

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> Event:
        """The next event from the server; ConnectionClosed when it closed."""
        if self.early:
            return self.early.pop(0)
        return await self._receive()

    async def _receive(self) -> Event:
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError:
                return ConnectionClosed()
            if event is not NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.conn.receive_data(data)

    async def connect(self, client_id: str, username: str | None, password: str | None, *,
                      clean: bool = False, keepalive: int = 60,
                      properties: Properties = NO_PROPERTIES) -> ConnAck:
        await self.send(Connect(
            client_id=client_id, username=username, keepalive=keepalive, clean_session=clean,
            password=None if password is None else password.encode(),
            protocol_level=self.conn.protocol_version or 4, properties=properties,
        ))
        event = await self.receive()
        assert isinstance(event, ConnAck), event
        return event

    def packet_id(self) -> int:
        pid = self.next_packet_id
        self.next_packet_id += 1
        return pid

    async def subscribe(self, *filters: str, qos: int = 1) -> SubAck:
        pid = self.packet_id()
        await self.send(Subscribe(pid, tuple((f, qos) for f in filters)))
        while True:  # a resumed session may deliver before the SUBACK
            event = await self._receive()
            if not isinstance(event, Publish):
                break
            self.early.append(event)
        assert isinstance(event, SubAck) and event.packet_id == pid, event
        return event

    async def expect_publish(self) -> Publish:
        event = await self.receive()
        assert isinstance(event, Publish), event
        return event

    async def publishes(self, n: int, *, ack: bool = True) -> list[Publish]:
        got = []
        for _ in range(n):
            publish = await self.expect_publish()
            if ack:
                await self.send(PubAck(publish.packet_id))
            got.append(publish)
        return got

    async def ping(self) -> None:
        await self.send(PingReq())

    async def expect_closed(self) -> None:
        event = await self.receive()
        assert isinstance(event, ConnectionClosed), event

    async def nothing_within(self, seconds: float) -> bool:
        """True if the server sends nothing (and does not close) for ``seconds``."""
        with trio.move_on_after(seconds):
            await self.receive()
            return False
        return True

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


def payload(publish: Publish) -> dict[str, Any]:
    return json.loads(publish.payload)


class Harness:
    """A PushServer plus helpers that open in-memory connections to it."""

    def __init__(self, server: PushServer, nursery: trio.Nursery,
                 admin_token: str) -> None:
        self.server = server
        self.nursery = nursery
        self.admin_token = admin_token
        #: (app_key, device_id) -> the key the harness registers that device with.
        self.keys: dict[tuple[str, str], DeviceKey] = {}

    def open_stream(self, handler: str, peer: str | None = None) -> trio.abc.Stream:
        """A connection to the server; ``peer`` is the source address it sees."""
        client, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(getattr(self.server, handler), server_end, peer)
        return client

    def http_client(self, peer: str | None = None) -> HttpTestClient:
        return HttpTestClient(self.open_stream("handle_http_stream", peer))

    async def request(self, method: str, path: str, body: Any = None, *,
                      peer: str | None = None, **kw: Any) -> HttpResponse:
        """One request on a new connection (from source address ``peer``)."""
        client = self.http_client(peer)
        try:
            return await client.request(method, path, body, **kw)
        finally:
            await trio.aclose_forcefully(client.stream)

    async def create_app(self, name: str = "app") -> dict[str, str]:
        r = await self.request("POST", "/v1/apps", {"name": name},
                               headers={"Authorization": f"Bearer {self.admin_token}"})
        assert r.status == 201, r
        return r.json

    def key_of(self, app: dict[str, str], device_id: str) -> DeviceKey:
        return self.keys.setdefault((app["app_key"], device_id), DeviceKey())

    async def register_raw(self, app: dict[str, str], body: dict[str, Any],
                           headers: dict[str, str] | None = None) -> HttpResponse:
        return await self.request("POST", "/v1/devices", body,
                                  headers={"X-App-Key": app["app_key"], **(headers or {})})

    async def register(self, app: dict[str, str], device_id: str, **fields: Any
                       ) -> dict[str, Any]:
        """Register as the SDK does: with the device's key, answering a challenge with
        its proof when the device id is registered already."""
        key = self.key_of(app, device_id)
        body = {"device_id": device_id, "platform": "android", "device_key": key.public,
                **fields}
        r = await self.register_raw(app, body)
        if r.status == 401 and r.error_code == "proof_required":
            body["proof"] = key.proof(app["app_key"], device_id, r.json["challenge"])
            r = await self.register_raw(app, body)
        assert r.status == 200, r
        return r.json

    async def push(self, app: dict[str, str], body: dict[str, Any]) -> HttpResponse:
        return await self.request("POST", "/v1/push", body, headers=basic(app))

    async def push_to(self, app: dict[str, str], device: dict[str, Any], data: Any = None,
                      **options: Any) -> str:
        body: dict[str, Any] = {"audience": {"registration_id": [device["registration_id"]]},
                                "message": {"data": data}}
        if options:
            body["options"] = options
        r = await self.push(app, body)
        assert r.status == 200, r
        return r.json["msg_id"]

    async def status(self, app: dict[str, str], msg_id: str) -> dict[str, Any]:
        r = await self.request("GET", f"/v1/messages/{msg_id}", headers=basic(app))
        assert r.status == 200, r
        return r.json

    def mqtt_client(self, peer: str | None = None, version: int = 4) -> MqttTestClient:
        return MqttTestClient(self.open_stream("handle_mqtt_stream", peer), version)

    async def device_client(self, app: dict[str, str], device: dict[str, Any], *,
                            clean: bool = False, keepalive: int = 60,
                            subscribe: bool = True, version: int = 4,
                            properties: Properties = NO_PROPERTIES,
                            ) -> tuple[MqttTestClient, ConnAck]:
        client = self.mqtt_client(version=version)
        connack = await client.connect(device["registration_id"], app["app_key"],
                                       device["token"], clean=clean, keepalive=keepalive,
                                       properties=properties)
        assert connack.return_code == 0, connack
        if subscribe:
            suback = await client.subscribe(device["inbox"])
            assert suback.return_codes == (1,)
        return client, connack


def make_server(admin_token: str, seed: int = 1234, **overrides: Any) -> PushServer:
    """A server on a :memory: store in virtual wall-clock time (EPOCH + trio time);
    ``overrides`` are ServerSettings fields or, for any other name, Limits fields."""
    import random

    from pushsdk.clock import VirtualClock
    from simulator.server import Limits, ServerSettings, SqliteStore

    settings_fields = {f.name for f in attrs.fields(ServerSettings)}
    settings_kw = {k: v for k, v in overrides.items() if k in settings_fields}
    limits_kw = {k: v for k, v in overrides.items() if k not in settings_fields}
    settings = ServerSettings(admin_token=admin_token, limits=Limits(**limits_kw),
                              **settings_kw)
    return PushServer(SqliteStore(":memory:"), settings=settings, clock=VirtualClock(EPOCH),
                      rng=random.Random(seed))
