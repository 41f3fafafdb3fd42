"""A handset's exogenous day: everything that happens to it whatever the app does. Pure.

``handset_day(scenario, index, seed, hours)`` describes, from the scenario and the seed
alone and without running anything, what the world will do to virtual handset ``index``:

- its network **attachments** — maximal stretches on one network with connectivity,
  ended by a network switch, an outage or the end of the run — and, for every connection
  the app opens on an attachment, that connection's NAT binding timeout as a function of
  time (:meth:`Attachment.nat_timeout`: per-connection spread, time-of-day schedule,
  sweep timer, refresh rule, drop or RST);
- the **outages**;
- other apps' **radio activity** (times and bytes each way);
- the **screen-on** intervals and the app-state timeline;
- **Doze**: the intervals in which the app's network is blocked (both directions) and
  the maintenance windows;
- the **pushes** the provider sends to it (the times they reach the server).

The world builds the very same objects (``World`` calls :func:`build_day` for every handset
and the handset reads its NAT timeouts, timeline and Doze state from the day), so an
offline computation on a :class:`HandsetDay` and the simulation cannot disagree.

Per-connection draws are functions of ``(seed, handset, attachment index, purpose,
ordinal)``: the ``ordinal``-th connection of ``purpose`` (``"push"``: the SDK's main MQTT
connection; ``"probe"``: a probe connection; ``"http"``: registration) opened on an
attachment draws ``Random(f"{seed}:{index}:nat:{attachment}:{purpose}:{ordinal}")``. A
strategy that keeps one push connection per attachment therefore gets exactly
``attachment.nat_timeout(0, "push")``, and probes never shift the push connection's draws.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from simulator.app_state import AppState, AppStateTimeline
from simulator.doze import DozeTimeline
from simulator.nat import NatTimeout
from simulator.scenario import HandsetSpec, NetworkSpec, Scenario
from simulator.workload import PushPlan

INF = float("inf")
Purpose = Literal["push", "probe", "http"]
PURPOSES: tuple[str, ...] = ("push", "probe", "http")


@attrs.frozen
class Attachment:
    """The handset on ``network`` with connectivity over ``[start, end)``.

    ``index`` counts the run's attachments from 0. A new attachment begins at t = 0, at
    every network switch made while online and at the end of every outage; every
    connection of the previous attachment is dead from its ``end``.
    """

    index: int
    start: float
    end: float
    network: NetworkSpec
    stream_seed: str = attrs.field(repr=False)

    @property
    def radio(self) -> str:
        """The radio energy model in use (``pushsim models``)."""
        return self.network.radio

    def nat_timeout(self, ordinal: int = 0, purpose: Purpose = "push") -> NatTimeout:
        """The NAT binding timeout of the ``ordinal``-th ``purpose`` connection opened here."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
        if ordinal < 0:
            raise ValueError(f"ordinal must be >= 0, got {ordinal}")
        nat = self.network.nat()
        if not nat.spread:
            return nat.for_connection()
        draw = random.Random(f"{self.stream_seed}:nat:{self.index}:{purpose}:{ordinal}")
        return nat.for_connection(draw.random())


@attrs.frozen
class RadioActivity:
    """Another app uses the radio at ``t``: ``bytes_up`` and ``bytes_down`` at once."""

    t: float
    bytes_up: int
    bytes_down: int


@attrs.frozen
class PushArrival:
    """A push the provider sends to this handset: it reaches the server at ``t``."""

    t: float
    plan_id: str
    priority: Literal["high", "normal"]
    ttl: int
    collapse_key: str | None
    kind: Literal["notification", "message"]
    payload_bytes: int


@attrs.frozen
class HandsetDay:
    """The exogenous day of one handset (see the module docstring). Times are virtual s."""

    index: int
    duration: float
    attachments: tuple[Attachment, ...]
    outages: tuple[tuple[float, float], ...]
    radio_activity: tuple[RadioActivity, ...]
    screen_on: tuple[tuple[float, float], ...]
    app: AppStateTimeline
    doze: DozeTimeline
    blocked: tuple[tuple[float, float], ...]  # Doze blocks the app's network (both ways)
    maintenance: tuple[tuple[float, float], ...]  # Doze maintenance windows
    pushes: tuple[PushArrival, ...]
    #: While the screen is on, the app in front keeps the radio connected (a radio "hold"
    #: over each ``screen_on`` interval, docs/energy.md); False: it does not.
    screen_radio: bool = True
    spec: HandsetSpec = attrs.field(default=None, repr=False, eq=False)
    _starts: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(a.start for a in self.attachments))

    def attachment_at(self, t: float) -> Attachment | None:
        """The attachment in force at ``t`` (``None`` during an outage)."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self.attachments[i].end:
            return self.attachments[i]
        return None

    def network_blocked(self, t: float) -> bool:
        """Does Doze block the app's network at ``t``?"""
        return _inside(self.blocked, t)

    def screen_is_on(self, t: float) -> bool:
        return _inside(self.screen_on, t)


