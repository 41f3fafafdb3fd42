"""The simulator's figures for fixed seeds, to the last bit.

Refactors (house keeping, speed work, a new event-loop driver) must not change what a
simulated day gives: this test runs a small fleet of three scenarios under four strategies
and compares every handset's figures with the ones recorded in ``golden/figures.json``,
exactly (floats by ``repr``). A change that is *meant* to move the figures (a model, a
strategy, the SDK's traffic) records them anew, in the same commit, with::

    PUSHSIM_RECORD_GOLDEN=1 .venv/bin/python -m pytest -q tests/sim/test_sim_golden.py

and says so in the commit message. The run is also repeated in a second process layout
(two shards) to show the figures do not depend on how a fleet is split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from simulator.metrics import HandsetResult
from simulator.scenario import Scenario
from simulator.world import RunConfig, run_world

GOLDEN = Path(__file__).parent / "golden" / "figures.json"
CELLS = [(scenario, strategy)
         for scenario in ("mixed", "commuter", "doze-overnight")
         for strategy in ("adaptive", "mars", "courier", "fcm")]
HANDSETS, HOURS, SEED = 4, 4.0, 11


def figures(result: HandsetResult) -> dict[str, object]:
    """The figures of one handset that a run must reproduce exactly (as text for floats)."""
    return {
        "device_id": result.device_id,
        "energy_j": repr(result.energy_j),
        "promotions": result.promotions,
        "radio_active_s": repr(result.radio_active_s),
        "heartbeats": result.heartbeats,
        "heartbeats_failed": result.heartbeats_failed,
        "reconnects": result.reconnects,
        "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down,
        "pushes_sent": result.pushes_sent,
        "pushes_delivered": result.pushes_delivered,
        "duplicates": result.duplicates,
        "connected_s": repr(result.connected_s),
        "dead_s": repr(result.dead_s),
        "latencies": [repr(x) for x in result.latencies],
    }


def run_cell(scenario: str, strategy: str, shard: tuple[int, int] = (0, 1)) -> list[dict]:
    config = RunConfig(Scenario.builtin(scenario), strategy, HANDSETS, HOURS, seed=SEED,
                       shard=shard)
    return [figures(r) for r in run_world(config)]


@pytest.fixture(scope="module")
def golden() -> dict[str, list[dict]]:
    if os.environ.get("PUSHSIM_RECORD_GOLDEN"):
        recorded = {f"{sc}/{st}": run_cell(sc, st) for sc, st in CELLS}
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize(("scenario", "strategy"), CELLS)
def test_a_seed_gives_the_recorded_figures(golden, scenario: str, strategy: str) -> None:
    got = run_cell(scenario, strategy)
    want = golden[f"{scenario}/{strategy}"]
    for mine, theirs in zip(got, want, strict=True):
        changed = {k: (theirs[k], mine[k]) for k in theirs if mine[k] != theirs[k]}
        assert not changed, f"{scenario}/{strategy} {mine['device_id']}: {changed}"


def test_the_figures_do_not_depend_on_the_shard_layout(golden) -> None:
    scenario, strategy = "mixed", "adaptive"
    shards = [run_cell(scenario, strategy, (i, 2)) for i in range(2)]
    merged = sorted((row for rows in shards for row in rows), key=lambda r: r["device_id"])
    want = sorted(golden[f"{scenario}/{strategy}"], key=lambda r: r["device_id"])
    assert merged == want
