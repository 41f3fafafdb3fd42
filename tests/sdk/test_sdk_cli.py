"""`pushsdk register | listen` against real loopback sockets (the CLI runs in a thread)."""
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization

from pushsdk import cli
from pushsdk.protocol import PubAck, Publish, Subscribe
from pushsdk.state import FileStateStore
from sdk_harness import APP_KEY, Registrar, ScriptedBroker, make_ca, make_server_cert, push_payload

ROOT = Path(__file__).resolve().parents[2]


async def serve(nursery, handler, ssl_context=None):
    if ssl_context is None:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        return listeners[0].socket.getsockname()[1]
    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, handler, 0, ssl_context,
                                            host="127.0.0.1"))
    return listeners[0].transport_listener.socket.getsockname()[1]


async def run_cli(*argv):
    return await trio.to_thread.run_sync(cli.main, list(argv))


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pushsdk: error: "), err
    assert "Traceback" not in err
    return err


async def start_server(nursery):
    broker = ScriptedBroker()
    mqtt_port = await serve(nursery, broker.handle)
    registrar = Registrar(mqtt=("127.0.0.1", mqtt_port, False), epoch=time.time())
    http_port = await serve(nursery, registrar.handle)
    return f"http://127.0.0.1:{http_port}", registrar, broker


async def test_register_prints_the_answer_and_saves_state(nursery, tmp_path, capsys):
    url, registrar, _ = await start_server(nursery)
    state = tmp_path / "s.bin"
    rc = await run_cli("register", "--server", url, "--app-key", APP_KEY, "--device-id", "d1",
                       "--state", str(state), "--alias", "bob", "--tag", "a", "--tag", "b")
    out = capsys.readouterr().out
    assert rc == 0
    answer = json.loads(out)
    assert answer["registration_id"] == "reg-d1" and answer["token"] == "tok-1"
    assert set(answer) == {"registration_id", "token", "token_expires_at", "mqtt", "inbox"}
    assert registrar.requests[0][1] == {"device_id": "d1", "platform": "android",
                                        "alias": "bob", "tags": ["a", "b"]}
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    loaded = await FileStateStore(state).load()
    assert loaded.registration.token == "tok-1"


async def test_listen_server_mode(nursery, tmp_path, capsys):
    url, registrar, broker = await start_server(nursery)
    state = str(tmp_path / "s.bin")
    async with trio.open_nursery() as inner:
        result = []

        async def listen():
            result.append(await run_cli("listen", "--server", url, "--app-key", APP_KEY,
                                        "--device-id", "d1", "--state", state,
                                        "--strategy", "fixed:60", "--exit-after", "2"))

        inner.start_soon(listen)
        with trio.fail_after(10):
            await broker.wait_for(lambda: broker.events(Subscribe))
            inbox = broker.events(Subscribe)[0].subscriptions[0][0]
            await broker.current.send(Publish(inbox, push_payload("m1"), qos=1, packet_id=1))
            await broker.current.send(Publish(inbox, push_payload("m2", "message"), qos=1,
                                              packet_id=2))
    assert result == [0]
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["msg_id"] for line in lines] == ["m1", "m2"]
    assert json.loads(lines[1])["message"] == {"data": {"n": "m2"}}
    assert [e.packet_id for e in broker.events(PubAck)] == [1, 2]
    assert broker.conns[0].connect.keepalive == 60
    # The registration was stored: a second listen reconnects without registering.
    assert len(registrar.requests) == 1
    assert (await FileStateStore(state).load()).recent_msg_ids == ("m1", "m2")


