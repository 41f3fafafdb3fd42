"""The results directory of a bench run: CSV files, PNG plots and ``report.md``.

``write_report(out, run)`` writes everything from a :class:`BenchRun` (the matrix, the
per-seed rows, their aggregate, the traced trajectories, how and where it ran). The report
states the models, parameters and sources it ran with, taken from the very objects that ran
(scenarios, radio models, strategies), with links to the documents that justify them.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import attrs

from power_bench.bench import RESULT_FIELDS, SUMMARY_CSV_FIELDS, GoalCheck, Matrix, write_csv
from power_bench.plots import (
    colours_for, plot_battery, plot_energy, plot_intervals, plot_pareto,
)
from power_bench.trajectory import Trajectory
from pushsdk.heartbeat import parse_strategy
from simulator.metrics import BATTERY_J, defined
from simulator.radio import get_model
from simulator.scenario import (
    BUILTIN_SCENARIOS, Choice, Exponential, Fixed, Mixture, Scenario, Uniform,
)
from simulator.strategies import ORACLE

REPO = Path(__file__).resolve().parents[1]

PLOTS = {
    "pareto": "energy_vs_p95.png",
    "energy": "energy_per_day.png",
    "battery": "battery_per_day.png",
    "intervals": "interval_over_time.png",
}
FILES = ("results.csv", "summary.csv", "trajectories.csv", "report.md", *PLOTS.values(),
         *(Path(p).with_suffix(x).name for p in PLOTS.values() for x in (".svg", ".pdf")))
TRAJECTORY_FIELDS = ("strategy", "scenario", "seed", "handset", "group", "kind", "t_s",
                     "interval_s",
                     "silence_s", "lateness_s", "ok", "network_key", "network_type",
                     "app_state")


@attrs.frozen
class BenchRun:
    """Everything a report is made of."""

    matrix: Matrix
    rows: tuple[dict, ...]  # per (strategy, scenario, seed)
    summary: tuple[dict, ...]  # per (strategy, scenario), across seeds
    goal: GoalCheck
    trajectories: tuple[Trajectory, ...]
    command: str
    started: str  # local date and time, ISO 8601
    elapsed_s: float
    matrix_s: float
    trace_s: float
    workers: int
    machine: tuple[tuple[str, str], ...]


def write_report(out: Path, run: BenchRun) -> list[Path]:
    """Write the CSV files, plots and report.md into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:  # a rerun with another matrix must not leave stale files behind
        (out / name).unlink(missing_ok=True)
    write_csv(out / "results.csv", run.rows, RESULT_FIELDS)
    write_csv(out / "summary.csv", run.summary, SUMMARY_CSV_FIELDS)
    write_csv(out / "trajectories.csv", list(_trajectory_rows(run.trajectories)),
              TRAJECTORY_FIELDS)
    colours = colours_for(run.matrix.strategies)
    plot_pareto(run.summary, run.rows, out / PLOTS["pareto"], colours)
    plot_energy(run.summary, run.rows, out / PLOTS["energy"], colours)
    plot_battery(run.summary, out / PLOTS["battery"], colours)
    if run.trajectories:
        plot_intervals(run.trajectories, out / PLOTS["intervals"])
    (out / "report.md").write_text(render_markdown(run, out), encoding="utf-8")
    return [out / name for name in FILES if (out / name).exists()]


# --- Markdown -----------------------------------------------------------------------------------


def render_markdown(run: BenchRun, out: Path) -> str:
    link = _linker(out)
    by_key = {(r["strategy"], r["scenario"]): r for r in run.summary}
    lines = _intro(run, link)
    lines += _scenario_sections(run, by_key)
    lines += _relative_sections(run, by_key)
    lines += _PLOTS_SECTION
    lines += _interval_section(run)
    lines += _how_section(run)
    lines += _models_section(run, link)
    lines += _FILES_SECTION
    return "\n".join(lines)


