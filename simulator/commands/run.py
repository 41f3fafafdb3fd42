"""``pushsim run SCENARIO``: one scenario under one or more strategies, in virtual time."""
from __future__ import annotations

import time
from pathlib import Path

from simulator.argtypes import positive_int, run_hours
from simulator.cli import CommandError


def add_arguments(parser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO",
                        help="built-in name (`pushsim scenarios`) or a TOML file")
    parser.add_argument("--handsets", type=positive_int, default=None,
                        help="virtual handsets (default: the scenario's)")
    parser.add_argument("--hours", type=run_hours, default=None,
                        help="simulated hours (default: the scenario's)")
    parser.add_argument("--strategy", action="append", dest="strategies", metavar="NAME",
                        help="heartbeat strategy, repeatable (default: fixed:270)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="worker processes; handsets are sharded over them")
    # --- --cluster hook (fleet engineer; see simulator/distributed.py, docs/distributed.md) ---
    parser.add_argument("--cluster", metavar="tcp://HOST:PORT", default=None,
                        help="run the jobs on a Dask cluster (same results as a local run); "
                             "--workers then sets how many shards each job is split into")
    # --- end of the --cluster hook ---
    parser.add_argument("--out", type=Path, default=Path("pushsim-out"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from simulator.scenario import Scenario, ScenarioError

    try:
        scenario = Scenario.load(args.scenario)
    except ScenarioError as exc:
        raise CommandError(str(exc)) from None
    strategies = args.strategies or ["fixed:270"]
    return simulate([scenario], strategies, handsets=args.handsets or scenario.handsets,
                    hours=args.hours or scenario.hours, seed=args.seed, workers=args.workers,
                    out=args.out, progress=not args.no_progress, cluster=args.cluster)


def simulate(scenarios, strategies, *, handsets, hours, seed, workers, out, progress,
             cluster=None) -> int:
    """Shared by ``run`` and ``demo``: simulate, print the table, write the results."""
    from simulator.run_output import format_table, save
    from simulator.runner import plan_jobs, run_jobs
    from simulator.strategies import check_strategy

    try:
        for name in strategies:
            check_strategy(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {out}: {exc.strerror}") from None
    jobs = plan_jobs(scenarios, strategies, handsets, hours, seed, workers)
    started = time.perf_counter()
    results = run_jobs(jobs, workers, progress=progress, cluster=cluster)
    elapsed = time.perf_counter() - started
    summary = save(out, results)
    print(format_table(summary))
    handset_hours = handsets * hours * len(strategies) * len(scenarios)
    print(f"\n{handset_hours:,.0f} handset-hours simulated in {elapsed:.1f} s "
          f"({handset_hours / elapsed:,.0f} handset-h/s, {workers} worker(s)"
          f"{f' on {cluster}' if cluster else ''}); "
          f"results in {out}/")
    return 0
