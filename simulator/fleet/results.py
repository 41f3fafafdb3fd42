"""A fleet run's results: gathered from workers, combined across shards, written and read back.

The results directory (CONTRACT §4, plus the fleet's own files):

- ``summary.csv`` / ``summary.json`` — one row (strategy × ``fleet-server``/``fleet-broker``)
  from :func:`simulator.metrics.summarise`; summary.json adds the fleet's headline figures.
- ``handsets.csv`` — one row per handset: HandsetResult's columns, then the fleet's extras.
- ``latencies.csv`` — every end-to-end latency sample (``index,latency_s``), so shards merge
  exactly; ``connects.csv`` — every connect attempt (``index,t_s,outcome,tcp_connect_s,
  handshake_s,registration_s,reason``).
- ``fleet.json`` — run parameters, summable counters, connect and push statistics, latency
  histogram, the connected-over-time timeline and per-process RSS/CPU.
- ``connected.png``, ``latency_cdf.png``.

Everything derived (percentiles, ratios, rates, the summary) is recomputed from the raw rows,
samples and counters, so ``pushsim merge`` of shards equals one run over the same handsets.
"""
from __future__ import annotations

import bisect
import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from simulator.metrics import HandsetResult, percentile, summarise, write_results

from .socket_handset import EXTRA_FIELDS

__all__ = ["FORMAT", "FleetResults", "ResultsError", "merge_timelines"]

FORMAT = "pushsim-fleet/1"
EVENT_FIELDS = ("index", "t_s", "outcome", "tcp_connect_s", "handshake_s", "registration_s",
                "reason")
#: Upper edges of the latency histogram: 10 buckets per decade from 0.1 ms to 100 s.
HISTOGRAM_EDGES = tuple(10 ** (k / 10 - 4) for k in range(61))
_INT_FIELDS = {
    "index", "promotions", "heartbeats", "heartbeats_failed", "reconnects", "bytes_up",
    "bytes_down", "pushes_sent", "pushes_delivered", "duplicates", "connect_attempts",
    "connects", "connect_failures", "lost", "stale", "misrouted", "packets_up", "packets_down",
    "sdk_duplicates_suppressed",
}
_STR_FIELDS = {"device_id", "strategy", "scenario", "radio_model", "network_type", "source_ip",
               "outcome", "reason"}


class ResultsError(ValueError):
    """A results directory is missing, unreadable or does not fit with the others."""


Row = tuple[HandsetResult, dict[str, Any]]


