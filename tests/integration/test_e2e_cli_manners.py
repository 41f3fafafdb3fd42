"""``pushsdk`` as a process: SIGTERM and SIGINT disconnect cleanly (Mosquitto sees a
DISCONNECT, not a dropped connection) and exit 0 / 130; ``pushsdk publish`` exits 0 once its
message is acknowledged; user mistakes are one line."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from integration_harness import PUSHSDK, Proc, ProcessGroup, procs  # noqa: F401
from test_e2e_broker_mode import mosquitto  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


def listen(procs: ProcessGroup, port: int, client_id: str, *extra: str) -> Proc:
    return procs.run([*PUSHSDK, "listen", "-v", "--broker", f"mqtt://127.0.0.1:{port}",
                      "--client-id", client_id, "--topic", "news/#", *extra], client_id)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signals_disconnect_cleanly(procs: ProcessGroup, mosquitto: tuple[Proc, int],
                                    signum: int, status: int) -> None:
    broker, port = mosquitto
    name = f"sig-{signum}"
    proc = listen(procs, port, name)
    broker.wait_until(lambda: broker.stderr_count(f"Sending SUBACK to {name}"), "SUBACK")
    proc.popen.send_signal(signum)
    assert proc.wait_exit() == status, proc.describe()
    broker.wait_until(lambda: broker.stderr_count(f"Client {name} disconnected."),
                      "a clean DISCONNECT")
    assert broker.stderr_count(f"Client {name} closed its connection") == 0
    proc.assert_no_traceback()
    assert proc.stderr == ["pushsdk: connected"], proc.describe()


def test_publish_then_listen(procs: ProcessGroup, mosquitto: tuple[Proc, int]) -> None:
    broker, port = mosquitto
    listener = listen(procs, port, "reader", "--exit-after", "2")
    broker.wait_until(lambda: broker.stderr_count("Sending SUBACK to reader"), "SUBACK")
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
    assert broker.stderr_count("Received PUBREL from pub-2") == 1


@pytest.mark.parametrize("args, message", [
    (["--cert", "/nonexistent/client.pem"],
     "client certificate file /nonexistent/client.pem does not exist"),
    (["--qos", "1", "--mqtt-version", "5"], "--mqtt-version 5 is not implemented"),
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
    from integration_harness import free_port

    port = free_port()  # nobody listens there
    proc = procs.run([*PUSHSDK, "publish", "--broker", f"mqtt://127.0.0.1:{port}",
                      "--client-id", "c", "--topic", "t", "--message", "m"], "publish")
    assert proc.wait_exit() == 1
    assert proc.stderr == [f"pushsdk: error: cannot connect to 127.0.0.1:{port}: "
                           "Connection refused"], proc.describe()
