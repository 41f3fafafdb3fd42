"""``oracle``: the true lower bound of a handset's heartbeat energy, computed from its day.

Per handset: the least radio energy the SDK's own traffic could cost under any heartbeat
schedule that never lets the connection's NAT binding expire (except where the day makes it
unavoidable: Doze or an outage longer than the binding lives), given other apps' radio
wake-ups, Doze, pushes, switches and outages (:class:`~simulator.oracle_day.OracleDay`).

The formulation and the proof that this is a lower bound are in docs/oracle.md. In short:
the SDK's energy is the sum, in time order, of each SDK event's marginal cost given
everything before it; a beat within a radio tail (``W``) of another app's wake-up costs at
least 0, any other beat at least ``f(gap to the previous SDK event)``, where ``f`` is the
radio model's energy of a gap (tail, and a promotion once the tail ran out). A shortest-path
search over "where the last SDK event was" with these costs, trying for each beat only the
positions that dominate all others (the latest free one, the latest allowed one, and the
latest of each short cell after the previous event, charged the cheapest cost of the cell),
finds a schedule no real one can beat.
"""
from __future__ import annotations

import bisect
import heapq
import math
from typing import NamedTuple

import attrs

from simulator.oracle_day import CONNECT_SLACK, EXCHANGE_SLACK, OracleDay
from simulator.radio import get_model

#: Width (s) of the cells into which the first ``W`` seconds after an SDK event are cut for
#: near beats, and of the "absorption" after each event: a beat within it is merged into the
#: event (it could not refresh the binding later than the label already assumes).
CELL = 2.0


@attrs.frozen
class GapCost:
    """``f``: the least energy a gap of ``d`` seconds between two packets costs on one radio.

    ``W`` = tail + promotion + a transfer: a packet this far from every other is isolated.
    """

    tail: tuple[tuple[float, float], ...]  # (duration, power) phases
    promotion_j: float
    busy_s: float  # promotion time plus the longest transfer of one exchange

    @classmethod
    def of(cls, radio: str) -> GapCost:
        model = get_model(radio)
        transfer = 4096 * max(model.transfer.seconds_per_byte("up"),
                              model.transfer.seconds_per_byte("down"))
        return cls(tuple((p.duration_s, p.power_w) for p in model.tail),
                   model.promotion.energy_j, model.promotion.duration_s + transfer)

    @property
    def tail_s(self) -> float:
        return sum(d for d, _ in self.tail)

    @property
    def isolated_j(self) -> float:
        return self.promotion_j + sum(d * p for d, p in self.tail)

    @property
    def window(self) -> float:
        return self.tail_s + self.busy_s

    def __call__(self, gap: float) -> float:
        """Energy at least paid between two packets ``gap`` seconds apart."""
        if gap >= self.window:
            return self.isolated_j
        left, joules = max(0.0, gap - self.busy_s), 0.0
        for duration, power in self.tail:
            used = min(left, duration)
            joules += used * power
            left -= used
        return joules


@attrs.frozen
class Bound:
    """The oracle's answer for one handset."""

    energy_j: float
    beats: int
    reconnects: int  # connects beyond the first (switches, outages, unavoidable expiries)
    forced_expiries: int  # bindings the day made it impossible to keep


class _Label(NamedTuple):
    """A partial schedule (a tuple: the heap compares thousands of them)."""

    cost: float
    x: float  # latest moment of the last SDK event + CELL (the binding was refreshed by then)
    k: int  # forced events already handled
    beats: int = 0
    reconnects: int = 0
    expiries: int = 0


