"""Per-handset results, their summary per strategy × scenario, and the results directory.

The summary follows interfaces §4: one row per (strategy, scenario) with per-day figures
averaged over handsets, delivery counted over (push, target device) pairs, latency
percentiles over every delivered pair, and the dead-time fraction (time the SDK believed it
was connected while the path was dead, over the time it believed it was connected).
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeGuard

import attrs

#: Reference battery of interfaces §4: 3000 mAh at 3.85 V.
BATTERY_J = 3000e-3 * 3600 * 3.85  # = 41,580 J


@attrs.frozen
class HandsetResult:
    """What one virtual handset did during one run."""

    index: int
    device_id: str
    strategy: str
    scenario: str
    radio_model: str
    network_type: str
    nat_timeout_s: float
    duration_s: float
    energy_j: float  # radio energy caused by traffic, excluding the idle paging baseline
    idle_baseline_j: float
    promotions: int
    radio_active_s: float
    heartbeats: int
    heartbeats_failed: int
    reconnects: int
    bytes_up: int
    bytes_down: int
    pushes_sent: int  # (push, this device) pairs the provider targeted at it
    pushes_delivered: int  # of those, how many reached the app's callback
    duplicates: int  # dispatched more than once (must stay 0)
    connected_s: float  # time the SDK believed it was connected
    dead_s: float  # ... while its path was in fact dead
    latencies: tuple[float, ...] = attrs.field(default=(), repr=False)
    #: (plan id, accepted at, delivered at or None) per push aimed at this handset.
    pushes: tuple[tuple[str, float, float | None], ...] = attrs.field(default=(), repr=False)
    group: str = ""  # the scenario's handset group
    seed: int | None = None
    bound: bool = False  # an oracle row: a computed lower bound, not a simulated run
    #: Of ``dead_s``, the time Doze blocked the app's network anyway (a live connection
    #: would not have delivered then either).
    dead_doze_s: float = 0.0

    CSV_FIELDS = (
        "index", "device_id", "strategy", "scenario", "radio_model", "network_type",
        "nat_timeout_s", "duration_s", "energy_j", "idle_baseline_j", "promotions",
        "radio_active_s", "heartbeats", "heartbeats_failed", "reconnects", "bytes_up",
        "bytes_down", "pushes_sent", "pushes_delivered", "duplicates", "connected_s", "dead_s",
        "group", "seed",
    )

    def csv_row(self) -> dict:
        """The CSV row (an unknown seed, as from a fleet run, is an empty cell)."""
        return {name: "" if getattr(self, name) is None else _plain(getattr(self, name))
                for name in self.CSV_FIELDS}


SUMMARY_FIELDS = (
    "strategy", "scenario", "handsets", "hours", "energy_j_per_day", "battery_pct_per_day",
    "heartbeats_per_day", "reconnects_per_day", "bytes_up_per_day", "bytes_down_per_day",
    "pushes_sent", "pushes_delivered", "delivery_ratio", "latency_p50_s", "latency_p95_s",
    "latency_p99_s", "dead_time_fraction", "idle_baseline_j_per_day", "duplicates",
    # 95 % bootstrap intervals and per-handset figures (simulator.stats, docs/statistics.md)
    "energy_j_per_day_ci95_low", "energy_j_per_day_ci95_high",
    "battery_pct_per_day_ci95_low", "battery_pct_per_day_ci95_high",
    "delivery_ratio_ci95_low", "delivery_ratio_ci95_high",
    "latency_p95_s_ci95_low", "latency_p95_s_ci95_high",
    "dead_time_fraction_ci95_low", "dead_time_fraction_ci95_high",
    "energy_j_per_day_worst_handset", "dead_time_handset_p50", "dead_time_handset_p95",
    "dead_time_handset_max",
    # dead time outside Doze blocks (when a live connection would have delivered)
    "dead_time_awake_fraction",
)
#: pushes.csv: one row per (push, target handset).
PUSH_FIELDS = ("strategy", "scenario", "seed", "handset", "group", "plan_id", "accepted_s",
               "delivered_s", "latency_s")


def defined(value: float | None) -> TypeGuard[float]:
    """A number: neither None nor NaN (a summary's "not measured" is either)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; NaN for no values."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] * (1 - fraction) + sorted_values[high] * fraction


def summarise(results: Sequence[HandsetResult]) -> list[dict]:
    """One summary row per (strategy, scenario), in first-seen order."""
    groups: dict[tuple[str, str], list[HandsetResult]] = {}
    for result in results:
        groups.setdefault((result.strategy, result.scenario), []).append(result)
    return [_summary_row(strategy, scenario, rows) for (strategy, scenario), rows in groups.items()]


def summarise_groups(results: Sequence[HandsetResult]) -> list[dict]:
    """One row per (strategy, scenario, handset group): the scenario's groups apart."""
    groups: dict[tuple[str, str, str], list[HandsetResult]] = {}
    for result in results:
        groups.setdefault((result.strategy, result.scenario, result.group), []).append(result)
    return [{"group": group, **_summary_row(strategy, scenario, rows)}
            for (strategy, scenario, group), rows in groups.items()]


def push_rows(results: Sequence[HandsetResult]):
    """pushes.csv rows: every push aimed at a handset, when accepted and when delivered."""
    for r in results:
        for plan_id, accepted, delivered in r.pushes:
            yield {"strategy": r.strategy, "scenario": r.scenario, "seed": r.seed,
                   "handset": r.index, "group": r.group, "plan_id": plan_id,
                   "accepted_s": accepted, "delivered_s": delivered,
                   "latency_s": None if delivered is None else delivered - accepted}


def _summary_row(strategy: str, scenario: str, rows: list[HandsetResult]) -> dict:
    def per_day(attribute: str) -> float:
        return sum(getattr(r, attribute) * 86400.0 / r.duration_s for r in rows) / len(rows)

    latencies = sorted(latency for r in rows for latency in r.latencies)
    sent = sum(r.pushes_sent for r in rows)
    delivered = sum(r.pushes_delivered for r in rows)
    connected = sum(r.connected_s for r in rows)
    energy = per_day("energy_j")
    return {
        "strategy": strategy,
        "scenario": scenario,
        "handsets": len(rows),
        "hours": rows[0].duration_s / 3600.0,
        "energy_j_per_day": energy,
        "battery_pct_per_day": 100.0 * energy / BATTERY_J,
        "heartbeats_per_day": per_day("heartbeats"),
        "reconnects_per_day": per_day("reconnects"),
        "bytes_up_per_day": per_day("bytes_up"),
        "bytes_down_per_day": per_day("bytes_down"),
        "pushes_sent": sent,
        "pushes_delivered": delivered,
        "delivery_ratio": delivered / sent if sent else math.nan,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "dead_time_fraction": sum(r.dead_s for r in rows) / connected if connected else 0.0,
        "dead_time_awake_fraction": (sum(r.dead_s - r.dead_doze_s for r in rows) / connected
                                     if connected else 0.0),
        "idle_baseline_j_per_day": per_day("idle_baseline_j"),
        "duplicates": sum(r.duplicates for r in rows),
        **(_BOUND_ONLY if all(r.bound for r in rows) else {}),
    }


#: An oracle row is a bound, not a run: it has energy and a schedule, nothing delivered.
_BOUND_ONLY = {key: math.nan for key in (
    "bytes_up_per_day", "bytes_down_per_day", "latency_p50_s", "latency_p95_s", "latency_p99_s",
    "dead_time_fraction", "dead_time_awake_fraction", "idle_baseline_j_per_day", "duplicates")}


def write_results(out: Path, results: Sequence[HandsetResult], summary: Iterable[dict]) -> None:
    """Write ``summary.csv``, ``summary.json``, ``handsets.csv``, ``groups.csv`` (per handset
    group) and ``pushes.csv`` (per push) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = list(summary)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows({k: _plain(row.get(k)) for k in SUMMARY_FIELDS} for row in summary)
    group_fields = ("group",) + SUMMARY_FIELDS[:SUMMARY_FIELDS.index("duplicates") + 1]
    with open(out / "groups.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=group_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _plain(row.get(k)) for k in group_fields}
                         for row in summarise_groups(results))
    with open(out / "pushes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PUSH_FIELDS)
        writer.writeheader()
        writer.writerows({k: _plain(v) for k, v in row.items()} for row in push_rows(results))
    with open(out / "summary.json", "w") as f:
        json.dump([{k: _json_number(v) for k, v in row.items()} for row in summary], f, indent=2)
        f.write("\n")
    with open(out / "handsets.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HandsetResult.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(result.csv_row() for result in results)


def _plain(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value


def _json_number(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
