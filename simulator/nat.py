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
from collections.abc import Callable, Iterable
from typing import Literal

import attrs

NatBehaviour = Literal["drop", "rst"]
NAT_BEHAVIOURS: tuple[str, ...] = ("drop", "rst")

Direction = Literal["up", "down"]  # handset -> server, server -> handset (CONTRACT §4)


class Verdict(enum.Enum):
    """What the path does with one segment."""

    PASS = "pass"  # delivered
    DROP = "drop"  # vanishes; neither end is told
    RESET = "reset"  # answered with a RST: both ends learn the connection is gone


# ---------------------------------------------------------------------------------------
# NAT


def _positive_timeout(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


def _known_behaviour(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in NAT_BEHAVIOURS:
        raise ValueError(f"{attribute.name} must be one of {NAT_BEHAVIOURS}, got {value!r}")


@attrs.frozen
class NatConfig:
    """The NAT/firewall of one network: idle timeout (s) and behaviour on expiry.

    ``behaviour="drop"``: after expiry every packet of the old connection vanishes, in
    both directions, and nobody is told (the common case for carrier firewalls).
    ``behaviour="rst"``: the first packet after expiry, from either side, is answered with
    a reset, so both ends learn the connection is gone.
    """

    timeout: float = attrs.field(converter=float, validator=_positive_timeout)
    behaviour: NatBehaviour = attrs.field(default="drop", validator=_known_behaviour)

    def open(self, now: float) -> NatBinding:
        """A fresh binding for a new connection whose SYN passes the NAT at ``now``."""
        return NatBinding(config=self, last_activity=now)


@attrs.define
class NatBinding:
    """The NAT mapping of one TCP connection.

    The idle timer restarts on every packet that passes, in either direction. The binding
    is expired from ``expires_at`` on (a packet at ``expires_at - ε`` still passes, one at
    ``expires_at`` does not), and an expired binding never comes back: a later connection
    needs a new binding (``config.open``).
    """

    config: NatConfig
    last_activity: float
    packets: int = 0  # packets that passed
    _expired_at: float | None = attrs.field(default=None, init=False)

    @property
    def timeout(self) -> float:
        return self.config.timeout

    @property
    def expires_at(self) -> float:
        """When the mapping expires unless a packet passes before then."""
        if self._expired_at is not None:
            return self._expired_at
        return self.last_activity + self.config.timeout

    def expired(self, now: float) -> bool:
        """True if a packet at ``now`` would no longer pass."""
        return self._expired_at is not None or now >= self.last_activity + self.config.timeout

    def remaining(self, now: float) -> float:
        """Seconds of idleness left before expiry (0 once expired)."""
        return 0.0 if self.expired(now) else self.expires_at - now

    def on_packet(self, now: float) -> Verdict:
        """A segment reaches the NAT at ``now`` (either direction): PASS, DROP or RESET.

        A passing packet restarts the idle timer. Once expired, every later packet gets
        the same answer: DROP for a silent NAT, RESET for one that answers with RST.
        Calls slightly out of order (two directions timed independently) are tolerated:
        the timer never moves backwards.
        """
        if self.expired(now):
            if self._expired_at is None:
                self._expired_at = self.last_activity + self.config.timeout
            return Verdict.DROP if self.config.behaviour == "drop" else Verdict.RESET
        self.last_activity = max(self.last_activity, now)
        self.packets += 1
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
    """Packets and bytes per direction: ``{"up_packets", "up_bytes", "down_packets", "down_bytes"}``."""
    result = {"up_packets": 0, "up_bytes": 0, "down_packets": 0, "down_bytes": 0}
    for flight in flights:
        result[f"{flight.direction}_packets"] += flight.packets
        result[f"{flight.direction}_bytes"] += flight.wire_bytes
    return result
