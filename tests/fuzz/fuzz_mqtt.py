"""Fuzz harness: the MQTT codec, as the server (and a client) receive bytes.

Arbitrary bytes, cut into arbitrary chunks, fed to a ``Connection`` of either role: the
codec may only produce events, ask for more data or raise ``RemoteProtocolError``; after
an error every further call raises it again. ``--protocol`` picks the codec of an MQTT
version (:data:`PROTOCOLS`).
"""
from __future__ import annotations

from collections.abc import Callable

import atheris

from pushsdk.protocol import NEED_DATA, Connection, ConnectionClosed, RemoteProtocolError, Role

#: MQTT version -> a receiving connection of a role. ``auto`` is what the server runs: the
#: version the CONNECT says (3.1, 3.1.1 or 5.0).
PROTOCOLS: dict[str, Callable[[Role], Connection]] = {
    "3.1.1": lambda role: Connection(role, max_packet_size=65536),
    "5.0": lambda role: Connection(role, protocol_version=5, max_packet_size=65536),
    "auto": lambda role: Connection(role, protocol_version=None, max_packet_size=65536),
}
_protocol = ["3.1.1"]


def configure(args: list[str]) -> None:
    for arg in args:
        if arg.startswith("--protocol="):
            version = arg.split("=", 1)[1]
            if version not in PROTOCOLS:
                raise SystemExit(f"unknown protocol {version!r}; known: {sorted(PROTOCOLS)}")
            _protocol[0] = version


def one_input(data: bytes) -> None:
    if not data:
        return
    # The first byte picks the role; the next ones how the rest is cut into chunks.
    role = Role.SERVER if data[0] & 1 else Role.CLIENT
    conn = PROTOCOLS[_protocol[0]](role)
    fdp = atheris.FuzzedDataProvider(data[1:])
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300))
        if not chunk:
            break
        conn.receive_data(chunk)
        if not _drain(conn):
            return  # a protocol error or a close: the connection is over
    conn.receive_data(b"")  # EOF: a clean close or an error, nothing else
    _drain(conn)


def _drain(conn: Connection) -> bool:
    """Events until more data is needed; False once the connection is over."""
    try:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                return False
    except RemoteProtocolError as exc:
        if exc.answer is not None:  # what the server sends before closing is sendable
            conn.send(exc.answer)
        try:  # and it stays failed
            conn.next_event()
        except RemoteProtocolError:
            return False
        raise AssertionError("the codec recovered from a protocol error") from None
