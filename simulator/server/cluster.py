"""``pushsim server --workers N``: N gateway processes on the same ports, one database.

Layout. The parent process checks the database (and takes an ``flock`` on it, so a second
cluster on the same file fails at startup), runs crash recovery once, reserves the ports
(``SO_REUSEPORT`` sockets bound but never listening, so port 0 works and no other program
can take them), then starts N workers (``python -m simulator.server.cluster``, the full
configuration on stdin). Each worker is an ordinary ``pushsim server`` with three
differences: it listens with ``SO_REUSEPORT`` (the kernel spreads new connections over
the workers), opens the SQLite file in shared WAL mode (its own connection, a busy
timeout), and joins the *routing* mesh below. The parent prints the usual JSON line once
every worker listens, and on SIGINT/SIGTERM sends SIGTERM to every worker and waits.

Routing. Every worker binds a Unix datagram socket in a private directory and tells the
others, in batched datagrams:

- ``w <rid>``: a push for the device was committed: wake its session if it is here (the
  store already holds the message, so a wake is all a session needs). Wakes go to every
  peer, after the commit, so a session that connects on another worker at the same time
  either gets the wake or reads the queue after the commit: no push waits for a reconnect.
- ``u <rid>`` / ``d <rid>``: the device connected to / disconnected from the sender.
  Peers keep this *presence* map (registration id → worker) for ttl-0 pushes, which go
  only to devices online at push time, and close their own older connection of the same
  device (MQTT takeover across processes; the new connection owns the queue, so the
  old one is closed without touching the store).
- ``h``: the sender (re)started: forget its presence entries.

Unix datagrams on Linux are reliable and ordered per sender; a peer that is down
(restarting) is skipped and says ``h`` when back.

Crashes. A worker that exits unexpectedly is logged and restarted after a second; its
devices reconnect (the kernel hands them to live workers meanwhile) and their
unacknowledged messages are redelivered. A worker that fails before listening (or five
crashes within a minute) stops the cluster with a non-zero status.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from .sessions import Session, SessionRegistry

__all__ = ["ClusterMember", "RoutedSessions", "reuseport_listeners", "run_cluster"]

log = logging.getLogger("simulator.server.cluster")
PROG = "pushsim server"

#: Largest routing datagram; far below the Unix socket send buffer (~208 KiB).
DATAGRAM_BYTES = 60 * 1024
RESTART_DELAY = 1.0
#: More crashes than this within CRASH_WINDOW seconds stop the cluster.
MAX_CRASHES, CRASH_WINDOW = 5, 60.0
STOP_TIMEOUT = 20.0


# --- listening ---------------------------------------------------------------------------

def _reuseport_socket(family: int, sockaddr: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _addresses(host: str, port: int) -> list[tuple[int, Any]]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    seen, result = set(), []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.add((family, sockaddr))
            result.append((family, sockaddr))
    return result


async def reuseport_listeners(port: int, host: str) -> list[trio.SocketListener]:
    """Listeners on every address of ``host`` with ``SO_REUSEPORT``: several processes
    may listen on the same port and the kernel spreads new connections among them."""
    listeners = []
    try:
        for family, sockaddr in _addresses(host, port):
            sock = _reuseport_socket(family, sockaddr)
            sock.listen(socket.SOMAXCONN)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never listening ``SO_REUSEPORT`` socket: fixes the port number for the
    workers (port 0 = any free one) and keeps other users' programs off it."""
    family, sockaddr = _addresses(host, port)[0]
    return _reuseport_socket(family, sockaddr)


# --- routing between workers -------------------------------------------------------------

class RoutedSessions(SessionRegistry):
    """The session registry of a worker: also tells the other workers when a device
    connects or disconnects here, wakes devices connected to them, knows who is online
    anywhere (for ttl-0 pushes) and passes token revocations on."""

    def __init__(self, member: ClusterMember, probe_limit: int | None = None) -> None:
        super().__init__(probe_limit)
        self.member = member

    def attach(self, session: Session) -> None:
        super().attach(session)
        self.member.announce("u", session.registration_id)

    def detach(self, session: Session) -> bool:
        detached = super().detach(session)
        if detached:
            self.member.announce("d", session.registration_id)
        return detached

    def online(self) -> _Online:
        return _Online(super().online(), self.member.presence)

    def wake(self, registration_ids: Sequence[str]) -> None:
        super().wake(registration_ids)
        self.member.pushed([rid for rid in registration_ids if rid not in self])

    def revoke(self, registration_id: str, after: float, keep: bytes | None = None) -> int:
        told = super().revoke(registration_id, after, keep)
        keep_text = "-" if keep is None else keep.hex()
        self.member.announce("r", f"{registration_id} {after!r} {keep_text}")
        return told

    def local_revoke(self, registration_id: str, after: float, keep: bytes | None) -> None:
        """A revocation another worker passed on."""
        super().revoke(registration_id, after, keep)


