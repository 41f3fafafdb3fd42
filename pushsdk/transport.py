"""Transports: how the SDK opens byte streams.

A *connector* is any object with ``async def connect(host, port, *, tls) -> stream`` where the
stream has ``send_all``, ``receive_some`` and ``aclose`` (a ``trio.abc.Stream``, or under
asyncio the SDK's :class:`AsyncioStream`). The SDK never opens sockets itself; it asks the
connector it was given. :class:`TcpConnector` opens real TCP (optionally TLS) connections on
whichever event loop calls it; the simulator supplies a connector that hands out in-memory
streams served by the in-process server.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from typing import Any, Protocol

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import _backend
from ._session import ByteStream
from .tcp import TcpStream, TrafficObserver, open_tcp
from ._websocket import WebSocketStream, open_websocket
from .errors import (
    CertificateFileError,
    ConfigurationError,
    TlsError,
    TLSVerificationFailed,
    TransportError,
)

__all__ = ["MAX_HANDSHAKES", "AsyncioStream", "ByteStream", "Connector", "TcpConnector",
           "TcpStream", "TlsError",
           "TLSVerificationFailed", "TrafficObserver", "TransportError", "WebSocketStream",
           "open_websocket", "spki_sha256"]


class Connector(Protocol):
    """Opens a byte stream to ``host:port``, wrapped in TLS when ``tls`` is true.

    Implementations raise :class:`TransportError` (or :class:`TlsError`) when the stream cannot
    be opened.
    """

    async def connect(self, host: str, port: int, *, tls: bool) -> ByteStream: ...


class AsyncioStream:
    """An asyncio connection as the SDK's byte stream. Errors are trio's stream errors
    (``BrokenResourceError``, ``ClosedResourceError``), as from every stream the SDK uses."""

    __slots__ = ("_closed", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._closed = False

    async def send_all(self, data: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        try:
            return await self.reader.read(max_bytes or 65536)
        except (ConnectionError, OSError) as exc:
            raise trio.BrokenResourceError(f"receive failed: {exc}") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()
        await asyncio.sleep(0)


def spki_sha256(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (the value HPKP-style pins use)."""
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def _parse_pin(pin: str | bytes) -> bytes:
    """A pin is 32 raw bytes, 64 hex digits, or base64 (optionally prefixed ``sha256/``)."""
    if isinstance(pin, bytes):
        if len(pin) != 32:
            raise ValueError("a raw SPKI pin must be 32 bytes")
        return pin
    text = pin.strip().removeprefix("sha256/")
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"not a SHA-256 pin (hex or base64 of 32 bytes): {pin!r}")
    return raw


def _reason(exc: OSError) -> str:
    """The most specific reason: trio reports "all attempts failed" with the causes below."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = sorted({os.strerror(e.errno) if e.errno and e.errno > 0 else str(e)
                          for e in cause.exceptions if isinstance(e, OSError)})
        if reasons:
            return "; ".join(reasons)
    if exc.errno and exc.errno > 0:  # trio's own text adds the address we already name
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


#: Connection handshakes at once in one trio run, across the TcpConnectors that share the
#: run's limit (their default). Measured with 5,000 clients started together against
#: Mosquitto (docs/benchmarks.md): unlimited, every client's handshake state is alive at
#: the same moment and the process keeps the peak (9.7 KB per idle client against 6.9).
MAX_HANDSHAKES = 256


class _Shared:
    """The default ``handshake_limiter``: the run's shared limit."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SHARED"


SHARED = _Shared()
_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "pushsdk_handshakes")


def _shared_limiter() -> trio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(MAX_HANDSHAKES)
        _LIMITER.set(limiter)
        return limiter


