"""The fleet's PNGs: connected handsets over time, and the delivery latency CDF."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")

__all__ = ["plot_connected", "plot_latency_cdf"]


def plot_connected(timeline: Sequence[dict[str, Any]], path: Path) -> None:
    """Connected handsets per second, with cumulative connect failures on a second axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ts = [s["t"] for s in timeline]
    ax.plot(ts, [s["connected"] for s in timeline], label="connected now", lw=2)
    ax.plot(ts, [s["handsets_connected"] for s in timeline], label="connected at least once",
            lw=1, ls="--")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("handsets")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    failures = [s["connect_failures"] for s in timeline]
    if any(failures):
        other = ax.twinx()
        other.plot(ts, failures, color="tab:red", lw=1, label="connect failures (cumulative)")
        other.set_ylabel("connect failures", color="tab:red")
        other.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    ax.set_title("Fleet connections over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(latencies: Sequence[float], path: Path) -> None:
    """Empirical CDF of end-to-end delivery latency (sorted seconds), log x axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if latencies:
        n = len(latencies)
        # At most ~4,000 points: the CDF looks the same, the PNG is written in milliseconds.
        step = max(1, n // 4000)
        picks = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
        ms = [max(latencies[i] * 1000.0, 1e-3) for i in picks]
        ax.step(ms, [(i + 1) / n for i in picks], where="post")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        for q in (0.5, 0.95, 0.99):
            ax.axhline(q, color="grey", lw=0.5, ls=":")
    else:
        ax.text(0.5, 0.5, "no pushes delivered", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency (ms, push sent → app callback)")
    ax.set_ylabel("fraction of pushes")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"Delivery latency CDF ({len(latencies)} pushes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
