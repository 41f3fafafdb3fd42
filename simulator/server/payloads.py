"""The JSON a device receives on its inbox (interfaces §3).

``{"msg_id", "kind", "notification"?, "message"?, "sent_at", "expires_at", "collapse_key"?,
"priority"}``; a ``deleted`` notice carries ``"deleted": {"count": N}``. Times are Unix
seconds from the server's wall clock, rounded to milliseconds.
"""
from __future__ import annotations

from typing import Any

from .validation import PushRequest, compact_json

__all__ = ["deleted_payload", "push_payload"]


def push_payload(msg_id: str, request: PushRequest, sent_at: float, expires_at: float) -> bytes:
    doc: dict[str, Any] = {"msg_id": msg_id, "kind": request.kind}
    if request.notification is not None:
        doc["notification"] = request.notification
    if request.message is not None:
        doc["message"] = request.message
    doc["sent_at"] = round(sent_at, 3)
    doc["expires_at"] = round(expires_at, 3)
    if request.collapse_key is not None:
        doc["collapse_key"] = request.collapse_key
    doc["priority"] = request.priority
    return compact_json(doc)


def deleted_payload(msg_id: str, count: int, sent_at: float, expires_at: float) -> bytes:
    """The notice telling an app that ``count`` queued messages were dropped (queue full),
    like FCM's onDeletedMessages, so it can resync with its own server."""
    return compact_json({
        "msg_id": msg_id,
        "kind": "deleted",
        "deleted": {"count": count},
        "sent_at": round(sent_at, 3),
        "expires_at": round(expires_at, 3),
        "priority": "normal",
    })
