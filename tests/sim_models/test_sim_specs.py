"""Handset specs from scenarios: determinism, shards, proportions, timelines."""
import collections
import importlib.resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.app_state import AppState
from simulator.doze import DozeState
from simulator.scenario import NetworkEvent, Scenario

HOUR = 3600.0


@pytest.fixture(scope="module")
def mixed():
    return Scenario.builtin("mixed")


@pytest.fixture(scope="module")
def mixed_specs(mixed):
    return mixed.handset_specs(3000, seed=42)


def test_same_seed_same_specs_and_different_seed_different_specs(mixed):
    a = mixed.handset_specs(40, seed=7)
    b = mixed.handset_specs(40, seed=7)
    assert a == b
    c = mixed.handset_specs(40, seed=8)
    assert [s.network.nat_timeout for s in a] != [s.network.nat_timeout for s in c]
    assert [s.seed for s in a] != [s.seed for s in c]


@settings(max_examples=15, deadline=None)
@given(index=st.integers(min_value=0, max_value=59),
       seed=st.one_of(st.integers(), st.text(max_size=8)))
def test_a_shard_computes_the_same_handset(index, seed):
    scenario = Scenario.builtin("commuter")
    alone = scenario.handset_spec(index, seed)
    assert scenario.handset_specs(60, seed, indices=[index]) == [alone]
    assert scenario.handset_specs(index + 1, seed)[index] == alone  # independent of fleet size


def test_identity_fields(mixed_specs):
    spec = mixed_specs[17]
    assert spec.index == 17
    assert spec.device_id == "handset-00017"
    assert spec.alias == "user-17"
    assert spec.tags == ("cohort-7", f"group-{spec.group}")
    assert len({s.seed for s in mixed_specs}) == len(mixed_specs)
    assert len({s.device_id for s in mixed_specs}) == len(mixed_specs)


def test_mixed_nat_proportions(mixed_specs):
    """Cellular 30 % at 300 s, 20 % in 600-1800 s, 50 % ≥ 1800 s; Wi-Fi 30 % of the fleet."""
    cellular = [s.network for s in mixed_specs if s.network.type == "cellular"]
    wifi = [s.network for s in mixed_specs if s.network.type == "wifi"]
    assert len(wifi) / len(mixed_specs) == pytest.approx(0.30, abs=0.01)  # Weyl: near exact
    timeouts = [n.nat_timeout for n in cellular]
    share = lambda pred: sum(map(pred, timeouts)) / len(timeouts)  # noqa: E731
    assert share(lambda t: t == 300) == pytest.approx(0.30, abs=0.01)
    assert share(lambda t: 600 <= t < 1800) == pytest.approx(0.20, abs=0.01)
    assert share(lambda t: t >= 1800) == pytest.approx(0.50, abs=0.01)
    long = collections.Counter(t for t in timeouts if t >= 1800)
    assert long[1800] / len(timeouts) == pytest.approx(0.5 * 0.4, abs=0.04)
    assert long[7440] / len(timeouts) == pytest.approx(0.5 * 0.2, abs=0.04)
    # home Wi-Fi: 70 % in 30-60 min, 15 % in 2-5 min, 15 % RFC-compliant (random draws)
    home = [n.nat_timeout for n in wifi]
    assert sum(1800 <= t <= 3600 for t in home) / len(home) == pytest.approx(0.70, abs=0.05)
    assert sum(120 <= t <= 300 for t in home) / len(home) == pytest.approx(0.15, abs=0.04)
    assert sum(t >= 7440 for t in home) / len(home) == pytest.approx(0.15, abs=0.04)
    # behaviours and keys follow the carrier
    assert {n.key: n.nat_behaviour for n in cellular} == {
        "mobile_carrierA": "drop", "mobile_carrierB": "rst", "mobile_carrierC": "drop"}


def test_group_shares_are_close_even_for_small_fleets(mixed):
    counts = collections.Counter(s.group for s in mixed.handset_specs(50, seed=1))
    assert counts == pytest.approx({"carrierA": 10.5, "carrierB": 7, "carrierC": 17.5,
                                    "wifi": 15}, abs=1.5)


