"""The SDK's exceptions: one hierarchy, mapped at the edge (as httpx maps its transports').

Every failure the SDK reports is a :class:`PushError`. Each class says whether it is
*permanent* — retrying cannot fix it (a wrong password, a refused registration, a certificate
that does not verify): the client stops and ``wait_connected()``, ``publish()``, the message
iterator and the ``async with`` block raise it — or *transient* (the server is down, the link
broke): the client retries with backoff and reports it in its state events and
``statistics()``. ``reason_code`` is a stable, machine-readable name of the failure; the
message is one line that names what failed and what to check.

::

    PushError
    ├── ConfigurationError (also ValueError)     a bad argument, file or option
    │   └── CertificateFileError (also TlsError)  a CA / client certificate file
    ├── ClientClosed                             the client is closed
    ├── ConnectTimeout                           wait_connected(timeout=...) ran out
    ├── TransportError (also OSError)            cannot open the connection
    │   └── TlsError                             the TLS handshake failed
    │       └── TLSVerificationFailed            the certificate (or pin) did not verify
    ├── ConnectionLost                           an open connection broke or went silent
    │   └── ServerDisconnected                   MQTT 5: the server sent DISCONNECT
    ├── ProtocolViolation                        the peer broke the MQTT rules
    ├── ConnectionRefused                        CONNACK != 0 (3.1.1 code / 5.0 reason)
    │   ├── UnsupportedProtocolVersion           CONNACK 1 / 0x84
    │   ├── IdentifierRejected                   CONNACK 2 / 0x85
    │   ├── ServerUnavailable                    CONNACK 3 / 0x88 0x89 0x97 0x9F (transient)
    │   ├── AuthenticationRefused                CONNACK 4 / 0x86 0x8C: user name / password
    │   │   └── TokenRejected                    server mode: register again (transient)
    │   └── NotAuthorized                        CONNACK 5 / 0x87 0x8A
    ├── RegistrationError                        HTTP registration failed (transient)
    │   └── RegistrationRefused                  ... refused for good (HTTP 4xx); .code
    ├── SubscriptionRefused                      SUBACK 0x80 (5.0: >= 0x80) for a filter
    ├── PublishRefused                           MQTT 5: PUBACK/PUBREC >= 0x80
    └── QueueFull                                too many messages waiting to be sent

Errors that come from an MQTT answer carry its number as ``mqtt_reason_code`` (the 3.1.1
CONNACK return code, or the 5.0 reason code) and, in 5.0, the server's Reason String in the
message. (``reason_code`` is the SDK's stable *name* of the failure, a ``str``.)
"""
from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationRefused",
    "CertificateFileError",
    "ClientClosed",
    "ConfigurationError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionRefused",
    "IdentifierRejected",
    "NotAuthorized",
    "ProtocolViolation",
    "PublishRefused",
    "PushError",
    "QueueFull",
    "RegistrationError",
    "RegistrationRefused",
    "ServerDisconnected",
    "ServerUnavailable",
    "SubscriptionRefused",
    "TLSVerificationFailed",
    "TokenRejected",
    "TlsError",
    "TransportError",
    "UnsupportedProtocolVersion",
    "refusal_for_connack",
]


class PushError(Exception):
    """Base of every SDK error. ``permanent``: retrying cannot help; ``reason_code``: a
    stable name for programs (also in state events and ``statistics().last_reason``)."""

    reason_code: ClassVar[str] = "error"
    permanent: ClassVar[bool] = False
    #: The MQTT code behind the failure (CONNACK return code, 5.0 reason code), if any.
    mqtt_reason_code: int | None = None


class ConfigurationError(PushError, ValueError):
    """An argument, option or file the SDK was given cannot be used."""

    reason_code = "configuration"
    permanent = True


class ClientClosed(PushError):
    """The client is closed (or was never started) and cannot do this any more."""

    reason_code = "closed"
    permanent = True


