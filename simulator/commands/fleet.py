"""``pushsim fleet``: handsets running the real SDK over real sockets (interfaces §1).

::

    pushsim fleet --server URL (--admin-token T | --app-key K --master-secret S)
                  --handsets N --duration SECONDS [options]
    pushsim fleet --broker mqtt://HOST:PORT --handsets N --duration SECONDS [options]

See docs/fleet.md. Mistakes end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NoReturn

from simulator.cli import CommandError

PROG = "pushsim fleet"


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> None:
    """Make argparse report mistakes as one line (no usage dump), exit status 2."""
    def error(message: str) -> NoReturn:
        parser.exit(2, f"{prog}: {message}\n")
    parser.error = error  # type: ignore[method-assign]


def _number(kind: type, low: float, what: str, *, above: bool = False):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if (value <= low if above else value < low) or (kind is float and not math.isfinite(value)):
            bound = f"more than {low:g}" if above else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}: {text!r}")
        return value
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser, PROG)
    _target_arguments(parser)
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--handsets", type=_number(int, 1, "a whole number"), metavar="N",
                       help="handsets in the whole fleet (all shards)")
    fleet.add_argument("--duration", type=_number(float, 0, "a number", above=True),
                       metavar="SECONDS",
                       help="run time; handsets ramp up and pushes are sent within it")
    fleet.add_argument("--scenario", metavar="FILE.toml",
                       help="stages (ramp, hold, storm, drain) and settings from a TOML file "
                            "instead of --duration/--ramp/--push-rate/--drain")
    fleet.add_argument("--strategy", metavar="NAME",
                       help="heartbeat strategy (see `pushsim strategies`; default: the SDK's)")
    fleet.add_argument("--ramp", type=_number(float, 0, "a number"), default=1000.0,
                       metavar="PER_S",
                       help="handset starts per second, whole fleet; 0 = all at once "
                            "(default %(default)g)")
    fleet.add_argument("--push-rate", type=_number(float, 0, "a number"), default=10.0,
                       metavar="PER_S",
                       help="pushes per second, whole fleet, round-robin over the topic "
                            "groups; 0 = none (default %(default)g)")
    fleet.add_argument("--drain", type=_number(float, 0, "a number"), default=10.0,
                       metavar="SECONDS",
                       help="after --duration, wait at most this long for pushes in flight "
                            "(default %(default)g)")
    fleet.add_argument("--connect-timeout", type=_number(float, 0, "a number", above=True),
                       default=10.0, metavar="SECONDS",
                       help="TCP + TLS + CONNACK limit per attempt, and of the pre-flight "
                            "(default %(default)g)")
    fleet.add_argument("--radio-model", default="lte", metavar="NAME",
                       help="radio energy model for the battery proxy (default %(default)s)")
    fleet.add_argument("--seed", type=int, default=None, help="seed of the reconnect jitter")
    _workload_arguments(parser)
    _scale_arguments(parser)
    output = parser.add_argument_group("output and gates")
    output.add_argument("--out", default="./pushsim-fleet", metavar="DIR",
                        help="results directory (default %(default)s)")
    output.add_argument("--fail-if", action="append", default=[], metavar="EXPR",
                        help="exit 1 if EXPR holds for the summary, e.g. lost>0, "
                             "delivery_ratio<0.999, latency_p99_s>0.5 (repeatable; default "
                             "gates: lost>0, handsets_connected<1)")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="live progress line on stderr (default: redrawn on a terminal, "
                             "a plain line every 10 s otherwise)")
    output.add_argument("--metrics-port", type=_number(int, 0, "a port number"),
                        metavar="P", help="serve Prometheus text at /metrics on this port "
                                          "while the run lasts (0: any free port)")
    output.add_argument("--metrics-host", default="127.0.0.1", metavar="H",
                        help="address of the metrics endpoint (default %(default)s)")


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target (one of)")
    where = target.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="URL",
                       help="reference push server's HTTP API, e.g. http://127.0.0.1:8480")
    where.add_argument("--broker", metavar="URL",
                       help="any MQTT 3.1.1 or 5.0 broker, e.g. mqtt://127.0.0.1:1883 or "
                            "ws://127.0.0.1:8080/mqtt")
    target.add_argument("--admin-token", metavar="T",
                        help="server: create an app for this run with the admin token")
    target.add_argument("--app-key", metavar="K", help="server: push for an existing app ...")
    target.add_argument("--master-secret", metavar="S", help="... with its master secret")
    target.add_argument("--username", metavar="U", help="broker: user name of every client")
    target.add_argument("--password", metavar="P", help="broker: password of every client")
    target.add_argument("--ca", metavar="FILE", help="trust this CA (PEM) for https/mqtts")
    target.add_argument("--mqtt-version", default=None, choices=("3.1.1", "5"),
                        help="MQTT version of handsets and publisher (default: 3.1.1 with "
                             "--broker; with --server 5 when the server offers it)")
    target.add_argument("--mqtt-transport", default=None, choices=("tcp", "ws"),
                        help="server: MQTT over TCP or over the WebSocket URL the server "
                             "advertises (default tcp; a broker takes a ws:// URL instead)")


def _workload_arguments(parser: argparse.ArgumentParser) -> None:
    workload = parser.add_argument_group("workload")
    workload.add_argument("--qos", type=int, choices=(0, 1, 2), default=None,
                          help="broker: QoS of the pushes and the subscriptions (default 1)")
    workload.add_argument("--payload-size", type=_number(int, 0, "a whole number"), default=0,
                          metavar="BYTES",
                          help="pad each push's payload to this many bytes (default: just "
                               "the tracer header, ~70 bytes)")
    workload.add_argument("--fan-out", type=_number(int, 1, "a whole number"), default=1,
                          metavar="K", help="handsets sharing each topic; every push reaches "
                                            "all K (default 1)")
    workload.add_argument("--publishers", type=_number(int, 1, "a whole number"), default=None,
                          metavar="N", help="connections sending pushes in each worker "
                                            "(default: 1 MQTT publisher, 8 HTTP connections)")
    workload.add_argument("--session", choices=("persistent", "clean"), default=None,
                          help="broker: handsets' sessions (default persistent: clean session 0)")
    workload.add_argument("--session-expiry", type=_number(int, 1, "a whole number"),
                          default=None, metavar="SECONDS",
                          help="broker, MQTT 5, persistent sessions: the Session Expiry "
                               "Interval (default: never, as 3.1.1)")
    workload.add_argument("--message-expiry", type=_number(int, 1, "a whole number"),
                          default=None, metavar="SECONDS",
                          help="MQTT 5: Message Expiry Interval of every push (server: the "
                               "push TTL, default 1 day)")
    workload.add_argument("--shared-group", metavar="NAME", default=None,
                          help="broker, MQTT 5: a group's handsets subscribe "
                               "$share/NAME/<topic>; each push reaches one of them")
    workload.add_argument("--cleanup", action=argparse.BooleanOptionalAction, default=None,
                          help="remove the run's sessions/devices from the target at the end "
                               "(default: yes)")
    workload.add_argument("--client-id-prefix", metavar="P",
                          help="prefix of every client id / device id (default "
                               "pushsim-<run id>-)")
    workload.add_argument("--run-id", metavar="ID",
                          help="the run's id (default: random); shards of one run started by "
                               "hand must share it")


def _scale_arguments(parser: argparse.ArgumentParser) -> None:
    scale = parser.add_argument_group("scale")
    scale.add_argument("--workers", type=_number(int, 1, "a whole number"), default=None,
                       metavar="W", help="processes sharing this shard's handsets (default 1); "
                                         "with --cluster: how many Dask workers to use")
    scale.add_argument("--source-ips", metavar="FIRST-LAST",
                       help="local addresses to connect from, round-robin per handset, e.g. "
                            "127.0.0.2-127.0.0.50 (beyond the ~28k ports of one address)")
    scale.add_argument("--shard", default="0/1", metavar="i/N",
                       help="run only topic groups with index %% N == i (merge with "
                            "`pushsim merge`)")
    scale.add_argument("--cluster", metavar="tcp://HOST:PORT",
                       help="run the shards on a Dask cluster (one per worker) and merge them")


def _fail(message: str) -> NoReturn:
    raise CommandError(message)


def run(args: argparse.Namespace) -> int:
    from simulator.fleet.gates import GateError

    from simulator.fleet.options import build_plan, parse_gates

    plan = build_plan(args)
    try:
        gates = parse_gates(args.fail_if)
    except GateError as exc:
        _fail(str(exc))
    if args.cluster:
        from simulator.distributed import run_fleet_on_cluster
        return run_fleet_on_cluster(args, plan, gates)
    return run_here(args, plan, gates)


def run_here(args: argparse.Namespace, plan, gates) -> int:
    """Limits, pre-flight, the run, the results directory and the gates' verdict."""
    from simulator.fleet.limits import LimitError
    from simulator.fleet.live import Live
    from simulator.fleet.runner import FleetError, check_limits, run_fleet

    try:
        check_limits(plan)
    except LimitError as exc:
        _fail(str(exc))
    plan = prepare_target(args, plan)
    out = make_out(args.out)
    try:
        with Live(len(plan.shard_handsets()), progress=args.progress,
                  metrics_port=args.metrics_port, metrics_host=args.metrics_host) as live:
            announce_metrics(live)
            results = run_fleet(plan, live)
    except FleetError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
              f"{exc.strerror or exc}")
    return finish(results, out, gates)


