"""Doze and app state in the simulated world.

The test scenario keeps the screen off all run with AOSP deep Doze: INACTIVE 30 min, then
30 min to IDLE, so IDLE runs 3,600–7,200 s, a 5-min maintenance window 7,200–7,500 s, then
IDLE again. The NAT never expires (30,000 s) so that only Doze shapes delivery.
"""
import pytest
import trio

from simulator import handset as handset_module
from simulator.doze import DozeParams
from simulator.scenario import Scenario
from simulator.world import RunConfig, World, run_world
from simworld import one_network, pushes

HOURS = 2.5
IDLE_START, WINDOW_START, WINDOW_END = 3600.0, 7200.0, 7500.0
GRACE = DozeParams().high_priority_grace  # 10 s [E], docs/scenarios.md §4
SCENARIO = one_network(nat=30000, group="doze = true",
                       workload=pushes(300, high_priority_share=0.5))


def plans(seed):
    specs = SCENARIO.handset_specs(1, seed, hours=HOURS)
    return {p.plan_id: p for p in SCENARIO.workload.schedule(specs, HOURS, seed)}


def in_deep_idle(plan):
    return IDLE_START <= plan.t < WINDOW_START


def test_the_scenario_has_the_aosp_idle_and_window_times():
    doze = SCENARIO.handset_spec(0, 1, hours=HOURS).doze
    assert doze.network_allowed(IDLE_START - 1)
    assert not doze.network_allowed(IDLE_START + 1)
    assert doze.next_change(IDLE_START) == WINDOW_START
    assert doze.network_allowed(WINDOW_START + 1)
    assert doze.next_change(WINDOW_START) == WINDOW_END


def test_doze_holds_normal_pushes_and_lets_high_priority_through(recorder):
    # fixed:1800 declares a 1,800 s keepalive, so the server keeps the connection through
    # the quiet idle period (see the next test for what a short keepalive does).
    seed = 1
    [result] = run_world(RunConfig(SCENARIO, "fixed:1800", 1, HOURS, seed=seed))
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    idle_plans = [p for p in plans(seed).values() if in_deep_idle(p)]
    high = [p for p in idle_plans if p.priority == "high"]
    normal = [p for p in idle_plans if p.priority == "normal"]
    assert len(high) >= 3 and len(normal) >= 3

    # High priority: through within a round trip, each opening a grant of GRACE seconds.
    for plan in high:
        assert delivered[plan.plan_id] - plan.t < 1.0
    grants = [t for t, _, idle in recorder.idle if not idle and IDLE_START < t < WINDOW_START]
    assert len(grants) == len(high)
    for start in grants:
        assert (start + GRACE, 0, True) in recorder.idle

    # Normal priority: held at the door until the network opens again (a grant or the
    # maintenance window), then delivered one latency later.
    opens = sorted(grants + [WINDOW_START])
    latencies = []
    for plan in normal:
        t = delivered[plan.plan_id]
        next_open = min(o for o in opens if o >= plan.t)
        assert next_open <= t < next_open + 1.0
        latencies.append(t - plan.t)
    assert sorted(latencies)[len(latencies) // 2] > 60  # "large": minutes, not milliseconds
    assert result.duplicates == 0
    assert result.heartbeats_failed == 0


def test_high_priority_pushes_get_through_deep_idle_whatever_the_heartbeat(recorder):
    # The same world with fixed:270: the SDK declares keepalive 270 s, so the server drops
    # the connection 1.5 × 270 = 405 s after the last packet from the handset. In IDLE the
    # handset cannot ping, so a high-priority push later in IDLE finds no connection and
    # waits for the maintenance window, like a normal one.
    seed = 1
    run_world(RunConfig(SCENARIO, "fixed:270", 1, HOURS, seed=seed))
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    high = [p for p in plans(seed).values() if in_deep_idle(p) and p.priority == "high"]
    assert len(high) >= 3
    late = {p.plan_id: round(delivered.get(p.plan_id, float("inf")) - p.t, 1)
            for p in high if delivered.get(p.plan_id, float("inf")) - p.t >= 5.0}
    assert not late, f"high-priority pushes held in Doze (plan id: latency s): {late}"


def test_doze_overnight_runs_with_large_normal_latency_and_no_duplicates():
    scenario = Scenario.builtin("doze-overnight")
    results = run_world(RunConfig(scenario, "fcm", 4, 10, seed=1))
    assert all(r.duplicates == 0 for r in results)
    latencies = sorted(x for r in results for x in r.latencies)
    assert latencies, "the workload reaches the fleet overnight"
    assert latencies[-1] > 600  # something waited for a maintenance window or the morning
    assert sum(r.pushes_delivered for r in results) <= sum(r.pushes_sent for r in results)


def test_the_world_tells_the_sdk_the_app_state_timeline(monkeypatch):
    calls = []
    original = handset_module.Handset.on_app_state

    def on_app_state(self, state):
        calls.append((trio.current_time(), state))
        return original(self, state)

    monkeypatch.setattr(handset_module.Handset, "on_app_state", on_app_state)
    scenario = Scenario.from_text("""
name = "user-day"
description = "a user's screen sessions"
start = "08:00"
[networks.lte]
type = "cellular"
radio = "lte"
nat_timeout_s = 3600
[[groups]]
name = "g"
network = "lte"
app = { model = "user", opens_per_day = 100 }
[workload]
direct_per_handset_day = 0
tag_per_day = 0
broadcast_per_day = 0
""")
    [result] = run_world(RunConfig(scenario, "fixed:270", 1, 3, seed=2))
    periods = scenario.handset_spec(0, 2, hours=3).app.periods
    expected = [(p.start, p.state.value) for p in periods if p.start > 0]
    assert len(expected) > 5
    assert calls == [(pytest.approx(t), state) for t, state in expected]
    assert {state for _, state in calls} <= {"foreground", "background", "inactive"}
    assert result.heartbeats > 0


@pytest.mark.parametrize("model, state", [("foreground", "foreground"),
                                          ("background", "inactive")])
async def test_the_sdk_starts_in_the_app_state_of_the_first_period(sim_clock, model, state):
    # The timeline's first period starts at t = 0, so no event announces it: the handset
    # must create the SDK in that state (a strategy such as Mars reads it from the start).
    scenario = Scenario.from_text(f"""
name = "app-{model}"
description = "app state from the start"
[networks.lte]
type = "cellular"
radio = "lte"
nat_timeout_s = 3600
[[groups]]
name = "g"
network = "lte"
app = {{ model = "{model}" }}
[workload]
direct_per_handset_day = 0
tag_per_day = 0
broadcast_per_day = 0
""")
    assert scenario.handset_spec(0, 1, hours=0.1).app.state_at(0.0).value == state
    world = World(RunConfig(scenario, "fixed:270", 1, 0.1, seed=1))
    seen = []

    async def probe():
        await trio.sleep(30)
        seen.append(world.handsets[0].client.statistics().app_state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await world.run()
    assert seen == [state]
