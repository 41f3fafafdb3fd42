"""Incremental radio energy metering: one :class:`RadioMeter` per handset.

::

    meter = get_model("lte").new_meter()
    meter.on_packet(12.0, "up", 2)        # t in seconds, non-decreasing
    meter.on_packet(12.05, "down", 2)
    meter.energy_until(60.0)              # joules booked by t = 60 s
    stats = meter.statistics()            # frozen RadioStatistics, tail run out to IDLE
    stats.joules, stats.promotions, stats.radio_active_s, stats.idle_baseline_j(86_400)

Accounting rules (Huang 2012 §5, ARO, EnergyBox):

- a packet that finds the radio IDLE pays a promotion that starts at the packet's time;
  its bytes go on the air when the promotion ends (``t + T_pro``);
- a packet offered while the radio promotes or transfers waits its turn (no promotion);
- when the link falls quiet the tail starts; a packet inside the tail cuts it short and
  pays no promotion, the tail restarting from its first phase after that packet;
- a packet arriving when the tail has run out (exactly at its end included) finds the radio
  IDLE and pays a full promotion;
- 3G only: the FACH rules of :class:`~simulator.radio.model.FachRules`.

Promotion and transfer energy are booked whole when the packet is offered; tail energy
accrues with time. ``joules`` (promotion + tail + transfer) never includes the idle paging
baseline, which is ``idle_power_w × idle time`` and reported apart.

``on_packet`` is O(1) (a tail has at most three phases) and a meter is one small object
with slots, so a simulation can keep one per handset.
"""
from __future__ import annotations

import math

import attrs

from simulator.radio.model import RadioModel

_INF = math.inf


@attrs.frozen
class RadioStatistics:
    """What a meter counted, up to a time or until the radio is back in IDLE.

    ``joules = promotion_j + tail_j + transfer_j``; ``radio_active_s`` is the time the radio
    spent out of IDLE (promotion + transfer + tail). ``promotions`` counts every promotion,
    ``fach_promotions`` the FACH → DCH ones among them (3G only).
    """

    model: str
    joules: float
    promotion_j: float
    tail_j: float
    transfer_j: float
    promotions: int
    fach_promotions: int
    radio_active_s: float
    promotion_s: float
    transfer_s: float
    tail_s: float
    packets: int
    bytes_up: int
    bytes_down: int
    idle_power_w: float
    first_packet_t: float | None
    radio_idle_at: float | None  # when the radio is back in IDLE (None: no packet yet)

    def idle_baseline_j(self, duration_s: float) -> float:
        """Paging energy over a window of ``duration_s`` seconds: P_idle × time not active."""
        return self.idle_power_w * max(0.0, duration_s - self.radio_active_s)


