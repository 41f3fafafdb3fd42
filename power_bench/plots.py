"""The bench's PNG plots (matplotlib, headless ``Agg`` backend).

Every function takes the rows it draws and a path; strategies keep one colour across all
plots of a run (``colours_for``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from power_bench.trajectory import Trajectory  # noqa: E402
from simulator.metrics import BATTERY_J, defined  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import ColorType

__all__ = [
    "colours_for", "defined", "plot_battery", "plot_energy", "plot_intervals", "plot_pareto",
    "unique",
]

_INTERVAL_TICKS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


def plot_pareto(summary, rows, path: Path, colours: dict[str, ColorType]) -> None:
    """Energy per day against p95 latency, one panel per scenario, with the Pareto front."""
    scenarios = unique(r["scenario"] for r in summary)
    fig, axes = _grid(len(scenarios), width=4.6, height=3.6)
    for ax, scenario in zip(axes, scenarios):
        points = [r for r in summary if r["scenario"] == scenario and defined(r["latency_p95_s"])]
        # A log latency axis when the p95s span decades (the fast strategies differ in
        # milliseconds, the slow ones by minutes), linear otherwise.
        values = [r["latency_p95_s"] for r in points]
        log = bool(values) and min(values) > 0 and max(values) > 10 * min(values)
        for seed_row in rows:
            if seed_row["scenario"] == scenario and defined(seed_row["latency_p95_s"]):
                ax.scatter(seed_row["latency_p95_s"], seed_row["energy_j_per_day"], s=10,
                           color=colours[seed_row["strategy"]], alpha=0.35, linewidths=0)
        for r in points:
            ax.errorbar(r["latency_p95_s"], r["energy_j_per_day"],
                        xerr=_error_bar(r, "latency_p95_s", log),
                        yerr=_error_bar(r, "energy_j_per_day"),
                        fmt="o", color=colours[r["strategy"]], ms=6, capsize=2,
                        label=r["strategy"])
        front = _pareto_front([(r["latency_p95_s"], r["energy_j_per_day"]) for r in points])
        if len(front) > 1:
            ax.plot(*zip(*front), ls="--", color="grey", lw=1, zorder=0)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(scenario, fontsize=10)
        ax.set_xlabel("p95 latency (s)", fontsize=8)
        ax.set_ylabel("J per handset-day", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    _legend(fig, colours, summary)
    fig.suptitle("Energy against p95 delivery latency (lower left is better)", fontsize=11)
    _save(fig, path)


def plot_energy(summary, rows, path: Path, colours: dict[str, ColorType]) -> None:
    """Bars of J per handset-day with their 95 % intervals, one panel per scenario, seeds
    as dots."""
    scenarios = unique(r["scenario"] for r in summary)
    fig, axes = _grid(len(scenarios), width=4.6, height=3.4)
    for ax, scenario in zip(axes, scenarios):
        cells = [r for r in summary if r["scenario"] == scenario]
        xs = range(len(cells))
        ax.bar(xs, [r["energy_j_per_day"] for r in cells],
               yerr=_error_bars(cells, "energy_j_per_day"), capsize=3,
               color=[colours[r["strategy"]] for r in cells], alpha=0.85)
        for x, r in zip(xs, cells):
            seeds = [s["energy_j_per_day"] for s in rows
                     if s["scenario"] == scenario and s["strategy"] == r["strategy"]]
            ax.scatter([x] * len(seeds), seeds, s=8, color="black", zorder=3)
        ax.set_xticks(list(xs), [r["strategy"] for r in cells], rotation=35, ha="right",
                      fontsize=7)
        ax.set_title(scenario, fontsize=10)
        ax.set_ylabel("J per handset-day", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Energy per handset-day (mean and 95 % interval over seeds and handsets)",
                 fontsize=11)
    _save(fig, path)


def plot_battery(summary, path: Path, colours: dict[str, ColorType]) -> None:
    """Grouped bars: battery % per day, scenarios on the x axis, one bar per strategy."""
    scenarios = unique(r["scenario"] for r in summary)
    strategies = unique(r["strategy"] for r in summary)
    by_key = {(r["strategy"], r["scenario"]): r for r in summary}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(scenarios) + 2), 4.5))
    width = 0.8 / len(strategies)
    for j, strategy in enumerate(strategies):
        xs = [i + (j - (len(strategies) - 1) / 2) * width for i in range(len(scenarios))]
        cells = [by_key.get((strategy, s), {}) for s in scenarios]
        ax.bar(xs, [c.get("battery_pct_per_day", math.nan) for c in cells], width=width,
               yerr=_error_bars(cells, "battery_pct_per_day"),
               capsize=2, color=colours[strategy], label=strategy)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=15)
    ax.set_ylabel(f"battery % per day ({BATTERY_J:,.0f} J)")
    ax.set_title("Battery spent on push per day")
    ax.legend(fontsize=8, ncol=min(4, len(strategies)))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_intervals(trajectories: Sequence[Trajectory], path: Path) -> None:
    """One panel per strategy: interval in force at each beat over time, one line per handset."""
    strategies = unique(t.strategy for t in trajectories)
    handsets = unique(t.index for t in trajectories)
    colours = dict(zip(handsets, _palette("tab10")))
    fig, axes = plt.subplots(len(strategies), 1, figsize=(10, 2.6 * len(strategies)),
                             sharex=True, squeeze=False)
    for ax, strategy in zip(axes[:, 0], strategies):
        for t in (t for t in trajectories if t.strategy == strategy):
            colour = colours[t.index]
            hours = [b.t / 3600 for b in t.beats]
            ax.step(hours, [b.interval for b in t.beats], where="post", color=colour, lw=1,
                    label=t.label)
            failed = [(b.t / 3600, b.interval) for b in t.beats if not b.ok]
            if failed:
                ax.scatter(*zip(*failed), marker="x", color=colour, s=18, zorder=3)
            for ok, marker in ((True, "^"), (False, "v")):
                probes = [(p.t / 3600, p.silence) for p in t.probes if p.ok is ok]
                if probes:
                    ax.scatter(*zip(*probes), marker=marker, facecolors="none",
                               edgecolors=colour, s=22, zorder=3)
            for _, _, timeout, _ in t.networks:
                ax.axhline(timeout, color=colour, ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.FixedLocator(_INTERVAL_TICKS))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylabel("interval (s)", fontsize=8)
        ax.set_title(strategy, fontsize=10, loc="left")
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1, 0].set_xlabel("time (h)")
    first = trajectories[0]
    fig.suptitle(f"Heartbeat interval over time ({first.scenario}, seed {first.seed}; "
                 "× unanswered ping, △/▽ probe survived/failed, dotted: NAT timeout)",
                 fontsize=10)
    _save(fig, path)


# --- helpers ----------------------------------------------------------------------------------


def colours_for(strategies) -> dict[str, ColorType]:
    palette = _palette("tab10")
    return {s: palette[i % len(palette)] for i, s in enumerate(strategies)}


def _palette(name: str) -> Sequence[ColorType]:
    """The colours of the listed colormap ``name`` (``tab10``: a tuple of RGB tuples)."""
    cmap = plt.get_cmap(name)
    if not isinstance(cmap, ListedColormap) or not isinstance(cmap.colors, (list, tuple)):
        raise TypeError(f"{name!r} is not a colormap of listed colours")
    return cmap.colors


def _pareto_front(points):
    """Points no other point beats on both coordinates (lower is better), by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _grid(n: int, *, width: float, height: float):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.5, width * cols), height * rows + 0.6),
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


