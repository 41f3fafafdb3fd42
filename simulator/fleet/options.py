"""``pushsim fleet``'s options (and scenario file) → a checked :class:`~.plan.FleetPlan`.

Nothing here contacts the target. Every mistake is a one-line :class:`CommandError` (exit
status 2). A scenario file's ``[fleet]`` table gives defaults; an option given on the
command line wins.
"""
from __future__ import annotations

import argparse
import math
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from simulator.cli import CommandError

from .gates import Gate, parse_gate
from .limits import LimitError, parse_source_ips
from .plan import BrokerTarget, FleetPlan, ServerTarget, Workload, parse_shard
from .stages import Stage, StageError, check_stages, cli_stages, load_scenario

__all__ = ["build_plan", "parse_gates"]


def _fail(message: str) -> NoReturn:
    raise CommandError(message)


def parse_gates(expressions: list[str]) -> list[Gate]:
    """The ``--fail-if`` gates, or the default ones."""
    from .gates import DEFAULT_GATES
    return [parse_gate(text) for text in (expressions or DEFAULT_GATES)]


def build_plan(args: argparse.Namespace) -> FleetPlan:
    """Check the arguments and build the plan (target not contacted yet)."""
    scenario, stages = _scenario(args)
    handsets = args.handsets or scenario.get("handsets")
    if handsets is None:
        _fail("--handsets is required (or handsets in the scenario's [fleet] table)")
    if stages is None:
        if args.duration is None:
            _fail("--duration is required (or give --scenario FILE.toml with stages)")
        try:
            stages = cli_stages(handsets, args.duration, args.ramp, args.push_rate, args.drain)
        except StageError as exc:
            _fail(str(exc))
    try:
        check_stages(stages, handsets)
        shard = parse_shard(args.shard)
        source_ips = parse_source_ips(args.source_ips) if args.source_ips else ()
    except (ValueError, LimitError) as exc:
        _fail(str(exc))
    target = _target(args)
    workload = _workload(args, scenario, target)
    strategy = args.strategy or scenario.get("strategy")
    _check_strategy(strategy)
    radio_model = scenario.get("radio_model", args.radio_model)
    _check_radio(radio_model)
    _check_ca(args.ca)
    plan = FleetPlan(
        target=target, handsets=handsets, stages=stages, strategy=strategy,
        workers=args.workers or 1, shard=shard, source_ips=source_ips, workload=workload,
        ca_file=args.ca, connect_timeout=scenario.get("connect_timeout", args.connect_timeout),
        radio_model=radio_model, seed=args.seed, run_id=args.run_id or secrets.token_hex(4))
    _check_layout(plan, args)
    return plan


def _scenario(args: argparse.Namespace) -> tuple[dict[str, Any], tuple[Stage, ...] | None]:
    if not args.scenario:
        return {}, None
    if args.duration is not None:
        _fail("--duration comes from the scenario's stages; give one or the other")
    try:
        fleet, stages = load_scenario(Path(args.scenario))
    except StageError as exc:
        _fail(str(exc))
    return fleet, stages


def _target(args: argparse.Namespace) -> ServerTarget | BrokerTarget:
    from pushsdk.registration import parse_server_url

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
        return ServerTarget(url=args.server, app_key=args.app_key or "",
                            master_secret=args.master_secret or "")
    if args.admin_token or args.app_key or args.master_secret:
        _fail("--admin-token/--app-key/--master-secret are for --server")
    try:
        return BrokerTarget.from_url(args.broker, args.username, args.password)
    except ValueError as exc:
        _fail(str(exc))


def _workload(args: argparse.Namespace, scenario: dict[str, Any],
              target: ServerTarget | BrokerTarget) -> Workload:
    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else scenario.get(name, default)

    qos, session = pick("qos", 1), pick("session", "persistent")
    if isinstance(target, ServerTarget):
        if qos != 1 or session != "persistent":
            _fail("--qos and --session are for --broker; the server delivers at QoS 1 to "
                  "persistent sessions")
    if qos not in (0, 1, 2):
        _fail(f"qos must be 0, 1 or 2, got {qos!r}")
    if session not in ("persistent", "clean"):
        _fail(f"session must be persistent or clean, got {session!r}")
    prefix = pick("client_id_prefix", "")
    if prefix and any(c in prefix for c in "+#/\x00"):
        _fail(f"--client-id-prefix must not contain +, # or /: {prefix!r}")
    workload = Workload(qos=qos, payload_size=pick("payload_size", 0),
                        fan_out=pick("fan_out", 1), publishers=pick("publishers", 0),
                        session=session, cleanup=pick("cleanup", True),
                        client_id_prefix=prefix, topic_prefix=scenario.get("topic_prefix", ""),
                        **_mqtt5(pick, target, session))
    if isinstance(target, ServerTarget) and workload.payload_size > 3000:
        _fail("--payload-size: the server takes at most 4096 bytes of JSON per push; "
              "keep it at 3000 or less")
    return workload