def _intro(run: BenchRun, link: Callable[[str, str], str]) -> list[str]:
    m = run.matrix
    return [
        "# Heartbeat strategies compared",
        "",
        f"`{run.command}` — {len(m.strategies)} strategies × {len(m.scenarios)} scenarios × "
        f"{len(m.seeds)} seed(s), {m.handsets} handsets per fleet; "
        f"{m.handset_hours:,.0f} simulated handset-hours in {_duration(run.elapsed_s)}.",
        "",
        "Energy is the radio and CPU energy the SDK's own traffic causes per handset-day "
        f"(idle paging excluded; battery % against {BATTERY_J:,.0f} J = 3000 mAh × 3.85 V). "
        "Figures are means over seeds with their 95 % bootstrap interval in brackets "
        f"(seeds, then handsets, resampled: {link('docs/statistics.md', 'statistics.md')}); "
        "each seed is an independent fleet, identical for every strategy. `oracle` is not a "
        "strategy that runs: it is the true lower bound, computed per handset from its day "
        f"({link('docs/oracle.md', 'oracle.md')}). Latency is from the push API's acceptance "
        "to the app callback, pooled over the fleet's delivered pushes; delivery counts "
        "(push, device) pairs; dead time is the time the SDK trusted a dead connection, "
        "outside Doze blocks (inside them a live connection delivers nothing either; the "
        "figure with them is `dead_time_fraction` in summary.csv). Definitions: "
        f"{link('docs/simulator.md', 'simulator.md §4')}.",
        "",
        "## Goal check",
        "",
        "```",
        *run.goal.lines(),
        "```",
        "",
        *_goal_notes(run),
    ]


def _scenario_sections(run: BenchRun, by_key: dict[tuple[str, str], dict]) -> list[str]:
    """One table per scenario: each strategy's figures with their intervals."""
    m = run.matrix
    lines = ["## Results per scenario", ""]
    for scenario in m.scenarios:
        sent = [r["pushes_sent"] for r in run.summary if r["scenario"] == scenario.name]
        lines += [f"### {scenario.name}", "", f"{scenario.description}. "
                  f"{m.hours_for(scenario):g} h per handset; "
                  f"{max(sent, default=0):,.0f} (push, device) pairs per seed on average.", ""]
        lines += _table(
            ["strategy", "J/day", "÷ oracle", "battery %/day", "p95 latency (s)", "delivered",
             "reconnects/day", "dead time"],
            [[s, _pm(r, "energy_j_per_day", "{:,.0f}"), _vs_oracle(r),
              _pm(r, "battery_pct_per_day", "{:.2f}"),
              _pm(r, "latency_p95_s", None), _pm(r, "delivery_ratio", "{:.2%}"),
              _pm(r, "reconnects_per_day", "{:.1f}"),
              _pm(r, "dead_time_awake_fraction", "{:.2%}")]
             for s in m.strategies if (r := by_key.get((s, scenario.name)))],
            align="lrrrrrrr")
        lines.append("")
    return lines


def _relative_sections(run: BenchRun, by_key: dict[tuple[str, str], dict]) -> list[str]:
    """Energy of every strategy relative to the bound and to Mars, scenario by scenario."""
    m = run.matrix
    lines: list[str] = []
    for reference in (ORACLE, "mars"):
        if reference not in m.strategies:
            continue
        lines += [f"## Energy relative to {reference}", "",
                  f"Mean J/day of each strategy ÷ mean J/day of `{reference}` on the same "
                  "scenario (below 1: cheaper)."
                  + (" Against the bound nothing that keeps its connection alive can be "
                     "below 1; a strategy that lets connections die can (see its dead time "
                     "and latency)." if reference == ORACLE else ""), ""]
        lines += _table(["strategy", *[s.name for s in m.scenarios]], [
            [s, *[_relative(by_key, s, reference, sc.name) for sc in m.scenarios]]
            for s in m.strategies], align="l" + "r" * len(m.scenarios))
        lines.append("")
    return lines


_PLOTS_SECTION = [
    "## Plots",
    "",
    f"![energy against p95 latency]({PLOTS['pareto']})",
    "",
    "Energy per handset-day against p95 delivery latency, one panel per scenario "
    "(latency on a log axis where it spans decades; bars: 95 % intervals; faint "
    "dots: single seeds). "
    "The dashed line joins the strategies no other beats on both axes (the Pareto front).",
    "",
    f"![energy per day]({PLOTS['energy']})",
    "",
    "Energy per handset-day per strategy, one panel per scenario (bars: mean over seeds; "
    "error bars: 95 % intervals; dots: single seeds).",
    "",
    f"![battery per day]({PLOTS['battery']})",
    "",
    "Battery % per day by scenario and strategy (95 % intervals).",
    "",
]

