"""How many packets per second a radio meter integrates (``python -m power_bench.radio_speed``).

The simulator feeds every handset's packets through one :class:`RadioMeter` each; this
prints the throughput of ``on_packet`` for every named model on a heartbeat-like stream
(a 2-byte ping up and a 2-byte reply down every few seconds to minutes, with bursts of
pushes), so a change that makes the per-packet path slower shows up here, not in tests.
"""
from __future__ import annotations

import argparse
import random
import time

from simulator.radio import MODELS


def packet_stream(count: int, seed: int = 1) -> list[tuple[float, str, int]]:
    """``count`` packets: heartbeats at random gaps (1 s - 10 min), some large pushes."""
    rng = random.Random(seed)
    packets: list[tuple[float, str, int]] = []
    t = 0.0
    while len(packets) < count:
        t += rng.choice((0.02, 1.0, 5.0, 30.0, 270.0, 600.0)) * rng.random()
        if rng.random() < 0.1:
            packets.append((t, "down", rng.randrange(200, 4000)))
        else:
            packets.append((t, "up", 2))
            packets.append((t + 0.05, "down", 2))
            t += 0.05
    return packets[:count]


def measure(model_name: str, packets: list[tuple[float, str, int]], repeat: int = 3) -> float:
    """Best packets/s over ``repeat`` runs of a fresh meter over ``packets``."""
    model = MODELS[model_name]
    best = 0.0
    for _ in range(repeat):
        meter = model.new_meter()
        on_packet = meter.on_packet
        start = time.perf_counter()
        for t, direction, nbytes in packets:
            on_packet(t, direction, nbytes)
        meter.statistics()
        best = max(best, len(packets) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    args = parser.parse_args(argv)
    packets = packet_stream(args.packets)
    print(f"{'model':<16} {'packets/s':>12}")
    for name in MODELS:
        print(f"{name:<16} {measure(name, packets):>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
