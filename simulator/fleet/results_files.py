"""The results directory of a fleet run: written at the end (always), read back to merge.

- ``summary.csv`` / ``summary.json`` — one row (interfaces §4); summary.json has every
  headline figure, the fields ``--fail-if`` may name.
- ``handsets.csv`` — one row per handset: HandsetResult's columns, then the fleet's extras.
- ``latencies.csv`` — every end-to-end latency sample (``index,latency_s``);
  ``connects.csv`` — every connect attempt; ``timeseries.csv`` — one row per second.
- ``fleet.json`` — run parameters, counters, connect and push statistics, the HDR
  histograms (HdrHistogram's base64 form), per-second counts, warnings, gates, processes.
- ``connected.png``, ``latency_cdf.png``.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from simulator.metrics import HandsetResult, write_results

from .caveats import warnings_of
from .measure import Histograms, PerSecond
from .results import FleetResults, ResultsError
from .socket_handset import EXTRA_FIELDS

__all__ = ["FORMAT", "read_results", "write_results_dir"]

FORMAT = "pushsim-fleet/2"
EVENT_FIELDS = ("index", "t_s", "outcome", "tcp_connect_s", "handshake_s", "registration_s",
                "reason")
SERIES_FIELDS = ("t", "time", "started", "connected", "connects", "first_connects",
                 "connect_failures", "disconnects", "pushes_due", "pushes_sent",
                 "pushes_failed", "pushes_delivered", "latency_mean_s", "latency_max_s",
                 "send_lag_max_s", "rss_bytes", "cpu_percent")
_INT_FIELDS = {
    "index", "promotions", "heartbeats", "heartbeats_failed", "reconnects", "bytes_up",
    "bytes_down", "pushes_sent", "pushes_delivered", "duplicates", "connect_attempts",
    "connects", "connect_failures", "expected", "lost", "unexpected", "stale", "misrouted",
    "packets_up", "packets_down", "sdk_duplicates_suppressed",
}
_STR_FIELDS = {"device_id", "strategy", "scenario", "radio_model", "network_type", "source_ip",
               "outcome", "reason"}


def figures(results: FleetResults) -> tuple[dict, dict, list[dict], list[str]]:
    """``(connect, pushes, summary rows, warnings)`` of ``results``."""
    connect, pushes = results.connect_stats(), results.push_stats()
    summary = results.summary(connect, pushes)
    warnings = warnings_of(results, connect, pushes)
    for row in summary:
        row["warnings"] = len(warnings)
    return connect, pushes, summary, warnings


def write_results_dir(results: FleetResults, out: Path, *, gates: list[dict] | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write the results directory; returns fleet.json's content and the summary rows."""
    from .fleet_plots import plot_connected, plot_latency_cdf

    out.mkdir(parents=True, exist_ok=True)
    connect, pushes, summary, warnings = figures(results)
    write_results(out, [result for result, _ in results.rows], summary)
    fields = (*HandsetResult.CSV_FIELDS, *EXTRA_FIELDS)
    _write_csv(out / "handsets.csv", fields,
               ({**result.csv_row(), **extra} for result, extra in results.rows))
    _write_csv(out / "latencies.csv", ("index", "latency_s"),
               ({"index": r.index, "latency_s": x} for r, _ in results.rows for x in r.latencies))
    _write_csv(out / "connects.csv", EVENT_FIELDS,
               (dict(zip(EVENT_FIELDS, event)) for event in results.events))
    _write_csv(out / "timeseries.csv", SERIES_FIELDS, time_series(results))
    fleet = {
        "format": FORMAT, "run": results.run, "warnings": warnings, "gates": gates or [],
        "connect": connect, "pushes": pushes, "counters": dict(results.counters),
        "histograms": results.histograms.encoded(),
        "per_second": results.per_second.as_dict(), "timeline": results.timeline,
        "shards": results.shards, "storms": results.storms,
        "publisher_events": results.publisher_events, "cleanup": results.cleanup,
        "missing": results.missing,
        "processes": [_process_figures(p) for p in results.processes],
    }
    with open(out / "fleet.json", "w") as f:
        json.dump(_json_safe(fleet), f, indent=1)
        f.write("\n")
    plot_connected(results.timeline, out / "connected.png")
    plot_latency_cdf(results.latencies(), out / "latency_cdf.png")
    return fleet, summary