@attrs.define
class FleetResults:
    run: dict[str, Any]  # parameters: mode, target, fleet_handsets, shards, duration_s, ...
    rows: list[Row]
    events: list[tuple]
    timeline: list[dict[str, Any]]
    counters: Counter
    failure_reasons: Counter
    disconnect_reasons: Counter
    push_failures: Counter
    processes: list[dict[str, Any]]
    max_send_lag_s: float = 0.0

    # --- building -----------------------------------------------------------------------

    @classmethod
    def from_workers(cls, run: dict[str, Any], reports: Sequence[dict[str, Any]],
                     extra_processes: Iterable[dict[str, Any]] = ()) -> FleetResults:
        """Gather the reports of :func:`~simulator.fleet.worker.run_worker`."""
        return cls._gather(run, reports, [r["process"] for r in reports] + list(extra_processes))

    @classmethod
    def combine(cls, parts: Sequence[FleetResults], names: Sequence[str]) -> FleetResults:
        """Results of several shards as one; :class:`ResultsError` if they do not fit."""
        first = parts[0].run
        for part, name in zip(parts[1:], names[1:]):
            for key in ("mode", "fleet_handsets"):
                if part.run.get(key) != first.get(key):
                    raise ResultsError(f"{name} has {key} {part.run.get(key)!r}, "
                                       f"{names[0]} has {first.get(key)!r}: not the same fleet")
        owner: dict[int, str] = {}
        for part, name in zip(parts, names):
            for result, _ in part.rows:
                if result.index in owner:
                    raise ResultsError(f"handset {result.index} is in both {owner[result.index]} "
                                       f"and {name}; merge each shard once")
                owner[result.index] = name
        run = dict(first)
        run["shards"] = sorted({s for p in parts for s in p.run.get("shards", [])})
        run["run_ids"] = sorted({r for p in parts for r in p.run.get("run_ids", [])})
        run["workers"] = sum(p.run.get("workers", 1) for p in parts)
        run["handsets"] = len(owner)
        return cls._gather(run, [attrs.asdict(p, recurse=False) for p in parts],
                           [proc for p in parts for proc in p.processes])

    @classmethod
    def _gather(cls, run: dict[str, Any], parts: Sequence[dict[str, Any]],
                processes: list[dict[str, Any]]) -> FleetResults:
        def total(key: str) -> Counter:
            return sum((Counter(p[key]) for p in parts), Counter())
        return cls(
            run=run,
            rows=sorted((row for p in parts for row in p["rows"]), key=lambda r: r[0].index),
            events=sorted((e for p in parts for e in p["events"]), key=lambda e: (e[1], e[0])),
            timeline=merge_timelines([p["timeline"] for p in parts]),
            counters=total("counters"),
            failure_reasons=total("failure_reasons"),
            disconnect_reasons=total("disconnect_reasons"),
            push_failures=total("push_failures"),
            processes=processes,
            max_send_lag_s=max((p["max_send_lag_s"] for p in parts), default=0.0),
        )

    # --- figures ------------------------------------------------------------------------

    def latencies(self) -> list[float]:
        return sorted(x for result, _ in self.rows for x in result.latencies)

    def connect_stats(self) -> dict[str, Any]:
        extras = [extra for _, extra in self.rows]
        connected = [e for e in extras if e["connects"] > 0]
        firsts = sorted(e["first_connect_s"] for e in connected)
        ok = [e for e in self.events if e[2] == "connected"]
        last_first = firsts[-1] if firsts else math.nan
        peak = 0
        for before, after in zip(self.timeline, self.timeline[1:]):
            peak = max(peak, after["connects"] - before["connects"])
        return {
            "handsets": len(self.rows),
            "handsets_connected": len(connected),
            "never_connected": len(self.rows) - len(connected),
            "connect_attempts": sum(e["connect_attempts"] for e in extras),
            "connects": sum(e["connects"] for e in extras),
            "connect_failures": sum(e["connect_failures"] for e in extras),
            "disconnects": self.counters.get("disconnects", 0),
            "connect_rate_per_s": (len(connected) / last_first
                                   if firsts and last_first > 0 else math.nan),
            "peak_connects_per_s": peak,
            "first_connect_s": _distribution(firsts),
            "tcp_connect_s": _distribution(sorted(e[3] for e in ok if not math.isnan(e[3]))),
            "handshake_s": _distribution(sorted(e[4] for e in ok)),
            "registration_s": _distribution(sorted(e[5] for e in ok if not math.isnan(e[5]))),
            "failure_reasons": dict(self.failure_reasons.most_common()),
            "disconnect_reasons": dict(self.disconnect_reasons.most_common()),
        }

    def push_stats(self, latencies: Sequence[float]) -> dict[str, Any]:
        results = [result for result, _ in self.rows]
        extras = [extra for _, extra in self.rows]
        sent = sum(r.pushes_sent for r in results)
        delivered = sum(r.pushes_delivered for r in results)
        failed = sum(self.push_failures.values())
        duration = self.run.get("duration_s") or math.nan
        return {
            "due": self.counters.get("pushes_due", sent + failed),
            "sent": sent,
            "delivered": delivered,
            "delivery_ratio": delivered / sent if sent else math.nan,
            "lost": sum(e["lost"] for e in extras),
            "duplicates": sum(r.duplicates for r in results),
            "failed": failed,
            "not_sent": self.counters.get("pushes_not_sent", 0),
            "rate_limited": self.counters.get("rate_limited", 0),
            "stale": sum(e["stale"] for e in extras),
            "misrouted": sum(e["misrouted"] for e in extras),
            "deleted_notices": self.counters.get("deleted_notices", 0),
            "sent_per_s": sent / duration if duration else math.nan,
            "max_send_lag_s": self.max_send_lag_s,
            "latency_s": _distribution(latencies),
            "failure_reasons": dict(self.push_failures.most_common()),
        }

    def summary(self, connect: dict[str, Any], pushes: dict[str, Any]) -> list[dict[str, Any]]:
        rows = summarise([result for result, _ in self.rows])
        for row in rows:
            row.update({
                "handsets_connected": connect["handsets_connected"],
                "connect_failures": connect["connect_failures"],
                "connect_rate_per_s": connect["connect_rate_per_s"],
                "handshake_p50_s": connect["handshake_s"]["p50"],
                "handshake_p99_s": connect["handshake_s"]["p99"],
                "pushes_lost": pushes["lost"],
                "pushes_failed": pushes["failed"],
            })
        return rows

    # --- files --------------------------------------------------------------------------

    def write(self, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Write the results directory; returns fleet.json's content and the summary rows."""
        from .fleet_plots import plot_connected, plot_latency_cdf

        out.mkdir(parents=True, exist_ok=True)
        latencies = self.latencies()
        connect, pushes = self.connect_stats(), self.push_stats(latencies)
        summary = self.summary(connect, pushes)
        write_results(out, [result for result, _ in self.rows], summary)
        fields = (*HandsetResult.CSV_FIELDS, *EXTRA_FIELDS)
        _write_csv(out / "handsets.csv", fields,
                   ({**result.csv_row(), **extra} for result, extra in self.rows))
        _write_csv(out / "latencies.csv", ("index", "latency_s"),
                   ({"index": r.index, "latency_s": x} for r, _ in self.rows for x in r.latencies))
        _write_csv(out / "connects.csv", EVENT_FIELDS,
                   (dict(zip(EVENT_FIELDS, event)) for event in self.events))
        fleet = {
            "format": FORMAT,
            "run": self.run,
            "connect": connect,
            "pushes": pushes,
            "counters": dict(self.counters),
            "latency_histogram": _histogram(latencies),
            "timeline": self.timeline,
            "processes": [_process_figures(p) for p in self.processes],
            "max_send_lag_s": self.max_send_lag_s,
        }
        with open(out / "fleet.json", "w") as f:
            json.dump(_json_safe(fleet), f, indent=1)
            f.write("\n")
        plot_connected(self.timeline, out / "connected.png")
        plot_latency_cdf(latencies, out / "latency_cdf.png")
        return fleet, summary

    @classmethod
    def read(cls, directory: Path) -> FleetResults:
        """Read a results directory written by :meth:`write`."""
        try:
            with open(directory / "fleet.json") as f:
                fleet = json.load(f)
            if not isinstance(fleet, dict) or fleet.get("format") != FORMAT:
                raise ResultsError(f"{directory}/fleet.json is not a pushsim fleet result")
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
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ResultsError):
                raise
            raise ResultsError(f"cannot read results in {directory}: {exc}") from None
        connect, pushes = fleet.get("connect", {}), fleet.get("pushes", {})
        return cls(
            run=fleet["run"], rows=rows, events=events, timeline=fleet["timeline"],
            counters=Counter(fleet["counters"]),
            failure_reasons=Counter(connect.get("failure_reasons", {})),
            disconnect_reasons=Counter(connect.get("disconnect_reasons", {})),
            push_failures=Counter(pushes.get("failure_reasons", {})),
            processes=[{k: v for k, v in p.items() if not k.endswith("_mb")}
                       for p in fleet["processes"]],
            max_send_lag_s=fleet.get("max_send_lag_s") or 0.0,
        )


