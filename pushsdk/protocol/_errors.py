"""Errors raised by the sans-IO MQTT codec.

As in h11: a :class:`LocalProtocolError` means *we* tried to do something the protocol
forbids (a bug in the caller); a :class:`RemoteProtocolError` means the peer sent something
invalid. After a RemoteProtocolError the connection is unusable and should be closed.
"""
from __future__ import annotations


class ProtocolError(Exception):
    """Base class of the codec's errors. ``str(err)`` says what was wrong."""


class LocalProtocolError(ProtocolError):
    """We tried to send an event that is malformed or not allowed in the current state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid MQTT 3.1.1, or not allowed in this state."""
