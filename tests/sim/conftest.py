"""Fixtures of the world-level simulator tests (helpers live in ``simworld.py``)."""
import pytest

from simworld import Recorder, install_recorder


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """Records state changes, deliveries and Doze signals of every handset in a run."""
    return install_recorder(monkeypatch)
