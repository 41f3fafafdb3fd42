"""The reference push server: one object owning the store, the routing table and metrics.

:class:`PushServer` serves accepted connections (``handle_http_stream``,
``handle_mqtt_stream``), so the same server runs on real sockets (:meth:`serve_tcp`,
:func:`run_server`) and on in-memory streams inside a virtual-time simulation. Its
operations (:meth:`create_app`, :meth:`register_device`, :meth:`push`, ...) are what the
HTTP API calls; a simulation may call them directly.

Writes go through the server's :class:`~simulator.server.committer.Committer`. The
``*_async`` operations (what the HTTP API and the MQTT gateway use) wait for their commit;
their plain twins (``create_app``, ``register_device``, ``push``, ``push_body``, ...) are
for in-process callers — simulations, tests, tools — and commit at once, which is
possible whenever the committer is immediate or not running.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import random
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import trio

from . import http_api, listeners, mqtt_gateway, websocket, writes
from .admission import ConnectAdmission
from .committer import Committer, in_thread
from .connections import ConnectionTable
from .keys import b64url_encode
from .logs import suppressed_records
from .metrics import COUNTER_FIELDS, ServerCounters, ServerStatistics, merge, \
    render_prometheus, snapshot
from .mqtt_session import Flusher, SendGuard, inbox_topic
from .payloads import push_payload
from .ratelimit import KeyedBuckets, TokenBucket
from .records import Refusal, Refused, Registered, TokenOwner
from .sessions import SessionRegistry
from .settings import ServerSettings
from .store import Device, MessageStatus, NewMessage, Store, split_live
from .validation import DeviceRequest, DeviceUpdate, PushRequest, parse_push_request
from .wallclock import SystemWallClock, WallClock
from .logs import server_logger

__all__ = [
    "AppCredentials",
    "DeviceRegistration",
    "PushResult",
    "PushServer",
    "Refused",
]

log = server_logger("simulator.server")
T = TypeVar("T")


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


def _sha256(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


class MetricsSource(Protocol):
    """The metrics of every process serving, given this one's (``cluster.py``)."""

    async def collect(self, local: dict[str, Any]) -> list[dict[str, Any]]: ...


