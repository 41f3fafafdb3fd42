"""Group commit: the server's writes, many per transaction, one fsync for all of them.

Every write of the server goes through one :class:`Committer`, in the order it was made
(one FIFO queue, applied by one connection), so the database sees exactly the sequence of
writes it would see if each were committed at once; only the grouping into transactions
differs. Two kinds of writes:

* ``await committer.write(fn, *args, durable=...)`` — an operation someone waits for (a
  push, a registration, an MQTT session being opened). It returns once committed: with
  ``durable=True`` after the fsync (``synchronous=FULL``), which is what lets the HTTP API
  answer 200 only for a push that is on disk.
* ``committer.post(fn, item, on_done)`` — bookkeeping nobody waits for (sent and delivered
  marks, closed sessions, receipts). Consecutive posts of the same ``fn`` are merged into
  one call ``fn(db, [item, ...])``; ``on_done(count)`` runs on the event loop once they are
  committed. Losing them in a crash costs a redelivery, never a promise (docs/server.md).

How a commit runs is injected (``run``):

* ``None`` — *immediate*: every write is committed at once, synchronously, in its own
  transaction, by the calling task; no task, no thread, no timer. This is what an
  in-memory store and the virtual-time simulator use (threads are forbidden there, and a
  simulation must not change by a scheduling detail).
* ``trio.to_thread.run_sync`` (:func:`in_thread`) — *batched*, once :meth:`Committer.run`
  runs (``PushServer.serve_tcp`` starts it for a database file): a task drains the queue,
  runs everything queued in one transaction on a worker thread (one at a time, so the
  store's writer connection is never used by two threads at once), then wakes every
  waiter. Writes arriving while a commit is under way form the next batch, so under load
  one fsync serves many pushes and the event loop never blocks on the disk. A batch with
  something waited for starts as soon as the previous one ends; bookkeeping alone waits up
  to ``max_delay`` seconds (or ``max_items`` items) to gather more.

Each write of a batch runs in a SAVEPOINT of its own, so one that fails on its own input
(a value SQLite cannot bind, a constraint, a bug in one write) is rolled back alone: the
rest of the batch commits, the one waiter gets that write's exception, and a bookkeeping
entry is retried item by item so only the failing item is dropped (logged). A commit that
fails as a whole (disk full, I/O error) rolls the whole batch back: every waiter gets a
:class:`~simulator.server.records.StoreError` (the HTTP API answers 503) and its bookkeeping
is dropped and logged. Nothing that was acknowledged is lost: acknowledged means committed.
"""
from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .records import StoreError
from .logs import server_logger

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Committer", "in_thread"]

log = server_logger("simulator.server.store")