_FILES_SECTION = [
    "## Files",
    "",
    "- `results.csv`: one row per strategy × scenario × seed, the interfaces §4 summary "
    "columns plus `seed`.",
    "- `summary.csv`: one row per strategy × scenario: `seeds`, then the mean of each "
    "figure across seeds under its documented name (docs/interfaces.md §4) and its "
    "sample sd as `<name>_sd`, the "
    "95 % intervals as `<name>_ci95_low`/`_high`, per-handset figures, and `vs_oracle`: "
    "the energy ÷ the bound on the same handsets, with its interval.",
    "- `trajectories.csv`: every traced heartbeat (`kind` = beat: the interval in force, "
    "the silence the ping tested, lateness, outcome) and probe (`kind` = probe).",
    "- the PNG plots above.",
    "",
]


def _goal_notes(run: BenchRun) -> list[str]:
    goal = run.goal
    if goal.missing is not None or not goal.scenarios:
        return []
    by_key = {(r["strategy"], r["scenario"]): r for r in run.summary}
    ranked = sorted(goal.scenarios, key=lambda g: -next(c.value for c in g.criteria
                                                        if c.metric == "vs_oracle"))
    weakest = ", ".join(
        f"`{g.scenario}` ({next(c.value for c in g.criteria if c.metric == 'vs_oracle'):.2f}"
        " × the bound)" for g in ranked[:3])
    failed = [g for g in goal.scenarios if not g.passed]
    notes = [f"Where `adaptive` is weakest against the bound: {weakest}."]
    for metric, what in (("delivery_ratio", "delivery"),
                         ("dead_time_awake_fraction", "dead time")):
        missed = [g.scenario for g in goal.scenarios
                  for c in g.criteria if c.metric == metric and not c.passed]
        if missed:
            mars = ", ".join(f"{_fmt_pct(by_key.get(('mars', s), {}).get(metric))} on `{s}`"
                             for s in missed)
            notes.append(f"{what.capitalize()} misses on {', '.join(f'`{s}`' for s in missed)}"
                         f"; `mars` has {mars} there.")
    notes.append(f"{len(goal.scenarios) - len(failed)} of {len(goal.scenarios)} scenarios "
                 "meet all four targets. Each energy ratio is the paired one (`vs_oracle`, "
                 "the same handsets under both), with its 95 % interval.")
    return [" ".join(notes), ""]


def _fmt_pct(value) -> str:
    return "–" if not defined(value) else f"{value:.2%}"


def _vs_oracle(row: dict) -> str:
    value = row.get("vs_oracle")
    if not defined(value):
        return "–"
    low, high = row.get("vs_oracle_ci95_low"), row.get("vs_oracle_ci95_high")
    return f"{value:.2f}" + (f" [{low:.2f}–{high:.2f}]" if defined(low) and defined(high)
                             and (low, high) != (value, value) else "")


def _interval_section(run: BenchRun) -> list[str]:
    if not run.trajectories:
        return ["## Interval over time", "", "No strategy with a changing interval was in the "
                "matrix, so nothing was traced.", ""]
    first = run.trajectories[0]
    handsets = sorted({t.index for t in run.trajectories})
    lines = [
        "## Interval over time",
        "",
        f"![interval over time]({PLOTS['intervals']})",
        "",
        f"Scenario `{first.scenario}`, seed {first.seed}: handsets {', '.join(map(str, handsets))} "
        f"of the {run.matrix.handsets}-handset fleet, each run alone (the same handset, "
        "networks and pushes as in the matrix) with the strategy wrapped by "
        "`power_bench.trajectory.TracingStrategy`. Each line steps at every heartbeat, when "
        "its outcome was known, to the interval that ping honoured; × = unanswered. "
        "△/▽: a probe connection (strategies that measure on a second link) survived/failed "
        "the silence it tested. Dotted lines: the handset's NAT timeouts.",
        "",
    ]
    rows = []
    for t in run.trajectories:
        ok = sum(b.ok for b in t.beats)
        failed = len(t.beats) - ok
        early = sum(1 for b in t.beats if b.ok and b.silence < b.interval - 1.0)
        final = f"{t.beats[-1].interval:,.0f}" if t.beats else "–"
        probes = sum(1 for p in t.probes if p.ok is not None)
        rows.append([t.strategy, t.label, str(len(t.starts)), str(ok), str(failed), str(early),
                     str(probes), final])
    lines += _table(["strategy", "handset", "connections", "beats answered", "failed",
                     "sent early (piggyback)", "probes", "last interval (s)"], rows,
                    align="llrrrrrr")
    return lines + [""]


