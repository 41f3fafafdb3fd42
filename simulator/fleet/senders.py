"""How the fleet sends pushes: the server's HTTP API, or MQTT PUBLISH to a broker.

- :class:`HttpClient`: a small keep-alive HTTP/1.1 client (h11) on a connector's stream.
- :func:`create_app` / :func:`check_app`: set up or verify the app the fleet pushes for.
- :class:`HttpPusher`: ``POST /v1/push`` to the registration ids of a topic group; honours 429
  Retry-After.
- :func:`delete_device`: ``DELETE /v1/devices/<registration_id>`` (the clean-up at the end).

The MQTT publisher is in :mod:`.publisher`.
"""
from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any, cast

import h11
import trio

from pushsdk.registration import parse_server_url
from pushsdk.transport import Connector, TransportError

from .plan import ServerTarget
from .publisher import PushFailed

__all__ = ["HttpClient", "HttpError", "HttpPusher", "PushFailed", "check_app", "create_app",
           "delete_device"]

#: The reference server closes idle keep-alive connections after 30 s; reconnect before.
IDLE_REUSE_S = 20.0
#: Longest Retry-After honoured before a push counts as failed.
MAX_RETRY_AFTER_S = 5.0
#: The push TTL (``options.ttl``) unless ``--message-expiry`` says otherwise; the server
#: sends what is left of it as the Message Expiry Interval to MQTT 5 devices.
DEFAULT_TTL_S = 86400
#: How long a push may wait for its answer (HTTP 200 or PUBACK).
PUSH_TIMEOUT_S = 30.0


class HttpError(Exception):
    """No usable HTTP answer (connection failed or broke, malformed response)."""


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

    async def request(self, method: str, path: str, *, headers: Sequence[tuple[str, str]] = (),
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

    async def _request(self, method: str, path: str, headers: Sequence[tuple[str, str]],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._stream is not None and trio.current_time() - self._last_used > IDLE_REUSE_S:
            await self.aclose()
        if self._stream is None:
            # The fleet runs on trio: its connectors' streams are trio streams (pushsdk's
            # ByteStream protocol is their subset).
            self._stream = cast(trio.abc.Stream, await self._connector.connect(
                self.host, self.port, tls=self.tls))
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
                data = await self._stream.receive_some(65536)
                conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes bytearray too
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

    def __init__(self, client: HttpClient, target: ServerTarget,
                 ttl: int = DEFAULT_TTL_S) -> None:
        self._client = client
        self._auth = _basic(target.app_key, target.master_secret)
        self._ttl = ttl
        self.rate_limited = 0  # 429 answers waited out

    async def push(self, registration_ids: list[str], data: dict[str, Any]) -> None:
        """Push ``data`` as a data message to the devices ``registration_ids``.

        Returns once the server accepted it for every one of them; raises
        :class:`PushFailed` (``transport`` set when the server could not be reached).
        """
        body = json.dumps({
            "audience": {"registration_id": registration_ids},
            "message": {"data": data},
            "options": {"ttl": self._ttl},
        }, separators=(",", ":")).encode()
        while True:
            try:
                status, headers, answer = await self._client.request(
                    "POST", "/v1/push", headers=[self._auth, ("Content-Type", "application/json")],
                    body=body)
            except HttpError as exc:
                failure = PushFailed(f"push failed: {exc}")
                failure.transport = True
                raise failure from None
            if status == 200:
                targets = json.loads(answer).get("targets")
                if targets != len(registration_ids):
                    raise PushFailed(f"push matched {targets} of {len(registration_ids)} "
                                     "devices")
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


async def delete_device(client: HttpClient, target: ServerTarget, registration_id: str) -> bool:
    """Unregister a device with the master secret; ``False`` if the server has no such API
    (404/405 for the path) — :class:`PushFailed` for any other refusal."""
    status, _, body = await client.request(
        "DELETE", f"/v1/devices/{registration_id}",
        headers=[_basic(target.app_key, target.master_secret)])
    if status in (200, 204):
        return True
    if status in (404, 405):
        return False
    raise PushFailed(f"cannot delete device {registration_id}: {_error_text(status, body)}")
