"""Interval over time: what a strategy actually did, beat by beat, inside the real world.

A :class:`TracingStrategy` wraps a real strategy, delegates every call to it unchanged and
writes down what it was asked and what it answered: each connection's start, the interval in
force when each ping went out, the silence that ping really tested (``ctx.silence``, measured
by the SDK), its lateness and whether it was answered. The simulator needs no change: the
wrapper is registered as the simulation-only strategy ``trace:<token>`` and the world builds
it by name like any other.

A strategy object is shared by all the handsets of a world, so a trace must belong to one
world holding one handset. :func:`capture` runs handset *i* of an *N*-handset fleet as the
shard ``(i, N)``: exactly the handset (specs, pushes, start time) the full fleet contains,
alone with its own in-process server.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import attrs
from tqdm import tqdm

from pushsdk.heartbeat import (
    HeartbeatContext,
    HeartbeatStrategy,
    register_strategy,
)
from simulator.metrics import HandsetResult
from simulator.scenario import Scenario
from simulator.strategies import NAT_AWARE, ORACLE, strategy_for
from simulator.world import RunConfig, run_world

__all__ = [
    "Beat", "Probe", "Trajectory", "TracingStrategy", "capture", "capture_all", "is_adaptive",
    "pick_handsets",
]

TRACE = "trace"
#: Strategies whose interval is a constant by design: nothing to trace.
NON_LEARNING = ("fcm", ORACLE, NAT_AWARE)


@attrs.frozen
class Beat:
    """One heartbeat's outcome, as the strategy was told it."""

    t: float  # when the answer (or the failure) was reported, virtual seconds
    interval: float  # the interval in force when the ping went out
    silence: float  # the idle time the ping actually tested (NaN if the SDK does not say)
    lateness: float
    ok: bool
    network_key: str
    network_type: str
    app_state: str


@attrs.frozen
class Trajectory:
    """Every beat of one handset under one strategy for one run."""

    strategy: str
    scenario: str
    seed: int
    index: int
    group: str
    hours: float
    networks: tuple[tuple[str, str, float, str], ...]  # (key, type, NAT timeout, behaviour)
    starts: tuple[float, ...]  # connection starts (strategy.start calls)
    beats: tuple[Beat, ...]
    probes: tuple[Probe, ...] = ()
    #: What the handset did in this run, as ``run_world`` reports it for the strategy itself.
    result: HandsetResult | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def label(self) -> str:
        nets = ", ".join(f"{t} NAT {timeout:.0f} s" for _, t, timeout, _ in self.networks)
        return f"#{self.index} {self.group} ({nets})"


@attrs.frozen
class Probe:
    """The outcome of one probe connection (strategies that measure on a second link)."""

    t: float
    silence: float  # the silence the probe tested
    ok: bool | None  # None: no probe could be made


@attrs.define(eq=False)
class TracingStrategy(HeartbeatStrategy):
    """Delegates to ``inner`` and records starts, beats and probes. One handset per instance.

    Not a frozen value class like real strategies: it is an observer whose whole point is
    the record it accumulates. Every other method and attribute of
    :class:`HeartbeatStrategy` is delegated too (see the loop after the class), so a hook
    added to the interface later reaches the wrapped strategy instead of the base class's
    default.
    """

    inner: HeartbeatStrategy
    starts: list[float] = attrs.Factory(list)
    beats: list[Beat] = attrs.Factory(list)
    probes: list[Probe] = attrs.Factory(list)
    _in_force: float = math.nan

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_interval(self) -> float:
        return self.inner.max_interval

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> Any:
        self.starts.append(ctx.now)
        return self.inner.start(memory, ctx)

    def interval(self, state: Any, ctx: HeartbeatContext) -> float:
        # Asked on every wake of the SDK's loop; the last answer before a ping is the
        # interval that ping honoured.
        self._in_force = self.inner.interval(state, ctx)
        return self._in_force

    def on_success(self, state: Any, ctx: HeartbeatContext) -> Any:
        self._record(ctx, ok=True)
        return self.inner.on_success(state, ctx)

    def on_failure(self, state: Any, ctx: HeartbeatContext) -> Any:
        self._record(ctx, ok=False)
        return self.inner.on_failure(state, ctx)

    def on_probe(self, state: Any, ctx: HeartbeatContext, ok: bool | None) -> Any:
        self.probes.append(Probe(ctx.now, getattr(ctx, "silence", math.nan), ok))
        return self.inner.on_probe(state, ctx, ok)

    def __getattr__(self, name: str) -> Any:
        # A strategy's own configuration (not part of the interface) reads through to it.
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _record(self, ctx: HeartbeatContext, *, ok: bool) -> None:
        self.beats.append(Beat(
            t=ctx.now, interval=self._in_force, silence=getattr(ctx, "silence", math.nan),
            lateness=ctx.lateness, ok=ok, network_key=ctx.network_key,
            network_type=ctx.network_type, app_state=ctx.app_state,
        ))


