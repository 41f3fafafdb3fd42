"""The oracle is a lower bound: no strategy that keeps its connection alive spends less, on
any handset, on random and adversarial days covering every model of the world; and it is
exact where it can be checked by hand."""
import math

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracle_days import ADVERSARIAL, DAYS, day_scenario
from simulator.oracle import MARGIN, PING_TRIPS, handset_bound, lower_bound
from simulator.oracle_view import OracleView, RadioCosts, Spans, subtract, union
from simulator.radio import MODELS, get_model
from simulator.radio.cpu import NEXUS4
from simulator.runner import run_job
from simulator.scenario import Scenario
from simulator.simclock import SimulationClock
from simulator.world import RunConfig, World

STRATEGIES = ("fixed:40", "fixed:120", "fixed:270", "fixed:40+hooks", "fcm", "mars",
              "mars+hooks", "courier", "courier:max=1800", "kontalk", "kontalk-344",
              "adaptive", "nat-aware")


#: The awake second of a CPU wake-up, what the bound charges for one (docs/oracle.md §2).
AWAKE_J = NEXUS4.voltage * NEXUS4.awake_a * NEXUS4.awake_s


def quiet(**knobs):
    """A day with nothing but the NAT: screen off, no other apps, no pushes, no CPU."""
    settings_ = dict(app="background", wakeups=0, pushes=0, cpu=False)
    settings_.update(knobs)
    return day_scenario(**settings_)


def day_of(scenario, index=0, seed=1, hours=2.0):
    return RunConfig(scenario, "oracle", 3, hours, seed=seed).handset_day(index)


def test_a_quiet_day_costs_one_isolated_wake_up_per_binding_lifetime():
    day = day_of(quiet(nat=300))
    costs = RadioCosts.of("lte")
    bound = lower_bound(OracleView(day))
    rtt = 2 * (day.attachments[0].network.latency + day.attachments[0].network.jitter)
    step = 300.0 + max(costs.free_s, rtt * PING_TRIPS + MARGIN)  # each beat's refresh
    end = 7200.0 - costs.window_s  # the run's last tail is free
    connected = rtt * 5 + MARGIN
    beats = math.ceil((end - connected - 300.0) / step)
    assert bound.correction_j == 0 and bound.beats == beats
    assert bound.energy_j == pytest.approx((beats + 1) * get_model("lte").isolated_energy())


def test_the_bound_is_close_to_a_strategy_that_knows_the_nat():
    scenario = quiet(nat=300)
    bounds = run_job(RunConfig(scenario, "oracle", 3, 2.0, seed=1))
    aware = run_job(RunConfig(scenario, "nat-aware", 3, 2.0, seed=1))
    for b, r in zip(bounds, aware):
        assert b.energy_j <= r.energy_j <= 1.05 * b.energy_j


def test_beats_ride_on_other_apps_wake_ups_for_free():
    day = day_of(quiet(nat=300, wakeups=60))
    bound = lower_bound(OracleView(day))
    assert bound.energy_j < 0.2 * lower_bound(OracleView(day_of(quiet(nat=300)))).energy_j


@pytest.mark.parametrize("wakeups", [12, 60])
def test_a_beat_on_other_apps_radio_use_still_wakes_the_app_s_cpu(wakeups):
    """Other apps' radio use makes a beat's radio free, not its CPU: the meter books a
    wake-up for every app activity with the screen off (simulator.radio.cpu). Only a beat
    within the awake time of the one before, or at the run's very end, wakes nothing."""
    off, cpu = (lower_bound(OracleView(day_of(quiet(nat=300, wakeups=wakeups, cpu=c))))
                for c in (False, True))
    # (search_j: before the correction for other apps' promotions, which clamps both to 0)
    wakes = (cpu.search_j - off.search_j) / AWAKE_J
    assert cpu.beats > 20 and cpu.beats - 2 <= wakes <= cpu.beats + 1


def test_screen_sessions_make_beats_free_and_the_cpu_is_paid_otherwise():
    on = lower_bound(OracleView(day_of(quiet(nat=300, app="foreground"))))
    assert on.energy_j == 0.0  # the app on screen keeps the radio up all along
    off, cpu = (lower_bound(OracleView(day_of(quiet(nat=300, cpu=c)))) for c in (False, True))
    # Each beat and the connect wake the CPU: its awake second is charged.
    assert cpu.energy_j - off.energy_j == pytest.approx((off.beats + 1) * AWAKE_J, rel=0.01)


def test_pushes_refresh_the_binding_and_cost_what_a_beat_there_would():
    e1 = get_model("lte").isolated_energy()
    without = lower_bound(OracleView(day_of(quiet(nat=300))))
    day = day_of(quiet(nat=300, pushes=4000))
    with_pushes = lower_bound(OracleView(day))
    gaps = [b.t - a.t for a, b in zip(day.pushes, day.pushes[1:])]
    assert max(gaps) < 300  # the pushes alone keep the binding
    assert with_pushes.energy_j <= e1 * (len(day.pushes) + 1)  # each costs at most E1
    assert with_pushes.energy_j > without.energy_j  # but they are paid for


