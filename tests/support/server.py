"""The one server-process helper of the tests: ``python -m simulator.server`` as a child.

(power_bench has its own, for the benchmarks; the tests do not import benchmark internals.)
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "test-admin"
#: The per-source-address limits are for the internet; a test's clients all come from
#: loopback, so they are off unless a test gives ``limits=()`` (the server's defaults).
NO_ADDRESS_LIMITS = ("--registration-rate", "off", "--connection-rate", "off",
                     "--request-rate", "off", "--max-connections-per-address", "off")


class ServerProcess:
    """``python -m simulator.server`` as a child; started at once, ready when constructed.

    stderr goes to ``log`` (appended, owner-only, so a restarted server keeps one log); the
    one JSON line on stdout tells the URLs (``info``, ``http_url``, ``http_port``,
    ``mqtt_port``). The admin token is ``admin_token`` (:data:`ADMIN` unless given).
    """

    def __init__(self, db: Path | str, *, http_port: int = 0, mqtt_port: int = 0,
                 extra: tuple[str, ...] = (), log: Path | None = None,
                 limits: tuple[str, ...] = NO_ADDRESS_LIMITS, admin_token: str = ADMIN,
                 start_timeout: float = 30.0) -> None:
        self.admin_token = admin_token
        argv = [sys.executable, "-m", "simulator.server", "--db", str(db),
                "--http-port", str(http_port), "--mqtt-port", str(mqtt_port),
                "--admin-token", admin_token, "--log-level", "warning", *limits, *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._log: IO[bytes] | int = (_private_log(log) if log is not None
                                      else subprocess.DEVNULL)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        try:
            assert self.proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(self.proc.stdout, selectors.EVENT_READ)
                if not sel.select(start_timeout):
                    raise RuntimeError(f"the server did not start in {start_timeout} s")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the server exited with status {self.proc.wait()}"
                                   f"{f' (see {log})' if log else ''}")
            self.info: dict[str, Any] = json.loads(line)
        except BaseException:
            self.kill()
            raise
        self.http_url: str = self.info["http"]
        self.http_port = int(self.http_url.rsplit(":", 1)[1])
        self.mqtt_port = int(self.info["mqtt"].rsplit(":", 1)[1])

    def rss(self) -> int:
        """The server's resident set size in bytes (0 once it is gone)."""
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def kill(self) -> None:
        """SIGKILL this process (by its id) and reap it: no cleanup of any kind in the server."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not isinstance(self._log, int):
            self._log.close()

    def terminate(self) -> None:
        """SIGTERM (a clean shutdown), then :meth:`kill` after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _private_log(path: Path) -> IO[bytes]:
    """The server's log, appended to, readable by its owner only (0600, any umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")
