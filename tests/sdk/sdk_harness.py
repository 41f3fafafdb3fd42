"""Test peers for the SDK tests: a scripted MQTT broker built on the codec, a tiny h11
registration server, and an in-memory network that connects the SDK to them.

These are small real peers speaking the real protocols, not mocks of SDK parts.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import h11
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    RemoteProtocolError,
    Role,
    SubAck,
    Subscribe,
)
from pushsdk.transport import TransportError
from support.mosquitto import run_mosquitto

EPOCH = 1_700_000_000.0
APP_KEY = "app-key-1"
SERVER_URL = "http://push.test:8480"
MQTT_HOST, MQTT_PORT = "mqtt.test", 1883


class Changes:
    """Something tests can wait on: ``await changes.wait_for(predicate)``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, predicate: Callable[[], Any]) -> None:
        while not predicate():
            await self._event.wait()


class MemoryNetwork(Changes):
    """A connector whose streams are served by in-process handlers, keyed by host:port."""

    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__()
        self.nursery = nursery
        self.handlers: dict[tuple[str, int], Callable[[trio.abc.Stream], Any]] = {}
        self.attempts: list[tuple[float, str, int, bool]] = []
        self.refuse = False

    def serve(self, host: str, port: int, handler: Callable[[trio.abc.Stream], Any]) -> None:
        self.handlers[host, port] = handler

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        self.attempts.append((trio.current_time(), host, port, tls))
        self.changed()
        await trio.lowlevel.checkpoint()
        handler = self.handlers.get((host, port))
        if handler is None or self.refuse:
            raise TransportError(f"cannot connect to {host}:{port}: Connection refused")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(handler, server)
        return client


@attrs.define(eq=False)
class PeerConnection:
    index: int
    stream: trio.abc.Stream
    conn: Connection
    broker: ScriptedBroker
    connect: Connect | None = None
    closed_at: float | None = None
    lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def send(self, event: Any) -> None:
        """Send a packet (from the handler or from a test, one at a time)."""
        async with self.lock:
            data = self.conn.send(event)
            self.broker.bytes_sent += len(data)
            await self.stream.send_all(data)


class ScriptedBroker(Changes):
    """An MQTT server end for tests. Logs every packet with its (virtual) time.

    ``connack(connect, index)`` picks the CONNACK for the index-th connection;
    ``answer_pings(index)`` whether to answer PINGREQs on it; ``ack_publishes(index)`` whether
    to PUBACK the client's PUBLISHes (receipts) on it.
    """

    def __init__(
        self,
        *,
        connack: Callable[[Connect, int], ConnAck] = lambda c, i: ConnAck(0),
        answer_pings: Callable[[int], bool] = lambda i: True,
        ack_publishes: Callable[[int], bool] = lambda i: True,
        suback_code: int = 1,
        close_after: Callable[[int], float | None] = lambda i: None,
        protocol_version: int | None = 4,
        puback: Callable[[Publish], PubAck] | None = None,
    ) -> None:
        """``protocol_version``: 4 (3.1.1 only), 5, or None (whatever the CONNECT says);
        ``puback(publish)`` picks the PUBACK for a client's QoS 1 PUBLISH."""
        super().__init__()
        self.protocol_version = protocol_version
        self.puback = puback or (lambda publish: PubAck(publish.packet_id))
        self.connack = connack
        self.answer_pings = answer_pings
        self.ack_publishes = ack_publishes
        self.suback_code = suback_code
        self.close_after = close_after
        self.log: list[tuple[float, int, Any]] = []
        self.conns: list[PeerConnection] = []
        self.bytes_received = 0
        self.bytes_sent = 0

    def record(self, index: int, event: Any) -> None:
        self.log.append((trio.current_time(), index, event))
        self.changed()

    def times(self, cls: type | str, index: int | None = None) -> list[float]:
        return [t for t, i, e in self.log
                if (e == cls if isinstance(cls, str) else isinstance(e, cls))
                and (index is None or i == index)]

    def events(self, cls: type, index: int | None = None) -> list[Any]:
        return [e for _, i, e in self.log
                if isinstance(e, cls) and (index is None or i == index)]

    @property
    def current(self) -> PeerConnection:
        return self.conns[-1]

    def online(self) -> bool:
        return bool(self.conns) and self.current.closed_at is None and (
            self.current.connect is not None)

    async def handle(self, stream: trio.abc.Stream) -> None:
        pc = PeerConnection(len(self.conns), stream,
                            Connection(Role.SERVER, protocol_version=self.protocol_version),
                            self)
        self.conns.append(pc)
        with trio.CancelScope() as scope:
            limit = None
            try:
                while True:
                    event = pc.conn.next_event()
                    if event is NEED_DATA:
                        data = await stream.receive_some()
                        self.bytes_received += len(data)
                        pc.conn.receive_data(data)
                        continue
                    self.record(pc.index, event)
                    if isinstance(event, Connect):
                        pc.connect = event
                        ack = self.connack(event, pc.index)
                        await pc.send(ack)
                        if ack.return_code:
                            break
                        limit = self.close_after(pc.index)
                        if limit is not None:
                            scope.deadline = trio.current_time() + limit
                    elif isinstance(event, Subscribe):
                        codes = tuple(self.suback_code for _ in event.subscriptions)
                        await pc.send(SubAck(event.packet_id, codes))
                    elif isinstance(event, PingReq):
                        if self.answer_pings(pc.index):
                            await pc.send(PingResp())
                    elif isinstance(event, Publish):
                        if event.qos == 1 and self.ack_publishes(pc.index):
                            await pc.send(self.puback(event))
                    elif isinstance(event, (Disconnect, ConnectionClosed)):
                        break
            except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                self.record(pc.index, "error")
        pc.closed_at = trio.current_time()
        self.record(pc.index, "closed")
        await trio.aclose_forcefully(stream)


