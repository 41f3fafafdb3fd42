"""The oracle is a lower bound: no strategy that keeps its connection alive spends less,
on any handset, in random and adversarial days; and it is exact where it can be checked."""
import math

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.oracle import GapCost, lower_bound
from simulator.oracle_day import (
    CONNECT_SLACK, EXCHANGE_SLACK, Attachment, ForcedEvent, OracleDay, day_from_spec,
)
from simulator.oracle import CELL
from simulator.runner import run_job
from simulator.scenario import Scenario
from simulator.world import RunConfig

STRATEGIES = ("fixed:120", "fixed:270", "fcm", "mars", "mars+hooks", "courier",
              "courier:max=1800", "kontalk", "adaptive", "nat-aware")


def quiet_day(duration, timeout, background=(), pushes=(), allowed=None):
    forced = [ForcedEvent(0.0, "connect")] + [ForcedEvent(t, "push") for t in pushes]
    return OracleDay(duration, tuple(allowed or [(0.0, duration)]),
                     (Attachment(0.0, duration, "lte", timeout),),
                     (("lte", tuple(background)),), tuple(forced))


def test_a_quiet_day_costs_one_isolated_wake_up_per_binding_lifetime():
    f = GapCost.of("lte")
    bound = lower_bound(quiet_day(3600.0, 300.0))
    # Each beat refreshes the binding by EXCHANGE_SLACK + CELL later than it was sent.
    step = 300.0 + EXCHANGE_SLACK + CELL
    first = CONNECT_SLACK + CELL
    beats = math.ceil((3600.0 - first - 300.0) / step)
    assert bound.beats == beats
    assert bound.energy_j == pytest.approx((beats + 1) * f.isolated_j)


def test_beats_ride_on_other_apps_wake_ups_for_free():
    f = GapCost.of("lte")
    # A wake-up every 250 s: every beat can ride on one, only the connect is paid.
    bound = lower_bound(quiet_day(3600.0, 300.0, background=[250.0 * i for i in range(1, 15)]))
    assert bound.energy_j == pytest.approx(f.isolated_j) and bound.beats >= 11


def test_pushes_refresh_the_binding():
    without = lower_bound(quiet_day(3600.0, 300.0))
    with_pushes = lower_bound(quiet_day(3600.0, 300.0, pushes=[200.0 * i for i in range(1, 18)]))
    assert with_pushes.beats == 0 and with_pushes.energy_j < without.energy_j


def test_an_unavoidable_expiry_costs_a_reconnect_not_an_infeasible_schedule():
    day = quiet_day(7200.0, 300.0, allowed=[(0.0, 1000.0), (5000.0, 7200.0)])
    bound = lower_bound(day)
    assert bound.forced_expiries == 1 and bound.reconnects == 1


def test_the_gap_cost_is_the_radio_model_s():
    f = GapCost.of("lte")
    assert f(0.0) == 0.0 and f(1e9) == f.isolated_j
    assert abs(f.isolated_j - 12.76) < 0.02  # Huang 2012's isolated transfer
    assert all(f(a) <= f(b) for a, b in zip(range(0, 20), range(1, 21)))


# --- the bound against the simulator ----------------------------------------------------------

def _scenario(nat, nat2, wakeups, doze, outages, switch, radio):
    networks = f'''
[networks.a]
type = "cellular"
key = "mobile_a"
radio = "{radio}"
nat_timeout_s = {nat}
nat_behaviour = "drop"
[networks.b]
type = "wifi"
key = "wifi_b"
radio = "wifi"
nat_timeout_s = {nat2}
nat_behaviour = "rst"
'''
    switches = ('switches = [{ at = "00:40", to = "b" }, { at = "01:30", to = "a" }]'
                if switch else "")
    group = f'''
[[groups]]
name = "g"
network = "a"
doze = {"{ deep = true, light = true }" if doze else "false"}
app = {{ model = "user", opens_per_day = 200, mean_session_s = 120, foreground_share = 0.3 }}
background = {{ wakeups_per_hour = {wakeups} }}
{f"outages = {{ per_day = {outages}, duration_s = {{ uniform = [30, 600] }} }}" if outages else ""}
{switches}
'''
    text = ('name = "random"\ndescription = "hypothesis"\nhandsets = 3\nhours = 2\n'
            'start = "00:00"\n' + networks + group
            + "[workload]\ndirect_per_handset_day = 60\n")
    return Scenario.from_text(text, "random.toml")


DAYS = st.builds(
    _scenario,
    nat=st.sampled_from([45, 90, 300, 600, 1800]),
    nat2=st.sampled_from([60, 300, 3600]),
    wakeups=st.sampled_from([0, 2, 12, 60]),
    doze=st.booleans(),
    outages=st.sampled_from([0, 0, 12]),
    switch=st.booleans(),
    radio=st.sampled_from(["lte", "lte-aro"]),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DAYS, st.integers(0, 3))
def test_no_strategy_that_keeps_its_connection_spends_less_than_the_oracle(scenario, seed):
    config = RunConfig(scenario, "oracle", 3, 2.0, seed=seed)
    bounds = {r.index: r.energy_j for r in run_job(config)}
    for name in STRATEGIES:
        results = run_job(RunConfig(scenario, name, 3, 2.0, seed=seed))
        alive = [r for r in results if r.dead_s == 0 and r.heartbeats_failed == 0]
        for r in alive:  # per handset ...
            assert r.energy_j >= bounds[r.index] - 1e-9, (name, r.index, r.energy_j,
                                                          bounds[r.index])
        # ... and fleet-wide over the handsets it kept alive
        assert sum(r.energy_j for r in alive) >= sum(bounds[r.index] for r in alive) - 1e-9


def test_the_built_in_scenarios_hold_the_bound_too():
    for name in ("mixed", "commuter", "doze-overnight"):
        scenario = Scenario.builtin(name)
        bounds = {r.index: r.energy_j for r in run_job(RunConfig(scenario, "oracle", 6, 3.0, seed=7))}
        for strategy in ("adaptive", "nat-aware", "mars+hooks"):
            for r in run_job(RunConfig(scenario, strategy, 6, 3.0, seed=7)):
                if r.dead_s == 0 and r.heartbeats_failed == 0:
                    assert r.energy_j >= bounds[r.index] - 1e-9, (name, strategy, r.index)


def test_the_day_matches_the_spec():
    scenario = Scenario.builtin("commuter")
    config = RunConfig(scenario, "oracle", 4, 24.0, seed=2)
    spec = scenario.handset_specs(4, 2, hours=24.0)[1]
    day = day_from_spec(spec, config)
    assert [a.radio for a in day.attachments] == [n.radio for n in
                                                  [spec.network] + [e.network for e in spec.network_events if e.kind == "switch"]]
    assert day.forced[0].kind == "connect" and all(
        a.t <= b.t for a, b in zip(day.forced, day.forced[1:]))
