"""Chaos: no push lost, none duplicated, while the server is SIGKILLed and links fail.

``python -m power_bench.chaos [--devices N] [--pushes N] [--kills K] [--seed S]`` runs:

- the reference server as a child process (``python -m simulator.server``) on a database
  file and fixed ports, SIGKILLed at seeded random moments and restarted on the same file;
- N real :class:`~pushsdk.PushClient` s in this process, whose MQTT connections go through
  :class:`FaultRelay`, a TCP relay that drops links (closes both sides) and black-holes
  them (stops forwarding without closing, like a NAT mapping that expired: the SDK must
  notice by its ping timeout);
- a provider thread sending pushes at a steady rate over HTTP, one device per push. Every
  200 is a promise (the message is committed); a request refused at connect time was never
  sent and is retried; a request whose answer was lost *may* have been committed, so its
  push is retried under a new id and the lost one may arrive at most once.

At the end it waits until every acknowledged push reached its device's callback and the
server has nothing queued or in flight, then counts: ``lost`` (acknowledged, never seen by
the app), ``duplicates`` (a msg_id seen twice by one device's callback) and ``unexpected``
(seen, but never sent to that device). The CI variant is ``tests/reliability/test_chaos.py``.
"""
from __future__ import annotations

import argparse
import collections
import functools
import http.client
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import psutil
import trio

from pushsdk import PushClient, ServerConfig, parse_strategy
from pushsdk.backoff import Backoff
from pushsdk.transport import ByteStream, TcpConnector
from simulator.server_child import (
    LOOPBACK_LIMITS, ServerChild, basic_auth, create_app, free_port, metrics,
)

__all__ = ["ChaosConfig", "ChaosReport", "FaultRelay", "run_chaos", "main"]

#: Restarts keep one admin token (the server would draw a new one each time).
ADMIN = "chaos-admin"


# --- the fault-injecting relay -------------------------------------------------------------

class _Link:
    """One relayed connection (device side ``client``, server side ``upstream``)."""

    __slots__ = ("client", "upstream", "scope", "blackholed")

    def __init__(self, client: trio.SocketStream, upstream: trio.SocketStream) -> None:
        self.client, self.upstream = client, upstream
        self.scope = trio.CancelScope()
        self.blackholed = False


class FaultRelay:
    """A TCP relay from a local port to ``upstream_port`` that injects link faults.

    - :meth:`drop` closes both sides of one connection (a link that went down);
    - :meth:`blackhole` makes one connection forward nothing more, in either direction,
      without closing it (a NAT mapping that expired): the device learns only by its ping
      timeout; the server by its keepalive timeout, or when the device connects again.

    A connection made while the server is down is closed at once.
    """

    def __init__(self, upstream_port: int, rng: random.Random) -> None:
        self.upstream_port = upstream_port
        self.rng = rng
        self.links: list[_Link] = []
        self.drops = 0
        self.blackholes = 0
        self.relayed = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        except OSError:  # the server is down
            await trio.aclose_forcefully(client)
            return
        link = _Link(client, upstream)
        self.links.append(link)
        self.relayed += 1
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, client, upstream, True)
                    nursery.start_soon(self._pump, link, upstream, client, False)
        finally:
            self.links.remove(link)
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)

    async def _pump(self, link: _Link, source: trio.SocketStream, sink: trio.SocketStream,
                    from_device: bool) -> None:
        try:
            while data := await source.receive_some(65536):
                if not link.blackholed:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # One side ended. A black-holed link stays open towards the server: in a real NAT
        # expiry the server learns nothing until its keepalive timeout (or a takeover).
        if not (link.blackholed and from_device):
            link.scope.cancel()

    def live(self) -> list[_Link]:
        return [link for link in self.links if not link.blackholed]

    def drop(self, link: _Link) -> None:
        self.drops += 1
        link.scope.cancel()

    def blackhole(self, link: _Link) -> None:
        self.blackholes += 1
        link.blackholed = True

    def inject(self, blackhole_share: float) -> bool:
        """One fault on a random live connection; False if there is none."""
        live = self.live()
        if not live:
            return False
        link = self.rng.choice(live)
        if self.rng.random() < blackhole_share:
            self.blackhole(link)
        else:
            self.drop(link)
        return True