def _how_section(run: BenchRun) -> list[str]:
    m = run.matrix
    rate = m.handset_hours / run.matrix_s if run.matrix_s > 0 else math.nan
    lines = [
        "## How this was run",
        "",
        f"- Command: `{run.command}`",
        f"- Started {run.started}; ran {_duration(run.elapsed_s)} before writing this report "
        f"(matrix "
        f"{_duration(run.matrix_s)}, {rate:,.0f} handset-h/s over {run.workers} worker "
        f"process(es); interval tracing {_duration(run.trace_s)}).",
        f"- Strategies: {', '.join(f'`{s}`' for s in m.strategies)}.",
        f"- Scenarios: {', '.join(f'`{s.name}`' for s in m.scenarios)}; hours: "
        + (f"{m.hours:g} each." if m.hours is not None else
           ", ".join(f"{s.name} {s.hours:g}" for s in m.scenarios) + " (each scenario's own)."),
        f"- Seeds: {', '.join(map(str, m.seeds))}; {m.handsets} handsets per fleet "
        f"(handset specs, NATs and pushes depend only on scenario, seed and handset index).",
        *[f"- {key}: {value}" for key, value in run.machine],
        "",
        "Rerun exactly: the same command on the same code gives the same figures "
        "(see simulator.md §7 for what is seeded).",
        "",
    ]
    return lines


def _models_section(run: BenchRun, link) -> list[str]:
    m = run.matrix
    lines = [
        "## Models, parameters and sources",
        "",
        f"Virtual handsets run the real SDK over simulated TCP links, NATs and radios "
        f"({link('docs/simulator.md', 'simulator.md')} §3 states every modelling assumption). "
        f"Scenario models and their figures: {link('docs/scenarios.md', 'scenarios.md')}; "
        f"radio energy: {link('docs/energy.md', 'energy.md')}; strategies: "
        f"{link('docs/heartbeat.md', 'heartbeat.md')}; each figure there names its published "
        f"source.",
        "",
        "### Radio models in use",
        "",
    ]
    radios = sorted({net.radio for s in m.scenarios for net in s.networks})
    rows = []
    for name in radios:
        model = get_model(name)
        rows.append([f"`{name}`" + (f" (= `{model.name}`)" if model.name != name else ""),
                     f"{model.isolated_energy():.4g} J", model.description, model.source])
    lines += _table(["model", "E₁ (one isolated beat)", "description", "source"], rows,
                    align="lrll")
    lines += ["", "### Scenarios", ""]
    for scenario in m.scenarios:
        lines += [f"#### {scenario.name}", "", f"{scenario.description}. Definition: "
                  + _scenario_link(scenario, link) + f"; starts at {_clock(scenario.start)}.", ""]
        lines += _table(["network", "type", "radio model", "NAT idle timeout", "NAT expiry",
                         "one-way latency"],
                        [[n.name, n.type, f"`{n.radio}`", _distribution(n.nat_timeout),
                          "silent drop" if n.nat_behaviour == "drop" else "RST",
                          f"{n.latency * 1000:g} ms + U(0, {n.jitter * 1000:g} ms)"]
                         for n in scenario.networks], align="llllll")
        lines.append("")
        total = sum(g.weight for g in scenario.groups)
        lines += _table(["group", "share", "network (then switches)", "Doze", "screen/app",
                         "other apps", "outages"],
                        [[g.name, f"{g.weight / total:.0%}",
                          g.network + "".join(f" → {r.to} {_clock(r.at)}" for r in g.switches),
                          _doze(g.doze), _app(g.app),
                          f"{g.background.wakeups_per_hour:g}/h" if g.background.wakeups_per_hour
                          else "none",
                          f"{g.outages.per_day:g}/day, {_distribution(g.outages.duration)}"
                          if g.outages and g.outages.per_day else "none"]
                         for g in scenario.groups], align="lrlllll")
        w = scenario.workload
        ttl = ", ".join(f"{v:g} s {p:.0%}" for v, p in _normalised(w.ttl_choices))
        lines += ["", f"Workload: {w.direct_per_handset_day:g} direct pushes per handset-day, "
                  f"{w.tag_per_day:g} tag and {w.broadcast_per_day:g} broadcast pushes per day; "
                  f"{w.high_priority_share:.0%} high priority, {w.collapse_share:.0%} with a "
                  f"collapse key; TTL {ttl}; payload U({w.payload_bytes[0]}–"
                  f"{w.payload_bytes[1]} B).", ""]
    lines += ["### Strategies", ""]
    lines += _table(["strategy", "what it does"],
                    [[f"`{s}`", _strategy_summary(s)] for s in m.strategies], align="ll")
    lines += ["", "Rules, constants and sources of each: "
              f"{link('docs/heartbeat.md', 'heartbeat.md')}; `oracle` (simulation only) is the "
              "lower bound computed from each handset's day: "
              f"{link('docs/oracle.md', 'oracle.md')}.", ""]
    return lines


