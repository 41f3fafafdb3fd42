"""Device registration: ``POST /v1/devices`` over HTTP/1.1 (h11) on a connector's stream.

Registration is idempotent per ``(app_key, device_id)`` on the server: the same
``registration_id`` comes back and a fresh token is issued each time (CONTRACT §2).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import attrs
import h11
import trio

from .transport import Connector, TransportError

__all__ = ["Registration", "RegistrationError", "parse_server_url", "register"]

#: Largest response body accepted; a registration answer is a few hundred bytes.
MAX_RESPONSE_BYTES = 64 * 1024
_USER_AGENT = "pushsdk/0.1"


class RegistrationError(Exception):
    """The server refused the registration or answered something unusable.

    ``status`` is the HTTP status (``None`` when there was no usable response), ``code`` and
    ``message`` come from the server's ``{"error": {"code", "message"}}`` body when present.
    """

    def __init__(self, status: int | None, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"registration failed: {where}{code}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (server trouble, rate limit)."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


@attrs.frozen
class Registration:
    """A successful registration: the §2 answer plus what it was requested with."""

    server_url: str
    app_key: str
    device_id: str
    registration_id: str
    token: str
    token_expires_at: float  # Unix seconds
    inbox: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool

    @property
    def receipt_topic(self) -> str:
        """Topic for opened/dismissed receipts (CONTRACT §3)."""
        return f"rcpt/{self.app_key}/{self.registration_id}"

    def is_for(self, server_url: str, app_key: str, device_id: str) -> bool:
        return (self.server_url, self.app_key, self.device_id) == (server_url, app_key, device_id)

    def token_expired(self, now: float, margin: float = 0.0) -> bool:
        """True when the token expires within ``margin`` seconds of ``now`` (Unix seconds)."""
        return now >= self.token_expires_at - margin

    def answer(self) -> dict[str, Any]:
        """The server's answer in its §2 JSON shape (what ``pushsdk register`` prints)."""
        return {
            "registration_id": self.registration_id,
            "token": self.token,
            "token_expires_at": self.token_expires_at,
            "mqtt": {"host": self.mqtt_host, "port": self.mqtt_port, "tls": self.mqtt_tls},
            "inbox": self.inbox,
        }

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Registration:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for anything malformed."""
        try:
            reg = cls(**{f.name: data[f.name] for f in attrs.fields(cls)})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad registration record: {exc}") from None
        _check_fields(reg)
        return reg

    @classmethod
    def from_answer(
        cls, answer: Any, *, server_url: str, app_key: str, device_id: str
    ) -> Registration:
        """Build from the server's §2 JSON answer; raises ``ValueError`` if it is malformed."""
        if not isinstance(answer, Mapping) or not isinstance(answer.get("mqtt"), Mapping):
            raise ValueError("answer is not an object with an 'mqtt' object")
        mqtt = answer["mqtt"]
        try:
            reg = cls(
                server_url=server_url,
                app_key=app_key,
                device_id=device_id,
                registration_id=answer["registration_id"],
                token=answer["token"],
                token_expires_at=answer["token_expires_at"],
                inbox=answer["inbox"],
                mqtt_host=mqtt["host"],
                mqtt_port=mqtt["port"],
                mqtt_tls=mqtt.get("tls", False),
            )
        except KeyError as exc:
            raise ValueError(f"answer lacks {exc.args[0]!r}") from None
        _check_fields(reg)
        return reg


