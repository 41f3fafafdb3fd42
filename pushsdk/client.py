"""PushClient: keeps one MQTT connection alive and hands pushes to the app.

::

    async with PushClient(ServerConfig(server_url=..., app_key=..., device_id=...),
                          on_notification=show) as client:
        await client.wait_connected()
        ...

The ``async with`` block owns a nursery running the connection loop: register if needed,
connect, subscribe, and on any failure back off and start over; each accepted connection is a
:class:`~pushsdk._session.Session` (heartbeats, dispatch, receipts). Everything the client
depends on — connectors, state store, wall clock, randomness, heartbeat strategy, backoff — is
injected, so one code path runs in real and virtual time. See docs/sdk.md.
"""
from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Coroutine
from typing import Any, Literal

import attrs
import trio

from ._session import Counters, LinkEnded, Session
from .backoff import Backoff
from .clock import Clock, SystemClock
from .config import BrokerConfig, ClientState, ClientStatistics, ServerConfig
from .dispatcher import Callback, Dispatcher, call_app
from .heartbeat import APP_STATES, MAX_KEEPALIVE, NETWORK_TYPES, FixedStrategy, HeartbeatStrategy
from .protocol import Connect, Publish
from .registration import Registration, RegistrationError, register
from .state import DEDUP_WINDOW, MemoryStateStore, SdkState, StateStore
from .transport import Connector, TcpConnector, TransportError
from .webpush import WebPushKeys

__all__ = ["BrokerConfig", "ClientState", "ClientStatistics", "PushClient", "ServerConfig"]

log = logging.getLogger("pushsdk.client")

#: Receipts waiting for a connection, at most; the oldest are dropped beyond it.
MAX_QUEUED_RECEIPTS = 1000
DEFAULT_PING_TIMEOUT = 10.0
RECEIPT_EVENTS = ("opened", "dismissed")


@attrs.frozen
class _Ending:
    """How a connection attempt ended, and how soon to try again."""

    reason: str
    uptime: float | None = None  # None: never accepted
    retry: Literal["backoff", "now", "max"] = "backoff"


