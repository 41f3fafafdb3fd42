"""Parsing and checking of client input: HTTP JSON bodies and MQTT receipts.

Every function here takes untrusted data and either returns a frozen record or raises
:class:`InvalidRequest` with a message that names the offending field, so the HTTP layer
can answer 400/413 and never 500 for anything a client sends.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from pushsdk.webpush import AUTH_SECRET_SIZE, b64url_decode, parse_p256dh

from .store import KEEP

__all__ = [
    "AppRequest",
    "Audience",
    "DeviceRequest",
    "DeviceUpdate",
    "InvalidRequest",
    "PushRequest",
    "Receipt",
    "compact_json",
    "parse_app_request",
    "parse_device_request",
    "parse_device_update",
    "parse_json",
    "parse_push_request",
    "parse_receipt",
]

MAX_NAME = 128
MAX_PLATFORM = 32
MAX_TAGS = 100
PRIORITIES = ("high", "normal")
AUDIENCE_KINDS = ("registration_id", "alias", "tag")
RECEIPT_EVENTS = ("opened", "dismissed")


class InvalidRequest(Exception):
    """Client input that cannot be accepted: HTTP ``status`` with an error ``code``."""

    def __init__(self, message: str, *, code: str = "invalid_request", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def compact_json(value: Any) -> bytes:
    """UTF-8 JSON without insignificant whitespace (what devices receive and what the
    4096-byte payload limit measures)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON document strictly (no NaN/Infinity, no other encodings)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body is not valid UTF-8: {exc.reason} at byte {exc.start}",
                             code="bad_json") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequest("body is nested too deeply", code="bad_json") from None
    except ValueError as exc:  # JSONDecodeError, NaN, int too long to convert
        raise InvalidRequest(f"body is not valid JSON: {exc}", code="bad_json") from None


