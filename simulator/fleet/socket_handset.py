"""One handset of a fleet: the real SDK's :class:`~pushsdk.PushClient` plus what is measured
around it.

The handset learns about its connection only through the SDK's public hooks — state changes
(registration, connect attempt, CONNACK, drops), message callbacks — and through the streams
its connector hands out (traffic, TCP connect time, the first SUBACK). Everything it measures
goes to the shared :class:`FleetObserver` of its worker, which keeps the fleet-wide counters.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from pushsdk import BrokerConfig, ClientState, PushClient, ServerConfig
from pushsdk.heartbeat import HeartbeatStrategy
from pushsdk.transport import TcpConnector
from simulator.metrics import HandsetResult
from simulator.radio import RadioModel

from .traffic import MeteredConnector, Traffic
from .workload import Ledger, decode_tracer

if TYPE_CHECKING:
    from .worker import FleetObserver

__all__ = ["EXTRA_FIELDS", "SocketHandset", "device_id", "topic"]

#: Columns handsets.csv has beyond :class:`simulator.metrics.HandsetResult`'s.
EXTRA_FIELDS = (
    "source_ip", "connect_attempts", "connects", "connect_failures", "first_connect_s",
    "tcp_connect_s", "handshake_s", "registration_s", "lost", "stale", "misrouted",
    "packets_up", "packets_down", "sdk_duplicates_suppressed",
)

_CONNECTING = (ClientState.CONNECTING, ClientState.REGISTERING)


def device_id(index: int) -> str:
    """Client id (broker mode) and device id (server mode) of handset ``index``."""
    return f"pushsim-{index}"


def topic(index: int) -> str:
    """The topic handset ``index`` subscribes to in broker mode."""
    return f"pushsim/{index}"


class SocketHandset:
    """A PushClient with its observer. ``await handset.client.run()`` runs it; whoever starts
    it sets ``started_at`` (trio time)."""

    __slots__ = (
        "index", "source_ip", "client", "traffic", "ledger", "observer", "ready", "deferred",
        "started_at", "ended_at", "first_connected_at", "failures", "_mark", "_tcp_s",
        "_registration_s", "_first", "_connected",
    )

    def __init__(self, index: int, observer: FleetObserver, *, connector: TcpConnector,
                 config: ServerConfig | BrokerConfig, strategy: HeartbeatStrategy | None,
                 radio: RadioModel, network_type: str, connect_timeout: float,
                 rng: random.Random) -> None:
        self.index = index
        self.observer = observer
        self.source_ip = connector.source_ip or ""
        self.traffic = Traffic(radio.new_meter())
        self.ledger = Ledger()
        self.ready = False  # subscribed at least once: pushes to it can be counted on
        self.deferred: list[int] = []  # pushes due before it was ready
        self.started_at = self.ended_at = self.first_connected_at = math.nan
        self.failures = 0
        self._mark = 0.0  # when the current registration or connect attempt began
        self._tcp_s = self._registration_s = math.nan
        self._first: tuple[float, float, float] | None = None  # first tcp/handshake/register
        self._connected = False
        mqtt = MeteredConnector(connector, self.traffic, on_connected=self._on_tcp,
                              on_suback=self._on_suback, watch=self._not_ready)
        http = MeteredConnector(connector, self.traffic)
        self.client = PushClient(
            config, connector=mqtt, http_connector=http, strategy=strategy, rng=rng,
            connect_timeout=connect_timeout, network_type=network_type,
            on_message=self._on_message, on_notification=self._on_message,
            on_deleted=self._on_deleted, on_state_change=self._on_state_change)

    @property
    def registration_id(self) -> str | None:
        registration = self.client.registration
        return registration.registration_id if registration else None

    # --- SDK hooks ------------------------------------------------------------------------

    def _on_tcp(self, seconds: float) -> None:
        self._tcp_s = seconds

    def _not_ready(self) -> bool:
        return not self.ready

    def _on_suback(self) -> None:
        if not self.ready:
            self.ready = True
            self.observer.on_ready(self)

    def _on_state_change(self, old: ClientState, new: ClientState, reason: str) -> None:
        now = trio.current_time()
        if new is ClientState.REGISTERING:
            self._mark = now
        elif new is ClientState.CONNECTING:
            if old is ClientState.REGISTERING:
                self._registration_s = now - self._mark
            self._mark = now
            self._tcp_s = math.nan
        elif new is ClientState.CONNECTED:
            self._connected = True
            handshake = now - self._mark
            first = self._first is None
            if first:
                self.first_connected_at = now
                self._first = (self._tcp_s, handshake, self._registration_s)
            self.observer.on_connected(self, now, self._tcp_s, handshake, self._registration_s,
                                    first)
            self._registration_s = math.nan
        if old is ClientState.CONNECTED and self._connected:
            self._connected = False
            self.observer.on_disconnected(self, reason)
        elif new is ClientState.CLOSED:
            self.ended_at = now
        if new is ClientState.WAITING and old in _CONNECTING:
            self.failures += 1
            self.observer.on_failed(self, now, self._tcp_s, reason)

    def _on_message(self, message: Any) -> None:
        payload = getattr(message, "payload", None)
        if payload is None:  # server mode: the tracer is the data of a data push
            body = message.message
            payload = body.get("data") if isinstance(body, Mapping) else None
        self.observer.on_received(self, decode_tracer(payload))

    def _on_deleted(self, message: Any) -> None:
        self.observer.on_deleted(self, message.count or 0)

    # --- results ------------------------------------------------------------------------

    def result(self, *, strategy: str, scenario: str, network_type: str,
               run_start: float, run_end: float) -> tuple[HandsetResult, dict[str, Any]]:
        """The handset's row: a HandsetResult plus the fleet's extra columns."""
        stats = self.client.statistics()
        radio = self.traffic.meter.statistics()
        start = self.started_at if not math.isnan(self.started_at) else run_end
        end = self.ended_at if not math.isnan(self.ended_at) else run_end
        # The energy runs to the end of the radio tail after the last packet; so does the
        # window it is spread over (per-day figures scale by 86,400 s / duration).
        if radio.radio_idle_at is not None:
            end = max(end, radio.radio_idle_at)
        duration = max(end - start, 1e-9)
        ledger = self.ledger
        result = HandsetResult(
            index=self.index,
            device_id=device_id(self.index),
            strategy=strategy,
            scenario=scenario,
            radio_model=radio.model,
            network_type=network_type,
            nat_timeout_s=math.nan,  # a real network: unknown
            duration_s=duration,
            energy_j=radio.joules,
            idle_baseline_j=radio.idle_baseline_j(duration),
            promotions=radio.promotions,
            radio_active_s=radio.radio_active_s,
            heartbeats=stats.heartbeats_sent,
            heartbeats_failed=stats.heartbeats_failed,
            reconnects=stats.reconnects,
            bytes_up=self.traffic.bytes_up,
            bytes_down=self.traffic.bytes_down,
            pushes_sent=len(ledger.accepted),
            pushes_delivered=ledger.delivered,
            duplicates=ledger.duplicates,
            connected_s=stats.connected_time,
            dead_s=math.nan,  # whether a live path was dead is not observable here
            latencies=tuple(ledger.latencies),
        )
        tcp_s, handshake_s, registration_s = self._first or (math.nan,) * 3
        extras = {
            "source_ip": self.source_ip,
            "connect_attempts": stats.connect_attempts,
            "connects": stats.connects,
            "connect_failures": self.failures,
            "first_connect_s": self.first_connected_at - run_start,
            "tcp_connect_s": tcp_s,
            "handshake_s": handshake_s,
            "registration_s": registration_s,
            "lost": ledger.lost,
            "stale": ledger.stale,
            "misrouted": ledger.misrouted,
            "packets_up": self.traffic.packets_up,
            "packets_down": self.traffic.packets_down,
            "sdk_duplicates_suppressed": stats.duplicates,
        }
        return result, extras
