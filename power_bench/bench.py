"""The comparison matrix: strategies × scenarios × seeds, run in the simulator, summarised.

Every cell (strategy, scenario, seed) is one simulated fleet: the same handsets, NATs,
screens, outages and pushes for every strategy of a seed (they depend only on the scenario,
the seed and the handset index), so strategies are compared on identical ground. Seeds give
independent fleets; the spread across seeds is the error bar.

    matrix = Matrix.build(strategies, scenarios, seeds=3, handsets=20)
    rows = run_matrix(matrix, workers=2)      # one interfaces §4 summary row per cell, + seed
    summary = aggregate(rows)                 # mean and sample sd across seeds per pair
    check = goal_check(summary, rows)         # the adaptive strategy's targets, every scenario
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
from simulator.metrics import SUMMARY_FIELDS, defined, summarise
from simulator.runner import plan_jobs, run_jobs
from simulator.scenario import BUILTIN_SCENARIOS, Scenario
from simulator.strategies import ORACLE

__all__ = [
    "BASE_STRATEGIES", "BENCH_SCENARIOS", "DEFAULT_SCENARIOS", "FULL", "QUICK", "Criterion",
    "GoalCheck", "ScenarioGoal",
    "Matrix", "Profile", "RESULT_FIELDS", "aggregate", "default_strategies", "goal_check",
    "run_matrix", "write_csv",
]

#: The strategies every comparison includes; ``adaptive`` joins them once it is registered.
BASE_STRATEGIES = ("fixed:270", "fcm", "mars", "mars+hooks", "courier", "kontalk", "oracle")
ADAPTIVE = "adaptive"
#: The bench's own adversarial scenarios (docs/power_bench.md §2), run after the built-in ones.
BENCH_SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
BENCH_SCENARIOS = tuple(sorted(str(p) for p in BENCH_SCENARIO_DIR.glob("*.toml")))
DEFAULT_SCENARIOS = tuple(BUILTIN_SCENARIOS) + BENCH_SCENARIOS


def default_strategies() -> list[str]:
    """The base strategies, plus ``adaptive`` if the SDK registers it at run time."""
    names = list(BASE_STRATEGIES)
    if ADAPTIVE in known_strategies():
        names.append(ADAPTIVE)
    return names


@attrs.frozen
class Profile:
    """Size of a run: seeds, handsets per fleet, handsets whose intervals are traced, and the
    first seed (the full run's seeds were never used to tune a strategy)."""

    seeds: int
    handsets: int
    trace_handsets: int
    first_seed: int = 1


#: ``--quick``: seeds 1–2, 10 handsets: a couple of minutes on 2 cores.
QUICK = Profile(seeds=2, handsets=10, trace_handsets=3)
#: The full matrix: seeds 101–103 (fresh: ``adaptive`` was tuned on seeds 1–2), 16 handsets:
#: about 125,000 handset-hours, under 15 minutes on 2 free cores.
FULL = Profile(seeds=3, handsets=16, trace_handsets=4, first_seed=101)


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
              handsets: int, hours: float | None = None, first_seed: int = 1) -> Matrix:
        """Seeds ``first_seed .. first_seed + seeds - 1``. Raises ValueError for an empty or
        duplicated dimension."""
        if not strategies or not scenarios:
            raise ValueError("the matrix needs at least one strategy and one scenario")
        for kind, names in (("strategy", strategies), ("scenario", [s.name for s in scenarios])):
            duplicates = sorted({n for n in names if list(names).count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} named more than once: {', '.join(duplicates)}")
        if seeds < 1 or handsets < 1:
            raise ValueError("seeds and handsets must be at least 1")
        return cls(tuple(strategies), tuple(scenarios),
                   tuple(range(first_seed, first_seed + seeds)), handsets, hours)

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
#: summary.csv: the means under the documented names (docs/interfaces.md §4), then the
#: sample sd of each as ``<name>_sd``, the 95 % intervals and per-handset figures, and the
#: paired ratio to the oracle.
SUMMARY_CSV_FIELDS = (("strategy", "scenario", "seeds", "handsets", "hours")
                      + tuple(m for m in METRICS if "ci95" not in m and "handset" not in m)
                      + tuple(f"{m}_sd" for m in METRICS if "ci95" not in m
                              and "handset" not in m)
                      + tuple(m for m in METRICS if "ci95" in m or "handset" in m)
                      + ("vs_oracle", "vs_oracle_ci95_low", "vs_oracle_ci95_high"))


def run_matrix(matrix: Matrix, workers: int = 1, *, progress: bool = True,
               handsets_out: list | None = None, cluster: str | None = None) -> list[dict]:
    """Simulate every cell; one summary row (interfaces §4 columns + ``seed``) per cell, in
    (scenario, strategy, seed) order. ``handsets_out`` (a list) receives every handset's
    result, for intervals (:func:`aggregate`)."""
    jobs = []
    for each in matrix.scenarios:
        for seed in matrix.seeds:
            jobs += plan_jobs([each], matrix.strategies, matrix.handsets,
                              matrix.hours_for(each), seed, workers)
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
            values = [r[metric] for r in group if defined(r.get(metric))]
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

#: The targets of issue 10, item 6, judged on every scenario of the run.
ENERGY_LIMIT = 1.35  # adaptive ÷ oracle, paired on the same handsets, per scenario
GEOMEAN_LIMIT = 1.25  # ... as a geometric mean over the scenarios
DELIVERY_MIN = 0.999
DEAD_MAX = 0.01  # dead time outside Doze blocks (dead_time_awake_fraction)


@attrs.frozen
class Criterion:
    label: str  # e.g. "energy ÷ oracle"
    value: float  # the measured figure
    limit: str  # e.g. "≤ 1.35"
    passed: bool
    detail: str  # the figures behind it, with their 95 % intervals
    metric: str = ""  # the summary column judged
    figures: tuple[float, float] = (math.nan, math.nan)  # (adaptive, reference)


@attrs.frozen
class ScenarioGoal:
    """The four per-scenario targets on one scenario."""

    scenario: str
    criteria: tuple[Criterion, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)


@attrs.frozen
class GoalCheck:
    """``adaptive`` on every scenario: energy ≤ 1.35 × ``oracle`` (the paired ratio on the
    same handsets), delivery ≥ 99.9 %, dead time outside Doze ≤ 1 %, p95 latency no worse
    than ``mars``; and the energy ratios' geometric mean over the scenarios ≤ 1.25."""

    scenarios: tuple[ScenarioGoal, ...]
    geomean: Criterion | None = None
    missing: str | None = None  # why the check could not be made
    seeds: int = 0

    @property
    def passed(self) -> bool:
        return (self.missing is None and self.geomean is not None and self.geomean.passed
                and all(s.passed for s in self.scenarios))

    @property
    def criteria(self) -> tuple[Criterion, ...]:
        """Every criterion, scenario by scenario, then the geometric mean."""
        out = tuple(c for s in self.scenarios for c in s.criteria)
        return out + ((self.geomean,) if self.geomean is not None else ())

    def lines(self) -> list[str]:
        if self.missing is not None:
            return [f"goal check: not evaluated — {self.missing}"]
        head = (f"goal check (adaptive, {self.seeds} seed(s); energy ÷ oracle ≤ "
                f"{ENERGY_LIMIT:g}, delivery ≥ {DELIVERY_MIN:.1%}, dead time ≤ {DEAD_MAX:.0%}, "
                "p95 ≤ mars):")
        out = [head, f"  {'scenario':<20} {'energy ÷ oracle [95% CI]':<26} {'delivery':>9} "
                     f"{'dead':>7} {'p95 ÷ mars':>10}  verdict"]
        for goal in self.scenarios:
            c = {x.metric: x for x in goal.criteria}
            energy = c["vs_oracle"]
            mark = lambda x: "" if x.passed else "✗"  # noqa: E731
            out.append(
                f"  {goal.scenario:<20} {energy.value:5.2f}{mark(energy):1} {energy.detail:<19} "
                f"{_pct(c['delivery_ratio'].value):>8}{mark(c['delivery_ratio']):1} "
                f"{_pct(c['dead_time_awake_fraction'].value):>6}"
                f"{mark(c['dead_time_awake_fraction']):1} "
                f"{_num(c['latency_p95_s'].value):>9}{mark(c['latency_p95_s']):1}  "
                f"{'PASS' if goal.passed else 'FAIL'}")
        if self.geomean is not None:
            g = self.geomean
            out.append(f"  geometric mean of energy ÷ oracle: {g.value:.3f} (target {g.limit}) "
                       f"{'PASS' if g.passed else 'FAIL'}")
        out.append(f"  overall: {'PASS' if self.passed else 'FAIL'}")
        return out


def goal_check(summary: Sequence[dict], rows: Sequence[dict] = ()) -> GoalCheck:
    """Judge the targets on every scenario that has ``adaptive``, ``oracle`` and ``mars``
    (means over seeds; the energy ratio is the paired one, ``vs_oracle``, with its
    interval). ``rows`` are accepted for symmetry with the per-seed view; unused."""
    by_key = {(r["strategy"], r["scenario"]): r for r in summary}
    scenarios = list(dict.fromkeys(r["scenario"] for r in summary))
    needed = [s for s in (ADAPTIVE, ORACLE, "mars")
              if not any(strategy == s for strategy, _ in by_key)]
    if needed:
        return GoalCheck((), missing=f"{', '.join(needed)} not in this run")
    goals = []
    for scenario in scenarios:
        a = by_key.get((ADAPTIVE, scenario))
        o = by_key.get((ORACLE, scenario))
        m = by_key.get(("mars", scenario))
        if a is None or o is None or m is None:
            continue
        goals.append(ScenarioGoal(scenario, _scenario_criteria(a, o, m)))
    if not goals:
        return GoalCheck((), missing="no scenario has adaptive, oracle and mars together")
    ratios = [c.value for g in goals for c in g.criteria if c.metric == "vs_oracle"]
    geomean = (math.exp(statistics.fmean(math.log(r) for r in ratios))
               if ratios and all(r > 0 and math.isfinite(r) for r in ratios) else math.nan)
    g = Criterion("geometric mean of energy ÷ oracle", geomean, f"≤ {GEOMEAN_LIMIT:g}",
                  geomean <= GEOMEAN_LIMIT, f"over {len(ratios)} scenarios", "vs_oracle")
    seeds = max(int(by_key[(ADAPTIVE, goals[0].scenario)].get("seeds", 1)), 1)
    return GoalCheck(tuple(goals), g, seeds=seeds)


def _scenario_criteria(a: dict, o: dict, m: dict) -> tuple[Criterion, ...]:
    ratio: float = a.get("vs_oracle", math.nan)  # absent: computed below, as for NaN
    if not defined(ratio):
        ratio = _ratio(a["energy_j_per_day"], o["energy_j_per_day"])
    low, high = a.get("vs_oracle_ci95_low"), a.get("vs_oracle_ci95_high")
    ci = "" if not defined(low) else f"[{low:.2f}–{high:.2f}]"
    delivery = a["delivery_ratio"]
    dead = a.get("dead_time_awake_fraction", a.get("dead_time_fraction"))
    if dead is None:
        raise ValueError(f"summary row of {a.get('strategy')} on {a.get('scenario')} "
                         "has no dead-time figure")
    p95, p95_mars = a["latency_p95_s"], m["latency_p95_s"]
    return (
        Criterion("energy ÷ oracle", ratio, f"≤ {ENERGY_LIMIT:g}", ratio <= ENERGY_LIMIT, ci,
                  "vs_oracle", (a["energy_j_per_day"], o["energy_j_per_day"])),
        Criterion("delivery", delivery, f"≥ {DELIVERY_MIN:.1%}", delivery >= DELIVERY_MIN,
                  _interval(a, "delivery_ratio", _pct), "delivery_ratio",
                  (delivery, m["delivery_ratio"])),
        Criterion("dead time outside Doze", dead, f"≤ {DEAD_MAX:.0%}", dead <= DEAD_MAX, "",
                  "dead_time_awake_fraction", (dead, m.get("dead_time_awake_fraction",
                                                          math.nan))),
        Criterion("p95 latency ÷ mars", _ratio(p95, p95_mars), "≤ 1",
                  p95 <= p95_mars or not defined(p95), f"{_num(p95)} s vs {_num(p95_mars)} s",
                  "latency_p95_s", (p95, p95_mars)),
    )


def _interval(row: dict, metric: str, fmt) -> str:
    low, high = row.get(f"{metric}_ci95_low"), row.get(f"{metric}_ci95_high")
    return "" if not defined(low) else f"[{fmt(low)}–{fmt(high)}]"


def _pct(value: float) -> str:
    return "–" if not defined(value) else f"{value:.2%}"


def _num(value: float) -> str:
    if not defined(value):
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:,.0f}"


def _ratio(a: float, b: float) -> float:
    if not defined(a) or not defined(b):
        return math.nan
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def _plain(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value
