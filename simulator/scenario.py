"""Scenarios: which handsets, on which networks, behind which NATs, doing what, for how long.

A :class:`Scenario` is read from TOML (the format is in docs/scenarios.md; the built-in
scenarios are TOML files in ``simulator/scenarios/`` and double as examples) and validated
on load by :mod:`simulator.scenario_toml`: a mistake raises :class:`ScenarioError` naming
the file and the field.

``scenario.handset_specs(n, seed)`` turns it into one frozen :class:`HandsetSpec` per virtual
handset: its group, initial network (NAT timeout drawn from the network's distribution),
Doze timeline, screen/app timeline, network switches and outages, other apps' radio
wake-ups, alias, tags and a seed for its own runtime randomness. Every spec depends only on
``(scenario, seed, index, hours)``: each handset draws from its own
``random.Random(f"{seed}:{index}:{purpose}")`` streams and its group comes from a
low-discrepancy sequence, so a shard computing handsets 500–999 gets exactly the handsets a
single process would, and group shares match the weights closely even for small fleets.
"""
from __future__ import annotations

import importlib.resources
import math
import random
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import attrs

from simulator.app_state import AppStateModel, AppStateTimeline
from simulator.doze import DozeParams, DozeTimeline
from simulator.nat import LinkProfile, NatConfig
from simulator.workload import Workload, alias_for

#: Radio energy model names a network may use (see ``pushsim models``).
KNOWN_RADIO_MODELS: tuple[str, ...] = (
    "lte", "lte-huang2012", "lte-aro",
    "3g", "3g-huang2012", "3g-aro",
    "wifi", "wifi-huang2012", "wifi-aro",
    "5g-sa", "5g-nsa-mmwave",
)
NetworkType = Literal["wifi", "cellular"]
NETWORK_TYPES: tuple[NetworkType, ...] = ("wifi", "cellular")
#: The built-in scenarios, in the order ``pushsim scenarios`` lists them.
BUILTIN_SCENARIOS: tuple[str, ...] = (
    "carrier-nat-5min", "carrier-nat-30min", "home-wifi", "mixed", "commuter", "doze-overnight",
    "nat-45s", "evening-nat", "wide-spread", "heavy-doze",
)
#: Defaults for a network's one-way latency and jitter, by type (docs/scenarios.md).
DEFAULT_LINK_MS = {"wifi": (10.0, 5.0), "cellular": (40.0, 20.0)}

