"""What the oracle reads of a handset's day, and what each SDK exchange costs at least.

:class:`OracleView` is built from the very :class:`~simulator.day.HandsetDay` the simulated
world replays (``World`` builds the day, the handset reads its NATs, Doze and screen from
it), so the bound and the simulation cannot disagree about what happens to a handset. It
answers the search's questions: when may the app send (online, not blocked by Doze — an
app exempt from Doze is never blocked), how long a binding refreshed at ``x`` lives
(:meth:`OracleView.reach`), when the radio is up for someone else anyway (the *zones*),
which exchanges every strategy that keeps its connection must make (the *forced* events),
and how much of the other apps' energy an SDK packet could save (:attr:`correction_j`).

:class:`RadioCosts` is the cost model of docs/oracle.md §2: an isolated exchange costs at
least ``isolated_j``, a packet less than ``gap_s`` after the SDK's previous one extends the
radio's active time at ``extend_w`` per second. Everything here errs towards a lower
bound; docs/oracle.md says why each choice does.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

import attrs

from simulator.day import HandsetDay, PushArrival
from simulator.nat import NatTimeout, Retransmission
from simulator.radio import get_model
from simulator.radio.cpu import NEXUS4

Interval = tuple[float, float]

#: Largest application write the SDK makes (a push is at most 4 KB of JSON, interfaces §2).
MAX_WRITE = 4096


# --- the cost model ---------------------------------------------------------------------


@attrs.frozen
class RadioCosts:
    """Lower bounds on what the SDK's packets cost on one radio model (docs/oracle.md §2).

    ``isolated_j``: E₁, a packet that finds the radio idle (promotion, tail, transfer).
    ``gap_s``: a packet at least this long after the SDK's previous one may find the radio
    idle; a closer one cannot (the previous tail is still running). ``free_s``: after an
    isolated packet, the radio is up this long whatever comes next (the promotion; on 3G
    also the DCH timer), so SDK packets in it cost nothing more. ``extend_w``: every
    further second of SDK activity inside one active stretch costs at least this (the
    tail's mean power; on 3G the FACH power), less one ``transfer_s`` per packet (the
    tail after a write starts when its transfer ends). ``promotion_j``: the most another app's
    packet can save when an SDK packet keeps the radio up for it. ``window_s``: an SDK
    packet this close to other apps' radio use may cost nothing.
    """

    model: str
    isolated_j: float
    gap_s: float
    free_s: float
    extend_w: float
    promotion_j: float
    window_s: float
    transfer_s: float = 0.0  # the longest transfer of one write (its tail starts after it)

    @classmethod
    def of(cls, radio: str) -> RadioCosts:
        model = get_model(radio)
        transfer = MAX_WRITE * max(model.transfer.seconds_per_byte("up"),
                                   model.transfer.seconds_per_byte("down"))
        promotion = model.promotion
        if model.fach is not None:  # 3G: DCH then FACH; small packets may stay on FACH
            dch, fach = model.tail[0], model.tail[model.fach.phase]
            fach_transfer = 8 * max(model.fach.up_threshold_bytes,
                                    model.fach.down_threshold_bytes) / (
                1e3 * min(model.fach.up_kbps, model.fach.down_kbps))
            gap = model.tail_s + max(transfer, fach_transfer)
            free = promotion.duration_s + dch.duration_s
            extend = min(fach.power_w, promotion.power_w)
            saved = max(promotion.energy_j, model.fach.promotion.energy_j)
        else:
            gap = model.tail_s + transfer
            free = promotion.duration_s
            extend = model.tail_j / model.tail_s  # concave tail: chords lie below it
            saved = promotion.energy_j
            if model.resume is not None:
                saved = max(saved, model.resume.energy_j)
        return cls(model=model.name, isolated_j=model.isolated_energy(), gap_s=gap,
                   free_s=free, extend_w=extend, promotion_j=saved,
                   window_s=gap + promotion.duration_s + transfer + 1.0, transfer_s=transfer)


# --- interval helpers -------------------------------------------------------------------


def union(spans: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(spans: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    """``spans`` minus ``holes`` (both sorted and disjoint)."""
    out: list[Interval] = []
    j = 0
    for a, b in spans:
        while j < len(holes) and holes[j][1] <= a:
            j += 1
        k, lo = j, a
        while k < len(holes) and holes[k][0] < b:
            if holes[k][0] > lo:
                out.append((lo, holes[k][0]))
            lo = max(lo, holes[k][1])
            k += 1
        if lo < b:
            out.append((lo, b))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


class Spans:
    """Sorted disjoint closed intervals with the queries the search asks millions of times."""

    __slots__ = ("spans", "starts", "_cumulative")

    def __init__(self, spans: Sequence[Interval]) -> None:
        self.spans = list(spans)
        self.starts = [a for a, _ in self.spans]
        total, cumulative = 0.0, [0.0]
        for a, b in self.spans:
            total += b - a
            cumulative.append(total)
        self._cumulative = cumulative

    def latest(self, low: float, high: float) -> float | None:
        """The latest point of the spans in ``(low, high]``, or None."""
        i = bisect.bisect_right(self.starts, high) - 1
        if i < 0:
            return None
        a, b = self.spans[i]
        top = b if b < high else high
        return top if top > low else None

    def first(self, t: float) -> float | None:
        """The first point of the spans at or after ``t``, or None."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and self.spans[i][1] >= t:
            return t
        i += 1
        return self.spans[i][0] if i < len(self.spans) else None

    def contains(self, t: float) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t <= self.spans[i][1]

    def meets(self, low: float, high: float) -> bool:
        """Do the spans meet ``(low, high]``?"""
        i = bisect.bisect_right(self.starts, high) - 1
        return i >= 0 and self.spans[i][1] > low

    def measure(self, low: float, high: float) -> float:
        """Length of the spans inside ``[low, high]``."""
        if high <= low:
            return 0.0
        return self._upto(high) - self._upto(low)

    def _upto(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return 0.0
        a, b = self.spans[i]
        return self._cumulative[i] + (min(b, t) - a)

    def end_of(self, t: float) -> float | None:
        """The end of the span holding ``t`` (None if none does)."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and t <= self.spans[i][1]:
            return self.spans[i][1]
        return None


def _end_of_block(doze: Spans, t: float) -> float:
    """The end of the Doze block holding ``t``, which the caller knows is in one."""
    end = doze.end_of(t)
    assert end is not None, f"{t} is in no Doze block"
    return end


# --- the view ---------------------------------------------------------------------------


@attrs.frozen
class Forced:
    """An exchange every strategy that keeps its connection makes: ``connect`` (a new
    binding, paid like a beat), ``push`` (the server's packet refreshes a live binding; its
    own cost is not counted) or ``cut`` (the path dies: switch, outage)."""

    t: float
    kind: str
    radio: bool = False  # a push whose packets reach the handset's radio at once


_ORDER = {"cut": 0, "connect": 1, "push": 2}


@attrs.frozen
class _Stretch:
    """One attachment as the search sees it."""

    start: float
    end: float
    nat: NatTimeout  # the longest-lived binding any connection here can get
    costs: RadioCosts
    rtt: float  # the longest round trip on this network
    outbound: bool  # only the handset's packets refresh the binding
    one_way: float  # the shortest one-way delay
    lossy: bool  # segments may be lost (and arrive later than one way)


@attrs.frozen
class _Held:
    """Server data Doze holds at the handset's door: later pushes join it until ``until``
    (its delivery, or the server's give-up)."""

    stretch: _Stretch
    until: float
    events: list[Forced]


class OracleView:
    """A handset's day as the bound reads it (see the module docstring).

    ``start`` is when the handset's SDK starts (the run's ramp); ``exempt`` says the app's
    connection is exempt from Doze (``HeartbeatStrategy.doze_exempt``): never blocked,
    normal-priority pushes deferred by the platform while the device dozes.
    """

    def __init__(self, day: HandsetDay, start: float = 0.0, *, exempt: bool = False) -> None:
        self.day = day
        self.duration = day.duration
        self.exempt = exempt
        self.stretches = [self._stretch(a) for a in day.attachments]
        self._starts = [s.start for s in self.stretches]
        online = [(s.start, s.end) for s in self.stretches]
        blocked = [] if exempt else list(day.blocked)
        self.allowed = Spans(subtract(online, union(blocked)))
        self.zones = Spans(self._zones())
        self.free = Spans(intersect(self.zones.spans, self.allowed.spans))
        self.screen = Spans(union(day.screen_on))
        self.free_lit = Spans(intersect(self.free.spans, self.screen.spans))  # no CPU wake
        cpu = day.spec is not None and day.spec.cpu == "nexus4"
        #: A wake-up's awake time (J; its 50 ms of computing is not counted: §2, CPU).
        self.cpu_j = NEXUS4.voltage * NEXUS4.awake_a * NEXUS4.awake_s if cpu else 0.0
        self.cpu_awake_s = NEXUS4.awake_s
        self.forced = self._forced(start)
        self.correction_j = self._correction()

    # -- construction ------------------------------------------------------------------
    def _stretch(self, attachment) -> _Stretch:
        network = attachment.network
        nat = network.nat()
        timeout = nat.for_connection(1.0) if nat.spread else nat.for_connection()
        return _Stretch(attachment.start, attachment.end, timeout,
                        RadioCosts.of(network.radio), 2 * (network.latency + network.jitter),
                        nat.refresh == "outbound", network.latency, network.loss > 0)

    def _zones(self) -> list[Interval]:
        """Where the radio may be up for other apps: around their packets, over the
        screen-on sessions (the app in front holds the radio), and the run's last tail."""
        day, spans = self.day, []
        for stretch in self.stretches:
            w = stretch.costs.window_s
            spans += [(a.t - w, a.t + w) for a in day.radio_activity
                      if stretch.start <= a.t < stretch.end]
            if day.screen_radio:
                spans += [(a - w, b + w) for a, b in day.screen_on
                          if a < stretch.end and b > stretch.start]
            spans.append((self.duration - w, self.duration))
        return union((max(0.0, a), min(self.duration, b)) for a, b in spans)

    def _forced(self, start: float) -> tuple[Forced, ...]:
        first = self.allowed.first(start)
        events = [] if first is None else [Forced(first, "connect")]
        for stretch in self.stretches[1:]:
            if stretch.start > start:
                events.append(Forced(stretch.start, "connect"))
        for stretch in self.stretches:
            if start < stretch.end < self.duration:
                events.append(Forced(stretch.end, "cut"))
        events += self._push_events([p for p in self.day.pushes if p.t > start])
        events.sort(key=lambda e: (e.t, _ORDER[e.kind]))
        return tuple(events)

    def _push_events(self, pushes: Sequence[PushArrival]) -> list[Forced]:
        """The pushes' packets that may refresh the binding or reach the radio, as the
        simulated path carries them (``simulator.link``): the server's packet at arrival
        (the NAT sees it even while Doze holds it at the handset's door), and its
        delivery. Non-exempt: TCP holds everything behind the first held segment, and the
        held data goes through at the server's first retransmission that finds the door
        open; after its last one the server gives up and nothing is delivered. Exempt:
        the platform defers a normal-priority push to the end of Doze, or to the next
        high-priority one, which brings it along."""
        doze = Spans(union(self.day.blocked))
        events: list[Forced] = []
        group: _Held | None = None
        for i, push in enumerate(pushes):
            stretch = self.stretch_at(push.t)
            if stretch is None:
                continue  # offline: the server holds it for the next connection
            if group is not None and (push.t >= group.until or group.stretch is not stretch):
                group = None
            blocked = doze.contains(push.t)
            if self.exempt:
                events += self._exempt_push(push, stretch, doze, pushes[i + 1:])
            elif group is None and not blocked:
                events.append(Forced(push.t, "push", radio=True))
            else:
                if not stretch.outbound:
                    events.append(Forced(push.t, "push"))
                if group is None:  # it starts a held group; later ones join it
                    group = self._held(push.t, stretch, doze)
                    events += group.events
        return events

    def _held(self, first: float, stretch: _Stretch, doze: Spans) -> _Held:
        """The server's data held at the door from ``first``: its retransmissions that find
        the door shut again (they refresh the NAT, never reach the radio) and its delivery."""
        attachment = self.day.attachment_at(first)
        assert attachment is not None  # a push held in a stretch: online
        network = attachment.network
        policy = Retransmission(network.rto_min, max_retries=network.max_retransmissions)
        tries = []
        delivered = policy.next_attempt(first, _end_of_block(doze, first))
        while (delivered is not None and delivered < stretch.end
               and self.day.network_blocked(delivered)):
            tries.append(delivered)
            delivered = policy.next_attempt(first, _end_of_block(doze, delivered))
        events = [] if stretch.outbound else [Forced(t, "push") for t in tries]
        if delivered is not None and delivered < stretch.end:
            events.append(Forced(delivered, "push", radio=True))
            until = delivered
        else:
            until = policy.give_up_at(first)
        return _Held(stretch, until, events)

    def _exempt_push(self, push: PushArrival, stretch: _Stretch, doze: Spans,
                     later: Sequence[PushArrival]) -> list[Forced]:
        block_end = doze.end_of(push.t) if doze.contains(push.t) else None
        if block_end is None or push.priority == "high":
            return [Forced(push.t, "push", radio=True)]
        events = [] if stretch.outbound else [Forced(push.t, "push")]
        carried = any(p.priority == "high" and p.t < block_end for p in later)
        if not carried and block_end < stretch.end:  # else it rides on the high one
            events.append(Forced(block_end, "push", radio=True))
        return events

    def _correction(self) -> float:
        """The most the SDK's packets could save of the other apps' energy: one promotion
        per burst of theirs (docs/oracle.md §2, "bridging")."""
        day, total = self.day, 0.0
        for stretch in self.stretches:
            bursts = sum(1 for a in day.radio_activity if stretch.start <= a.t < stretch.end)
            if day.screen_radio:
                bursts += sum(1 for a, _ in day.screen_on if stretch.start <= a < stretch.end)
            total += bursts * stretch.costs.promotion_j
        return total

    # -- queries -----------------------------------------------------------------------
    def stretch_at(self, t: float) -> _Stretch | None:
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self.stretches[i].end:
            return self.stretches[i]
        return None

    def reach(self, x: float) -> float:
        """The last moment a binding refreshed at ``x`` can still be refreshed (its NAT's
        expiry, or the end of its attachment); ``x`` itself when offline."""
        stretch = self.stretch_at(x)
        if stretch is None:
            return x
        return min(stretch.nat.expiry(x), stretch.end)

    def cpu(self, low: float, y: float, since: float = -math.inf, *,
            screen: bool = True) -> float:
        """CPU energy at least paid by the app's activity at some moment of ``(low, y]``,
        its previous activity being at ``since`` at latest: the awake time it adds (a
        wake-up's, less what is left of the previous activity's or cut by the run's end).
        0 if the screen is on at any of those moments (``screen=False``: the caller knows
        it is off at every moment it stands for). Other apps' radio use does not wake the
        app's CPU: a ping in a zone costs no radio energy but still this."""
        if not self.cpu_j or (screen and self.screen.meets(low, y)):
            return 0.0
        left = min(self.duration - y, low - since)
        return self.cpu_j * min(1.0, max(0.0, left) / self.cpu_awake_s)

    def extension(self, costs: RadioCosts, x: float, y: float) -> float:
        """Energy of keeping one active stretch going from ``x`` to ``y``, outside zones."""
        busy = (y - x) - costs.transfer_s  # the previous write's transfer delays its tail
        if busy <= 0:
            return 0.0
        return costs.extend_w * max(0.0, busy - self.zones.measure(x, y))


__all__ = ["Forced", "OracleView", "RadioCosts", "Spans", "intersect", "subtract", "union"]
