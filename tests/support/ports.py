"""The tests' free-port helper: :func:`simulator.server_child.free_port`, shared with the
benchmarks (a loopback TCP port free a moment ago)."""
from __future__ import annotations

from simulator.server_child import free_port

__all__ = ["free_port"]
