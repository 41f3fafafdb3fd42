"""Real processes on real loopback sockets: the helpers of the end-to-end tests.

- :class:`Proc` runs a command with its stdout and stderr read line by line by two threads,
  so a test can wait for a line with a deadline and never blocks on a pipe.
- :class:`ServerProc` is ``pushsim server``; :class:`Api` talks to its HTTP API with
  ``http.client`` (the app server's side); :class:`Listener` is ``pushsdk listen``.
- :class:`FaultProxy` is a TCP relay that can hold back what the client sends (to lose a
  PUBACK on purpose).
- ``mqtt_*`` build raw MQTT packets byte by byte, :func:`parse_packets` splits what came
  back, :class:`RawMqtt` is a device connection driven by hand (malformed packets, exact
  timing, takeover).

Every child is registered with a :class:`ProcessGroup` (the ``procs`` fixture of conftest.py), which
SIGKILLs whatever is still running when the test ends, whatever the outcome.

Deliberately nothing here runs the project in-process: these tests see it from the outside. The
one import from it is the HTTP helper (``support.http``, over ``simulator/server_child.py``:
the standard library's ``http.client`` and nothing of the server or the SDK).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


from support.http import basic_auth, http_request, metrics

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN = "integration-admin"
#: How long any single wait may take before the test fails (well under pytest-timeout).
WAIT = 15.0


def command(script: str, module: str) -> list[str]:
    """The installed console script (``.venv/bin/pushsim``), else ``python -m module``."""
    path = BIN / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


PUSHSIM = command("pushsim", "simulator")
PUSHSDK = command("pushsdk", "pushsdk")


class Proc:
    """A child process whose output lines are collected by reader threads."""

    def __init__(self, argv: Sequence[str], *, name: str, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            self.argv, cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace",
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:  # EOF: wake waiters so they can see the process ended
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[], Any], what: str,
                   timeout: float = WAIT) -> Any:
        """Wait until ``predicate()`` (checked on every new output line) is truthy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if self.finished():  # nothing more will come
                    raise AssertionError(f"{self.name}: exited before {what}\n"
                                         f"{self.describe()}")
                if left <= 0:
                    raise AssertionError(f"{self.name}: timed out waiting for {what}\n"
                                         f"{self.describe()}")
                # Also wake now and then: the predicate may look at more than the output.
                self._changed.wait(min(left, 0.1))

    def finished(self) -> bool:
        """The process exited and all its output has been read."""
        return self.popen.poll() is not None and not any(r.is_alive() for r in self._readers)

    def describe(self) -> str:
        with self._changed:
            return (f"  argv: {' '.join(self.argv)}\n  exit: {self.popen.poll()}\n"
                    f"  stdout:\n    " + "\n    ".join(self.stdout[-30:]) +
                    "\n  stderr:\n    " + "\n    ".join(self.stderr[-30:]))

    def stderr_count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.stderr)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit\n{self.describe()}") from None
        for reader in self._readers:  # all output read
            reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL and reap (no cleanup of any kind in the child)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)

    def assert_no_traceback(self) -> None:
        with self._changed:
            assert not any("Traceback" in line for line in self.stderr), self.describe()


class ServerProc(Proc):
    """``pushsim server`` on a database file; ports 0 (any) unless given."""

    def __init__(self, db: Path | str, *, http_port: int = 0, mqtt_port: int = 0,
                 extra: Sequence[str] = ()) -> None:
        super().__init__([*PUSHSIM, "server", "--db", str(db), "--http-port", str(http_port),
                          "--mqtt-port", str(mqtt_port), "--admin-token", ADMIN, *extra],
                         name="pushsim server")
        try:
            line = self.wait_until(lambda: self.stdout, "the startup JSON line")[0]
        except BaseException:
            self.kill()
            raise
        self.info: dict[str, Any] = json.loads(line)
        self.http_url: str = self.info["http"]
        self.mqtt_url: str = self.info["mqtt"]
        self.http_port = int(self.http_url.rsplit(":", 1)[1])
        self.mqtt_port = int(self.mqtt_url.rsplit(":", 1)[1])
        self.api = Api(self.http_port)


