"""``pushsim server --workers N``: N gateway processes on the same ports, one database.

The supervisor (this module, the process the user started) checks the database (and takes
an ``flock`` on it, so a second cluster on the same file fails at startup), runs crash
recovery once, reserves the ports (``SO_REUSEPORT`` sockets bound but never listening, so
port 0 works and no other program can take them), then starts N workers
(``python -m simulator.server.supervisor``, their :class:`~.settings.RunSettings` and
:class:`~.cluster.MemberSpec` as JSON on stdin). Each worker runs
:func:`.command.serve` with three differences: it listens with ``SO_REUSEPORT`` (the
kernel spreads new connections over the workers), opens the SQLite file in shared WAL mode
(its own connection, a busy timeout), and joins the routing mesh (``cluster.py``). The
supervisor prints the usual JSON line once every worker listens, and on SIGINT/SIGTERM
sends SIGTERM to every worker and waits.

Crashes. A worker that exits unexpectedly is logged and restarted after a second; its
devices reconnect (the kernel hands them to live workers meanwhile) and their
unacknowledged messages are redelivered. A worker that fails before listening (or five
crashes within a minute) stops the cluster with a non-zero status.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from .cluster import MemberSpec
from .listeners import reuseport_socket
from .logs import server_logger
from .settings import RunSettings

__all__ = ["run_cluster"]

log = server_logger("simulator.server.cluster")
PROG = "pushsim server"
RESTART_DELAY = 1.0
#: More crashes than this within CRASH_WINDOW seconds stop the cluster.
MAX_CRASHES, CRASH_WINDOW = 5, 60.0
STOP_TIMEOUT = 20.0
MQTTS_PORT = 8883


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _lock_database(path: str) -> int:
    """An ``flock`` held for the cluster's life: one cluster per database file.

    (``flock`` and SQLite's own POSIX locks do not interact; a single-process server on
    the same file is kept out by SQLite: it wants an exclusive lock the workers prevent.)
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def run_cluster(settings: RunSettings) -> int:
    """Run ``settings.workers`` worker processes until SIGINT/SIGTERM; the exit status."""
    from .store import SqliteStore, StoreError

    if settings.db == ":memory:":
        return _error("--workers > 1 needs a database file (--db PATH): "
                      "workers share it, and :memory: cannot be shared")
    try:
        SqliteStore(settings.db, shared=True).close()  # creates and migrates it
        lock_fd = _lock_database(settings.db)
    except StoreError as exc:
        return _error(str(exc))
    except OSError:
        return _error(f"database {settings.db} is in use by another process")
    try:
        store = SqliteStore(settings.db, shared=True)
        try:
            expired = store.recover()
        finally:
            store.close()
        if expired:
            log.info("recovery: %d ttl-0 messages expired", expired)
        return _with_reserved_ports(settings)
    finally:
        os.close(lock_fd)


def _with_reserved_ports(settings: RunSettings) -> int:
    wanted = {"http_port": settings.http_port, "mqtt_port": settings.mqtt_port}
    if settings.tls_dir is not None:
        wanted["mqtts_port"] = MQTTS_PORT if settings.mqtts_port is None \
            else settings.mqtts_port
        if settings.https_port is not None:
            wanted["https_port"] = settings.https_port
        if settings.wss_port is not None:
            wanted["wss_port"] = settings.wss_port
    if settings.ws_port is not None:
        wanted["ws_port"] = settings.ws_port
    reserved: list[socket.socket] = []
    try:
        ports = {}
        for name, port in wanted.items():
            sock = reuseport_socket(settings.host, port)
            reserved.append(sock)
            ports[name] = sock.getsockname()[1]
        worker = attrs.evolve(settings, workers=1, **ports)
        with tempfile.TemporaryDirectory(prefix="pushsim-cluster-") as control_dir:
            return trio.run(_supervise, worker, settings.workers, control_dir)
    except OSError as exc:
        return _error(f"cannot listen on {settings.host}: {exc.strerror or exc}")
    finally:
        for sock in reserved:
            sock.close()


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.crashes: list[float] = []


