"""The observer of a worker's handsets: every connect, drop, push and receipt, counted.

Handsets call it from their SDK hooks; the push generator tells it what the target
accepted. It keeps the worker's counters, the connect attempts and latency samples in compact
columns (``array``), the HDR histograms, the per-second counts and the live buckets.
Times are trio times; ``t0`` is the common start, ``wall_t0`` the same instant in Unix time.
"""
from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from pushsdk import SystemClock

from .measure import Histograms, LiveBuckets, PerSecond
from .workload import Tracer

if TYPE_CHECKING:
    from .socket_handset import SocketHandset

__all__ = ["FleetObserver", "reason_code", "short_reason"]

OUTCOMES = ("connected", "failed")


def short_reason(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


def reason_code(reason: str) -> str:
    """The stable name of why a state changed — the SDK's ``Reason.code`` — and, when an
    MQTT answer caused it, that answer's number (the 3.1.1 CONNACK return code or the 5.0
    reason code of a CONNACK, DISCONNECT or SUBACK): ``"not_authorized/0x87"``."""
    code = getattr(reason, "code", "") or "unknown"
    mqtt = getattr(getattr(reason, "error", None), "mqtt_reason_code", None)
    return f"{code}/{mqtt:#04x}" if isinstance(mqtt, int) else code


class FleetObserver:
    """The worker's fleet-wide counters, fed by its handsets and its push generator."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.clock = SystemClock()
        self.t0 = 0.0
        self.wall_t0 = 0.0
        self.closing = False
        self.connected = 0  # handsets connected right now
        self.handsets_connected = 0  # handsets that connected at least once
        self.counters: Counter[str] = Counter()
        self.failure_reasons: Counter[str] = Counter()
        self.disconnect_reasons: Counter[str] = Counter()
        self.failure_codes: Counter[str] = Counter()  # by reason_code()
        self.disconnect_codes: Counter[str] = Counter()
        self.push_failures: Counter[str] = Counter()
        # Connect attempts as columns: index, t (since t0), outcome, tcp, handshake,
        # registration (seconds, NaN when unknown), reason (index into self.reasons).
        self.ev_index = array("l")
        self.ev_t = array("d")
        self.ev_outcome = array("b")
        self.ev_tcp = array("d")
        self.ev_handshake = array("d")
        self.ev_registration = array("d")
        self.ev_reason = array("l")
        self.reasons: list[str] = [""]
        self._reason_ids: dict[str, int] = {"": 0}
        # First receipts: handset index and latency from the scheduled time.
        self.lat_index = array("l")
        self.lat_s = array("d")
        self.histograms = Histograms()
        self.per_second = PerSecond()
        self.live_latency = LiveBuckets()
        self.live_handshake = LiveBuckets()
        self.on_ready_hook: Callable[[SocketHandset], None] | None = None

    def since_start(self, now: float | None = None) -> float:
        return (trio.current_time() if now is None else now) - self.t0

    # --- connections ----------------------------------------------------------------------

    def _event(self, index: int, t: float, outcome: str, tcp_s: float, handshake_s: float,
               registration_s: float, reason: str) -> None:
        self.ev_index.append(index)
        self.ev_t.append(t)
        self.ev_outcome.append(OUTCOMES.index(outcome))
        self.ev_tcp.append(tcp_s)
        self.ev_handshake.append(handshake_s)
        self.ev_registration.append(registration_s)
        reason_id = self._reason_ids.get(reason)
        if reason_id is None:
            reason_id = self._reason_ids[reason] = len(self.reasons)
            self.reasons.append(reason)
        self.ev_reason.append(reason_id)

    def events(self) -> list[tuple]:
        """The connect attempts as rows ``(index, t_s, outcome, tcp, handshake, reg, reason)``."""
        return [(i, t, OUTCOMES[o], tcp, hs, reg, self.reasons[r]) for i, t, o, tcp, hs, reg, r
                in zip(self.ev_index, self.ev_t, self.ev_outcome, self.ev_tcp,
                       self.ev_handshake, self.ev_registration, self.ev_reason)]

    def on_connected(self, handset: SocketHandset, now: float, tcp_s: float,
                     handshake_s: float, registration_s: float, first: bool) -> None:
        t = now - self.t0
        self.connected += 1
        self.counters["connects"] += 1
        self.per_second.add("connects", t)
        if first:
            self.handsets_connected += 1
            self.per_second.add("first_connects", t)
        self.histograms.record("handshake", handshake_s)
        self.histograms.record("tcp_connect", tcp_s)
        self.histograms.record("registration", registration_s)
        self.live_handshake.observe(handshake_s)
        self._event(handset.index, t, "connected", tcp_s, handshake_s, registration_s, "")

    def on_disconnected(self, handset: SocketHandset, reason: str) -> None:
        self.connected -= 1
        if not self.closing:
            self.counters["disconnects"] += 1
            self.per_second.add("disconnects", self.since_start())
            self.disconnect_reasons[short_reason(reason)] += 1
            self.disconnect_codes[reason_code(reason)] += 1

    def on_failed(self, handset: SocketHandset, now: float, tcp_s: float, reason: str) -> None:
        if self.closing:
            return
        self.failure_codes[reason_code(reason)] += 1
        reason = short_reason(reason)
        self.counters["connect_failures"] += 1
        self.per_second.add("connect_failures", now - self.t0)
        self.failure_reasons[reason] += 1
        self._event(handset.index, now - self.t0, "failed", tcp_s, math.nan, math.nan, reason)

    def on_ready(self, handset: SocketHandset) -> None:
        if self.on_ready_hook is not None:
            self.on_ready_hook(handset)

    # --- pushes ---------------------------------------------------------------------------

    def on_received(self, handset: SocketHandset, tracer: Tracer | None) -> None:
        if not handset.ledger.on_received(tracer, self.run_id, handset.group):
            return
        assert tracer is not None
        latency = max(0.0, self.clock.now() - tracer.scheduled_at)
        self.lat_index.append(handset.index)
        self.lat_s.append(latency)
        self.histograms.record("latency", latency)
        self.live_latency.observe(latency)
        self.per_second.latency(self.since_start(), latency)
        self.counters["received"] += 1
        if handset.ledger.was_expected(tracer.seq):
            self._delivered()

    def on_expected(self, handset: SocketHandset, seq: int) -> None:
        """Push ``seq`` went out (accepted or not) while ``handset`` was subscribed to it."""
        self.counters["expected"] += 1
        if handset.ledger.on_expected(seq):
            self._delivered()  # it arrived before the sender heard back

    def _delivered(self) -> None:
        self.counters["delivered"] += 1
        self.per_second.add("pushes_delivered", self.since_start())

    def on_deleted(self, handset: SocketHandset, count: int) -> None:
        self.counters["deleted_notices"] += 1
        self.counters["deleted_messages"] += count

    def live(self) -> dict[str, Any]:
        """What ``--metrics-port`` shows of this worker (cumulative, cheap to ship)."""
        return {"latency": self.live_latency.snapshot(),
                "handshake": self.live_handshake.snapshot()}
