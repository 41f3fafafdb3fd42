"""Settings of the reference push server: what the operator may tune.

Everything here is a frozen value; the server reads it, never changes it. Defaults are
the ones ``pushsim server`` runs with (interfaces §1–§3).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["DAY", "Limits", "RunSettings", "ServerSettings"]

DAY = 86400.0


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, not {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


def _optional_positive() -> Callable[[Any, attrs.Attribute[Any], Any], Any]:
    """``attrs.validators.optional(_positive)``, typed for any ``X | None`` field.

    attrs' stub takes a field's type from its default (``int`` for ``default=2``), and
    ``optional()``'s validator of ``X | None`` does not fit that (``Attribute`` is invariant).
    """
    return attrs.validators.optional(_positive)


@attrs.frozen
class Limits:
    """Size, time and rate limits. Times are seconds of monotonic (trio) time."""

    #: Largest HTTP request body; a bigger one gets 413 without being read.
    max_body_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    #: Largest push payload: the compact JSON of ``notification`` and ``message`` (413 above).
    max_push_payload: int = attrs.field(default=4096, validator=_positive)
    #: Largest HTTP request head (request line + headers); 431 above.
    max_header_bytes: int = attrs.field(default=16 * 1024, validator=_positive)
    #: A request (head and body) must arrive within this time of its first byte (408).
    request_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: An idle keep-alive connection is closed after this long without a new request.
    idle_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: A silent HTTP connection (no first request within ``request_timeout``, or none
    #: after the last within ``idle_timeout``) is closed up to this fraction of that time
    #: later, at random: connections opened together end spread out, not in one burst.
    timeout_spread: float = attrs.field(default=0.25, validator=_non_negative)
    #: Requests answered on one keep-alive connection; the last answer says
    #: ``Connection: close`` (a client cannot keep one connection busy forever).
    max_requests_per_connection: int = attrs.field(default=1000, validator=_positive)
    #: Per-app token bucket for POST /v1/push: sustained pushes per second and burst size.
    push_rate: float = attrs.field(default=1000.0, validator=_positive)
    push_burst: float = attrs.field(default=2000.0, validator=_positive)
    #: Most entries in an audience list (registration ids, aliases or tags).
    max_audience: int = attrs.field(default=1000, validator=_positive)
    #: Largest MQTT packet accepted from a device (interfaces §3: 64 KiB).
    max_packet_size: int = attrs.field(default=64 * 1024, validator=_positive)
    #: The longest keepalive granted to an MQTT 5.0 client: one asking for more (or for
    #: none) is told this one in the CONNACK's Server Keep Alive and held to it. MQTT
    #: 3.1.1 cannot tell a client, so 3.1.1 connections keep theirs. None = no maximum.
    max_keepalive: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(
            attrs.validators.and_(_positive, attrs.validators.le(65535))))
    #: A new MQTT connection must send CONNECT within this time.
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Writing to a device that does not read for this long closes its connection.
    send_timeout: float = attrs.field(default=60.0, validator=_positive)
    #: QoS 1 messages sent to one device and not yet acknowledged, at most.
    inflight_window: int = attrs.field(default=10, validator=_positive)
    #: Undelivered messages kept per device; older ones are dropped with a ``deleted`` notice.
    queue_cap: int = attrs.field(default=100, validator=_positive)
    #: Admission of MQTT CONNECTs (a token bucket, see ``admission.py``): at most this many
    #: per second, bursts of ``connect_burst`` (default: one second's worth). Over it a
    #: device gets CONNACK 3 "server unavailable" and backs off. None = no limit.
    connect_rate: float | None = attrs.field(
        default=None, validator=_optional_positive())
    connect_burst: float | None = attrs.field(
        default=None, validator=_optional_positive())
    #: Probe connections (client id ``<registration_id>/probe``) one device may hold at
    #: once; one more gets CONNACK 3. None = no limit.
    max_probes_per_device: int | None = attrs.field(
        default=2, validator=_optional_positive())
    #: Concurrent connections (HTTP and MQTT together, per server process) from one source
    #: address; over it HTTP gets 429 and MQTT a close. None = no limit. Generous: many
    #: devices share an address behind carrier-grade NAT.
    max_connections_per_address: int | None = attrs.field(
        default=10_000, validator=_optional_positive())
    #: ``POST /v1/devices`` per source address: a token bucket (per second, burst); 429
    #: with Retry-After over it. None = no limit.
    registration_rate_per_address: float | None = attrs.field(
        default=20.0, validator=_optional_positive())
    registration_burst_per_address: float = attrs.field(default=200.0, validator=_positive)
    #: New connections (HTTP and MQTT) per second from one source address, a token
    #: bucket checked before anything is read: over it HTTP gets 429, MQTT a close.
    connection_rate_per_address: float | None = attrs.field(
        default=200.0, validator=_optional_positive())
    connection_burst_per_address: float = attrs.field(default=2000.0, validator=_positive)
    #: HTTP requests per second from one source address (all its connections), a token
    #: bucket checked before routing; over it a request waits (next), then gets 429 with
    #: Retry-After. None = no limit.
    request_rate_per_address: float | None = attrs.field(
        default=200.0, validator=_optional_positive())
    request_burst_per_address: float = attrs.field(default=2000.0, validator=_positive)
    #: A request over that rate waits up to this long for its turn (requests over the
    #: rate are paced, one per ``1 / rate``, as nginx's ``limit_req`` delays them) before
    #: it is refused; 0: refused at once.
    request_delay_per_address: float = attrs.field(default=1.0, validator=_non_negative)
    #: ``POST /v1/devices`` per app key (all addresses together); None = no limit.
    registration_rate_per_app: float | None = attrs.field(
        default=None, validator=_optional_positive())
    registration_burst_per_app: float = attrs.field(default=10_000.0, validator=_positive)
    #: Receipts (PUBLISH to rcpt/) per device: a token bucket kept across its connections;
    #: over it the receipt is dropped and the connection closed. None = no limit.
    receipt_rate: float | None = attrs.field(
        default=10.0, validator=_optional_positive())
    receipt_burst: float = attrs.field(default=100.0, validator=_positive)


@attrs.frozen
class ServerSettings:
    """What a :class:`~simulator.server.server.PushServer` needs besides its store and clocks.

    ``mqtt_host``/``mqtt_port``/``mqtt_tls`` are what registration answers tell devices;
    ``mqtt_host=None`` means "the host the device used to reach the HTTP API" (its ``Host``
    header), which is right behind NAT and for loopback tests alike.
    """

    admin_token: str
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_tls: bool = False
    #: ``ws[s]://HOST:PORT/mqtt`` when MQTT over WebSocket is served (the answer's
    #: ``mqtt.ws``, with HOST as for ``mqtt_host``); None: not served.
    mqtt_ws_url: str | None = None
    #: Lifetime of a device token (wall-clock seconds); 30 days.
    token_ttl: float = attrs.field(default=30 * DAY, validator=_positive)
    #: A re-registration revokes the device's older tokens this many seconds later (a
    #: connection still using one is closed then); docs/security.md.
    token_grace: float = attrs.field(default=300.0, validator=_non_negative)
    #: A challenge for a re-registration is valid this long, and at most this many per
    #: device are (older ones are forgotten).
    challenge_ttl: float = attrs.field(default=60.0, validator=_positive)
    max_challenges_per_device: int = attrs.field(default=4, validator=_positive)
    #: A device may bind an alias (POST or PUT) only while fewer devices of its app hold
    #: it; the app server binds any alias with its master secret.
    alias_device_limit: int = attrs.field(default=1, validator=_positive)
    #: TTL of a push without ``options.ttl`` (interfaces §2), and the largest one accepted.
    default_ttl: int = 86400
    max_ttl: int = 28 * 86400
    limits: Limits = Limits()


@attrs.frozen
class RunSettings:
    """What ``pushsim server`` runs (:func:`.command.serve`): the server's settings, where
    it listens, its database, TLS directory, worker processes and log level.

    ``mqtts_port=None`` means 8883 when TLS is on. Serialisable (:meth:`to_json`), which is
    how a supervisor hands them to its worker processes.
    """

    server: ServerSettings
    db: str = "./pushsim.db"
    host: str = "127.0.0.1"
    http_port: int = 8480
    mqtt_port: int = 1883
    tls_dir: str | None = None
    mqtts_port: int | None = None
    https_port: int | None = None
    ws_port: int | None = None
    wss_port: int | None = None
    workers: int = 1
    log_level: str = "info"

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        doc = json.loads(text)
        server = doc.pop("server")
        limits = Limits(**server.pop("limits"))
        return cls(server=ServerSettings(limits=limits, **server), **doc)
