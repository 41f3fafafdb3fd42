"""Helpers of the world-level simulator tests: tiny scenarios and an event recorder.

The recorder wraps three methods of :class:`simulator.handset.Handset` (the app's push
callback, the SDK's state-change callback and the Doze signal) so a test can see *when*
things happened inside a ``run_world`` call. It only observes: each wrapper calls the real
method with the same arguments.
"""
from __future__ import annotations

import attrs
import trio

from simulator import handset as handset_module
from simulator.scenario import Scenario

NO_PUSHES = """
[workload]
direct_per_handset_day = 0
tag_per_day = 0
broadcast_per_day = 0
"""


def one_network(
    *, nat: float, behaviour: str = "drop", radio: str = "lte", net_type: str = "cellular",
    latency_ms: float = 40, jitter_ms: float = 0, group: str = "", workload: str = NO_PUSHES,
    name: str = "test-world",
) -> Scenario:
    """A one-network, one-group scenario: screen off all run (``background`` app model),
    no Doze unless ``group`` turns it on, no pushes unless ``workload`` asks for them.
    Jitter is 0 by default so virtual times are exact."""
    return Scenario.from_text(f"""
name = "{name}"
description = "a test scenario"
[networks.net]
type = "{net_type}"
radio = "{radio}"
nat_timeout_s = {nat}
nat_behaviour = "{behaviour}"
latency_ms = {latency_ms}
jitter_ms = {jitter_ms}
[[groups]]
name = "g"
network = "net"
app = {{ model = "background" }}
{group}
{workload}
""")


def pushes(per_day: float, **options: object) -> str:
    """A ``[workload]`` table of direct pushes only; TTL one day and no collapse keys
    unless ``options`` (workload keys) say otherwise."""
    table = {"direct_per_handset_day": per_day, "tag_per_day": 0, "broadcast_per_day": 0,
             "collapse_share": 0, "ttl_s": 86400, **options}
    return "[workload]\n" + "".join(f"{key} = {value}\n" for key, value in table.items())


@attrs.frozen
class StateChange:
    t: float
    index: int
    old: str
    new: str
    reason: str
    dead_since: float | None  # of the connection the SDK was connected over (leaving CONNECTED)


@attrs.frozen
class Delivery:
    t: float
    index: int
    plan_id: str | None


@attrs.define
class Recorder:
    states: list[StateChange] = attrs.Factory(list)
    deliveries: list[Delivery] = attrs.Factory(list)
    idle: list[tuple[float, int, bool]] = attrs.Factory(list)

    def connected_times(self, index: int = 0) -> list[float]:
        return [s.t for s in self.states if s.index == index and s.new == "CONNECTED"]

    def left_connected(self, index: int = 0) -> list[StateChange]:
        return [s for s in self.states if s.index == index and s.old == "CONNECTED"]


def install_recorder(monkeypatch) -> Recorder:
    """Wrap the handset's callbacks (observing only) and return the recorder they fill."""
    record = Recorder()
    Handset = handset_module.Handset
    on_state_change = Handset._on_state_change
    on_push = Handset._on_push
    on_device_idle = Handset.on_device_idle

    def state_change(self, old, new, reason):
        conn = self._connected_conn
        record.states.append(StateChange(
            trio.current_time(), self.index, old.name, new.name, reason,
            conn.dead_since if conn is not None and old.name == "CONNECTED" else None,
        ))
        return on_state_change(self, old, new, reason)

    def push(self, message):
        record.deliveries.append(
            Delivery(trio.current_time(), self.index, handset_module._plan_id(message))
        )
        return on_push(self, message)

    def device_idle(self, idle):
        record.idle.append((trio.current_time(), self.index, idle))
        return on_device_idle(self, idle)

    monkeypatch.setattr(Handset, "_on_state_change", state_change)
    monkeypatch.setattr(Handset, "_on_push", push)
    monkeypatch.setattr(Handset, "on_device_idle", device_idle)
    return record
