"""Every write the reference server makes to its database, as functions of a connection.

Each function runs inside a write transaction that its caller opened
(:meth:`~simulator.server.store.SqliteStore.commit`, usually through the
:class:`~simulator.server.committer.Committer`, which may put many of them in one
transaction). None of them opens, commits or rolls back a transaction, touches the
server's in-memory state, or blocks on anything but SQLite: the committer may run them on
a worker thread.

Two shapes:

* *operations* (``create_app``, ``register_device``, ``issue_challenge``,
  ``update_device``, ``delete_device``, ``add_push``, ``open_session``, ``recover``): a
  caller waits for the result;
* *bookkeeping* (``mark_sent``, ``mark_delivered``, ``expire_rows``, ``close_sessions``,
  ``set_subscriptions``, ``record_receipts``, ``expire_due``): take a list of items, so
  the committer can apply a whole batch of them with one call, and return a count.

Delivery queue model (see ``schema.py``): one ``deliveries`` row per (message, device) in
``seq`` order; ``status`` says where it ended, ``sent`` is 0 never sent, 1 in flight on the
live connection, 2 sent on an earlier connection. Rows in flight are never expired,
collapsed or dropped under the session's feet.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from .keys import verify_proof
from .records import (
    KEEP,
    Device,
    DeviceDeleted,
    NewMessage,
    PushOutcome,
    Refusal,
    Registered,
    SessionOpened,
)
from .schema import LIVE_ONLY
from .logs import server_logger

if TYPE_CHECKING:
    from .validation import DeviceRequest

__all__ = [
    "Identity", "add_push", "proof_required", "close_sessions", "create_app", "delete_device",
    "expire_due",
    "expire_rows", "issue_challenge", "mark_delivered", "mark_sent", "open_session",
    "record_receipts", "recover", "register_device", "set_subscriptions", "update_device",
]

log = server_logger("simulator.server.mqtt")


# --- operations ---------------------------------------------------------------------------

def recover(db: sqlite3.Connection) -> int:
    """Start-up after a stop or crash: no device is connected any more. Whatever was in
    flight becomes a redelivery — and so does everything queued for a device whose
    connection was open at the crash (its *sent* marks may not have been committed);
    ttl=0 messages still queued expire (how many)."""
    db.execute("UPDATE deliveries SET sent = 2 WHERE status = 0 AND sent = 1")
    db.execute("UPDATE deliveries SET sent = 2 WHERE status = 0 AND sent = 0 AND "
               "registration_id IN (SELECT registration_id FROM devices WHERE online = 1)")
    db.execute("UPDATE devices SET online = 0 WHERE online = 1")
    return db.execute(
        "UPDATE deliveries SET status = 2 WHERE status = 0 AND expires_at = ?", (LIVE_ONLY,)
    ).rowcount


def create_app(db: sqlite3.Connection, app_key: str, name: str, secret_hash: bytes,
               now: float) -> None:
    db.execute("INSERT INTO apps (app_key, name, secret_hash, created_at) VALUES (?, ?, ?, ?)",
               (app_key, name, secret_hash, now))


@attrs.frozen
class Identity:
    """What a re-registration must show (``register_device``): ``bearer_hash`` is the
    SHA-256 of the ``Authorization: Bearer`` token sent with the request, if any;
    ``challenge`` is a fresh one to hand out should the caller need to prove itself."""

    bearer_hash: bytes | None
    challenge: str
    challenge_expires_at: float
    max_challenges: int
    token_grace: float
    alias_limit: int


def register_device(
    db: sqlite3.Connection, app_key: str, request: DeviceRequest, identity: Identity, *,
    new_registration_id: str, token_hash: bytes, token_expires_at: float, now: float,
) -> Registered | Refusal:
    """Register ``request.device_id`` of ``app_key`` and add a token (docs/security.md).

    A device id never seen: created (``new_registration_id``), bound to
    ``request.device_key`` if given. One already registered: only for a caller that proves
    it is that installation — a signature of a challenge by the bound key, or for an
    unbound registration one of its own non-revoked tokens as ``identity.bearer_hash`` —
    else a :class:`Refusal` (401 with a new challenge, or 403); a success revokes every
    older token after ``identity.token_grace`` seconds. An alias held by
    ``identity.alias_limit`` other devices is a 409. A refusal changes nothing but the
    challenges. ``alias``, ``tags`` and ``webpush`` are :data:`KEEP` to leave them.
    """
    row = db.execute(
        "SELECT registration_id, device_key FROM devices WHERE app_key = ? AND device_id = ?",
        (app_key, request.device_id),
    ).fetchone()
    created = row is None
    if created:
        rid, bound_key = new_registration_id, request.device_key
    else:
        rid, bound_key = row
        refusal = _prove(db, app_key, request, identity, rid, bound_key, now)
        if refusal is not None:
            return refusal
    if not _alias_free(db, app_key, rid, request.alias, identity.alias_limit):
        return _alias_taken(request.alias)
    if created:
        db.execute(
            "INSERT INTO devices (registration_id, app_key, device_id, platform, device_key, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, app_key, request.device_id, request.platform, bound_key, now, now),
        )
    else:
        db.execute("UPDATE devices SET platform = ?, device_key = ?, updated_at = ? "
                   "WHERE registration_id = ?",
                   (request.platform, bound_key or request.device_key, now, rid))
        _rotate_tokens(db, rid, now, identity.token_grace)
    _write_alias_tags(db, rid, app_key, request.alias, request.tags)
    if request.webpush is None:
        db.execute("DELETE FROM webpush_keys WHERE registration_id = ?", (rid,))
    elif request.webpush is not KEEP:
        db.execute("INSERT OR REPLACE INTO webpush_keys (registration_id, p256dh, auth) "
                   "VALUES (?, ?, ?)", (rid, *request.webpush))  # type: ignore[misc]
    db.execute("INSERT INTO tokens (token_hash, registration_id, expires_at) VALUES (?, ?, ?)",
               (token_hash, rid, token_expires_at))
    return Registered(rid, created)


def _prove(db: sqlite3.Connection, app_key: str, request: DeviceRequest, identity: Identity,
           rid: str, bound_key: bytes | None, now: float) -> Refusal | None:
    """None if the caller proved it holds the registration ``rid``, else the refusal."""
    proof = request.proof
    if proof is not None:
        # Single use: the challenge is consumed whether or not the signature is right.
        consumed = db.execute(
            "DELETE FROM challenges WHERE challenge = ? AND app_key = ? AND device_id = ? "
            "AND expires_at > ?", (proof.challenge, app_key, request.device_id, now),
        ).rowcount
        if not consumed:
            return _bound("the challenge is unknown, expired or used already")
        if bound_key is None or not verify_proof(bound_key, proof.signature, app_key,
                                                 request.device_id, proof.challenge):
            return _bound("the proof does not verify with the key bound to this device")
    elif identity.bearer_hash is not None and bound_key is None:
        if not _own_token(db, rid, identity.bearer_hash, now):
            return _bound("the bearer token is not one of this registration's")
    else:  # nothing shown (or a token where only the key counts): prove it
        issue_challenge(db, app_key, request.device_id, identity.challenge,
                        identity.challenge_expires_at, identity.max_challenges, now)
        return proof_required(identity, now)
    if bound_key is not None and request.device_key not in (None, bound_key):
        return _bound("this registration is bound to another device key")
    return None


def proof_required(identity: Identity, now: float) -> Refusal:
    """The 401 that hands out ``identity.challenge``."""
    return Refusal(401, "proof_required", "this device id is registered: sign the "
                   "challenge with the device key (proof) to register again",
                   challenge=identity.challenge,
                   challenge_expires_in=round(identity.challenge_expires_at - now, 3))


def _bound(message: str) -> Refusal:
    return Refusal(403, "device_bound", message)


def _alias_taken(alias: object) -> Refusal:
    return Refusal(409, "alias_taken", f"alias {str(alias)[:128]!r} is held by other devices "
                   "of this app (the app server can assign it with its master secret)")


def _own_token(db: sqlite3.Connection, rid: str, token_hash: bytes, now: float) -> bool:
    """Whether ``token_hash`` is a token of ``rid`` not revoked yet (expired counts: a
    legacy device proves itself with whatever token it has)."""
    return db.execute(
        "SELECT 1 FROM tokens WHERE token_hash = ? AND registration_id = ? "
        "AND (revoke_at IS NULL OR revoke_at > ?)", (token_hash, rid, now),
    ).fetchone() is not None


def _rotate_tokens(db: sqlite3.Connection, rid: str, now: float, grace: float) -> None:
    """A new token is about to be added: every older one stops working ``grace`` seconds
    from now (sooner if it was due sooner); revoked ones are deleted."""
    db.execute("DELETE FROM tokens WHERE registration_id = ? AND revoke_at <= ?", (rid, now))
    db.execute("UPDATE tokens SET revoke_at = ? WHERE registration_id = ? "
               "AND (revoke_at IS NULL OR revoke_at > ?)", (now + grace, rid, now + grace))


def issue_challenge(db: sqlite3.Connection, app_key: str, device_id: str, challenge: str,
                    expires_at: float, limit: int, now: float) -> str:
    """Store ``challenge`` for the device; only its ``limit`` newest ones stay valid, and
    expired ones of any device are deleted (a flood of requests grows nothing)."""
    db.execute("DELETE FROM challenges WHERE expires_at <= ?", (now,))
    db.execute("INSERT INTO challenges (challenge, app_key, device_id, expires_at) "
               "VALUES (?, ?, ?, ?)", (challenge, app_key, device_id, expires_at))
    db.execute(
        "DELETE FROM challenges WHERE app_key = ? AND device_id = ? AND id NOT IN "
        "(SELECT id FROM challenges WHERE app_key = ? AND device_id = ? "
        "ORDER BY id DESC LIMIT ?)", (app_key, device_id, app_key, device_id, limit),
    )
    return challenge


def _alias_free(db: sqlite3.Connection, app_key: str, rid: str, alias: object,
                limit: int | None) -> bool:
    """Whether device ``rid`` may bind ``alias``: fewer than ``limit`` *other* devices of
    the app hold it (None: no limit, for the app server)."""
    if limit is None or alias is None or alias is KEEP:
        return True
    (holders,) = db.execute(
        "SELECT COUNT(*) FROM devices WHERE app_key = ? AND alias = ? "
        "AND registration_id != ?", (app_key, alias, rid),
    ).fetchone()
    return bool(holders < limit)


def _write_alias_tags(db: sqlite3.Connection, rid: str, app_key: str, alias: object,
                      tags: object) -> None:
    if alias is not KEEP:
        db.execute("UPDATE devices SET alias = ? WHERE registration_id = ?", (alias, rid))
    if tags is not KEEP:
        db.execute("DELETE FROM tags WHERE registration_id = ?", (rid,))
        db.executemany(
            "INSERT OR IGNORE INTO tags (app_key, tag, registration_id) VALUES (?, ?, ?)",
            [(app_key, tag, rid) for tag in tags],  # type: ignore[attr-defined]
        )


def update_device(db: sqlite3.Connection, registration_id: str, alias: object, tags: object,
                  now: float, alias_limit: int | None = None) -> Device | Refusal | None:
    """Change alias/tags (:data:`KEEP` leaves one as it is); the device, None if unknown,
    a 409 :class:`Refusal` if the alias is held by ``alias_limit`` other devices (None: no
    limit, for the app server)."""
    row = db.execute("SELECT app_key FROM devices WHERE registration_id = ?",
                     (registration_id,)).fetchone()
    if row is None:
        return None
    if not _alias_free(db, row[0], registration_id, alias, alias_limit):
        return _alias_taken(alias)
    db.execute("UPDATE devices SET updated_at = ? WHERE registration_id = ?",
               (now, registration_id))
    _write_alias_tags(db, registration_id, row[0], alias, tags)
    return read_device(db, registration_id)


def delete_device(db: sqlite3.Connection, app_key: str,
                  registration_id: str, now: float = 0.0) -> DeviceDeleted | None:
    """Unregister: the device, its tokens, tags, keys and challenges go; whatever was
    queued for it is dropped (counted in each message's status); its unexpired tokens are
    remembered as a deleted device's until they expire (``deleted_tokens``, wall clock
    ``now``). None if ``app_key`` has no such registration."""
    row = db.execute("SELECT device_id FROM devices WHERE registration_id = ? AND app_key = ?",
                     (registration_id, app_key)).fetchone()
    if row is None:
        return None
    (device_id,) = row
    dropped = db.execute("UPDATE deliveries SET status = 4 WHERE registration_id = ? "
                         "AND status = 0", (registration_id,)).rowcount
    db.execute("DELETE FROM deleted_tokens WHERE expires_at <= ?", (now,))
    db.execute("INSERT OR REPLACE INTO deleted_tokens (token_hash, expires_at) "
               "SELECT token_hash, expires_at FROM tokens WHERE registration_id = ? "
               "AND expires_at > ?", (registration_id, now))
    for table in ("tokens", "tags", "webpush_keys", "devices"):
        db.execute(f"DELETE FROM {table} WHERE registration_id = ?", (registration_id,))
    db.execute("DELETE FROM challenges WHERE app_key = ? AND device_id = ?",
               (app_key, device_id))
    return DeviceDeleted(device_id, dropped)


def read_device(db: sqlite3.Connection, registration_id: str) -> Device | None:
    row = db.execute(
        "SELECT registration_id, app_key, device_id, platform, alias FROM devices "
        "WHERE registration_id = ?", (registration_id,),
    ).fetchone()
    if row is None:
        return None
    tags = tuple(tag for (tag,) in db.execute(
        "SELECT tag FROM tags WHERE registration_id = ? ORDER BY tag", (registration_id,)))
    _rid, app_key, device_id, platform, alias = row  # _rid == registration_id
    return Device(registration_id, app_key, device_id, platform, alias, tags)


def add_push(db: sqlite3.Connection, message: NewMessage, queued: Sequence[str],
             offline: Sequence[str], *, queue_cap: int, notice_id: Callable[[], str],
             notice_expires_at: float) -> PushOutcome:
    """Store a push and queue it for ``queued``; ``offline`` are ttl=0 targets that were
    not connected (they count as expired at once).

    Per queued device: older undelivered pushes with the same collapse key are replaced,
    and if more than ``queue_cap`` messages are waiting the oldest are dropped and reported
    in a ``deleted`` notice (a not-yet-sent notice grows instead of a second one being
    queued). ``notice_id`` makes a notice's msg_id (it may be called on the committer's
    thread).
    """
    msg_id, key = message.msg_id, message.collapse_key
    row_expiry = LIVE_ONLY if message.live_only else message.expires_at
    db.execute(
        "INSERT INTO messages (msg_id, app_key, kind, payload, sent_at, expires_at, "
        "targets) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (msg_id, message.app_key, message.kind, message.payload, message.sent_at,
         message.expires_at, len(queued) + len(offline)),
    )
    collapsed = 0
    if key is not None:
        collapsed = db.executemany(
            "UPDATE deliveries SET status = 3 WHERE registration_id = ? AND status = 0 "
            "AND sent != 1 AND collapse_key = ?",
            [(rid, key) for rid in queued],
        ).rowcount
    db.executemany(
        "INSERT INTO deliveries (registration_id, msg_id, expires_at, collapse_key) "
        "VALUES (?, ?, ?, ?)",
        [(rid, msg_id, row_expiry, key) for rid in queued],
    )
    if offline:
        db.executemany(
            "INSERT INTO deliveries (registration_id, msg_id, status, expires_at) "
            "VALUES (?, ?, 2, ?)",
            [(rid, msg_id, message.expires_at) for rid in offline],
        )
    # The devices now over the queue cap, found by one query (not one per device: a
    # broadcast may have 50,000 targets), then handled in audience order.
    over = dict(db.execute(
        "SELECT registration_id, COUNT(*) FROM deliveries WHERE status = 0 AND notice = 0 "
        "AND registration_id IN (SELECT value FROM json_each(?)) "
        "GROUP BY registration_id HAVING COUNT(*) > ?", (json.dumps(queued), queue_cap),
    ).fetchall()) if queued else {}
    dropped = notices = 0
    for rid in queued if over else ():
        waiting = over.get(rid)
        if waiting is not None:
            n = _drop_oldest(db, rid, message, waiting - queue_cap, notice_id,
                             notice_expires_at)
            dropped += n
            notices += n > 0
    return PushOutcome(targets=len(queued) + len(offline), queued=tuple(queued),
                       expired=len(offline), collapsed=collapsed, dropped=dropped,
                       notices=notices)


def _drop_oldest(db: sqlite3.Connection, rid: str, message: NewMessage, excess: int,
                 notice_id: Callable[[], str], notice_expires_at: float) -> int:
    victims = db.execute(
        "SELECT seq FROM deliveries WHERE registration_id = ? AND status = 0 AND notice = 0 "
        "AND sent != 1 ORDER BY seq LIMIT ?", (rid, excess),
    ).fetchall()
    if not victims:
        return 0
    db.executemany("UPDATE deliveries SET status = 4 WHERE seq = ?", victims)
    count = len(victims)
    notice = db.execute(
        "SELECT msg_id FROM deliveries WHERE registration_id = ? AND status = 0 "
        "AND notice = 1 AND sent = 0 ORDER BY seq DESC LIMIT 1", (rid,),
    ).fetchone()
    if notice:
        db.execute("UPDATE messages SET notice_count = notice_count + ? WHERE msg_id = ?",
                   (count, notice[0]))
    else:
        nid = notice_id()
        db.execute(
            "INSERT INTO messages (msg_id, app_key, kind, notice_count, sent_at, "
            "expires_at, targets) VALUES (?, ?, 'deleted', ?, ?, ?, 1)",
            (nid, message.app_key, count, message.sent_at, notice_expires_at),
        )
        db.execute("INSERT INTO deliveries (registration_id, msg_id, expires_at, notice) "
                   "VALUES (?, ?, ?, 1)", (rid, nid, notice_expires_at))
    return count


def open_session(db: sqlite3.Connection, registration_id: str, clean: bool,
                 now: float = 0.0) -> SessionOpened:
    """A device connected. A clean session (3.1.1 clean session 1, 5.0 Clean Start 1)
    discards the stored one — subscription and queued messages, as MQTT requires — and so
    does a stored session whose 5.0 Session Expiry ran out (``now``, wall clock, past its
    ``session_expires_at``); otherwise the stored one is resumed or a new one begins."""
    row = db.execute("SELECT session, sub_qos, online, session_expires_at FROM devices "
                     "WHERE registration_id = ?", (registration_id,)).fetchone()
    existing = bool(row and row[0])
    # Whatever an earlier connection left in flight is a redelivery now. Normally
    # close_sessions did that already; not when that connection was on a worker process
    # that crashed or learned of the takeover only afterwards — then (still online) any
    # queued message may have been sent on it without its mark reaching the disk.
    unclosed = "" if row is None or not row[2] else " OR sent = 0"
    db.execute("UPDATE deliveries SET sent = 2 WHERE registration_id = ? AND status = 0 "
               f"AND (sent = 1{unclosed})", (registration_id,))
    db.execute("UPDATE devices SET online = 1, session_expires_at = NULL "
               "WHERE registration_id = ?", (registration_id,))
    # ttl=0 messages were for the earlier connection only (close_sessions expires them;
    # this covers a close whose bookkeeping was lost with a failed commit).
    expired = db.execute(
        "UPDATE deliveries SET status = 2 WHERE registration_id = ? AND status = 0 "
        "AND expires_at = ?", (registration_id, LIVE_ONLY),
    ).rowcount
    lapsed = existing and row[3] is not None and row[3] <= now
    if clean or lapsed:
        discarded = db.execute(
            "UPDATE deliveries SET status = 4 WHERE registration_id = ? AND status = 0",
            (registration_id,),
        ).rowcount
        db.execute(f"UPDATE devices SET session = {int(not clean)}, sub_qos = NULL "
                   "WHERE registration_id = ?", (registration_id,))
        return SessionOpened(session_present=False, sub_qos=None, discarded=discarded,
                             expired=expired)
    if not existing:
        db.execute("UPDATE devices SET session = 1, sub_qos = NULL WHERE registration_id = ?",
                   (registration_id,))
        return SessionOpened(session_present=False, sub_qos=None, expired=expired)
    return SessionOpened(session_present=True, sub_qos=row[1], expired=expired)


# --- bookkeeping: lists of items, a count back --------------------------------------------

def close_sessions(db: sqlite3.Connection,
                   items: list[tuple[str, bool, float | None]]) -> int:
    """Connections of ``(registration_id, end, expires_at)`` ended: unacknowledged
    messages become redeliveries, ttl=0 messages still queued expire (how many,
    returned); ``end``: the session ends with the connection (3.1.1 clean session, 5.0
    Session Expiry Interval 0) and is forgotten; else it is kept until ``expires_at``
    (wall clock; None = for ever)."""
    expired = 0
    for rid, end, expires_at in items:
        db.execute("UPDATE deliveries SET sent = 2 WHERE registration_id = ? AND status = 0 "
                   "AND sent = 1", (rid,))
        expired += db.execute(
            "UPDATE deliveries SET status = 2 WHERE registration_id = ? AND status = 0 "
            "AND expires_at = ?", (rid, LIVE_ONLY),
        ).rowcount
        if end:
            db.execute("UPDATE devices SET online = 0, session = 0, sub_qos = NULL "
                       "WHERE registration_id = ?", (rid,))
        else:
            db.execute("UPDATE devices SET online = 0, session = 1, session_expires_at = ? "
                       "WHERE registration_id = ?", (expires_at, rid))
    return expired


def set_subscriptions(db: sqlite3.Connection, items: list[tuple[str, int | None]]) -> int:
    """``(registration_id, granted QoS or None)``: the stored inbox subscriptions."""
    return db.executemany("UPDATE devices SET sub_qos = ? WHERE registration_id = ?",
                          [(qos, rid) for rid, qos in items]).rowcount


def mark_sent(db: sqlite3.Connection, seqs: list[int]) -> int:
    """These queue rows were written to their device's live connection (in flight)."""
    return db.executemany("UPDATE deliveries SET sent = 1 WHERE seq = ?",
                          [(seq,) for seq in seqs]).rowcount


