"""Shared fixtures for the codec tests (the pair itself is in codec_pairs.py)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from codec_pairs import ConnectionPair


@pytest.fixture
def make_pair() -> Callable[..., ConnectionPair]:
    """Factory: ``make_pair(max_packet_size=..., connected=True)``."""

    def make(*, connected: bool = False, max_packet_size: int = 65536) -> ConnectionPair:
        pair = ConnectionPair(max_packet_size=max_packet_size)
        return pair.connect() if connected else pair

    return make


@pytest.fixture
def pair() -> ConnectionPair:
    return ConnectionPair()


@pytest.fixture
def pair5() -> ConnectionPair:
    """An MQTT 5.0 client and a server that takes the version from the CONNECT."""
    return ConnectionPair(protocol_version=5, server_version=None)


@pytest.fixture
def connected5() -> ConnectionPair:
    return ConnectionPair(protocol_version=5, server_version=None).connect5()


@pytest.fixture
def connected() -> ConnectionPair:
    return ConnectionPair().connect()