class _Online:
    """Devices connected to any worker: this one's sessions or a peer's presence."""

    __slots__ = ("local", "remote")

    def __init__(self, local: Collection[str], remote: dict[str, int]) -> None:
        self.local, self.remote = local, remote

    def __contains__(self, rid: object) -> bool:
        return rid in self.local or rid in self.remote

    def __iter__(self) -> Iterator[str]:
        yield from self.local
        yield from (rid for rid in self.remote if rid not in self.local)

    def __len__(self) -> int:
        return len(self.local) + sum(1 for rid in self.remote if rid not in self.local)


class ClusterMember:
    """One worker's end of the routing mesh (see the module docstring)."""

    def __init__(self, index: int, workers: int, control_dir: str, *,
                 watch_parent: bool = True) -> None:
        self.index = index
        self.watch_parent = watch_parent
        self.control_dir = control_dir
        self.peers = [self._path(i) for i in range(workers) if i != index]
        self.presence: dict[str, int] = {}  # registration id -> worker holding it
        self.sessions: RoutedSessions | None = None
        #: The worker's server counters (takeovers are counted there), once known.
        self.counters: Any = None
        self._outgoing: list[str] = [f"h {index}"]
        self._ready = trio.Event()
        path = self._path(index)
        with _suppress_missing():
            os.unlink(path)  # left by a crashed predecessor
        # Bound synchronously, as a stdlib socket handed to trio afterwards: from here on
        # peers' datagrams queue up, even before run().
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
        self._sock = trio.socket.from_stdlib_socket(sock)

    def _path(self, index: int) -> str:
        return os.path.join(self.control_dir, f"worker-{index}.sock")

    def registry(self, probe_limit: int | None) -> RoutedSessions:
        """The session registry to give this worker's server."""
        self.sessions = RoutedSessions(self, probe_limit)
        return self.sessions

    # Called synchronously by the server -------------------------------------------------

    def announce(self, kind: str, rid: str) -> None:
        self._outgoing.append(f"{kind} {rid}")
        self._ready.set()

    def pushed(self, queued: list[str]) -> None:
        """A push for ``queued`` (not connected here) is committed: wake them wherever
        they are connected."""
        if queued and self.peers:
            self._outgoing.extend(f"w {rid}" for rid in queued)
            self._ready.set()

    # Tasks -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._send_loop)
            if self.watch_parent:
                nursery.start_soon(self._watch_parent)
            task_status.started()

    async def _watch_parent(self) -> None:
        """EOF on stdin (the supervisor's pipe): the supervisor is gone, even killed with
        SIGKILL. Stop the way SIGTERM stops a server, so no worker keeps the ports."""
        stdin = trio.lowlevel.FdStream(os.dup(0))
        while await stdin.receive_some(4096):
            pass
        log.warning("worker %d: supervisor gone: shutting down", self.index)
        os.kill(os.getpid(), signal.SIGTERM)

    async def _send_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            lines, self._outgoing = self._outgoing, []
            for datagram in _datagrams(self.index, lines):
                for peer in self.peers:
                    try:
                        await self._sock.sendto(datagram, peer)
                    except OSError as exc:  # a peer restarting: it says "h" when back
                        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                            raise
                        log.debug("worker %d: peer %s unreachable: %s", self.index, peer, exc)

    async def _receive_loop(self) -> None:
        while True:
            data = await self._sock.recv(DATAGRAM_BYTES + 1024)
            self._handle(data.decode())

    def _handle(self, text: str) -> None:
        sessions, presence = self.sessions, self.presence
        assert sessions is not None
        header, _, body = text.partition("\n")
        sender = int(header)
        for line in body.split("\n"):
            kind, _, rid = line.partition(" ")
            if kind == "w":
                session = sessions.get(rid)
                if session is not None:
                    session.wake()
            elif kind == "u":
                presence[rid] = sender
                session = sessions.get(rid)
                if session is not None:  # the device connected again, to another worker
                    if self.counters is not None:
                        self.counters.mqtt_takeovers += 1
                    session.superseded()
            elif kind == "r":
                target, after, keep = rid.split(" ")
                sessions.local_revoke(target, float(after),
                                      None if keep == "-" else bytes.fromhex(keep))
            elif kind == "d":
                if presence.get(rid) == sender:
                    del presence[rid]
            elif kind == "h":
                for gone in [r for r, w in presence.items() if w == sender]:
                    del presence[gone]


def _datagrams(sender: int, lines: list[str]) -> Iterator[bytes]:
    header = f"{sender}\n".encode()
    chunk: list[bytes] = []
    size = len(header)
    for line in lines:
        encoded = line.encode()
        if chunk and size + len(encoded) + 1 > DATAGRAM_BYTES:
            yield header + b"\n".join(chunk)
            chunk, size = [], len(header)
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield header + b"\n".join(chunk)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        return isinstance(exc, FileNotFoundError)


# --- the parent --------------------------------------------------------------------------

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


