"""``pushsdk`` as a process: SIGTERM and SIGINT disconnect cleanly (Mosquitto sees a
DISCONNECT, not a dropped connection) and exit 0 / 130; ``pushsdk publish`` exits 0 once its
message is acknowledged; user mistakes are one line."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from integration_harness import PUSHSDK, Proc, ProcessGroup
from support.mosquitto import Broker

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


def listen(procs: ProcessGroup, port: int, client_id: str, *extra: str) -> Proc:
    return procs.run([*PUSHSDK, "listen", "-v", "--broker", f"mqtt://127.0.0.1:{port}",
                      "--client-id", client_id, "--topic", "news/#", *extra], client_id)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signals_disconnect_cleanly(procs: ProcessGroup, mosquitto: Broker,
                                    signum: int, status: int) -> None:
    broker, port = mosquitto, mosquitto.port
    name = f"sig-{signum}"
    proc = listen(procs, port, name)
    broker.wait_until(lambda: broker.log_count(f"Sending SUBACK to {name}"), "SUBACK")
    proc.popen.send_signal(signum)
    assert proc.wait_exit() == status, proc.describe()
    broker.wait_until(lambda: broker.log_count(f"Client {name} disconnected."),
                      "a clean DISCONNECT")
    assert broker.log_count(f"Client {name} closed its connection") == 0
    proc.assert_no_traceback()
    assert proc.stderr == ["pushsdk: connected"], proc.describe()


def test_publish_then_listen(procs: ProcessGroup, mosquitto: Broker) -> None:
    broker, port = mosquitto, mosquitto.port
    listener = listen(procs, port, "reader", "--exit-after", "2")
    broker.wait_until(lambda: broker.log_count("Sending SUBACK to reader"), "SUBACK")
    for qos, text in ((1, "one"), (2, "two")):
        pub = procs.run([*PUSHSDK, "publish", "--broker", f"mqtt://127.0.0.1:{port}",
                         "--client-id", f"pub-{qos}", "--topic", f"news/{qos}",
                         "--message", text, "--qos", str(qos), "--retain"], f"pub-{qos}")
        assert pub.wait_exit() == 0, pub.describe()
        assert pub.stdout == [] and pub.stderr == []
    assert listener.wait_exit() == 0, listener.describe()
    assert [json.loads(line) for line in listener.stdout] == [
        {"topic": "news/1", "payload": "one", "qos": 1, "retain": False},
        {"topic": "news/2", "payload": "two", "qos": 1, "retain": False}]  # subscribed at 1
    assert broker.log_count("Received PUBREL from pub-2") == 1


def test_publish_then_listen_mqtt5_properties(procs: ProcessGroup,
                                              mosquitto: Broker) -> None:
    broker, port = mosquitto, mosquitto.port
    listener = procs.run([*PUSHSDK, "listen", "--broker", f"mqtt://127.0.0.1:{port}",
                          "--client-id", "reader5", "--mqtt-version", "5", "--topic", "v5/#",
                          "--exit-after", "1"], "listen v5")
    broker.wait_until(lambda: broker.log_count("Sending SUBACK to reader5"), "SUBACK")
    pub = procs.run([*PUSHSDK, "publish", "--broker", f"mqtt://127.0.0.1:{port}",
                     "--client-id", "pub5", "--mqtt-version", "5", "--topic", "v5/x",
                     "--message", "hi", "--qos", "1", "--message-expiry", "3600",
                     "--user-property", "a=1", "--user-property", "a=2=two"], "publish v5")
    assert pub.wait_exit() == 0, pub.describe()
    assert listener.wait_exit() == 0, listener.describe()
    line = json.loads(listener.stdout[0])
    properties = line.pop("properties")
    assert line == {"topic": "v5/x", "payload": "hi", "qos": 1, "retain": False}
    assert properties["user_properties"] == [["a", "1"], ["a", "2=two"]]
    assert 3590 <= properties["message_expiry_interval"] <= 3600
    assert broker.log_count("as pub5 (p5, c1") == 1  # Mosquitto saw MQTT 5


@pytest.mark.parametrize("args, message", [
    (["--cert", "/nonexistent/client.pem"],
     "client certificate file /nonexistent/client.pem does not exist"),
    (["--mqtt-version", "5", "--user-property", "novalue"],
     "--user-property takes KEY=VALUE, not 'novalue'"),
    (["--mqtt-version", "5", "--message-expiry", "-1"], "--message-expiry must be 0..4294967295"),
    (["--message-expiry", "60"], "--message-expiry and --user-property need --mqtt-version 5"),
])
def test_mistakes_are_one_line(procs: ProcessGroup, tmp_path: Path, args: list[str],
                               message: str) -> None:
    proc = procs.run([*PUSHSDK, "publish", "--broker", "mqtt://127.0.0.1:1", "--client-id",
                      "c", "--topic", "t", "--message", "m", *args], "pushsdk publish")
    assert proc.wait_exit() != 0
    assert len(proc.stderr) == 1 and message in proc.stderr[0], proc.describe()
    proc.assert_no_traceback()


def test_an_unreachable_broker_is_one_line(procs: ProcessGroup) -> None:
    from support.ports import free_port

    port = free_port()  # nobody listens there
    proc = procs.run([*PUSHSDK, "publish", "--broker", f"mqtt://127.0.0.1:{port}",
                      "--client-id", "c", "--topic", "t", "--message", "m"], "publish")
    assert proc.wait_exit() == 1
    assert proc.stderr == [f"pushsdk: error: cannot connect to 127.0.0.1:{port}: "
                           "Connection refused"], proc.describe()
