"""simulator.metrics: the summary arithmetic and the results directory (interfaces §4)."""
import csv
import json
import math

import pytest

from simulator.metrics import BATTERY_J, HandsetResult, percentile, summarise, write_results

DOCUMENTED_SUMMARY_COLUMNS = [
    "strategy", "scenario", "handsets", "hours", "energy_j_per_day", "battery_pct_per_day",
    "heartbeats_per_day", "reconnects_per_day", "bytes_up_per_day", "bytes_down_per_day",
    "pushes_sent", "pushes_delivered", "delivery_ratio", "latency_p50_s", "latency_p95_s",
    "latency_p99_s", "dead_time_fraction",
]


def row(index=0, *, strategy="fixed:270", scenario="s", duration_s=43200.0, energy_j=100.0,
        heartbeats=80, reconnects=1, bytes_up=1000, bytes_down=2000, sent=10, delivered=9,
        connected_s=40000.0, dead_s=400.0, latencies=(), idle_baseline_j=50.0, **extra):
    fields = dict(
        index=index, device_id=f"handset-{index:05d}", strategy=strategy, scenario=scenario,
        radio_model="lte-huang2012", network_type="cellular", nat_timeout_s=300.0,
        duration_s=duration_s, energy_j=energy_j, idle_baseline_j=idle_baseline_j,
        promotions=heartbeats + 1, radio_active_s=1000.0, heartbeats=heartbeats,
        heartbeats_failed=0, reconnects=reconnects, bytes_up=bytes_up, bytes_down=bytes_down,
        pushes_sent=sent, pushes_delivered=delivered, duplicates=0, connected_s=connected_s,
        dead_s=dead_s, latencies=tuple(latencies),
    )
    fields.update(extra)
    return HandsetResult(**fields)


def test_battery_is_3000_mah_at_3_85_v():
    assert pytest.approx(41_580.0) == BATTERY_J


def test_per_day_figures_normalise_each_handset_by_its_own_duration():
    half_day = row(0, duration_s=43200.0, energy_j=100.0, heartbeats=80, reconnects=1,
                   bytes_up=1000, bytes_down=2000, idle_baseline_j=50.0)
    two_days = row(1, duration_s=172800.0, energy_j=1000.0, heartbeats=400, reconnects=4,
                   bytes_up=6000, bytes_down=8000, idle_baseline_j=400.0)
    [summary] = summarise([half_day, two_days])
    assert summary["handsets"] == 2
    assert summary["hours"] == 12.0  # the first row's (a run has one duration)
    assert summary["energy_j_per_day"] == pytest.approx((200 + 500) / 2)
    assert summary["battery_pct_per_day"] == pytest.approx(100 * 350 / 41_580)
    assert summary["heartbeats_per_day"] == pytest.approx((160 + 200) / 2)
    assert summary["reconnects_per_day"] == pytest.approx((2 + 2) / 2)
    assert summary["bytes_up_per_day"] == pytest.approx((2000 + 3000) / 2)
    assert summary["bytes_down_per_day"] == pytest.approx((4000 + 4000) / 2)
    assert summary["idle_baseline_j_per_day"] == pytest.approx((100 + 200) / 2)


def test_delivery_ratio_counts_push_target_pairs():
    [summary] = summarise([row(0, sent=10, delivered=9), row(1, sent=30, delivered=30),
                           row(2, sent=0, delivered=0)])
    assert summary["pushes_sent"] == 40
    assert summary["pushes_delivered"] == 39
    assert summary["delivery_ratio"] == pytest.approx(39 / 40)  # not the mean of ratios


def test_no_pushes_means_no_ratio_and_no_latency():
    [summary] = summarise([row(sent=0, delivered=0)])
    assert math.isnan(summary["delivery_ratio"])
    assert math.isnan(summary["latency_p50_s"])