def run_cluster(args: argparse.Namespace, admin_token: str) -> int:
    """Run ``args.workers`` worker processes until SIGINT/SIGTERM; the exit status."""
    from .store import SqliteStore, StoreError

    if args.db == ":memory:":
        return _error("--workers > 1 needs a database file (--db PATH): "
                      "workers share it, and :memory: cannot be shared")
    try:
        SqliteStore(args.db, shared=True).close()  # creates and migrates it
        lock_fd = _lock_database(args.db)
    except StoreError as exc:
        return _error(str(exc))
    except OSError:
        return _error(f"database {args.db} is in use by another process")
    try:
        store = SqliteStore(args.db, shared=True)
        try:
            expired = store.recover()
        finally:
            store.close()
        if expired:
            log.info("recovery: %d ttl-0 messages expired", expired)
        reserved: list[socket.socket] = []
        try:
            ports = {}
            wanted = {"http_port": args.http_port, "mqtt_port": args.mqtt_port}
            if args.tls_dir is not None:
                wanted["mqtts_port"] = 8883 if args.mqtts_port is None else args.mqtts_port
                if args.https_port is not None:
                    wanted["https_port"] = args.https_port
            for name, port in wanted.items():
                sock = _reserve_port(args.host, port)
                reserved.append(sock)
                ports[name] = sock.getsockname()[1]
        except OSError as exc:
            for sock in reserved:
                sock.close()
            return _error(f"cannot listen on {args.host}: {exc.strerror or exc}")
        try:
            with tempfile.TemporaryDirectory(prefix="pushsim-cluster-") as control_dir:
                # The options only (`pushsim` adds its dispatch function to the namespace).
                options = {k: v for k, v in vars(args).items()
                           if v is None or isinstance(v, (str, int, float))}
                worker_args = {**options, **ports, "workers": 1, "admin_token": admin_token}
                return trio.run(_supervise, worker_args, args.workers, control_dir)
        finally:
            for sock in reserved:
                sock.close()
    finally:
        os.close(lock_fd)


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.crashes: list[float] = []


async def _start_worker(worker: _Worker, worker_args: dict[str, Any], workers: int,
                        control_dir: str) -> dict[str, Any] | None:
    """Start one worker; its startup JSON line, or None if it failed before listening."""
    config = {"args": worker_args, "index": worker.index, "workers": workers,
              "control_dir": control_dir}
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "simulator.server.cluster"], env=env,
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


async def _supervise(worker_args: dict[str, Any], workers: int, control_dir: str) -> int:
    status = 0
    pool = [_Worker(i) for i in range(workers)]
    stopping = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            first = None
            for worker in pool:
                info = await _start_worker(worker, worker_args, workers, control_dir)
                if info is None:
                    await _stop_all(pool)
                    return 1  # the worker printed its one-line error
                first = first or info
            print(json.dumps(first), flush=True)
            log.info("%d workers listening (pids %s)", workers,
                     ", ".join(str(w.process.pid) for w in pool if w.process))

            async def watch(worker: _Worker) -> None:
                nonlocal status
                while True:
                    assert worker.process is not None
                    code = await worker.process.wait()
                    if stopping:
                        return
                    now = trio.current_time()
                    worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW]
                    worker.crashes.append(now)
                    log.error("worker %d (pid %d) exited with status %d",
                              worker.index, worker.process.pid, code)
                    if len(worker.crashes) > MAX_CRASHES:
                        log.error("worker %d crashed %d times within %g s: stopping",
                                  worker.index, len(worker.crashes), CRASH_WINDOW)
                        status = 1
                        nursery.cancel_scope.cancel()
                        return
                    await trio.sleep(RESTART_DELAY)
                    if stopping:
                        return
                    if await _start_worker(worker, worker_args, workers, control_dir) is None:
                        log.error("worker %d did not restart: stopping", worker.index)
                        status = 1
                        nursery.cancel_scope.cancel()
                        return
                    log.info("worker %d restarted (pid %d)", worker.index, worker.process.pid)

            for worker in pool:
                nursery.start_soon(watch, worker)
            async for signum in signals:
                log.info("%s: stopping %d workers", signal.Signals(signum).name, workers)
                break
            stopping = True
            nursery.cancel_scope.cancel()
        stopping = True
        codes = await _stop_all(pool)
    if any(codes):
        log.error("worker exit statuses: %s", codes)
        return 1
    return status


async def _stop_all(pool: list[_Worker]) -> list[int]:
    """SIGTERM every running worker and wait (SIGKILL after STOP_TIMEOUT)."""
    for worker in pool:
        if worker.process is not None and worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    codes = []
    with trio.CancelScope(shield=True):
        for worker in pool:
            if worker.process is None:
                continue
            with trio.move_on_after(STOP_TIMEOUT):
                await worker.process.wait()
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
            codes.append(worker.process.returncode)
    return codes


# --- a worker ------------------------------------------------------------------------------

def _worker_main() -> int:
    from .cli import run

    config = json.loads(sys.stdin.readline())
    args = argparse.Namespace(**config["args"])
    member_spec = (config["index"], config["workers"], config["control_dir"])
    return run(args, member=member_spec)


if __name__ == "__main__":
    sys.exit(_worker_main())
