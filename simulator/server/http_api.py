"""The HTTP/1.1 API of the reference server (CONTRACT §2), on h11.

Robustness rules, each covered by tests:

* every request gets a JSON answer when one can still be sent — errors are
  ``{"error": {"code", "message"}}``; nothing a client sends produces a 500;
* keep-alive, with an idle timeout between requests;
* a request must arrive whole (head and body) within ``request_timeout`` of its first
  byte, else 408 and close — slow clients cannot hold connections open;
* bodies over ``max_body_bytes`` get 413 without being read, and the connection is closed
  gracefully (write side first, then draining a little) so the client sees the answer.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import http
import json
import logging
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

from .records import Refused

if TYPE_CHECKING:
    from .server import PushServer

__all__ = ["serve_http"]

log = logging.getLogger("simulator.server.http")

RECEIVE_SIZE = 16 * 1024
#: After an error that ends the connection, read (and discard) this much for this long
#: before closing, so the kernel does not reset the connection under the unread answer.
LINGER_BYTES = 256 * 1024
LINGER_SECONDS = 2.0
_REASONS = {int(s): s.phrase.encode() for s in http.HTTPStatus}
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253})(:\d{1,5})?$")


@attrs.frozen
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # end the connection after this answer


def json_reply(status: int, doc: Any, **kwargs: Any) -> Reply:
    return Reply(status, compact_json(doc), **kwargs)


def error_reply(status: int, code: str, message: str, **kwargs: Any) -> Reply:
    # ASCII-escaped: a message quoting client input can hold nothing unencodable.
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return Reply(status, body.encode(), **kwargs)


class HttpError(Exception):
    """Raised by route handlers to answer with an error."""

    def __init__(self, status: int, code: str, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.reply = error_reply(status, code, message, headers=headers)


@attrs.frozen
class Call:
    """One request as a route handler sees it."""

    server: PushServer
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes
    param: str  # the <id> path segment, or ""

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
        token.strip().encode("latin-1"), call.server.config.admin_token.encode())


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
    request = parse_device_request(call.json())
    bearer = _bearer(call) if call.header(b"authorization") is not None else None
    server = call.server
    reg = await server.register_device_async(app_key, request, bearer=bearer)
    config = server.config
    return json_reply(200, {
        "registration_id": reg.registration_id,
        "token": reg.token,
        "token_expires_at": reg.token_expires_at,
        "mqtt": {"host": config.mqtt_host or _host_of(call), "port": config.mqtt_port,
                 "tls": config.mqtt_tls},
        "inbox": reg.inbox,
    })


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
    app_key = _app(call)
    server = call.server
    wait = server.take_push_token(app_key)
    if wait:
        raise HttpError(429, "rate_limited", "too many pushes for this app; slow down",
                        headers=(("Retry-After", str(max(1, math.ceil(wait)))),))
    result = await server.push_body_async(app_key, call.json())
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
    return Reply(200, call.server.metrics_text(),
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
    return server._at_once(answer(server, request, body))


async def answer(server: PushServer, request: h11.Request, body: bytes) -> Reply:
    """Answer one complete request. Never raises (but may be cancelled).

    A write (push, registration, ...) is answered once it is committed; if the commit
    fails the answer is 503 ``storage_unavailable`` and nothing of it was stored."""
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
    call = Call(server, dict(request.headers), body, param)
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


# --- the connection loop ----------------------------------------------------------------

class _Connection:
    __slots__ = ("server", "stream", "conn")

    def __init__(self, server: PushServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes
        )

    async def run(self) -> None:
        limits = self.server.limits
        idle_deadline = trio.current_time() + limits.request_timeout  # first request
        while True:
            outcome = await self._read_request(idle_deadline)
            if outcome is None:
                return
            if isinstance(outcome, Reply):  # the request itself was unacceptable
                request, reply = None, outcome
            else:
                request, body = outcome
                reply = await answer(self.server, request, body)
            head = request is not None and request.method == b"HEAD"
            if not await self._send_reply(reply, head=head):
                return
            if reply.close or self.conn.our_state is not h11.DONE:
                await self._linger()
                return
            if self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()
            idle_deadline = trio.current_time() + limits.idle_timeout

    async def _read_request(
        self, idle_deadline: float
    ) -> tuple[h11.Request, bytes] | Reply | None:
        """The next request with its body, an error Reply, or None to close silently."""
        conn, limits = self.conn, self.server.limits
        request_deadline = None
        if conn.trailing_data[0]:  # pipelined: the next request has started already
            request_deadline = trio.current_time() + limits.request_timeout
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = "headers_too_large" if status == 431 else "bad_http"
                return error_reply(status, code, f"malformed HTTP request: {exc}", close=True)
            if event is h11.NEED_DATA:
                deadline = idle_deadline if request_deadline is None else request_deadline
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if request_deadline is None:
                        request_deadline = trio.current_time() + limits.request_timeout
                    conn.receive_data(data)
                    continue
                if request_deadline is None:
                    return None  # idle keep-alive connection: just close
                return error_reply(408, "request_timeout",
                                   f"the request did not arrive within "
                                   f"{limits.request_timeout:g} s", close=True)
            if isinstance(event, h11.Request):
                request = event
                if request_deadline is None:
                    request_deadline = trio.current_time() + limits.request_timeout
                too_big = self._check_length(request)
                if too_big is not None:
                    return too_big
                if conn.they_are_waiting_for_100_continue:
                    await self.stream.send_all(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body_bytes:
                    return self._too_large()
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed between requests
                return None

    def _check_length(self, request: h11.Request) -> Reply | None:
        limits = self.server.limits
        # h11 bounds only a head still incomplete; one that arrived whole is checked here.
        head = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head > limits.max_header_bytes:
            return error_reply(431, "headers_too_large",
                               f"request head over {limits.max_header_bytes} bytes", close=True)
        for name, value in request.headers:
            if name == b"content-length" and int(value) > limits.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> Reply:
        limit = self.server.limits.max_body_bytes
        return error_reply(413, "body_too_large", f"request body over {limit} bytes",
                           close=True)

    async def _send_reply(self, reply: Reply, *, head: bool) -> bool:
        """Send ``reply``; False if it could not be sent (the connection is finished)."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        counters = self.server.counters
        counters.http_requests += 1
        counters.http_responses[reply.status] += 1
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            ("Cache-Control", "no-store"),
            ("Server", "pushsim"),
            *reply.headers,
        ]
        if reply.close:
            headers.append(("Connection", "close"))
        data = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                      reason=_REASONS.get(reply.status, b"")))
        if reply.body and not head:
            data += conn.send(h11.Data(data=reply.body))
        data += conn.send(h11.EndOfMessage())
        with trio.move_on_after(self.server.limits.request_timeout):
            await self.stream.send_all(data)
            return True
        return False

    async def _linger(self) -> None:
        """Half-close, then drain what the client still sends, so it reads our answer."""
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await self.stream.send_eof()  # type: ignore[attr-defined]
            except AttributeError:
                return
            drained = 0
            while drained < LINGER_BYTES:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return
                drained += len(data)


async def serve_http(server: PushServer, stream: trio.abc.Stream) -> None:
    """Serve HTTP/1.1 on one accepted connection until it ends. Never raises for anything
    the client does."""
    server._http_connections += 1
    try:
        await _Connection(server, stream).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    finally:
        server._http_connections -= 1
        await trio.aclose_forcefully(stream)
