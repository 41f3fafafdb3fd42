"""The simulated world: the reference server and N virtual handsets in one ``trio.run``.

Everything runs in virtual time under a :class:`~simulator.simclock.SimulationClock` (trio's
``MockClock(autojump_threshold=0)`` semantics in one scheduler pass per instant): when
every task is waiting, the clock jumps to the next deadline, so a day passes as fast as the
handsets' work allows. The server is the real one on a ``:memory:`` store; every handset runs
the real SDK (:mod:`simulator.handset`). Three tasks drive the world besides them:

- the *starter* brings handsets up spread over ``ramp_s`` (a fleet is not born in one instant);
- the *timeline* replays each handset's scripted events (network switches, outages, Doze, app
  state, other apps' traffic) from a heap holding one pending event per handset;
- the *provider* sends the workload's pushes through the server's push API at their times.

Determinism: all randomness comes from seeded ``random.Random`` objects and the wall clock
is ``EPOCH`` + virtual time. Results do not depend on the order in which trio runs the
tasks of one scheduler batch (trio reverses or shuffles each batch at random): the tests run
the same world under different orders and compare (docs/simulator.md §7).
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterator

import attrs
import trio

from pushsdk import VirtualClock
from simulator.day import HandsetDay, build_day
from simulator.handset import MQTT_PORT, SERVER_HOST, VirtualHandset, WorldObserver
from simulator.metrics import HandsetResult
from simulator.scenario import HandsetSpec, Scenario
from simulator.server import Limits, PushServer, SqliteStore
from simulator.server import ServerSettings
from simulator.server.gctune import gc_thresholds
from simulator import simclock
from simulator.strategies import strategy_for

#: Wall-clock time of virtual t = 0 (2026-01-01T00:00:00Z): fixed, so runs repeat exactly.
EPOCH = 1_767_225_600.0


@attrs.frozen
class RunConfig:
    """One simulated run: a scenario, one strategy, a fleet, a duration, a seed."""

    scenario: Scenario
    strategy: str
    handsets: int
    hours: float
    seed: int = 1
    shard: tuple[int, int] = (0, 1)  # (i, n): this run simulates handsets with index % n == i
    ramp_s: float = 60.0  # handsets come up spread over this many seconds
    warmup_s: float = 120.0  # no pushes before this (every handset has registered)
    push_window: float = 0.9  # pushes only in the first 90 % of the run: the rest drains

    @property
    def duration(self) -> float:
        return self.hours * 3600.0

    def indices(self) -> range:
        index, count = self.shard
        return range(index, self.handsets, count)

    def handset_day(self, index: int) -> HandsetDay:
        """Handset ``index``'s exogenous day in this run (what the world will replay)."""
        from simulator.day import handset_day

        return handset_day(self.scenario, index, self.seed, self.hours,
                           warmup_s=self.warmup_s, push_window=self.push_window)


