"""Device identity: the Ed25519 key that proves a re-registration comes from the same
installation (docs/security.md, "Device identity").

The SDK makes one key pair per installation, keeps the private key in its encrypted state
file and sends the public key (``device_key``) with its registration. When the server already
knows the device id it answers 401 ``proof_required`` with a challenge; the SDK signs

    "pushsim-device-proof-v1\\n{app_key}\\n{device_id}\\n{challenge}"

(UTF-8) and retries with ``"proof": {"challenge", "signature"}``. Keys come from the operating
system's CSPRNG — a declared exception to the SDK's injected-``random.Random`` rule, like
nonces: a seeded generator would make every simulated device's key guessable.
"""
from __future__ import annotations

import base64

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["PROOF_CONTEXT", "DeviceKey", "b64url", "proof_message"]

PROOF_CONTEXT = "pushsim-device-proof-v1"


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def proof_message(app_key: str, device_id: str, challenge: str) -> bytes:
    """The bytes a proof signs."""
    return f"{PROOF_CONTEXT}\n{app_key}\n{device_id}\n{challenge}".encode()


@attrs.frozen
class DeviceKey:
    """An installation's Ed25519 key pair (``private`` is the raw 32-byte seed)."""

    private: bytes = attrs.field(repr=False)

    @private.validator
    def _check(self, _attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes")

    @classmethod
    def generate(cls) -> DeviceKey:
        key = Ed25519PrivateKey.generate()  # OS randomness (see the module docstring)
        return cls(key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private)

    @property
    def public(self) -> str:
        """The raw 32-byte public key, base64url without padding (``device_key``)."""
        raw = self._key().public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        return b64url(raw)

    def prove(self, app_key: str, device_id: str, challenge: str) -> dict[str, str]:
        """The ``proof`` object answering ``challenge``."""
        signature = self._key().sign(proof_message(app_key, device_id, challenge))
        return {"challenge": challenge, "signature": b64url(signature)}

    def to_text(self) -> str:
        return b64url(self.private)

    @classmethod
    def from_text(cls, text: object) -> DeviceKey:
        """Inverse of :meth:`to_text`; ``ValueError`` if it is not a key."""
        if not isinstance(text, str):
            raise ValueError("device key must be a string")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            raise ValueError("device key is not base64url") from None
        return cls(raw)
