"""``oracle``: the true lower bound of a handset's heartbeat energy, computed from its day.

Per handset: the least energy (radio and CPU) the SDK's own traffic could cost under any
heartbeat schedule that never lets the connection's NAT binding expire — except where the
day makes it unavoidable (Doze or an outage longer than a binding lives) — given
everything that handset's day holds: the NATs of its attachments, other apps' radio use,
the screen, Doze, pushes, switches and outages. The day is the
:class:`~simulator.day.HandsetDay` the simulated world replays, read through
:class:`~simulator.oracle_view.OracleView`.

The formulation and the proof sketch are in docs/oracle.md. In short: every exchange the
SDK makes either starts an *active stretch* of the radio (it costs at least E₁) or extends
the current one (at least the tail's mean power per second), or falls where other apps
keep the radio up (at least 0, less what it can save them: :attr:`OracleView.correction_j`).
A shortest-path search over "when was the SDK's last packet" with these costs, trying for
each beat only the moments that dominate all others, finds a cost no real schedule beats.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import NamedTuple

import attrs

from simulator.oracle_view import Forced, OracleView

#: Seconds an exchange's own packets may take after its first, per round trip of the
#: network: a ping is one round trip, a push one way plus its PUBACK, a connect (TCP
#: handshake, CONNECT, SUBSCRIBE; the first also registers over HTTP) five. A real packet
#: later than that is an SDK packet of its own, which the search represents as a beat.
PING_TRIPS, PUSH_TRIPS, CONNECT_TRIPS = 1.0, 0.5, 5.0
MARGIN = 0.01


@attrs.frozen
class Bound:
    """The oracle's answer for one handset."""

    energy_j: float  # the bound: ``search_j - correction_j``, never below 0
    beats: int
    reconnects: int  # connects beyond the first (switches, outages, unavoidable expiries)
    forced_expiries: int  # bindings the day made it impossible to keep
    search_j: float = 0.0  # the shortest path's cost
    correction_j: float = 0.0  # what the SDK's packets could save other apps at most


class _Label(NamedTuple):
    """A partial schedule (a tuple: the heap compares thousands of them)."""

    cost: float
    x: float  # upper bound on the time of the SDK's last packet (and its last refresh)
    k: int  # forced events already handled
    beats: int = 0
    reconnects: int = 0
    expiries: int = 0


