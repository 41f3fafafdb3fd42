"""How the fleet sends pushes: the server's HTTP API, or MQTT PUBLISH to a broker.

- :class:`HttpClient`: a small keep-alive HTTP/1.1 client (h11) on a connector's stream.
- :func:`create_app` / :func:`check_app`: set up or verify the app the fleet pushes for.
- :class:`HttpPusher`: ``POST /v1/push`` to one registration id; honours 429 Retry-After.
- :func:`open_publisher`: a QoS 1 MQTT publisher written with the project's sans-IO codec;
  several tasks may publish at once (pipelined, each waits for its own PUBACK).
"""
from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Disconnect,
    PingReq,
    PubAck,
    Publish,
    RemoteProtocolError,
    Role,
)
from pushsdk.registration import parse_server_url
from pushsdk.transport import Connector, TransportError

from .plan import BrokerTarget, ServerTarget

__all__ = [
    "HttpClient", "HttpError", "HttpPusher", "MqttPublisher", "PushFailed", "check_app",
    "create_app", "open_publisher",
]

#: The reference server closes idle keep-alive connections after 30 s; reconnect before.
IDLE_REUSE_S = 20.0
#: Longest Retry-After honoured before a push counts as failed.
MAX_RETRY_AFTER_S = 5.0
#: How long a push may wait for its answer (HTTP 200 or PUBACK).
PUSH_TIMEOUT_S = 30.0


class HttpError(Exception):
    """No usable HTTP answer (connection failed or broke, malformed response)."""


class PushFailed(Exception):
    """A push was not accepted; the message says why (one line)."""


