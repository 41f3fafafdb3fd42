"""``pushsim server --workers 2`` as real processes: connections spread over the workers by
SO_REUSEPORT, pushes accepted by any worker reach devices connected to any other, exactly
once; takeover across workers; a crashed worker is restarted; clean shutdown."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from server_harness import MqttTestClient, basic, payload
from test_server_process import ROOT, ServerProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ADMIN = "cluster-admin"
DEVICES = 24


@pytest.fixture
async def cluster(tmp_path: Path):
    server = ServerProcess("--db", str(tmp_path / "cluster.db"), "--http-port", "0",
                           "--mqtt-port", "0", "--admin-token", ADMIN, "--workers", "2")
    try:
        info = await server.started()
        assert set(info) == {"http", "mqtt", "admin_token"}
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()


async def _metric(server: ServerProcess, name: str) -> int:
    r = await server.http("GET", "/metrics")
    match = re.search(rf"^pushsim_{name} (\d+)$", r.body.decode(), re.M)
    assert match, name
    return int(match[1])


async def _devices(server: ServerProcess, n: int) -> tuple[dict[str, str], list[dict[str, Any]]]:
    app = (await server.http("POST", "/v1/apps", {"name": "cluster"},
                             {"Authorization": f"Bearer {ADMIN}"})).json
    devices = []
    for i in range(n):
        r = await server.http("POST", "/v1/devices", {"device_id": f"d{i}", "platform": "ios"},
                              {"X-App-Key": app["app_key"]})
        assert r.status == 200
        devices.append(r.json)
    return app, devices


async def _connect(server: ServerProcess, app: dict[str, str],
                   device: dict[str, Any]) -> MqttTestClient:
    client = await server.mqtt()
    connack = await client.connect(device["registration_id"], app["app_key"], device["token"])
    assert connack.return_code == 0
    await client.subscribe(device["inbox"])
    return client


async def test_pushes_reach_devices_on_every_worker_exactly_once(cluster: ServerProcess) -> None:
    server = cluster
    app, devices = await _devices(server, DEVICES)
    clients = [await _connect(server, app, device) for device in devices]
    # Each /metrics request lands on one worker: every one of them holds some devices.
    seen = {await _metric(server, "sessions") for _ in range(12)}
    assert all(0 < n < DEVICES for n in seen), seen

    # One push per device, each over a new HTTP connection (so accepted by either worker).
    sent = {}
    for i, device in enumerate(devices):
        r = await server.http("POST", "/v1/push", {
            "audience": {"registration_id": [device["registration_id"]]},
            "message": {"data": i}}, basic(app))
        assert r.json["targets"] == 1
        sent[i] = r.json["msg_id"]
    with trio.fail_after(10):
        for i, client in enumerate(clients):
            assert payload(*await client.publishes(1))["msg_id"] == sent[i]

    # A broadcast, and a ttl-0 push (only to devices online now, wherever they are).
    for options in ({}, {"ttl": 0}):
        r = await server.http("POST", "/v1/push", {"audience": "all", "options": options,
                                                    "message": {"data": "all"}}, basic(app))
        assert r.json["targets"] == DEVICES
        with trio.fail_after(10):
            for client in clients:
                assert payload(*await client.publishes(1))["msg_id"] == r.json["msg_id"]
        with trio.fail_after(5):  # the PUBACKs are being recorded by both workers
            while True:
                status = (await server.http("GET", f"/v1/messages/{r.json['msg_id']}",
                                            headers=basic(app))).json
                if status["pending"] == 0:
                    break
                await trio.sleep(0.02)
        assert (status["delivered"], status["expired"]) == (DEVICES, 0)

    for client in clients:  # exactly once: nothing more comes
        assert await client.nothing_within(0.05)
    assert await clients[0].nothing_within(0.5)
    for client in clients:
        await client.close()
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err and server.rest == ""


async def test_takeover_across_workers_closes_the_older_connection(
        cluster: ServerProcess) -> None:
    server = cluster
    app, (device,) = await _devices(server, 1)
    old = await _connect(server, app, device)
    previous = None
    for round_ in range(8):  # new connections land on either worker
        new = await _connect(server, app, device)
        with trio.fail_after(5):
            await old.expect_closed()
        await old.close()
        old = new
        r = await server.http("POST", "/v1/push", {
            "audience": {"registration_id": [device["registration_id"]]},
            "message": {"data": round_}}, basic(app))
        with trio.fail_after(5):
            while (got := payload(*await new.publishes(1))["msg_id"]) != r.json["msg_id"]:
                # The PUBACK of the previous round may have raced the takeover: then that
                # message comes again (at least once), and nothing else does.
                assert got == previous
        previous = got
    await old.close()
    assert server.stop()[0] == 0


async def test_a_crashed_worker_is_restarted(cluster: ServerProcess) -> None:
    server = cluster
    app, devices = await _devices(server, 8)
    stderr = server.proc.stderr
    # The parent logs the workers' pids once they listen.
    while True:
        line = await trio.to_thread.run_sync(stderr.readline)
        match = re.search(r"2 workers listening \(pids (\d+), (\d+)\)", line)
        if match:
            break
    os.kill(int(match[1]), signal.SIGKILL)
    while True:
        line = await trio.to_thread.run_sync(stderr.readline)
        assert line, "server ended"
        if "worker 0 restarted" in line:
            break
    clients = [await _connect(server, app, device) for device in devices]
    r = await server.http("POST", "/v1/push", {"audience": "all", "message": {"data": 1}},
                          basic(app))
    with trio.fail_after(10):
        for client in clients:
            assert payload(*await client.publishes(1))["msg_id"] == r.json["msg_id"]
        for client in clients:
            await client.close()
    assert server.stop()[0] == 0


def test_memory_database_is_refused_with_workers() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "simulator.server", "--db", ":memory:",
                           "--workers", "2", "--http-port", "0", "--mqtt-port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushsim server: error: --workers"), lines