class _RelayConnector:
    """MQTT connections go to the relay, wherever the registration said the server is."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tcp = TcpConnector(connect_timeout=3.0)

    async def connect(self, host: str, port: int, *, tls: bool) -> ByteStream:
        return await self.tcp.connect("127.0.0.1", self.port, tls=False)


# --- the provider ------------------------------------------------------------------------

class Provider(threading.Thread):
    """Sends ``pushes`` pushes at ``rate`` per second, push ``i`` to device ``i % N``.

    ``accepted``: request id -> (msg_id, device index) for every 200. ``maybe``: request
    ids whose answer was lost after the request was sent (committed or not: unknown).
    Refused connections (server down, nothing sent) are retried and counted in
    ``refused``; 429/503 answers in ``throttled``.
    """

    def __init__(self, port_of: Any, app: dict[str, str], targets: list[str], pushes: int,
                 rate: float) -> None:
        super().__init__(daemon=True, name="chaos provider")
        self.port_of, self.app, self.targets = port_of, app, targets
        self.pushes, self.rate = pushes, rate
        self.accepted: dict[int, tuple[str, int]] = {}
        self.maybe: dict[int, int] = {}  # request id -> device index
        self.refused = 0
        self.throttled = 0
        self.errors: list[str] = []
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {**basic_auth(self.app), "Content-Type": "application/json"}
        start = time.monotonic()
        for i in range(self.pushes):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            device = i % len(self.targets)
            while not self.stop.is_set():
                request_id = self.requests
                self.requests += 1
                body = {"audience": {"registration_id": [self.targets[device]]},
                        "message": {"data": {"request": request_id, "push": i}}}
                outcome = self._send(body, headers)
                if outcome == "refused":
                    self.refused += 1
                    time.sleep(0.02)
                    continue
                if outcome == "maybe":
                    self.maybe[request_id] = device
                    time.sleep(0.02)
                    continue
                status, answer = outcome
                if status == 200:
                    self.accepted[request_id] = (answer["msg_id"], device)
                    break
                if status in (429, 503):
                    self.throttled += 1
                    time.sleep(0.05)
                    continue
                self.errors.append(f"push {i}: {status} {answer}")
                return

    def _send(self, body: dict[str, Any], headers: dict[str, str]) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port_of(), timeout=10)
        try:
            try:
                conn.connect()
            except OSError:
                return "refused"  # nothing was sent: certainly not committed
            try:
                conn.request("POST", "/v1/push", body=json.dumps(body).encode(),
                             headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                return "maybe"
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()


# --- the run -------------------------------------------------------------------------------

@attrs.frozen
class ChaosConfig:
    devices: int = 30
    pushes: int = 2000
    push_rate: float = 100.0
    kills: int = 4
    #: Link faults per second over the whole fleet, and the share that are black-holes.
    link_faults_per_s: float = 2.0
    blackhole_share: float = 0.5
    seed: int = 1
    #: How long the server stays down after a SIGKILL (uniform in [0, this]).
    max_downtime: float = 1.0
    drain_timeout: float = 60.0
    #: SDK tuning that keeps recovery fast: pings after 2 s of silence, 1 s to answer.
    strategy: str = "fixed:2"
    ping_timeout: float = 1.0


@attrs.frozen
class ChaosReport:
    devices: int
    pushes_acknowledged: int  # 200 answers: promises checked
    maybe_committed: int  # answers lost after sending
    maybe_delivered: int
    refused_retries: int
    throttled_retries: int
    server_kills: int
    link_drops: int
    link_blackholes: int
    delivered_callbacks: int
    lost: int
    duplicates: int
    unexpected: int
    reconnects: int
    connect_attempts: int
    drain_s: float
    wall_s: float
    server_rss_peak_mb: float
    client_rss_mb: float
    lost_ids: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()

    def line(self) -> str:
        return (f"chaos: {self.pushes_acknowledged} pushes acknowledged to {self.devices} devices "
                f"({self.maybe_committed} ambiguous, {self.maybe_delivered} of them delivered); "
                f"faults: {self.server_kills} server SIGKILLs, {self.link_drops} link drops, "
                f"{self.link_blackholes} black-holes ({self.reconnects} SDK reconnects); "
                f"lost = {self.lost}, duplicates = {self.duplicates}, "
                f"unexpected = {self.unexpected}; drained in {self.drain_s:.1f} s, "
                f"wall {self.wall_s:.1f} s")


def _registration_id(client: PushClient) -> str:
    """The registration id of a connected server-mode client."""
    registration = client.registration
    if registration is None:
        raise RuntimeError("a connected client has no registration")
    return registration.registration_id


def _clients(config: ChaosConfig, server_url: str, app_key: str, connector: _RelayConnector,
             rng: random.Random, seen: list[collections.Counter[str]]) -> list[PushClient]:
    """The ``config.devices`` apps, connecting through the relay; device ``i`` counts each
    message id it is handed in ``seen[i]``. Each draws its own seed from ``rng``, in order."""
    clients = []
    for i in range(config.devices):
        def on_message(msg: Any, i: int = i) -> None:
            seen[i][msg.msg_id] += 1
        clients.append(PushClient(
            ServerConfig(server_url=server_url, app_key=app_key, device_id=f"chaos-{i}"),
            connector=connector, http_connector=TcpConnector(connect_timeout=3.0),
            rng=random.Random(rng.random()),
            strategy=parse_strategy(config.strategy), ping_timeout=config.ping_timeout,
            backoff=Backoff(initial=0.25, max_delay=2.0, reset_after=10.0),
            connect_timeout=3.0, http_timeout=3.0, on_message=on_message,
        ))
    return clients


async def _drain(config: ChaosConfig, provider: Provider,
                 seen: list[collections.Counter[str]], server: ServerChild) -> float:
    """Wait (up to ``config.drain_timeout``) until every promise is kept and nothing is left
    queued or in flight at the server; the seconds it took."""
    drain_start = trio.current_time()
    expected: list[set[str]] = [set() for _ in range(config.devices)]
    for msg_id, device in provider.accepted.values():
        expected[device].add(msg_id)
    with trio.move_on_after(config.drain_timeout):
        while True:
            missing = sum(len(expected[d] - seen[d].keys()) for d in range(config.devices))
            if not missing:
                m = await trio.to_thread.run_sync(metrics, server.http_port)
                if m["pushsim_queue_depth"] == 0 and m["pushsim_inflight"] == 0:
                    break
            await trio.sleep(0.2)
    return trio.current_time() - drain_start


class _ServerLife:
    """The server child across its kills: started again on the same ports, token and log
    each time, so devices come back to the same server."""

    def __init__(self, start: Callable[[], ServerChild]) -> None:
        self._start = start
        self.kills = 0
        self.rss_peak = 0

    async def begin(self) -> None:
        self.server = await trio.to_thread.run_sync(self._start)
        self.note_rss()

    def note_rss(self) -> None:
        self.rss_peak = max(self.rss_peak, self.server.rss())

    async def kill_and_restart(self, downtime: float) -> None:
        self.note_rss()
        await trio.to_thread.run_sync(self.server.kill)
        self.kills += 1
        await trio.sleep(downtime)
        self.server = await trio.to_thread.run_sync(self._start)

    async def end(self) -> None:
        await trio.to_thread.run_sync(self.server.terminate)


async def run_chaos(config: ChaosConfig, workdir: Path) -> ChaosReport:
    """Run one chaos experiment (see the module docstring) and count what the apps saw."""
    wall_start = time.monotonic()
    rng = random.Random(config.seed)
    life = _ServerLife(functools.partial(
        ServerChild, workdir / "chaos.db", http_port=free_port(), mqtt_port=free_port(),
        admin_token=ADMIN, limits=LOOPBACK_LIMITS, log=workdir / "server.log"))
    await life.begin()
    clients: list[PushClient] = []
    seen: list[collections.Counter[str]] = [collections.Counter()
                                            for _ in range(config.devices)]
    relay = FaultRelay(life.server.mqtt_port, random.Random(rng.random()))
    try:
        app = await trio.to_thread.run_sync(create_app, life.server.http_port, "chaos", ADMIN)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            clients += _clients(config, life.server.http_url, app["app_key"],
                                _RelayConnector(relay.port), rng, seen)
            for client in clients:
                nursery.start_soon(client.run)
            with trio.fail_after(60):
                for client in clients:
                    await client.wait_connected()
            targets = [_registration_id(client) for client in clients]

            provider = Provider(lambda: life.server.http_port, app, targets,
                                config.pushes, config.push_rate)
            duration = config.pushes / config.push_rate
            # Kill moments: seeded, one at a random moment in each of `kills` equal slices
            # of the push stream (so every run has exactly that many, spread out).
            width = max(duration - 1.0, 1.0) / max(config.kills, 1)
            kill_at = [0.5 + k * width + rng.uniform(0.0, width) for k in range(config.kills)]
            provider.start()
            start = trio.current_time()

            async def faults() -> None:
                while provider.is_alive():
                    await trio.sleep(rng.expovariate(config.link_faults_per_s))
                    relay.inject(config.blackhole_share)

            nursery.start_soon(faults)
            for t in kill_at:
                await trio.sleep_until(start + t)
                await life.kill_and_restart(rng.uniform(0.0, config.max_downtime))
            await trio.to_thread.run_sync(provider.join)
            if provider.errors:
                raise RuntimeError(f"provider failed: {provider.errors[:3]}")

            drain_s = await _drain(config, provider, seen, life.server)
            life.note_rss()
            await trio.sleep(0.5)  # anything still on the wire arrives (and would count)
            for client in clients:
                await client.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await life.end()
    return _report(config, provider, seen, clients, relay, life,
                   drain_s=drain_s, wall_s=time.monotonic() - wall_start)


def _report(config: ChaosConfig, provider: Provider, seen: list[collections.Counter[str]],
            clients: list[PushClient], relay: FaultRelay, life: _ServerLife, *,
            drain_s: float, wall_s: float) -> ChaosReport:
    lost_ids, duplicate_ids, maybe_ids, unexpected = _tally(config.devices, provider, seen)
    stats = [client.statistics() for client in clients]
    return ChaosReport(
        devices=config.devices,
        pushes_acknowledged=len(provider.accepted),
        maybe_committed=len(provider.maybe),
        maybe_delivered=len(maybe_ids),
        refused_retries=provider.refused,
        throttled_retries=provider.throttled,
        server_kills=life.kills,
        link_drops=relay.drops,
        link_blackholes=relay.blackholes,
        delivered_callbacks=sum(sum(c.values()) for c in seen),
        lost=len(lost_ids),
        duplicates=sum(n - 1 for c in seen for n in c.values() if n > 1),
        unexpected=unexpected,
        reconnects=sum(s.reconnects for s in stats),
        connect_attempts=sum(s.connect_attempts for s in stats),
        drain_s=drain_s,
        wall_s=wall_s,
        server_rss_peak_mb=life.rss_peak / 2**20,
        client_rss_mb=psutil.Process().memory_info().rss / 2**20,
        lost_ids=tuple(lost_ids[:20]),
        duplicate_ids=tuple(duplicate_ids[:20]),
    )


def _tally(devices: int, provider: Provider, seen: list[collections.Counter[str]],
           ) -> tuple[list[str], list[str], set[str], int]:
    """What the apps saw against what the server promised: the lost and the duplicated
    message ids, the delivered ids no 200 announced (``maybe_ids``), and how many of those
    exceed one per ambiguous request to that device (``unexpected``)."""
    lost_ids: list[str] = []
    duplicate_ids: list[str] = []
    maybe_ids: set[str] = set()
    sent_to: list[set[str]] = [set() for _ in range(devices)]
    for msg_id, device in provider.accepted.values():
        sent_to[device].add(msg_id)
    for d in range(devices):
        lost_ids += sorted(sent_to[d] - seen[d].keys())
        duplicate_ids += [m for m, n in seen[d].items() if n > 1]
        for msg_id in seen[d].keys() - sent_to[d]:
            maybe_ids.add(msg_id)
    # A delivered message that no 200 announced must be one of the ambiguous requests: one
    # per ambiguous request at most, to the device that request targeted.
    maybe_per_device = collections.Counter(provider.maybe.values())
    got_per_device: collections.Counter[int] = collections.Counter()
    for d in range(devices):
        got_per_device[d] = len(seen[d].keys() - sent_to[d])
    unexpected = sum(max(0, got_per_device[d] - maybe_per_device[d]) for d in range(devices))
    return lost_ids, duplicate_ids, maybe_ids, unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m power_bench.chaos",
                                     description=__doc__.split("\n\n")[0])
    defaults = ChaosConfig()
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--pushes", type=int, default=20000)
    parser.add_argument("--push-rate", type=float, default=250.0)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--link-faults", type=float, default=10.0, metavar="PER_S")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    import tempfile
    config = ChaosConfig(devices=args.devices, pushes=args.pushes, push_rate=args.push_rate,
                         kills=args.kills, link_faults_per_s=args.link_faults, seed=args.seed,
                         drain_timeout=120.0)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = trio.run(run_chaos, config, workdir)
    print(report.line())
    print(json.dumps(attrs.asdict(report), indent=1))
    if args.json:
        args.json.write_text(json.dumps(attrs.asdict(report), indent=1))
    return 0 if report.lost == report.duplicates == report.unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
