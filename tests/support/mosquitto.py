"""The one Mosquitto of the tests: ``/usr/sbin/mosquitto`` on a free loopback port, with a
config file and a log in a test's temporary directory, stopped by its process id."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from support.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
#: How long the broker may take to accept connections, and the longest wait on its log.
START_TIMEOUT = 10.0
WAIT = 15.0


@attrs.frozen
class Broker:
    """A running Mosquitto: its port, its process and its log (every log type, with the
    connection messages)."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_count(self, text: str) -> int:
        """How many log lines contain ``text``."""
        return sum(text in line for line in self.log_text().splitlines())

    def wait_until(self, predicate: Callable[[], Any], what: str,
                   timeout: float = WAIT) -> Any:
        """Wait until ``predicate()`` is truthy (it usually looks at the log, which Mosquitto
        writes as things happen); fail with the log's tail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"mosquitto: no {what} within {timeout} s\n"
                                     f"{self.log_text()[-2000:]}")
            time.sleep(0.02)
        return result

    def peers(self, client_prefix: str = "pushsim-") -> list[str]:
        """Source addresses of the clients whose id starts with ``client_prefix``, from the log."""
        peers = []
        for line in self.log_text().splitlines():
            # "1700000000: New client connected from 127.0.0.5:41870 as pushsim-3 (p2, c0, k60)."
            if "New client connected from" in line and f" as {client_prefix}" in line:
                address = line.split("connected from ", 1)[1].split(" ", 1)[0]
                peers.append(address.rsplit(":", 1)[0])
        return peers


@contextmanager
def run_mosquitto(directory: Path, extra: str = "", *, persistence: bool = False,
                  port: int | None = None) -> Iterator[Broker]:
    """Run Mosquitto on a free loopback port (or ``port``) until the block ends.

    ``extra``: more config lines (anonymous clients are allowed unless they mention
    ``allow_anonymous``); ``persistence``: keep sessions in ``directory`` across a restart on
    the same port. Returns once the broker accepts TCP connections; fails the test (with the
    log) if it exits or does not within :data:`START_TIMEOUT` seconds.
    """
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run .ci/install-deps (Debian's mosquitto "
                    "package) to get the broker these tests run against", pytrace=False)
    port = port or free_port()
    conf = directory / f"mosquitto-{port}.conf"
    lines = [f"listener {port} 127.0.0.1",
             f"persistence true\npersistence_location {directory}/" if persistence
             else "persistence false",
             "log_dest stderr", "log_type all", "connection_messages true"]
    if "allow_anonymous" not in extra:
        lines.append("allow_anonymous true")
    if os.geteuid() == 0:
        # As root, Mosquitto switches to the user "mosquitto", who cannot read tmp_path.
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n" + extra)
    log = directory / f"mosquitto-{port}.log"
    # stderr, not stdout: C's stderr is unbuffered, so each line is in the file as it happens.
    with open(log, "ab") as sink:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_accepting(proc, port, log)
        yield Broker(port, log, proc)
    finally:
        stop(proc)


def _wait_accepting(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"mosquitto did not start: {log.read_text()[-1000:]}",
                            pytrace=False)
            time.sleep(0.05)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM this one process (by its id), SIGKILL it after 10 s, and reap it."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