class TcpConnector:
    """Real TCP connections, with TLS on request.

    - ``ssl_context``: used as is for TLS when given.
    - ``ca_file``: otherwise, trust this PEM CA bundle (e.g. the reference server's ``ca.pem``)
      instead of the system store. Loaded here, so a bad file fails at construction with
      :class:`TlsError`.
    - ``pin_sha256``: optional SPKI SHA-256 pin(s) (hex, base64 or raw bytes); after a
      successful, verified handshake the server's key must match one of them.
    - ``cert_file`` / ``key_file``: a client certificate (PEM) for brokers that ask for one;
      loaded here, so a missing or bad file fails at construction with a
      :class:`~pushsdk.errors.ConfigurationError` naming it.
    - ``connect_timeout``: seconds for TCP connect plus TLS handshake.
    - ``source_ip``: local address to bind (fleet runs use several to avoid port exhaustion).
    - ``handshake_limiter``: bounds how many clients using this connector are in a
      connection handshake at once (TCP connect through CONNACK): by default the trio run's
      shared limit of :data:`MAX_HANDSHAKES`, across every ``TcpConnector`` of the run; a
      ``trio.CapacityLimiter`` of one's own; or None for no limit. One client never
      notices it. A process starting thousands at once (a fleet) keeps its connect storm
      from holding every client's handshake state (and the broker's listen backlog) at
      the same moment. Under asyncio there is no limit.

    Certificate problems raise :class:`~pushsdk.errors.TLSVerificationFailed` (permanent:
    retrying cannot fix them); other handshake failures raise :class:`TlsError`.

    Under trio, a plain connection to a literal IP address is a :class:`TcpStream`, whose
    ``observer`` (a :class:`TrafficObserver`) may be set to be told of each write and read;
    TLS, names and asyncio give other streams.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        pin_sha256: str | bytes | Iterable[str | bytes] | None = None,
        connect_timeout: float = 10.0,
        source_ip: str | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        handshake_limiter: trio.CapacityLimiter | None | _Shared = SHARED,
    ) -> None:
        if not connect_timeout > 0:
            raise ConfigurationError("connect_timeout must be positive")
        self.connect_timeout = connect_timeout
        self.source_ip = source_ip
        self._limiter = handshake_limiter
        if pin_sha256 is None:
            self._pins: frozenset[bytes] = frozenset()
        elif isinstance(pin_sha256, (str, bytes)):
            self._pins = frozenset([_parse_pin(pin_sha256)])
        else:
            self._pins = frozenset(_parse_pin(p) for p in pin_sha256)
        self._ca_file = ca_file
        self._ssl_context = ssl_context
        if ssl_context is None and ca_file is not None:
            self._ssl_context = self._load_ca(ca_file)
        if key_file is not None and cert_file is None:
            raise ConfigurationError("key_file needs cert_file (the client certificate)")
        if cert_file is not None:
            self._load_client_cert(cert_file, key_file)

    def _load_client_cert(self, cert_file: str | os.PathLike[str],
                          key_file: str | os.PathLike[str] | None) -> None:
        for path in (cert_file, key_file):
            if path is not None and not os.path.isfile(path):
                raise CertificateFileError(f"client certificate file {os.fspath(path)} "
                                           "does not exist")
        context = self._context()
        try:
            context.load_cert_chain(os.fspath(cert_file),
                                    os.fspath(key_file) if key_file is not None else None)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CertificateFileError(
                f"cannot load client certificate {os.fspath(cert_file)}: {reason}") from None

    @staticmethod
    def _load_ca(ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=os.fspath(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CertificateFileError(
                f"cannot load CA file {os.fspath(ca_file)}: {reason}") from exc

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # System trust store, created on first TLS use (it costs a few ms).
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    @property
    def handshake_limiter(self) -> trio.CapacityLimiter | None:
        """What bounds this connector's concurrent handshakes in the current trio run
        (see the class docstring); None under asyncio or when unlimited."""
        if self._limiter is None or _backend.current() is _backend.ASYNCIO:
            return None
        if isinstance(self._limiter, _Shared):
            return _shared_limiter()
        return self._limiter

    async def connect(self, host: str, port: int, *, tls: bool) -> ByteStream:
        if _backend.current() is _backend.ASYNCIO:
            return await self._connect_asyncio(host, port, tls)
        return await self._connect_trio(host, port, tls)

    async def _connect_asyncio(self, host: str, port: int, tls: bool) -> AsyncioStream:
        where = f"{host}:{port}"
        local = (self.source_ip, 0) if self.source_ip else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._context() if tls else None,
                    server_hostname=host if tls else None, local_addr=local)
        except TimeoutError:
            raise TransportError(
                f"connecting to {where} timed out after {self.connect_timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise TLSVerificationFailed(
                f"TLS certificate of {where} did not verify: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake with {where} failed: {exc}") from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {where}: {_reason(exc)}") from None
        stream = AsyncioStream(reader, writer)
        if tls and self._pins:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if der is None or spki_sha256(der) not in self._pins:
                await stream.aclose()
                raise TLSVerificationFailed(
                    f"TLS certificate of {where} does not match the pinned key")
        return stream

    async def _connect_trio(self, host: str, port: int, tls: bool) -> trio.abc.Stream:
        where = f"{host}:{port}"
        try:
            with trio.fail_after(self.connect_timeout):
                tcp = await self._open_tcp(host, port)
                if not tls:
                    return tcp
                stream = trio.SSLStream(tcp, self._context(), server_hostname=host)
                try:
                    await stream.do_handshake()
                    self._check_pin(stream, where)
                except BaseException:
                    await trio.aclose_forcefully(tcp)
                    raise
                return stream
        except trio.TooSlowError:
            raise TransportError(
                f"connecting to {where} timed out after {self.connect_timeout:g} s"
            ) from None
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise TLSVerificationFailed(
                    f"TLS certificate of {where} did not verify: {cause.verify_message}"
                ) from exc
            raise TlsError(f"TLS handshake with {where} failed: {cause or exc}") from exc
        except TransportError:
            raise
        except OSError as exc:
            raise TransportError(f"cannot connect to {where}: {_reason(exc)}") from exc

    async def _open_tcp(self, host: str, port: int) -> trio.abc.HalfCloseableStream:
        """A TCP stream to ``host:port``. An IP address is dialled directly into a lean
        :class:`TcpStream`; a name goes through trio's ``open_tcp_stream``
        (resolution, happy eyeballs over its addresses), whose nursery and tasks per
        attempt are wasted on a literal address — which is what fleets of thousands of
        clients connect to."""
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            return await trio.open_tcp_stream(host, port, local_address=self.source_ip)
        return await open_tcp(host, port, family, self.source_ip)

    def _check_pin(self, stream: trio.SSLStream[Any], where: str) -> None:
        if not self._pins:
            return
        der = stream.getpeercert(binary_form=True)
        if der is None or spki_sha256(der) not in self._pins:
            raise TLSVerificationFailed(
                f"TLS certificate of {where} does not match the pinned key")
