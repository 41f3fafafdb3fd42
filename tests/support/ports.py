"""The one free-port helper of the tests."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for a child that must be told its port,
    or a server restarted on the same port). A listener that can bind port 0 itself should."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
