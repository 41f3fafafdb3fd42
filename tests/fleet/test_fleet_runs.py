"""``pushsim fleet`` end to end: real handsets (the SDK over TCP) against the reference
server and against Mosquitto, in one process and with ``--workers 2``."""
from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleet_harness import ADMIN_TOKEN, pushsim, read_results

PNG = b"\x89PNG\r\n\x1a\n"
RESULT_FILES = ("summary.csv", "summary.json", "handsets.csv", "fleet.json", "latencies.csv",
                "connects.csv", "timeseries.csv", "connected.png", "latency_cdf.png")


#: The reference server may not have DELETE /v1/devices/<id> yet (then the devices stay).
NO_DELETE = ("clean-up: {n} sessions/devices left on the target (the server has no "
             "DELETE /v1/devices/<id>: devices left registered)")


def check_perfect_delivery(out: Path, handsets: int, pushes: int, server: bool = False) -> dict:
    """Every file is there and every push reached its handset once, with latencies."""
    for name in RESULT_FILES:
        assert (out / name).stat().st_size > 0, name
    for name in ("connected.png", "latency_cdf.png"):
        assert (out / name).read_bytes().startswith(PNG)
    results = read_results(out)
    [row] = results["summary"]
    assert int(row["handsets"]) == handsets
    assert int(row["pushes_sent"]) == int(row["pushes_delivered"]) == pushes
    assert float(row["delivery_ratio"]) == 1.0
    assert int(row["duplicates"]) == 0
    p50, p95, p99 = (float(row[f"latency_p{q}_s"]) for q in (50, 95, 99))
    assert 0 <= p50 <= p95 <= p99 < 5.0
    assert row["dead_time_fraction"] == ""  # not observable on a live network
    assert float(row["energy_j_per_day"]) > 0 and float(row["battery_pct_per_day"]) > 0

    fleet = results["fleet"]
    assert fleet["pushes"]["lost"] == 0 and fleet["pushes"]["duplicates"] == 0
    assert fleet["pushes"]["failed"] == 0 and fleet["pushes"]["not_sent"] == 0
    assert fleet["pushes"]["latency_s"]["count"] == pushes
    assert fleet["pushes"]["due"] == fleet["pushes"]["sent"] == pushes
    allowed = {NO_DELETE.format(n=handsets)} if server else set()
    assert set(fleet["warnings"]) <= allowed, fleet["warnings"]
    assert not any(g["missed"] for g in fleet["gates"])
    assert sum(int(r["pushes_delivered"]) for r in results["timeseries"]) == pushes
    assert sum(int(r["first_connects"]) for r in results["timeseries"]) == handsets
    assert len(results["latencies"]) == pushes
    connect = fleet["connect"]
    assert connect["handsets_connected"] == handsets and connect["never_connected"] == 0
    assert connect["connect_failures"] == 0
    assert connect["handshake_s"]["count"] == handsets
    assert 0 < connect["handshake_s"]["p50"] <= connect["handshake_s"]["p99"] < 5.0
    assert connect["connect_rate_per_s"] > 0
    timeline = fleet["timeline"]
    assert timeline[0] == {**timeline[0], "t": 0, "connected": 0}
    assert max(s["connected"] for s in timeline) == handsets
    assert [s["t"] for s in timeline] == list(range(len(timeline)))
    for process in fleet["processes"]:
        if process["handsets"]:
            assert process["rss_peak_bytes"] >= process["rss_start_bytes"] > 0
            assert process["memory_per_connection_bytes"] is not None
    assert len(results["handsets"]) == handsets
    assert [int(h["index"]) for h in results["handsets"]] == list(range(handsets))
    for handset in results["handsets"]:
        assert int(handset["lost"]) == 0 and int(handset["connects"]) >= 1
        assert int(handset["packets_up"]) > 0 and int(handset["bytes_down"]) > 0
        assert float(handset["energy_j"]) > 0
    return results


