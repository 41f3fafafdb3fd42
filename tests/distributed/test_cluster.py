"""``--cluster``: simulation jobs and fleet shards on a real Dask cluster (a scheduler and two
workers on loopback, see conftest.py)."""
from __future__ import annotations

import json
import threading
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dask_cluster import start_cluster, stop_cluster
from fleet_harness import pushsim, read_results
from support.ports import free_port


def test_nothing_of_the_cluster_listens_beyond_loopback(cluster):
    listening = []
    for pid in cluster.pids():
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening.append(conn.laddr.ip)
    assert listening and set(listening) == {"127.0.0.1"}, listening


def test_a_run_on_the_cluster_equals_the_local_run(cluster, tmp_path):
    args = ("run", "commuter", "--handsets", "6", "--hours", "1", "--workers", "2",
            "--no-progress", "--seed", "7")
    local = pushsim(*args, "--out", str(tmp_path / "local"), timeout=300)
    assert local.returncode == 0, local.stderr
    remote = pushsim(*args, "--cluster", cluster.address, "--out", str(tmp_path / "remote"),
                     timeout=300)
    assert remote.returncode == 0, remote.stderr
    assert f"on {cluster.address}" in remote.stdout
    for name in ("handsets.csv", "summary.csv", "summary.json"):
        assert (tmp_path / "local" / name).read_bytes() == \
            (tmp_path / "remote" / name).read_bytes(), name


def test_power_bench_on_the_cluster_equals_the_local_run(cluster, tmp_path):
    args = ("-m", "power_bench", "--handsets", "3", "--seeds", "1", "--hours", "1",
            "--strategies", "fixed:270", "--scenarios", "home-wifi", "--trace-handsets", "0",
            "--workers", "2", "--no-progress")
    import subprocess
    import sys

    from fleet_harness import ROOT
    runs = {}
    for name, extra in (("local", ()), ("remote", ("--cluster", cluster.address))):
        done = subprocess.run([sys.executable, *args, *extra, "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        runs[name] = (tmp_path / name / "results.csv").read_text()
    assert runs["local"] == runs["remote"]


def test_an_unreachable_cluster_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    done = pushsim("fleet", "--cluster", f"tcp://127.0.0.1:{port}", "--broker",
                   "mqtt://127.0.0.1:1", "--handsets", "2", "--duration", "1", timeout=60,
                   cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"pushsim fleet: cannot reach the Dask scheduler at "
                                  f"tcp://127.0.0.1:{port}")
    bad = pushsim("fleet", "--cluster", "127.0.0.1:8786", "--broker", "mqtt://127.0.0.1:1",
                  "--handsets", "2", "--duration", "1", timeout=60, cwd=tmp_path)
    assert bad.returncode == 2 and "--cluster must be tcp://HOST:PORT" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def test_fleet_shards_on_two_workers_merge_into_one_result(cluster, mosquitto, tmp_path):
    out = tmp_path / "out"
    done = pushsim("fleet", "--cluster", cluster.address, "--broker", mosquitto.url,
                   "--handsets", "30", "--duration", "4", "--push-rate", "30",
                   "--source-ips", "127.0.0.2-127.0.0.5", "--out", str(out), timeout=120)
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    fleet = results["fleet"]
    assert fleet["run"]["shards"] == ["0/2", "1/2"]
    assert fleet["pushes"]["due"] == fleet["pushes"]["sent"] == 120
    assert fleet["pushes"]["delivered"] == fleet["pushes"]["expected"] == 120
    assert fleet["pushes"]["lost"] == 0 and fleet["warnings"] == []
    assert [int(h["index"]) for h in results["handsets"]] == list(range(30))
    # Each shard ran in its own worker process, from its half of the source addresses.
    worker_pids = {w.pid for w in cluster.workers}
    assert {p["pid"] for p in fleet["processes"]} == worker_pids
    by_shard = {}
    for handset in results["handsets"]:
        by_shard.setdefault(int(handset["index"]) % 2, set()).add(handset["source_ip"])
    assert by_shard[0] & by_shard[1] == set()
    assert by_shard[0] | by_shard[1] == {f"127.0.0.{n}" for n in range(2, 6)}
    # They started at the barrier together, and that was measured.
    assert 0 <= fleet["run"]["cluster"]["start_skew_s"] < 0.5
    assert len(fleet["shards"]) == 2
    assert results["summary_json"][0]["start_skew_s"] < 0.5


def _scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        families = text_string_to_metric_families(answer.read().decode())
    return {sample.name: sample.value for family in families for sample in family.samples
            if not sample.labels}


def test_a_dead_worker_leaves_the_others_results(mosquitto, tmp_path):
    cluster = start_cluster(tmp_path / "dask", workers=2)
    try:
        port = free_port()
        runner = threading.Thread(target=lambda: outcome.append(pushsim(
            "fleet", "--cluster", cluster.address, "--broker", mosquitto.url, "--handsets",
            "20", "--duration", "12", "--push-rate", "20", "--metrics-port", str(port),
            "--no-progress", "--out", str(tmp_path / "out"), timeout=120)))
        outcome: list = []
        runner.start()
        # Once every handset of both shards is connected, kill one worker.
        url = f"http://127.0.0.1:{port}/metrics"
        _wait(lambda: _scrape_or_none(url).get("pushsim_fleet_handsets_connected") == 20)
        cluster.workers[1].kill()
        runner.join(timeout=120)
    finally:
        stop_cluster(cluster)
    [done] = outcome
    assert done.returncode == 1, done.stderr
    assert "gate missed: missing_parts>0 (missing_parts = 1)" in done.stderr
    assert "Traceback" not in done.stderr
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert len(fleet["missing"]) == 1 and "died" in fleet["missing"][0]
    assert any("did not report" in w for w in fleet["warnings"])
    assert fleet["connect"]["handsets"] == 10  # the live shard's half
    assert fleet["pushes"]["lost"] == 0


def _scrape_or_none(url: str) -> dict:
    try:
        return _scrape(url)
    except OSError:
        return {}


def _wait(condition, timeout: float = 60.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.1)
