"""End-to-end payload encryption: RFC 8291 (Message Encryption for Web Push) over the RFC 8188
``aes128gcm`` content coding.

The device (the RFC's *user agent*) owns a P-256 key pair and a 16-byte authentication secret,
made once at registration (:meth:`WebPushKeys.generate`). Their public part — the uncompressed
public point (``p256dh``) and the auth secret — goes to whoever may send to the device. A
sender encrypts with :func:`webpush_encrypt`; only the holder of the private key can read the
result with :func:`webpush_decrypt` (or :meth:`WebPushKeys.decrypt`). Anything in between — the
push server, its database, its backups — carries ciphertext only.

The construction, for one message::

    ecdh_secret = ECDH(as_private, ua_public)          # as_* is a fresh key pair per message
    IKM   = HKDF(salt=auth_secret, ikm=ecdh_secret,
                 info="WebPush: info" || 0x00 || ua_public || as_public, L=32)
    CEK   = HKDF(salt=salt, ikm=IKM, info="Content-Encoding: aes128gcm" || 0x00, L=16)
    NONCE = HKDF(salt=salt, ikm=IKM, info="Content-Encoding: nonce" || 0x00, L=12)
    body  = salt (16) | rs (uint32 BE) | idlen (1) | keyid = as_public (65)
            | AES-128-GCM(CEK, NONCE, plaintext || 0x02 || zero padding)

RFC 8188 itself (:func:`aes128gcm_encrypt` / :func:`aes128gcm_decrypt`) is implemented in
full — several records of ``rs`` octets, each nonce XORed with the record's sequence number,
delimiter 0x01 on every record but the last, which carries 0x02 — while Web Push messages are
always one record (RFC 8291 §4).

Every way a body can fail to open (bad header, wrong key, a flipped bit anywhere the
authentication covers, bad padding, truncation) raises :class:`DecryptionError`, a
``ValueError``. The ``rs`` field is the one part of an RFC 8188 header that no tag covers: a
changed ``rs`` either fails like everything else or, when the record boundaries stay where they
were, yields the *same* plaintext — never a different one.

Secrets (private keys, auth secrets, salts) come from the operating system's CSPRNG, never
from an injected ``random.Random``: those exist for reproducible simulations, and a seeded
generator would make every simulated device's keys guessable.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "AUTH_SECRET_SIZE",
    "DEFAULT_RECORD_SIZE",
    "ENCRYPTED_FIELD",
    "DecryptionError",
    "Header",
    "WebPushKeys",
    "aes128gcm_decrypt",
    "aes128gcm_encrypt",
    "b64url_decode",
    "b64url_encode",
    "decrypt_data",
    "derive_content_keys",
    "encrypt_data",
    "encrypted_payload_of",
    "parse_header",
    "parse_p256dh",
    "webpush_decrypt",
    "webpush_encrypt",
    "webpush_ikm",
]

SALT_SIZE = 16
TAG_SIZE = 16
KEY_SIZE = 16  # AEAD_AES_128_GCM
NONCE_SIZE = 12
AUTH_SECRET_SIZE = 16
PUBLIC_KEY_SIZE = 65  # uncompressed P-256 point: 0x04 | x (32) | y (32)
PRIVATE_KEY_SIZE = 32
#: The record size RFC 8291 senders use; one record holds up to 4079 octets of plaintext.
DEFAULT_RECORD_SIZE = 4096
#: RFC 8188 §2: a record needs room for the 16-octet tag and the delimiter octet.
MIN_RECORD_SIZE = TAG_SIZE + 2
HEADER_FIXED_SIZE = SALT_SIZE + 4 + 1  # salt, rs, idlen

_CEK_INFO = b"Content-Encoding: aes128gcm\x00"
_NONCE_INFO = b"Content-Encoding: nonce\x00"
_KEY_INFO = b"WebPush: info\x00"
_LAST, _NOT_LAST = 2, 1  # padding delimiters

#: The field of a push's ``message.data`` object that carries an encrypted payload:
#: ``{"message": {"data": {"aes128gcm": "<base64url body>"}}}`` (see docs/security.md).
ENCRYPTED_FIELD = "aes128gcm"


_B64URL = re.compile(rb"[A-Za-z0-9_-]*")


class DecryptionError(ValueError):
    """The body cannot be opened: malformed, tampered with, or meant for another key."""


# --- base64url -------------------------------------------------------------------------------

def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2), as Web Push spells keys and bodies."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Inverse of :func:`b64url_encode`; padding optional. Raises ``ValueError`` for anything
    that is not base64url (standard-alphabet ``+``/``/`` included)."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("not base64url: non-ASCII characters") from None
    elif isinstance(text, (bytes, bytearray)):
        raw = bytes(text)
    else:
        raise ValueError(f"not base64url: a {type(text).__name__}")
    raw = raw.rstrip(b"=")
    if not _B64URL.fullmatch(raw):
        raise ValueError("not base64url: characters outside A-Z a-z 0-9 - _")
    if len(raw) % 4 == 1:
        raise ValueError("not base64url: impossible length")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as exc:  # pragma: no cover - the checks above exclude it
        raise ValueError(f"not base64url: {exc}") from None


# --- RFC 8188: the aes128gcm content coding ----------------------------------------------------

def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    # HKDF-SHA256 (RFC 5869) with L <= 32, so Expand is a single HMAC block.
    prk = hmac.digest(salt, ikm, hashlib.sha256)
    return hmac.digest(prk, info + b"\x01", hashlib.sha256)[:length]


def derive_content_keys(ikm: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """``(CEK, NONCE)`` of RFC 8188 §2.2–2.3 for input keying material and salt."""
    return _hkdf(salt, ikm, _CEK_INFO, KEY_SIZE), _hkdf(salt, ikm, _NONCE_INFO, NONCE_SIZE)


def _record_nonce(nonce: bytes, seq: int) -> bytes:
    return (int.from_bytes(nonce, "big") ^ seq).to_bytes(NONCE_SIZE, "big")


@attrs.frozen
class Header:
    """The RFC 8188 header at the start of a body."""

    salt: bytes
    record_size: int
    keyid: bytes
    size: int  # octets the header takes; the records start here


def parse_header(body: bytes) -> Header:
    """Read the ``salt | rs | idlen | keyid`` header; raises :class:`DecryptionError`."""
    if len(body) < HEADER_FIXED_SIZE:
        raise DecryptionError(f"body of {len(body)} octets is shorter than a header")
    salt = body[:SALT_SIZE]
    (record_size,) = struct.unpack_from("!I", body, SALT_SIZE)
    idlen = body[SALT_SIZE + 4]
    size = HEADER_FIXED_SIZE + idlen
    if len(body) < size:
        raise DecryptionError("body ends inside the header's keyid")
    if record_size < MIN_RECORD_SIZE:
        raise DecryptionError(f"record size {record_size} is below the minimum {MIN_RECORD_SIZE}")
    return Header(salt=salt, record_size=record_size, keyid=body[HEADER_FIXED_SIZE:size],
                  size=size)


def aes128gcm_encrypt(
    plaintext: bytes, ikm: bytes, *, salt: bytes | None = None, keyid: bytes = b"",
    record_size: int = DEFAULT_RECORD_SIZE, padding: int = 0,
) -> bytes:
    """Encrypt ``plaintext`` in the aes128gcm content coding (RFC 8188).

    The plaintext is cut into records of ``record_size - 17`` octets (the last may be
    shorter); ``padding`` zero octets go into the last record, which must have room for them.
    ``salt`` defaults to 16 fresh random octets and must never repeat for the same ``ikm``.
    """
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} octets")
    if len(keyid) > 255:
        raise ValueError("keyid must be at most 255 octets")
    if not MIN_RECORD_SIZE <= record_size < 2**32:
        raise ValueError(f"record size must be in {MIN_RECORD_SIZE}..{2**32 - 1}")
    if padding < 0:
        raise ValueError("padding must not be negative")
    chunk = record_size - TAG_SIZE - 1
    last_start = (max(len(plaintext) - 1, 0) // chunk) * chunk
    if len(plaintext) - last_start + 1 + padding > record_size - TAG_SIZE:
        raise ValueError(
            f"{padding} octets of padding do not fit in the last record (record size "
            f"{record_size})"
        )
    cek, nonce = derive_content_keys(ikm, salt)
    aead = AESGCM(cek)
    out = [salt, struct.pack("!IB", record_size, len(keyid)), keyid]
    for seq, start in enumerate(range(0, last_start + 1, chunk)):
        if start < last_start:
            record = plaintext[start:start + chunk] + bytes([_NOT_LAST])
        else:
            record = plaintext[start:] + bytes([_LAST]) + bytes(padding)
        out.append(aead.encrypt(_record_nonce(nonce, seq), record, None))
    return b"".join(out)


def aes128gcm_decrypt(body: bytes, ikm: bytes | Callable[[bytes], bytes]) -> bytes:
    """Open an aes128gcm body. ``ikm`` is the input keying material, or a function from the
    header's keyid to it (which may raise :class:`DecryptionError` for an unknown keyid).

    Raises :class:`DecryptionError` for every body that is not a complete, authentic
    encoding: a failed tag, a record of all zeros, a wrong delimiter, or a truncated stream.
    """
    header = parse_header(body)
    key_material = ikm(header.keyid) if callable(ikm) else ikm
    return _open_records(body, header, key_material)


def _open_records(body: bytes, header: Header, ikm: bytes) -> bytes:
    cek, nonce = derive_content_keys(ikm, header.salt)
    aead = AESGCM(cek)
    rs = header.record_size
    starts = range(header.size, len(body), rs)
    if not starts:
        raise DecryptionError("body has no records")
    plaintext = []
    for seq, start in enumerate(starts):
        record = body[start:start + rs]
        last = start + rs >= len(body)
        if len(record) < TAG_SIZE + 1:
            raise DecryptionError(f"record {seq} is too short to hold a tag and a delimiter")
        try:
            padded = aead.decrypt(_record_nonce(nonce, seq), record, None)
        except InvalidTag:
            raise DecryptionError(
                f"record {seq} failed authentication (tampered, or not for this key)"
            ) from None
        content = padded.rstrip(b"\x00")
        if not content:
            raise DecryptionError(f"record {seq} holds no padding delimiter")
        delimiter = content[-1]
        if last and delimiter != _LAST:
            raise DecryptionError("body is truncated: its last record is not marked last")
        if not last and delimiter != _NOT_LAST:
            raise DecryptionError(f"record {seq} has delimiter {delimiter}, expected 1")
        plaintext.append(content[:-1])
    return b"".join(plaintext)


# --- RFC 8291: Web Push message encryption ----------------------------------------------------

def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def parse_p256dh(value: bytes | str) -> ec.EllipticCurvePublicKey:
    """A user agent public key: 65 octets (or their base64url), an uncompressed P-256 point
    that lies on the curve (RFC 8291 §7 requires the check). Raises ``ValueError``."""
    raw = b64url_decode(value) if isinstance(value, str) else bytes(value)
    if len(raw) != PUBLIC_KEY_SIZE or raw[0] != 0x04:
        raise ValueError("p256dh must be an uncompressed P-256 point (65 octets, 0x04 first)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("p256dh is not a point on the P-256 curve") from None


def _auth_bytes(value: bytes | str) -> bytes:
    raw = b64url_decode(value) if isinstance(value, str) else bytes(value)
    if len(raw) != AUTH_SECRET_SIZE:
        raise ValueError(f"the auth secret must be {AUTH_SECRET_SIZE} octets")
    return raw


def webpush_ikm(ecdh_secret: bytes, auth_secret: bytes, ua_public: bytes,
                as_public: bytes) -> bytes:
    """RFC 8291 §3.4: combine the ECDH secret and the auth secret into the IKM."""
    return _hkdf(auth_secret, ecdh_secret, _KEY_INFO + ua_public + as_public, 32)


def webpush_encrypt(
    plaintext: bytes, ua_public: bytes | str, auth_secret: bytes | str, *,
    as_private_key: ec.EllipticCurvePrivateKey | None = None, salt: bytes | None = None,
    record_size: int = DEFAULT_RECORD_SIZE, padding: int = 0,
) -> bytes:
    """Encrypt ``plaintext`` for the user agent with public key ``ua_public`` (65 octets or
    base64url) and ``auth_secret`` (16 octets or base64url), as one aes128gcm record.

    ``as_private_key`` and ``salt`` default to a fresh key pair and fresh salt — what a
    sender must use; passing them is for reproducing test vectors. Raises ``ValueError`` for
    a bad key, or a plaintext (plus ``padding``) too large for one record of ``record_size``.
    """
    ua_key = parse_p256dh(ua_public)
    auth = _auth_bytes(auth_secret)
    if len(plaintext) + 1 + padding + TAG_SIZE > record_size:
        raise ValueError(
            f"{len(plaintext)} octets of plaintext (+{padding} padding) do not fit in one "
            f"record of {record_size} octets"
        )
    as_key = as_private_key or ec.generate_private_key(ec.SECP256R1())
    as_public = _public_bytes(as_key.public_key())
    ikm = webpush_ikm(as_key.exchange(ec.ECDH(), ua_key), auth, _public_bytes(ua_key),
                      as_public)
    return aes128gcm_encrypt(plaintext, ikm, salt=salt, keyid=as_public,
                             record_size=record_size, padding=padding)


def webpush_decrypt(body: bytes, ua_private_key: ec.EllipticCurvePrivateKey,
                    auth_secret: bytes) -> bytes:
    """Open a Web Push body with the user agent's private key and auth secret.

    The header's keyid must be the sender's 65-octet public key. Raises
    :class:`DecryptionError`.
    """
    ua_public = _public_bytes(ua_private_key.public_key())

    def ikm_for(keyid: bytes) -> bytes:
        try:
            as_key = parse_p256dh(keyid)
        except ValueError as exc:
            raise DecryptionError(f"keyid is not a sender public key: {exc}") from None
        secret = ua_private_key.exchange(ec.ECDH(), as_key)
        return webpush_ikm(secret, auth_secret, ua_public, keyid)

    return aes128gcm_decrypt(body, ikm_for)


@attrs.frozen
class WebPushKeys:
    """A device's end-to-end keys: its P-256 private key and its auth secret.

    ``p256dh`` and ``auth`` (base64url) are the public part that senders need;
    :meth:`to_dict` / :meth:`from_dict` serialise the private part for the SDK's encrypted
    state file.
    """

    private_key: ec.EllipticCurvePrivateKey = attrs.field(repr=False, eq=False)
    auth_secret: bytes = attrs.field(repr=False)
    public_key: bytes = attrs.field(init=False)  # 65 octets, uncompressed point

    @public_key.default
    def _public_key(self) -> bytes:
        return _public_bytes(self.private_key.public_key())

    @auth_secret.validator
    def _check_auth(self, _attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != AUTH_SECRET_SIZE:
            raise ValueError(f"the auth secret must be {AUTH_SECRET_SIZE} bytes")

    @classmethod
    def generate(cls) -> WebPushKeys:
        """A new key pair and auth secret from the OS CSPRNG."""
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(AUTH_SECRET_SIZE))

    @classmethod
    def from_private_bytes(cls, private: bytes, auth_secret: bytes) -> WebPushKeys:
        """From the raw 32-octet private scalar. Raises ``ValueError`` for an invalid one."""
        if len(private) != PRIVATE_KEY_SIZE:
            raise ValueError(f"a P-256 private key is {PRIVATE_KEY_SIZE} octets")
        try:
            key = ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())
        except ValueError:
            raise ValueError("not a valid P-256 private key") from None
        return cls(key, auth_secret)

    @property
    def p256dh(self) -> str:
        return b64url_encode(self.public_key)

    @property
    def auth(self) -> str:
        return b64url_encode(self.auth_secret)

    def subscription(self) -> dict[str, str]:
        """``{"p256dh", "auth"}``: what a sender needs (sent at registration)."""
        return {"p256dh": self.p256dh, "auth": self.auth}

    def private_bytes(self) -> bytes:
        return self.private_key.private_numbers().private_value.to_bytes(PRIVATE_KEY_SIZE, "big")

    def decrypt(self, body: bytes) -> bytes:
        """:func:`webpush_decrypt` with these keys."""
        return webpush_decrypt(body, self.private_key, self.auth_secret)

    def to_dict(self) -> dict[str, str]:
        return {"private_key": b64url_encode(self.private_bytes()), "auth": self.auth}

    @classmethod
    def from_dict(cls, data: Any) -> WebPushKeys:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for anything malformed."""
        if not isinstance(data, Mapping) or not all(
            isinstance(data.get(k), str) for k in ("private_key", "auth")
        ):
            raise ValueError("webpush keys must be an object with private_key and auth")
        return cls.from_private_bytes(b64url_decode(data["private_key"]),
                                      _auth_bytes(data["auth"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebPushKeys):
            return NotImplemented
        return (self.public_key, self.auth_secret, self.private_bytes()) == (
            other.public_key, other.auth_secret, other.private_bytes())

    def __hash__(self) -> int:
        return hash((self.public_key, self.auth_secret))


# --- the push payload convention ----------------------------------------------------------------

def encrypt_data(data: Any, p256dh: bytes | str, auth: bytes | str, *,
                 padding: int = 0) -> dict[str, str]:
    """Seal a push's ``message.data`` value for one device: its compact UTF-8 JSON,
    encrypted, as ``{"aes128gcm": "<base64url body>"}``."""
    plaintext = json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False).encode()
    return {ENCRYPTED_FIELD: b64url_encode(webpush_encrypt(plaintext, p256dh, auth,
                                                           padding=padding))}


def encrypted_payload_of(data: Any) -> str | None:
    """The base64url body if ``data`` (a push's ``message.data``) is an encrypted payload —
    an object whose only field is ``"aes128gcm"`` with a string — else None."""
    if isinstance(data, Mapping) and len(data) == 1:
        value = data.get(ENCRYPTED_FIELD)
        if isinstance(value, str):
            return value
    return None


def decrypt_data(data: Any, keys: WebPushKeys) -> Any:
    """Inverse of :func:`encrypt_data`: the original ``data`` value. Raises
    :class:`DecryptionError` if it is not an encrypted payload or does not open to JSON."""
    body = encrypted_payload_of(data)
    if body is None:
        raise DecryptionError(f'not an encrypted payload (no "{ENCRYPTED_FIELD}" field)')
    try:
        raw = b64url_decode(body)
    except ValueError as exc:
        raise DecryptionError(str(exc)) from None
    plaintext = keys.decrypt(raw)
    try:
        return json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DecryptionError(f"decrypted payload is not UTF-8 JSON: {exc}") from None
