"""What the benchmarks' processes share: the open-files limit, their own memory, loopback
source addresses, reading a child's pipe with a timeout, and a Mosquitto of their own.

Each benchmark starts its brokers and servers as children on free loopback ports and stops
them by their process id; nothing here talks to anything but 127.0.0.0/8.
"""
from __future__ import annotations

import gc
import os
import resource
import selectors
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from simulator.server_child import free_port

__all__ = ["MOSQUITTO", "Child", "Mosquitto", "own_rss", "raise_nofile", "select_readable",
           "source_ips"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def raise_nofile() -> int:
    """Raise this process's soft open-files limit to its hard limit (also a ``preexec_fn``
    for children that hold thousands of connections); the limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def own_rss() -> int:
    """This process's resident set size in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def source_ips(n: int, first: int = 2) -> list[str]:
    """Enough loopback source addresses for ``n`` connections (10,000 each, well under the
    ephemeral port range), from ``127.0.0.<first>`` on."""
    return [f"127.0.0.{first + i}" for i in range(max(1, -(-n // 10_000)))]


def select_readable(files: list[Any], timeout: float) -> list[Any]:
    """Those of ``files`` readable within ``timeout`` seconds (a child's stdout, say)."""
    with selectors.DefaultSelector() as selector:
        for f in files:
            selector.register(f, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(timeout)]


class Child:
    """A child process of a benchmark: its memory, and a stop that always reaps it."""

    proc: subprocess.Popen[Any]

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        """SIGTERM; SIGKILL after 10 s; reaped either way."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def wait_listening(self, port: int, timeout: float, failure: str) -> None:
        """Until ``127.0.0.1:port`` accepts a connection; after ``timeout`` seconds, or if
        the process exits first, stop it and raise ``RuntimeError(failure)``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(failure) from None
                time.sleep(0.05)


class Mosquitto(Child):
    """A Mosquitto of our own on a free loopback port: anonymous, no persistence, no log,
    its open-files limit raised; ready when constructed (``RuntimeError`` if it is not
    within 10 s)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nmax_queued_messages 1000\nlog_dest none\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        self.wait_listening(self.port, 10, "mosquitto did not start (run .ci/install-deps)")