def _fields(doc: Any, where: str, required: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    for key in doc:
        if key not in required and key not in optional:
            raise InvalidRequest(f"unknown field {key!r} in {where}")
    for key in required:
        if key not in doc:
            raise InvalidRequest(f"{where} lacks the required field {key!r}")
    return doc


def _string(value: Any, where: str, *, max_len: int = MAX_NAME, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string")
    if not value and not empty:
        raise InvalidRequest(f"{where} must not be empty")
    if len(value) > max_len:
        raise InvalidRequest(f"{where} is longer than {max_len} characters")
    return value


def _string_list(value: Any, where: str, *, max_items: int, empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a list of strings")
    if not value and not empty:
        raise InvalidRequest(f"{where} must not be empty")
    if len(value) > max_items:
        raise InvalidRequest(f"{where} has more than {max_items} entries")
    items = [_string(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(dict.fromkeys(items))  # drop duplicates, keep order


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{where} must be an integer from {low} to {high}")
    return value


# --- POST /v1/apps ------------------------------------------------------------------------

@attrs.frozen
class AppRequest:
    name: str


def parse_app_request(doc: Any) -> AppRequest:
    fields = _fields(doc, "body", ("name",))
    return AppRequest(name=_string(fields["name"], "name"))


# --- POST /v1/devices, PUT /v1/devices/<id> -----------------------------------------------

def _alias(doc: Mapping[str, Any]) -> object:
    if "alias" not in doc:
        return KEEP
    if doc["alias"] is None:
        return None  # remove the alias
    return _string(doc["alias"], "alias")


def _tags(doc: Mapping[str, Any]) -> object:
    if "tags" not in doc:
        return KEEP
    return _string_list(doc["tags"], "tags", max_items=MAX_TAGS, empty=True)


def _webpush(doc: Mapping[str, Any]) -> object:
    """End-to-end keys (docs/security.md): ``{"p256dh", "auth"}`` as base64url, checked to
    be a P-256 point and a 16-byte secret; ``null`` removes them; absent keeps them."""
    if "webpush" not in doc:
        return KEEP
    if doc["webpush"] is None:
        return None
    fields = _fields(doc["webpush"], "webpush", ("p256dh", "auth"))
    p256dh = _string(fields["p256dh"], "webpush.p256dh", max_len=200)
    auth = _string(fields["auth"], "webpush.auth", max_len=200)
    try:
        parse_p256dh(p256dh)
    except ValueError as exc:
        raise InvalidRequest(f"webpush.p256dh: {exc}") from None
    try:
        secret = b64url_decode(auth)
    except ValueError as exc:
        raise InvalidRequest(f"webpush.auth: {exc}") from None
    if len(secret) != AUTH_SECRET_SIZE:
        raise InvalidRequest(f"webpush.auth must be {AUTH_SECRET_SIZE} bytes (base64url)")
    return (p256dh, auth)


@attrs.frozen
class DeviceRequest:
    device_id: str
    platform: str
    alias: object = KEEP  # str, None (remove) or KEEP
    tags: object = KEEP  # tuple[str, ...] or KEEP
    webpush: object = KEEP  # (p256dh, auth), None (remove) or KEEP


def parse_device_request(doc: Any) -> DeviceRequest:
    fields = _fields(doc, "body", ("device_id", "platform"), ("alias", "tags", "webpush"))
    return DeviceRequest(
        device_id=_string(fields["device_id"], "device_id"),
        platform=_string(fields["platform"], "platform", max_len=MAX_PLATFORM),
        alias=_alias(fields),
        tags=_tags(fields),
        webpush=_webpush(fields),
    )


@attrs.frozen
class DeviceUpdate:
    alias: object = KEEP
    tags: object = KEEP


def parse_device_update(doc: Any) -> DeviceUpdate:
    fields = _fields(doc, "body", (), ("alias", "tags"))
    return DeviceUpdate(alias=_alias(fields), tags=_tags(fields))


# --- POST /v1/push -----------------------------------------------------------------------

@attrs.frozen
class Audience:
    kind: str  # "all", "registration_id", "alias" or "tag"
    values: tuple[str, ...] = ()


@attrs.frozen
class PushRequest:
    audience: Audience
    notification: dict[str, Any] | None
    message: dict[str, Any] | None
    ttl: int
    collapse_key: str | None
    priority: str

    @property
    def kind(self) -> str:
        return "notification" if self.notification is not None else "message"


def _audience(value: Any, max_audience: int) -> Audience:
    if value == "all":
        return Audience("all")
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidRequest(
            'audience must be "all" or an object with one of '
            '"registration_id", "alias", "tag"'
        )
    ((kind, values),) = value.items()
    if kind not in AUDIENCE_KINDS:
        raise InvalidRequest(f"unknown audience kind {kind!r}")
    return Audience(kind, _string_list(values, f"audience.{kind}", max_items=max_audience,
                                       empty=False))


def _notification(value: Any) -> dict[str, Any]:
    fields = _fields(value, "notification", ("title", "body"), ("extras",))
    _string(fields["title"], "notification.title", max_len=4096, empty=True)
    _string(fields["body"], "notification.body", max_len=4096, empty=True)
    if "extras" in fields and not isinstance(fields["extras"], dict):
        raise InvalidRequest("notification.extras must be a JSON object")
    return dict(fields)


def _message(value: Any) -> dict[str, Any]:
    return dict(_fields(value, "message", ("data",)))


def parse_push_request(doc: Any, *, default_ttl: int, max_ttl: int, max_audience: int,
                       max_payload: int) -> PushRequest:
    """Check a push body (CONTRACT §2). A payload (``notification`` and ``message`` as
    compact JSON) over ``max_payload`` bytes is an InvalidRequest with status 413."""
    fields = _fields(doc, "body", ("audience",), ("notification", "message", "options"))
    audience = _audience(fields["audience"], max_audience)
    notification = message = None
    if fields.get("notification") is not None:
        notification = _notification(fields["notification"])
    if fields.get("message") is not None:
        message = _message(fields["message"])
    if notification is None and message is None:
        raise InvalidRequest("a push needs a notification, a message or both")
    options = _fields(fields.get("options", {}), "options", (),
                      ("ttl", "collapse_key", "priority"))
    ttl = default_ttl
    if "ttl" in options:
        ttl = _int(options["ttl"], "options.ttl", 0, max_ttl)
    collapse_key = None
    if options.get("collapse_key") is not None:
        collapse_key = _string(options["collapse_key"], "options.collapse_key")
    priority = options.get("priority", "normal")
    if priority not in PRIORITIES:
        raise InvalidRequest('options.priority must be "high" or "normal"')
    payload = {
        k: v for k, v in (("notification", notification), ("message", message)) if v is not None
    }
    size = len(compact_json(payload))
    if size > max_payload:
        raise InvalidRequest(
            f"push payload is {size} bytes of JSON; the limit is {max_payload}",
            code="payload_too_large", status=413,
        )
    return PushRequest(audience, notification, message, ttl, collapse_key, priority)


# --- MQTT receipts -----------------------------------------------------------------------

@attrs.frozen
class Receipt:
    msg_id: str
    event: str


def parse_receipt(payload: bytes) -> Receipt:
    """``{"msg_id", "event": "opened"|"dismissed"}`` from a device's receipt PUBLISH."""
    fields = _fields(parse_json(payload), "receipt", ("msg_id", "event"))
    msg_id = _string(fields["msg_id"], "msg_id")
    event = fields["event"]
    if event not in RECEIPT_EVENTS:
        raise InvalidRequest('event must be "opened" or "dismissed"')
    return Receipt(msg_id, event)
