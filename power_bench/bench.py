"""The comparison matrix: strategies × scenarios × seeds, run in the simulator, summarised.

Every cell (strategy, scenario, seed) is one simulated fleet: the same handsets, NATs,
screens, outages and pushes for every strategy of a seed (they depend only on the scenario,
the seed and the handset index), so strategies are compared on identical ground. Seeds give
independent fleets; the spread across seeds is the error bar.

    matrix = Matrix.build(strategies, scenarios, seeds=3, handsets=20)
    rows = run_matrix(matrix, workers=2)      # one CONTRACT §4 summary row per cell, + seed
    summary = aggregate(rows)                 # mean and sample sd across seeds per pair
    check = goal_check(summary, rows)         # the adaptive strategy's targets on `mixed`
"""
from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import attrs

from pushsdk.heartbeat import known_strategies
from simulator.metrics import SUMMARY_FIELDS, summarise
from simulator.runner import plan_jobs, run_jobs
from simulator.scenario import BUILTIN_SCENARIOS, Scenario
from simulator.strategies import ORACLE

__all__ = [
    "BASE_STRATEGIES", "DEFAULT_SCENARIOS", "FULL", "QUICK", "Criterion", "GoalCheck",
    "Matrix", "Profile", "RESULT_FIELDS", "aggregate", "default_strategies", "goal_check",
    "run_matrix", "write_csv",
]

#: The strategies every comparison includes; ``adaptive`` joins them once it is registered.
BASE_STRATEGIES = ("fixed:270", "fcm", "mars", "mars+hooks", "courier", "kontalk", "oracle")
ADAPTIVE = "adaptive"
DEFAULT_SCENARIOS = BUILTIN_SCENARIOS
#: Where the goal of the adaptive strategy is judged, and against what.
GOAL_SCENARIO = "mixed"


def default_strategies() -> list[str]:
    """The base strategies, plus ``adaptive`` if the SDK registers it at run time."""
    names = list(BASE_STRATEGIES)
    if ADAPTIVE in known_strategies():
        names.append(ADAPTIVE)
    return names


@attrs.frozen
class Profile:
    """Size of a run: seeds, handsets per fleet, handsets whose intervals are traced."""

    seeds: int
    handsets: int
    trace_handsets: int


#: ``--quick``: about 18,000 handset-hours with 7 strategies, about a minute on 2 cores.
QUICK = Profile(seeds=2, handsets=10, trace_handsets=3)
#: The full matrix: about 180,000 handset-hours with 7 strategies, 10–20 minutes on 2 cores.
FULL = Profile(seeds=5, handsets=40, trace_handsets=4)


