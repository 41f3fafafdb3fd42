"""Reconnect storm: kill -9 the server under N connected handsets and watch them come back.

``python -m power_bench.storm --handsets 20000 --workers 2 --server-workers 2`` runs, for
each combination of backoff (full jitter, the SDK's default, vs. a no-jitter baseline
where every handset retries on the same schedule 1, 2, 4 ... s) and admission (the
server's ``--connect-rate`` limit on or off):

1. ``pushsim server`` on a database file (``--server-workers S`` > 1: ``pushsim server
   --workers S``, S gateway processes on the same ports, so no one process needs a
   descriptor per handset: the hard open-files limit is per process); N handsets (real
   ``PushClient`` s, plain TCP, spread over 127.0.0.x source addresses) in ``--workers``
   processes register and connect;
2. once all are connected every server process (the supervisor and each worker's process
   group) is SIGKILLed and the server restarted at once on the same file and ports
   (registrations survive, so the storm is pure MQTT CONNECTs);
3. every CONNACK 0 after the kill is time-stamped; reported: the peak connect rate (most
   CONNACKs in any 1 s window), the time until every handset is back, admission refusals
   (CONNACK 3, or MQTT 5.0's 0x9F/0x97/0x89), the peak RSS of each server process and of
   each client worker, and the load average when the run started.

Each run is bounded as a whole (``--run-timeout``: ramp-up and storm together). The CI
variant is ``tests/reliability/test_storm.py``.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from pushsdk import ClientState, PushClient, ServerConfig, parse_strategy
from pushsdk.backoff import Backoff
from pushsdk.errors import ServerUnavailable
from pushsdk.transport import TcpConnector

from power_bench.children import raise_nofile
from simulator.server_child import LOOPBACK_LIMITS, ServerChild, free_port

__all__ = ["NoJitterBackoff", "StormServer", "run_storm", "peak_rate", "main"]


class NoJitterBackoff(Backoff):
    """The baseline: the full ceiling every time, so a fleet that lost its server at the
    same moment retries in lock-step (what plain exponential backoff, e.g. Paho's, does)."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.ceiling(attempt)


def peak_rate(times: list[float], window: float = 1.0) -> int:
    """Most events in any window of ``window`` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


class StormServer(ServerChild):
    """The server under test, one process or ``--workers N``, killed the hard way.

    ``pushsim server --workers N`` starts its gateway processes in sessions of their own
    (so a terminal's Ctrl-C reaches only the supervisor); a crash of the whole server is
    therefore SIGKILL to the supervisor *and* to every worker's process group, all at once.
    """

    def processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_each(self) -> list[int]:
        """Resident set size of the supervisor, then of each worker (bytes)."""
        sizes = []
        for proc in self.processes():
            try:
                sizes.append(proc.memory_info().rss)
            except psutil.Error:
                sizes.append(0)
        return sizes

    def rss(self) -> int:
        return sum(self.rss_each())

    def kill(self) -> None:
        # Workers first: a supervisor killed alone would let them see EOF and stop cleanly.
        for proc in self.processes()[1:]:
            try:
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        super().kill()


# --- a worker process -------------------------------------------------------------------------

def _worker(first: int, count: int, http_url: str, app_key: str, sources: list[str],
            jitter: bool, ramp: float, seed: int, pipe: Any) -> None:
    raise_nofile()
    trio.run(_worker_main, first, count, http_url, app_key, sources, jitter, ramp, seed, pipe)


async def _worker_main(first: int, count: int, http_url: str, app_key: str,
                       sources: list[str], jitter: bool, ramp: float, seed: int,
                       pipe: Any) -> None:
    connected_at: list[float] = []
    refused = [0]

    def on_state(old: ClientState, new: ClientState, reason: str) -> None:
        if new is ClientState.CONNECTED:
            connected_at.append(time.time())
        elif isinstance(getattr(reason, "error", None), ServerUnavailable):
            refused[0] += 1  # CONNACK 3 (3.1.1) or 0x9F/0x97/0x89 (5.0): the admission limit

    policy = NoJitterBackoff if jitter is False else Backoff
    backoff = policy(initial=1.0, multiplier=2.0, max_delay=32.0, reset_after=5.0)
    rng = random.Random(seed)  # one per process, shared (the fleet's way; 2.5 KB each saved)
    connectors = [TcpConnector(source_ip=ip) for ip in sources]
    strategy = parse_strategy("fixed:300")
    clients = [PushClient(ServerConfig(server_url=http_url, app_key=app_key,
                                       device_id=f"storm-{first + i}"),
                          connector=connectors[i % len(connectors)], rng=rng,
                          strategy=strategy, backoff=backoff, on_state_change=on_state,
                          connect_timeout=30.0, http_timeout=60.0)
               for i in range(count)]
    peak_rss = 0
    async with trio.open_nursery() as nursery:
        for i, client in enumerate(clients):
            nursery.start_soon(client.run)
            if i % 50 == 49:
                await trio.sleep(50 / ramp)
        for client in clients:
            await client.wait_connected()
        await trio.to_thread.run_sync(pipe.send, ("ready", len(connected_at)))
        _, killed_at, timeout = await trio.to_thread.run_sync(pipe.recv)  # wall clock of the kill
        refused[0] = 0
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            peak_rss = max(peak_rss, psutil.Process().memory_info().rss)
            back = sum(1 for c in clients if c.state is ClientState.CONNECTED)
            if back == count and len([t for t in connected_at if t > killed_at]) >= count:
                break
            await trio.sleep(0.25)
        after = [t for t in connected_at if t > killed_at]
        pipe.send(("done", after, refused[0], peak_rss,
                   sum(c.statistics().connect_attempts for c in clients)))
        nursery.cancel_scope.cancel()


# --- one run ------------------------------------------------------------------------------------

def _start_workers(handsets: int, workers: int, url: str, app_key: str, ips: list[str],
                   jitter: bool, ramp: float, seed: int, procs: list[Any], pipes: list[Any],
                   ) -> None:
    """Start ``workers`` spawned processes holding ``handsets`` between them (worker ``w`` a
    contiguous share, seed ``seed + w``, ``ramp / workers`` connects per second), each
    appended to ``procs`` as it starts (for the caller to stop whatever happens) and the
    parent end of its pipe to ``pipes``."""
    ctx = multiprocessing.get_context("spawn")
    per = -(-handsets // workers)
    for w in range(workers):
        first, count = w * per, min(per, handsets - w * per)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, daemon=True, args=(
            first, count, url, app_key, ips, jitter, ramp / workers, seed + w, child))
        proc.start()
        procs.append(proc)
        pipes.append(parent)


def run_storm(handsets: int, *, workers: int, jitter: bool, connect_rate: float | None,
              workdir: Path, sources: int = 8, ramp: float = 400.0,
              run_timeout: float = 240.0, seed: int = 1,
              server_workers: int = 1) -> dict[str, Any]:
    """One storm (see the module docstring); a dict of figures.

    ``connect_rate`` is the admission limit of the whole server: with ``server_workers``
    processes (each has its own token bucket) each gets ``connect_rate / server_workers``.
    The whole run (ramp-up and storm) is bounded by ``run_timeout`` seconds.
    """
    raise_nofile()
    load_at_start = os.getloadavg()
    db = workdir / f"storm-{handsets}-{jitter}-{connect_rate}.db"
    http_port, mqtt_port = free_port(), free_port()
    extra: tuple[str, ...] = ("--push-rate", "10000")
    if server_workers > 1:
        extra += ("--workers", str(server_workers))
    if connect_rate is not None:
        extra += ("--connect-rate", str(connect_rate / server_workers))
    log = workdir / "server.log"
    started = time.monotonic()
    run_deadline = started + run_timeout
    # The same ports, options and log after the kill: the handsets come back to it.
    start_server = functools.partial(StormServer, db, http_port=http_port, mqtt_port=mqtt_port,
                                     limits=LOOPBACK_LIMITS, extra=extra, log=log)
    server = start_server()
    procs: list[Any] = []
    pipes: list[Any] = []
    try:
        app = server.create_app("storm")
        ips = [f"127.0.0.{2 + i}" for i in range(sources)]
        _start_workers(handsets, workers, server.http_url, app["app_key"], ips, jitter, ramp,
                       seed, procs, pipes)
        for pipe in pipes:
            if not pipe.poll(max(0.0, run_deadline - time.monotonic())):
                raise RuntimeError("handsets did not all connect in time")
            pipe.recv()
        ramp_s = time.monotonic() - started
        server_rss_before = server.rss_each()
        kill_at = time.time()
        server.kill()
        server = start_server()
        restart_s = time.time() - kill_at
        left = max(1.0, run_deadline - time.monotonic())
        for pipe in pipes:  # a duration: workers count it on their own trio clock
            pipe.send(("killed", kill_at, left))
        results, server_peak = _await_results(pipes, server, run_deadline + 10)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(10)
        server.terminate()
    return {
        "handsets": handsets, "workers": workers, "server_workers": server_workers,
        "load_avg_at_start": [round(x, 2) for x in load_at_start],
        "backoff": "full jitter" if jitter else "no jitter",
        "connect_rate_limit": connect_rate,
        "restart_s": round(restart_s, 2),
        "server_rss_before_mb": [round(r / 2**20, 1) for r in server_rss_before],
        "server_rss_peak_after_mb": [round(r / 2**20, 1) for r in server_peak],
        "ramp_s": round(ramp_s, 1),
        **_comeback(results, kill_at),
    }


def _comeback(results: list[Any], kill_at: float) -> dict[str, Any]:
    """What the workers saw after the kill at ``kill_at`` (Unix time): how many handsets
    came back and when, refusals and attempts, their own peak RSS."""
    times = sorted(t for r in results for t in r[1])
    back = len(times)
    return {
        "back": back,
        "all_back_s": round(times[-1] - kill_at, 2) if back else None,
        "peak_connects_per_s": peak_rate(times),
        "admission_refusals": sum(r[2] for r in results),
        "connect_attempts_total": sum(r[4] for r in results),
        "worker_rss_peak_mb": [round(r[3] / 2**20, 1) for r in results],
        "per_second": _histogram(times, kill_at),
    }


def _await_results(pipes: list[Any], server: StormServer, deadline: float,
                   ) -> tuple[list[Any], list[int]]:
    """Every worker's result (in order), sampling the server's RSS per process meanwhile;
    ``(results, peak RSS per process)``. RuntimeError past ``deadline`` (monotonic)."""
    peak = server.rss_each()

    def sample() -> None:
        nonlocal peak
        now = server.rss_each()
        if len(now) == len(peak):
            peak = [max(a, b) for a, b in zip(peak, now)]
        else:  # a worker process came or went: keep the larger set
            peak = now if sum(now) > sum(peak) else peak

    results = []
    for pipe in pipes:
        while not pipe.poll(0.25):
            sample()
            if time.monotonic() > deadline:
                raise RuntimeError("the storm did not settle in time")
        results.append(pipe.recv())
        sample()
    return results, peak


def _histogram(times: list[float], origin: float) -> list[int]:
    if not times:
        return []
    bins = [0] * (int(times[-1] - origin) + 1)
    for t in times:
        bins[int(t - origin)] += 1
    return bins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m power_bench.storm",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--handsets", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="pushsim server --workers (default 2)")
    parser.add_argument("--connect-rate", type=float, default=1000.0,
                        help="the admission limit for the runs with it on (default 1000/s)")
    parser.add_argument("--ramp", type=float, default=400.0,
                        help="initial connects per second over all workers")
    parser.add_argument("--only", choices=("jitter", "nojitter"), default=None)
    parser.add_argument("--run-timeout", type=float, default=240.0,
                        help="bound on each run, ramp-up and storm together (default 240 s)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        for jitter in (True, False):
            if args.only and (args.only == "jitter") != jitter:
                continue
            for rate in (None, args.connect_rate):
                try:
                    figures = run_storm(args.handsets, workers=args.workers, jitter=jitter,
                                        connect_rate=rate, workdir=Path(tmp),
                                        ramp=args.ramp, run_timeout=args.run_timeout,
                                        server_workers=args.server_workers)
                except RuntimeError as exc:  # one failed run does not stop the others
                    figures = {"handsets": args.handsets, "connect_rate_limit": rate,
                               "backoff": "full jitter" if jitter else "no jitter",
                               "error": str(exc)}
                runs.append(figures)
                print(json.dumps({k: v for k, v in figures.items() if k != "per_second"}),
                      flush=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
