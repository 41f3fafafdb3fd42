"""Runs on a Dask distributed cluster (``--cluster tcp://HOST:PORT``): fleet shards and
simulation jobs. See docs/distributed.md.

The cluster is a real Dask one — ``dask scheduler`` and any number of ``dask worker``
processes on any machines, each with this project installed — and this module only uses its
public API: ``Client.submit``/``map`` with worker placement, ``Variable`` and ``Event`` for
the start barrier and the stop request, and structured events (``Worker.log_event``,
``Client.subscribe_topic``) for the live totals.

**Fleet** (:func:`run_fleet_on_cluster`): one shard per Dask worker (``--workers W`` to use
only W of them), pinned to it. Each shard checks its machine's limits, builds its handsets
and connects its senders, says it is ready, and waits; when every shard is ready (or has
died), the coordinator sets the start time — half a second ahead, in Unix time — and all
start at that instant. Each sends its sample every second (the progress line and
``--metrics-port`` of the coordinator add them up) and returns its report; the coordinator
merges them into one validated result (one run id and configuration, every shard present,
start skew measured and warned about). A shard whose worker died is named as missing; the
others' results are written all the same. Source addresses: a worker started with
``PUSHSIM_SOURCE_IPS=FIRST-LAST`` in its environment uses those; otherwise ``--source-ips``
is split between the shards placed on the same host.

**Simulation jobs** (:func:`run_jobs_on_cluster`): the same jobs a local run makes (one per
scenario × strategy × shard), each run by ``simulator.world.run_world`` on some worker,
gathered in job order — the results are those of a local run with the same seed.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs

from simulator.cli import CommandError

__all__ = ["connect", "run_fleet_on_cluster", "run_jobs_on_cluster"]

#: How long the shards may take to build their handsets and connect their senders.
SHARD_START_TIMEOUT_S = 180.0
#: The common start is set this far ahead, so that every shard hears of it in time.
START_AHEAD_S = 0.5
CONNECT_TIMEOUT_S = 10.0


# --- the cluster ------------------------------------------------------------------------------

def _check_address(address: str) -> str:
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        raise CommandError(f"--cluster must be tcp://HOST:PORT (a dask scheduler), got "
                           f"{address!r}")
    return address


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A Dask client of the scheduler at ``address``; one-line :class:`CommandError` if it
    cannot be reached or has no workers."""
    from distributed import Client

    _check_address(address)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise CommandError(f"cannot reach the Dask scheduler at {address}: "
                           f"{exc or type(exc).__name__}") from None
    try:
        if not client.scheduler_info()["workers"]:
            raise CommandError(f"the Dask cluster at {address} has no workers")
        yield client
    finally:
        client.close()


def _workers(client: Any) -> list[str]:
    return sorted(client.scheduler_info()["workers"])


# --- simulation jobs --------------------------------------------------------------------------

def run_jobs_on_cluster(jobs: Sequence[Any], address: str, bar: Any = None) -> list[Any]:
    """Run ``simulator.runner`` jobs on the cluster; their results in job order (the same
    as a local run's). ``bar`` (tqdm) advances by 100 per finished job."""
    from distributed import as_completed

    with connect(address) as client:
        futures = client.map(_run_job, list(jobs), pure=False,
                             key=[f"pushsim-run-{n}-{os.getpid()}-{time.time_ns()}"
                                  for n in range(len(jobs))])
        for _ in as_completed(futures, loop=client.loop):
            if bar is not None:
                bar.update(100)
        shards = client.gather(futures)
    return [result for shard in shards for result in shard]


def _run_job(job: Any) -> list[Any]:
    # The very function a local run calls, so a cluster run cannot differ from it.
    from simulator.runner import run_job
    return run_job(job)


# --- the fleet --------------------------------------------------------------------------------

@attrs.frozen
class _Names:
    """Names of the run's Dask objects (unique per run id)."""

    run_id: str

    @property
    def go(self) -> str:
        return f"pushsim-fleet-{self.run_id}-go"

    @property
    def stop(self) -> str:
        return f"pushsim-fleet-{self.run_id}-stop"

    @property
    def ready(self) -> str:
        return f"pushsim-fleet-{self.run_id}-ready"

    @property
    def progress(self) -> str:
        return f"pushsim-fleet-{self.run_id}-progress"


def run_fleet_on_cluster(args: Any, plan: Any, gates: Any) -> int:
    """``pushsim fleet --cluster``: the shards on the workers, one merged result."""
    from simulator.commands.fleet import announce_metrics, finish, make_out
    from simulator.fleet.live import Live

    with connect(args.cluster) as client:
        available = _workers(client)
        count = args.workers or len(available)
        if count > len(available):
            raise CommandError(f"--workers {count}: the cluster has {len(available)} worker(s)")
        chosen = available[:count]
        plans = _shard_plans(plan, chosen)
        if any(not p.shard_handsets() for p in plans):
            raise CommandError(f"{count} shards: more than the fleet's "
                               f"{plan.groups} topic groups")
        plans = _prepare(client, plans, chosen, args)
        out = make_out(args.out)
        with Live(plan.handsets, progress=args.progress, metrics_port=args.metrics_port,
                  metrics_host=args.metrics_host) as live:
            announce_metrics(live)
            results = _ShardRun(client, plans, chosen, live).run()
    return finish(results, out, gates)


