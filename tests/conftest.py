"""Fixtures shared by the whole suite (from :mod:`support`), and the work-tree check.

The check: when the repository is a git checkout, ``git status --porcelain`` is recorded as the
session starts; if the suite leaves a new or changed entry, the session fails and prints it
(tests write under ``tmp_path``, never into the work tree).
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.server_child import ServerChild
from support.mosquitto import Broker, run_mosquitto
from support.server import ROOT, start_server


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port, logging everything to a file in tmp_path."""
    with run_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerChild]]:
    """Start the reference server as a child process: ``server_process(db, **options)`` takes
    the arguments of :func:`support.server.start_server` and returns it once it is ready. Every
    server started is stopped (SIGTERM, then SIGKILL) by its process id when the test ends."""
    started: list[ServerChild] = []

    def start(db: Path | str, **options: Any) -> ServerChild:
        server = start_server(db, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.terminate()


# --- the work tree stays clean ----------------------------------------------------------------

_STATUS_AT_START = pytest.StashKey[set[str] | None]()


def _git_status() -> set[str] | None:
    """``git status --porcelain`` of the work tree as a set of entries; None outside git."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                               "--untracked-files=all"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # not a git checkout (an sdist, a copy without .git)
        return None
    return set(done.stdout.splitlines())


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_STATUS_AT_START] = _git_status()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_STATUS_AT_START, None)
    if before is None:
        return
    after = _git_status()
    if after is None:
        return
    left = sorted(after - before)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("the suite left new or changed files in the work tree "
                   "(write under tmp_path):\n" + "\n".join(f"  {entry}" for entry in left))
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            print(message)
