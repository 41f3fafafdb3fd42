"""Probe connections: measure the NAT's idle timeout without risking the main connection.

A strategy that wants to know whether the network keeps a connection through ``target``
seconds of silence asks for a probe (``HeartbeatStrategy.probe``). The session opens a second
connection at the moment it sends a heartbeat (the radio is awake anyway), logs in as a
probe (client id ``<id>/probe``, no session, nothing delivered on it), stays silent for
``target`` seconds and pings once: an answer proves the NAT keeps such silences, no answer
proves it does not. Either way the probe closes and the strategy learns
(``HeartbeatStrategy.on_probe``), while pushes keep flowing on the main connection, which
only ever runs at intervals already proved safe.

A server or broker that refuses the probe's login (or a network that refuses the
connection) is reported as ``ok=None``: the strategy falls back to searching in-band.
The client builds the probe's CONNECT (``PushClient._connect_packet(target)``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ._backend import Backend
from ._core import Tally
from .errors import PushError
from .protocol import NEED_DATA, ConnAck, Connect, Connection, PingReq, PingResp, Role
from .protocol import ProtocolError

if TYPE_CHECKING:
    from ._session import ByteStream
    from .transport import Connector

__all__ = ["PROBE_SUFFIX", "run_probe"]

log = logging.getLogger("pushsdk.client")

#: Client id suffix of a probe connection (the reference server knows it; any broker
#: sees just another client id).
PROBE_SUFFIX = "/probe"
_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError,
           PushError)


class _Probe:
    __slots__ = ("conn", "stream", "tally")

    def __init__(self, stream: ByteStream, tally: Tally) -> None:
        self.stream = stream
        self.tally = tally
        self.conn = Connection(Role.CLIENT, max_packet_size=256)

    async def send(self, event: Any) -> None:
        data = self.conn.send(event)
        await self.stream.send_all(data)
        self.tally.bytes_up += len(data)

    async def next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some(256)
            self.tally.bytes_down += len(data)
            self.conn.receive_data(data)  # type: ignore[arg-type]  # bytes-like is fine


async def run_probe(connector: Connector, endpoint: tuple[str, int, bool], connect: Connect,
                    target: float, *, io: Backend, connect_timeout: float,
                    ping_timeout: float, tally: Tally, name: str) -> tuple[bool | None, float]:
    """Open a probe, wait ``target`` s of silence, ping; ``(ok, silence)`` where ``ok`` is
    True/False (the silence survived / did not) or None (no probe could be made)."""
    host, port, tls = endpoint
    ok: bool | None = None
    silence = 0.0
    stream = None
    try:
        async with io.scope(io.now() + connect_timeout) as scope:
            stream = await connector.connect(host, port, tls=tls)
            probe = _Probe(stream, tally)
            await probe.send(connect)
            connack = await probe.next()
        if scope.cancelled_caught:
            log.info("%s: probe could not start: no answer in %g s", name, connect_timeout)
        elif not isinstance(connack, ConnAck) or connack.return_code != 0:
            log.info("%s: probe refused (%s); searching in-band", name, connack)
        else:
            quiet_since = io.now()
            await io.sleep_until(quiet_since + target)
            silence = io.now() - quiet_since
            await probe.send(PingReq())
            ok = False
            async with io.scope(io.now() + ping_timeout):
                ok = isinstance(await probe.next(), PingResp)
    except _ERRORS as exc:
        if silence == 0.0:  # never got to test anything: no knowledge either way
            log.info("%s: probe could not start: %s", name, exc)
        else:
            ok = False  # the path broke while the probe was out: it did not survive
    finally:
        if stream is not None:
            await io.close_stream(stream)
    return ok, silence
