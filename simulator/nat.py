"""NAT bindings, link delays and TCP/TLS wire overhead: pure models, no I/O, no trio.

Everything takes ``now`` (virtual seconds since the start of the run) and returns a result;
randomness comes from an injected :class:`random.Random`. docs/scenarios.md gives the
sources and approximations behind every figure here.

NAT
    A :class:`NatConfig` describes the middlebox of one network (idle timeout, what it
    does on expiry). Every new TCP connection through it gets its own :class:`NatBinding`
    (``config.open(now)`` when the SYN passes). ``binding.on_packet(now)`` is asked for
    every segment in either direction and answers a :class:`Verdict`.

Link
    :class:`LinkProfile` is a path's one-way latency and jitter.

Wire overhead
    :class:`WireModel` turns an application write, a connection set-up or a teardown into
    :class:`Flight` records: packets and IP-level bytes in one direction. Flights of one
    exchange happen in order, each one after the previous one arrived.
"""
from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import attrs

NatBehaviour = Literal["drop", "rst"]
NAT_BEHAVIOURS: tuple[NatBehaviour, ...] = ("drop", "rst")

Direction = Literal["up", "down"]  # handset -> server, server -> handset (interfaces §4)


class Verdict(enum.Enum):
    """What the path does with one segment."""

    PASS = "pass"  # delivered
    DROP = "drop"  # vanishes; neither end is told
    RESET = "reset"  # answered with a RST: both ends learn the connection is gone


# ---------------------------------------------------------------------------------------
# NAT


NatRefresh = Literal["both", "outbound"]
NAT_REFRESH: tuple[NatRefresh, ...] = ("both", "outbound")


def _positive_timeout(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value > 0 and value < math.inf):  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