class _Search:
    def __init__(self, day: OracleDay) -> None:
        self.day = day
        self.gap = {a.radio: GapCost.of(a.radio) for a in day.attachments}
        self.wakeups = {r: day.wakeups(r) for r in self.gap}

    # -- costs ----------------------------------------------------------------------------
    def cost_at(self, y: float, x: float) -> float:
        """Least marginal energy of an SDK event at ``y`` after a label at ``x`` (whose last
        packet was sent by ``x - CELL``)."""
        radio = self.day.attachment_at(y).radio
        f = self.gap[radio]
        if self._in_zone(y, f.window, self.wakeups[radio]):
            return 0.0
        return f(y - x + CELL)

    def _in_zone(self, y: float, w: float, times) -> bool:
        if y >= self.day.duration - w:
            return True  # the run ends within a tail: nothing certain is paid
        i = bisect.bisect_left(times, y - w)
        return i < len(times) and times[i] <= y + w

    def latest_free(self, low: float, high: float) -> float | None:
        """The latest allowed moment in ``(low, high]`` within ``W`` of a wake-up."""
        radio = self.day.attachment_at(high).radio
        w = self.gap[radio].window
        times = self.wakeups[radio]
        if high >= self.day.duration - w:
            y = self.day.latest_allowed(max(low, self.day.duration - w), high)
            if y is not None:
                return y
        i = bisect.bisect_right(times, high + w) - 1
        while i >= 0 and times[i] + w > low:
            y = self.day.latest_allowed(max(low, times[i] - w), min(high, times[i] + w))
            if y is not None and self.day.attachment_at(y).radio == radio:
                return y
            i -= 1
        return None

    # -- the search -----------------------------------------------------------------------
    def run(self) -> Bound:
        day = self.day
        first = day.forced[0]
        start = _Label(self.cost_at(first.t, -math.inf), first.t + CONNECT_SLACK + CELL, 1)
        heap = [start]
        frontier: dict[int, float] = {}
        while heap:
            label = heapq.heappop(heap)
            if frontier.get(label.k, -math.inf) >= label.x:
                continue  # an earlier label got as far for no more energy
            frontier[label.k] = label.x
            if self._done(label):
                return Bound(label.cost, label.beats, label.reconnects, label.expiries)
            for successor in self._successors(label):
                if frontier.get(successor.k, -math.inf) < successor.x:
                    heapq.heappush(heap, successor)
        raise RuntimeError("the oracle found no schedule (a bug: expiry is always allowed)")

    def _done(self, label: _Label) -> bool:
        if label.k < len(self.day.forced):
            return False
        reach = self.day.reach(label.x)
        return reach >= self.day.duration or self.day.latest_allowed(
            label.x, self.day.duration) is None

    def _successors(self, label: _Label):
        day = self.day
        nxt = day.forced[label.k] if label.k < len(day.forced) else None
        reach = day.reach(label.x)
        horizon = min(reach, nxt.t if nxt is not None else day.duration)
        if nxt is not None and (nxt.kind != "push" or reach >= nxt.t):
            yield self._forced(label, nxt)
        yield from self._beats(label, horizon)
        if reach < horizon or nxt is None or (nxt.kind == "push" and reach < nxt.t):
            expiry = self._expiry(label, reach, nxt)
            if expiry is not None:
                yield expiry

    def _forced(self, label: _Label, event) -> _Label:
        if event.kind == "cut":
            return label._replace(x=max(label.x, event.t), k=label.k + 1)
        if event.kind == "push":
            return label._replace(x=max(label.x, event.t + EXCHANGE_SLACK + CELL),
                                k=label.k + 1)
        y = self.day.first_allowed(event.t)
        if y is None:
            return label._replace(x=self.day.duration, k=label.k + 1)
        return label._replace(cost=label.cost + self.cost_at(y, label.x),
                            x=y + CONNECT_SLACK + CELL, k=label.k + 1,
                            reconnects=label.reconnects + 1)

    def _beats(self, label: _Label, horizon: float):
        """Beats in ``(x, horizon]``: each candidate is at least as late and at most as
        costly as every moment it stands for (docs/oracle.md §2)."""
        x = label.x
        if horizon <= x:
            return
        beat = label._replace(beats=label.beats + 1)
        after = EXCHANGE_SLACK + CELL
        free = self.latest_free(x, horizon)
        if free is not None:
            yield beat._replace(x=free + after)
        latest = self.day.latest_allowed(x, horizon)
        if latest is None:
            return
        yield beat._replace(cost=label.cost + self.cost_at(latest, x), x=latest + after)
        w = self.gap[self.day.attachment_at(x).radio].window
        for j in range(1, math.ceil(w / CELL) + 1):
            low = x + (j - 1) * CELL
            if low >= latest:
                break
            top = self.day.latest_allowed(low, min(x + j * CELL, horizon))
            if top is not None:  # the cell's cheapest cost, at its latest moment
                cheapest = min(self.cost_at(top, x), self._gap_at(top, j * CELL))
                yield beat._replace(cost=label.cost + cheapest, x=top + after)

    def _gap_at(self, y: float, gap: float) -> float:
        return self.gap[self.day.attachment_at(y).radio](gap)

    def _expiry(self, label: _Label, reach: float, nxt) -> _Label | None:
        """The binding cannot be kept (no allowed moment before it expires): the next SDK
        event is a reconnect at the first allowed moment after the expiry."""
        if self.day.latest_allowed(label.x, reach) is not None:
            return None  # a beat could still be sent in time
        y = self.day.first_allowed(reach)
        limit = nxt.t if nxt is not None else self.day.duration
        if y is None or y >= limit:
            if nxt is None:
                return label._replace(x=self.day.duration, expiries=label.expiries + 1)
            # nothing to do before the next forced event: skip to it (a push on a dead
            # connection refreshes nothing; a connect makes a new binding)
            return label._replace(x=max(label.x, min(limit, self.day.duration)),
                                expiries=label.expiries + 1) if nxt.kind != "push" else \
                label._replace(k=label.k + 1, expiries=label.expiries + 1)
        return label._replace(cost=label.cost + self.cost_at(y, label.x),
                            x=y + CONNECT_SLACK + CELL, reconnects=label.reconnects + 1,
                            expiries=label.expiries + 1)


