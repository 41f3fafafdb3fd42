"""Plots of a results directory (matplotlib, headless ``Agg`` backend): each figure as PNG at
300 dpi and as SVG and PDF (vector), with labels legible at print size.

matplotlib is a dependency because researchers expect publication-grade plots and it is the
one plotting library every Python reader already knows; see docs/dependencies.md.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from simulator.metrics import BATTERY_J  # noqa: E402

#: Print resolution of the PNG files; SVG and PDF are vector.
DPI = 300
FORMATS = ("png", "svg", "pdf")
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 9, "svg.fonttype": "none", "pdf.fonttype": 42})


def save_figure(fig, stem: Path) -> list[Path]:
    """``stem``.png (300 dpi), .svg and .pdf; returns the paths written."""
    paths = [stem.with_suffix(f".{fmt}") for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_energy_by_strategy(summary: Sequence[dict], path: Path) -> None:
    """Bars: energy per day (J, left axis) and battery % per day, per strategy and scenario."""
    scenarios = list(dict.fromkeys(row["scenario"] for row in summary))
    strategies = list(dict.fromkeys(row["strategy"] for row in summary))
    by_key = {(row["strategy"], row["scenario"]): row for row in summary}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(strategies) * len(scenarios)), 4.5))
    width = 0.8 / max(1, len(scenarios))
    for j, scenario in enumerate(scenarios):
        xs = [i + (j - (len(scenarios) - 1) / 2) * width for i in range(len(strategies))]
        ys = [by_key.get((s, scenario), {}).get("energy_j_per_day", math.nan) for s in strategies]
        low = [by_key.get((s, scenario), {}).get("energy_j_per_day_ci95_low", math.nan)
               for s in strategies]
        high = [by_key.get((s, scenario), {}).get("energy_j_per_day_ci95_high", math.nan)
                for s in strategies]
        errors = [[max(0.0, y - lo) if not math.isnan(lo) else 0.0 for y, lo in zip(ys, low)],
                  [max(0.0, hi - y) if not math.isnan(hi) else 0.0 for y, hi in zip(ys, high)]]
        ax.bar(xs, ys, width=width, label=scenario, yerr=errors, capsize=2)
    ax.set_xticks(range(len(strategies)), strategies, rotation=20, ha="right")
    ax.set_ylabel("radio energy per handset-day (J)")
    ax.set_title("Heartbeat energy by strategy (error bars: 95 % bootstrap CI)")
    battery = ax.secondary_yaxis("right", functions=(_to_pct, _from_pct))
    battery.set_ylabel("battery % per day (3000 mAh, 3.85 V)")
    if len(scenarios) > 1:
        ax.legend(title="scenario")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_energy_vs_latency(summary: Sequence[dict], path: Path) -> None:
    """Scatter: energy per day against p95 delivery latency (the Pareto view)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = "osD^v<>pPX*"
    scenarios = list(dict.fromkeys(row["scenario"] for row in summary))
    for row in summary:
        latency = row.get("latency_p95_s")
        if latency is None or (isinstance(latency, float) and math.isnan(latency)):
            continue
        marker = markers[scenarios.index(row["scenario"]) % len(markers)]
        ax.scatter(latency, row["energy_j_per_day"], marker=marker, s=50)
        ax.annotate(row["strategy"], (latency, row["energy_j_per_day"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("p95 delivery latency (s, push accepted → app callback)")
    ax.set_ylabel("radio energy per handset-day (J)")
    ax.set_title("Energy against delivery latency" + (
        f" ({', '.join(scenarios)})" if len(scenarios) <= 3 else ""))
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _to_pct(joules):
    return joules * 100.0 / BATTERY_J


def _from_pct(pct):
    return pct * BATTERY_J / 100.0