def time_series(results: FleetResults) -> list[dict[str, Any]]:
    """One row per second since the start: exact counts by event time, gauges sampled."""
    per_second = results.per_second
    samples = {s["t"]: s for s in results.timeline}
    rss = {t: sum(p[1] for p in _at(results.processes, t)) for t in samples}
    cpu = {t: sum(p[2] for p in _at(results.processes, t)) for t in samples}
    start = min((s["start_wall"] for s in results.shards if s.get("start_wall")), default=None)
    rows = []
    for t in range(max(per_second.length(), len(results.timeline))):
        row: dict[str, Any] = {"t": t, "time": start + t if start else math.nan}
        for name in PerSecond.COUNTS:
            row[name] = per_second.get(name, t)
        delivered = per_second.get("pushes_delivered", t)
        total = per_second.latency_sum[t] if t < len(per_second.latency_sum) else 0.0
        row["latency_mean_s"] = total / delivered if delivered and total else math.nan
        row["latency_max_s"] = (per_second.latency_max[t] if t < len(per_second.latency_max)
                                else math.nan)
        row["send_lag_max_s"] = per_second.lag_max[t] if t < len(per_second.lag_max) else math.nan
        sample = samples.get(t, {})
        row["connected"] = sample.get("connected", math.nan)
        row["rss_bytes"] = rss.get(t, math.nan)
        row["cpu_percent"] = cpu.get(t, math.nan)
        rows.append(row)
    return rows


def _at(processes: Sequence[dict[str, Any]], t: int) -> list[list[float]]:
    return [point for p in processes for point in p.get("timeline", []) if point[0] == t]


def read_results(directory: Path) -> FleetResults:
    """Read a results directory written by :func:`write_results_dir`."""
    try:
        with open(directory / "fleet.json") as f:
            fleet = json.load(f)
        if not isinstance(fleet, dict) or fleet.get("format") != FORMAT:
            raise ResultsError(f"{directory}/fleet.json is not a pushsim fleet result "
                               f"(format {FORMAT})")
        samples: dict[int, list[float]] = {}
        for row in _read_csv(directory / "latencies.csv"):
            samples.setdefault(row["index"], []).append(row["latency_s"])
        rows = []
        for row in _read_csv(directory / "handsets.csv"):
            result = HandsetResult(**{name: row[name] for name in HandsetResult.CSV_FIELDS},
                                   latencies=tuple(samples.get(row["index"], ())))
            rows.append((result, {name: row[name] for name in EXTRA_FIELDS}))
        events = [tuple(row[name] for name in EVENT_FIELDS)
                  for row in _read_csv(directory / "connects.csv")]
        connect, pushes = fleet["connect"], fleet["pushes"]
        return FleetResults(
            run=fleet["run"], rows=rows, events=events, timeline=fleet["timeline"],
            counters=Counter(fleet["counters"]),
            failure_reasons=Counter(connect.get("failure_reasons", {})),
            disconnect_reasons=Counter(connect.get("disconnect_reasons", {})),
            push_failures=Counter(pushes.get("failure_reasons", {})),
            processes=[{k: v for k, v in p.items() if not k.endswith("_mb")}
                       for p in fleet["processes"]],
            histograms=Histograms.decode([fleet["histograms"]]),
            per_second=PerSecond.merge([fleet["per_second"]]),
            shards=fleet["shards"], storms=fleet.get("storms", []),
            publisher_events=[tuple(e) for e in fleet.get("publisher_events", [])],
            cleanup=fleet.get("cleanup", {}), missing=fleet.get("missing", []),
            failure_codes=Counter(connect.get("failure_codes", {})),
            disconnect_codes=Counter(connect.get("disconnect_codes", {})))
    except FileNotFoundError as exc:
        raise ResultsError(f"{directory} is not a fleet results directory: "
                           f"{Path(exc.filename).name} is missing") from None
    except ResultsError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"cannot read results in {directory}: "
                           f"{type(exc).__name__}: {exc}") from None


def _process_figures(process: dict[str, Any]) -> dict[str, Any]:
    figures_ = dict(process)
    mb = 1024 * 1024
    for key in ("rss_start_bytes", "rss_connected_bytes", "rss_peak_bytes"):
        if key in process:
            figures_[key.replace("_bytes", "_mb")] = round(process[key] / mb, 1)
    peak = process.get("connected_peak") or 0
    if peak and "rss_connected_bytes" in process:
        figures_["memory_per_connection_bytes"] = round(
            (process["rss_connected_bytes"] - process["rss_start_bytes"]) / peak)
    wall = process.get("wall_s") or 0
    if wall:
        figures_["cpu_percent_avg"] = round(
            100 * (process["cpu_user_s"] + process["cpu_system_s"]) / wall, 1)
    return figures_


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in fields} for row in rows)


def _read_csv(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            yield {key: _parse(key, value) for key, value in row.items()}


def _parse(key: str, value: str) -> Any:
    if key in _STR_FIELDS:
        return value
    if value == "":
        return math.nan
    return int(value) if key in _INT_FIELDS else float(value)
