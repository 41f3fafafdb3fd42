"""Run a fleet: check limits and the target, run the workers, gather and write the results.

``--workers 1`` runs the handsets in this process; more start that many processes (spawned,
so none inherits a half-started trio run), each a ``trio.run`` of its share. Workers report a
sample every second (shown as one tqdm line on stderr) and their results at the end.
Ctrl-C ends the run phase early; the results of what ran are still written.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import trio

from pushsdk import SystemClock
from pushsdk.transport import TcpConnector, TransportError

from .plan import BrokerTarget, FleetPlan, ServerTarget
from .limits import (
    check_local_ports,
    check_open_files,
    check_source_ips_usable,
    raise_open_files_limit,
)
from .results import FleetResults
from .senders import HttpClient, HttpError, PushFailed, check_app, create_app, open_publisher
from .worker import run_worker

__all__ = ["FleetError", "check_limits", "prepare_broker", "prepare_server", "run_fleet"]

#: How long spawned workers may take to import, build their handsets and connect pushers.
WORKER_START_TIMEOUT_S = 120.0


class FleetError(Exception):
    """The fleet cannot run or could not finish; the message is one line for the user."""


# --- before the run -----------------------------------------------------------------------

def check_limits(config: FleetPlan) -> int:
    """Open files and local ports for this shard; returns the open-files limit in force."""
    handsets = len(config.shard_handsets())
    per_process = -(-handsets // config.workers)
    if config.source_ips:
        check_source_ips_usable(config.source_ips)
    check_local_ports(handsets, len(config.source_ips))
    return check_open_files(per_process, config.workers)


def prepare_server(url: str, *, admin_token: str | None, app_key: str | None,
                   master_secret: str | None, ca_file: str | None, timeout: float,
                   app_name: str) -> ServerTarget:
    """Reach the server; create an app with the admin token, or check the given one."""
    async def main() -> ServerTarget:
        client = HttpClient(TcpConnector(ca_file=ca_file, connect_timeout=timeout), url,
                            timeout=timeout)
        try:
            if admin_token is not None:
                key, secret = await create_app(client, admin_token, app_name)
                return ServerTarget(url=url, app_key=key, master_secret=secret)
            assert app_key is not None and master_secret is not None
            await check_app(client, app_key, master_secret)
            return ServerTarget(url=url, app_key=app_key, master_secret=master_secret)
        finally:
            await client.aclose()
    try:
        return trio.run(main)
    except HttpError as exc:
        raise FleetError(f"cannot reach the server at {url}: {exc}") from None
    except PushFailed as exc:
        raise FleetError(f"server at {url}: {exc}") from None


def prepare_broker(target: BrokerTarget, *, ca_file: str | None, timeout: float,
                   client_id: str) -> None:
    """Connect once as the publisher will, so an unreachable broker fails before the run."""
    async def main() -> None:
        connector = TcpConnector(ca_file=ca_file, connect_timeout=timeout)
        async with open_publisher(connector, target, client_id, timeout=timeout):
            pass
    try:
        trio.run(main)
    except (TransportError, OSError) as exc:
        raise FleetError(f"cannot reach the broker at {target.url}: {exc}") from None


# --- the run ------------------------------------------------------------------------------

def run_fleet(config: FleetPlan, out: Path, *, progress: bool | None = None,
              run_info: dict[str, Any] | None = None
              ) -> tuple[FleetResults, dict[str, Any], list[dict[str, Any]]]:
    """Run ``config`` (target already prepared) and write ``out``.

    Returns the results, fleet.json's content and the summary rows.

    ``progress``: show the tqdm line (``None``: when stderr is a terminal).
    """
    started_at = SystemClock().now()
    with _ProgressLine(len(config.shard_handsets()), progress) as line:
        if config.workers == 1:
            reports, extra = [_run_here(config, line.update_one)], []
        else:
            reports, extra = _run_spawned(config, line.update)
    info = {
        "mode": config.mode, "target": config.target.url, "fleet_handsets": config.handsets,
        "handsets": len(config.shard_handsets()), "shards": [str(config.shard)],
        "run_ids": [config.run_id], "workers": config.workers, "duration_s": config.duration,
        "ramp_per_s": None if config.ramp == float("inf") else config.ramp,
        "push_rate_per_s": config.push_rate, "drain_s": config.drain,
        "strategy": reports[0]["rows"][0][0].strategy if reports[0]["rows"] else config.strategy,
        "radio_model": config.radio_model,
        "source_ips": ([config.source_ips[0], config.source_ips[-1], len(config.source_ips)]
                       if config.source_ips else None),
        "started_at": started_at,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(terse=True),
                    "ram_bytes": psutil.virtual_memory().total},
        **(run_info or {}),
    }
    results = FleetResults.from_workers(info, reports, extra)
    return (results, *results.write(out))


def _run_here(config: FleetPlan, progress: Callable[[dict[str, Any]], None]) -> dict:
    raise_open_files_limit()
    stop = _SigintStop()
    with stop:
        try:
            return run_worker(config, 0, progress=progress, should_stop=stop.requested)
        except (TransportError, OSError) as exc:
            raise FleetError(str(exc)) from None


class _SigintStop:
    """First Ctrl-C: finish early (results are written); second: interrupt at once."""

    def __init__(self) -> None:
        self._hits = 0
        self._previous: Any = None

    def requested(self) -> bool:
        return self._hits > 0

    def _handler(self, signum: int, frame: Any) -> None:
        self._hits += 1
        if self._hits > 1:
            raise KeyboardInterrupt
        print("\npushsim fleet: stopping early (Ctrl-C again to abort)...", file=sys.stderr)

    def __enter__(self) -> _SigintStop:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run_spawned(config: FleetPlan, progress: Callable[[int, dict[str, Any]], None]
                 ) -> tuple[list[dict], list[dict]]:
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    go, stop = context.Event(), context.Event()
    processes = [context.Process(target=_worker_process, args=(config, w, messages, go, stop),
                                 name=f"pushsim-fleet-worker-{w}", daemon=True)
                 for w in range(config.workers)]
    me = psutil.Process()
    me.cpu_percent(None)
    rss_start = me.memory_info().rss
    for process in processes:
        process.start()
    reports: dict[int, dict] = {}
    ready: set[int] = set()
    interrupted = 0
    try:
        while len(reports) < len(processes):
            try:
                kind, worker, *payload = messages.get(
                    timeout=1.0 if ready == set(range(len(processes))) else WORKER_START_TIMEOUT_S)
            except queue.Empty:
                dead = [p.name for w, p in enumerate(processes)
                        if w not in reports and p.exitcode is not None]
                if dead or not go.is_set():
                    stop.set()
                    raise FleetError(f"worker process {', '.join(dead) or 'start'} failed "
                                     "without a report") from None
                continue
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted > 1:
                    raise
                stop.set()
                print("\npushsim fleet: stopping early (Ctrl-C again to abort)...",
                      file=sys.stderr)
                continue
            if kind == "ready":
                ready.add(worker)
                if len(ready) == len(processes):
                    go.set()
            elif kind == "progress":
                progress(worker, payload[0])
            elif kind == "done":
                reports[worker] = payload[0]
            elif kind == "error":
                stop.set()
                go.set()
                raise FleetError(payload[0])
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    cpu = me.cpu_times()
    coordinator = {"name": f"shard {config.shard} coordinator", "pid": os.getpid(),
                   "handsets": 0, "connected_peak": 0, "rss_start_bytes": rss_start,
                   "rss_connected_bytes": rss_start, "rss_peak_bytes": me.memory_info().rss,
                   "cpu_user_s": cpu.user, "cpu_system_s": cpu.system,
                   "wall_s": max((r["process"]["wall_s"] for r in reports.values()), default=0)}
    return [reports[w] for w in sorted(reports)], [coordinator]


def _worker_process(config: FleetPlan, worker: int, messages: Any, go: Any,
                    stop: Any) -> None:
    """Entry point of a spawned worker (Ctrl-C is the coordinator's business)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_files_limit()

    async def wait_for_go() -> None:
        messages.put(("ready", worker))
        await trio.to_thread.run_sync(go.wait, abandon_on_cancel=True)

    try:
        report = run_worker(config, worker, go=wait_for_go, should_stop=stop.is_set,
                            progress=lambda sample: messages.put(("progress", worker, sample)))
    except (TransportError, OSError) as exc:
        messages.put(("error", worker, f"worker {worker}: {exc}"))
    except BaseException as exc:  # a bug: keep the traceback for the report
        traceback.print_exc()
        messages.put(("error", worker, f"worker {worker} crashed: {type(exc).__name__}: {exc}"))
    else:
        messages.put(("done", worker, report))


class _ProgressLine:
    """One tqdm line on stderr: connected handsets of the total, failures, pushes, RSS."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self._total = total
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._latest: dict[int, dict[str, Any]] = {}
        self._bar: Any = None

    def __enter__(self) -> _ProgressLine:
        if self._enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=self._total, desc="connected", unit="hs", file=sys.stderr,
                             dynamic_ncols=True, leave=True, mininterval=0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()

    def update_one(self, sample: dict[str, Any]) -> None:
        self.update(0, sample)

    def update(self, worker: int, sample: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._latest[worker] = sample

        def total(key: str) -> int:
            return sum(s[key] for s in self._latest.values())
        self._bar.n = total("connected")
        self._bar.set_postfix_str(
            f"t={sample['t']}s fail={total('connect_failures')} "
            f"pushes={total('pushes_sent')}→{total('pushes_delivered')} "
            f"rss={total('rss_bytes') / 2**20:.0f}MB", refresh=False)
        self._bar.refresh()
