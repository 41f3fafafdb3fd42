"""Measuring instruments of a worker: HDR histograms, per-second counts, live buckets.

- :class:`Histograms`: HdrHistogram (``hdrhistogram`` on PyPI, the Python port of Gil Tene's
  HdrHistogram) per measured duration — push latency, handshake, TCP connect, registration,
  send lag — in microseconds from 1 µs to 1 h at 3 significant digits. Memory is fixed
  (~190 KB each) however long the run; histograms of workers and shards add up exactly, so
  a merge reads like one run.
- :class:`PerSecond`: counts per whole second since the common start, bucketed by when each
  event happened (not by when a sampler looked), so a busy loop that samples late cannot
  smear a rate ("peak 5,000/s" from a 3 s gap) and every rate is a count over a second.
- :class:`LiveBuckets`: cumulative Prometheus-style buckets of the same durations, for
  ``--metrics-port`` (small enough to ship every second).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["HISTOGRAMS", "LIVE_BOUNDS", "Histograms", "LiveBuckets", "PerSecond",
           "distribution"]

HISTOGRAMS = ("latency", "handshake", "tcp_connect", "registration", "send_lag")
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 3_600_000_000, 3
#: Upper bounds (seconds) of the live histograms' buckets.
LIVE_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
               30.0, 60.0)


def _new() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


class Histograms:
    """Named HDR histograms of seconds."""

    def __init__(self) -> None:
        self._h = {name: _new() for name in HISTOGRAMS}

    def record(self, name: str, seconds: float) -> None:
        if math.isfinite(seconds):
            us = min(_HIGHEST_US, max(_LOWEST_US, round(seconds * 1e6)))
            self._h[name].record_value(us)

    def encoded(self) -> dict[str, str]:
        """Each histogram in HdrHistogram's compressed base64 form (empty ones omitted)."""
        return {name: h.encode().decode() for name, h in self._h.items() if h.get_total_count()}

    @classmethod
    def decode(cls, parts: Iterable[Mapping[str, str]]) -> Histograms:
        """The sum of several :meth:`encoded` sets."""
        total = cls()
        for part in parts:
            for name, text in part.items():
                if name in total._h:
                    total._h[name].decode_and_add(text.encode())
        return total

    def distribution(self, name: str) -> dict[str, Any]:
        return distribution(self._h[name])


def distribution(h: HdrHistogram) -> dict[str, Any]:
    """Count, mean, percentiles and max of a histogram, in seconds (NaN when empty)."""
    count = h.get_total_count()
    if not count:
        return {"count": 0, **dict.fromkeys(("mean", "p50", "p90", "p95", "p99", "p999", "max"),
                                            math.nan)}
    figures: dict[str, Any] = {"count": count, "mean": h.get_mean_value() / 1e6}
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        figures[key] = h.get_value_at_percentile(q) / 1e6
    figures["max"] = h.get_max_value() / 1e6
    return figures


class PerSecond:
    """Counts (and latency sums and maxima) per second since the start."""

    COUNTS = ("started", "connects", "first_connects", "connect_failures", "disconnects",
              "pushes_due", "pushes_sent", "pushes_failed", "pushes_delivered")

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {name: [] for name in self.COUNTS}
        self.latency_sum: list[float] = []
        self.latency_max: list[float] = []
        self.lag_max: list[float] = []

    @staticmethod
    def _slot(series: list, second: int, fill: Any) -> None:
        if second >= len(series):
            series.extend([fill] * (second + 1 - len(series)))

    def add(self, name: str, t: float, n: int = 1) -> None:
        second = max(0, int(t))
        series = self.counts[name]
        self._slot(series, second, 0)
        series[second] += n

    def latency(self, t: float, seconds: float) -> None:
        second = max(0, int(t))
        self._slot(self.latency_sum, second, 0.0)
        self._slot(self.latency_max, second, 0.0)
        self.latency_sum[second] += seconds
        self.latency_max[second] = max(self.latency_max[second], seconds)

    def lag(self, t: float, seconds: float) -> None:
        second = max(0, int(t))
        self._slot(self.lag_max, second, 0.0)
        self.lag_max[second] = max(self.lag_max[second], seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "latency_sum": self.latency_sum,
                "latency_max": self.latency_max, "lag_max": self.lag_max}

    @classmethod
    def merge(cls, parts: Sequence[Mapping[str, Any]]) -> PerSecond:
        """Add several :meth:`as_dict` (aligned on the common start)."""
        total = cls()
        for part in parts:
            for name, series in part["counts"].items():
                if name in total.counts:
                    _add_into(total.counts[name], series, 0, lambda a, b: a + b)
            _add_into(total.latency_sum, part["latency_sum"], 0.0, lambda a, b: a + b)
            _add_into(total.latency_max, part["latency_max"], 0.0, max)
            _add_into(total.lag_max, part["lag_max"], 0.0, max)
        return total

    def length(self) -> int:
        return max([len(s) for s in self.counts.values()]
                   + [len(self.latency_sum), len(self.lag_max)])

    def get(self, name: str, second: int) -> int:
        series = self.counts[name]
        return series[second] if second < len(series) else 0

    def peak(self, name: str) -> int:
        return max(self.counts[name], default=0)


def _add_into(into: list, series: Sequence, fill: Any, op: Any) -> None:
    if len(series) > len(into):
        into.extend([fill] * (len(series) - len(into)))
    for i, value in enumerate(series):
        into[i] = op(into[i], value)


class LiveBuckets:
    """Cumulative counts at :data:`LIVE_BOUNDS` and the sum, for Prometheus histograms."""

    __slots__ = ("counts", "total", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(LIVE_BOUNDS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        self.total += 1
        self.sum += seconds
        bucket = bisect.bisect_left(LIVE_BOUNDS, seconds)
        if bucket < len(LIVE_BOUNDS):  # beyond the last bound: only in +Inf (the total)
            self.counts[bucket] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": cumulative counts per bound, "count", "sum"}``."""
        cumulative, running = [], 0
        for n in self.counts:
            running += n
            cumulative.append(running)
        return {"buckets": cumulative, "count": self.total, "sum": self.sum}