class ConnectTimeout(PushError):
    """``wait_connected(timeout=...)`` ran out; ``last_error`` is why the last attempt
    failed (None if none had failed yet)."""

    reason_code = "connect_timeout"

    def __init__(self, message: str, last_error: PushError | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error


class TransportError(PushError, OSError):
    """A connection could not be opened: refused, unreachable, timed out, reset."""

    reason_code = "transport"


class TlsError(TransportError):
    """The TLS handshake failed."""

    reason_code = "tls"


class TLSVerificationFailed(TlsError):
    """The server's certificate did not verify against the trusted CAs, or did not match
    the pinned key. Permanent: check ``--ca`` / ``ca_file`` / the pin."""

    reason_code = "tls_verification"
    permanent = True


class CertificateFileError(ConfigurationError, TlsError):
    """A CA or client certificate file is missing or unreadable: a configuration error
    (permanent), and also a TLS error for callers that catch those."""

    reason_code = "certificate_file"
    permanent = True


class ConnectionLost(PushError):
    """An accepted connection broke: closed by the peer, reset, silent past the ping
    timeout, or a write stalled."""

    reason_code = "connection_lost"


class ServerDisconnected(ConnectionLost):
    """MQTT 5: the server ended the connection with DISCONNECT (``mqtt_reason_code``, e.g.
    0x8E session taken over, 0x8B shutting down; the Reason String in the message). Like any
    lost connection it is retried; ``server_reference`` is a server the broker names."""

    reason_code = "server_disconnected"

    def __init__(self, message: str, mqtt_reason_code: int,
                 server_reference: str | None = None) -> None:
        super().__init__(message)
        self.mqtt_reason_code = mqtt_reason_code
        self.server_reference = server_reference


class ProtocolViolation(PushError):
    """The server sent something MQTT does not allow (malformed or out-of-order packet)."""

    reason_code = "protocol_violation"


class ConnectionRefused(PushError):
    """The server answered CONNECT with a refusal; ``return_code`` is the CONNACK code."""

    reason_code = "refused"
    permanent = True

    def __init__(self, message: str, return_code: int,
                 server_reference: str | None = None) -> None:
        super().__init__(message)
        self.return_code = return_code
        self.mqtt_reason_code = return_code
        self.server_reference = server_reference


class UnsupportedProtocolVersion(ConnectionRefused):
    reason_code = "unsupported_protocol_version"


class IdentifierRejected(ConnectionRefused):
    reason_code = "identifier_rejected"


class ServerUnavailable(ConnectionRefused):
    reason_code = "server_unavailable"
    permanent = False


class AuthenticationRefused(ConnectionRefused):
    reason_code = "authentication_refused"


class TokenRejected(AuthenticationRefused):
    """Server mode: the device token was refused (CONNACK 4). Transient: the client
    registers again for a fresh token."""

    reason_code = "token_rejected"
    permanent = False


class NotAuthorized(ConnectionRefused):
    reason_code = "not_authorized"


_CONNACK = {
    1: (UnsupportedProtocolVersion, "does not support MQTT 3.1.1",
        "use a broker that speaks MQTT 3.1.1, or mqtt_version=\"5\""),
    2: (IdentifierRejected, "rejected the client identifier",
        "check client_id (length, characters, uniqueness rules of the broker)"),
    3: (ServerUnavailable, "is unavailable", "the broker will be retried"),
    4: (AuthenticationRefused, "refused the user name or password",
        "check username and password"),
    5: (NotAuthorized, "says this client is not authorised",
        "check username and password, and the broker's access rules for this client"),
}


_RETRIED = "it will be retried"
_WILL = "check the will (topic, QoS, retain, properties) against the broker's limits"
#: MQTT 5.0 CONNACK reason codes (§3.2.2.2): (class, what happened, advice).
_CONNACK_5 = {
    0x80: (ConnectionRefused, "refused the connection (unspecified error)",
           "check the broker's logs"),
    0x81: (ConnectionRefused, "found the CONNECT malformed", "check the broker's logs"),
    0x82: (ConnectionRefused, "found a protocol error in the CONNECT",
           "check the broker's logs"),
    0x83: (ConnectionRefused, "refused the CONNECT (implementation specific error)",
           "check the broker's logs"),
    0x84: (UnsupportedProtocolVersion, "does not support MQTT 5.0",
           "use mqtt_version=\"3.1.1\""),
    0x85: (IdentifierRejected, "says the client identifier is not valid",
           "check client_id (length, characters, uniqueness rules of the broker)"),
    0x86: (AuthenticationRefused, "refused the user name or password",
           "check username and password"),
    0x87: (NotAuthorized, "says this client is not authorised",
           "check the broker's access rules for this client"),
    0x88: (ServerUnavailable, "is unavailable", _RETRIED),
    0x89: (ServerUnavailable, "is busy", _RETRIED),
    0x8A: (NotAuthorized, "has banned this client", "ask the broker's operator"),
    0x8C: (AuthenticationRefused, "refused the authentication method",
           "check the authentication settings"),
    0x90: (ConnectionRefused, "refused the will topic", _WILL),
    0x95: (ConnectionRefused, "found the CONNECT too large", _WILL),
    0x97: (ServerUnavailable, "says a quota is exceeded", _RETRIED),
    0x99: (ConnectionRefused, "refused the will's payload format", _WILL),
    0x9A: (ConnectionRefused, "does not support retained wills", _WILL),
    0x9B: (ConnectionRefused, "does not support the will's QoS", _WILL),
    0x9C: (ConnectionRefused, "says to use another server", "connect to the server it names"),
    0x9D: (ConnectionRefused, "has moved", "connect to the server it names"),
    0x9F: (ServerUnavailable, "says the connection rate is exceeded", _RETRIED),
}


def refusal_for_connack(code: int, where: str, *, hint: str | None = None,
                        version: int = 4, reason_string: str | None = None,
                        server_reference: str | None = None) -> ConnectionRefused:
    """The error for CONNACK ``code`` from ``where`` (``host:port``) on an MQTT ``version``
    (4 = 3.1.1, 5 = 5.0) connection; ``hint`` replaces the default advice; the server's
    ``reason_string`` and ``server_reference`` (5.0) are quoted in the message."""
    table = _CONNACK_5 if version == 5 else _CONNACK
    label = f"CONNACK {code:#04x}" if version == 5 else f"CONNACK {code}"
    cls, what, advice = table.get(code, (ConnectionRefused, "refused the connection",
                                         "check the broker's logs"))
    said = f": \"{reason_string}\"" if reason_string else ""
    moved = f" ({server_reference})" if server_reference else ""
    return cls(f"{where} {what} ({label}{said}){moved}: {hint or advice}", code,
               server_reference)


class RegistrationError(PushError):
    """Registration over HTTP failed or answered something unusable.

    ``status`` is the HTTP status (``None`` when there was no usable response), ``code`` and
    ``message`` come from the server's ``{"error": {"code", "message"}}`` body when present.
    """

    reason_code = "registration"

    def __init__(self, status: int | None, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"registration failed: {where}{code}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (server trouble, rate limit)."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class RegistrationRefused(RegistrationError):
    """The server refused the registration for good (HTTP 4xx: bad app key, a device id
    bound to another installation (``device_bound``), an alias held by another device
    (``alias_taken``), ...). ``code`` is the server's error code."""

    reason_code = "registration_refused"
    permanent = True


class SubscriptionRefused(PushError):
    """The broker refused one or more topic filters (SUBACK 0x80; in MQTT 5 any code from
    0x80: 0x87 not authorised, 0x8F filter invalid, 0x97 quota, 0x9E shared, 0xA2
    wildcards ...); ``filters`` names them, ``mqtt_reason_codes`` gives their codes."""

    reason_code = "subscription_refused"
    permanent = True

    def __init__(self, filters: tuple[str, ...], codes: tuple[int, ...] = (),
                 reason_string: str | None = None) -> None:
        named = ", ".join(repr(f) if not codes else f"{f!r} ({c:#04x})"
                          for f, c in zip(filters, codes or filters))
        said = f" (\"{reason_string}\")" if reason_string else ""
        super().__init__(f"the broker refused the subscription to {named}{said}: check "
                         "its access rules (ACL) and limits for this client")
        self.filters = filters
        self.mqtt_reason_codes = codes or tuple(0x80 for _ in filters)
        self.mqtt_reason_code = self.mqtt_reason_codes[0] if filters else None


class PublishRefused(PushError):
    """MQTT 5: the broker answered a QoS 1/2 PUBLISH with a failure (PUBACK or PUBREC from
    0x80: 0x87 not authorised, 0x90 topic name invalid, 0x97 quota exceeded, 0x99 payload
    format invalid, ...), or the message breaks a limit the broker declared (Maximum QoS,
    Retain Available, Maximum Packet Size). Raised by that ``publish()`` only."""

    reason_code = "publish_refused"

    def __init__(self, message: str, mqtt_reason_code: int) -> None:
        super().__init__(message)
        self.mqtt_reason_code = mqtt_reason_code


class QueueFull(PushError):
    """``publish()`` (or a receipt) found ``Limits.max_queued`` messages already waiting for
    the connection; try again later or raise the limit."""

    reason_code = "queue_full"


def registration_error(status: int | None, code: str, message: str) -> RegistrationError:
    """:class:`RegistrationRefused` for a status retrying cannot fix, else the transient
    :class:`RegistrationError`."""
    error = RegistrationError(status, code, message)
    if error.retryable:
        return error
    return RegistrationRefused(status, code, message)
