"""Workloads against a real Mosquitto: QoS 0/1/2, payload size, fan-out, clean and
persistent sessions (and the clean-up after them), scenario files with a reconnect storm."""
from __future__ import annotations

import json
import threading

import pytest

from fleet_harness import pushsim, read_results

ARGS = ("--no-progress",)


@pytest.mark.parametrize("qos", ["0", "2"])
def test_every_qos_delivers(mosquitto, tmp_path, qos):
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "6", "--duration", "2",
                   "--push-rate", "12", "--qos", qos, "--payload-size", "512", *ARGS,
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "out")
    pushes = results["fleet"]["pushes"]
    assert pushes["sent"] == pushes["delivered"] == pushes["expected"] == 24
    assert pushes["lost"] == pushes["duplicates"] == 0
    assert results["fleet"]["run"]["qos"] == int(qos)
    # 512-byte payloads: every handset received at least its pushes' bytes.
    for handset in results["handsets"]:
        assert int(handset["bytes_down"]) > 4 * 512


def test_fan_out_reaches_every_subscriber_of_a_topic(mosquitto, tmp_path):
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "12", "--fan-out", "4",
                   "--workers", "2", "--duration", "3", "--push-rate", "6", *ARGS,
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "out")
    pushes = results["fleet"]["pushes"]
    assert pushes["sent"] == 18  # 3 topics, 6 pushes each
    assert pushes["expected"] == pushes["delivered"] == 72  # each reached its 4 handsets
    for handset in results["handsets"]:
        assert int(handset["pushes_delivered"]) == 6
    assert results["summary_json"][0]["pushes_sent"] == 72


def _paho_session_present(url: str, client_id: str) -> bool:
    """Connect once with clean session 0 as ``client_id``: did the broker keep a session?"""
    import paho.mqtt.client as mqtt

    port = int(url.rsplit(":", 1)[1])
    answer = threading.Event()
    present = []

    def on_connect(client, userdata, flags, reason_code, properties):
        present.append(flags.session_present)
        answer.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answer.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return present[0]


@pytest.mark.parametrize("cleanup", [True, False])
def test_persistent_sessions_are_removed_at_the_end(mosquitto, tmp_path, cleanup):
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "3", "--duration", "1",
                   "--push-rate", "3", "--run-id", "keep", *ARGS,
                   *(() if cleanup else ("--no-cleanup",)), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    if cleanup:
        assert fleet["cleanup"] == {"cleaned": 4, "failed": 0, "skipped": 0, "reason": ""}
    assert _paho_session_present(mosquitto.url, "pushsim-keep-1") is not cleanup
    assert _paho_session_present(mosquitto.url, "pushsim-keep-pub-0-0-0") is not cleanup


def test_clean_sessions_leave_nothing(mosquitto, tmp_path):
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "3", "--duration", "1",
                   "--push-rate", "3", "--run-id", "clean", "--session", "clean",
                   "--no-cleanup", *ARGS, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert _paho_session_present(mosquitto.url, "pushsim-clean-1") is False


SCENARIO = """
[fleet]
handsets = 20
qos = 1
payload_size = 200

[[stage]]
kind = "ramp"
duration = 1
handsets = 20
push_rate = 10

[[stage]]
kind = "hold"
duration = 2
push_rate = 20

[[stage]]
kind = "storm"
name = "half the links break"
duration = 4
fraction = 0.5
push_rate = 20

[[stage]]
kind = "drain"
duration = 10
"""


def test_a_scenario_with_a_reconnect_storm(mosquitto, tmp_path):
    scenario = tmp_path / "storm.toml"
    scenario.write_text(SCENARIO)
    done = pushsim("fleet", "--broker", mosquitto.url, "--scenario", str(scenario), *ARGS,
                   "--out", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 0, done.stderr
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    [storm] = fleet["storms"]
    assert storm["t_s"] == 3 and storm["stage"] == "half the links break"
    assert 3 <= storm["handsets"] <= 17
    assert fleet["connect"]["disconnects"] == storm["handsets"]
    assert fleet["connect"]["connects"] == 20 + storm["handsets"]
    # Persistent sessions: nothing lost across the storm.
    pushes = fleet["pushes"]
    assert pushes["due"] == pushes["sent"] == 10 + 40 + 80
    assert pushes["delivered"] == pushes["expected"] == 130 and pushes["lost"] == 0
    assert [s["kind"] for s in fleet["run"]["fingerprint"]["stages"]] == [
        "ramp", "hold", "storm", "drain"]
