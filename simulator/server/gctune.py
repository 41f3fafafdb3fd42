"""Garbage-collector settings for a serving process.

A push server's heap is mostly long-lived connection state (about 50 GC-tracked objects
per connection: 900,000 at 17,000 connections), while every request allocates short-lived
objects at a high rate. With CPython's default thresholds (700, 10, 10) an object that
lives a few milliseconds — a request waiting for its group commit — already reaches the
oldest generation, and the full collections that follow scan every connection's objects:
one takes 0.4 s of CPU at 17,000 connections, and at 1,000 pushes/s each worker of
``pushsim server --workers 3`` with 16,700 connections ran one every 1–2 s, which set the
p99 latency of single pushes (69–190 ms instead of under 30 ms).

With a first generation of 50,000 objects, an object must survive about a million
allocations (over a second under load) to be promoted, so request garbage dies young and
full collections become rare (one per worker in a whole benchmark run); a young
collection scans at most 50,000 objects (a few milliseconds). Cyclic garbage that does
get old is still collected, later.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["SERVER_THRESHOLDS", "gc_thresholds", "server_gc"]

SERVER_THRESHOLDS = (50_000, 20, 10)


@contextlib.contextmanager
def gc_thresholds(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """Use these cyclic-GC ``thresholds`` inside the block; the previous ones afterwards."""
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def server_gc() -> contextlib.AbstractContextManager[None]:
    """Use :data:`SERVER_THRESHOLDS` while serving; the previous ones afterwards."""
    return gc_thresholds(SERVER_THRESHOLDS)
