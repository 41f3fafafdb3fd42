"""Helpers of the fleet tests: run ``pushsim`` as a real process, read a results directory,
stop the reference server (by process id); Mosquitto is tests/support/mosquitto.py."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs

ADMIN_TOKEN = "fleet-test-admin"


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
            "connects": connects, "timeseries": timeseries,
            "fleet": json.loads((out / "fleet.json").read_text()),
            "summary_json": json.loads((out / "summary.json").read_text())}


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


