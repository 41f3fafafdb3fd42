"""The tests' server process: :class:`simulator.server_child.ServerChild` (the one
implementation, which the benchmarks use too) started with the tests' defaults."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.server_child import LOOPBACK_LIMITS, ServerChild

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "test-admin"


def start_server(db: Path | str, **options: Any) -> ServerChild:
    """``ServerChild(db, **options)``, ready; unless given, the admin token is :data:`ADMIN`
    and the per-address limits are off (a test's clients all come from loopback;
    ``limits=()`` keeps the server's defaults)."""
    options.setdefault("admin_token", ADMIN)
    options.setdefault("limits", LOOPBACK_LIMITS)
    return ServerChild(db, **options)
