"""TLS for the reference server: the private CA and server certificate on disk, MQTT and
HTTP over TLS on real loopback sockets (paho-mqtt, the SDK's TcpConnector, http.client),
verification and pinning failures, the handshake deadline, and ``pushsim server --tls-dir``.
"""
from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import json
import logging
import os
import queue
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pushsdk.protocol import ConnAck, PingReq, PingResp
from pushsdk.transport import TcpConnector, TlsError
from server_harness import HttpTestClient, MqttTestClient
from simulator.server import Limits, PushServer, RunningServer, ServerSettings, SqliteStore
from simulator.server import command as server_command
from simulator.server import run_server
from simulator.server.tls import (
    TlsCredentials,
    TlsSetupError,
    certificate_names,
    ensure_credentials,
    server_ssl_context,
    tls_handler,
)

pytestmark = pytest.mark.timeout(60)

ADMIN = "tls-admin"
ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0
DAY = 86400.0
LOOPBACK = certificate_names("127.0.0.1")
FILES = ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ext(certificate: x509.Certificate, cls: type) -> x509.Extension:
    return certificate.extensions.get_extension_for_class(cls)


# --- certificates on disk ------------------------------------------------------------------


def test_creates_a_private_ca_and_a_server_certificate(tmp_path: Path) -> None:
    made = ensure_credentials(tmp_path / "tls", names=(*LOOPBACK, "push.example", "10.1.2.3"),
                              now=NOW)
    d = tmp_path / "tls"
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)  # no temporary files left
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "server-key.pem").stat().st_mode) == 0o600
    assert made.created_ca and made.issued_server is not None

    ca = cert(d / "ca.pem")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)  # self-signed
    constraints = ext(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ext(ca, x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_before_utc.timestamp() <= NOW < ca.not_valid_after_utc.timestamp()
    ca_key = serialization.load_pem_private_key((d / "ca-key.pem").read_bytes(), None)
    assert spki(ca) == ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    server = cert(d / "server.pem")
    server.verify_directly_issued_by(ca)
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert not ext(server, x509.BasicConstraints).value.ca
    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = ext(server, x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "push.example"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1", "::1", "10.1.2.3"]
    lifetime = server.not_valid_after_utc.timestamp() - NOW
    assert 300 * DAY < lifetime <= 398 * DAY
    assert server.not_valid_before_utc.timestamp() <= NOW
    assert made.server_spki_sha256 == hashlib.sha256(spki(server)).hexdigest()

    # The files really work together as an ssl server context, TLS 1.2 at least.
    assert server_ssl_context(made.files).minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_second_start_reuses_everything(tmp_path: Path) -> None:
    ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    before = snapshot(tmp_path)
    again = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW + 100 * DAY)
    assert snapshot(tmp_path) == before
    assert not again.created_ca and again.issued_server is None


def test_server_certificate_renewed_near_expiry_with_the_same_key(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    before = snapshot(tmp_path)
    later = NOW + 380 * DAY  # within 30 days of the end of a 397-day certificate
    renewed = ensure_credentials(tmp_path, names=LOOPBACK, now=later)
    after = snapshot(tmp_path)
    assert "expires" in renewed.issued_server
    # The CA and the server key stay: trust and SPKI pins survive the renewal.
    for name in ("ca.pem", "ca-key.pem", "server-key.pem"):
        assert after[name] == before[name], name
    assert after["server.pem"] != before["server.pem"]
    assert renewed.server_spki_sha256 == first.server_spki_sha256
    new = cert(tmp_path / "server.pem")
    assert new.not_valid_before_utc.timestamp() <= later < new.not_valid_after_utc.timestamp()
    new.verify_directly_issued_by(cert(tmp_path / "ca.pem"))


def test_server_certificate_reissued_when_missing_or_for_a_new_host(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    ca_files = {n: (tmp_path / n).read_bytes() for n in ("ca.pem", "ca-key.pem")}

    (tmp_path / "server.pem").unlink()
    again = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    assert "missing" in again.issued_server
    assert again.server_spki_sha256 == first.server_spki_sha256  # the key was kept

    (tmp_path / "server-key.pem").unlink()  # a certificate without its key is useless
    rekeyed = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    assert rekeyed.server_spki_sha256 != first.server_spki_sha256
    assert stat.S_IMODE((tmp_path / "server-key.pem").stat().st_mode) == 0o600

    wider = ensure_credentials(tmp_path, names=(*LOOPBACK, "push.lan"), now=NOW)
    assert "push.lan" in wider.issued_server
    assert "push.lan" in ext(cert(tmp_path / "server.pem"),
                             x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {n: (tmp_path / n).read_bytes() for n in ca_files} == ca_files


def _corrupt_ca(d: Path, other: Path) -> None:
    (d / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")


def _missing_ca_key(d: Path, other: Path) -> None:
    (d / "ca-key.pem").unlink()


def _foreign_ca_key(d: Path, other: Path) -> None:
    shutil.copy(other / "ca-key.pem", d / "ca-key.pem")


def _encrypted_ca_key(d: Path, other: Path) -> None:
    key = serialization.load_pem_private_key((d / "ca-key.pem").read_bytes(), None)
    (d / "ca-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))


def _not_a_ca(d: Path, other: Path) -> None:
    shutil.copy(d / "server.pem", d / "ca.pem")
    shutil.copy(d / "server-key.pem", d / "ca-key.pem")


def _server_of_another_ca(d: Path, other: Path) -> None:
    shutil.copy(other / "server.pem", d / "server.pem")
    shutil.copy(other / "server-key.pem", d / "server-key.pem")


def _foreign_server_key(d: Path, other: Path) -> None:
    shutil.copy(other / "server-key.pem", d / "server-key.pem")


def _corrupt_server_cert(d: Path, other: Path) -> None:
    (d / "server.pem").write_text("hello")


@pytest.mark.parametrize(("damage", "culprit", "words"), [
    (_corrupt_ca, "ca.pem", "not a PEM certificate"),
    (_missing_ca_key, "ca-key.pem", "missing"),
    (_foreign_ca_key, "ca-key.pem", "is not the key of"),
    (_encrypted_ca_key, "ca-key.pem", "encrypted"),
    (_not_a_ca, "ca.pem", "not a CA certificate"),
    (_server_of_another_ca, "server.pem", "not signed by"),
    (_foreign_server_key, "server-key.pem", "is not the key of"),
    (_corrupt_server_cert, "server.pem", "not a PEM certificate"),
])
def test_a_damaged_or_mismatched_set_is_a_one_line_error_and_untouched(
        tmp_path: Path, damage: Any, culprit: str, words: str) -> None:
    d, other = tmp_path / "tls", tmp_path / "other"
    ensure_credentials(d, names=LOOPBACK, now=NOW)
    ensure_credentials(other, names=LOOPBACK, now=NOW)
    damage(d, other)
    before = snapshot(d)
    with pytest.raises(TlsSetupError) as caught:
        ensure_credentials(d, names=LOOPBACK, now=NOW)
    message = str(caught.value)
    assert "\n" not in message and words in message and str(d / culprit) in message
    assert snapshot(d) == before


def test_an_expired_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    before = snapshot(tmp_path)
    with pytest.raises(TlsSetupError, match="expired on .*move .* away"):
        ensure_credentials(tmp_path, names=LOOPBACK, now=NOW + 3700 * DAY)
    assert snapshot(tmp_path) == before


def test_a_tls_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(TlsSetupError, match="not a directory"):
        ensure_credentials(tmp_path / "f", names=LOOPBACK, now=NOW)


def test_certificate_names() -> None:
    assert certificate_names("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert certificate_names("push.example")[-1] == "push.example"
    assert certificate_names("192.168.1.9")[-1] == "192.168.1.9"
    wildcard = certificate_names("0.0.0.0")  # every address: this machine's name too
    assert wildcard[:3] == LOOPBACK and socket.gethostname() in wildcard


# --- serving over TLS ----------------------------------------------------------------------


@pytest.fixture
def credentials(tmp_path: Path) -> TlsCredentials:
    return ensure_credentials(tmp_path / "tls", names=LOOPBACK, now=time.time())


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    return ensure_credentials(tmp_path / "other", names=LOOPBACK, now=time.time()).files.ca_cert


@pytest.fixture
async def tls_server(nursery: trio.Nursery, credentials: TlsCredentials) -> RunningServer:
    return await nursery.start(functools.partial(
        run_server, ServerSettings(admin_token=ADMIN), http_port=0, mqtt_port=0, mqtts_port=0,
        https_port=0, tls=server_ssl_context(credentials.files)))


def https_call(server: RunningServer, ca: Path, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.https_port, timeout=10,
                                       context=context)
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def paho_flow(server: RunningServer, ca: Path) -> dict[str, Any]:
    """Over HTTPS: create an app and register; over MQTTS with paho: receive a push."""
    import paho.mqtt.client as mqtt

    _, app = https_call(server, ca, "POST", "/v1/apps", {"name": "tls"},
                        {"Authorization": f"Bearer {ADMIN}"})
    _, device = https_call(server, ca, "POST", "/v1/devices",
                           {"device_id": "paho-tls", "platform": "linux"},
                           {"X-App-Key": app["app_key"]})
    basic = "Basic " + base64.b64encode(
        f"{app['app_key']}:{app['master_secret']}".encode()).decode()
    received: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device["registration_id"],
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(ca))
    client.username_pw_set(app["app_key"], device["token"])
    client.on_message = lambda c, userdata, message: received.put(message)
    client.on_subscribe = lambda c, userdata, mid, codes, props: subscribed.set()
    client.connect(device["mqtt"]["host"], device["mqtt"]["port"], keepalive=30)
    client.loop_start()
    try:
        client.subscribe(device["inbox"], qos=1)
        assert subscribed.wait(10)
        status, pushed = https_call(server, ca, "POST", "/v1/push", {
            "audience": "all", "message": {"data": "over tls"}}, {"Authorization": basic})
        assert status == 200 and pushed["targets"] == 1
        message = received.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    return {"device": device, "topic": message.topic, "payload": json.loads(message.payload),
            "msg_id": pushed["msg_id"]}


async def test_paho_over_tls_receives_a_push_and_registration_advertises_tls(
        tls_server: RunningServer, credentials: TlsCredentials) -> None:
    result = await trio.to_thread.run_sync(paho_flow, tls_server, credentials.files.ca_cert)
    assert result["device"]["mqtt"] == {"host": "127.0.0.1", "port": tls_server.mqtts_port,
                                        "tls": True, "versions": ["3.1.1", "5"]}
    assert result["topic"] == result["device"]["inbox"]
    assert result["payload"]["msg_id"] == result["msg_id"]
    assert result["payload"]["message"] == {"data": "over tls"}
    assert tls_server.mqtts_url == f"mqtts://127.0.0.1:{tls_server.mqtts_port}"
    assert tls_server.https_url == f"https://127.0.0.1:{tls_server.https_port}"


async def _device(server: RunningServer) -> tuple[dict[str, str], dict[str, Any]]:
    """An app and a registered device, over plain HTTP."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.http_port)
    try:
        http = HttpTestClient(stream)
        app = (await http.request("POST", "/v1/apps", {"name": "a"},
                                  headers={"Authorization": f"Bearer {ADMIN}"})).json
        device = (await http.request("POST", "/v1/devices",
                                     {"device_id": "d1", "platform": "android"},
                                     headers={"X-App-Key": app["app_key"]})).json
    finally:
        await stream.aclose()
    return app, device


async def _connack(stream: trio.abc.Stream, app: dict[str, str],
                   device: dict[str, Any]) -> tuple[MqttTestClient, ConnAck]:
    client = MqttTestClient(stream)
    return client, await client.connect(device["registration_id"], app["app_key"],
                                        device["token"])


async def test_an_untrusted_client_fails_and_others_are_unaffected(
        tls_server: RunningServer, credentials: TlsCredentials, other_ca: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="simulator.server.tls")
    app, device = await _device(tls_server)
    trusting = TcpConnector(ca_file=credentials.files.ca_cert)
    good, connack = await _connack(
        await trusting.connect("127.0.0.1", tls_server.mqtts_port, tls=True), app, device)
    assert connack.return_code == 0

    # A client trusting another CA: certificate verification fails on its side.
    tcp = await trio.open_tcp_stream("127.0.0.1", tls_server.mqtts_port)
    wrong = trio.SSLStream(tcp, ssl.create_default_context(cafile=str(other_ca)),
                           server_hostname="127.0.0.1")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await wrong.do_handshake()
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    await trio.aclose_forcefully(tcp)
    # A plain MQTT client on the TLS port: not TLS at all.
    plain = MqttTestClient(await trio.open_tcp_stream("127.0.0.1", tls_server.mqtts_port))
    await plain.send_raw(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    await plain.expect_closed()
    await plain.close()

    # The established TLS connection still works, and new ones are accepted, TLS or not.
    await good.send(PingReq())
    assert isinstance(await good.receive(), PingResp)
    await good.close()
    _, again = await _connack(
        await trusting.connect("127.0.0.1", tls_server.mqtts_port, tls=True), app, device)
    assert again.return_code == 0
    _, plain_ok = await _connack(
        await trio.open_tcp_stream("127.0.0.1", tls_server.mqtt_port), app, device)
    assert plain_ok.return_code == 0
    failures = [r for r in caplog.records if r.name == "simulator.server.tls"]
    assert len(failures) == 2 and all(r.levelno == logging.DEBUG for r in failures)
    assert all("TLS handshake with 127.0.0.1:" in r.getMessage() for r in failures)


async def test_sdk_connector_verifies_and_pins(tls_server: RunningServer,
                                               credentials: TlsCredentials,
                                               other_ca: Path) -> None:
    port = tls_server.mqtts_port
    hex_pin = credentials.server_spki_sha256
    b64_pin = "sha256/" + base64.b64encode(bytes.fromhex(hex_pin)).decode()
    for pin in (hex_pin, b64_pin):
        connector = TcpConnector(ca_file=credentials.files.ca_cert, pin_sha256=pin)
        stream = await connector.connect("127.0.0.1", port, tls=True)
        await stream.aclose()

    wrong_pin = hashlib.sha256(b"some other key").hexdigest()
    pinned_wrong = TcpConnector(ca_file=credentials.files.ca_cert, pin_sha256=wrong_pin)
    with pytest.raises(TlsError, match="does not match the pinned key"):
        await pinned_wrong.connect("127.0.0.1", port, tls=True)
    with pytest.raises(TlsError, match="did not verify"):
        await TcpConnector(ca_file=other_ca).connect("127.0.0.1", port, tls=True)
    # "localhost" is in the certificate too.
    stream = await TcpConnector(ca_file=credentials.files.ca_cert).connect(
        "localhost", port, tls=True)
    await stream.aclose()


async def test_a_stalled_handshake_is_closed_at_the_connect_timeout(
        autojump_clock: trio.abc.Clock, credentials: TlsCredentials) -> None:
    """In virtual time: a client that opens a connection and never finishes its handshake is
    closed exactly ``connect_timeout`` later; a handshake that does finish is served."""
    store = SqliteStore(":memory:")
    server = PushServer(store, settings=ServerSettings(admin_token=ADMIN,
                                                   limits=Limits(connect_timeout=7)))
    context = server_ssl_context(credentials.files)
    handler = tls_handler(server.handle_mqtt_stream, context, handshake_timeout=7)
    async with trio.open_nursery() as nursery:
        silent, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(handler, server_end)
        assert await silent.receive_some() == b""
        assert trio.current_time() == 7

        # Over the same in-memory streams a real handshake and MQTT exchange work.
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(handler, server_end)
        tls = trio.SSLStream(client_end, ssl.create_default_context(
            cafile=str(credentials.files.ca_cert)), server_hostname="localhost")
        await tls.do_handshake()
        client = MqttTestClient(tls)
        connack = await client.connect("nobody", "no-app", "no-token")
        assert connack.return_code == 4  # unknown token: the gateway answered over TLS
        await client.close()
    store.close()


# --- the command ---------------------------------------------------------------------------


def test_command_prints_mqtts_and_https_and_serves_them(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.server", "--db", ":memory:", "--admin-token", ADMIN,
         "--http-port", "0", "--mqtt-port", "0", "--mqtts-port", "0", "--https-port", "0",
         "--tls-dir", str(tmp_path / "tls")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert list(line) == ["http", "https", "mqtt", "mqtts", "admin_token"]
        assert line["mqtts"].startswith("mqtts://127.0.0.1:")
        ca = tmp_path / "tls" / "ca.pem"
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection("127.0.0.1", int(line["https"].rsplit(":", 1)[1]),
                                           timeout=10, context=context)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == sorted(FILES)


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    server_command.add_arguments(parser)
    return server_command.run(parser.parse_args(list(argv)))


def test_command_errors_are_one_line(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli("--db", ":memory:", "--mqtts-port", "0") == 1
    assert capsys.readouterr().err == (
        "pushsim server: error: --mqtts-port, --https-port and --wss-port need --tls-dir DIR\n")

    ensure_credentials(tmp_path, names=LOOPBACK, now=time.time())
    (tmp_path / "ca-key.pem").unlink()
    assert _run_cli("--db", ":memory:", "--tls-dir", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("pushsim server: error: ") and err.count("\n") == 1
    assert "ca-key.pem is missing" in err


def test_a_key_readable_by_others_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    (tmp_path / "ca-key.pem").chmod(0o644)
    before = snapshot(tmp_path)
    again = ensure_credentials(tmp_path, names=LOOPBACK, now=NOW)
    assert again.issued_server is None and snapshot(tmp_path) == before
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{tmp_path / 'ca-key.pem'} is readable by other users; chmod 600 it"]
