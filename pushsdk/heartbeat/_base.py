"""The heartbeat strategy interface, the fixed strategy, and the registry of names.

A strategy decides how long the client stays silent before it sends a PINGREQ. Strategies are
small immutable attrs classes holding configuration only; the *state* they learn (current
interval, success counters, ...) is passed into every method and a new state is returned, so a
strategy is a pure function of its inputs and can be tested without trio or a network.

Per connection the client calls::

    state = strategy.start(memory, ctx)          # memory: what memory(state) returned last
    every heartbeat:                               #   time on this network, or None
        wait strategy.interval(state, ctx) seconds of silence, send PINGREQ
        PINGRESP in time   -> state = strategy.on_success(state, ctx)
        no PINGRESP        -> state = strategy.on_failure(state, ctx); reconnect
    strategy.memory(state) -> persisted per network_key in the SDK state file

``max_interval`` bounds every value ``interval`` may return; the client declares an MQTT
keepalive of at least ``ceil(max_interval)`` so the server never cuts a connection the
strategy keeps alive on purpose.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import attrs

__all__ = [
    "FixedStrategy",
    "HeartbeatContext",
    "HeartbeatStrategy",
    "UnknownStrategyError",
    "known_strategies",
    "parse_strategy",
    "register_strategy",
]

NetworkType = Literal["wifi", "cellular", "ethernet", "other"]
AppState = Literal["foreground", "background", "inactive"]
NETWORK_TYPES = ("wifi", "cellular", "ethernet", "other")
APP_STATES = ("foreground", "background", "inactive")

#: Largest keepalive MQTT 3.1.1 can declare (16 bits).
MAX_KEEPALIVE = 65535


@attrs.frozen
class HeartbeatContext:
    """What a strategy may know about the moment it is asked. Built fresh for every call."""

    now: float
    """Monotonic seconds (``trio.current_time()``): for durations within a run."""
    wall_time: float
    """Unix seconds from the client's injected clock: for memory that outlives a run."""
    network_key: str
    """Identifies the network, e.g. ``wifi_<SSID>`` or ``mobile_<ISP>``; memory is kept per key."""
    network_type: NetworkType = "wifi"
    app_state: AppState = "foreground"
    app_state_since: float = 0.0
    """Monotonic time at which ``app_state`` last changed."""
    connected_since: float = 0.0
    """Monotonic time at which the current connection was accepted (CONNACK 0)."""
    lateness: float = 0.0
    """How many seconds after its due time the heartbeat was sent (device sleep, Doze)."""
    silence: float = 0.0
    """In ``on_success``/``on_failure``/``reply_timeout``: how long the link had been silent
    (nothing sent or received) when the ping went out, i.e. the idle time this ping tested.
    A ping sent early (piggybacked on radio activity) tests less than the interval."""
    foreground_changed_at: float | None = None
    """Monotonic time at which the app last entered or left the foreground (screen on/off
    without a foreground change does not count); ``None`` if the platform does not say, in
    which case strategies fall back to ``app_state_since``."""
    server_keepalive: float | None = None
    """MQTT 5: the Server Keep Alive of the connection's CONNACK (seconds; the server's
    ceiling on the keepalive, which the client then uses instead of the declared one), or
    ``None`` when the server sent none (always in MQTT 3.1.1)."""
    network_active: bool | None = None
    """Whether the platform reports the default network active now, i.e. it carried traffic
    moments ago and the radio is still in its high-power state (Android's
    ``ConnectivityManager.isDefaultNetworkActive()``); ``None`` when the platform does not
    say (no ``network_active`` query was given to the client)."""


State = TypeVar("State")


