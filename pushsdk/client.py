"""PushClient: keeps one MQTT connection alive, hands messages to the app, sends the app's.

::

    async with PushClient(ServerConfig(server_url=..., app_key=..., device_id=...),
                          on_notification=show) as client:
        await client.wait_connected()
        ...

The same code runs inside ``trio.run()`` and ``asyncio.run()`` (and, under trio, in virtual
time): the connection logic is the sans-IO :class:`~pushsdk._core.SessionCore`, driven by
:class:`~pushsdk._session.Session`; the loop primitives come from :mod:`pushsdk._backend`.
Connection loop: register if needed (server mode), connect, subscribe, serve; on a transient
failure back off and start over; on a permanent one (a refused password, a refused
registration, a certificate that does not verify) stop and raise it to the app. Everything the
client depends on — connectors, state store, wall clock, randomness, heartbeat strategy,
backoff — is injected. See docs/sdk.md.
"""
from __future__ import annotations

import base64
import functools
import inspect
import json
import logging
import math
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from types import TracebackType
from typing import Any, Unpack

import attrs

from . import _backend
from ._backend import Backend, Event, Scope
from ._core import Environment, MessageStore, Outbound, Refused, Request, SessionCore, Tally
from ._options import DEFAULT_DEVICE, DEFAULT_LIMITS, DEFAULT_TIMEOUTS, FlatOptions, fold
from ._probe import PROBE_SUFFIX, ProbeResult, run_probe
from ._server_mode import profile_changes, register_again, registration_reason
from ._session import STREAM_ERRORS, ByteStream, Session
from ._websocket import open_websocket
from ._topics import topic_matches, validate_topic_name
from .backoff import Backoff
from .clock import Clock, SystemClock
from .config import APP_STATES as _APP_STATES
from .config import NETWORK_TYPES as _NETWORK_TYPES
from .config import (
    BrokerConfig,
    ClientState,
    ClientStatistics,
    DeviceStatus,
    Limits,
    ServerConfig,
    Subscription,
    SESSION_NEVER_EXPIRES,
    Timeouts,
    check_choice,
    check_properties,
    parse_broker_endpoint,
    subscriptions_of,
)
from .dispatcher import (
    BrokerMessage,
    Dispatcher,
    MessageCallback,
    PushMessage,
    MessageSink,
    PushMessageCallback,
    TokenCallback,
    broker_dedup_key,
    call_app,
)
from .errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionLost,
    ConnectTimeout,
    PushError,
    QueueFull,
    SubscriptionRefused,
    TokenRejected,
    TransportError,
    refusal_for_connack,
)
from .heartbeat import FixedStrategy, HeartbeatStrategy
from .messages import MessageStream
from .protocol import NO_PROPERTIES, Connect, Properties, Publish
from .protocol import Will as WireWill
from .reasons import Reason, StateChangeCallback
from .registration import Registration, unregister_device, update_device
from .state import MemoryStateStore, SdkState, StateStore
from .transport import Connector, TcpConnector

__all__ = ["PushClient"]

_UNLIMITED: AbstractAsyncContextManager[Any] = nullcontext()  # stateless: shared

log = logging.getLogger("pushsdk.client")

DEFAULT_PING_TIMEOUT = 10.0
RECEIPT_EVENTS = ("opened", "dismissed")
#: Consecutive failed attempts after which each further failure is logged as a WARNING.
WARN_AFTER_FAILURES = 3
MAX_KEEPALIVE = 65535
#: The packet id of a QoS 1/2 message not sent yet (the session gives it its own).
UNSENT = 1
#: What a client is given when it is given none. Immutable, so one is shared by all
#: clients of a process (a fleet holds thousands).
_SYSTEM_CLOCK = SystemClock()
_DEFAULT_BACKOFF = Backoff()


@functools.lru_cache(maxsize=8)
def _fixed_strategy(interval: int) -> FixedStrategy:
    """The default strategy, beating every ``interval`` seconds; frozen, so shared."""
    return FixedStrategy(interval)


@attrs.define(eq=False)
class _Ending:
    """How a connection attempt ended: ``error`` (None: stopped or interrupted), ``uptime``
    (None: never accepted), whether to retry at once."""

    error: PushError | None
    uptime: float | None = None
    retry_now: bool = False
    text: str = ""

    @property
    def reason(self) -> Reason:
        if self.error is None:
            return Reason(self.text or "connection ended", "ended")
        return Reason(str(self.error), self.error.reason_code, self.error)