class World:
    """Build with a :class:`RunConfig`; ``await world.run()`` returns one result per handset."""

    def __init__(self, config: RunConfig, progress: Callable[[float], None] | None = None,
                 observer: WorldObserver | None = None) -> None:
        self.config = config
        self.progress = progress
        self.observer = observer
        self.nursery: trio.Nursery | None = None
        self.server: PushServer | None = None
        self.handsets: dict[int, VirtualHandset] = {}
        self.days: dict[int, HandsetDay] = {}

    async def run(self) -> list[HandsetResult]:
        simclock.current_timers()  # the simulation clock's driver runs (or timers do)
        config = self.config
        clock = VirtualClock(EPOCH)
        self.server = server = PushServer(
            SqliteStore(":memory:"),
            settings=ServerSettings(
                admin_token="simulation", mqtt_host=SERVER_HOST, mqtt_port=MQTT_PORT,
                limits=Limits(push_rate=1e9, push_burst=1e9, max_audience=1_000_000),
            ),
            clock=clock, rng=random.Random(f"{config.seed}:server"),
        )
        app = server.create_app("simulation")
        specs = config.scenario.handset_specs(seed=config.seed, hours=config.hours,
                                              indices=config.indices())
        plans = config.scenario.workload.schedule(specs, config.hours, config.seed)
        targeted: dict[int, list] = {spec.index: [] for spec in specs}
        for plan in plans:
            for i in plan.targets:
                targeted[i].append(plan)
        for spec in specs:
            day = build_day(spec, targeted[spec.index], config.duration,
                            warmup_s=config.warmup_s, push_window=config.push_window)
            self.days[spec.index] = day
            strategy = strategy_for(config.strategy, spec)
            self.handsets[spec.index] = VirtualHandset(
                self, day, strategy, app_key=app.app_key, clock=clock, observer=self.observer)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._start_handsets, nursery, specs)
            nursery.start_soon(self._timeline, specs)
            nursery.start_soon(self._provider, server, plans, app.app_key)
            if self.progress is not None:
                nursery.start_soon(self._report_progress, self.progress)
            await trio.sleep_until(config.duration)
            results = [
                handset.result(strategy=config.strategy, scenario=config.scenario.name,
                               duration=config.duration)
                for handset in self.handsets.values()
            ]
            nursery.cancel_scope.cancel()
        server.store.close()
        return results

    # --- the three drivers --------------------------------------------------------------------

    async def _start_handsets(self, nursery: trio.Nursery, specs: list[HandsetSpec]) -> None:
        # By global index, so that a shard starts each handset when a single process would.
        n = max(1, self.config.handsets)
        for spec in specs:
            await trio.sleep_until(self.config.ramp_s * spec.index / n)
            nursery.start_soon(self.handsets[spec.index].client.run)

    async def _timeline(self, specs: list[HandsetSpec]) -> None:
        end = self.config.duration
        # (time, tie-breaker, event, the rest of its handset's events, handset index)
        heap: list[tuple[float, int, tuple, Iterator[tuple], int]] = []
        for spec in specs:
            events = _events(self.days[spec.index], end)
            first = next(events, None)
            if first is not None:
                heap.append((first[0], next(_ORDER), first, events, spec.index))
        heapq.heapify(heap)
        while heap:
            t, _, event, events, index = heap[0]
            if t >= end:
                return
            await trio.sleep_until(t)
            _apply(self.handsets[index], event)
            following = next(events, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following[0], next(_ORDER), following, events, index))

    async def _provider(self, server: PushServer, plans, app_key: str) -> None:
        config = self.config
        first, last = config.warmup_s, config.duration * config.push_window
        handsets = self.handsets
        for plan in plans:
            if plan.t < first or plan.t > last:
                continue
            await trio.sleep_until(plan.t)
            registered = {
                i: registration.registration_id
                for i in plan.targets
                if (registration := handsets[i].client.registration) is not None
            }
            if not registered:
                continue
            if plan.audience_kind == "registration_id":
                body = plan.body(registered)
            else:
                body = plan.body()
            # The handsets of this shard expect it; the server's own target count is not
            # used, it may include devices the workload did not aim at in this shard.
            server.push_body(app_key, body)
            now = trio.current_time()
            for i in registered:
                handsets[i].expect(plan.plan_id, now, plan.collapse_key)

    async def _report_progress(self, progress: Callable[[float], None]) -> None:
        duration = self.config.duration
        for step in range(1, 101):
            await trio.sleep_until(duration * step / 100)
            progress(step / 100)


# --- each handset's scripted timeline ---------------------------------------------------------

_ORDER = itertools.count()


def _events(day: HandsetDay, end: float) -> Iterator[tuple]:
    """``(t, kind, arg)`` for one handset's day, in time order, lazily (a day has hundreds)."""
    spec = day.spec
    streams = [
        ((e.t, e.kind, e.network) for e in spec.network_events),
        ((a.t, "background", a) for a in day.radio_activity),
        ((p.start, "app", p.state.value) for p in day.app.periods if p.start > 0),
        _doze_events(day, end),
    ]
    return heapq.merge(*streams, key=lambda event: event[0])


def _doze_events(day: HandsetDay, end: float) -> Iterator[tuple]:
    for start, stop in day.blocked:
        yield (start, "idle", True)
        if stop < end:
            yield (stop, "idle", False)


def _apply(handset: VirtualHandset, event: tuple) -> None:
    _, kind, arg = event
    if kind == "switch":
        handset.on_switch(arg)
    elif kind == "outage_start":
        handset.on_outage(True)
    elif kind == "outage_end":
        handset.on_outage(False)
    elif kind == "background":
        handset.on_background_traffic(arg.bytes_up, arg.bytes_down)
    elif kind == "app":
        handset.on_app_state(arg)
    elif kind == "idle":
        handset.on_device_idle(arg)


def run_world(config: RunConfig, progress: Callable[[float], None] | None = None,
              observer: WorldObserver | None = None) -> list[HandsetResult]:
    """Run one world to completion in virtual time (blocking); return per-handset results.
    ``observer`` (a :class:`~simulator.handset.WorldObserver`) hears what happens."""
    world = World(config, progress, observer)
    # A world holds tens of kilobytes of long-lived objects per handset, and every packet
    # allocates short-lived ones (a trio Cancelled and its traceback are the only cycles),
    # so under the default thresholds full collections keep walking the whole fleet:
    # measured at 3,000 handsets x 2 h, 24.4 s with the defaults against 19.6 s with these
    # and 19.4 s with no collection at all. Garbage still goes, in larger, rarer batches.
    with gc_thresholds(RUN_GC_THRESHOLDS):
        return simclock.run(world.run)


#: Cyclic-GC thresholds during a run (Python's defaults: 700, 10, 10).
RUN_GC_THRESHOLDS = (50_000, 20, 100)