def lower_bound(day: OracleDay) -> Bound:
    """The least energy (J) any schedule can spend on ``day`` (docs/oracle.md)."""
    return _Search(day).run()


__all__ = ["Bound", "GapCost", "lower_bound"]


def bound_results(config) -> list:
    """The oracle's rows for the handsets of ``config`` (a RunConfig with strategy
    ``oracle``): one :class:`~simulator.metrics.HandsetResult` per handset with the bound as
    its energy, its schedule's beats and reconnects, every push counted as delivered on
    arrival (its schedule keeps the binding), and no latency or bytes (docs/oracle.md §4)."""
    from simulator.metrics import HandsetResult
    from simulator.oracle_day import day_from_spec

    specs = config.scenario.handset_specs(seed=config.seed, hours=config.hours,
                                          indices=config.indices())
    rows = []
    for spec in specs:
        day = day_from_spec(spec, config)
        bound = lower_bound(day)
        pushes = sum(1 for e in day.forced if e.kind == "push")
        rows.append(HandsetResult(
            index=spec.index, device_id=spec.device_id, strategy=config.strategy,
            scenario=config.scenario.name, radio_model=spec.network.radio,
            network_type=spec.network.type, nat_timeout_s=spec.network.nat_timeout,
            duration_s=config.duration, energy_j=bound.energy_j, idle_baseline_j=math.nan,
            promotions=0, radio_active_s=math.nan, heartbeats=bound.beats,
            heartbeats_failed=0, reconnects=bound.reconnects, bytes_up=0, bytes_down=0,
            pushes_sent=pushes, pushes_delivered=pushes, duplicates=0, connected_s=0.0,
            dead_s=0.0,
            group=spec.group, seed=config.seed, bound=True,
        ))
    return rows
