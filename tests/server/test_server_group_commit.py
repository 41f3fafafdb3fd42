"""Group commit and batched delivery bookkeeping on a real SQLite file, in real time.

The server's writes go through its Committer: concurrent pushes share a transaction and
its fsync, each answered 200 only once committed; a commit that fails answers every push
of its batch 503 and keeps nothing of it; PUBACK marks are committed in batches, message
status reflects them, and marks lost in a crash turn into a redelivery, not a loss.
"""
from __future__ import annotations

import random
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from server_harness import Harness, basic, payload
from simulator.server import Committer, Limits, PushServer, ServerSettings, SqliteStore, writes
from simulator.server.committer import in_thread

pytestmark = pytest.mark.timeout(60)

ADMIN = "group-admin"


class RecordingStore(SqliteStore):
    """A file store that records every commit and can be told to fail them (disk full)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.commits: list[tuple[int, str]] = []  # (thread id, synchronous level)
        self.active = 0
        self.most_active = 0
        self.fail: Callable[[], bool] = lambda: False

    def commit(self, work: Any, durable: bool = False) -> Any:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            return super().commit(work, durable)
        finally:
            self.active -= 1

    def _commit(self, db: sqlite3.Connection) -> None:
        if self.fail():
            raise sqlite3.OperationalError("database or disk is full")
        self.commits.append((threading.get_ident(), self._sync or ""))
        super()._commit(db)


def make_server(path: Path, **committer: Any) -> tuple[PushServer, RecordingStore]:
    store = RecordingStore(str(path))
    limits = Limits(push_rate=1e6, push_burst=1e6)
    server = PushServer(store, settings=ServerSettings(admin_token=ADMIN, limits=limits),
                        rng=random.Random(7),
                        committer=Committer(store, in_thread, **committer))
    return server, store


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await live(**committer_options)``: a server on tmp_path/push.db whose committer
    runs (batched, on a thread), and its store; both closed at the end."""
    async with trio.open_nursery() as nursery:
        opened: list[tuple[PushServer, RecordingStore]] = []

        async def start(name: str = "push.db", **options: Any) -> tuple[Harness, RecordingStore]:
            server, store = make_server(tmp_path / name, **options)
            opened.append((server, store))
            await nursery.start(server.committer.run)
            return Harness(server, nursery, ADMIN), store

        yield start
        nursery.cancel_scope.cancel()
    for _, store in opened:
        store.close()


async def acknowledged(server: PushServer) -> None:
    """Until the server has read every PUBACK it waits for."""
    with trio.fail_after(5):
        while any(session.inflight for session in server.sessions):
            await trio.sleep(0.01)