class Api:
    """The HTTP API from the app server's side, with ``http.client`` (one connection per
    call, so a restarted server is just another call)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return http_request(self.port, method, path, body, headers, timeout=WAIT)

    def create_app(self, name: str = "e2e") -> dict[str, str]:
        status, body = self.request("POST", "/v1/apps", {"name": name},
                                    {"Authorization": f"Bearer {ADMIN}"})
        assert status == 201, body
        return body

    def register(self, app: dict[str, str], device_id: str) -> dict[str, Any]:
        status, body = self.request("POST", "/v1/devices",
                                    {"device_id": device_id, "platform": "android"},
                                    {"X-App-Key": app["app_key"]})
        assert status == 200, body
        return body

    def push(self, app: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.request("POST", "/v1/push", body, basic_auth(app))
        assert status == 200, answer
        return answer

    def push_data(self, app: dict[str, str], data: Any, *,
                  audience: Any = "all", **options: Any) -> str:
        body: dict[str, Any] = {"audience": audience, "message": {"data": data}}
        if options:
            body["options"] = options
        return self.push(app, body)["msg_id"]

    def status(self, app: dict[str, str], msg_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v1/messages/{msg_id}", headers=basic_auth(app))
        assert status == 200, body
        return body

    def wait_status(self, app: dict[str, str], msg_id: str, **expected: int) -> dict[str, Any]:
        """Poll the delivery status until it shows ``expected`` (the server records a PUBACK
        a moment after the device sent it)."""
        deadline = time.monotonic() + WAIT
        while True:
            status = self.status(app, msg_id)
            if all(status[k] == v for k, v in expected.items()):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"status of {msg_id} is {status}, expected {expected}")
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` parsed into ``{"name{labels}": value}``."""
        return metrics(self.port)


class Listener(Proc):
    """``pushsdk listen`` in server mode (``-v``, so connections are logged on stderr)."""

    def __init__(self, server: ServerProc | str, app: dict[str, str], device_id: str,
                 state: Path, *, exit_after: int | None = None,
                 extra: Sequence[str] = ()) -> None:
        url = server if isinstance(server, str) else server.http_url
        argv = [*PUSHSDK, "listen", "-v", "--server", url, "--app-key", app["app_key"],
                "--device-id", device_id, "--state", str(state), *extra]
        if exit_after is not None:
            argv += ["--exit-after", str(exit_after)]
        super().__init__(argv, name=f"pushsdk listen ({device_id})")

    def messages(self) -> list[dict[str, Any]]:
        with self._changed:
            return [json.loads(line) for line in self.stdout]

    def msg_ids(self) -> list[str]:
        return [m["msg_id"] for m in self.messages()]

    def wait_connected(self, times: int = 1) -> None:
        """Until the listener has logged its ``times``-th successful connection."""
        self.wait_until(lambda: self.stderr_count("pushsdk: connected") >= times,
                        f"connection number {times}")

    def wait_msg_id(self, msg_id: str) -> None:
        self.wait_until(lambda: msg_id in self.msg_ids(), f"message {msg_id}")

    def wait_count(self, n: int) -> None:
        self.wait_until(lambda: len(self.stdout) >= n, f"{n} messages")


class ProcessGroup:
    """Starts processes for one test and SIGKILLs those still running at the end."""

    def __init__(self) -> None:
        self.started: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.started.append(proc)
        return proc

    def server(self, db: Path | str, **kw: Any) -> ServerProc:
        return self.add(ServerProc(db, **kw))  # type: ignore[return-value]

    def listener(self, *args: Any, **kw: Any) -> Listener:
        return self.add(Listener(*args, **kw))  # type: ignore[return-value]

    def run(self, argv: Sequence[str], name: str) -> Proc:
        return self.add(Proc(argv, name=name))

    def kill_all(self) -> None:
        for proc in self.started:
            try:
                proc.kill()
            except Exception:  # keep killing the others
                pass


def pushsdk_register(group: ProcessGroup, server: ServerProc, app: dict[str, str],
                     device_id: str, state: Path) -> dict[str, Any]:
    """``pushsdk register``: its answer, after checking it exited 0 with one JSON line."""
    proc = group.run([*PUSHSDK, "register", "--server", server.http_url, "--app-key",
                      app["app_key"], "--device-id", device_id, "--state", str(state)],
                     "pushsdk register")
    assert proc.wait_exit() == 0, proc.describe()
    assert len(proc.stdout) == 1, proc.describe()
    return json.loads(proc.stdout[0])


