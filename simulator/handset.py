"""A virtual handset: the real SDK behind a simulated network, NAT, Doze and radio.

A :class:`VirtualHandset` is three things to the pieces around it:

- the SDK's *connector* (``connect(host, port, tls=...)``): it opens a
  :class:`~simulator.link.SimConnection` through the handset's current network, pays the TCP
  handshake in time and radio energy, and hands the server's end to the in-process server;
- the link's :class:`~simulator.link.PathHooks`: every segment is counted with its TCP/IP
  overhead, fed to the radio meter at the moment the handset's radio sends or receives it, and
  judged by the connection's NAT binding;
- the app: its callbacks record which pushes arrived, when, and whether twice.

The world drives the handset's timeline (network switches, outages, Doze, app state, other
apps' traffic) through the ``on_*`` methods; the handset's exogenous facts (its attachments
and their NAT timeouts, Doze intervals, ...) come from its :class:`~simulator.day.HandsetDay`,
the same object an offline computation reads. A :class:`WorldObserver` given to the world
hears of radio activity, connections, NAT expiries, pushes and state changes as they happen.
Nothing here reads a clock but trio's.
"""
from __future__ import annotations

import errno
import json
import math
import random
from typing import TYPE_CHECKING, Final, Literal

import trio

from pushsdk import MemoryStateStore, PushClient
from pushsdk.config import ClientState, ServerConfig
from simulator.day import Attachment, HandsetDay
from simulator.alarms import Alarms
from simulator.link import SimConnection, Verdict
from simulator.metrics import HandsetResult
from simulator.nat import WIRE, NatBinding, NatTimeout, Retransmission
from simulator.radio import get_model
from simulator.radio.cpu import NEXUS4
from simulator.simclock import current_timers

if TYPE_CHECKING:
    from simulator.radio.meter import RadioMeter

#: Where handsets find the in-process server (any names would do: nothing resolves them).
SERVER_HOST = "push.sim"
HTTP_PORT = 80
MQTT_PORT = 1883

_MSS = WIRE.mss
_HEADER = WIRE.header_bytes
_PER_ACK = WIRE.segments_per_ack
#: Idle timers behind ``network_active`` (AOSP ConnectivityService defaults, seconds).
_ACTIVITY_TIMEOUT = 10.0
_ACTIVITY_TIMEOUT_WIFI = 15.0


class LazyRandom:
    """A ``random.Random`` created on first use.

    A Mersenne Twister carries 2.5 KB of state; most virtual handsets never draw a number
    (the SDK draws only for backoff jitter), so they should not pay for one.
    """

    __slots__ = ("_seed", "_rng")

    def __init__(self, seed) -> None:
        self._seed = seed
        self._rng: random.Random | None = None

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


class WorldObserver:
    """Hears what happens in a world as it happens (every method a no-op here).

    Subclass it and override what you need; pass it as ``World(config, observer=...)`` or
    ``run_world(config, observer=...)``. Calls are synchronous, from inside the run, at the
    virtual time ``t`` they report: an observer must not block and must not call into trio.
    ``index`` is the handset's index. Nothing is called when no observer is given, so an
    observer costs nothing otherwise.
    """

    def radio(self, index: int, t: float, direction: str, nbytes: int, source: str) -> None:
        """The handset's radio sends (``"up"``) or receives (``"down"``) ``nbytes`` IP bytes
        at ``t``; ``source`` is ``"app"`` (the SDK's traffic) or ``"other"`` (other apps)."""

    def connection_opened(self, index: int, t: float, conn: ConnectionRecord) -> None:
        """The handset opened a TCP connection (the SYN passed the NAT at ``t``)."""

    def connection_ended(self, index: int, t: float, conn: ConnectionRecord, how: str) -> None:
        """A connection ended: ``how`` is ``"closed"`` (by the app), ``"reset"`` (a RST)
        or ``"cut"`` (its path died: network switch or outage)."""

    def nat_expired(self, index: int, conn: ConnectionRecord, expired_at: float) -> None:
        """The NAT forgot ``conn`` at ``expired_at``, reported (once) when a packet met the
        expired binding or when the connection ended after it had expired."""

    def push_sent(self, index: int, t: float, plan_id: str) -> None:
        """The provider's push ``plan_id`` to this handset was accepted by the server at ``t``."""

    def push_delivered(self, index: int, t: float, plan_id: str, latency: float) -> None:
        """``plan_id`` reached the app at ``t``, ``latency`` s after it was accepted."""

    def push_duplicate(self, index: int, t: float, plan_id: str) -> None:
        """``plan_id`` reached the app again after it had been delivered."""

    def state_changed(self, index: int, t: float, old: str, new: str, reason: str,
                      dead_since: float | None) -> None:
        """The SDK's state changed (``ClientState`` names). Leaving CONNECTED,
        ``dead_since`` is when the connection it was connected over had died — path cut, NAT
        expired or the server gave up (or None)."""

    def device_idle(self, index: int, t: float, idle: bool) -> None:
        """Doze started (``True``) or stopped blocking the app's network."""

    def app_state(self, index: int, t: float, state: str) -> None:
        """The app state changed: ``"foreground"``, ``"background"`` or ``"inactive"``."""


