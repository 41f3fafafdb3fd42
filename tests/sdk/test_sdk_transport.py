import base64
import ssl
from functools import partial

import pytest

from pushsdk import ConfigurationError
import trio
from cryptography.hazmat.primitives import serialization

from pushsdk.transport import TcpConnector, TlsError, TransportError, _parse_pin, spki_sha256
from sdk_harness import make_ca, make_server_cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca()
    key, cert = make_server_cert(ca_key, ca_cert)
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()))
    _, other_ca = make_ca("Other CA")
    (d / "other.pem").write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(d / "server.pem")
    pin = spki_sha256(cert.public_bytes(serialization.Encoding.DER))
    return d, server_ctx, pin


async def echo(stream):
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def tls_server(nursery, server_ctx):
    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, echo, 0, server_ctx,
                                            host="127.0.0.1"))
    return listeners[0].transport_listener.socket.getsockname()[1]


async def test_tls_with_custom_ca(nursery, pki):
    d, server_ctx, _ = pki
    port = await tls_server(nursery, server_ctx)
    stream = await TcpConnector(ca_file=d / "ca.pem").connect("127.0.0.1", port, tls=True)
    await stream.send_all(b"ping")
    assert await stream.receive_some() == b"ping"
    await stream.aclose()


async def test_tls_with_untrusted_certificate(nursery, pki):
    d, server_ctx, _ = pki
    port = await tls_server(nursery, server_ctx)
    with pytest.raises(TlsError, match=r"TLS certificate of 127\.0\.0\.1:\d+ did not verify"):
        await TcpConnector(ca_file=d / "other.pem").connect("127.0.0.1", port, tls=True)


async def test_tls_pinning(nursery, pki):
    d, server_ctx, pin = pki
    port = await tls_server(nursery, server_ctx)
    for good in (pin, pin.hex(), "sha256/" + base64.b64encode(pin).decode(), [bytes(32), pin]):
        connector = TcpConnector(ca_file=d / "ca.pem", pin_sha256=good)
        await (await connector.connect("127.0.0.1", port, tls=True)).aclose()
    with pytest.raises(TlsError, match="does not match the pinned key"):
        await TcpConnector(ca_file=d / "ca.pem", pin_sha256=bytes(32)).connect(
            "127.0.0.1", port, tls=True)


def test_bad_ca_file(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot load CA file .*missing.pem"):
        TcpConnector(ca_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigurationError, match="cannot load CA file"):
        TcpConnector(ca_file=tmp_path / "junk.pem")


def test_missing_client_certificate_names_the_file(tmp_path):
    with pytest.raises(ConfigurationError,
                       match=r"client certificate file .*client\.pem does not exist"):
        TcpConnector(cert_file=tmp_path / "client.pem")
    with pytest.raises(ConfigurationError, match="key_file needs cert_file"):
        TcpConnector(key_file=tmp_path / "client.key")


async def test_plain_tcp_and_refused(nursery):
    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await TcpConnector(source_ip="127.0.0.1").connect("127.0.0.1", port, tls=False)
    await stream.send_all(b"x")
    assert await stream.receive_some() == b"x"
    await stream.aclose()


async def test_literal_addresses_are_dialled_from_the_source_address_and_names_resolved(nursery):
    peers = []

    async def note_peer(stream):
        peers.append(stream.socket.getpeername()[0])
        await echo(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, note_peer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    for source in ("127.0.0.2", "127.0.0.3"):
        stream = await TcpConnector(source_ip=source).connect("127.0.0.1", port, tls=False)
        await stream.send_all(b"x")
        assert await stream.receive_some() == b"x"
        assert stream.socket.getsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY)
        await stream.aclose()
    stream = await TcpConnector().connect("localhost", port, tls=False)  # a name: resolved
    await stream.send_all(b"y")
    assert await stream.receive_some() == b"y"
    await stream.aclose()
    assert peers[:2] == ["127.0.0.2", "127.0.0.3"]


async def test_refused():
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match=f"cannot connect to 127.0.0.1:{port}: "
                                             "Connection refused$"):
        await TcpConnector().connect("127.0.0.1", port, tls=False)


async def test_handshake_timeout(nursery, pki):
    d, _, _ = pki

    async def mute(stream):  # accepts TCP, never speaks TLS
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    connector = TcpConnector(ca_file=d / "ca.pem", connect_timeout=0.2)
    with pytest.raises(TransportError, match="timed out after 0.2 s"):
        await connector.connect("127.0.0.1", port, tls=True)


@pytest.mark.parametrize("pin", ["abc", b"short", "zz" * 32])
def test_bad_pins(pin):
    with pytest.raises(ValueError):
        _parse_pin(pin)


def test_transport_errors_are_oserrors():
    assert issubclass(TlsError, TransportError) and issubclass(TransportError, OSError)
