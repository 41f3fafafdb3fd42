"""What MQTT 5.0 adds to the device mapping (interfaces §3, docs/server.md "MQTT 5.0").

The gateway speaks 3.1.1 and 5.0 on the same port: the codec learns the version from the
CONNECT (``Connection(Role.SERVER, protocol_version=None)``). This module holds the
version-dependent pieces, as pure functions of the CONNECT, the settings and the time:

* the terms a connection is granted — effective keepalive (a configured maximum lowers
  it, told to 5.0 clients as Server Keep Alive) and how long its session outlives it
  (3.1.1: clean session 0 for ever, 1 not at all; 5.0: the Session Expiry Interval);
* the CONNACK properties of an accepted 5.0 connection (what this server does not do:
  QoS 2, retained messages, subscription identifiers), shared immutable values;
* refusals: the 3.1.1 return code, or its 5.0 reason code (a limit may have a more
  precise one) with a Reason String;
* the properties of a push: Message Expiry Interval (whole seconds left of its TTL),
  ``msg_id`` and ``kind`` as User Properties, Payload Format Indicator 1, Content Type.
"""
from __future__ import annotations

import functools
import math

from pushsdk.protocol import ConnAck, Connect, Connection, Disconnect, Properties

from .records import Pending

__all__ = ["NEVER", "connack_properties", "disconnect", "keepalive_terms", "push_properties",
           "refusal", "session_expiry"]

#: Session Expiry Interval meaning "the session does not expire" (5.0 §3.1.2.11.2).
NEVER = 0xFFFFFFFF
_JSON = "application/json"


def session_expiry(connect: Connect) -> float:
    """Seconds the device's session outlives this connection: 0 ends it with the
    connection, ``math.inf`` keeps it for ever."""
    if connect.protocol_level != 5:
        return 0.0 if connect.clean_session else math.inf
    interval = connect.properties.session_expiry_interval or 0
    return math.inf if interval == NEVER else float(interval)


def keepalive_terms(connect: Connect, max_keepalive: int | None) -> tuple[int, int | None]:
    """``(keepalive the server enforces, Server Keep Alive to send or None)``.

    A 5.0 client asking for more than ``max_keepalive`` (or for none, 0) is told the
    maximum and held to it. A 3.1.1 client cannot be told, so it keeps what it asked."""
    asked = connect.keepalive
    if connect.protocol_level == 5 and max_keepalive is not None \
            and (asked == 0 or asked > max_keepalive):
        return max_keepalive, max_keepalive
    return asked, None


@functools.lru_cache(maxsize=64)
def connack_properties(max_packet_size: int, server_keep_alive: int | None) -> Properties:
    """The properties of an accepted 5.0 CONNACK (one shared value per combination)."""
    return Properties(maximum_qos=1, retain_available=False,
                      maximum_packet_size=max_packet_size,
                      subscription_identifier_available=False,
                      server_keep_alive=server_keep_alive)


def refusal(conn: Connection, return_code: int, reason: int | None, text: str) -> ConnAck:
    """The CONNACK refusing a CONNECT on ``conn``: ``return_code`` (3.1.1) or, in 5.0,
    ``reason`` (default: the 5.0 code of ``return_code``) with ``text`` as Reason String."""
    if conn.protocol_version != 5:
        return ConnAck(return_code)
    code = reason if reason is not None else conn.connack_code(return_code)
    return ConnAck(code, properties=Properties(reason_string=text))


def disconnect(reason: int, text: str) -> Disconnect:
    """A server's 5.0 DISCONNECT with a Reason String."""
    return Disconnect(reason, properties=Properties(reason_string=text))


def push_properties(row: Pending, now: float) -> Properties:
    """The properties of a push: Message Expiry Interval = whole seconds left (none for a
    ttl=0 message, which lives only as long as this connection); the caller never sends a
    row with less than a second left (``pending_rows(..., min_left=1)``) — but a message
    already in flight when it expired is resent as it was (with 1 s)."""
    expiry = None if row.live else max(1, int(row.expires_at - now))
    return Properties(payload_format_indicator=1, message_expiry_interval=expiry,
                      content_type=_JSON,
                      user_properties=(("msg_id", row.msg_id), ("kind", row.kind)))
