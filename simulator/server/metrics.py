"""Counters of the reference server, its ``statistics()`` record and the /metrics text.

Counters only ever grow (Prometheus counters, ``_total``); gauges are read when a snapshot
is taken. The Prometheus names are ``pushsim_`` + the field name (+ ``_total`` for counters).
"""
from __future__ import annotations

from collections import Counter

import attrs

__all__ = ["Counters", "ServerStatistics", "render_prometheus", "METRICS"]


@attrs.define
class Counters:
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
    mqtt_connections_accepted: int = 0
    mqtt_connections_refused: int = 0
    mqtt_takeovers: int = 0
    mqtt_probes: int = 0
    mqtt_keepalive_timeouts: int = 0
    mqtt_protocol_errors: int = 0
    mqtt_acl_violations: int = 0
    rate_limited: int = 0
    registrations: int = 0
    registrations_refused: int = 0
    devices_deleted: int = 0
    mqtt_sessions_revoked: int = 0
    mqtt_probes_refused: int = 0
    http_responses: Counter[int] = attrs.field(factory=Counter)  # by status code


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
    mqtt_connections_accepted: int
    mqtt_connections_refused: int
    mqtt_takeovers: int
    mqtt_probes: int
    mqtt_keepalive_timeouts: int
    mqtt_protocol_errors: int
    mqtt_acl_violations: int
    rate_limited: int
    registrations: int
    registrations_refused: int
    devices_deleted: int
    mqtt_sessions_revoked: int
    mqtt_probes_refused: int
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
    ("messages_dropped", "counter", "Messages dropped because a device queue was full."),
    ("messages_discarded", "counter", "Messages discarded with a clean MQTT session."),
    ("deleted_notices", "counter", "'deleted' notices queued or grown."),
    ("receipts", "counter", "Opened/dismissed receipts recorded."),
    ("mqtt_connections_accepted", "counter", "CONNECTs accepted (CONNACK 0)."),
    ("mqtt_connections_refused", "counter", "CONNECTs refused (CONNACK != 0)."),
    ("mqtt_takeovers", "counter", "Connections closed by a newer CONNECT of the same device."),
    ("mqtt_probes", "counter", "Probe connections accepted (NAT timeout measurement)."),
    ("mqtt_keepalive_timeouts", "counter", "Connections closed after 1.5 x keepalive silence."),
    ("mqtt_protocol_errors", "counter", "Connections closed for malformed or oversized packets."),
    ("mqtt_acl_violations", "counter", "Connections closed for publishing outside rcpt/."),
    ("rate_limited", "counter", "Pushes refused with 429 by the per-app rate limit."),
    ("registrations", "counter", "Registrations accepted (new devices and re-registrations)."),
    ("registrations_refused", "counter",
     "Re-registrations refused: proof missing or wrong (401/403), alias taken (409)."),
    ("devices_deleted", "counter", "Registrations deleted (DELETE /v1/devices/<id>)."),
    ("mqtt_sessions_revoked", "counter",
     "MQTT connections closed because their token was revoked."),
    ("mqtt_probes_refused", "counter",
     "Probe connections refused (CONNACK 3): the device held the most allowed."),
)


def render_prometheus(stats: ServerStatistics) -> bytes:
    """The Prometheus text exposition format (version 0.0.4) of a snapshot."""
    lines: list[str] = []
    for field, kind, help_text in METRICS:
        name = f"pushsim_{field}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                  f"{name} {getattr(stats, field)}"]
    name = "pushsim_http_responses_total"
    lines += [f"# HELP {name} HTTP responses by status code.", f"# TYPE {name} counter"]
    lines += [f'{name}{{code="{code}"}} {n}' for code, n in stats.http_responses]
    return ("\n".join(lines) + "\n").encode()
