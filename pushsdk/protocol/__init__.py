"""Sans-IO MQTT 3.1.1 and 5.0 codec, in the style of h11 and wsproto.

:class:`Connection` turns received bytes into events and events into bytes, and tracks the
connection state (and, in MQTT 5.0, the limits both ends declared); it never does I/O and
never imports trio, so the same code serves the SDK, the reference server and the
simulator. See docs/protocol.md ("The codec") and docs/architecture.md.
"""
from ._connection import NEED_DATA, Connection
from ._errors import (
    InvalidEventError,
    InvalidEventTypeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import (
    SUBACK_FAILURE,
    Auth,
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
    ReasonCode,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from ._properties import EMPTY as NO_PROPERTIES
from ._properties import Properties
from ._reason import CONNACK_REASON_FOR_RETURN_CODE
from ._state import Role, State
from ._topics import shared_subscription, topic_matches, validate_topic_filter, validate_topic_name
from ._wire import PINGREQ_BYTES, PINGRESP_BYTES

__all__ = [
    "Connection",
    "Role",
    "State",
    "NEED_DATA",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "InvalidEventError",
    "InvalidEventTypeError",
    "Event",
    "Connect",
    "ConnAck",
    "ConnackCode",
    "ReasonCode",
    "CONNACK_REASON_FOR_RETURN_CODE",
    "Publish",
    "PubAck",
    "PubRec",
    "PubRel",
    "PubComp",
    "Subscribe",
    "SubscriptionOptions",
    "SubAck",
    "SUBACK_FAILURE",
    "Unsubscribe",
    "UnsubAck",
    "PingReq",
    "PingResp",
    "Disconnect",
    "Auth",
    "ConnectionClosed",
    "Will",
    "Properties",
    "NO_PROPERTIES",
    "PINGREQ_BYTES",
    "PINGRESP_BYTES",
    "validate_topic_name",
    "validate_topic_filter",
    "topic_matches",
    "shared_subscription",
]
