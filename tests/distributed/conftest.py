"""Fixtures of the --cluster tests: a Dask cluster on loopback (dask_cluster.py); Mosquitto is
the suite's ``mosquitto`` fixture (tests/conftest.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from dask_cluster import Cluster, start_cluster, stop_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers, shared by a module's tests (each test leaves the cluster as it was)."""
    running = start_cluster(tmp_path_factory.mktemp("dask"), workers=2)
    try:
        yield running
    finally:
        stop_cluster(running)
