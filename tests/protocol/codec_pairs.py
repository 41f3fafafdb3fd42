"""A client Connection piped into a server Connection, for the codec tests."""
from __future__ import annotations

from collections.abc import Iterable

from pushsdk.protocol import (
    NEED_DATA,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Connection,
    Properties,
    Role,
    State,
)


class ConnectionPair:
    """A client and a server :class:`Connection` whose bytes go straight to each other.

    Like h11's test ConnectionPair: ``send(side, event)`` encodes ``event`` on one side, feeds
    the bytes to the other (in ``chunks`` of the given size, if any) and returns the events
    the other side then produces. By default it also checks those are exactly ``[event]``.
    """

    def __init__(
        self,
        *,
        max_packet_size: int = 65536,
        protocol_version: int | None = 4,
        server_version: int | None | str = "same",
    ) -> None:
        self.client = Connection(Role.CLIENT, protocol_version=protocol_version,
                                 max_packet_size=max_packet_size)
        self.server = Connection(
            Role.SERVER,
            protocol_version=protocol_version if server_version == "same" else server_version,
            max_packet_size=max_packet_size,
        )

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

    def connect5(
        self,
        connect_properties: Properties = NO_PROPERTIES,
        connack_properties: Properties = NO_PROPERTIES,
    ) -> ConnectionPair:
        """MQTT 5.0 handshake declaring the given properties on each side."""
        self.send(self.client, Connect(client_id="dev1", keepalive=300, protocol_level=5,
                                       properties=connect_properties))
        self.send(self.server, ConnAck(0, properties=connack_properties))
        assert self.client.state is self.server.state is State.CONNECTED
        assert self.client.protocol_version == self.server.protocol_version == 5
        return self
