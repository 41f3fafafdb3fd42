"""Provider side of end-to-end encrypted pushes: encrypt for one device, build the
``POST /v1/push`` body, and (optionally) fetch the device's keys and send.

A device that registered with ``ServerConfig(e2e=True)`` gave the server its public key
(``p256dh``) and auth secret; the provider reads them with
``GET /v1/devices/<registration_id>/keys`` (HTTP Basic ``app_key:master_secret``) — or
receives them from the app over its own channel, see docs/security.md — and encrypts
``message.data`` so that the push server stores and forwards only ciphertext::

    from pushsdk.provider import fetch_device_keys, encrypted_push_body, post_push

    keys = fetch_device_keys(server_url, app_key, master_secret, registration_id)
    body = encrypted_push_body(keys, {"order": 1234, "state": "shipped"})
    msg_id = post_push(server_url, app_key, master_secret, body)["msg_id"]

The device's SDK decrypts before calling the app, which sees ``{"order": 1234, ...}`` in
``msg.message["data"]`` (and ``msg.e2e`` is True).

The wire convention: ``message.data`` is ``{"aes128gcm": "<base64url>"}`` where the base64url
string is an RFC 8291 body (:mod:`pushsdk.webpush`) whose plaintext is the compact UTF-8 JSON
of the original ``data`` value. The HTTP helpers use only the standard library and block;
they are for provider back ends and scripts, not for code running in the SDK's event loop.
"""
from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import attrs

from .webpush import ENCRYPTED_FIELD, b64url_encode, encrypt_data, parse_p256dh, webpush_encrypt

__all__ = [
    "ENCRYPTED_FIELD",
    "MAX_PUSH_PAYLOAD",
    "DeviceKeys",
    "ProviderError",
    "encrypt_for_device",
    "encrypted_push_body",
    "fetch_device_keys",
    "post_push",
]

#: The server's push payload limit: compact JSON of ``notification`` and ``message``.
MAX_PUSH_PAYLOAD = 4096


class ProviderError(Exception):
    """The push server refused a request or could not be reached. ``status`` is the HTTP
    status (None without a response), ``code``/``message`` come from its error body."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{where}{code}: {message}")


@attrs.frozen
class DeviceKeys:
    """A device's public end-to-end keys (base64url), as the server returns them."""

    registration_id: str
    p256dh: str
    auth: str

    def __attrs_post_init__(self) -> None:
        parse_p256dh(self.p256dh)  # refuse a key that is not on the curve (RFC 8291 §7)


def encrypt_for_device(p256dh: str, auth: str, plaintext: bytes | str) -> str:
    """RFC 8291 encryption of ``plaintext`` (a ``str`` is encoded as UTF-8) for the device
    with these keys: the aes128gcm body, base64url without padding.

    This is the raw primitive. The SDK expects the plaintext of a push to be the JSON of
    the ``data`` value, which :func:`encrypted_push_body` takes care of.
    """
    raw = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
    return b64url_encode(webpush_encrypt(raw, p256dh, auth))


def encrypted_push_body(
    keys: DeviceKeys, data: Any, *, notification: Mapping[str, Any] | None = None,
    ttl: int | None = None, collapse_key: str | None = None, priority: str | None = None,
    padding: int = 0,
) -> dict[str, Any]:
    """A ``POST /v1/push`` body addressed to the device of ``keys`` whose ``message.data``
    is ``data`` encrypted for it (``data`` is any JSON value).

    A ``notification`` travels in clear (the server needs nothing from it, but it is not
    protected: keep secrets in ``data``). ``padding`` zero octets hide the plaintext's
    length. Raises ``ValueError`` if the payload would exceed the server's 4096-byte limit
    (about 2,900 bytes of JSON data).
    """
    body: dict[str, Any] = {
        "audience": {"registration_id": [keys.registration_id]},
        "message": {"data": encrypt_data(data, keys.p256dh, keys.auth, padding=padding)},
    }
    if notification is not None:
        body["notification"] = dict(notification)
    options = {name: value for name, value in (("ttl", ttl), ("collapse_key", collapse_key),
                                                ("priority", priority)) if value is not None}
    if options:
        body["options"] = options
    payload = {k: body[k] for k in ("notification", "message") if k in body}
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PUSH_PAYLOAD:
        raise ValueError(f"encrypted push payload is {size} bytes of JSON; the server takes "
                         f"at most {MAX_PUSH_PAYLOAD}")
    return body


# --- HTTP (blocking, standard library) ----------------------------------------------------------

def _basic(app_key: str, master_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app_key}:{master_secret}".encode()).decode()


def _request(method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: float, context: ssl.SSLContext | None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            error = json.loads(raw)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{exc.code}", raw[:200].decode("utf-8", "replace")
        raise ProviderError(exc.code, code, message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProviderError(None, "unreachable", f"{url}: {reason}") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise ProviderError(None, "bad_response", f"{url} answered something not JSON") from None


def fetch_device_keys(
    server_url: str, app_key: str, master_secret: str, registration_id: str, *,
    timeout: float = 10.0, context: ssl.SSLContext | None = None,
) -> DeviceKeys:
    """``GET /v1/devices/<registration_id>/keys``: the keys the device registered.

    Raises :class:`ProviderError` (404 ``not_found`` when the device is not this app's or
    registered no keys) or ``ValueError`` if the server returned an unusable key.
    """
    url = f"{server_url.rstrip('/')}/v1/devices/{registration_id}/keys"
    answer = _request("GET", url, {"Authorization": _basic(app_key, master_secret)}, None,
                      timeout, context)
    try:
        webpush = answer["webpush"]
        return DeviceKeys(registration_id=answer["registration_id"],
                          p256dh=webpush["p256dh"], auth=webpush["auth"])
    except (KeyError, TypeError):
        raise ProviderError(200, "bad_response", "keys answer lacks webpush.p256dh/auth") \
            from None


def post_push(
    server_url: str, app_key: str, master_secret: str, body: Mapping[str, Any], *,
    timeout: float = 10.0, context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """``POST /v1/push``; returns the server's answer ``{"msg_id", "targets"}``."""
    headers = {"Authorization": _basic(app_key, master_secret),
               "Content-Type": "application/json"}
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    answer = _request("POST", f"{server_url.rstrip('/')}/v1/push", headers, data, timeout,
                      context)
    if not isinstance(answer, dict):
        raise ProviderError(200, "bad_response", "push answer is not a JSON object")
    return answer
