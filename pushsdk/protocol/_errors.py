"""Errors raised by the sans-IO MQTT codec.

As in h11: a :class:`LocalProtocolError` means *we* tried to do something the protocol
forbids (a bug in the caller); a :class:`RemoteProtocolError` means the peer sent something
invalid. After a RemoteProtocolError the connection is unusable and should be closed — but
first, as h11's ``error_status_hint``, the error says what to answer:

- ``reason_code``: the MQTT 5.0 reason code that classifies the problem (0x81 Malformed
  Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol Version, 0x93 Receive Maximum
  exceeded, 0x94 Topic Alias invalid, 0x95 Packet too large, ...), whatever the version;
- ``connack_return_code``: for a CONNECT the server should refuse with a CONNACK, the
  MQTT 3.1.1 return code (1 unacceptable protocol version, 2 identifier rejected);
- ``answer``: the event to send before closing, already in the form this connection's
  version needs (a refusing :class:`ConnAck` before the CONNACK, a :class:`Disconnect` in
  MQTT 5.0 after it), or None when nothing should be sent. The Connection accepts exactly
  that one answer in state ERROR: ``stream.send_all(conn.send(err.answer))``.

Events that cannot exist (QoS 3, packet id 0, a wildcard in a PUBLISH topic, a str where
bytes are needed, ...) are refused when they are constructed, with
:class:`InvalidEventError`: a LocalProtocolError that is also a ValueError (and, when the
problem is a field's type, :class:`InvalidEventTypeError`, also a TypeError).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._reason import ConnackCode, ReasonCode

if TYPE_CHECKING:
    from ._events import Event


class ProtocolError(Exception):
    """Base class of the codec's errors. ``str(err)`` says what was wrong.

    ``reason_code`` is the MQTT 5.0 reason code for the problem, or None.
    """

    def __init__(self, message: str, *, reason_code: ReasonCode | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class LocalProtocolError(ProtocolError):
    """We tried to send an event that is malformed or not allowed in the current state."""


class InvalidEventError(LocalProtocolError, ValueError):
    """An event was constructed with a field value MQTT does not allow."""


class InvalidEventTypeError(InvalidEventError, TypeError):
    """An event was constructed with a field of the wrong type (e.g. str for bytes)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid MQTT, or not allowed in this state.

    See the module docstring for ``reason_code``, ``connack_return_code`` and ``answer``.
    """

    def __init__(
        self,
        message: str,
        *,
        reason_code: ReasonCode | None = ReasonCode.MALFORMED_PACKET,
        connack_return_code: ConnackCode | None = None,
        answer: Event | None = None,
    ) -> None:
        super().__init__(message, reason_code=reason_code)
        self.connack_return_code = connack_return_code
        self.answer = answer


def malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, reason_code=ReasonCode.MALFORMED_PACKET)


def protocol_error(
    message: str, reason_code: ReasonCode = ReasonCode.PROTOCOL_ERROR
) -> RemoteProtocolError:
    return RemoteProtocolError(message, reason_code=reason_code)
