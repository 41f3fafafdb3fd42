"""Properties of every radio model, checked with hypothesis.

Note what is *not* a property: adding a packet can lower the total. A packet that keeps
the radio out of IDLE can spare a later packet its promotion (Huang's own formula: split a
gap just over T_tail and N_pro drops by one), and on 3G it can move the tail so that later
small packets fall in FACH instead of DCH. What holds is tested below: appending traffic
never lowers the energy, and on LTE and Wi-Fi an added packet saves less than one promotion.
"""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.radio import MODELS, energy_of_trace, get_model

ALL_MODELS = sorted(MODELS)
NO_FACH_MODELS = sorted(name for name, model in MODELS.items() if model.fach is None)

directions = st.sampled_from(["up", "down"])
# sizes around the 3G RLC thresholds (475 B down, 543 B up) and up to a large push
sizes = st.one_of(
    st.sampled_from([0, 2, 54, 474, 475, 476, 542, 543, 544, 1500]),
    st.integers(min_value=0, max_value=200_000),
)
# gaps from simultaneous packets to well past any tail (3G ARO: 16 s to IDLE)
gaps = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=25.0, allow_nan=False),
    st.sampled_from([0.1, 0.26, 4.0, 8.0882, 11.576, 11.8361, 14.0, 30.0]),
)


