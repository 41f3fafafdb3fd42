"""What a run leaves behind: the terminal table and the results directory (interfaces §4)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from simulator.metrics import HandsetResult, summarise, write_results

COLUMNS = (
    # (header, summary key, format)
    ("strategy", "strategy", "{}"),
    ("scenario", "scenario", "{}"),
    ("J/day", "energy_j_per_day", "{:.0f}"),
    ("95% CI", "energy_j_per_day", "ci"),
    ("battery %/day", "battery_pct_per_day", "{:.2f}"),
    ("beats/day", "heartbeats_per_day", "{:.0f}"),
    ("reconnects/day", "reconnects_per_day", "{:.1f}"),
    ("delivered", "delivery_ratio", "{:.2%}"),
    ("p50 s", "latency_p50_s", "{:.2f}"),
    ("p95 s", "latency_p95_s", "{:.1f}"),
    ("dead time", "dead_time_fraction", "{:.2%}"),
)


def format_table(summary: Sequence[dict]) -> str:
    """A plain-text table of the summary rows, one line per strategy × scenario."""
    rows = [[header for header, _, _ in COLUMNS]]
    for row in summary:
        rows.append([_ci(row, key) if fmt == "ci" else _cell(fmt, row.get(key))
                     for _, key, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, cells in enumerate(rows):
        lines.append("  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _ci(row: dict, key: str) -> str:
    low, high = row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "-"
    return f"{low:.0f}-{high:.0f}"


def _cell(fmt: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def save(out: Path, results: Sequence[HandsetResult]) -> list[dict]:
    """Write summary.csv/json (with 95 % intervals), handsets.csv, groups.csv, pushes.csv
    and the plots (PNG at 300 dpi, SVG, PDF) into ``out``; return the summary."""
    from simulator import run_plots as plots  # matplotlib only when results are written
    from simulator.stats import add_intervals

    summary = add_intervals(summarise(results), results)
    write_results(out, results, summary)
    plots.plot_energy_by_strategy(summary, out / "energy_by_strategy")
    plots.plot_energy_vs_latency(summary, out / "energy_vs_latency")
    return summary
