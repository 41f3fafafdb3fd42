"""``pushsim merge DIR... --out DIR``: one results directory from the shards of a fleet run.

Counts are added, latency samples and connect attempts pooled, and every percentile, ratio
and summary row recomputed, so the merge of ``--shard 0/N`` … ``--shard N-1/N`` reads like
one run over all the handsets. See docs/fleet.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from simulator.cli import CommandError
from simulator.commands.fleet import one_line_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser, "pushsim merge")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="results directories of `pushsim fleet --shard i/N` runs")
    parser.add_argument("--out", required=True, metavar="DIR", help="merged results directory")


def run(args: argparse.Namespace) -> int:
    from simulator.fleet.summary_text import text_report
    from simulator.fleet.results import FleetResults, ResultsError

    dirs = [Path(d) for d in args.dirs]
    if len(set(d.resolve() for d in dirs)) != len(dirs):
        raise CommandError("the same directory is given twice")
    try:
        parts = [FleetResults.read(d) for d in dirs]
        merged = FleetResults.combine(parts, [str(d) for d in dirs])
    except ResultsError as exc:
        raise CommandError(str(exc)) from None
    out = Path(args.out)
    try:
        fleet, summary = merged.write(out)
    except OSError as exc:
        raise CommandError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    print(text_report(fleet, summary, out))
    return 0
