"""Daily heartbeat cost: radio-energy.md §5 table, and overlapping tails by simulation."""
from __future__ import annotations

import math

import pytest

from simulator.radio import DAY_S, MQTT_PING, daily_heartbeat_energy, get_model, heartbeat_cost

# radio-energy.md §5: J/day for one heartbeat every 60 / 270 / 540 / 1680 s.
DAILY_TABLE = {
    "lte-huang2012": {60: 18_374, 270: 4_083, 540: 2_042, 1680: 656},
    "lte-aro": {60: 16_368, 270: 3_637, 540: 1_819, 1680: 585},
    "3g-huang2012": {60: 10_629, 270: 2_362, 540: 1_181, 1680: 380},
    "wifi-huang2012": {60: 55, 270: 12, 540: 6, 1680: 2},
}


@pytest.mark.parametrize(
    "name, interval",
    [(name, interval) for name, row in DAILY_TABLE.items() for interval in row],
)
def test_daily_table(name, interval):
    published = DAILY_TABLE[name][interval]
    # within 1 %, or within the rounding of the printed figure (Wi-Fi rows are whole joules)
    tolerance = max(0.01 * published, 0.5)
    daily = daily_heartbeat_energy(get_model(name), interval)
    assert daily == pytest.approx(published, abs=tolerance)


def test_battery_share_of_the_table():
    """The table's percentages are of the reference battery, 3000 mAh × 3.85 V = 41,580 J."""
    battery_j = 3000e-3 * 3600 * 3.85
    shares = {  # interval -> published % of the battery per day, LTE Huang
        60: 44.2, 270: 9.8, 540: 4.9, 1680: 1.6,
    }
    for interval, percent in shares.items():
        daily = daily_heartbeat_energy(get_model("lte"), interval)
        assert 100 * daily / battery_j == pytest.approx(percent, abs=0.05)


@pytest.mark.parametrize("name", ["lte", "lte-aro", "3g", "3g-aro", "wifi", "wifi-aro"])
def test_non_overlapping_closed_form_matches_a_simulated_day(name):
    model = get_model(name)
    interval = 540.0
    meter = model.new_meter()
    beats = int(DAY_S // interval)  # 160 beats, each back in IDLE before the next
    for k in range(beats):
        for direction, nbytes in MQTT_PING:
            meter.on_packet(k * interval, direction, nbytes)
    simulated = meter.statistics().joules
    assert simulated == pytest.approx(daily_heartbeat_energy(model, interval))
    assert meter.statistics().promotions == beats


def test_overlapping_lte_tails_follow_huangs_gap_formula():
    """Beats every 5 s never let LTE reach IDLE: each pays P̄_tail × gap + its transfer."""
    model = get_model("lte")
    interval = 5.0
    transfer_s = 2 * 8 / 6e6 + 2 * 8 / 13e6  # PINGREQ up then PINGRESP down, queued
    transfer_j = 2 * 8 / 6e6 * (1.28804 + 0.43839 * 6) + 2 * 8 / 13e6 * (1.28804 + 0.05197 * 13)
    per_beat = 1.0755 * (interval - transfer_s) + transfer_j
    assert heartbeat_cost(model, interval) == pytest.approx(per_beat, rel=1e-9)
    assert daily_heartbeat_energy(model, interval) == pytest.approx(DAY_S / interval * per_beat)


def test_overlapping_3g_heartbeat_settles_in_fach():
    """3G ARO with a beat every 10 s: after the first DCH tail, small beats stay in FACH."""
    model = get_model("3g-aro")
    fach_power = model.tail[1].power_w
    assert heartbeat_cost(model, 10.0) == pytest.approx(fach_power * 10.0, rel=1e-6)


def test_a_large_beat_in_fach_keeps_promoting_to_dch():
    model = get_model("3g-aro")
    beat = (("up", 600),)  # above the 543 B uplink RLC threshold
    cost = heartbeat_cost(model, 10.0, beat=beat)
    # every beat lands in FACH 10 - 1.5 (promotion) - 4 (DCH) s after the last DCH burst
    on_dch_s = 600 * 8 / 0.4e6
    expected = (
        0.80 * 1.5 + 1.30 * on_dch_s + 1.30 * 4.0 + 0.30 * (10.0 - 1.5 - on_dch_s - 4.0)
    )
    assert cost == pytest.approx(expected, rel=1e-6)


def test_heartbeat_cost_never_exceeds_isolated_beats():
    for name in ("lte", "lte-aro", "3g", "3g-aro", "wifi", "wifi-aro"):
        model = get_model(name)
        e1 = heartbeat_cost(model, 3600.0)
        for interval in (0.5, 2.0, 7.0, 9.0, 13.0, 30.0):
            assert 0 < heartbeat_cost(model, interval) <= e1 + 1e-12


@pytest.mark.parametrize("interval", [0.0, -5.0, math.inf, math.nan])
def test_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval_s"):
        daily_heartbeat_energy(get_model("lte"), interval)


def test_empty_beat_is_refused():
    with pytest.raises(ValueError, match="at least one packet"):
        heartbeat_cost(get_model("lte"), 60.0, beat=())
