"""Fixtures for the fleet tests: the reference server (``pushsim server`` on free ports) and a
real Mosquitto, each a process started by the test and stopped by its process id."""
from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_harness import ADMIN_TOKEN, Broker, ReferenceServer, start_mosquitto, stop_process


def _server(*options: str) -> Iterator[dict]:
    """``pushsim server --db :memory: --http-port 0 --mqtt-port 0 OPTIONS``: its JSON line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "server", "--db", ":memory:", "--http-port", "0",
         "--mqtt-port", "0", "--admin-token", ADMIN_TOKEN, "--log-level", "warning", *options],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line:
            pytest.fail("pushsim server did not print its JSON line within 30 s")
        yield json.loads(line)
    finally:
        stop_process(proc)


@pytest.fixture
def reference_server() -> Iterator[ReferenceServer]:
    """The reference server as a subprocess, on free ports."""
    for info in _server():
        yield ReferenceServer(info["http"], info["mqtt"], info["admin_token"])


@pytest.fixture
def ws_server_info() -> Iterator[dict]:
    """The reference server serving MQTT over WebSocket too (``--ws-port``): its JSON line
    (``http``, ``mqtt``, ``ws``)."""
    yield from _server("--ws-port", "0")


@pytest.fixture
def tls_server_info(tmp_path: Path) -> Iterator[tuple[dict, Path]]:
    """The reference server with TLS on: its JSON line (plain ``http`` too) and the CA."""
    tls_dir = tmp_path / "tls"
    for info in _server("--tls-dir", str(tls_dir), "--https-port", "0", "--mqtts-port", "0"):
        yield info, tls_dir / "ca.pem"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The reference server with TLS on (HTTPS and MQTTS): ``(https URL, CA file)``."""
    tls_dir = tmp_path / "tls"
    for info in _server("--tls-dir", str(tls_dir), "--https-port", "0", "--mqtts-port", "0"):
        yield info["https"], tls_dir / "ca.pem"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port, logging connections to a file."""
    with start_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def ws_mosquitto(mosquitto: Broker) -> Iterator[tuple[Broker, str]]:
    """The real Mosquitto behind a WebSocket front (``ws_relay.py``, a process started and
    stopped by its id): ``(broker, ws://127.0.0.1:PORT/mqtt)``."""
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ws_relay.py")),
                              str(mosquitto.port)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([relay.stdout], [], [], 30)
        url = relay.stdout.readline().strip() if ready else ""
        if not url.startswith("ws://"):
            pytest.fail("ws_relay.py did not print its URL within 30 s")
        yield mosquitto, url
    finally:
        stop_process(relay)
