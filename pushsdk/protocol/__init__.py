"""Sans-IO MQTT 3.1.1 codec, in the style of h11 and wsproto.

:class:`Connection` turns received bytes into events and events into bytes, and tracks the
connection state; it never does I/O and never imports trio, so the same code serves the SDK,
the reference server and the simulator. See docs/architecture.md ("The codec").
"""
from ._connection import NEED_DATA, Connection
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    SUBACK_FAILURE,
    ConnAck,
    ConnackCode,
    Connect,
    ConnectionClosed,
    Disconnect,
    Event,
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
    Will,
)
from ._state import Role, State

__all__ = [
    "Connection",
    "Role",
    "State",
    "NEED_DATA",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Event",
    "Connect",
    "ConnAck",
    "ConnackCode",
    "Publish",
    "PubAck",
    "PubRec",
    "PubRel",
    "PubComp",
    "Subscribe",
    "SubAck",
    "SUBACK_FAILURE",
    "Unsubscribe",
    "UnsubAck",
    "PingReq",
    "PingResp",
    "Disconnect",
    "ConnectionClosed",
    "Will",
]
