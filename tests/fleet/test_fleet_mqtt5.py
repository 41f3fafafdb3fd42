"""MQTT 5 and WebSocket in ``pushsim fleet``, against real parts: Mosquitto 2.0 (MQTT 5,
shared subscriptions, reason codes, session and message expiry, seen by paho-mqtt as a
foreign client), the reference server over WebSocket (``pushsim server --ws-port``), and
Mosquitto behind a WebSocket front for broker mode (Debian's Mosquitto has no websockets
listener)."""
from __future__ import annotations

import re
import threading
import time
from typing import Any

from fleet_harness import ADMIN_TOKEN, pushsim, read_results, stop_process
from support.mosquitto import Broker, run_mosquitto

ARGS = ("--no-progress",)
V5 = ("--mqtt-version", "5")


class PahoWatcher:
    """A paho-mqtt MQTT 5 client subscribed to ``topic_filter``: what a foreign client saw."""

    def __init__(self, port: int, topic_filter: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Any] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"paho-watcher-{port}", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10), "paho did not get its SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _session_present(port: int, client_id: str) -> bool:
    """Connect once as ``client_id`` (MQTT 5, clean start 0): does the broker hold a session
    for it? (The check itself ends that session: Session Expiry 0.)"""
    import paho.mqtt.client as mqtt

    present: list[bool] = []
    answer = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        present.append(flags.session_present)
        answer.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port, clean_start=False)
    client.loop_start()
    try:
        assert answer.wait(10), "no CONNACK from Mosquitto"
    finally:
        client.disconnect()
        client.loop_stop()
    return present[0]


def _connect_lines(broker: Broker, prefix: str) -> list[str]:
    """Mosquitto's "New client connected ... as <id> (p5, c0, k60)." lines of a run, read
    once the broker has stopped (its log is a buffered stdout, complete only then)."""
    stop_process(broker.process)
    return [line for line in broker.log.read_text().splitlines()
            if "New client connected" in line and f" as {prefix}" in line]


def test_mqtt5_run_with_message_expiry_seen_by_paho(mosquitto, tmp_path):
    watcher = PahoWatcher(mosquitto.port, "pushsim/m5run/#")
    try:
        done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "4", "--duration", "2",
                       "--push-rate", "8", *V5, "--message-expiry", "45", "--run-id", "m5run",
                       *ARGS, "--out", str(tmp_path / "out"))
    finally:
        watcher.close()
    assert done.returncode == 0, done.stderr
    fleet = read_results(tmp_path / "out")["fleet"]
    pushes = fleet["pushes"]
    assert pushes["sent"] == pushes["expected"] == pushes["delivered"] == 16
    assert pushes["lost"] == pushes["duplicates"] == 0
    assert fleet["run"]["fingerprint"]["workload"]["mqtt_version"] == "5"
    # Every client of the run — pre-flight, publisher, handsets, clean-up — spoke MQTT 5.
    lines = _connect_lines(mosquitto, "pushsim-m5run-")
    assert len(lines) == 1 + 1 + 4 + 5, lines
    assert all("(p5," in line for line in lines), lines
    handsets = [line for line in lines if re.search(r" as pushsim-m5run-\d+ ", line)]
    assert len(handsets) == 8 and sum("(p5, c0," in line for line in handsets) == 4
    # The pushes carried the Message Expiry Interval (what is left of it when relayed).
    assert len(watcher.messages) == 16
    for message in watcher.messages:
        assert 0 < message.properties.MessageExpiryInterval <= 45


