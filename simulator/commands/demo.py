"""``pushsim demo``: the main job — heartbeat strategies side by side on a mixed fleet.

The embedded reference server and a fleet of virtual handsets, each running the real SDK,
on the ``mixed`` scenario (carriers with 5-min to 2-h NATs and home Wi-Fi) for a day of
virtual time, once per strategy. Defaults are sized to finish in under 2 minutes on 2 cores.
"""
from __future__ import annotations

import os
from pathlib import Path

from simulator.argtypes import positive_int, run_hours
from simulator.commands.run import simulate

DEMO_STRATEGIES = ("fixed:270", "fcm", "mars", "courier", "kontalk", "adaptive", "oracle")
DEMO_SCENARIO = "mixed"


def add_arguments(parser) -> None:
    parser.add_argument("--handsets", type=positive_int, default=100,
                        help="virtual handsets per strategy (default 100)")
    parser.add_argument("--hours", type=run_hours, default=24.0,
                        help="simulated hours (default 24)")
    parser.add_argument("--out", type=Path, default=Path("pushsim-out"))
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from simulator.scenario import Scenario

    print(f"pushsim demo: {args.handsets} virtual handsets × {args.hours:g} h on the "
          f"'{DEMO_SCENARIO}' scenario, strategies: {', '.join(DEMO_STRATEGIES)}", flush=True)
    return simulate([Scenario.builtin(DEMO_SCENARIO)], list(DEMO_STRATEGIES),
                    handsets=args.handsets, hours=args.hours, seed=args.seed,
                    workers=args.workers, out=args.out, progress=not args.no_progress)
