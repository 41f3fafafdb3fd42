"""Rate-limited logging for the server: a flood costs a counter, not gigabytes.

Every server module logs through :func:`server_logger`, whose filter lets each *kind* of
record (logger name and message template) through at most :data:`RATE` per second on
average, :data:`BURST` at once. The others are counted (:func:`suppressed_records`, the
``log_records_suppressed`` metric) and the next record of that kind that passes says how
many like it were dropped. Time is trio's (virtual in a simulation); outside a trio run
nothing is limited. Records below the logger's level never reach the filter.
"""
from __future__ import annotations

import logging

import trio

from .ratelimit import TokenBucket

__all__ = ["BURST", "RATE", "server_logger", "suppressed_records"]

RATE = 5.0
BURST = 20.0


class _FloodFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict[tuple[str, object], TokenBucket] = {}
        self.pending: dict[tuple[str, object], int] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            now = trio.current_time()
        except RuntimeError:  # not in a trio run: nothing to flood
            return True
        key = (record.name, record.msg)  # the template: a bounded set, the code's own
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket.full(RATE, BURST, now)
        if bucket.take(now):
            self.suppressed += 1
            self.pending[key] = self.pending.get(key, 0) + 1
            return False
        dropped = self.pending.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar records suppressed]"
        return True


_FILTER = _FloodFilter()


def server_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the flood filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def suppressed_records() -> int:
    """Records dropped by the filter in this process so far."""
    return _FILTER.suppressed
