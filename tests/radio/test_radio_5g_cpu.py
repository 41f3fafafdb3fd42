"""5G NR models (RRC_INACTIVE), screen holds and the CPU wake-up model."""
import pytest

from simulator.radio import get_model
from simulator.radio.cpu import NEXUS4, CpuMeter


def test_nr_sa_is_back_in_idle_within_20_s_as_measured():
    # Narayanan et al. SIGCOMM'21 artifact (MI-RRC-Power): a packet every 20 s makes the
    # phone enter RRC_CONNECTED each time, i.e. it is back in RRC_IDLE within 20 s.
    for name in ("5g-sa", "5g-nsa-mmwave"):
        meter = get_model(name).new_meter()
        meter.on_packet(0.0, "up", 40)
        meter.on_packet(20.0, "up", 40)
        assert meter.statistics().promotions == 2
        assert get_model(name).new_meter().statistics() is not None


def test_a_packet_in_rrc_inactive_pays_a_resume_not_a_full_setup():
    model = get_model("5g-sa")
    meter = model.new_meter()
    meter.on_packet(0.0, "up", 2)
    meter.on_packet(15.0, "up", 2)  # CONNECTED tail over at 10.3 s: INACTIVE
    stats = meter.statistics()
    assert stats.promotions == 2
    assert stats.promotion_j == pytest.approx(model.promotion.energy_j + model.resume.energy_j,
                                              rel=1e-3)
    assert model.resume.energy_j < model.promotion.energy_j
    inside = model.new_meter()
    inside.on_packet(0.0, "up", 2)
    inside.on_packet(5.0, "up", 2)  # still CONNECTED: no promotion at all
    assert inside.statistics().promotions == 1


def test_mmwave_costs_more_than_lte_for_a_small_transfer():
    # LTE is more energy-efficient than mmWave NR for low-rate traffic (SRG, Narayanan 2021).
    assert get_model("5g-nsa-mmwave").isolated_energy() > get_model("lte").isolated_energy()


def test_a_hold_makes_packets_inside_it_free_of_promotion_and_tail():
    lte = get_model("lte")
    alone = lte.new_meter()
    alone.on_packet(100.0, "up", 42)
    shared, others = lte.new_meter(), lte.new_meter()
    for meter in (shared, others):
        meter.hold(50.0, 200.0)  # the app on screen keeps the radio up
    shared.on_packet(100.0, "up", 42)
    end = 300.0
    extra = shared.energy_until(end) - others.energy_until(end)
    assert extra < 0.001 * alone.statistics().joules  # only its transfer
    assert shared.statistics().promotions == others.statistics().promotions == 1


def test_cpu_wakeups_merge_within_the_awake_time_and_skip_screen_on():
    meter = CpuMeter()
    meter.on_activity(0.0)
    meter.on_activity(0.5)  # same wake
    meter.on_activity(10.0)
    meter.on_activity(20.0, screen_on=True)
    assert meter.wakeups == 2
    assert meter.awake_s == pytest.approx(2.5)
    expected = 3.8 * (0.01043 * 2.5 + 0.0926 * 0.05 * 2)
    assert meter.energy_j() == pytest.approx(expected)
    assert NEXUS4.wake_j == pytest.approx(3.8 * (0.01043 + 0.0926 * 0.05))
    with pytest.raises(ValueError):
        meter.on_activity(5.0)