class PushServer:
    """The reference push server.

    ``store`` holds everything durable; ``clock.now()`` gives Unix seconds (message times,
    token expiry); ``rng`` makes every id and secret (pass ``random.SystemRandom()`` for a
    real server, a seeded ``random.Random`` for a reproducible simulation).
    ``recover=False`` skips crash recovery of the store (a worker of a cluster, where the
    parent recovered it once and other workers' connections are live).

    ``committer`` runs the writes; by default a database file gets a batching one (group
    commit on a worker thread, started by :meth:`serve_tcp`) and ``:memory:`` an immediate
    one (every write committed at once on the trio thread: what a simulation needs).
    """

    def __init__(self, store: Store, *, settings: ServerSettings, clock: WallClock | None = None,
                 rng: random.Random | None = None, recover: bool = True,
                 committer: Committer | None = None,
                 sessions: SessionRegistry | None = None,
                 metrics: MetricsSource | None = None) -> None:
        self.store = store
        if committer is None:
            on_disk = getattr(store, "on_disk", False)
            committer = Committer(store, in_thread if on_disk else None)
        self.committer = committer
        self.settings = settings
        self.limits = limits = settings.limits
        self.clock: WallClock = clock if clock is not None else SystemWallClock()
        self.rng = rng if rng is not None else random.SystemRandom()
        self.counters = ServerCounters()
        #: The devices connected to this process (a cluster worker injects a routed one).
        self.sessions = sessions if sessions is not None else SessionRegistry(
            probe_limit=limits.max_probes_per_device)
        self._buckets: dict[str, TokenBucket] = {}  # app_key -> push rate limit
        #: Where the metrics of the other processes of a cluster come from (None: alone).
        self.metrics = metrics
        #: Open connections by protocol and source address.
        self.connections = ConnectionTable(limits.max_connections_per_address,
                                           limits.connection_rate_per_address,
                                           limits.connection_burst_per_address)
        #: HTTP requests per source address.
        self.request_limit = KeyedBuckets(limits.request_rate_per_address,
                                          limits.request_burst_per_address)
        self._copied = (0, suppressed_records())  # see _sync_counters
        #: MQTT CONNECT admission (a token bucket; unlimited by default).
        self.admission = ConnectAdmission.from_limits(limits.connect_rate, limits.connect_burst)
        #: Flushes sessions on TCP sockets while :meth:`serve_tcp` runs (else None).
        self.flusher: Flusher | None = None
        #: Ends connections whose device does not read (a task of its own on sockets).
        self.send_guard = SendGuard(limits.send_timeout)
        #: Receipts per device (a token bucket each, kept across its connections).
        self.receipt_limit = KeyedBuckets(limits.receipt_rate, limits.receipt_burst)
        #: POST /v1/devices per source address and per app.
        self.registration_limits = (
            KeyedBuckets(limits.registration_rate_per_address,
                         limits.registration_burst_per_address),
            KeyedBuckets(limits.registration_rate_per_app, limits.registration_burst_per_app))
        if recover:
            self.counters.messages_expired += committer.now(writes.recover)

    # --- connections --------------------------------------------------------------------

    async def handle_http_stream(self, stream: trio.abc.Stream,
                                 peer: str | None = None) -> None:
        """Serve HTTP/1.1 requests on one accepted connection until it closes. ``peer``
        is its source address (per-address limits), None for an in-memory stream."""
        await http_api.serve_http(self, stream, peer)

    async def handle_mqtt_stream(self, stream: trio.abc.Stream,
                                 peer: str | None = None) -> None:
        """Serve one MQTT connection (a device) until it closes; ``peer`` as above."""
        await mqtt_gateway.serve_mqtt(self, stream, peer)

    async def handle_ws_stream(self, stream: trio.abc.Stream,
                               peer: str | None = None) -> None:
        """Serve one MQTT-over-WebSocket connection (path ``/mqtt``, subprotocol
        ``mqtt``) until it closes; ``peer`` as above."""
        await websocket.serve_websocket(self, stream, peer)

    async def serve_tcp(self, **options: Any) -> None:
        """Listen on TCP and serve until cancelled: :func:`.listeners.serve_tcp` (same
        options, ``task_status`` included)."""
        await listeners.serve_tcp(self, **options)

    def advertise(self, mqtt_port: int, *, tls: bool) -> None:
        """The MQTT endpoint registration answers tell devices (the port really bound)."""
        self.settings = attrs.evolve(self.settings, mqtt_port=mqtt_port, mqtt_tls=tls)

    def advertise_ws(self, url: str | None) -> None:
        """The MQTT-over-WebSocket URL registration answers tell devices (``mqtt.ws``;
        its host is replaced by the one the device used, like ``mqtt.host``), or None."""
        self.settings = attrs.evolve(self.settings, mqtt_ws_url=url)

    # --- apps and devices ---------------------------------------------------------------

    def _hex_id(self, bits: int) -> str:
        return self.rng.getrandbits(bits).to_bytes(bits // 8, "big").hex()

    def _secret(self) -> str:
        return base64.urlsafe_b64encode(self.rng.randbytes(32)).rstrip(b"=").decode()

    def run_now(self, call: Coroutine[Any, Any, T]) -> T:
        """Run an ``*_async`` operation to the end without an event loop: it never waits
        while the committer is immediate or not running (its writes commit at once)."""
        if self.committer.running:
            call.close()
            raise RuntimeError("the committer batches writes now: use the *_async method")
        try:
            call.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        call.close()
        raise RuntimeError("an operation waited although its writes commit at once")

    async def create_app_async(self, name: str) -> AppCredentials:
        app = AppCredentials(name=name, app_key=self._hex_id(96), master_secret=self._secret())
        await self.committer.write(writes.create_app, app.app_key, name,
                                   _sha256(app.master_secret), self.clock.now(), durable=True)
        log.info("created app %s (%r)", app.app_key, name)
        return app

    def create_app(self, name: str) -> AppCredentials:
        return self.run_now(self.create_app_async(name))

    def authenticate_app(self, app_key: str, master_secret: str) -> bool:
        """Whether ``master_secret`` is the secret of ``app_key`` (constant-time compare)."""
        stored = self.store.app_secret_hash(app_key)
        return stored is not None and hmac.compare_digest(stored, _sha256(master_secret))

    def app_exists(self, app_key: str) -> bool:
        return self.store.app_secret_hash(app_key) is not None

    async def register_device_async(self, app_key: str, request: DeviceRequest, *,
                                    bearer: str | None = None) -> DeviceRegistration:
        """Register a device and issue it a fresh token (docs/security.md, "Device
        identity"): a device id seen before only for a caller that proves it is that
        installation (``request.proof``, or for an unbound registration ``bearer``, one of
        its tokens). Raises :class:`Refused` (401 with a challenge, 403, 409) otherwise."""
        settings = self.settings
        now = self.clock.now()
        identity = writes.Identity(
            bearer_hash=None if bearer is None else _sha256(bearer),
            challenge=b64url_encode(self.rng.randbytes(32)),
            challenge_expires_at=now + settings.challenge_ttl,
            max_challenges=settings.max_challenges_per_device,
            token_grace=settings.token_grace, alias_limit=settings.alias_device_limit)
        if request.proof is None and bearer is None \
                and self.store.device_registered(app_key, request.device_id):
            # Known device, nothing shown: a challenge, without the fsync of a registration.
            await self.committer.write(
                writes.issue_challenge, app_key, request.device_id, identity.challenge,
                identity.challenge_expires_at, identity.max_challenges, now)
            self.counters.registrations_refused += 1
            raise Refused(writes.proof_required(identity, now))
        token = self._secret()
        token_hash = _sha256(token)
        expires_at = round(now + settings.token_ttl, 3)
        register = functools.partial(
            writes.register_device, new_registration_id=self._hex_id(80),
            token_hash=token_hash, token_expires_at=expires_at, now=now)
        outcome = await self.committer.write(register, app_key, request, identity,
                                             durable=True)
        if isinstance(outcome, Refusal):
            self.counters.registrations_refused += 1
            raise Refused(outcome)
        assert isinstance(outcome, Registered)
        self.counters.registrations += 1
        rid = outcome.registration_id
        if not outcome.created:  # older tokens go after the grace, and sessions using them
            self.sessions.revoke(rid, settings.token_grace, keep=token_hash)
        return DeviceRegistration(rid, token, expires_at, inbox_topic(app_key, rid))

    def register_device(self, app_key: str, request: DeviceRequest, *,
                        bearer: str | None = None) -> DeviceRegistration:
        return self.run_now(self.register_device_async(app_key, request, bearer=bearer))

    def webpush_keys(self, app_key: str, registration_id: str) -> tuple[str, str] | None:
        """``(p256dh, auth)`` a device of ``app_key`` registered for end-to-end encryption."""
        return self.store.webpush_keys(app_key, registration_id)

    def authenticate_device(self, token: str) -> TokenOwner | None:
        """Who a valid (unexpired, unrevoked) device token belongs to, else None."""
        return self.store.token_device(_sha256(token), self.clock.now())

    async def update_device_async(self, registration_id: str, update: DeviceUpdate, *,
                                  by_app: bool = False) -> Device:
        """Change a device's alias and tags. The device itself (``by_app=False``) may bind
        an alias only while ``alias_device_limit`` other devices do not hold it
        (:class:`Refused` 409); its app server (``by_app=True``) binds any."""
        limit = None if by_app else self.settings.alias_device_limit
        device = await self.committer.write(writes.update_device, registration_id,
                                            update.alias, update.tags, self.clock.now(),
                                            limit, durable=True)
        if device is None:
            raise KeyError(registration_id)
        if isinstance(device, Refusal):
            raise Refused(device)
        return device  # type: ignore[no-any-return]

    def update_device(self, registration_id: str, update: DeviceUpdate, *,
                      by_app: bool = False) -> Device:
        return self.run_now(self.update_device_async(registration_id, update, by_app=by_app))

    async def delete_device_async(self, app_key: str, registration_id: str) -> bool:
        """Unregister: tokens stop working at once (connections close), nothing more is
        queued, the device id is free again. False if ``app_key`` has no such device."""
        deleted = await self.committer.write(writes.delete_device, app_key, registration_id,
                                             self.clock.now(),
                                             durable=True)
        if deleted is None:
            return False
        self.counters.devices_deleted += 1
        self.counters.messages_dropped += deleted.dropped
        self.sessions.revoke(registration_id, 0.0)
        log.info("device %s of app %s unregistered (%d queued messages dropped)",
                 registration_id, app_key, deleted.dropped)
        return True

    def delete_device(self, app_key: str, registration_id: str) -> bool:
        return self.run_now(self.delete_device_async(app_key, registration_id))

    def device_app(self, registration_id: str) -> str | None:
        """The app key a registration belongs to, None if unknown."""
        device = self.store.device(registration_id)
        return None if device is None else device.app_key

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

    def take_registration_token(self, app_key: str, peer: str | None) -> float:
        """Apply the registration limits (per source address, per app): 0.0 if a
        ``POST /v1/devices`` may go now, else seconds to wait."""
        per_address, per_app = self.registration_limits
        if (peer is None or per_address.rate is None) and per_app.rate is None:
            return 0.0  # nothing to apply (in-process callers may have no event loop)
        now = trio.current_time()
        wait = per_address.take(peer, now) if peer is not None else 0.0
        wait = wait or per_app.take(app_key, now)
        if wait:
            self.counters.registrations_rate_limited += 1
        return wait

    async def push_body_async(self, app_key: str, body: Any) -> PushResult:
        """Check a decoded push body exactly as ``POST /v1/push`` does and push it.

        Raises :class:`~simulator.server.validation.InvalidRequest` (with the HTTP status
        it would get: 400 or 413) for a bad body. No rate limit is applied.
        """
        limits, config = self.limits, self.settings
        request = parse_push_request(
            body, default_ttl=config.default_ttl, max_ttl=config.max_ttl,
            max_audience=limits.max_audience, max_payload=limits.max_push_payload,
        )
        return await self.push_async(app_key, request)

    def push_body(self, app_key: str, body: Any) -> PushResult:
        return self.run_now(self.push_body_async(app_key, body))

    async def push_async(self, app_key: str, request: PushRequest) -> PushResult:
        """Store a push for every device of its audience, durably, then wake the connected
        ones. When this returns the push is committed (on disk, for a file database)."""
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
        sessions = self.sessions
        queued, offline = split_live(message, targets, sessions.online())
        add_push = functools.partial(
            writes.add_push, queue_cap=self.limits.queue_cap,
            notice_id=functools.partial(self._hex_id, 96),
            notice_expires_at=now + self.settings.max_ttl)
        outcome = await self.committer.write(add_push, message, queued, offline, durable=True)
        counters = self.counters
        counters.pushes_accepted += 1
        counters.push_targets += outcome.targets
        counters.messages_expired += outcome.expired
        counters.messages_collapsed += outcome.collapsed
        counters.messages_dropped += outcome.dropped
        counters.deleted_notices += outcome.notices
        sessions.wake(outcome.queued)  # routed to other workers in a cluster
        return PushResult(msg_id, outcome.targets)

    def push(self, app_key: str, request: PushRequest) -> PushResult:
        return self.run_now(self.push_async(app_key, request))

    def resolve(self, app_key: str, kind: str, values: Sequence[str] = ()) -> list[str]:
        """Registration ids of an audience (``all``, ``registration_id``, ``alias``, ``tag``)."""
        return self.store.resolve_audience(app_key, kind, values)

    async def message_status_async(self, app_key: str, msg_id: str) -> MessageStatus | None:
        """The message's delivery status, including every acknowledgement this process
        received before the call (it waits for their marks to be committed)."""
        self.expire_due()
        await self.committer.sync()
        return self.store.message_status(app_key, msg_id)

    def message_status(self, app_key: str, msg_id: str) -> MessageStatus | None:
        return self.run_now(self.message_status_async(app_key, msg_id))

    def expire_due(self) -> None:
        """Expire queued messages whose time has passed (also done lazily per device)."""
        self.committer.post(writes.expire_due, self.clock.now(), self.count_expired)

    def count_expired(self, n: int) -> None:
        self.counters.messages_expired += n

    def count_delivered(self, n: int) -> None:
        self.counters.messages_delivered += n

    def count_receipts(self, n: int) -> None:
        self.counters.receipts += n

    # --- observation --------------------------------------------------------------------

    def is_online(self, registration_id: str) -> bool:
        return registration_id in self.sessions

    def statistics(self) -> ServerStatistics:
        """This process's counters and gauges (the store's figures included)."""
        self.expire_due()
        self._sync_counters()
        c = self.counters
        counts = {name: getattr(c, name) for name in COUNTER_FIELDS}
        return ServerStatistics(**self._gauges(), **self._store_gauges(),
                                http_responses=tuple(sorted(c.http_responses.items())),
                                **counts)

    def _gauges(self) -> dict[str, int]:
        open_ = self.connections.open
        return {"mqtt_connections": open_["mqtt"], "sessions": len(self.sessions),
                "http_connections": open_["http"], "inflight": self.sessions.inflight()}

    def _store_gauges(self) -> dict[str, int]:
        counts = self.store.counts()
        return {"queue_depth": counts.pending, "apps": counts.apps, "devices": counts.devices}

    def snapshot(self) -> dict[str, Any]:
        """This process's metrics as JSON-able data (see ``metrics.snapshot``)."""
        self._sync_counters()
        return snapshot(self.counters, self._gauges())

    def _sync_counters(self) -> None:
        """Counters kept elsewhere (so their hot paths touch nothing else), copied in."""
        counters = self.counters
        refused, suppressed = self.connections.refused, suppressed_records()
        counters.connections_refused_per_address += refused - self._copied[0]
        counters.log_records_suppressed += suppressed - self._copied[1]
        self._copied = (refused, suppressed)

    async def metrics_text_async(self) -> bytes:
        """GET /metrics: Prometheus text for the whole server — with ``--workers``, every
        worker's counters added up (``metrics`` collects them; counters never go back)."""
        self.expire_due()
        local = self.snapshot()
        snaps = [local] if self.metrics is None else await self.metrics.collect(local)
        return render_prometheus(merge(snaps), self._store_gauges())

    def metrics_text(self) -> bytes:
        """:meth:`metrics_text_async` of this process alone."""
        self.expire_due()
        return render_prometheus(merge([self.snapshot()]), self._store_gauges())
