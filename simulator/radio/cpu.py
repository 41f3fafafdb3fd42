"""CPU wake-up energy: what waking the phone to run the app costs besides the radio.

A phone with the screen off sleeps (CPU suspended). Every time the app must run — to send a
heartbeat, to read a push, to reconnect — the kernel wakes, the app holds a wakelock while
it works, and the CPU draws its *awake* current on top of the suspend floor, plus its
*active* current while it computes. :class:`CpuModel` holds those currents and times;
:class:`CpuMeter` counts one handset's wake-ups from the times the app's traffic happens:

- app activity at ``t`` while the CPU is asleep (and the screen is off) is a **wake-up**:
  the CPU stays awake for ``awake_s`` after the last activity of the burst;
- activity while the CPU is still awake from an earlier one extends that awake period (no
  new wake-up);
- while the screen is on the CPU is awake anyway for the app in front: the app's
  activity then costs no wake-up and no awake time (attribution as for the radio: the app
  pays what it adds).

``energy_j = V × (I_awake × awake time + I_active × active_s × wake-ups)``.

Figures (``NEXUS4``): the Nexus 4 (``mako``) ``power_profile.xml`` — ``cpu.awake`` 10.43 mA,
``cpu.active`` 92.6 mA at its lowest speed (384 MHz) — and its 3.8 V average voltage [C];
the times a wake lasts (``awake_s`` 1 s: the wakelock held around a network exchange)
and computes (``active_s`` 50 ms) are this project's assumption [E]. docs/energy.md.
"""
from __future__ import annotations

import math

import attrs


@attrs.frozen
class CpuModel:
    """Currents (A) from a power profile, the battery voltage (V) and the wake's times (s)."""

    name: str
    awake_a: float  # power_profile cpu.awake: CPU awake, not suspended
    active_a: float  # power_profile cpu.active (lowest speed): CPU computing
    voltage: float
    awake_s: float = 1.0  # a wake keeps the CPU up this long after the last activity [E]
    active_s: float = 0.05  # CPU time per wake-up [E]
    source: str = ""

    @property
    def wake_j(self) -> float:
        """Energy of one isolated wake-up."""
        return self.voltage * (self.awake_a * self.awake_s + self.active_a * self.active_s)

    def new_meter(self) -> CpuMeter:
        return CpuMeter(self)


NEXUS4 = CpuModel(
    name="nexus4", awake_a=0.01043, active_a=0.0926, voltage=3.8,
    source="Nexus 4 (mako) power_profile.xml: cpu.awake 10.43 mA, cpu.active 92.6 mA at "
           "384 MHz; 3.8 V average voltage (as quoted in the BuGu profiler's MakoPowerProfile)",
)


class CpuMeter:
    """Wake-ups and CPU energy of one handset's app (see the module docstring)."""

    __slots__ = ("model", "wakeups", "awake_s", "_awake_until", "_last")

    def __init__(self, model: CpuModel = NEXUS4) -> None:
        self.model = model
        self.wakeups = 0
        self.awake_s = 0.0
        self._awake_until = -math.inf
        self._last = -math.inf

    def on_activity(self, t: float, screen_on: bool = False) -> None:
        """The app runs at ``t`` (times non-decreasing)."""
        if t < self._last:
            raise ValueError(f"activity time {t!r} goes backwards (last was {self._last!r})")
        self._last = t
        if screen_on:
            return
        until = t + self.model.awake_s
        if t >= self._awake_until:
            self.wakeups += 1
            self.awake_s += self.model.awake_s
        else:
            self.awake_s += until - self._awake_until
        self._awake_until = until

    def energy_j(self, until: float | None = None) -> float:
        """CPU energy of the wake-ups so far (an awake period running past ``until`` is cut)."""
        awake = self.awake_s
        if until is not None and self._awake_until > until:
            awake -= self._awake_until - max(until, self._awake_until - self.model.awake_s)
        m = self.model
        return m.voltage * (m.awake_a * max(0.0, awake) + m.active_a * m.active_s * self.wakeups)
