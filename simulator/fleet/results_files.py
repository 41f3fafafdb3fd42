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
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hdrh.codec import HdrCookieException, HdrHistogramSettingsException, HdrLengthException

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
    """Read a results directory written by :func:`write_results_dir`; :class:`ResultsError`
    (one line, naming the file) if it is not one."""
    where = f"{directory}/fleet.json"
    try:
        with open(directory / "fleet.json") as f:
            fleet = json.load(f)
        if not isinstance(fleet, dict) or fleet.get("format") != FORMAT:
            raise ResultsError(f"{where} is not a pushsim fleet result (format {FORMAT})")
        try:
            _check_shape(fleet)
        except _Malformed as exc:
            raise ResultsError(f"{where}: not a fleet result ({exc})") from None
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
    except FileNotFoundError as exc:
        raise ResultsError(f"{directory} is not a fleet results directory: "
                           f"{Path(exc.filename).name} is missing") from None
    except ResultsError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"cannot read results in {directory}: "
                           f"{type(exc).__name__}: {exc}") from None
    try:
        return _from_fleet(fleet, rows, events)
    except _Malformed as exc:
        raise ResultsError(f"{where}: not a fleet result ({exc})") from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        # A shape _check_shape does not know of: still one line, naming the file.
        raise ResultsError(f"{where}: malformed fleet result "
                           f"({type(exc).__name__}: {exc})") from None


def _from_fleet(fleet: dict[str, Any], rows: list, events: list[tuple]) -> FleetResults:
    connect, pushes = fleet["connect"], fleet["pushes"]
    return FleetResults(
        run=fleet["run"], rows=rows, events=events, timeline=fleet["timeline"],
        counters=Counter(fleet["counters"]),
        failure_reasons=Counter(connect.get("failure_reasons", {})),
        disconnect_reasons=Counter(connect.get("disconnect_reasons", {})),
        push_failures=Counter(pushes.get("failure_reasons", {})),
        processes=[{k: v for k, v in p.items() if not k.endswith("_mb")}
                   for p in fleet["processes"]],
        histograms=_decode_histograms(fleet["histograms"]),
        per_second=PerSecond.merge([fleet["per_second"]]),
        shards=fleet["shards"], storms=fleet.get("storms", []),
        publisher_events=[tuple(e) for e in fleet.get("publisher_events", [])],
        cleanup=fleet.get("cleanup", {}), missing=fleet.get("missing", []),
        failure_codes=Counter(connect.get("failure_codes", {})),
        disconnect_codes=Counter(connect.get("disconnect_codes", {})))


def _decode_histograms(encoded: dict[str, str]) -> Histograms:
    """fleet.json's ``histograms``; :class:`_Malformed` naming the one that is corrupt."""
    name = ""

    def one_by_one() -> Iterable[dict[str, str]]:
        nonlocal name
        for name, text in encoded.items():  # name: read when decoding fails
            yield {name: text}

    try:
        return Histograms.decode(one_by_one())
    except _HDR_ERRORS as exc:
        raise _Malformed(f"histograms.{name}: not an HDR histogram "
                         f"({type(exc).__name__}: {exc})") from None


# --- the shape of fleet.json, as far as a merge reads it ------------------------------------

#: What hdrh raises decoding a corrupt histogram's base64 text (bad base64, zlib data, header,
#: counts, or counts that do not fit the fleet's histograms: found by mutating real ones).
_HDR_ERRORS = (ValueError, IndexError, OverflowError, RuntimeError, zlib.error,
               HdrCookieException, HdrLengthException, HdrHistogramSettingsException)
_KINDS: dict[str, tuple[type, ...]] = {
    "an object": (dict,), "an array": (list,), "a string": (str,), "a number": (int, float),
    "an integer": (int,),
}
_SHARD = re.compile(r"\d+/[1-9]\d*")
#: Counts by reason in fleet.json's ``connect``, added up over the shards.
_REASONS = ("failure_reasons", "disconnect_reasons", "failure_codes", "disconnect_codes")
#: Figures of a process that a merge computes with (memory per connection, CPU share).
_PROCESS_FIGURES = ("handsets", "connected_peak", "rss_start_bytes", "rss_connected_bytes",
                    "rss_peak_bytes", "cpu_user_s", "cpu_system_s", "wall_s")
#: What a shard's workers say of themselves (their "flags"), for the warnings.
_WORKER_FIGURES = ("run_s", "max_send_lag_s", "sampler_late_max_s", "start_lag_max_s",
                   "cpu_busy_s")
#: Timeline gauges that a merge drops (it has each process's own).
_TIMELINE_GAUGES = ("rss_bytes", "cpu_percent")


class _Malformed(Exception):
    """A field of fleet.json a merge reads is missing or has the wrong JSON type."""


