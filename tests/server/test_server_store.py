"""SqliteStore on its own: files, schema versions, hashing, recovery after a crash."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from simulator.server.records import Refusal, Registered, TokenOwner
from simulator.server.schema import MIGRATIONS
from simulator.server.store import NewMessage, SqliteStore, StoreError
from simulator.server.validation import DeviceRequest
from simulator.server.writes import Identity

NOW = 1_700_000_000.0


def identity(bearer: bytes | None = None) -> Identity:
    return Identity(bearer_hash=bearer, challenge="c", challenge_expires_at=NOW + 60,
                    max_challenges=4, token_grace=300.0, alias_limit=1)


def register(store: SqliteStore, device_id: str, token_hash: bytes, rid: str, *,
             now: float = NOW, bearer: bytes | None = None, **fields) -> Registered | Refusal:
    request = DeviceRequest(device_id=device_id, platform="android", **fields)
    return store.register_device("app1", request, identity(bearer), new_registration_id=rid,
                                 token_hash=token_hash, token_expires_at=now + 100, now=now)


def populate(store: SqliteStore, token_hash: bytes = b"h" * 32) -> str:
    store.create_app("app1", "demo", b"s" * 32, NOW)
    outcome = register(store, "phone", token_hash, "rid1", alias="alice", tags=("beta",))
    assert outcome == Registered("rid1", created=True)
    return outcome.registration_id


def message(msg_id: str, **kw) -> NewMessage:
    fields = dict(msg_id=msg_id, app_key="app1", kind="message", payload=b"{}", sent_at=NOW,
                  expires_at=NOW + 60)
    fields.update(kw)
    return NewMessage(**fields)


def push(store: SqliteStore, msg: NewMessage, targets=("rid1",), online=()):
    return store.add_push(msg, list(targets), online=set(online), queue_cap=100,
                          notice_id=lambda: "notice", notice_expires_at=NOW + 1000)


def test_file_database_is_wal_versioned_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "push.db"
    store = SqliteStore(str(path))
    populate(store)
    push(store, message("m1"))
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
    raw.close()
    store = SqliteStore(str(path))
    assert store.token_device(b"h" * 32, NOW) == TokenOwner("rid1", "app1")
    assert store.device("rid1").alias == "alice"
    assert store.counts().pending == 1
    store.close()


def test_tokens_and_secrets_are_stored_only_as_hashes(tmp_path: Path) -> None:
    import hashlib
    import random

    from simulator.server import PushServer, ServerSettings
    from simulator.server.validation import DeviceRequest

    path = tmp_path / "push.db"
    store = SqliteStore(str(path))
    server = PushServer(store, settings=ServerSettings(admin_token="a"), rng=random.Random(1))
    app = server.create_app("demo")
    reg = server.register_device(app.app_key, DeviceRequest(device_id="d", platform="ios"))
    store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert reg.token.encode() not in data and app.master_secret.encode() not in data
    assert hashlib.sha256(reg.token.encode()).digest() in data


def test_token_expiry_rotation_and_legacy_proof() -> None:
    store = SqliteStore()
    populate(store, b"old" * 8)  # unbound: registered without a device key
    assert store.token_device(b"old" * 8, NOW + 99.9) == TokenOwner("rid1", "app1")
    assert store.token_device(b"old" * 8, NOW + 100) is None
    assert store.token_device(b"unknown", NOW) is None
    # Without proof: refused with a challenge; a token of another device proves nothing.
    assert register(store, "phone", b"new" * 8, "ignored", now=NOW + 200).status == 401
    assert register(store, "phone", b"new" * 8, "ignored", now=NOW + 200,
                    bearer=b"nope" * 8).code == "device_bound"
    # An unbound registration's own token, even expired, is the proof.
    outcome = register(store, "phone", b"new" * 8, "ignored", now=NOW + 200,
                       bearer=b"old" * 8)
    assert outcome == Registered("rid1", created=False)
    assert store.device("rid1").tags == ("beta",)
    assert store.token_device(b"new" * 8, NOW + 250) == TokenOwner("rid1", "app1")
    # The older token is revoked after the grace: not even a proof any more.
    assert register(store, "phone", b"x" * 24, "ignored", now=NOW + 501,
                    bearer=b"old" * 8).code == "device_bound"


@pytest.mark.parametrize("make_path, message_part", [
    (lambda d: d / "missing-dir" / "x.db", "cannot open database"),
    (lambda d: d, "cannot open database"),
    (lambda d: (d / "junk.db").write_bytes(b"this is not sqlite" * 500) and d / "junk.db",
     "not a database"),
])
def test_unusable_database_is_a_one_line_error(tmp_path: Path, make_path, message_part) -> None:
    path = make_path(tmp_path)
    with pytest.raises(StoreError) as info:
        SqliteStore(str(path))
    assert message_part in str(info.value) and "\n" not in str(info.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(str(path))


def test_second_server_on_same_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "push.db")
    first = SqliteStore(path)
    with pytest.raises(StoreError, match="in use by another process"):
        SqliteStore(path)
    first.close()
    SqliteStore(path).close()


def test_recover_turns_in_flight_into_redelivery_and_expires_ttl0() -> None:
    store = SqliteStore()
    populate(store)
    push(store, message("m1"))
    push(store, message("live", expires_at=NOW, live_only=True), online={"rid1"})
    rows, expired = store.take_pending("rid1", 0, 10, NOW)
    assert [(r.msg_id, r.redelivery) for r in rows] == [("m1", False), ("live", False)]
    assert store.recover() == 1  # the ttl=0 message: nobody is online after a restart
    rows, _ = store.take_pending("rid1", 0, 10, NOW)
    assert [(r.msg_id, r.redelivery) for r in rows] == [("m1", True)]
    assert store.mark_delivered(rows[0].seq) and not store.mark_delivered(rows[0].seq)


def test_in_flight_rows_are_not_expired_collapsed_or_dropped() -> None:
    store = SqliteStore()
    populate(store)
    push(store, message("m1", collapse_key="k"))
    (row,), _ = store.take_pending("rid1", 0, 10, NOW)  # in flight now
    assert store.expire_due(NOW + 3600) == 0
    outcome = push(store, message("m2", collapse_key="k", expires_at=NOW + 7200))
    assert outcome.collapsed == 0
    assert store.close_session("rid1", clean=False) == 0
    assert store.expire_due(NOW + 3600) == 1  # m1, no longer in flight
    status = store.message_status("app1", "m1")
    assert (status.expired, status.pending) == (1, 0)


def test_broadcast_to_many_devices_is_one_fast_transaction() -> None:
    import time

    store = SqliteStore()
    store.create_app("app1", "demo", b"s" * 32, NOW)
    n = 10_000
    for i in range(n):
        register(store, f"d{i}", b"%d" % i, f"r{i}")
    targets = store.resolve_audience("app1", "all", ())
    assert len(targets) == n
    started = time.perf_counter()
    outcome = push(store, message("b1", collapse_key="k"), targets=targets)
    elapsed = time.perf_counter() - started
    assert outcome.targets == n and len(outcome.queued) == n
    assert store.counts().pending == n
    assert elapsed < 2.0, elapsed  # about 0.1 s on a laptop
