"""What each flood costs the other devices: push latency to a victim, idle and under floods.

``python -m power_bench.server_floods [--seconds S] [--rate PER_S] [--attacker-nice N]
[--json FILE]``

A reference server process (``python -m simulator.server``, default limits, a database
file) serves a *victim* device: a plain MQTT client (the project's codec over trio) that
receives pushes sent to it at ``--rate`` per second over a kept-alive HTTP connection, each
stamped with its send time (same machine clock). Latency = receipt − send. First idle for S
seconds, then each flood for S seconds, from an *attacker* process (blocking sockets, as
fast as it can, on another loopback address):

- ``registrations``: ``POST /v1/devices`` with new device ids, from one address;
- ``receipts``: receipts on the rcpt topic of one registered device (reconnecting when the
  server closes it);
- ``probes``: probe connections (``<registration_id>/probe``) of one device, held open;
- ``connections``: TCP connections from one address, held open;
- ``requests``: pipelined ``GET /healthz`` on one keep-alive connection (then another);
- ``bad_connects``: CONNECTs with a wrong token (each refusal is logged: a log flood).

The attacker runs at ``--attacker-nice`` (default 19): on the internet it is another
machine, whose CPU is not the server's; on this one it would otherwise take a core's share
from the server and the measuring client alike (its threads run flat out), and the
victim's latency would measure the kernel's scheduler as much as the server.
``--attacker-nice 0`` measures the shared machine as it is. Phases last 20 s by default,
longer than the server's request timeout (10 s, spread over 2.5 s more), so that the
end of every held connection falls inside its phase.

Reported per phase: the victim's p50/p99/max latency and the ratio to idle (the goal: within
2x), the server's CPU seconds over the phase and the time it waited for a CPU (Linux
``schedstat``), what the attacker sent, the server counters that went up, and how much the
server's log grew. Run under the benchmark lock; note the load average (in the report).
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from simulator.server_child import ServerChild, basic_auth, http_request, metrics

FLOODS = ("registrations", "receipts", "probes", "connections", "requests", "bad_connects")
ATTACKER_ADDRESS = "127.0.0.2"


# --- the attacker (a child process) --------------------------------------------------------

def _mqtt_connect(client_id: str, username: str, password: str) -> bytes:
    from pushsdk.protocol import Connect, Connection, Role

    return Connection(Role.CLIENT).send(Connect(client_id=client_id, username=username,
                                                password=password.encode(), keepalive=0,
                                                clean_session=True))


def _receipt(topic: str) -> bytes:
    from pushsdk.protocol import ConnAck, Connect, Connection, Publish, Role

    codec = Connection(Role.CLIENT)
    codec.send(Connect(client_id="x"))
    codec.receive_data(b"\x20\x02\x00\x00")
    assert isinstance(codec.next_event(), ConnAck)
    return codec.send(Publish(topic, b'{"msg_id": "flood", "event": "opened"}', qos=0))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                    source_address=(ATTACKER_ADDRESS, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _flood(kind: str, spec: dict[str, Any], stop: Any, mine: list[int]) -> None:
    """Run one flood until ``stop`` is set; ``mine`` = [sent, errors] of this thread."""
    held: list[socket.socket] = []
    try:
        while not stop.is_set():
            try:
                mine[0] += _flood_step(kind, spec, held)
            except OSError:
                mine[1] += 1
                time.sleep(0.01)
    finally:
        for sock in held:
            sock.close()


def _flood_step(kind: str, spec: dict[str, Any], held: list[socket.socket]) -> int:
    http_port, mqtt_port = spec["http_port"], spec["mqtt_port"]
    if kind in ("registrations", "requests"):
        with _connect(http_port) as sock:
            if kind == "registrations":
                body = json.dumps({"device_id": f"flood-{time.monotonic_ns()}",
                                   "platform": "android"}).encode()
                request = (f"POST /v1/devices HTTP/1.1\r\nHost: x\r\nX-App-Key: "
                           f"{spec['app_key']}\r\nContent-Length: {len(body)}\r\n\r\n"
                           ).encode() + body
            else:
                request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            last = request.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n", 1)
            sock.sendall(request * 49 + last)
            while sock.recv(65536):  # until the server closes after the last answer
                pass
            return 50
    if kind == "receipts":
        with _connect(mqtt_port) as sock:
            sock.sendall(_mqtt_connect(spec["rid"], spec["app_key"], spec["token"]))
            sock.recv(4)
            burst = spec["receipt"] * 200
            sent = 0
            while True:
                sock.sendall(burst)
                sent += 200
                if sent >= 20_000:
                    return sent
    if kind in ("probes", "connections"):
        if len(held) >= 3000:
            time.sleep(0.1)
            return 0
        sock = _connect(http_port if kind == "connections" else mqtt_port)
        if kind == "probes":
            sock.sendall(_mqtt_connect(spec["rid"] + "/probe", spec["app_key"], spec["token"]))
        held.append(sock)
        return 1
    with _connect(mqtt_port) as sock:  # bad_connects
        try:
            sock.sendall(_mqtt_connect(spec["rid"], spec["app_key"], "wrong-token"))
            sock.recv(4)
        except ConnectionResetError:  # refused unread: on to the next at once
            pass
        return 1


def _attacker(kind: str, spec: dict[str, Any], stop: Any, counts: Any) -> None:
    os.nice(spec["nice"])
    # Each thread counts on its own: ``counts[0] += n`` from 4 threads loses updates (a get
    # and a set, each under the array's lock, not one step), so the sums are taken at the end.
    mine = [[0, 0] for _ in range(4)]
    threads = [threading.Thread(target=_flood, args=(kind, spec, stop, own), daemon=True)
               for own in mine]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts[0], counts[1] = sum(own[0] for own in mine), sum(own[1] for own in mine)


# --- the victim ----------------------------------------------------------------------------

def measure(server: ServerChild, app: dict[str, str], victim: dict[str, Any],
            seconds: float, rate: float, flood: Any = None) -> dict[str, Any]:
    """Push to the victim at ``rate`` for ``seconds``; its latencies (ms). The victim and
    the app server connect first, then ``flood()`` (if given) starts the flood: they are
    devices and servers already connected when it begins."""
    import trio

    return trio.run(_measure, server, app, victim, seconds, rate, flood)


class _Victim:
    """The device whose push latency is measured: its own MQTT connection, subscribed QoS 1
    to its inbox; each push's latency runs from the monotonic time in its data."""

    def __init__(self, stream: Any) -> None:
        from pushsdk.protocol import Connection, Role

        self.stream = stream
        self.codec = Connection(Role.CLIENT)
        self.latencies: list[float] = []

    @classmethod
    async def connect(cls, port: int, app: dict[str, str], victim: dict[str, Any]) -> _Victim:
        import trio

        from pushsdk.protocol import ConnAck, Connect, SubAck, Subscribe

        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await self.stream.send_all(self.codec.send(Connect(
            client_id=victim["registration_id"], username=app["app_key"], keepalive=0,
            password=victim["token"].encode())))
        assert isinstance(await self._next_event(), ConnAck)
        await self.stream.send_all(self.codec.send(Subscribe(1, ((victim["inbox"], 1),))))
        assert isinstance(await self._next_event(), SubAck)
        return self

    async def _next_event(self) -> Any:
        from pushsdk.protocol import NEED_DATA

        while (event := self.codec.next_event()) is NEED_DATA:
            self.codec.receive_data(await self.stream.receive_some(65536))
        return event

    async def receive(self) -> None:
        """Time and acknowledge every push, until cancelled."""
        from pushsdk.protocol import PubAck, Publish

        while True:
            event = await self._next_event()
            if isinstance(event, Publish):
                sent = json.loads(event.payload)["message"]["data"]
                self.latencies.append(time.monotonic() - sent)
                if event.packet_id is None:
                    raise RuntimeError("a QoS 0 PUBLISH on a QoS 1 subscription")
                await self.stream.send_all(self.codec.send(PubAck(event.packet_id)))