def _shard_plans(plan: Any, workers: list[str]) -> list[Any]:
    """One plan per worker: shard i of N, its share of ``--source-ips`` on its host."""
    from simulator.fleet.plan import Shard

    hosts = [urlsplit(w).hostname for w in workers]
    plans = []
    for i, host in enumerate(hosts):
        same = [j for j, h in enumerate(hosts) if h == host]
        ips = plan.source_ips
        if ips and len(same) > 1:
            part = same.index(i)
            ips = ips[part::len(same)] or ips
        plans.append(attrs.evolve(plan, shard=Shard(i, len(workers)), workers=1,
                                  source_ips=ips))
    return plans


def _prepare(client: Any, plans: list[Any], workers: list[str], args: Any) -> list[Any]:
    """Limits on every worker's machine, the pre-flight from the first; one line, exit 2,
    if any fails."""
    first = client.submit(_preflight_task, plans[0], _server_credentials(args),
                          workers=[workers[0]], allow_other_workers=False, pure=False)
    kind, value = first.result()
    if kind == "error":
        raise CommandError(value)
    plans = [attrs.evolve(p, target=value) for p in plans]
    checks = [client.submit(_limits_task, p, workers=[w], allow_other_workers=False,
                            pure=False) for p, w in zip(plans, workers)]
    for check, worker in zip(checks, workers):
        problem = check.result()
        if problem:
            raise CommandError(f"worker {worker}: {problem}")
    return plans


def _server_credentials(args: Any) -> dict[str, Any]:
    return {"admin_token": args.admin_token, "app_key": args.app_key,
            "master_secret": args.master_secret}


def _preflight_task(plan: Any, credentials: dict[str, Any]) -> tuple[str, Any]:
    """On a worker: the server's app (server mode) and every leg's pre-flight."""
    from simulator.fleet.plan import ServerTarget
    from simulator.fleet.preflight import PreflightError, preflight, prepare_server

    try:
        if isinstance(plan.target, ServerTarget):
            target = prepare_server(plan.target.url, ca_file=plan.ca_file,
                                    timeout=plan.connect_timeout,
                                    app_name=f"pushsim-fleet-{plan.run_id}", **credentials)
            plan = attrs.evolve(plan, target=target)
        preflight(plan)
    except PreflightError as exc:
        return "error", str(exc)
    return "ok", plan.target


def _limits_task(plan: Any) -> str:
    from simulator.fleet.limits import LimitError
    from simulator.fleet.runner import check_limits

    try:
        check_limits(_own_source_ips(plan))
    except LimitError as exc:
        return str(exc)
    return ""


def _own_source_ips(plan: Any) -> Any:
    """The plan with this worker's ``PUSHSIM_SOURCE_IPS``, if it has one."""
    from simulator.fleet.limits import parse_source_ips

    own = os.environ.get("PUSHSIM_SOURCE_IPS")
    return attrs.evolve(plan, source_ips=parse_source_ips(own)) if own else plan


