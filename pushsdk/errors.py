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
    ├── ProtocolViolation                        the peer broke the MQTT rules
    ├── ConnectionRefused                        CONNACK != 0
    │   ├── UnsupportedProtocolVersion           CONNACK 1
    │   ├── IdentifierRejected                   CONNACK 2
    │   ├── ServerUnavailable                    CONNACK 3 (transient)
    │   ├── AuthenticationRefused                CONNACK 4: user name / password
    │   │   └── TokenRejected                    server mode: register again (transient)
    │   └── NotAuthorized                        CONNACK 5
    ├── RegistrationError                        HTTP registration failed (transient)
    │   └── RegistrationRefused                  ... refused for good (HTTP 4xx); .code
    ├── SubscriptionRefused                      SUBACK 0x80 for a filter
    └── QueueFull                                too many messages waiting to be sent
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
    "PushError",
    "QueueFull",
    "RegistrationError",
    "RegistrationRefused",
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


class ProtocolViolation(PushError):
    """The server sent something MQTT does not allow (malformed or out-of-order packet)."""

    reason_code = "protocol_violation"


class ConnectionRefused(PushError):
    """The server answered CONNECT with a refusal; ``return_code`` is the CONNACK code."""

    reason_code = "refused"
    permanent = True

    def __init__(self, message: str, return_code: int) -> None:
        super().__init__(message)
        self.return_code = return_code


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
        "use a broker that speaks MQTT 3.1.1 (or mqtt_version=\"5\" once supported)"),
    2: (IdentifierRejected, "rejected the client identifier",
        "check client_id (length, characters, uniqueness rules of the broker)"),
    3: (ServerUnavailable, "is unavailable", "the broker will be retried"),
    4: (AuthenticationRefused, "refused the user name or password",
        "check username and password"),
    5: (NotAuthorized, "says this client is not authorised",
        "check username and password, and the broker's access rules for this client"),
}


def refusal_for_connack(code: int, where: str, *, hint: str | None = None) -> ConnectionRefused:
    """The error for CONNACK ``code`` from ``where`` (``host:port``); ``hint`` replaces the
    default advice."""
    cls, what, advice = _CONNACK.get(code, (ConnectionRefused, "refused the connection",
                                            "check the broker's logs"))
    return cls(f"{where} {what} (CONNACK {code}): {hint or advice}", code)


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
    """The broker refused one or more topic filters (SUBACK 0x80); ``filters`` names them."""

    reason_code = "subscription_refused"
    permanent = True

    def __init__(self, filters: tuple[str, ...]) -> None:
        super().__init__("the broker refused the subscription to "
                         + ", ".join(repr(f) for f in filters)
                         + ": check its access rules (ACL) for this client")
        self.filters = filters


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