class PushClient:
    """A push client for a device. Use as ``async with PushClient(config, ...) as client``
    (or ``await client.run()`` from a nursery of your own), in trio or asyncio.

    ``config`` is a :class:`ServerConfig` (the reference push server: HTTP registration,
    inbox, receipts, dedup by ``msg_id``) or a :class:`BrokerConfig` (any MQTT 3.1.1 broker).

    Callbacks (plain functions or ``async def``, run on the caller's event loop; a raising
    callback is logged, counted and does not stop the client):

    - ``on_notification(msg)``, ``on_message(msg)``, ``on_deleted(msg)`` (server mode,
      :class:`PushMessage`); in broker mode every message goes to ``on_message`` as a
      :class:`BrokerMessage`. The acknowledgement is sent after the callback returns and the
      message is recorded as delivered. ``client.messages()`` is the async-iterator spelling.
    - ``on_new_token(token)``: after a registration that produced a new token.
    - ``on_state_change(old, new, reason)``: synchronous; ``reason`` is a :class:`Reason`.

    Injected parts (defaults in brackets): ``connector`` [TcpConnector()] for MQTT,
    ``http_connector`` [connector] for registration, ``state_store`` [MemoryStateStore()],
    ``clock`` [SystemClock()], ``rng`` [random.Random()], ``strategy`` [fixed:270 in server
    mode, fixed:<keepalive> in broker mode], ``backoff`` [Backoff()]; grouped options
    ``timeouts`` [:class:`Timeouts`], ``limits`` [:class:`Limits`], ``device``
    [:class:`DeviceStatus`] (their fields are also accepted as plain keywords);
    ``network_active`` [None], the platform's query "is the default network active now?"
    (Android's ``ConnectivityManager.isDefaultNetworkActive()``), which strategies read as
    ``HeartbeatContext.network_active``.
    """

    # Slots keep each of the thousands of clients a simulation runs small.
    __slots__ = (
        "_backoff", "_broker", "_closing", "_config", "_connector", "_cycle_scope",
        "_dispatch_scope", "_dispatcher", "_downgraded", "_driver", "_holding", "_done",
        "_env", "_error", "_ever_connected", "_failures", "_ephemeral", "_finished",
        "_force_register", "_held", "_http_connector", "_idle_event",
        "_interrupted", "_io", "_keepalive", "_last_error", "_limits", "_network_event",
        "_on_new_token", "_on_state_change", "_outbox", "_ping_timeout", "_rng",
        "_sdk_state", "_session", "_started", "_state", "_state_event", "_store",
        "_strategy", "_tally", "_tasks", "_timeouts", "_wanted",
    )

    def __init__(
        self,
        config: ServerConfig | BrokerConfig,
        *,
        on_message: MessageCallback | None = None,
        on_notification: PushMessageCallback | None = None,
        on_deleted: PushMessageCallback | None = None,
        on_new_token: TokenCallback | None = None,
        on_state_change: StateChangeCallback | None = None,
        connector: Connector | None = None,
        http_connector: Connector | None = None,
        state_store: StateStore | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        strategy: HeartbeatStrategy | None = None,
        backoff: Backoff | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        device: DeviceStatus | None = None,
        network_active: Callable[[], bool] | None = None,
        **flat: Unpack[FlatOptions],
    ) -> None:
        if not isinstance(config, (ServerConfig, BrokerConfig)):
            raise ConfigurationError("config must be a ServerConfig or a BrokerConfig")
        groups = fold(flat, {"timeouts": timeouts or DEFAULT_TIMEOUTS,
                             "limits": limits or DEFAULT_LIMITS,
                             "device": device or DEFAULT_DEVICE})
        self._timeouts: Timeouts = groups["timeouts"]
        self._limits: Limits = groups["limits"]
        status: DeviceStatus = groups["device"]
        self._config = config
        self._broker = isinstance(config, BrokerConfig)
        self._connector = connector or TcpConnector(connect_timeout=self._timeouts.connect)
        self._http_connector = http_connector or self._connector
        self._store: StateStore = state_store if state_store is not None else MemoryStateStore()
        # No store given: nothing outlives the process, so broker-mode session state (the
        # filters the broker holds, for a restart) is not kept (a fleet holds thousands).
        self._ephemeral = state_store is None
        self._rng = rng or random.Random()
        self._strategy = strategy or _fixed_strategy(
            config.keepalive if isinstance(config, BrokerConfig) else 270)
        self._backoff = backoff or _DEFAULT_BACKOFF
        self._ping_timeout = (self._timeouts.ping or self._strategy.ping_timeout
                              or DEFAULT_PING_TIMEOUT)
        self._keepalive = self._declared_keepalive()
        self._dispatcher = Dispatcher(on_notification, on_message, on_deleted,
                                      self._limits.dedup_window)
        self._on_new_token = on_new_token
        self._on_state_change = on_state_change
        self._env = Environment(clock or _SYSTEM_CLOCK, status.network_key,
                                status.network_type, status.app_state,
                                network_active=network_active)
        self._tally = Tally()
        self._outbox = MessageStore()
        self._sdk_state = SdkState()
        self._init_run_state()

    def _init_run_state(self) -> None:
        """What the run changes, as it stands before the client starts."""
        self._state = ClientState.IDLE
        # Events are created only when something waits on them (a fleet holds thousands
        # of clients, and most never do): see _signal.
        self._state_event: Event | None = None
        self._network_event: Event | None = None
        self._idle_event: Event | None = None
        self._done: Event | None = None
        self._io: Backend | None = None
        self._tasks: Any = None
        self._session: Session | None = None
        self._cycle_scope: Scope | None = None
        self._dispatch_scope: Scope | None = None  # a callback is handling a message
        # (dedup key, the PUBLISH, the message streams it was handed to) while they hold it
        self._holding: tuple[str | None, Publish, tuple[MessageSink, ...]] | None = None
        self._driver: object = None  # the task running the connection loop
        self._wanted: dict[str, int] | None = None  # broker mode: filters wanted now
        self._held: dict[str, int] | None = None  # broker mode: filters the broker holds
        self._error: PushError | None = None  # the permanent failure that ended the client
        self._last_error: PushError | None = None  # the last failure of any kind
        self._failures = 0  # consecutive failed attempts
        self._force_register = self._ever_connected = self._interrupted = False
        self._downgraded = False  # "auto": the server refused MQTT 5 once, use 3.1.1
        self._closing = self._finished = self._started = False

    def _declared_keepalive(self) -> int:
        # The declared keepalive only bounds how long the server waits for a sign of life;
        # pings follow the strategy. ``min_keepalive`` lets an app keep its session through
        # silences the strategy does not plan, such as Doze idle periods (hours).
        declared = max(math.ceil(self._strategy.max_interval), self._limits.min_keepalive)
        if isinstance(self._config, BrokerConfig):
            declared = max(declared, self._config.keepalive)
        return min(MAX_KEEPALIVE, max(1, declared))

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> PushClient:
        io = self._mark_started()
        self._tasks = io.task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._run_and_raise)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        self._stop()
        try:
            return bool(await self._tasks.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            # One exception — the body's own, or the client's failure (which cancelled the
            # body) — propagates as itself, not wrapped in a group.
            leaves = group.exceptions
            if self._error is not None and all(e is self._error for e in leaves):
                raise self._error from None
            if len(leaves) == 1 and leaves[0] is exc:
                return False
            raise

    async def _run_and_raise(self) -> None:
        await self._run()
        if self._error is not None:
            raise self._error

    def run(self) -> Coroutine[Any, Any, None]:
        """Run the client in the calling task until :meth:`aclose`, a permanent failure or
        cancellation: ``await client.run()`` or ``nursery.start_soon(client.run)``.

        The alternative to ``async with`` for programs that run many clients from their own
        nursery (no nursery of the client's own). A permanent failure does not raise here
        (one client's wrong password must not stop its siblings): it is in :attr:`error`
        and in the last ``on_state_change`` (to CLOSED). A plain method returning the
        coroutine, so that a connected client's stack holds one frame less.
        """
        self._mark_started()
        return self._run()

    def _mark_started(self) -> Backend:
        if self._started:
            raise RuntimeError("a PushClient can be started only once")
        self._started = True
        io = self._io = _backend.current()
        self._env.app_state_since = self._env.foreground_changed_at = io.now()
        return io

    async def aclose(self) -> None:
        """Stop the client: finish the message being handed over, send DISCONNECT, close."""
        if not self._started:
            self._closing = True
            self._set_state(ClientState.CLOSED, Reason("closed before start", "closed"))
            return
        self._stop()
        if not self._finished:
            assert self._io is not None
            self._done = self._done or self._io.event()
            await self._done.wait()

    def _stop(self) -> None:
        # Nothing cancels the connection task: whatever the loop waits on is woken, and it
        # returns when it sees _closing. A callback still running is cancelled (its message
        # stays unacknowledged); one that returned is recorded and acknowledged first.
        self._closing = True
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()
        self._wake_loop()

    async def _run(self) -> None:
        io = self._io
        assert io is not None
        self._driver = io.current_task()
        try:
            if self._closing:
                return
            await self._load_state()
            # The connection loop, and in it one attempt (register if needed, connect,
            # handshake, serve), inline rather than methods of their own: a connected
            # client's stack holds two coroutine frames less.
            attempt = 0
            while not self._closing:
                if await self._wait_for_network(io):
                    continue
                self._interrupted = False
                opened: list[Any] = [None, None]  # the stream, the session
                try:
                    ending = await self._open(opened)
                    if ending is None:
                        # The session is served from this frame, between a prologue and an
                        # epilogue of its own: an idle connection's stack holds one
                        # coroutine frame (0.3 KB) less.
                        session = opened[1]
                        try:
                            if await self._begin_serving(session):
                                await session.serve()
                        finally:
                            self._session = None
                        ending = await self._end_serving(session)
                finally:
                    self._cycle_scope = None
                    if opened[0] is not None:
                        await io.close_stream(opened[0])
                if self._closing:
                    return
                if ending.error is not None and ending.error.permanent:
                    self._fail(ending.error)
                    return
                attempt = await self._back_off(io, ending, attempt)
        finally:
            self._finished = True
            error = self._error
            reason = (Reason(str(error), error.reason_code, error) if error is not None
                      else Reason("client closed", "closed"))
            self._set_state(ClientState.CLOSED, reason)
            self._release_waiters()
            _signal(self._done)

    # --- public API -----------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def error(self) -> PushError | None:
        """The permanent failure that ended the client, if one did."""
        return self._error

    @property
    def registration(self) -> Registration | None:
        """The registration in use (server mode), once known."""
        return self._sdk_state.registration

    @property
    def webpush_subscription(self) -> dict[str, str] | None:
        """``{"p256dh", "auth"}`` (base64url) of the device's end-to-end keys, once registered
        with ``ServerConfig(e2e=True)``: what a sender needs to encrypt for this device, for
        apps that hand it to their back end over their own channel (docs/security.md)."""
        keys = self._sdk_state.webpush_keys
        if not (isinstance(self._config, ServerConfig) and self._config.e2e) or keys is None:
            return None
        return keys.subscription()

    @property
    def token(self) -> str | None:
        reg = self._sdk_state.registration
        return reg.token if reg else None

    @property
    def keepalive(self) -> int:
        """The keepalive declared in CONNECT."""
        return self._keepalive

    @property
    def strategy(self) -> HeartbeatStrategy:
        return self._strategy

    @property
    def device_idle(self) -> bool:
        return self._env.device_idle

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once the client is connected (CONNACK 0, subscriptions sent).

        Raises the client's permanent failure (:attr:`error`, e.g.
        :class:`~pushsdk.errors.AuthenticationRefused`), :class:`ClientClosed` if it closes
        first, and :class:`ConnectTimeout` (with the last attempt's error) if ``timeout``
        seconds pass first. Transient failures (server down) are retried meanwhile.
        """
        io = self._io or _backend.current()
        deadline = math.inf if timeout is None else io.now() + timeout
        async with io.scope(deadline) as scope:
            while self._state is not ClientState.CONNECTED:
                self._raise_if_failed()
                self._state_event = self._state_event or io.event()
                await self._state_event.wait()
        if scope.cancelled_caught:
            last = self._last_error
            raise ConnectTimeout(
                f"not connected after {timeout:g} s: "
                + (str(last) if last is not None else "no connection attempt has finished"),
                last)

    def messages(self, *, manual_ack: bool = False) -> MessageStream[Any]:
        """Messages as an async iterator: ``async with client.messages() as messages:
        async for message in messages: ...`` (see :mod:`pushsdk.messages`)."""
        return MessageStream(self, manual_ack)

    async def publish(self, topic: str, payload: bytes | str = b"", *, qos: int = 0,
                      retain: bool = False, properties: Properties | None = None) -> None:
        """Publish a message; returns once it is written (QoS 0) or acknowledged (QoS 1:
        PUBACK, QoS 2: PUBCOMP). Waits for a connection if there is none; a message in flight
        when the connection drops is sent again on the next one. On a persistent session
        QoS 1/2 messages in flight are kept in the state file and resent after a restart.

        ``properties`` (MQTT 5): a :class:`~pushsdk.Properties` with the message's
        ``message_expiry_interval``, ``user_properties``, ``content_type``,
        ``response_topic``, ``correlation_data``, ``payload_format_indicator``.

        Raises :class:`ConfigurationError` for a bad topic, QoS, payload or properties (or
        properties on MQTT 3.1.1), :class:`QueueFull` beyond ``Limits.max_queued`` waiting
        messages, :class:`~pushsdk.errors.PublishRefused` when an MQTT 5 broker refuses it,
        the client's permanent failure, or :class:`ClientClosed`.
        """
        try:
            validate_topic_name(topic)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConfigurationError(f"qos must be 0, 1 or 2; got {qos!r}")
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"payload must be bytes or str, not "
                                     f"{type(payload).__name__}")
        props = check_properties(properties)
        if props and self._mqtt_level() != 5:
            raise ConfigurationError("message properties need MQTT 5 (mqtt_version=\"5\")")
        cfg = self._config
        persist = isinstance(cfg, BrokerConfig) and qos > 0 and not cfg.clean_session
        try:
            message = Publish(topic, bytes(data), qos, bool(retain),
                              packet_id=UNSENT if qos else None, properties=props)
        except ValueError as exc:  # a property a PUBLISH may not carry
            raise ConfigurationError(str(exc)) from None
        await self._send(Outbound(message, persist=persist))

    async def subscribe(self, *subscriptions: str | Subscription | tuple[str, int],
                        qos: int = 1) -> tuple[int, ...]:
        """Subscribe (broker mode) to topic filters — strings at ``qos``, ``(filter, qos)``
        pairs or :class:`Subscription` objects — and return the QoS the broker granted for
        each. Raises :class:`SubscriptionRefused` naming any filter the broker refused
        (SUBACK 0x80). The subscriptions are kept: after a reconnect without a session they
        are made again."""
        subs = self._broker_only("subscribe", subscriptions_of(subscriptions, qos))
        if not subs:
            raise ConfigurationError("subscribe() needs at least one topic filter")
        if self._mqtt_level() != 5 and any(s.has_options for s in subs):
            raise ConfigurationError("subscription options need MQTT 5 (mqtt_version=\"5\")")
        pairs = tuple((s.topic_filter, s.options) for s in subs)
        request = Request(subscriptions=pairs)
        await self._request(request)
        refusals = SessionCore.refusals(request)
        refused = tuple(f for f, _ in refusals)
        self._wanted_filters().update(p for p in pairs if p[0] not in refused)
        if refused:
            raise SubscriptionRefused(refused, tuple(c for _, c in refusals),
                                      request.reason_string)
        return request.result or ()

    async def unsubscribe(self, *topic_filters: str) -> None:
        """Unsubscribe (broker mode) from topic filters; returns on UNSUBACK. Messages on
        them are no longer handed to the app from now on."""
        filters = self._broker_only("unsubscribe", tuple(
            Subscription(f).topic_filter for f in topic_filters))
        if not filters:
            raise ConfigurationError("unsubscribe() needs at least one topic filter")
        wanted = self._wanted_filters()
        for topic_filter in filters:
            wanted.pop(topic_filter, None)
        await self._request(Request(filters=filters))

    async def update(self, *, alias: str | None = None,
                     tags: Iterable[str] | None = None) -> Registration:
        """Server mode: set the device's alias and/or tags on the server now
        (``PUT /v1/devices/<id>``; None leaves one as it is). The config's own ``alias`` /
        ``tags``, when not None, are applied again at every start. Raises
        :class:`~pushsdk.errors.RegistrationRefused` (``alias_taken``, ...)."""
        if isinstance(tags, str):
            raise ConfigurationError("tags must be a list of strings, not a single string")
        reg = self._registered("update")
        new = await update_device(self._http_connector, reg, alias=alias,
                                  tags=tuple(tags) if tags is not None else None,
                                  timeout=self._timeouts.http, on_traffic=self._count_traffic)
        self._sdk_state = self._sdk_state.with_registration(new)
        await self._save_state()
        return new

    async def unregister(self) -> None:
        """Server mode: unregister the device (``DELETE /v1/devices/<id>``): its tokens stop
        working, nothing more is queued for it, the stored registration is forgotten and the
        client closes."""
        reg = self._registered("unregister")
        await unregister_device(self._http_connector, reg, timeout=self._timeouts.http,
                                on_traffic=self._count_traffic)
        self._sdk_state = self._sdk_state.with_registration(None)
        await self._save_state()
        await self.aclose()

    async def send_receipt(self, msg_id: str, event: str) -> None:
        """Tell the server the user ``"opened"`` or ``"dismissed"`` message ``msg_id``.

        Returns once queued: the receipt is sent as a QoS 1 PUBLISH when connected and resent
        after reconnects until acknowledged (kept in memory, not across restarts).
        """
        if self._broker:
            raise ConfigurationError("receipts exist only in server mode")
        check_choice("event", event, RECEIPT_EVENTS)
        self._raise_if_failed()
        queued = self._outbox.queued
        if len(queued) >= self._limits.max_queued:
            dropped = next((item for item in queued if item.receipt), None)
            if dropped is not None:
                queued.remove(dropped)
                log.warning("receipt queue full; dropping the oldest receipt")
        payload = json.dumps({"msg_id": msg_id, "event": event}).encode()
        reg = self._sdk_state.registration
        # Not registered yet: the topic is set at connect.
        topic = reg.receipt_topic if reg is not None else "rcpt/unregistered"
        queued.append(Outbound(Publish(topic, payload, 1, packet_id=UNSENT), receipt=True))
        self._wake_session()
        await (self._io or _backend.current()).checkpoint()

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters (a frozen record, like trio's ``statistics()``)."""
        c = self._tally
        session = self._session
        connected_time = c.connected_time
        if session is not None and self._io is not None:
            connected_time += self._io.now() - session.core.connected_at
        outbox = self._outbox
        items = [*outbox.queued, *outbox.inflight.values()]
        receipts = sum(1 for item in items if item.receipt)
        last = self._last_error
        env = self._env
        return ClientStatistics(
            state=self._state, network_key=env.network_key, network_type=env.network_type,
            app_state=env.app_state, strategy=self._strategy.name, keepalive=self._keepalive,
            heartbeat_interval=session.core.interval if session else None,
            bytes_up=c.bytes_up, bytes_down=c.bytes_down, heartbeats_sent=c.heartbeats_sent,
            heartbeats_succeeded=c.heartbeats_succeeded,
            heartbeats_failed=c.heartbeats_failed, probes=c.probes,
            connect_attempts=c.connect_attempts, connects=c.connects, reconnects=c.reconnects,
            registrations=c.registrations, messages_received=c.messages_received,
            messages_dispatched=self._dispatcher.dispatched,
            duplicates=self._dispatcher.duplicates, malformed_messages=c.malformed_messages,
            callback_errors=self._dispatcher.callback_errors, receipts_pending=receipts,
            receipts_acknowledged=c.receipts_acknowledged,
            state_save_errors=c.state_save_errors, connected_time=connected_time,
            decrypt_errors=self._dispatcher.decrypt_errors,
            publishes_pending=len(items) - receipts,
            publishes_completed=c.publishes_completed,
            consecutive_failures=self._failures,
            last_reason=last.reason_code if last is not None else None,
            last_error=str(last) if last is not None else None,
        )

    # --- platform signals -------------------------------------------------------------------

    def notify_network_changed(self, network_key: str | None,
                               network_type: str = "wifi") -> None:
        """The device moved to another network (or, with ``None``, lost connectivity).

        Drops the current connection or pending retry and connects at once, without backoff,
        using the heartbeat memory learned on ``network_key``.
        """
        check_choice("network_type", network_type, _NETWORK_TYPES)
        self._env.network_key = network_key
        self._env.network_type = network_type
        self._interrupted = True
        self._wake_loop()

    def set_app_state(self, app_state: str) -> None:
        """``"foreground"``, ``"background"`` or ``"inactive"``; strategies may adapt to it."""
        check_choice("app_state", app_state, _APP_STATES)
        env = self._env
        if app_state != env.app_state:
            foreground = (env.app_state == "foreground") != (app_state == "foreground")
            env.app_state = app_state
            if self._io is not None:
                env.app_state_since = self._io.now()
                if foreground:  # screen on/off alone is no foreground change
                    env.foreground_changed_at = env.app_state_since
            self._wake_session()

    def set_device_idle(self, idle: bool) -> None:
        """Platform signal: the device entered (``True``) or left Doze idle.

        While idle the platform defers the client's alarms and blocks its network, as
        Android's Doze does: no heartbeat is due, an outstanding ping cannot time out and no
        connection is attempted. On leaving idle a heartbeat that fell due meanwhile goes out
        at once (its lateness is what strategies such as Mars read as a doze event), and a
        ping still outstanding gets a full ping timeout from that moment.
        """
        idle = bool(idle)
        env = self._env
        if idle == env.device_idle:
            return
        if self._strategy.doze_exempt:
            # The platform exempts this connection from Doze (FCM: Google Play services):
            # its alarms fire and its network stays open, so nothing changes for it.
            log.debug("%s: device idle=%s ignored (doze-exempt strategy)", self._name, idle)
            return
        env.device_idle = idle
        if not idle:
            if self._io is not None:
                env.idle_ended_at = self._io.now()
            event, self._idle_event = self._idle_event, None
            _signal(event)
        self._wake_session()

    def notify_radio_active(self) -> None:
        """Platform signal: the radio has just become active for another reason (another
        app's traffic), as Android's ``ConnectivityManager.OnNetworkActiveListener`` reports.

        A heartbeat sent now rides on that wake-up and costs almost no energy; the strategy
        decides whether it is worth sending early (``HeartbeatStrategy.piggyback``).
        """
        session = self._session
        if session is not None and self._io is not None:
            session.core.radio_active(self._io.now())
            if session.core.piggyback_now:
                session.wake()

    # --- internals: waking, waiting, failing ------------------------------------------------

    def _wake_session(self) -> None:
        if self._session is not None:
            self._session.wake()

    def _wake_loop(self) -> None:
        """Stop whatever the connection loop waits on (a retry delay, a connect, a session's
        wait for input); it then looks at its flags."""
        if self._cycle_scope is not None:
            self._cycle_scope.cancel()
        self._wake_session()
        for event in (self._network_event, self._idle_event):
            _signal(event)
        self._network_event = self._idle_event = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing or self._state is ClientState.CLOSED:
            raise ClientClosed("the push client is closed")

    def _release_waiters(self) -> None:
        """The client stopped: wake every publish(), subscribe() and message stream."""
        store = self._outbox
        waiting: list[Outbound | Request] = [*store.queued, *store.inflight.values(),
                                             *store.requests.values(), *store.waiting_requests]
        for item in waiting:
            _signal(item.waiter)
        for stream in tuple(self._dispatcher.streams):
            stream.close()

    def _add_stream(self, stream: MessageStream[Any]) -> None:
        self._raise_if_failed()
        self._dispatcher.streams = (*self._dispatcher.streams, stream)

    def _remove_stream(self, stream: MessageStream[Any]) -> None:
        self._dispatcher.streams = tuple(s for s in self._dispatcher.streams
                                         if s is not stream)

    def _check_not_in_callback(self, what: str) -> None:
        io = self._io
        if self._dispatch_scope is not None and io is not None \
                and io.current_task() is self._driver:
            raise RuntimeError(
                f"awaiting {what}() inside a message callback would deadlock: the connection "
                "is busy running the callback. Use client.messages(), or start a task")

    async def _send(self, item: Outbound) -> None:
        self._raise_if_failed()
        self._check_not_in_callback("publish")
        if len(self._outbox.queued) >= self._limits.max_queued:
            raise QueueFull(f"{len(self._outbox.queued)} messages already wait for the "
                            "connection (Limits.max_queued)")
        io = self._io or _backend.current()
        item.waiter = io.event()
        self._outbox.queued.append(item)
        self._wake_session()
        await item.waiter.wait()
        if item.error is not None:
            raise item.error
        if item.stage != 2:
            self._raise_if_failed()

    async def _request(self, request: Request) -> None:
        self._raise_if_failed()
        self._check_not_in_callback("subscribe")
        io = self._io or _backend.current()
        request.waiter = io.event()
        self._outbox.waiting_requests.append(request)
        self._wake_session()
        await request.waiter.wait()
        if request.result is None:
            self._raise_if_failed()

    def _broker_only(self, what: str, value: Any) -> Any:
        if not self._broker:
            raise ConfigurationError(f"{what}() is for broker mode; in server mode the "
                                     "client subscribes to its inbox by itself")
        return value

    def _registered(self, what: str) -> Registration:
        if self._broker:
            raise ConfigurationError(f"{what}() is for server mode")
        reg = self._sdk_state.registration
        if reg is None:
            raise ClientClosed(f"{what}(): the device is not registered (yet); "
                               "await client.wait_connected() first")
        return reg

    def _wanted_filters(self) -> dict[str, int]:
        if self._wanted is None:
            cfg = self._config
            assert isinstance(cfg, BrokerConfig)
            self._wanted = {s.topic_filter: s.options for s in cfg.topics}
        return self._wanted

    def _set_state(self, new: ClientState, reason: Reason) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        event, self._state_event = self._state_event, None
        _signal(event)
        log.debug("%s: %s -> %s (%s)", self._name, old, new, reason)
        if self._on_state_change is not None:
            try:
                result = self._on_state_change(old, new, reason)
                if inspect.iscoroutine(result):
                    result.close()
                    log.error("on_state_change must be a plain function, not async")
            except Exception:
                log.exception("on_state_change callback raised")

    @property
    def _name(self) -> str:
        cfg = self._config
        return cfg.client_id if isinstance(cfg, BrokerConfig) else cfg.device_id

    # --- state file -----------------------------------------------------------------------

    async def _load_state(self) -> None:
        try:
            loaded = await self._store.load()
        except Exception:  # a custom store's bug must not stop the client
            log.exception("state store failed to load; starting afresh")
            loaded = None
        state = self._sdk_state = loaded or SdkState()
        self._dispatcher.load(state.recent_msg_ids)
        if isinstance(self._config, ServerConfig) and self._config.e2e:
            self._dispatcher.webpush_keys = state.webpush_keys
        store = self._outbox
        if state.received_qos2:
            store.received_qos2 = set(state.received_qos2)
        for record in state.outbound:
            publish = Publish(record["topic"], base64.b64decode(record["payload"]),
                              record["qos"], bool(record.get("retain")),
                              packet_id=record["packet_id"])
            store.inflight[record["packet_id"]] = Outbound(publish, stage=record["stage"],
                                                           persist=True)
        if self._broker and state.subscriptions_for == self._session_owner():
            self._held = dict(state.subscriptions)

    def _session_owner(self) -> str:
        cfg = self._config
        assert isinstance(cfg, BrokerConfig)
        return f"{cfg.host}:{cfg.port}/{cfg.client_id}"

    async def _save_state(self) -> None:
        store = self._outbox
        store.dirty = False
        state = attrs.evolve(self._sdk_state, recent_msg_ids=self._dispatcher.recent())
        if self._broker and not self._ephemeral:
            state = attrs.evolve(
                state, outbound=tuple(_record(item) for item in store.inflight.values()
                                      if item.persist),
                received_qos2=tuple(sorted(store.received_qos2)),
                subscriptions=tuple(sorted((self._held or {}).items())),
                subscriptions_for=self._session_owner() if self._held is not None else None)
        self._sdk_state = state
        try:
            await self._store.save(state)
        except OSError as exc:
            # Delivery goes on: the cost is a possible duplicate after a crash.
            self._tally.state_save_errors += 1
            log.warning("%s: cannot save state: %s", self._name, exc)
        except Exception:  # a custom store's (or a strategy memory's) bug: same treatment
            self._tally.state_save_errors += 1
            log.exception("%s: cannot save state", self._name)

    def _count_traffic(self, sent: int, received: int) -> None:
        self._tally.bytes_up += sent
        self._tally.bytes_down += received

    # --- the connection loop --------------------------------------------------------------

    async def _wait_for_network(self, io: Backend) -> bool:
        """Wait while there is no network or the device dozes; True if it waited."""
        if self._env.network_key is None:
            self._set_state(ClientState.OFFLINE, Reason("no network", "offline"))
            self._network_event = self._network_event or io.event()
            await self._network_event.wait()
            return True
        if self._env.device_idle:  # Doze: the platform runs nothing of ours until it ends
            self._idle_event = self._idle_event or io.event()
            await self._idle_event.wait()
            return True
        return False

    async def _back_off(self, io: Backend, ending: _Ending, attempt: int) -> int:
        """Wait before the next attempt (not after a network change); the next attempt's
        number for the backoff."""
        if ending.uptime is not None and self._backoff.should_reset(ending.uptime):
            attempt = 0
        if not ending.retry_now and not self._interrupted:
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            self._note_failure(ending, delay)
            async with io.scope() as scope:  # a network change cuts it short
                self._cycle_scope = scope
                await io.sleep_until(io.now() + delay)
            self._cycle_scope = None
        return 0 if self._interrupted else attempt  # network change: a fresh backoff

    def _note_failure(self, ending: _Ending, delay: float) -> None:
        reason = ending.reason
        if ending.error is not None:
            self._last_error = ending.error
        self._failures += 1
        self._set_state(ClientState.WAITING, reason)
        level = logging.WARNING if self._failures >= WARN_AFTER_FAILURES else logging.INFO
        log.log(level, "%s: %s; retrying in %.1f s (failure %d in a row)", self._name, reason,
                delay, self._failures)

    def _fail(self, error: PushError) -> None:
        self._error = self._last_error = error
        log.error("%s: %s", self._name, error)

    async def _open(self, opened: list[Any]) -> _Ending | None:
        """Register if needed, connect and handshake, under one scope that a network change
        or close cancels and whose deadline bounds connecting plus the handshake; None once
        accepted (the session is ``opened[1]``)."""
        io = self._io
        assert io is not None
        where = ""
        fresh = False
        async with io.scope() as scope:
            self._cycle_scope = scope
            try:
                fresh = await self._prepare()
                host, port, tls, path = self._endpoint()
                where = f"{host}:{port}"
                self._set_state(ClientState.CONNECTING, Reason(f"connecting to {where}",
                                                               "connecting"))
                self._tally.connect_attempts += 1
                async with self._handshake_slot():  # the deadline runs once it has one
                    scope.deadline = io.now() + self._timeouts.connect
                    opened[0] = await self._open_stream(host, port, tls, path)
                    opened[1] = self._new_session(opened[0])
                    answer = await opened[1].handshake()
            except PushError as exc:
                return _Ending(exc)
            except STREAM_ERRORS as exc:
                return _Ending(TransportError(f"cannot connect to {where}: {exc}"))
        self._cycle_scope = None
        if scope.cancelled_caught:
            if self._interrupted or self._closing:
                return _Ending(None, text="network changed")
            if opened[0] is None:
                return _Ending(TransportError(f"connecting to {where} timed out after "
                                              f"{self._timeouts.connect:g} s"))
            return _Ending(ConnectionLost(f"no CONNACK from {where} within "
                                          f"{self._timeouts.connect:g} s"))
        if isinstance(answer, Refused):
            return self._refused(answer, opened[1].core.protocol_version, fresh, where)
        return None

    def _handshake_slot(self) -> AbstractAsyncContextManager[Any]:
        """The connector's bound on handshakes at once (``TcpConnector``'s
        ``handshake_limiter``), or no bound (other connectors: the simulator's links)."""
        limiter = getattr(self._connector, "handshake_limiter", None)
        return _UNLIMITED if limiter is None else limiter

    def _new_session(self, stream: Any) -> Session:
        assert self._io is not None
        core = SessionCore(
            self._connect_packet(), now=self._io.now(), store=self._outbox,
            strategy=self._strategy, env=self._env, tally=self._tally,
            ping_timeout=self._ping_timeout, max_inflight=self._limits.max_inflight,
            max_packet_size=self._limits.max_packet_size,
            ask_reply_timeout=self._timeouts.ping is None and _asks_reply(self._strategy))
        return Session(core, stream, _Host(self), self._io)

    async def _begin_serving(self, session: Session) -> bool:
        """Count the connect, subscribe and flush the handshake's follow-ups; whether the
        session is up (it is now :attr:`_session`; :meth:`_run` clears it)."""
        tally = self._tally
        tally.connects += 1
        if self._ever_connected:
            tally.reconnects += 1
        self._ever_connected = True
        self._failures = 0
        core = session.core
        assert self._io is not None
        core.begin(self._io.now(), self._sdk_state.memory_for(core.network_key))
        if core.memory_dirty:  # a strategy may note the attempt itself (Courier)
            core.memory_dirty = False
            await self._remember(core.network_key, core.memory)
        self._session = session
        self._subscribe_on_connect(core, session.session_present)
        if not await session.flush():
            return False
        self._set_state(ClientState.CONNECTED, Reason("connected", "connected"))
        return True

    async def _end_serving(self, session: Session) -> _Ending:
        """Say goodbye if closing, finish the session; how the connection ended."""
        if self._closing:
            await session.say_goodbye()
        await session.finish(self._closing)
        self._outbox.requeue_requests()
        if session.error is None and self._interrupted:
            return _Ending(None, uptime=session.uptime, text="network changed")
        return _Ending(session.error, uptime=session.uptime)

    def _subscribe_on_connect(self, core: SessionCore, session_present: bool) -> None:
        cfg = self._config
        if isinstance(cfg, ServerConfig):
            reg = self._sdk_state.registration
            assert reg is not None
            core.subscribe(Request(subscriptions=((reg.inbox, 1),)))
            core.resend_inflight()
            for item in self._outbox.queued:
                if item.receipt and item.publish.topic != reg.receipt_topic:
                    item.publish = attrs.evolve(item.publish, topic=reg.receipt_topic)
            return
        if not session_present:
            self._outbox.forget_session()
            self._held = None
        wanted = self._wanted_filters()
        held = self._held
        if held is None:
            subscribe = dict(wanted)
            stale: list[str] = []
        else:
            subscribe = {f: q for f, q in wanted.items() if held.get(f) != q}
            stale = [f for f in held if f not in wanted]
        if stale:
            core.subscribe(Request(filters=tuple(stale)))
        if subscribe:
            core.subscribe(Request(subscriptions=tuple(subscribe.items())))
        core.resend_inflight()

    def _completed(self, item: Outbound | Request) -> None:
        if isinstance(item, Outbound):
            if item.error is not None:
                log.warning("%s: %s", self._name, item.error)
            else:
                item.stage = 2
                if not item.receipt:
                    self._tally.publishes_completed += 1
            _signal(item.waiter)
            return
        if self._broker:
            self._note_subscriptions(item)
        if item.waiter is not None:
            item.waiter.set()
        elif SessionCore.refusals(item):  # one the client made at connect
            refusals = SessionCore.refusals(item)
            error = SubscriptionRefused(tuple(f for f, _ in refusals),
                                        tuple(c for _, c in refusals), item.reason_string)
            if isinstance(self._config, ServerConfig):
                log.error("%s: %s", self._name, error)
            else:
                self._fail(error)
                self._stop()

    def _note_subscriptions(self, request: Request) -> None:
        """What the broker holds now, for reconciling a persistent session later."""
        if self._ephemeral:
            return
        held = self._held if self._held is not None else {}
        if request.subscriptions:
            for (topic_filter, _), code in zip(request.subscriptions, request.result or ()):
                if code != 0x80:
                    held[topic_filter] = code
        for topic_filter in request.filters:
            held.pop(topic_filter, None)
        self._held = held
        self._outbox.dirty = True

    def _endpoint(self) -> tuple[str, int, bool, str | None]:
        """``(host, port, tls, WebSocket path or None)`` of the MQTT endpoint."""
        cfg = self._config
        if isinstance(cfg, BrokerConfig):
            return cfg.host, cfg.port, cfg.tls, cfg.websocket_path
        reg = self._sdk_state.registration
        assert reg is not None
        if cfg.mqtt_transport == "ws":
            if reg.mqtt_ws is None:
                raise ConfigurationError(
                    f"mqtt_transport=\"ws\", but {cfg.server_url} advertises no MQTT "
                    "WebSocket endpoint (mqtt.ws) in its registration answer")
            try:
                return parse_broker_endpoint(reg.mqtt_ws)
            except ValueError as exc:
                raise ConfigurationError(f"the advertised mqtt.ws: {exc}") from None
        return reg.mqtt_host, reg.mqtt_port, reg.mqtt_tls, None

    async def _open_stream(self, host: str, port: int, tls: bool,
                           path: str | None) -> ByteStream:
        """A stream to the MQTT endpoint: the connector's, with the WebSocket handshake
        on top when ``path`` is set (the caller bounds the time)."""
        stream = await self._connector.connect(host, port, tls=tls)
        if path is None:
            return stream
        assert self._io is not None
        try:
            return await open_websocket(stream, host, port, path, tls=tls)
        except BaseException:
            await self._io.close_stream(stream)
            raise

    def _connect_packet(self, probe_target: float | None = None) -> Connect:
        """CONNECT for the main connection, or for a probe connection that must outwait
        ``probe_target`` seconds of silence (client id ``<id>/probe``, clean session)."""
        cfg = self._config
        if isinstance(cfg, BrokerConfig):
            client_id, user = cfg.client_id, cfg.username
            password = cfg.password.encode() if cfg.password is not None else None
            clean, will = cfg.clean_session, cfg.will
        else:
            reg = self._sdk_state.registration
            assert reg is not None
            client_id, user, password = reg.registration_id, reg.app_key, reg.token.encode()
            clean, will = False, None
        level = self._mqtt_level()
        if probe_target is not None:
            keepalive = min(MAX_KEEPALIVE, math.ceil(probe_target * 1.2) + 60)
            return Connect(client_id=client_id + PROBE_SUFFIX, keepalive=keepalive,
                           clean_session=True, username=user, password=password,
                           protocol_level=level)
        wire_will = None if will is None else WireWill(
            will.topic, will.payload, will.qos, will.retain,
            properties=will.properties if level == 5 else NO_PROPERTIES)
        return Connect(client_id=client_id, keepalive=self._keepalive, clean_session=clean,
                       username=user, password=password, will=wire_will, protocol_level=level,
                       properties=self._connect_properties() if level == 5 else NO_PROPERTIES)

    def _connect_properties(self) -> Properties:
        """MQTT 5 CONNECT properties: the session's lifetime (server mode: never expires, as
        3.1.1's clean session 0), our Receive Maximum and Topic Alias Maximum."""
        cfg = self._config
        expiry = (cfg.session_expiry_interval if isinstance(cfg, BrokerConfig)
                  else SESSION_NEVER_EXPIRES)
        limits = self._limits
        return Properties(session_expiry_interval=expiry or None,
                          receive_maximum=limits.receive_maximum,
                          topic_alias_maximum=limits.topic_alias_maximum or None)

    def _mqtt_level(self) -> int:
        """The MQTT protocol level to connect with: 5 or 4 (3.1.1). Server mode's "auto"
        takes 5 when the registration offers it (and the server did not refuse it)."""
        version = self._config.mqtt_version
        if version != "auto":
            return 5 if version == "5" else 4
        reg = self._sdk_state.registration
        return 5 if reg is not None and "5" in reg.mqtt_versions and not self._downgraded \
            else 4

    def _refused(self, answer: Refused, level: int, fresh: bool, where: str) -> _Ending:
        code = answer.return_code
        label = f"CONNACK {code:#04x}" if level == 5 else f"CONNACK {code}"
        said = f": \"{answer.reason_string}\"" if answer.reason_string else ""
        if code == (0x86 if level == 5 else 4) and not self._broker:
            # Unknown or expired token: register again, at once unless we just did.
            self._force_register = True
            error = TokenRejected(f"{where} refused the device token ({label}{said}); "
                                  "registering again", code)
            return _Ending(error, retry_now=not fresh)
        if code == 0x84 and level == 5 and self._config.mqtt_version == "auto":
            # It offered 5 and refuses it (an older gateway behind the same registrar).
            self._downgraded = True
            return _Ending(None, retry_now=True, text=f"{where} refused MQTT 5 ({label}); "
                                                      "using 3.1.1")
        hint = None
        if code == (0x87 if level == 5 else 5) and not self._broker:
            hint = "the server refuses this app key or registration"
        return _Ending(refusal_for_connack(code, where, hint=hint, version=level,
                                           reason_string=answer.reason_string,
                                           server_reference=answer.server_reference))

    # --- server mode: registration --------------------------------------------------------------

    async def _prepare(self) -> bool:
        """Server mode: register (or update alias/tags) as needed. True if it registered."""
        if self._broker:
            return False
        fresh = await self._ensure_registration()
        await self._ensure_profile()
        return fresh

    async def _ensure_registration(self) -> bool:
        """Register unless a valid registration is stored. True if it registered now."""
        cfg = self._config
        assert isinstance(cfg, ServerConfig)
        state = self._sdk_state
        reason = registration_reason(cfg, state, self._env.clock.now(), self._force_register)
        if reason is None:
            return False
        self._set_state(ClientState.REGISTERING, Reason(reason, "registering"))
        old = state.registration
        self._sdk_state = await register_again(cfg, state, self._http_connector,
                                               timeout=self._timeouts.http,
                                               on_traffic=self._count_traffic)
        self._tally.registrations += 1
        self._force_register = False
        if cfg.e2e:
            self._dispatcher.webpush_keys = self._sdk_state.webpush_keys
        await self._save_state()
        new = self._sdk_state.registration
        assert new is not None
        if self._on_new_token is not None and (old is None or new.token != old.token):
            await call_app(self._on_new_token, new.token, what="on_new_token")
        return True

    async def _ensure_profile(self) -> None:
        """Apply the config's alias/tags when the server may hold others."""
        cfg = self._config
        assert isinstance(cfg, ServerConfig)
        reg = self._sdk_state.registration
        assert reg is not None
        changes = profile_changes(cfg, reg)
        if changes is None:
            return
        new = await update_device(self._http_connector, reg, alias=changes[0],
                                  tags=changes[1], timeout=self._timeouts.http,
                                  on_traffic=self._count_traffic)
        self._sdk_state = self._sdk_state.with_registration(new)
        await self._save_state()

    # --- what a session asks of the client (through _Host) -----------------------------------

    async def _remember(self, network_key: str, memory: Mapping[str, Any] | None) -> None:
        self._sdk_state = self._sdk_state.with_memory(network_key, memory)
        await self._save_state()

    async def _deliver(self, publish: Publish) -> bool | None:
        """Hand ``publish`` to the callbacks and open message streams. True: done and
        recorded, acknowledge it; False: do not (the client is closing); None: a stream
        holds it (then :meth:`_finish_delivery` once :meth:`_delivery_pending` is False)."""
        key, check, message = self._parse(publish)
        new = False
        if message is not None and self._wants(publish.topic):
            dispatcher = self._dispatcher
            shown, new = dispatcher.open(key, message, check=check)
            if shown is not None:
                assert self._io is not None
                async with self._io.scope() as scope:
                    self._dispatch_scope = scope
                    await dispatcher.dispatch(shown)
                self._dispatch_scope = None
                if scope.cancelled_caught:
                    return False
                streams = dispatcher.streams
                if streams:
                    self._holding = (key, publish, streams)
                    for stream in streams:
                        stream.hand(shown)
                    return None
                dispatcher.finish(key)
        return await self._record(publish, new, key)

    async def _record(self, publish: Publish, new: bool, key: str | None) -> bool:
        if publish.qos == 2 and self._broker:
            self._outbox.received_qos2 = {*self._outbox.received_qos2,
                                          publish.packet_id or 0}
            self._outbox.dirty = True
        if (new and key is not None) or self._outbox.dirty:
            await self._save_state()
        return True

    def _delivery_pending(self) -> bool:
        holding = self._holding
        return holding is not None and any(s.holding for s in holding[2])

    async def _finish_delivery(self) -> bool:
        """The streams are done with the held message: True (record it, acknowledge) unless
        one gave it back unfinished (closed)."""
        holding = self._holding
        assert holding is not None
        self._holding = None
        key, publish, streams = holding
        if not all(s.finished for s in streams):
            return False
        self._dispatcher.finish(key)
        return await self._record(publish, True, key)

    async def _release(self, packet_id: int) -> None:
        self._outbox.received_qos2 = self._outbox.received_qos2 - {packet_id}
        await self._save_state()

    def _wants(self, topic: str) -> bool:
        """Broker mode: whether ``topic`` is under a filter subscribed now (a message on a
        filter dropped from the config or unsubscribed is acknowledged, not dispatched)."""
        if not self._broker:
            return True
        return any(topic_matches(f, topic) for f in self._wanted_filters())

    def _parse(
        self, publish: Publish
    ) -> tuple[str | None, bool, PushMessage | BrokerMessage | None]:
        """``(dedup key, look the key up?, message or None if malformed)``."""
        if self._broker:
            message = BrokerMessage(publish.topic, publish.payload, publish.qos,
                                    publish.retain, publish.dup, publish.properties)
            if publish.qos == 0:
                return None, False, message
            key = broker_dedup_key(publish.packet_id or 0, publish.topic, publish.payload)
            # Packet ids are reused, so only a DUP=1 redelivery is checked against the window.
            return key, publish.dup, message
        try:
            push = PushMessage.from_payload(publish.payload, topic=publish.topic,
                                            dup=publish.dup, properties=publish.properties)
        except ValueError as exc:
            # Acknowledged and dropped: redelivering it would fail the same way forever.
            self._tally.malformed_messages += 1
            log.warning("%s: dropping malformed push on %s: %s", self._name,
                        publish.topic, exc)
            return None, False, None
        return push.msg_id, True, push

    async def _probe(self, target: float) -> ProbeResult:
        endpoint = self._endpoint()
        assert self._io is not None
        return await run_probe(lambda: self._open_stream(*endpoint),
                               self._connect_packet(target), target, io=self._io,
                               connect_timeout=self._timeouts.connect,
                               ping_timeout=self._ping_timeout, tally=self._tally,
                               name=self._name)

    @property
    def _stopping(self) -> bool:
        return self._closing or self._interrupted



class _Host:
    """The :class:`~pushsdk._session.SessionHost` a client gives its sessions."""

    __slots__ = ("_client",)

    def __init__(self, client: PushClient) -> None:
        self._client = client

    @property
    def stopping(self) -> bool:
        return self._client._stopping

    async def remember(self, network_key: str, memory: Mapping[str, Any] | None) -> None:
        await self._client._remember(network_key, memory)

    async def save_state(self) -> None:
        await self._client._save_state()

    async def deliver(self, publish: Publish) -> bool | None:
        return await self._client._deliver(publish)

    def delivery_pending(self) -> bool:
        return self._client._delivery_pending()

    async def finish_delivery(self) -> bool:
        return await self._client._finish_delivery()

    async def release(self, packet_id: int) -> None:
        await self._client._release(packet_id)

    def completed(self, item: Any) -> None:
        self._client._completed(item)

    async def probe(self, target: float) -> ProbeResult:
        return await self._client._probe(target)



def _record(item: Outbound) -> dict[str, Any]:
    p = item.publish
    return {"topic": p.topic, "payload": base64.b64encode(p.payload).decode(), "qos": p.qos,
            "retain": p.retain, "packet_id": p.packet_id, "stage": item.stage}


def _asks_reply(strategy: HeartbeatStrategy) -> bool:
    """Whether ``strategy`` decides each ping's reply timeout (overrides the default)."""
    return type(strategy).reply_timeout is not HeartbeatStrategy.reply_timeout


def _signal(event: Event | None) -> None:
    """Wake whoever waits on a lazily created event (nobody if it was never created)."""
    if event is not None:
        event.set()