class _ShardRun:
    """The coordinator's side of one run: submit, barrier, live totals, gather, merge."""

    def __init__(self, client: Any, plans: list[Any], workers: list[str], live: Any) -> None:
        from distributed import Event, Variable

        self.client, self.plans, self.workers, self.live = client, plans, workers, live
        self.names = _Names(plans[0].run_id)
        self.go = Variable(self.names.go, client=client)
        self.stop = Event(self.names.stop, client=client)
        self.ready: set[int] = set()
        self.gone: dict[int, str] = {}
        self.absent: dict[int, float] = {}
        client.subscribe_topic(self.names.ready, self._on_ready)
        client.subscribe_topic(self.names.progress, self._on_progress)

    def _on_ready(self, event: tuple[float, Any]) -> None:
        self.ready.add(event[1]["shard"])

    def _on_progress(self, event: tuple[float, Any]) -> None:
        self.live.update(event[1]["shard"], event[1]["sample"])

    def run(self) -> Any:
        from simulator.fleet.runner import FleetError, StopSignals

        futures = [self.client.submit(_fleet_shard, plan, self.names, workers=[worker],
                                      allow_other_workers=False, pure=False,
                                      key=f"pushsim-fleet-{plan.run_id}-shard-{i}")
                   for i, (plan, worker) in enumerate(zip(self.plans, self.workers))]
        with StopSignals() as signals:
            try:
                self._barrier(futures, signals)
            except FleetError as exc:
                self.stop.set()
                raise CommandError(str(exc)) from None
            self.go.set(time.time() + START_AHEAD_S)
            self._wait(futures, signals)
        return self._merge(futures)

    def _check_gone(self, futures: list[Any]) -> None:
        # A worker counts as dead once the scheduler has not listed it for a whole second
        # (one look may catch the list in a moment of change).
        alive = set(self.client.scheduler_info()["workers"])
        now = time.monotonic()
        for i, (future, worker) in enumerate(zip(futures, self.workers)):
            if i in self.gone:
                continue
            if future.status in ("error", "cancelled", "lost"):
                self.gone[i] = f"shard {i}/{len(futures)} on {worker} failed"
            elif future.status == "pending" and worker not in alive:
                since = self.absent.setdefault(i, now)
                if now - since >= 1.0:
                    self.gone[i] = f"shard {i}/{len(futures)} (worker {worker} died)"
                    future.cancel()
            else:
                self.absent.pop(i, None)

    def _barrier(self, futures: list[Any], signals: Any) -> None:
        from simulator.fleet.runner import FleetError

        deadline = time.monotonic() + SHARD_START_TIMEOUT_S
        while not set(range(len(futures))) <= self.ready | set(self.gone):
            self._check_gone(futures)
            if signals.requested():
                self.stop.set()
            if time.monotonic() > deadline:
                raise FleetError(f"the shards did not get ready within "
                                 f"{SHARD_START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        if len(self.gone) == len(futures):
            raise FleetError(f"no shard could start: {'; '.join(self.gone.values())}")

    def _wait(self, futures: list[Any], signals: Any) -> None:
        while any(f.status == "pending" for i, f in enumerate(futures) if i not in self.gone):
            if signals.requested() and not self.stop.is_set():
                self.stop.set()
            self._check_gone(futures)
            time.sleep(0.2)

    def _merge(self, futures: list[Any]) -> Any:
        from simulator.fleet.results import FleetResults

        parts, names = [], []
        for i, future in enumerate(futures):
            if i in self.gone:
                continue
            try:
                answer = future.result()
            except Exception as exc:  # the shard's own error: named, the rest merged
                self.gone[i] = f"shard {i}/{len(futures)} failed: {type(exc).__name__}: {exc}"
                continue
            if answer.get("late"):
                self.gone[i] = f"shard {i}/{len(futures)} (restarted after the start)"
                continue
            parts.append(FleetResults.from_workers(answer["run"], [answer["report"]]))
            names.append(f"shard {i}/{len(futures)} on {self.workers[i]}")
        if not parts:
            raise CommandError(f"no shard reported: {'; '.join(self.gone.values())}")
        merged = FleetResults.combine(parts, names, partial=True)
        merged.missing = sorted(set(merged.missing) - {f"shard {i}/{len(futures)}"
                                                       for i in self.gone}
                                ) + list(self.gone.values())
        merged.run["cluster"] = {"workers": self.workers, "start_skew_s": merged.start_skew_s()}
        return merged


def _fleet_shard(plan: Any, names: _Names) -> dict[str, Any]:
    """On a worker: run one shard of the fleet (in this task's thread) and return its
    report."""
    import trio
    from distributed import Event, Variable, get_worker

    from simulator.fleet.limits import raise_open_files_limit
    from simulator.fleet.runner import run_info
    from simulator.fleet.worker import run_worker

    worker = get_worker()
    go = Variable(names.go)
    try:
        go.get(timeout=0)
        return {"late": True}  # the run began without us (this task was rescheduled)
    except TimeoutError:
        pass
    plan = _own_source_ips(plan)
    raise_open_files_limit()
    stopping = _StopFlag(Event(names.stop))
    shard = plan.shard.index

    async def wait_for_go() -> None:
        worker.log_event(names.ready, {"shard": shard})
        start = await trio.to_thread.run_sync(go.get, abandon_on_cancel=True)
        await trio.sleep(max(0.0, start - time.time()))

    def progress(sample: dict[str, Any]) -> None:
        worker.log_event(names.progress, {"shard": shard, "sample": _plain(sample)})

    try:
        report = run_worker(plan, 0, progress=progress, should_stop=stopping.is_set,
                            go=wait_for_go)
    finally:
        stopping.close()
    strategy = report["rows"][0][0].strategy if report["rows"] else None
    return {"run": run_info(plan, strategy), "report": report}


class _StopFlag:
    """The coordinator's stop request, polled off the trio thread (a Dask call blocks)."""

    def __init__(self, event: Any) -> None:
        self._event = event
        self._set = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True,
                                        name="pushsim-stop-poll")
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.5):
            try:
                if self._event.is_set():
                    self._set.set()
                    return
            except Exception:  # the scheduler is gone: keep running, the run ends on time
                return

    def is_set(self) -> bool:
        return self._set.is_set()

    def close(self) -> None:
        self._done.set()


def _plain(value: Any) -> Any:
    """msgpack-friendly copy (structured events must be msgpack serializable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
