"""The reference server as a child process, for the scripts, benchmarks and tests that start one.

``ServerChild(db)`` runs ``python -m simulator.server`` on loopback, waits for its startup
line (docs/interfaces.md §1: one JSON object with the ``http`` and ``mqtt`` URLs and the admin
token) and stops it by its process id. The blocking HTTP helpers make the few calls such a
script needs (create an app, read ``/metrics``) with the standard library alone; they go to
``127.0.0.1`` only.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["LOOPBACK_LIMITS", "ServerChild", "basic_auth", "create_app", "free_port",
           "http_request", "metrics"]

#: The per-source-address limits are for the internet; a local run's clients all come from
#: loopback, so a benchmark or a test turns them off unless it measures them.
LOOPBACK_LIMITS = ("--registration-rate", "off", "--connection-rate", "off",
                   "--request-rate", "off", "--max-connections-per-address", "off")

#: The folder holding the ``simulator`` package: the child's working directory and
#: ``PYTHONPATH``, so that it runs this very tree.
_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for a child that must be told its port,
    or a server restarted on the same port). A listener that can bind port 0 itself should."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerChild:
    """``python -m simulator.server`` as a child; started at once, ready when constructed.

    ``admin_token`` None lets the server draw one (read back as :attr:`admin_token`);
    ``limits`` are options for the per-address limits (``()``: the server's defaults,
    :data:`LOOPBACK_LIMITS`: off); ``extra`` more options. stderr goes to ``log`` (appended
    and owner-only, so a restarted server keeps one private log), else nowhere.
    ``RuntimeError`` if the server exits or says nothing within ``start_timeout`` seconds.
    """

    def __init__(self, db: Path | str, *, http_port: int = 0, mqtt_port: int = 0,
                 admin_token: str | None = None, limits: tuple[str, ...] = (),
                 extra: tuple[str, ...] = (), log: Path | None = None,
                 start_timeout: float = 30.0) -> None:
        argv = [sys.executable, "-m", "simulator.server", "--db", str(db),
                "--http-port", str(http_port), "--mqtt-port", str(mqtt_port),
                "--log-level", "warning", *limits, *extra]
        if admin_token is not None:
            argv += ["--admin-token", admin_token]
        env = {**os.environ, "PYTHONPATH": str(_ROOT)}
        self._log: IO[bytes] | int = (_private_log(log) if log is not None
                                      else subprocess.DEVNULL)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=_ROOT, env=env)
        try:
            self.info: dict[str, Any] = self._startup_line(start_timeout, log)
        except BaseException:
            self.kill()
            raise
        self.admin_token: str = self.info["admin_token"]
        self.http_url: str = self.info["http"]
        self.http_port = int(self.http_url.rsplit(":", 1)[1])
        self.mqtt_port = int(self.info["mqtt"].rsplit(":", 1)[1])

    def _startup_line(self, timeout: float, log: Path | None) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None  # stdout=PIPE
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"the server did not start in {timeout} s")
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the server exited with status {self.proc.wait()}"
                               f"{f' (see {log})' if log else ''}")
        info: dict[str, Any] = json.loads(line)
        return info

    def create_app(self, name: str) -> dict[str, str]:
        """``POST /v1/apps`` with the admin token: ``{"name", "app_key", "master_secret"}``."""
        return create_app(self.http_port, name, self.admin_token)

    def metrics(self) -> dict[str, float]:
        """``GET /metrics``, parsed (see :func:`metrics`)."""
        return metrics(self.http_port)

    def rss(self) -> int:
        """The server's resident set size in bytes (0 once it is gone)."""
        import psutil  # [sim]; the server itself does not need it

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
        if not isinstance(self._log, int):  # not subprocess.DEVNULL
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


# --- the HTTP API, blocking ---------------------------------------------------------------


def http_request(port: int, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0,
                 ) -> tuple[int, Any]:
    """One request to ``127.0.0.1:port`` on a fresh connection: ``(status, decoded JSON or
    text)``; ``body`` is sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if "json" in (response.getheader("Content-Type") or ""):
        return response.status, json.loads(raw)
    return response.status, raw.decode("utf-8", "replace")


def basic_auth(app: dict[str, str]) -> dict[str, str]:
    """The ``Authorization`` header of an app server (HTTP Basic, app key and master secret)."""
    raw = f"{app['app_key']}:{app['master_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def create_app(port: int, name: str, admin_token: str) -> dict[str, str]:
    """``POST /v1/apps``: the new app's JSON; ``RuntimeError`` unless 201."""
    status, body = http_request(port, "POST", "/v1/apps", {"name": name},
                                {"Authorization": f"Bearer {admin_token}"})
    if status != 201:
        raise RuntimeError(f"cannot create an app: {status} {body}")
    app: dict[str, str] = body
    return app


def metrics(port: int) -> dict[str, float]:
    """``GET /metrics`` parsed: ``{sample name with its labels: value}``; ``RuntimeError``
    unless 200."""
    status, text = http_request(port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics: {status}")
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
