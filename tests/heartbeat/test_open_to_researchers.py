"""A strategy written outside the project (``module:attr``) runs like a built-in one, in this
process and in spawned workers; intervals are reproducible and reported."""
import textwrap

import pytest

from pushsdk.heartbeat import UnknownStrategyError, parse_strategy
from simulator.runner import plan_jobs, run_jobs
from simulator.scenario import Scenario
from simulator.stats import add_intervals, paired_ratio
from simulator.metrics import summarise

MODULE = textwrap.dedent('''
    import attrs
    from pushsdk.heartbeat import HeartbeatStrategy

    @attrs.frozen
    class EveryFourMinutes(HeartbeatStrategy):
        name = "four"
        max_interval = 240.0

        def start(self, memory, ctx):
            return None

        def interval(self, state, ctx):
            return 240.0

    STRATEGY = EveryFourMinutes()

    def make():
        return EveryFourMinutes()

    NOT_A_STRATEGY = 42
''')


@pytest.fixture
def strategy_module(tmp_path, monkeypatch):
    (tmp_path / "my_strategies.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "my_strategies"


def test_module_attr_names_an_object_or_a_factory(strategy_module):
    assert parse_strategy(f"{strategy_module}:STRATEGY").interval(None, None) == 240
    assert parse_strategy(f"{strategy_module}:make").name == "four"
    assert parse_strategy(f"{strategy_module}:make+hooks").name == "four+hooks"
    for bad in (f"{strategy_module}:NOT_A_STRATEGY", f"{strategy_module}:missing",
                "no_such_module_xyz:thing"):
        with pytest.raises(UnknownStrategyError):
            parse_strategy(bad)


def test_a_module_strategy_runs_in_worker_processes_with_the_same_results(strategy_module):
    scenario = Scenario.builtin("carrier-nat-5min")
    names = [f"{strategy_module}:make", "fixed:240"]
    one = run_jobs(plan_jobs([scenario], names, 4, 1.0, 5, 1), 1, progress=False)
    two = run_jobs(plan_jobs([scenario], names, 4, 1.0, 5, 2), 2, progress=False)
    key = lambda r: (r.strategy, r.index)  # noqa: E731
    assert sorted(one, key=key) == sorted(two, key=key)  # same seed, any shard layout
    mine = {r.index: r.energy_j for r in one if r.strategy == names[0]}
    fixed = {r.index: r.energy_j for r in one if r.strategy == "fixed:240"}
    assert mine == fixed  # the same schedule as the built-in fixed:240


def test_intervals_are_seeded_contain_the_estimate_and_pair_on_handsets():
    scenario = Scenario.builtin("mixed")
    results = run_jobs(plan_jobs([scenario], ["fixed:270", "oracle"], 8, 2.0, 3, 1), 1,
                       progress=False)
    first = add_intervals(summarise(results), results)
    again = add_intervals(summarise(results), results)
    assert first == again
    for row in first:
        assert row["energy_j_per_day_ci95_low"] <= row["energy_j_per_day"] <= \
            row["energy_j_per_day_ci95_high"]
    ratio, low, high = paired_ratio(results, "fixed:270", "oracle", "mixed")
    assert 1.0 < low <= ratio <= high
    assert paired_ratio(results, "oracle", "oracle", "mixed") == (1.0, 1.0, 1.0)
