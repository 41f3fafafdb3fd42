"""Fixtures for the reference-server tests: an in-process server on a :memory: store, a
virtual wall clock (EPOCH + trio time) and a seeded random source."""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio

from pushsdk.clock import VirtualClock
from server_harness import EPOCH, Harness
from simulator.server import Limits, PushServer, ServerSettings, SqliteStore

ADMIN = "admin-secret"


@pytest.fixture
def make_harness(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> Callable[..., Harness]:
    """``make_harness(**limits_or_config)``: a fresh server; unknown names go to Limits.

    Runs in virtual time (autojump clock starting at 0), so the wall clock is EPOCH + t.
    """
    stores: list[SqliteStore] = []

    def make(store: SqliteStore | None = None, **overrides: Any) -> Harness:
        config_fields = {f.name for f in attrs.fields(ServerSettings)}
        config_kw = {k: v for k, v in overrides.items() if k in config_fields}
        limits_kw = {k: v for k, v in overrides.items() if k not in config_fields}
        config = ServerSettings(admin_token=ADMIN, limits=Limits(**limits_kw), **config_kw)
        store = store if store is not None else SqliteStore(":memory:")
        stores.append(store)
        server = PushServer(store, settings=config, clock=VirtualClock(EPOCH),
                            rng=random.Random(1234))
        return Harness(server, nursery, ADMIN)

    return make


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
