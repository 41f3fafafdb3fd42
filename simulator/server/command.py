"""``pushsim server``: run the reference push server on real sockets (interfaces §1).

:func:`run` turns the command line into :class:`~.settings.RunSettings` and calls
:func:`serve`, which is also what each worker process of ``--workers N`` runs. It prints
one JSON line on stdout once listening (``{"http", "mqtt", "admin_token"}``, plus
``"mqtts"`` and ``"https"`` when TLS serves them, ``"ws"``/``"wss"`` for MQTT over
WebSocket), logs to stderr, and shuts down cleanly
on SIGINT/SIGTERM (exit 0). Mistakes — a bad option, a port in use, an unusable database
or TLS directory — end with a one-line error and exit status 1 or 2.
"""
from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import math
import random
import signal
import ssl
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from .listeners import RunningServer, serve_tcp
from .server import PushServer
from .settings import Limits, RunSettings, ServerSettings
from .store import SqliteStore, StoreError
from .wallclock import SystemWallClock
from .logs import server_logger

if TYPE_CHECKING:
    from .cluster import MemberSpec

__all__ = ["add_arguments", "run", "serve", "settings_from_args"]

log = server_logger("simulator.server")
PROG = "pushsim server"
MQTTS_PORT = 8883
LIMITS = Limits()
SERVER = ServerSettings(admin_token="defaults")


class SettingsError(Exception):
    """A command line that cannot be run: ``str()`` is the one-line message."""


# --- argparse value types (one-line messages, no tracebacks) --------------------------------

def _number(kind: type, check: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and (
            value > 0 if check == "positive" else value >= 0)
        if not ok:
            wanted = {"positive": "> 0", "non-negative": ">= 0"}[check]
            raise argparse.ArgumentTypeError(f"must be a number {wanted}, got {text!r}")
        return value  # type: ignore[no-any-return]

    return parse


positive_float = _number(float, "positive")
non_negative_float = _number(float, "non-negative")
positive_int = _number(int, "positive")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0 = any free port): {port}")
    return port


def _workers(text: str) -> int:
    workers = int(positive_int(text))
    if workers > 64:
        raise argparse.ArgumentTypeError(f"must be 1-64: {workers}")
    return workers


def _keepalive(text: str) -> int | None:
    """A keepalive maximum: 1-65535 seconds, or ``off``."""
    if text.strip().lower() == "off":
        return None
    seconds = int(positive_int(text))
    if seconds > 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535 seconds (or off): {seconds}")
    return seconds


def _limit(kind: type):  # type: ignore[no-untyped-def]
    """A limit: a positive number, or ``off`` for none."""
    parse = _number(kind, "positive")

    def parse_limit(text: str) -> float | None:
        return None if text.strip().lower() == "off" else parse(text)

    return parse_limit