def merge_timelines(sources: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Add up per-second samples of several processes, aligned on ``t`` (seconds since each
    one's start). A source that ended early counts with its last sample."""
    sources = [list(s) for s in sources if s]
    if not sources:
        return []
    keys = [k for k in sources[0][0] if k not in ("t", "rss_bytes", "cpu_percent")]
    last_t = max(s[-1]["t"] for s in sources)
    merged = []
    for t in range(min(s[0]["t"] for s in sources), last_t + 1):
        sample: dict[str, Any] = {"t": t, **dict.fromkeys(keys, 0)}
        for source in sources:
            times = [x["t"] for x in source]
            at = bisect.bisect_right(times, t) - 1
            if at >= 0:
                for key in keys:
                    sample[key] += source[at].get(key, 0)
        merged.append(sample)
    return merged


def _distribution(values: Sequence[float]) -> dict[str, Any]:
    """Percentiles of sorted ``values`` (NaN when there are none)."""
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50), "p90": percentile(values, 90),
        "p95": percentile(values, 95), "p99": percentile(values, 99),
        "p999": percentile(values, 99.9),
        "max": values[-1] if values else math.nan,
    }


def _histogram(latencies: Sequence[float]) -> dict[str, Any]:
    counts = [0] * (len(HISTOGRAM_EDGES) + 1)
    for x in latencies:
        counts[bisect.bisect_left(HISTOGRAM_EDGES, x)] += 1
    return {"upper_edges_s": list(HISTOGRAM_EDGES) + [None], "counts": counts}


def _process_figures(process: dict[str, Any]) -> dict[str, Any]:
    figures = dict(process)
    mb = 1024 * 1024
    for key in ("rss_start_bytes", "rss_connected_bytes", "rss_peak_bytes"):
        if key in process:
            figures[key.replace("_bytes", "_mb")] = round(process[key] / mb, 1)
    peak = process.get("connected_peak") or 0
    if peak and "rss_connected_bytes" in process:
        figures["memory_per_connection_bytes"] = round(
            (process["rss_connected_bytes"] - process["rss_start_bytes"]) / peak)
    wall = process.get("wall_s") or 0
    if wall:
        figures["cpu_percent_avg"] = round(
            100 * (process["cpu_user_s"] + process["cpu_system_s"]) / wall, 1)
    return figures


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
