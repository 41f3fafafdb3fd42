"""The matrix: running cells per seed, averaging across seeds, and the goal check."""
import math

import pytest

from power_bench.bench import (
    BASE_STRATEGIES, Matrix, aggregate, default_strategies, goal_check, run_matrix,
)
from pushsdk.heartbeat import known_strategies
from simulator.scenario import Scenario
from simworld import one_network, pushes


def test_default_strategies_pick_up_adaptive_when_the_sdk_registers_it():
    names = default_strategies()
    assert names[:len(BASE_STRATEGIES)] == list(BASE_STRATEGIES)
    assert ("adaptive" in names) == ("adaptive" in known_strategies())


def test_matrix_counts_handset_hours_per_scenario():
    short = one_network(nat=600, name="short")
    long = Scenario.builtin("doze-overnight")  # 10 h of its own
    matrix = Matrix.build(["fixed:270", "mars"], [short, long], seeds=3, handsets=4)
    assert matrix.seeds == (1, 2, 3)
    assert matrix.handset_hours == 2 * 3 * 4 * (short.hours + 10)
    assert Matrix.build(["mars"], [long], seeds=1, handsets=4, hours=2).handset_hours == 8


@pytest.mark.parametrize("strategies, scenarios, message", [
    ([], ["a"], "at least one"),
    (["mars", "mars"], ["a"], "strategy named more than once: mars"),
    (["mars"], ["a", "a"], "scenario named more than once: a"),
])
def test_matrix_refuses_empty_or_repeated_dimensions(strategies, scenarios, message):
    with pytest.raises(ValueError, match=message):
        Matrix.build(strategies, [one_network(nat=600, name=n) for n in scenarios], seeds=1,
                     handsets=1)


def test_run_matrix_gives_one_row_per_cell_and_seeds_differ():
    scenario = one_network(nat=600, jitter_ms=20, workload=pushes(48), name="pushy")
    matrix = Matrix.build(["fixed:270", "fixed:900"], [scenario], seeds=2, handsets=3, hours=2)
    rows = run_matrix(matrix, workers=1, progress=False)
    assert [(r["strategy"], r["seed"]) for r in rows] == [
        ("fixed:270", 1), ("fixed:270", 2), ("fixed:900", 1), ("fixed:900", 2)]
    assert all(r["handsets"] == 3 and r["scenario"] == "pushy" for r in rows)
    # Another seed is another fleet: other pushes.
    assert rows[0]["pushes_sent"] != rows[1]["pushes_sent"] or \
        rows[0]["latency_p95_s"] != rows[1]["latency_p95_s"]
    # The same seed is the same fleet for every strategy: the same pushes.
    assert rows[0]["pushes_sent"] == rows[2]["pushes_sent"]
    # fixed:900 behind a 600 s NAT: dead connections, reconnects, slower pushes.
    assert rows[2]["reconnects_per_day"] > 0 == rows[0]["reconnects_per_day"]
    assert rows[2]["latency_p95_s"] > rows[0]["latency_p95_s"]


def _row(strategy, seed, energy, p95=0.1, delivery=1.0, scenario="mixed", dead=0.0):
    return {"strategy": strategy, "scenario": scenario, "seed": seed, "handsets": 10,
            "hours": 24.0, "energy_j_per_day": energy, "latency_p95_s": p95,
            "delivery_ratio": delivery, "dead_time_awake_fraction": dead, **{k: 0.0 for k in (
                "battery_pct_per_day", "heartbeats_per_day", "reconnects_per_day",
                "bytes_up_per_day", "bytes_down_per_day", "pushes_sent", "pushes_delivered",
                "latency_p50_s", "latency_p99_s", "dead_time_fraction",
                "idle_baseline_j_per_day", "duplicates")}}


def test_aggregate_gives_mean_and_sample_sd_across_seeds():
    rows = [_row("mars", 1, 100.0), _row("mars", 2, 110.0), _row("mars", 3, 120.0),
            _row("fcm", 1, 50.0, p95=math.nan)]
    mars, fcm = aggregate(rows)
    assert (mars["strategy"], mars["seeds"]) == ("mars", 3)
    assert mars["energy_j_per_day"] == pytest.approx(110.0)
    assert mars["energy_j_per_day_sd"] == pytest.approx(10.0)
    assert fcm["energy_j_per_day"] == 50.0 and math.isnan(fcm["energy_j_per_day_sd"])
    assert math.isnan(fcm["latency_p95_s"])  # undefined stays undefined


def _summary(adaptive, oracle=1000.0, mars=2000.0, p95=(0.1, 0.1), delivery=(1.0, 1.0),
             dead=0.0, scenario="mixed"):
    rows = [_row("adaptive", 1, adaptive, p95[0], delivery[0], scenario, dead),
            _row("oracle", 1, oracle, scenario=scenario),
            _row("mars", 1, mars, p95[1], delivery[1], scenario)]
    return aggregate(rows), rows


def test_goal_check_passes_within_every_target():
    summary, rows = _summary(1200.0)
    other, _ = _summary(1300.0, scenario="home-wifi")
    check = goal_check(summary + other, rows)
    assert check.passed
    assert [g.scenario for g in check.scenarios] == ["mixed", "home-wifi"]
    assert [round(c.value, 3) for c in check.scenarios[0].criteria] == [1.2, 1.0, 0.0, 1.0]
    assert check.geomean.value == pytest.approx(math.sqrt(1.2 * 1.3))
    assert "overall: PASS" in "\n".join(check.lines())


@pytest.mark.parametrize("kwargs, failing", [
    ({"adaptive": 1351.0}, ["energy ÷ oracle", "geometric mean of energy ÷ oracle"]),
    ({"adaptive": 1000.0, "p95": (0.2, 0.1)}, ["p95 latency ÷ mars"]),
    ({"adaptive": 1000.0, "delivery": (0.998, 1.0)}, ["delivery"]),
    ({"adaptive": 1000.0, "dead": 0.011}, ["dead time outside Doze"]),
])
def test_goal_check_fails_honestly_on_any_missed_target(kwargs, failing):
    check = goal_check(*_summary(**kwargs))
    assert not check.passed
    assert [c.label for c in check.criteria if not c.passed] == failing
    assert "overall: FAIL" in "\n".join(check.lines())


def test_the_geometric_mean_is_a_target_of_its_own():
    a, _ = _summary(1340.0)
    b, _ = _summary(1300.0, scenario="home-wifi")
    check = goal_check(a + b)
    assert all(g.passed for g in check.scenarios) and not check.geomean.passed
    assert not check.passed


def test_goal_check_says_why_it_cannot_judge():
    summary, rows = _summary(1000.0)
    without = [r for r in summary if r["strategy"] != "adaptive"]
    check = goal_check(without)
    assert not check.passed and check.missing == "adaptive not in this run"
    assert "not evaluated" in check.lines()[0]
