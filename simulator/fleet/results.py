"""A fleet run's results: gathered from workers, combined across shards, and its figures.

Everything derived (percentiles, ratios, rates, the summary, the warnings) is recomputed from
the raw rows, counters, HDR histograms and per-second counts, so the merge of shards equals
one run over the same handsets. Shards merge only when they are one run: the same run id and
configuration (:meth:`~.plan.FleetPlan.fingerprint`) and every shard present (a missing one
is an error for ``pushsim merge`` unless ``--partial``; after a worker's death the run writes
what it has, with a warning).

Push accounting (fleet.json ``pushes``), for this shard's pushes:
``due = sent + failed + unanswered + not_sent``; each sent or failed push was expected by
the members of its group subscribed when it went out (``expected``, pairs of push and
handset): ``expected = delivered + lost``; ``delivered <= expected`` always (a refused push
that never arrives is lost). ``unexpected`` counts arrivals no handset was waiting for.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from simulator.metrics import HandsetResult, percentile, summarise

from .measure import Histograms, PerSecond
from .stages import Stage

__all__ = ["FleetResults", "ResultsError", "merge_timelines"]

Row = tuple[HandsetResult, dict[str, Any]]


class ResultsError(ValueError):
    """A results directory is missing, unreadable or does not fit with the others."""


@attrs.define
class FleetResults:
    run: dict[str, Any]  # parameters: mode, target, handsets, shards, fingerprint, ...
    rows: list[Row]
    events: list[tuple]
    timeline: list[dict[str, Any]]
    counters: Counter
    failure_reasons: Counter
    disconnect_reasons: Counter
    push_failures: Counter
    processes: list[dict[str, Any]]
    histograms: Histograms
    per_second: PerSecond
    shards: list[dict[str, Any]]  # per shard: name, start_wall, flags of its workers, host
    storms: list[dict[str, Any]] = attrs.Factory(list)
    publisher_events: list[tuple] = attrs.Factory(list)
    cleanup: dict[str, Any] = attrs.Factory(dict)
    missing: list[str] = attrs.Factory(list)  # workers or shards without a report
    failure_codes: Counter = attrs.Factory(Counter)  # by observer.reason_code()
    disconnect_codes: Counter = attrs.Factory(Counter)

    # --- building -----------------------------------------------------------------------

    @classmethod
    def from_workers(cls, run: dict[str, Any], reports: Sequence[dict[str, Any]],
                     extra_processes: Iterable[dict[str, Any]] = (),
                     missing: Sequence[str] = ()) -> FleetResults:
        """Gather the reports of :func:`~simulator.fleet.worker.run_worker` (one shard)."""
        shard = {"shard": run["shards"][0], "start_wall": min(
                     (r["start_wall"] for r in reports), default=run.get("started_at")),
                 "host": run.get("host", ""), "flags": [r["flags"] for r in reports]}
        parts = [{**r, "histograms": [r["histograms"]], "per_second": [r["per_second"]],
                  "shards": [shard] if i == 0 else []} for i, r in enumerate(reports)]
        return cls._gather(run, parts, [r["process"] for r in reports] + list(extra_processes),
                           list(missing))

    @classmethod
    def combine(cls, parts: Sequence[FleetResults], names: Sequence[str], *,
                partial: bool = False) -> FleetResults:
        """Results of several shards of one run as one; :class:`ResultsError` if they are
        not the shards of one run (or, unless ``partial``, if one is missing)."""
        first = parts[0].run
        for part, name in zip(parts[1:], names[1:]):
            _check_same_run(first, names[0], part.run, name)
        owner: dict[int, str] = {}
        for part, name in zip(parts, names):
            for result, _ in part.rows:
                if result.index in owner:
                    raise ResultsError(f"handset {result.index} is in both {owner[result.index]} "
                                       f"and {name}; merge each shard once")
                owner[result.index] = name
        shards = sorted({s for p in parts for s in p.run.get("shards", [])},
                        key=lambda s: int(s.split("/")[0]))
        count = int(shards[0].split("/")[1]) if shards else 1
        absent = [f"{i}/{count}" for i in range(count) if f"{i}/{count}" not in shards]
        if absent and not partial:
            raise ResultsError(f"shard(s) {', '.join(absent)} of this {count}-shard run are "
                               "missing (merge them all, or give --partial)")
        run = dict(first)
        run["shards"] = shards
        run["workers"] = sum(p.run.get("workers", 1) for p in parts)
        run["handsets"] = len(owner)
        dicts = [{**attrs.asdict(p, recurse=False), "histograms": [p.histograms.encoded()],
                  "per_second": [p.per_second.as_dict()]} for p in parts]
        missing = [m for p in parts for m in p.missing] + [f"shard {s}" for s in absent]
        return cls._gather(run, dicts, [proc for p in parts for proc in p.processes], missing)

    @classmethod
    def _gather(cls, run: dict[str, Any], parts: Sequence[dict[str, Any]],
                processes: list[dict[str, Any]], missing: list[str]) -> FleetResults:
        def total(key: str) -> Counter:
            return sum((Counter(p.get(key, {})) for p in parts), Counter())
        cleanup: Counter = Counter()
        for p in parts:
            cleanup.update({k: v for k, v in p.get("cleanup", {}).items() if k != "reason"})
        reasons = [p["cleanup"]["reason"] for p in parts if p.get("cleanup", {}).get("reason")]
        return cls(
            run=run,
            rows=sorted((row for p in parts for row in p["rows"]), key=lambda r: r[0].index),
            events=sorted((e for p in parts for e in p["events"]), key=lambda e: (e[1], e[0])),
            timeline=merge_timelines([p["timeline"] for p in parts]),
            counters=total("counters"), failure_reasons=total("failure_reasons"),
            disconnect_reasons=total("disconnect_reasons"), push_failures=total("push_failures"),
            processes=processes,
            histograms=Histograms.decode(h for p in parts for h in p["histograms"]),
            per_second=PerSecond.merge([s for p in parts for s in p["per_second"]]),
            shards=[s for p in parts for s in p.get("shards", [])],
            storms=[s for p in parts for s in p.get("storms", [])],
            publisher_events=sorted(e for p in parts for e in p.get("publisher_events", [])),
            cleanup={**cleanup, "reason": reasons[0] if reasons else ""} if cleanup else {},
            missing=missing, failure_codes=total("failure_codes"),
            disconnect_codes=total("disconnect_codes"),
        )

    # --- figures ------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        return [Stage(**s) for s in self.run.get("fingerprint", {}).get("stages", [])]

    def latencies(self) -> list[float]:
        return sorted(x for result, _ in self.rows for x in result.latencies)

    def connect_stats(self) -> dict[str, Any]:
        extras = [extra for _, extra in self.rows]
        connected = [e for e in extras if e["connects"] > 0]
        per_second = self.per_second
        # Rates are per whole second of the per-second counts (by event time), from the
        # start to the second of the last first connect: the average can never exceed the
        # peak, and a late sampler cannot inflate either.
        firsts = per_second.counts["first_connects"]
        last = max((i for i, n in enumerate(firsts) if n), default=-1)
        return {
            "handsets": len(self.rows),
            "handsets_connected": len(connected),
            "never_connected": len(self.rows) - len(connected),
            "connect_attempts": sum(e["connect_attempts"] for e in extras),
            "connects": sum(e["connects"] for e in extras),
            "connect_failures": sum(e["connect_failures"] for e in extras),
            "disconnects": self.counters.get("disconnects", 0),
            "connect_rate_per_s": sum(firsts) / (last + 1) if last >= 0 else math.nan,
            "peak_connects_per_s": per_second.peak("connects"),
            "first_connect_s": _exact(sorted(e["first_connect_s"] for e in connected)),
            "tcp_connect_s": self.histograms.distribution("tcp_connect"),
            "handshake_s": self.histograms.distribution("handshake"),
            "registration_s": self.histograms.distribution("registration"),
            "failure_reasons": dict(self.failure_reasons.most_common()),
            "disconnect_reasons": dict(self.disconnect_reasons.most_common()),
            "failure_codes": dict(self.failure_codes.most_common()),
            "disconnect_codes": dict(self.disconnect_codes.most_common()),
        }

    def push_stats(self) -> dict[str, Any]:
        extras = [extra for _, extra in self.rows]
        counters = self.counters
        sent = counters.get("pushes_sent", 0)
        expected = sum(e["expected"] for e in extras)
        delivered = sum(r.pushes_delivered for r, _ in self.rows)
        run_s = max((f.get("run_s", 0.0) for s in self.shards for f in s["flags"]),
                    default=0.0)
        stages = self.stages()
        # The time pushes were being sent: the pushing stages, plus however much longer the
        # stages took than planned (a late loop), minus what a stop cut short.
        nominal = sum(s.duration for s in stages if s.kind != "drain")
        pushing_s = max(0.0, sum(s.duration for s in stages if s.push_rate > 0)
                        + run_s - nominal) if stages else run_s
        return {
            "due": counters.get("pushes_due", 0), "sent": sent,
            "failed": counters.get("pushes_failed", 0),
            "unanswered": counters.get("pushes_unanswered", 0),
            "not_sent": counters.get("pushes_not_sent", 0),
            "waiting_for_subscriber": counters.get("pushes_waiting_for_subscriber", 0),
            "expected": expected, "delivered": delivered,
            "delivery_ratio": delivered / expected if expected else math.nan,
            "lost": sum(e["lost"] for e in extras),
            "unexpected": sum(e["unexpected"] for e in extras),
            "duplicates": sum(r.duplicates for r, _ in self.rows),
            "stale": sum(e["stale"] for e in extras),
            "misrouted": sum(e["misrouted"] for e in extras),
            "rate_limited": counters.get("rate_limited", 0),
            "deleted_notices": counters.get("deleted_notices", 0),
            "late": counters.get("pushes_late", 0),
            # Achieved rates over the real time the stages took (a late loop makes it
            # longer), not over the nominal duration.
            "asked_per_s": _asked_rate(stages, counters.get("pushes_due", 0)),
            "sent_per_s": sent / pushing_s if pushing_s else math.nan,
            "attempted_per_s": (sent + counters.get("pushes_failed", 0)
                                + counters.get("pushes_unanswered", 0)) / pushing_s
                               if pushing_s else math.nan,
            "run_s": run_s,
            "max_send_lag_s": max((f.get("max_send_lag_s", 0.0) for s in self.shards
                                   for f in s["flags"]), default=0.0),
            "send_lag_s": self.histograms.distribution("send_lag"),
            "latency_s": self.histograms.distribution("latency"),
            "failure_reasons": dict(self.push_failures.most_common()),
            "shared": self.shared_spread(),
        }

    def shared_spread(self) -> dict[str, Any] | None:
        """With ``--shared-group``: how the broker spread the pushes over the members (each
        member's deliveries: the pushes it was the first of its group to get); None
        without one."""
        workload = self.run.get("fingerprint", {}).get("workload", {})
        if not workload.get("shared_group"):
            return None
        counts = sorted(result.pushes_delivered for result, _ in self.rows)
        return {
            "group": workload["shared_group"], "members": len(counts),
            "members_per_group": workload.get("fan_out", 1),
            "deliveries_per_member": {
                "min": counts[0] if counts else math.nan,
                "max": counts[-1] if counts else math.nan,
                "mean": sum(counts) / len(counts) if counts else math.nan,
            },
            "members_without_delivery": sum(1 for n in counts if n == 0),
        }

    def start_skew_s(self) -> float:
        starts = [s["start_wall"] for s in self.shards if s.get("start_wall") is not None]
        return max(starts) - min(starts) if len(starts) > 1 else 0.0

    def summary(self, connect: dict[str, Any], pushes: dict[str, Any]) -> list[dict[str, Any]]:
        """summary.csv/json rows: interfaces §4's columns (latency percentiles from the HDR
        histograms, like fleet.json) plus the fleet's headline figures — the fields a
        ``--fail-if`` gate may name (see :mod:`.gates`)."""
        rows = summarise([result for result, _ in self.rows]) or [{}]
        latency = pushes["latency_s"]
        for row in rows:
            row.update({
                "latency_p50_s": latency["p50"], "latency_p95_s": latency["p95"],
                "latency_p99_s": latency["p99"], "latency_p999_s": latency["p999"],
                "latency_max_s": latency["max"],
                "handsets_connected": connect["handsets_connected"],
                "never_connected": connect["never_connected"],
                "connect_attempts": connect["connect_attempts"],
                "connect_failures": connect["connect_failures"],
                "connects": connect["connects"], "disconnects": connect["disconnects"],
                "connect_rate_per_s": connect["connect_rate_per_s"],
                "peak_connects_per_s": connect["peak_connects_per_s"],
                "handshake_p50_s": connect["handshake_s"]["p50"],
                "handshake_p99_s": connect["handshake_s"]["p99"],
                "pushes_due": pushes["due"], "pushes_failed": pushes["failed"],
                "pushes_unanswered": pushes["unanswered"], "pushes_not_sent": pushes["not_sent"],
                "pushes_expected": pushes["expected"], "lost": pushes["lost"],
                "unexpected": pushes["unexpected"], "stale": pushes["stale"],
                "misrouted": pushes["misrouted"], "sent_per_s": pushes["sent_per_s"],
                "max_send_lag_s": pushes["max_send_lag_s"],
                "send_lag_p99_s": pushes["send_lag_s"]["p99"],
                "start_skew_s": self.start_skew_s(), "missing_parts": len(self.missing),
            })
        return rows


def _check_same_run(first: dict[str, Any], first_name: str, other: dict[str, Any],
                    name: str) -> None:
    a, b = first.get("fingerprint", {}), other.get("fingerprint", {})
    if a.get("run_id") != b.get("run_id"):
        raise ResultsError(f"{name} is run {b.get('run_id')!r}, {first_name} is run "
                           f"{a.get('run_id')!r}: not shards of one run (start every shard "
                           "with the same --run-id)")
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise ResultsError(f"{name} has {key} {b.get(key)!r}, {first_name} has "
                               f"{a.get(key)!r}: not the same run configuration")


def _asked_rate(stages: Sequence[Stage], due: int) -> float:
    """This result's pushes due over the nominal length of the stages that push."""
    seconds = sum(s.duration for s in stages if s.push_rate > 0)
    return due / seconds if seconds else math.nan


