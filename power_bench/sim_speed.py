"""Speed and memory of the virtual-time world against a bare trio ping loop, in one run.

    python -m power_bench.sim_speed [--handsets 1000] [--hours 24] [--interval 270]
                                    [--memory-handsets 2000] [--clock sim|mock|both]

Both sides simulate the same handsets for the same virtual duration, under the simulator's
clock (``simulator.simclock.SimulationClock``) and under trio's own
``MockClock(autojump_threshold=0)``:

- *world*: the full simulator (`simulator.world`): reference server in-process, every handset
  running the real SDK with ``fixed:<interval>`` over simulated links, NATs and radio meters
  (scenario ``carrier-nat-30min``: LTE, NAT 1,800 s, so no connection dies), with its push
  workload;
- *bare loop*: per handset one task that sleeps ``interval`` and writes a 2-byte ping into a
  ``trio.testing.memory_stream_pair``, and one echo task answering it — the least any
  trio simulation of these heartbeats could do.

Printed per side and clock: wall seconds, CPU seconds of the process (less sensitive to
other load on the machine than wall time), simulated handset-hours per wall second, and
the world/bare ratios (the figures to compare across machines). Then the memory per
virtual handset of the world (traced allocations held half-way through a run, divided by
the handsets) and where it goes: the SDK (``pushsdk``), the server (``simulator.server``),
the simulator's own models and trio, by the file that allocated it.
"""
from __future__ import annotations

import argparse
import collections
import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from simulator import simclock

PING, PONG = b"\xc0\x00", b"\xd0\x00"


async def _bare_fleet(handsets: int, interval: float, duration: float) -> int:
    pings = 0

    async def device(client: trio.abc.Stream, offset: float) -> None:
        nonlocal pings
        await trio.sleep(offset)
        while True:
            await trio.sleep(interval)
            await client.send_all(PING)
            await client.receive_some(16)
            pings += 1

    async def echo(server: trio.abc.Stream) -> None:
        while True:
            await server.receive_some(16)
            await server.send_all(PONG)

    async with trio.open_nursery() as nursery:
        for i in range(handsets):
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(device, client, 60.0 * i / handsets)
            nursery.start_soon(echo, server)
        await trio.sleep(duration)
        nursery.cancel_scope.cancel()
    return pings


def _run(clock: str, async_fn: Callable[..., Any], *args: Any) -> Any:
    if clock == "sim":
        return simclock.run(async_fn, *args)
    return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def bare_loop(handsets: int, hours: float, interval: float,
              clock: str = "sim") -> tuple[float, float, int]:
    """(wall s, CPU s, pings) of the bare loop under ``clock`` (``"sim"`` or ``"mock"``)."""
    return _timed(lambda: _run(clock, _bare_fleet, handsets, interval, hours * 3600.0))


def _config(handsets: int, hours: float, interval: float):
    from simulator.scenario import Scenario
    from simulator.world import RunConfig

    return RunConfig(Scenario.builtin("carrier-nat-30min"), f"fixed:{interval:g}",
                     handsets, hours, seed=1)


def world(handsets: int, hours: float, interval: float,
          clock: str = "sim") -> tuple[float, float, int]:
    """(wall s, CPU s, heartbeats) of the simulator's world under ``clock``."""
    from simulator.world import World

    config = _config(handsets, hours, interval)
    wall, cpu, results = _timed(lambda: _run(clock, World(config).run))
    return wall, cpu, sum(r.heartbeats for r in results)


def world_memory(handsets: int, hours: float, interval: float) -> tuple[int, list]:
    """Traced bytes the world holds half-way through a run (every handset connected and
    idle), and the statistics of that snapshot by file."""
    from simulator.world import World

    config = _config(handsets, hours, interval)
    out: list = []

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_measure_at, config.duration / 2, out)
            return await World(config).run()

    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    simclock.run(main)
    tracemalloc.stop()
    held, snapshot = out
    return held - baseline, snapshot.statistics("filename")


async def _measure_at(t: float, out: list) -> None:
    await trio.sleep_until(t)
    gc.collect()
    out.append(tracemalloc.get_traced_memory()[0])
    out.append(tracemalloc.take_snapshot())


def _owner(filename: str) -> str:
    """Who allocated: the SDK, the server, the simulator's models, trio or the rest."""
    path = filename.replace("\\", "/")
    if "/pushsdk/" in path:
        return "SDK (pushsdk)"
    if "/simulator/server/" in path:
        return "server (simulator.server)"
    if "/simulator/" in path:
        return "simulator (world, handset, link, NAT, Doze, radio, day)"
    if "/trio/" in path or "/outcome/" in path or "/sortedcontainers/" in path:
        return "trio (tasks, cancel scopes)"
    return "other (stdlib: sqlite3, random, ...)"


def breakdown(stats: list) -> list[tuple[str, int]]:
    """Bytes per owner (:func:`_owner`), largest first."""
    owners: collections.Counter[str] = collections.Counter()
    for stat in stats:
        owners[_owner(stat.traceback[0].filename)] += stat.size
    return owners.most_common()


def _line(label: str, wall: float, cpu: float, handset_hours: float, what: str) -> str:
    return (f"{label:24s} {wall:7.1f} s wall {cpu:7.1f} s CPU  "
            f"{handset_hours / wall:9,.0f} handset-h/s  ({what})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handsets", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=270.0)
    parser.add_argument("--memory-handsets", type=int, default=2000,
                        help="handsets of the (traced, slower) memory run; 0: none")
    parser.add_argument("--clock", choices=("sim", "mock", "both"), default="both")
    args = parser.parse_args()
    handset_hours = args.handsets * args.hours
    print(f"handsets {args.handsets}, {args.hours:g} h, interval {args.interval:g} s")
    clocks = ("sim", "mock") if args.clock == "both" else (args.clock,)
    names = {"sim": "SimulationClock", "mock": "MockClock"}
    for clock in clocks:
        bare_wall, bare_cpu, pings = bare_loop(args.handsets, args.hours, args.interval, clock)
        world_wall, world_cpu, beats = world(args.handsets, args.hours, args.interval, clock)
        print(_line(f"bare loop, {names[clock]}", bare_wall, bare_cpu, handset_hours,
                    f"{pings:,} pings"))
        print(_line(f"world, {names[clock]}", world_wall, world_cpu, handset_hours,
                    f"{beats:,} heartbeats"))
        print(f"ratio world / bare ({names[clock]}): {bare_wall / world_wall:.2f} by wall "
              f"time, {bare_cpu / world_cpu:.2f} by CPU time")
    if args.memory_handsets:
        n = args.memory_handsets
        held, stats = world_memory(n, 1.0, args.interval)
        print(f"memory per virtual handset: {held / n / 1024:.1f} KiB = {held / n / 1000:.1f} kB "
              f"(traced allocations held half-way through a {n}-handset, 1 h world, / {n})")
        for owner, size in breakdown(stats):
            print(f"  {size / n / 1000:6.2f} kB  {owner}")


if __name__ == "__main__":
    main()
