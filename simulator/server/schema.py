"""The SQLite schema of :class:`~simulator.server.store.SqliteStore` and its migrations.

``PRAGMA user_version`` records how many entries of :data:`MIGRATIONS` a database has had;
opening a database applies the missing ones, each in one transaction. To change the schema,
append a migration — never edit a released one.
"""
from __future__ import annotations

import math

# deliveries.status
PENDING, DELIVERED, EXPIRED, COLLAPSED, DROPPED = range(5)
# deliveries.sent: 0 never sent, 1 in flight on the live connection, 2 sent before
IN_FLIGHT, SENT_BEFORE = 1, 2
#: deliveries.expires_at of a ttl=0 row: deliverable only while the device stays connected.
LIVE_ONLY = math.inf

_SCHEMA_V1 = """
CREATE TABLE apps (
    app_key     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE devices (
    registration_id TEXT PRIMARY KEY,
    app_key         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    platform        TEXT NOT NULL,
    alias           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    session         INTEGER NOT NULL DEFAULT 0,  -- 1: a persistent MQTT session exists
    sub_qos         INTEGER,                     -- granted QoS of the inbox subscription
    UNIQUE (app_key, device_id)
);
CREATE INDEX devices_alias ON devices (app_key, alias) WHERE alias IS NOT NULL;
CREATE TABLE tags (
    app_key         TEXT NOT NULL,
    tag             TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    PRIMARY KEY (app_key, tag, registration_id)
) WITHOUT ROWID;
CREATE INDEX tags_device ON tags (registration_id);
CREATE TABLE tokens (
    token_hash      BLOB PRIMARY KEY,  -- SHA-256 of the token; the token itself is not kept
    registration_id TEXT NOT NULL,
    expires_at      REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_device ON tokens (registration_id, expires_at);
CREATE TABLE messages (
    msg_id       TEXT PRIMARY KEY,
    app_key      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      BLOB,     -- device JSON; NULL for a 'deleted' notice (built when sent)
    notice_count INTEGER,  -- for a 'deleted' notice: how many messages it reports
    sent_at      REAL NOT NULL,
    expires_at   REAL NOT NULL,
    targets      INTEGER NOT NULL
);
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order
    registration_id TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    status          INTEGER NOT NULL DEFAULT 0,
    sent            INTEGER NOT NULL DEFAULT 0,
    expires_at      REAL NOT NULL,
    collapse_key    TEXT,
    notice          INTEGER NOT NULL DEFAULT 0,
    opened          INTEGER NOT NULL DEFAULT 0,
    dismissed       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_queue ON deliveries (registration_id, seq) WHERE status = 0;
CREATE INDEX deliveries_expiry ON deliveries (expires_at) WHERE status = 0;
CREATE INDEX deliveries_msg ON deliveries (msg_id, registration_id);
"""

# Version 2: devices' end-to-end public keys (RFC 8291 p256dh and auth, base64url), which
# providers read to encrypt pushes the server can then only store and forward.
_SCHEMA_V2 = """
CREATE TABLE webpush_keys (
    registration_id TEXT PRIMARY KEY,
    p256dh          TEXT NOT NULL,
    auth            TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 3: device identity (docs/security.md). A registration may be bound to an
# Ed25519 public key (raw 32 bytes; NULL = unbound, e.g. registered before this version);
# re-registering a bound device needs a signed challenge, and a re-registration revokes
# the older tokens after a grace (tokens.revoke_at, NULL = not scheduled). Challenges are
# kept here, not in a process's memory, so that any worker of a cluster can check the
# answer; a few per device at most, each used once.
# devices.online is 1 from a session's open to its close: found set at startup (or by the
# next CONNECT) it means the connection ended without its bookkeeping, so any queued
# message may have been sent on it and is a redelivery (DUP=1) from then on.
_SCHEMA_V3 = """
ALTER TABLE devices ADD COLUMN device_key BLOB;
ALTER TABLE devices ADD COLUMN online INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoke_at REAL;
CREATE TABLE challenges (
    id         INTEGER PRIMARY KEY,  -- issue order
    challenge  TEXT NOT NULL UNIQUE, -- base64url, as sent to the device
    app_key    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX challenges_device ON challenges (app_key, device_id);
CREATE INDEX challenges_expiry ON challenges (expires_at);
"""

# Version 4: MQTT 5.0 Session Expiry (docs/server.md). devices.session_expires_at is the
# wall-clock time at which a stored session ends while its device stays away (set when a
# 5.0 connection with a finite Session Expiry Interval closes); NULL = never (3.1.1's
# clean session 0, 5.0's 0xFFFFFFFF) or the device is connected.
# deleted_tokens remembers the tokens of unregistered devices until they would have
# expired, so that a 5.0 CONNECT with one is told 0x87 "not authorised" (the device was
# revoked: registering again will not help) rather than 0x86 "bad token".
_SCHEMA_V4 = """
ALTER TABLE devices ADD COLUMN session_expires_at REAL;
CREATE TABLE deleted_tokens (
    token_hash BLOB PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

#: Schema migrations; entry i upgrades ``user_version`` i to i + 1.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4)