class _Search:
    def __init__(self, view: OracleView) -> None:
        self.view = view
        self.forced = view.forced
        self.duration = view.duration

    # -- costs ------------------------------------------------------------------------
    def point(self, y: float, x: float, low: float | None = None) -> tuple[float, float]:
        """(least cost, state after) of an SDK exchange whose first packet is at ``y`` (one
        of the moments ``(low, y]``), the SDK's previous packet being at ``x`` at latest."""
        view = self.view
        stretch = view.stretch_at(y)
        if stretch is None:
            return 0.0, y
        costs, after = stretch.costs, stretch.rtt * PING_TRIPS + MARGIN
        lo = y - 1e-9 if low is None else low
        if view.zones.contains(y):
            return view.cpu(lo, y, since=x), y + after
        if y - x >= costs.gap_s:
            return costs.isolated_j + view.cpu(lo, y), y + max(costs.free_s, after)
        return view.extension(costs, x, y), y + after

    # -- the search -------------------------------------------------------------------
    def run(self) -> Bound:
        start = _Label(0.0, -math.inf, 0)
        heap = [self._forced(start, self.forced[0])] if self.forced else [start]
        frontier: dict[int, float] = {}
        while heap:
            label = heapq.heappop(heap)
            if frontier.get(label.k, -math.inf) >= label.x:
                continue  # an earlier label got as far for no more energy
            frontier[label.k] = label.x
            if self._done(label):
                correction = self.view.correction_j
                return Bound(max(0.0, label.cost - correction), label.beats,
                             max(0, label.reconnects - 1), label.expiries, label.cost,
                             correction)
            for successor in self._successors(label):
                if frontier.get(successor.k, -math.inf) < successor.x:
                    heapq.heappush(heap, successor)
        raise RuntimeError("the oracle found no schedule (a bug: expiry is always allowed)")

    def _done(self, label: _Label) -> bool:
        if label.k < len(self.forced):
            return False
        return (self.view.reach(label.x) >= self.duration
                or self.view.allowed.latest(label.x, self.duration) is None)

    def _successors(self, label: _Label) -> Iterator[_Label]:
        nxt = self.forced[label.k] if label.k < len(self.forced) else None
        reach = self.view.reach(label.x)
        limit = nxt.t if nxt is not None else self.duration
        horizon = min(reach, limit)
        if nxt is not None and (nxt.kind == "connect" or reach >= nxt.t):
            yield self._forced(label, nxt)  # a push or a cut finds the binding alive
        yield from self._beats(label, reach, horizon, nxt)
        if reach < limit:
            expiry = self._expiry(label, reach, nxt)
            if expiry is not None:
                yield expiry

    def _forced(self, label: _Label, event: Forced) -> _Label:
        view = self.view
        if event.kind == "cut":
            return label._replace(x=max(label.x, event.t), k=label.k + 1)
        stretch = view.stretch_at(event.t)
        if event.kind == "push":
            return self._push(label, event, stretch)
        return self._connect(label, view.allowed.first(event.t), k=label.k + 1)

    def _push(self, label: _Label, event: Forced, stretch) -> _Label:
        """A push refreshes the live binding; when it reaches the radio it is an SDK
        exchange like any other and costs what a beat there would (0 near other apps'
        traffic; on a lossy link 0, since its packets may come at any later moment)."""
        if stretch is None:
            return label._replace(k=label.k + 1)
        done = event.t + stretch.rtt * PUSH_TRIPS + MARGIN
        if not event.radio or stretch.lossy or self.view.zones.meets(event.t - 1e-9, done):
            return label._replace(x=max(label.x, done), k=label.k + 1)
        cost, after = self.point(event.t + stretch.one_way, label.x)
        return label._replace(cost=label.cost + cost, x=max(label.x, done, after),
                              k=label.k + 1)

    def _connect(self, label: _Label, y: float | None, **changes) -> _Label:
        """A (re)connect at ``y`` (None: no allowed moment is left)."""
        if y is None or y >= self.duration:
            return label._replace(x=self.duration, **changes)
        stretch = self.view.stretch_at(y)
        if stretch is None:  # the end of an attachment: its cut follows
            return label._replace(x=max(label.x, y), **changes)
        cost, after = self.point(y, label.x)
        x = max(after, y + stretch.rtt * CONNECT_TRIPS + MARGIN)
        return label._replace(cost=label.cost + cost, x=x,
                              reconnects=label.reconnects + 1, **changes)

    def _beats(self, label: _Label, reach: float, horizon: float,
               nxt: Forced | None) -> Iterator[_Label]:
        """Beats in ``(x, horizon]``: each candidate is no earlier and no costlier than every
        moment it stands for, or an extension to a moment that lets the binding reach
        something new (docs/oracle.md §2)."""
        view, x = self.view, label.x
        if horizon <= x:
            return
        stretch = view.stretch_at(x)
        if stretch is None:
            return
        beat = label._replace(beats=label.beats + 1)
        free = view.free.latest(x, horizon)
        if free is not None:
            yield from self._free_beats(label, beat, horizon, stretch.rtt * PING_TRIPS + MARGIN)
        costs = stretch.costs
        far = view.allowed.latest(x + costs.gap_s, horizon)
        if far is not None and (free is None or far > free):
            cost, after = self.point(far, x, low=x + costs.gap_s)
            yield beat._replace(cost=label.cost + cost, x=after)
        for y in self._extensions(x, reach, horizon, nxt, stretch, far is None):
            cost, after = self.point(y, x)
            yield beat._replace(cost=label.cost + cost, x=after)

    def _free_beats(self, label: _Label, beat: _Label, horizon: float,
                    answered: float) -> Iterator[_Label]:
        """Beats in zones (no radio cost) in ``(x, horizon]``, by what their CPU costs: the
        latest with the screen on and the latest reached by beats each within the CPU's
        awake time of the one before (nothing), then the latest of the rest (from the first
        of them on, a wake-up: docs/oracle.md §2)."""
        view, x = self.view, label.x
        lit = view.free_lit.latest(x, horizon)
        if lit is not None:
            yield beat._replace(x=lit + answered)
        chained = self._chained(x, horizon, answered)
        if chained is not None and (lit is None or chained > lit):
            yield beat._replace(x=chained + answered)
        floor = max(x, lit or x, chained or x)
        top = view.free.latest(floor, horizon)
        if top is not None:
            first = view.free.first(floor)
            assert first is not None and first <= top
            cpu = view.cpu(first, top, since=x, screen=False)
            yield beat._replace(cost=label.cost + cpu, x=top + answered)

    def _chained(self, x: float, horizon: float, answered: float) -> float | None:
        """The latest free moment up to ``horizon`` reached from ``x`` by beats each less
        than the CPU's awake time after the SDK's previous activity (so that none wakes
        the CPU), or None."""
        view, reached, since = self.view, None, x
        while True:
            y = view.free.latest(since, min(since + view.cpu_awake_s, horizon))
            if y is None:
                return reached
            end = view.free.end_of(y)
            y = min(horizon, end if end is not None else y)  # on along the whole span
            if reached is not None and y <= reached:
                return reached
            reached, since = y, y + answered
            if y >= horizon:
                return reached

    def _extensions(self, x: float, reach: float, horizon: float, nxt: Forced | None,
                    stretch, no_far: bool) -> Iterator[float]:
        """Moments less than ``gap_s`` after ``x`` worth a beat that extends the radio's
        active stretch: the latest one when no isolated beat fits before the binding
        expires, and the first that lets the binding reach the next push, the next free
        moment, the end of the attachment or a step of the NAT's expiry."""
        view = self.view
        top = min(x + stretch.costs.gap_s, horizon)
        if top <= x:
            return
        if no_far:
            latest = view.allowed.latest(x, horizon)
            if latest is not None:
                yield latest
        far_reach = view.reach(top)
        targets = []
        if nxt is not None and nxt.kind == "push" and reach < nxt.t <= far_reach:
            targets.append(nxt.t)
        free_next = view.free.first(reach)
        if free_next is not None and reach < free_next <= far_reach:
            targets.append(free_next)
        end = min(stretch.end, self.duration)
        if reach < end <= far_reach:
            targets.append(end)
        for target in targets:
            y = self._earliest_reaching(x, top, target)
            y = view.allowed.first(y) if y is not None else None
            if y is not None and y <= horizon:
                yield y
        if far_reach - reach > (top - x) + 1e-6:  # the expiry steps (a sweep, a schedule)
            y = self._first_step(x, top, reach)
            y = view.allowed.first(y) if y is not None else None
            if y is not None and y <= horizon:
                yield y

    def _earliest_reaching(self, low: float, high: float, target: float) -> float | None:
        """The first moment in ``(low, high]`` whose binding reaches ``target``."""
        reach = self.view.reach
        if reach(high) < target:
            return None
        for _ in range(40):
            mid = (low + high) / 2
            if reach(mid) >= target:
                high = mid
            else:
                low = mid
        return high

    def _first_step(self, low: float, high: float, reach_low: float) -> float:
        """The first moment in ``(low, high]`` at which the binding's expiry jumps ahead of
        the time that passed."""
        reach, base = self.view.reach, reach_low - low
        for _ in range(40):
            mid = (low + high) / 2
            if reach(mid) - mid > base + 1e-6:
                high = mid
            else:
                low = mid
        return high

    def _expiry(self, label: _Label, reach: float, nxt: Forced | None) -> _Label | None:
        """The binding cannot be kept (no allowed moment before it expires): the next SDK
        exchange is a reconnect at the first allowed moment after the expiry."""
        view = self.view
        if view.allowed.latest(label.x, reach) is not None:
            return None  # a beat could still be sent in time
        y = view.allowed.first(reach)
        limit = nxt.t if nxt is not None else self.duration
        expired = label._replace(expiries=label.expiries + 1)
        if y is None or y >= limit:
            if nxt is None:
                return expired._replace(x=self.duration)
            if nxt.kind == "push":  # it finds the binding gone: it refreshes nothing
                return expired._replace(k=label.k + 1)
            return expired._replace(x=max(label.x, min(limit, self.duration)))
        return self._connect(expired, y)


