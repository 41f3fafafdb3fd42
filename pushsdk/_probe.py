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
connection) is reported as ``ok=None``: the strategy falls back to searching in-band. A
refusal *for now* — the server unavailable or busy, a quota of connections or their rate
exceeded (CONNACK 3; 5.0: 0x88, 0x89, 0x97, 0x9F) — is no answer about probes at all: the
strategy is told nothing and no probe is tried for 1.5 × the probe's keepalive. The usual
cause is the device's own earlier probes that the NAT killed: the server still holds them,
and forgets them after that long (MQTT-3.1.2-24).
The client builds the probe's CONNECT (``PushClient._connect_packet(target)``).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._backend import Backend
from ._core import Tally
from .errors import PushError
from .protocol import NEED_DATA, ConnAck, Connect, Connection, PingReq, PingResp, Role
from .protocol import ProtocolError

if TYPE_CHECKING:
    from ._session import ByteStream

__all__ = ["BUSY_CODES", "PROBE_SUFFIX", "ProbeResult", "run_probe"]

log = logging.getLogger("pushsdk.client")

#: Client id suffix of a probe connection (the reference server knows it; any broker
#: sees just another client id).
PROBE_SUFFIX = "/probe"
_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError,
           PushError)
#: CONNACK codes that refuse a probe for now, not for good: 3.1.1's 3 "server unavailable";
#: 5.0's server unavailable, server busy, quota exceeded, connection rate exceeded.
BUSY_CODES = {4: frozenset({3}), 5: frozenset({0x88, 0x89, 0x97, 0x9F})}


@attrs.frozen
class ProbeResult:
    """How a probe ended: ``ok`` True/False (the silence survived / did not) or None (no
    probe could be made); ``retry_after`` > 0: refused for now, ask again after that long
    (the strategy learns nothing)."""

    ok: bool | None
    silence: float = 0.0
    retry_after: float = 0.0


class _Probe:
    __slots__ = ("conn", "stream", "tally")

    def __init__(self, stream: ByteStream, tally: Tally, version: int) -> None:
        self.stream = stream
        self.tally = tally
        self.conn = Connection(Role.CLIENT, protocol_version=version, max_packet_size=256)

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
            self.conn.receive_data(data)


async def run_probe(open_stream: Callable[[], Awaitable[ByteStream]], connect: Connect,
                    target: float, *, io: Backend, connect_timeout: float,
                    ping_timeout: float, tally: Tally, name: str) -> ProbeResult:
    """Open a probe (``open_stream()``: the same transport as the main connection), wait
    ``target`` s of silence, ping; what came of it."""
    ok: bool | None = None
    silence = 0.0
    stream = None
    try:
        async with io.scope(io.now() + connect_timeout) as scope:
            stream = await open_stream()
            probe = _Probe(stream, tally, 5 if connect.protocol_level == 5 else 4)
            await probe.send(connect)
            connack = await probe.next()
        if scope.cancelled_caught:
            log.info("%s: probe could not start: no answer in %g s", name, connect_timeout)
        elif isinstance(connack, ConnAck) and \
                connack.return_code in BUSY_CODES[5 if connect.protocol_level == 5 else 4]:
            retry_after = 1.5 * connect.keepalive
            log.info("%s: probe refused for now (%s); next probe in %g s", name, connack,
                     retry_after)
            return ProbeResult(None, 0.0, retry_after)
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
    return ProbeResult(ok, silence)
