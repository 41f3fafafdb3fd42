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

from pushsdk.protocol import PubAck, Publish
from server_harness import MqttTestClient, basic, payload
from test_server_process import ROOT, ServerCommand

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ADMIN = "cluster-admin"
DEVICES = 24


@pytest.fixture
async def cluster(tmp_path: Path):
    server = ServerCommand("--db", str(tmp_path / "cluster.db"), "--http-port", "0",
                           "--mqtt-port", "0", "--admin-token", ADMIN, "--workers", "2")
    try:
        info = await server.started()
        assert set(info) == {"http", "mqtt", "admin_token"}
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()


async def _metric(server: ServerCommand, name: str) -> int:
    r = await server.http("GET", "/metrics")
    match = re.search(rf"^pushsim_{name} (\d+)$", r.body.decode(), re.M)
    assert match, name
    return int(match[1])


async def _devices(server: ServerCommand, n: int) -> tuple[dict[str, str], list[dict[str, Any]]]:
    app = (await server.http("POST", "/v1/apps", {"name": "cluster"},
                             {"Authorization": f"Bearer {ADMIN}"})).json
    devices = []
    for i in range(n):
        r = await server.http("POST", "/v1/devices", {"device_id": f"d{i}", "platform": "ios"},
                              {"X-App-Key": app["app_key"]})
        assert r.status == 200
        devices.append(r.json)
    return app, devices


async def _connect(server: ServerCommand, app: dict[str, str],
                   device: dict[str, Any]) -> MqttTestClient:
    client = await server.mqtt()
    connack = await client.connect(device["registration_id"], app["app_key"], device["token"])
    assert connack.return_code == 0
    await client.subscribe(device["inbox"])
    return client


async def test_pushes_reach_devices_on_every_worker_exactly_once(cluster: ServerCommand) -> None:
    server = cluster
    app, devices = await _devices(server, DEVICES)
    clients = [await _connect(server, app, device) for device in devices]
    # Each /metrics request lands on one worker, which adds up all of them.
    seen = {await _metric(server, "sessions") for _ in range(12)}
    assert seen == {DEVICES}, seen

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
        cluster: ServerCommand) -> None:
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


async def test_a_crashed_worker_is_restarted(cluster: ServerCommand) -> None:
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


async def test_metrics_add_up_all_workers_and_never_go_backwards(cluster: ServerCommand) -> None:
    """Scrapes land on either worker (SO_REUSEPORT); under load, and across a worker's
    crash and restart, every counter only grows (parsed with prometheus_client's own
    parser), and the totals are the whole server's."""
    server = cluster
    app, devices = await _devices(server, 6)
    clients = [await _connect(server, app, device) for device in devices]
    pids = await _worker_pids(server)
    scrapes: list[dict] = []

    async def scrape() -> None:
        r = await _retrying(server, "GET", "/metrics")
        scrapes.append(_counters(r.body.decode()))

    async def pushes(first: int, n: int) -> None:
        for i in range(first, first + n):
            r = await server.http("POST", "/v1/push", {
                "audience": {"registration_id": [devices[i % 6]["registration_id"]]},
                "message": {"data": i}}, basic(app))
            assert r.status == 200
            if i % 5 == 0:
                await scrape()

    async def acknowledge(device: dict, client: MqttTestClient) -> None:
        while True:  # a device of the killed worker connects again, as the SDK would
            event = await client.receive()
            if isinstance(event, Publish):
                await client.send(PubAck(event.packet_id))
                continue
            await client.close()
            while True:
                try:
                    client = await _connect(server, app, device)
                    break
                except (OSError, AssertionError, trio.BrokenResourceError):
                    await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for device, client in zip(devices, clients):
            nursery.start_soon(acknowledge, device, client)
        await pushes(0, 50)
        await scrape()  # both workers report (and keep) what they counted
        os.kill(pids[1], signal.SIGKILL)
        restarted = trio.Event()
        nursery.start_soon(_wait_restart, server, restarted)
        while not restarted.is_set():
            await scrape()  # the survivor answers for the dead one from its last report
            await trio.sleep(0.05)
        await pushes(50, 100)
        await trio.sleep(0.5)
        await scrape()
        nursery.cancel_scope.cancel()
    for before, after in zip(scrapes, scrapes[1:]):
        for key, value in before.items():
            assert after.get(key, 0) >= value, (key, value, after.get(key))
    final = scrapes[-1]
    assert final[("pushsim_pushes_accepted_total", ())] == 150
    assert final[("pushsim_push_latency_seconds_count", ())] == 150
    assert final[("pushsim_connect_latency_seconds_count", ())] >= 6
    assert final[("pushsim_http_responses_total", (("code", "200"),))] >= 150
    assert server.stop()[0] == 0


def _counters(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(text):
        if family.type in ("counter", "histogram"):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def _retrying(server: ServerCommand, method: str, path: str):
    """A request that may land on a worker being killed: tried again on a new connection."""
    import h11

    for _ in range(100):
        try:
            return await server.http(method, path)
        except (OSError, EOFError, trio.BrokenResourceError, h11.ProtocolError):
            await trio.sleep(0.05)
    raise AssertionError(f"{method} {path} never answered")


async def _worker_pids(server: ServerCommand) -> list[int]:
    """The workers' pids, from the supervisor's log line once they listen."""
    while True:
        line = await trio.to_thread.run_sync(server.proc.stderr.readline)
        assert line, "server ended"
        match = re.search(r"2 workers listening \(pids (\d+), (\d+)\)", line)
        if match:
            return [int(match[1]), int(match[2])]


async def _wait_restart(server: ServerCommand, restarted: trio.Event) -> None:
    while True:
        line = await trio.to_thread.run_sync(server.proc.stderr.readline)
        assert line, "server ended"
        if "worker 1 restarted" in line:
            restarted.set()
            return