def test_mqtt5_session_expiry_lets_the_broker_forget_the_run(mosquitto, tmp_path):
    # Without the clean-up, a persistent 3.1.1-style session (never expires) stays...
    kept = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "2", "--duration", "1",
                   "--push-rate", "0", *V5, "--no-cleanup", "--client-id-prefix", "keep-",
                   *ARGS, "--out", str(tmp_path / "kept"))
    # ... one with --session-expiry 1 ends by itself a second after its connection.
    gone = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "2", "--duration", "1",
                   "--push-rate", "0", *V5, "--no-cleanup", "--session-expiry", "1",
                   "--client-id-prefix", "gone-", *ARGS, "--out", str(tmp_path / "gone"))
    assert kept.returncode == 0 and gone.returncode == 0, (kept.stderr, gone.stderr)
    # Session expiry is the broker's wall clock: give it three times the interval (the
    # check can be made only once: it ends the session it finds).
    time.sleep(3)
    assert _session_present(mosquitto.port, "keep-0")
    assert not _session_present(mosquitto.port, "gone-0")
    assert read_results(tmp_path / "gone")["fleet"]["run"]["fingerprint"]["workload"][
        "session_expiry"] == 1


def test_shared_group_delivers_each_push_to_one_member(mosquitto, tmp_path):
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "8", "--fan-out", "4",
                   "--shared-group", "workers", *V5, "--duration", "3", "--push-rate", "8",
                   "--run-id", "share", *ARGS, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "out")
    pushes = results["fleet"]["pushes"]
    # 24 pushes over 2 groups of 4: expected once per push (not once per member: 96).
    assert pushes["sent"] == pushes["expected"] == pushes["delivered"] == 24
    assert pushes["lost"] == pushes["duplicates"] == pushes["unexpected"] == 0
    per_member = [int(h["pushes_delivered"]) for h in results["handsets"]]
    assert sum(per_member) == 24
    shared = pushes["shared"]
    assert shared["group"] == "workers" and shared["members"] == 8
    assert shared["members_per_group"] == 4
    spread = shared["deliveries_per_member"]
    assert (spread["min"], spread["max"], spread["mean"]) == (
        min(per_member), max(per_member), 3.0)
    assert shared["members_without_delivery"] == per_member.count(0)
    # Mosquitto hands a shared subscription's messages round robin: every member got some.
    assert spread["min"] >= 1
    assert results["summary_json"][0]["pushes_sent"] == 24
    assert "shared       $share/workers/…: 8 members, 4 per topic" in done.stdout


def test_reason_codes_of_refused_handsets(tmp_path):
    # Only client ids starting "rc-p" may connect: the pre-flight and the publisher do,
    # the handsets ("rc-0", ...) are refused — in 5.0 with reason code 0x87.
    with run_mosquitto(tmp_path, extra="clientid_prefixes rc-p\n") as broker:
        found = {}
        for version in ("5", "3.1.1"):
            out = tmp_path / f"out-{version}"
            done = pushsim("fleet", "--broker", broker.url, "--handsets", "3", "--duration",
                           "1", "--push-rate", "0", "--mqtt-version", version,
                           "--client-id-prefix", "rc-", *ARGS, "--out", str(out))
            assert done.returncode == 1, done.stderr  # the gate handsets_connected<1
            assert "gate missed: handsets_connected<1" in done.stderr
            found[version] = read_results(out)["fleet"]["connect"]
            assert "  refusals     not_authorized/0x" in done.stdout
    assert found["5"]["failure_codes"] == {"not_authorized/0x87": 3}
    assert found["3.1.1"]["failure_codes"] == {"not_authorized/0x05": 3}
    assert all("CONNACK 0x87" in reason for reason in found["5"]["failure_reasons"])