class HttpClient:
    """Sequential HTTP/1.1 requests over one kept-alive connection, reopened when needed."""

    def __init__(self, connector: Connector, server_url: str, timeout: float = 30.0) -> None:
        self._connector = connector
        self.host, self.port, self.tls, self._base = parse_server_url(server_url)
        default = 443 if self.tls else 80
        self._host_header = self.host if self.port == default else f"{self.host}:{self.port}"
        self._timeout = timeout
        self._stream: trio.abc.Stream | None = None
        self._conn: h11.Connection | None = None
        self._last_used = -math.inf

    async def request(self, method: str, path: str, *, headers: list[tuple[str, str]] = (),
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """``(status, headers (lower-case names), body)``; raises :class:`HttpError`."""
        try:
            with trio.fail_after(self._timeout):
                return await self._request(method, path, headers, body)
        except trio.TooSlowError:
            await self.aclose()
            raise HttpError(f"no answer from {self.host}:{self.port} within "
                            f"{self._timeout:g} s") from None
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.ProtocolError, OSError) as exc:
            await self.aclose()
            raise HttpError(str(exc) or type(exc).__name__) from None

    async def _request(self, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._stream is not None and trio.current_time() - self._last_used > IDLE_REUSE_S:
            await self.aclose()
        if self._stream is None:
            self._stream = await self._connector.connect(self.host, self.port, tls=self.tls)
            self._conn = h11.Connection(h11.CLIENT)
        conn = self._conn
        assert conn is not None
        all_headers = [("Host", self._host_header), ("User-Agent", "pushsim-fleet"),
                       ("Content-Length", str(len(body))), *headers]
        out = conn.send(h11.Request(method=method, target=self._base + path,
                                    headers=all_headers))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await self._stream.send_all(out)
        status, answer_headers, answer = 0, {}, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpError("server closed the connection without answering")
        self._last_used = trio.current_time()
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()
        return status, answer_headers, bytes(answer)

    async def aclose(self) -> None:
        stream, self._stream, self._conn = self._stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _error_text(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"HTTP {status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"


def _basic(app_key: str, master_secret: str) -> tuple[str, str]:
    token = base64.b64encode(f"{app_key}:{master_secret}".encode()).decode()
    return ("Authorization", f"Basic {token}")


async def create_app(client: HttpClient, admin_token: str, name: str) -> tuple[str, str]:
    """``POST /v1/apps`` → ``(app_key, master_secret)``; :class:`PushFailed` if refused."""
    status, _, body = await client.request(
        "POST", "/v1/apps", headers=[("Authorization", f"Bearer {admin_token}"),
                                     ("Content-Type", "application/json")],
        body=json.dumps({"name": name}).encode())
    if status != 201:
        raise PushFailed(f"cannot create an app: {_error_text(status, body)}")
    answer = json.loads(body)
    return answer["app_key"], answer["master_secret"]


async def check_app(client: HttpClient, app_key: str, master_secret: str) -> None:
    """Check the credentials with a status query for a message that does not exist (404)."""
    status, _, body = await client.request(
        "GET", "/v1/messages/pushsim-fleet-check", headers=[_basic(app_key, master_secret)])
    if status == 401:
        raise PushFailed(f"app key / master secret refused: {_error_text(status, body)}")
    if status not in (200, 404):
        raise PushFailed(f"unexpected answer checking the app: {_error_text(status, body)}")


class HttpPusher:
    """Sends data pushes to single devices through ``POST /v1/push``."""

    def __init__(self, client: HttpClient, target: ServerTarget, ttl: int = 86400) -> None:
        self._client = client
        self._auth = _basic(target.app_key, target.master_secret)
        self._ttl = ttl
        self.rate_limited = 0  # 429 answers waited out

    async def push(self, registration_id: str, make_data: Callable[[], dict[str, Any]]) -> None:
        """Push ``make_data()`` (called per attempt, so its timestamp is fresh).

        Returns once the server accepted it for the device; raises :class:`PushFailed`.
        """
        while True:
            body = json.dumps({
                "audience": {"registration_id": [registration_id]},
                "message": {"data": make_data()},
                "options": {"ttl": self._ttl},
            }, separators=(",", ":")).encode()
            try:
                status, headers, answer = await self._client.request(
                    "POST", "/v1/push", headers=[self._auth, ("Content-Type", "application/json")],
                    body=body)
            except HttpError as exc:
                raise PushFailed(f"push failed: {exc}") from None
            if status == 200:
                if json.loads(answer).get("targets") != 1:
                    raise PushFailed("push matched no device")
                return
            if status == 429:
                wait = _retry_after(headers.get("retry-after"))
                if wait is not None:
                    self.rate_limited += 1
                    await trio.sleep(wait)
                    continue
            raise PushFailed(_error_text(status, answer))


def _retry_after(value: str | None) -> float | None:
    try:
        wait = float(value) if value is not None else 1.0
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER_S else None


class MqttPublisher:
    """QoS 1 publishing over one MQTT connection (use :func:`open_publisher`)."""

    def __init__(self, stream: trio.abc.Stream, keepalive: int) -> None:
        self._stream = stream
        self._conn = Connection(Role.CLIENT)
        self._keepalive = keepalive
        self._send_lock = trio.StrictFIFOLock()
        self._waiting: dict[int, trio.Event] = {}
        self._next_id = 1
        self._last_sent = trio.current_time()
        self.broken: str | None = None

    async def publish(self, topic: str, payload: bytes, timeout: float = PUSH_TIMEOUT_S) -> None:
        """Publish at QoS 1; returns on PUBACK, raises :class:`PushFailed` otherwise."""
        if self.broken:
            raise PushFailed(f"publisher connection lost: {self.broken}")
        packet_id = self._allocate()
        done = self._waiting[packet_id] = trio.Event()
        try:
            await self._send(Publish(topic=topic, payload=payload, qos=1, packet_id=packet_id))
            with trio.move_on_after(timeout):
                await done.wait()
        finally:
            self._waiting.pop(packet_id, None)
        if not done.is_set():
            raise PushFailed(f"no PUBACK within {timeout:g} s")
        if self.broken:
            raise PushFailed(f"publisher connection lost: {self.broken}")

    def _allocate(self) -> int:
        while True:
            packet_id, self._next_id = self._next_id, self._next_id % 65535 + 1
            if packet_id not in self._waiting:
                return packet_id

    async def _send(self, event: Any) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(self._conn.send(event))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(str(exc) or type(exc).__name__)
                raise PushFailed(f"publisher connection lost: {self.broken}") from None
            self._last_sent = trio.current_time()

    def _fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        for event in self._waiting.values():
            event.set()

    async def _next(self) -> Any:
        while (event := self._conn.next_event()) is NEED_DATA:
            self._conn.receive_data(await self._stream.receive_some(65536))
        return event

    async def _handshake(self, client_id: str, username: str | None,
                         password: str | None) -> None:
        await self._send(Connect(client_id=client_id, keepalive=self._keepalive,
                                 clean_session=True, username=username,
                                 password=password.encode() if password is not None else None))
        event = await self._next()
        if not isinstance(event, ConnAck):
            raise TransportError("broker closed the connection before CONNACK")
        if event.return_code != 0:
            raise TransportError(f"broker refused the publisher (CONNACK {event.return_code})")

    async def _read_loop(self) -> None:
        try:
            while True:
                event = await self._next()
                if isinstance(event, PubAck):
                    waiter = self._waiting.get(event.packet_id)
                    if waiter is not None:
                        waiter.set()
                elif isinstance(event, ConnectionClosed):
                    self._fail("broker closed the connection")
                    return
        except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError) as exc:
            self._fail(str(exc) or type(exc).__name__)

    async def _keepalive_loop(self) -> None:
        while not self.broken:
            await trio.sleep_until(self._last_sent + self._keepalive / 2)
            if trio.current_time() - self._last_sent >= self._keepalive / 2:
                try:
                    await self._send(PingReq())
                except PushFailed:
                    return

    async def _goodbye(self) -> None:
        with trio.move_on_after(1.0):
            try:
                await self._send(Disconnect())
            except PushFailed:
                pass


@asynccontextmanager
async def open_publisher(connector: Connector, target: BrokerTarget, client_id: str,
                         timeout: float = 10.0,
                         keepalive: int = 60) -> AsyncIterator[MqttPublisher]:
    """Connect a publisher (clean session); raises :class:`TransportError` if it cannot."""
    with trio.fail_after(timeout):
        stream = await connector.connect(target.host, target.port, tls=target.tls)
    try:
        publisher = MqttPublisher(stream, keepalive)
        try:
            with trio.fail_after(timeout):
                await publisher._handshake(client_id, target.username, target.password)
        except trio.TooSlowError:
            raise TransportError(f"no CONNACK from {target.host}:{target.port} "
                                 f"within {timeout:g} s") from None
        except (RemoteProtocolError, trio.BrokenResourceError, PushFailed) as exc:
            raise TransportError(f"broker {target.host}:{target.port}: {exc}") from None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher._read_loop)
            nursery.start_soon(publisher._keepalive_loop)
            try:
                yield publisher
            finally:
                with trio.CancelScope(shield=True):
                    await publisher._goodbye()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
