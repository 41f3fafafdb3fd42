"""Scale figures of the real-socket fleet (a benchmark script, not a test).

::

    python -m power_bench.fleet_scale [--quick] [--out DIR] [--sizes 5000,10000,19000]
                                      [--paho-n N] [--big N] [--budget SECONDS]

Measures, on this machine, against real Mosquitto instances on loopback:

1. **Idle memory per connection and connect rate, SDK alone vs paho-mqtt.** N clients
   connect (paced at a start rate), subscribe QoS 1 to their own topic and sit idle; the
   RSS delta of the process over N is the memory per idle connection. The SDK runs N
   ``PushClient``s in one ``trio.run`` (``nursery.start_soon(client.run)``); paho runs N
   ``paho.mqtt.client.Client``s driven by one selector loop in one thread
   (``loop_read``/``loop_write``/``loop_misc`` — a thread per client is not viable at this
   scale). Each side runs in its own fresh process against a fresh broker.
2. **``pushsim fleet`` at growing N** (all the fleet's measuring included), with
   ``--source-ips`` and ``--workers``, pushes on.
3. **The largest N**: more connections than one broker process can hold here (each process,
   Mosquitto included, is capped at the hard RLIMIT_NOFILE) — so several brokers, one
   ``pushsim fleet --shard i/N`` per broker, then ``pushsim merge``.

Writes ``fleet_scale.json`` and prints a Markdown table. Every step has a time limit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from power_bench.children import (
    MOSQUITTO, Child, Mosquitto, raise_nofile, select_readable, source_ips,
)
from power_bench.sdk_vs_paho import paho_side, sdk_side



# --- helpers ------------------------------------------------------------------------------


class ReferenceServer(Child):
    """``pushsim server --db :memory:`` on free ports (stopped by its pid)."""

    def __init__(self) -> None:
        self.admin_token = "fleet-scale"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "server", "--db", ":memory:", "--http-port",
             "0", "--mqtt-port", "0", "--admin-token", self.admin_token, "--push-rate", "5000",
             "--log-level", "error"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, preexec_fn=raise_nofile)
        try:
            stdout = self.proc.stdout
            assert stdout is not None  # stdout=PIPE
            if not select_readable([stdout], 30):
                raise RuntimeError("pushsim server did not start")
            self.http = json.loads(stdout.readline())["http"]
        except BaseException:
            self.stop()
            raise


def _child(kind: str, n: int, port: int, rate: float, timeout: float) -> dict[str, Any]:
    """Run one idle-connection measurement in a fresh process; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "power_bench.fleet_scale", f"_{kind}", str(n), str(port),
         str(rate), str(timeout)], capture_output=True, text=True, timeout=timeout + 60)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["exit %d" % done.returncode]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- idle connections: the SDK alone, and paho-mqtt ---------------------------------------

def sdk_idle(n: int, port: int, rate: float, timeout: float) -> dict[str, Any]:
    """N PushClients in one trio.run: connect, subscribe, idle (:func:`sdk_side`, MQTT
    3.1.1). Prints nothing itself."""
    return _idle_figures(n, sdk_side(n, port, rate, timeout=timeout))


def paho_idle(n: int, port: int, rate: float, timeout: float) -> dict[str, Any]:
    """N paho clients driven by one selector loop: connect, subscribe QoS 1, idle
    (:func:`paho_side`, MQTT 3.1.1)."""
    return _idle_figures(n, paho_side(n, port, rate, timeout=timeout))


def _idle_figures(n: int, side: dict[str, Any]) -> dict[str, Any]:
    got, before, after = side["connected"], side["rss_before"], side["rss_after"]
    return {"n": n, "connected": got, "seconds_to_connect": side["seconds"],
            "connect_rate_per_s": got / side["seconds"],
            "connect_attempts": side["connect_attempts"], "rss_before": before,
            "rss_after": after, "bytes_per_connection": (after - before) / max(1, got)}


# --- pushsim fleet ---------------------------------------------------------------------------

