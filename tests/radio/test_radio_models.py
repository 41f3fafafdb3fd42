"""The named models reproduce the published figures (docs/energy.md names them)."""
from __future__ import annotations

import math

import pytest

from simulator.radio import (
    ALIASES,
    MODELS,
    RadioStatistics,
    UnknownModelError,
    get_model,
    list_models,
)

# E₁ = one isolated small transfer, as published (radio-energy.md §1-4).
PUBLISHED_E1 = {
    "lte-huang2012": (12.76, 0.005),  # 1210.7 mW × 0.2601 s + 1075.5 mW × 11.576 s
    "lte-aro": (11.37, 0.005),
    "3g-huang2012": (7.38, 0.005),  # Huang table 3: 0.384 + 6.502 + 0.496 J
    "3g-aro": (9.50, 0.005),  # i997: 0.65 W × 2 s + 1.3 W × 4 s + 0.3 W × 10 s
    "wifi-huang2012": (0.0382, 0.005),  # quoted as 0.04 J
    "wifi-aro": (0.10, 0.01),  # 0.403 W × 0.25 s = 0.1008 J
}


def meter_for(name):
    return get_model(name).new_meter()


@pytest.mark.parametrize("name", sorted(PUBLISHED_E1))
def test_isolated_small_transfer_matches_published_e1(name):
    expected, tolerance = PUBLISHED_E1[name]
    meter = meter_for(name)
    meter.on_packet(100.0, "up", 2)  # an MQTT PINGREQ
    stats = meter.statistics()
    assert stats.joules == pytest.approx(expected, rel=tolerance)
    assert stats.promotions == 1  # Wi-Fi ARO's wake-up counts too, at 0 J
    # for a heartbeat-size packet the transfer is negligible next to the tail
    assert stats.transfer_j < 1e-4 * stats.joules
    assert stats.joules == pytest.approx(stats.promotion_j + stats.tail_j + stats.transfer_j)


def test_lte_huang_e1_decomposes_as_in_the_paper():
    meter = meter_for("lte")
    meter.on_packet(0.0, "up", 0)
    stats = meter.statistics()
    assert stats.promotion_j == pytest.approx(1.2107 * 0.2601)
    assert stats.tail_j == pytest.approx(1.0755 * 11.576)
    assert stats.transfer_j == 0.0
    assert stats.radio_active_s == pytest.approx(0.2601 + 11.576)
    assert stats.radio_idle_at == pytest.approx(0.2601 + 11.576)


def test_3g_huang_e1_is_the_sum_of_table_3():
    meter = meter_for("3g")
    meter.on_packet(0.0, "up", 0)
    stats = meter.statistics()
    assert stats.promotion_j == pytest.approx(0.6594 * 0.5821)
    assert stats.tail_j == pytest.approx(0.8039 * 8.0882 + 0.6013 * 0.8242)
    assert stats.joules == pytest.approx(7.382, abs=5e-4)


def test_lte_aro_tail_bills_cr_at_beta_and_drx_with_pings():
    model = get_model("lte-aro")
    assert model.tail_s == pytest.approx(10.12)
    cr, short, long_ = model.tail
    assert cr.power_w == 1.2
    assert short.power_w == pytest.approx((0.002 * 1.68 + 0.018 * 1.06) / 0.02)
    assert long_.power_w == pytest.approx((0.002 * 1.68 + 0.038 * 1.06) / 0.04)
    assert model.isolated_energy() == pytest.approx(11.367, abs=1e-3)


def test_huang_two_beats_five_seconds_apart():
    """radio-energy.md §5: 0.315 + 1.0755·5 + 12.45 ≈ 18.14 J versus 25.53 J isolated.

    The gap Δ of Huang's formula runs from the end of the first burst (after its
    promotion) to the second packet, so the second beat is sent 5 s after the first
    burst's data went out.
    """
    model = get_model("lte")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 0)
    first_burst_end = model.promotion.duration_s
    meter.on_packet(first_burst_end + 5.0, "up", 0)
    stats = meter.statistics()
    assert stats.promotions == 1
    assert stats.joules == pytest.approx(18.14, rel=0.005)
    assert stats.joules == pytest.approx(0.3149 + 1.0755 * 5 + 1.0755 * 11.576, rel=1e-4)
    assert 2 * model.isolated_energy() == pytest.approx(25.53, rel=0.001)


