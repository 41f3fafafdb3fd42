"""``pushsdk listen --broker`` as a process against a real Mosquitto: a QoS 1 message
published (by paho-mqtt) while the listener is away is kept in its persistent session and
printed when it comes back."""
from __future__ import annotations

import json

import pytest

from integration_harness import PUSHSDK, Proc, ProcessGroup
from support.mosquitto import Broker

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]

CLIENT_ID = "sensor-7"


def publish(port: int, topic: str, payload: bytes) -> None:
    from paho.mqtt import publish as paho_publish

    paho_publish.single(topic, payload, qos=1, hostname="127.0.0.1", port=port,
                        client_id="paho-publisher")


def listen(procs: ProcessGroup, port: int, exit_after: int) -> Proc:
    return procs.run([*PUSHSDK, "listen", "-v", "--broker", f"mqtt://127.0.0.1:{port}",
                      "--client-id", CLIENT_ID, "--topic", "alerts/#",
                      "--topic", f"cmd/{CLIENT_ID}", "--keepalive", "30",
                      "--exit-after", str(exit_after)], "pushsdk listen --broker")


def test_broker_mode_keeps_the_session_while_the_listener_is_away(
        procs: ProcessGroup, mosquitto: Broker) -> None:
    broker, port = mosquitto, mosquitto.port
    subacks = lambda: broker.log_count(f"Sending SUBACK to {CLIENT_ID}")  # noqa: E731

    first = listen(procs, port, exit_after=1)
    broker.wait_until(lambda: subacks() == 1, "the listener's subscription")
    publish(port, "alerts/fire", b"first")
    assert first.wait_exit() == 0, first.describe()
    assert [json.loads(line) for line in first.stdout] == [
        {"topic": "alerts/fire", "payload": "first", "qos": 1, "retain": False}]
    # MQTT 3.1.1 (p2), persistent session (c0), the keepalive asked for (k30).
    assert broker.log_count(f"as {CLIENT_ID} (p2, c0, k30)") == 1, broker.log_text()
    broker.wait_until(lambda: broker.log_count(f"Client {CLIENT_ID} disconnected") == 1,
                      "the listener's DISCONNECT")

    # Nobody is listening now: QoS 1 messages wait in the session at the broker.
    publish(port, f"cmd/{CLIENT_ID}", "while away: grüß".encode())
    publish(port, "alerts/raw", b"\xffbinary")

    second = listen(procs, port, exit_after=2)
    assert second.wait_exit() == 0, second.describe()
    assert [json.loads(line) for line in second.stdout] == [
        {"topic": f"cmd/{CLIENT_ID}", "payload": "while away: grüß", "qos": 1,
         "retain": False},
        {"topic": "alerts/raw", "payload": "\ufffdbinary", "qos": 1, "retain": False,
         "payload_base64": "/2JpbmFyeQ=="},
    ]
    for proc in (first, second):
        proc.assert_no_traceback()
    # Both queued messages went out as QoS 1 and were acknowledged by the SDK.
    assert broker.log_count(f"Received PUBACK from {CLIENT_ID}") == 3, broker.log_text()
