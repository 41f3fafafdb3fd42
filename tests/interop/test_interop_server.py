"""MQTT clients nobody here wrote, as MQTT 5 devices of the reference server, over real
loopback sockets: paho-mqtt (Python) over TCP and over WebSocket, MQTT.js (Node.js) over
WebSocket (``tests/interop/js``; ``.ci/install-deps`` installs it from the lock file).

Each test starts ``pushsim server`` (``python -m simulator server``) on free loopback ports
with ``--ws-port 0`` and talks to it like an app server (HTTP) and a device (MQTT)."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent
JS = HERE / "js"
ADMIN = "interop-admin"


class Server:
    """A ``pushsim server`` process and the HTTP calls of an app server."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "server", "--db", str(tmp / "interop.db"),
             "--http-port", "0", "--mqtt-port", "0", "--ws-port", "0", "--admin-token", ADMIN,
             "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())
        self.mqtt_port = int(self.info["mqtt"].rsplit(":", 1)[1])
        self.ws_port = int(self.info["ws"].rsplit(":", 1)[1].split("/")[0])
        self.app = self.call("POST", "/v1/apps", {"name": "interop"},
                             {"Authorization": f"Bearer {ADMIN}"})

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.info["http"] + path, data=data, method=method,
                                         headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def basic(self) -> dict[str, str]:
        raw = f"{self.app['app_key']}:{self.app['master_secret']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def register(self, device_id: str) -> dict[str, Any]:
        return self.call("POST", "/v1/devices", {"device_id": device_id, "platform": "web"},
                         {"X-App-Key": self.app["app_key"]})

    def push(self, device: dict[str, Any], data: Any, ttl: int = 3600) -> str:
        answer = self.call("POST", "/v1/push", {
            "audience": {"registration_id": [device["registration_id"]]},
            "message": {"data": data}, "options": {"ttl": ttl}}, self.basic())
        return str(answer["msg_id"])

    def status(self, msg_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/messages/{msg_id}", headers=self.basic()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class PahoDevice:
    """paho-mqtt 2 as an MQTT 5 device (persistent session, manual acknowledgements)."""

    def __init__(self, server: Server, device: dict[str, Any], transport: str, *,
                 token: str | None = None, receive_maximum: int | None = None) -> None:
        self.device = device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=device["registration_id"], protocol=mqtt.MQTTv5,
                                  transport=transport, manual_ack=True)
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        self.client.username_pw_set(server.app["app_key"], token or device["token"])
        self.connack: list[Any] = []
        self.subacks: list[list[int]] = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append(
            [code.value for code in codes])
        self.client.on_message = lambda c, u, message: self.messages.append(message)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0xFFFFFFFF
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        port = server.ws_port if transport == "websockets" else server.mqtt_port
        self.client.connect("127.0.0.1", port, keepalive=60, clean_start=False,
                            properties=properties)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack.append((reason.value, properties))
        if reason.value == 0:
            client.subscribe(self.device["inbox"], qos=1)

    def reason_code(self) -> int:
        wait_for(lambda: self.connack)
        return int(self.connack[0][0])

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self.client.ack(message.mid, message.qos)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_paho_mqtt5_refusals(server: Server, transport: str) -> None:
    device = server.register(f"refused-{transport}")
    bad = PahoDevice(server, device, transport, token="not-a-token")
    assert bad.reason_code() == 0x86  # bad user name or password: register again
    bad.stop()
    server.call("DELETE", f"/v1/devices/{device['registration_id']}",
                headers={"Authorization": f"Bearer {device['token']}"})
    revoked = PahoDevice(server, device, transport)
    assert revoked.reason_code() == 0x87  # not authorised: the device was unregistered
    assert "unregistered" in revoked.connack[0][1].ReasonString
    revoked.stop()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_paho_mqtt5_push_properties_and_receive_maximum(server: Server, transport: str) -> None:
    device = server.register(f"phone-{transport}")
    first = server.push(device, "stored", ttl=100)
    others = [server.push(device, n) for n in range(3)]
    time.sleep(2.0)  # stored for two seconds: its expiry interval counts down
    paho = PahoDevice(server, device, transport, receive_maximum=2)
    assert paho.reason_code() == 0
    properties = paho.connack[0][1]
    assert (properties.MaximumQoS, properties.RetainAvailable) == (1, 0)
    wait_for(lambda: len(paho.messages) == 2)
    time.sleep(1.0)  # the device allows 2 unacknowledged: nothing more may come
    assert len(paho.messages) == 2
    stored = paho.messages[0]
    props = stored.properties
    assert 90 <= props.MessageExpiryInterval <= 98
    assert props.UserProperty == [("msg_id", first), ("kind", "message")]
    assert (props.PayloadFormatIndicator, props.ContentType) == (1, "application/json")
    assert json.loads(stored.payload)["message"] == {"data": "stored"}
    for n in range(2):
        paho.ack(paho.messages[n])
        wait_for(lambda: len(paho.messages) == n + 3)  # noqa: B023  (called in this iteration)
    paho.ack(paho.messages[2])
    paho.ack(paho.messages[3])
    ids = [message.properties.UserProperty[0][1] for message in paho.messages]
    assert ids == [first, *others]
    wait_for(lambda: server.status(others[-1])["delivered"] == 1)
    paho.stop()


