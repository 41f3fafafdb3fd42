"""Heartbeat strategies as the simulator names them: the SDK's registry, ``+hooks``,
``module:attr``, and the simulation-only ``oracle`` and ``nat-aware``.

``oracle`` is not a strategy that runs: it is the true lower bound computed per handset from
its day (:mod:`simulator.oracle`, docs/oracle.md); runs and benches report it as a row of its
own. ``nat-aware`` is a strategy that runs: it is told each network's NAT timeout and beats
5 s under it (what ``oracle`` used to be; not a bound: it ignores other apps' wake-ups, Doze
windows and per-connection timeouts). Everything else is the SDK's own strategy, unchanged
(``pushsdk.heartbeat``).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from pushsdk.heartbeat import (
    MAX_KEEPALIVE,
    HeartbeatContext,
    HeartbeatStrategy,
    UnknownStrategyError,
    known_strategies,
    parse_strategy,
)

ORACLE = "oracle"
NAT_AWARE = "nat-aware"
SIMULATION_ONLY = (ORACLE, NAT_AWARE)


@attrs.frozen
class NatAwareStrategy(HeartbeatStrategy):
    """Beats ``margin`` seconds before the NAT of the network in use would forget the
    connection. ``timeouts`` maps network key → NAT idle timeout (seconds)."""

    timeouts: tuple[tuple[str, float], ...]
    margin: float = 5.0  # covers link latency and jitter (≤ 0.1 s each way) with room

    name = NAT_AWARE

    @classmethod
    def knowing(cls, timeouts: Mapping[str, float], margin: float = 5.0) -> NatAwareStrategy:
        return cls(tuple(sorted(timeouts.items())), margin)

    @property
    def max_interval(self) -> float:
        return min(MAX_KEEPALIVE, max(t for _, t in self.timeouts) - self.margin)

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> None:
        return None

    def interval(self, state: None, ctx: HeartbeatContext) -> float:
        for key, timeout in self.timeouts:
            if key == ctx.network_key:
                return min(self.max_interval, max(1.0, timeout - self.margin))
        return self.max_interval


@functools.lru_cache(maxsize=64)
def _shared(name: str) -> HeartbeatStrategy:
    # Strategies hold configuration only (their state is passed in), so handsets share one.
    return parse_strategy(name)


def strategy_for(name: str, spec) -> HeartbeatStrategy:
    """The strategy object for handset ``spec`` (``nat-aware`` is per handset: it knows its
    NATs). ``oracle`` is not simulated (see :mod:`simulator.oracle`)."""
    if name == NAT_AWARE:
        return NatAwareStrategy.knowing({n.key: n.nat_timeout for n in spec.networks()})
    if name == ORACLE:
        raise ValueError("the oracle is computed, not simulated (simulator.oracle)")
    return _shared(name)


def check_strategy(name: str) -> str:
    """``name`` if it is a known strategy; UnknownStrategyError (a ValueError) otherwise."""
    if name.removesuffix("+hooks") in SIMULATION_ONLY and name not in SIMULATION_ONLY:
        raise UnknownStrategyError(
            f"bad heartbeat strategy {name!r}: +hooks is for strategies the SDK runs; "
            f"{ORACLE} (a bound) and {NAT_AWARE} are simulation-only and take no hooks")
    if name not in SIMULATION_ONLY:
        try:
            _shared(name)
        except UnknownStrategyError as exc:
            if not str(exc).startswith("unknown"):  # a known name, badly parameterised
                raise
            raise UnknownStrategyError(
                f"{exc}; in simulation also: {', '.join(SIMULATION_ONLY)}") from None
    return name


def list_strategies() -> list[tuple[str, str]]:
    """``(usage, one line)`` for ``pushsim strategies``."""
    rows = [(usage, _describe(usage) + _PARAMETERS.get(usage, ""))
            for usage in known_strategies()]
    rows += [
        ("<name>+hooks", "any of the above plus piggybacking on other apps' radio wake-ups "
                         "(e.g. mars+hooks: as published vs same hooks)"),
        ("module:attr", "a strategy object, or a zero-argument factory returning one, from "
                        "an importable module (PYTHONPATH); works with --workers"),
        (ORACLE, "simulation only: the true lower bound, computed per handset from its day "
                 "(docs/oracle.md); not a strategy that runs"),
        (NAT_AWARE, "simulation only: told each NAT timeout, beats 5 s under it (not a bound)"),
    ]
    return rows


_PARAMETERS = {
    "fcm": " [fcm:cellular=S,wifi=S,server=S,ack=S]",
    "courier": " [courier:min=S,max=S,step=S,reset=N,keepalive=S]",
}


def _describe(usage: str) -> str:
    name = usage.split(":")[0].split("[")[0]
    try:
        strategy = parse_strategy("fixed:270" if name == "fixed" else name)
    except UnknownStrategyError:
        return ""
    doc = (type(strategy).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


__all__ = ["NAT_AWARE", "ORACLE", "NatAwareStrategy", "check_strategy", "list_strategies",
           "strategy_for"]
