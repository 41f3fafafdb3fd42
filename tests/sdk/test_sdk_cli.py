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
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    loaded = await FileStateStore(state).load()
    assert loaded.registration.token == "tok-1"
    # The installation's identity is bound at once, as `listen` would bind it.
    assert registrar.requests[0][1] == {"device_id": "d1", "platform": "android",
                                        "alias": "bob", "tags": ["a", "b"],
                                        "device_key": loaded.device_key.public}


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


# --- the state file is checked before the server binds a device key ---------------------------

def registrations(server):
    """What the reference server counted: registrations accepted and refused."""
    values = server.metrics()
    return (values["pushsim_registrations_total"],
            values["pushsim_registrations_refused_total"])


async def test_an_unwritable_state_file_is_refused_before_registering(server_process, tmp_path,
                                                                      capsys):
    """A typo in --state must not lock the device id out: before, `register` registered (the
    server bound a new device key to d9), could not save the key, and every later register of
    d9 was refused 403 device_bound. Now nothing reaches the server until the file can be
    written; `listen --server` is checked the same way."""
    server = server_process(tmp_path / "push.db")
    app = server.create_app("cli")
    base = ["--server", server.http_url, "--app-key", app["app_key"], "--device-id", "d9"]
    states = tmp_path / "states"
    states.mkdir()
    for bad, reason in ((states / "no-such-dir" / "s.bin", "No such file or directory"),
                        (states, "Is a directory"),
                        (states / "file" / "s.bin", "Not a directory")):
        (states / "file").write_bytes(b"")
        for command in ("register", "listen"):
            assert await run_cli(command, *base, "--state", str(bad)) == 1, (command, bad)
            err = one_line_error(capsys)
            assert err == f"pushsdk: error: cannot write state file {bad}: {reason}\n"
            assert registrations(server) == (0, 0), (command, bad)  # the server saw none
    assert sorted(p.name for p in states.iterdir()) == ["file"]  # no probe file left behind

    good = str(states / "s.bin")
    assert await run_cli("register", *base, "--state", good) == 0
    first = json.loads(capsys.readouterr().out)
    assert await run_cli("register", *base, "--state", good) == 0  # proves itself with the key
    assert json.loads(capsys.readouterr().out)["registration_id"] == first["registration_id"]
    assert registrations(server)[0] == 2  # (the second after a 401 challenge, its proof)


# --- arguments that are not UTF-8 ------------------------------------------------------------

