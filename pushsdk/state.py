"""What the SDK remembers between runs, and where it keeps it.

:class:`SdkState` holds the registration, the installation's Ed25519 device key
(:mod:`pushsdk.identity`), the window of recently delivered ``msg_id``\\ s (duplicate
suppression across restarts), the heartbeat strategy's memory per network, the MQTT session
state that must survive a restart for exactly-once delivery (QoS 1/2 messages in flight, QoS 2
packet ids received and not yet released, the filters the broker holds for a persistent
session) and, with end-to-end encryption on, the device's P-256 private key and auth secret
(docs/security.md).

:class:`FileStateStore` keeps it in one file, encrypted and authenticated with AES-256-GCM::

    magic b"PSDK" | version (1 byte) | nonce (12 bytes) | ciphertext + 16-byte tag

The 5-byte header is the associated data, so the format version cannot be altered without
failing authentication. The plaintext is UTF-8 JSON. Writes are atomic (temp file in the same
directory, fsync, ``os.replace``, directory fsync) with mode 0600. A missing, corrupt,
truncated or tampered file, or a wrong key, loads as ``None`` ("register again"): it is logged,
never raised to the app.

Threat model: the key lives in a separate file (:class:`KeyFileKeyStore`) or comes from the
platform's key store (any :class:`KeyStore`). Encryption protects the device token and
registration from someone who can read the state file alone (backups, a copied file, another
user if permissions slip); authentication stops a forged or edited file from steering the SDK
(e.g. to another MQTT endpoint) — it just registers again. It does not protect against an
attacker who can read the key too, and replaying an older genuine file is not detected (that
costs at most some duplicate suppression and an extra registration).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _backend
from .identity import DeviceKey
from .registration import Registration
from .webpush import WebPushKeys

__all__ = [
    "DEDUP_WINDOW",
    "MAX_NETWORKS",
    "FileStateStore",
    "KeyFileKeyStore",
    "KeyStore",
    "MemoryStateStore",
    "SdkState",
    "StateStore",
    "StaticKeyStore",
]

log = logging.getLogger("pushsdk.state")

#: How many recent msg_ids are remembered for duplicate suppression.
DEDUP_WINDOW = 1000
#: How many networks' heartbeat memory is kept (least recently used evicted), as in Mars.
MAX_NETWORKS = 20

MAGIC = b"PSDK"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
NONCE_SIZE = 12
KEY_SIZE = 32
_TAG_SIZE = 16


@attrs.frozen
class SdkState:
    """Immutable snapshot of everything persisted. Update with the ``with_*`` methods."""

    registration: Registration | None = None
    #: Recently delivered msg_ids, oldest first.
    recent_msg_ids: tuple[str, ...] = ()
    #: ``(network_key, memory)`` pairs, least recently updated first.
    heartbeat_memory: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    #: End-to-end keys (``ServerConfig(e2e=True)``), created with the registration.
    webpush_keys: WebPushKeys | None = attrs.field(default=None, repr=False)
    #: This installation's identity key (server mode), created at the first registration.
    device_key: DeviceKey | None = attrs.field(default=None, repr=False)
    #: QoS 1/2 messages the app published that are not yet acknowledged:
    #: ``{"topic", "payload" (base64), "qos", "retain", "packet_id", "stage"}``.
    outbound: tuple[Mapping[str, Any], ...] = ()
    #: QoS 2 packet ids received and acknowledged (PUBREC) but not yet released.
    received_qos2: tuple[int, ...] = ()
    #: ``(filter, qos)`` the broker holds for this client's persistent session, and for
    #: which client id and broker (``"host:port/client_id"``).
    subscriptions: tuple[tuple[str, int], ...] = ()
    subscriptions_for: str | None = None

    def with_registration(self, registration: Registration | None) -> SdkState:
        return attrs.evolve(self, registration=registration)

    def with_msg_id(self, msg_id: str, window: int = DEDUP_WINDOW) -> SdkState:
        """Record ``msg_id`` as delivered, keeping only the newest ``window`` ids."""
        ids = tuple(i for i in self.recent_msg_ids if i != msg_id) + (msg_id,)
        return attrs.evolve(self, recent_msg_ids=ids[-window:] if window > 0 else ())

    def memory_for(self, network_key: str) -> Mapping[str, Any] | None:
        for key, memory in self.heartbeat_memory:
            if key == network_key:
                return memory
        return None

    def with_memory(
        self, network_key: str, memory: Mapping[str, Any] | None, limit: int = MAX_NETWORKS
    ) -> SdkState:
        """Store (or with ``None`` forget) a network's heartbeat memory; evict the oldest."""
        rest = tuple(item for item in self.heartbeat_memory if item[0] != network_key)
        if memory is not None:
            rest = (*rest, (network_key, dict(memory)))
        return attrs.evolve(self, heartbeat_memory=rest[-limit:] if limit > 0 else ())

    def to_json(self) -> dict[str, Any]:
        return {
            "registration": self.registration.to_dict() if self.registration else None,
            "recent_msg_ids": list(self.recent_msg_ids),
            "heartbeat_memory": [[key, dict(mem)] for key, mem in self.heartbeat_memory],
            "webpush": self.webpush_keys.to_dict() if self.webpush_keys else None,
            "device_key": self.device_key.to_text() if self.device_key else None,
            "outbound": [dict(item) for item in self.outbound],
            "received_qos2": list(self.received_qos2),
            "subscriptions": [list(item) for item in self.subscriptions],
            "subscriptions_for": self.subscriptions_for,
        }

    @classmethod
    def from_json(cls, data: Any) -> SdkState:
        """Inverse of :meth:`to_json`; raises ``ValueError`` for anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("state is not an object")
        reg = data.get("registration")
        ids = data.get("recent_msg_ids", [])
        memory = data.get("heartbeat_memory", [])
        webpush = data.get("webpush")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("recent_msg_ids must be a list of strings")
        if not isinstance(memory, list) or not all(
            isinstance(m, list) and len(m) == 2 and isinstance(m[0], str)
            and isinstance(m[1], dict) for m in memory
        ):
            raise ValueError("heartbeat_memory must be a list of [network, object] pairs")
        device_key = data.get("device_key")
        return cls(
            registration=Registration.from_dict(reg) if reg is not None else None,
            recent_msg_ids=tuple(ids),
            heartbeat_memory=tuple((key, mem) for key, mem in memory),
            webpush_keys=WebPushKeys.from_dict(webpush) if webpush is not None else None,
            device_key=DeviceKey.from_text(device_key) if device_key is not None else None,
            **_session_fields(data),
        )


def _session_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The MQTT session part of a state object (absent in files of older versions)."""
    outbound = data.get("outbound", [])
    received = data.get("received_qos2", [])
    subscriptions = data.get("subscriptions", [])
    owner = data.get("subscriptions_for")
    if not isinstance(outbound, list) or not all(
        isinstance(o, dict) and isinstance(o.get("topic"), str)
        and isinstance(o.get("payload"), str) and o.get("qos") in (1, 2)
        and isinstance(o.get("packet_id"), int) and o.get("stage") in (0, 1)
        for o in outbound
    ):
        raise ValueError("outbound must be a list of message objects")
    if not isinstance(received, list) or not all(
            isinstance(i, int) and 0 < i < 65536 for i in received):
        raise ValueError("received_qos2 must be a list of packet ids")
    if not isinstance(subscriptions, list) or not all(
        isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and s[1] in (0, 1, 2)
        for s in subscriptions
    ):
        raise ValueError("subscriptions must be a list of [filter, qos] pairs")
    if owner is not None and not isinstance(owner, str):
        raise ValueError("subscriptions_for must be a string")
    return {
        "outbound": tuple(outbound),
        "received_qos2": tuple(received),
        "subscriptions": tuple((f, q) for f, q in subscriptions),
        "subscriptions_for": owner,
    }


