"""``--fail-if EXPR``: release gates over the numeric fields of a run's summary.

``EXPR`` is ``FIELD OP NUMBER`` with ``OP`` one of ``< <= > >= == !=``, e.g. ``lost>0``,
``delivery_ratio<0.999``, ``latency_p99_s>0.5``, ``connect_failures>0``. A gate is *missed*
when its expression is true. A field without a value (``latency_p99_s`` when nothing was
delivered) misses the gate: a gate that cannot be checked does not pass.

Without any ``--fail-if``, the gates are :data:`DEFAULT_GATES`: ``lost>0`` and "no handset
connected" (``handsets_connected<1``). Whatever the gates, a run with a part missing (a
worker or shard that died without a report) misses the built-in gate ``missing_parts>0``.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from simulator.metrics import SUMMARY_FIELDS

__all__ = ["DEFAULT_GATES", "GATE_FIELDS", "Gate", "GateError", "evaluate", "parse_gate"]

#: Numeric fields of the summary a gate may name (besides SUMMARY_FIELDS' numeric ones).
FLEET_FIELDS = (
    "latency_p999_s", "latency_max_s", "handsets_connected", "never_connected",
    "connect_attempts", "connect_failures", "connects", "disconnects", "connect_rate_per_s",
    "peak_connects_per_s", "handshake_p50_s", "handshake_p99_s", "pushes_due",
    "pushes_failed", "pushes_unanswered", "pushes_not_sent", "pushes_expected", "lost",
    "unexpected", "stale", "misrouted", "sent_per_s", "max_send_lag_s", "send_lag_p99_s",
    "start_skew_s", "missing_parts", "warnings",
)
_TEXT_FIELDS = ("strategy", "scenario")
GATE_FIELDS = tuple(f for f in SUMMARY_FIELDS if f not in _TEXT_FIELDS) + tuple(
    f for f in FLEET_FIELDS if f not in SUMMARY_FIELDS)
DEFAULT_GATES = ("lost>0", "handsets_connected<1")
BUILT_IN = "missing_parts>0"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*([^\s].*?)\s*$")


class GateError(ValueError):
    """A ``--fail-if`` expression that cannot be a gate (a usage error, exit status 2)."""


@attrs.frozen
class Gate:
    field: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value:g}"

    def missed(self, actual: float) -> bool:
        """True when the run misses this gate (the expression holds, or no value)."""
        if math.isnan(actual):
            return True
        return _OPS[self.op](actual, self.value)


def parse_gate(text: str, known: Iterable[str] = GATE_FIELDS) -> Gate:
    """``"lost>0"`` → :class:`Gate`; :class:`GateError` with a one-line reason otherwise."""
    match = _EXPR.match(text)
    if not match:
        raise GateError(f"--fail-if {text!r}: expected FIELD OP NUMBER with OP one of "
                        "< <= > >= == != (e.g. lost>0)")
    field, op, number = match.groups()
    known = tuple(known)
    if field not in known:
        hint = "a text field" if field in _TEXT_FIELDS else "not a field of the summary"
        raise GateError(f"--fail-if {text!r}: {field!r} is {hint}; numeric fields: "
                        f"{', '.join(sorted(known))}")
    try:
        value = float(number)
    except ValueError:
        raise GateError(f"--fail-if {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value):
        raise GateError(f"--fail-if {text!r}: the threshold must be a finite number")
    return Gate(field, op, value)


def evaluate(gates: Sequence[Gate], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each gate's verdict: ``{"gate", "value", "missed", "why"}`` (built-in gate included)."""
    verdicts = []
    for gate in (*gates, parse_gate(BUILT_IN)):
        raw = summary.get(gate.field)
        actual = float(raw) if isinstance(raw, (int, float)) and raw is not None else math.nan
        missed = gate.missed(actual)
        why = ""
        if missed:
            why = (f"{gate.field} has no value" if math.isnan(actual)
                   else f"{gate.field} = {actual:g}")
        verdicts.append({"gate": str(gate), "value": actual, "missed": missed, "why": why})
    return verdicts
