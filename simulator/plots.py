"""PNG plots of a results directory (matplotlib, headless ``Agg`` backend).

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
        ax.bar(xs, ys, width=width, label=scenario)
    ax.set_xticks(range(len(strategies)), strategies, rotation=20, ha="right")
    ax.set_ylabel("radio energy per handset-day (J)")
    ax.set_title("Heartbeat energy by strategy")
    battery = ax.secondary_yaxis("right", functions=(_to_pct, _from_pct))
    battery.set_ylabel("battery % per day (3000 mAh, 3.85 V)")
    if len(scenarios) > 1:
        ax.legend(title="scenario")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _to_pct(joules):
    return joules * 100.0 / BATTERY_J


def _from_pct(pct):
    return pct * BATTERY_J / 100.0
