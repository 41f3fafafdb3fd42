"""The connection state machine, written as a table.

One state describes the whole connection, seen from either end:

    IDLE --CONNECT--> CONNECTING --CONNACK 0--> CONNECTED --DISCONNECT--> CLOSED
                                 --CONNACK ≠ 0--> CLOSED
    EOF at a packet boundary -> CLOSED;  a RemoteProtocolError -> ERROR

:data:`TRANSITIONS` (MQTT 3.1.1) and :data:`TRANSITIONS_V5` (MQTT 5.0) map ``(role, state,
direction, packet)`` to the next state; a key that is not there is a protocol error
(LocalProtocolError when sending, RemoteProtocolError when receiving). They are generated
from :data:`_BY_SENDER`, which says the same thing once per packet rather than once per end:
"the client sends X" is "the server receives X". MQTT 5.0 adds AUTH (while connecting and
for re-authentication) and a DISCONNECT from the server; the finer rules of AUTH (which
reason code when) are ``_session5.py``'s.
"""
from __future__ import annotations

import enum

from ._events import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)


class Role(enum.Enum):
    """Which end of the connection a :class:`Connection` plays."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Connection states; see the module docstring for the transitions."""

    IDLE = "IDLE"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


class Direction(enum.Enum):
    SEND = "send"
    RECV = "recv"


class _RefusedConnAck:
    """Table key for a CONNACK whose return code is not 0 (it closes instead of connecting)."""

    def __repr__(self) -> str:
        return "REFUSED_CONNACK"


REFUSED_CONNACK = _RefusedConnAck()

CLIENT, SERVER = Role.CLIENT, Role.SERVER
IDLE, CONNECTING, CONNECTED, CLOSED, ERROR = State
SEND, RECV = Direction

#: Packets each end may send during a session (MQTT 3.1.1 §2.2.1, "direction of flow").
_FROM_CLIENT = (Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq)
_FROM_SERVER = (Publish, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, PingResp)

#: (state, sender, packet) -> next state.
_BY_SENDER: dict[tuple[State, Role, object], State] = {
    (IDLE,       CLIENT, Connect):          CONNECTING,
    # The server's first packet must be CONNACK (MQTT-3.2.0-1) ...
    (CONNECTING, SERVER, ConnAck):          CONNECTED,
    (CONNECTING, SERVER, REFUSED_CONNACK):  CLOSED,
    # ... but the client may send more packets right behind its CONNECT (§3.1.4).
    **{(CONNECTING, CLIENT, packet): CONNECTING for packet in _FROM_CLIENT},
    (CONNECTING, CLIENT, Disconnect):       CLOSED,
    **{(CONNECTED, CLIENT, packet): CONNECTED for packet in _FROM_CLIENT},
    **{(CONNECTED, SERVER, packet): CONNECTED for packet in _FROM_SERVER},
    (CONNECTED,  CLIENT, Disconnect):       CLOSED,
}

#: What MQTT 5.0 adds: AUTH both ways while connecting (§4.12) and once connected
#: (re-authentication, §4.12.1), and DISCONNECT from the server (§3.14).
_BY_SENDER_V5: dict[tuple[State, Role, object], State] = {
    **_BY_SENDER,
    (CONNECTING, CLIENT, Auth):             CONNECTING,
    (CONNECTING, SERVER, Auth):             CONNECTING,
    (CONNECTED,  CLIENT, Auth):             CONNECTED,
    (CONNECTED,  SERVER, Auth):             CONNECTED,
    (CONNECTED,  SERVER, Disconnect):       CLOSED,
}

Table = dict[tuple[Role, State, Direction, object], State]


def _both_ends(by_sender: dict[tuple[State, Role, object], State]) -> Table:
    return {
        (role, state, SEND if role is sender else RECV, packet): next_state
        for (state, sender, packet), next_state in by_sender.items()
        for role in Role
    }


#: (role, state, direction, packet) -> next state. Missing keys are protocol errors.
TRANSITIONS: Table = _both_ends(_BY_SENDER)
TRANSITIONS_V5: Table = _both_ends(_BY_SENDER_V5)


def allowed(
    role: Role, state: State, direction: Direction, table: Table = TRANSITIONS
) -> list[object]:
    """The packets (event classes, or REFUSED_CONNACK) ``role`` may send/receive in ``state``."""
    return [
        packet
        for (r, s, d, packet) in table
        if (r, s, d) == (role, state, direction)
    ]
