"""What the oracle needs to know about one handset's day, and how to get it from a spec.

:class:`OracleDay` is the handset's exogenous day in the form the bound reads it: when the
app may use the network (not in an outage, not blocked by Doze; high-priority grants
included), which network is in use (its radio model and the NAT idle timeout of a binding),
when other apps wake the radio (per radio model), when pushes arrive, and when the SDK must
(re)connect whatever its strategy (start, network switch, end of an outage). Everything is
over-approximated in the direction that can only lower the bound (docs/oracle.md §3).

:func:`day_from_spec` builds it from a :class:`~simulator.scenario.HandsetSpec` and a
:class:`~simulator.world.RunConfig`, exactly as the simulated world replays that spec.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import attrs

#: Seconds by which an SDK exchange (registration + connect, a ping and its answer, a push
#: and its PUBACK) may outlast its first packet; the bound places every such event this much
#: later than it can happen (later refresh, smaller gap to the next event: both lower it).
CONNECT_SLACK = 3.0
EXCHANGE_SLACK = 1.0


@attrs.frozen
class Attachment:
    """The handset on one network from ``start`` to ``end``."""

    start: float
    end: float
    radio: str
    nat_timeout: float


@attrs.frozen
class ForcedEvent:
    """An SDK event every strategy that keeps its connection has: ``connect`` (a new binding,
    paid like a beat), ``push`` (refreshes the binding; its own cost is not counted) or
    ``cut`` (the path dies: switch away or outage start)."""

    t: float
    kind: str


@attrs.frozen
class OracleDay:
    duration: float
    allowed: tuple[tuple[float, float], ...]  # disjoint, sorted: the app may send
    attachments: tuple[Attachment, ...]  # sorted, covering [0, duration)
    background: tuple[tuple[str, tuple[float, ...]], ...]  # radio -> sorted wake-up times
    forced: tuple[ForcedEvent, ...]  # sorted by time
    _starts: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _allowed_starts: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(a.start for a in self.attachments))
        object.__setattr__(self, "_allowed_starts", tuple(a for a, _ in self.allowed))

    # -- queries ---------------------------------------------------------------------------
    def attachment_at(self, t: float) -> Attachment:
        starts = self._starts
        return self.attachments[max(0, bisect.bisect_right(starts, t) - 1)]

    def reach(self, refreshed: float) -> float:
        """The last moment a binding refreshed at ``refreshed`` is still alive (its NAT's
        idle timeout later, or the end of its attachment)."""
        attachment = self.attachment_at(refreshed)
        return min(refreshed + attachment.nat_timeout, attachment.end)

    def wakeups(self, radio: str) -> tuple[float, ...]:
        for name, times in self.background:
            if name == radio:
                return times
        return ()

    def latest_allowed(self, low: float, high: float) -> float | None:
        """The latest allowed moment in ``(low, high]``, or None."""
        i = bisect.bisect_right(self._allowed_starts, high) - 1
        while i >= 0:
            a, b = self.allowed[i]
            top = min(b, high)
            if top > low and top >= a:
                return top
            if b <= low:
                return None
            i -= 1
        return None

    def first_allowed(self, t: float) -> float | None:
        """The first allowed moment at or after ``t``, or None before the end."""
        i = max(0, bisect.bisect_right(self._allowed_starts, t) - 1)
        for a, b in self.allowed[i:]:
            if b >= t:
                return max(a, t)
        return None


def _subtract(spans: Sequence[tuple[float, float]],
              holes: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for a, b in spans:
        pieces = [(a, b)]
        for h0, h1 in holes:
            pieces = [p for lo, hi in pieces for p in ((lo, min(hi, h0)), (max(lo, h1), hi))
                      if p[1] > p[0]]
        out += pieces
    return sorted(out)


def _union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _doze_allowed(doze, end: float) -> list[tuple[float, float]]:
    """The stretches of ``[0, end)`` in which Doze lets the app use the network."""
    spans: list[tuple[float, float]] = []
    allowed, since, t = doze.network_allowed(0.0), 0.0, 0.0
    while True:
        t = doze.next_change(t)
        if t >= end:
            break
        now = doze.network_allowed(t)
        if now != allowed:
            if allowed:
                spans.append((since, t))
            allowed, since = now, t
    if allowed:
        spans.append((since, end))
    return spans


def day_from_spec(spec, config) -> OracleDay:
    """The day of handset ``spec`` in the run ``config`` (RunConfig), as the world plays it."""
    end = config.duration
    outages, attachments, cuts, connects = _network_timeline(spec, end)
    online = _subtract([(0.0, end)], outages)
    allowed = _union(_subtract(_doze_allowed(spec.doze, end), outages))
    pushes, grants = _pushes(spec, config, allowed)
    allowed = tuple(_union(_subtract(_union(list(allowed) + grants), outages)))
    start = config.ramp_s * spec.index / max(1, config.handsets)
    forced = [ForcedEvent(start, "connect")]
    forced += [ForcedEvent(t, "cut") for t in cuts if t > start]
    forced += [ForcedEvent(t, "connect") for t in connects if t > start]
    forced += [ForcedEvent(t, "push") for t in pushes if t > start]
    order = {"cut": 0, "connect": 1, "push": 2}
    forced.sort(key=lambda e: (e.t, order[e.kind]))
    background = _background(spec, attachments, online)
    return OracleDay(end, allowed, tuple(attachments), background, tuple(forced))


def _network_timeline(spec, end: float):
    outages, cuts, connects = [], [], []
    attachments = []
    network, since, down_since = spec.network, 0.0, None
    for event in spec.network_events:
        if event.t >= end:
            break
        if event.kind == "switch":
            attachments.append(Attachment(since, event.t, network.radio, network.nat_timeout))
            network, since = event.network, event.t
            cuts.append(event.t)
            if down_since is None:
                connects.append(event.t)
        elif event.kind == "outage_start":
            down_since = event.t
            cuts.append(event.t)
        elif event.kind == "outage_end" and down_since is not None:
            outages.append((down_since, event.t))
            connects.append(event.t)
            down_since = None
    if down_since is not None:
        outages.append((down_since, end))
    attachments.append(Attachment(since, end, network.radio, network.nat_timeout))
    return outages, attachments, cuts, connects


def _pushes(spec, config, allowed):
    """Arrival times of the pushes aimed at this handset (held ones at the next allowed
    moment) and the network grants high-priority pushes give while dozing."""
    first, last = config.warmup_s, config.duration * config.push_window
    plans = config.scenario.workload.schedule([spec], config.hours, config.seed)
    grace = spec.doze.params.high_priority_grace
    times, grants = [], []
    starts = [a for a, _ in allowed]
    for plan in plans:
        if not first <= plan.t <= last or spec.index not in plan.targets:
            continue
        i = bisect.bisect_right(starts, plan.t) - 1
        inside = i >= 0 and allowed[i][1] >= plan.t
        if inside:
            times.append(plan.t)
        elif plan.priority == "high":
            times.append(plan.t)
            grants.append((plan.t, plan.t + grace))
        else:
            nxt = next((a for a in starts if a > plan.t), None)
            if nxt is not None:
                times.append(nxt)
    return sorted(times), grants


def _background(spec, attachments, online) -> tuple[tuple[str, tuple[float, ...]], ...]:
    by_radio: dict[str, list[float]] = {}
    starts = [a.start for a in attachments]
    for t in spec.background.times:
        if not any(a <= t < b for a, b in online):
            continue  # the handset ignores other apps' traffic while offline
        radio = attachments[max(0, bisect.bisect_right(starts, t) - 1)].radio
        by_radio.setdefault(radio, []).append(t)
    return tuple((radio, tuple(sorted(times))) for radio, times in sorted(by_radio.items()))


__all__ = ["Attachment", "CONNECT_SLACK", "EXCHANGE_SLACK", "ForcedEvent", "OracleDay",
           "day_from_spec"]