def _mqtt5(pick: Callable[[str, Any], Any], target: ServerTarget | BrokerTarget,
           session: str) -> dict[str, Any]:
    """The MQTT version and what only 5.0 carries (session and message expiry, shared
    subscriptions), checked against the mode and the version."""
    server = isinstance(target, ServerTarget)
    version = pick("mqtt_version", "auto" if server else "3.1.1")
    if version not in ("3.1.1", "5", *(("auto",) if server else ())):
        _fail(f"mqtt_version must be 3.1.1 or 5, got {version!r}")
    transport = pick("mqtt_transport", "tcp")
    shared, message_expiry = pick("shared_group", ""), pick("message_expiry", None)
    session_expiry = pick("session_expiry", None)
    if server:
        if transport not in ("tcp", "ws"):
            _fail(f"--mqtt-transport must be tcp or ws, got {transport!r}")
        if shared or session_expiry is not None:
            _fail("--shared-group and --session-expiry are for --broker; the server keeps "
                  "one inbox per device")
    else:
        if transport != "tcp":
            _fail("--mqtt-transport is for --server; give the broker a ws:// or wss:// URL "
                  "for MQTT over WebSocket")
        needs_5 = [name for name, value in (("--shared-group", shared),
                                            ("--message-expiry", message_expiry),
                                            ("--session-expiry", session_expiry)) if value]
        if needs_5 and version != "5":
            _fail(f"{', '.join(needs_5)}: only in MQTT 5; add --mqtt-version 5")
        if session_expiry is not None and session != "persistent":
            _fail("--session-expiry is for --session persistent (a clean session ends with "
                  "its connection)")
    if shared and any(c in shared for c in "+#/\x00"):
        _fail(f"--shared-group must not contain +, # or /: {shared!r}")
    for name, value in (("--message-expiry", message_expiry),
                        ("--session-expiry", session_expiry)):
        if value is not None and not 0 < value < 2**32:
            _fail(f"{name} must be 1..4294967295 seconds, got {value!r}")
    return {"mqtt_version": version, "mqtt_transport": transport, "shared_group": shared,
            "message_expiry": message_expiry, "session_expiry": session_expiry}


def _check_strategy(strategy: str | None) -> None:
    from pushsdk.heartbeat import UnknownStrategyError, known_strategies, parse_strategy

    if not strategy:
        return
    try:
        parse_strategy(strategy)
    except (UnknownStrategyError, ValueError) as exc:
        _fail(str(exc))
    name = strategy.partition(":")[0]
    live = {usage.partition(":")[0] for usage in known_strategies(include_simulation=False)}
    if name not in live:
        _fail(f"strategy {name!r} exists only in simulation; over real sockets use one of "
              f"{', '.join(sorted(live))}")


def _check_radio(name: str) -> None:
    from simulator.radio import UnknownModelError, get_model

    try:
        get_model(name)
    except UnknownModelError as exc:
        _fail(str(exc))


def _check_ca(ca: str | None) -> None:
    from pushsdk.transport import TcpConnector, TlsError

    if ca:
        try:
            TcpConnector(ca_file=ca)
        except TlsError as exc:
            _fail(str(exc))


def _check_layout(plan: FleetPlan, args: argparse.Namespace) -> None:
    in_shard = len(plan.shard_handsets())
    if in_shard == 0:
        _fail(f"shard {plan.shard} of a {plan.handsets}-handset fleet has no handsets")
    groups = len(plan.shard_groups())
    if not args.cluster and plan.workers > groups:
        _fail(f"--workers {plan.workers} is more than the {groups} topic groups to run "
              f"({in_shard} handsets)")
    if args.cluster and args.shard != "0/1":
        _fail("--shard is for runs started by hand; with --cluster the shards are placed "
              "on the workers")
    if math.isinf(plan.connect_timeout):
        _fail("--connect-timeout must be finite")