def test_push_refused_with_a_reason_code_is_a_named_failure(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite pushsim/acl/0\n")  # group 1's topic is not allowed
    # run_mosquitto keeps the user it was started as (root would otherwise drop to
    # "mosquitto", who cannot read tmp_path's ACL file).
    with run_mosquitto(tmp_path, extra=f"acl_file {acl}\n") as broker:
        done = pushsim("fleet", "--broker", broker.url, "--handsets", "2", "--duration", "2",
                       "--push-rate", "4", "--drain", "1", *V5, "--run-id", "acl", *ARGS,
                       "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and "gate missed: lost>0 (lost = 4)" in done.stderr
    pushes = read_results(tmp_path / "out")["fleet"]["pushes"]
    assert pushes["sent"] == pushes["delivered"] == 4 and pushes["failed"] == 4
    assert pushes["failure_reasons"] == {
        "broker refused the push (PUBACK 0x87: not authorized)": 4}


def test_broker_mode_over_websocket(ws_mosquitto, tmp_path):
    broker, ws_url = ws_mosquitto
    done = pushsim("fleet", "--broker", ws_url, "--handsets", "6", "--fan-out", "3",
                   "--shared-group", "g", *V5, "--qos", "2", "--duration", "2",
                   "--push-rate", "6", "--client-id-prefix", "ws-", *ARGS,
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    fleet = read_results(tmp_path / "out")["fleet"]
    pushes = fleet["pushes"]
    assert pushes["sent"] == pushes["expected"] == pushes["delivered"] == 12
    assert pushes["lost"] == pushes["duplicates"] == 0
    assert fleet["run"]["target"] == ws_url
    # Every connection reached Mosquitto through the WebSocket front (its only client
    # address is the relay's), in MQTT 5; the clean-up went the same way.
    lines = _connect_lines(broker, "ws-")
    assert len(lines) == 1 + 1 + 6 + 7 and all("(p5," in line for line in lines), lines
    assert fleet["cleanup"]["cleaned"] == 7


def test_broker_mode_over_websocket_on_3_1_1(ws_mosquitto, tmp_path):
    _, ws_url = ws_mosquitto
    done = pushsim("fleet", "--broker", ws_url, "--handsets", "4", "--duration", "2",
                   "--push-rate", "4", *ARGS, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    pushes = read_results(tmp_path / "out")["fleet"]["pushes"]
    assert pushes["sent"] == pushes["delivered"] == 8 and pushes["lost"] == 0


def test_ws_broker_url_reaches_the_reference_servers_websocket(ws_server_info, tmp_path):
    # The reference server is a push server, not a general broker: a broker-mode client
    # without a device token is refused — over its WebSocket listener, by MQTT's CONNACK.
    done = pushsim("fleet", "--broker", ws_server_info["ws"], "--handsets", "2",
                   "--duration", "1", *V5, *ARGS, "--out", str(tmp_path / "out"), timeout=30)
    assert done.returncode == 2
    assert "refused the connection (CONNACK 0x86: bad user name or password" in done.stderr
    assert not (tmp_path / "out").exists()


def test_server_mode_over_websocket(ws_server_info, tmp_path):
    done = pushsim("fleet", "--server", ws_server_info["http"], "--admin-token", ADMIN_TOKEN,
                   "--mqtt-transport", "ws", *V5, "--handsets", "6", "--duration", "3",
                   "--push-rate", "6", "--message-expiry", "600", *ARGS,
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    fleet = read_results(tmp_path / "out")["fleet"]
    pushes = fleet["pushes"]
    assert pushes["sent"] == pushes["expected"] == pushes["delivered"] == 18
    assert pushes["lost"] == pushes["duplicates"] == 0
    assert fleet["connect"]["handsets_connected"] == 6
    workload = fleet["run"]["fingerprint"]["workload"]
    assert (workload["mqtt_transport"], workload["message_expiry"]) == ("ws", 600)


def test_server_mode_websocket_needs_an_advertised_endpoint(reference_server, tmp_path):
    # The same run against a server without --ws-port: the pre-flight's device is told by
    # the SDK that no mqtt.ws is advertised (so the run above did use WebSocket).
    done = pushsim("fleet", "--server", reference_server.http, "--admin-token", ADMIN_TOKEN,
                   "--mqtt-transport", "ws", "--handsets", "2", "--duration", "1", *ARGS,
                   "--out", str(tmp_path / "out"), timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "advertises no MQTT WebSocket endpoint (mqtt.ws)" in done.stderr
