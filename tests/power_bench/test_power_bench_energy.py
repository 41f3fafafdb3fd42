"""Validation: the simulator's energy of a fixed heartbeat follows the published daily figures.

With one beat every ``interval`` seconds and nothing else on the radio, every beat finds the
radio IDLE again when its tail is shorter than the interval, so a day costs
(86,400 / interval) × E₁ (docs/energy.md, "Daily heartbeat cost"; radio-energy.md §5). The
worlds here run through the bench itself (``run_matrix``): LTE/3G behind a NAT far above the
interval, screen off, no other apps, no pushes. What the simulator adds to the closed form —
the first connection's handshake, an 80 ms round trip in each beat's tail — stays below 2 %.
"""
import pytest

from power_bench.bench import Matrix, run_matrix
from simulator.radio import daily_heartbeat_energy, get_model
from simworld import one_network

HOURS = 24
TOLERANCE = 0.02


def _energy_per_day(radio: str, intervals: list[int]) -> dict[str, float]:
    scenario = one_network(nat=7440, radio=radio, name=f"quiet-{radio}")
    matrix = Matrix.build([f"fixed:{i}" for i in intervals], [scenario], seeds=1, handsets=2,
                          hours=HOURS)
    rows = run_matrix(matrix, workers=1, progress=False)
    assert all(r["heartbeats_per_day"] > 0 and r["reconnects_per_day"] == 0 for r in rows)
    return {r["strategy"]: r["energy_j_per_day"] for r in rows}


@pytest.mark.parametrize("radio", ["lte", "lte-aro", "3g"])
def test_fixed_intervals_cost_one_e1_per_beat_per_day(radio):
    model = get_model(radio)
    e1 = model.isolated_energy()
    intervals = [300, 600, 1200]
    measured = _energy_per_day(radio, intervals)
    for interval in intervals:
        # Precondition: tails do not overlap, so the closed form is the published figure.
        assert daily_heartbeat_energy(model, interval) == pytest.approx(86400 / interval * e1,
                                                                        rel=1e-4)
        assert measured[f"fixed:{interval}"] == pytest.approx(86400 / interval * e1,
                                                              rel=TOLERANCE)


def test_lte_matches_the_published_table():
    # radio-energy.md §5 (reproduced in docs/energy.md): lte-huang2012 J/day at 270 s and
    # 1,680 s, as published.
    published = {270: 4083, 1680: 656}
    measured = _energy_per_day("lte", list(published))
    for interval, joules in published.items():
        assert measured[f"fixed:{interval}"] == pytest.approx(joules, rel=TOLERANCE)


def test_energy_scales_inversely_with_the_interval():
    measured = _energy_per_day("lte", [300, 600, 1200])
    assert measured["fixed:300"] / measured["fixed:600"] == pytest.approx(2, rel=0.01)
    assert measured["fixed:600"] / measured["fixed:1200"] == pytest.approx(2, rel=0.01)
