"""The SDK against the real reference server (simulator.server), over memory streams in
virtual time and over loopback sockets through the CLI."""
import json
import random
import time
from functools import partial

import pytest
import trio

from pushsdk import FixedStrategy, MemoryStateStore, PushClient, ServerConfig, VirtualClock
from pushsdk import cli
from sdk_harness import EPOCH, MQTT_HOST, MQTT_PORT, MemoryNetwork

server_mod = pytest.importorskip("simulator.server")
validation = pytest.importorskip("simulator.server.validation")

HTTP_HOST, HTTP_PORT = "push.test", 8480


def make_server(clock, mqtt_host=MQTT_HOST):
    config = server_mod.ServerSettings(admin_token="admin", mqtt_host=mqtt_host,
                                       mqtt_port=MQTT_PORT)
    return server_mod.PushServer(server_mod.SqliteStore(":memory:"), settings=config,
                                 clock=clock, rng=random.Random(7))


def push(server, app_key, doc):
    request = validation.parse_push_request(doc, default_ttl=86400, max_ttl=28 * 86400,
                                            max_audience=1000, max_payload=4096)
    return server.push(app_key, request)


@pytest.fixture
def world(nursery):
    clock = VirtualClock(EPOCH)
    server = make_server(clock)
    app = server.create_app("e2e")
    net = MemoryNetwork(nursery)
    net.serve(HTTP_HOST, HTTP_PORT, server.handle_http_stream)
    net.serve(MQTT_HOST, MQTT_PORT, server.handle_mqtt_stream)
    return server, app, net, clock


def device(net, app, clock, store, **kwargs):
    config = ServerConfig(server_url=f"http://{HTTP_HOST}:{HTTP_PORT}", app_key=app.app_key,
                          device_id="phone-1", alias="alice")
    return PushClient(config, connector=net, state_store=store, clock=clock,
                      rng=random.Random(3), **kwargs)


async def test_push_delivery_receipt_and_offline_queue(world, autojump_clock):
    server, app, net, clock = world
    store = MemoryStateStore()
    got = []
    tokens = []
    async with device(net, app, clock, store, on_notification=got.append,
                      on_message=got.append, on_new_token=tokens.append,
                      strategy=FixedStrategy(270)) as client:
        await client.wait_connected()
        rid = client.registration.registration_id
        await trio.sleep(1)
        result = push(server, app.app_key, {"audience": {"alias": ["alice"]},
                                             "notification": {"title": "T", "body": "B"}})
        while not got:
            await trio.sleep(0.01)
        await client.send_receipt(result.msg_id, "opened")
        # Three hours of heartbeats at 270 s: the server (1.5 x keepalive) never cuts us.
        await trio.sleep(3 * 3600)
        stats = client.statistics()
        status = server.message_status(app.app_key, result.msg_id)
    assert tokens and got[0].msg_id == result.msg_id
    assert got[0].notification == {"title": "T", "body": "B"}
    assert (status.delivered, status.pending, status.opened) == (1, 0, 1)
    assert stats.connects == 1 and stats.heartbeats_failed == 0
    assert stats.heartbeats_sent == pytest.approx(3 * 3600 / 270, abs=1)
    assert stats.receipts_pending == 0

    # Offline: the push waits on the server and arrives (once) after the app restarts.
    queued = push(server, app.app_key, {"audience": {"registration_id": [rid]},
                                         "message": {"data": {"k": 1}}})
    await trio.sleep(600)
    async with device(net, app, clock, store, on_message=got.append) as client:
        await client.wait_connected()
        while len(got) < 2:
            await trio.sleep(0.01)
        await trio.sleep(5)
        assert client.statistics().registrations == 0  # stored token reused
    assert [m.msg_id for m in got] == [result.msg_id, queued.msg_id]
    assert got[1].message == {"data": {"k": 1}}
    assert server.message_status(app.app_key, queued.msg_id).delivered == 1


async def test_cli_listen_against_the_real_server_over_tcp(nursery, tmp_path, capsys):
    server = make_server(None, mqtt_host=None)  # MQTT host = the host the device used
    app = server.create_app("cli")
    running = await nursery.start(partial(server.serve_tcp, http_port=0, mqtt_port=0))
    argv = ["listen", "--server", running.http_url, "--app-key", app.app_key,
            "--device-id", "d-cli", "--state", str(tmp_path / "s.bin"), "--exit-after", "1"]
    async with trio.open_nursery() as inner:
        result = []

        async def listen():
            result.append(await trio.to_thread.run_sync(cli.main, argv))

        inner.start_soon(listen)
        def online():
            rids = server.resolve(app.app_key, "all")
            return bool(rids) and server.is_online(rids[0])

        with trio.fail_after(20):
            while not result and not online():
                await trio.sleep(0.01)
        assert not result, "listen ended before it connected"
        sent = push(server, app.app_key, {"audience": "all",
                                           "notification": {"title": "x", "body": "y"}})
    assert result == [0]
    line = json.loads(capsys.readouterr().out)
    assert line["msg_id"] == sent.msg_id and line["kind"] == "notification"
    assert server.message_status(app.app_key, sent.msg_id).delivered == 1
    assert time.time() - line["sent_at"] < 60
