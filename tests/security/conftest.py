"""Fixtures for the server-side security tests: the reference server's in-process harness
(``tests/server/server_harness.py``), in virtual time."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_harness import Harness, make_server  # noqa: E402

ADMIN = "admin-secret"


@pytest.fixture
def make_harness(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> Callable[..., Harness]:
    """``make_harness(**settings_or_limits)``: a fresh server on a :memory: store."""
    return lambda **overrides: Harness(make_server(ADMIN, seed=99, **overrides), nursery, ADMIN)


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