def messages_on_disk(path: Path) -> set[str]:
    """msg_ids committed to the file, read by a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return {m for (m,) in db.execute("SELECT msg_id FROM messages WHERE kind != 'deleted'")}
    finally:
        db.close()


async def test_concurrent_pushes_share_commits_and_each_200_follows_its_commit(
        live, tmp_path: Path) -> None:
    harness, store = await live()
    app = await harness.create_app()
    device = await harness.register(app, "phone")
    loop_thread = threading.get_ident()
    store.commits.clear()
    answered: dict[int, str] = {}

    async def pusher(k: int) -> None:
        client = harness.http_client()
        for j in range(5):
            r = await client.request("POST", "/v1/push", {
                "audience": {"registration_id": [device["registration_id"]]},
                "message": {"data": [k, j]}}, headers=basic(app))
            assert r.status == 200, r
            # The 200 came: the push is committed, visible to any other connection.
            assert r.json["msg_id"] in messages_on_disk(tmp_path / "push.db")
            answered[k * 5 + j] = r.json["msg_id"]

    async with trio.open_nursery() as nursery:
        for k in range(40):
            nursery.start_soon(pusher, k)
    assert len(set(answered.values())) == 200
    assert set(answered.values()) <= messages_on_disk(tmp_path / "push.db")
    # Grouped: far fewer transactions than pushes, each with fsync (synchronous FULL),
    # all off the event loop's thread, never two at once.
    assert len(store.commits) < 100, len(store.commits)
    assert all(level == "FULL" for _, level in store.commits)
    assert all(thread != loop_thread for thread, _ in store.commits)
    assert store.most_active == 1
    assert harness.server.statistics().pushes_accepted == 200


async def test_a_failing_commit_is_503_for_every_waiter_and_loses_nothing_acknowledged(
        live, tmp_path: Path) -> None:
    harness, store = await live()
    app = await harness.create_app()
    await harness.register(app, "phone")
    body = {"audience": "all", "message": {"data": "x"}}

    async def burst(n: int) -> list[Any]:
        answers: list[Any] = []

        async def one() -> None:
            answers.append(await harness.push(app, body))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return answers

    before = await burst(20)
    store.fail = lambda: True  # the disk is full: every commit fails
    failed = await burst(20)
    store.fail = lambda: False
    after = await burst(20)

    assert [r.status for r in before + after] == [200] * 40
    assert {(r.status, r.error_code) for r in failed} == {(503, "storage_unavailable")}
    acknowledged = {r.json["msg_id"] for r in before + after}
    # Nothing acknowledged is lost, nothing refused was kept: reopen the file and look.
    await harness.server.committer.sync()
    assert messages_on_disk(tmp_path / "push.db") == acknowledged
    assert harness.server.statistics().pushes_accepted == 40


async def test_a_write_failing_inside_the_batch_fails_only_that_batch(
        live, tmp_path: Path) -> None:
    """A real SQLITE_FULL (the file may not grow), raised by a statement, not COMMIT."""
    harness, store = await live()
    app = await harness.create_app()
    await harness.register(app, "phone")
    ok = await harness.push(app, {"audience": "all", "message": {"data": 1}})
    assert ok.status == 200
    writer = store._writer
    assert writer is not None
    (pages,) = writer.execute("PRAGMA page_count").fetchone()
    writer.execute(f"PRAGMA max_page_count = {pages}")
    big = await harness.push(app, {"audience": "all", "message": {"data": "é" * 2000}})
    assert (big.status, big.error_code) == (503, "storage_unavailable")
    writer.execute("PRAGMA max_page_count = 1073741823")
    again = await harness.push(app, {"audience": "all", "message": {"data": "é" * 2000}})
    assert again.status == 200
    await harness.server.committer.sync()
    assert messages_on_disk(tmp_path / "push.db") == {ok.json["msg_id"], again.json["msg_id"]}


async def test_puback_marks_are_committed_in_batches_and_status_reflects_them(live) -> None:
    harness, store = await live(max_delay=10.0)  # marks wait for a batch started otherwise
    app = await harness.create_app()
    devices = [await harness.register(app, f"d{i}") for i in range(30)]
    clients = [(await harness.device_client(app, d))[0] for d in devices]
    r = await harness.push(app, {"audience": "all", "message": {"data": "all"}})
    assert r.status == 200
    before = len(store.commits)
    for client in clients:
        assert payload(*await client.publishes(1))["msg_id"] == r.json["msg_id"]
    await acknowledged(harness.server)  # their marks wait in the committer's queue
    assert len(store.commits) == before
    # Status waits for the marks of every PUBACK this server has read: all delivered,
    # and the 30 sent marks and 30 delivered marks took one transaction.
    with trio.fail_after(5):
        while (status := await harness.status(app, r.json["msg_id"]))["pending"]:
            await trio.sleep(0.01)
    assert (status["delivered"], status["pending"]) == (30, 0)
    assert len(store.commits) - before <= 2, len(store.commits) - before
    assert harness.server.statistics().messages_delivered == 30
    for client in clients:
        await client.close()


async def test_posted_bookkeeping_is_merged_into_one_transaction(live) -> None:
    harness, store = await live(max_delay=10.0)
    app = await harness.create_app()
    device = await harness.register(app, "phone")
    for data in range(50):
        await harness.push_to(app, device, data)
    server = harness.server
    rows, _ = server.store.pending_rows(device["registration_id"], 0, 100, 0.0)
    before = len(store.commits)
    for row in rows:
        server.committer.post(writes.mark_delivered, row.seq, server.count_delivered)
    assert server.statistics().messages_delivered == 0  # queued, not committed yet
    await server.committer.sync()
    assert len(store.commits) == before + 1  # one transaction for the 50 marks
    assert server.statistics().messages_delivered == 50
    assert server.store.counts().pending == 0


async def test_marks_lost_in_a_crash_mean_a_redelivery_not_a_loss(live, tmp_path: Path) -> None:
    """The delivered mark of a PUBACK is bookkeeping: if the process dies before it is
    committed, the message is still pending on disk and is sent again after the restart
    (the SDK drops the repeat by msg_id: at least once + dedup = once for the app)."""
    harness, _ = await live(max_delay=3600.0, max_items=10**9)  # marks stay queued
    app = await harness.create_app()
    device = await harness.register(app, "phone")
    client, _ = await harness.device_client(app, device)
    msg_id = await harness.push_to(app, device, "once")
    assert payload(*await client.publishes(1))["msg_id"] == msg_id  # and acknowledged
    await acknowledged(harness.server)  # its mark waits in the committer's queue
    assert harness.server.committer._queue
    # What is on disk at this moment is what a crash (kill -9, power loss) leaves: the
    # committed transactions, in the database and its WAL.
    crashed = tmp_path / "crashed.db"
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{tmp_path / 'push.db'}{suffix}", f"{crashed}{suffix}")
    await client.close()

    restarted, _ = await live("crashed.db")
    status = await restarted.status(app, msg_id)
    assert (status["delivered"], status["pending"]) == (0, 1)  # the mark was lost
    client, connack = await restarted.device_client(app, device)
    assert connack.session_present
    again = payload(*await client.publishes(1))
    assert again["msg_id"] == msg_id  # redelivered, not lost
    with trio.fail_after(5):
        while (status := await restarted.status(app, msg_id))["pending"]:
            await trio.sleep(0.01)
    assert status["delivered"] == 1
    await client.close()


async def test_shutdown_commits_what_is_queued(tmp_path: Path) -> None:
    server, store = make_server(tmp_path / "push.db", max_delay=3600.0, max_items=10**9)
    app = server.create_app("a")  # before the committer runs: committed at once
    async with trio.open_nursery() as nursery:
        await nursery.start(server.committer.run)
        harness = Harness(server, nursery, ADMIN)
        creds = {"app_key": app.app_key, "master_secret": app.master_secret}
        device = await harness.register(creds, "phone")
        client, _ = await harness.device_client(creds, device)
        msg_id = await harness.push_to(creds, device, 1)
        await client.publishes(1)
        await acknowledged(server)
        assert server.committer._queue  # the marks are still queued
        nursery.cancel_scope.cancel()  # the server stops
    assert not server.committer.running
    store.close()
    reopened = SqliteStore(str(tmp_path / "push.db"))
    status = reopened.message_status(app.app_key, msg_id)
    reopened.close()
    assert status is not None and (status.delivered, status.pending) == (1, 0)


def test_a_memory_store_commits_at_once_on_the_calling_thread() -> None:
    """What a simulation relies on: no task, no thread, no timer, no waiting."""
    server = PushServer(SqliteStore(":memory:"), settings=ServerSettings(admin_token=ADMIN),
                        rng=random.Random(1))
    assert not server.committer.batched and not server.committer.running
    app = server.create_app("a")
    result = server.push_body(app.app_key, {"audience": "all", "message": {"data": 1}})
    assert server.message_status(app.app_key, result.msg_id).targets == 0


def test_in_process_calls_are_refused_while_the_committer_batches(tmp_path: Path) -> None:
    server, store = make_server(tmp_path / "push.db")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.committer.run)
            with pytest.raises(RuntimeError, match="_async"):
                server.create_app("a")
            app = await server.create_app_async("a")
            assert app.app_key in {k for (k,) in store._db.execute("SELECT app_key FROM apps")}
            nursery.cancel_scope.cancel()

    trio.run(main)
    store.close()