class HeartbeatStrategy(abc.ABC):
    """Base class of heartbeat strategies. Subclasses are frozen attrs classes.

    Required: ``name``, ``max_interval``, :meth:`start`, :meth:`interval`. The others default
    to "nothing to learn" and "nothing to remember".
    """

    #: Seconds to wait for the PINGRESP; ``None`` = the client's default (10 s).
    ping_timeout: float | None = None
    #: The platform exempts this strategy's connection from Doze (alarms fire and the network
    #: stays open while the device is idle), as Android does for Google Play services' push
    #: connection. The SDK and the simulated handset read it; ordinary apps are not exempt.
    doze_exempt: bool = False

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The spec that :func:`parse_strategy` turns back into this strategy."""

    @property
    @abc.abstractmethod
    def max_interval(self) -> float:
        """Upper bound of :meth:`interval`, in seconds (at most 65,535)."""

    @abc.abstractmethod
    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> Any:
        """State for a new connection on ``ctx.network_key``, from that network's memory."""

    @abc.abstractmethod
    def interval(self, state: Any, ctx: HeartbeatContext) -> float:
        """Seconds of silence (nothing sent or received) before the next PINGREQ."""

    def on_success(self, state: Any, ctx: HeartbeatContext) -> Any:
        """A PINGRESP arrived in time."""
        return state

    def on_failure(self, state: Any, ctx: HeartbeatContext) -> Any:
        """A PINGRESP did not arrive in time (or the link broke while a ping was out)."""
        return state

    def memory(self, state: Any) -> Mapping[str, Any] | None:
        """JSON-serialisable summary to persist for this network, or ``None``."""
        return None

    def reply_timeout(self, state: Any, ctx: HeartbeatContext) -> float | None:
        """Seconds to wait for the answer to the ping going out now (``ctx.lateness`` and
        ``ctx.silence`` describe it); ``None`` = the client's default. Default:
        :attr:`ping_timeout`. Mars shortens it after a very late beat."""
        return self.ping_timeout

    def probe(self, state: Any, ctx: HeartbeatContext) -> float | None:
        """Seconds of silence to test on a separate *probe* connection, or ``None``.

        Asked whenever a heartbeat goes out (the radio is awake: opening the probe then is
        nearly free). The result comes back through :meth:`on_probe`. Default: never.
        """
        return None

    def on_probe(self, state: Any, ctx: HeartbeatContext, ok: bool | None) -> Any:
        """A probe ended: ``ok`` says whether ``ctx.silence`` seconds of silence survived;
        ``None`` means no probe could be made (refused, unreachable)."""
        return state

    def piggyback(self, state: Any, ctx: HeartbeatContext, silence: float) -> bool:
        """The platform says the radio is already active (another app's traffic): send the
        heartbeat now, ``silence`` seconds into the interval, almost for free? Default no."""
        return False


@attrs.frozen
class FixedStrategy(HeartbeatStrategy):
    """Always the same interval, like most MQTT clients (Paho 60 s, WeChat's old 270 s)."""

    seconds: float = attrs.field()

    @seconds.validator
    def _check(self, _attribute: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 < value <= MAX_KEEPALIVE
        ):
            raise ValueError(f"the interval must be in (0, {MAX_KEEPALIVE}] seconds")

    @classmethod
    def from_spec(cls, arg: str | None) -> FixedStrategy:
        if not arg:
            raise ValueError("give the interval in seconds, e.g. fixed:270")
        try:
            seconds = float(arg)
        except ValueError:
            raise ValueError(f"not a number of seconds: {arg!r}") from None
        return cls(seconds)

    @property
    def name(self) -> str:
        return f"fixed:{self.seconds:g}"

    @property
    def max_interval(self) -> float:
        return self.seconds

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> None:
        return None

    def interval(self, state: None, ctx: HeartbeatContext) -> float:
        return self.seconds


class UnknownStrategyError(ValueError):
    """The strategy name is not registered, or its argument is invalid."""


StrategyFactory = Callable[[str | None], HeartbeatStrategy]


@attrs.frozen
class _Entry:
    factory: StrategyFactory
    usage: str
    simulation_only: bool


_REGISTRY: dict[str, _Entry] = {}
S = TypeVar("S", bound=type[HeartbeatStrategy])


