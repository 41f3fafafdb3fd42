"""The tests' HTTP helper: the blocking calls of :mod:`simulator.server_child` (shared with the
benchmarks), with the tests' admin token as the default."""
from __future__ import annotations

from simulator import server_child
from simulator.server_child import basic_auth, http_request, metrics
from support.server import ADMIN

__all__ = ["basic_auth", "create_app", "http_request", "metrics"]


def create_app(port: int, name: str = "test", admin_token: str = ADMIN) -> dict[str, str]:
    """``POST /v1/apps`` with the admin token: the new app's JSON (``RuntimeError`` unless 201)."""
    return server_child.create_app(port, name, admin_token)
