"""A pure heartbeat loop for trajectory tests: a strategy against a simulated NAT, no trio.

It plays the client's part of the protocol in ``pushsdk.heartbeat._base``: ``start`` on every
connection with that network's memory, wait ``interval`` seconds, ping, report the result,
store ``memory``; a failed ping ends the connection and the next one starts at once. A ping
fails when the silence before it (interval plus the alarm's lateness) exceeds the NAT timeout.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from pushsdk.heartbeat import HeartbeatContext, HeartbeatStrategy

WALL0 = 1_700_000_000.0
DAY = 86400.0


@attrs.frozen
class Beat:
    interval: float
    ok: bool
    connection: int


@attrs.define
class Run:
    strategy: HeartbeatStrategy
    nat_timeout: float = math.inf
    network_key: str = "wifi_home"
    network_type: str = "wifi"
    app_state: str = "inactive"
    app_state_since: float = -DAY  # long enough ago that the app is not "active"
    lateness: float = 0.0
    now: float = 0.0
    memories: dict[str, Any] = attrs.field(factory=dict)
    state: Any = None
    connections: int = 0
    connected_since: float = 0.0
    log: list[Beat] = attrs.field(factory=list)
    probes_allowed: bool = True  # False: the server refuses probe connections
    probe_log: list[tuple[float, bool]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.connect()

    @property
    def wall_time(self) -> float:
        return WALL0 + self.now

    def ctx(self, lateness: float = 0.0, silence: float = 0.0) -> HeartbeatContext:
        return HeartbeatContext(
            now=self.now, wall_time=self.wall_time, network_key=self.network_key,
            network_type=self.network_type, app_state=self.app_state,  # type: ignore[arg-type]
            app_state_since=self.app_state_since, connected_since=self.connected_since,
            lateness=lateness, silence=silence,
        )

    def connect(self) -> None:
        """A new connection on the current network, resuming its memory.

        What ``start`` returns is remembered at once (Courier counts a try whenever it arms
        a ping; Mars saves a new network's record when it first sees it).
        """
        self.connections += 1
        self.connected_since = self.now
        self.state = self.strategy.start(self.memories.get(self.network_key), self.ctx())
        self.remember()

    def move_to(self, network_key: str, network_type: str = "wifi") -> None:
        self.network_key, self.network_type = network_key, network_type
        self.connect()

    def set_app_state(self, app_state: str) -> None:
        self.app_state, self.app_state_since = app_state, self.now

    def interval(self) -> float:
        return self.strategy.interval(self.state, self.ctx())

    def beat(self, ok: bool | None = None) -> Beat:
        interval = self.interval()
        self.now += interval + self.lateness
        if ok is None:
            ok = interval + self.lateness <= self.nat_timeout
        if not ok:  # the client gives up once the reply timeout has passed
            self.now += self.strategy.ping_timeout or 10.0
        ctx = self.ctx(self.lateness, interval + self.lateness)
        report = self.strategy.on_success if ok else self.strategy.on_failure
        self.state = report(self.state, ctx)
        self.remember()
        if ok:
            self.maybe_probe()
        beat = Beat(interval, ok, self.connections)
        self.log.append(beat)
        if not ok:
            self.connect()
        return beat

    def maybe_probe(self) -> None:
        """The client asks for a probe whenever it sends a heartbeat; the probe's verdict
        (silence <= NAT timeout) comes back later, here at once: the harness has no
        concurrency, and the main connection's beats do not depend on the probe's."""
        target = self.strategy.probe(self.state, self.ctx())
        if target is None:
            return
        if not self.probes_allowed:
            self.state = self.strategy.on_probe(self.state, self.ctx(), None)
        else:
            ok = target <= self.nat_timeout
            self.probe_log.append((target, ok))
            self.state = self.strategy.on_probe(self.state, self.ctx(silence=target), ok)
        self.remember()

    def beats(self, n: int) -> list[float]:
        return [self.beat().interval for _ in range(n)]

    def remember(self) -> None:
        memory = self.strategy.memory(self.state)
        if memory is not None:
            self.memories[self.network_key] = _through_json(memory)

    @property
    def memory(self) -> Mapping[str, Any] | None:
        return self.memories.get(self.network_key)


def _through_json(memory: Mapping[str, Any]) -> dict[str, Any]:
    """What the SDK state file gives back: also proves the memory is JSON-serialisable."""
    data = json.loads(json.dumps(memory, allow_nan=False))
    assert data == dict(memory), "memory must survive a JSON round trip unchanged"
    return data


def runs(*pairs: tuple[float, int]) -> list[float]:
    """``runs((210, 3), (270, 5))`` -> ``[210, 210, 210, 270, 270, 270, 270, 270]``."""
    return [value for value, count in pairs for _ in range(count)]
