"""Reading scenario TOML: typed getters that name the file and field in every error.

``parse_scenario(data, source)`` turns the dict from ``tomllib`` into a validated
:class:`~simulator.scenario.Scenario`. The format is documented in docs/scenarios.md §10.
Unknown keys are errors, so a typo never silently becomes a default.
"""
from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs

from simulator.app_state import APP_MODEL_KINDS, AppStateModel
from simulator.doze import DozeParams
from simulator.nat import NAT_BEHAVIOURS, NAT_REFRESH
from simulator.scenario import (
    DAY,
    DEFAULT_LINK_MS,
    KNOWN_RADIO_MODELS,
    MAX_HOURS,
    MIN_HOURS,
    NETWORK_TYPES,
    CPU_MODELS,
    BackgroundModel,
    Choice,
    Distribution,
    Exponential,
    Fixed,
    HandsetGroup,
    Mixture,
    NetworkProfile,
    OutageModel,
    Scenario,
    ScenarioError,
    SwitchRule,
    Uniform,
)
from simulator.workload import MAX_PAYLOAD_BYTES, MAX_TTL_S, Workload

_REQUIRED = object()
_Choice = TypeVar("_Choice", bound=str)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


class _Table:
    """A TOML table being validated: typed getters, unknown keys reported at ``finish``."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        self.where, self.source = where, source
        if not isinstance(data, dict):
            raise self.error(None, f"must be a table, got {_type_name(data)}")
        self.data = data
        self.used: set[str] = set()

    def path(self, key: str | None) -> str:
        if key is None:
            return self.where or "top level"
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | None, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.path(key)}: {message}")

    def has(self, key: str) -> bool:
        self.used.add(key)  # a key asked about is one this table knows
        return key in self.data

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing (required)")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = _REQUIRED, choices: Sequence[str] = ()) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_type_name(value)}")
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[_Choice], default: Any = _REQUIRED) -> _Choice:
        """``string`` limited to ``choices``, typed as one of them."""
        value = self.string(key, default, choices)
        return next(choice for choice in choices if choice == value)

    def number(
        self, key: str, default: Any = _REQUIRED, *, minimum: float | None = None,
        maximum: float | None = None, above: float | None = None, integer: bool = False,
    ) -> float:
        value = self.raw(key, default)
        return _check_number(self, key, value, minimum=minimum, maximum=maximum, above=above,
                             integer=integer)

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_type_name(value)}")
        return value

    def clock(self, key: str, default: Any = _REQUIRED) -> float:
        """A time of day ``"HH:MM"`` -> seconds after midnight."""
        return _parse_clock(self, key, self.raw(key, default))

    def table(self, key: str) -> _Table:
        return _Table(self.raw(key, {}), self.path(key), self.source)

    def tables(self, key: str, default: Any = _REQUIRED) -> list[_Table]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"must be an array of tables, got {_type_name(value)}")
        return [_Table(item, f"{self.path(key)}[{i}]", self.source) for i, item in enumerate(value)]

    def distribution(
        self, key: str, default: Any = _REQUIRED, *, minimum: float = 0.0,
        above: float | None = None,
    ) -> Distribution:
        value = self.raw(key, default)
        if isinstance(value, Distribution):  # a default given as an object
            return value
        dist = _parse_distribution(self, key, value)
        low, _ = dist.bounds
        if above is not None and not low > above:
            raise self.error(key, f"every value must be > {above:g}; "
                                  f"this distribution reaches {low:g}")
        if low < minimum:
            raise self.error(key, f"every value must be ≥ {minimum:g}; "
                                  f"this distribution reaches {low:g}")
        return dist

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0],
                             f"unknown field (known here: {', '.join(sorted(self.used))})")


def _type_name(value: Any) -> str:
    if isinstance(value, (datetime.date, datetime.time)):
        return "a TOML date or time"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _check_number(table: _Table, key: str, value: Any, *, minimum=None, maximum=None,
                  above=None, integer=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise table.error(key, f"must be a number, got {_type_name(value)}")
    if integer and not isinstance(value, int):
        raise table.error(key, f"must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise table.error(key, f"must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise table.error(key, f"must be ≥ {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise table.error(key, f"must be ≤ {maximum:g}, got {value!r}")
    if above is not None and not value > above:
        raise table.error(key, f"must be > {above:g}, got {value!r}")
    return value


def _parse_clock(table: _Table, key: str, value: Any) -> float:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        got = repr(value) if isinstance(value, str) else _type_name(value)
        raise table.error(key, f'must be a time of day "HH:MM" (a quoted string), got {got}')
    return int(match[1]) * 3600.0 + int(match[2]) * 60.0


_DISTRIBUTION_KINDS = ("fixed", "uniform", "exponential", "choice", "mixture")


def _parse_distribution(table: _Table, key: str, value: Any) -> Distribution:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Fixed(float(_check_number(table, key, value)))
    if not isinstance(value, dict):
        raise table.error(key, "must be a number or a table with one of "
                               f"{', '.join(_DISTRIBUTION_KINDS)}; got {_type_name(value)}")
    spec = _Table(value, table.path(key), table.source)
    dist = _distribution_from(spec)
    spec.finish()
    return dist


def _distribution_from(spec: _Table) -> Distribution:
    """The distribution described by ``spec`` (its other keys are left to the caller)."""
    kinds = [k for k in _DISTRIBUTION_KINDS if k in spec.data]
    if len(kinds) != 1:
        raise spec.error(None, f"needs exactly one of {', '.join(_DISTRIBUTION_KINDS)}"
                               + (f" (got {', '.join(kinds)})" if kinds else ""))
    return _DISTRIBUTION_READERS[kinds[0]](spec)


def _fixed_from(spec: _Table) -> Distribution:
    return Fixed(float(spec.number("fixed")))


def _uniform_from(spec: _Table) -> Distribution:
    bounds = spec.raw("uniform")
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise spec.error("uniform", "must be [low, high]")
    low, high = (float(_check_number(spec, "uniform", b)) for b in bounds)
    if low > high:
        raise spec.error("uniform", f"low {low:g} is above high {high:g}")
    return Uniform(low, high)


def _exponential_from(spec: _Table) -> Distribution:
    return Exponential(float(spec.number("exponential", above=0)))


def _choice_from(spec: _Table) -> Distribution:
    values = spec.raw("choice")
    if not isinstance(values, list) or not values:
        raise spec.error("choice", "must be a non-empty array of numbers")
    values = [float(_check_number(spec, "choice", v)) for v in values]
    weights = spec.raw("weights", [1.0] * len(values))
    if not isinstance(weights, list) or len(weights) != len(values):
        raise spec.error("weights", f"must be an array of {len(values)} numbers, one per choice")
    weights = [float(_check_number(spec, "weights", w, minimum=0)) for w in weights]
    if sum(weights) <= 0:
        raise spec.error("weights", "must not all be 0")
    return Choice(tuple(values), tuple(weights))


def _mixture_from(spec: _Table) -> Distribution:
    parts = []
    for part in spec.tables("mixture"):
        weight = float(part.number("weight", minimum=0))
        parts.append((weight, _distribution_from(part)))
        part.finish()
    if not parts:
        raise spec.error("mixture", "must list at least one part")
    if sum(w for w, _ in parts) <= 0:
        raise spec.error("mixture", "weights must not all be 0")
    return Mixture(tuple(parts))


_DISTRIBUTION_READERS = {
    "fixed": _fixed_from, "uniform": _uniform_from, "exponential": _exponential_from,
    "choice": _choice_from, "mixture": _mixture_from,
}


def parse_scenario(data: dict, source: str) -> Scenario:
    """A validated Scenario from a TOML document; ScenarioError names file and field."""
    return _parse_scenario(_Table(data, "", source))


def _parse_scenario(top: _Table) -> Scenario:
    name = top.string("name")
    if not _NAME.match(name):
        raise top.error("name", "must be letters, digits, '-', '_' or '.'")
    description = top.string("description")
    handsets = int(top.number("handsets", 100, minimum=1, integer=True))
    hours = float(top.number("hours", 24, minimum=MIN_HOURS, maximum=MAX_HOURS))
    start = top.clock("start", "00:00")

    networks_table = top.table("networks")
    if not networks_table.data:
        raise top.error("networks", "define at least one network ([networks.<name>])")
    networks = tuple(_parse_network(networks_table.table(n), n) for n in networks_table.data)
    networks_table.used.update(networks_table.data)
    known = [n.name for n in networks]

    group_tables = top.tables("groups")
    if not group_tables:
        raise top.error("groups", "define at least one handset group ([[groups]])")
    groups = tuple(_parse_group(t, known) for t in group_tables)
    names = [g.name for g in groups]
    for i, group_name in enumerate(names):
        if group_name in names[:i]:
            raise group_tables[i].error("name", f"duplicate group name {group_name!r}")

    workload = _parse_workload(top.table("workload"))
    top.finish()
    return Scenario(
        name=name, description=description, handsets=handsets, hours=hours, start=start,
        networks=networks, groups=groups, workload=workload, source=top.source,
    )


def _parse_network(t: _Table, name: str) -> NetworkProfile:
    if not _NAME.match(name):
        raise t.error(None, "network names must be letters, digits, '-', '_' or '.'")
    net_type = t.choice("type", NETWORK_TYPES)
    radio = t.string("radio", choices=KNOWN_RADIO_MODELS)
    if (net_type == "wifi") != radio.startswith("wifi"):
        raise t.error("radio", f"radio model {radio!r} does not fit a {net_type} network")
    default_key = f"{'wifi' if net_type == 'wifi' else 'mobile'}_{name}"
    latency_ms, jitter_ms = DEFAULT_LINK_MS[net_type]
    profile = NetworkProfile(
        name=name,
        type=net_type,
        key=t.string("key", default_key),
        radio=radio,
        nat_timeout=t.distribution("nat_timeout_s", above=0),
        nat_behaviour=t.choice("nat_behaviour", NAT_BEHAVIOURS, "drop"),
        latency=t.number("latency_ms", latency_ms, minimum=0) / 1000.0,
        jitter=t.number("jitter_ms", jitter_ms, minimum=0) / 1000.0,
        nat_spread=float(t.number("nat_spread", 0, minimum=0, maximum=0.95)),
        nat_schedule=_parse_nat_schedule(t),
        nat_sweep=float(t.number("nat_sweep_s", 0, minimum=0)),
        nat_refresh=t.choice("nat_refresh", NAT_REFRESH, "both"),
        loss=float(t.number("loss", 0, minimum=0, maximum=0.5)),
        rto_min=float(t.number("rto_min_s", 1.0, above=0)),
        max_retransmissions=int(t.number("max_retransmissions", 15, minimum=1, maximum=100,
                                         integer=True)),
    )
    t.finish()
    return profile


def _parse_nat_schedule(t: _Table) -> tuple[tuple[float, float], ...]:
    """``nat_schedule = [{ at = "18:00", factor = 0.25 }, ...]``: daily steps, in time order."""
    steps = []
    for step in t.tables("nat_schedule", []):
        steps.append((step.clock("at"), float(step.number("factor", above=0))))
        step.finish()
    times = [at for at, _ in steps]
    if times != sorted(set(times)):
        raise t.error("nat_schedule", "steps must be in increasing time-of-day order, each "
                                      "time once")
    return tuple(steps)


def _parse_group(t: _Table, networks: list[str]) -> HandsetGroup:
    name = t.string("name")
    if not _NAME.match(name):
        raise t.error("name", "must be letters, digits, '-', '_' or '.'")
    weight = float(t.number("weight", 1.0, above=0))
    network = t.string("network")
    if network not in networks:
        raise t.error("network", f"unknown network {network!r} (defined: {', '.join(networks)})")
    switches = tuple(_parse_switch(s, networks) for s in t.tables("switches", []))
    _check_switch_windows(t, switches)
    group = HandsetGroup(
        name=name, weight=weight, network=network,
        doze=_parse_doze(t), app=_parse_app(t.table("app")),
        background=_parse_background(t.table("background")),
        outages=_parse_outages(t) if t.has("outages") else None,
        switches=switches,
        cpu=t.string("cpu", "nexus4", choices=CPU_MODELS),
        screen_radio=t.boolean("screen_radio", True),
    )
    t.used.add("outages")
    t.finish()
    return group


def _parse_switch(t: _Table, networks: list[str]) -> SwitchRule:
    to = t.string("to")
    if to not in networks:
        raise t.error("to", f"unknown network {to!r} (defined: {', '.join(networks)})")
    rule = SwitchRule(at=t.clock("at"), jitter=float(t.number("jitter_s", 0, minimum=0)), to=to)
    t.finish()
    return rule


def _check_switch_windows(t: _Table, switches: tuple[SwitchRule, ...]) -> None:
    """Daily switch windows ``at ± jitter`` must be in time order and must not overlap."""
    for i, (a, b) in enumerate(zip(switches, switches[1:] + switches[:1])):
        end_a = a.at + a.jitter
        start_b = b.at - b.jitter + (DAY if i == len(switches) - 1 else 0)
        if len(switches) > 1 and not end_a < start_b:
            raise t.error(f"switches[{(i + 1) % len(switches)}]",
                          "switch windows (at ± jitter_s) must be in time order and not overlap")
    if len(switches) == 1 and not 2 * switches[0].jitter < DAY:
        raise t.error("switches[0].jitter_s", "must be less than half a day")


def _doze_key(field: attrs.Attribute) -> str:
    """TOML key of a DozeParams field: durations carry the ``_s`` suffix, like every duration."""
    if field.type in ("bool", bool) or field.name.endswith("factor"):
        return field.name
    return f"{field.name}_s"


def _parse_doze(group: _Table) -> DozeParams:
    value = group.raw("doze", False)
    if isinstance(value, bool):
        return DozeParams() if value else DozeParams.disabled()
    t = _Table(value, group.path("doze"), group.source)
    kwargs: dict[str, Any] = {}
    for field in attrs.fields(DozeParams):
        key = _doze_key(field)
        if not t.has(key):
            continue
        if field.type in ("bool", bool):
            kwargs[field.name] = t.boolean(key)
        else:
            kwargs[field.name] = t.number(key, minimum=0)
    t.finish()
    try:
        return DozeParams(**kwargs)
    except ValueError as exc:
        raise t.error(None, str(exc)) from None


def _parse_app(t: _Table) -> AppStateModel:
    kwargs: dict[str, Any] = {}
    if t.has("model"):
        kwargs["kind"] = t.string("model", choices=APP_MODEL_KINDS)
    for key in ("opens_per_day", "mean_session_s", "min_session_s", "night_jitter_s"):
        if t.has(key):
            kwargs[key] = float(t.number(key, minimum=0))
    if t.has("foreground_share"):
        kwargs["foreground_share"] = float(t.number("foreground_share", minimum=0, maximum=1))
    if t.has("night"):
        night = t.raw("night")
        if not isinstance(night, list) or len(night) != 2:
            raise t.error("night", 'must be ["HH:MM", "HH:MM"] (screen off from, until)')
        kwargs["night_start"] = _parse_clock(t, "night", night[0])
        kwargs["night_end"] = _parse_clock(t, "night", night[1])
    t.finish()
    try:
        return AppStateModel(**kwargs)
    except ValueError as exc:
        raise t.error(None, str(exc)) from None


def _parse_background(t: _Table) -> BackgroundModel:
    model = BackgroundModel(
        wakeups_per_hour=float(t.number("wakeups_per_hour", 0, minimum=0)),
        bytes_up=int(t.number("bytes_up", 1500, minimum=0, integer=True)),
        bytes_down=int(t.number("bytes_down", 5000, minimum=0, integer=True)),
    )
    t.finish()
    return model


def _parse_outages(group: _Table) -> OutageModel:
    t = group.table("outages")
    model = OutageModel(
        per_day=float(t.number("per_day", minimum=0)),
        duration=t.distribution("duration_s", minimum=0),
    )
    t.finish()
    return model


def _parse_workload(t: _Table) -> Workload:
    defaults = Workload()
    kwargs: dict[str, Any] = {}
    for key in ("direct_per_handset_day", "tag_per_day", "broadcast_per_day"):
        kwargs[key] = float(t.number(key, getattr(defaults, key), minimum=0))
    for key in ("alias_share", "high_priority_share", "collapse_share", "notification_share"):
        kwargs[key] = float(t.number(key, getattr(defaults, key), minimum=0, maximum=1))
    kwargs["cohorts"] = int(t.number("cohorts", defaults.cohorts, minimum=1, integer=True))
    if t.has("ttl_s"):
        ttl = t.distribution("ttl_s", minimum=0)
        if isinstance(ttl, Fixed):
            kwargs["ttl_choices"] = ((int(ttl.value), 1.0),)
        elif isinstance(ttl, Choice):
            kwargs["ttl_choices"] = tuple((int(v), w) for v, w in zip(ttl.values, ttl.weights))
        else:
            raise t.error("ttl_s", "must be a number or a choice (TTLs are a few fixed values)")
        if max(v for v, _ in kwargs["ttl_choices"]) > MAX_TTL_S:
            raise t.error("ttl_s", f"must not exceed {MAX_TTL_S} s (28 days: the server "
                                   "refuses longer TTLs)")
    if t.has("payload_bytes"):
        size = t.distribution("payload_bytes", minimum=1)
        if isinstance(size, Fixed):
            kwargs["payload_bytes"] = (int(size.value), int(size.value))
        elif isinstance(size, Uniform):
            kwargs["payload_bytes"] = (int(size.low), int(size.high))
        else:
            raise t.error("payload_bytes", "must be a number or a uniform range")
        if kwargs["payload_bytes"][1] > MAX_PAYLOAD_BYTES:
            raise t.error("payload_bytes", f"must not exceed {MAX_PAYLOAD_BYTES} bytes "
                                           "(the server refuses push bodies over 4096 bytes)")
    t.finish()
    try:
        return Workload(**kwargs)
    except ValueError as exc:
        raise t.error(None, str(exc)) from None