def prepare_target(args: argparse.Namespace, plan):
    """The pre-flight (every leg); the plan with the server's app filled in."""
    import attrs

    from simulator.fleet.plan import ServerTarget
    from simulator.fleet.preflight import PreflightError, preflight, prepare_server

    try:
        if isinstance(plan.target, ServerTarget):
            target = prepare_server(
                args.server, admin_token=args.admin_token, app_key=args.app_key,
                master_secret=args.master_secret, ca_file=args.ca,
                timeout=args.connect_timeout, app_name=f"pushsim-fleet-{plan.run_id}")
            plan = attrs.evolve(plan, target=target)
        preflight(plan)
    except PreflightError as exc:
        _fail(str(exc))
    return plan


def make_out(text: str) -> Path:
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create the results directory {out}: {exc.strerror or exc}")
    return out


def announce_metrics(live) -> None:
    if live.metrics_url:
        print(f"pushsim fleet: metrics at {live.metrics_url}", file=sys.stderr, flush=True)


def finish(results, out: Path, gates, prog: str = PROG) -> int:
    """Write the results, print the summary, name every missed gate; the exit status."""
    from simulator.fleet.gates import evaluate
    from simulator.fleet.results_files import figures, write_results_dir
    from simulator.fleet.summary_text import text_report

    _, _, summary, _ = figures(results)
    verdicts = evaluate(gates, summary[0])
    try:
        fleet, summary = write_results_dir(results, out, gates=verdicts)
    except OSError as exc:
        _fail(f"cannot write results to {out}: {exc.strerror or exc}")
    print(text_report(fleet, summary, out))
    sys.stdout.flush()
    missed = [v for v in verdicts if v["missed"]]
    for verdict in missed:
        print(f"{prog}: gate missed: {verdict['gate']} ({verdict['why']})",
              file=sys.stderr)
    return 1 if missed else 0