def test_outages_are_paired_and_at_the_configured_rate(mixed_specs):
    total = 0
    for spec in mixed_specs[:1000]:
        kinds = [e.kind for e in spec.network_events]
        assert kinds == ["outage_start", "outage_end"] * (len(kinds) // 2)
        for start, end in zip(spec.network_events[::2], spec.network_events[1::2]):
            assert 30 <= end.t - start.t <= 300 or spec.group == "wifi"
            assert spec.in_outage(start.t) and not spec.in_outage(end.t)
        total += len(kinds) // 2
    # ≈ 1 per day on cellular (70 %), 0.5 on Wi-Fi (30 %): ≈ 850 in 1000 handset-days
    assert total == pytest.approx(850, rel=0.12)


def test_commuter_switches_through_the_day():
    scenario = Scenario.builtin("commuter")
    for spec in scenario.handset_specs(30, seed=3):
        assert spec.network.name == "home"
        switches = [e for e in spec.network_events if e.kind == "switch"]
        assert [e.network.name for e in switches] == ["lte", "office", "lte", "home"]
        windows = [(8, 1200), (9, 1200), (18, 1500), (19, 1500)]
        for event, (hour, jitter) in zip(switches, windows):
            assert abs(event.t - hour * HOUR) <= jitter
        # a handset comes home to the same gateway it left
        assert switches[3].network == spec.network
        assert spec.network_at(12 * HOUR).key == "wifi_office"
        at = 8.5 * HOUR if switches[0].t <= 8.5 * HOUR else switches[0].t
        assert spec.network_at(at).radio == "lte"
        assert [n.name for n in spec.networks()] == ["home", "lte", "office"]


def test_a_switch_names_its_network_and_an_outage_none():
    spec = Scenario.builtin("commuter").handset_spec(0, seed=3)
    switch = next(e for e in spec.network_events if e.kind == "switch")
    assert switch.switched_to is switch.network and switch.network.name == "lte"
    with pytest.raises(ValueError, match="a switch event needs the network it switches to"):
        NetworkEvent(1.0, "switch")
    with pytest.raises(ValueError, match="an outage_start event has no network"):
        NetworkEvent(1.0, "outage_start", switch.network)
    with pytest.raises(ValueError, match="an outage_end event switches to no network"):
        _ = NetworkEvent(1.0, "outage_end").switched_to


def test_a_run_starting_at_noon_begins_at_the_office():
    scenario = Scenario.from_text(
        _builtin_text("commuter").replace('start = "00:00"', 'start = "12:00"'))
    spec = scenario.handset_spec(0, seed=1, hours=12)
    assert spec.network.name == "office"
    assert [e.network.name for e in spec.network_events if e.kind == "switch"] == ["lte", "home"]


def _builtin_text(name):
    return (importlib.resources.files("simulator") / "scenarios" / f"{name}.toml").read_text()


def test_doze_overnight_blocks_the_network_at_night():
    scenario = Scenario.builtin("doze-overnight")
    specs = scenario.handset_specs(100, seed=5)
    three_am = 5 * HOUR  # the run starts at 22:00
    # screen off since ~23:00 ± 30 min: deep Doze from ~00:00, only 5-10 min windows open
    probes = [3 * HOUR + k * 600 for k in range(31)]  # 01:00 .. 06:00
    blocked = sum(not s.doze.network_allowed(t) for s in specs for t in probes)
    assert blocked / (len(specs) * len(probes)) > 0.85
    for spec in specs:
        assert spec.app.state_at(three_am) is AppState.INACTIVE
        assert spec.doze.state(three_am) in (DozeState.IDLE, DozeState.MAINTENANCE)
        assert spec.doze.network_allowed(three_am) == spec.doze.in_maintenance(three_am)
        # other apps' traffic never happens while this phone dozes
        assert all(spec.doze.network_allowed(t) for t in spec.background.times)
        assert list(spec.background.times) == sorted(set(spec.background.times))


def test_background_wakeups_follow_the_rate(mixed_specs):
    counts = [len(s.background.times) for s in mixed_specs[:500]]
    assert sum(counts) / len(counts) == pytest.approx(2 * 24, rel=0.05)
    assert mixed_specs[0].background.bytes_up == 1500


def test_hours_override_shortens_every_timeline(mixed):
    spec = mixed.handset_spec(3, seed=9, hours=2)
    assert spec.app.duration == 2 * HOUR
    assert all(e.t < 2 * HOUR for e in spec.network_events if e.kind != "outage_end")
    assert all(t < 2 * HOUR for t in spec.background.times)