def _check_fields(reg: Registration) -> None:
    for name in ("server_url", "app_key", "device_id", "registration_id", "token", "inbox",
                 "mqtt_host"):
        value = getattr(reg, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    expires = reg.token_expires_at
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(
        expires
    ):
        raise ValueError("token_expires_at must be a number")
    port = reg.mqtt_port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("mqtt.port must be an integer in 1..65535")
    if not isinstance(reg.mqtt_tls, bool):
        raise ValueError("mqtt.tls must be a boolean")


def parse_server_url(url: str) -> tuple[str, int, bool, str]:
    """Split ``http[s]://host[:port][/base]`` into ``(host, port, tls, base_path)``.

    Raises ``ValueError`` with a readable message for anything else.
    """
    parts, port, tls = split_url(url, "server", {"http": False, "https": True},
                                 "http:// or https://")
    return parts.hostname, port or (443 if tls else 80), tls, parts.path.rstrip("/")


def split_url(url: str, what: str, schemes: Mapping[str, bool],
              expected: str) -> tuple[SplitResult, int | None, bool]:
    """``(parts, port or None, tls)`` of a ``what`` URL whose scheme is one of ``schemes``
    (mapped to whether it means TLS; ``expected`` names them for the error); ``ValueError``
    with a one-line reason otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"{what} URL must start with {expected}: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {what} URL {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"{what} URL has no host: {url!r}")
    return parts, port, schemes[parts.scheme]


async def register(
    connector: Connector,
    server_url: str,
    app_key: str,
    device_id: str,
    *,
    platform: str = "android",
    alias: str | None = None,
    tags: Iterable[str] | None = None,
    webpush: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    on_traffic: Callable[[int, int], None] | None = None,
) -> Registration:
    """Register (or re-register) this device and return the server's answer.

    Raises :class:`RegistrationError` for an HTTP error or an unusable answer,
    :class:`~pushsdk.transport.TransportError` when the server cannot be reached or the
    exchange takes longer than ``timeout`` seconds, ``ValueError`` for a bad ``server_url``.
    ``on_traffic(sent, received)`` is called with byte counts as they happen.
    ``webpush`` (``{"p256dh", "auth"}``, base64url) registers the device's end-to-end keys.
    """
    host, port, tls, base = parse_server_url(server_url)
    body: dict[str, Any] = {"device_id": device_id, "platform": platform}
    if alias is not None:
        body["alias"] = alias
    if tags is not None:
        body["tags"] = list(tags)
    if webpush is not None:
        body["webpush"] = dict(webpush)
    default_port = 443 if tls else 80
    request = _Request(
        host_header=host if port == default_port else f"{host}:{port}",
        target=f"{base}/v1/devices",
        headers=[("X-App-Key", app_key)],
        body=json.dumps(body).encode(),
    )
    try:
        with trio.fail_after(timeout):
            stream = await connector.connect(host, port, tls=tls)
            try:
                status, payload = await _exchange(stream, request, on_traffic)
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        raise TransportError(
            f"registration at {server_url} timed out after {timeout:g} s"
        ) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise TransportError(f"connection to {server_url} broke: {exc}") from exc

    answer = _decode_json(payload)
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", f"http_{status}"))
            message = str(error.get("message", ""))
        else:
            code, message = f"http_{status}", payload[:200].decode("utf-8", "replace")
        raise RegistrationError(status, code, message)
    try:
        return Registration.from_answer(
            answer, server_url=server_url, app_key=app_key, device_id=device_id
        )
    except ValueError as exc:
        raise RegistrationError(status, "bad_response", str(exc)) from None


@attrs.frozen
class _Request:
    host_header: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


def _decode_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


async def _exchange(
    stream: trio.abc.Stream,
    request: _Request,
    on_traffic: Callable[[int, int], None] | None,
) -> tuple[int, bytes]:
    """Send one POST and read the whole response (Content-Length, chunked or until close)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
    headers = [
        ("Host", request.host_header),
        ("User-Agent", _USER_AGENT),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(request.body))),
        ("Connection", "close"),
        *request.headers,
    ]
    out = conn.send(h11.Request(method="POST", target=request.target, headers=headers))
    out += conn.send(h11.Data(data=request.body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(out)
    if on_traffic:
        on_traffic(len(out), 0)

    status: int | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(16 * 1024)
                if on_traffic:
                    on_traffic(0, len(data))
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_RESPONSE_BYTES:
                    raise RegistrationError(status, "bad_response", "response body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert status is not None
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise RegistrationError(None, "bad_response", "server closed without answering")
            # h11.InformationalResponse (100 Continue): nothing to do.
    except h11.RemoteProtocolError as exc:
        raise RegistrationError(status, "bad_response", f"invalid HTTP response: {exc}") from None