def run_process(argv, **kwargs):
    """``python -m pushsdk`` with ``argv`` (str or bytes items: bytes that are not UTF-8 reach
    the program as lone surrogates, as from a shell's $'\\xff')."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "pushsdk", *argv], cwd=ROOT,
                          stderr=subprocess.PIPE, timeout=60, **kwargs)


def broker_args(port, command, **values):
    args = {"--broker": f"mqtt://127.0.0.1:{port}", "--client-id": "c1", "--topic": "t/1",
            **({"--message": "m"} if command == "publish" else {})}
    args.update(values)
    return [command, *(item for pair in args.items() for item in pair if item is not None)]


@pytest.mark.mosquitto
@pytest.mark.parametrize("command, option, extra", [
    ("publish", "--message", {}),
    ("publish", "--client-id", {}),
    ("publish", "--topic", {}),
    ("publish", "--username", {"--password": "p"}),
    ("publish", "--password", {"--username": "u"}),
    ("publish", "--user-property", {"--mqtt-version": "5"}),
    ("listen", "--client-id", {}),
    ("listen", "--topic", {}),
    ("listen", "--username", {"--password": "p"}),
    ("listen", "--password", {"--username": "u"}),
])
def test_broker_options_that_are_not_utf8(mosquitto, command, option, extra):
    value = b"k=\xff" if option == "--user-property" else b"v\xff\xfe"
    proc = run_process(broker_args(mosquitto.port, command, **extra, **{option: value}))
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr == f"pushsdk: error: {option} is not valid UTF-8\n"


@pytest.mark.parametrize("command, option", [
    ("register", "--server"),
    ("register", "--app-key"),
    ("register", "--device-id"),
    ("register", "--platform"),
    ("register", "--alias"),
    ("register", "--tag"),
    ("listen", "--device-id"),
    ("listen", "--alias"),
    ("listen", "--strategy"),
])
async def test_server_options_that_are_not_utf8(tmp_path, command, option):
    """Refused as arguments (exit 2), before any file or server is touched (the port is
    closed: a request would end in "Connection refused", exit 1)."""
    port = await unused_port()
    values = {"--server": f"http://127.0.0.1:{port}", "--app-key": "k", "--device-id": "d",
              "--state": str(tmp_path / "s.bin")}
    values[option] = (f"http://127.0.0.1:{port}/\xff".encode("latin-1")
                      if option == "--server" else b"v\xff")
    argv = [command, *(item for pair in values.items() for item in pair)]
    proc = await trio.to_thread.run_sync(lambda: run_process(argv))
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert stderr == f"pushsdk: error: {option} is not valid UTF-8\n"
    assert list(tmp_path.iterdir()) == []


async def test_file_names_may_be_any_bytes(nursery, tmp_path, capsys):
    """File options are file names, not text: bytes that are not UTF-8 name that very file."""
    url, _, _ = await start_server(nursery)
    state = os.fsdecode(os.fsencode(tmp_path) + b"/s\xff.bin")  # as sys.argv has it
    assert await run_cli("register", "--server", url, "--app-key", APP_KEY, "--device-id",
                         "d1", "--state", state) == 0
    assert json.loads(capsys.readouterr().out)["token"] == "tok-1"
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"s\xff.bin", b"s\xff.bin.key"]


@pytest.mark.parametrize("argv, message", [
    (["register", "--server", "http://127.0.0.1:1/é", "--app-key", "k", "--device-id", "d"],
     "--server must be printable ASCII"),
    (["register", "--server", "http://127.0.0.1:1/a b", "--app-key", "k", "--device-id", "d"],
     "--server must be printable ASCII"),
    (["register", "--server", "http://127.0.0.1:1", "--app-key", "clé", "--device-id", "d"],
     "--app-key must be printable ASCII"),
    (["register", "--server", "http://127.0.0.1:1", "--app-key", " k", "--device-id", "d"],
     "--app-key must be printable ASCII"),
    (["publish", "--broker", "ws://127.0.0.1:1/é", "--client-id", "c", "--topic", "t",
      "--message", "m"], "--broker must be printable ASCII"),
    (["publish", "--broker", "mqtt://127.0.0.1:1", "--client-id", "c" * 65536, "--topic", "t",
      "--message", "m"], "--client-id is 65536 bytes of UTF-8, over the MQTT limit of 65535"),
    (["listen", "--broker", "mqtt://127.0.0.1:1", "--client-id", "c", "--topic", "t",
      "--username", "u" * 65536, "--password", "p"], "--username is 65536 bytes"),
    (["publish", "--broker", "mqtt://127.0.0.1:1", "--client-id", "c", "--topic", "t/#",
      "--message", "m"], "topic name 't/#' contains wildcard '#'"),
])
def test_arguments_that_cannot_be_sent(capsys, argv, message):
    """Valid UTF-8 that still cannot go where it is for (an HTTP request line or header, an
    MQTT string, a topic to publish to): an argument error too, before connecting."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in one_line_error(capsys)


# --- a reader that goes away ---------------------------------------------------------------

def run_with_stdout_closed(argv):
    """Run with stdout a pipe whose read end is closed before the program writes (as in
    ``pushsdk register | true``): its first write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_process(argv, stdout=write_end)
    finally:
        os.close(write_end)


async def test_stdout_closed_early_is_not_an_error(server_process, tmp_path):
    """`register | true` registered and saved the state, then printed a 12-line
    BrokenPipeError traceback; now it ends as `listen` does when its reader goes: quietly,
    exit 0."""
    from support.http import basic_auth, http_request

    server = server_process(tmp_path / "push.db")
    app = server.create_app("cli")
    state = tmp_path / "s.bin"
    base = ["--server", server.http_url, "--app-key", app["app_key"], "--device-id", "d1",
            "--state", str(state)]
    register = await trio.to_thread.run_sync(run_with_stdout_closed, ["register", *base])
    assert (register.returncode, register.stderr) == (0, b"")
    assert (await FileStateStore(state).load()).registration is not None

    # listen, in the same situation: a message waits for the device; printing it fails.
    status, body = http_request(server.http_port, "POST", "/v1/push",
                                {"audience": "all", "message": {"data": {"n": 1}}},
                                basic_auth(app))
    assert status == 200, body
    listen = await trio.to_thread.run_sync(run_with_stdout_closed, ["listen", *base])
    assert (listen.returncode, listen.stderr) == (register.returncode, b"")
