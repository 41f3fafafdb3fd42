"""Fixtures of the world-level simulator tests (helpers live in ``simworld.py``)."""
import pytest

from simulator.simclock import SimulationClock
from simworld import Recorder, install_recorder


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """Records state changes, deliveries and Doze signals of every handset in a run."""
    return install_recorder(monkeypatch)


@pytest.fixture
def sim_clock() -> SimulationClock:
    """The simulation's virtual clock; pytest-trio runs the test under it (simulated links
    need it, see simulator/simclock.py)."""
    return SimulationClock()
