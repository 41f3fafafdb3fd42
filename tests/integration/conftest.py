"""The fixture of the end-to-end tests: ``procs``, the processes a test started (SIGKILLed by
their process ids when it ends, whatever the outcome)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration_harness import ProcessGroup


@pytest.fixture
def procs() -> Iterator[ProcessGroup]:
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.kill_all()
