"""Helpers of the fleet tests: run ``pushsim`` as a real process, read a results directory,
start and stop the reference server and Mosquitto (by process id)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

ADMIN_TOKEN = "fleet-test-admin"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@attrs.frozen
class Finished:
    returncode: int
    stdout: str
    stderr: str


ROOT = Path(__file__).resolve().parents[2]


def pushsim(*args: str, timeout: float = 90, cwd: Path | None = None) -> Finished:
    """Run ``pushsim ARGS`` as a real process (``python -m simulator``), in ``cwd`` (tests
    that rely on a default ``--out`` give a temporary directory, so nothing lands in the
    work tree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)
    return Finished(done.returncode, done.stdout, done.stderr)


def read_results(out: Path) -> dict:
    """The parts of a results directory the tests look at."""
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    with open(out / "handsets.csv", newline="") as f:
        handsets = list(csv.DictReader(f))
    with open(out / "latencies.csv", newline="") as f:
        latencies = list(csv.DictReader(f))
    with open(out / "connects.csv", newline="") as f:
        connects = list(csv.DictReader(f))
    with open(out / "timeseries.csv", newline="") as f:
        timeseries = list(csv.DictReader(f))
    return {"summary": summary, "handsets": handsets, "latencies": latencies,
            "connects": connects, "timeseries": timeseries, "fleet": json.loads((out / "fleet.json").read_text()),
            "summary_json": json.loads((out / "summary.json").read_text())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@attrs.frozen
class ReferenceServer:
    http: str
    mqtt: str
    admin_token: str


@attrs.frozen
class Broker:
    url: str
    log: Path
    process: subprocess.Popen
    port: int

    def peers(self, client_prefix: str = "pushsim-") -> list[str]:
        """Source addresses of the clients Mosquitto saw connect, from its log."""
        peers = []
        for line in self.log.read_text().splitlines():
            # "1700000000: New client connected from 127.0.0.5:41870 as pushsim-3 (p2, c0, k60)."
            if "New client connected from" in line and f" as {client_prefix}" in line:
                address = line.split("connected from ", 1)[1].split(" ", 1)[0]
                peers.append(address.rsplit(":", 1)[0])
        return peers


@contextmanager
def start_mosquitto(directory: Path, *, persistence: bool = False,
                    port: int | None = None, extra: str = "") -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port (or ``port``), logging connections to a
    file in ``directory``, with ``extra`` lines of configuration; stopped by its process
    id."""
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run .ci/install-deps (Debian's mosquitto "
                    "package) to get the broker these tests run against")
    port = port or free_port()
    conf = directory / f"mosquitto-{port}.conf"
    store = f"persistence true\npersistence_location {directory}/\n" if persistence else \
        "persistence false\n"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{store}"
                    "log_dest stdout\nlog_type notice\nconnection_messages true\n" + extra)
    log = directory / f"mosquitto-{port}.log"
    with open(log, "a") as log_file:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"mosquitto did not start: {log.read_text()[-500:]}")
                time.sleep(0.05)
        yield Broker(f"mqtt://127.0.0.1:{port}", log, proc, port)
    finally:
        stop_process(proc)
