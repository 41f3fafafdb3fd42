"""``pushsim server``: run the reference push server on real sockets (CONTRACT §1).

Prints one JSON line on stdout once listening (``{"http", "mqtt", "admin_token"}``, plus
``"mqtts"`` and ``"https"`` when TLS serves them), logs to stderr, and shuts down cleanly
on SIGINT/SIGTERM (exit 0). Mistakes — a bad option, a port in use, an unusable database
or TLS directory — end with a one-line error and exit status 1 or 2.
"""
from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import random
import signal
import ssl
import sys

import trio

from pushsdk.clock import SystemClock
from simulator.argtypes import positive_float, positive_int

from .config import Limits, ServerConfig
from .server import PushServer, RunningServer
from .store import SqliteStore, StoreError

__all__ = ["add_arguments", "run"]

log = logging.getLogger("simulator.server")
PROG = "pushsim server"
MQTTS_PORT = 8883


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0 = any free port): {port}")
    return port


def _workers(text: str) -> int:
    workers = positive_int(text)
    if workers > 64:
        raise argparse.ArgumentTypeError(f"must be 1-64: {workers}")
    return workers


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
    parser.add_argument("--db", default="./pushsim.db", metavar="PATH",
                        help="SQLite database file, or :memory: (default ./pushsim.db)")
    parser.add_argument("--admin-token", default=None, metavar="T",
                        help="bearer token for POST /v1/apps (default: a random one, printed)")
    parser.add_argument("--push-rate", type=positive_float, default=Limits().push_rate, metavar="PER_S",
                        help="pushes per second allowed per app; bursts of twice that "
                             "(default %(default)g)")
    parser.add_argument("--connect-rate", type=positive_float, default=None, metavar="PER_S",
                        help="admit at most this many MQTT CONNECTs per second, bursts of "
                             "one second's worth; over it CONNACK 3 (server unavailable) "
                             "makes devices back off (default: no limit)")
    parser.add_argument("--connect-timeout", type=positive_float, default=Limits().connect_timeout,
                        metavar="S", help="seconds a new MQTT connection has to send "
                                          "CONNECT (default %(default)g)")
    parser.add_argument("--request-timeout", type=positive_float, default=Limits().request_timeout,
                        metavar="S", help="seconds an HTTP request (head and body) has to "
                                          "arrive after its first byte (default %(default)g)")
    parser.add_argument("--workers", type=_workers, default=1, metavar="N",
                        help="gateway processes sharing the ports (SO_REUSEPORT) and the "
                             "database file (default 1)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="stderr log level (default info)")


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace, *, member: tuple[int, int, str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; the exit status.

    With ``--workers N`` > 1 this process supervises N workers (:mod:`.cluster`); a worker
    runs this with ``member = (index, workers, control directory)``.
    """
    if args.tls_dir is None and (args.mqtts_port is not None or args.https_port is not None):
        return _error("--mqtts-port and --https-port need --tls-dir DIR")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tls = None
    if args.tls_dir is not None:
        from .tls import TlsSetupError, certificate_names, ensure_credentials, server_ssl_context

        try:
            credentials = ensure_credentials(args.tls_dir, names=certificate_names(args.host),
                                             now=SystemClock().now())
            tls = server_ssl_context(credentials.files)
        except TlsSetupError as exc:
            return _error(str(exc))
        log.info("TLS: trust %s; server key SPKI sha256 %s", credentials.files.ca_cert,
                 credentials.server_spki_sha256)
    rng = random.SystemRandom()
    admin_token = args.admin_token
    if admin_token is None:
        admin_token = base64.urlsafe_b64encode(rng.randbytes(24)).decode()
    elif not admin_token.strip() or not admin_token.isprintable():
        return _error("--admin-token must be a non-empty printable string")
    config = ServerConfig(
        admin_token=admin_token,
        limits=Limits(push_rate=args.push_rate, push_burst=2 * args.push_rate,
                      connect_rate=args.connect_rate, connect_timeout=args.connect_timeout,
                      request_timeout=args.request_timeout),
    )
    if getattr(args, "workers", 1) > 1:
        from .cluster import run_cluster

        return run_cluster(args, admin_token)
    try:
        store = SqliteStore(args.db, shared=member is not None)
    except StoreError as exc:
        return _error(str(exc))
    try:
        trio.run(functools.partial(_serve, store, config, args, rng, tls, member))
    except BaseException as exc:
        os_error = _find(exc, OSError)
        if os_error is not None:  # binding a port
            return _error(f"cannot listen on {args.host}: {os_error.strerror or os_error}")
        if _find(exc, KeyboardInterrupt) is None:
            raise
    finally:
        store.close()
    log.info("stopped")
    return 0


def _find(exc: BaseException, cls: type[BaseException]):  # type: ignore[no-untyped-def]
    """``exc`` itself or the first exception of type ``cls`` inside (exception groups)."""
    if isinstance(exc, cls):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, cls)
            if found is not None:
                return found
    return None


async def _serve(store: SqliteStore, config: ServerConfig, args: argparse.Namespace,
                 rng: random.Random, tls: ssl.SSLContext | None,
                 member: tuple[int, int, str] | None = None) -> None:
    mesh = None
    sessions = None
    if member is not None:  # a worker of `--workers N`
        from .cluster import ClusterMember

        mesh = ClusterMember(*member)
        sessions = mesh.registry(config.limits.max_probes_per_device)
    server = PushServer(store, config=config, rng=rng, recover=member is None,
                        sessions=sessions)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            if mesh is not None:
                mesh.counters = server.counters
                await nursery.start(mesh.run)
            running: RunningServer = await nursery.start(functools.partial(
                server.serve_tcp, host=args.host, http_port=args.http_port,
                mqtt_port=args.mqtt_port, tls=tls,
                mqtts_port=MQTTS_PORT if args.mqtts_port is None else args.mqtts_port,
                https_port=args.https_port, reuse_port=member is not None,
            ))
            urls = {"http": running.http_url, "https": running.https_url,
                    "mqtt": running.mqtt_url, "mqtts": running.mqtts_url}
            line = {kind: url for kind, url in urls.items() if url is not None}
            print(json.dumps({**line, "admin_token": config.admin_token}), flush=True)
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