def lower_bound(view: OracleView) -> Bound:
    """The least energy (J) any schedule can spend on the day of ``view`` (docs/oracle.md)."""
    return _Search(view).run()


def handset_bound(day, start: float = 0.0) -> Bound:
    """The bound for a handset's day: the cheaper of an ordinary app's connection and one
    exempt from Doze (``doze_exempt`` strategies, FCM's), so that no strategy of either
    kind spends less. ``start``: when the handset's SDK starts."""
    bound = lower_bound(OracleView(day, start))
    if day.blocked:
        exempt = lower_bound(OracleView(day, start, exempt=True))
        if exempt.energy_j < bound.energy_j:
            return exempt
    return bound


def bound_results(config) -> list:
    """The oracle's rows for the handsets of ``config`` (a RunConfig with strategy
    ``oracle``): one :class:`~simulator.metrics.HandsetResult` per handset with the bound as
    its energy, its schedule's beats and reconnects, every push counted as delivered on
    arrival (its schedule keeps the binding), and no latency or bytes (docs/oracle.md §4)."""
    from simulator.metrics import HandsetResult

    rows = []
    for index in config.indices():
        day = config.handset_day(index)
        spec = day.spec
        start = config.ramp_s * index / max(1, config.handsets)
        bound = handset_bound(day, start)
        pushes = len(day.pushes)
        rows.append(HandsetResult(
            index=spec.index, device_id=spec.device_id, strategy=config.strategy,
            scenario=config.scenario.name, radio_model=spec.network.radio,
            network_type=spec.network.type, nat_timeout_s=spec.network.nat_timeout,
            duration_s=config.duration, energy_j=bound.energy_j, idle_baseline_j=math.nan,
            promotions=0, radio_active_s=math.nan, heartbeats=bound.beats,
            heartbeats_failed=0, reconnects=bound.reconnects, bytes_up=0, bytes_down=0,
            pushes_sent=pushes, pushes_delivered=pushes, duplicates=0, connected_s=0.0,
            dead_s=0.0, group=spec.group, seed=config.seed, bound=True,
        ))
    return rows


__all__ = ["Bound", "bound_results", "handset_bound", "lower_bound"]