def register_strategy(
    name: str,
    factory: StrategyFactory | type[HeartbeatStrategy] | None = None,
    *,
    usage: str | None = None,
    simulation_only: bool = False,
) -> Any:
    """Make ``name`` known to :func:`parse_strategy`.

    ``factory(arg)`` gets the text after ``name:`` (or ``None``) and returns a strategy or
    raises ``ValueError``. A strategy class may be passed instead: its ``from_spec`` classmethod
    is used if it has one, otherwise it is called without arguments. Without ``factory`` this
    returns a class decorator::

        @register_strategy("mars")
        @attrs.frozen
        class MarsStrategy(HeartbeatStrategy): ...
    """
    if factory is None:
        def decorate(cls: S) -> S:
            register_strategy(name, cls, usage=usage, simulation_only=simulation_only)
            return cls

        return decorate
    if ":" in name or not name:
        raise ValueError(f"bad strategy name {name!r}")
    if isinstance(factory, type):
        cls = factory
        factory = getattr(cls, "from_spec", None) or _no_argument(cls, name)
    _REGISTRY[name] = _Entry(factory, usage or name, simulation_only)
    return factory


def _no_argument(cls: type[HeartbeatStrategy], name: str) -> StrategyFactory:
    def make(arg: str | None) -> HeartbeatStrategy:
        if arg:
            raise ValueError(f"{name} takes no argument")
        return cls()

    return make


def known_strategies(*, include_simulation: bool = True) -> list[str]:
    """Usage strings of the registered strategies, e.g. ``["fixed:<seconds>", "mars"]``."""
    return [
        entry.usage
        for entry in _REGISTRY.values()
        if include_simulation or not entry.simulation_only
    ]


def parse_strategy(spec: str) -> HeartbeatStrategy:
    """Turn ``"fixed:270"``, ``"mars"``, ``"courier:max=1800"``, ``"mars+hooks"``,
    ``"mypackage.strategies:make"`` ... into a strategy (``+hooks``: see
    :mod:`pushsdk.heartbeat.hooks`; ``module:attr``: a strategy object or a zero-argument
    factory in an importable module, for names that are not registered).

    Raises :class:`UnknownStrategyError` (a ``ValueError``) naming the known strategies.
    """
    spec = spec.strip()
    if spec.endswith("+hooks") and spec != "+hooks":
        from .hooks import HookedStrategy  # the wrapper imports this module

        inner = spec[: -len("+hooks")]
        if inner.endswith("+hooks"):
            raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: +hooks given twice")
        return HookedStrategy(parse_strategy(inner))
    name, _, arg = spec.partition(":")
    entry = _REGISTRY.get(name)
    if entry is None:
        if arg and _is_dotted(name) and arg.isidentifier():
            return _imported(spec, name, arg)
        raise UnknownStrategyError(
            f"unknown heartbeat strategy {spec!r}; known: {', '.join(known_strategies())}, "
            "or module:attr"
        )
    try:
        return entry.factory(arg or None)
    except ValueError as exc:
        raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: {exc}") from None


def _is_dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _imported(spec: str, module_name: str, attr: str) -> HeartbeatStrategy:
    """``module:attr``: a strategy object, or a zero-argument factory returning one, from an
    importable module (on ``sys.path``/``PYTHONPATH``, so worker processes find it too)."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: cannot import "
                                   f"{module_name!r} ({exc})") from None
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: {module_name} has no "
                                   f"attribute {attr!r}") from None
    if not isinstance(found, HeartbeatStrategy) and callable(found):
        try:
            found = found()
        except Exception as exc:  # the factory is the user's code: say what went wrong
            raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: {attr}() raised "
                                       f"{type(exc).__name__}: {exc}") from None
    if not isinstance(found, HeartbeatStrategy):
        raise UnknownStrategyError(f"bad heartbeat strategy {spec!r}: {attr} is not a "
                                   "HeartbeatStrategy nor a factory returning one")
    return found


register_strategy("fixed", FixedStrategy, usage="fixed:<seconds>")
