"""Parsing and checking of client input: HTTP JSON bodies and MQTT receipts.

Every function here takes untrusted data and either returns a frozen record or raises
:class:`InvalidRequest` with a message that names the offending field, so the HTTP layer
can answer 400/413 and never 500 for anything a client sends.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .keys import (
    AUTH_SECRET_SIZE,
    ED25519_SIGNATURE_SIZE,
    b64url_decode,
    check_p256dh,
    parse_ed25519_key,
)
from .records import KEEP

__all__ = [
    "AppRequest",
    "Audience",
    "DeviceRequest",
    "DeviceUpdate",
    "InvalidRequest",
    "Proof",
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
#: Deepest nesting of arrays and objects accepted in a JSON body (the payload limit keeps
#: honest ones far shallower); deeper is refused before anything walks it recursively.
MAX_JSON_DEPTH = 64
#: Identifiers (ids, names, aliases, tags, keys): no control characters (they would
#: forge log lines) and no lone surrogates (SQLite and UTF-8 cannot hold them).
_BAD_IDENTIFIER = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON has no infinity to send it on as
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _depth_over(doc: Any, limit: int) -> bool:
    """Whether arrays/objects nest more than ``limit`` deep (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items if isinstance(item, (list, dict)))
    return False


def parse_json(body: bytes, where: str = "body") -> Any:
    """Decode a UTF-8 JSON document strictly: no NaN/Infinity, no numbers out of range, no
    other encodings, at most :data:`MAX_JSON_DEPTH` levels."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{where} is not valid UTF-8: {exc.reason} at byte {exc.start}",
                             code="bad_json") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(f"{where} is nested too deeply", code="bad_json") from None
    except ValueError as exc:  # JSONDecodeError, NaN, int too long to convert
        raise InvalidRequest(f"{where} is not valid JSON: {exc}", code="bad_json") from None
    if _depth_over(doc, MAX_JSON_DEPTH):
        raise InvalidRequest(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep",
                             code="bad_json")
    return doc


def storable_json(value: Any, where: str) -> None:
    """Refuse any string (or object key) in a JSON value that UTF-8 cannot hold: a lone
    UTF-16 surrogate, which ``"\\ud800"`` in JSON decodes to. Names the first one's path."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidRequest(f"{path} is not valid Unicode text (a lone surrogate)")
        elif isinstance(item, dict):
            for key, inner in item.items():
                if _SURROGATE.search(key):
                    raise InvalidRequest(f"{path} has a key that is not valid Unicode text "
                                         "(a lone surrogate)")
                stack.append((inner, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(item))


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


def _string(value: Any, where: str, *, max_len: int = MAX_NAME, empty: bool = False,
            text: bool = False) -> str:
    """A string field. An identifier (the default) may hold no control characters;
    ``text=True`` (titles, bodies) allows them. Neither may hold a lone surrogate."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string")
    if not value and not empty:
        raise InvalidRequest(f"{where} must not be empty")
    if len(value) > max_len:
        raise InvalidRequest(f"{where} is longer than {max_len} characters")
    bad = (_SURROGATE if text else _BAD_IDENTIFIER).search(value)
    if bad is not None:
        if _SURROGATE.match(bad.group()):
            raise InvalidRequest(f"{where} is not valid Unicode text (a lone surrogate)")
        raise InvalidRequest(f"{where} must not contain control characters")
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
        check_p256dh(p256dh)
    except ValueError as exc:
        raise InvalidRequest(f"webpush.p256dh {exc}") from None
    try:
        secret = b64url_decode(auth)
    except ValueError as exc:
        raise InvalidRequest(f"webpush.auth: {exc}") from None
    if len(secret) != AUTH_SECRET_SIZE:
        raise InvalidRequest(f"webpush.auth must be {AUTH_SECRET_SIZE} bytes (base64url)")
    return (p256dh, auth)


def _device_key(doc: Mapping[str, Any]) -> bytes | None:
    if doc.get("device_key") is None:
        return None
    text = _string(doc["device_key"], "device_key", max_len=100)
    try:
        return parse_ed25519_key(text)
    except ValueError as exc:
        raise InvalidRequest(f"device_key {exc}") from None


@attrs.frozen
class Proof:
    """A device's answer to a challenge: its Ed25519 ``signature`` of the proof message
    (``keys.proof_message``) for ``challenge``."""

    challenge: str
    signature: bytes


def _proof(doc: Mapping[str, Any]) -> Proof | None:
    if doc.get("proof") is None:
        return None
    fields = _fields(doc["proof"], "proof", ("challenge", "signature"))
    challenge = _string(fields["challenge"], "proof.challenge", max_len=100)
    text = _string(fields["signature"], "proof.signature", max_len=200)
    try:
        signature = b64url_decode(text)
    except ValueError as exc:
        raise InvalidRequest(f"proof.signature: {exc}") from None
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise InvalidRequest(f"proof.signature must be an Ed25519 signature "
                             f"({ED25519_SIGNATURE_SIZE} bytes, base64url)")
    return Proof(challenge, signature)


@attrs.frozen
class DeviceRequest:
    device_id: str
    platform: str
    alias: object = KEEP  # str, None (remove) or KEEP
    tags: object = KEEP  # tuple[str, ...] or KEEP
    webpush: object = KEEP  # (p256dh, auth), None (remove) or KEEP
    #: Raw Ed25519 public key the registration is (to be) bound to; None = none sent.
    device_key: bytes | None = None
    #: The answer to a challenge, when re-registering a bound device.
    proof: Proof | None = None


def parse_device_request(doc: Any) -> DeviceRequest:
    fields = _fields(doc, "body", ("device_id", "platform"),
                     ("alias", "tags", "webpush", "device_key", "proof"))
    return DeviceRequest(
        device_id=_string(fields["device_id"], "device_id"),
        platform=_string(fields["platform"], "platform", max_len=MAX_PLATFORM),
        alias=_alias(fields),
        tags=_tags(fields),
        webpush=_webpush(fields),
        device_key=_device_key(fields),
        proof=_proof(fields),
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
    _string(fields["title"], "notification.title", max_len=4096, empty=True, text=True)
    _string(fields["body"], "notification.body", max_len=4096, empty=True, text=True)
    if "extras" in fields:
        if not isinstance(fields["extras"], dict):
            raise InvalidRequest("notification.extras must be a JSON object")
        storable_json(fields["extras"], "notification.extras")
    return dict(fields)


def _message(value: Any) -> dict[str, Any]:
    fields = _fields(value, "message", ("data",))
    storable_json(fields["data"], "message.data")
    return dict(fields)


def parse_push_request(doc: Any, *, default_ttl: int, max_ttl: int, max_audience: int,
                       max_payload: int) -> PushRequest:
    """Check a push body (interfaces §2). A payload (``notification`` and ``message`` as
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
    fields = _fields(parse_json(payload, "receipt"), "receipt", ("msg_id", "event"))
    msg_id = _string(fields["msg_id"], "msg_id")
    event = fields["event"]
    if event not in RECEIPT_EVENTS:
        raise InvalidRequest('event must be "opened" or "dismissed"')
    return Receipt(msg_id, event)