async def _measure(server: ServerChild, app: dict[str, str], victim: dict[str, Any],
                   seconds: float, rate: float, flood: Any) -> dict[str, Any]:
    import trio

    device = await _Victim.connect(server.mqtt_port, app, victim)
    latencies = device.latencies
    headers = {**basic_auth(app), "Content-Type": "application/json"}
    body = {"audience": {"registration_id": [victim["registration_id"]]}}
    pusher = _Pusher(server.http_port, headers)

    def push() -> None:
        pusher.post(json.dumps({**body, "message": {"data": time.monotonic()}}).encode())

    pusher.connect()
    if flood is not None:
        flood()
        await trio.sleep(1.0)  # the flood is on

    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.receive)
        start = trio.current_time()
        n = int(seconds * rate)
        for k in range(n):
            await trio.sleep_until(start + k / rate)
            await trio.to_thread.run_sync(push)
        with trio.move_on_after(5):
            while len(latencies) < n:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await device.stream.aclose()
    ms = sorted(x * 1000 for x in latencies)
    # When in the phase the slowest pushes were received (pushes go out every 1/rate s).
    slowest = sorted(((x * 1000, k / rate) for k, x in enumerate(latencies)), reverse=True)[:5]

    def pct(p: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2) if ms else None

    return {"pushes": n, "received": len(ms), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "slowest_ms_at_s": [[round(x, 2), round(t, 2)] for x, t in slowest]}