def mark_delivered(db: sqlite3.Connection, seqs: list[int]) -> int:
    """PUBACKs (or QoS 0 writes); how many rows were still pending (now delivered)."""
    return db.executemany("UPDATE deliveries SET status = 1, sent = 2 WHERE seq = ? "
                          "AND status = 0", [(seq,) for seq in seqs]).rowcount


def expire_rows(db: sqlite3.Connection, seqs: list[int]) -> int:
    """Expire these queue rows (found past their expiry) unless they went in flight since;
    how many."""
    return db.executemany("UPDATE deliveries SET status = 2 WHERE seq = ? AND status = 0 "
                          "AND sent != 1", [(seq,) for seq in seqs]).rowcount


def record_receipts(db: sqlite3.Connection, items: list[tuple[str, str, str]]) -> int:
    """``(registration_id, msg_id, "opened" | "dismissed")`` receipts; how many matched a
    message that targeted the device (the others are logged and ignored)."""
    recorded = 0
    for rid, msg_id, event in items:
        column = {"opened": "opened", "dismissed": "dismissed"}[event]
        if db.execute(f"UPDATE deliveries SET {column} = 1 WHERE msg_id = ? "
                      "AND registration_id = ?", (msg_id, rid)).rowcount:
            recorded += 1
        else:
            log.info("device %s sent a receipt for unknown message %r", rid, msg_id[:64])
    return recorded


def expire_due(db: sqlite3.Connection, nows: list[float]) -> int:
    """Expire every queued message past its expiry (at the latest of ``nows``) that is not
    in flight; how many."""
    return db.execute("UPDATE deliveries SET status = 2 WHERE status = 0 AND expires_at <= ? "
                      "AND sent != 1", (max(nows),)).rowcount
