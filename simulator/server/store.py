"""Persistent state of the reference server: apps, devices, tokens, messages, delivery queues.

:class:`Store` is what the server needs; :class:`SqliteStore` implements it on one SQLite
database: a file in WAL mode for ``pushsim server``, ``:memory:`` for tests and
simulations. The store *reads* (cached prepared statements, partial indexes) directly on
the trio thread; every *write* is a function of a connection in :mod:`.writes`, run in a
transaction by :meth:`SqliteStore.commit` — normally through the server's
:class:`~simulator.server.committer.Committer`, which may group many writes into one
transaction and run it on a worker thread.

Connections. A file database has two: the *reader* (the event loop's, ``query_only``) and
the *writer* (the committer's, usable from any one thread at a time). ``:memory:`` has
one, which is both (and is never used from a thread). In WAL mode readers see the last
committed state and never wait for the writer.

Durability: a commit that accepts something a client was promised (an app, a
registration, a push) runs with ``synchronous=FULL`` on a file database, so the HTTP 200
that follows means "on disk". Bookkeeping that may be lost without breaking a promise
(sent/delivered marks, sessions, subscriptions, receipts) commits with
``synchronous=NORMAL``: in WAL mode that survives a crash of the process, and at worst,
after a power loss, delivers a message again.

One server per file: a file database is locked with ``flock`` for the store's life (a
second server fails at startup); ``shared=True`` (the worker processes of ``pushsim server
--workers N``, whose parent holds that lock) skips it, and writes of different processes
wait for each other.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, TypeVar

from . import writes
from .records import (
    KEEP,
    Device,
    MessageStatus,
    NewMessage,
    Pending,
    PushOutcome,
    Refusal,
    Registered,
    SessionOpened,
    StoreCounts,
    StoreError,
    TokenOwner,
)
from .schema import (
    COLLAPSED,
    DELIVERED,
    DROPPED,
    EXPIRED,
    IN_FLIGHT,
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
    "TokenOwner",
    "split_live",
]

T = TypeVar("T")
#: How long a write waits for another process's transaction (``shared=True``).
BUSY_TIMEOUT = 10.0


class Store(Protocol):
    """What :class:`~simulator.server.server.PushServer` needs from storage."""

    def close(self) -> None: ...
    def commit(self, work: Callable[[sqlite3.Connection], T], durable: bool = False) -> T: ...
    def app_secret_hash(self, app_key: str) -> bytes | None: ...
    def token_device(self, token_hash: bytes, now: float) -> TokenOwner | None: ...
    def token_of_deleted_device(self, token_hash: bytes, now: float) -> bool: ...
    def device_registered(self, app_key: str, device_id: str) -> bool: ...
    def webpush_keys(self, app_key: str, registration_id: str) -> tuple[str, str] | None: ...
    def device(self, registration_id: str) -> Device | None: ...
    def resolve_audience(self, app_key: str, kind: str, values: Sequence[str]) -> list[str]: ...
    def pending_rows(self, registration_id: str, after_seq: int, limit: int, now: float,
                     min_left: float = 0.0) -> tuple[list[Pending], list[int]]: ...
    def message_status(self, app_key: str, msg_id: str) -> MessageStatus | None: ...
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


def split_live(message: NewMessage, targets: Sequence[str],
               online: Collection[str]) -> tuple[list[str], list[str]]:
    """``(queued, offline)``: a ttl=0 push is queued only for devices online right now."""
    if not message.live_only:
        return list(targets), []
    return [rid for rid in targets if rid in online], [rid for rid in targets
                                                       if rid not in online]


class SqliteStore:
    """:class:`Store` on SQLite. ``path`` is a file name or ``":memory:"``.

    Raises :class:`StoreError` when the file cannot be opened, is not a database, has a
    schema newer than this code, or is in use by another server.
    """

    def __init__(self, path: str = ":memory:", *, shared: bool = False) -> None:
        self.path = path
        self.on_disk = path != ":memory:"
        self._shared = shared and self.on_disk
        self._sync: str | None = None
        self._lock_fd: int | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        try:
            if self.on_disk:
                _create_private(path)
            if self.on_disk and not self._shared:
                self._lock_fd = _lock_file(path)
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        path = self.path
        try:
            # Shared: reads wait up to BUSY_TIMEOUT for another process's recovery;
            # the writer's BEGIN retries itself (finer-grained than SQLite's back-off).
            writer = self._writer = sqlite3.connect(
                path, isolation_level=None, cached_statements=256, timeout=0,
                check_same_thread=not self.on_disk)
            if self.on_disk:
                self._reader = sqlite3.connect(
                    path, isolation_level=None, cached_statements=256,
                    timeout=BUSY_TIMEOUT if self._shared else 1.0)
            else:
                self._reader = writer
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            self._configure()
            self._migrate()
        except sqlite3.Error as exc:
            if "locked" in str(exc):
                raise StoreError(f"database {path} is in use by another process") from None
            raise StoreError(f"cannot use database {path}: {exc}") from None

    def _configure(self) -> None:
        writer, reader = self._writer, self._reader
        assert writer is not None and reader is not None
        if self.on_disk:
            self._begin_retrying(lambda: writer.execute("PRAGMA journal_mode = WAL"))
            mode = writer.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot use database {self.path}: WAL mode unavailable")
            self._set_sync("FULL")
            reader.execute("PRAGMA query_only = 1")  # all writes go through the writer
            reader.execute("PRAGMA temp_store = MEMORY")
            # Each commit of the writer empties the reader's page cache (WAL), so a big one
            # would only hold memory: 512 KiB instead of the default 2 MB.
            reader.execute("PRAGMA cache_size = -512")
        writer.execute("PRAGMA temp_store = MEMORY")

    def _migrate(self) -> None:
        db = self._writer
        assert db is not None
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {self.path} has schema version {version}; this server knows "
                f"up to {len(MIGRATIONS)}"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._begin_retrying(functools.partial(db.executescript, (
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")))

    def _set_sync(self, level: str) -> None:
        if self._sync != level:
            assert self._writer is not None
            self._writer.execute(f"PRAGMA synchronous = {level}")
            self._sync = level

    def _begin_retrying(self, begin: Callable[[], object]) -> None:
        """``begin()``, retried while another process holds the write lock (shared mode)."""
        deadline = time.monotonic() + (BUSY_TIMEOUT if self._shared else 0.0)
        delay = 0.0002
        while True:
            try:
                begin()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 0.002)

    def commit(self, work: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run ``work(writer)`` in one write transaction; ``durable`` commits with fsync
        (file databases). Any exception rolls it all back."""
        db = self._writer
        if db is None:
            raise StoreError(f"database {self.path} is closed")
        if self.on_disk:
            self._set_sync("FULL" if durable else "NORMAL")
        self._begin_retrying(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            result = work(db)
            self._commit(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _commit(self, db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the connections (the writer last: it checkpoints the WAL), then the lock."""
        for db in (self._reader, self._writer):
            if db is not None:
                db.close()
        self._reader = self._writer = None
        if self._lock_fd is not None:  # after SQLite's descriptors (POSIX lock caveat)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- reads ----------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError(f"database {self.path} is closed")
        return self._reader

    def app_secret_hash(self, app_key: str) -> bytes | None:
        row = self._db.execute(
            "SELECT secret_hash FROM apps WHERE app_key = ?", (app_key,)
        ).fetchone()
        return row[0] if row else None

    def token_device(self, token_hash: bytes, now: float) -> TokenOwner | None:
        """Who a valid token belongs to; None if unknown, expired or revoked."""
        row = self._db.execute(
            "SELECT t.registration_id, d.app_key, t.expires_at, t.revoke_at FROM tokens t "
            "JOIN devices d ON d.registration_id = t.registration_id WHERE t.token_hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None or row[2] <= now or (row[3] is not None and row[3] <= now):
            return None
        return TokenOwner(row[0], row[1], row[3])

    def token_of_deleted_device(self, token_hash: bytes, now: float) -> bool:
        """Whether an unexpired token belonged to a device that was unregistered."""
        row = self._db.execute("SELECT expires_at FROM deleted_tokens WHERE token_hash = ?",
                               (token_hash,)).fetchone()
        return row is not None and row[0] > now

    def device_registered(self, app_key: str, device_id: str) -> bool:
        """Whether ``app_key`` has a registration for ``device_id``."""
        return self._db.execute(
            "SELECT 1 FROM devices WHERE app_key = ? AND device_id = ?", (app_key, device_id)
        ).fetchone() is not None

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
        return writes.read_device(self._db, registration_id)

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

    def pending_rows(self, registration_id: str, after_seq: int, limit: int, now: float,
                     min_left: float = 0.0) -> tuple[list[Pending], list[int]]:
        """Up to ``limit`` queued, unexpired messages after ``after_seq``, oldest first; and
        the seqs of queued ones met on the way that are past their expiry (and not in
        flight), for the caller to expire. One query in the usual case.

        ``min_left`` > 0 also counts as expired a message with less than that many seconds
        left (an MQTT 5.0 Message Expiry Interval is whole seconds, and 0 is never sent)."""
        taken: list[Pending] = []
        due: list[int] = []
        cutoff = now + min_left
        while True:
            asked = limit - len(taken)
            rows = self._db.execute(
                "SELECT d.seq, d.msg_id, m.payload, m.notice_count, m.sent_at, m.expires_at, "
                "d.sent, d.expires_at, m.kind FROM deliveries d "
                "JOIN messages m ON m.msg_id = d.msg_id "
                "WHERE d.registration_id = ? AND d.status = 0 AND d.seq > ? "
                "ORDER BY d.seq LIMIT ?",
                (registration_id, after_seq, asked),
            ).fetchall()
            for seq, msg_id, payload, count, sent_at, expires_at, sent, row_expiry, kind in rows:
                if sent != IN_FLIGHT and (row_expiry <= now or row_expiry < cutoff):
                    due.append(seq)
                else:
                    taken.append(Pending(seq, msg_id, payload, count, sent_at, expires_at,
                                         sent == SENT_BEFORE, kind, row_expiry == LIVE_ONLY))
            if len(rows) < asked or len(taken) == limit:
                return taken, due
            after_seq = rows[-1][0]

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

    def counts(self) -> StoreCounts:
        (apps,) = self._db.execute("SELECT COUNT(*) FROM apps").fetchone()
        (devices,) = self._db.execute("SELECT COUNT(*) FROM devices").fetchone()
        (pending,) = self._db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE status = 0"
        ).fetchone()
        return StoreCounts(apps=apps, devices=devices, pending=pending)

    # --- writes, one transaction each (tools, tests; the server uses its Committer) ------

    def _now(self, fn: Callable[..., T], *args: object, durable: bool = False,
             **kwargs: object) -> T:
        return self.commit(lambda db: fn(db, *args, **kwargs), durable)

    def recover(self) -> int:
        return self._now(writes.recover)

    def create_app(self, app_key: str, name: str, secret_hash: bytes, now: float) -> None:
        self._now(writes.create_app, app_key, name, secret_hash, now, durable=True)

    def register_device(self, app_key: str, request: object, identity: writes.Identity,
                        **kwargs: object) -> Registered | Refusal:
        return self._now(writes.register_device, app_key, request, identity, durable=True,
                         **kwargs)

    def update_device(self, registration_id: str, alias: object, tags: object,
                      now: float) -> Device:
        device = self._now(writes.update_device, registration_id, alias, tags, now,
                           durable=True)
        if device is None:
            raise KeyError(registration_id)
        assert isinstance(device, Device)  # no alias limit here: never a refusal
        return device

    def add_push(self, message: NewMessage, targets: Sequence[str], *, online: Collection[str],
                 queue_cap: int, notice_id: Callable[[], str],
                 notice_expires_at: float) -> PushOutcome:
        queued, offline = split_live(message, targets, online)
        return self._now(writes.add_push, message, queued, offline, queue_cap=queue_cap,
                         notice_id=notice_id, notice_expires_at=notice_expires_at,
                         durable=True)

    def open_session(self, registration_id: str, clean: bool,
                     now: float = 0.0) -> SessionOpened:
        return self._now(writes.open_session, registration_id, clean, now)

    def close_session(self, registration_id: str, clean: bool,
                      expires_at: float | None = None) -> int:
        return self._now(writes.close_sessions, [(registration_id, clean, expires_at)])

    def take_pending(self, registration_id: str, after_seq: int, limit: int,
                     now: float) -> tuple[list[Pending], int]:
        """Expire the device's due messages, then take up to ``limit`` after ``after_seq``
        and mark them in flight; ``(rows, how many expired)``."""
        rows, due = self.pending_rows(registration_id, after_seq, limit, now)
        expired = self._now(writes.expire_rows, due) if due else 0
        if rows:
            self._now(writes.mark_sent, [row.seq for row in rows])
        return rows, expired

    def mark_delivered(self, seq: int) -> bool:
        return self._now(writes.mark_delivered, [seq]) > 0

    def expire_due(self, now: float) -> int:
        return self._now(writes.expire_due, [now])


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600, whatever the umask).
    SQLite gives its WAL and shared-memory files the database file's mode, so they are
    0600 too. An existing file is left as it is."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _lock_file(path: str) -> int:
    """An ``flock`` on the database file: one server per file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"database {path} is in use by another process") from None
    return fd