# --- the command line --------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pushsim server``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=_port, default=8480, metavar="P",
                        help="HTTP API port, 0 = any free port (default 8480)")
    parser.add_argument("--mqtt-port", type=_port, default=1883, metavar="P",
                        help="MQTT port, 0 = any free port (default 1883)")
    parser.add_argument("--tls-dir", default=None, metavar="DIR",
                        help="turn TLS on: the private CA (DIR/ca.pem, what clients trust) "
                             "and server certificate, created there on first use")
    parser.add_argument("--mqtts-port", type=_port, default=None, metavar="P",
                        help=f"MQTT over TLS port, with --tls-dir (default {MQTTS_PORT})")
    parser.add_argument("--https-port", type=_port, default=None, metavar="P",
                        help="also serve the HTTP API over TLS on this port, with --tls-dir")
    parser.add_argument("--ws-port", type=_port, default=None, metavar="P",
                        help="also serve MQTT over WebSocket (ws://HOST:P/mqtt, "
                             "subprotocol mqtt); 0 = any free port")
    parser.add_argument("--wss-port", type=_port, default=None, metavar="P",
                        help="also serve MQTT over WebSocket over TLS "
                             "(wss://HOST:P/mqtt), with --tls-dir")
    parser.add_argument("--db", default="./pushsim.db", metavar="PATH",
                        help="SQLite database file, or :memory: (default ./pushsim.db)")
    parser.add_argument("--admin-token", default=None, metavar="T",
                        help="bearer token for POST /v1/apps (default: a random one, printed)")
    parser.add_argument("--workers", type=_workers, default=1, metavar="N",
                        help="gateway processes sharing the ports (SO_REUSEPORT) and the "
                             "database file (default 1)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="stderr log level (default info)")
    _add_limit_arguments(parser)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("limits (a number, or 'off' where a limit may be off)")
    add = limits.add_argument
    add("--push-rate", type=positive_float, default=LIMITS.push_rate, metavar="PER_S",
        help="pushes per second allowed per app; bursts of twice that (default %(default)g)")
    add("--connect-rate", type=_limit(float), default=None, metavar="PER_S",
        help="admit at most this many MQTT CONNECTs per second, bursts of one second's "
             "worth; over it CONNACK 3 (server unavailable) makes devices back off "
             "(default: off)")
    add("--connect-timeout", type=positive_float, default=LIMITS.connect_timeout,
        metavar="S", help="seconds a new MQTT connection has to send CONNECT "
                          "(default %(default)g)")
    add("--request-timeout", type=positive_float, default=LIMITS.request_timeout,
        metavar="S", help="seconds an HTTP request (head and body) has to arrive after "
                          "its first byte (default %(default)g)")
    add("--registration-rate", type=_limit(float),
        default=LIMITS.registration_rate_per_address, metavar="PER_S",
        help="POST /v1/devices per second per source address, bursts of "
             f"{LIMITS.registration_burst_per_address:g}; 429 over it (default %(default)s)")
    add("--app-registration-rate", type=_limit(float),
        default=LIMITS.registration_rate_per_app, metavar="PER_S",
        help="POST /v1/devices per second per app, bursts of "
             f"{LIMITS.registration_burst_per_app:g} (default: off)")
    add("--receipt-rate", type=_limit(float), default=LIMITS.receipt_rate, metavar="PER_S",
        help=f"receipts per second per device, bursts of {LIMITS.receipt_burst:g}; over it "
             "the device is disconnected (default %(default)s)")
    add("--max-probes", type=_limit(int), default=LIMITS.max_probes_per_device, metavar="N",
        help="probe connections one device may hold at once (default %(default)s)")
    add("--connection-rate", type=_limit(float), default=LIMITS.connection_rate_per_address,
        metavar="PER_S", help="new connections per second per source address, bursts of "
        f"{LIMITS.connection_burst_per_address:g} (default %(default)s)")
    add("--request-rate", type=_limit(float), default=LIMITS.request_rate_per_address,
        metavar="PER_S", help="HTTP requests per second per source address, bursts of "
        f"{LIMITS.request_burst_per_address:g}; over it a request waits for its turn "
        "(--request-delay), then 429 (default %(default)s)")
    add("--request-delay", type=non_negative_float,
        default=LIMITS.request_delay_per_address, metavar="S",
        help="longest wait for its turn of a request over --request-rate; 0: 429 at once "
             "(default %(default)g)")
    add("--max-connections-per-address", type=_limit(int),
        default=LIMITS.max_connections_per_address, metavar="N",
        help="concurrent connections from one source address (default %(default)s)")
    add("--max-requests-per-connection", type=positive_int,
        default=LIMITS.max_requests_per_connection, metavar="N",
        help="HTTP requests on one keep-alive connection (default %(default)s)")
    add("--alias-device-limit", type=positive_int, default=SERVER.alias_device_limit,
        metavar="N",
        help="devices that may bind the same alias themselves (default %(default)s)")
    add("--max-keepalive", type=_keepalive, default=None, metavar="S",
        help="longest keepalive granted to MQTT 5.0 clients (told as Server Keep Alive); "
             "3.1.1 clients keep theirs (default: off)")
    add("--token-grace", type=non_negative_float, default=SERVER.token_grace, metavar="S",
        help="seconds a re-registered device's older tokens keep working "
             "(default %(default)g)")


def settings_from_args(args: argparse.Namespace, rng: random.Random) -> RunSettings:
    """The settings a command line asks for; :class:`SettingsError` for a bad one."""
    if args.tls_dir is None and (args.mqtts_port is not None or args.https_port is not None
                                 or args.wss_port is not None):
        raise SettingsError("--mqtts-port, --https-port and --wss-port need --tls-dir DIR")
    admin_token = args.admin_token
    if admin_token is None:
        admin_token = base64.urlsafe_b64encode(rng.randbytes(24)).decode()
    elif not admin_token.strip() or not admin_token.isprintable():
        raise SettingsError("--admin-token must be a non-empty printable string")
    limits = attrs.evolve(
        LIMITS, push_rate=args.push_rate, push_burst=2 * args.push_rate,
        connect_rate=args.connect_rate, connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout,
        registration_rate_per_address=args.registration_rate,
        registration_rate_per_app=args.app_registration_rate,
        receipt_rate=args.receipt_rate, max_probes_per_device=args.max_probes,
        connection_rate_per_address=args.connection_rate,
        request_rate_per_address=args.request_rate,
        request_delay_per_address=args.request_delay,
        max_connections_per_address=args.max_connections_per_address,
        max_requests_per_connection=args.max_requests_per_connection,
        max_keepalive=args.max_keepalive)
    server = ServerSettings(admin_token=admin_token, limits=limits,
                            alias_device_limit=args.alias_device_limit,
                            token_grace=args.token_grace)
    return RunSettings(server=server, db=args.db, host=args.host, http_port=args.http_port,
                       mqtt_port=args.mqtt_port, tls_dir=args.tls_dir,
                       mqtts_port=args.mqtts_port, https_port=args.https_port,
                       ws_port=args.ws_port, wss_port=args.wss_port,
                       workers=args.workers, log_level=args.log_level)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """``pushsim server``: run until SIGINT/SIGTERM; the exit status."""
    try:
        settings = settings_from_args(args, random.SystemRandom())
    except SettingsError as exc:
        return _error(str(exc))
    return serve(settings)


# --- serving -------------------------------------------------------------------------------

def serve(settings: RunSettings, *, member: MemberSpec | None = None) -> int:
    """Run a server with ``settings`` until SIGINT/SIGTERM; the exit status.

    With ``workers`` > 1 this process supervises that many workers
    (:mod:`.supervisor`); each of them runs this with its ``member`` spec.
    """
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        tls = _tls_context(settings)
    except SettingsError as exc:
        return _error(str(exc))
    if settings.workers > 1 and member is None:
        from .supervisor import run_cluster

        return run_cluster(settings)
    try:
        store = SqliteStore(settings.db, shared=member is not None)
    except StoreError as exc:
        return _error(str(exc))
    try:
        trio.run(functools.partial(_serve, store, settings, tls, member))
    except BaseException as exc:
        os_error = _find(exc, OSError)
        if isinstance(os_error, OSError):  # binding a port
            return _error(f"cannot listen on {settings.host}: "
                          f"{os_error.strerror or os_error}")
        if _find(exc, KeyboardInterrupt) is None:
            raise
    finally:
        store.close()
    log.info("stopped")
    return 0


def _tls_context(settings: RunSettings) -> ssl.SSLContext | None:
    if settings.tls_dir is None:
        return None
    from .tls import TlsSetupError, certificate_names, ensure_credentials, server_ssl_context

    try:
        credentials = ensure_credentials(settings.tls_dir,
                                         names=certificate_names(settings.host),
                                         now=SystemWallClock().now())
        context = server_ssl_context(credentials.files)
    except TlsSetupError as exc:
        raise SettingsError(str(exc)) from None
    log.info("TLS: trust %s; server key SPKI sha256 %s", credentials.files.ca_cert,
             credentials.server_spki_sha256)
    return context


def _find(exc: BaseException, cls: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first exception of type ``cls`` inside (exception groups)."""
    if isinstance(exc, cls):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, cls)
            if found is not None:
                return found
    return None


async def _serve(store: SqliteStore, settings: RunSettings, tls: ssl.SSLContext | None,
                 member: MemberSpec | None = None) -> None:
    mesh = None
    if member is not None:  # a worker of `--workers N`
        from .cluster import ClusterMember

        mesh = ClusterMember(member)
    limits = settings.server.limits
    server = PushServer(
        store, settings=settings.server, rng=random.SystemRandom(), recover=member is None,
        sessions=None if mesh is None else mesh.registry(limits.max_probes_per_device),
        metrics=None if mesh is None else mesh.metrics)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            if mesh is not None:
                await nursery.start(mesh.run, server)
            running: RunningServer = await nursery.start(functools.partial(
                serve_tcp, server, host=settings.host, http_port=settings.http_port,
                mqtt_port=settings.mqtt_port, tls=tls,
                mqtts_port=MQTTS_PORT if settings.mqtts_port is None else settings.mqtts_port,
                https_port=settings.https_port, ws_port=settings.ws_port,
                wss_port=settings.wss_port, reuse_port=member is not None,
            ))
            urls = {"http": running.http_url, "https": running.https_url,
                    "mqtt": running.mqtt_url, "mqtts": running.mqtts_url,
                    "ws": running.ws_url, "wss": running.wss_url}
            line = {kind: url for kind, url in urls.items() if url is not None}
            print(json.dumps({**line, "admin_token": settings.server.admin_token}),
                  flush=True)
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
