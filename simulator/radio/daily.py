"""Closed-form and steady-state cost of a strictly periodic heartbeat.

``daily_heartbeat_energy(model, interval_s)`` is the radio energy per day of one heartbeat
every ``interval_s`` seconds (idle paging baseline excluded), radio-energy.md §5:

- when each beat finds the radio back in IDLE (the interval is at least the time from a
  beat to IDLE, ``T_pro + transfer + T_tail``): ``(day_s / interval_s) × E₁``;
- when tails overlap: ``(day_s / interval_s) × cost of one beat in the steady state``,
  measured by running a meter through a train of beats (a beat inside the tail pays no
  promotion and only the part of the tail it uses).

A beat is a tuple of ``(direction, bytes)`` packets sent at the same instant; the default
:data:`MQTT_PING` is MQTT's PINGREQ (2 bytes up) and PINGRESP (2 bytes down).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from simulator.radio.model import RadioModel

DAY_S = 86_400.0
MQTT_PING: tuple[tuple[str, int], ...] = (("up", 2), ("down", 2))

_WARMUP_BEATS = 2  # beats after the tails overlap in full, before measuring
_MEASURED_BEATS = 1024  # long enough to average any short periodic pattern (3G FACH)
_MAX_WARMUP = 4096  # sub-second intervals: the pattern settles long before a full tail


def heartbeat_cost(
    model: RadioModel, interval_s: float, *, beat: Sequence[tuple[str, int]] = MQTT_PING
) -> float:
    """Joules per beat of a heartbeat every ``interval_s`` seconds, in the steady state."""
    if not 0 < interval_s < math.inf:
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    if not beat:
        raise ValueError("a heartbeat needs at least one packet")
    single = model.new_meter()
    _send(single, 0.0, beat)
    isolated = single.statistics()
    idle_at = isolated.radio_idle_at
    assert idle_at is not None  # the beat was sent
    if idle_at <= interval_s:  # the next beat finds the radio IDLE
        return isolated.joules

    # Tails overlap: run a train of beats and measure, just before beat `warmup` and just
    # before beat `warmup + _MEASURED_BEATS`, the energy booked so far. The difference
    # spans exactly _MEASURED_BEATS periods of the steady state.
    meter = model.new_meter()
    # Once a full tail's worth of beats has passed, the state the radio is in when a beat
    # arrives repeats (a 3G train may alternate DCH and FACH beats: hence the averaging).
    warmup = min(math.ceil(idle_at / interval_s), _MAX_WARMUP) + _WARMUP_BEATS
    last = warmup + _MEASURED_BEATS
    start_j = 0.0
    for k in range(last):
        t = k * interval_s
        if k == warmup:
            start_j = meter.energy_until(t)
        _send(meter, t, beat)
    return (meter.energy_until(last * interval_s) - start_j) / _MEASURED_BEATS


def daily_heartbeat_energy(
    model: RadioModel,
    interval_s: float,
    *,
    beat: Sequence[tuple[str, int]] = MQTT_PING,
    day_s: float = DAY_S,
) -> float:
    """Radio joules per ``day_s`` of one heartbeat every ``interval_s`` (baseline excluded)."""
    per_beat = heartbeat_cost(model, interval_s, beat=beat)  # validates interval_s first
    return day_s / interval_s * per_beat


def _send(meter, t: float, beat: Sequence[tuple[str, int]]) -> None:
    for direction, nbytes in beat:
        meter.on_packet(t, direction, nbytes)