#: PNG at print resolution, and the same figure as vector SVG and PDF beside it.
DPI = 300
VECTOR_FORMATS = (".svg", ".pdf")


def _save(fig, path: Path) -> None:
    fig.tight_layout(rect=(0, 0.06, 1, 1) if fig.legends else None)
    fig.savefig(path, dpi=DPI)
    for suffix in VECTOR_FORMATS:
        fig.savefig(path.with_suffix(suffix))
    plt.close(fig)


def _error_bar(row: dict, key: str, log: bool = False):
    """The 95 % interval of ``key`` as an (asymmetric) error bar; without one (an older
    summary), ±1 sd stopping at 0, or short of it on a log axis."""
    low, high = row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
    value = row.get(key)
    if defined(low) and defined(high) and defined(value):
        below = max(0.0, value - low)
        if log:
            below = min(below, value * 0.9)
        return [[below], [max(0.0, high - value)]]
    sd = _sd(row, key)
    if sd is None:
        return None
    return [[min(sd, row[key] * (0.9 if log else 1.0))], [sd]]


def _error_bars(cells, key: str):
    """Error bars of a row of bars (0 where a cell has none)."""
    bars = [_error_bar(c, key) if c else None for c in cells]
    return [[b[0][0] if b else 0.0 for b in bars], [b[1][0] if b else 0.0 for b in bars]]


def _legend(fig, colours: dict[str, ColorType], summary) -> None:
    present = unique(r["strategy"] for r in summary)
    handles = [Line2D([], [], marker="o", ls="", color=colours[s]) for s in present]
    fig.legend(handles, present, loc="lower center", ncol=min(7, len(present)), fontsize=8,
               frameon=False)


def _sd(row: dict, key: str):
    sd = row.get(f"{key}_sd")
    return sd if defined(sd) else None


def unique(values) -> list:
    return list(dict.fromkeys(values))
