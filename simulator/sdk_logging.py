"""The SDK's log records inside ``pushsim``.

The SDK logs a WARNING when a connection keeps failing and an ERROR when it gives up, which
is what an app wants. Inside pushsim the same events reach the results instead (failure
reasons, counters, gates), and with thousands of handsets Python's last-resort handler would
print one line per handset. :func:`quiet_sdk_logs` stops that, in the coordinator and in
every worker process (a spawned process inherits no logging configuration).
"""
from __future__ import annotations

import logging

__all__ = ["quiet_sdk_logs"]


def quiet_sdk_logs() -> None:
    """Drop the ``pushsdk`` loggers' records unless a handler was set up for them."""
    logger = logging.getLogger("pushsdk")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
