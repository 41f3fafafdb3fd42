"""``python -m simulator.server`` as a real process: the startup line, clean shutdown on
signals, one-line errors, and durability across ``kill -9``."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from pushsdk.protocol import Disconnect
from server_harness import HttpTestClient, MqttTestClient, basic, payload
from support.server import start_server

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "process-admin"


class ServerCommand:
    """``python -m simulator.server *args`` exactly as given, stdout and stderr captured: the
    command line under test (tests that only need a running server use ``server_process``)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.server", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.info: dict[str, Any] = {}

    async def started(self) -> dict[str, Any]:
        with trio.fail_after(20):
            line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert line.endswith("\n"), (line, self.proc.stderr.read())
        self.info = json.loads(line)
        return self.info

    def port(self, kind: str) -> int:
        return int(self.info[kind].rsplit(":", 1)[1])

    async def http(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None):
        stream = await trio.open_tcp_stream("127.0.0.1", self.port("http"))
        try:
            return await HttpTestClient(stream).request(method, path, body, headers=headers)
        finally:
            await stream.aclose()

    async def mqtt(self) -> MqttTestClient:
        return MqttTestClient(await trio.open_tcp_stream("127.0.0.1", self.port("mqtt")))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig`` and wait; the exit status and stderr (remaining stdout kept in
        ``self.rest``)."""
        self.proc.send_signal(sig)
        self.rest, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


@pytest.fixture
def processes():
    started: list[ServerCommand] = []

    def start(*args: str) -> ServerCommand:
        proc = ServerCommand(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate()


async def test_startup_line_and_clean_shutdown_on_signals(processes, tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = processes("--db", str(tmp_path / "a.db"), "--http-port", "0",
                           "--mqtt-port", "0")
        info = await server.started()
        assert set(info) == {"http", "mqtt", "admin_token"}
        assert info["http"].startswith("http://127.0.0.1:") and server.port("http") > 0
        assert info["mqtt"].startswith("mqtt://127.0.0.1:") and server.port("mqtt") > 0
        assert len(info["admin_token"]) >= 20
        r = await server.http("GET", "/healthz")
        assert r.status == 200
        code, err = server.stop(sig)
        assert code == 0, err
        assert "Traceback" not in err and "shutting down" in err
        assert server.rest == ""  # exactly one line on stdout


async def test_accepted_push_survives_kill_9_and_is_delivered_once(processes,
                                                                   tmp_path: Path) -> None:
    db = str(tmp_path / "push.db")
    args = ("--db", db, "--http-port", "0", "--mqtt-port", "0", "--admin-token", ADMIN)
    server = processes(*args)
    await server.started()
    app = (await server.http("POST", "/v1/apps", {"name": "durable"},
                             {"Authorization": f"Bearer {ADMIN}"})).json
    device = (await server.http("POST", "/v1/devices",
                                {"device_id": "phone", "platform": "android"},
                                {"X-App-Key": app["app_key"]})).json
    audience = {"registration_id": [device["registration_id"]]}

    async def connect(srv: ServerCommand) -> tuple[MqttTestClient, bool]:
        client = await srv.mqtt()
        connack = await client.connect(device["registration_id"], app["app_key"],
                                       device["token"])
        assert connack.return_code == 0
        await client.subscribe(device["inbox"])
        return client, connack.session_present

    # m0 is sent but never acknowledged; m1 is accepted while the device is away.
    client, _ = await connect(server)
    r = await server.http("POST", "/v1/push", {"audience": audience, "message": {"data": 0}},
                          basic(app))
    m0 = r.json["msg_id"]
    assert payload(await client.expect_publish())["msg_id"] == m0
    await client.close()
    r = await server.http("POST", "/v1/push", {"audience": audience, "message": {"data": 1}},
                          basic(app))
    assert r.status == 200
    m1 = r.json["msg_id"]
    server.proc.kill()  # SIGKILL right after the 200
    server.proc.wait()

    restarted = processes(*args)
    await restarted.started()
    client, present = await connect(restarted)
    assert present
    got = await client.publishes(2)
    assert [(payload(p)["msg_id"], p.dup) for p in got] == [(m0, True), (m1, False)]
    await trio.sleep(0.2)
    await client.send(Disconnect())
    await client.close()
    client, _ = await connect(restarted)
    assert await client.nothing_within(0.5)  # exactly once: nothing comes again
    for msg_id in (m0, m1):
        r = await restarted.http("GET", f"/v1/messages/{msg_id}", headers=basic(app))
        assert (r.json["delivered"], r.json["pending"]) == (1, 0)
    await client.close()
    code, err = restarted.stop()
    assert code == 0 and "Traceback" not in err


def _bound_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("case", ["port in use", "bad db", "tls", "bad port"])
def test_user_mistakes_are_one_line_errors(case: str, tmp_path: Path) -> None:
    busy = _bound_port()
    args = {
        "port in use": ["--db", ":memory:", "--http-port", str(busy.getsockname()[1])],
        "bad db": ["--db", str(tmp_path / "no" / "such" / "dir.db")],
        "tls": ["--db", ":memory:", "--mqtts-port", "0"],  # without --tls-dir
        "bad port": ["--http-port", "99999"],
    }[case]
    expect = {"port in use": "cannot listen", "bad db": "cannot open database",
              "tls": "need --tls-dir", "bad port": "port must be 0-65535"}[case]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "simulator.server", "--mqtt-port", "0", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    busy.close()
    assert done.returncode == (2 if case == "bad port" else 1), done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr and expect in done.stderr
    lines = done.stderr.strip().splitlines()
    if case == "bad port":  # argparse: usage, then the one error line
        assert lines[-1].startswith("pushsim server: error: argument --http-port")
    else:
        assert len(lines) == 1 and lines[0].startswith("pushsim server: error: "), lines


#: A 3.1.1 CONNECT (client id "emfile", username "nobody", password "x"): refused with
#: CONNACK 4 or 5, then closed, so that every answered connection gives its descriptor back.
_UNKNOWN_CONNECT = (b"\x10\x1d\x00\x04MQTT\x04\xc2\x00\x3c"
                    b"\x00\x06emfile\x00\x06nobody\x00\x01x")


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.timeout(60)
def test_out_of_descriptors_the_mqtt_listener_waits_and_serves_everyone(tmp_path: Path) -> None:
    """EMFILE on accept: the plain MQTT listener logs one line, retries, and answers the
    connections that waited in the backlog once descriptors are free again."""
    import resource

    log = tmp_path / "server.log"
    server = start_server(tmp_path / "push.db", log=log)
    try:
        pid = server.proc.pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 3, in_use + 3))
        clients = [socket.create_connection(("127.0.0.1", server.mqtt_port), timeout=10)
                   for _ in range(10)]
        try:
            # Three are accepted and wait for their CONNECT; the others cannot be.
            assert _wait_for(lambda: "accept failed: [Errno 24]" in log.read_text(), 10)
            for client in clients:
                client.sendall(_UNKNOWN_CONNECT)
            answers = [client.recv(4) for client in clients]
        finally:
            for client in clients:
                client.close()
        assert all(a[:3] == b"\x20\x02\x00" and a[3] in (4, 5) for a in answers), answers
        assert server.proc.poll() is None
    finally:
        server.terminate()
    assert server.proc.returncode == 0
    assert "Traceback" not in log.read_text()
