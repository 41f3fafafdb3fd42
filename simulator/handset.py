"""A virtual handset: the real SDK behind a simulated network, NAT, Doze and radio.

A :class:`Handset` is three things to the pieces around it:

- the SDK's *connector* (``connect(host, port, tls=...)``): it opens a
  :class:`~simulator.link.SimConnection` through the handset's current network, pays the TCP
  handshake in time and radio energy, and hands the server's end to the in-process server;
- the link's :class:`~simulator.link.PathHooks`: every segment is counted with its TCP/IP
  overhead, fed to the radio meter at the moment the handset's radio sends or receives it, and
  judged by the connection's NAT binding;
- the app: its callbacks record which pushes arrived, when, and whether twice.

The world drives the handset's timeline (network switches, outages, Doze, app state, other
apps' traffic) through the ``on_*`` methods. Nothing here reads a clock but trio's.
"""
from __future__ import annotations

import errno
import math
import random

import trio

from pushsdk import MemoryStateStore, PushClient
from pushsdk.config import ClientState, ServerConfig
from simulator.link import SimConnection, Verdict
from simulator.metrics import HandsetResult
from simulator.nat import WIRE
from simulator.radio import get_model

#: Where handsets find the in-process server (any names would do: nothing resolves them).
SERVER_HOST = "push.sim"
HTTP_PORT = 80
MQTT_PORT = 1883

#: How the gateway's payload marks a high-priority push (compact JSON, CONTRACT §3).
_HIGH_PRIORITY = b'"priority":"high"'
_MSS = WIRE.mss
_HEADER = WIRE.header_bytes
_PER_ACK = WIRE.segments_per_ack


