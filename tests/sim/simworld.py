"""Helpers of the world-level simulator tests: tiny scenarios and an event recorder.

The recorder is a :class:`simulator.handset.WorldObserver` that keeps what it hears, so a
test can see *when* things happened inside a ``run_world(config, observer=recorder)`` call.
"""
from __future__ import annotations

import attrs

from simulator.handset import WorldObserver
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
    name: str = "test-world", network: str = "", start: str = "00:00",
    app: str = '{ model = "background" }',
) -> Scenario:
    """A one-network, one-group scenario: screen off all run (``background`` app model,
    unless ``app`` is another inline table),
    no Doze unless ``group`` turns it on, no pushes unless ``workload`` asks for them.
    Jitter is 0 by default so virtual times are exact. ``network`` adds keys to the
    network's table (e.g. ``nat_refresh = "outbound"``)."""
    return Scenario.from_text(f"""
name = "{name}"
description = "a test scenario"
start = "{start}"
[networks.net]
type = "{net_type}"
radio = "{radio}"
nat_timeout_s = {nat}
nat_behaviour = "{behaviour}"
latency_ms = {latency_ms}
jitter_ms = {jitter_ms}
{network}
[[groups]]
name = "g"
network = "net"
app = {app}
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
class Recorder(WorldObserver):
    """A world observer that keeps what it hears (pass it as ``observer=``)."""

    states: list[StateChange] = attrs.Factory(list)
    deliveries: list[Delivery] = attrs.Factory(list)
    idle: list[tuple[float, int, bool]] = attrs.Factory(list)
    app_states: list[tuple[float, int, str]] = attrs.Factory(list)
    radio_log: list[tuple[int, float, str, int, str]] = attrs.Factory(list)
    opened: list = attrs.Factory(list)
    ended: list = attrs.Factory(list)
    expiries: list = attrs.Factory(list)
    sent: list[tuple[int, float, str]] = attrs.Factory(list)

    def connected_times(self, index: int = 0) -> list[float]:
        return [s.t for s in self.states if s.index == index and s.new == "CONNECTED"]

    def left_connected(self, index: int = 0) -> list[StateChange]:
        return [s for s in self.states if s.index == index and s.old == "CONNECTED"]

    # -- WorldObserver ------------------------------------------------------------------
    def state_changed(self, index, t, old, new, reason, dead_since):
        self.states.append(StateChange(t, index, old, new, reason, dead_since))

    def push_delivered(self, index, t, plan_id, latency):
        self.deliveries.append(Delivery(t, index, plan_id))

    def push_sent(self, index, t, plan_id):
        self.sent.append((index, t, plan_id))

    def device_idle(self, index, t, idle):
        self.idle.append((t, index, idle))

    def app_state(self, index, t, state):
        self.app_states.append((t, index, state))

    def radio(self, index, t, direction, nbytes, source):
        self.radio_log.append((index, t, direction, nbytes, source))

    def connection_opened(self, index, t, conn):
        self.opened.append((index, t, conn))

    def connection_ended(self, index, t, conn, how):
        self.ended.append((index, t, conn, how))

    def nat_expired(self, index, conn, expired_at):
        self.expiries.append((index, conn, expired_at))