def test_beats_sent_five_seconds_apart_share_the_tail_minus_the_promotion():
    model = get_model("lte")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 0)
    meter.on_packet(5.0, "up", 0)
    gap = 5.0 - model.promotion.duration_s
    assert meter.statistics().joules == pytest.approx(
        model.promotion.energy_j + 1.0755 * gap + 1.0755 * 11.576
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_packet_inside_tail_pays_no_promotion_and_restarts_tail(name):
    model = get_model(name)
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 0)
    inside = model.promotion.duration_s + model.tail[0].duration_s / 2  # first tail phase
    meter.on_packet(inside, "up", 0)
    stats = meter.statistics()
    assert stats.promotions == 1
    assert stats.promotion_j == pytest.approx(model.promotion.energy_j)
    gap = inside - model.promotion.duration_s
    assert stats.tail_j == pytest.approx(model.tail[0].power_w * gap + model.tail_j)
    assert stats.radio_idle_at == pytest.approx(inside + model.tail_s)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_packet_after_the_tail_pays_a_full_promotion(name):
    model = get_model(name)
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 0)
    idle_at = meter.statistics().radio_idle_at
    meter.on_packet(idle_at, "up", 0)  # exactly at the end of the tail: IDLE
    meter.on_packet(idle_at + 1000.0, "down", 0)
    stats = meter.statistics()
    assert stats.promotions == 3
    assert stats.joules == pytest.approx(3 * model.isolated_energy())
    assert stats.radio_active_s == pytest.approx(3 * (model.promotion.duration_s + model.tail_s))


@pytest.mark.parametrize(
    "interval, beats, expected_promotions",
    [(60.0, 10, 10), (12.0, 10, 10), (11.0, 10, 1), (1.0, 30, 1)],
)
def test_promotions_counted_along_a_heartbeat_train(interval, beats, expected_promotions):
    meter = meter_for("lte")  # a beat returns to IDLE 11.836 s after it is sent
    for k in range(beats):
        meter.on_packet(k * interval, "up", 2)
        meter.on_packet(k * interval, "down", 2)
    assert meter.statistics().promotions == expected_promotions


def test_packets_during_promotion_queue_behind_it():
    model = get_model("lte")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 750_000)  # 1 s at 6 Mbps, after a 0.2601 s promotion
    meter.on_packet(0.1, "down", 1_625_000)  # 1 s at 13 Mbps, queued
    stats = meter.statistics()
    assert stats.promotions == 1
    assert stats.transfer_s == pytest.approx(2.0)
    assert stats.transfer_j == pytest.approx((1.28804 + 0.43839 * 6) + (1.28804 + 0.05197 * 13))
    assert stats.radio_idle_at == pytest.approx(0.2601 + 2.0 + 11.576)


# -- 3G FACH rules --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["3g-huang2012", "3g-aro"])
def test_small_packet_in_fach_stays_in_fach(name):
    model = get_model(name)
    dch, fach = model.tail
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 2)
    in_fach = model.promotion.duration_s + dch.duration_s + fach.duration_s / 2
    meter.on_packet(in_fach, "up", 543)  # at the threshold: no promotion
    stats = meter.statistics()
    assert (stats.promotions, stats.fach_promotions) == (1, 0)
    # the radio stays in FACH: its FACH timer restarts after the FACH transfer
    fach_transfer_s = 543 * 8 / 32_000
    assert stats.radio_idle_at == pytest.approx(
        in_fach + fach_transfer_s + fach.duration_s, abs=1e-4
    )
    # the second half of the first FACH tail is replaced by the transfer and a new FACH tail
    expected = (
        model.isolated_energy(2)
        - fach.energy_j / 2
        + fach.power_w * (fach_transfer_s + fach.duration_s)
    )
    assert stats.joules == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("direction, size", [("up", 544), ("down", 476)])
def test_large_packet_in_fach_promotes_to_dch(direction, size):
    model = get_model("3g-aro")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 2)
    in_fach = 2.0 + 4.0 + 5.0
    meter.on_packet(in_fach, direction, size)
    stats = meter.statistics()
    assert (stats.promotions, stats.fach_promotions) == (2, 1)
    assert stats.promotion_j == pytest.approx(0.65 * 2.0 + 0.80 * 1.5)
    # after FACH -> DCH the packet goes on DCH, then the full DCH + FACH tail follows
    on_dch_s = size * model.transfer.seconds_per_byte(direction)
    assert stats.radio_idle_at == pytest.approx(in_fach + 1.5 + on_dch_s + 14.0)


def test_fach_rlc_buffer_adds_up_a_burst():
    model = get_model("3g-aro")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 2)
    in_fach = 11.0
    meter.on_packet(in_fach, "down", 300)  # alone it stays on FACH ...
    assert meter.statistics().fach_promotions == 0
    meter.on_packet(in_fach, "down", 300)  # ... but 600 B queued > 475 B: FACH -> DCH
    assert meter.statistics().fach_promotions == 1
    meter.on_packet(in_fach, "up", 300)  # the uplink buffer is separate, and DCH is coming
    assert meter.statistics().promotions == 2


