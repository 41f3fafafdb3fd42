"""``pushsim``: the simulator's command line (interfaces §1).

Each subcommand lives beside the code it drives and is imported only when used, so
``pushsim energy`` does not pay for starting the server machinery and vice versa. A
subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .sdk_logging import quiet_sdk_logs

#: subcommand -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("simulator.commands.demo", "run the built-in comparison of heartbeat strategies"),
    "run": ("simulator.commands.run", "run a scenario in virtual time"),
    "server": ("simulator.server.command", "run the reference push server"),
    "fleet": ("simulator.commands.fleet",
              "run handsets over real sockets against a server or broker"),
    "energy": ("simulator.commands.energy",
               "radio energy of a packet trace (CSV, pcap, pcapng)"),
    "strategies": ("simulator.commands.listing", "list the heartbeat strategies"),
    "models": ("simulator.commands.listing", "list the radio energy models"),
    "scenarios": ("simulator.commands.listing", "list the built-in scenarios"),
    "merge": ("simulator.commands.merge", "merge results directories of sharded runs"),
}


class CommandError(Exception):
    """A user mistake or an environment problem: printed as one line, exit status 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to fill in its arguments."""
    parser = argparse.ArgumentParser(
        prog="pushsim", description="Push server, handset fleet and heartbeat simulator."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        module = importlib.import_module(module_name)
        add_arguments = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add_arguments(sub_parser)
        sub_parser.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command if command in SUBCOMMANDS else None).parse_args(argv)
    quiet_sdk_logs()  # the results carry what the SDK would log, per handset
    try:
        return int(args._run(args) or 0)
    except CommandError as exc:
        print(f"pushsim {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
