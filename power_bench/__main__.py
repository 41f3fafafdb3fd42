"""``python -m power_bench``: heartbeat strategies × scenarios × seeds in the simulator.

    python -m power_bench [--quick] [--out DIR] [--workers W] [--seeds N] [--first-seed S]
                          [--strategies NAME ...] [--scenarios NAME_OR_TOML ...]
                          [--handsets N] [--hours H] [--trace-handsets N] [--no-progress]

Writes results.csv, summary.csv, trajectories.csv, PNG plots and report.md into ``--out``
(default ``power_bench/results/``, or ``power_bench/results-quick/`` with ``--quick``), prints
a table and the goal check of the adaptive strategy. docs/power_bench.md explains it all.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from simulator.argtypes import non_negative_int, positive_int, run_hours
from simulator.cli import CommandError

PROG = "python -m power_bench"
RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_QUICK = Path(__file__).resolve().parent / "results-quick"


class UsageError(Exception):
    """A user mistake: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=(
        "Compare heartbeat strategies in the virtual-time simulator: strategies × scenarios "
        "× seeds, with a Markdown report and plots."))
    parser.add_argument("--quick", action="store_true",
                        help="a small matrix (2 seeds × 10 handsets) in a couple of minutes")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="results directory (default power_bench/results/, "
                             "power_bench/results-quick/ with --quick)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="W",
                        help="worker processes (default: one per CPU)")
    parser.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                        help="how many seeds (default 3, --quick 2)")
    parser.add_argument("--first-seed", type=positive_int, default=None, metavar="S",
                        help="the first seed (default 101, --quick 1: the full run's seeds "
                             "were not used to tune any strategy)")
    parser.add_argument("--strategies", nargs="+", metavar="NAME", default=None,
                        help="heartbeat strategies (default: fixed:270 fcm mars mars+hooks "
                             "courier kontalk oracle, and adaptive when the SDK has it)")
    parser.add_argument("--scenarios", nargs="+", metavar="SCENARIO", default=None,
                        help="built-in scenario names or TOML files (default: all built-in "
                             "and power_bench/scenarios/*.toml)")
    parser.add_argument("--handsets", type=positive_int, default=None, metavar="N",
                        help="handsets per fleet (default 16, --quick 10)")
    parser.add_argument("--hours", type=run_hours, default=None, metavar="H",
                        help="simulated hours for every scenario (default: each scenario's own)")
    parser.add_argument("--trace-handsets", type=non_negative_int, default=None, metavar="N",
                        help="handsets whose interval is traced over time (default 4, "
                             "--quick 3; 0: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # --- --cluster hook (fleet engineer; see simulator/distributed.py, docs/distributed.md) ---
    parser.add_argument("--cluster", metavar="tcp://HOST:PORT", default=None,
                        help="run the simulation matrix on a Dask cluster (same results)")
    # --- end of the --cluster hook ---
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        return run(args, argv)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:  # --cluster hook: an unreachable cluster (fleet engineer)
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _trajectories(matrix, count: int, workers: int, progress: bool) -> list:
    """The interval over time of ``count`` handsets of ``mixed`` (else the first scenario),
    first seed, for each adaptive strategy of the matrix; none if there is none."""
    from power_bench.trajectory import capture_all, is_adaptive, pick_handsets

    traced = [s for s in matrix.strategies if is_adaptive(s)]
    if not (traced and count):
        return []
    scenario = next((s for s in matrix.scenarios if s.name == "mixed"), matrix.scenarios[0])
    hours, seed = matrix.hours_for(scenario), matrix.seeds[0]
    indices = pick_handsets(scenario, matrix.handsets, seed, hours, count)
    return capture_all(scenario, traced, indices, handsets=matrix.handsets, hours=hours,
                       seed=seed, workers=workers, progress=progress)


def run(args, argv: list[str]) -> int:
    # Imported here so that --help and argument mistakes answer at once.
    from power_bench.bench import (
        FULL, QUICK, Matrix, aggregate, default_strategies, goal_check, run_matrix,
    )
    from power_bench.report import BenchRun, write_report

    started_at = time.perf_counter()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    profile = QUICK if args.quick else FULL
    strategies = _strategies(args.strategies or default_strategies())
    scenarios = _scenarios(args.scenarios)
    out = args.out or (RESULTS_QUICK if args.quick else RESULTS)
    try:
        matrix = Matrix.build(strategies, scenarios, seeds=args.seeds or profile.seeds,
                              handsets=args.handsets or profile.handsets, hours=args.hours,
                              first_seed=args.first_seed or profile.first_seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror or exc}") from None
    progress = not args.no_progress
    print(f"{PROG}: {len(matrix.strategies)} strategies × {len(matrix.scenarios)} scenarios × "
          f"{len(matrix.seeds)} seed(s), {matrix.handsets} handsets each: "
          f"{matrix.handset_hours:,.0f} handset-hours on {args.workers} worker(s)",
          file=sys.stderr)

    t0 = time.perf_counter()
    handsets: list = []
    rows = run_matrix(matrix, args.workers, progress=progress, handsets_out=handsets,
                      cluster=args.cluster)
    matrix_s = time.perf_counter() - t0
    summary = aggregate(rows, handsets)

    t0 = time.perf_counter()
    count = profile.trace_handsets if args.trace_handsets is None else args.trace_handsets
    trajectories = _trajectories(matrix, count, args.workers, progress)
    trace_s = time.perf_counter() - t0

    goal = goal_check(summary, rows)
    bench_run = BenchRun(
        matrix=matrix, rows=tuple(rows), summary=tuple(summary), goal=goal,
        trajectories=tuple(trajectories), command=" ".join([PROG, *map(shlex.quote, argv)]),
        started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        elapsed_s=time.perf_counter() - started_at, matrix_s=matrix_s, trace_s=trace_s,
        workers=args.workers, machine=_machine(load_at_start),
    )
    write_report(out, bench_run)
    print(_table(summary))
    print()
    print("\n".join(goal.lines()))
    elapsed = time.perf_counter() - started_at
    print(f"\n{matrix.handset_hours:,.0f} handset-hours in {elapsed:.1f} s "
          f"({matrix.handset_hours / matrix_s:,.0f} handset-h/s in the matrix); "
          f"report: {out / 'report.md'}")
    return 0


def _strategies(names: list[str]) -> list[str]:
    from simulator.strategies import check_strategy

    # Comma-separated lists are accepted too: --strategies mars,courier
    names = [n for arg in names for n in arg.split(",") if n]
    for name in names:
        if name.startswith("trace:"):
            raise UsageError("trace:<token> is internal to the interval tracing")
        try:
            check_strategy(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return names


def _scenarios(names: list[str] | None):
    from power_bench.bench import DEFAULT_SCENARIOS
    from simulator.scenario import Scenario, ScenarioError

    names = [n for arg in (names or DEFAULT_SCENARIOS) for n in arg.split(",") if n]
    try:
        return [Scenario.load(name) for name in names]
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None


def _table(summary: list[dict]) -> str:
    from simulator.run_output import format_table

    return format_table(summary)


def _machine(load) -> tuple[tuple[str, str], ...]:
    import psutil

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        ("Machine", f"{os.cpu_count()} CPUs (nproc){f', {cpu}' if cpu else ''}; "
                    f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; "
                    f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Load average (1, 5, 15 min) at the start",
         ", ".join(f"{x:.2f}" for x in load) + " (other jobs share the CPUs when it is high)"
         if load else "n/a"),
    )


if __name__ == "__main__":
    sys.exit(main())
