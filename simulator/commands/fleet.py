"""``pushsim fleet``: handsets running the real SDK over real sockets (CONTRACT §1).

::

    pushsim fleet --server URL (--admin-token T | --app-key K --master-secret S)
                  --handsets N --duration SECONDS [options]
    pushsim fleet --broker mqtt://HOST:PORT --handsets N --duration SECONDS [options]

See docs/fleet.md. Mistakes end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import secrets
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
    target = parser.add_argument_group("target (one of)")
    where = target.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="URL",
                       help="reference push server's HTTP API, e.g. http://127.0.0.1:8480")
    where.add_argument("--broker", metavar="URL",
                       help="any MQTT 3.1.1 broker, e.g. mqtt://127.0.0.1:1883")
    target.add_argument("--admin-token", metavar="T",
                        help="server: create an app for this run with the admin token")
    target.add_argument("--app-key", metavar="K", help="server: push for an existing app ...")
    target.add_argument("--master-secret", metavar="S", help="... with its master secret")
    target.add_argument("--username", metavar="U", help="broker: user name of every client")
    target.add_argument("--password", metavar="P", help="broker: password of every client")
    target.add_argument("--ca", metavar="FILE", help="trust this CA (PEM) for https/mqtts")

    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--handsets", type=_number(int, 1, "a whole number"), required=True,
                       metavar="N", help="handsets in the whole fleet (all shards)")
    fleet.add_argument("--duration", type=_number(float, 0, "a number", above=True),
                       required=True, metavar="SECONDS",
                       help="run time; handsets ramp up and pushes are sent within it")
    fleet.add_argument("--strategy", metavar="NAME",
                       help="heartbeat strategy (see `pushsim strategies`; default: the SDK's)")
    fleet.add_argument("--ramp", type=_number(float, 0, "a number"), default=1000.0,
                       metavar="PER_S",
                       help="handset starts per second, whole fleet; 0 = all at once "
                            "(default %(default)g)")
    fleet.add_argument("--push-rate", type=_number(float, 0, "a number"), default=10.0,
                       metavar="PER_S",
                       help="pushes per second, whole fleet, round-robin over the handsets; "
                            "0 = none (default %(default)g)")
    fleet.add_argument("--drain", type=_number(float, 0, "a number"), default=10.0,
                       metavar="SECONDS",
                       help="after --duration, wait at most this long for pushes in flight "
                            "(default %(default)g)")
    fleet.add_argument("--connect-timeout", type=_number(float, 0, "a number", above=True),
                       default=10.0, metavar="SECONDS",
                       help="TCP + TLS + CONNACK limit per attempt (default %(default)g)")
    fleet.add_argument("--radio-model", default="lte", metavar="NAME",
                       help="radio energy model for the battery proxy (default %(default)s)")
    fleet.add_argument("--seed", type=int, default=None, help="seed of the reconnect jitter")

    scale = parser.add_argument_group("scale")
    scale.add_argument("--workers", type=_number(int, 1, "a whole number"), default=1,
                       metavar="W", help="processes sharing this shard's handsets (default 1)")
    scale.add_argument("--source-ips", metavar="FIRST-LAST",
                       help="local addresses to connect from, round-robin per handset, e.g. "
                            "127.0.0.2-127.0.0.50 (beyond the ~28k ports of one address)")
    scale.add_argument("--shard", default="0/1", metavar="i/N",
                       help="run only handsets with index %% N == i (merge with `pushsim merge`)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", default="./pushsim-fleet", metavar="DIR",
                        help="results directory (default %(default)s)")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="live progress line on stderr (default: when it is a terminal)")


def _fail(message: str) -> NoReturn:
    raise CommandError(message)


def build_config(args: argparse.Namespace):
    """Check the arguments and build the FleetPlan (target not contacted yet)."""
    from pushsdk.heartbeat import UnknownStrategyError, known_strategies, parse_strategy
    from pushsdk.registration import parse_server_url
    from pushsdk.transport import TcpConnector, TlsError
    from simulator.fleet.plan import BrokerTarget, FleetPlan, ServerTarget, parse_shard
    from simulator.fleet.limits import LimitError, parse_source_ips
    from simulator.radio import UnknownModelError, get_model

    try:
        shard = parse_shard(args.shard)
        source_ips = parse_source_ips(args.source_ips) if args.source_ips else ()
    except (ValueError, LimitError) as exc:
        _fail(str(exc))
    if args.server:
        if args.username or args.password:
            _fail("--username/--password are for --broker; the server authenticates devices "
                  "by token")
        try:
            parse_server_url(args.server)
        except ValueError as exc:
            _fail(str(exc))
        if args.admin_token is not None and (args.app_key or args.master_secret):
            _fail("give either --admin-token or --app-key with --master-secret, not both")
        if args.admin_token is None and not (args.app_key and args.master_secret):
            _fail("--server needs --admin-token T, or --app-key K with --master-secret S")
        target = ServerTarget(url=args.server, app_key=args.app_key or "",
                              master_secret=args.master_secret or "")
    else:
        if args.admin_token or args.app_key or args.master_secret:
            _fail("--admin-token/--app-key/--master-secret are for --server")
        try:
            target = BrokerTarget.from_url(args.broker, args.username, args.password)
        except ValueError as exc:
            _fail(str(exc))
    if args.strategy:
        try:
            parse_strategy(args.strategy)
        except (UnknownStrategyError, ValueError) as exc:
            _fail(str(exc))
        name = args.strategy.partition(":")[0]
        live = {usage.partition(":")[0] for usage in known_strategies(include_simulation=False)}
        if name not in live:
            _fail(f"strategy {name!r} exists only in simulation; over real sockets use one of "
                  f"{', '.join(sorted(live))}")
    try:
        get_model(args.radio_model)
    except UnknownModelError as exc:
        _fail(str(exc))
    if args.ca:
        try:
            TcpConnector(ca_file=args.ca)
        except TlsError as exc:
            _fail(str(exc))
    config = FleetPlan(
        target=target, handsets=args.handsets, duration=args.duration, strategy=args.strategy,
        workers=args.workers, shard=shard, source_ips=source_ips, push_rate=args.push_rate,
        ramp=args.ramp or math.inf, drain=args.drain, ca_file=args.ca,
        connect_timeout=args.connect_timeout, radio_model=args.radio_model, seed=args.seed,
        run_id=secrets.token_hex(4))
    in_shard = len(config.shard_handsets())
    if in_shard == 0:
        _fail(f"shard {shard} of a {args.handsets}-handset fleet has no handsets")
    if args.workers > in_shard:
        _fail(f"--workers {args.workers} is more than the {in_shard} handsets to run")
    if config.ramp_seconds() >= config.duration:
        _fail(f"{args.handsets} handsets at --ramp {args.ramp:g}/s take "
              f"{config.ramp_seconds():.1f} s to start, not less than --duration "
              f"{args.duration:g}; raise --ramp or --duration")
    return config


def run(args: argparse.Namespace) -> int:
    import attrs

    from simulator.fleet.plan import ServerTarget
    from simulator.fleet.limits import LimitError
    from simulator.fleet.summary_text import text_report
    from simulator.fleet.runner import (
        FleetError,
        check_limits,
        prepare_broker,
        prepare_server,
        run_fleet,
    )

    config = build_config(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create the results directory {out}: {exc.strerror or exc}")
    try:
        check_limits(config)
        if isinstance(config.target, ServerTarget):
            target = prepare_server(
                args.server, admin_token=args.admin_token, app_key=args.app_key,
                master_secret=args.master_secret, ca_file=args.ca,
                timeout=args.connect_timeout, app_name=f"pushsim-fleet-{config.run_id}")
            config = attrs.evolve(config, target=target)
        else:
            prepare_broker(config.target, ca_file=args.ca, timeout=args.connect_timeout,
                           client_id=f"pushsim-preflight-{config.run_id}")
        _, fleet, summary = run_fleet(config, out, progress=args.progress)
    except (LimitError, FleetError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write results to {out}: {exc.strerror or exc}")
    print(text_report(fleet, summary, out))
    sys.stdout.flush()
    return 0
