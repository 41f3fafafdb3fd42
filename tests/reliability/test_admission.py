"""The CONNECT admission limiter (simulator/server/admission.py) and its wiring: over the
rate a device gets CONNACK 3 before any credential check; the default admits everything."""
from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from pushsdk.clock import VirtualClock
from pushsdk.protocol import Connect, Connection, Role
from simulator.server import Limits, PushServer, ServerSettings, SqliteStore
from simulator.server.admission import ConnectAdmission

#: CONNACK with return code 3 ("server unavailable"), session-present 0.
CONNACK_SERVER_UNAVAILABLE = b"\x20\x02\x00\x03"


def test_unlimited_admits_everything() -> None:
    admission = ConnectAdmission.from_limits(None, None, 0.0)
    assert all(admission.admit(0.0) for _ in range(10_000))
    assert (admission.admitted, admission.refused) == (10_000, 0)


def test_token_bucket_rate_and_burst() -> None:
    admission = ConnectAdmission.from_limits(100.0, 10.0, 0.0)
    assert [admission.admit(0.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert admission.admit(0.005) is False  # half a token
    assert admission.admit(0.011) is True   # 1.1 tokens refilled, one taken
    # After a second idle the bucket is full again (10), then `rate` (100) more per second.
    admitted = sum(admission.admit(1.011 + i / 1000) for i in range(1000))
    assert admitted == pytest.approx(110, abs=2)


def test_burst_defaults_to_one_second_and_limits_validate() -> None:
    assert ConnectAdmission.from_limits(50.0, None, 0.0).bucket.burst == 50.0
    with pytest.raises(ValueError):
        Limits(connect_rate=0)
    assert Limits().connect_rate is None


async def test_over_the_rate_a_connect_gets_connack_3(autojump_clock: object) -> None:
    server = PushServer(SqliteStore(":memory:"),
                        settings=ServerSettings(admin_token="a", limits=Limits(connect_rate=1.0,
                                                                           connect_burst=1.0)),
                        clock=VirtualClock(1_700_000_000.0), rng=random.Random(1))
    # Unknown credentials: the admitted CONNECT is refused with 4; the next one, over the
    # rate, gets 3 without the credentials even being looked at; a second later, 4 again.
    connect = Connection(Role.CLIENT).send(Connect(client_id="d", keepalive=60,
                                                   username="app", password=b"tok"))

    async def answer() -> bytes:
        client, server_side = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_mqtt_stream, server_side)
            await client.send_all(connect)
            data = b""
            while chunk := await client.receive_some(100):
                data += chunk
        return data

    assert await answer() == b"\x20\x02\x00\x04"
    assert await answer() == CONNACK_SERVER_UNAVAILABLE
    await trio.sleep(1.0)
    assert await answer() == b"\x20\x02\x00\x04"
    assert server.statistics().mqtt_connections_refused == 3
