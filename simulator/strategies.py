"""Heartbeat strategies as the simulator uses them: the SDK's registry plus ``oracle``.

``oracle`` exists only in simulation: it is told each handset's NAT timeouts and beats just
under them, so it is the lower bound of what any strategy that keeps the connection alive
can spend. Everything else is the SDK's own strategy, unchanged (``pushsdk.heartbeat``).
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


@attrs.frozen
class OracleStrategy(HeartbeatStrategy):
    """Beats ``margin`` seconds before the NAT of the network in use would forget the
    connection. ``timeouts`` maps network key → NAT idle timeout (seconds)."""

    timeouts: tuple[tuple[str, float], ...]
    margin: float = 5.0  # covers link latency and jitter (≤ 0.1 s each way) with room

    name = ORACLE

    @classmethod
    def knowing(cls, timeouts: Mapping[str, float], margin: float = 5.0) -> OracleStrategy:
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
    """The strategy object for handset ``spec`` (the oracle is per handset: it knows its NATs)."""
    if name == ORACLE:
        return OracleStrategy.knowing({n.key: n.nat_timeout for n in spec.networks()})
    return _shared(name)


def check_strategy(name: str) -> str:
    """``name`` if it is a known strategy; UnknownStrategyError (a ValueError) otherwise."""
    if name != ORACLE:
        try:
            _shared(name)
        except UnknownStrategyError as exc:
            raise UnknownStrategyError(f"{exc}; in simulation also: {ORACLE}") from None
    return name


def list_strategies() -> list[tuple[str, str]]:
    rows = [(usage, _describe(usage)) for usage in known_strategies()]
    rows.append((ORACLE, "simulation only: knows each NAT timeout and beats just under it "
                         "(the lower bound)"))
    return rows


def _describe(usage: str) -> str:
    name = usage.split(":")[0]
    try:
        strategy = parse_strategy(usage if ":" not in usage else f"{name}:270")
    except UnknownStrategyError:
        return ""
    doc = (type(strategy).__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


__all__ = ["ORACLE", "OracleStrategy", "check_strategy", "list_strategies", "strategy_for"]