def _inside(intervals: Sequence[tuple[float, float]], t: float) -> bool:
    i = bisect.bisect_right(intervals, (t, INF)) - 1
    return i >= 0 and intervals[i][0] <= t < intervals[i][1]


# ---------------------------------------------------------------------------------------
# Building a day


def handset_day(
    scenario: Scenario, index: int, seed: int | str, hours: float | None = None, *,
    warmup_s: float = 120.0, push_window: float = 0.9,
) -> HandsetDay:
    """The day of handset ``index`` in ``scenario`` with ``seed`` (and ``hours``, default the
    scenario's). ``warmup_s`` and ``push_window`` are the run's (``RunConfig``): pushes
    are sent only from ``warmup_s`` to ``push_window × duration``."""
    hours = scenario.hours if hours is None else hours
    spec = scenario.handset_spec(index, seed, hours=hours)
    plans = scenario.workload.schedule([spec], hours, seed)
    return build_day(spec, plans, hours * 3600.0, warmup_s=warmup_s, push_window=push_window)


def build_day(
    spec: HandsetSpec, plans: Iterable[PushPlan], duration: float, *,
    warmup_s: float = 120.0, push_window: float = 0.9,
) -> HandsetDay:
    """The day of ``spec`` over ``duration`` s; ``plans`` may hold other handsets' pushes."""
    last = duration * push_window
    pushes = tuple(
        PushArrival(p.t, p.plan_id, p.priority, p.ttl, p.collapse_key, p.kind, p.payload_bytes)
        for p in plans if spec.index in p.targets and warmup_s <= p.t <= last
    )
    attachments, outages = _attachments(spec, duration)
    background = spec.background
    return HandsetDay(
        index=spec.index,
        duration=duration,
        attachments=attachments,
        outages=outages,
        radio_activity=tuple(RadioActivity(t, background.bytes_up, background.bytes_down)
                             for t in background.times),
        screen_on=tuple((p.start, min(p.end, duration)) for p in spec.app.periods
                        if p.state is not AppState.INACTIVE and p.start < duration),
        app=spec.app,
        doze=spec.doze,
        blocked=_blocked(spec.doze, duration),
        maintenance=tuple((w.start, min(w.end, duration))
                          for w in spec.doze.maintenance_windows(duration)),
        pushes=pushes,
        screen_radio=spec.screen_radio,
        spec=spec,
    )


def _attachments(
    spec: HandsetSpec, duration: float
) -> tuple[tuple[Attachment, ...], tuple[tuple[float, float], ...]]:
    attachments: list[Attachment] = []
    outages: list[tuple[float, float]] = []
    network, online, since, outage_from = spec.network, True, 0.0, 0.0

    def close(t: float) -> None:
        if t > since:  # a zero-length stay (two events at one instant) is no attachment
            attachments.append(Attachment(len(attachments), since, min(t, duration), network,
                                          spec.stream_seed))

    for event in spec.network_events:
        t = min(event.t, duration)
        if event.kind == "switch":
            if online:
                close(t)
                since = t
            network = event.switched_to
        elif event.kind == "outage_start" and online:
            close(t)
            online, outage_from = False, t
        elif event.kind == "outage_end" and not online:
            outages.append((outage_from, t))
            online, since = True, t
    if online:
        close(duration)
    else:
        outages.append((outage_from, duration))
    return tuple(attachments), tuple(outages)


def _blocked(doze: DozeTimeline, duration: float) -> tuple[tuple[float, float], ...]:
    intervals: list[tuple[float, float]] = []
    t = 0.0
    blocked_since = None if doze.network_allowed(0.0) else 0.0
    while t < duration:
        t = doze.next_change(t)
        if t >= duration:
            break
        if blocked_since is None:
            blocked_since = t
        else:
            intervals.append((blocked_since, t))
            blocked_since = None
    if blocked_since is not None:
        intervals.append((blocked_since, duration))
    return tuple(intervals)