def test_latency_percentiles_pool_every_delivery_and_interpolate():
    [summary] = summarise([row(0, latencies=(4.0, 1.0, 3.0)), row(1, latencies=(2.0, 5.0))])
    # Sorted pool [1, 2, 3, 4, 5]: linear interpolation between closest ranks.
    assert summary["latency_p50_s"] == pytest.approx(3.0)
    assert summary["latency_p95_s"] == pytest.approx(4.8)
    assert summary["latency_p99_s"] == pytest.approx(4.96)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_dead_time_fraction_is_dead_over_connected_time():
    [summary] = summarise([row(0, connected_s=1000.0, dead_s=100.0),
                           row(1, connected_s=3000.0, dead_s=0.0)])
    assert summary["dead_time_fraction"] == pytest.approx(100 / 4000)
    [never] = summarise([row(connected_s=0.0, dead_s=0.0)])
    assert never["dead_time_fraction"] == 0.0


def test_one_summary_row_per_strategy_and_scenario_in_first_seen_order():
    results = [row(0, strategy="b"), row(1, strategy="a"), row(2, strategy="b", scenario="t"),
               row(3, strategy="b")]
    summary = summarise(results)
    assert [(r["strategy"], r["scenario"], r["handsets"]) for r in summary] == [
        ("b", "s", 2), ("a", "s", 1), ("b", "t", 1),
    ]


def test_results_directory_has_the_contract_files_and_columns(tmp_path):
    results = [row(0, latencies=(0.5,)), row(1, strategy="oracle", sent=0, delivered=0)]
    out = tmp_path / "results" / "nested"
    write_results(out, results, summarise(results))
    assert sorted(p.name for p in out.iterdir()) == ["groups.csv", "handsets.csv",
                                                     "pushes.csv", "summary.csv",
                                                     "summary.json"]

    with open(out / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:len(DOCUMENTED_SUMMARY_COLUMNS)] == DOCUMENTED_SUMMARY_COLUMNS
    assert [r["strategy"] for r in rows] == ["fixed:270", "oracle"]
    assert float(rows[0]["battery_pct_per_day"]) == pytest.approx(
        100 * float(rows[0]["energy_j_per_day"]) / 41_580, abs=1e-5)
    assert rows[1]["delivery_ratio"] == ""  # NaN is an empty cell, not "nan"

    document = json.loads((out / "summary.json").read_text(),
                          parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert [entry["strategy"] for entry in document] == ["fixed:270", "oracle"]
    assert set(DOCUMENTED_SUMMARY_COLUMNS) <= document[0].keys()
    assert document[1]["delivery_ratio"] is None

    with open(out / "handsets.csv", newline="") as f:
        reader = csv.DictReader(f)
        handsets = list(reader)
    assert tuple(reader.fieldnames) == HandsetResult.CSV_FIELDS
    assert "latencies" not in reader.fieldnames
    assert [int(h["index"]) for h in handsets] == [0, 1]
    assert handsets[0]["device_id"] == "handset-00000"
    assert float(handsets[0]["energy_j"]) == 100.0


def test_dead_time_awake_leaves_out_what_doze_blocked_anyway():
    from simulator.world import RunConfig, run_world
    from simworld import one_network

    doze = 'doze = { deep = true, inactive_timeout_s = 300, idle_after_inactive_s = 300 }'
    scenario = one_network(nat=600, group=doze)
    [app] = run_world(RunConfig(scenario, "fixed:500", 1, 6))
    assert 0 < app.dead_doze_s <= app.dead_s  # Doze outlived the NAT: dead, but blocked
    [summary] = summarise([app])
    assert summary["dead_time_awake_fraction"] == pytest.approx(
        (app.dead_s - app.dead_doze_s) / app.connected_s)
    assert summary["dead_time_awake_fraction"] < summary["dead_time_fraction"]
    [exempt] = run_world(RunConfig(scenario, "fcm", 1, 6))  # never blocked: nothing left out
    assert exempt.dead_doze_s == 0
