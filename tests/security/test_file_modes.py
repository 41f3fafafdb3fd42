"""Files the server creates are its owner's alone (0600), whatever the umask: the database
and its WAL and shared-memory files (they hold token hashes, pushes and device keys), TLS
private keys, the metrics snapshots of ``--workers`` and the server log :class:`ServerChild`
keeps for the benchmarks and tests."""
from __future__ import annotations

import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.server_child import LOOPBACK_LIMITS, ServerChild
from simulator.server import SqliteStore
from simulator.server.tls import TlsFiles, ensure_credentials

pytestmark = pytest.mark.timeout(60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Everything this process creates would be world-writable if not set explicitly."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_database_wal_and_shm_are_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "push.db"
    store = SqliteStore(str(path))
    store.create_app("app", "demo", b"s" * 32, 0.0)  # a write: the WAL and SHM exist now
    files = [tmp_path / name for name in ("push.db", "push.db-wal", "push.db-shm")]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    store.close()


def test_tls_keys_are_0600(tmp_path: Path, open_umask: None) -> None:
    ensure_credentials(tmp_path / "tls", names=("localhost",), now=1_700_000_000.0)
    files = TlsFiles.in_directory(tmp_path / "tls")
    assert (mode(files.ca_key), mode(files.server_key)) == (0o600, 0o600)
    assert mode(files.directory) == 0o700


def test_a_server_process_and_its_workers_create_only_private_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pushsim server --workers 2`` under umask 000, through an app creation and a
    scrape (the workers then keep their metrics snapshots), and ServerChild's log."""
    db = tmp_path / "cluster.db"
    log = tmp_path / "server.log"
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the supervisor's control directory
    previous = os.umask(0)
    try:
        server = ServerChild(db, extra=("--workers", "2"), limits=LOOPBACK_LIMITS, log=log)
    finally:
        os.umask(previous)
    try:
        assert server.create_app("modes")["app_key"]
        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as answer:
            assert answer.status == 200
        snapshots = {f.name: mode(f) for f in tmp_path.glob("pushsim-cluster-*/*.json")}
    finally:
        server.terminate()
    created = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), log]
    assert {str(f): mode(f) for f in created if f.exists()} == \
        {str(f): 0o600 for f in created if f.exists()}
    assert db.exists() and log.exists()
    assert snapshots == {"worker-0.metrics.json": 0o600, "worker-1.metrics.json": 0o600}
