"""The bench tests build their small worlds with the simulator tests' helpers
(``tests/sim/simworld.py``)."""
import sys
from pathlib import Path

_SIM_TESTS = str(Path(__file__).resolve().parent.parent / "sim")
if _SIM_TESTS not in sys.path:
    sys.path.append(_SIM_TESTS)