def merge_timelines(sources: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Add up per-second samples of several processes, aligned on ``t`` (seconds since the
    common start). A source that ended early counts with its last sample; ``time`` is the
    earliest of the samples' Unix times."""
    sources = [list(s) for s in sources if s]
    if not sources:
        return []
    keys = [k for k in sources[0][0] if k not in ("t", "time", "rss_bytes", "cpu_percent")]
    merged = []
    for t in range(min(s[0]["t"] for s in sources), max(s[-1]["t"] for s in sources) + 1):
        sample: dict[str, Any] = {"t": t, **dict.fromkeys(keys, 0)}
        times = []
        for source in sources:
            at = bisect.bisect_right([x["t"] for x in source], t) - 1
            if at >= 0:
                for key in keys:
                    sample[key] += source[at].get(key, 0)
                if source[at]["t"] == t and "time" in source[at]:
                    times.append(source[at]["time"])
        if times:
            sample["time"] = min(times)
        merged.append(sample)
    return merged


def _exact(values: Sequence[float]) -> dict[str, Any]:
    """Percentiles of sorted ``values`` (NaN when there are none)."""
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50), "p90": percentile(values, 90),
        "p95": percentile(values, 95), "p99": percentile(values, 99),
        "max": values[-1] if values else math.nan,
    }