@st.composite
def traces(draw, max_packets: int = 12):
    """A list of (t, direction, bytes) in time order."""
    start = draw(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
    steps = draw(st.lists(st.tuples(gaps, directions, sizes), max_size=max_packets))
    t, packets = start, []
    for gap, direction, nbytes in steps:
        t += gap
        packets.append((t, direction, nbytes))
    return packets


def energy(name: str, packets) -> float:
    return energy_of_trace(get_model(name), packets).joules


def insert(packets, packet):
    return sorted([*packets, packet], key=lambda p: p[0])


@settings(max_examples=150)
@given(name=st.sampled_from(ALL_MODELS), packets=traces())
def test_energy_is_never_negative_and_adds_up(name, packets):
    stats = energy_of_trace(get_model(name), packets)
    for value in (stats.joules, stats.promotion_j, stats.tail_j, stats.transfer_j,
                  stats.radio_active_s, stats.promotion_s, stats.transfer_s, stats.tail_s):
        assert value >= 0.0
    assert stats.joules == pytest.approx(stats.promotion_j + stats.tail_j + stats.transfer_j)
    assert stats.radio_active_s == pytest.approx(
        stats.promotion_s + stats.transfer_s + stats.tail_s
    )
    assert stats.packets == len(packets)
    assert stats.fach_promotions <= stats.promotions <= len(packets)
    if packets:
        assert stats.radio_idle_at >= packets[-1][0]
        # the radio cannot be active longer than from the first packet to IDLE
        assert stats.radio_active_s <= stats.radio_idle_at - packets[0][0] + 1e-6


@settings(max_examples=150)
@given(name=st.sampled_from(ALL_MODELS), packets=traces(), extra=st.tuples(gaps, directions, sizes))
def test_appending_traffic_never_lowers_the_energy(name, packets, extra):
    gap, direction, nbytes = extra
    last_t = packets[-1][0] if packets else 0.0
    longer = [*packets, (last_t + gap, direction, nbytes)]
    assert energy(name, longer) >= energy(name, packets) - 1e-9


@settings(max_examples=200)
@given(
    name=st.sampled_from(NO_FACH_MODELS),
    packets=traces(),
    position=st.floats(min_value=0.0, max_value=1.0),
    direction=directions,
    nbytes=sizes,
)
def test_an_added_packet_saves_less_than_one_promotion(name, packets, position, direction, nbytes):
    """LTE / Wi-Fi: a packet anywhere costs ≥ 0, minus at most the promotion it spares."""
    if packets:
        t = packets[0][0] + position * (packets[-1][0] - packets[0][0] + 30.0)
    else:
        t = position
    promotion_j = get_model(name).promotion.energy_j
    before = energy(name, packets)
    after = energy(name, insert(packets, (t, direction, nbytes)))
    assert after > before - promotion_j - 1e-9
    if promotion_j == 0.0:  # Wi-Fi ARO: nothing to spare, so more traffic never costs less
        assert after >= before - 1e-9


@settings(max_examples=150)
@given(name=st.sampled_from(ALL_MODELS), packets=traces())
def test_bounded_by_one_burst_below_and_isolated_packets_above(name, packets):
    """E₁ (one isolated burst) ≤ E(trace) ≤ Σ over packets of each packet sent alone."""
    model = get_model(name)
    total = energy(name, packets)
    if not packets:
        assert total == 0.0
        return
    assert total >= model.isolated_energy() - 1e-9
    alone = sum(energy(name, [packet]) for packet in packets)
    assert total <= alone + 1e-9


@settings(max_examples=150)
@given(
    name=st.sampled_from(ALL_MODELS),
    before=traces(),
    gap=gaps,
    first=st.tuples(directions, sizes),
    second_bytes=sizes,
)
def test_two_packets_at_one_instant_cost_the_promotions_of_one(
    name, before, gap, first, second_bytes
):
    """Merging two same-direction packets sent at the same time adds no promotion."""
    direction, first_bytes = first
    t = (before[-1][0] if before else 0.0) + gap
    split, merged = get_model(name).new_meter(), get_model(name).new_meter()
    for meter in (split, merged):
        for packet in before:
            meter.on_packet(*packet)
    split.on_packet(t, direction, first_bytes)
    split.on_packet(t, direction, second_bytes)
    merged.on_packet(t, direction, first_bytes + second_bytes)
    assert split.statistics().promotions == merged.statistics().promotions
    if get_model(name).fach is None:  # no FACH detour: the same energy, too
        assert split.statistics().joules == pytest.approx(merged.statistics().joules, rel=1e-9)


@settings(max_examples=100)
@given(name=st.sampled_from(ALL_MODELS), packets=traces(), extra=st.lists(gaps, max_size=6))
def test_energy_until_grows_with_time_up_to_the_total(name, packets, extra):
    meter = get_model(name).new_meter()
    for packet in packets:
        meter.on_packet(*packet)
    if not packets:
        assert meter.energy_until(0.0) == 0.0
        return
    times = list(itertools.accumulate(extra, initial=packets[-1][0]))
    readings = [meter.energy_until(t) for t in times]
    assert readings == sorted(readings)
    assert readings[-1] <= meter.statistics().joules + 1e-9
    idle_at = meter.statistics().radio_idle_at
    assert meter.energy_until(idle_at) == pytest.approx(meter.statistics().joules)


@settings(max_examples=100)
@given(
    name=st.sampled_from(ALL_MODELS),
    steps=st.lists(
        st.tuples(st.floats(0.0, 25.0), directions, st.integers(1, 200_000)), max_size=12
    ),
    shift=st.floats(-1e5, 1e5),
)
def test_energy_does_not_depend_on_the_time_origin(name, steps, shift):
    # Packets of at least one byte, at generic gaps: no packet lands exactly on a state
    # boundary, where the rounding of `t + shift` could tip it to the other side.
    packets = list(zip(itertools.accumulate(gap for gap, _, _ in steps),
                       (d for _, d, _ in steps), (n for _, _, n in steps)))
    shifted = [(t + shift, direction, nbytes) for t, direction, nbytes in packets]
    a = energy_of_trace(get_model(name), packets)
    b = energy_of_trace(get_model(name), shifted)
    assert a.promotions == b.promotions
    assert b.joules == pytest.approx(a.joules, rel=1e-6, abs=1e-6)


def test_adding_a_packet_can_spare_a_promotion():
    """The documented exception to monotonicity, on the paper's own numbers."""
    model = get_model("lte")
    end_of_first = model.promotion.duration_s + model.tail_s
    packets = [(0.0, "up", 0), (end_of_first + 0.05, "up", 0)]  # second finds IDLE
    assert energy("lte", packets) == pytest.approx(2 * model.isolated_energy())
    kept_awake = insert(packets, (1.0, "up", 0))  # restarts the tail: the second is inside
    assert energy_of_trace(model, kept_awake).promotions == 1
    saved = energy("lte", packets) - energy("lte", kept_awake)
    # the promotion spared, minus the 0.05 s of tail the extra packet adds
    assert saved == pytest.approx(model.promotion.energy_j - 1.0755 * 0.05)


def test_on_3g_a_packet_can_move_later_ones_from_dch_to_fach():
    model = get_model("3g-aro")  # promotion 2 s, DCH tail 4 s, FACH tail 10 s
    # promoted at 10 s, DCH from 12 s: the ping at 15.5 s falls in DCH and restarts it
    packets = [(10.0, "up", 2), (15.5, "up", 2), (21.0, "up", 2)]
    before = energy_of_trace(model, packets)
    assert before.joules == pytest.approx(1.3 + 1.3 * (3.5 + 4.0) + 0.3 * (1.5 + 10.0), abs=1e-3)
    # an earlier packet brings DCH forward (10 s to 14 s): 15.5 s now falls in FACH and,
    # being small, keeps the radio there
    after = energy_of_trace(model, insert(packets, (8.0, "up", 2)))
    assert after.joules == pytest.approx(1.3 + 1.3 * 4.0 + 0.3 * (1.5 + 5.5 + 10.0), abs=1e-3)
    assert after.promotions == before.promotions == 1