class _Pusher:
    """An app server's kept-alive connection for ``POST /v1/push`` (a new one if it ends)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, headers
        self.conn: http.client.HTTPConnection | None = None

    def connect(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.conn.connect()

    def post(self, body: bytes) -> int:
        for _ in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", "/v1/push", body=body, headers=self.headers)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return 0


def _register(server: ServerChild, app: dict[str, str], device_id: str) -> dict[str, Any]:
    status, answer = http_request(server.http_port, "POST", "/v1/devices",
                                  {"device_id": device_id, "platform": "android"},
                                  {"X-App-Key": app["app_key"]})
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


def run(seconds: float, rate: float, floods: tuple[str, ...],
        attacker_nice: int = 19) -> dict[str, Any]:
    report: dict[str, Any] = {"load_average_start": os.getloadavg(),
                              "attacker_nice": attacker_nice, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="server-floods-") as tmp:
        log = Path(tmp) / "server.log"
        server = ServerChild(Path(tmp) / "floods.db", log=log, limits=(),
                             extra=("--log-level", "info"))  # the default limits
        try:
            app = server.create_app("floods")
            victim = _register(server, app, "victim")
            flooder = _register(server, app, "flooder")
            spec = {"http_port": server.http_port, "mqtt_port": server.mqtt_port,
                    "app_key": app["app_key"], "rid": flooder["registration_id"],
                    "token": flooder["token"], "nice": attacker_nice,
                    "receipt": _receipt(f"rcpt/{app['app_key']}/{flooder['registration_id']}")}
            cpu_before = _cpu_seconds(server.proc.pid)
            idle = measure(server, app, victim, seconds, rate)
            idle["server_cpu_s"] = round(_cpu_seconds(server.proc.pid) - cpu_before, 2)
            report["phases"]["idle"] = idle
            print(f"idle: {idle}", flush=True)
            for kind in floods:
                report["phases"][kind] = _phase(kind, spec, server, app, victim, seconds,
                                                rate, log, idle)
                print(f"{kind}: {report['phases'][kind]}", flush=True)
        finally:
            server.terminate()
    report["load_average_end"] = os.getloadavg()
    return report


def _phase(kind: str, spec: dict[str, Any], server: ServerChild, app: dict[str, str],
           victim: dict[str, Any], seconds: float, rate: float, log: Path,
           idle: dict[str, Any]) -> dict[str, Any]:
    before, log_before = metrics(server.http_port), log.stat().st_size
    cpu_before, wait_before = _cpu_seconds(server.proc.pid), _cpu_wait(server.proc.pid)
    stop = multiprocessing.Event()
    counts = multiprocessing.Array("q", 2)
    attacker = multiprocessing.Process(target=_attacker, args=(kind, spec, stop, counts))
    result = measure(server, app, victim, seconds, rate, attacker.start)
    server_cpu = _cpu_seconds(server.proc.pid) - cpu_before
    server_wait = _cpu_wait(server.proc.pid) - wait_before
    stop.set()
    attacker.join(30)
    if attacker.is_alive():
        attacker.kill()
    after = metrics(server.http_port)
    time.sleep(1.0)  # let the server settle before the next phase
    grew = {name.removeprefix("pushsim_"): after[name] - before.get(name, 0)
            for name in after if name.endswith("_total") and after[name] > before.get(name, 0)
            and "latency" not in name}
    return {**result, "p50_ratio": _ratio(result["p50_ms"], idle["p50_ms"]),
            "p99_ratio": _ratio(result["p99_ms"], idle["p99_ms"]),
            "server_cpu_s": round(server_cpu, 2), "server_cpu_wait_s": round(server_wait, 2),
            "attacker_sent": counts[0], "attacker_errors": counts[1],
            "log_bytes": log.stat().st_size - log_before, "counters": grew}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_wait(pid: int) -> float:
    """Seconds process ``pid``'s main thread has waited for a CPU while runnable so far
    (Linux ``/proc/PID/schedstat``, second field, in nanoseconds)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m power_bench.server_floods",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="pushes per second")
    parser.add_argument("--flood", action="append", choices=FLOODS)
    parser.add_argument("--attacker-nice", type=int, default=19, metavar="N",
                        help="the attacker's niceness (default %(default)s; 0: as the rest)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args.seconds, args.rate, tuple(args.flood or FLOODS), args.attacker_nice)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