def test_fleet_against_the_reference_server(reference_server, tmp_path):
    out = tmp_path / "out"
    done = pushsim("fleet", "--server", reference_server.http, "--admin-token", ADMIN_TOKEN,
                   "--handsets", "20", "--duration", "5", "--push-rate", "20",
                   "--ramp", "200", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "20/20 handsets" in done.stdout and "100/100 delivered" in done.stdout
    results = check_perfect_delivery(out, handsets=20, pushes=100, server=True)
    [row] = results["summary"]
    assert row["scenario"] == "fleet-server" and row["strategy"] == "fixed:270"
    fleet = results["fleet"]
    assert fleet["run"]["mode"] == "server" and fleet["run"]["fleet_handsets"] == 20
    # Server mode registers every handset over HTTP first.
    assert fleet["connect"]["registration_s"]["count"] == 20
    # The pushes the server saw are the ones the fleet counted.
    with urllib.request.urlopen(f"{reference_server.http}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    accepted = next(line for line in metrics.splitlines()
                    if line.startswith("pushsim_pushes_accepted_total"))
    assert float(accepted.split()[-1]) == 100


def test_two_workers_with_an_existing_app(reference_server, tmp_path):
    request = urllib.request.Request(
        f"{reference_server.http}/v1/apps", data=json.dumps({"name": "fleet"}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        app = json.load(answer)
    out = tmp_path / "out"
    done = pushsim("fleet", "--server", reference_server.http, "--app-key", app["app_key"],
                   "--master-secret", app["master_secret"], "--handsets", "16", "--workers", "2",
                   "--duration", "3", "--push-rate", "16", "--strategy", "fixed:60",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = check_perfect_delivery(out, handsets=16, pushes=48, server=True)
    workers = [p for p in results["fleet"]["processes"] if p["handsets"]]
    assert sorted(p["handsets"] for p in workers) == [8, 8]
    assert len({p["pid"] for p in workers}) == 2
    assert results["summary"][0]["strategy"] == "fixed:60"


def test_fleet_against_mosquitto_from_many_source_addresses(mosquitto, tmp_path):
    out = tmp_path / "out"
    done = pushsim("fleet", "--broker", mosquitto.url, "--handsets", "20", "--duration", "5",
                   "--push-rate", "40", "--source-ips", "127.0.0.2-127.0.0.6", "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = check_perfect_delivery(out, handsets=20, pushes=200)
    assert results["summary"][0]["scenario"] == "fleet-broker"
    # SocketHandset i connects from 127.0.0.(2 + i % 5): the broker saw all five addresses, and
    # each handset's row says which one it used.
    peers = mosquitto.peers("pushsim-")
    handset_peers = [p for p in peers if p != "127.0.0.1"]
    assert sorted(set(handset_peers)) == [f"127.0.0.{n}" for n in range(2, 7)]
    assert len(handset_peers) == 20
    for handset in results["handsets"]:
        assert handset["source_ip"] == f"127.0.0.{2 + int(handset['index']) % 5}"
    assert results["fleet"]["run"]["source_ips"] == ["127.0.0.2", "127.0.0.6", 5]


def test_shards_merge_to_the_counts_of_one_run(mosquitto, tmp_path):
    args = ("fleet", "--broker", mosquitto.url, "--handsets", "12", "--duration", "3",
            "--push-rate", "12", "--progress")
    whole = pushsim(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    # The shards at once, as on two machines, started by hand with one run id.
    shards = [(*args, "--shard", shard, "--run-id", "byhand", "--out",
               str(tmp_path / shard.replace("/", "of"))) for shard in ("0/2", "1/2")]
    with ThreadPoolExecutor(2) as pool:
        for done in pool.map(lambda run: pushsim(*run), shards):
            assert done.returncode == 0, done.stderr
    merged = pushsim("merge", str(tmp_path / "0of2"), str(tmp_path / "1of2"),
                     "--out", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr

    one, shard0 = read_results(tmp_path / "whole"), read_results(tmp_path / "0of2")
    both = read_results(tmp_path / "merged")
    assert [int(h["index"]) for h in shard0["handsets"]] == list(range(0, 12, 2))
    assert shard0["fleet"]["pushes"]["sent"] == 18  # pushes 0..35 to even handsets
    check_perfect_delivery(tmp_path / "merged", handsets=12, pushes=36)
    for key in ("handsets", "pushes_sent", "pushes_delivered", "duplicates", "strategy",
                "scenario"):
        assert both["summary"][0][key] == one["summary"][0][key], key
    assert [h["index"] for h in both["handsets"]] == [h["index"] for h in one["handsets"]]
    assert [h["device_id"] for h in both["handsets"]] == [f"pushsim-byhand-{i}" for i in range(12)]
    assert len(both["latencies"]) == len(one["latencies"]) == 36
    assert len(both["connects"]) == len(one["connects"])
    assert both["fleet"]["run"]["shards"] == ["0/2", "1/2"]
    for key in ("sent", "delivered", "lost", "duplicates", "failed", "due"):
        assert both["fleet"]["pushes"][key] == one["fleet"]["pushes"][key], key
    assert both["fleet"]["connect"]["connects"] == one["fleet"]["connect"]["connects"]
    assert max(s["connected"] for s in both["fleet"]["timeline"]) == 12
    # The merged percentiles are those of the pooled samples (HDR: 3 significant digits).
    pooled = sorted(float(x["latency_s"]) for x in both["latencies"])
    p50 = float(both["summary"][0]["latency_p50_s"])
    assert pooled[17] * 0.999 - 1e-6 <= p50 <= pooled[18] * 1.001 + 1e-6
    assert both["fleet"]["run"]["run_id"] == "byhand"
    # --progress draws one tqdm line on stderr.
    assert "connected" in whole.stderr and "hs" in whole.stderr


def test_fleet_over_tls_with_the_servers_ca(tls_server, tmp_path):
    url, ca = tls_server
    args = ("fleet", "--server", url, "--admin-token", ADMIN_TOKEN, "--handsets", "6",
            "--duration", "2", "--push-rate", "6")
    untrusted = pushsim(*args, "--out", str(tmp_path / "refused"))
    assert untrusted.returncode == 2
    assert untrusted.stderr.startswith(f"pushsim fleet: cannot reach the server at {url}: "
                                       "TLS certificate of ")
    assert "did not verify" in untrusted.stderr and untrusted.stderr.count("\n") == 1
    out = tmp_path / "out"
    done = pushsim(*args, "--ca", str(ca), "--out", str(out))
    assert done.returncode == 0, done.stderr
    check_perfect_delivery(out, handsets=6, pushes=12, server=True)


def test_merge_takes_only_the_shards_of_one_run(mosquitto, tmp_path):
    base = ("fleet", "--broker", mosquitto.url, "--handsets", "4", "--push-rate", "4",
            "--no-progress", "--drain", "2")

    def shard(name: str, *extra: str):
        done = pushsim(*base, *extra, "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        return str(tmp_path / name)

    a = shard("a", "--duration", "1", "--shard", "0/2", "--run-id", "r1")
    b = shard("b", "--duration", "2", "--shard", "1/2", "--run-id", "r1")
    c = shard("c", "--duration", "1", "--shard", "1/2", "--run-id", "r2")
    d = shard("d", "--duration", "1", "--shard", "1/2", "--run-id", "r1")
    out = str(tmp_path / "m")
    for dirs, message in (([a, b], "not the same run configuration"),
                          ([a, c], "is run 'r2', "),
                          ([a], "shard(s) 1/2 of this 2-shard run are missing")):
        done = pushsim("merge", *dirs, "--out", out)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr
    partial = pushsim("merge", a, "--partial", "--out", out)
    assert partial.returncode == 1  # the missing shard misses the built-in gate
    fleet = json.loads((tmp_path / "m" / "fleet.json").read_text())
    assert fleet["missing"] == ["shard 1/2"]
    assert "pushsim merge: gate missed: missing_parts>0" in partial.stderr
    whole = pushsim("merge", a, d, "--out", str(tmp_path / "w"), "--fail-if", "lost>0")
    assert whole.returncode == 0, whole.stderr
    fleet = json.loads((tmp_path / "w" / "fleet.json").read_text())
    assert fleet["pushes"]["delivered"] == 4 and fleet["missing"] == []
    # By hand, one after the other, the shards started seconds apart: said so.
    assert any(w.startswith("shards started") for w in fleet["warnings"])
