"""The public-key material the server checks: base64url, RFC 8291 device keys, Ed25519
device identity keys and their proofs (docs/security.md).

The server's own few lines with ``cryptography``, so that it needs nothing of the SDK but
the codec. Every parser raises ``ValueError`` with a message fit for a 400 answer.
"""
from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = [
    "AUTH_SECRET_SIZE",
    "ED25519_KEY_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "PROOF_CONTEXT",
    "b64url_decode",
    "b64url_encode",
    "check_p256dh",
    "parse_ed25519_key",
    "proof_message",
    "verify_proof",
]

#: RFC 8291: the auth secret is 16 octets; a P-256 public key 65 (uncompressed point).
AUTH_SECRET_SIZE = 16
P256_POINT_SIZE = 65
ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
#: First line of what a device signs to prove it holds its registration's key.
PROOF_CONTEXT = "pushsim-device-proof-v1"

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; trailing ``=`` padding tolerated. ``ValueError``
    for anything else (the standard alphabet's ``+`` and ``/`` included)."""
    if not isinstance(text, str):
        raise ValueError("not base64url: not a string")
    raw = text.rstrip("=")
    if not _B64URL.fullmatch(raw):
        raise ValueError("not base64url: characters outside A-Z a-z 0-9 - _")
    if len(raw) % 4 == 1:
        raise ValueError("not base64url: impossible length")
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except binascii.Error as exc:  # excluded by the checks above; kept for safety
        raise ValueError(f"not base64url: {exc}") from None


def check_p256dh(text: str) -> None:
    """An RFC 8291 user agent key: an uncompressed P-256 point on the curve (§7)."""
    raw = b64url_decode(text)
    if len(raw) != P256_POINT_SIZE or raw[0] != 0x04:
        raise ValueError("must be an uncompressed P-256 point (65 octets, 0x04 first)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("is not a point on the P-256 curve") from None


def parse_ed25519_key(text: str) -> bytes:
    """A device identity key: base64url of a raw 32-byte Ed25519 public key; its bytes."""
    raw = b64url_decode(text)
    if len(raw) != ED25519_KEY_SIZE:
        raise ValueError(f"must be a raw Ed25519 public key ({ED25519_KEY_SIZE} bytes, "
                         "base64url)")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("is not an Ed25519 public key") from None
    return raw


def proof_message(app_key: str, device_id: str, challenge: str) -> bytes:
    """The bytes a device signs: context, app key, device id and challenge, one a line."""
    return f"{PROOF_CONTEXT}\n{app_key}\n{device_id}\n{challenge}".encode()


def verify_proof(device_key: bytes, signature: bytes, app_key: str, device_id: str,
                 challenge: str) -> bool:
    """Whether ``signature`` is ``device_key``'s Ed25519 signature of the proof message."""
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(device_key)
        key.verify(signature, proof_message(app_key, device_id, challenge))
    except (InvalidSignature, ValueError):
        return False
    return True