# --- helpers ----------------------------------------------------------------------------------


def _trajectory_rows(trajectories):
    for t in trajectories:
        who = {"strategy": t.strategy, "scenario": t.scenario, "seed": t.seed,
               "handset": t.index, "group": t.group}
        events = [(b.t, 0, b) for b in t.beats] + [(p.t, 1, p) for p in t.probes]
        for _, kind, e in sorted(events, key=lambda item: item[:2]):
            if kind == 0:
                yield {**who, "kind": "beat", "t_s": e.t, "interval_s": e.interval,
                       "silence_s": e.silence, "lateness_s": e.lateness, "ok": int(e.ok),
                       "network_key": e.network_key, "network_type": e.network_type,
                       "app_state": e.app_state}
            else:
                yield {**who, "kind": "probe", "t_s": e.t, "silence_s": e.silence,
                       "ok": "" if e.ok is None else int(e.ok)}


def _table(header, rows, *, align: str) -> list[str]:
    marks = {"l": ":--", "r": "--:"}
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _pm(row: dict, key: str, fmt: str | None) -> str:
    """The mean with its 95 % interval ``[low–high]`` when the summary has one, else ± sd."""
    value, sd = row.get(key), row.get(f"{key}_sd")
    low, high = row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
    if not defined(value):
        return "–"
    if fmt is None:  # latency: seconds from 0.05 to thousands
        fmt = "{:.2f}" if abs(value) < 10 else "{:.1f}" if abs(value) < 100 else "{:,.0f}"
    text = fmt.format(value)
    if defined(low) and defined(high):
        return text if fmt.format(low) == fmt.format(high) == text else \
            f"{text} [{fmt.format(low)}–{fmt.format(high)}]"
    return f"{text} ± {fmt.format(sd)}" if defined(sd) else text


def _relative(by_key, strategy, reference, scenario) -> str:
    row, ref = by_key.get((strategy, scenario)), by_key.get((reference, scenario))
    if not row or not ref or not ref["energy_j_per_day"]:
        return "–"
    return f"{row['energy_j_per_day'] / ref['energy_j_per_day']:.2f}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _clock(seconds: float) -> str:
    seconds = seconds % 86400
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def _normalised(choices):
    total = sum(w for _, w in choices)
    return [(v, w / total) for v, w in choices]


def _distribution(d) -> str:
    if isinstance(d, Fixed):
        return f"{d.value:,.0f} s"
    if isinstance(d, Uniform):
        return f"U({d.low:,.0f}–{d.high:,.0f} s)"
    if isinstance(d, Exponential):
        return f"Exp(mean {d.mean:,.0f} s)"
    if isinstance(d, Choice):
        return " / ".join(f"{v:,.0f}" for v in d.values) + " s at " + "/".join(
            f"{p:.0%}" for _, p in _normalised(list(zip(d.values, d.weights))))
    if isinstance(d, Mixture):
        total = sum(w for w, _ in d.parts)
        return "; ".join(f"{w / total:.0%} {_distribution(part)}" for w, part in d.parts)
    return str(d)


def _doze(params) -> str:
    if not params.enabled:
        return "off"
    return " + ".join(k for k, on in (("deep", params.deep), ("light", params.light)) if on)


def _app(model) -> str:
    if model.kind != "user":
        return model.kind
    return (f"user: {model.opens_per_day:g} sessions/day, {model.foreground_share:.0%} this app, "
            f"night {_clock(model.night_start)}–{_clock(model.night_end)}")


def _strategy_summary(name: str) -> str:
    if name == ORACLE:
        return ("simulation only: the least energy any heartbeat schedule that keeps the "
                "connection could spend on each handset's day (computed, not run)")
    try:
        strategy = parse_strategy(name)
    except ValueError:
        return ""
    paragraph = (type(strategy).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _scenario_link(scenario: Scenario, link) -> str:
    if scenario.name in BUILTIN_SCENARIOS and scenario.source == f"{scenario.name}.toml":
        return link(f"simulator/scenarios/{scenario.name}.toml", f"{scenario.name}.toml")
    return f"`{scenario.source}`"



def _linker(out: Path):
    """Markdown links from the report's directory to files of the repository."""
    base = out.resolve()

    def link(target, text: str) -> str:
        target = Path(target)
        if not target.is_absolute():
            target = REPO / target
        return f"[{text}]({Path(os.path.relpath(target, base)).as_posix()})"

    return link
