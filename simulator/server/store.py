"""Persistent state of the reference server: apps, devices, tokens, messages, delivery queues.

:class:`Store` is the interface the server uses; :class:`SqliteStore` implements it on one
SQLite database: a file in WAL mode for ``pushsim server``, ``:memory:`` for tests and
simulations. All methods are synchronous and fast (prepared statements, ``executemany``,
partial indexes, one transaction per operation), so the server calls them directly on the
trio thread: no threads, which keeps virtual-time runs deterministic.

Durability: transactions that accept something a client was promised (an app, a
registration, a push) commit with ``synchronous=FULL`` on a file database, so the HTTP 200
that follows means "on disk". Bookkeeping that may be lost without breaking a promise
(sent/delivered marks, subscriptions) commits with ``synchronous=NORMAL``: in WAL mode that
survives a crash of the process and at worst, after a power loss, delivers a message again.

Delivery queue model: one ``deliveries`` row per (message, target device), in insertion
order (``seq``). ``status`` says where it ended up; ``sent`` tracks MQTT in-flight state:
0 never sent, 1 sent on the live connection and not yet acknowledged, 2 sent on an earlier
connection (so the next send is a redelivery with DUP=1). Rows that are in flight are never
expired, collapsed or dropped under the session's feet.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol

from .records import (
    KEEP,
    Device,
    MessageStatus,
    NewMessage,
    Pending,
    PushOutcome,
    SessionOpened,
    StoreCounts,
    StoreError,
)
from .schema import (
    COLLAPSED,
    DELIVERED,
    DROPPED,
    EXPIRED,
    LIVE_ONLY,
    MIGRATIONS,
    PENDING,
    SENT_BEFORE,
)

__all__ = [
    "KEEP",
    "Device",
    "MessageStatus",
    "NewMessage",
    "Pending",
    "PushOutcome",
    "SessionOpened",
    "SqliteStore",
    "Store",
    "StoreCounts",
    "StoreError",
]


class Store(Protocol):
    """What :class:`~simulator.server.server.PushServer` needs from storage."""

    def close(self) -> None: ...
    def recover(self) -> int: ...
    def create_app(self, app_key: str, name: str, secret_hash: bytes, now: float) -> None: ...
    def app_secret_hash(self, app_key: str) -> bytes | None: ...
    def register_device(
        self, app_key: str, device_id: str, platform: str, alias: object, tags: object, *,
        new_registration_id: str, token_hash: bytes, token_expires_at: float, now: float,
    ) -> str: ...
    def token_device(self, token_hash: bytes, now: float) -> tuple[str, str] | None: ...
    def webpush_keys(self, app_key: str, registration_id: str) -> tuple[str, str] | None: ...
    def device(self, registration_id: str) -> Device | None: ...
    def update_device(self, registration_id: str, alias: object, tags: object,
                      now: float) -> Device: ...
    def resolve_audience(self, app_key: str, kind: str, values: Sequence[str]) -> list[str]: ...
    def add_push(self, message: NewMessage, targets: Sequence[str], *, online: Collection[str],
                 queue_cap: int, notice_id: Callable[[], str],
                 notice_expires_at: float) -> PushOutcome: ...
    def open_session(self, registration_id: str, clean: bool) -> SessionOpened: ...
    def close_session(self, registration_id: str, clean: bool) -> int: ...
    def set_subscription(self, registration_id: str, qos: int | None) -> None: ...
    def take_pending(self, registration_id: str, after_seq: int, limit: int,
                     now: float) -> tuple[list[Pending], int]: ...
    def mark_delivered(self, seq: int) -> bool: ...
    def record_receipt(self, registration_id: str, msg_id: str, event: str) -> bool: ...
    def message_status(self, app_key: str, msg_id: str) -> MessageStatus | None: ...
    def expire_due(self, now: float) -> int: ...
    def counts(self) -> StoreCounts: ...


_TARGET_QUERIES = {
    # `+app_key`: look the ids up by primary key, not by scanning all the app's devices
    # (the planner otherwise prefers the (app_key, device_id) index: 9 ms at 36,000).
    "registration_id": "SELECT registration_id FROM devices WHERE +app_key = ? AND "
    "registration_id IN (SELECT value FROM json_each(?))",
    "alias": "SELECT registration_id FROM devices WHERE app_key = ? AND "
    "alias IN (SELECT value FROM json_each(?))",
    "tag": "SELECT DISTINCT registration_id FROM tags WHERE app_key = ? AND "
    "tag IN (SELECT value FROM json_each(?))",
}


class SqliteStore:
    """:class:`Store` on SQLite. ``path`` is a file name or ``":memory:"``.

    A file database is opened in WAL mode with an exclusive lock, so a second server on the
    same file fails at startup instead of corrupting delivery state. ``shared=True`` (the
    worker processes of ``pushsim server --workers N``) opens it in ordinary WAL mode
    instead, with a busy timeout: several processes then share the file, each with its
    own connection, and writes wait for each other. Raises
    :class:`StoreError` when the file cannot be opened, is not a database, or has a schema
    newer than this code.
    """

    def __init__(self, path: str = ":memory:", *, shared: bool = False) -> None:
        self.path = path
        self._file = path != ":memory:"
        self._shared = shared and self._file
        self._sync: str | None = None
        try:
            # Shared: a write waits up to 10 s for another process's transaction.
            self._db = sqlite3.connect(path, isolation_level=None, cached_statements=256,
                                       timeout=10.0 if self._shared else 0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            self._configure()
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            if "locked" in str(exc):
                raise StoreError(f"database {path} is in use by another process") from None
            raise StoreError(f"cannot use database {path}: {exc}") from None
        except StoreError:
            self._db.close()
            raise

    def _configure(self) -> None:
        db = self._db
        if self._file:
            if not self._shared:
                # Exclusive before WAL: no shared-memory index, and one server per file.
                db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot use database {self.path}: WAL mode unavailable")
            self._set_sync("FULL")
        db.execute("PRAGMA temp_store = MEMORY")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {self.path} has schema version {version}; this server knows "
                f"up to {len(MIGRATIONS)}"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
            )

    def _set_sync(self, level: str) -> None:
        if self._sync != level:
            self._db.execute(f"PRAGMA synchronous = {level}")
            self._sync = level

    @contextlib.contextmanager
    def _tx(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` commits with fsync (file databases)."""
        if self._file:
            self._set_sync("FULL" if durable else "NORMAL")
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def recover(self) -> int:
        """Start-up after a stop or crash: no device is connected any more.

        Whatever was in flight becomes a redelivery; ttl=0 messages still queued expire.
        Returns how many expired.
        """
        with self._tx(durable=False) as db:
            db.execute(
                "UPDATE deliveries SET sent = 2 WHERE status = 0 AND sent = 1"
            )
            return db.execute(
                "UPDATE deliveries SET status = 2 WHERE status = 0 AND expires_at = ?",
                (LIVE_ONLY,),
            ).rowcount

    # --- apps ---------------------------------------------------------------------------

    def create_app(self, app_key: str, name: str, secret_hash: bytes, now: float) -> None:
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO apps (app_key, name, secret_hash, created_at) VALUES (?, ?, ?, ?)",
                (app_key, name, secret_hash, now),
            )

    def app_secret_hash(self, app_key: str) -> bytes | None:
        row = self._db.execute(
            "SELECT secret_hash FROM apps WHERE app_key = ?", (app_key,)
        ).fetchone()
        return row[0] if row else None

    # --- devices and tokens -------------------------------------------------------------

    def register_device(
        self, app_key: str, device_id: str, platform: str, alias: object, tags: object, *,
        new_registration_id: str, token_hash: bytes, token_expires_at: float, now: float,
        webpush: object = KEEP,
    ) -> str:
        """Create or refresh the device of ``(app_key, device_id)`` and add a token.

        Returns its registration id (``new_registration_id`` if the device is new).
        ``alias``/``tags`` are :data:`KEEP` to leave them as they are; so is ``webpush``
        (``(p256dh, auth)`` to set the end-to-end keys, None to remove them).
        """
        with self._tx(durable=True) as db:
            row = db.execute(
                "SELECT registration_id FROM devices WHERE app_key = ? AND device_id = ?",
                (app_key, device_id),
            ).fetchone()
            if row:
                rid = row[0]
                db.execute(
                    "UPDATE devices SET platform = ?, updated_at = ? WHERE registration_id = ?",
                    (platform, now, rid),
                )
                db.execute(
                    "DELETE FROM tokens WHERE registration_id = ? AND expires_at <= ?", (rid, now)
                )
            else:
                rid = new_registration_id
                db.execute(
                    "INSERT INTO devices (registration_id, app_key, device_id, platform, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (rid, app_key, device_id, platform, now, now),
                )
            self._write_alias_tags(db, rid, app_key, alias, tags)
            if webpush is None:
                db.execute("DELETE FROM webpush_keys WHERE registration_id = ?", (rid,))
            elif webpush is not KEEP:
                db.execute("INSERT OR REPLACE INTO webpush_keys (registration_id, p256dh, auth) "
                           "VALUES (?, ?, ?)", (rid, *webpush))  # type: ignore[misc]
            db.execute(
                "INSERT INTO tokens (token_hash, registration_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, rid, token_expires_at),
            )
        return rid

    @staticmethod
    def _write_alias_tags(
        db: sqlite3.Connection, rid: str, app_key: str, alias: object, tags: object
    ) -> None:
        if alias is not KEEP:
            db.execute("UPDATE devices SET alias = ? WHERE registration_id = ?", (alias, rid))
        if tags is not KEEP:
            db.execute("DELETE FROM tags WHERE registration_id = ?", (rid,))
            db.executemany(
                "INSERT OR IGNORE INTO tags (app_key, tag, registration_id) VALUES (?, ?, ?)",
                [(app_key, tag, rid) for tag in tags],  # type: ignore[attr-defined]
            )

    def token_device(self, token_hash: bytes, now: float) -> tuple[str, str] | None:
        """``(registration_id, app_key)`` of a valid token, None if unknown or expired."""
        row = self._db.execute(
            "SELECT t.registration_id, d.app_key, t.expires_at FROM tokens t "
            "JOIN devices d ON d.registration_id = t.registration_id WHERE t.token_hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None or row[2] <= now:
            return None
        return row[0], row[1]

    def webpush_keys(self, app_key: str, registration_id: str) -> tuple[str, str] | None:
        """``(p256dh, auth)`` of an ``app_key`` device that registered end-to-end keys."""
        row = self._db.execute(
            "SELECT w.p256dh, w.auth FROM webpush_keys w JOIN devices d "
            "ON d.registration_id = w.registration_id "
            "WHERE w.registration_id = ? AND d.app_key = ?",
            (registration_id, app_key),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def device(self, registration_id: str) -> Device | None:
        row = self._db.execute(
            "SELECT registration_id, app_key, device_id, platform, alias FROM devices "
            "WHERE registration_id = ?",
            (registration_id,),
        ).fetchone()
        if row is None:
            return None
        tags = tuple(
            tag for (tag,) in self._db.execute(
                "SELECT tag FROM tags WHERE registration_id = ? ORDER BY tag", (registration_id,)
            )
        )
        return Device(*row, tags=tags)

    def update_device(self, registration_id: str, alias: object, tags: object,
                      now: float) -> Device:
        with self._tx(durable=True) as db:
            row = db.execute(
                "SELECT app_key FROM devices WHERE registration_id = ?", (registration_id,)
            ).fetchone()
            if row is None:
                raise KeyError(registration_id)
            db.execute(
                "UPDATE devices SET updated_at = ? WHERE registration_id = ?",
                (now, registration_id),
            )
            self._write_alias_tags(db, registration_id, row[0], alias, tags)
        device = self.device(registration_id)
        assert device is not None
        return device

    # --- pushes -------------------------------------------------------------------------

    def resolve_audience(self, app_key: str, kind: str, values: Sequence[str]) -> list[str]:
        """Registration ids of ``app_key``'s devices matching an audience.

        ``kind`` is ``all`` (``values`` ignored), ``registration_id``, ``alias`` or ``tag``
        (devices with any of the tags). Unknown values match nothing.
        """
        if kind == "all":
            rows = self._db.execute(
                "SELECT registration_id FROM devices WHERE app_key = ?", (app_key,)
            )
        else:
            rows = self._db.execute(_TARGET_QUERIES[kind], (app_key, json.dumps(list(values))))
        return [rid for (rid,) in rows]

    def add_push(self, message: NewMessage, targets: Sequence[str], *, online: Collection[str],
                 queue_cap: int, notice_id: Callable[[], str],
                 notice_expires_at: float) -> PushOutcome:
        """Store a push and queue it for every target, in one durable transaction.

        A ttl=0 (``live_only``) push is queued only for targets in ``online``; the others
        count as expired at once. Then, per queued device: older undelivered pushes with the
        same collapse key are replaced, and if more than ``queue_cap`` messages are waiting
        the oldest are dropped and reported in a ``deleted`` notice (a not-yet-sent notice
        grows instead of a second one being queued).
        """
        if message.live_only:
            queued = [rid for rid in targets if rid in online]
            offline = [rid for rid in targets if rid not in online]
            row_expiry = LIVE_ONLY
        else:
            queued, offline, row_expiry = list(targets), [], message.expires_at
        msg_id, key = message.msg_id, message.collapse_key
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO messages (msg_id, app_key, kind, payload, sent_at, expires_at, "
                "targets) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg_id, message.app_key, message.kind, message.payload, message.sent_at,
                 message.expires_at, len(targets)),
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
            dropped = notices = 0
            for rid in queued:
                (waiting,) = db.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE registration_id = ? AND status = 0 "
                    "AND notice = 0",
                    (rid,),
                ).fetchone()
                if waiting > queue_cap:
                    n = self._drop_oldest(db, rid, message, waiting - queue_cap, notice_id,
                                          notice_expires_at)
                    dropped += n
                    notices += n > 0
        return PushOutcome(
            targets=len(targets), queued=tuple(queued), expired=len(offline),
            collapsed=collapsed, dropped=dropped, notices=notices,
        )

    @staticmethod
    def _drop_oldest(db: sqlite3.Connection, rid: str, message: NewMessage, excess: int,
                     notice_id: Callable[[], str], notice_expires_at: float) -> int:
        victims = db.execute(
            "SELECT seq FROM deliveries WHERE registration_id = ? AND status = 0 AND notice = 0 "
            "AND sent != 1 ORDER BY seq LIMIT ?",
            (rid, excess),
        ).fetchall()
        if not victims:
            return 0
        db.executemany("UPDATE deliveries SET status = 4 WHERE seq = ?", victims)
        count = len(victims)
        notice = db.execute(
            "SELECT msg_id FROM deliveries WHERE registration_id = ? AND status = 0 "
            "AND notice = 1 AND sent = 0 ORDER BY seq DESC LIMIT 1",
            (rid,),
        ).fetchone()
        if notice:
            db.execute(
                "UPDATE messages SET notice_count = notice_count + ? WHERE msg_id = ?",
                (count, notice[0]),
            )
        else:
            nid = notice_id()
            db.execute(
                "INSERT INTO messages (msg_id, app_key, kind, notice_count, sent_at, "
                "expires_at, targets) VALUES (?, ?, 'deleted', ?, ?, ?, 1)",
                (nid, message.app_key, count, message.sent_at, notice_expires_at),
            )
            db.execute(
                "INSERT INTO deliveries (registration_id, msg_id, expires_at, notice) "
                "VALUES (?, ?, ?, 1)",
                (rid, nid, notice_expires_at),
            )
        return count

    # --- MQTT sessions and delivery -----------------------------------------------------

    def open_session(self, registration_id: str, clean: bool) -> SessionOpened:
        """A device connected. A clean session discards the stored one (subscription and
        queued messages, as MQTT 3.1.1 requires); otherwise the stored one is resumed or a
        new persistent one begins."""
        with self._tx(durable=False) as db:
            row = db.execute(
                "SELECT session, sub_qos FROM devices WHERE registration_id = ?",
                (registration_id,),
            ).fetchone()
            existing = bool(row and row[0])
            # Whatever an earlier connection left in flight is a redelivery now. Normally
            # close_session did that already; not when that connection was on a worker
            # process that crashed or learned of the takeover only afterwards.
            db.execute(
                "UPDATE deliveries SET sent = 2 WHERE registration_id = ? AND status = 0 "
                "AND sent = 1",
                (registration_id,),
            )
            if clean:
                discarded = db.execute(
                    "UPDATE deliveries SET status = 4 WHERE registration_id = ? AND status = 0",
                    (registration_id,),
                ).rowcount
                db.execute(
                    "UPDATE devices SET session = 0, sub_qos = NULL WHERE registration_id = ?",
                    (registration_id,),
                )
                return SessionOpened(session_present=False, sub_qos=None, discarded=discarded)
            if not existing:
                db.execute(
                    "UPDATE devices SET session = 1, sub_qos = NULL WHERE registration_id = ?",
                    (registration_id,),
                )
                return SessionOpened(session_present=False, sub_qos=None)
            return SessionOpened(session_present=True, sub_qos=row[1])

    def close_session(self, registration_id: str, clean: bool) -> int:
        """A device's connection ended: unacknowledged messages become redeliveries, ttl=0
        messages still queued for it expire (returned), and a clean session is forgotten."""
        with self._tx(durable=False) as db:
            db.execute(
                "UPDATE deliveries SET sent = 2 WHERE registration_id = ? AND status = 0 "
                "AND sent = 1",
                (registration_id,),
            )
            expired = db.execute(
                "UPDATE deliveries SET status = 2 WHERE registration_id = ? AND status = 0 "
                "AND expires_at = ?",
                (registration_id, LIVE_ONLY),
            ).rowcount
            if clean:
                db.execute(
                    "UPDATE devices SET session = 0, sub_qos = NULL WHERE registration_id = ?",
                    (registration_id,),
                )
        return expired

    def set_subscription(self, registration_id: str, qos: int | None) -> None:
        with self._tx(durable=False) as db:
            db.execute(
                "UPDATE devices SET sub_qos = ? WHERE registration_id = ?", (qos, registration_id)
            )

    def take_pending(self, registration_id: str, after_seq: int, limit: int,
                     now: float) -> tuple[list[Pending], int]:
        """Up to ``limit`` queued messages after ``after_seq``, oldest first, marked in flight.

        Messages past their expiry are expired first (their count is returned second).
        """
        with self._tx(durable=False) as db:
            expired = db.execute(
                "UPDATE deliveries SET status = 2 WHERE registration_id = ? AND status = 0 "
                "AND sent != 1 AND expires_at <= ?",
                (registration_id, now),
            ).rowcount
            rows = db.execute(
                "SELECT d.seq, d.msg_id, m.payload, m.notice_count, m.sent_at, m.expires_at, "
                "d.sent FROM deliveries d JOIN messages m ON m.msg_id = d.msg_id "
                "WHERE d.registration_id = ? AND d.status = 0 AND d.seq > ? "
                "ORDER BY d.seq LIMIT ?",
                (registration_id, after_seq, limit),
            ).fetchall()
            if rows:
                db.executemany(
                    "UPDATE deliveries SET sent = 1 WHERE seq = ?", [(r[0],) for r in rows]
                )
        pending = [
            Pending(seq, msg_id, payload, count, sent_at, expires_at, sent == SENT_BEFORE)
            for seq, msg_id, payload, count, sent_at, expires_at, sent in rows
        ]
        return pending, expired

    def mark_delivered(self, seq: int) -> bool:
        """Record a PUBACK. False if the row was not pending (e.g. already delivered)."""
        with self._tx(durable=False) as db:
            return db.execute(
                "UPDATE deliveries SET status = 1, sent = 2 WHERE seq = ? AND status = 0", (seq,)
            ).rowcount > 0

    def record_receipt(self, registration_id: str, msg_id: str, event: str) -> bool:
        """Record an ``opened``/``dismissed`` receipt; False if the message never targeted
        that device."""
        column = {"opened": "opened", "dismissed": "dismissed"}[event]
        with self._tx(durable=False) as db:
            return db.execute(
                f"UPDATE deliveries SET {column} = 1 WHERE msg_id = ? AND registration_id = ?",
                (msg_id, registration_id),
            ).rowcount > 0

    def message_status(self, app_key: str, msg_id: str) -> MessageStatus | None:
        row = self._db.execute(
            "SELECT targets FROM messages WHERE msg_id = ? AND app_key = ?", (msg_id, app_key)
        ).fetchone()
        if row is None:
            return None
        by_status = [0] * 5
        opened = dismissed = 0
        for status, n, o, d in self._db.execute(
            "SELECT status, COUNT(*), SUM(opened), SUM(dismissed) FROM deliveries "
            "WHERE msg_id = ? GROUP BY status",
            (msg_id,),
        ):
            by_status[status] = n
            opened += o
            dismissed += d
        return MessageStatus(
            msg_id=msg_id, targets=row[0], delivered=by_status[DELIVERED],
            pending=by_status[PENDING], expired=by_status[EXPIRED],
            collapsed=by_status[COLLAPSED], dropped=by_status[DROPPED],
            opened=opened, dismissed=dismissed,
        )

    def expire_due(self, now: float) -> int:
        """Expire every queued message past its expiry that is not in flight; how many."""
        with self._tx(durable=False) as db:
            return db.execute(
                "UPDATE deliveries SET status = 2 WHERE status = 0 AND expires_at <= ? "
                "AND sent != 1",
                (now,),
            ).rowcount

    def counts(self) -> StoreCounts:
        (apps,) = self._db.execute("SELECT COUNT(*) FROM apps").fetchone()
        (devices,) = self._db.execute("SELECT COUNT(*) FROM devices").fetchone()
        (pending,) = self._db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE status = 0"
        ).fetchone()
        return StoreCounts(apps=apps, devices=devices, pending=pending)