def _json_type(value: Any) -> str:
    """What ``value`` is, in JSON's words (a string with its beginning)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    return next((name for name, types in _KINDS.items() if isinstance(value, types)),
                type(value).__name__)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 24 else repr(text[:20] + "…")


def _expect(value: Any, kind: str, where: str, *, null: bool = False) -> Any:
    """``value`` if it is of JSON type ``kind`` (or null, with ``null``), else _Malformed."""
    if value is None and null:
        return value
    if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):  # JSON has booleans
        raise _Malformed(f"{where}: expected {kind}{' or null' if null else ''}, "
                         f"got {_json_type(value)}")
    return value


def _field(parent: dict[str, Any], key: str, kind: str, where: str = "", *,
           required: bool = True, null: bool = False) -> Any:
    """``parent[key]`` checked against ``kind``; None when absent and not ``required``."""
    if key not in parent:
        if required:
            raise _Malformed(f"{where}{key}: missing")
        return None
    return _expect(parent[key], kind, f"{where}{key}", null=null)


def _each(values: list[Any] | dict[str, Any], kind: str, where: str, *,
          null: bool = False) -> None:
    """Every item of an array or value of an object is of JSON type ``kind``."""
    pairs = values.items() if isinstance(values, dict) else enumerate(values)
    for key, value in pairs:
        at = f"{where}.{key}" if isinstance(values, dict) else f"{where}[{key}]"
        _expect(value, kind, at, null=null)


def _check_shape(fleet: dict[str, Any]) -> None:
    """Raise :class:`_Malformed`, naming the field, if a field a merge reads is missing or of
    the wrong JSON type. Only those: what a merge recomputes (the figures, warnings and
    gates) is not looked at. Optional fields (results without storms, clean-up, ...) may be
    absent, not null."""
    _check_run(_field(fleet, "run", "an object"))
    for part in ("connect", "pushes"):
        figures_ = _field(fleet, part, "an object")
        for key in _REASONS if part == "connect" else ("failure_reasons",):
            _each(_field(figures_, key, "an object", f"{part}.", required=False) or {},
                  "a number", f"{part}.{key}")
    _each(_field(fleet, "counters", "an object"), "a number", "counters")
    _each(_field(fleet, "histograms", "an object"), "a string", "histograms")
    _check_series(fleet)
    _check_parts(fleet)
    _each(_field(fleet, "storms", "an array", required=False) or [], "an object", "storms")
    for i, event in enumerate(_field(fleet, "publisher_events", "an array",
                                     required=False) or []):
        if not _expect(event, "an array", f"publisher_events[{i}]"):
            raise _Malformed(f"publisher_events[{i}]: expected [t, kind, ...], got []")
        _expect(event[0], "a number", f"publisher_events[{i}][0]")
        _each(event[1:], "a string", f"publisher_events[{i}]")
    cleanup = _field(fleet, "cleanup", "an object", required=False) or {}
    for key, value in cleanup.items():
        _expect(value, "a string" if key == "reason" else "a number", f"cleanup.{key}")
    _each(_field(fleet, "missing", "an array", required=False) or [], "a string", "missing")


def _check_run(run: dict[str, Any]) -> None:
    for i, shard in enumerate(_field(run, "shards", "an array", "run.")):
        if not _SHARD.fullmatch(_expect(shard, "a string", f"run.shards[{i}]")):
            raise _Malformed(f"run.shards[{i}]: expected i/N, got {_short(shard)}")
    for key in ("mode", "target", "strategy", "run_id"):
        _field(run, key, "a string", "run.")
    _field(run, "radio_model", "a string", "run.", required=False)
    _field(run, "duration_s", "a number", "run.")
    _field(run, "workers", "an integer", "run.", required=False)
    for key in ("fleet_handsets", "ramp_per_s", "started_at"):
        _field(run, key, "a number", "run.", required=False, null=True)
    fingerprint = _field(run, "fingerprint", "an object", "run.", required=False) or {}
    _each(_field(fingerprint, "stages", "an array", "run.fingerprint.", required=False) or [],
          "an object", "run.fingerprint.stages")
    _field(fingerprint, "workload", "an object", "run.fingerprint.", required=False)


def _check_series(fleet: dict[str, Any]) -> None:
    """The per-second counts and the timeline, added up second by second."""
    per_second = _field(fleet, "per_second", "an object")
    for name, series in _field(per_second, "counts", "an object", "per_second.").items():
        _each(_expect(series, "an array", f"per_second.counts.{name}"), "a number",
              f"per_second.counts.{name}")
    for key in ("latency_sum", "latency_max", "lag_max"):
        _each(_field(per_second, key, "an array", "per_second."), "a number",
              f"per_second.{key}")
    for i, sample in enumerate(_field(fleet, "timeline", "an array")):
        where = f"timeline[{i}]"
        _field(_expect(sample, "an object", where), "t", "an integer", f"{where}.")
        for key, value in sample.items():
            _expect(value, "a number", f"{where}.{key}", null=key in _TIMELINE_GAUGES)


def _check_parts(fleet: dict[str, Any]) -> None:
    """The shards (their workers' flags) and the processes (their memory and CPU)."""
    for i, shard in enumerate(_field(fleet, "shards", "an array")):
        where = f"shards[{i}]."
        _expect(shard, "an object", where[:-1])
        _field(shard, "start_wall", "a number", where, required=False, null=True)
        for j, flags in enumerate(_field(shard, "flags", "an array", where)):
            at = f"{where}flags[{j}]"
            _field(_expect(flags, "an object", at), "stopped_early", "a string", f"{at}.")
            for key in _WORKER_FIGURES:
                _field(flags, key, "a number", f"{at}.", required=False)
    for i, process in enumerate(_field(fleet, "processes", "an array")):
        where = f"processes[{i}]."
        _expect(process, "an object", where[:-1])
        _field(process, "name", "a string", where, required=False)
        for key in _PROCESS_FIGURES:
            _field(process, key, "a number", where, required=False, null=key == "connected_peak")
        for j, point in enumerate(_field(process, "timeline", "an array", where,
                                         required=False) or []):
            if len(_expect(point, "an array", f"{where}timeline[{j}]")) != 3:
                raise _Malformed(f"{where}timeline[{j}]: expected [t, rss, cpu], "
                                 f"got {len(point)} items")
            _each(point, "a number", f"{where}timeline[{j}]")


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
