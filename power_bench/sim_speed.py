"""Speed and memory of the virtual-time world against a bare trio ping loop, in one run.

    python -m power_bench.sim_speed [--handsets 1000] [--hours 24] [--interval 270]

Both sides simulate the same handsets for the same virtual duration under the simulator's
clock (``simulator.simclock.SimulationClock``: MockClock(autojump_threshold=0) semantics, one
scheduler pass per virtual instant):

- *world*: the full simulator (`simulator.world`): reference server in-process, every handset
  running the real SDK with ``fixed:<interval>`` over simulated links, NATs and radio meters
  (scenario ``carrier-nat-30min``: LTE, NAT 1,800 s, so no connection dies), with its push
  workload;
- *bare loop*: per handset one task that sleeps ``interval`` and writes a 2-byte ping into a
  ``trio.testing.memory_stream_pair``, and one echo task answering it — the least any
  trio simulation of these heartbeats could do.

Printed: simulated handset-hours per wall second for each, their ratio (the figure to
compare across machines), the bare loop under trio's own ``MockClock(autojump_threshold=0)``
for reference (what the clock alone is worth), and the memory per virtual handset of the world (traced
allocations held at the end of the run, divided by the handsets).
"""
from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import trio
import trio.testing

from simulator.simclock import SimulationClock

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


def bare_loop(handsets: int, hours: float, interval: float,
              clock: trio.abc.Clock | None = None) -> tuple[float, int]:
    started = time.perf_counter()
    pings = trio.run(_bare_fleet, handsets, interval, hours * 3600.0,
                     clock=clock or SimulationClock())
    return time.perf_counter() - started, pings


def world(handsets: int, hours: float, interval: float, *, trace: bool = False):
    """Run the simulator's world; with ``trace``, also the memory it holds per handset."""
    from simulator.scenario import Scenario
    from simulator.world import RunConfig, World

    config = RunConfig(Scenario.builtin("carrier-nat-30min"), f"fixed:{interval:g}",
                       handsets, hours, seed=1)
    held = []

    async def main():
        w = World(config)
        async with trio.open_nursery() as nursery:
            if trace:
                nursery.start_soon(_measure_at, config.duration / 2, held)
            return await w.run()

    if trace:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    results = trio.run(main, clock=SimulationClock())
    elapsed = time.perf_counter() - started
    memory = None
    if trace:
        tracemalloc.stop()
        memory = held[0] - baseline
    return elapsed, sum(r.heartbeats for r in results), memory


async def _measure_at(t: float, out: list) -> None:
    """Traced memory held half-way through the run: every handset connected and idle."""
    await trio.sleep_until(t)
    gc.collect()
    out.append(tracemalloc.get_traced_memory()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handsets", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=270.0)
    parser.add_argument("--memory-handsets", type=int, default=2000,
                        help="handsets of the (traced, slower) memory run")
    args = parser.parse_args()
    handset_hours = args.handsets * args.hours

    bare_s, bare_pings = bare_loop(args.handsets, args.hours, args.interval)
    world_s, world_beats, _ = world(args.handsets, args.hours, args.interval)
    bare_rate, world_rate = handset_hours / bare_s, handset_hours / world_s
    print(f"handsets {args.handsets}, {args.hours:g} h, interval {args.interval:g} s")
    print(f"bare trio ping loop: {bare_s:7.1f} s  {bare_rate:9,.0f} handset-h/s  "
          f"({bare_pings:,} pings)")
    print(f"SDK-in-the-loop:     {world_s:7.1f} s  {world_rate:9,.0f} handset-h/s  "
          f"({world_beats:,} heartbeats)")
    print(f"ratio world / bare:  {world_rate / bare_rate:.2f}")
    mock_s, _ = bare_loop(args.handsets, args.hours, args.interval,
                          trio.testing.MockClock(autojump_threshold=0))
    print(f"bare loop, MockClock: {mock_s:6.1f} s  {handset_hours / mock_s:9,.0f} handset-h/s  "
          f"(trio's autojump clock, for reference)")

    n, hours = args.memory_handsets, 1.0
    _, _, held = world(n, hours, args.interval, trace=True)
    print(f"memory per virtual handset: {held / n / 1024:.1f} KiB = {held / n / 1000:.1f} kB "
          f"(traced allocations held half-way through a {n}-handset world, / {n}: "
          f"SDK, server session, link, NAT, radio meters, spec)")


if __name__ == "__main__":
    main()
