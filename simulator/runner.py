"""Run a matrix of (scenario × strategy) worlds, sharded over worker processes.

Each job is one :class:`~simulator.world.RunConfig` shard: handsets ``i, i+W, i+2W, …`` of
one scenario under one strategy. Handset specs and the workload depend only on the seed and
the handset index (docs/scenarios.md), so the union of the shards is the same fleet a single
process would simulate, and merging is concatenation. :func:`run_job` runs one job from
picklable arguments (a RunConfig), in this process or any other: it is what a worker pool or
a cluster calls. ``oracle`` jobs compute the bound instead of simulating (docs/oracle.md).
Workers report progress through a queue; the parent draws one progress bar (tqdm, stderr).
"""
from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import attrs
from tqdm import tqdm

from simulator.metrics import HandsetResult
from simulator.scenario import Scenario
from simulator.sdk_logging import quiet_sdk_logs
from simulator.strategies import ORACLE
from simulator.world import RunConfig, run_world

_progress_queue = None  # set in each worker process


def plan_jobs(scenarios: Sequence[Scenario], strategies: Sequence[str], handsets: int,
              hours: float, seed: int, workers: int) -> list[RunConfig]:
    shards = max(1, min(workers, handsets))
    return [
        RunConfig(scenario, strategy, handsets, hours, seed=seed, shard=(i, shards))
        for scenario in scenarios
        for strategy in strategies
        for i in range(shards)
    ]


def run_job(job: RunConfig, progress: Callable[[float], None] | None = None
            ) -> list[HandsetResult]:
    """One job's handset results, labelled with their group and seed."""
    if job.strategy == ORACLE:
        from simulator.oracle import bound_results

        results = bound_results(job)
        if progress is not None:
            progress(1.0)
        return results
    groups = {spec.index: spec.group for spec in job.scenario.handset_specs(
        seed=job.seed, hours=job.hours, indices=job.indices())}
    return [attrs.evolve(r, group=groups.get(r.index, ""), seed=job.seed)
            for r in run_world(job, progress)]


def run_jobs(jobs: Sequence[RunConfig], workers: int = 1, *, progress: bool = True,
             label: str = "simulating", cluster: str | None = None) -> list[HandsetResult]:
    """Run every job (in worker processes if ``workers`` > 1, on the Dask cluster at
    ``cluster`` if given); results in job order."""
    bar = tqdm(total=100 * len(jobs), desc=label, unit="%", disable=not progress,
               file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
    try:
        # --- --cluster hook (fleet engineer; the machinery is in simulator/distributed.py) ---
        if cluster is not None:
            from simulator.distributed import run_jobs_on_cluster
            return run_jobs_on_cluster(jobs, cluster, bar)
        # --- end of the --cluster hook ---
        if workers <= 1:
            results: list[HandsetResult] = []
            for job in jobs:
                results.extend(run_job(job, _bar_updater(bar)))
            return results
        return _run_in_processes(jobs, workers, bar)
    finally:
        bar.close()


def _bar_updater(bar):
    last = [0]

    def update(fraction: float) -> None:
        step = int(fraction * 100)
        bar.update(step - last[0])
        last[0] = step

    return update


def _run_in_processes(jobs, workers, bar) -> list[HandsetResult]:
    context = multiprocessing.get_context("spawn")  # no trio or SQLite state crosses a fork
    queue = context.Queue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker, initargs=(queue,)) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        pending = set(futures)
        while pending:
            while not queue.empty():
                bar.update(queue.get())
            done = {f for f in pending if f.done()}
            for future in done:
                future.result()  # surface a worker's exception at once
            pending -= done
            if pending:
                try:
                    bar.update(queue.get(timeout=0.2))
                except Exception:  # queue.Empty: nothing new, look at the futures again
                    pass
        while not queue.empty():
            bar.update(queue.get())
        return [result for future in futures for result in future.result()]


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue
    quiet_sdk_logs()


def _run_job(job: RunConfig) -> list[HandsetResult]:
    queue = _progress_queue
    assert queue is not None, "_init_worker runs first in each worker process"
    last = [0]

    def report(fraction: float) -> None:
        step = int(fraction * 100)
        queue.put(step - last[0])
        last[0] = step

    return run_job(job, report)