async def _start_worker(worker: _Worker, settings: RunSettings, workers: int,
                        control_dir: str) -> dict[str, Any] | None:
    """Start one worker; its startup JSON line, or None if it failed before listening."""
    spec = MemberSpec(worker.index, workers, control_dir)
    config = {"settings": settings.to_json(), "member": attrs.asdict(spec)}
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "simulator.server.supervisor"], env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )
    worker.process = process
    assert process.stdin is not None and process.stdout is not None
    # stdin stays open: the worker stops when it reads EOF there, i.e. when this process
    # is gone, however it ended (see ClusterMember._watch_parent).
    await process.stdin.send_all(json.dumps(config).encode() + b"\n")
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(4096)
        if not chunk:
            await process.wait()
            return None
        line += chunk
    return json.loads(line)


class _Supervisor:
    """The worker pool: started together, each watched and restarted after a crash."""

    def __init__(self, settings: RunSettings, workers: int, control_dir: str) -> None:
        self.settings = settings
        self.control_dir = control_dir
        self.pool = [_Worker(i) for i in range(workers)]
        self.stopping = False
        self.status = 0

    async def start(self, worker: _Worker) -> dict[str, Any] | None:
        return await _start_worker(worker, self.settings, len(self.pool), self.control_dir)

    async def watch(self, worker: _Worker, nursery: trio.Nursery) -> None:
        """Restart ``worker`` whenever it exits, until stopping or it crashes too often."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            now = trio.current_time()
            worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW]
            worker.crashes.append(now)
            log.error("worker %d (pid %d) exited with status %d",
                      worker.index, worker.process.pid, code)
            if len(worker.crashes) > MAX_CRASHES:
                log.error("worker %d crashed %d times within %g s: stopping",
                          worker.index, len(worker.crashes), CRASH_WINDOW)
                self._fail(nursery)
                return
            await trio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            if await self.start(worker) is None:
                log.error("worker %d did not restart: stopping", worker.index)
                self._fail(nursery)
                return
            log.info("worker %d restarted (pid %d)", worker.index, worker.process.pid)

    def _fail(self, nursery: trio.Nursery) -> None:
        self.status = 1
        nursery.cancel_scope.cancel()


async def _supervise(settings: RunSettings, workers: int, control_dir: str) -> int:
    supervisor = _Supervisor(settings, workers, control_dir)
    pool = supervisor.pool
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            first = None
            for worker in pool:
                info = await supervisor.start(worker)
                if info is None:
                    await _stop_all(pool)
                    return 1  # the worker printed its one-line error
                first = first or info
            print(json.dumps(first), flush=True)
            log.info("%d workers listening (pids %s)", workers,
                     ", ".join(str(w.process.pid) for w in pool if w.process))
            for worker in pool:
                nursery.start_soon(supervisor.watch, worker, nursery)
            async for signum in signals:
                log.info("%s: stopping %d workers", signal.Signals(signum).name, workers)
                break
            supervisor.stopping = True
            nursery.cancel_scope.cancel()
        supervisor.stopping = True
        codes = await _stop_all(pool)
    if any(codes):
        log.error("worker exit statuses: %s", codes)
        return 1
    return supervisor.status


async def _stop_all(pool: list[_Worker]) -> list[int]:
    """SIGTERM every running worker and wait (SIGKILL after STOP_TIMEOUT)."""
    for worker in pool:
        if worker.process is not None and worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    codes: list[int] = []
    with trio.CancelScope(shield=True):
        for worker in pool:
            if worker.process is None:
                continue
            with trio.move_on_after(STOP_TIMEOUT):
                await worker.process.wait()
            code = worker.process.returncode
            if code is None:
                worker.process.kill()
                code = await worker.process.wait()
            codes.append(code)
    return codes


# --- a worker ------------------------------------------------------------------------------

def _worker_main() -> int:
    from .command import serve

    config = json.loads(sys.stdin.readline())
    return serve(RunSettings.from_json(config["settings"]),
                 member=MemberSpec(**config["member"]))


if __name__ == "__main__":
    sys.exit(_worker_main())
