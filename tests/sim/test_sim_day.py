"""The exogenous day of a handset (simulator.day): pure, deterministic, what the world replays."""
import pytest

from simulator.day import handset_day
from simulator.scenario import Scenario
from simulator.world import RunConfig, run_world
from simworld import Recorder, one_network


def spread_scenario(**extra):
    text = """
name = "spread"
description = "per-connection spread, a sweep and outages"
[networks.net]
type = "cellular"
radio = "lte"
nat_timeout_s = 600
nat_spread = 0.2
nat_sweep_s = 60
latency_ms = 40
jitter_ms = 0
[[groups]]
name = "g"
network = "net"
app = { model = "background" }
outages = { per_day = 12, duration_s = 120 }
[workload]
direct_per_handset_day = 20
tag_per_day = 0
broadcast_per_day = 0
"""
    return Scenario.from_text(text)


def test_the_day_is_a_pure_function_of_scenario_seed_and_index():
    scenario = Scenario.builtin("commuter")
    assert handset_day(scenario, 3, 1) == handset_day(scenario, 3, 1)
    assert handset_day(scenario, 3, 1) != handset_day(scenario, 3, 2)


def test_attachments_and_outages_tile_the_run():
    scenario = Scenario.builtin("commuter")
    for index in range(10):
        day = handset_day(scenario, index, 5)
        pieces = sorted([(a.start, a.end) for a in day.attachments] + list(day.outages))
        assert pieces[0][0] == 0.0 and pieces[-1][1] == day.duration
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(pieces, pieces[1:]))
        assert [a.index for a in day.attachments] == list(range(len(day.attachments)))
        for a in day.attachments:
            assert day.attachment_at(a.start) is a
            assert day.spec.network_at(a.start).key == a.network.key
        for start, end in day.outages:
            assert day.attachment_at((start + end) / 2) is None


def test_per_connection_draws_depend_on_attachment_purpose_and_ordinal_only():
    day = handset_day(spread_scenario(), 0, 7)
    first = day.attachments[0]
    push0 = first.nat_timeout(0, "push")
    assert push0 == first.nat_timeout(0, "push")  # deterministic
    assert 480 <= push0.base <= 720  # 600 s ± 20 %
    draws = {first.nat_timeout(k, p).base for k in range(5) for p in ("push", "probe")}
    assert len(draws) == 10
    assert day.attachments[1].nat_timeout(0, "push") != push0
    assert push0.sweep == 60 and 0 <= push0.sweep_phase < 60


def test_the_world_uses_exactly_the_days_timeouts():
    scenario = spread_scenario()
    config = RunConfig(scenario, "fixed:240", 1, 6, seed=3)
    recorder = Recorder()
    run_world(config, observer=recorder)
    day = config.handset_day(0)
    pushes = [(i, t, c) for i, t, c in recorder.opened if c.purpose == "push"]
    assert len(pushes) >= 3  # one per attachment at least (outages cut them)
    for _, t, record in recorder.opened:
        attachment = day.attachment_at(t)
        assert record.attachment == attachment
        assert record.nat == attachment.nat_timeout(record.ordinal, record.purpose)
    # fixed:240 beats well inside the NAT: one push connection per attachment, ordinal 0.
    assert {c.ordinal for _, _, c in pushes} == {0}
    assert {c.attachment.index for _, _, c in pushes} == {
        a.index for a in day.attachments if a.end - a.start > 1}
    sent = [plan_id for _, _, plan_id in recorder.sent]
    assert sent == [p.plan_id for p in day.pushes]
    assert [t for _, t, _ in recorder.sent] == pytest.approx([p.t for p in day.pushes])


def test_the_world_replays_the_days_doze_and_other_apps():
    scenario = one_network(nat=30000, group="doze = true\nbackground = { wakeups_per_hour = 4 }")
    config = RunConfig(scenario, "fixed:270", 1, 6, seed=2)
    recorder = Recorder()
    run_world(config, observer=recorder)
    day = config.handset_day(0)
    expected = [(s, 0, True) for s, _ in day.blocked]
    expected += [(e, 0, False) for _, e in day.blocked if e < day.duration]
    assert sorted(recorder.idle) == sorted(expected)
    other = sorted({t for _, t, _, _, source in recorder.radio_log if source == "other"})
    assert other == pytest.approx([a.t for a in day.radio_activity])
    assert all(not day.network_blocked(a.t) for a in day.radio_activity)
