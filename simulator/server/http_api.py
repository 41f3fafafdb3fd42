"""The HTTP API of the reference server (interfaces §2): routes, authentication, answers.

:func:`answer` turns one complete request into a :class:`Reply` and never raises for
anything a client sends: errors are ``{"error": {"code", "message"}}`` with a 4xx status
(503 when storage fails), never a 500 for client input. The connection itself — framing,
keep-alive, time and size limits, smuggling defences — is ``http_connection.py``.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import h11
import trio

from .store import StoreError
from .validation import (
    InvalidRequest,
    compact_json,
    parse_app_request,
    parse_device_request,
    parse_device_update,
    parse_json,
)

from .connections import close_stream
from .records import Refused
from .logs import server_logger

if TYPE_CHECKING:
    from .server import PushServer

__all__ = ["TOO_MANY_CONNECTIONS", "serve_http"]

log = server_logger("simulator.server.http")

_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253})(:\d{1,5})?$")


@attrs.frozen
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # end the connection after this answer
    #: Seconds to read nothing more from this connection after sending this answer: a
    #: client over its address's rate waits out the Retry-After it was given as TCP
    #: back-pressure, instead of costing the server a parse and a 429 per pipelined request.
    pause: float = 0.0


def json_reply(status: int, doc: Any, **kwargs: Any) -> Reply:
    return Reply(status, compact_json(doc), **kwargs)


def error_reply(status: int, code: str, message: str, **kwargs: Any) -> Reply:
    # ASCII-escaped: a message quoting client input can hold nothing unencodable.
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return Reply(status, body.encode(), **kwargs)


class HttpError(Exception):
    """Raised by route handlers to answer with an error."""

    def __init__(self, status: int, code: str, message: str,
                 headers: tuple[tuple[str, str], ...] = (), pause: float = 0.0) -> None:
        super().__init__(message)
        self.reply = error_reply(status, code, message, headers=headers, pause=pause)


@attrs.frozen
class Call:
    """One request as a route handler sees it."""

    server: PushServer
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes
    param: str  # the <id> path segment, or ""
    peer: str | None = None  # the client's address; None for an in-memory stream

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def json(self) -> Any:
        return parse_json(self.body)


# --- authentication ---------------------------------------------------------------------

def _unauthorized(scheme: str, message: str) -> HttpError:
    return HttpError(401, "unauthorized", message,
                     headers=(("WWW-Authenticate", f'{scheme} realm="pushsim"'),))


def _credentials(call: Call, scheme: str) -> str:
    value = call.header(b"authorization")
    if value is None:
        raise _unauthorized(scheme, f"missing Authorization: {scheme} header")
    given, _, credentials = value.strip().partition(" ")
    if given.lower() != scheme.lower() or not credentials.strip():
        raise _unauthorized(scheme, f"Authorization must use the {scheme} scheme")
    return credentials.strip()


def _admin(call: Call) -> None:
    if not _is_admin(call):
        _credentials(call, "Bearer")  # 401 for a missing or malformed header first
        raise _unauthorized("Bearer", "wrong admin token")


def _is_admin(call: Call) -> bool:
    """Whether the request carries ``Authorization: Bearer <admin token>``."""
    value = call.header(b"authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("latin-1"), call.server.settings.admin_token.encode())


def _app(call: Call) -> str:
    """Authenticate HTTP Basic ``app_key:master_secret``; returns the app key."""
    encoded = _credentials(call, "Basic")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _unauthorized("Basic", "malformed Basic credentials") from None
    app_key, sep, secret = decoded.partition(":")
    if not sep or not call.server.authenticate_app(app_key, secret):
        raise _unauthorized("Basic", "unknown app key or wrong master secret")
    return app_key


# --- routes -----------------------------------------------------------------------------

async def create_app(call: Call) -> Reply:
    _admin(call)
    request = parse_app_request(call.json())
    app = await call.server.create_app_async(request.name)
    return json_reply(201, {"name": app.name, "app_key": app.app_key,
                            "master_secret": app.master_secret})


async def register_device(call: Call) -> Reply:
    app_key = call.header(b"x-app-key")
    if not app_key:
        raise HttpError(401, "unauthorized", "missing X-App-Key header")
    if not call.server.app_exists(app_key):
        raise HttpError(401, "unauthorized", "unknown app key")
    wait = call.server.take_registration_token(app_key, call.peer)
    if wait:
        retry_after = max(1, math.ceil(wait))
        raise HttpError(429, "rate_limited", "too many registrations; slow down",
                        headers=(("Retry-After", str(retry_after)),), pause=retry_after)
    request = parse_device_request(call.json())
    bearer = _bearer(call) if call.header(b"authorization") is not None else None
    server = call.server
    reg = await server.register_device_async(app_key, request, bearer=bearer)
    return json_reply(200, {
        "registration_id": reg.registration_id,
        "token": reg.token,
        "token_expires_at": reg.token_expires_at,
        "mqtt": _mqtt_endpoint(server, call),
        "inbox": reg.inbox,
    })


#: The MQTT versions the gateway accepts (the registration answer's ``mqtt.versions``).
MQTT_VERSIONS = ("3.1.1", "5")


def _mqtt_endpoint(server: PushServer, call: Call) -> dict[str, Any]:
    """Where the device connects: ``{"host", "port", "tls", "versions", "ws"?}``."""
    config = server.settings
    host = config.mqtt_host or _host_of(call)
    endpoint: dict[str, Any] = {"host": host, "port": config.mqtt_port,
                                "tls": config.mqtt_tls, "versions": list(MQTT_VERSIONS)}
    if config.mqtt_ws_url is not None:
        scheme, _, rest = config.mqtt_ws_url.partition("://")
        port_and_path = rest.split("]")[-1].partition(":")[2]
        url_host = f"[{host}]" if ":" in host else host
        endpoint["ws"] = f"{scheme}://{url_host}:{port_and_path}"
    return endpoint


def _refusal_reply(refused: Refused) -> Reply:
    refusal = refused.refusal
    doc: dict[str, Any] = {"error": {"code": refusal.code, "message": refusal.message}}
    if refusal.challenge is not None:
        doc["challenge"] = refusal.challenge
        expires_in = refusal.challenge_expires_in or 0.0
        doc["challenge_expires_in"] = int(expires_in) if float(expires_in).is_integer() \
            else expires_in
    return json_reply(refusal.status, doc)


def _host_of(call: Call) -> str:
    """The host name the client used to reach us (its Host header), for the MQTT address."""
    match = _HOST_RE.match(call.header(b"host") or "")
    if not match:
        return "127.0.0.1"
    return match.group(1).strip("[]")


def _bearer(call: Call) -> str:
    return _credentials(call, "Bearer")


def _device_or_app(call: Call) -> tuple[str, bool]:
    """Who may change or delete registration ``call.param``: the device (Bearer token of
    that registration), its app server (Basic master secret), or — ``allow_admin`` — the
    admin token. ``(app_key, by_app)``; 401/403/404 otherwise."""
    value = call.header(b"authorization") or ""
    if value[:6].lower() == "basic ":
        app_key = _app(call)
        if call.server.device_app(call.param) != app_key:
            raise HttpError(404, "not_found", "no such registration_id in this app")
        return app_key, True
    token = _bearer(call)
    owner = call.server.authenticate_device(token)
    if owner is None:
        raise _unauthorized("Bearer", "unknown, expired or revoked device token")
    if owner.registration_id != call.param:
        raise HttpError(403, "forbidden", "this token belongs to another device")
    return owner.app_key, False


async def update_device(call: Call) -> Reply:
    _, by_app = _device_or_app(call)
    update = parse_device_update(call.json())
    try:
        device = await call.server.update_device_async(call.param, update, by_app=by_app)
    except KeyError:
        raise HttpError(404, "not_found", "no such registration_id") from None
    return json_reply(200, {"registration_id": device.registration_id, "alias": device.alias,
                            "tags": list(device.tags)})


async def delete_device(call: Call) -> Reply:
    """Unregister (the device itself, its app server, or the admin token)."""
    if _is_admin(call):
        app_key = call.server.device_app(call.param)
        if app_key is None:
            raise HttpError(404, "not_found", "no such registration_id")
    else:
        app_key, _ = _device_or_app(call)
    if not await call.server.delete_device_async(app_key, call.param):
        raise HttpError(404, "not_found", "no such registration_id")
    return json_reply(200, {})


async def device_keys(call: Call) -> Reply:
    """The device's end-to-end public keys, for its app's provider (docs/security.md)."""
    app_key = _app(call)
    keys = call.server.webpush_keys(app_key, call.param)
    if keys is None:
        raise HttpError(404, "not_found",
                        "no end-to-end keys registered for this registration_id in this app")
    return json_reply(200, {"registration_id": call.param,
                            "webpush": {"p256dh": keys[0], "auth": keys[1]}})


async def push(call: Call) -> Reply:
    received = trio.current_time()
    app_key = _app(call)
    server = call.server
    wait = server.take_push_token(app_key)
    if wait:
        raise HttpError(429, "rate_limited", "too many pushes for this app; slow down",
                        headers=(("Retry-After", str(max(1, math.ceil(wait)))),))
    result = await server.push_body_async(app_key, call.json())
    server.counters.push_latency.observe(trio.current_time() - received)
    return json_reply(200, {"msg_id": result.msg_id, "targets": result.targets})


async def message_status(call: Call) -> Reply:
    app_key = _app(call)
    status = await call.server.message_status_async(app_key, call.param)
    if status is None:
        raise HttpError(404, "not_found", "no message with this msg_id for this app")
    return json_reply(200, attrs.asdict(status))


async def healthz(call: Call) -> Reply:
    return json_reply(200, {"status": "ok"})


async def metrics(call: Call) -> Reply:
    return Reply(200, await call.server.metrics_text_async(),
                 content_type="text/plain; version=0.0.4; charset=utf-8")


Handler = Callable[[Call], Awaitable[Reply]]
#: path -> {method: handler}; "{id}" stands for one non-empty path segment.
ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/apps": {"POST": create_app},
    "/v1/devices": {"POST": register_device},
    "/v1/devices/{id}": {"PUT": update_device, "DELETE": delete_device},
    "/v1/devices/{id}/keys": {"GET": device_keys},
    "/v1/push": {"POST": push},
    "/v1/messages/{id}": {"GET": message_status},
    "/healthz": {"GET": healthz},
    "/metrics": {"GET": metrics},
}


def _route(path: str) -> tuple[dict[str, Handler] | None, str]:
    methods = ROUTES.get(path)
    if methods is not None:
        return methods, ""
    segments = path.split("/")
    for pattern, methods in ROUTES.items():
        parts = pattern.split("/")
        if len(parts) != len(segments) or "{id}" not in parts:
            continue
        i = parts.index("{id}")
        if segments[i] and parts[:i] + parts[i + 1:] == segments[:i] + segments[i + 1:]:
            return methods, segments[i]
    return None, ""


def dispatch(server: PushServer, request: h11.Request, body: bytes) -> Reply:
    """:func:`answer` for in-process callers (tests), with writes that commit at once."""
    return server.run_now(answer(server, request, body))


async def answer(server: PushServer, request: h11.Request, body: bytes,
                 peer: str | None = None) -> Reply:
    """Answer one complete request. Never raises (but may be cancelled).

    A write (push, registration, ...) is answered once it is committed; if the commit
    fails the answer is 503 ``storage_unavailable`` and nothing of it was stored."""
    if peer is not None:
        admitted, wait = server.request_limit.reserve(
            peer, trio.current_time(), server.limits.request_delay_per_address)
        if not admitted:
            server.counters.requests_rate_limited += 1
            retry_after = max(1, math.ceil(wait))
            return error_reply(429, "rate_limited", "too many requests from your address",
                               headers=(("Retry-After", str(retry_after)),), pause=retry_after)
        if wait:  # over the rate: its turn comes in ``wait`` (pacing, not bursts)
            server.counters.requests_delayed += 1
            await trio.sleep(wait)
    path = request.target.decode("latin-1").partition("?")[0]
    methods, param = _route(path)
    if methods is None:
        return error_reply(404, "not_found", f"no such path: {path[:200]}")
    method = request.method.decode("latin-1")
    handler = methods.get("GET" if method == "HEAD" else method)
    if handler is None:
        allowed = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
        return error_reply(405, "method_not_allowed", f"{method[:20]} is not allowed here",
                           headers=(("Allow", allowed),))
    call = Call(server, dict(request.headers), body, param, peer)
    try:
        return await handler(call)
    except HttpError as exc:
        return exc.reply
    except Refused as exc:
        return _refusal_reply(exc)
    except InvalidRequest as exc:
        return error_reply(exc.status, exc.code, exc.message)
    except (StoreError, sqlite3.Error) as exc:
        log.error("storage failed on %s %s: %s", method, path, exc)
        return error_reply(503, "storage_unavailable", "storage is not available; retry later")
    except Exception:
        log.exception("bug while answering %s %s", method, path)
        return error_reply(500, "internal_error", "internal server error")


# --- the connection ----------------------------------------------------------------------

#: The answer to a connection refused for its source address's limits (before it is read).
TOO_MANY_CONNECTIONS = error_reply(429, "too_many_connections",
                                   "too many connections from your address",
                                   headers=(("Retry-After", "1"),), close=True)


async def serve_http(server: PushServer, stream: trio.abc.Stream,
                     peer: str | None = None, *, entered: bool = False) -> None:
    """Serve HTTP/1.1 on one accepted connection until it ends; closes ``stream``. Never
    raises for anything the client does. A connection from an address over its limits
    (``max_connections_per_address``, the per-address connection rate) gets
    :data:`TOO_MANY_CONNECTIONS` at once and is closed. ``entered``: the caller has entered
    it in ``server.connections`` already, and it was admitted (the plain HTTP listener,
    which refuses without a task); it is left here all the same."""
    from .http_connection import HttpConnection, refuse

    connections = server.connections
    if not entered and not connections.enter("http", peer):
        try:
            await refuse(stream, server.limits, server.counters, TOO_MANY_CONNECTIONS)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
        return
    try:
        connection = HttpConnection(
            stream, server.limits, lambda request, body: answer(server, request, body, peer),
            server.counters, server.rng)
        await connection.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    except Exception:  # a bug: logged, this connection ends, the listener goes on
        log.exception("HTTP connection handler failed")
    finally:
        connections.leave("http", peer)
        await close_stream(stream)
