"""``pushsim merge DIR... --out DIR``: one results directory from the shards of a fleet run.

The shards must be one run: the same run id and configuration, and every shard present
(``--partial`` accepts a missing one, with a warning). Counts are added, HDR histograms,
latency samples and connect attempts pooled, and every percentile, ratio, warning and
summary row recomputed, so the merge of ``--shard 0/N`` … ``--shard N-1/N`` reads like one
run over all the handsets. The gates are checked again (``--fail-if``, exit status 1 when
one is missed). ``--out`` may not be one of the inputs (it would overwrite a shard); an input
whose fleet.json is not a fleet result (a field of the wrong type) is refused, naming the file
and the field. See docs/fleet.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from simulator.cli import CommandError
from simulator.commands.fleet import one_line_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser, "pushsim merge")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="results directories of `pushsim fleet --shard i/N` runs")
    parser.add_argument("--out", required=True, metavar="DIR", help="merged results directory")
    parser.add_argument("--partial", action="store_true",
                        help="merge even if a shard of the run is missing (with a warning)")
    parser.add_argument("--fail-if", action="append", default=[], metavar="EXPR",
                        help="gate over the merged summary, as for `pushsim fleet`")


def run(args: argparse.Namespace) -> int:
    from simulator.commands.fleet import finish
    from simulator.fleet.gates import GateError
    from simulator.fleet.options import parse_gates
    from simulator.fleet.results import FleetResults, ResultsError
    from simulator.fleet.results_files import read_results

    dirs = [Path(d) for d in args.dirs]
    if len(set(d.resolve() for d in dirs)) != len(dirs):
        raise CommandError("the same directory is given twice")
    out = Path(args.out)
    for d in dirs:
        if _same_directory(out, d):
            spelled = "" if str(d) == args.out else f" ({d})"
            raise CommandError(f"--out {args.out} is one of the inputs{spelled}; write the "
                               "merged result elsewhere")
    try:
        gates = parse_gates(args.fail_if)
        parts = [read_results(d) for d in dirs]
        merged = FleetResults.combine(parts, [str(d) for d in dirs], partial=args.partial)
    except (ResultsError, GateError) as exc:
        raise CommandError(str(exc)) from None
    return finish(merged, out, gates, prog="pushsim merge")


def _same_directory(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one directory: however spelled (``./A/``, a symlink), or
    the same file by device and inode (a bind mount)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False