def test_ws_with_workers_and_takeover(tmp_path: Path) -> None:
    """--workers 2 serve the WebSocket port too; a second connection of the device, on
    whichever worker, takes the first over (DISCONNECT 0x8E to a 5.0 one)."""
    server = Server(tmp_path, "--workers", "2")
    try:
        device = server.register("phone-workers")
        disconnects: list[int] = []
        first = PahoDevice(server, device, "websockets")
        first.client.on_disconnect = lambda c, u, f, reason, p: disconnects.append(reason.value)
        assert first.reason_code() == 0
        wait_for(lambda: first.subacks)
        second = PahoDevice(server, device, "tcp")
        assert second.reason_code() == 0
        wait_for(lambda: disconnects)
        assert disconnects[0] == 0x8E  # session taken over
        first.client.loop_stop()
        msg_id = server.push(device, "to the second")
        wait_for(lambda: second.messages)
        assert second.messages[0].properties.UserProperty[0] == ("msg_id", msg_id)
        second.stop()
    finally:
        server.stop()


# --- MQTT.js --------------------------------------------------------------------------------

def node_device(spec: dict[str, Any]) -> subprocess.Popen[str]:
    assert (JS / "node_modules" / "mqtt").is_dir(), \
        "MQTT.js is not installed: run .ci/install-deps (npm ci in tests/interop/js)"
    node = shutil.which("node")
    assert node is not None, "Node.js is not installed: run .ci/install-deps"
    return subprocess.Popen([node, str(JS / "server_device.js"), json.dumps(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=JS)


def lines_until(proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        doc = json.loads(line)
        assert doc["event"] != "timeout", doc
        if doc["event"] == event:
            return dict(doc)
    raise AssertionError(f"MQTT.js ended before {event!r} (status {proc.wait()})")


def test_mqttjs_over_websocket(server: Server) -> None:
    device = server.register("browser-1")
    spec = {"url": server.info["ws"], "clientId": device["registration_id"],
            "username": server.app["app_key"], "password": device["token"],
            "inbox": device["inbox"]}
    proc = node_device(spec)
    try:
        connack = lines_until(proc, "connack")
        assert connack["properties"]["maximumQoS"] == 1
        assert lines_until(proc, "suback")["granted"] == [1]
        msg_id = server.push(device, {"from": "app server"}, ttl=600)
        message = lines_until(proc, "message")
        props = message["properties"]
        assert props["userProperties"] == {"msg_id": msg_id, "kind": "message"}
        assert 590 <= props["messageExpiryInterval"] <= 600
        assert props["contentType"] == "application/json"
        assert message["topic"] == device["inbox"]
        assert json.loads(message["payload"])["message"] == {"data": {"from": "app server"}}
        wait_for(lambda: server.status(msg_id)["delivered"] == 1)  # MQTT.js acknowledged
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mqttjs_is_told_bad_token(server: Server) -> None:
    device = server.register("browser-2")
    proc = node_device({"url": server.info["ws"], "clientId": device["registration_id"],
                        "username": server.app["app_key"], "password": "wrong",
                        "inbox": device["inbox"]})
    error = lines_until(proc, "error")
    assert error["code"] == 0x86, error
    assert proc.wait(timeout=20) == 1


def test_paho_over_wss(tmp_path: Path) -> None:
    """--tls-dir with --wss-port: MQTT over WebSocket over TLS, advertised as mqtt.ws."""
    server = Server(tmp_path, "--tls-dir", str(tmp_path / "tls"), "--mqtts-port", "0",
                    "--wss-port", "0")
    try:
        wss_port = int(server.info["wss"].rsplit(":", 1)[1].split("/")[0])
        assert server.info["wss"] == f"wss://127.0.0.1:{wss_port}/mqtt"
        device = server.register("phone-wss")
        assert device["mqtt"]["ws"] == f"wss://127.0.0.1:{wss_port}/mqtt"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=device["registration_id"], protocol=mqtt.MQTTv5,
                             transport="websockets")
        client.ws_set_options(path="/mqtt")
        client.tls_set(ca_certs=str(tmp_path / "tls" / "ca.pem"))
        client.username_pw_set(server.app["app_key"], device["token"])
        got: list[mqtt.MQTTMessage] = []
        client.on_connect = lambda c, u, f, reason, p: c.subscribe(device["inbox"], qos=1)
        client.on_subscribe = lambda c, u, mid, codes, p: got.append(None)  # type: ignore
        client.on_message = lambda c, u, message: got.append(message)
        client.connect("127.0.0.1", wss_port)
        client.loop_start()
        try:
            wait_for(lambda: got)
            msg_id = server.push(device, "over wss")
            wait_for(lambda: len(got) == 2)
            assert json.loads(got[1].payload)["msg_id"] == msg_id
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        server.stop()
