"""Values exchanged between the server and its store (see :mod:`.store`)."""
from __future__ import annotations

import attrs

__all__ = [
    "KEEP",
    "Device",
    "DeviceDeleted",
    "Refusal",
    "Refused",
    "Registered",
    "TokenOwner",
    "MessageStatus",
    "NewMessage",
    "Pending",
    "PushOutcome",
    "SessionOpened",
    "StoreCounts",
    "StoreError",
]


class StoreError(Exception):
    """The database cannot be opened or used; ``str()`` is a one-line explanation."""


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


#: Passed for ``alias``/``tags`` to leave the stored value unchanged.
KEEP = _Keep()


@attrs.frozen
class Device:
    registration_id: str
    app_key: str
    device_id: str
    platform: str
    alias: str | None
    tags: tuple[str, ...]


@attrs.frozen
class TokenOwner:
    """Who a valid device token belongs to. ``revoke_at``: the wall-clock time at which the
    token stops working (a newer registration revoked it), None if not scheduled."""

    registration_id: str
    app_key: str
    revoke_at: float | None = None


@attrs.frozen
class Registered:
    """A registration (created, or re-registered with proof) and its new token."""

    registration_id: str
    created: bool


@attrs.frozen
class Refusal:
    """A request the store refused, with the HTTP answer it gets: ``status`` (401, 403,
    409), an error ``code`` and ``message``; ``challenge`` for a 401 ``proof_required``."""

    status: int
    code: str
    message: str
    challenge: str | None = None
    challenge_expires_in: float | None = None


class Refused(Exception):
    """An operation refused for who is asking (401, 403, 409); ``refusal`` says how."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@attrs.frozen
class DeviceDeleted:
    """A registration removed: its device id, and how many queued messages were dropped."""

    device_id: str
    dropped: int


@attrs.frozen
class NewMessage:
    """A push about to be stored; ``payload`` is the device-facing JSON (interfaces §3)."""

    msg_id: str
    app_key: str
    kind: str
    payload: bytes
    sent_at: float
    expires_at: float
    collapse_key: str | None = None
    live_only: bool = False  # ttl=0: only devices connected right now


@attrs.frozen
class PushOutcome:
    """What storing a push did. ``queued`` are the devices that now have it pending."""

    targets: int
    queued: tuple[str, ...]
    expired: int = 0  # ttl=0 targets that were offline
    collapsed: int = 0  # older pushes replaced through the collapse key
    dropped: int = 0  # older pushes dropped by the per-device queue cap
    notices: int = 0  # ``deleted`` notices created or grown


@attrs.frozen
class Pending:
    """One queued message taken for sending. ``payload`` is None for a ``deleted`` notice,
    whose JSON is built at send time from ``notice_count``. ``kind`` is the payload's
    ``kind``; ``live`` says a ttl=0 message (for the connection open now only)."""

    seq: int
    msg_id: str
    payload: bytes | None
    notice_count: int | None
    sent_at: float
    expires_at: float
    redelivery: bool
    kind: str = "message"
    live: bool = False


@attrs.frozen
class SessionOpened:
    session_present: bool
    sub_qos: int | None  # granted QoS of the stored inbox subscription, None if none
    discarded: int = 0  # queued messages dropped because the session was clean
    expired: int = 0  # ttl=0 messages left queued by an earlier connection


@attrs.frozen
class MessageStatus:
    msg_id: str
    targets: int
    delivered: int
    pending: int
    expired: int
    collapsed: int
    dropped: int
    opened: int
    dismissed: int


@attrs.frozen
class StoreCounts:
    apps: int
    devices: int
    pending: int