class RadioMeter:
    """Energy of one handset's packets under a :class:`RadioModel` (see module docstring)."""

    __slots__ = (
        "model", "_last_t", "_busy_until", "_tail_phase", "_on_fach", "_burst_up",
        "_burst_down", "_promotion_j", "_tail_j", "_transfer_j", "_promotion_s", "_tail_s",
        "_transfer_s", "_promotions", "_fach_promotions", "_packets", "_bytes_up",
        "_bytes_down", "_first_t",
    )

    def __init__(self, model: RadioModel) -> None:
        self.model = model
        self._last_t = -_INF
        self._busy_until = -_INF  # end of the promotion/transfers booked so far
        self._tail_phase = -1  # phase the tail starts with at _busy_until; -1 = radio IDLE
        self._on_fach = False  # the booked transfers are on FACH (3G)
        self._burst_up = 0  # RLC buffer bytes of the current FACH burst, per direction
        self._burst_down = 0
        self._promotion_j = self._tail_j = self._transfer_j = 0.0
        self._promotion_s = self._tail_s = self._transfer_s = 0.0
        self._promotions = self._fach_promotions = 0
        self._packets = self._bytes_up = self._bytes_down = 0
        self._first_t: float | None = None

    @property
    def last_packet_t(self) -> float | None:
        """Time of the last packet offered (``None`` before the first)."""
        return None if self._first_t is None else self._last_t

    @property
    def busy_until(self) -> float:
        """End of the last promotion, transfer or hold booked (``-inf`` before any): when
        the link last carried something, as an interface idle timer sees it."""
        return self._busy_until

    def on_packet(self, t: float, direction: str, nbytes: int) -> None:
        """Offer a packet of ``nbytes`` at time ``t`` (seconds, non-decreasing).

        ``direction`` is ``"up"`` (handset → network) or ``"down"``. Raises
        :class:`ValueError` if ``t`` goes backwards or is not finite, for an unknown
        direction or a negative size; the meter is unchanged then.
        """
        if not self._last_t <= t < _INF:
            raise ValueError(
                f"packet time {t!r} is not finite or goes backwards (last was {self._last_t!r})"
            )
        if direction == "up":
            up = True
        elif direction == "down":
            up = False
        else:
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")

        model = self.model
        self._last_t = t
        if self._first_t is None:
            self._first_t = t
        self._packets += 1
        if up:
            self._bytes_up += nbytes
        else:
            self._bytes_down += nbytes

        busy = self._busy_until
        fach = model.fach
        if t >= busy:  # the link is quiet: pay the tail up to now
            phase = self._tail_phase
            if phase >= 0:
                joules, seconds, phase = model.tail_accrued(phase, t - busy)
                self._tail_j += joules
                self._tail_s += seconds
            if phase < 0:  # IDLE: full promotion, data moves once it is done
                self._promote(model.promotion, t)
                self._send_connected(t + model.promotion.duration_s, up, nbytes)
            elif phase == model.inactive_phase:  # NR RRC_INACTIVE: resume, then send
                resume = model.resume
                assert resume is not None  # a model with an INACTIVE phase has a resume
                self._promote(resume, t)
                self._send_connected(t + resume.duration_s, up, nbytes)
            elif fach is not None and phase == fach.phase:
                self._burst_up = self._burst_down = 0
                self._on_fach_packet(t, up, nbytes)
            else:
                self._send_connected(t, up, nbytes)
        elif self._on_fach:
            self._on_fach_packet(busy, up, nbytes)
        else:  # promoting or transferring: wait in the queue
            self._send_connected(busy, up, nbytes)

    def hold(self, start: float, end: float) -> None:
        """Another app keeps the radio connected over ``[start, end)`` (the app on screen):
        the radio is promoted at ``start`` if IDLE and draws the first tail phase's power
        until ``end``, when its tail begins. Packets offered meanwhile queue behind the hold
        and pay no promotion. ``start`` must not go backwards, like a packet's time."""
        if not end >= start:
            raise ValueError(f"a hold must end after it starts ({start!r}, {end!r})")
        self.on_packet(start, "down", 0)
        busy = self._busy_until
        if end > busy:
            power = self.model.tail[0].power_w
            self._transfer_j += (end - busy) * power
            self._transfer_s += end - busy
            self._busy_until = end
            self._tail_phase = 0
            self._on_fach = False

    # -- booking -----------------------------------------------------------------------
    def _promote(self, promotion, start: float) -> None:
        self._promotions += 1
        self._promotion_j += promotion.energy_j
        self._promotion_s += promotion.duration_s
        self._busy_until = start + promotion.duration_s

    def _send_connected(self, start: float, up: bool, nbytes: int) -> None:
        seconds_per_byte, joules_per_byte = self.model._costs[0 if up else 1]
        seconds = nbytes * seconds_per_byte
        self._transfer_s += seconds
        self._transfer_j += nbytes * joules_per_byte
        self._busy_until = start + seconds
        self._tail_phase = 0
        self._on_fach = False

    def _on_fach_packet(self, start: float, up: bool, nbytes: int) -> None:
        """A packet meets FACH (idle FACH phase or FACH transfers booked until ``start``)."""
        fach = self.model.fach
        assert fach is not None  # only a model with FACH has a FACH phase to meet
        if up:
            self._burst_up += nbytes
            over = self._burst_up > fach.up_threshold_bytes
        else:
            self._burst_down += nbytes
            over = self._burst_down > fach.down_threshold_bytes
        if over:  # RLC buffer above threshold: FACH -> DCH, then send on DCH
            self._fach_promotions += 1
            self._promote(fach.promotion, start)
            self._send_connected(self._busy_until, up, nbytes)
            return
        seconds_per_byte, joules_per_byte = self.model._costs[2 if up else 3]
        seconds = nbytes * seconds_per_byte
        self._transfer_s += seconds
        self._transfer_j += nbytes * joules_per_byte
        self._busy_until = start + seconds
        self._tail_phase = fach.phase
        self._on_fach = True

    # -- reading -----------------------------------------------------------------------
    def _pending_tail(self, until: float | None) -> tuple[float, float]:
        """(joules, seconds) of tail not yet booked, up to ``until`` (None: to IDLE)."""
        phase = self._tail_phase
        if phase < 0:
            return (0.0, 0.0)
        if until is None:
            return self.model.tail_from(phase)
        elapsed = until - self._busy_until
        if elapsed <= 0:
            return (0.0, 0.0)
        joules, seconds, _ = self.model.tail_accrued(phase, elapsed)
        return (joules, seconds)

    def _check_until(self, until: float | None) -> None:
        if until is not None and not self._last_t <= until < _INF:
            raise ValueError(
                f"until={until!r} is before the last packet ({self._last_t!r}) or not finite"
            )

    def energy_until(self, t: float) -> float:
        """Joules booked by time ``t`` (≥ the last packet): the tail accrues up to ``t``."""
        self._check_until(t)
        tail_j, _ = self._pending_tail(t)
        return self._promotion_j + self._transfer_j + self._tail_j + tail_j

    def statistics(self, until: float | None = None) -> RadioStatistics:
        """The counts so far as a frozen record; the meter is not changed.

        With ``until=None`` the tail after the last packet is run out to IDLE (the energy
        the traffic causes, interfaces §4); with a time (≥ the last packet) it is cut there,
        e.g. at the end of a simulated day.
        """
        self._check_until(until)
        tail_j, tail_s = self._pending_tail(until)
        tail_j += self._tail_j
        tail_s += self._tail_s
        idle_at = None
        if self._tail_phase >= 0:
            idle_at = self._busy_until + self.model.tail_from(self._tail_phase)[1]
        return RadioStatistics(
            model=self.model.name,
            joules=self._promotion_j + self._transfer_j + tail_j,
            promotion_j=self._promotion_j,
            tail_j=tail_j,
            transfer_j=self._transfer_j,
            promotions=self._promotions,
            fach_promotions=self._fach_promotions,
            radio_active_s=self._promotion_s + self._transfer_s + tail_s,
            promotion_s=self._promotion_s,
            transfer_s=self._transfer_s,
            tail_s=tail_s,
            packets=self._packets,
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            idle_power_w=self.model.idle_power_w,
            first_packet_t=self._first_t,
            radio_idle_at=idle_at,
        )

    def __repr__(self) -> str:
        return (
            f"<RadioMeter {self.model.name} packets={self._packets} "
            f"promotions={self._promotions}>"
        )