DAY = 86400.0
#: The run lengths a scenario or ``--hours`` may ask for: a minute to a year. A run's day is
#: built up front, so a far longer one would fill memory before it began.
MIN_HOURS, MAX_HOURS = 1 / 60, 8760.0
_GOLDEN = (math.sqrt(5) - 1) / 2  # 1/φ: the Weyl sequence step for group assignment


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file and the field."""


# ---------------------------------------------------------------------------------------
# Distributions (NAT timeouts, outage durations, ...)


@attrs.frozen
class Fixed:
    value: float

    def sample(self, rng: random.Random) -> float:
        return self.value

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.value, self.value)


@attrs.frozen
class Uniform:
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)


@attrs.frozen
class Exponential:
    mean: float

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)

    @property
    def bounds(self) -> tuple[float, float]:
        return (0.0, math.inf)


@attrs.frozen
class Choice:
    values: tuple[float, ...]
    weights: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        return rng.choices(self.values, self.weights)[0]

    @property
    def bounds(self) -> tuple[float, float]:
        return (min(self.values), max(self.values))


@attrs.frozen
class Mixture:
    parts: tuple[tuple[float, Distribution], ...]  # (weight, distribution)

    def sample(self, rng: random.Random) -> float:
        weights = [w for w, _ in self.parts]
        part = rng.choices([d for _, d in self.parts], weights)[0]
        return part.sample(rng)

    @property
    def bounds(self) -> tuple[float, float]:
        bounds = [d.bounds for w, d in self.parts if w > 0]
        return (min(b[0] for b in bounds), max(b[1] for b in bounds))


Distribution = Fixed | Uniform | Exponential | Choice | Mixture


# ---------------------------------------------------------------------------------------
# Scenario model


@attrs.frozen
class NetworkSpec:
    """One network as one handset sees it (the NAT timeout already drawn)."""

    name: str  # profile name in the scenario ("home", "lte", ...)
    key: str  # what the SDK learns per-network values under ("wifi_home", "mobile_carrierA")
    type: NetworkType
    radio: str
    nat_timeout: float  # seconds: this handset's timeout on this network (before spread)
    nat_behaviour: Literal["drop", "rst"]
    latency: float  # one-way, seconds
    jitter: float  # seconds, U(0, jitter) per segment
    nat_spread: float = 0.0  # per connection: timeout × (1 ± spread), uniform
    nat_schedule: tuple[tuple[float, float], ...] = ()  # (time of day, factor) steps
    nat_sweep: float = 0.0  # seconds between the box's binding sweeps (0: exact timer)
    nat_sweep_phase: float = 0.0  # virtual time of one sweep (drawn per handset and network)
    nat_refresh: Literal["both", "outbound"] = "both"
    start_of_day: float = 0.0  # time of day at virtual t = 0 (for the schedule)
    loss: float = 0.0  # probability that a data segment is lost (each try)
    rto_min: float = 1.0  # RFC 6298 minimum retransmission timeout, seconds
    max_retransmissions: int = 15  # Linux tcp_retries2

    def nat(self) -> NatConfig:
        return NatConfig(
            self.nat_timeout, self.nat_behaviour, spread=self.nat_spread,
            schedule=self.nat_schedule, start_of_day=self.start_of_day, sweep=self.nat_sweep,
            sweep_phase=self.nat_sweep_phase, refresh=self.nat_refresh,
        )

    def link(self) -> LinkProfile:
        return LinkProfile(self.latency, self.jitter)


@attrs.frozen
class NetworkProfile:
    """A network of the scenario; each handset draws its own NAT timeout from it."""

    name: str
    type: NetworkType
    key: str
    radio: str
    nat_timeout: Distribution
    nat_behaviour: Literal["drop", "rst"]
    latency: float
    jitter: float
    nat_spread: float = 0.0
    nat_schedule: tuple[tuple[float, float], ...] = ()
    nat_sweep: float = 0.0
    nat_refresh: Literal["both", "outbound"] = "both"
    loss: float = 0.0
    rto_min: float = 1.0
    max_retransmissions: int = 15

    def sample(self, rng: random.Random, start_of_day: float = 0.0) -> NetworkSpec:
        timeout = float(self.nat_timeout.sample(rng))
        # Drawn after the timeout, so adding a sweep never changes the timeouts drawn.
        phase = rng.uniform(0.0, self.nat_sweep) if self.nat_sweep else 0.0
        return NetworkSpec(
            name=self.name, key=self.key, type=self.type, radio=self.radio,
            nat_timeout=timeout, nat_behaviour=self.nat_behaviour,
            latency=self.latency, jitter=self.jitter, nat_spread=self.nat_spread,
            nat_schedule=self.nat_schedule, nat_sweep=self.nat_sweep, nat_sweep_phase=phase,
            nat_refresh=self.nat_refresh, start_of_day=start_of_day, loss=self.loss,
            rto_min=self.rto_min, max_retransmissions=self.max_retransmissions,
        )


@attrs.frozen
class SwitchRule:
    """Every day at ``at`` (seconds after midnight) ± U(jitter), move to network ``to``."""

    at: float
    jitter: float
    to: str


@attrs.frozen
class OutageModel:
    """Connectivity losses: Poisson, ``per_day`` per day of connectivity, random duration."""

    per_day: float
    duration: Distribution


@attrs.frozen
class BackgroundModel:
    """Other apps waking the radio: Poisson ``wakeups_per_hour``, bytes per wake-up."""

    wakeups_per_hour: float = 0.0
    bytes_up: int = 1500
    bytes_down: int = 5000


@attrs.frozen
class HandsetGroup:
    name: str
    weight: float
    network: str  # network at 00:00 of the first day
    doze: DozeParams
    app: AppStateModel
    background: BackgroundModel
    outages: OutageModel | None
    switches: tuple[SwitchRule, ...]
    cpu: str = "nexus4"  # CPU wake-up model (simulator.radio.cpu), or "none"
    screen_radio: bool = True  # the app on screen keeps the radio up while the screen is on


#: CPU models a group may name (``cpu = ...``); "none" leaves CPU energy out.
CPU_MODELS: tuple[str, ...] = ("nexus4", "none")


@attrs.frozen
class NetworkEvent:
    """``switch`` (to ``network``: new address, new NAT, old connections dead),
    ``outage_start`` or ``outage_end`` (no connectivity in between)."""

    t: float
    kind: Literal["switch", "outage_start", "outage_end"]
    network: NetworkSpec | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind == "switch" and self.network is None:
            raise ValueError("a switch event needs the network it switches to")
        if self.kind != "switch" and self.network is not None:
            raise ValueError(f"an {self.kind} event has no network")

    @property
    def switched_to(self) -> NetworkSpec:
        """The network a ``switch`` moves to (``ValueError`` for an outage event)."""
        if self.network is None:
            raise ValueError(f"an {self.kind} event switches to no network")
        return self.network


@attrs.frozen
class BackgroundTraffic:
    """Times other apps use the radio (already deferred out of Doze), bytes each time."""

    times: tuple[float, ...]
    bytes_up: int
    bytes_down: int


@attrs.frozen
class HandsetSpec:
    """Everything the simulated world needs to build virtual handset ``index``."""

    index: int
    device_id: str
    group: str
    alias: str
    tags: tuple[str, ...]
    seed: int  # for the handset's own random.Random (SDK jitter, link jitter, ...)
    network: NetworkSpec  # at t = 0
    app: AppStateTimeline
    doze: DozeTimeline
    network_events: tuple[NetworkEvent, ...]
    background: BackgroundTraffic
    #: Prefix of this handset's random streams, ``f"{seed}:{index}"``: anything drawn later
    #: for it (per-connection NAT spread, ...) uses ``f"{stream_seed}:{purpose}"``.
    stream_seed: str = ""
    cpu: str = "nexus4"  # the group's CPU model ("none": no CPU energy)
    screen_radio: bool = True  # the app on screen keeps the radio up (docs/energy.md)

    @property
    def radio_model(self) -> str:
        """The radio model at t = 0 (a switch may change it: see ``network_at``)."""
        return self.network.radio

    def network_at(self, t: float) -> NetworkSpec:
        """The network in use at ``t`` (switches at or before ``t`` applied)."""
        network = self.network
        for event in self.network_events:
            if event.t > t:
                break
            if event.kind == "switch":
                network = event.switched_to
        return network

    def in_outage(self, t: float) -> bool:
        down = False
        for event in self.network_events:
            if event.t > t:
                break
            if event.kind == "outage_start":
                down = True
            elif event.kind == "outage_end":
                down = False
        return down

    def networks(self) -> tuple[NetworkSpec, ...]:
        """Every network this handset uses during the run, first use first."""
        seen = {self.network.name: self.network}
        for event in self.network_events:
            if event.network is not None:
                seen.setdefault(event.network.name, event.network)
        return tuple(seen.values())


@attrs.frozen
class Scenario:
    name: str
    description: str
    handsets: int  # default fleet size
    hours: float  # default run length
    start: float  # time of day at t = 0, seconds after midnight
    networks: tuple[NetworkProfile, ...]
    groups: tuple[HandsetGroup, ...]
    workload: Workload
    source: str = "<memory>"

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> Scenario:
        """A built-in scenario by name (see :func:`list_builtin`)."""
        if name not in BUILTIN_SCENARIOS:
            raise ScenarioError(
                f"unknown scenario {name!r}; built-in scenarios: {', '.join(BUILTIN_SCENARIOS)}"
            )
        resource = importlib.resources.files("simulator") / "scenarios" / f"{name}.toml"
        return cls.from_text(resource.read_text(encoding="utf-8"), source=f"{name}.toml")

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """A scenario from a TOML file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read scenario file: "
                                f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ScenarioError(f"{path}: not a UTF-8 text file") from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A built-in name, or else a path to a TOML file (what ``pushsim run`` accepts)."""
        if str(name_or_path) in BUILTIN_SCENARIOS:
            return cls.builtin(str(name_or_path))
        path = Path(name_or_path)
        if not path.exists():
            raise ScenarioError(
                f"{name_or_path}: neither a built-in scenario ({', '.join(BUILTIN_SCENARIOS)}) "
                "nor an existing file"
            )
        return cls.from_toml(path)

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> Scenario:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{source}: invalid TOML: {exc}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Scenario:
        """A scenario from an already parsed TOML document."""
        # Imported here: the reader builds this module's classes, so it imports this module.
        from simulator.scenario_toml import parse_scenario

        return parse_scenario(data, source)

    # -- queries -----------------------------------------------------------------------------
    def network(self, name: str) -> NetworkProfile:
        for profile in self.networks:
            if profile.name == name:
                return profile
        raise KeyError(name)

    def group_for(self, index: int, seed: int | str) -> HandsetGroup:
        """The group of handset ``index``: a Weyl sequence over the cumulative weights."""
        offset = random.Random(f"{seed}:groups").random()
        u = (offset + index * _GOLDEN) % 1.0
        total = sum(g.weight for g in self.groups)
        cumulative = 0.0
        for group in self.groups:
            cumulative += group.weight / total
            if u < cumulative:
                return group
        return self.groups[-1]

    def handset_specs(
        self, n: int | None = None, seed: int | str = 0, *, hours: float | None = None,
        indices: Iterable[int] | None = None,
    ) -> list[HandsetSpec]:
        """Specs for handsets ``0..n-1`` (default ``self.handsets``), or for ``indices`` only."""
        n = self.handsets if n is None else n
        if indices is None:
            indices = range(n)
        return [self.handset_spec(i, seed, hours=hours) for i in indices]

    def handset_spec(self, index: int, seed: int | str = 0, *,
                     hours: float | None = None) -> HandsetSpec:
        hours = self.hours if hours is None else hours
        if not MIN_HOURS <= hours <= MAX_HOURS:
            raise ValueError(f"hours must be from {MIN_HOURS:.4g} (a minute) to {MAX_HOURS:g} "
                             f"(a year), got {hours!r}")
        if index < 0:
            raise ValueError(f"handset index must be ≥ 0, got {index}")
        duration = hours * 3600.0
        group = self.group_for(index, seed)

        def rng(purpose: str) -> random.Random:
            return random.Random(f"{seed}:{index}:{purpose}")

        names = [group.network] + [rule.to for rule in group.switches]
        sampled = {
            name: self.network(name).sample(rng(f"network:{name}"), self.start)
            for name in dict.fromkeys(names)
        }
        app = AppStateTimeline.generate(group.app, duration, self.start, rng("app"))
        doze = DozeTimeline.from_app_timeline(app, group.doze)
        initial, switches = _switch_events(group, sampled, self.start, duration, rng("switches"))
        outages = _outage_events(group.outages, duration, rng("outages"))
        events = sorted(switches + outages, key=lambda e: e.t)
        return HandsetSpec(
            index=index,
            device_id=f"handset-{index:05d}",
            group=group.name,
            alias=alias_for(index),
            tags=self.workload.tags_for(index) + (f"group-{group.name}",),
            seed=rng("runtime").getrandbits(63),
            network=initial,
            app=app,
            doze=doze,
            network_events=tuple(events),
            background=_background(group.background, duration, doze, rng("background")),
            stream_seed=f"{seed}:{index}",
            cpu=group.cpu,
            screen_radio=group.screen_radio,
        )


def list_builtin() -> list[tuple[str, str]]:
    """``(name, description)`` of every built-in scenario, for ``pushsim scenarios``."""
    return [(name, Scenario.builtin(name).description) for name in BUILTIN_SCENARIOS]


# ---------------------------------------------------------------------------------------
# Per-handset timelines


def _switch_events(
    group: HandsetGroup, sampled: dict[str, NetworkSpec], start: float, duration: float,
    rng: random.Random,
) -> tuple[NetworkSpec, list[NetworkEvent]]:
    """The network at t = 0 and the switches during the run.

    The day starts on ``group.network``; the rules are replayed from midnight of the first
    day, so a run starting at 12:00 begins on whatever network the morning switches chose.
    """
    initial = current = group.network
    events: list[NetworkEvent] = []
    if not group.switches:
        return sampled[current], events
    for day in range(0, math.floor((start + duration) / DAY) + 1):
        for rule in group.switches:
            at = day * DAY + rule.at + rng.uniform(-rule.jitter, rule.jitter)
            if at <= start:
                initial = rule.to
            elif at < start + duration and rule.to != current:
                events.append(NetworkEvent(at - start, "switch", sampled[rule.to]))
            current = rule.to
    return sampled[initial], events


def _outage_events(
    model: OutageModel | None, duration: float, rng: random.Random
) -> list[NetworkEvent]:
    events: list[NetworkEvent] = []
    if model is None or model.per_day <= 0:
        return events
    rate = model.per_day / DAY
    t = rng.expovariate(rate)
    while t < duration:
        length = max(0.0, model.duration.sample(rng))
        events += [NetworkEvent(t, "outage_start"), NetworkEvent(t + length, "outage_end")]
        t += length + rng.expovariate(rate)
    return events


def _background(
    model: BackgroundModel, duration: float, doze: DozeTimeline, rng: random.Random
) -> BackgroundTraffic:
    """Poisson wake-ups; one falling in Doze idle is deferred to the next window (as the OS
    does)."""
    times: set[float] = set()
    if model.wakeups_per_hour > 0:
        rate = model.wakeups_per_hour / 3600.0
        t = rng.expovariate(rate)
        while t < duration:
            deferred = doze.defer(t)
            if deferred < duration:
                times.add(deferred)
            t += rng.expovariate(rate)
    return BackgroundTraffic(tuple(sorted(times)), model.bytes_up, model.bytes_down)