class LazyRandom:
    """A ``random.Random`` created on first use.

    A Mersenne Twister carries 2.5 KB of state; most virtual handsets never draw a number
    (the SDK draws only for backoff jitter), so they should not pay for one.
    """

    __slots__ = ("_seed", "_rng")

    def __init__(self, seed) -> None:
        self._seed = seed
        self._rng = None

    def __getattr__(self, name: str):
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._seed)
        return getattr(rng, name)


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _jitter_source(network, seed):
    """Per-segment extra delay U(0, jitter), a hash of (handset, network, virtual time).

    Common random numbers: a segment sent at the same moment gets the same jitter whichever
    strategy runs, so a push (sent at the same time in every run of a seed) sees the same
    network delay under every strategy, and latency differences between strategies are the
    strategies' own, not noise. SplitMix64 finaliser over the time in microseconds: small,
    fast, deterministic, and good enough for link jitter.
    """
    jitter = network.jitter
    if jitter <= 0:
        return None
    mix = random.Random(seed).getrandbits(64)  # one-off draw; the Random is dropped
    scale = jitter / 9007199254740992.0  # top 53 bits → [0, jitter)

    def jitter_now(now: float) -> float:
        z = (mix + int(now * 1e6) * 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((z ^ (z >> 31)) >> 11) * scale

    return jitter_now


def _doze_keepalive(spec) -> int:
    """A handset with Doze declares a keepalive covering the longest Doze idle period, so
    the server keeps its session (and a high-priority push can get through) while the SDK
    cannot ping; whether the NAT keeps the path is another matter, as on a real phone."""
    params = spec.doze.params
    return math.ceil(params.max_idle_timeout) if params.enabled else 0


def _plan_id(message) -> str | None:
    """The workload's plan id, carried in the notification extras or the message data."""
    notification = message.notification
    if notification is not None:
        extras = notification.get("extras")
        return extras.get("plan_id") if isinstance(extras, dict) else None
    body = message.message
    data = body.get("data") if isinstance(body, dict) else None
    return data.get("plan_id") if isinstance(data, dict) else None


class Handset:
    """One virtual handset of a :class:`~simulator.world.World`."""

    __slots__ = (
        "world", "spec", "index", "client", "network", "online", "_nat", "_jitter", "_meters",
        "_background_meters", "_radio_since", "_radio_time", "conns", "_mqtt_conn",
        "_connected_since", "_connected_conn", "connected_s", "dead_s", "bytes_up",
        "bytes_down", "pending", "delivered_ids", "latencies", "delivered", "duplicates",
        "deleted_notices", "idle", "expected", "push_log",
    )

    def __init__(self, world, spec, strategy, *, app_key: str, clock) -> None:
        self.world = world
        self.spec = spec
        self.index = spec.index
        rng = LazyRandom(spec.seed)
        self.network = spec.network
        self.online = True
        self.idle = False
        self._nat = self.network.nat()
        self._jitter = _jitter_source(self.network, spec.seed)
        self._meters: dict[str, object] = {}  # radio model -> meter (SDK + other apps)
        self._background_meters: dict[str, object] = {}  # radio model -> other apps only
        self._radio_since = 0.0
        self._radio_time: dict[str, float] = {}  # seconds spent on each radio model
        self.conns: list[SimConnection] = []
        self._mqtt_conn: SimConnection | None = None
        self._connected_since: float | None = None
        self._connected_conn: SimConnection | None = None
        self.connected_s = 0.0
        self.dead_s = 0.0
        self.bytes_up = 0
        self.bytes_down = 0
        self.pending: dict[str, tuple[float, str | None]] = {}  # plan id -> (accepted, collapse)
        self.delivered_ids: set[str] = set()
        self.latencies: list[float] = []
        self.push_log: list[tuple[str, float, float]] = []  # (plan id, accepted, delivered)
        self.expected = 0
        self.delivered = 0
        self.duplicates = 0
        self.deleted_notices = 0
        self.client = PushClient(
            ServerConfig(server_url=f"http://{SERVER_HOST}:{HTTP_PORT}", app_key=app_key,
                         device_id=spec.device_id, alias=spec.alias, tags=spec.tags),
            connector=self, state_store=MemoryStateStore(), clock=clock, rng=rng,
            strategy=strategy, min_keepalive=_doze_keepalive(spec), network_key=self.network.key, network_type=self.network.type,
            app_state=spec.app.state_at(0.0).value, on_notification=self._on_push, on_message=self._on_push,
            on_deleted=self._on_deleted, on_state_change=self._on_state_change,
        )

    # --- connector (the SDK opens its connections here) -----------------------------------

    async def connect(self, host: str, port: int, *, tls: bool = False) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.online:
            raise OSError(errno.ENETUNREACH, "network is unreachable")
        if host != SERVER_HOST or port not in (HTTP_PORT, MQTT_PORT):
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {host}:{port}")
        network = self.network
        now = trio.current_time()
        conn = SimConnection(self, network.latency, self._jitter, tag=self._nat.open(now))
        self._radio(now, "up", WIRE.syn_bytes, acked=False)  # SYN
        await trio.sleep(2 * network.latency)  # SYN-ACK comes back
        if conn.dead_since is not None or network is not self.network:
            raise OSError(errno.ETIMEDOUT, "connection timed out (network changed)")
        now = trio.current_time()
        self._radio(now, "down", WIRE.syn_ack_bytes, acked=False)
        self._radio(now, "up", WIRE.handshake_ack_bytes, acked=False)
        self.conns = [c for c in self.conns if c.alive and not c.client._closed]
        self.conns.append(conn)
        server = self.world.server
        handler = server.handle_mqtt_stream if port == MQTT_PORT else server.handle_http_stream
        self.world.nursery.start_soon(handler, conn.server)
        if port == MQTT_PORT:
            self._mqtt_conn = conn
        return conn.client

    # --- path hooks (the link asks about every segment) -----------------------------------

    def uplink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        self._radio(now, "up", nbytes)  # the radio transmits even into a dead path
        if conn.dead_since is not None:
            return Verdict.DROP
        verdict = conn.tag.on_packet(now)
        if verdict is Verdict.DROP:
            conn.kill_silently(conn.tag.expires_at)
        return verdict

    def downlink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        if conn.dead_since is not None:
            return Verdict.DROP
        verdict = conn.tag.on_packet(now)
        if verdict is Verdict.DROP:
            conn.kill_silently(conn.tag.expires_at)
        return verdict

    def arrived(self, conn: SimConnection, now: float, nbytes: int) -> None:
        self._radio(now, "down", nbytes)

    def hold_downlink(self, conn: SimConnection, data: bytes) -> bool:
        """In Doze the device's firewall keeps our app's traffic out, except a high-priority
        push, which wakes the app with a short network grant (as FCM high priority does)."""
        if not self.idle:
            return False
        if _HIGH_PRIORITY in data:
            self.world.nursery.start_soon(self._grant, self.spec.doze.params.high_priority_grace)
            return False
        return True

    async def _grant(self, seconds: float) -> None:
        self.on_device_idle(False)
        await trio.sleep(seconds)
        if not self.spec.doze.network_allowed(trio.current_time()):
            self.on_device_idle(True)

    def _radio(self, now: float, direction: str, nbytes: int, *, acked: bool = True) -> None:
        """Count one write of ``nbytes`` (0 = a FIN) with TCP/IP overhead; wake the radio.

        ``nbytes`` is application data: it becomes ceil(n / MSS) segments of 40-byte headers,
        and the receiver's delayed ACKs (one per two segments) travel the other way.
        """
        if nbytes:
            segments = -(-nbytes // _MSS)
            wire = nbytes + segments * _HEADER
            acks = (-(-segments // _PER_ACK)) * _HEADER if acked else 0
        else:
            wire, acks = _HEADER, 0  # a FIN
        meter = self._meter()
        other = "down" if direction == "up" else "up"
        meter.on_packet(now, direction, wire)
        if acks:
            meter.on_packet(now, other, acks)
        if direction == "up":
            self.bytes_up += wire
            self.bytes_down += acks
        else:
            self.bytes_down += wire
            self.bytes_up += acks

    def _meter(self, background: bool = False):
        meters = self._background_meters if background else self._meters
        radio = self.network.radio
        meter = meters.get(radio)
        if meter is None:
            meter = meters[radio] = get_model(radio).new_meter()
        return meter

    # --- the timeline (driven by the world) -----------------------------------------------

    def on_switch(self, network) -> None:
        """Move to another network: new address and NAT; old connections die silently."""
        now = trio.current_time()
        self._account_radio_time(now)
        self._kill_connections(now)
        self.network = network
        self._nat = network.nat()
        self._jitter = _jitter_source(network, f"{self.spec.seed}:{network.key}")
        if self.online:
            self.client.notify_network_changed(network.key, network.type)

    def on_outage(self, down: bool) -> None:
        """Connectivity lost (the platform tells the app) or back."""
        now = trio.current_time()
        self.online = not down
        if down:
            self._kill_connections(now)
            self.client.notify_network_changed(None, self.network.type)
        else:
            self.client.notify_network_changed(self.network.key, self.network.type)

    def on_background_traffic(self, bytes_up: int, bytes_down: int) -> None:
        """Another app uses the radio now (counted apart so the SDK's share can be told)."""
        if not self.online:
            return
        now = trio.current_time()
        for meter in (self._meter(), self._meter(background=True)):
            meter.on_packet(now, "up", bytes_up)
            meter.on_packet(now, "down", bytes_down)
        # Android's OnNetworkActiveListener: the SDK may ride on this wake-up.
        if not self.idle:
            self.client.notify_radio_active()

    def on_app_state(self, state: str) -> None:
        self.client.set_app_state(state)

    def on_device_idle(self, idle: bool) -> None:
        self.idle = idle
        self.client.set_device_idle(idle)
        if not idle:
            for conn in self.conns:
                conn.release()

    def _kill_connections(self, now: float) -> None:
        for conn in self.conns:
            conn.kill_silently(now)
        self.conns = []

    def _account_radio_time(self, now: float) -> None:
        radio = self.network.radio
        self._radio_time[radio] = self._radio_time.get(radio, 0.0) + now - self._radio_since
        self._radio_since = now

    # --- the app ----------------------------------------------------------------------------

    def expect(self, plan_id: str, accepted_at: float, collapse_key: str | None) -> None:
        """The provider's push ``plan_id`` targets this handset (accepted at ``accepted_at``)."""
        self.pending[plan_id] = (accepted_at, collapse_key)
        self.expected += 1

    def _on_push(self, message) -> None:
        plan_id = _plan_id(message)
        entry = self.pending.pop(plan_id, None)
        if entry is None:
            # Not pending: a second dispatch of a delivered push is a duplicate; anything
            # else (no plan id) is not part of the workload and is not measured.
            if plan_id in self.delivered_ids:
                self.duplicates += 1
            return
        accepted_at, collapse_key = entry
        self.delivered += 1
        self.delivered_ids.add(plan_id)
        now = trio.current_time()
        self.latencies.append(now - accepted_at)
        self.push_log.append((plan_id, accepted_at, now))
        if collapse_key is not None:
            # Older undelivered pushes with this key were replaced on the server by this
            # one (CONTRACT §3): the user sees the newest, so they count as delivered.
            for other, (t, key) in list(self.pending.items()):
                if key == collapse_key and t <= accepted_at:
                    del self.pending[other]
                    self.delivered += 1
                    self.delivered_ids.add(other)
                    self.push_log.append((other, t, now))

    def _on_deleted(self, message) -> None:
        self.deleted_notices += 1

    def _on_state_change(self, old: ClientState, new: ClientState, reason: str) -> None:
        now = trio.current_time()
        if new is ClientState.CONNECTED:
            self._connected_since = now
            self._connected_conn = self._mqtt_conn
        elif old is ClientState.CONNECTED:
            self._close_connected_interval(now)

    def _close_connected_interval(self, now: float) -> None:
        since, conn = self._connected_since, self._connected_conn
        if since is None:
            return
        self.connected_s += now - since
        if conn is not None:
            # Dead from the first of: the path was cut (switch, outage, a probe hit the
            # expired NAT) or the NAT mapping expired, whether or not anything noticed.
            dead_from = conn.dead_since if conn.dead_since is not None else math.inf
            if conn.tag.expired(now):
                dead_from = min(dead_from, conn.tag.expires_at)
            if dead_from < now:
                self.dead_s += now - max(since, dead_from)
        self._connected_since = self._connected_conn = None

    # --- results ----------------------------------------------------------------------------

    def result(self, *, strategy: str, scenario: str, duration: float) -> HandsetResult:
        """What this handset did, measured at the end of the run (``now`` = ``duration``)."""
        now = trio.current_time()
        self._close_connected_interval(now)
        self._account_radio_time(now)
        stats = self.client.statistics()
        energy = idle = radio_active = 0.0
        promotions = 0
        for radio, meter in self._meters.items():
            s = meter.statistics(until=now)
            energy += s.joules
            promotions += s.promotions
            radio_active += s.radio_active_s
            idle += s.idle_baseline_j(self._radio_time.get(radio, 0.0))
        for meter in self._background_meters.values():
            energy -= meter.statistics(until=now).joules
        for radio, seconds in self._radio_time.items():
            if radio not in self._meters:  # never used: idle all along
                idle += get_model(radio).idle_baseline_j(seconds)
        return HandsetResult(
            index=self.index, device_id=self.spec.device_id, strategy=strategy,
            scenario=scenario, radio_model=self.spec.network.radio,
            network_type=self.spec.network.type, nat_timeout_s=self.spec.network.nat_timeout,
            duration_s=duration, energy_j=max(0.0, energy), idle_baseline_j=idle,
            promotions=promotions, radio_active_s=radio_active,
            heartbeats=stats.heartbeats_sent, heartbeats_failed=stats.heartbeats_failed,
            reconnects=stats.reconnects, bytes_up=self.bytes_up, bytes_down=self.bytes_down,
            pushes_sent=self.expected, pushes_delivered=self.delivered,
            duplicates=self.duplicates, connected_s=self.connected_s, dead_s=self.dead_s,
            latencies=tuple(self.latencies),
            pushes=tuple(self.push_log) + tuple(
                (plan_id, accepted, None) for plan_id, (accepted, _) in self.pending.items()),
        )
