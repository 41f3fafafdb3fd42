"""``pushsim energy --model NAME --trace FILE.csv|FILE.pcap|FILE.pcapng [--device-ip IP]``:
radio energy of a packet trace or capture (interfaces §1, §4)."""
from __future__ import annotations

import json

from simulator.cli import CommandError


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="radio model name (see `pushsim models`)")
    parser.add_argument("--trace", required=True, metavar="FILE",
                        help="CSV with header t,dir,bytes, or a pcap/pcapng capture")
    parser.add_argument("--device-ip", metavar="IP", default=None,
                        help="captures: the handset's address, whose packets are uplink "
                             "(default: the source of the first packet)")


def run(args) -> int:
    from simulator.radio import TraceError, UnknownModelError, energy_command

    try:
        result = energy_command(args.model, args.trace, args.device_ip)
    except (TraceError, UnknownModelError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(result))
    return 0
