"""Run a fleet on this machine: limits, the workers, signals, the results directory.

``--workers 1`` runs the handsets in this process; more start that many processes (spawned,
so none inherits a half-started trio run), each a ``trio.run`` of its share, started
together once all have connected their senders. Workers report a sample every second (the
progress line, ``--metrics-port``) and their results at the end.

The results are written whatever happens: at the end; on the first SIGINT or SIGTERM (the
stages end early, the drain is skipped; a second signal aborts); when the target dies
(handsets and senders keep retrying until the end); when a worker process dies (the others'
results are written, and the dead one is named as missing).
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import signal
import socket
import sys
import time
import traceback
from typing import Any

import psutil
import trio

from pushsdk import SystemClock

from .limits import (
    check_local_ports,
    check_open_files,
    check_source_ips_usable,
    raise_open_files_limit,
)
from .live import Live
from .plan import FleetPlan, inf_to_none
from .results import FleetResults
from ..sdk_logging import quiet_sdk_logs
from .worker import run_worker

__all__ = ["FleetError", "StopSignals", "check_limits", "run_fleet", "run_info"]

#: How long spawned workers may take to import, build their handsets and connect senders.
WORKER_START_TIMEOUT_S = 120.0


class FleetError(Exception):
    """The fleet cannot run; the message is one line for the user."""


def check_limits(plan: FleetPlan) -> int:
    """Open files and local ports for this shard; returns the open-files limit in force."""
    handsets = len(plan.shard_handsets())
    per_process = -(-handsets // plan.workers)
    if plan.source_ips:
        check_source_ips_usable(plan.source_ips)
    check_local_ports(handsets, len(plan.source_ips))
    return check_open_files(per_process, plan.workers)


def run_info(plan: FleetPlan, strategy: str | None) -> dict[str, Any]:
    """The ``run`` part of fleet.json for this shard."""
    ramp = plan.ramp_schedule().rate_at(0) if plan.handsets else float("inf")
    return {
        "mode": plan.mode, "target": plan.target.url, "fleet_handsets": plan.handsets,
        "handsets": len(plan.shard_handsets()), "shards": [str(plan.shard)],
        "run_id": plan.run_id, "workers": plan.workers, "duration_s": plan.duration,
        "drain_s": plan.drain, "ramp_per_s": inf_to_none(ramp),
        "push_rate_per_s": plan.stages[0].push_rate if plan.stages else 0.0,
        "push_count": plan.push_count(), "strategy": strategy or plan.strategy,
        "radio_model": plan.radio_model, "qos": plan.workload.qos,
        "client_id_prefix": plan.client_id_prefix, "topic_prefix": plan.topic_prefix,
        "source_ips": ([plan.source_ips[0], plan.source_ips[-1], len(plan.source_ips)]
                       if plan.source_ips else None),
        "started_at": SystemClock().now(), "host": socket.gethostname(),
        "fingerprint": plan.fingerprint(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(terse=True),
                    "ram_bytes": psutil.virtual_memory().total},
    }


def run_fleet(plan: FleetPlan, live: Live) -> FleetResults:
    """Run ``plan`` (target already checked); the gathered results of every worker."""
    reports: list[dict]
    extra: list[dict]
    missing: list[str]
    with StopSignals() as stop:
        if plan.workers == 1:
            reports, extra, missing = [_run_here(plan, live, stop)], [], []
        else:
            reports, extra, missing = _run_spawned(plan, live, stop)
    strategy = next((r["rows"][0][0].strategy for r in reports if r["rows"]), None)
    return FleetResults.from_workers(run_info(plan, strategy), reports, extra, missing)


def _run_here(plan: FleetPlan, live: Live, stop: StopSignals) -> dict[str, Any]:
    raise_open_files_limit()
    return run_worker(plan, 0, progress=lambda s: live.update(0, s), should_stop=stop.requested)


class StopSignals:
    """First SIGINT or SIGTERM: finish early (results are written); a second: abort."""

    def __init__(self) -> None:
        self.hits = 0
        self.name = ""
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return self.hits > 0

    def _handler(self, signum: int, frame: Any) -> None:
        self.hits += 1
        if self.hits > 1:
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name
        print(f"\npushsim fleet: {self.name}: stopping early, writing results "
              "(again to abort)...", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _run_spawned(plan: FleetPlan, live: Live, stop: StopSignals
                 ) -> tuple[list[dict], list[dict], list[str]]:
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    go, stop_event = context.Event(), context.Event()
    processes = [context.Process(target=_worker_process,
                                 args=(plan, w, messages, go, stop_event),
                                 name=f"pushsim-fleet-worker-{w}", daemon=True)
                 for w in range(plan.workers)]
    me = psutil.Process()
    me.cpu_percent(None)
    rss_start = me.memory_info().rss
    for process in processes:
        process.start()
    reports: dict[int, dict] = {}
    missing: list[str] = []
    try:
        _collect(processes, messages, go, stop_event, stop, live, reports, missing)
    finally:
        stop_event.set()
        go.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    if not reports:
        raise FleetError(f"no worker process reported: {'; '.join(missing)}")
    cpu = me.cpu_times()
    coordinator = {"name": f"shard {plan.shard} coordinator", "pid": os.getpid(),
                   "handsets": 0, "connected_peak": 0, "rss_start_bytes": rss_start,
                   "rss_connected_bytes": rss_start, "rss_peak_bytes": me.memory_info().rss,
                   "cpu_user_s": cpu.user, "cpu_system_s": cpu.system,
                   "wall_s": max((r["process"]["wall_s"] for r in reports.values()), default=0)}
    return [reports[w] for w in sorted(reports)], [coordinator], missing


def _collect(processes: list, messages: Any, go: Any, stop_event: Any, stop: StopSignals,
             live: Live, reports: dict[int, dict], missing: list[str]) -> None:
    """Relay messages until every worker reported or died."""
    relay = _Relay(processes, messages, go, live, reports, missing)
    started = time.monotonic()
    while len(relay.ended) < len(processes):
        if stop.requested():
            stop_event.set()
        try:
            relay.handle(messages.get(timeout=0.2))
        except queue.Empty:
            relay.reap()
            if not go.is_set() and time.monotonic() - started > WORKER_START_TIMEOUT_S:
                stop_event.set()
                raise FleetError(f"worker processes did not start within "
                                 f"{WORKER_START_TIMEOUT_S:g} s") from None


class _Relay:
    def __init__(self, processes: list, messages: Any, go: Any, live: Live,
                 reports: dict[int, dict], missing: list[str]) -> None:
        self.processes, self.messages, self.go, self.live = processes, messages, go, live
        self.reports, self.missing = reports, missing
        self.ready: set[int] = set()
        self.ended: set[int] = set()

    def handle(self, message: tuple) -> None:
        kind, worker, *payload = message
        if kind == "ready":
            self.ready.add(worker)
        elif kind == "progress":
            self.live.update(worker, payload[0])
        elif kind == "done":
            self.reports[worker] = payload[0]
            self.ended.add(worker)
        elif kind == "error":
            self.missing.append(f"worker {worker} ({payload[0]})")
            self.ended.add(worker)
        self._maybe_go()

    def reap(self) -> None:
        """Name the workers that exited without a report (after reading what they sent:
        a worker's queue is flushed before it exits)."""
        dead = [w for w, p in enumerate(self.processes)
                if w not in self.ended and p.exitcode is not None]
        if not dead:
            return
        while True:
            try:
                self.handle(self.messages.get_nowait())
            except queue.Empty:
                break
        for w in dead:
            if w not in self.ended:
                process = self.processes[w]
                self.missing.append(f"worker {w} (pid {process.pid}, exit status "
                                    f"{process.exitcode}, no report)")
                self.ended.add(w)
        self._maybe_go()

    def _maybe_go(self) -> None:
        alive = set(range(len(self.processes))) - self.ended
        if not self.go.is_set() and alive <= self.ready:
            self.go.set()  # every live worker is ready (a dead one is not waited for)


def _worker_process(plan: FleetPlan, worker: int, messages: Any, go: Any,
                    stop: Any) -> None:
    """Entry point of a spawned worker (signals are the coordinator's business, but a
    SIGTERM sent to the whole group stops this worker early too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_sdk_logs()
    terminated: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    raise_open_files_limit()

    async def wait_for_go() -> None:
        messages.put(("ready", worker))
        await trio.to_thread.run_sync(go.wait, abandon_on_cancel=True)

    def should_stop() -> bool:
        return stop.is_set() or bool(terminated)

    try:
        report = run_worker(plan, worker, go=wait_for_go, should_stop=should_stop,
                            progress=lambda sample: messages.put(("progress", worker, sample)))
    except BaseException as exc:  # a bug: keep the traceback for the report
        traceback.print_exc()
        messages.put(("error", worker, f"crashed: {type(exc).__name__}: {exc}"))
    else:
        messages.put(("done", worker, report))

