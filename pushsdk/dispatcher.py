"""Inbound messages: parsing, duplicate suppression, and the app's callbacks.

Delivery guarantee (server mode): the client sends the PUBACK for a message only after the
app's callback has returned *and* the message's ``msg_id`` has been saved in the persisted
dedup window. A crash before the PUBACK makes the server redeliver (DUP=1) after reconnect;
the redelivered copy is recognised by its ``msg_id`` and acknowledged without calling the app
again — also across restarts, because the window lives in the state file. The app sees each
message at least once and, as long as the state file survives, at most once.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from .protocol import NO_PROPERTIES, Properties
from .state import DEDUP_WINDOW
from .webpush import DecryptionError, WebPushKeys, decrypt_data, encrypted_payload_of

__all__ = ["BrokerMessage", "Dispatcher", "MessageCallback", "PushMessage",
           "PushMessageCallback", "TokenCallback", "call_app"]

log = logging.getLogger("pushsdk.dispatcher")


class PushMessageCallback(Protocol):
    """``on_notification`` / ``on_deleted`` (and ``on_message`` in server mode): a plain
    function or an ``async def``; the return value is ignored."""

    def __call__(self, message: PushMessage, /) -> Awaitable[object] | object: ...


class MessageCallback(Protocol):
    """``on_message``: a :class:`PushMessage` in server mode, a :class:`BrokerMessage` in
    broker mode."""

    def __call__(self, message: Any, /) -> Awaitable[object] | object: ...


class TokenCallback(Protocol):
    """``on_new_token(token)``."""

    def __call__(self, token: str, /) -> Awaitable[object] | object: ...


AnyCallback = PushMessageCallback | MessageCallback | TokenCallback


class MessageSink(Protocol):
    def hand(self, message: Any) -> None:
        """Give ``message`` to the app (returns at once)."""

    @property
    def holding(self) -> bool:
        """The app has not finished with the message handed last."""

    @property
    def finished(self) -> bool:
        """The app finished with the message handed last (False: it was given back)."""

    def close(self) -> None: ...


@attrs.frozen
class PushMessage:
    """A push from the reference server (interfaces §3): the JSON payload, parsed."""

    msg_id: str
    kind: str
    """``"notification"``, ``"message"`` or ``"deleted"``."""
    data: Mapping[str, Any] = attrs.field(repr=False)
    """The whole payload object as the server sent it — except that an end-to-end encrypted
    ``message.data`` is replaced by its decrypted value (then :attr:`e2e` is True)."""
    topic: str = ""
    dup: bool = False
    """The server flagged this delivery as a redelivery."""
    e2e: bool = False
    """``message.data`` arrived end-to-end encrypted for this device and was decrypted by the
    SDK: neither the push server nor anyone else without the device's key could read it."""
    properties: Properties = attrs.field(default=NO_PROPERTIES, repr=False)
    """MQTT 5 properties of the PUBLISH (Message Expiry Interval: seconds left of the TTL;
    user properties ``msg_id`` and ``kind``; ...); empty on MQTT 3.1.1."""

    @property
    def notification(self) -> Mapping[str, Any] | None:
        """``{"title", "body", "extras"?}`` for notification pushes."""
        value = self.data.get("notification")
        return value if isinstance(value, Mapping) else None

    @property
    def message(self) -> Mapping[str, Any] | None:
        """``{"data": any}`` for data (pass-through) pushes."""
        value = self.data.get("message")
        return value if isinstance(value, Mapping) else None

    @property
    def count(self) -> int | None:
        """For ``kind == "deleted"``: how many stored messages the server dropped."""
        count = self.data.get("count")
        if count is None and isinstance(self.data.get("deleted"), Mapping):
            count = self.data["deleted"].get("count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    @property
    def sent_at(self) -> float | None:
        return _number(self.data.get("sent_at"))

    @property
    def expires_at(self) -> float | None:
        return _number(self.data.get("expires_at"))

    @property
    def collapse_key(self) -> str | None:
        value = self.data.get("collapse_key")
        return value if isinstance(value, str) else None

    @property
    def priority(self) -> str:
        value = self.data.get("priority", "normal")
        return value if isinstance(value, str) else "normal"

    def decrypted(self, keys: WebPushKeys) -> PushMessage:
        """This message with an encrypted ``message.data`` opened with ``keys`` (itself when
        it carries none). Raises :class:`~pushsdk.webpush.DecryptionError`."""
        message = self.message
        if not isinstance(message, Mapping) or encrypted_payload_of(message.get("data")) is None:
            return self
        plain = decrypt_data(message["data"], keys)
        data = {**self.data, "message": {**message, "data": plain}}
        return attrs.evolve(self, data=data, e2e=True)

    @classmethod
    def from_payload(cls, payload: bytes, *, topic: str = "", dup: bool = False,
                     properties: Properties = NO_PROPERTIES) -> PushMessage:
        """Parse an inbox PUBLISH payload; raises ``ValueError`` if it is not a push object."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"payload is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("payload is not a JSON object")
        msg_id = data.get("msg_id")
        if not isinstance(msg_id, str) or not msg_id:
            raise ValueError("payload has no msg_id")
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise ValueError("payload has no kind")
        return cls(msg_id=msg_id, kind=kind, data=data, topic=topic, dup=dup,
                   properties=properties)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@attrs.frozen
class BrokerMessage:
    """A message from a plain MQTT broker (broker mode). ``properties``: its MQTT 5
    properties (``message_expiry_interval``, ``user_properties``, ``content_type``,
    ``response_topic``, ``correlation_data``, ``payload_format_indicator``, ...; empty on
    MQTT 3.1.1)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    properties: Properties = NO_PROPERTIES

    @property
    def text(self) -> str:
        """The payload as UTF-8 (undecodable bytes replaced by U+FFFD)."""
        return self.payload.decode("utf-8", "replace")


def broker_dedup_key(packet_id: int, topic: str, payload: bytes) -> str:
    """Identity of a QoS 1/2 broker delivery, to recognise its DUP=1 redelivery.

    MQTT messages carry no id of their own and packet ids are reused, so the packet id is
    combined with a digest of topic and payload.
    """
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:16]
    return f"{packet_id}:{digest}"


