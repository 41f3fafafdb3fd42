"""TLS for the reference server: a private CA, a server certificate, and TLS listeners.

``pushsim server --tls-dir DIR`` calls :func:`ensure_credentials` once at startup. It keeps
four PEM files in DIR (see :class:`TlsFiles`): the CA certificate users trust (``ca.pem``,
the file ``--ca`` takes) and its key, and the server certificate and key the listeners
present. Rules, so that an operator's trust is never broken behind their back:

- Nothing there: a CA (EC P-256, 10 years) and a server certificate signed by it are
  created. Each file is written atomically; key files are mode 0600.
- A CA that is unreadable, not a CA, expired, or whose key does not match — or only one of
  its two files — is an error, never replaced: clients may already trust it.
- The server certificate is re-issued, *with the same key*, when it is missing, expires
  within :data:`RENEW_BEFORE`, or does not name a host the server is asked to listen on.
  Keeping the key keeps SPKI pins (``TcpConnector(pin_sha256=...)``) valid across renewals.
  A server certificate not signed by the CA, or not matching its key, is an error.

:func:`tls_handler` wraps a connection handler so that each accepted TCP stream first
completes a TLS handshake (within a time limit) and is then served exactly like a plain one.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import attrs
import trio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes as PrivateKey,
)
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .logs import server_logger
__all__ = [
    "RENEW_BEFORE",
    "TlsCredentials",
    "TlsFiles",
    "TlsSetupError",
    "certificate_names",
    "ensure_credentials",
    "server_ssl_context",
    "tls_handler",
]

log = server_logger("simulator.server.tls")

DAY = 86400.0
CA_LIFETIME = 3650 * DAY
SERVER_LIFETIME = 397 * DAY  # the longest lifetime browsers accept for a server certificate
#: A server certificate expiring sooner than this is re-issued at startup.
RENEW_BEFORE = 30 * DAY
#: Backdating, so that a client whose clock is a little behind accepts a fresh certificate.
BACKDATE = 3600.0

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class TlsSetupError(Exception):
    """The TLS directory cannot be used; ``str()`` is a one-line explanation for the user."""


@attrs.frozen
class TlsFiles:
    """Where the four PEM files live: ``TlsFiles.in_directory(DIR)``."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_directory(cls, directory: str | os.PathLike[str]) -> TlsFiles:
        d = Path(directory)
        return cls(d, d / "ca.pem", d / "ca-key.pem", d / "server.pem", d / "server-key.pem")


@attrs.frozen
class TlsCredentials:
    """The outcome of :func:`ensure_credentials`."""

    files: TlsFiles
    #: SHA-256 of the server key's SubjectPublicKeyInfo, hex: the value to pin.
    server_spki_sha256: str
    server_not_after: float
    created_ca: bool
    #: Why the server certificate was (re-)issued this time, or None if it was reused.
    issued_server: str | None


def certificate_names(host: str) -> tuple[str, ...]:
    """The names the server certificate must carry when listening on ``host``.

    Always ``localhost``, ``127.0.0.1`` and ``::1``; plus ``host`` itself, or for a wildcard
    address (``0.0.0.0``, ``::``) this machine's host name.
    """
    names = ["localhost", "127.0.0.1", "::1"]
    extra = socket.gethostname() if host in _WILDCARD_HOSTS else host
    if extra and _general_name(extra) is not None and extra not in names:
        names.append(extra)
    return tuple(names)


def _general_name(name: str) -> x509.GeneralName | None:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    return x509.DNSName(ascii_name) if ascii_name else None


