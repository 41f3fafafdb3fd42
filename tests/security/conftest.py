"""Fixtures for the server-side security tests: the reference server's in-process harness
(``tests/server/server_harness.py``), in virtual time."""
from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from pushsdk.clock import VirtualClock  # noqa: E402
from server_harness import EPOCH, Harness  # noqa: E402
from simulator.server import Limits, PushServer, ServerSettings, SqliteStore  # noqa: E402

ADMIN = "admin-secret"


@pytest.fixture
def make_harness(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> Callable[..., Harness]:
    """``make_harness(**settings_or_limits)``: a fresh server on a :memory: store."""

    def make(**overrides: Any) -> Harness:
        config_fields = {f.name for f in attrs.fields(ServerSettings)}
        config_kw = {k: v for k, v in overrides.items() if k in config_fields}
        limits_kw = {k: v for k, v in overrides.items() if k not in config_fields}
        config = ServerSettings(admin_token=ADMIN, limits=Limits(**limits_kw), **config_kw)
        server = PushServer(SqliteStore(":memory:"), settings=config, clock=VirtualClock(EPOCH),
                            rng=random.Random(99))
        return Harness(server, nursery, ADMIN)

    return make


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
