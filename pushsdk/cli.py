"""``pushsdk register | listen``: the SDK from the command line (CONTRACT §1).

Output: ``register`` prints the registration answer as one JSON object; ``listen`` prints one
JSON line per message dispatched, flushed at once. Errors are one line on stderr and a
non-zero exit status (2 for bad arguments, 1 for everything else, 130 on Ctrl-C).
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from .client import BrokerConfig, ClientState, PushClient, ServerConfig
from .dispatcher import BrokerMessage, PushMessage
from .heartbeat import UnknownStrategyError, known_strategies, parse_strategy
from .registration import RegistrationError, parse_server_url, register
from .state import FileStateStore, SdkState
from .transport import TcpConnector, TransportError

DEFAULT_STATE = "./pushsdk-state.bin"
PROG = "pushsdk"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


class _Fail(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Device-side push SDK.")
    commands = parser.add_subparsers(dest="command", metavar="{register,listen}")

    reg = commands.add_parser("register", help="register this device, print the answer")
    _server_options(reg, required=True)

    listen = commands.add_parser(
        "listen",
        help="receive pushes, one JSON line each",
        description="Server mode (--server ...) or broker mode (--broker mqtt://HOST:PORT).",
    )
    _server_options(listen, required=False)
    listen.add_argument("--strategy", metavar="NAME",
                        help="heartbeat strategy: " + ", ".join(known_strategies(
                            include_simulation=False)) + " (default fixed:270)")
    listen.add_argument("--broker", metavar="URL", help="mqtt://HOST:PORT or mqtts://...")
    listen.add_argument("--client-id", metavar="ID")
    listen.add_argument("--username", metavar="U")
    listen.add_argument("--password", metavar="P")
    listen.add_argument("--topic", metavar="T", action="append", default=[])
    listen.add_argument("--keepalive", metavar="S", type=int, default=60)
    listen.add_argument("--exit-after", metavar="N", type=int,
                        help="exit after N messages")
    return parser


def _server_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--server", metavar="URL", required=required)
    parser.add_argument("--app-key", metavar="K", required=required)
    parser.add_argument("--device-id", metavar="D", required=required)
    parser.add_argument("--platform", default="android")
    parser.add_argument("--alias")
    parser.add_argument("--tag", action="append", dest="tags", metavar="T")
    parser.add_argument("--state", metavar="FILE", default=DEFAULT_STATE,
                        help=f"state file (default {DEFAULT_STATE}, key in FILE.key)")
    parser.add_argument("--ca", metavar="FILE", help="trust this CA certificate (PEM)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress to stderr (-vv for debug)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("choose a command: register or listen")
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        if args.command == "register":
            _check_server_args(parser, args)
            return trio.run(_register, args)
        return trio.run(_listen, _listen_plan(parser, args))
    except _Fail as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check_server_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        parse_server_url(args.server)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("app_key", "device_id"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} must not be empty")


def _connector(args: argparse.Namespace) -> TcpConnector:
    try:
        return TcpConnector(ca_file=args.ca)
    except TransportError as exc:
        raise _Fail(str(exc)) from None


async def _register(args: argparse.Namespace) -> int:
    store = FileStateStore(args.state)
    try:
        reg = await register(_connector(args), args.server, args.app_key, args.device_id,
                             platform=args.platform, alias=args.alias, tags=args.tags)
    except (RegistrationError, TransportError) as exc:
        raise _Fail(str(exc)) from None
    state = (await store.load()) or SdkState()
    try:
        await store.save(state.with_registration(reg))
    except OSError as exc:
        raise _Fail(f"cannot write state file {args.state}: {exc.strerror or exc}") from None
    print(json.dumps(reg.answer()), flush=True)
    return 0


def _listen_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Check the listen arguments and turn them into PushClient arguments."""
    if args.exit_after is not None and args.exit_after < 1:
        parser.error("--exit-after must be at least 1")
    strategy = None
    if args.strategy:
        try:
            strategy = parse_strategy(args.strategy)
        except UnknownStrategyError as exc:
            parser.error(str(exc))
    if args.broker and args.server:
        parser.error("give either --server or --broker, not both")
    if args.broker:
        if not args.client_id:
            parser.error("broker mode needs --client-id")
        if not args.topic:
            parser.error("broker mode needs at least one --topic")
        if (args.username is None) != (args.password is None):
            parser.error("give --username and --password together")
        try:
            config: ServerConfig | BrokerConfig = BrokerConfig.from_url(
                args.broker, client_id=args.client_id, topics=args.topic,
                username=args.username, password=args.password, keepalive=args.keepalive)
        except ValueError as exc:
            parser.error(str(exc))
        store = None  # broker mode keeps no state file
    else:
        if not (args.server and args.app_key and args.device_id):
            parser.error("listen needs --server, --app-key and --device-id (or --broker ...)")
        _check_server_args(parser, args)
        config = ServerConfig(server_url=args.server, app_key=args.app_key,
                              device_id=args.device_id, platform=args.platform,
                              alias=args.alias, tags=args.tags)
        store = FileStateStore(args.state)
    return {"config": config, "strategy": strategy, "state_store": store,
            "connector": _connector(args), "exit_after": args.exit_after}


async def _listen(plan: dict[str, Any]) -> int:
    done = trio.Event()
    failure: list[str] = []
    count = 0
    connected_once = False

    def emit(message: PushMessage | BrokerMessage) -> None:
        nonlocal count
        if isinstance(message, BrokerMessage):
            line: dict[str, Any] = {"topic": message.topic, "payload": message.text}
            try:
                message.payload.decode("utf-8")
            except UnicodeDecodeError:
                line["payload_base64"] = base64.b64encode(message.payload).decode()
        else:
            line = dict(message.data)
        try:
            print(json.dumps(line, ensure_ascii=False), flush=True)
        except BrokenPipeError:  # e.g. `pushsdk listen | head -1`
            done.set()
            return
        count += 1
        if plan["exit_after"] is not None and count >= plan["exit_after"]:
            done.set()

    def state_changed(old: ClientState, new: ClientState, reason: str) -> None:
        nonlocal connected_once
        if new is ClientState.CONNECTED:
            connected_once = True
            logging.getLogger("pushsdk.cli").info("connected")
        elif new is ClientState.WAITING:
            if not connected_once:  # the first attempt failed: report it and stop
                failure.append(reason)
                done.set()
            else:
                print(f"{PROG}: disconnected: {reason}; reconnecting", file=sys.stderr)

    async with PushClient(
        plan["config"],
        connector=plan["connector"],
        state_store=plan["state_store"],
        strategy=plan["strategy"],
        on_notification=emit,
        on_message=emit,
        on_deleted=emit,
        on_state_change=state_changed,
    ) as client:
        await done.wait()
        await client.aclose()
    if failure:
        raise _Fail(failure[0])
    return 0