Runner = Callable[..., Awaitable[Any]]


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a commit on a worker thread (the real server's choice)."""
    return await trio.to_thread.run_sync(fn, *args)


class _Waiter:
    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Entry:
    """One queued write: ``fn(db, *args)`` (waited for) or ``fn(db, items)`` (posted)."""

    __slots__ = ("args", "durable", "fn", "on_done", "waiter")

    def __init__(self, fn: Callable[..., Any], args: Any, durable: bool,
                 waiter: _Waiter | None, on_done: Callable[[int], None] | None) -> None:
        self.fn = fn
        self.args = args  # a tuple for a waited-for write, the list of items for a post
        self.durable = durable
        self.waiter = waiter
        self.on_done = on_done

    def apply(self, db: sqlite3.Connection) -> Any:
        """The write's result, or an :class:`_ItemFailed` if it failed on its own."""
        if self.waiter is None:
            return apply_posted(db, self.fn, self.args)
        try:
            return _isolated(db, self.fn, *self.args)
        except Exception as exc:
            if _storage_failure(exc):
                raise
            return _ItemFailed(exc)


class _ItemFailed:
    """The result of a write that failed alone (rolled back to its savepoint)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the database failed (the whole batch must roll back) rather
    than one write's input or code: I/O errors, a full disk, a lock not obtained."""
    return isinstance(exc, (StoreError, sqlite3.OperationalError, sqlite3.InternalError)) \
        or type(exc) is sqlite3.DatabaseError


def _isolated(db: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(db, *args)`` inside a savepoint: if it raises, its own changes are undone and
    the exception goes on to the caller."""
    db.execute("SAVEPOINT item")
    try:
        result = fn(db, *args)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK TO item")
            db.execute("RELEASE item")
        raise
    db.execute("RELEASE item")
    return result


def apply_posted(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection, list[Any]], int],
                 items: list[Any]) -> int:
    """Bookkeeping ``fn(db, items)``; if an item makes it fail, the items are applied one
    at a time and the failing ones dropped (logged): one bad receipt costs that receipt,
    not the delivery marks merged with it. Storage failures are re-raised."""
    try:
        return _isolated(db, fn, items)  # type: ignore[no-any-return]
    except Exception as exc:
        if _storage_failure(exc):
            raise
        if len(items) == 1:
            log.error("dropped a bookkeeping record of %s: %r", fn.__name__, exc)
            return 0
    done = 0
    for item in items:
        try:
            done += _isolated(db, fn, [item])
        except Exception as exc:
            if _storage_failure(exc):
                raise
            log.error("dropped a bookkeeping record of %s: %r", fn.__name__, exc)
    return done


def _apply_all(entries: list[_Entry], db: sqlite3.Connection) -> list[Any]:
    return [entry.apply(db) for entry in entries]


class Committer:
    """The server's writes to ``store`` (see the module docstring)."""

    def __init__(self, store: Store, run: Runner | None = None, *,
                 max_delay: float = 0.005, max_items: int = 5000) -> None:
        self.store = store
        self.batched = run is not None
        self._run = run
        self.max_delay = max_delay
        self.max_items = max_items
        self.running = False  # the batching task is running: writes queue up
        self.commits = 0  # transactions committed by the batching task (for figures)
        self._queue: list[_Entry] = []
        self._items = 0  # posted items in the queue
        self._urgent = False  # something in the queue is waited for
        self._queued = trio.Event()
        self._hurry = trio.Event()
        self._idle = trio.Event()  # set while no batch is being committed
        self._idle.set()

    # --- writing ----------------------------------------------------------------------

    def now(self, fn: Callable[..., Any], *args: Any, durable: bool = False) -> Any:
        """Commit ``fn(db, *args)`` at once in its own transaction; its result. Only while
        the batching task is not running (before serving, after, or in immediate mode)."""
        if self.running:
            raise RuntimeError("a batched committer is running: use `await write(...)`")
        return self.store.commit(lambda db: fn(db, *args), durable=durable)

    async def write(self, fn: Callable[..., Any], *args: Any, durable: bool = False) -> Any:
        """``fn(db, *args)``, committed (and with ``durable``, on disk) when this returns.

        Raises :class:`StoreError` if the commit failed (nothing of it is stored then).
        """
        if not self.running:  # immediate: no suspension at all
            return self.now(fn, *args, durable=durable)
        waiter = _Waiter()
        self._queue.append(_Entry(fn, args, durable, waiter, None))
        self._urgent = True
        self._queued.set()
        self._hurry.set()
        await waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def post(self, fn: Callable[[sqlite3.Connection, list[Any]], int], item: Any,
             on_done: Callable[[int], None] | None = None) -> None:
        """Bookkeeping: ``fn(db, [item, ...])`` soon; ``on_done(its result)`` after commit.

        Immediate mode commits it at once. Batched, it joins the previous queued entry if
        that is the same ``fn`` with the same ``on_done``, and is committed within
        ``max_delay`` seconds (sooner with a batch that something waits for).
        """
        self.post_all(fn, [item], on_done)

    def post_all(self, fn: Callable[[sqlite3.Connection, list[Any]], int], items: list[Any],
                 on_done: Callable[[int], None] | None = None) -> None:
        """:meth:`post` for several items (in one transaction when immediate)."""
        if not items:
            return
        if not self.running:
            count = self.store.commit(lambda db: apply_posted(db, fn, items), durable=False)
            if on_done is not None:
                on_done(count)
            return
        queue = self._queue
        last = queue[-1] if queue else None
        if last is not None and last.waiter is None and last.fn is fn \
                and last.on_done == on_done:
            last.args.extend(items)
        else:
            queue.append(_Entry(fn, list(items), False, None, on_done))
        self._items += len(items)
        self._queued.set()
        if self._items >= self.max_items:
            self._hurry.set()

    async def sync(self) -> None:
        """Wait until everything written or posted so far is committed (a barrier)."""
        if self._queue:
            await self.write(_nothing)
        elif self.running:
            await self._idle.wait()

    # --- the batching task ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Commit queued writes in batches until cancelled; then commit what is left."""
        if not self.batched:
            raise RuntimeError("an immediate committer has no batching task")
        if self.running:
            raise RuntimeError("the committer is running already")
        self.running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    await self._queued.wait()
                self._queued = trio.Event()
                if not self._urgent and self._items < self.max_items:
                    with trio.move_on_after(self.max_delay):
                        await self._hurry.wait()
                self._hurry = trio.Event()
                await self._commit_queue()
        finally:
            with trio.CancelScope(shield=True):  # shutting down: commit what is queued
                while self._queue:
                    await self._commit_queue()
            self.running = False

    async def _commit_queue(self) -> None:
        entries, self._queue = self._queue, []
        self._items = 0
        self._urgent = False
        durable = any(entry.durable for entry in entries)
        assert self._run is not None
        self._idle = trio.Event()
        try:
            results = await self._run(self.store.commit,
                                      functools.partial(_apply_all, entries), durable)
        except (sqlite3.Error, StoreError) as exc:
            log.error("commit failed: %s", exc)
            self._failed(entries, StoreError, f"storage failed: {exc}")
            return
        except Exception as exc:  # a bug in a write: fail this batch, keep serving
            log.exception("a batch of %d writes failed", len(entries))
            self._failed(entries, RuntimeError, f"a write failed: {exc!r}")
            return
        except BaseException:
            # Cancelled before the thread started (trio.to_thread waits for a thread
            # that did start): nothing was applied; the shutdown flush will commit it.
            self._queue[:0] = entries
            self._urgent = True
            raise
        finally:
            self._idle.set()
        self.commits += 1
        for entry, result in zip(entries, results):
            if entry.waiter is not None:
                if isinstance(result, _ItemFailed):
                    log.error("a write failed alone (the rest of its batch committed): "
                              "%s: %r", getattr(entry.fn, "__name__", entry.fn), result.error)
                    entry.waiter.error = result.error
                else:
                    entry.waiter.result = result
                entry.waiter.event.set()
            elif entry.on_done is not None:
                entry.on_done(result)

    @staticmethod
    def _failed(entries: list[_Entry], error: type[Exception], message: str) -> None:
        """A batch rolled back: each waiter gets ``error(message)``; bookkeeping is
        dropped."""
        dropped = sum(len(entry.args) for entry in entries if entry.waiter is None)
        waiting = 0
        for entry in entries:
            if entry.waiter is not None:
                waiting += 1
                entry.waiter.error = error(message)
                entry.waiter.event.set()
        log.error("rolled back: %d waiting writes refused, %d bookkeeping records dropped "
                  "(a lost delivery mark means a redelivery)", waiting, dropped)


def _nothing(db: sqlite3.Connection) -> None:
    return None
