"""A real Dask cluster on loopback for the tests: ``dask scheduler`` and ``dask worker``
processes started here and stopped by their process ids (used by conftest.py's fixtures and
by tests that need a cluster of their own).

Nothing listens beyond 127.0.0.1: the scheduler and the workers get ``--host 127.0.0.1``
and their HTTP servers (dashboard, /health, /metrics) ``--dashboard-address 127.0.0.1:0``
(``--no-dashboard`` alone still binds that server to 0.0.0.0). The tests check it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
from fleet_harness import ROOT, stop_process  # noqa: E402

DASK = str(Path(sys.executable).with_name("dask"))
START_TIMEOUT_S = 60.0


@attrs.define
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    directory: Path

    def pids(self) -> list[int]:
        return [self.scheduler.pid, *(w.pid for w in self.workers)]


def _wait_for(condition, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def start_cluster(directory: Path, workers: int) -> Cluster:
    """A scheduler and ``workers`` single-threaded workers (no nanny: a killed worker stays
    dead), all on loopback."""
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    log = open(directory / "scheduler.log", "w")
    scheduler = subprocess.Popen([DASK, "scheduler", "--port", "0", *loopback,
                                  "--scheduler-file", str(file)], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=directory)
    cluster = Cluster("", scheduler, [], directory)
    try:
        _wait_for(lambda: file.exists() and file.stat().st_size > 0 or scheduler.poll(),
                  "dask scheduler did not write its address")
        cluster.address = json.loads(file.read_text())["address"]
        for n in range(workers):
            wlog = open(directory / f"worker-{n}.log", "w")
            cluster.workers.append(subprocess.Popen(
                [DASK, "worker", "--scheduler-file", str(file), *loopback, "--no-nanny",
                 "--local-directory", str(directory / f"worker-{n}"),
                 "--nthreads", "1", "--name", f"w{n}"], stdout=wlog, stderr=subprocess.STDOUT,
                env=env, cwd=directory))
        _wait_for(lambda: _worker_count(cluster.address) == workers,
                  f"{workers} dask workers did not join")
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _worker_count(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:
        return len(client.scheduler_info()["workers"])


def stop_cluster(cluster: Cluster) -> None:
    for process in [*cluster.workers, cluster.scheduler]:
        if process.poll() is None:
            stop_process(process)