def _delegated(name: str, value: object) -> object:
    if callable(value):
        def method(self, *args, **kwargs):
            return getattr(self.inner, name)(*args, **kwargs)

        method.__name__ = method.__qualname__ = name
        return method
    # a property or a plain class attribute (e.g. ``ping_timeout``): read the inner one
    return property(lambda self: getattr(self.inner, name))


for _name, _value in vars(HeartbeatStrategy).items():
    if not _name.startswith("_") and _name not in vars(TracingStrategy):
        setattr(TracingStrategy, _name, _delegated(_name, _value))
del _name, _value


# --- the registry entry ``trace:<token>`` -----------------------------------------------------

_TRACERS: dict[str, TracingStrategy] = {}
_TOKENS = itertools.count()
_registered = False


def _tracer(token: str | None) -> TracingStrategy:
    try:
        return _TRACERS[token or ""]
    except KeyError:
        raise ValueError("trace:<token> names a tracer made by power_bench.trajectory.capture; "
                         f"none is open as {token!r}") from None


def _ensure_registered() -> None:
    # Registered on first use only, so `trace` never shows in strategy listings otherwise.
    global _registered
    if not _registered:
        register_strategy(TRACE, _tracer, usage="trace:<token>", simulation_only=True)
        _registered = True


def capture(scenario: Scenario, strategy: str, index: int, *, handsets: int, hours: float,
            seed: int) -> Trajectory:
    """Run handset ``index`` of the ``handsets``-strong fleet alone and trace ``strategy``."""
    if not 0 <= index < handsets:
        raise ValueError(f"handset index {index} is outside the fleet of {handsets}")
    spec = scenario.handset_spec(index, seed, hours=hours)
    tracer = TracingStrategy(strategy_for(strategy, spec))  # the oracle needs the spec
    # Unique per process: the simulator caches strategy objects by name.
    token = f"{strategy}#{index}#{next(_TOKENS)}"
    _ensure_registered()
    _TRACERS[token] = tracer
    try:
        [result] = run_world(RunConfig(scenario, f"{TRACE}:{token}", handsets, hours,
                                       seed=seed, shard=(index, handsets)))
    finally:
        del _TRACERS[token]
    return Trajectory(
        strategy=strategy, scenario=scenario.name, seed=seed, index=index, group=spec.group,
        hours=hours,
        networks=tuple((n.key, n.type, n.nat_timeout, n.nat_behaviour) for n in spec.networks()),
        starts=tuple(tracer.starts), beats=tuple(tracer.beats), probes=tuple(tracer.probes),
        result=attrs.evolve(result, strategy=strategy),
    )


def is_adaptive(strategy: str) -> bool:
    """Whether a strategy's interval can change over time (worth plotting)."""
    return not (strategy.startswith("fixed:") or strategy in NON_LEARNING)


def pick_handsets(scenario: Scenario, handsets: int, seed: int, hours: float,
                  count: int) -> list[int]:
    """Up to ``count`` handset indices that see different networks: the first handset of
    each group, then further handsets with NAT timeouts not yet covered, in index order."""
    specs = scenario.handset_specs(handsets, seed, hours=hours)
    chosen: list[int] = []
    seen_groups: set[str] = set()
    for spec in specs:
        if spec.group not in seen_groups:
            seen_groups.add(spec.group)
            chosen.append(spec.index)
    seen_nat = {specs[i].network.nat_timeout for i in chosen}
    for spec in specs:
        if spec.index not in chosen and spec.network.nat_timeout not in seen_nat:
            seen_nat.add(spec.network.nat_timeout)
            chosen.append(spec.index)
    return sorted(chosen[:count])


def capture_all(scenario: Scenario, strategies: Sequence[str], indices: Sequence[int], *,
                handsets: int, hours: float, seed: int, workers: int = 1,
                progress: bool = True) -> list[Trajectory]:
    """:func:`capture` every (strategy, index), in worker processes if ``workers`` > 1;
    results in (strategy, index) order."""
    tasks = [(strategy, index) for strategy in strategies for index in indices]
    bar = tqdm(total=len(tasks), desc="tracing intervals", unit="run", disable=not progress,
               file=sys.stderr, bar_format="{desc}: {n_fmt}/{total_fmt}|{bar}| {elapsed}")
    try:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for strategy, index in tasks:
                out.append(capture(scenario, strategy, index, handsets=handsets, hours=hours,
                                   seed=seed))
                bar.update()
            return out
        context = multiprocessing.get_context("spawn")  # as simulator.runner: no forked trio
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(capture, scenario, strategy, index, handsets=handsets,
                            hours=hours, seed=seed): n
                for n, (strategy, index) in enumerate(tasks)
            }
            results: list[Trajectory | None] = [None] * len(tasks)
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
            return results  # type: ignore[return-value]
    finally:
        bar.close()