@attrs.frozen
class Matrix:
    """What to run. ``hours=None`` runs each scenario for its own ``hours``."""

    strategies: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    seeds: tuple[int, ...]
    handsets: int
    hours: float | None = None

    @classmethod
    def build(cls, strategies: Sequence[str], scenarios: Sequence[Scenario], *, seeds: int,
              handsets: int, hours: float | None = None) -> Matrix:
        """Seeds ``1..seeds``. Raises ValueError for an empty or duplicated dimension."""
        if not strategies or not scenarios:
            raise ValueError("the matrix needs at least one strategy and one scenario")
        for kind, names in (("strategy", strategies), ("scenario", [s.name for s in scenarios])):
            duplicates = sorted({n for n in names if list(names).count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} named more than once: {', '.join(duplicates)}")
        if seeds < 1 or handsets < 1:
            raise ValueError("seeds and handsets must be at least 1")
        return cls(tuple(strategies), tuple(scenarios), tuple(range(1, seeds + 1)), handsets,
                   hours)

    def hours_for(self, scenario: Scenario) -> float:
        return self.hours if self.hours is not None else scenario.hours

    @property
    def handset_hours(self) -> float:
        per_seed = sum(self.handsets * self.hours_for(s) for s in self.scenarios)
        return per_seed * len(self.strategies) * len(self.seeds)


#: results.csv: one row per strategy × scenario × seed.
RESULT_FIELDS = ("strategy", "scenario", "seed") + SUMMARY_FIELDS[2:]
#: Figures averaged across seeds (the rest of a result row is a label or a count of handsets).
METRICS = tuple(f for f in SUMMARY_FIELDS if f not in ("strategy", "scenario", "handsets", "hours"))
#: Of those, the ones averaged across seeds (intervals are computed, not averaged).
MEANS = tuple(m for m in METRICS if "ci95" not in m and "handset" not in m)
#: summary.csv: the means under the CONTRACT names, then the sample sd of each as ``<name>_sd``,
#: the 95 % intervals and per-handset figures, and the paired ratio to the oracle.
SUMMARY_CSV_FIELDS = (("strategy", "scenario", "seeds", "handsets", "hours")
                      + tuple(m for m in METRICS if "ci95" not in m and "handset" not in m)
                      + tuple(f"{m}_sd" for m in METRICS if "ci95" not in m
                              and "handset" not in m)
                      + tuple(m for m in METRICS if "ci95" in m or "handset" in m)
                      + ("vs_oracle", "vs_oracle_ci95_low", "vs_oracle_ci95_high"))


def run_matrix(matrix: Matrix, workers: int = 1, *, progress: bool = True,
               handsets_out: list | None = None, cluster: str | None = None) -> list[dict]:
    """Simulate every cell; one summary row (CONTRACT §4 columns + ``seed``) per cell, in
    (scenario, strategy, seed) order. ``handsets_out`` (a list) receives every handset's
    result, for intervals (:func:`aggregate`)."""
    jobs = []
    for scenario in matrix.scenarios:
        for seed in matrix.seeds:
            jobs += plan_jobs([scenario], matrix.strategies, matrix.handsets,
                              matrix.hours_for(scenario), seed, workers)
    results = run_jobs(jobs, workers, progress=progress, label="simulating",
                       cluster=cluster)  # --cluster hook (fleet engineer)
    # run_jobs returns each job's handsets in job order: one result per handset of its shard.
    cells: dict[tuple[str, str, int], list] = {}
    position = 0
    for job in jobs:
        count = len(job.indices())
        cells.setdefault((job.scenario.name, job.strategy, job.seed), []).extend(
            results[position:position + count])
        position += count
    if position != len(results):
        raise RuntimeError(f"expected {position} handset results, got {len(results)}")
    if handsets_out is not None:
        handsets_out.extend(results)
    rows = []
    for scenario, strategy, seed in itertools.product(
            [s.name for s in matrix.scenarios], matrix.strategies, matrix.seeds):
        cell = cells[(scenario, strategy, seed)]
        if sorted(r.index for r in cell) != list(range(matrix.handsets)):
            raise RuntimeError(f"handset results of {strategy} on {scenario}, seed {seed} "
                               "do not cover the fleet")
        [row] = summarise(cell)
        rows.append({"strategy": strategy, "scenario": scenario, "seed": seed, **row})
    return rows


def aggregate(rows: Sequence[dict], handsets: Sequence = ()) -> list[dict]:
    """Mean and sample standard deviation across seeds per (strategy, scenario), in
    first-seen order. Undefined values (NaN, e.g. no pushes) are left out of both; the sd
    of fewer than two values is NaN. With the ``handsets`` results, each row also gets the
    95 % bootstrap intervals over seeds and handsets (simulator.stats) and, for every
    strategy, its energy ÷ the oracle's on the same handsets with its interval."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["scenario"]), []).append(row)
    summary = []
    for (strategy, scenario), group in groups.items():
        out = {"strategy": strategy, "scenario": scenario, "seeds": len(group),
               "handsets": group[0]["handsets"], "hours": group[0]["hours"]}
        for metric in MEANS:
            values = [r[metric] for r in group if not _undefined(r.get(metric))]
            out[metric] = statistics.fmean(values) if values else math.nan
            out[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else math.nan
        summary.append(out)
    if handsets:
        from simulator.stats import add_intervals, paired_ratio

        add_intervals(summary, handsets)
        for row in summary:
            ratio = paired_ratio(handsets, row["strategy"], ORACLE, row["scenario"])
            row["vs_oracle"], row["vs_oracle_ci95_low"], row["vs_oracle_ci95_high"] = ratio
    return summary


def write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Rows as CSV; floats rounded to 6 decimals, undefined values as empty cells."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(row.get(k)) for k in fields})


# --- the goal of the adaptive strategy --------------------------------------------------------


@attrs.frozen
class Criterion:
    label: str  # e.g. "energy/day adaptive ÷ oracle"
    value: float  # the measured ratio
    limit: str  # e.g. "≤ 1.15"
    passed: bool
    detail: str  # the figures behind the ratio
    metric: str = ""  # the summary column compared
    figures: tuple[float, float] = (math.nan, math.nan)  # (adaptive, reference) means


@attrs.frozen
class GoalCheck:
    """On ``mixed``, averaged over seeds: adaptive energy/day ≤ 1.15 × oracle and ≤ 0.7 ×
    mars, p95 latency ≤ mars's, delivery ratio ≥ mars's."""

    scenario: str
    criteria: tuple[Criterion, ...]
    missing: str | None = None  # why the check could not be made
    seeds: int = 0

    @property
    def passed(self) -> bool:
        return self.missing is None and all(c.passed for c in self.criteria)

    def lines(self) -> list[str]:
        if self.missing is not None:
            return [f"goal check ({self.scenario}): not evaluated — {self.missing}"]
        out = [f"goal check ({self.scenario}, means over {self.seeds} seed(s)):"]
        for c in self.criteria:
            out.append(f"  {c.label:<34} {c.value:8.3f}  (target {c.limit})  "
                       f"{'PASS' if c.passed else 'FAIL'}   [{c.detail}]")
        out.append(f"  overall: {'PASS' if self.passed else 'FAIL'}")
        return out


def goal_check(summary: Sequence[dict], rows: Sequence[dict] = (),
               scenario: str = GOAL_SCENARIO) -> GoalCheck:
    """Judge the goal on the means across seeds (``summary``); ``rows`` (per seed) only add
    each seed's own ratio to the details, to show how stable a verdict is."""
    means = {r["strategy"]: r for r in summary if r["scenario"] == scenario}
    if not means:
        return GoalCheck(scenario, (), missing=f"the {scenario} scenario is not in this run")
    needed = [s for s in (ADAPTIVE, ORACLE, "mars") if s not in means]
    if needed:
        return GoalCheck(scenario, (), missing=f"{', '.join(needed)} not in this run")
    per_seed: dict[tuple[str, int], dict] = {
        (r["strategy"], r["seed"]): r for r in rows if r["scenario"] == scenario}
    seeds = sorted({seed for _, seed in per_seed})

    def criterion(label: str, metric: str, reference: str, limit: float, at_most: bool,
                  unit) -> Criterion:
        a, b = means[ADAPTIVE][metric], means[reference][metric]
        passed = a <= limit * b if at_most else a >= limit * b  # False if either is NaN
        detail = f"{unit(a, means[ADAPTIVE].get(f'{metric}_sd'))} vs " \
                 f"{unit(b, means[reference].get(f'{metric}_sd'))}"
        ratios = [_ratio(per_seed[(ADAPTIVE, s)][metric], per_seed[(reference, s)][metric])
                  for s in seeds if (ADAPTIVE, s) in per_seed and (reference, s) in per_seed]
        if len(ratios) > 1:
            detail += "; per seed " + ", ".join(f"{r:.3f}" for r in ratios)
        return Criterion(f"{label} adaptive ÷ {reference}", _ratio(a, b),
                         f"{'≤' if at_most else '≥'} {limit:g}", passed, detail, metric, (a, b))

    criteria = (
        criterion("energy/day", "energy_j_per_day", ORACLE, 1.15, True, _joules),
        criterion("energy/day", "energy_j_per_day", "mars", 0.70, True, _joules),
        criterion("p95 latency", "latency_p95_s", "mars", 1.0, True, _seconds),
        criterion("delivery ratio", "delivery_ratio", "mars", 1.0, False, _percent),
    )
    return GoalCheck(scenario, criteria, seeds=means[ADAPTIVE]["seeds"])


def _joules(value: float, sd: float | None) -> str:
    return f"{value:.0f}" + ("" if _undefined(sd) else f" ± {sd:.0f}") + " J"


def _seconds(value: float, sd: float | None) -> str:
    return f"{value:.3f}" + ("" if _undefined(sd) else f" ± {sd:.3f}") + " s"


def _percent(value: float, sd: float | None) -> str:
    return f"{value:.3%}" + ("" if _undefined(sd) else f" ± {sd:.3%}")


def _ratio(a: float, b: float) -> float:
    if _undefined(a) or _undefined(b):
        return math.nan
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value