#: The MQTT version virtual handsets speak. Pinned, not "auto": the reference server offers
#: 5.0 as well, whose properties add bytes to every packet and so change the energy figures;
#: the published results (power_bench/results) and the Doze firewall's PUBLISH reader
#: (:class:`PublishReader`, 3.1.1 framing) are for 3.1.1.
SIM_MQTT_VERSION: Final[Literal["3.1.1"]] = "3.1.1"


class PublishReader:
    """Frames the server → handset MQTT 3.1.1 byte stream of one connection and reads each
    PUBLISH's ``priority``: the JSON field of the push as the gateway sends it (interfaces §3).

    ``packets(data)`` takes every downlink write in order and returns the packets it
    completes as ``(bytes, priority)``: ``"high"``/``"normal"`` for a PUBLISH (a payload
    that is not a JSON object with ``"priority": "high"`` is normal), ``None`` for any other
    packet. An incomplete packet waits for the rest of its bytes.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def packets(self, data: bytes) -> list[tuple[bytes, str | None]]:
        buffer = self._buffer + data if self._buffer else data
        found: list[tuple[bytes, str | None]] = []
        start = 0
        while True:
            frame = _frame(buffer, start)
            if frame is None:
                break
            body_at, end = frame
            priority = None
            if buffer[start] >> 4 == 3:  # PUBLISH
                priority = _publish_priority(buffer[start], buffer[body_at:end])
            found.append((buffer[start:end], priority))
            start = end
        self._buffer = buffer[start:]
        return found


def _frame(buffer: bytes, start: int) -> tuple[int, int] | None:
    """(body start, packet end) of the MQTT packet at ``start``, or None if incomplete."""
    length, multiplier, i = 0, 1, start + 1
    while True:
        if i >= len(buffer) or i - start > 4:
            return None
        byte = buffer[i]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    end = i + length
    return (i, end) if end <= len(buffer) else None


def _publish_priority(header: int, body: bytes) -> str:
    qos = (header >> 1) & 3
    topic_length = int.from_bytes(body[:2], "big")
    payload = body[2 + topic_length + (2 if qos else 0):]
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "normal"
    return "high" if isinstance(message, dict) and message.get("priority") == "high" else "normal"


class ConnectionRecord:
    """What the handset knows of one of its TCP connections (also the link's ``tag``).

    ``purpose`` is ``"push"`` (the SDK's main MQTT connection), ``"probe"`` (a probe
    connection, opened while the main one is up) or ``"http"`` (registration);
    ``ordinal`` counts the connections of that purpose on ``attachment``; ``nat`` is the
    binding's timeout, ``attachment.nat_timeout(ordinal, purpose)``.
    """

    __slots__ = ("number", "purpose", "attachment", "ordinal", "opened_at", "binding",
                 "expiry_reported", "_reader", "deferred")

    def __init__(self, number: int, purpose: str, attachment: Attachment, ordinal: int,
                 opened_at: float, nat: NatTimeout) -> None:
        self.number = number  # the handset's connection counter, from 0
        self.purpose = purpose
        self.attachment = attachment
        self.ordinal = ordinal
        self.opened_at = opened_at
        self.binding = NatBinding(nat, opened_at)
        self.expiry_reported = False
        self._reader: PublishReader | None = None
        self.deferred: list[bytes] = []  # normal-priority pushes held back (exempt channel)

    def publish_reader(self) -> PublishReader:
        """The connection's downlink :class:`PublishReader` (made on first use)."""
        if self._reader is None:
            self._reader = PublishReader()
        return self._reader

    @property
    def nat(self) -> NatTimeout:
        return self.binding.nat

    def __repr__(self) -> str:
        return (f"<ConnectionRecord #{self.number} {self.purpose} attachment="
                f"{self.attachment.index} ordinal={self.ordinal} opened_at={self.opened_at}>")


def _overlap(intervals, start: float, end: float) -> float:
    """Seconds of ``[start, end)`` inside the sorted, disjoint ``intervals`` (research:
    the part of a dead connection's time Doze blocked anyway, for ``dead_doze_s``)."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals
               if a < end and b > start)


class VirtualHandset:
    """One virtual handset of a :class:`~simulator.world.World`, living its ``day``.

    Doze (see docs/simulator.md §3.5): while the day says the app's network is blocked,
    the app's traffic is held in **both directions** (its writes and connection attempts
    wait in the handset, the server's segments wait at the door) and goes through at the
    sender's next TCP retransmission once the network opens. A strategy that declares
    ``doze_exempt = True`` (the FCM model: Google Play services' connection is exempt from
    Doze) is never blocked; on it the platform holds back only **normal-priority** pushes
    while the device dozes, decided on the PUBLISH's parsed JSON ``priority`` field, and a
    high-priority push goes through at once, bringing the held ones with it.
    """

    __slots__ = (
        "world", "day", "spec", "index", "client", "network", "online", "_jitter", "_meters",
        "_background_meters", "_radio_since", "_radio_time", "conns", "_mqtt_conn",
        "_connected_since", "_connected_conn", "connected_s", "dead_s", "bytes_up",
        "bytes_down", "pending", "delivered_ids", "latencies", "delivered", "duplicates",
        "deleted_notices", "idle", "expected", "observer", "exempt", "_ordinals",
        "_connections", "_unblocked", "_alarms", "_cpu", "_screen_on", "push_log",
        "dead_doze_s",
    )

    def __init__(self, world, day: HandsetDay, strategy, *, app_key: str, clock,
                 observer: WorldObserver | None = None) -> None:
        spec = day.spec
        self.world = world
        self.day = day
        self.spec = spec
        self.index = spec.index
        self.observer = observer
        #: Doze-exempt app (the strategy says so): its network is never blocked.
        self.exempt = bool(getattr(strategy, "doze_exempt", False))
        rng = LazyRandom(spec.seed)
        self.network = spec.network
        self.online = True
        self.idle = False  # Doze blocks the app's network now (never for an exempt app)
        self._unblocked: trio.Event | None = None
        self._alarms: Alarms | None = None
        self._cpu = NEXUS4.new_meter() if spec.cpu == "nexus4" else None
        self._screen_on = False
        self._jitter = _jitter_source(self.network, spec.seed)
        self._meters: dict[str, RadioMeter] = {}  # radio model -> meter (SDK + other apps)
        self._background_meters: dict[str, RadioMeter] = {}  # radio model -> other apps only
        self._radio_since = 0.0
        self._radio_time: dict[str, float] = {}  # seconds spent on each radio model
        self._ordinals: dict[tuple[int, str], int] = {}  # (attachment, purpose) -> opened
        self._connections = 0
        self.conns: list[SimConnection] = []
        self._mqtt_conn: SimConnection | None = None
        self._connected_since: float | None = None
        self._connected_conn: SimConnection | None = None
        self.connected_s = 0.0
        self.dead_s = 0.0
        self.dead_doze_s = 0.0  # research: of dead_s, time Doze blocked the network anyway
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
                         device_id=spec.device_id, alias=spec.alias, tags=spec.tags,
                         mqtt_version=SIM_MQTT_VERSION),
            connector=self, state_store=MemoryStateStore(), clock=clock,
            rng=rng,  # type: ignore[arg-type]  # a LazyRandom stands in for random.Random
            strategy=strategy, min_keepalive=_doze_keepalive(spec),
            network_key=self.network.key, network_type=self.network.type,
            app_state=spec.app.state_at(0.0).value, on_notification=self._on_push,
            on_message=self._on_push, on_deleted=self._on_deleted,
            on_state_change=self._on_state_change, network_active=self.network_active,
        )
        self._screen(spec.app.state_at(0.0).value, 0.0)

    # --- the platform ---------------------------------------------------------------------

    @property
    def alarms(self) -> Alarms:
        """This app's AlarmManager model (``simulator.alarms.Alarms``) on this handset's day:
        ``alarms.fires_at(set_at, trigger_at, kind)`` is when a timer really fires. For
        strategies that schedule through AlarmManager; the SDK's own timers do not use it."""
        if self._alarms is None:
            self._alarms = Alarms(self.day.doze, [a.t for a in self.day.radio_activity])
        return self._alarms

    def allow_network_for(self, seconds: float) -> None:
        """A temporary allowlist (an allow-while-idle alarm fired, ``Alarms.fired``): the app's
        network opens now for ``seconds``, then Doze blocks it again if it still applies."""
        if not self.idle or seconds <= 0:
            return
        self.on_device_idle(False)
        clock = current_timers()

        def again() -> None:
            if not self.idle and self.day.network_blocked(clock.current_time()):
                self.on_device_idle(True)

        clock.call_at(clock.current_time() + seconds, again)

    # --- connector (the SDK opens its connections here) -----------------------------------

    async def connect(self, host: str, port: int, *, tls: bool = False) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.online:
            raise OSError(errno.ENETUNREACH, "network is unreachable")
        if host != SERVER_HOST or port not in (HTTP_PORT, MQTT_PORT):
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {host}:{port}")
        while self.idle:  # Doze: the SYN waits in the firewall (the SDK's timeout applies)
            if self._unblocked is None:
                self._unblocked = trio.Event()
            await self._unblocked.wait()
        network = self.network
        now = trio.current_time()
        conn = self._open(now, port)
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
        if conn.tag.purpose == "push":
            self._mqtt_conn = conn
        return conn.client

    def _open(self, now: float, port: int) -> SimConnection:
        """A new connection on the current attachment, with its NAT binding and loss."""
        attachment = self.day.attachment_at(now)
        if attachment is None or attachment.network.key != self.network.key:
            attachment = self._stray_attachment(now)
        purpose: Literal["push", "probe", "http"]
        if port == HTTP_PORT:
            purpose = "http"
        elif self.client.state is ClientState.CONNECTED:
            purpose = "probe"  # the SDK opens probes only beside a live main connection
        else:
            purpose = "push"
        key = (attachment.index, purpose)
        ordinal = self._ordinals.get(key, 0)
        self._ordinals[key] = ordinal + 1
        record = ConnectionRecord(self._connections, purpose, attachment, ordinal, now,
                                  attachment.nat_timeout(ordinal, purpose))
        self._connections += 1
        network = self.network
        loss_draw = None
        if network.loss:
            loss_draw = random.Random(f"{self.spec.stream_seed}:loss:{attachment.index}:"
                                      f"{purpose}:{ordinal}").random
        conn = SimConnection(
            self, network.latency, self._jitter, tag=record, loss=network.loss,
            loss_draw=loss_draw,
            retransmission=Retransmission(network.rto_min, max_retries=network.max_retransmissions),
        )
        if self.observer is not None:
            self.observer.connection_opened(self.index, now, record)
        return conn

    def _stray_attachment(self, now: float) -> Attachment:
        # The day and the live network disagree only at the instant of a switch or an
        # outage's end that the timeline has not applied yet; the connection is cut by that
        # event at once, so any attachment of the live network will do.
        for attachment in reversed(self.day.attachments):
            if attachment.start <= now and attachment.network.key == self.network.key:
                return attachment
        return self.day.attachments[0]

    # --- path hooks (the link asks about every segment) -----------------------------------

    def uplink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        self._radio(now, "up", nbytes)  # the radio transmits even into a dead path
        if conn.dead_since is not None:
            return Verdict.DROP
        return self._nat_verdict(conn, now, "up")

    def downlink(self, conn: SimConnection, now: float, nbytes: int) -> Verdict:
        if conn.dead_since is not None:
            return Verdict.DROP
        return self._nat_verdict(conn, now, "down")

    def _nat_verdict(self, conn: SimConnection, now: float, direction: str) -> Verdict:
        record = conn.tag
        verdict = record.binding.on_packet(now, direction)
        if verdict is not Verdict.PASS:
            self._report_expiry(record)
            if verdict is Verdict.DROP:
                conn.kill_silently(record.binding.expires_at)
        return verdict

    def _report_expiry(self, record: ConnectionRecord) -> None:
        if not record.expiry_reported:
            record.expiry_reported = True
            if self.observer is not None:
                self.observer.nat_expired(self.index, record, record.binding.expires_at)

    def arrived(self, conn: SimConnection, now: float, nbytes: int) -> None:
        self._radio(now, "down", nbytes)

    def retransmitted(self, conn: SimConnection, now: float, nbytes: int) -> None:
        self._radio(now, "up", nbytes, acked=False)

    def hold_uplink(self, conn: SimConnection, data: bytes) -> bool:
        """Doze's firewall keeps the app's packets in the handset (they never reach the radio)."""
        return self.idle

    def hold_downlink(self, conn: SimConnection, data: bytes) -> bool:
        """Doze's firewall keeps server data out (never on the exempt channel)."""
        return self.idle

    def filter_downlink(self, conn: SimConnection, data: bytes) -> bytes:
        """The exempt channel while the device dozes: normal-priority pushes wait (the
        platform defers them, as FCM does), judged by the parsed PUBLISH; a high-priority
        one goes through at once and brings the deferred ones along; all else passes."""
        record = conn.tag
        if not self.exempt or record.purpose == "http":
            return data
        packets = record.publish_reader().packets(data)
        dozing = not self.day.doze.network_allowed(trio.current_time())
        out: list[bytes] = []
        for packet, priority in packets:
            if priority == "high" and record.deferred:
                out += record.deferred
                record.deferred = []
            if dozing and priority == "normal":
                record.deferred.append(packet)
            else:
                out.append(packet)
        return b"".join(out)

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
        if self._cpu is not None:
            # The screen's state by the clock, not by the flag the timeline sets: a packet at
            # the instant the screen goes off must count the same whichever task runs first.
            self._cpu.on_activity(now, self.day.screen_is_on(now))
        if self.observer is not None:
            self.observer.radio(self.index, now, direction, wire, "app")
            if acks:
                self.observer.radio(self.index, now, other, acks, "app")

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

    def network_active(self) -> bool:
        """Android's ``ConnectivityManager.isDefaultNetworkActive()``: the interface's idle
        timer has not fired, i.e. the network carried traffic (any app's, the app on screen
        included) within the last 10 s on cellular, 15 s on Wi-Fi (AOSP
        ``ConnectivityService.setupDataActivityTracking`` defaults)."""
        if not self.online:
            return False
        meter = self._meters.get(self.network.radio)
        if meter is None:
            return False
        timeout = _ACTIVITY_TIMEOUT_WIFI if self.network.type == "wifi" else _ACTIVITY_TIMEOUT
        return trio.current_time() - meter.busy_until < timeout

    def on_background_traffic(self, bytes_up: int, bytes_down: int) -> None:
        """Another app uses the radio now (counted apart so the SDK's share can be told)."""
        if not self.online:
            return
        now = trio.current_time()
        for meter in (self._meter(), self._meter(background=True)):
            meter.on_packet(now, "up", bytes_up)
            meter.on_packet(now, "down", bytes_down)
        if self.observer is not None:
            self.observer.radio(self.index, now, "up", bytes_up, "other")
            self.observer.radio(self.index, now, "down", bytes_down, "other")
        # Android's OnNetworkActiveListener: the SDK may ride on this wake-up.
        if not self.idle:
            self.client.notify_radio_active()

    def on_app_state(self, state: str) -> None:
        now = trio.current_time()
        self._screen(state, now)
        self.client.set_app_state(state)
        if self.observer is not None:
            self.observer.app_state(self.index, now, state)

    def _screen(self, state: str, now: float) -> None:
        """The screen's state: while on, the CPU is awake anyway, and (``screen_radio``) the
        app in front holds the radio up until the screen goes off."""
        was_on, self._screen_on = self._screen_on, state != "inactive"
        if self._screen_on and not was_on and self.day.screen_radio and self.online:
            for start, end in self.day.screen_on:
                if start <= now < end:
                    for meter in (self._meter(), self._meter(background=True)):
                        meter.hold(now, end)
                    break

    def on_device_idle(self, idle: bool) -> None:
        """Doze starts or stops blocking the app's network (the day's ``blocked`` intervals).

        A Doze-exempt app is not blocked and its SDK is not told; when Doze ends, the
        normal-priority pushes held back for it are let through."""
        if self.exempt:
            if not idle:
                for conn in self.conns:
                    deferred, conn.tag.deferred = conn.tag.deferred, []
                    if deferred:
                        conn.inject(b"".join(deferred))
            return
        self.idle = idle
        self.client.set_device_idle(idle)
        if self.observer is not None:
            self.observer.device_idle(self.index, trio.current_time(), idle)
        if not idle:
            event, self._unblocked = self._unblocked, None
            if event is not None:
                event.set()
            for conn in self.conns:
                conn.release()

    def ended(self, conn: SimConnection, how: str) -> None:
        """The link reports the end of a connection: ``"closed"`` by the app or ``"reset"``."""
        record = conn.tag
        now = trio.current_time()
        if record.binding.expired(now):
            self._report_expiry(record)
        if self.observer is not None:
            self.observer.connection_ended(self.index, now, record, how)

    def _kill_connections(self, now: float) -> None:
        for conn in self.conns:
            if conn.dead_since is None and not conn.client._closed:
                if conn.tag.binding.expired(now):
                    self._report_expiry(conn.tag)
                if self.observer is not None:
                    self.observer.connection_ended(self.index, now, conn.tag, "cut")
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
        if self.observer is not None:
            self.observer.push_sent(self.index, accepted_at, plan_id)

    def _on_push(self, message) -> None:
        plan_id = _plan_id(message)
        entry = self.pending.pop(plan_id, None)  # type: ignore[arg-type]  # None: not found
        if entry is None or plan_id is None:  # (no plan id: never pending, so entry is None)
            # Not pending: a second dispatch of a delivered push is a duplicate; anything
            # else (no plan id) is not part of the workload and is not measured.
            if plan_id in self.delivered_ids:
                self.duplicates += 1
                if self.observer is not None:
                    self.observer.push_duplicate(self.index, trio.current_time(), plan_id)
            return
        accepted_at, collapse_key = entry
        now = trio.current_time()
        self.delivered += 1
        self.delivered_ids.add(plan_id)
        self.latencies.append(now - accepted_at)
        self.push_log.append((plan_id, accepted_at, now))
        if self.observer is not None:
            self.observer.push_delivered(self.index, now, plan_id, now - accepted_at)
        if collapse_key is not None:
            # Older undelivered pushes with this key were replaced on the server by this
            # one (interfaces §3): the user sees the newest, so they count as delivered.
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
        if self.observer is not None:
            conn = self._connected_conn
            dead = conn.dead_from if conn is not None and old is ClientState.CONNECTED else None
            self.observer.state_changed(self.index, now, old.name, new.name, reason, dead)
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
            # expired NAT), the NAT mapping expired, or the server's TCP gave up on data
            # Doze held at the door — whether or not anything noticed.
            dead_from = conn.dead_from if conn.dead_from is not None else math.inf
            binding = conn.tag.binding
            if binding.expired(now):
                dead_from = min(dead_from, binding.expires_at)
            if dead_from < now:
                self.dead_s += now - max(since, dead_from)
                # research (metrics): how much of it Doze blocked the app's network anyway
                if not self.exempt:
                    self.dead_doze_s += _overlap(self.day.blocked, max(since, dead_from), now)
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
        if self._cpu is not None:
            energy += self._cpu.energy_j(until=now)
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
            dead_doze_s=self.dead_doze_s,
            latencies=tuple(self.latencies),
            pushes=tuple(self.push_log) + tuple(
                (plan_id, accepted, None) for plan_id, (accepted, _) in self.pending.items()),
        )
