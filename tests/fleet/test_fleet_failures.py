"""What a load tool must survive and report: the target dying and coming back, signals,
gates and exit codes, a pre-flight that tries every leg, live metrics scraped mid-run.

Timing is by condition, never by a sleep: a test waits until the fleet's own /metrics
(scraped and parsed with prometheus_client) says what it waits for.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_harness import ADMIN_TOKEN, ROOT, pushsim, read_results
from support.mosquitto import run_mosquitto
from support.ports import free_port


def scrape(port: int) -> dict[str, list]:
    """``/metrics`` of a running fleet: family name -> its samples ({} if not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(metrics: dict, family: str, sample: str | None = None) -> float | None:
    for s in metrics.get(family, []):
        if s.name == (sample or family) and not s.labels:
            return s.value
    return None


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.1)


def start_fleet(*args: str) -> subprocess.Popen:
    import os
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "simulator", "fleet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_metrics_are_served_during_the_run(mosquitto, tmp_path):
    port = free_port()
    fleet = start_fleet("--broker", mosquitto.url, "--handsets", "10", "--duration", "8",
                        "--push-rate", "20", "--metrics-port", str(port), "--no-progress",
                        "--out", str(tmp_path / "out"))
    try:
        wait_until(lambda: (value(scrape(port), "pushsim_fleet_pushes_delivered",
                                  "pushsim_fleet_pushes_delivered_total") or 0) >= 40,
                   "40 pushes delivered, as /metrics says")
        metrics = scrape(port)
    finally:
        out, err = fleet.communicate(timeout=60)
    assert fleet.returncode == 0, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in err
    assert value(metrics, "pushsim_fleet_handsets_connected") == 10
    assert value(metrics, "pushsim_fleet_connects", "pushsim_fleet_connects_total") == 10
    buckets = {s.labels["le"]: s.value for s in metrics["pushsim_fleet_push_latency_seconds"]
               if s.name.endswith("_bucket")}
    count = value(metrics, "pushsim_fleet_push_latency_seconds",
                  "pushsim_fleet_push_latency_seconds_count")
    assert count >= 40 and buckets["+Inf"] == count
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    handshakes = value(metrics, "pushsim_fleet_connect_seconds",
                       "pushsim_fleet_connect_seconds_count")
    assert handshakes == 10
    # The endpoint is gone with the run.
    assert scrape(port) == {}


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_the_broker_dies_and_comes_back(tmp_path, version):
    with run_mosquitto(tmp_path) as broker:
        port = free_port()
        # (No --no-progress: stderr is not a terminal, so a plain line every 10 s.)
        fleet = start_fleet("--broker", broker.url, "--handsets", "20", "--duration", "14",
                            "--push-rate", "40", "--metrics-port", str(port),
                            "--mqtt-version", version,
                            "--out", str(tmp_path / "out"))
        wait_until(lambda: value(scrape(port), "pushsim_fleet_handsets_connected") == 20,
                   "20 handsets connected")
        broker.process.kill()
        broker.process.wait()
        wait_until(lambda: value(scrape(port), "pushsim_fleet_handsets_connected") == 0,
                   "every handset to notice")
    with run_mosquitto(tmp_path, port=broker.port):
        wait_until(lambda: value(scrape(port), "pushsim_fleet_handsets_connected") == 20,
                   "the handsets to come back")
        delivered = value(scrape(port), "pushsim_fleet_pushes_delivered",
                          "pushsim_fleet_pushes_delivered_total")
        out, err = fleet.communicate(timeout=90)
    assert "Traceback" not in err and "ExceptionGroup" not in err
    progress = [line for line in err.splitlines() if line.startswith("pushsim fleet: t=")]
    assert progress and "connected" in progress[0] and "due" in progress[0]
    assert "\r" not in err  # not a redrawn terminal line
    results = read_results(tmp_path / "out")
    fleet_json = results["fleet"]
    # Pushes made after both sides were back were delivered: the publisher reconnected.
    assert fleet_json["pushes"]["delivered"] > delivered
    assert fleet_json["counters"]["publisher_connects"] >= 2
    kinds = [event[1] for event in fleet_json["publisher_events"]]
    assert "lost" in kinds and kinds.index("lost") < len(kinds) - 1 - kinds[::-1].index("connected")
    assert fleet_json["connect"]["disconnects"] >= 20
    pushes = fleet_json["pushes"]
    assert pushes["due"] == pushes["sent"] + pushes["failed"] + pushes["unanswered"] + \
        pushes["not_sent"]
    assert pushes["delivered"] + pushes["lost"] == pushes["expected"]
    # Whatever the broker lost while it was down makes the run miss its default gate.
    missed = [g for g in fleet_json["gates"] if g["missed"]]
    assert fleet.returncode == (1 if missed else 0)
    for gate in missed:
        assert f"gate missed: {gate['gate']}" in err