def test_small_packets_in_fach_keep_3g_in_fach():
    """A heartbeat every 10 s on 3G ARO keeps the radio in FACH (0.3 W), never in DCH."""
    model = get_model("3g-aro")
    meter = model.new_meter()
    for k in range(100):
        meter.on_packet(10.0 * k, "up", 2)
    stats = meter.statistics(until=1000.0)
    assert stats.promotions == 1
    assert stats.joules == pytest.approx(1.3 + 5.2 + 0.3 * (1000.0 - 6.0), rel=1e-4)


# -- statistics, windows, baseline ----------------------------------------------------
def test_statistics_until_cuts_the_tail_and_energy_until_agrees():
    model = get_model("lte")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 0)
    cut = meter.statistics(until=5.0)
    assert cut.tail_j == pytest.approx(1.0755 * (5.0 - 0.2601))
    assert cut.radio_active_s == pytest.approx(5.0)
    assert meter.energy_until(5.0) == pytest.approx(cut.joules)
    assert meter.energy_until(100.0) == pytest.approx(meter.statistics().joules)
    assert meter.statistics(until=100.0) == meter.statistics()


def test_idle_baseline_is_paging_power_times_idle_time():
    model = get_model("lte")
    assert model.idle_power_w == pytest.approx(0.5943 * 43.2 / 1280.2)
    assert model.idle_power_w * 86_400 == pytest.approx(1_730, rel=0.01)  # ≈ 1,730 J/day
    meter = model.new_meter()
    meter.on_packet(10.0, "up", 2)
    stats = meter.statistics()
    assert stats.idle_baseline_j(86_400.0) == pytest.approx(
        model.idle_power_w * (86_400.0 - stats.radio_active_s)
    )
    assert model.idle_baseline_j(3600.0) == pytest.approx(model.idle_power_w * 3600.0)


def test_empty_meter_counts_nothing():
    stats = meter_for("lte").statistics()
    assert stats == RadioStatistics(
        model="lte-huang2012", joules=0.0, promotion_j=0.0, tail_j=0.0, transfer_j=0.0,
        promotions=0, fach_promotions=0, radio_active_s=0.0, promotion_s=0.0, transfer_s=0.0,
        tail_s=0.0, packets=0, bytes_up=0, bytes_down=0,
        idle_power_w=get_model("lte").idle_power_w, first_packet_t=None, radio_idle_at=None,
    )


def test_statistics_record_is_frozen():
    stats = meter_for("wifi").statistics()
    with pytest.raises(AttributeError):
        stats.joules = 1.0


@pytest.mark.parametrize(
    "t, direction, nbytes, message",
    [
        (4.0, "up", 1, "backwards"),
        (math.nan, "up", 1, "not finite"),
        (math.inf, "up", 1, "not finite"),
        (6.0, "sideways", 1, "direction"),
        (6.0, "UP", 1, "direction"),
        (6.0, "up", -1, "nbytes"),
    ],
)
def test_bad_packets_raise_and_leave_the_meter_unchanged(t, direction, nbytes, message):
    meter = meter_for("lte")
    meter.on_packet(5.0, "up", 10)
    before = meter.statistics()
    with pytest.raises(ValueError, match=message):
        meter.on_packet(t, direction, nbytes)
    assert meter.statistics() == before
    assert meter.last_packet_t == 5.0


def test_until_before_the_last_packet_is_refused():
    meter = meter_for("lte")
    meter.on_packet(5.0, "up", 10)
    with pytest.raises(ValueError, match="before the last packet"):
        meter.statistics(until=4.0)
    with pytest.raises(ValueError):
        meter.energy_until(4.0)


# -- registry -------------------------------------------------------------------------
def test_registry_names_and_aliases():
    assert set(MODELS) == {
        "lte-huang2012", "lte-aro", "3g-huang2012", "3g-aro", "wifi-huang2012", "wifi-aro",
        "5g-sa", "5g-nsa-mmwave",
    }
    assert ALIASES == {"lte": "lte-huang2012", "3g": "3g-huang2012", "wifi": "wifi-huang2012"}
    assert get_model("lte") is MODELS["lte-huang2012"]
    assert get_model(" LTE-ARO ") is MODELS["lte-aro"]
    assert [name for name, _ in list_models()] == list(MODELS)
    assert "alias: lte" in dict(list_models())["lte-huang2012"]


def test_unknown_model_lists_the_known_names():
    with pytest.raises(UnknownModelError) as info:
        get_model("6g")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'6g'" in message and "lte (= lte-huang2012)" in message and "wifi-aro" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_states_its_sources(name):
    model = MODELS[name]
    assert model.source
    assert model.notes and all(note[:3] in ("[C]", "[A]", "[R]") for note in model.notes)
    assert model.technology in ("lte", "3g", "wifi", "5g")
    assert (model.inactive_phase is not None) == (model.name == "5g-sa")
    assert (model.fach is not None) == (model.technology == "3g")


def test_3g_aro_says_it_is_the_i997_profile():
    assert "i997" in MODELS["3g-aro"].source
