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
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from .config import BrokerConfig
from .protocol import NEED_DATA, ConnAck, Connect, Connection, PingReq, PingResp, Role
from .protocol import ProtocolError

if TYPE_CHECKING:
    from ._session import Session

log = logging.getLogger("pushsdk.client")

#: Client id suffix of a probe connection (the reference server knows it; any broker
#: sees just another client id).
PROBE_SUFFIX = "/probe"
_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError)


def probe_connect(session: Session, target: float) -> Connect:
    client = session.client
    cfg = client._config
    keepalive = min(65535, math.ceil(target * 1.2) + 60)  # the server must outwait the probe
    if isinstance(cfg, BrokerConfig):
        return Connect(client_id=cfg.client_id + PROBE_SUFFIX, keepalive=keepalive,
                       clean_session=True, username=cfg.username,
                       password=cfg.password.encode() if cfg.password is not None else None)
    reg = client._sdk_state.registration
    return Connect(client_id=reg.registration_id + PROBE_SUFFIX, keepalive=keepalive,
                   clean_session=True, username=reg.app_key, password=reg.token.encode())


async def run_probe(session: Session, target: float) -> None:
    """Open a probe, wait ``target`` s of silence, ping, and tell the strategy."""
    client = session.client
    host, port, tls = client._endpoint()
    ok: bool | None = None
    silence = 0.0
    stream = None
    try:
        with trio.fail_after(client._connect_timeout):
            stream = await client._connector.connect(host, port, tls=tls)
            conn = Connection(Role.CLIENT, max_packet_size=256)
            await _send(client, stream, conn.send(probe_connect(session, target)))
            connack = await _next(client, stream, conn)
        if not isinstance(connack, ConnAck) or connack.return_code != 0:
            log.info("%s: probe refused (%s); searching in-band", client._name, connack)
        else:
            quiet_since = trio.current_time()
            await trio.sleep_until(quiet_since + target)
            silence = trio.current_time() - quiet_since
            await _send(client, stream, conn.send(PingReq()))
            ok = False
            with trio.move_on_after(client._ping_timeout):
                ok = isinstance(await _next(client, stream, conn), PingResp)
    except (trio.TooSlowError, *_ERRORS) as exc:
        if silence == 0.0:  # never got to test anything: no knowledge either way
            log.info("%s: probe could not start: %s", client._name, exc)
        else:
            ok = False  # the path broke while the probe was out: it did not survive
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
    session.probe_done(ok, silence)


async def _send(client, stream, data: bytes) -> None:
    await stream.send_all(data)
    client._counters.bytes_up += len(data)


async def _next(client, stream, conn: Connection):
    while True:
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
        data = await stream.receive_some(256)
        client._counters.bytes_down += len(data)
        conn.receive_data(data)
