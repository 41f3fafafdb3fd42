"""Open connections of a server process, by protocol and by source address.

The listeners (and in-process callers) enter every accepted connection here for its
lifetime. A new one is *refused* when its source address holds ``limit_per_address``
connections already, or opened more than its token bucket (``rate``) allows: the caller
answers it the protocol's way (HTTP 429, MQTT a close) and ends it, having read nothing.
Connections without an address (in-memory streams of a simulation) are counted but never
limited.
"""
from __future__ import annotations

from collections import Counter

import trio

from pushsdk.tcp import TcpStream

from .ratelimit import KeyedBuckets

__all__ = ["ConnectionTable", "close_stream"]


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close an ended connection's ``stream``, cancelled or not: a ``TcpStream`` (the plain
    ports) at once, any other as ``trio.aclose_forcefully`` does."""
    if isinstance(stream, TcpStream):
        stream.close()
    else:
        await trio.aclose_forcefully(stream)


class ConnectionTable:
    """Gauges of open connections (``open["http"]``, ``open["mqtt"]``) and per address."""

    def __init__(self, limit_per_address: int | None = None, rate: float | None = None,
                 burst: float = 1.0) -> None:
        self.limit_per_address = limit_per_address
        self.rate = KeyedBuckets(rate, burst)
        self.open: Counter[str] = Counter()
        self.by_address: Counter[str] = Counter()
        #: Connections refused because their address held ``limit_per_address`` already.
        self.refused = 0
        #: Refused connections being told why (the MQTT gateway bounds how many at once).
        self.refusing = 0

    def enter(self, kind: str, address: str | None) -> bool:
        """Count a new ``kind`` connection from ``address``; False if it must be refused
        (it is then not counted, and :meth:`leave` must not be called for it)."""
        if address is not None:
            limit = self.limit_per_address
            if (limit is not None and self.by_address[address] >= limit) \
                    or self.rate.take(address, trio.current_time()):
                self.refused += 1
                return False
            self.by_address[address] += 1
        self.open[kind] += 1
        return True

    def over_rate(self, address: str | None) -> bool:
        """Whether a connection from ``address`` that :meth:`enter` refused was refused
        for the address's connection rate (not for the connections it holds)."""
        limit = self.limit_per_address
        return address is not None and (limit is None or self.by_address[address] < limit)

    def leave(self, kind: str, address: str | None) -> None:
        self.open[kind] -= 1
        if address is not None:
            self.by_address[address] -= 1
            if not self.by_address[address]:
                del self.by_address[address]
