"""What a running fleet shows: a progress line on stderr and Prometheus metrics.

Every worker (or shard, on a cluster) sends its cumulative sample once a second; :class:`Live`
keeps the latest of each and adds them up.

- stderr a terminal (or ``--progress``): one tqdm line, redrawn; otherwise one plain line
  every :data:`PLAIN_EVERY_S` seconds (CI logs), none with ``--no-progress``.
- ``--metrics-port P``: Prometheus text at ``http://HOST:P/metrics`` (the official
  ``prometheus_client``, a custom collector over the totals) while the run lasts: gauges of
  connected handsets, counters of connects, failures, pushes, and histograms of connect
  handshake and push latency (from the scheduled time).
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Live", "PLAIN_EVERY_S"]

PLAIN_EVERY_S = 10.0
_SUMS = ("connected", "handsets_connected", "started", "connects", "connect_failures",
         "disconnects", "due", "pushes_sent", "pushes_failed", "pushes_expected",
         "pushes_delivered", "queued", "rss_bytes")


class Live:
    """Totals of the latest samples, shown as a progress line and served as metrics."""

    def __init__(self, total: int, *, progress: bool | None, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", label: str = "pushsim fleet") -> None:
        self._total = total
        self._label = label
        tty = sys.stderr.isatty()
        self._mode = ("off" if progress is False else
                      "bar" if progress or (progress is None and tty) else "plain")
        self._latest: dict[Any, dict[str, Any]] = {}
        self._lock = threading.Lock()  # the metrics server reads from its own thread
        self._bar: Any = None
        self._last_plain = time.monotonic()
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._server: Any = None
        self.metrics_url = ""

    def __enter__(self) -> Live:
        if self._mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=self._total, desc="connected", unit="hs", file=sys.stderr,
                             dynamic_ncols=True, leave=True, mininterval=0.5)
        if self._metrics_port is not None:
            self._start_metrics(self._metrics_port)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- input ----------------------------------------------------------------------------

    def update(self, part: Any, sample: dict[str, Any]) -> None:
        """The latest cumulative sample of ``part`` (a worker or a shard)."""
        with self._lock:
            self._latest[part] = sample
        totals = self.totals()
        if self._bar is not None:
            self._bar.n = totals["connected"]
            self._bar.set_postfix_str(
                f"t={totals['t']}s fail={totals['connect_failures']} "
                f"pushes={totals['pushes_sent']}→{totals['pushes_delivered']} "
                f"rss={totals['rss_bytes'] / 2**20:.0f}MB", refresh=False)
            self._bar.refresh()
        elif self._mode == "plain" and time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            print(self.plain_line(totals), file=sys.stderr, flush=True)

    def totals(self) -> dict[str, Any]:
        with self._lock:
            samples = list(self._latest.values())
        totals: dict[str, Any] = {key: sum(s.get(key, 0) for s in samples) for key in _SUMS}
        totals["t"] = max((s.get("t", 0) for s in samples), default=0)
        for name in ("latency", "handshake"):
            parts = [s["live"][name] for s in samples if "live" in s]
            totals[name] = {
                "buckets": [sum(col) for col in zip(*(p["buckets"] for p in parts))],
                "count": sum(p["count"] for p in parts), "sum": sum(p["sum"] for p in parts)}
        return totals

    def plain_line(self, totals: dict[str, Any]) -> str:
        return (f"{self._label}: t={totals['t']}s connected {totals['connected']:,}/"
                f"{self._total:,} (connects {totals['connects']:,}, failed attempts "
                f"{totals['connect_failures']:,}, drops {totals['disconnects']:,}); pushes "
                f"{totals['due']:,} due, {totals['pushes_sent']:,} sent, "
                f"{totals['pushes_failed']:,} failed, {totals['pushes_delivered']:,}/"
                f"{totals['pushes_expected']:,} delivered; rss "
                f"{totals['rss_bytes'] / 2**20:,.0f} MB")

    # --- Prometheus -------------------------------------------------------------------------

    def _start_metrics(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        self._server, _ = start_http_server(port, addr=self._metrics_host,
                                            registry=registry)
        port = self._server.server_port
        self.metrics_url = f"http://{self._metrics_host}:{port}/metrics"


class _Collector:
    """Renders :meth:`Live.totals` as Prometheus metric families."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        from .measure import LIVE_BOUNDS

        t = self._live.totals()
        gauges = {
            "handsets_connected": ("connected", "handsets connected now"),
            "handsets_connected_once": ("handsets_connected", "handsets connected at least once"),
            "handsets_started": ("started", "handsets started"),
            "pushes_queued": ("queued", "pushes due and waiting for a sender"),
            "rss_bytes": ("rss_bytes", "resident memory of the fleet's worker processes"),
        }
        for name, (key, doc) in gauges.items():
            yield GaugeMetricFamily(f"pushsim_fleet_{name}", doc, value=t[key])
        counters = {
            "connects": ("connects", "MQTT connections accepted (CONNACK 0)"),
            "connect_failures": ("connect_failures", "connect attempts that failed"),
            "disconnects": ("disconnects", "connections dropped during the run"),
            "pushes_due": ("due", "pushes whose scheduled time has come"),
            "pushes_sent": ("pushes_sent", "pushes the target accepted"),
            "pushes_failed": ("pushes_failed", "pushes the target refused or did not answer"),
            "pushes_expected": ("pushes_expected", "(push, handset) pairs expected"),
            "pushes_delivered": ("pushes_delivered", "(push, handset) pairs delivered"),
        }
        for name, (key, doc) in counters.items():
            yield CounterMetricFamily(f"pushsim_fleet_{name}", doc, value=t[key])
        for name, key, doc in (
                ("push_latency_seconds", "latency", "push latency from its scheduled time"),
                ("connect_seconds", "handshake", "connect attempt to CONNACK")):
            h = t[key]
            buckets = [(f"{bound:g}", n) for bound, n in zip(LIVE_BOUNDS, h["buckets"])]
            buckets.append(("+Inf", h["count"]))
            yield HistogramMetricFamily(f"pushsim_fleet_{name}", doc, buckets=buckets,
                                        sum_value=h["sum"])
