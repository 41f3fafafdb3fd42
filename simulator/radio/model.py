"""Radio energy model parameters: frozen, named, with their provenance.

A :class:`RadioModel` describes one radio (LTE, 3G UMTS or Wi-Fi) as the published models
do (Huang et al. MobiSys 2012, AT&T ARO / Video Optimizer):

- a **promotion** from IDLE to the connected state (power × time), paid by a packet that
  finds the radio IDLE;
- a **tail**: after the last transfer the radio stays up for a sequence of
  :class:`TailPhase` s (LTE: continuous reception then DRX; 3G: DCH then FACH; Wi-Fi: one
  phase) before it drops back to IDLE. Every packet restarts the tail from its first phase;
- a **transfer** power while bytes move, ``P = β + α_u·U + α_d·D`` (:class:`TransferPower`),
  with a stated link throughput that turns bytes into seconds;
- optionally (3G) :class:`FachRules`: a packet that arrives in the FACH phase is sent on
  the shared FACH channel unless the RLC buffer would exceed a threshold, in which case
  the radio is promoted FACH → DCH;
- the **idle baseline** ``idle_power_w``: the mean paging power in IDLE, paid whatever the
  traffic and therefore reported apart from the traffic's energy.

Every model carries ``source`` (where its figures come from) and ``notes``: one line per
figure, tagged ``[C]`` (read in the named source), ``[A]`` (arithmetic from confirmed
figures, or an assumption of this project, which the line says) or ``[R]`` (widely quoted,
primary table not checked). The catalogue of named models lives in
:mod:`simulator.radio.profiles`; metering a packet stream is :meth:`RadioModel.new_meter`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from simulator.radio.meter import RadioMeter

BITS_PER_BYTE = 8
MBPS = 1e6  # bits per second in one Mbps


def _positive(instance, attribute, value) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance, attribute, value) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class Promotion:
    """A state promotion: the radio draws ``power_w`` for ``duration_s`` before data moves."""

    power_w: float = attrs.field(validator=_non_negative)
    duration_s: float = attrs.field(validator=_non_negative)

    @property
    def energy_j(self) -> float:
        return self.power_w * self.duration_s


#: No promotion at all (ARO's Wi-Fi state machine goes straight to active).
NO_PROMOTION = Promotion(power_w=0.0, duration_s=0.0)


@attrs.frozen
class TailPhase:
    """One phase of the tail: ``duration_s`` at mean power ``power_w``."""

    name: str
    duration_s: float = attrs.field(validator=_positive)
    power_w: float = attrs.field(validator=_non_negative)

    @property
    def energy_j(self) -> float:
        return self.power_w * self.duration_s


@attrs.frozen
class TransferPower:
    """Power while transferring, ``β + α_u·U + α_d·D`` (W, W per Mbps), and link speeds.

    ``up_mbps`` / ``down_mbps`` are the throughputs assumed while a packet is on the air:
    a packet of ``n`` bytes occupies the link ``8·n / (rate·10⁶)`` seconds at power
    ``β + α·rate``. Transfers are serialised: a packet offered while the link is busy
    (or the radio is promoting) waits its turn.
    """

    beta_w: float = attrs.field(validator=_non_negative)
    up_mbps: float = attrs.field(validator=_positive)
    down_mbps: float = attrs.field(validator=_positive)
    alpha_up_w_per_mbps: float = attrs.field(default=0.0, validator=_non_negative)
    alpha_down_w_per_mbps: float = attrs.field(default=0.0, validator=_non_negative)

    def seconds_per_byte(self, direction: str) -> float:
        return BITS_PER_BYTE / (self._rate(direction) * MBPS)

    def power_w(self, direction: str) -> float:
        if direction == "up":
            return self.beta_w + self.alpha_up_w_per_mbps * self.up_mbps
        return self.beta_w + self.alpha_down_w_per_mbps * self.down_mbps

    def _rate(self, direction: str) -> float:
        return self.up_mbps if direction == "up" else self.down_mbps


@attrs.frozen
class FachRules:
    """3G FACH-level transfers (ARO's RLC buffer rule).

    A packet that finds the radio in the FACH phase (or sending on FACH) is added to the
    RLC buffer of its direction. If that buffer then holds more than the threshold
    (543 B up / 475 B down in ARO) the radio is promoted FACH → DCH (``promotion``) and the
    packet goes on DCH; otherwise the packet is sent on FACH at ``up_kbps``/``down_kbps``
    drawing the FACH phase's power, the radio stays in FACH and the FACH timer restarts
    when it is sent. The buffer counts the bytes queued since the FACH link was last idle
    (the drain during a burst is ignored, so the buffer is never under-estimated).
    """

    phase: int = attrs.field(validator=_non_negative)  # index of the FACH tail phase
    promotion: Promotion
    up_threshold_bytes: int = 543
    down_threshold_bytes: int = 475
    up_kbps: float = attrs.field(default=32.0, validator=_positive)
    down_kbps: float = attrs.field(default=32.0, validator=_positive)


def _phases(phases: Iterable[TailPhase]) -> tuple[TailPhase, ...]:
    return tuple(phases)


def _lines(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(lines)


@attrs.frozen
class RadioModel:
    """A named radio energy model; see the module docstring for the state machine.

    ``new_meter()`` returns a :class:`~simulator.radio.meter.RadioMeter` that integrates
    the energy of one handset's packets; ``isolated_energy()`` is E₁, the energy of one
    isolated small transfer (promotion + full tail + transfer).
    """

    name: str
    technology: str  # "lte" | "3g" | "wifi" | "5g"
    description: str
    promotion: Promotion
    tail: tuple[TailPhase, ...] = attrs.field(converter=_phases)
    transfer: TransferPower
    idle_power_w: float = attrs.field(validator=_non_negative)
    source: str
    notes: tuple[str, ...] = attrs.field(converter=_lines)
    fach: FachRules | None = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_lines)
    #: 5G NR RRC_INACTIVE: a packet that finds the radio in tail phase ``inactive_phase``
    #: pays ``resume`` (RRC Resume, shorter than a full setup) instead of nothing.
    inactive_phase: int | None = None
    resume: Promotion | None = None

    # Derived once, read by every meter on every packet.
    _tail_starts: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _tail_ends: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _tail_j_before: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    # (seconds, joules) per byte sent: connected up/down, then FACH up/down (3G). Read by
    # RadioMeter on every packet, hence precomputed.
    _costs: tuple[tuple[float, float], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.tail:
            raise ValueError(f"model {self.name!r} needs at least one tail phase")
        if self.fach is not None and not 0 < self.fach.phase < len(self.tail):
            raise ValueError(f"model {self.name!r}: FACH phase index out of range")
        if (self.inactive_phase is None) != (self.resume is None) or (
                self.inactive_phase is not None and not 0 < self.inactive_phase < len(self.tail)):
            raise ValueError(f"model {self.name!r}: RRC_INACTIVE needs a phase and a resume")
        starts, ends, j_before = [], [], []
        t = j = 0.0
        for phase in self.tail:
            starts.append(t)
            j_before.append(j)
            t += phase.duration_s
            j += phase.energy_j
            ends.append(t)
        object.__setattr__(self, "_tail_starts", tuple(starts))
        object.__setattr__(self, "_tail_ends", tuple(ends))
        object.__setattr__(self, "_tail_j_before", tuple(j_before) + (j,))
        costs = []
        for direction in ("up", "down"):
            seconds = self.transfer.seconds_per_byte(direction)
            costs.append((seconds, seconds * self.transfer.power_w(direction)))
        if self.fach is not None:
            fach_power = self.tail[self.fach.phase].power_w
            for kbps in (self.fach.up_kbps, self.fach.down_kbps):
                seconds = BITS_PER_BYTE / (kbps * 1e3)
                costs.append((seconds, seconds * fach_power))
        object.__setattr__(self, "_costs", tuple(costs))

    # -- derived figures ---------------------------------------------------------------
    @property
    def tail_s(self) -> float:
        """Length of the full tail: time from the last transfer back to IDLE."""
        return self._tail_ends[-1]

    @property
    def tail_j(self) -> float:
        """Energy of the full tail."""
        return self._tail_j_before[-1]

    def tail_from(self, phase: int) -> tuple[float, float]:
        """(joules, seconds) of the tail when it starts at ``phase`` and runs to IDLE."""
        return (
            self._tail_j_before[-1] - self._tail_j_before[phase],
            self._tail_ends[-1] - self._tail_starts[phase],
        )

    def tail_accrued(self, phase: int, elapsed: float) -> tuple[float, float, int]:
        """Tail started at ``phase``, ``elapsed`` seconds ago: (joules, seconds, phase now).

        The phase now is ``-1`` once the tail has run out (the radio is IDLE; a packet
        arriving exactly at the end of the tail finds it IDLE).
        """
        start = self._tail_starts[phase]
        position = start + elapsed
        ends = self._tail_ends
        if position >= ends[-1]:
            return (self._tail_j_before[-1] - self._tail_j_before[phase], ends[-1] - start, -1)
        now = phase
        while ends[now] <= position:
            now += 1
        joules = (
            self._tail_j_before[now]
            - self._tail_j_before[phase]
            + (position - self._tail_starts[now]) * self.tail[now].power_w
        )
        return (joules, elapsed, now)

    def isolated_energy(self, bytes_up: int = 0, bytes_down: int = 0) -> float:
        """E₁: joules of one isolated transfer: ``bytes_up`` up and, if any, ``bytes_down``
        down at the same instant, from IDLE until the radio is back in IDLE."""
        meter = self.new_meter()
        meter.on_packet(0.0, "up", bytes_up)
        if bytes_down:
            meter.on_packet(0.0, "down", bytes_down)
        return meter.statistics().joules

    def idle_baseline_j(self, idle_s: float) -> float:
        """Paging energy of ``idle_s`` seconds in IDLE (mean paging power × time)."""
        return self.idle_power_w * max(0.0, idle_s)

    def new_meter(self) -> RadioMeter:
        """A fresh meter for one handset's packets (radio IDLE, nothing counted)."""
        from simulator.radio.meter import RadioMeter

        return RadioMeter(self)
