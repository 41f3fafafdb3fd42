"""One handset of a fleet: the real SDK's :class:`~pushsdk.PushClient` over a real socket,
plus what is measured around it.

The handset learns about its connection only through the SDK's public hooks — state changes
(registration, connect attempt, CONNACK, drops), message callbacks — and through the streams
its connector hands out (traffic, TCP connect time, the first SUBACK). Everything it
measures goes to its worker's :class:`~.observer.FleetObserver`.

A handset is kept small (a fleet process holds tens of thousands): slots, the ledger as two
bitsets, the radio meter counting its own bytes, latency samples kept by the observer.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from pushsdk import BrokerConfig, ClientState, PushClient, Reason, ServerConfig
from pushsdk.heartbeat import HeartbeatStrategy
from pushsdk.transport import TcpConnector
from simulator.metrics import HandsetResult
from simulator.radio import RadioModel

from .traffic import MeteredConnector, SubackScanner, WebSocketSubackScanner
from .workload import Ledger, MemberLedger, decode_tracer

if TYPE_CHECKING:
    from .observer import FleetObserver

__all__ = ["EXTRA_FIELDS", "SocketHandset"]

#: Columns handsets.csv has beyond :class:`simulator.metrics.HandsetResult`'s.
EXTRA_FIELDS = (
    "source_ip", "connect_attempts", "connects", "connect_failures", "first_connect_s",
    "tcp_connect_s", "handshake_s", "registration_s", "expected", "lost", "unexpected",
    "stale", "misrouted", "packets_up", "packets_down", "sdk_duplicates_suppressed",
)

_CONNECTING = (ClientState.CONNECTING, ClientState.REGISTERING)


class SocketHandset:
    """A PushClient with its measurements. ``await handset.client.run()`` runs it; whoever
    starts it sets ``started_at`` (trio time)."""

    __slots__ = (
        "index", "group", "device_id", "source_ip", "client", "meter", "ledger", "observer",
        "ready", "subscribed", "link", "packets_up", "packets_down", "started_at", "ended_at",
        "first_connected_at", "failures", "_mark", "_tcp_s", "_registration_s", "_first",
        "_connected", "_clean", "_scanner",
    )

    def __init__(self, index: int, observer: FleetObserver, *, group: int, groups: int,
                 device_id: str, connector: TcpConnector, config: ServerConfig | BrokerConfig,
                 strategy: HeartbeatStrategy | None, radio: RadioModel, network_type: str,
                 connect_timeout: float, rng: random.Random,
                 ledger: Ledger | MemberLedger | None = None, websocket: bool = False) -> None:
        self.index = index
        self.group = group
        self.device_id = device_id
        self.observer = observer
        self.source_ip = connector.source_ip or ""
        self.meter = radio.new_meter()
        # A member of a shared subscription holds a view of its group's ledger.
        self.ledger = ledger if ledger is not None else Ledger(groups)
        self.ready = False  # subscribed now: pushes to its group can be counted on for it
        self.subscribed = False  # subscribed at least once
        self.link: trio.abc.Stream | None = None  # the current MQTT stream
        # Looks for the first SUBACK on the current MQTT stream; None once seen, or when the
        # stream was opened subscribed (a persistent session).
        self._scanner: SubackScanner | WebSocketSubackScanner | None = None
        self.packets_up = self.packets_down = 0
        self.started_at = self.ended_at = self.first_connected_at = math.nan
        self.failures = 0
        self._mark = 0.0  # when the current registration or connect attempt began
        self._tcp_s = self._registration_s = math.nan
        self._first: tuple[float, float, float] | None = None  # first tcp/handshake/register
        self._connected = False
        # A clean session forgets its subscription with the connection: pushes sent while it
        # is away are not its to receive.
        self._clean = isinstance(config, BrokerConfig) and config.clean_session
        # Broker mode makes no HTTP requests and has no notifications or deletion notices:
        # no second connector and no callbacks for them (a fleet holds many handsets).
        server = isinstance(config, ServerConfig)
        self.client = PushClient(
            config, connector=MeteredConnector(connector, self, mqtt=True,
                                               websocket=websocket),
            http_connector=MeteredConnector(connector, self, mqtt=False) if server else None,
            strategy=strategy, rng=rng, connect_timeout=connect_timeout,
            network_type=network_type, on_message=self._on_message,
            on_notification=self._on_message if server else None,
            on_deleted=self._on_deleted if server else None,
            on_state_change=self._on_state_change)

    @property
    def registration_id(self) -> str | None:
        registration = self.client.registration
        return registration.registration_id if registration else None

    # --- traffic (from MeteredConnector and the MQTT stream, as its TrafficObserver) ---------

    def up(self, nbytes: int) -> None:
        self.packets_up += 1
        self.meter.on_packet(trio.current_time(), "up", nbytes)

    def down(self, nbytes: int) -> None:
        self.packets_down += 1
        self.meter.on_packet(trio.current_time(), "down", nbytes)

    on_sent = up

    def on_received(self, data: bytes) -> None:
        self.down(len(data))
        if self._scanner is not None and self._scanner.feed(data):
            self._scanner = None
            self._on_suback()

    def on_tcp(self, seconds: float, stream: trio.abc.Stream,
               scanner: SubackScanner | WebSocketSubackScanner | None) -> None:
        self._tcp_s = seconds
        self.link = stream
        self._scanner = scanner

    def watching_suback(self) -> bool:
        return not self.ready

    def _on_suback(self) -> None:
        if not self.ready:
            self.ready = True
            first = not self.subscribed
            self.subscribed = True
            if first:
                self.observer.on_ready(self)

    # --- SDK hooks ------------------------------------------------------------------------

    def _on_state_change(self, old: ClientState, new: ClientState, reason: Reason) -> None:
        now = trio.current_time()
        if new is ClientState.REGISTERING:
            self._mark = now
        elif new is ClientState.CONNECTING:
            if old is ClientState.REGISTERING:
                self._registration_s = now - self._mark
            self._mark = now
            self._tcp_s = math.nan
        elif new is ClientState.CONNECTED:
            self._on_connected(now)
        if old is ClientState.CONNECTED and self._connected:
            self._connected = False
            if self._clean:
                self.ready = False
            self.observer.on_disconnected(self, reason)
        elif new is ClientState.CLOSED:
            self.ended_at = now
        # A failed attempt: retried (WAITING), or refused for good (CLOSED, a permanent error
        # such as CONNACK 5; the run's own shutdown is not counted, see on_failed).
        if new in (ClientState.WAITING, ClientState.CLOSED) and old in _CONNECTING:
            self.failures += 1
            self.observer.on_failed(self, now, self._tcp_s, reason)

    def _on_connected(self, now: float) -> None:
        self._connected = True
        handshake = now - self._mark
        first = self._first is None
        if first:
            self.first_connected_at = now
            self._first = (self._tcp_s, handshake, self._registration_s)
        self.observer.on_connected(self, now, self._tcp_s, handshake, self._registration_s,
                                   first)
        self._registration_s = math.nan

    def _on_message(self, message: Any) -> None:
        payload = getattr(message, "payload", None)
        if payload is None:  # server mode: the tracer is the data of a data push
            body = message.message
            payload = body.get("data") if isinstance(body, Mapping) else None
        self.observer.on_received(self, decode_tracer(payload))

    def _on_deleted(self, message: Any) -> None:
        self.observer.on_deleted(self, message.count or 0)

    # --- results --------------------------------------------------------------------------

    def result(self, *, strategy: str, scenario: str, network_type: str, run_start: float,
               run_end: float, latencies: tuple[float, ...]
               ) -> tuple[HandsetResult, dict[str, Any]]:
        """The handset's row: a HandsetResult plus the fleet's extra columns."""
        stats = self.client.statistics()
        radio = self.meter.statistics()
        start = self.started_at if not math.isnan(self.started_at) else run_end
        end = self.ended_at if not math.isnan(self.ended_at) else run_end
        # The energy runs to the end of the radio tail after the last packet; so does the
        # window it is spread over (per-day figures scale by 86,400 s / duration).
        if radio.radio_idle_at is not None:
            end = max(end, radio.radio_idle_at)
        duration = max(end - start, 1e-9)
        ledger = self.ledger
        result = HandsetResult(
            index=self.index, device_id=self.device_id, strategy=strategy, scenario=scenario,
            radio_model=radio.model, network_type=network_type,
            nat_timeout_s=math.nan,  # a real network: unknown
            duration_s=duration, energy_j=radio.joules,
            idle_baseline_j=radio.idle_baseline_j(duration), promotions=radio.promotions,
            radio_active_s=radio.radio_active_s, heartbeats=stats.heartbeats_sent,
            heartbeats_failed=stats.heartbeats_failed, reconnects=stats.reconnects,
            bytes_up=stats.bytes_up, bytes_down=stats.bytes_down,
            pushes_sent=ledger.expected, pushes_delivered=ledger.delivered,
            duplicates=ledger.duplicates, connected_s=stats.connected_time,
            dead_s=math.nan,  # whether a live path was dead is not observable here
            latencies=latencies,
        )
        tcp_s, handshake_s, registration_s = self._first or (math.nan,) * 3
        extras = {
            "source_ip": self.source_ip, "connect_attempts": stats.connect_attempts,
            "connects": stats.connects, "connect_failures": self.failures,
            "first_connect_s": self.first_connected_at - run_start, "tcp_connect_s": tcp_s,
            "handshake_s": handshake_s, "registration_s": registration_s,
            "expected": ledger.expected, "lost": ledger.lost, "unexpected": ledger.unexpected,
            "stale": ledger.stale, "misrouted": ledger.misrouted,
            "packets_up": self.packets_up, "packets_down": self.packets_down,
            "sdk_duplicates_suppressed": stats.duplicates,
        }
        return result, extras
