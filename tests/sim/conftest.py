"""Fixtures of the world-level simulator tests (helpers live in ``simworld.py``)."""
import pytest

from simulator.simclock import SimulationClock
from simworld import Recorder


@pytest.fixture
def recorder() -> Recorder:
    """A world observer recording state changes, deliveries, Doze signals, radio activity,
    connections and NAT expiries (pass it to the world as ``observer=recorder``)."""
    return Recorder()


@pytest.fixture
def sim_clock() -> SimulationClock:
    """The simulation's virtual clock; pytest-trio runs the test under it (simulated links
    need it, see simulator/simclock.py)."""
    return SimulationClock()