def _known_behaviour(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in NAT_BEHAVIOURS:
        raise ValueError(f"{attribute.name} must be one of {NAT_BEHAVIOURS}, got {value!r}")


def _known_refresh(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in NAT_REFRESH:
        raise ValueError(f"{attribute.name} must be one of {NAT_REFRESH}, got {value!r}")


def _check_schedule(instance: object, attribute: attrs.Attribute, value: tuple) -> None:
    times = [t for t, _ in value]
    if times != sorted(times) or len(set(times)) != len(times):
        raise ValueError("nat schedule: times of day must be in increasing order")
    for t, factor in value:
        if not 0 <= t < DAY:
            raise ValueError(f"nat schedule: {t!r} is not a time of day (0 <= s < 86400)")
        if not (factor > 0 and factor < math.inf):
            raise ValueError(f"nat schedule: factor must be > 0, got {factor!r}")


def _non_negative_finite(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


DAY = 86400.0


@attrs.frozen
class NatTimeout:
    """The idle timeout of one NAT binding (one TCP connection) as a function of time.

    ``base`` is this connection's nominal idle timeout (per-connection spread included).
    ``schedule`` is a daily cycle of ``(time of day, factor)`` steps: from each time of day
    until the next one the timeout is ``base × factor`` (empty: always ``base``);
    ``start_of_day`` is the time of day at virtual t = 0. ``sweep`` > 0 means the box
    checks its bindings only on a periodic sweep at ``sweep_phase + k × sweep``, so an idle
    binding goes at the first sweep that finds it over its timeout (between T and
    T + sweep after the last refresh). ``refresh`` says which packets restart the idle
    timer: ``"both"`` directions, or ``"outbound"`` (handset → server) only.
    """

    base: float = attrs.field(converter=float, validator=_positive_timeout)
    behaviour: NatBehaviour = attrs.field(default="drop", validator=_known_behaviour)
    schedule: tuple[tuple[float, float], ...] = attrs.field(default=(), validator=_check_schedule)
    start_of_day: float = attrs.field(default=0.0, converter=float)
    sweep: float = attrs.field(default=0.0, converter=float, validator=_non_negative_finite)
    sweep_phase: float = attrs.field(default=0.0, converter=float)
    refresh: NatRefresh = attrs.field(default="both", validator=_known_refresh)

    def timeout_at(self, t: float) -> float:
        """The idle timeout in force at virtual time ``t``."""
        if not self.schedule:
            return self.base
        tod = (self.start_of_day + t) % DAY
        factor = self.schedule[-1][1]  # before the first step: the last step of yesterday
        for at, f in self.schedule:
            if at > tod:
                break
            factor = f
        return self.base * factor

    def _segments(self, t: float) -> Iterator[tuple[float, float, float]]:
        """``(start, end, timeout)`` pieces of constant timeout from ``t`` on, for ever."""
        steps = self.schedule
        if not steps:
            yield (t, math.inf, self.base)
            return
        day = math.floor((self.start_of_day + t) / DAY)
        midnight = day * DAY - self.start_of_day  # virtual time of that day's 00:00
        tod = t - midnight
        i, d = -1, 0
        for k, (at, _) in enumerate(steps):
            if at <= tod:
                i = k
        if i < 0:  # before the first step of the day: yesterday's last step holds
            i, d = len(steps) - 1, -1
        while True:
            j, next_d = (i + 1, d) if i + 1 < len(steps) else (0, d + 1)
            begin = midnight + d * DAY + steps[i][0]
            end = midnight + next_d * DAY + steps[j][0]
            if end > t:
                yield (max(begin, t), end, self.base * steps[i][1])
            i, d = j, next_d

    def continuous_expiry(self, last: float, not_before: float | None = None) -> float:
        """First ``t >= not_before`` (default ``last``) with ``t - last >= timeout_at(t)``:
        when the binding goes on a box that checks it continuously (no sweep)."""
        begin = last if not_before is None else max(last, not_before)
        for start, end, timeout in self._segments(begin):
            candidate = max(start, last + timeout)
            if candidate < end:
                return candidate
        raise AssertionError("unreachable: the schedule repeats every day")

    def expiry(self, last: float) -> float:
        """When a binding last refreshed at ``last`` is gone if nothing refreshes it again:
        a packet at ``expiry(last) - ε`` passes, one at ``expiry(last)`` does not."""
        if not self.schedule and not self.sweep:
            return last + self.base
        t = self.continuous_expiry(last)
        if not self.sweep:
            return t
        while True:  # the first sweep at or after t that finds the binding over its timeout
            s = self.sweep_phase + math.ceil((t - self.sweep_phase) / self.sweep) * self.sweep
            if s - last >= self.timeout_at(s):
                return s
            t = self.continuous_expiry(last, not_before=s + self.sweep * 1e-6)

    def max_silence(self, last: float) -> float:
        """Longest silence after a refresh at ``last`` that the binding survives (sup)."""
        return self.expiry(last) - last

    def refreshed_by(self, direction: Direction) -> bool:
        return self.refresh == "both" or direction == "up"


@attrs.frozen
class NatConfig:
    """The NAT/firewall of one network, as one handset sees it.

    ``timeout`` (s) is the network's idle timeout for this handset; each connection through
    it draws its own :class:`NatTimeout` (``for_connection``): ``timeout × (1 + spread ×
    (2u − 1))`` for a uniform ``u`` in [0, 1), with the network's daily schedule, sweep and
    refresh rule.

    ``behaviour="drop"``: after expiry every packet of the old connection vanishes, in
    both directions, and nobody is told (the common case for carrier firewalls).
    ``behaviour="rst"``: the first packet after expiry, from either side, is answered with
    a reset, so both ends learn the connection is gone.
    """

    timeout: float = attrs.field(converter=float, validator=_positive_timeout)
    behaviour: NatBehaviour = attrs.field(default="drop", validator=_known_behaviour)
    spread: float = attrs.field(default=0.0, converter=float)
    schedule: tuple[tuple[float, float], ...] = attrs.field(default=(), validator=_check_schedule)
    start_of_day: float = attrs.field(default=0.0, converter=float)
    sweep: float = attrs.field(default=0.0, converter=float, validator=_non_negative_finite)
    sweep_phase: float = attrs.field(default=0.0, converter=float)
    refresh: NatRefresh = attrs.field(default="both", validator=_known_refresh)

    @spread.validator
    def _check_spread(self, attribute: attrs.Attribute, value: float) -> None:
        if not 0 <= value < 1:
            raise ValueError(f"nat spread must be in [0, 1), got {value!r}")

    def for_connection(self, u: float = 0.5) -> NatTimeout:
        """The timeout of one connection whose spread draw is ``u`` (0.5: no spread)."""
        base = self.timeout * (1.0 + self.spread * (2.0 * u - 1.0))
        return NatTimeout(base, self.behaviour, self.schedule, self.start_of_day, self.sweep,
                          self.sweep_phase, self.refresh)

    def open(self, now: float, u: float = 0.5) -> NatBinding:
        """A fresh binding for a new connection whose SYN passes the NAT at ``now``."""
        return NatBinding(self.for_connection(u), now)


class NatBinding:
    """The NAT mapping of one TCP connection (:class:`NatTimeout` says when it expires).

    The idle timer restarts on every packet that passes and refreshes it (both directions,
    or outbound only). The binding is expired from ``expires_at`` on (a packet at
    ``expires_at - ε`` still passes, one at ``expires_at`` does not), and an expired binding
    never comes back: a later connection needs a new binding.
    """

    __slots__ = ("nat", "last_activity", "packets", "_expires_at", "_expired")

    def __init__(self, nat: NatTimeout | NatConfig, last_activity: float) -> None:
        if isinstance(nat, NatConfig):
            nat = nat.for_connection()
        self.nat = nat
        self.last_activity = last_activity
        self.packets = 0  # packets that passed
        self._expires_at = nat.expiry(last_activity)
        self._expired = False

    @property
    def config(self) -> NatTimeout:
        return self.nat

    @property
    def timeout(self) -> float:
        """The idle timeout in force now-ish (at the last refresh)."""
        return self.nat.timeout_at(self.last_activity)

    @property
    def expires_at(self) -> float:
        """When the mapping expires unless a refreshing packet passes before then."""
        return self._expires_at

    def expired(self, now: float) -> bool:
        """True if a packet at ``now`` would no longer pass."""
        return self._expired or now >= self._expires_at

    def remaining(self, now: float) -> float:
        """Seconds of idleness left before expiry (0 once expired)."""
        return 0.0 if self.expired(now) else self._expires_at - now

    def on_packet(self, now: float, direction: Direction = "up") -> Verdict:
        """A segment reaches the NAT at ``now``: PASS, DROP or RESET.

        A passing packet that refreshes (see ``NatTimeout.refresh``) restarts the idle
        timer. Once expired, every later packet gets the same answer: DROP for a silent
        NAT, RESET for one that answers with RST. Calls slightly out of order (two
        directions timed independently) are tolerated: the timer never moves backwards.
        """
        if self._expired or now >= self._expires_at:
            self._expired = True
            return Verdict.DROP if self.nat.behaviour == "drop" else Verdict.RESET
        self.packets += 1
        if now > self.last_activity and self.nat.refreshed_by(direction):
            self.last_activity = now
            self._expires_at = self.nat.expiry(now)
        return Verdict.PASS


# ---------------------------------------------------------------------------------------
# Link


@attrs.frozen
class LinkProfile:
    """One-way latency and jitter of a network path, in seconds.

    A segment's one-way delay is ``latency + U(0, jitter)``, drawn from the caller's
    ``random.Random``. Independent draws could reorder segments; TCP delivers in order, so
    the caller delivers a segment no earlier than the one before it.
    """

    latency: float = attrs.field(converter=float)
    jitter: float = attrs.field(default=0.0, converter=float)

    @latency.validator
    @jitter.validator
    def _non_negative(self, attribute: attrs.Attribute, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{attribute.name} must be a finite number ≥ 0, got {value!r}")

    def sample_jitter(self, rng: random.Random) -> float:
        """The extra delay of one segment: U(0, jitter)."""
        return rng.uniform(0.0, self.jitter) if self.jitter else 0.0

    def sample_delay(self, rng: random.Random) -> float:
        """The one-way delay of one segment: latency + U(0, jitter)."""
        return self.latency + self.sample_jitter(rng)

    def jitter_source(self, rng: random.Random) -> Callable[[float], float] | None:
        """A callable ``jitter(now)`` drawing jitter from ``rng`` (None when jitter is 0)."""
        if not self.jitter:
            return None
        return lambda now: rng.uniform(0.0, self.jitter)


# ---------------------------------------------------------------------------------------
# TCP retransmission


@attrs.frozen
class Retransmission:
    """When TCP sends a segment again that was not acknowledged (RFC 6298).

    The first retransmission comes ``rto`` seconds after the original, and each later one
    after twice the previous wait (exponential backoff, RFC 6298 §5.5), the wait capped at
    ``rto_max``; after ``max_retries`` retransmissions the sender gives up and aborts the
    connection (Linux ``tcp_retries2`` = 15). ``rto`` is RFC 6298's minimum of 1 s: on
    these paths (round trips of 20–160 ms) ``SRTT + 4·RTTVAR`` is always below it, so the
    RTO is the minimum (RFC 6298 §2.4). ``rto_max`` 120 s is Linux's ``TCP_RTO_MAX``
    (RFC 6298 §2.5 allows any maximum ≥ 60 s).
    """

    rto: float = 1.0
    rto_max: float = 120.0
    max_retries: int = 15

    def attempt(self, t0: float, k: int) -> float:
        """Time of try ``k`` of a segment first sent at ``t0`` (try 0 is the original)."""
        t, wait = t0, self.rto
        for _ in range(k):
            t += wait
            wait = min(self.rto_max, 2 * wait)
        return t

    def give_up_at(self, t0: float) -> float:
        """When the sender aborts if no try is acknowledged: one RTO after the last try."""
        last = self.attempt(t0, self.max_retries)
        return last + min(self.rto_max, self.rto * 2 ** self.max_retries)

    def next_attempt(self, t0: float, now: float) -> float | None:
        """The first try at or after ``now`` (``None`` if the sender has given up by then)."""
        t, wait = t0, self.rto
        for _ in range(self.max_retries + 1):
            if t >= now:
                return t
            t += wait
            wait = min(self.rto_max, 2 * wait)
        return None


#: RFC 6298 with Linux's cap and retry count.
RETRANSMISSION = Retransmission()


# ---------------------------------------------------------------------------------------
# Wire overhead


@attrs.frozen
class Flight:
    """Packets sent back to back in one direction, and their IP-level bytes."""

    direction: Direction
    packets: int
    wire_bytes: int


def _other(direction: Direction) -> Direction:
    if direction == "up":
        return "down"
    if direction == "down":
        return "up"
    raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")


@attrs.frozen
class WireModel:
    """TCP/IPv4 (+ TLS) overhead of application traffic. Defaults and sources: docs/scenarios.md.

    The approximations, in short: every segment carries ``header_bytes`` of IPv4 + TCP
    header (no TCP options after the handshake); segments are filled up to ``mss``; the
    receiver sends one pure ACK per ``segments_per_ack`` data segments (RFC 5681 delayed
    ACK, rounded up, so a one-segment write gets one ACK); ACKs are never piggybacked on
    reply data. TLS adds ``tls_record_overhead`` per record of at most
    ``tls_max_record`` plaintext bytes, one write being one or more records.
    """

    header_bytes: int = 40  # IPv4 20 + TCP 20
    mss: int = 1460  # Ethernet MTU 1500 - 40
    segments_per_ack: int = 2  # RFC 5681 §4.2 delayed ACK
    syn_bytes: int = 60  # 40 + MSS, SACK-permitted, timestamps, window scale (20 B)
    syn_ack_bytes: int = 60
    handshake_ack_bytes: int = 52  # 40 + timestamp option (12 B)
    rst_bytes: int = 40
    tls_record_overhead: int = 29  # TLS 1.2 AES-GCM: header 5 + explicit nonce 8 + tag 16
    tls_max_record: int = 16384  # RFC 8446 §5.1 / RFC 5246 §6.2.1
    # TLS 1.3 full handshake, bytes of TLS records per flight (estimates, docs/scenarios.md)
    tls_client_hello: int = 320
    tls_server_flight: int = 1200  # ServerHello .. Finished with a one-certificate chain
    tls_client_finished: int = 64  # ChangeCipherSpec + Finished
    tls_session_tickets: int = 500  # two NewSessionTicket records (OpenSSL default)
    tls_close_notify: int = 31  # alert record: 2 B + 29 B record overhead

    def segments(self, payload: int) -> int:
        """TCP segments needed for ``payload`` bytes."""
        return -(-payload // self.mss) if payload > 0 else 0

    def acks(self, segments: int) -> int:
        """Pure ACKs the receiver sends for ``segments`` data segments."""
        return -(-segments // self.segments_per_ack) if segments > 0 else 0

    def tls_bytes(self, n: int) -> int:
        """Bytes on the TCP stream for an application write of ``n`` bytes under TLS."""
        if n <= 0:
            return 0
        records = -(-n // self.tls_max_record)
        return n + records * self.tls_record_overhead

    def _data(self, direction: Direction, stream_bytes: int) -> Flight:
        segments = self.segments(stream_bytes)
        return Flight(direction, segments, stream_bytes + segments * self.header_bytes)

    def _acks_for(self, flight: Flight) -> Flight:
        acks = self.acks(flight.packets)
        return Flight(_other(flight.direction), acks, acks * self.header_bytes)

    def write(self, n: int, direction: Direction, *, tls: bool = False) -> tuple[Flight, ...]:
        """An application write of ``n`` bytes: (data flight, the peer's ACK flight).

        ``n == 0`` costs nothing and gives ``()``.
        """
        _other(direction)  # validates
        if n < 0:
            raise ValueError(f"a write cannot have {n} bytes")
        if n == 0:
            return ()
        data = self._data(direction, self.tls_bytes(n) if tls else n)
        return (data, self._acks_for(data))

    def open(self, *, tls: bool = False) -> tuple[Flight, ...]:
        """The handset opens a connection: TCP three-way handshake, then TLS 1.3 if ``tls``.

        Without TLS: SYN (up), SYN-ACK (down), ACK (up). With TLS the handshake ACK travels
        with the ClientHello; server flight; client Finished; session tickets, which the
        handset ACKs. ACKs of the other handshake flights ride on the next flight.
        """
        syn = Flight("up", 1, self.syn_bytes)
        syn_ack = Flight("down", 1, self.syn_ack_bytes)
        if not tls:
            return (syn, syn_ack, Flight("up", 1, self.handshake_ack_bytes))
        hello = self._data("up", self.tls_client_hello)
        tickets = self._data("down", self.tls_session_tickets)
        return (
            syn,
            syn_ack,
            Flight("up", 1 + hello.packets, self.handshake_ack_bytes + hello.wire_bytes),
            self._data("down", self.tls_server_flight),
            self._data("up", self.tls_client_finished),
            tickets,
            self._acks_for(tickets),
        )

    def close(self, initiator: Direction = "up", *, tls: bool = False) -> tuple[Flight, ...]:
        """Orderly close started by the handset (``"up"``) or the server (``"down"``).

        FIN, the peer's FIN+ACK, the last ACK (3 packets). Under TLS each FIN travels in
        the segment carrying that side's close_notify alert.
        """
        fin = self.header_bytes + (self.tls_close_notify if tls else 0)
        reply = _other(initiator)
        return (
            Flight(initiator, 1, fin),
            Flight(reply, 1, fin),
            Flight(initiator, 1, self.header_bytes),
        )

    def reset(self, direction: Direction) -> Flight:
        """One RST segment."""
        _other(direction)
        return Flight(direction, 1, self.rst_bytes)


#: The default wire model (TCP/IPv4, MSS 1460, TLS 1.2 record overhead, TLS 1.3 handshake).
WIRE = WireModel()


def totals(flights: Iterable[Flight]) -> dict[str, int]:
    """Packets and bytes per direction:
    ``{"up_packets", "up_bytes", "down_packets", "down_bytes"}``."""
    result = {"up_packets": 0, "up_bytes": 0, "down_packets": 0, "down_bytes": 0}
    for flight in flights:
        result[f"{flight.direction}_packets"] += flight.packets
        result[f"{flight.direction}_bytes"] += flight.wire_bytes
    return result
