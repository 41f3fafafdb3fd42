"""``pushsdk register | listen | publish``: the SDK from the command line.

Output: ``register`` prints the registration answer as one JSON object; ``listen`` prints one
JSON line per message dispatched, flushed at once (broker mode: ``{"topic", "payload", "qos",
"retain"}``, plus ``"properties"`` with MQTT 5); ``publish`` prints nothing and exits 0 once
the message is acknowledged (QoS 1/2) or written (QoS 0). Errors are one line on stderr and a
non-zero exit status (2 for bad arguments, 1 for everything else). SIGTERM and SIGINT
disconnect cleanly (MQTT DISCONNECT) and exit 0 (SIGTERM) or 130 (SIGINT, as a shell expects
after Ctrl-C). A reader that stops reading stdout (``| head -1``) ends the command quietly
with exit status 0, whatever it was doing having been done (``register``: registered and
saved).

Arguments are checked before anything else happens: text options must be valid UTF-8 (bytes
that are not arrive as lone surrogates), file names may be any bytes. ``register`` and
``listen --server`` make sure that the state file can be written before they contact the
server: a registration binds a new device key to the device id, and a key that is not saved
locks the device id out (403 ``device_bound``).
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

import attrs
import trio

from .client import PushClient
from .reasons import Reason
from .config import BrokerConfig, ClientState, ServerConfig
from .dispatcher import BrokerMessage, PushMessage
from .errors import ConfigurationError, PushError
from .heartbeat import HeartbeatStrategy, UnknownStrategyError, known_strategies, parse_strategy
from .protocol import Properties
from ._server_mode import register_again
from .registration import parse_server_url
from ._topics import validate_topic_name
from .state import FileStateStore, SdkState
from .transport import TcpConnector

DEFAULT_STATE = "./pushsdk-state.bin"
PROG = "pushsdk"
EXIT_SIGINT = 130


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


class _Fail(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class _StdoutClosed(Exception):
    """Whoever reads our stdout has gone (``pushsdk ... | head -1``): not an error, the
    command stops quietly with exit status 0."""


def _print_line(text: str) -> None:
    """Print one line of output, flushed at once; :class:`_StdoutClosed` if the reader has
    gone (EPIPE). The one place where the commands write to stdout."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # What is still buffered can never be written: send it, and whatever else follows
        # (the flush at exit), to /dev/null, else Python reports the same error at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no real file descriptor (e.g. captured in a test)
            pass
        raise _StdoutClosed from None


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Device-side push SDK.")
    commands = parser.add_subparsers(dest="command", metavar="{register,listen,publish}")

    reg = commands.add_parser("register", help="register this device, print the answer")
    _server_options(reg, required=True)

    listen = commands.add_parser(
        "listen", help="receive messages, one JSON line each",
        description="Server mode (--server ...) or broker mode (--broker mqtt://HOST:PORT).")
    _server_options(listen, required=False)
    listen.add_argument("--strategy", metavar="NAME",
                        help="heartbeat strategy: " + ", ".join(known_strategies(
                            include_simulation=False)) + " (default fixed:270)")
    _broker_options(listen, required=False)
    listen.add_argument("--topic", metavar="T", action="append", default=[])
    listen.add_argument("--keepalive", metavar="S", type=int, default=60)
    listen.add_argument("--exit-after", metavar="N", type=int, help="exit after N messages")

    pub = commands.add_parser("publish", help="publish one message to a broker")
    _broker_options(pub, required=True)
    pub.add_argument("--topic", metavar="T", required=True)
    pub.add_argument("--message", metavar="M", required=True)
    pub.add_argument("--qos", type=int, choices=(0, 1, 2), default=0)
    pub.add_argument("--retain", action="store_true")
    pub.add_argument("--message-expiry", metavar="S", type=int,
                     help="seconds the broker keeps the message for subscribers (MQTT 5)")
    pub.add_argument("--user-property", metavar="K=V", action="append", default=[],
                     help="a user property, repeatable (MQTT 5)")
    _common_options(pub)
    return parser