def fleet_run(args: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """``pushsim fleet ARGS --out OUT``; the headline figures of its fleet.json."""
    command = [sys.executable, "-m", "simulator", "fleet", *args, "--out", str(out),
               "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):  # 1: a gate missed, the results are there
        return {"command": _shell(args), "error": done.stderr.strip()}
    return {"command": _shell(args), "exit": done.returncode, "wall_s": wall,
            **_headline(out)}


def _headline(out: Path) -> dict[str, Any]:
    fleet = json.loads((out / "fleet.json").read_text())
    connect, pushes = fleet["connect"], fleet["pushes"]
    workers = [p for p in fleet["processes"] if p.get("handsets")]
    return {
        "handsets": connect["handsets"], "connected": connect["handsets_connected"],
        "connect_failures": connect["connect_failures"],
        "connect_rate_per_s": connect["connect_rate_per_s"],
        "peak_connects_per_s": connect["peak_connects_per_s"],
        "handshake_p50_s": connect["handshake_s"]["p50"],
        "handshake_p99_s": connect["handshake_s"]["p99"],
        "pushes_sent": pushes["sent"], "delivery_ratio": pushes["delivery_ratio"],
        "lost": pushes["lost"], "duplicates": pushes["duplicates"],
        "send_lag_p99_s": pushes["send_lag_s"]["p99"], "warnings": fleet["warnings"],
        "latency_p50_s": pushes["latency_s"]["p50"], "latency_p99_s": pushes["latency_s"]["p99"],
        "rss_peak_mb": sum(p["rss_peak_mb"] for p in workers),
        "memory_per_connection_bytes": [p.get("memory_per_connection_bytes") for p in workers],
        "cpu_percent_avg": [p.get("cpu_percent_avg") for p in workers],
    }


def _shell(args: list[str]) -> str:
    return "pushsim fleet " + " ".join(args)


def fleet_args(url: str, n: int, *, ramp: float, workers: int, push_rate: float,
               hold: float, shard: str | None = None, admin_token: str | None = None,
               run_id: str | None = None) -> list[str]:
    duration = n / ramp + hold
    target = (["--server", url, "--admin-token", admin_token] if admin_token
              else ["--broker", url])
    args = [*target, "--handsets", str(n), "--duration", f"{duration:.0f}",
            "--ramp", f"{ramp:g}", "--push-rate", f"{push_rate:g}", "--workers", str(workers),
            "--drain", "15"]
    addresses = max(2, len(source_ips(n)))  # at least two, to show the spreading
    args += ["--source-ips", f"127.0.0.2-127.0.0.{1 + addresses}"]
    if shard:
        args += ["--shard", shard]
    if run_id:
        args += ["--run-id", run_id]
    return args


# --- one process, every measurement on; the Dask path against local --workers -------------------

def memory_step(n: int, work: Path, out: Path) -> dict[str, Any]:
    """``pushsim fleet`` holding ``n`` handsets in one process with every measurement on
    (HDR histograms, per-second counts, ledgers, radio meters, connect events, /metrics)."""
    broker = Mosquitto(work)
    try:
        cli = fleet_args(f"mqtt://127.0.0.1:{broker.port}", n, ramp=2000.0, workers=1,
                         push_rate=200, hold=15)
        cli += ["--metrics-port", "0"]
        result = fleet_run(cli, out / f"memory-{n}", timeout=n / 2000 + 180)
    finally:
        broker.stop()
    return result


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes on loopback (stopped by their pids);
    every listener on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: int) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        file = workdir / "scheduler.json"
        loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
        self.procs = [subprocess.Popen([dask, "scheduler", "--port", "0", *loopback,
                                        "--scheduler-file", str(file)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       cwd=workdir)]
        try:
            deadline = time.monotonic() + 60
            while not (file.exists() and file.stat().st_size):
                if time.monotonic() > deadline:
                    raise RuntimeError("dask scheduler did not start")
                time.sleep(0.1)
            self.address = json.loads(file.read_text())["address"]
            for n in range(workers):
                self.procs.append(subprocess.Popen(
                    [dask, "worker", "--scheduler-file", str(file), *loopback, "--no-nanny",
                     "--nthreads", "1", "--local-directory", str(workdir / f"w{n}")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
                    preexec_fn=raise_nofile))
            from distributed import Client
            with Client(self.address, timeout=30, set_as_default=False) as client:
                client.wait_for_workers(workers, timeout=60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def dask_step(n: int, work: Path, out: Path, repeats: int = 2) -> dict[str, Any]:
    """The same fleet with ``--workers 2`` and with ``--cluster`` (two Dask workers on this
    machine): wall time of the whole command, alternating, ``repeats`` times each."""
    cluster = DaskCluster(work, workers=2)
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "dask": []}
    try:
        for r in range(repeats):
            for kind in ("local", "dask"):
                broker = Mosquitto(work)
                try:
                    cli = fleet_args(f"mqtt://127.0.0.1:{broker.port}", n, ramp=2000.0,
                                     workers=2, push_rate=200, hold=10)
                    if kind == "dask":
                        cli = [a for a in cli] + ["--cluster", cluster.address]
                    runs[kind].append(fleet_run(cli, out / f"dask-{kind}-{r}",
                                                timeout=n / 2000 + 180))
                finally:
                    broker.stop()
    finally:
        cluster.stop()
    walls = {kind: [run.get("wall_s") for run in results] for kind, results in runs.items()}
    best = {kind: min((w for w in values if w), default=None) for kind, values in walls.items()}
    ratio = best["dask"] / best["local"] if best["dask"] and best["local"] else None
    return {"n": n, "wall_s": walls, "best_wall_s": best, "dask_over_local": ratio,
            "runs": runs}


# --- main ------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "mosquitto": subprocess.run([MOSQUITTO, "-h"], capture_output=True,
                                        text=True).stdout.splitlines()[0]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_sdk", "_paho"):
        n, port, rate, timeout = int(argv[1]), int(argv[2]), float(argv[3]), float(argv[4])
        result = (sdk_idle if argv[0] == "_sdk" else paho_idle)(n, port, rate, timeout)
        print(json.dumps(result))
        return 0
    args = _parser().parse_args(argv)
    if args.quick:
        args.sizes, args.idle_n, args.big, args.server_n = "2000", 2000, 0, 1000
        args.memory_n, args.dask_n = 2000, 1000
    steps = set(args.steps.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "load_at_start": os.getloadavg(),
                              "idle": {}, "server": None, "fleet": [], "big": None,
                              "memory": None, "dask": None}
    print(json.dumps(report["machine"]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))

    for kind in ("sdk", "paho") if "idle" in steps else ():
        report["idle"][kind] = result = idle_step(kind, args.idle_n, args.rate, work)
        print(kind, json.dumps(result), flush=True)
    if args.server_n and "server" in steps:
        report["server"] = server_step(args.server_n, out)
        print(json.dumps(report["server"]), flush=True)
    for n in (int(s) for s in args.sizes.split(",") if s and "sizes" in steps):
        report["fleet"].append(result := size_step(n, work, out))
        print(json.dumps(result), flush=True)
    if args.memory_n and "memory" in steps:
        report["memory"] = memory_step(args.memory_n, work, out)
        print(json.dumps(report["memory"]), flush=True)
    if args.dask_n and "dask" in steps:
        report["dask"] = dask_step(args.dask_n, work, out)
        print(json.dumps({k: v for k, v in report["dask"].items() if k != "runs"}), flush=True)
    if args.big and "big" in steps:
        report["big"] = big_step(args.big, work, out)
        print(json.dumps(report["big"]), flush=True)

    report["load_at_end"] = os.getloadavg()
    (out / "fleet_scale.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m power_bench.fleet_scale")
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--out", default="fleet-scale-out")
    parser.add_argument("--sizes", default="5000,10000,19000",
                        help="pushsim fleet sizes against one broker")
    parser.add_argument("--idle-n", type=int, default=10000,
                        help="clients for the SDK vs paho idle comparison")
    parser.add_argument("--big", type=int, default=50000,
                        help="the largest fleet: over several brokers, sharded (0 = skip)")
    parser.add_argument("--rate", type=float, default=5000, help="start rate, per second")
    parser.add_argument("--server-n", type=int, default=5000,
                        help="handsets against the reference server (0 = skip)")
    parser.add_argument("--memory-n", type=int, default=10000,
                        help="handsets in one fleet process, every measurement on (0 = skip)")
    parser.add_argument("--dask-n", type=int, default=4000,
                        help="handsets of the --cluster vs --workers 2 comparison (0 = skip)")
    parser.add_argument("--steps", default="idle,server,sizes,big,memory,dask",
                        help="which steps to run (comma-separated)")
    return parser


def idle_step(kind: str, n: int, rate: float, work: Path) -> dict[str, Any]:
    """``n`` idle clients of ``kind`` (``sdk`` or ``paho``) in a child against a fresh
    Mosquitto, started at ``rate``; the child's figures and the broker's RSS."""
    broker = Mosquitto(work)
    try:
        result = _child(kind, n, broker.port, rate, timeout=120)
        result["broker_rss_mb"] = round(broker.rss() / 2**20, 1)
    finally:
        broker.stop()
    return result


def server_step(n: int, out: Path) -> dict[str, Any]:
    """``pushsim fleet`` of ``n`` handsets against a fresh reference server."""
    server = ReferenceServer()
    try:
        cli = fleet_args(server.http, n, ramp=1000.0, workers=2, push_rate=100, hold=20,
                         admin_token=server.admin_token)
        result = fleet_run(cli, out / f"server-{n}", timeout=n / 1000 + 180)
        result["server_rss_mb"] = round(server.rss() / 2**20, 1)
    finally:
        server.stop()
    return result


def size_step(n: int, work: Path, out: Path) -> dict[str, Any]:
    """``pushsim fleet`` of ``n`` handsets against one fresh Mosquitto (ramp and workers
    by size)."""
    broker = Mosquitto(work)
    try:
        workers = 1 if n <= 5000 else 2
        ramp = 3000.0 if n <= 5000 else 2000.0 if n <= 10000 else 1500.0
        cli = fleet_args(f"mqtt://127.0.0.1:{broker.port}", n, ramp=ramp, workers=workers,
                         push_rate=500, hold=20)
        return fleet_run(cli, out / f"fleet-{n}", timeout=n / ramp + 180)
    finally:
        broker.stop()


def big_step(n: int, work: Path, out: Path) -> dict[str, Any]:
    """The largest fleet: ``n`` handsets as shards of at most 18,000, one ``pushsim fleet``
    process and one Mosquitto each, run at once, then merged (``pushsim merge``)."""
    shards = -(-n // 18000)
    brokers = [Mosquitto(work) for _ in range(shards)]
    try:
        ramp = 1200.0
        runs = []
        for i, broker in enumerate(brokers):
            cli = fleet_args(f"mqtt://127.0.0.1:{broker.port}", n, ramp=ramp, workers=1,
                             push_rate=300, hold=30, shard=f"{i}/{shards}",
                             run_id=f"big{os.getpid()}")
            command = [sys.executable, "-m", "simulator", "fleet", *cli,
                       "--out", str(out / f"big-{i}"), "--no-progress"]
            runs.append((cli, subprocess.Popen(command, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)))
        started = time.monotonic()
        errors = []
        for _cli, proc in runs:
            _, stderr = proc.communicate(timeout=n / ramp + 300)
            if proc.returncode != 0:
                errors.append(stderr.strip())
        wall = time.monotonic() - started
        broker_rss = [round(b.rss() / 2**20, 1) for b in brokers]
    finally:
        for broker in brokers:
            broker.stop()
    if errors:
        return {"error": errors}
    merge = subprocess.run(
        [sys.executable, "-m", "simulator", "merge",
         *[str(out / f"big-{i}") for i in range(shards)], "--out", str(out / "big")],
        capture_output=True, text=True, timeout=600)
    return {"commands": [_shell(cli) for cli, _ in runs], "wall_s": wall, "brokers": shards,
            "broker_rss_mb": broker_rss, "merge_ok": merge.returncode == 0,
            **_headline(out / "big")}

if __name__ == "__main__":
    sys.exit(main())
