"""The server on real loopback sockets, in-process: paho-mqtt as a foreign MQTT client and
plain http.client for the API, as an operator's own tools would talk to it."""
from __future__ import annotations

import base64
import functools
import http.client
import json
import queue
import threading
import time
from typing import Any

import pytest
import trio

from simulator.server import RunningServer, ServerSettings, run_server

pytestmark = pytest.mark.timeout(60)
ADMIN = "socket-admin"


def call(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def paho_flow(running: RunningServer) -> dict[str, Any]:
    """Register over HTTP, connect with paho, receive a push, let paho PUBACK it."""
    import paho.mqtt.client as mqtt

    port = running.http_port
    _, app = call(port, "POST", "/v1/apps", {"name": "paho"},
                  {"Authorization": f"Bearer {ADMIN}"})
    _, device = call(port, "POST", "/v1/devices", {"device_id": "paho-1", "platform": "linux"},
                     {"X-App-Key": app["app_key"]})
    assert device["mqtt"] == {"host": "127.0.0.1", "port": running.mqtt_port, "tls": False,
                              "versions": ["3.1.1", "5"]}
    basic = "Basic " + base64.b64encode(
        f"{app['app_key']}:{app['master_secret']}".encode()).decode()

    received: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device["registration_id"],
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.username_pw_set(app["app_key"], device["token"])
    client.on_message = lambda c, userdata, message: received.put(message)
    client.on_subscribe = lambda c, userdata, mid, codes, props: subscribed.set()
    client.connect(device["mqtt"]["host"], device["mqtt"]["port"], keepalive=30)
    client.loop_start()
    try:
        client.subscribe(device["inbox"], qos=1)
        assert subscribed.wait(10)
        status, pushed = call(port, "POST", "/v1/push", {
            "audience": "all",
            "notification": {"title": "from http", "body": "to paho"}}, {"Authorization": basic})
        assert status == 200 and pushed["targets"] == 1
        message = received.get(timeout=10)
        deadline = time.monotonic() + 10  # test-side polling of the real server
        while True:
            _, state = call(port, "GET", f"/v1/messages/{pushed['msg_id']}",
                            headers={"Authorization": basic})
            if state["delivered"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return {"topic": message.topic, "qos": message.qos, "payload": json.loads(message.payload),
            "inbox": device["inbox"], "msg_id": pushed["msg_id"], "state": state}


async def test_paho_receives_a_push_sent_over_http() -> None:
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(functools.partial(
            run_server, ServerSettings(admin_token=ADMIN), http_port=0, mqtt_port=0))
        result = await trio.to_thread.run_sync(paho_flow, running)
        stats = running.server.statistics()
        nursery.cancel_scope.cancel()
    assert result["topic"] == result["inbox"] and result["qos"] == 1
    assert result["payload"]["msg_id"] == result["msg_id"]
    assert result["payload"]["notification"] == {"title": "from http", "body": "to paho"}
    assert (result["state"]["delivered"], result["state"]["pending"]) == (1, 0)
    assert stats.messages_delivered == 1 and stats.mqtt_connections_accepted == 1


async def test_http_over_tcp_lingering_413_is_readable() -> None:
    """A client that is still sending a too-large body gets the 413, not a reset."""
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(functools.partial(
            run_server, ServerSettings(admin_token=ADMIN), http_port=0, mqtt_port=0))

        def post_big() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=10)
            conn.putrequest("POST", "/v1/push")
            conn.putheader("Content-Length", str(1_000_000))
            conn.endheaders()
            try:
                conn.send(b"x" * 1_000_000)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return conn.getresponse().status

        assert await trio.to_thread.run_sync(post_big) == 413
        nursery.cancel_scope.cancel()