def _broker_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--broker", metavar="URL", required=required,
                        help="mqtt://HOST:PORT, mqtts://..., ws://HOST:PORT/PATH or wss://...")
    parser.add_argument("--client-id", metavar="ID", required=required)
    parser.add_argument("--username", metavar="U")
    parser.add_argument("--password", metavar="P")
    parser.add_argument("--mqtt-version", choices=("3.1.1", "5"), default="3.1.1")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (PEM)")
    parser.add_argument("--key", metavar="FILE", help="its private key (PEM)")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", metavar="FILE", help="trust this CA certificate (PEM)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress to stderr (-vv for debug)")


def _server_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--server", metavar="URL", required=required)
    parser.add_argument("--app-key", metavar="K", required=required)
    parser.add_argument("--device-id", metavar="D", required=required)
    parser.add_argument("--platform", default="android")
    parser.add_argument("--alias")
    parser.add_argument("--tag", action="append", dest="tags", metavar="T")
    parser.add_argument("--state", metavar="FILE", default=DEFAULT_STATE,
                        help=f"state file (default {DEFAULT_STATE}, key in FILE.key)")
    _common_options(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("choose a command: register, listen or publish")
    _check_text(parser, args)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        if args.command == "register":
            _check_server_args(parser, args)
            _check_state_file(args.state)
            return trio.run(_register, args)
        plan = _plan(parser, args)
        return trio.run(_publish if args.command == "publish" else _listen, plan)
    except (_Fail, PushError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except _StdoutClosed:
        return 0  # as `listen` when its reader goes: what was asked for is done
    except KeyboardInterrupt:
        return EXIT_SIGINT


#: Options naming files: any bytes the file system allows (``sys.argv`` keeps bytes that are
#: not UTF-8 as lone surrogates, and ``os`` turns them back into the same bytes).
_FILE_OPTIONS = frozenset({"state", "ca", "cert", "key"})
#: Options that go into MQTT UTF-8 strings (or binary data, the password), at most 65,535
#: bytes each.
_MQTT_STRINGS = frozenset({"client_id", "username", "password"})
#: Options that go into an HTTP request line or header, or name the host to connect to:
#: printable ASCII (percent-encode a path, write an international host name as xn--...).
_ASCII_OPTIONS = frozenset({"server", "broker", "app_key"})
_MQTT_MAX = 0xFFFF


def _option(dest: str) -> str:
    return "--tag" if dest == "tags" else "--" + dest.replace("_", "-")


def _check_text(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every text option can be sent as what it is for; else a one-line argument error (exit
    2) naming the option, before anything is loaded or connected."""
    for dest, value in vars(args).items():
        if dest in _FILE_OPTIONS or dest == "command":
            continue
        values = value if isinstance(value, list) else [value]
        for text in values:
            if not isinstance(text, str):
                continue
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                parser.error(f"{_option(dest)} is not valid UTF-8")
            if dest in _MQTT_STRINGS and size > _MQTT_MAX:
                parser.error(f"{_option(dest)} is {size} bytes of UTF-8, over the MQTT "
                             f"limit of {_MQTT_MAX}")
            if dest in _ASCII_OPTIONS and not (text.isascii() and text.isprintable()
                                               and " " not in text):
                hint = ("" if dest == "app_key" else " (percent-encode the path, write an "
                        "international host name as xn--...)")
                parser.error(f"{_option(dest)} must be printable ASCII without spaces{hint}")


def _check_state_file(path: str) -> None:
    """Fail (exit 1) unless the state file can be saved, before the server is contacted:
    a registration binds a new device key to the device id, and a key that cannot be saved
    would lock that device id out."""
    try:
        FileStateStore(path).check_writable_sync()
    except OSError as exc:
        raise _Fail(f"cannot write state file {path}: {exc.strerror or exc}") from None


def _check_server_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        parse_server_url(args.server)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("app_key", "device_id"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} must not be empty")


def _connector(args: argparse.Namespace) -> TcpConnector:
    """The TCP/TLS connector; a file that cannot be loaded is a one-line failure."""
    return TcpConnector(ca_file=args.ca, cert_file=getattr(args, "cert", None),
                        key_file=getattr(args, "key", None))


async def _register(args: argparse.Namespace) -> int:
    """Register as ``listen`` would: with the installation's device key (made now and kept
    in the state file if there is none) and, as proof, the stored token of the device."""
    store = FileStateStore(args.state)
    state = (await store.load()) or SdkState()
    config = ServerConfig(server_url=args.server, app_key=args.app_key,
                          device_id=args.device_id, platform=args.platform,
                          alias=args.alias, tags=args.tags)
    state = await register_again(config, state, _connector(args), timeout=30.0,
                                 on_traffic=None)
    try:
        await store.save(state)
    except OSError as exc:
        raise _Fail(f"cannot write state file {args.state}: {exc.strerror or exc}") from None
    assert state.registration is not None
    _print_line(json.dumps(state.registration.answer()))
    return 0


@attrs.frozen
class _Plan:
    config: ServerConfig | BrokerConfig
    connector: TcpConnector
    strategy: HeartbeatStrategy | None = None
    state_store: FileStateStore | None = None
    exit_after: int | None = None
    message: tuple[str, bytes, int, bool] | None = None  # publish: topic, payload, qos, retain
    properties: Properties | None = None  # publish: MQTT 5 message properties


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> _Plan:
    """Check the listen/publish arguments and turn them into PushClient arguments."""
    try:
        if args.command == "publish":
            return _publish_plan(parser, args)
        return _listen_plan(parser, args)
    except ConfigurationError as exc:
        parser.error(str(exc))


def _broker_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   **fields: Any) -> BrokerConfig:
    if not args.client_id:
        parser.error("broker mode needs --client-id")
    if (args.username is None) != (args.password is None):
        parser.error("give --username and --password together")
    return BrokerConfig.from_url(args.broker, client_id=args.client_id,
                                 username=args.username, password=args.password,
                                 mqtt_version=args.mqtt_version, **fields)


def _publish_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> _Plan:
    try:
        validate_topic_name(args.topic)
    except ValueError as exc:
        parser.error(str(exc))
    properties = _message_properties(parser, args)
    config = _broker_config(parser, args, clean_session=True)
    return _Plan(config, _connector(args),
                 message=(args.topic, args.message.encode(), args.qos, args.retain),
                 properties=properties)


def _message_properties(parser: argparse.ArgumentParser,
                        args: argparse.Namespace) -> Properties | None:
    """``--message-expiry`` and ``--user-property K=V`` as MQTT 5 properties."""
    if args.message_expiry is None and not args.user_property:
        return None
    if args.mqtt_version != "5":
        parser.error("--message-expiry and --user-property need --mqtt-version 5")
    pairs = []
    for item in args.user_property:
        key, equals, value = item.partition("=")
        if not equals or not key:
            parser.error(f"--user-property takes KEY=VALUE, not {item!r}")
        pairs.append((key, value))
    if args.message_expiry is not None and not 0 <= args.message_expiry <= 0xFFFFFFFF:
        parser.error("--message-expiry must be 0..4294967295 seconds")
    try:
        return Properties(message_expiry_interval=args.message_expiry,
                          user_properties=tuple(pairs))
    except ValueError as exc:
        parser.error(str(exc))


def _listen_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> _Plan:
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
        if not args.topic:
            parser.error("broker mode needs at least one --topic")
        config = _broker_config(parser, args, topics=args.topic, keepalive=args.keepalive)
        return _Plan(config, _connector(args), strategy, None, args.exit_after)
    if not (args.server and args.app_key and args.device_id):
        parser.error("listen needs --server, --app-key and --device-id (or --broker ...)")
    _check_server_args(parser, args)
    _check_state_file(args.state)
    server = ServerConfig(server_url=args.server, app_key=args.app_key,
                          device_id=args.device_id, platform=args.platform,
                          alias=args.alias, tags=args.tags)
    return _Plan(server, _connector(args), strategy, FileStateStore(args.state),
                 args.exit_after)


class _Run:
    """What a listen/publish run waits for: the work being done, a first failure, or a
    signal; ``exit_status`` afterwards."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.failure: str | None = None
        self.connected_once = False
        self.exit_status = 0

    def state_changed(self, old: ClientState, new: ClientState, reason: Reason) -> None:
        if new is ClientState.CONNECTED:
            self.connected_once = True
            logging.getLogger("pushsdk.cli").info("connected")
        elif new is ClientState.WAITING:
            if not self.connected_once:  # the first attempt failed: report it and stop
                self.failure = self.failure or str(reason)
                self.done.set()
            else:
                print(f"{PROG}: disconnected: {reason}; reconnecting", file=sys.stderr)

    async def watch_signals(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if threading.current_thread() is not threading.main_thread():
            task_status.started()  # signals reach the main thread only (e.g. in tests)
            return
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                self.exit_status = EXIT_SIGINT if signum == signal.SIGINT else 0
                self.done.set()
                return

    async def run(self, client: PushClient, work: Any = None) -> int:
        """Run ``client`` until done; ``work(client)`` is awaited once connected."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.watch_signals)
                async with client:
                    if work is not None:
                        nursery.start_soon(self._work, client, work)
                    await self.done.wait()
                    await client.aclose()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _single(group) from None
        if self.failure is not None:
            raise _Fail(self.failure)
        return self.exit_status

    async def _work(self, client: PushClient, work: Any) -> None:
        try:
            await client.wait_connected()
            await work(client)
        except PushError as exc:
            self.failure = self.failure or str(exc)
        self.done.set()


def properties_json(props: Properties) -> dict[str, Any]:
    """MQTT 5 properties as JSON: the set fields by name; binary data in base64, user
    properties as ``[name, value]`` pairs in order."""
    out: dict[str, Any] = {}
    for name, value in props.as_dict().items():
        if isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
        elif isinstance(value, tuple):
            out[name] = [list(v) if isinstance(v, tuple) else v for v in value]
        else:
            out[name] = value
    return out


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one user-facing error inside a nursery's group (the group itself otherwise)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    for leaf in leaves:
        if isinstance(leaf, (PushError, _Fail, KeyboardInterrupt)):
            return leaf
    return group


async def _listen(plan: _Plan) -> int:
    run = _Run()
    count = 0
    v5 = isinstance(plan.config, BrokerConfig) and plan.config.mqtt_version == "5"

    def emit(message: PushMessage | BrokerMessage) -> None:
        nonlocal count
        if isinstance(message, BrokerMessage):
            line: dict[str, Any] = {"topic": message.topic, "payload": message.text,
                                    "qos": message.qos, "retain": message.retain}
            try:
                message.payload.decode("utf-8")
            except UnicodeDecodeError:
                line["payload_base64"] = base64.b64encode(message.payload).decode()
            if v5:
                line["properties"] = properties_json(message.properties)
        else:
            line = dict(message.data)
        try:
            _print_line(json.dumps(line, ensure_ascii=False))
        except _StdoutClosed:  # e.g. `pushsdk listen | head -1`
            run.done.set()
            return
        count += 1
        if plan.exit_after is not None and count >= plan.exit_after:
            run.done.set()

    client = PushClient(plan.config, connector=plan.connector, state_store=plan.state_store,
                        strategy=plan.strategy, on_notification=emit, on_message=emit,
                        on_deleted=emit, on_state_change=run.state_changed)
    return await run.run(client)


async def _publish(plan: _Plan) -> int:
    assert plan.message is not None
    topic, payload, qos, retain = plan.message
    run = _Run()

    async def send(client: PushClient) -> None:
        await client.publish(topic, payload, qos=qos, retain=retain,
                             properties=plan.properties)

    client = PushClient(plan.config, connector=plan.connector,
                        on_state_change=run.state_changed)
    return await run.run(client, send)