class Registrar(Changes):
    """``POST /v1/devices`` as in interfaces §2, enough for the SDK: tokens tok-1, tok-2, ..."""

    def __init__(
        self,
        *,
        token_ttl: float = 30 * 86400,
        mqtt: tuple[str, int, bool] = (MQTT_HOST, MQTT_PORT, False),
        app_key: str = APP_KEY,
        chunked: bool = False,
        error: tuple[int, bytes] | None = None,
        epoch: float = EPOCH,
    ) -> None:
        super().__init__()
        self.epoch = epoch  # wall time at trio time 0
        self.token_ttl = token_ttl
        self.mqtt = mqtt
        self.app_key = app_key
        self.chunked = chunked
        self.error = error
        self.requests: list[tuple[h11.Request, dict[str, Any]]] = []
        self.tokens: list[str] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
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
            status, answer = self.answer(request, body)
            headers = [("Content-Type", "application/json")]
            if self.chunked:
                headers.append(("Transfer-Encoding", "chunked"))
                out = conn.send(h11.Response(status_code=status, headers=headers))
                for i in range(0, len(answer), 7):  # several chunks
                    out += conn.send(h11.Data(data=answer[i:i + 7]))
            else:
                headers.append(("Content-Length", str(len(answer))))
                out = conn.send(h11.Response(status_code=status, headers=headers))
                out += conn.send(h11.Data(data=answer))
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    def answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        payload = json.loads(body)
        self.requests.append((request, payload))
        self.changed()
        if self.error is not None:
            return self.error
        headers = dict(request.headers)
        if request.method != b"POST" or request.target != b"/v1/devices":
            return 404, b'{"error": {"code": "not_found", "message": "no such path"}}'
        if headers.get(b"x-app-key", b"").decode() != self.app_key:
            return 401, b'{"error": {"code": "bad_app_key", "message": "unknown app key"}}'
        token = f"tok-{len(self.tokens) + 1}"
        self.tokens.append(token)
        host, port, tls = self.mqtt
        answer = {
            "registration_id": f"reg-{payload['device_id']}",
            "token": token,
            "token_expires_at": self.epoch + trio.current_time() + self.token_ttl,
            "mqtt": {"host": host, "port": port, "tls": tls},
            "inbox": f"push/{self.app_key}/reg-{payload['device_id']}",
        }
        return 200, json.dumps(answer).encode()


def push_payload(msg_id: str, kind: str = "notification", **extra: Any) -> bytes:
    body: dict[str, Any] = {"msg_id": msg_id, "kind": kind, "sent_at": EPOCH,
                            "expires_at": EPOCH + 86400, "priority": "normal"}
    if kind == "notification":
        body["notification"] = {"title": "Hi", "body": f"message {msg_id}"}
    elif kind == "message":
        body["message"] = {"data": {"n": msg_id}}
    body.update(extra)
    return json.dumps(body).encode()


def server_token_check(valid: set[str]) -> Callable[[Connect, int], ConnAck]:
    """A connack policy accepting only the given device tokens (else CONNACK 4)."""
    def connack(connect: Connect, index: int) -> ConnAck:
        token = (connect.password or b"").decode()
        return ConnAck(0) if token in valid else ConnAck(4)

    return connack


# --- a throwaway PKI for TLS tests -------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn="Test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# --- a real Mosquitto on a free loopback port ----------------------------------------------

@contextlib.contextmanager
def mosquitto(directory: Path, extra: str = "") -> Iterator[int]:
    """:func:`support.mosquitto.run_mosquitto` (``extra``: more config lines); yields its port."""
    with run_mosquitto(directory, extra) as broker:
        yield broker.port