# --- a TCP relay that can lose what the client sends ------------------------------------------

class FaultProxy:
    """Relays TCP connections from a local port to ``upstream_port``.

    With ``hold_upstream`` set, bytes from the client are kept in ``held`` instead of being
    forwarded: the client believes it sent them, the server never sees them. What was
    relayed is kept in ``upstream`` (client to server) and ``downstream``.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hold_upstream = False
        self.held = bytearray()
        self.upstream = bytearray()  # what was forwarded to the server
        self.downstream = bytearray()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    if upstream and self.hold_upstream:
                        self.held += data
                        continue
                    (self.upstream if upstream else self.downstream).extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Close every relayed connection (both ends see the connection drop)."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


# --- raw MQTT bytes ----------------------------------------------------------------------------

def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def mqtt_connect(client_id: str, username: str | None = None, password: str | None = None, *,
                 protocol: bytes = b"MQTT", level: int = 4, keepalive: int = 60,
                 clean: bool = False) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (
        0x40 if password is not None else 0)
    body = mqtt_string(protocol) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    body += mqtt_string(client_id)
    if username is not None:
        body += mqtt_string(username)
    if password is not None:
        body += mqtt_string(password)
    return b"\x10" + remaining_length(len(body)) + body


def mqtt_subscribe(packet_id: int, topic: str, qos: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + mqtt_string(topic) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def mqtt_publish(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 1) -> bytes:
    body = mqtt_string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1]) + remaining_length(len(body)) + body


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes; AssertionError if it is still open after
    ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(
            f"connection still open after {timeout} s; got {bytes(data)!r}") from None
    return bytes(data)


def parse_packets(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(type, flags, body)`` of each complete MQTT packet at the start of ``data``."""
    packets, i = [], 0
    while i < len(data):
        first, length, shift, j = data[i], 0, 0, i + 1
        while True:
            if j >= len(data):
                return packets
            length |= (data[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not data[j - 1] & 0x80:
                break
        if j + length > len(data):
            return packets
        packets.append((first >> 4, first & 0x0F, data[j:j + length]))
        i = j + length
    return packets


PUBLISH, PUBACK, SUBACK, CONNACK = 3, 4, 9, 2


class RawMqtt:
    """A device connection spoken byte by byte: send anything, read whole packets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.data = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, predicate: Callable[[list[tuple[int, int, bytes]]], Any], what: str,
             timeout: float = WAIT) -> list[tuple[int, int, bytes]]:
        """Read until ``predicate(packets received since the connection opened)``."""
        self.sock.settimeout(timeout)
        while not predicate(got := parse_packets(bytes(self.data))):
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no {what} within {timeout} s; got {got}") from None
            if not chunk:
                raise AssertionError(f"closed before {what}; got {got}")
            self.data += chunk
        return got

    def login(self, device: dict[str, Any], app: dict[str, str], *, subscribe: bool = True,
              ) -> None:
        """CONNECT (clean session 0) as ``device``, and SUBSCRIBE to its inbox."""
        self.send(mqtt_connect(device["registration_id"], app["app_key"], device["token"]))
        kind, _, body = self.wait(lambda got: got, "CONNACK")[0]
        assert kind == CONNACK and body[1] == 0, body
        if subscribe:
            self.send(mqtt_subscribe(1, device["inbox"]))
            self.wait(lambda got: any(p[0] == SUBACK for p in got), "SUBACK")

    def publishes(self) -> list[tuple[int, int, bytes]]:
        """``(packet_id, dup, payload)`` of every QoS 1 PUBLISH received so far."""
        out = []
        for kind, flags, body in parse_packets(bytes(self.data)):
            if kind == PUBLISH:
                topic_len = int.from_bytes(body[:2], "big")
                pid = int.from_bytes(body[2 + topic_len:4 + topic_len], "big")
                out.append((pid, flags >> 3, body[4 + topic_len:]))
        return out

    def close(self) -> None:
        self.sock.close()


def mqtt_puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


MQTT_DISCONNECT = b"\xe0\x00"
