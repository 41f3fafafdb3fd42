"""The reference server at scale, against Mosquitto in the same run.

``python -m power_bench.server_scale --connections N --workers W --out DIR``

1. A database with one app and N devices is prepared directly through SQLite (a
   benchmark-only bulk registration: N ``POST /v1/devices`` would measure registration,
   not the gateway), then ``pushsim server --workers W`` is started on it.
2. N plain MQTT clients (the project's sans-IO codec over trio on the SDK's own
   ``pushsdk.tcp.TcpStream``, one task each, at most PER_PROCESS per client process, one
   loopback source address per process) CONNECT with the devices' tokens, SUBSCRIBE to
   their inboxes and stay idle (keepalive 0). A failed attempt (refused, closed, no SUBACK
   within HANDSHAKE_S) is retried after a backoff, up to ATTEMPTS times, as a device
   would; failed attempts are counted by reason. With ``--workers W`` the server holds
   N / W connections per process: each must stay under the open-files limit (20,000
   here, so 50,000 need ``--workers 3``).
3. Server RSS per idle connection = (RSS of all server processes with N connected −
   RSS before any connection) ÷ N.
4. A broadcast (``audience: "all"``): time from the request until every client holds it
   (asked of the client processes, which costs the server nothing), then until every
   delivery is acknowledged as the server reports it (``GET /v1/messages/<id>``).
5. Single-target pushes at a fixed rate over kept-alive HTTP connections; end-to-end
   latency = client receipt time − send time stamped in the payload (same machine clock).
6. The same clients against Mosquitto (one broker per 19,000 connections, the open-files
   limit): each subscribes to its own topic and to ``all``; a QoS 1 PUBLISH to ``all``
   is the broadcast, QoS 1 PUBLISHes to the clients' topics the single pushes. Memory per
   connection and CPU seconds per phase are reported as ratios server ÷ Mosquitto. CPU
   seconds of the client processes are reported too: they share the machine's cores.

Every phase has a time limit; results go to DIR/server_scale.json and the terminal.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import psutil

from power_bench.children import Child, Mosquitto, raise_nofile, select_readable
from power_bench.fleet_scale import machine
from simulator.server_child import LOOPBACK_LIMITS, free_port

if TYPE_CHECKING:
    import trio

    from pushsdk.protocol import Connection

PER_PROCESS = 17_000  # client connections per client process (under the 20,000 files)
PER_BROKER = 19_000
ATTEMPTS, HANDSHAKE_S = 5, 20.0  # a client connects again after a failed attempt

_T = TypeVar("_T")


# --- clients (a child process) -----------------------------------------------------------

def clients_main(spec: dict[str, Any]) -> None:
    """Connect the clients of ``spec``, report, then serve pushes until told to report."""
    import gc

    import trio

    from simulator.server.gctune import SERVER_THRESHOLDS

    # 17,000 connections are a big long-lived heap, as in the server: with the default GC
    # thresholds full collections (~0.4 s each) would come every second or two, delaying
    # receipts (so inflating latencies) and taking CPU from the server on the same cores.
    gc.set_threshold(*SERVER_THRESHOLDS)
    trio.run(_Clients(spec).main)


class _Clients:
    """The MQTT clients of one client process and what they have seen (``spec``: the
    clients' addresses and ids, the connect rate and timeout)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.latencies: list[float] = []
        self.broadcast_at: list[float] = []
        self.last_single = 0.0  # when the latest single-target push arrived (wall clock)
        # connected: got its SUBACK; failed: gave up after ATTEMPTS; the other counts are
        # failed attempts by reason (each followed by a retry, as a device would).
        self.counts = {"connected": 0, "failed": 0, "received": 0, "attempts_failed": 0,
                       "connect_error": 0, "no_suback": 0, "closed_early": 0}
        self.rng = random.Random()

    async def main(self) -> None:
        """Connect every client at the spec's rate, print the counts, then answer the
        parent's commands on stdin (``count``, ``report``; anything else ends)."""
        import trio

        spec, counts = self.spec, self.counts
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for n, c in enumerate(spec["clients"]):
                due = start + n / spec["rate"]
                if due > trio.current_time():
                    await trio.sleep_until(due)
                nursery.start_soon(self.one, *c)
            with trio.move_on_after(spec["timeout"]):
                while counts["connected"] + counts["failed"] < len(spec["clients"]):
                    await trio.sleep(0.05)
            took = trio.current_time() - start
            print(json.dumps({**counts, "seconds": took}), flush=True)
            while (command := (await trio.to_thread.run_sync(sys.stdin.readline)).strip()):
                if command == "count":
                    print(json.dumps({**counts, "broadcast": len(self.broadcast_at),
                                      "last_single": self.last_single}), flush=True)
                elif command == "report":
                    print(json.dumps({**counts, "latencies": self.latencies,
                                      "broadcast_at": self.broadcast_at,
                                      "last_single": self.last_single}), flush=True)
                else:
                    break
            nursery.cancel_scope.cancel()

    async def one(self, i: int, host: str, port: int, source: str, cid: str,
                  user: str | None, password: str | None, topics: list[str]) -> None:
        """One client: up to ATTEMPTS sessions, with a growing jittered pause between."""
        import trio

        for attempt in range(ATTEMPTS):
            if attempt:
                await trio.sleep(self.rng.uniform(0.5, 1.5) * 2**attempt)
            reason = await self.session(host, port, source, cid, user, password, topics)
            if reason is None:
                return  # it was connected (until the connection ended)
            self.counts["attempts_failed"] += 1
            self.counts[reason] += 1
        self.counts["failed"] += 1

    async def session(self, host: str, port: int, source: str, cid: str, user: str | None,
                      password: str | None, topics: list[str]) -> str | None:
        """One connection; None once it got its SUBACK, else why it failed before."""
        import trio

        from pushsdk.protocol import Connect, Connection, Role, Subscribe
        from pushsdk.tcp import open_tcp

        try:
            # The SDK's own stream rather than trio.SocketStream: the load generator shares
            # the machine's two cores with the server it measures, so it should cost little.
            stream = await open_tcp(host, port, socket.AF_INET, source)
        except OSError:
            return "connect_error"
        conn = Connection(Role.CLIENT, max_packet_size=1 << 16)
        # CONNACK and SUBACK must come within HANDSHAKE_S.
        handshake = trio.CancelScope(deadline=trio.current_time() + HANDSHAKE_S)
        try:
            await stream.send_all(conn.send(Connect(
                client_id=cid, username=user, keepalive=0, clean_session=False,
                password=None if password is None else password.encode()))
                + conn.send(Subscribe(1, tuple((t, 1) for t in topics))))
            with handshake:
                await self.serve(stream, conn, handshake)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(stream)
        if handshake.deadline == math.inf:
            return None
        return "no_suback" if handshake.cancelled_caught else "closed_early"

    async def serve(self, stream: trio.abc.Stream, conn: Connection,
                    handshake: trio.CancelScope) -> None:
        """Read the connection until it ends: count the SUBACK, acknowledge and time pushes."""
        from pushsdk.protocol import NEED_DATA, ConnAck, PubAck, Publish, SubAck

        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                data = await stream.receive_some(16384)
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(event, ConnAck):
                if event.return_code:
                    return
            elif isinstance(event, SubAck):
                self.counts["connected"] += 1
                handshake.deadline = math.inf
            elif isinstance(event, Publish):
                now = time.time()
                if event.packet_id is None:
                    raise RuntimeError("a QoS 0 PUBLISH on a QoS 1 subscription")
                await stream.send_all(conn.send(PubAck(event.packet_id)))
                self._received(json.loads(event.payload), now)
            else:
                return

    def _received(self, body: dict[str, Any], now: float) -> None:
        probe = body["message"]["data"] if "message" in body else body
        self.counts["received"] += 1
        if probe["k"] == "b":
            self.broadcast_at.append(now)
        else:
            self.latencies.append(now - probe["ts"])
            self.last_single = now


class ClientProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "power_bench.server_scale", "_clients"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None  # stdin=PIPE, stdout=PIPE
        self.stdin: IO[str] = stdin
        self.stdout: IO[str] = stdout
        self.stdin.write(json.dumps(spec) + "\n")
        self.stdin.flush()

    def line(self, timeout: float) -> dict[str, Any]:
        if not select_readable([self.stdout], timeout):
            raise RuntimeError("client process did not answer")
        return json.loads(self.stdout.readline())

    def ask(self, timeout: float, command: str = "report") -> dict[str, Any]:
        self.stdin.write(command + "\n")
        self.stdin.flush()
        return self.line(timeout)

    def stop(self) -> None:
        try:
            self.stdin.write("quit\n")
            self.stdin.flush()
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def client_processes(n: int) -> int:
    return max(1, -(-n // PER_PROCESS))


def source_ip(i: int, n: int) -> str:
    """Client ``i``'s loopback source address: one per client process (``i % processes``
    is the process, as ``start_clients`` deals them out), so no address needs more than
    PER_PROCESS ephemeral ports towards one server port."""
    return f"127.0.0.{2 + i % client_processes(n)}"


def start_clients(clients: list[list[Any]], rate: float, timeout: float
                  ) -> tuple[list[ClientProcess], dict[str, Any]]:
    """Spread ``clients`` over processes; wait until all connected; the connect figures."""
    procs = []
    count = client_processes(len(clients))
    shares = [clients[i::count] for i in range(count)]
    t0 = time.time()
    for share in shares:
        procs.append(ClientProcess({"clients": share, "rate": rate / len(shares),
                                    "timeout": timeout}))
    answers = [p.line(timeout + 30) for p in procs]
    took = time.time() - t0
    connected = sum(a["connected"] for a in answers)
    return procs, {"connected": connected, "failed": sum(a["failed"] for a in answers),
                   "seconds": round(took, 2), "connects_per_s": round(connected / took),
                   "client_processes": len(procs),
                   # failures: no SUBACK in time / refused or closed before it; still
                   # waiting for TCP connect when the time was up
                   **{key: sum(a[key] for a in answers) for key in (
                       "attempts_failed", "connect_error", "no_suback", "closed_early")}}


def wait_received(procs: list[ClientProcess], expected: int, deadline: float) -> None:
    """Until the clients hold ``expected`` broadcast messages (asked every 50 ms)."""
    while time.time() < deadline:
        if sum(p.ask(30, "count")["broadcast"] for p in procs) >= expected:
            return
        time.sleep(0.05)


def wait_singles(procs: list[ClientProcess], expected: int, deadline: float
                 ) -> tuple[int, float]:
    """Until the clients hold ``expected`` single-target pushes (or ``deadline``); how many
    they hold and when the last came."""
    while True:
        answers = [p.ask(30, "count") for p in procs]
        got = sum(a["received"] - a["broadcast"] for a in answers)
        if got >= expected or time.time() >= deadline:
            return got, max(a["last_single"] for a in answers)
        time.sleep(0.05)


def throughput(sent: int, got: tuple[int, float], t0: float, cpu_s: float) -> dict[str, Any]:
    """Pushes received per wall second (``t0`` to the last receipt) and per CPU second of
    the broker; ``got`` is :func:`wait_singles`' answer."""
    count, last = got
    wall = max(1e-9, last - t0)
    return {"sent": sent, "pushes": count, "seconds": round(wall, 3),
            "pushes_per_s": round(count / wall), "cpu_s": round(cpu_s, 2),
            "pushes_per_cpu_s": round(count / max(1e-9, cpu_s))}


def collect(procs: list[ClientProcess]) -> dict[str, Any]:
    answers = [p.ask(60) for p in procs]
    return {"latencies": sorted(x for a in answers for x in a["latencies"]),
            "broadcast_at": sorted(x for a in answers for x in a["broadcast_at"]),
            "received": sum(a["received"] for a in answers)}


# --- the measured side --------------------------------------------------------------------

def prepare_db(path: str, n: int) -> tuple[str, str, list[tuple[str, str]]]:
    """An app and ``n`` devices with tokens; (app_key, master_secret, [(rid, token)])."""
    from simulator.server import PushServer, ServerSettings, SqliteStore

    store = SqliteStore(path)
    app = PushServer(store, settings=ServerSettings(admin_token="x")).create_app("scale")
    store.close()
    rng = random.Random(7)
    devices = [(rng.getrandbits(80).to_bytes(10, "big").hex(),
                rng.getrandbits(192).to_bytes(24, "big").hex()) for _ in range(n)]
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO devices (registration_id, app_key, device_id, platform, created_at, "
        "updated_at) VALUES (?, ?, ?, 'android', ?, ?)",
        [(rid, app.app_key, f"d{i}", now, now) for i, (rid, _) in enumerate(devices)])
    db.executemany("INSERT INTO tokens (token_hash, registration_id, expires_at) "
                   "VALUES (?, ?, ?)",
                   [(hashlib.sha256(tok.encode()).digest(), rid, now + 86400)
                    for rid, tok in devices])
    db.execute("COMMIT")
    db.close()
    return app.app_key, app.master_secret, devices


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss(procs: list[psutil.Process]) -> int:
    return sum(p.memory_info().rss for p in procs)


def cpu(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


async def http_pushes(url: str, app_key: str, secret: str, bodies: list[dict[str, Any]],
                      rate: float, connections: int = 16) -> dict[str, Any]:
    """POST each body to /v1/push at ``rate``/s over kept-alive connections; stamps
    ``message.data.ts`` just before sending. Returns counts and the answers' msg_ids."""
    import base64

    import trio

    host, port = url.split("//")[1].split(":")
    auth = base64.b64encode(f"{app_key}:{secret}".encode()).decode()
    queue_send, queue_receive = trio.open_memory_channel(len(bodies) + 1)
    results: dict[str, Any] = {"ok": 0, "failed": 0, "msg_ids": []}

    async def worker() -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        buf = b""
        async for body in queue_receive:
            body["message"]["data"]["ts"] = time.time()
            data = json.dumps(body).encode()
            await stream.send_all(
                f"POST /v1/push HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                .encode() + data)
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive_some(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            answer, buf = buf[:length], buf[length:]
            if head.startswith(b"HTTP/1.1 200"):
                results["ok"] += 1
                results["msg_ids"].append(json.loads(answer)["msg_id"])
            else:
                results["failed"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
        start = trio.current_time()
        for k, body in enumerate(bodies):
            await trio.sleep_until(start + k / rate)
            queue_send.send_nowait(body)
        await queue_send.aclose()
    return results


def status(url: str, app_key: str, secret: str, msg_id: str) -> dict[str, Any]:
    import base64
    import urllib.request

    request = urllib.request.Request(f"{url}/v1/messages/{msg_id}", headers={
        "Authorization": "Basic " + base64.b64encode(f"{app_key}:{secret}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def pct(values: list[float], p: float) -> float | None:
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1) if values \
        else None


def run_server_side(n: int, workers: int, rate: float, seconds: float, ramp: float,
                    workdir: Path, log: Any, pushes: int = 0) -> dict[str, Any]:
    """``pushsim server`` with ``n`` idle devices: memory, connects, a broadcast, then
    single-target pushes at ``rate``/s for ``seconds`` or (``pushes`` > 0) that many as fast
    as 16 kept-alive HTTP connections send them (throughput: until the last is received)."""
    import trio

    db = str(workdir / "scale.db")
    app_key, secret, devices = prepare_db(db, n)
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator", "server", "--db", db, "--workers", str(workers),
         "--http-port", "0", "--mqtt-port", "0", "--push-rate", "1000000",
         "--log-level", "warning", *LOOPBACK_LIMITS],
        stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=raise_nofile)
    procs: list[ClientProcess] = []
    try:
        info = _startup_line(server)
        mqtt_port = int(info["mqtt"].rsplit(":", 1)[1])
        time.sleep(1.0)
        members = tree(server.pid)
        base_rss, cpu0 = rss(members), cpu(members)
        clients = [[i, "127.0.0.1", mqtt_port, source_ip(i, n), rid,
                    app_key, token, [f"push/{app_key}/{rid}"]]
                   for i, (rid, token) in enumerate(devices)]
        procs, connect = start_clients(clients, ramp, timeout=240)
        print(f"connect: {connect}", file=sys.stderr, flush=True)
        time.sleep(3.0)
        held = rss(members)
        cpu1 = cpu(members)
        loaders = [psutil.Process(p.proc.pid) for p in procs]
        ccpu1 = cpu(loaders)
        result = {"workers": workers, "connect": connect,
                  **_connected_figures(members, connect["connected"], base_rss, held,
                                       cpu1 - cpu0)}
        broadcast_t0 = time.time()
        result["broadcast"] = _http_broadcast(info["http"], app_key, secret, procs,
                                              connect["connected"])
        cpu2, ccpu2 = cpu(members), cpu(loaders)
        result["broadcast"].update(cpu_s=round(cpu2 - cpu1, 2),
                                   client_cpu_s=round(ccpu2 - ccpu1, 2))
        # Single-target pushes.
        rng = random.Random(3)
        bodies = [{"audience": {"registration_id": [devices[rng.randrange(n)][0]]},
                   "message": {"data": {"k": "s"}}}
                  for _ in range(pushes or int(rate * seconds))]
        t0 = time.time()
        if pushes:
            sent = trio.run(http_pushes, info["http"], app_key, secret, bodies, 1e9)
            singles = wait_singles(procs, sent["ok"], t0 + 60)
            result["throughput"] = throughput(sent["ok"], singles, t0, cpu(members) - cpu2)
            return result
        sent = trio.run(http_pushes, info["http"], app_key, secret, bodies, rate)
        took = time.time() - t0
        time.sleep(2.0)
        cpu3, ccpu3 = cpu(members), cpu(loaders)
        got = collect(procs)
        result["single"] = _single_figures(rate, took, sent, got["latencies"],
                                           cpu3 - cpu2, ccpu3 - ccpu2)
        result["broadcast"]["received_by_clients"] = len(got["broadcast_at"])
        result["broadcast"]["all_received_s"] = round(max(got["broadcast_at"]) - broadcast_t0,
                                                      4) if got["broadcast_at"] else None
        return result
    finally:
        for p in procs:
            p.stop()
        server.terminate()
        server.wait(timeout=60)


def _connected_figures(members: list[psutil.Process], connected: int, base_rss: int,
                       held: int, cpu_s: float) -> dict[str, Any]:
    """Memory and CPU of the server's processes once ``connected`` devices are idle."""
    return {
        "rss_before_mb": round(base_rss / 2**20, 1), "rss_connected_mb": round(held / 2**20, 1),
        "bytes_per_connection": round((held - base_rss) / max(1, connected)),
        "rss_per_process_mb": [round(p.memory_info().rss / 2**20, 1) for p in members],
        "cpu_connect_s": round(cpu_s, 2),
        "connects_per_cpu_s": round(connected / max(1e-9, cpu_s))}


def _startup_line(server: subprocess.Popen[str]) -> dict[str, Any]:
    """The JSON line ``pushsim server`` prints once it listens (within 60 s)."""
    assert server.stdout is not None  # stdout=PIPE
    if not select_readable([server.stdout], 60):
        raise RuntimeError("pushsim server did not start")
    info: dict[str, Any] = json.loads(server.stdout.readline())
    return info


def _single_figures(rate: float, took: float, sent: dict[str, Any], lat: list[float],
                    cpu_s: float, client_cpu_s: float) -> dict[str, Any]:
    """The single-target step's figures: sent in ``took`` s, ``lat`` received (ms)."""
    return {"rate": rate, "seconds": round(took, 2), "sent": sent["ok"],
            "failed": sent["failed"], "delivered": len(lat),
            "achieved_rate": round(sent["ok"] / took),
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "max_ms": pct(lat, 1.0), "cpu_s": round(cpu_s, 2),
            "client_cpu_s": round(client_cpu_s, 2)}


def _http_broadcast(url: str, app_key: str, secret: str, procs: list[ClientProcess],
                    connected: int) -> dict[str, Any]:
    """One push to ``all`` through the HTTP API; the seconds to its acceptance and until
    every client holds it and the server has recorded every PUBACK (at most 120 s)."""
    import trio

    t0 = time.time()
    answer = trio.run(http_pushes, url, app_key, secret,
                      [{"audience": "all", "message": {"data": {"k": "b"}}}], 1.0, 1)
    accepted = time.time() - t0
    msg_id = answer["msg_ids"][0]
    deadline = t0 + 120
    wait_received(procs, connected, deadline)  # asking costs the server nothing
    while True:  # then until the server has recorded every PUBACK
        st = status(url, app_key, secret, msg_id)
        if st["pending"] == 0 or st["delivered"] >= connected or time.time() > deadline:
            break
        time.sleep(0.05)
    acked = time.time() - t0
    return {"targets": st["targets"], "delivered": st["delivered"],
            "accepted_s": round(accepted, 3), "acknowledged_s": round(acked, 4)}


# amqtt's own command (``amqtt -c FILE``), with the open-files limit raised first.
AMQTT_MAIN = ("import resource, sys\n"
              "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
              "from amqtt.scripts.broker_script import main\n"
              "sys.argv[0] = 'amqtt'\n"
              "main()\n")


class Amqtt(Child):
    """amqtt's broker (the Python MQTT broker) on a free loopback port, anonymous, without
    its logging and $SYS plugins (stopped by its pid)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / f"amqtt-{self.port}.yaml"
        conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
                        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                        "    allow_anonymous: true\n")
        self.proc = subprocess.Popen([sys.executable, "-c", AMQTT_MAIN, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_listening(self.port, 30, "amqtt did not start (pip install -e '.[test]')")


def run_mosquitto_side(n: int, rate: float, seconds: float, ramp: float,
                       workdir: Path, pushes: int = 0) -> dict[str, Any]:
    """Mosquitto (one per PER_BROKER connections) under the same clients and pushes."""
    brokers = [Mosquitto(workdir) for _ in range(-(-n // PER_BROKER))]
    return run_broker_side(brokers, n, rate, seconds, ramp, pushes)


def run_broker_side(brokers: list[Any], n: int, rate: float, seconds: float, ramp: float,
                    pushes: int = 0) -> dict[str, Any]:
    """Plain MQTT brokers (``.port``, ``.proc``, ``.stop()``; stopped at the end) under the
    clients of :func:`run_server_side`: broadcast = a QoS 1 PUBLISH to ``all``; single
    pushes = QoS 1 PUBLISHes to the clients' own topics, at ``rate`` or (``pushes`` > 0)
    that many as fast as one publisher per broker sends them."""
    import trio

    procs: list[ClientProcess] = []
    try:
        members = [psutil.Process(b.proc.pid) for b in brokers]
        time.sleep(0.5)
        base_rss, cpu0 = rss(members), cpu(members)
        clients = [[i, "127.0.0.1", brokers[i % len(brokers)].port,
                    source_ip(i, n), f"c{i}", None, None, [f"d/{i}", "all"]]
                   for i in range(n)]
        procs, connect = start_clients(clients, ramp, timeout=240)
        time.sleep(3.0)
        held, cpu1 = rss(members), cpu(members)
        result: dict[str, Any] = {
            "brokers": len(brokers), "connect": connect,
            "rss_before_mb": round(base_rss / 2**20, 1), "rss_connected_mb": round(held / 2**20, 1),
            "bytes_per_connection": round((held - base_rss) / max(1, connect["connected"])),
            "cpu_connect_s": round(cpu1 - cpu0, 2),
            "connects_per_cpu_s": round(connect["connected"] / max(1e-9, cpu1 - cpu0))}

        def publish(items: list[tuple[int, str]], pace: float, linger: Callable[[], _T]) -> _T:
            return trio.run(publish_to_brokers, brokers, items, pace, linger)

        # Broadcast: one PUBLISH to "all" per broker (each broker holds its share).
        t0 = time.time()
        publish([(j, "all") for j in range(len(brokers))], 1.0,
                lambda: wait_received(procs, connect["connected"], t0 + 120))
        got = collect(procs)
        cpu2 = cpu(members)
        # Broadcast times to 0.1 ms: Mosquitto reaches a few dozen clients in under 5 ms.
        result["broadcast"] = {"received_by_clients": len(got["broadcast_at"]),
                               "all_received_s": round(max(got["broadcast_at"]) - t0, 4)
                               if got["broadcast_at"] else None,
                               "cpu_s": round(cpu2 - cpu1, 2)}
        rng = random.Random(3)
        items = [(i, f"d/{i}") for i in (rng.randrange(n)
                                          for _ in range(pushes or int(rate * seconds)))]
        t0 = time.time()
        if pushes:
            singles = publish(items, 1e9, lambda: wait_singles(procs, len(items), t0 + 60))
            result["throughput"] = throughput(len(items), singles, t0, cpu(members) - cpu2)
            return result
        publish(items, rate / len(brokers), lambda: None)
        took = time.time() - t0
        time.sleep(2.0)
        cpu3 = cpu(members)
        lat = collect(procs)["latencies"]
        result["single"] = {"rate": rate, "seconds": round(took, 2), "sent": len(items),
                            "delivered": len(lat), "p50_ms": pct(lat, 0.5),
                            "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0),
                            "cpu_s": round(cpu3 - cpu2, 2)}
        return result
    finally:
        for p in procs:
            p.stop()
        for b in brokers:
            b.stop()


async def publish_to_brokers(brokers: list[Any], items: list[tuple[int, str]], pace: float,
                             linger: Callable[[], _T]) -> _T:
    """Publish ``items`` (client index, topic) at ``pace`` per broker, each on the broker
    that holds that client (index modulo the brokers); once every PUBACK is in,
    ``linger()`` (in a thread) with the publishers still connected: amqtt drops the
    deliveries still under way of a publisher whose connection ends. Returns what
    ``linger`` did."""
    import trio

    acked: list[Any] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        shares = [[t for i, t in items if i % len(brokers) == j] for j in range(len(brokers))]
        for b, mine in zip(brokers, shares):
            if mine:
                nursery.start_soon(_publisher, b.port, mine, pace, acked, release)
        while len(acked) < sum(1 for mine in shares if mine):
            await trio.sleep(0.01)
        value = await trio.to_thread.run_sync(linger)
        release.set()
    return value


async def _publisher(port: int, topics: list[str], pace: float, acked: list[Any],
                     release: trio.Event) -> None:
    """One QoS 1 publisher on the broker at ``port``: ``topics`` at ``pace``; in ``acked``
    once every PUBACK came, then connected until ``release``."""
    import trio

    from pushsdk.protocol import Connect, Connection, Publish, Role

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = Connection(Role.CLIENT)
    await stream.send_all(conn.send(Connect(client_id=f"pub-{port}", keepalive=0,
                                            clean_session=True)))
    state = {"pending": 0, "done": False}
    async with trio.open_nursery() as inner:
        inner.start_soon(_read_pubacks, stream, conn, state)
        start = trio.current_time()
        for k, topic in enumerate(topics):
            await trio.sleep_until(start + k / pace)
            state["pending"] += 1
            payload = json.dumps({"k": "b" if topic == "all" else "s",
                                  "ts": time.time()}).encode()
            await stream.send_all(conn.send(Publish(topic, payload, qos=1,
                                                    packet_id=k % 65535 + 1)))
        state["done"] = True
        if state["pending"] == 0:
            inner.cancel_scope.cancel()
    acked.append(port)
    await release.wait()
    await stream.aclose()


async def _read_pubacks(stream: trio.abc.Stream, conn: Connection, state: dict[str, Any],
                        ) -> None:
    """Count the publisher's PUBACKs down; return once all are in after the last PUBLISH,
    at EOF, or at anything but a CONNACK or a PUBACK."""
    from pushsdk.protocol import NEED_DATA, ConnAck, PubAck

    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return
            conn.receive_data(data)
        elif isinstance(event, PubAck):
            state["pending"] -= 1
            if state["pending"] == 0 and state["done"]:
                return
        elif not isinstance(event, ConnAck):
            return


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["_clients"]:
        clients_main(json.loads(sys.stdin.readline()))
        return 0
    parser = argparse.ArgumentParser(prog="python -m power_bench.server_scale")
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ramp", type=float, default=3000, help="connects per second")
    parser.add_argument("--push-rate", type=float, default=1000)
    parser.add_argument("--push-seconds", type=float, default=10)
    parser.add_argument("--no-mosquitto", action="store_true")
    parser.add_argument("--out", default="server-scale")
    args = parser.parse_args(argv)
    raise_nofile()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "connections": args.connections,
                              "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="server-scale-") as tmp:
        report["pushsim"] = run_server_side(args.connections, args.workers, args.push_rate,
                                            args.push_seconds, args.ramp, Path(tmp),
                                            (out / "server.log").open("w"))
        print(json.dumps(report["pushsim"], indent=1), flush=True)
        if not args.no_mosquitto:
            report["mosquitto"] = run_mosquitto_side(args.connections, args.push_rate,
                                                     args.push_seconds, args.ramp, Path(tmp))
            print(json.dumps(report["mosquitto"], indent=1), flush=True)
            p, m = report["pushsim"], report["mosquitto"]
            report["ratios"] = {
                "memory_per_connection": round(p["bytes_per_connection"]
                                               / max(1, m["bytes_per_connection"]), 1),
                **{f"cpu_{phase}": round(p[k] / m[k], 1) if m[k] else None
                   for phase, k in (("connect", "cpu_connect_s"),)},
                "cpu_broadcast": round(p["broadcast"]["cpu_s"] / m["broadcast"]["cpu_s"], 1)
                if m["broadcast"]["cpu_s"] else None,
                "cpu_single": round(p["single"]["cpu_s"] / m["single"]["cpu_s"], 1)
                if m["single"]["cpu_s"] else None}
    (out / "server_scale.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report.get("ratios", {})), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
