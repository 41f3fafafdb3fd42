"""Doze and app state in the simulated world.

The test scenario keeps the screen off all run with AOSP deep Doze: INACTIVE 30 min, then
30 min to IDLE, so IDLE runs 3,600–7,200 s, a maintenance window that ends once the work is
done (30 s, 7,200–7,230 s), then IDLE again. The NAT never expires (30,000 s) so that only
Doze shapes delivery.
"""
import attrs
import pytest
import trio

from pushsdk.heartbeat import FixedStrategy
from simulator import strategies
from simulator.scenario import Scenario
from simulator.world import RunConfig, World, run_world
from simworld import one_network, pushes

HOURS = 2.5
IDLE_START, WINDOW_START, WINDOW_END = 3600.0, 7200.0, 7230.0
SCENARIO = one_network(nat=30000, group="doze = true",
                       workload=pushes(300, high_priority_share=0.5))


@attrs.frozen
class ExemptFixed(FixedStrategy):
    """A fixed heartbeat on a Doze-exempt channel (the FCM model: Google Play services'
    connection is exempt from Doze)."""

    doze_exempt = True


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
    day = RunConfig(SCENARIO, "fixed:1800", 1, HOURS).handset_day(0)
    assert day.blocked[0] == (IDLE_START, WINDOW_START)
    assert day.maintenance[0] == (WINDOW_START, WINDOW_END)


def test_doze_blocks_the_app_both_ways_and_holds_every_push_to_the_window(recorder):
    seed = 1
    [result] = run_world(RunConfig(SCENARIO, "fixed:270", 1, HOURS, seed=seed),
                         observer=recorder)
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    idle_plans = [p for p in plans(seed).values() if in_deep_idle(p)]
    assert len([p for p in idle_plans if p.priority == "high"]) >= 3
    # Neither direction moves while IDLE: no packet of the app reaches the radio.
    app_radio = [t for _, t, _, _, source in recorder.radio_log if source == "app"]
    assert app_radio and not [t for t in app_radio if IDLE_START + 1 < t < WINDOW_START]
    # Every push sent in IDLE, high priority or not, waits for the window: the app's own
    # connection is not the exempt system channel.
    for plan in idle_plans:
        assert WINDOW_START <= delivered[plan.plan_id] < WINDOW_END
    # The SDK was told, once each way.
    assert (IDLE_START, 0, True) in recorder.idle and (WINDOW_START, 0, False) in recorder.idle
    assert result.duplicates == 0
    # No connection (probe or other) is opened while the network is blocked.
    assert not [t for _, t, _ in recorder.opened if IDLE_START < t < WINDOW_START]


def test_on_the_exempt_channel_high_priority_passes_and_normal_waits(recorder, monkeypatch):
    monkeypatch.setattr(strategies, "_shared", lambda name: ExemptFixed(1800))
    seed = 1
    [result] = run_world(RunConfig(SCENARIO, "fixed:1800", 1, HOURS, seed=seed),
                         observer=recorder)
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    idle_plans = sorted((p for p in plans(seed).values() if in_deep_idle(p)), key=lambda p: p.t)
    high = [p for p in idle_plans if p.priority == "high"]
    normal = [p for p in idle_plans if p.priority == "normal"]
    assert len(high) >= 3 and len(normal) >= 3
    assert recorder.idle == []  # the exempt app's SDK is never told to doze
    for plan in high:
        assert delivered[plan.plan_id] - plan.t < 1.0
    latencies = []
    for plan in normal:
        # Held until the next high-priority push (which brings the held ones along) or
        # the maintenance window.
        releases = [h.t for h in high if h.t >= plan.t] + [WINDOW_START]
        t = delivered[plan.plan_id]
        assert min(releases) <= t < min(releases) + 1.0
        latencies.append(t - plan.t)
    assert sorted(latencies)[len(latencies) // 2] > 60
    assert result.duplicates == 0 and result.heartbeats_failed == 0


def test_priority_comes_from_the_parsed_field_not_the_payload_bytes(recorder, monkeypatch):
    # Normal pushes whose data carries the text '"priority":"high"' must still wait.
    monkeypatch.setattr(strategies, "_shared", lambda name: ExemptFixed(1800))
    scenario = one_network(nat=30000, group="doze = true",
                           workload=pushes(300, high_priority_share=0, notification_share=0))
    seed = 1
    specs = scenario.handset_specs(1, seed, hours=HOURS)
    idle = [p for p in scenario.workload.schedule(specs, HOURS, seed) if in_deep_idle(p)]
    assert len(idle) >= 3

    def body(self, registration_ids=None, _body=type(idle[0]).body):  # noqa: B008  (bound once)
        data = _body(self, registration_ids)
        data["message"]["data"]["blob"] = '{"priority":"high"}'
        return data

    monkeypatch.setattr(type(idle[0]), "body", body)
    run_world(RunConfig(scenario, "fixed:1800", 1, HOURS, seed=seed), observer=recorder)
    delivered = {d.plan_id: d.t for d in recorder.deliveries}
    for plan in idle:
        assert delivered[plan.plan_id] >= WINDOW_START


def test_doze_overnight_runs_with_large_normal_latency_and_no_duplicates():
    scenario = Scenario.builtin("doze-overnight")
    results = run_world(RunConfig(scenario, "fcm", 4, 10, seed=1))
    assert all(r.duplicates == 0 for r in results)
    latencies = sorted(x for r in results for x in r.latencies)
    assert latencies, "the workload reaches the fleet overnight"
    assert latencies[-1] > 600  # something waited for a maintenance window or the morning
    assert sum(r.pushes_delivered for r in results) <= sum(r.pushes_sent for r in results)


def test_the_world_tells_the_sdk_the_app_state_timeline(recorder):
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
    [result] = run_world(RunConfig(scenario, "fixed:270", 1, 3, seed=2), observer=recorder)
    periods = scenario.handset_spec(0, 2, hours=3).app.periods
    expected = [(p.start, p.state.value) for p in periods if p.start > 0]
    assert len(expected) > 5
    calls = [(t, state) for t, _, state in recorder.app_states]
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


async def test_an_allow_while_idle_alarm_opens_the_network_for_ten_seconds(sim_clock):
    from simulator.alarms import AlarmKind
    world = World(RunConfig(SCENARIO, "fixed:270", 1, 2.5, seed=1))
    seen = {}

    async def alarm():
        await trio.sleep(5000)  # deep IDLE
        handset = world.handsets[0]
        alarms = handset.alarms
        when = alarms.fires_at(5000, 5000, AlarmKind.EXACT_ALLOW_WHILE_IDLE)
        assert when == 5000 and handset.idle
        handset.allow_network_for(alarms.fired(when, AlarmKind.EXACT_ALLOW_WHILE_IDLE))
        seen["open"] = handset.idle
        await trio.sleep(10)
        seen["closed"] = handset.idle
        seen["next"] = alarms.fires_at(5010, 5020, AlarmKind.EXACT_ALLOW_WHILE_IDLE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(alarm)
        await world.run()
    assert seen == {"open": False, "closed": True, "next": 5000 + 540}