class StateStore(Protocol):
    """Where :class:`SdkState` lives between runs.

    ``load()`` returns ``None`` when there is no usable state (and never raises for a bad
    file); ``save()`` raises ``OSError`` when the state could not be written, in which case the
    previously saved state is intact.
    """

    async def load(self) -> SdkState | None: ...

    async def save(self, state: SdkState) -> None: ...


class MemoryStateStore:
    """State kept in memory only: for tests and virtual-time simulation (no file I/O)."""

    def __init__(self, state: SdkState | None = None) -> None:
        self.state = state
        self.saves = 0

    async def load(self) -> SdkState | None:
        return self.state

    async def save(self, state: SdkState) -> None:
        self.state = state
        self.saves += 1


class KeyStore(Protocol):
    """Source of the 32-byte AES key. Called from a worker thread; may block."""

    def load_key(self) -> bytes: ...


@attrs.frozen
class StaticKeyStore:
    """A key held by the application (e.g. fetched from the platform key store)."""

    key: bytes = attrs.field(repr=False)

    @key.validator
    def _check(self, _attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != KEY_SIZE:
            raise ValueError(f"the state key must be {KEY_SIZE} bytes")

    def load_key(self) -> bytes:
        return self.key


class KeyFileKeyStore:
    """A random key in its own file (mode 0600), created on first use.

    An unreadable key file of the wrong size is replaced by a new key (the state it protected
    can no longer be read anyway, so the SDK registers again).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._key: bytes | None = None
        self._lock = threading.Lock()  # saves run in worker threads

    def load_key(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._read() or self._create()
            return self._key

    def check_readable(self) -> None:
        """Raise the ``OSError`` that :meth:`load_key` would raise reading the key file (a
        directory, no read permission); a missing file is fine (it is created on first use).
        Nothing is created or changed."""
        if self._key is not None:
            return
        try:
            with open(self.path, "rb"):
                pass
        except FileNotFoundError:
            pass

    def _read(self) -> bytes | None:
        try:
            key = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if len(key) == KEY_SIZE:
            return key
        log.warning("state key file %s is damaged; creating a new key", self.path)
        return None

    def _create(self) -> bytes:
        key = secrets.token_bytes(KEY_SIZE)  # a secret: from the OS CSPRNG, not a seeded rng
        if self.path.exists():  # damaged: replace it
            write_atomically(self.path, key)
            return key
        # Publish the new key only if no other process created one meanwhile: two different
        # keys would make one process's state unreadable to the other.
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.new")
        write_atomically(tmp, key)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            key = self._read() or key
        except OSError:  # a filesystem without hard links
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return key


class FileStateStore:
    """Encrypted, authenticated state file; see the module docstring for the format.

    File I/O runs in a worker thread so the event loop is never blocked. The key store
    defaults to :class:`KeyFileKeyStore` at ``<path>.key``.
    """

    def __init__(
        self, path: str | os.PathLike[str], key_store: KeyStore | None = None
    ) -> None:
        self.path = Path(path)
        self.key_store = key_store or KeyFileKeyStore(f"{self.path}.key")

    async def load(self) -> SdkState | None:
        return await _backend.current().to_thread(self.load_sync)

    async def save(self, state: SdkState) -> None:
        await _backend.current().to_thread(self.save_sync, state)

    def load_sync(self) -> SdkState | None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no state file at %s; will register", self.path)
            return None
        except OSError as exc:
            log.warning("cannot read state file %s (%s); will register again", self.path, exc)
            return None
        try:
            key = self.key_store.load_key()
            return SdkState.from_json(json.loads(decrypt(key, blob)))
        except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
            log.warning("unusable state file %s (%s); will register again", self.path, exc)
            return None

    def save_sync(self, state: SdkState) -> None:
        plaintext = json.dumps(state.to_json(), separators=(",", ":")).encode()
        write_atomically(self.path, encrypt(self.key_store.load_key(), plaintext))

    def check_writable_sync(self) -> None:
        """Raise the ``OSError`` that :meth:`save` would raise because of where the file
        is — its directory missing or not writable, the path a directory, the key file
        unreadable — without writing any state or key: a probe file is created in the
        directory and removed at once. For a caller that must not start something whose
        result it could not keep (``pushsdk register`` binds a new device key on the server;
        lost, it locks the device id out). Blocking; not a guarantee (a full disk, a change
        in between)."""
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(self.path))
        directory = self.path.parent  # "." for a bare file name
        fd, probe = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".probe",
                                     dir=directory)
        os.close(fd)
        os.unlink(probe)
        if isinstance(self.key_store, KeyFileKeyStore):
            self.key_store.check_readable()


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    """Seal ``plaintext`` in the state file format (fresh random nonce each time)."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return HEADER + nonce + AESGCM(key).encrypt(nonce, plaintext, HEADER)


def decrypt(key: bytes, blob: bytes) -> bytes:
    """Open a state file blob; raises ``ValueError`` saying why it cannot be used."""
    if len(blob) < len(HEADER) + NONCE_SIZE + _TAG_SIZE:
        raise ValueError("file is truncated")
    if blob[: len(MAGIC)] != MAGIC:
        raise ValueError("not a pushsdk state file")
    if blob[len(MAGIC)] != VERSION:
        raise ValueError(f"unsupported state format version {blob[len(MAGIC)]}")
    nonce = blob[len(HEADER) : len(HEADER) + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(HEADER) + NONCE_SIZE :], HEADER)
    except InvalidTag:
        raise ValueError("authentication failed (tampered file or wrong key)") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so readers see the old or the new file.

    On any error the temp file is removed, the old file is untouched and the ``OSError``
    propagates (e.g. ``ENOSPC``).
    """
    directory = path.parent if str(path.parent) else Path(".")
    # mkstemp creates the file with mode 0600 whatever the umask.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:  # pragma: no cover - os.write raises instead
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Not every platform/filesystem can open a directory.
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
