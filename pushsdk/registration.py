"""Device registration over HTTP/1.1 (h11) on a connector's stream: ``POST /v1/devices``
(with the device-identity proof, :mod:`pushsdk.identity`), ``PUT /v1/devices/<id>`` (alias and
tags) and ``DELETE /v1/devices/<id>``.

Registration is idempotent per ``(app_key, device_id)`` for the installation that holds the
registration's key (or, for a registration made before keys existed, one of its tokens): the
same ``registration_id`` comes back with a fresh token. The code runs on trio and asyncio.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import attrs
import h11
import trio

from . import _backend
from .errors import RegistrationError, RegistrationRefused, TransportError, registration_error
from .identity import DeviceKey

if TYPE_CHECKING:
    from ._session import ByteStream
    from .transport import Connector

__all__ = ["Registration", "RegistrationError", "RegistrationRefused", "parse_server_url",
           "register", "unregister_device", "update_device"]

#: Largest response body accepted; a registration answer is a few hundred bytes.
MAX_RESPONSE_BYTES = 64 * 1024
_USER_AGENT = "pushsdk/0.1"


def _optional_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Registration:
    """A successful registration: the §2 answer plus what it was requested with."""

    server_url: str
    app_key: str
    device_id: str
    registration_id: str
    token: str = attrs.field(repr=False)
    token_expires_at: float  # Unix seconds
    inbox: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool
    #: The alias and tags the server holds for the device, as far as the SDK knows
    #: (``profile_known`` False: a record from before the SDK tracked them).
    alias: str | None = None
    tags: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    profile_known: bool = False
    #: The MQTT versions the gateway accepts (``mqtt.versions``; an older server sends
    #: none: 3.1.1 only) and its MQTT-over-WebSocket URL (``mqtt.ws``), if it serves one.
    mqtt_versions: tuple[str, ...] = attrs.field(default=("3.1.1",), converter=_str_tuple)
    mqtt_ws: str | None = None

    @property
    def receipt_topic(self) -> str:
        """Topic for opened/dismissed receipts (interfaces §3)."""
        return f"rcpt/{self.app_key}/{self.registration_id}"

    def is_for(self, server_url: str, app_key: str, device_id: str) -> bool:
        return (self.server_url, self.app_key, self.device_id) == (server_url, app_key, device_id)

    def token_expired(self, now: float, margin: float = 0.0) -> bool:
        """True when the token expires within ``margin`` seconds of ``now`` (Unix seconds)."""
        return now >= self.token_expires_at - margin

    def answer(self) -> dict[str, Any]:
        """The server's answer in its §2 JSON shape (what ``pushsdk register`` prints)."""
        mqtt: dict[str, Any] = {"host": self.mqtt_host, "port": self.mqtt_port,
                                "tls": self.mqtt_tls}
        if self.mqtt_versions != ("3.1.1",):
            mqtt["versions"] = list(self.mqtt_versions)
        if self.mqtt_ws is not None:
            mqtt["ws"] = self.mqtt_ws
        return {
            "registration_id": self.registration_id,
            "token": self.token,
            "token_expires_at": self.token_expires_at,
            "mqtt": mqtt,
            "inbox": self.inbox,
        }

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["tags"] = list(self.tags) if self.tags is not None else None
        data["mqtt_versions"] = list(self.mqtt_versions)
        return data

    def with_profile(self, alias: str | None, tags: Iterable[str] | None) -> Registration:
        return attrs.evolve(self, alias=alias, tags=tags, profile_known=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Registration:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for anything malformed. A record
        written before alias/tags were kept loads with ``profile_known`` False."""
        optional = {"alias", "tags", "profile_known", "mqtt_versions", "mqtt_ws"}
        try:
            reg = cls(**{f.name: data[f.name] for f in attrs.fields(cls)
                         if f.name not in optional or f.name in data})
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
                mqtt_versions=_versions(mqtt.get("versions")),
                mqtt_ws=mqtt.get("ws"),
            )
        except KeyError as exc:
            raise ValueError(f"answer lacks {exc.args[0]!r}") from None
        _check_fields(reg)
        return reg


def _versions(value: object) -> tuple[str, ...]:
    """``mqtt.versions`` of an answer: absent means 3.1.1 only (a server from before 5.0)."""
    if value is None:
        return ("3.1.1",)
    if not isinstance(value, list) or not value:
        raise ValueError("mqtt.versions must be a non-empty list")
    return tuple(value)


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
    if reg.alias is not None and not isinstance(reg.alias, str):
        raise ValueError("alias must be a string")
    if reg.tags is not None and not all(isinstance(t, str) for t in reg.tags):
        raise ValueError("tags must be strings")
    if not all(isinstance(v, str) for v in reg.mqtt_versions):
        raise ValueError("mqtt.versions must hold strings")
    if reg.mqtt_ws is not None and (not isinstance(reg.mqtt_ws, str)
                                    or not reg.mqtt_ws.startswith(("ws://", "wss://"))):
        raise ValueError("mqtt.ws must be a ws:// or wss:// URL")


def parse_server_url(url: str) -> tuple[str, int, bool, str]:
    """Split ``http[s]://host[:port][/base]`` into ``(host, port, tls, base_path)``.

    Raises ``ValueError`` with a readable message for anything else.
    """
    parts, port, tls = split_url(url, "server", {"http": False, "https": True},
                                 "http:// or https://")
    assert parts.hostname is not None  # split_url checked it
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


@attrs.frozen
class _Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


@attrs.frozen
class _Server:
    """Where a server URL points, and how to reach it."""

    url: str
    connector: Connector
    timeout: float
    on_traffic: Callable[[int, int], None] | None

    async def call(self, request: _Request) -> tuple[int, Any, bytes]:
        """One exchange on a fresh connection: ``(status, JSON answer or None, raw body)``.
        Raises :class:`TransportError` (unreachable, timeout) or :class:`RegistrationError`
        (no usable HTTP answer)."""
        host, port, tls, base = parse_server_url(self.url)
        default_port = 443 if tls else 80
        host_header = host if port == default_port else f"{host}:{port}"
        io = _backend.current()
        async with io.scope(io.now() + self.timeout) as scope:
            try:
                stream = await self.connector.connect(host, port, tls=tls)
                try:
                    status, payload = await _exchange(
                        stream, attrs.evolve(request, target=base + request.target),
                        host_header, self.on_traffic)
                finally:
                    await io.close_stream(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
                raise TransportError(f"connection to {self.url} broke: {exc}") from exc
        if scope.cancelled_caught:
            raise TransportError(
                f"{request.method} {request.target} at {self.url} timed out after "
                f"{self.timeout:g} s: is the server up?")
        return status, _decode_json(payload), payload


def _error_of(status: int, answer: Any, payload: bytes) -> RegistrationError:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", f"http_{status}"))
        message = str(error.get("message", ""))
    else:
        code, message = f"http_{status}", payload[:200].decode("utf-8", "replace")
    if status == 401 and code in ("unauthorized", "bad_app_key", f"http_{status}"):
        message = f"{message} (check the app key)" if message else "check the app key"
    return registration_error(status, code, message)


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
    device_key: DeviceKey | None = None,
    proof_token: str | None = None,
    timeout: float = 30.0,
    on_traffic: Callable[[int, int], None] | None = None,
) -> Registration:
    """Register (or re-register) this device and return the server's answer.

    ``device_key`` is this installation's identity: its public key goes with the request and,
    when the server asks for proof (401 ``proof_required``), it signs the challenge and the
    request is sent once more. ``proof_token`` (a token of the existing registration, even an
    expired one) is the proof for a registration made before it had a key.

    Raises :class:`RegistrationRefused` for a refusal retrying cannot fix (HTTP 4xx, e.g.
    ``device_bound``, ``alias_taken``), :class:`RegistrationError` for a transient one or an
    unusable answer, :class:`~pushsdk.errors.TransportError` when the server cannot be
    reached or an exchange takes longer than ``timeout`` seconds, ``ValueError`` for a bad
    ``server_url``. ``on_traffic(sent, received)`` is called with byte counts. ``webpush``
    (``{"p256dh", "auth"}``, base64url) registers the device's end-to-end keys.
    """
    server = _Server(server_url, connector, timeout, on_traffic)
    body: dict[str, Any] = {"device_id": device_id, "platform": platform}
    if alias is not None:
        body["alias"] = alias
    if tags is not None:
        body["tags"] = list(tags)
    if webpush is not None:
        body["webpush"] = dict(webpush)
    if device_key is not None:
        body["device_key"] = device_key.public
    headers = [("X-App-Key", app_key)]
    if proof_token is not None:
        headers.append(("Authorization", f"Bearer {proof_token}"))
    request = _Request("POST", "/v1/devices", tuple(headers), json.dumps(body).encode())
    status, answer, payload = await server.call(request)
    if status == 401 and device_key is not None and _challenge(answer) is not None:
        proof = device_key.prove(app_key, device_id, _challenge(answer) or "")
        request = attrs.evolve(request, body=json.dumps({**body, "proof": proof}).encode())
        status, answer, payload = await server.call(request)
    if status != 200:
        raise _error_of(status, answer, payload)
    try:
        reg = Registration.from_answer(
            answer, server_url=server_url, app_key=app_key, device_id=device_id)
    except ValueError as exc:
        raise RegistrationError(status, "bad_response", str(exc)) from None
    return reg.with_profile(alias, tags)


def _challenge(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    error = answer.get("error")
    challenge = answer.get("challenge")
    if isinstance(error, dict) and error.get("code") == "proof_required" \
            and isinstance(challenge, str) and challenge:
        return challenge
    return None


async def update_device(
    connector: Connector, registration: Registration, *, alias: str | None = None,
    tags: Iterable[str] | None = None, timeout: float = 30.0,
    on_traffic: Callable[[int, int], None] | None = None,
) -> Registration:
    """``PUT /v1/devices/<registration_id>``: set the device's alias and/or tags (``None``
    leaves one as it is). Returns the registration with what the server now holds.
    Raises like :func:`register` (409 ``alias_taken``: :class:`RegistrationRefused`)."""
    server = _Server(registration.server_url, connector, timeout, on_traffic)
    body: dict[str, Any] = {}
    if alias is not None:
        body["alias"] = alias
    if tags is not None:
        body["tags"] = list(tags)
    request = _Request("PUT", f"/v1/devices/{registration.registration_id}",
                       (("Authorization", f"Bearer {registration.token}"),),
                       json.dumps(body).encode())
    status, answer, payload = await server.call(request)
    if status != 200:
        raise _error_of(status, answer, payload)
    new_alias = alias if alias is not None else registration.alias
    new_tags = tuple(tags) if tags is not None else registration.tags
    if isinstance(answer, dict):  # what the server says it holds wins
        if "alias" in answer and (answer["alias"] is None or isinstance(answer["alias"], str)):
            new_alias = answer["alias"]
        if isinstance(answer.get("tags"), list) and all(isinstance(t, str)
                                                        for t in answer["tags"]):
            new_tags = tuple(answer["tags"])
    return registration.with_profile(new_alias, new_tags)


async def unregister_device(
    connector: Connector, registration: Registration, *, timeout: float = 30.0,
    on_traffic: Callable[[int, int], None] | None = None,
) -> None:
    """``DELETE /v1/devices/<registration_id>``: the server forgets the device (its tokens
    stop working, nothing more is queued for it). An already unknown device (404) counts as
    done. Raises like :func:`register`."""
    server = _Server(registration.server_url, connector, timeout, on_traffic)
    request = _Request("DELETE", f"/v1/devices/{registration.registration_id}",
                       (("Authorization", f"Bearer {registration.token}"),), None)
    status, answer, payload = await server.call(request)
    if status not in (200, 204, 404):
        raise _error_of(status, answer, payload)


def _decode_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


async def _exchange(
    stream: ByteStream,
    request: _Request,
    host_header: str,
    on_traffic: Callable[[int, int], None] | None,
) -> tuple[int, bytes]:
    """Send one request and read the whole response (Content-Length, chunked or until close)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
    headers = [
        ("Host", host_header),
        ("User-Agent", _USER_AGENT),
        ("Accept", "application/json"),
        ("Connection", "close"),
        *request.headers,
    ]
    if request.body is not None:
        headers += [("Content-Type", "application/json"),
                    ("Content-Length", str(len(request.body)))]
    out = conn.send(h11.Request(method=request.method, target=request.target,
                                headers=headers))
    if request.body is not None:
        out += conn.send(h11.Data(data=request.body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)
    if on_traffic:
        on_traffic(len(out), 0)
    return await _read_response(conn, stream, on_traffic)


async def _read_response(conn: h11.Connection, stream: ByteStream,
                         on_traffic: Callable[[int, int], None] | None) -> tuple[int, bytes]:
    status: int | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(16 * 1024)
                if on_traffic:
                    on_traffic(0, len(data))
                conn.receive_data(bytes(data))
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
