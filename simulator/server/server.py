"""The reference push server: one object owning the store, the routing table and metrics.

:class:`PushServer` serves accepted connections (``handle_http_stream``,
``handle_mqtt_stream``), so the same server runs on real sockets (:meth:`serve_tcp`,
:func:`run_server`) and on in-memory streams inside a virtual-time simulation. Its
operations (:meth:`create_app`, :meth:`register_device`, :meth:`push`, ...) are what the
HTTP API calls; a simulation may call them directly.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import ssl
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from pushsdk.clock import Clock, SystemClock

from . import http_api, mqtt_gateway
from .config import ServerConfig
from .metrics import Counters, ServerStatistics, render_prometheus
from .mqtt_gateway import MqttSession, inbox_topic
from .payloads import push_payload
from .ratelimit import TokenBucket
from .store import Device, MessageStatus, NewMessage, SqliteStore, Store
from .validation import DeviceRequest, DeviceUpdate, PushRequest, parse_push_request

__all__ = [
    "AppCredentials",
    "DeviceRegistration",
    "PushResult",
    "PushServer",
    "RunningServer",
    "run_server",
]

log = logging.getLogger("simulator.server")


@attrs.frozen
class AppCredentials:
    name: str
    app_key: str
    master_secret: str


@attrs.frozen
class DeviceRegistration:
    registration_id: str
    token: str
    token_expires_at: float
    inbox: str


@attrs.frozen
class PushResult:
    msg_id: str
    targets: int


@attrs.frozen
class RunningServer:
    """What :func:`run_server` / :meth:`PushServer.serve_tcp` report once listening."""

    server: PushServer
    host: str
    http_port: int
    mqtt_port: int
    #: None when TLS is off (or HTTPS was not asked for).
    mqtts_port: int | None = None
    https_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.http_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{_url_host(self.host)}:{self.mqtt_port}"

    @property
    def mqtts_url(self) -> str | None:
        return None if self.mqtts_port is None else \
            f"mqtts://{_url_host(self.host)}:{self.mqtts_port}"

    @property
    def https_url(self) -> str | None:
        return None if self.https_port is None else \
            f"https://{_url_host(self.host)}:{self.https_port}"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _sha256(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


class PushServer:
    """The reference push server.

    ``store`` holds everything durable; ``clock.now()`` gives Unix seconds (message times,
    token expiry); ``rng`` makes every id and secret (pass ``random.SystemRandom()`` for a
    real server, a seeded ``random.Random`` for a reproducible simulation).
    ``recover=False`` skips crash recovery of the store (a worker of a cluster, where the
    parent recovered it once and other workers' connections are live).
    """

    def __init__(self, store: Store, *, config: ServerConfig, clock: Clock | None = None,
                 rng: random.Random | None = None, recover: bool = True) -> None:
        self.store = store
        self.config = config
        self.limits = config.limits
        self.clock = clock if clock is not None else SystemClock()
        self.rng = rng if rng is not None else random.SystemRandom()
        self.counters = Counters()
        self._sessions: dict[str, MqttSession] = {}  # registration_id -> connected session
        self._buckets: dict[str, TokenBucket] = {}  # app_key -> push rate limit
        self._mqtt_connections = 0
        self._http_connections = 0
        #: The other worker processes of a cluster (``cluster.ClusterMember``), or None.
        self.peers: Any = None
        if recover:
            self.counters.messages_expired += store.recover()

    # --- connections --------------------------------------------------------------------

    async def handle_http_stream(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP/1.1 requests on one accepted connection until it closes."""
        await http_api.serve_http(self, stream)

    async def handle_mqtt_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one MQTT connection (a device) until it closes."""
        await mqtt_gateway.serve_mqtt(self, stream)

    async def serve_tcp(self, *, host: str = "127.0.0.1", http_port: int = 8480,
                        mqtt_port: int = 1883, tls: ssl.SSLContext | None = None,
                        mqtts_port: int = 8883, https_port: int | None = None,
                        reuse_port: bool = False,
                        task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
        """Listen on TCP (port 0 = any free port) and serve until cancelled.

        With a server-side ``tls`` context (see :mod:`simulator.server.tls`) MQTT over TLS
        is served on ``mqtts_port`` as well, and HTTPS on ``https_port`` if given; the
        registration answer then advertises the MQTTS endpoint (``"tls": true``), while
        plain MQTT stays open for broker-style clients.

        ``reuse_port=True`` listens with ``SO_REUSEPORT``, so that several processes serve
        the same ports (``pushsim server --workers N``).

        Reports a :class:`RunningServer` with the real ports. Raises ``OSError`` when a port
        cannot be bound (nothing is left listening then).
        """
        if https_port is not None and tls is None:
            raise ValueError("https_port needs a TLS context")
        handlers = {"http": (http_port, self.handle_http_stream),
                    "mqtt": (mqtt_port, self.handle_mqtt_stream)}
        if tls is not None:
            from .tls import tls_handler  # imports cryptography: only when TLS is on

            limits = self.limits
            # A client that never finishes its handshake is given the same time it would
            # have had to send CONNECT or an HTTP request on a plain connection.
            handlers["mqtts"] = (mqtts_port, tls_handler(
                self.handle_mqtt_stream, tls, handshake_timeout=limits.connect_timeout))
            if https_port is not None:
                handlers["https"] = (https_port, tls_handler(
                    self.handle_http_stream, tls, handshake_timeout=limits.request_timeout))
        listeners: dict[str, list[trio.SocketListener]] = {}
        if reuse_port:
            from .cluster import reuseport_listeners as open_listeners
        else:
            open_listeners = trio.open_tcp_listeners
        try:
            for kind, (port, _) in handlers.items():
                listeners[kind] = await open_listeners(port, host=host)
        except BaseException:
            for opened in listeners.values():
                for listener in opened:
                    await trio.aclose_forcefully(listener)
            raise
        ports = {kind: opened[0].socket.getsockname()[1] for kind, opened in listeners.items()}
        # What registration answers advertise: TLS whenever it is on (that is how the SDK
        # learns to use it), with the port really bound.
        advertised = {"mqtt_port": ports["mqtts"], "mqtt_tls": True} if tls is not None \
            else {"mqtt_port": ports["mqtt"]}
        self.config = attrs.evolve(self.config, **advertised)
        async with trio.open_nursery() as nursery:
            for kind, (_, handler) in handlers.items():
                nursery.start_soon(trio.serve_listeners, self._guard(handler), listeners[kind])
            running = RunningServer(self, host, ports["http"], ports["mqtt"],
                                    mqtts_port=ports.get("mqtts"),
                                    https_port=ports.get("https"))
            task_status.started(running)
            log.info("listening on %s: %s", host,
                     ", ".join(f"{kind.upper()} port {port}" for kind, port in ports.items()))

    @staticmethod
    def _guard(handler):  # type: ignore[no-untyped-def]
        """A connection handler whose bugs are logged instead of stopping the listener."""

        async def guarded(stream: trio.abc.Stream) -> None:
            try:
                await handler(stream)
            except Exception:
                log.exception("connection handler failed")

        return guarded

    # --- apps and devices ---------------------------------------------------------------

    def _hex_id(self, bits: int) -> str:
        return self.rng.getrandbits(bits).to_bytes(bits // 8, "big").hex()

    def _secret(self) -> str:
        return base64.urlsafe_b64encode(self.rng.randbytes(32)).rstrip(b"=").decode()

    def create_app(self, name: str) -> AppCredentials:
        app = AppCredentials(name=name, app_key=self._hex_id(96), master_secret=self._secret())
        self.store.create_app(app.app_key, name, _sha256(app.master_secret), self.clock.now())
        log.info("created app %s (%r)", app.app_key, name)
        return app

    def authenticate_app(self, app_key: str, master_secret: str) -> bool:
        """Whether ``master_secret`` is the secret of ``app_key`` (constant-time compare)."""
        stored = self.store.app_secret_hash(app_key)
        return stored is not None and hmac.compare_digest(stored, _sha256(master_secret))

    def app_exists(self, app_key: str) -> bool:
        return self.store.app_secret_hash(app_key) is not None

    def register_device(self, app_key: str, request: DeviceRequest) -> DeviceRegistration:
        """Register (idempotently per ``(app_key, device_id)``) and issue a fresh token."""
        token = self._secret()
        now = self.clock.now()
        expires_at = round(now + self.config.token_ttl, 3)
        rid = self.store.register_device(
            app_key, request.device_id, request.platform, request.alias, request.tags,
            new_registration_id=self._hex_id(80), token_hash=_sha256(token),
            token_expires_at=expires_at, now=now, webpush=request.webpush,
        )
        return DeviceRegistration(rid, token, expires_at, inbox_topic(app_key, rid))

    def webpush_keys(self, app_key: str, registration_id: str) -> tuple[str, str] | None:
        """``(p256dh, auth)`` a device of ``app_key`` registered for end-to-end encryption."""
        return self.store.webpush_keys(app_key, registration_id)

    def authenticate_device(self, token: str) -> tuple[str, str] | None:
        """``(registration_id, app_key)`` for a valid device token, else None."""
        return self.store.token_device(_sha256(token), self.clock.now())

    def update_device(self, registration_id: str, update: DeviceUpdate) -> Device:
        return self.store.update_device(registration_id, update.alias, update.tags,
                                        self.clock.now())

    # --- pushes -------------------------------------------------------------------------

    def take_push_token(self, app_key: str) -> float:
        """Apply the per-app rate limit: 0.0 if a push may go now, else seconds to wait."""
        now = trio.current_time()
        bucket = self._buckets.get(app_key)
        if bucket is None:
            bucket = self._buckets[app_key] = TokenBucket.full(
                self.limits.push_rate, self.limits.push_burst, now
            )
        wait = bucket.take(now)
        if wait:
            self.counters.rate_limited += 1
        return wait

    def push_body(self, app_key: str, body: Any) -> PushResult:
        """Check a decoded push body exactly as ``POST /v1/push`` does and push it.

        Raises :class:`~simulator.server.validation.InvalidRequest` (with the HTTP status
        it would get: 400 or 413) for a bad body. No rate limit is applied.
        """
        limits, config = self.limits, self.config
        request = parse_push_request(
            body, default_ttl=config.default_ttl, max_ttl=config.max_ttl,
            max_audience=limits.max_audience, max_payload=limits.max_push_payload,
        )
        return self.push(app_key, request)

    def push(self, app_key: str, request: PushRequest) -> PushResult:
        """Store a push for every device of its audience, durably, then wake the connected
        ones. When this returns the push is committed."""
        now = self.clock.now()
        expires_at = now + request.ttl
        msg_id = self._hex_id(96)
        targets = self.resolve(app_key, request.audience.kind, request.audience.values)
        message = NewMessage(
            msg_id=msg_id, app_key=app_key, kind=request.kind,
            payload=push_payload(msg_id, request, now, expires_at), sent_at=now,
            expires_at=expires_at, collapse_key=request.collapse_key,
            live_only=request.ttl == 0,
        )
        peers = self.peers
        outcome = self.store.add_push(
            message, targets, online=self._sessions if peers is None else peers.online(),
            queue_cap=self.limits.queue_cap,
            notice_id=lambda: self._hex_id(96),
            notice_expires_at=now + self.config.max_ttl,
        )
        counters = self.counters
        counters.pushes_accepted += 1
        counters.push_targets += outcome.targets
        counters.messages_expired += outcome.expired
        counters.messages_collapsed += outcome.collapsed
        counters.messages_dropped += outcome.dropped
        counters.deleted_notices += outcome.notices
        sessions = self._sessions
        for rid in outcome.queued:
            session = sessions.get(rid)
            if session is not None:
                session.wake()
        if peers is not None:  # devices connected to other worker processes
            peers.pushed(outcome.queued)
        return PushResult(msg_id, outcome.targets)

    def resolve(self, app_key: str, kind: str, values: Sequence[str] = ()) -> list[str]:
        """Registration ids of an audience (``all``, ``registration_id``, ``alias``, ``tag``)."""
        return self.store.resolve_audience(app_key, kind, values)

    def message_status(self, app_key: str, msg_id: str) -> MessageStatus | None:
        self.expire_due()
        return self.store.message_status(app_key, msg_id)

    def expire_due(self) -> None:
        """Expire queued messages whose time has passed (also done lazily per device)."""
        self.counters.messages_expired += self.store.expire_due(self.clock.now())

    # --- observation --------------------------------------------------------------------

    def is_online(self, registration_id: str) -> bool:
        return registration_id in self._sessions

    def statistics(self) -> ServerStatistics:
        self.expire_due()
        counts = self.store.counts()
        c = self.counters
        return ServerStatistics(
            mqtt_connections=self._mqtt_connections,
            sessions=len(self._sessions),
            http_connections=self._http_connections,
            inflight=sum(len(s.inflight) for s in self._sessions.values()),
            queue_depth=counts.pending,
            apps=counts.apps,
            devices=counts.devices,
            http_requests=c.http_requests,
            pushes_accepted=c.pushes_accepted,
            push_targets=c.push_targets,
            messages_sent=c.messages_sent,
            messages_redelivered=c.messages_redelivered,
            messages_delivered=c.messages_delivered,
            messages_expired=c.messages_expired,
            messages_collapsed=c.messages_collapsed,
            messages_dropped=c.messages_dropped,
            messages_discarded=c.messages_discarded,
            deleted_notices=c.deleted_notices,
            receipts=c.receipts,
            mqtt_connections_accepted=c.mqtt_connections_accepted,
            mqtt_connections_refused=c.mqtt_connections_refused,
            mqtt_takeovers=c.mqtt_takeovers,
            mqtt_probes=c.mqtt_probes,
            mqtt_keepalive_timeouts=c.mqtt_keepalive_timeouts,
            mqtt_protocol_errors=c.mqtt_protocol_errors,
            mqtt_acl_violations=c.mqtt_acl_violations,
            rate_limited=c.rate_limited,
            http_responses=tuple(sorted(c.http_responses.items())),
        )

    def metrics_text(self) -> bytes:
        """GET /metrics: Prometheus text format."""
        return render_prometheus(self.statistics())


async def run_server(
    config: ServerConfig,
    *,
    db: str = ":memory:",
    host: str = "127.0.0.1",
    http_port: int = 8480,
    mqtt_port: int = 1883,
    tls: ssl.SSLContext | None = None,
    mqtts_port: int = 8883,
    https_port: int | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the store, listen, serve until cancelled, then close connections and the store.

    ``tls``, ``mqtts_port`` and ``https_port`` are as for :meth:`PushServer.serve_tcp`.

    Raises :class:`~simulator.server.store.StoreError` for an unusable database and
    ``OSError`` for a port that cannot be bound, before reporting started.
    """
    store = SqliteStore(db)
    try:
        server = PushServer(store, config=config, clock=clock, rng=rng)
        await server.serve_tcp(host=host, http_port=http_port, mqtt_port=mqtt_port, tls=tls,
                               mqtts_port=mqtts_port, https_port=https_port,
                               task_status=task_status)
    finally:
        store.close()
        log.info("stopped; database closed")