class PushClient:
    """A push client for a device. Use as ``async with PushClient(config, ...) as client``.

    ``config`` is a :class:`ServerConfig` (the reference push server: HTTP registration,
    inbox, receipts, dedup by ``msg_id``) or a :class:`BrokerConfig` (any MQTT 3.1.1 broker).

    Callbacks (plain functions or ``async def``; a raising callback is logged, counted and
    does not stop the client or other callbacks):

    - ``on_notification(msg: PushMessage)``, ``on_message(msg: PushMessage)``,
      ``on_deleted(msg: PushMessage)`` (``msg.count`` messages were dropped by the server);
      in broker mode every message goes to ``on_message(msg: BrokerMessage)``. The PUBACK is
      sent after the callback returns and the message is recorded as delivered.
    - ``on_new_token(token: str)``: after a registration that produced a new token.
    - ``on_state_change(old: ClientState, new: ClientState, reason: str)``: must be
      synchronous (it is called from inside the connection machinery).

    Injected parts (defaults in brackets): ``connector`` [TcpConnector()] for MQTT,
    ``http_connector`` [connector] for registration, ``state_store`` [MemoryStateStore()],
    ``clock`` [SystemClock()], ``rng`` [random.Random()], ``strategy`` [fixed:270 in server
    mode, fixed:<keepalive> in broker mode], ``backoff`` [Backoff()], ``ping_timeout``
    [strategy.ping_timeout or 10 s]. ``min_keepalive`` [0]: declare at least this MQTT
    keepalive (the server waits 1.5 × it for a sign of life), e.g. to keep the session
    through Doze idle periods, when no heartbeat can be sent.
    """

    # Slots keep each of the thousands of clients a simulation runs small.
    __slots__ = (
        "_app_state", "_app_state_since", "_backoff", "_broker", "_clock", "_closing",
        "_config", "_connect_timeout", "_connector", "_counters", "_cycle_scope",
        "_device_idle", "_dispatcher", "_done", "_ever_connected", "_finished",
        "_force_register", "_http_connector", "_http_timeout", "_idle_ended_at",
        "_idle_event", "_inflight", "_interrupted", "_keepalive", "_max_packet_size",
        "_network_event", "_network_key", "_network_type", "_next_packet_id",
        "_nursery_manager", "_on_new_token", "_on_state_change", "_outbox", "_ping_timeout",
        "_rng", "_sdk_state", "_session", "_started", "_state", "_state_event",
        "_store", "_strategy",
    )

    def __init__(
        self,
        config: ServerConfig | BrokerConfig,
        *,
        connector: Connector | None = None,
        http_connector: Connector | None = None,
        state_store: StateStore | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        strategy: HeartbeatStrategy | None = None,
        backoff: Backoff | None = None,
        ping_timeout: float | None = None,
        connect_timeout: float = 10.0,
        http_timeout: float = 30.0,
        max_packet_size: int = 65536,
        min_keepalive: int = 0,
        dedup_window: int = DEDUP_WINDOW,
        network_key: str | None = "default",
        network_type: str = "wifi",
        app_state: str = "foreground",
        on_notification: Callback | None = None,
        on_message: Callback | None = None,
        on_deleted: Callback | None = None,
        on_new_token: Callback | None = None,
        on_state_change: Callback | None = None,
    ) -> None:
        if not isinstance(config, (ServerConfig, BrokerConfig)):
            raise TypeError("config must be a ServerConfig or a BrokerConfig")
        _check_choice("network_type", network_type, NETWORK_TYPES)
        _check_choice("app_state", app_state, APP_STATES)
        for name, value in (("ping_timeout", ping_timeout), ("connect_timeout", connect_timeout),
                            ("http_timeout", http_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")
        self._config = config
        self._broker = isinstance(config, BrokerConfig)
        self._connector = connector or TcpConnector(connect_timeout=connect_timeout)
        self._http_connector = http_connector or self._connector
        self._store: StateStore = state_store if state_store is not None else MemoryStateStore()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        if strategy is None:
            seconds = config.keepalive if isinstance(config, BrokerConfig) else 270
            strategy = FixedStrategy(seconds)
        self._strategy = strategy
        self._backoff = backoff or Backoff()
        self._ping_timeout = (
            ping_timeout if ping_timeout is not None
            else strategy.ping_timeout or DEFAULT_PING_TIMEOUT
        )
        self._connect_timeout = connect_timeout
        self._http_timeout = http_timeout
        self._max_packet_size = max_packet_size
        # The declared keepalive only bounds how long the server waits for a sign of life;
        # pings follow the strategy. ``min_keepalive`` lets an app keep its session through
        # silences the strategy does not plan, such as Doze idle periods (hours).
        declared = max(math.ceil(strategy.max_interval), min_keepalive)
        if isinstance(config, BrokerConfig):
            declared = max(declared, config.keepalive)
        self._keepalive = min(MAX_KEEPALIVE, max(1, declared))
        self._dispatcher = Dispatcher(on_notification, on_message, on_deleted, dedup_window)
        self._on_new_token = on_new_token
        self._on_state_change = on_state_change

        self._network_key = network_key
        self._network_type = network_type
        self._app_state = app_state
        self._app_state_since = 0.0
        self._device_idle = False
        self._idle_ended_at = -math.inf
        # Events are created only when something waits on them (a fleet holds thousands
        # of clients, and most never do): see _signal.
        self._idle_event: trio.Event | None = None
        self._state = ClientState.IDLE
        self._state_event: trio.Event | None = None
        self._network_event: trio.Event | None = None
        self._sdk_state = SdkState()
        self._counters = Counters()
        self._outbox: list[tuple[str, str]] = []  # receipts not sent yet, oldest first
        self._inflight: dict[int, Publish] = {}
        self._next_packet_id = 1
        self._force_register = False
        self._ever_connected = False
        self._session: Session | None = None
        self._cycle_scope: trio.CancelScope | None = None
        self._interrupted = False
        self._closing = False
        self._done: trio.Event | None = None
        self._finished = False
        self._started = False
        self._nursery_manager: Any = None

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> PushClient:
        self._mark_started()
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        nursery.start_soon(self._run)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._stop()
        try:
            return bool(await self._nursery_manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            # Let the body's own exception propagate as itself, not wrapped in a group.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise

    def run(self) -> Coroutine[Any, Any, None]:
        """Run the client in the calling task until :meth:`aclose` or cancellation:
        ``await client.run()`` or ``nursery.start_soon(client.run)``.

        The alternative to ``async with`` when a program runs many clients from its own
        nursery: no nursery of the client's own. (A plain method returning the client's
        coroutine, so that a connected client's stack holds one frame less.)
        """
        self._mark_started()
        return self._run()

    def _mark_started(self) -> None:
        if self._started:
            raise RuntimeError("a PushClient can be started only once")
        self._started = True
        self._app_state_since = trio.current_time()

    async def aclose(self) -> None:
        """Stop the client: finish the message being acknowledged, send DISCONNECT, close."""
        if not self._started:
            self._closing = True
            self._set_state(ClientState.CLOSED, "closed before start")
            return
        self._stop()
        if not self._finished:
            self._done = self._done or trio.Event()
            await self._done.wait()

    def _stop(self) -> None:
        # No cancel scope spans the whole run (a fleet holds thousands of clients): stop
        # whatever the connection loop waits on, and it returns when it sees _closing.
        self._closing = True
        if self._cycle_scope is not None:
            self._cycle_scope.cancel()
        for event in (self._network_event, self._idle_event):
            _signal(event)
        self._network_event = self._idle_event = None

    async def _run(self) -> None:
        try:
            if self._closing:
                return
            await self._load_state()
            await self._connection_loop()
        finally:
            self._set_state(ClientState.CLOSED, "client closed")
            self._finished = True
            _signal(self._done)

    # --- public API -----------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

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

    async def wait_connected(self) -> None:
        """Return once the client is connected (CONNACK 0). Raises ``trio.ClosedResourceError``
        if the client closes first."""
        while self._state is not ClientState.CONNECTED:
            if self._state is ClientState.CLOSED or self._closing:
                raise trio.ClosedResourceError("the push client is closed")
            self._state_event = self._state_event or trio.Event()
            await self._state_event.wait()

    def notify_network_changed(
        self, network_key: str | None, network_type: str = "wifi"
    ) -> None:
        """The device moved to another network (or, with ``None``, lost connectivity).

        Drops the current connection or pending retry and connects at once, without backoff,
        using the heartbeat memory learned on ``network_key``.
        """
        _check_choice("network_type", network_type, NETWORK_TYPES)
        self._network_key = network_key
        self._network_type = network_type
        self._interrupted = True
        if self._cycle_scope is not None:
            self._cycle_scope.cancel()
        event, self._network_event = self._network_event, None
        _signal(event)

    def set_app_state(self, app_state: str) -> None:
        """``"foreground"``, ``"background"`` or ``"inactive"``; strategies may adapt to it."""
        _check_choice("app_state", app_state, APP_STATES)
        if app_state != self._app_state:
            self._app_state = app_state
            self._app_state_since = trio.current_time()
            self._wake()

    def set_device_idle(self, idle: bool) -> None:
        """Platform signal: the device entered (``True``) or left Doze idle.

        While idle the platform defers the client's alarms and blocks its network, as
        Android's Doze does: no heartbeat is due, an outstanding ping cannot time out and no
        connection is attempted. On leaving idle a heartbeat that fell due meanwhile goes out
        at once (its lateness is what strategies such as Mars read as a doze event), and a
        ping still outstanding gets a full ping timeout from that moment.
        """
        idle = bool(idle)
        if idle == self._device_idle:
            return
        self._device_idle = idle
        if not idle:
            self._idle_ended_at = trio.current_time()
            event, self._idle_event = self._idle_event, None
            _signal(event)
        self._wake()

    def notify_radio_active(self) -> None:
        """Platform signal: the radio has just become active for another reason (another
        app's traffic), as Android's ``ConnectivityManager.OnNetworkActiveListener`` reports.

        A heartbeat sent now rides on that wake-up and costs almost no energy; the strategy
        decides whether it is worth sending early (``HeartbeatStrategy.piggyback``).
        """
        if self._session is not None:
            self._session.radio_active()

    @property
    def device_idle(self) -> bool:
        return self._device_idle

    async def send_receipt(self, msg_id: str, event: str) -> None:
        """Tell the server the user ``"opened"`` or ``"dismissed"`` message ``msg_id``.

        Returns once queued: the receipt is sent as a QoS 1 PUBLISH when connected and resent
        after reconnects until acknowledged (kept in memory, not across restarts).
        """
        if self._broker:
            raise RuntimeError("receipts exist only in server mode")
        _check_choice("event", event, RECEIPT_EVENTS)
        if self._closing or self._state is ClientState.CLOSED:
            raise trio.ClosedResourceError("the push client is closed")
        if len(self._outbox) >= MAX_QUEUED_RECEIPTS:
            dropped = self._outbox.pop(0)
            log.warning("receipt queue full; dropping the receipt for %s", dropped[0])
        self._outbox.append((msg_id, event))
        self._wake()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> ClientStatistics:
        c = self._counters
        session = self._session
        connected_time = c.connected_time
        if session is not None:
            connected_time += trio.current_time() - session.connected_at
        return ClientStatistics(
            state=self._state,
            network_key=self._network_key,
            network_type=self._network_type,
            app_state=self._app_state,
            strategy=self._strategy.name,
            keepalive=self._keepalive,
            heartbeat_interval=session.interval if session else None,
            bytes_up=c.bytes_up,
            bytes_down=c.bytes_down,
            heartbeats_sent=c.heartbeats_sent,
            heartbeats_succeeded=c.heartbeats_succeeded,
            heartbeats_failed=c.heartbeats_failed,
            probes=c.probes,
            connect_attempts=c.connect_attempts,
            connects=c.connects,
            reconnects=c.reconnects,
            registrations=c.registrations,
            messages_received=c.messages_received,
            messages_dispatched=self._dispatcher.dispatched,
            duplicates=self._dispatcher.duplicates,
            malformed_messages=c.malformed_messages,
            callback_errors=self._dispatcher.callback_errors,
            receipts_pending=len(self._outbox) + len(self._inflight),
            receipts_acknowledged=c.receipts_acknowledged,
            state_save_errors=c.state_save_errors,
            connected_time=connected_time,
            decrypt_errors=self._dispatcher.decrypt_errors,
        )

    # --- state --------------------------------------------------------------------------

    def _set_state(self, new: ClientState, reason: str) -> None:
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

    async def _load_state(self) -> None:
        try:
            loaded = await self._store.load()
        except Exception:  # a custom store's bug must not stop the client
            log.exception("state store failed to load; starting afresh")
            loaded = None
        self._sdk_state = loaded or SdkState()
        self._dispatcher.load(self._sdk_state.recent_msg_ids)
        if isinstance(self._config, ServerConfig) and self._config.e2e:
            self._dispatcher.webpush_keys = self._sdk_state.webpush_keys

    async def _save_state(self) -> None:
        self._sdk_state = attrs.evolve(
            self._sdk_state, recent_msg_ids=self._dispatcher.recent()
        )
        try:
            await self._store.save(self._sdk_state)
        except OSError as exc:
            # Delivery goes on: the cost is a possible duplicate after a crash.
            self._counters.state_save_errors += 1
            log.warning("%s: cannot save state: %s", self._name, exc)
        except Exception:  # a custom store's (or a strategy memory's) bug: same treatment
            self._counters.state_save_errors += 1
            log.exception("%s: cannot save state", self._name)

    def _count_traffic(self, sent: int, received: int) -> None:
        self._counters.bytes_up += sent
        self._counters.bytes_down += received

    def _wake(self) -> None:
        if self._session is not None:
            self._session.wake()

    # --- the connection loop --------------------------------------------------------------

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._closing:
            if self._network_key is None:
                self._set_state(ClientState.OFFLINE, "no network")
                self._network_event = self._network_event or trio.Event()
                await self._network_event.wait()
                continue
            if self._device_idle:  # Doze: the platform runs nothing of ours until it ends
                self._idle_event = self._idle_event or trio.Event()
                await self._idle_event.wait()
                continue
            self._interrupted = False
            ending = await self._attempt()
            if self._closing:
                return
            if ending.uptime is not None and self._backoff.should_reset(ending.uptime):
                attempt = 0
            if ending.retry != "now" and not self._interrupted:
                if ending.retry == "max":
                    delay = self._backoff.max_delay
                else:
                    delay = self._backoff.delay(attempt, self._rng)
                    attempt += 1
                self._set_state(ClientState.WAITING, ending.reason)
                log.info("%s: %s; retrying in %.1f s", self._name, ending.reason, delay)
                with trio.CancelScope() as self._cycle_scope:  # a network change cuts it short
                    await trio.sleep(delay)
                self._cycle_scope = None
            if self._interrupted:  # network change: at once, with a fresh backoff
                attempt = 0

    async def _attempt(self) -> _Ending:
        """One connection attempt: register if needed, connect, handshake, serve.

        It runs in one cancel scope (``_cycle_scope``), which a network change cancels and
        the session ends by cancelling; its deadline bounds connecting plus the handshake
        (``connect_timeout``), then guards the session's writes against stalls. One scope
        rather than one per step: thousands of clients connect at once in a fleet.
        """
        fresh = False
        host, port = "", 0
        stream: trio.abc.Stream | None = None
        session: Session | None = None
        ending: _Ending | None = None
        phase = "registering"
        try:
            with trio.CancelScope() as scope:
                self._cycle_scope = scope
                try:
                    if isinstance(self._config, ServerConfig):
                        fresh = await self._ensure_registration()
                    host, port, tls = self._endpoint()
                    self._set_state(ClientState.CONNECTING, f"connecting to {host}:{port}")
                    self._counters.connect_attempts += 1
                    phase = "connecting"
                    scope.deadline = trio.current_time() + self._connect_timeout
                    stream = await self._connector.connect(host, port, tls=tls)
                    phase = "handshake"
                    session = Session.over(self, stream, scope)
                    connack = await session.handshake(self._connect_packet())
                    scope.deadline = math.inf
                    if connack.return_code != 0:
                        ending = self._refused(connack.return_code, fresh)
                    else:
                        self._counters.connects += 1
                        if self._ever_connected:
                            self._counters.reconnects += 1
                        self._ever_connected = True
                        phase = "connected"
                        await session.serve()
                except RegistrationError as exc:
                    ending = _Ending(str(exc), retry="backoff" if exc.retryable else "max")
                except LinkEnded as exc:
                    ending = _Ending(str(exc))
                except TransportError as exc:
                    ending = _Ending(str(exc))
                except (OSError, trio.BrokenResourceError) as exc:
                    ending = _Ending(f"cannot connect to {host}:{port}: {exc}")
        finally:
            self._cycle_scope = None
            if session is not None and phase == "connected" and self._closing:
                await session.say_goodbye()
            if stream is not None:
                await trio.aclose_forcefully(stream)
        if phase == "connected":
            assert session is not None
            uptime = await session.finish()
            return _Ending(session.end_reason or "connection ended", uptime=uptime)
        if ending is not None:
            return ending
        if self._interrupted:
            return _Ending("network changed")
        if phase == "connecting":
            return _Ending(f"connecting to {host}:{port} timed out")
        if phase == "handshake":
            return _Ending(f"no CONNACK within {self._connect_timeout:g} s")
        return _Ending("connection attempt interrupted")

    def _endpoint(self) -> tuple[str, int, bool]:
        cfg = self._config
        if isinstance(cfg, BrokerConfig):
            return cfg.host, cfg.port, cfg.tls
        reg = self._sdk_state.registration
        assert reg is not None
        return reg.mqtt_host, reg.mqtt_port, reg.mqtt_tls

    async def _ensure_registration(self) -> bool:
        """Register unless a valid registration is stored. True if it registered now."""
        cfg = self._config
        assert isinstance(cfg, ServerConfig)
        reg = self._sdk_state.registration
        keys = self._sdk_state.webpush_keys
        same_device = reg is not None and reg.is_for(cfg.server_url, cfg.app_key, cfg.device_id)
        if not same_device:
            reason = "no stored registration"
        elif self._force_register:
            reason = "token rejected"
        elif reg.token_expired(self._clock.now(), cfg.token_refresh_margin):
            reason = "token expired"
        elif cfg.e2e and keys is None:
            reason = "end-to-end keys not registered yet"
        else:
            return False
        if cfg.e2e and (keys is None or not same_device):
            keys = WebPushKeys.generate()  # a new identity gets keys of its own (unlinkable)
        self._set_state(ClientState.REGISTERING, reason)
        new = await register(
            self._http_connector,
            cfg.server_url,
            cfg.app_key,
            cfg.device_id,
            platform=cfg.platform,
            alias=cfg.alias,
            tags=cfg.tags,
            webpush=keys.subscription() if cfg.e2e and keys else None,
            timeout=self._http_timeout,
            on_traffic=self._count_traffic,
        )
        self._counters.registrations += 1
        self._force_register = False
        self._sdk_state = attrs.evolve(self._sdk_state.with_registration(new),
                                       webpush_keys=keys)
        if cfg.e2e:
            self._dispatcher.webpush_keys = keys
        await self._save_state()
        if self._on_new_token is not None and (reg is None or new.token != reg.token):
            await call_app(self._on_new_token, new.token, what="on_new_token")
        return True

    def _connect_packet(self) -> Connect:
        cfg = self._config
        if isinstance(cfg, BrokerConfig):
            return Connect(
                client_id=cfg.client_id,
                keepalive=self._keepalive,
                clean_session=cfg.clean_session,
                username=cfg.username,
                password=cfg.password.encode() if cfg.password is not None else None,
            )
        reg = self._sdk_state.registration
        assert reg is not None
        return Connect(
            client_id=reg.registration_id,
            keepalive=self._keepalive,
            clean_session=False,
            username=reg.app_key,
            password=reg.token.encode(),
        )

    def _refused(self, code: int, fresh: bool) -> _Ending:
        if code == 4 and not self._broker:
            # Unknown or expired token: register again, at once unless we just did.
            self._force_register = True
            return _Ending("token rejected (CONNACK 4)", retry="backoff" if fresh else "now")
        reasons = {
            1: "unacceptable protocol version",
            2: "client identifier rejected",
            3: "server unavailable",
            4: "bad user name or password",
            5: "not authorised",
        }
        reason = f"{reasons.get(code, 'connection refused')} (CONNACK {code})"
        # Retrying soon cannot fix our identity or credentials; only "unavailable" can pass.
        return _Ending(reason, retry="backoff" if code == 3 else "max")

    def _allocate_packet_id(self) -> int:
        while True:
            packet_id = self._next_packet_id
            self._next_packet_id = packet_id % 65535 + 1
            if packet_id not in self._inflight:
                return packet_id

def _signal(event: trio.Event | None) -> None:
    """Wake whoever waits on a lazily created event (nobody if it was never created)."""
    if event is not None:
        event.set()


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
