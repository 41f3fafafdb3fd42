"""Fixtures for the fleet tests: the reference server (``server_process``) and a
real Mosquitto (``mosquitto``, from tests/conftest.py), each a process started by the test
and stopped by its process id."""
from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet_harness import ADMIN_TOKEN, ReferenceServer, stop_process
from support.mosquitto import Broker
from simulator.server_child import ServerChild


def _server(server_process: Callable[..., ServerChild], *options: str) -> dict:
    """The reference server on free ports with an in-memory database and its default limits:
    its JSON line (``http``, ``mqtt``, ``admin_token``, ...)."""
    return server_process(":memory:", extra=options, limits=(), admin_token=ADMIN_TOKEN).info


@pytest.fixture
def reference_server(server_process: Callable[..., ServerChild]) -> ReferenceServer:
    """The reference server as a subprocess, on free ports."""
    info = _server(server_process)
    return ReferenceServer(info["http"], info["mqtt"], info["admin_token"])


@pytest.fixture
def ws_server_info(server_process: Callable[..., ServerChild]) -> dict:
    """The reference server serving MQTT over WebSocket too (``--ws-port``): its JSON line
    (``http``, ``mqtt``, ``ws``)."""
    return _server(server_process, "--ws-port", "0")


@pytest.fixture
def tls_server_info(tmp_path: Path,
                    server_process: Callable[..., ServerChild]) -> tuple[dict, Path]:
    """The reference server with TLS on: its JSON line (plain ``http`` too) and the CA."""
    tls_dir = tmp_path / "tls"
    info = _server(server_process, "--tls-dir", str(tls_dir), "--https-port", "0",
                   "--mqtts-port", "0")
    return info, tls_dir / "ca.pem"


@pytest.fixture
def tls_server(tls_server_info: tuple[dict, Path]) -> tuple[str, Path]:
    """The reference server with TLS on (HTTPS and MQTTS): ``(https URL, CA file)``."""
    info, ca = tls_server_info
    return info["https"], ca


@pytest.fixture
def ws_mosquitto(mosquitto: Broker) -> Iterator[tuple[Broker, str]]:
    """The real Mosquitto behind a WebSocket front (``ws_relay.py``, a process started and
    stopped by its id): ``(broker, ws://127.0.0.1:PORT/mqtt)``."""
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ws_relay.py")),
                              str(mosquitto.port)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([relay.stdout], [], [], 30)
        url = relay.stdout.readline().strip() if ready and relay.stdout else ""
        if not url.startswith("ws://"):
            pytest.fail("ws_relay.py did not print its URL within 30 s")
        yield mosquitto, url
    finally:
        stop_process(relay)