async def call_app(callback: AnyCallback, *args: Any, what: str) -> bool:
    """Run an app callback (sync or async). Returns False, after logging, if it raised."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
        return True
    except Exception:  # the app's bug must not take the client down; Cancelled passes
        log.exception("%s callback raised", what)
        return False


@attrs.define
class Dispatcher:
    """Routes messages to callbacks and remembers which msg_ids were already delivered.

    Server mode: ``notification`` → ``on_notification``, ``message`` → ``on_message``,
    ``deleted`` → ``on_deleted``; kinds this SDK does not know yet go to ``on_message``.
    Broker mode: everything → ``on_message`` with a :class:`BrokerMessage`. A missing callback
    means the app does not care: the message is still acknowledged.
    """

    on_notification: PushMessageCallback | None = None
    on_message: MessageCallback | None = None
    on_deleted: PushMessageCallback | None = None
    window: int = DEDUP_WINDOW
    #: The device's end-to-end keys; when set, encrypted pushes are decrypted before dispatch.
    webpush_keys: WebPushKeys | None = attrs.field(default=None, init=False)
    #: Open ``client.messages()`` streams; each gets every message after the callbacks.
    streams: tuple[MessageSink, ...] = attrs.field(default=(), init=False)
    # msg_id -> None, oldest first (a dict is an insertion-ordered set with O(1) lookup).
    _recent: dict[str, None] = attrs.field(factory=dict, init=False)
    dispatched: int = attrs.field(default=0, init=False)
    duplicates: int = attrs.field(default=0, init=False)
    callback_errors: int = attrs.field(default=0, init=False)
    decrypt_errors: int = attrs.field(default=0, init=False)

    def load(self, msg_ids: Iterable[str]) -> None:
        """Start from a persisted window (oldest first)."""
        self._recent = dict.fromkeys(msg_ids)
        self._trim()

    def recent(self) -> tuple[str, ...]:
        """The window to persist, oldest first."""
        return tuple(self._recent)

    def seen(self, key: str) -> bool:
        return key in self._recent

    def remember(self, key: str) -> None:
        self._recent.pop(key, None)
        self._recent[key] = None
        self._trim()

    def _trim(self) -> None:
        while len(self._recent) > max(self.window, 0):
            del self._recent[next(iter(self._recent))]

    def _route(self, message: PushMessage | BrokerMessage) -> AnyCallback | None:
        if isinstance(message, BrokerMessage):
            return self.on_message
        if message.kind == "notification":
            return self.on_notification
        if message.kind == "deleted":
            return self.on_deleted
        return self.on_message

    def open(self, key: str | None, message: PushMessage | BrokerMessage, *,
             check: bool = True) -> tuple[PushMessage | BrokerMessage | None, bool]:
        """``(message as the app sees it, new)``: the message to hand to the app — an
        end-to-end encrypted push decrypted — or None when the app must not see it; ``new``
        says whether its key is to be recorded (then the caller persists the window before
        acknowledging).

        ``key=None`` (QoS 0) skips duplicate suppression; ``check=False`` does not look
        ``key`` up first (broker mode only trusts keys of DUP=1 redeliveries). A duplicate
        gives ``(None, False)``. With :attr:`webpush_keys` set, a push that does not decrypt
        (tampered, or sealed for older keys) is logged, counted in ``decrypt_errors`` and
        remembered without reaching the app, ``(None, True)`` — acknowledging it is right,
        since a redelivery would fail the same way forever.
        """
        if check and key is not None and self.seen(key):
            self.duplicates += 1
            return None, False
        if self.webpush_keys is not None and isinstance(message, PushMessage):
            try:
                message = message.decrypted(self.webpush_keys)
            except DecryptionError as exc:
                self.decrypt_errors += 1
                log.warning("dropping push %s: cannot decrypt it: %s", message.msg_id, exc)
                if key is not None:
                    self.remember(key)
                return None, True
        return message, True

    async def dispatch(self, message: PushMessage | BrokerMessage) -> None:
        """Hand an opened message to its callback (if the app has one). A raising callback
        is logged and counted in ``callback_errors``; the message still counts as delivered
        (redelivering it would most likely raise again)."""
        callback = self._route(message)
        if callback is not None:
            kind = "broker" if isinstance(message, BrokerMessage) else message.kind
            if not await call_app(callback, message, what=f"{kind} message"):
                self.callback_errors += 1

    async def deliver(
        self, key: str | None, message: PushMessage | BrokerMessage, *, check: bool = True,
    ) -> bool:
        """:meth:`open`, :meth:`dispatch` and :meth:`finish` in one: True if the message
        was new (the caller persists the window before acknowledging)."""
        shown, new = self.open(key, message, check=check)
        if shown is not None:
            await self.dispatch(shown)
            self.finish(key)
        return new

    def finish(self, key: str | None) -> None:
        """The app is done with a message: count it and remember its key."""
        self.dispatched += 1
        if key is not None:
            self.remember(key)
