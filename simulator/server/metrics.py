"""Counters, latency histograms and gauges of the reference server, and the /metrics text.

Counters only ever grow (Prometheus counters, ``_total``); gauges are read when a snapshot
is taken; histograms count observations in fixed buckets (``_bucket{le=...}``, ``_sum``,
``_count``). The Prometheus names are ``pushsim_`` + the field name (+ ``_total`` for
counters, ``_seconds`` for the latency histograms).

A *snapshot* (:func:`snapshot`) is the JSON-able state of one process; :func:`merge` adds
the snapshots of the worker processes of a cluster, so that ``/metrics`` answers for the
whole server whichever worker is asked (``cluster.py``).
"""
from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

import attrs

__all__ = ["LATENCY_BUCKETS", "METRICS", "Histogram", "ServerCounters", "ServerStatistics",
           "merge", "render_prometheus", "snapshot"]

#: Upper bounds (seconds) of the latency histograms' buckets; +Inf is implied.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)


@attrs.define
class Histogram:
    """Observations counted in cumulative-by-rendering buckets of :data:`LATENCY_BUCKETS`."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


@attrs.define
class ServerCounters:
    """Mutable counters owned by the server; see :data:`METRICS` for what each one means."""

    http_requests: int = 0
    pushes_accepted: int = 0
    push_targets: int = 0
    messages_sent: int = 0
    messages_redelivered: int = 0
    messages_delivered: int = 0
    messages_expired: int = 0
    messages_collapsed: int = 0
    messages_dropped: int = 0
    messages_discarded: int = 0
    deleted_notices: int = 0
    receipts: int = 0
    receipts_refused: int = 0
    mqtt_connections_accepted: int = 0
    mqtt_connections_refused: int = 0
    mqtt_takeovers: int = 0
    mqtt_probes: int = 0
    mqtt_probes_refused: int = 0
    mqtt_keepalive_timeouts: int = 0
    mqtt_protocol_errors: int = 0
    mqtt_acl_violations: int = 0
    mqtt_sessions_revoked: int = 0
    rate_limited: int = 0
    requests_rate_limited: int = 0
    requests_delayed: int = 0
    registrations: int = 0
    registrations_refused: int = 0
    registrations_rate_limited: int = 0
    devices_deleted: int = 0
    connections_refused_per_address: int = 0
    log_records_suppressed: int = 0
    http_responses: Counter[int] = attrs.field(factory=Counter)  # by status code
    connect_latency: Histogram = attrs.field(factory=Histogram)
    push_latency: Histogram = attrs.field(factory=Histogram)


#: ServerCounters fields that are plain integer counters.
COUNTER_FIELDS = tuple(f.name for f in attrs.fields(ServerCounters) if f.type in ("int", int))
HISTOGRAMS = ("connect_latency", "push_latency")
GAUGES = ("mqtt_connections", "sessions", "http_connections", "inflight")
STORE_GAUGES = ("queue_depth", "apps", "devices")


@attrs.frozen
class ServerStatistics:
    """A snapshot of the server (``PushServer.statistics()``)."""

    # gauges
    mqtt_connections: int  # open MQTT transport connections (any state)
    sessions: int  # devices connected with an accepted CONNECT
    http_connections: int
    inflight: int  # messages sent and not yet acknowledged, all devices
    queue_depth: int  # messages waiting for delivery, all devices
    apps: int
    devices: int
    # counters
    http_requests: int
    pushes_accepted: int
    push_targets: int
    messages_sent: int
    messages_redelivered: int
    messages_delivered: int
    messages_expired: int
    messages_collapsed: int
    messages_dropped: int
    messages_discarded: int
    deleted_notices: int
    receipts: int
    receipts_refused: int
    mqtt_connections_accepted: int
    mqtt_connections_refused: int
    mqtt_takeovers: int
    mqtt_probes: int
    mqtt_probes_refused: int
    mqtt_keepalive_timeouts: int
    mqtt_protocol_errors: int
    mqtt_acl_violations: int
    mqtt_sessions_revoked: int
    rate_limited: int
    requests_rate_limited: int
    requests_delayed: int
    registrations: int
    registrations_refused: int
    registrations_rate_limited: int
    devices_deleted: int
    connections_refused_per_address: int
    log_records_suppressed: int
    http_responses: tuple[tuple[int, int], ...] = ()  # (status, count), sorted


#: (field, Prometheus type, help). Counters get the ``_total`` suffix.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("mqtt_connections", "gauge", "Open MQTT connections (any state)."),
    ("sessions", "gauge", "Devices connected with an accepted CONNECT."),
    ("http_connections", "gauge", "Open HTTP connections."),
    ("inflight", "gauge", "Messages sent to devices and not yet acknowledged."),
    ("queue_depth", "gauge", "Messages stored and waiting for delivery."),
    ("apps", "gauge", "Registered apps."),
    ("devices", "gauge", "Registered devices."),
    ("http_requests", "counter", "HTTP requests answered."),
    ("pushes_accepted", "counter", "Pushes accepted by POST /v1/push."),
    ("push_targets", "counter", "Device deliveries created by accepted pushes."),
    ("messages_sent", "counter", "PUBLISH packets sent to devices, redeliveries included."),
    ("messages_redelivered", "counter", "PUBLISH packets resent with DUP=1."),
    ("messages_delivered", "counter", "Messages acknowledged by devices (PUBACK)."),
    ("messages_expired", "counter", "Messages that expired before delivery."),
    ("messages_collapsed", "counter", "Messages replaced by a newer one with its collapse key."),
    ("messages_dropped", "counter",
     "Messages dropped: a device queue was full, or the device was deleted."),
    ("messages_discarded", "counter", "Messages discarded with a clean MQTT session."),
    ("deleted_notices", "counter", "'deleted' notices queued or grown."),
    ("receipts", "counter", "Opened/dismissed receipts recorded."),
    ("receipts_refused", "counter",
     "Receipts over a device's receipt rate (dropped; the device disconnected)."),
    ("mqtt_connections_accepted", "counter", "CONNECTs accepted (CONNACK 0)."),
    ("mqtt_connections_refused", "counter", "CONNECTs refused (CONNACK != 0)."),
    ("mqtt_takeovers", "counter", "Connections closed by a newer CONNECT of the same device."),
    ("mqtt_probes", "counter", "Probe connections accepted (NAT timeout measurement)."),
    ("mqtt_probes_refused", "counter",
     "Probe connections refused (CONNACK 3): the device held the most allowed."),
    ("mqtt_keepalive_timeouts", "counter", "Connections closed after 1.5 x keepalive silence."),
    ("mqtt_protocol_errors", "counter", "Connections closed for malformed or oversized packets."),
    ("mqtt_acl_violations", "counter", "Connections closed for publishing outside rcpt/."),
    ("mqtt_sessions_revoked", "counter",
     "MQTT connections closed because their token was revoked."),
    ("rate_limited", "counter", "Pushes refused with 429 by the per-app rate limit."),
    ("requests_rate_limited", "counter",
     "HTTP requests refused with 429: their source address sent too many."),
    ("requests_delayed", "counter",
     "HTTP requests over their source address's rate that waited for their turn."),
    ("registrations", "counter", "Registrations accepted (new devices and re-registrations)."),
    ("registrations_refused", "counter",
     "Re-registrations refused: proof missing or wrong (401/403), alias taken (409)."),
    ("registrations_rate_limited", "counter",
     "Registrations refused with 429 (per source address or per app)."),
    ("devices_deleted", "counter", "Registrations deleted (DELETE /v1/devices/<id>)."),
    ("connections_refused_per_address", "counter",
     "Connections refused: their source address held the most allowed."),
    ("log_records_suppressed", "counter",
     "Log records not written because their kind was logged too often."),
)

HISTOGRAM_HELP = {
    "connect_latency": "MQTT CONNECT to CONNACK accepted (token check, session opened).",
    "push_latency": "POST /v1/push received to answered 200 (validated, durably committed).",
}


# --- snapshots of processes, merged ------------------------------------------------------

def snapshot(counters: ServerCounters, gauges: dict[str, int]) -> dict[str, Any]:
    """The JSON-able state of one process: counters, histograms and its own gauges."""
    return {
        "counters": {name: getattr(counters, name) for name in COUNTER_FIELDS},
        "http_responses": {str(code): n for code, n in counters.http_responses.items()},
        "histograms": {name: {"counts": list(getattr(counters, name).counts),
                              "sum": getattr(counters, name).total} for name in HISTOGRAMS},
        "gauges": {name: gauges.get(name, 0) for name in GAUGES},
    }


def restore(counters: ServerCounters, doc: dict[str, Any]) -> None:
    """Continue from a snapshot of this process's predecessor (a restarted worker): its
    counters go on from there, so the cluster's never go backwards."""
    for name, value in doc.get("counters", {}).items():
        if name in COUNTER_FIELDS:
            setattr(counters, name, int(value))
    counters.http_responses.update({int(c): int(n)
                                    for c, n in doc.get("http_responses", {}).items()})
    for name, hist in doc.get("histograms", {}).items():
        if name in HISTOGRAMS and len(hist["counts"]) == len(LATENCY_BUCKETS) + 1:
            setattr(counters, name, Histogram([int(n) for n in hist["counts"]],
                                              float(hist["sum"])))


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots."""
    merged = snapshot(ServerCounters(), {})
    for snap in snapshots:
        for section in ("counters", "gauges"):
            for name, value in snap[section].items():
                merged[section][name] = merged[section].get(name, 0) + value
        for code, n in snap["http_responses"].items():
            merged["http_responses"][code] = merged["http_responses"].get(code, 0) + n
        for name, hist in snap["histograms"].items():
            into = merged["histograms"][name]
            into["counts"] = [a + b for a, b in zip(into["counts"], hist["counts"])]
            into["sum"] += hist["sum"]
    return merged


def render_prometheus(snap: dict[str, Any], store_gauges: dict[str, int]) -> bytes:
    """The Prometheus text exposition format (version 0.0.4) of a (merged) snapshot."""
    values = {**snap["counters"], **snap["gauges"], **store_gauges}
    lines: list[str] = []
    for field, kind, help_text in METRICS:
        name = f"pushsim_{field}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                  f"{name} {values.get(field, 0)}"]
    name = "pushsim_http_responses_total"
    lines += [f"# HELP {name} HTTP responses by status code.", f"# TYPE {name} counter"]
    lines += [f'{name}{{code="{code}"}} {n}'
              for code, n in sorted(snap["http_responses"].items(), key=lambda i: int(i[0]))]
    for field in HISTOGRAMS:
        hist = snap["histograms"][field]
        name = f"pushsim_{field}_seconds"
        lines += [f"# HELP {name} {HISTOGRAM_HELP[field]}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS, "+Inf"), hist["counts"]):
            cumulative += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"{name}_sum {hist['sum']!r}", f"{name}_count {cumulative}"]
    return ("\n".join(lines) + "\n").encode()
