"""``pushsim energy --model NAME --trace FILE.csv``: radio energy of a packet trace (CONTRACT §4)."""
from __future__ import annotations

import json

from simulator.cli import CommandError


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="radio model name (see `pushsim models`)")
    parser.add_argument("--trace", required=True, metavar="FILE.csv",
                        help="CSV with header t,dir,bytes")


def run(args) -> int:
    from simulator.radio import TraceError, UnknownModelError, energy_command

    try:
        result = energy_command(args.model, args.trace)
    except (TraceError, UnknownModelError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(result))
    return 0
