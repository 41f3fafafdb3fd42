"""Shared helpers for the codec tests: a client Connection piped into a server Connection."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    Role,
    State,
)


class ConnectionPair:
    """A client and a server :class:`Connection` whose bytes go straight to each other.

    Like h11's test ConnectionPair: ``send(side, event)`` encodes ``event`` on one side, feeds
    the bytes to the other (in ``chunks`` of the given size, if any) and returns the events
    the other side then produces. By default it also checks those are exactly ``[event]``.
    """

    def __init__(self, *, max_packet_size: int = 65536) -> None:
        self.client = Connection(Role.CLIENT, max_packet_size=max_packet_size)
        self.server = Connection(Role.SERVER, max_packet_size=max_packet_size)

    def peer(self, side: Connection) -> Connection:
        return self.server if side is self.client else self.client

    def send(
        self,
        side: Connection,
        event: object,
        *,
        expect: object = "same",
        chunk_size: int | None = None,
    ) -> list[object]:
        data = side.send(event)  # type: ignore[arg-type]
        received = self.deliver(self.peer(side), data, chunk_size=chunk_size)
        if expect == "same":
            assert received == [event]
        elif expect is not None:
            assert received == expect
        return received

    @staticmethod
    def deliver(
        conn: Connection, data: bytes, *, chunk_size: int | None = None
    ) -> list[object]:
        """Feed ``data`` to ``conn`` (optionally in chunks) and collect every event."""
        chunks: Iterable[bytes]
        if chunk_size is None:
            chunks = [data]
        else:
            chunks = (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))
        events = []
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
        return events

    def connect(self, *, session_present: bool = False) -> ConnectionPair:
        self.send(self.client, Connect(client_id="dev1", keepalive=300, clean_session=False))
        self.send(self.server, ConnAck(0, session_present=session_present))
        assert self.client.state is self.server.state is State.CONNECTED
        return self


@pytest.fixture
def make_pair() -> Callable[..., ConnectionPair]:
    """Factory: ``make_pair(max_packet_size=..., connected=True)``."""

    def make(*, connected: bool = False, max_packet_size: int = 65536) -> ConnectionPair:
        pair = ConnectionPair(max_packet_size=max_packet_size)
        return pair.connect() if connected else pair

    return make


@pytest.fixture
def pair() -> ConnectionPair:
    return ConnectionPair()


@pytest.fixture
def connected() -> ConnectionPair:
    return ConnectionPair().connect()
