"""The routing mesh of ``pushsim server --workers N``: what the worker processes tell each
other (the supervisor that starts them is ``supervisor.py``).

Every worker binds a Unix datagram socket in the supervisor's private directory and tells
the others, in batched datagrams (one line each):

- ``w <rid>``: a push for the device was committed: wake its session if it is here (the
  store already holds the message, so a wake is all a session needs). Wakes go to every
  peer, after the commit, so a session that connects on another worker at the same time
  either gets the wake or reads the queue after the commit: no push waits for a reconnect.
- ``u <rid>`` / ``d <rid>``: the device connected to / disconnected from the sender.
  Peers keep this *presence* map (registration id → worker) for ttl-0 pushes, which go
  only to devices online at push time, and close their own older connection of the same
  device (MQTT takeover across processes; the new connection owns the queue, so the
  old one is closed without touching the store).
- ``r <rid> <seconds> <token hash | ->``: the device's tokens (but that one) were revoked:
  its connections here end after that many seconds.
- ``m <id>`` / ``M <id> <json>``: a ``/metrics`` scrape on the sender asks every peer for
  its metrics snapshot, and each answers it alone (see :meth:`ClusterMember.collect`).
- ``h``: the sender (re)started: forget its presence entries.

Unix datagrams on Linux are reliable and ordered per sender; a peer that is down
(restarting) is skipped and says ``h`` when back.

Metrics. Before a worker reports its snapshot (to a scrape of its own or a peer's) it
writes it to ``worker-<i>.metrics.json`` in the directory; a restarted worker continues
its counters from that file, and a scrape that gets no answer from a peer in time uses the
peer's file. So every figure a scrape shows is at least every figure shown before: the
sum over the workers never goes backwards, whichever worker answers.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import socket
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .logs import server_logger
from .metrics import restore
from .sessions import Session, SessionRegistry

if TYPE_CHECKING:
    from .server import PushServer

__all__ = ["ClusterMember", "MemberSpec", "RoutedSessions"]

log = server_logger("simulator.server.cluster")

#: Largest routing datagram; far below the Unix socket send buffer (~208 KiB).
DATAGRAM_BYTES = 60 * 1024
#: How long a scrape waits for the other workers' snapshots.
METRICS_TIMEOUT = 1.0


@attrs.frozen
class MemberSpec:
    """Which worker this process is: ``index`` of ``workers``, routing in ``control_dir``."""

    index: int
    workers: int
    control_dir: str


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

    def revoke_here(self, registration_id: str, after: float, keep: bytes | None) -> None:
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

    def __init__(self, spec: MemberSpec, *, watch_parent: bool = True) -> None:
        self.spec = spec
        self.index = spec.index
        self.watch_parent = watch_parent
        self.peers = {i: self._path(i) for i in range(spec.workers) if i != spec.index}
        self.presence: dict[str, int] = {}  # registration id -> worker holding it
        self.sessions: RoutedSessions | None = None
        self.server: PushServer | None = None
        self._outgoing: list[str] = [f"h {spec.index}"]
        self._direct: list[tuple[int, str]] = []  # (peer, line) for one peer only
        self._ready = trio.Event()
        self._requests = itertools.count(1)
        self._answers: dict[int, dict[int, dict[str, Any]]] = {}  # request -> peer -> snap
        self._answered: dict[int, trio.Event] = {}
        self._persisting = trio.Lock()
        self._nursery: trio.Nursery | None = None  # run()'s, for answering scrapes
        path = self._path(spec.index)
        try:
            os.unlink(path)  # left by a crashed predecessor
        except FileNotFoundError:
            pass
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
        return os.path.join(self.spec.control_dir, f"worker-{index}.sock")

    def _metrics_file(self, index: int) -> Path:
        return Path(self.spec.control_dir) / f"worker-{index}.metrics.json"

    def registry(self, probe_limit: int | None) -> RoutedSessions:
        """The session registry to give this worker's server."""
        self.sessions = RoutedSessions(self, probe_limit)
        return self.sessions

    @property
    def metrics(self) -> ClusterMember:
        """What to give the server as its ``metrics`` source (this member's :meth:`collect`)."""
        return self

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

    # Metrics ------------------------------------------------------------------------------

    async def collect(self, local: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker's metrics snapshot, this one's (``local``) first."""
        await self._persist(local)
        request = next(self._requests)
        answers = self._answers[request] = {}
        done = self._answered[request] = trio.Event()
        self.announce("m", str(request))
        with trio.move_on_after(METRICS_TIMEOUT):
            await done.wait()
        del self._answers[request], self._answered[request]
        snaps = [local]
        for peer in self.peers:
            snap = answers.get(peer)
            if snap is None:  # down or slow: what it reported last
                snap = await trio.to_thread.run_sync(_read_json, self._metrics_file(peer))
            if snap is not None:
                snaps.append(snap)
        return snaps

    async def _persist(self, snap: dict[str, Any]) -> None:
        """Write this worker's snapshot before it is shown to anyone (atomic replace)."""
        async with self._persisting:
            await trio.to_thread.run_sync(_write_json, self._metrics_file(self.index), snap)

    async def _answer_metrics(self, requester: int, request: str) -> None:
        assert self.server is not None
        snap = self.server.snapshot()
        await self._persist(snap)
        self._direct.append((requester, f"M {request} {json.dumps(snap)}"))
        self._ready.set()

    def _take_answer(self, sender: int, text: str) -> None:
        request, _, body = text.partition(" ")
        answers = self._answers.get(int(request))
        if answers is not None:
            answers[sender] = json.loads(body)
            if len(answers) == len(self.peers):
                self._answered[int(request)].set()

    # Tasks -------------------------------------------------------------------------------

    async def run(self, server: PushServer, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Route for ``server`` until cancelled. Its counters continue from what this
        worker's predecessor last reported, if it had one."""
        self.server = server
        previous = await trio.to_thread.run_sync(_read_json, self._metrics_file(self.index))
        if previous is not None:
            restore(server.counters, previous)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
            direct, self._direct = self._direct, []
            for datagram in _datagrams(self.index, lines):
                for peer in self.peers.values():
                    await self._send(datagram, peer)
            for index, line in direct:
                await self._send(f"{self.index}\n{line}".encode(), self.peers[index])

    async def _send(self, datagram: bytes, path: str) -> None:
        try:
            await self._sock.sendto(datagram, path)
        except OSError as exc:  # a peer restarting: it says "h" when back
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                raise
            log.debug("worker %d: peer %s unreachable: %s", self.index, path, exc)

    async def _receive_loop(self) -> None:
        while True:
            data = await self._sock.recv(DATAGRAM_BYTES + 1024)
            self._handle(data.decode())

    def _handle(self, text: str) -> None:
        header, _, body = text.partition("\n")
        sender = int(header)
        if body.startswith("M "):  # one metrics answer, JSON: not split into lines
            self._take_answer(sender, body[2:])
            return
        for line in body.split("\n"):
            kind, _, rest = line.partition(" ")
            self._handle_line(sender, kind, rest)

    def _handle_line(self, sender: int, kind: str, rid: str) -> None:
        sessions, presence = self.sessions, self.presence
        assert sessions is not None
        if kind == "w":
            session = sessions.get(rid)
            if session is not None:
                session.wake()
        elif kind == "u":
            presence[rid] = sender
            session = sessions.get(rid)
            if session is not None:  # the device connected again, to another worker
                if self.server is not None:
                    self.server.counters.mqtt_takeovers += 1
                session.superseded()
        elif kind == "d":
            if presence.get(rid) == sender:
                del presence[rid]
        elif kind == "r":
            target, after, keep = rid.split(" ")
            sessions.revoke_here(target, float(after),
                                 None if keep == "-" else bytes.fromhex(keep))
        elif kind == "m" and self._nursery is not None:
            self._nursery.start_soon(self._answer_metrics, sender, rid)
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


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` atomically (a reader sees the old or the new file)."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(doc, file)
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