def test_a_nat_shorter_than_the_tail_keeps_the_radio_up():
    day = day_of(quiet(nat=9))
    costs = RadioCosts.of("lte")
    bound = lower_bound(OracleView(day))
    assert bound.energy_j == pytest.approx(costs.extend_w * 7200.0, rel=0.05)


def test_an_unavoidable_expiry_costs_a_reconnect_not_an_infeasible_schedule():
    day = day_of(quiet(nat=300, doze=True))
    assert day.blocked  # Doze cuts the network for longer than the NAT keeps a binding
    bound = lower_bound(OracleView(day))
    assert bound.forced_expiries >= 1 and bound.reconnects >= 1


def test_an_exempt_connection_has_its_own_bound_and_the_row_takes_the_cheaper():
    day = day_of(quiet(nat=3600, doze=True, pushes=600))
    app = lower_bound(OracleView(day))
    exempt = lower_bound(OracleView(day, exempt=True))
    assert handset_bound(day).energy_j == min(app.energy_j, exempt.energy_j)


def test_spread_gives_every_connection_the_longest_timeout_the_spread_allows():
    narrow = lower_bound(OracleView(day_of(quiet(nat=400))))
    spread = lower_bound(OracleView(day_of(quiet(nat=300, spread=0.5))))
    assert spread.energy_j <= narrow.energy_j * 1.0001


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_cost_model_is_the_radio_model_s(name):
    costs, model = RadioCosts.of(name), get_model(name)
    assert costs.isolated_j == pytest.approx(model.isolated_energy())
    assert costs.gap_s >= model.tail_s and costs.window_s > costs.gap_s
    assert 0 < costs.extend_w <= max(p.power_w for p in model.tail)
    # Extending never beats isolating.
    assert costs.extend_w * (costs.gap_s - costs.transfer_s) <= costs.isolated_j
    assert 0 <= costs.promotion_j <= costs.isolated_j


def test_spans():
    spans = Spans(union([(0, 2), (1, 3), (5, 6)]))
    assert spans.spans == [(0, 3), (5, 6)]
    assert spans.latest(3.5, 10) == 6 and spans.latest(3, 4.9) is None
    assert spans.first(4) == 5 and spans.first(1) == 1 and spans.first(7) is None
    assert spans.measure(2, 5.5) == pytest.approx(1.5)
    assert subtract([(0, 10)], [(1, 2), (3, 4)]) == [(0, 1), (2, 3), (4, 10)]


def test_the_oracle_reads_the_world_s_own_day():
    scenario = Scenario.builtin("commuter")
    config = RunConfig(scenario, "adaptive", 4, 2.0, seed=2)
    world = World(config)
    trio.run(world.run, clock=SimulationClock())
    for index, day in world.days.items():  # the days the handsets lived ...
        assert config.handset_day(index) == day  # ... are the days the oracle reads
    view = OracleView(config.handset_day(1))
    connects = [e.t for e in view.forced if e.kind == "connect"]
    assert connects[1:] == [a.start for a in view.day.attachments[1:]]


# --- the bound against the simulator ---------------------------------------------------------

def _assert_bound_holds(scenario, seed, strategies=STRATEGIES, hours=2.0):
    bounds = {r.index: r.energy_j for r in run_job(RunConfig(scenario, "oracle", 3, hours,
                                                             seed=seed))}
    for name in strategies:
        results = run_job(RunConfig(scenario, name, 3, hours, seed=seed))
        alive = [r for r in results if r.dead_s == 0 and r.heartbeats_failed == 0]
        for r in alive:  # per handset ...
            assert r.energy_j >= bounds[r.index] - 1e-9, (name, r.index, r.energy_j,
                                                          bounds[r.index])
        # ... and fleet-wide over the handsets it kept alive
        assert sum(r.energy_j for r in alive) >= sum(bounds[r.index] for r in alive) - 1e-9


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DAYS, st.integers(0, 3))
def test_no_strategy_that_keeps_its_connection_spends_less_than_the_oracle(scenario, seed):
    _assert_bound_holds(scenario, seed)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_days_hold_the_bound(name):
    _assert_bound_holds(day_scenario(name=name, **ADVERSARIAL[name]), 3)


def test_the_built_in_scenarios_hold_the_bound_too():
    for name in ("mixed", "commuter", "doze-overnight", "wide-spread", "evening-nat"):
        scenario = Scenario.builtin(name)
        _assert_bound_holds(scenario, 7, ("adaptive", "nat-aware", "mars+hooks", "fcm"),
                            hours=3.0)