# --- files ---------------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    """The file's bytes, None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TlsSetupError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert(path: Path, data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsSetupError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path, data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # what cryptography raises for an encrypted key without a password
        raise TlsSetupError(f"{path} is encrypted; the server needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsSetupError(f"{path} is not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise TlsSetupError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_atomically(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``path`` whole or not at all. With ``replace=False`` an existing file (say,
    one another server just created) is never overwritten."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails rather than replace a file created meanwhile
            except FileExistsError:
                raise TlsSetupError(f"{path} appeared while it was being created; "
                                    "is another server using this directory?") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                os.replace(tmp, path)  # a file system without hard links
            else:
                os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _warn_if_exposed(key_file: Path) -> None:
    """Keys are the operator's to protect; a readable one is worth a warning, not a refusal."""
    if key_file.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", key_file)


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- certificates --------------------------------------------------------------------------


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _signing_hash(key: PrivateKey) -> hashes.SHA256 | None:
    """Ed25519/Ed448 sign without a separate hash; EC and RSA use SHA-256."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _issue_ca(now: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A distinct name per CA: two pushsim CAs trusted side by side never look alike.
    tag = hashlib.sha256(_spki(key.public_key())).hexdigest()[:8]
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pushsim"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"pushsim private CA {tag}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - BACKDATE)).not_valid_after(_utc(now + CA_LIFETIME))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_server(ca_cert: x509.Certificate, ca_key: PrivateKey, server_key: PrivateKey,
                  names: Sequence[str], now: float) -> x509.Certificate:
    alt_names = [n for n in map(_general_name, names) if n is not None]
    try:  # the authority key id must repeat the CA's own subject key id, if it has one
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pushsim"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - BACKDATE))
        .not_valid_after(min(_utc(now + SERVER_LIFETIME), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=isinstance(server_key, rsa.RSAPrivateKey),
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                       critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, _signing_hash(ca_key))
    )


def _names_of(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return set()


def _check_ca(files: TlsFiles, cert: x509.Certificate, key: PrivateKey, now: float) -> None:
    where = files.ca_cert
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise TlsSetupError(f"{files.ca_key} is not the key of {where}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TlsSetupError(f"{where} is not a CA certificate (no basicConstraints CA:TRUE)")
    try:
        may_sign = cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        may_sign = True
    if not may_sign:
        raise TlsSetupError(f"{where} may not sign certificates (no keyCertSign key usage)")
    if cert.not_valid_after_utc.timestamp() <= now:
        raise TlsSetupError(
            f"the CA certificate {where} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            f"move {files.directory} away to create a new CA (clients must trust it again)")
    if cert.not_valid_before_utc.timestamp() > now:
        raise TlsSetupError(f"the CA certificate {where} is not valid before "
                            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (clock wrong?)")
    if cert.not_valid_after_utc.timestamp() - now < RENEW_BEFORE:
        log.warning("the CA certificate %s expires on %s; server certificates cannot outlive "
                    "it", where, f"{cert.not_valid_after_utc:%Y-%m-%d}")


def _server_renewal_reason(files: TlsFiles, cert: x509.Certificate, ca_cert: x509.Certificate,
                           key: PrivateKey, names: Sequence[str], now: float) -> str | None:
    """Why an existing, consistent server certificate must be re-issued; None to keep it.
    Raises :class:`TlsSetupError` when it does not belong to this CA or key."""
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise TlsSetupError(f"{files.server_key} is not the key of {files.server_cert}")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # ValueError, TypeError or InvalidSignature, by key type
        raise TlsSetupError(
            f"{files.server_cert} is not signed by {files.ca_cert} (mismatched files)") from None
    if cert.not_valid_after_utc.timestamp() - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_before_utc.timestamp() > now:
        return "it is not valid yet"
    present = _names_of(cert)
    missing = [n for n in names if (g := _general_name(n)) is not None and g not in present]
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


def ensure_credentials(directory: str | os.PathLike[str], *, names: Iterable[str],
                       now: float) -> TlsCredentials:
    """Create, check or renew the CA and server certificate in ``directory`` (see the module
    docstring); ``names`` (host names and IP addresses, first one used as the subject) must
    be in the server certificate; ``now`` is the wall clock in Unix seconds.

    Raises :class:`TlsSetupError` with a one-line message when the directory cannot be used.
    """
    files = TlsFiles.in_directory(directory)
    names = tuple(names)
    try:
        files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise TlsSetupError(f"{files.directory} exists and is not a directory") from None
    except OSError as exc:
        raise TlsSetupError(f"cannot create {files.directory}: {exc.strerror or exc}") from None
    try:
        return _ensure(files, names, now)
    except OSError as exc:  # writing failed: permissions, disk full
        where = exc.filename or files.directory
        raise TlsSetupError(f"cannot write {where}: {exc.strerror or exc}") from None


def _ensure(files: TlsFiles, names: tuple[str, ...], now: float) -> TlsCredentials:
    ca_pem, ca_key_pem = _read(files.ca_cert), _read(files.ca_key)
    created_ca = ca_pem is None and ca_key_pem is None
    ca_key: PrivateKey
    if created_ca:
        ca_cert, ca_key = _issue_ca(now)
        # The key first: a crash in between leaves a key without a certificate (refused
        # below), never a certificate clients could trust with its key lost.
        _write_atomically(files.ca_key, _pem_key(ca_key), 0o600, replace=False)
        _write_atomically(files.ca_cert, _pem_cert(ca_cert), 0o644, replace=False)
        log.info("created a private CA in %s; clients trust it with %s",
                 files.directory, files.ca_cert)
    elif ca_pem is None or ca_key_pem is None:
        present, missing = ((files.ca_cert, files.ca_key) if ca_key_pem is None
                            else (files.ca_key, files.ca_cert))
        raise TlsSetupError(f"{present} exists but {missing} is missing; restore it, "
                            f"or move {files.directory} away to create a new CA")
    else:
        ca_cert, ca_key = _load_cert(files.ca_cert, ca_pem), _load_key(files.ca_key, ca_key_pem)
        _check_ca(files, ca_cert, ca_key, now)
        _warn_if_exposed(files.ca_key)

    cert_pem, key_pem = _read(files.server_cert), _read(files.server_key)
    server_key = None
    if key_pem is not None:
        server_key = _load_key(files.server_key, key_pem)
        _warn_if_exposed(files.server_key)
    reason: str | None
    if cert_pem is None:
        reason = f"{files.server_cert} is missing"
    elif server_key is None:
        reason = f"{files.server_key} is missing"
    else:
        cert = _load_cert(files.server_cert, cert_pem)
        reason = _server_renewal_reason(files, cert, ca_cert, server_key, names, now)
    if reason is not None:
        if server_key is None:
            server_key = ec.generate_private_key(ec.SECP256R1())
            _write_atomically(files.server_key, _pem_key(server_key), 0o600, replace=True)
        cert = _issue_server(ca_cert, ca_key, server_key, names, now)
        _write_atomically(files.server_cert, _pem_cert(cert), 0o644, replace=True)
        if not created_ca:
            log.info("issued a new server certificate in %s: %s", files.directory, reason)
    return TlsCredentials(
        files=files,
        server_spki_sha256=hashlib.sha256(_spki(cert.public_key())).hexdigest(),
        server_not_after=cert.not_valid_after_utc.timestamp(),
        created_ca=created_ca,
        issued_server=reason,
    )


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context presenting ``files``' server certificate; TLS 1.2 or newer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.server_cert, files.server_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load {files.server_cert}: {exc}") from None
    return context


# --- serving -------------------------------------------------------------------------------


def _peer(stream: trio.abc.Stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return "a client"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_handler(handler: Callable[[trio.abc.Stream], Awaitable[None]],
                context: ssl.SSLContext, *, handshake_timeout: float,
                ) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A connection handler that runs ``handler`` on the TLS stream over each accepted one.

    The handshake must finish within ``handshake_timeout`` seconds. A failed or abandoned
    handshake is logged at debug level and closes that connection only. The stream is
    ``https_compatible``: a client that closes TCP without a TLS close_notify looks like a
    normal end of stream, as it would on a plain connection (MQTT and HTTP frame their own
    messages, so truncation cannot go unnoticed).
    """

    async def serve(stream: trio.abc.Stream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        failure: str | None = None
        with trio.move_on_after(handshake_timeout) as timer:
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failure = str(exc.__cause__ or exc) or type(exc.__cause__ or exc).__name__
        if timer.cancelled_caught:
            failure = f"not complete after {handshake_timeout:g} s"
        if failure is not None:
            log.debug("TLS handshake with %s failed: %s", _peer(stream), failure)
            await trio.aclose_forcefully(stream)
            return
        await handler(tls)

    return serve