def test_the_broker_dies_for_good(tmp_path):
    with run_mosquitto(tmp_path) as broker:
        port = free_port()
        fleet = start_fleet("--broker", broker.url, "--handsets", "10", "--duration", "6",
                            "--push-rate", "20", "--metrics-port", str(port), "--no-progress",
                            "--drain", "2", "--out", str(tmp_path / "out"))
        wait_until(lambda: value(scrape(port), "pushsim_fleet_handsets_connected") == 10,
                   "10 handsets connected")
        broker.process.kill()
        out, err = fleet.communicate(timeout=90)
    assert fleet.returncode == 1, err
    assert "Traceback" not in err
    results = read_results(tmp_path / "out")
    assert results["fleet"]["pushes"]["failed"] + results["fleet"]["pushes"]["unanswered"] > 0
    assert results["fleet"]["cleanup"]["cleaned"] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_early_with_results(mosquitto, tmp_path, signum):
    port = free_port()
    fleet = start_fleet("--broker", mosquitto.url, "--handsets", "8", "--duration", "60",
                        "--push-rate", "8", "--metrics-port", str(port), "--no-progress",
                        "--workers", "2", "--out", str(tmp_path / "out"))
    wait_until(lambda: (value(scrape(port), "pushsim_fleet_pushes_delivered",
                              "pushsim_fleet_pushes_delivered_total") or 0) >= 8,
               "8 pushes delivered")
    started = time.monotonic()
    fleet.send_signal(signum)
    out, err = fleet.communicate(timeout=60)
    assert time.monotonic() - started < 30  # not the 60 s of the run
    assert fleet.returncode == 0, err
    assert f"{signal.Signals(signum).name}: stopping early" in err
    fleet_json = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert any("stopped early" in w for w in fleet_json["warnings"])
    assert fleet_json["pushes"]["delivered"] >= 8
    assert fleet_json["pushes"]["not_sent"] > 0
    assert len([p for p in fleet_json["processes"] if p["handsets"]]) == 2


def test_gates_decide_the_exit_status(mosquitto, tmp_path):
    args = ("fleet", "--broker", mosquitto.url, "--handsets", "4", "--duration", "2",
            "--push-rate", "8", "--no-progress")
    holds = pushsim(*args, "--fail-if", "lost>0", "--fail-if", "connect_failures>0",
                    "--fail-if", "delivery_ratio<1", "--out", str(tmp_path / "a"))
    assert holds.returncode == 0, holds.stderr
    missed = pushsim(*args, "--fail-if", "latency_p99_s>0", "--fail-if", "handsets>3",
                     "--out", str(tmp_path / "b"))
    assert missed.returncode == 1
    lines = [line for line in missed.stderr.splitlines() if "gate missed" in line]
    assert lines[0].startswith("pushsim fleet: gate missed: latency_p99_s>0 (latency_p99_s = ")
    assert lines[1] == "pushsim fleet: gate missed: handsets>3 (handsets = 4)"
    gates = json.loads((tmp_path / "b" / "fleet.json").read_text())["gates"]
    assert [g["missed"] for g in gates] == [True, True, False]


def test_no_handset_connected_misses_the_default_gate(tmp_path):
    # Only client ids starting "h-p" are let in: the pre-flight's and the publisher's;
    # every handset ("h-0", ...) is turned away.
    with run_mosquitto(tmp_path, "clientid_prefixes h-p\n") as broker:
        done = pushsim("fleet", "--broker", broker.url, "--handsets", "3",
                       "--duration", "2", "--push-rate", "0", "--connect-timeout", "2",
                       "--client-id-prefix", "h-", "--no-progress", "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    assert "gate missed: handsets_connected<1 (handsets_connected = 0)" in done.stderr
    fleet_json = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert fleet_json["connect"]["connect_failures"] > 0


def test_the_preflight_tries_the_mqtt_leg_of_the_server(tls_server_info, tmp_path):
    info, ca = tls_server_info
    # Plain HTTP works, but the server sends devices to its MQTTS port, whose certificate
    # this fleet does not trust: caught before the run, in seconds, in one line.
    started = time.monotonic()
    done = pushsim("fleet", "--server", info["http"], "--admin-token", ADMIN_TOKEN,
                   "--handsets", "5", "--duration", "30", "--out", str(tmp_path / "out"))
    assert time.monotonic() - started < 20
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("pushsim fleet: pre-flight: connecting to mqtts://")
    assert "certificate" in done.stderr
    assert not (tmp_path / "out").exists()
    trusted = pushsim("fleet", "--server", info["http"], "--admin-token", ADMIN_TOKEN,
                      "--ca", str(ca), "--handsets", "3", "--duration", "2", "--push-rate", "3",
                      "--no-progress", "--out", str(tmp_path / "ok"))
    assert trusted.returncode == 0, trusted.stderr


def test_a_broker_refusing_the_credentials_fails_the_preflight(tmp_path):
    with run_mosquitto(tmp_path, "allow_anonymous false\n") as broker:
        done = pushsim("fleet", "--broker", broker.url, "--handsets", "3",
                       "--duration", "2", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "refused the connection (CONNACK 5: not authorised)" in done.stderr


def test_a_dead_worker_process_leaves_the_others_results(mosquitto, tmp_path):
    import psutil

    port = free_port()
    fleet = start_fleet("--broker", mosquitto.url, "--handsets", "10", "--duration", "30",
                        "--push-rate", "10", "--workers", "2", "--metrics-port", str(port),
                        "--no-progress", "--out", str(tmp_path / "out"))
    wait_until(lambda: value(scrape(port), "pushsim_fleet_handsets_connected") == 10,
               "10 handsets connected")
    # The spawned workers only: multiprocessing's resource tracker is a child too (and may be
    # the youngest); killing it instead leaves every worker's results, and the fleet exits 0.
    workers = [p for p in psutil.Process(fleet.pid).children()
               if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    victim = max(workers, key=lambda p: p.create_time())
    victim.kill()
    wait_until(lambda: value(scrape(port), "pushsim_fleet_pushes_delivered",
                             "pushsim_fleet_pushes_delivered_total") is not None, "metrics")
    fleet.send_signal(signal.SIGTERM)  # no need to wait out the 30 s
    out, err = fleet.communicate(timeout=60)
    assert fleet.returncode == 1, err
    assert "gate missed: missing_parts>0 (missing_parts = 1)" in err
    fleet_json = json.loads((tmp_path / "out" / "fleet.json").read_text())
    [missing] = fleet_json["missing"]
    assert f"pid {victim.pid}" in missing and "no report" in missing
    assert fleet_json["connect"]["handsets"] == 5