async def test_listen_broker_mode(nursery, capsys):
    broker = ScriptedBroker()
    port = await serve(nursery, broker.handle)
    async with trio.open_nursery() as inner:
        result = []

        async def listen():
            result.append(await run_cli("listen", "--broker", f"mqtt://127.0.0.1:{port}",
                                        "--client-id", "cli-1", "--username", "u",
                                        "--password", "p", "--topic", "a/#", "--topic", "b",
                                        "--keepalive", "30", "--exit-after", "2"))

        inner.start_soon(listen)
        with trio.fail_after(10):
            await broker.wait_for(lambda: broker.events(Subscribe))
            await broker.current.send(Publish("a/1", "grüß".encode(), qos=1, packet_id=1))
            await broker.current.send(Publish("b", b"\xff\x00", qos=0))
    assert result == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"topic": "a/1", "payload": "grüß", "qos": 1, "retain": False},
                     {"topic": "b", "payload": "\ufffd\x00", "qos": 0, "retain": False,
                      "payload_base64": "/wA="}]
    connect = broker.conns[0].connect
    assert (connect.client_id, connect.username, connect.password, connect.keepalive) == (
        "cli-1", "u", b"p", 30)
    assert broker.events(Subscribe)[0].subscriptions == (("a/#", 1), ("b", 1))


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["register", "--server", "http://x"],
    ["register", "--server", "ftp://x", "--app-key", "k", "--device-id", "d"],
    ["listen"],
    ["listen", "--server", "http://x", "--app-key", "k", "--device-id", "d",
     "--strategy", "nope"],
    ["listen", "--server", "http://x", "--app-key", "k", "--device-id", "d",
     "--exit-after", "0"],
    ["listen", "--broker", "mqtt://h", "--topic", "t"],
    ["listen", "--broker", "mqtt://h", "--client-id", "c"],
    ["listen", "--broker", "http://h", "--client-id", "c", "--topic", "t"],
    ["listen", "--broker", "mqtt://h", "--client-id", "c", "--topic", "t", "--username", "u"],
    ["listen", "--broker", "mqtt://h", "--client-id", "c", "--topic", "t", "--keepalive", "x"],
])
def test_bad_arguments(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    one_line_error(capsys)


async def unused_port():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_server(tmp_path, capsys):
    port = await unused_port()
    rc = await run_cli("register", "--server", f"http://127.0.0.1:{port}", "--app-key", "k",
                       "--device-id", "d", "--state", str(tmp_path / "s"))
    assert rc == 1
    assert "Connection refused" in one_line_error(capsys)
    rc = await run_cli("listen", "--server", f"http://127.0.0.1:{port}", "--app-key", "k",
                       "--device-id", "d", "--state", str(tmp_path / "s"))
    assert rc == 1
    assert "Connection refused" in one_line_error(capsys)
    rc = await run_cli("listen", "--broker", f"mqtt://127.0.0.1:{port}", "--client-id", "c",
                       "--topic", "t")
    assert rc == 1
    assert "Connection refused" in one_line_error(capsys)


async def test_registration_refused(nursery, tmp_path, capsys):
    registrar = Registrar(app_key="other")
    port = await serve(nursery, registrar.handle)
    rc = await run_cli("register", "--server", f"http://127.0.0.1:{port}", "--app-key", "k",
                       "--device-id", "d", "--state", str(tmp_path / "s"))
    assert rc == 1
    assert "401 bad_app_key" in one_line_error(capsys)


async def test_tls_failure_and_success(nursery, tmp_path, capsys):
    ca_key, ca_cert = make_ca()
    key, cert = make_server_cert(ca_key, ca_cert)
    server_pem = tmp_path / "server.pem"
    server_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _, other = make_ca("Other")
    (tmp_path / "other.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_pem)
    registrar = Registrar(epoch=time.time())
    port = await serve(nursery, registrar.handle, ctx)
    url = f"https://127.0.0.1:{port}"
    base = ["register", "--server", url, "--app-key", APP_KEY, "--device-id", "d",
            "--state", str(tmp_path / "s")]
    assert await run_cli(*base) == 1  # system trust store: our private CA is unknown
    assert "did not verify" in one_line_error(capsys)
    assert await run_cli(*base, "--ca", str(tmp_path / "other.pem")) == 1
    assert "TLS certificate of 127.0.0.1" in one_line_error(capsys)
    assert await run_cli(*base, "--ca", str(tmp_path / "missing.pem")) == 1
    assert "cannot load CA file" in one_line_error(capsys)
    assert await run_cli(*base, "--ca", str(tmp_path / "ca.pem")) == 0
    assert json.loads(capsys.readouterr().out)["token"] == "tok-1"


async def test_unwritable_state_file(nursery, tmp_path, capsys):
    url, _, _ = await start_server(nursery)
    rc = await run_cli("register", "--server", url, "--app-key", APP_KEY, "--device-id", "d",
                       "--state", str(tmp_path / "no" / "such" / "dir" / "s.bin"))
    assert rc == 1
    assert "cannot" in one_line_error(capsys)


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "pushsdk", "listen", "--broker", "x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
