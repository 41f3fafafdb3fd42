"""A live server under bad and abrupt clients: malformed packets over raw sockets close that
one connection while a real ``pushsdk listen`` connected at the same time keeps receiving;
connections that end in the middle of a delivery neither crash their handler nor turn a
concurrent push into a 500."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from integration_harness import (
    MQTT_DISCONNECT,
    PUBLISH,
    WAIT,
    ProcessGroup,
    RawMqtt,
    mqtt_connect,
    mqtt_puback,
    mqtt_publish,
    mqtt_string,
    read_until_closed,
    remaining_length,
)

pytestmark = pytest.mark.timeout(60)


def test_malformed_packets_close_only_their_own_connection(procs: ProcessGroup,
                                                           tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    api = server.api
    app = api.create_app()
    listener = procs.listener(server, app, "phone-1", tmp_path / "state.bin")
    listener.wait_connected()
    from pushsdk.state import FileStateStore

    saved = FileStateStore(tmp_path / "state.bin").load_sync()
    assert saved is not None and saved.registration is not None
    phone = {"registration_id": saved.registration.registration_id}
    bad = api.register(app, "bad-device")  # credentials for the authenticated cases

    def still_delivering() -> None:
        msg_id = api.push_data(app, "still here",
                               audience={"registration_id": [phone["registration_id"]]})
        listener.wait_msg_id(msg_id)

    def rejected(data: bytes, *, login: bool = False, half_close: bool = False) -> bytes:
        """Send ``data`` (after a good CONNECT if ``login``) and return what came back
        before the server closed the connection."""
        with socket.create_connection(("127.0.0.1", server.mqtt_port), timeout=5) as sock:
            prefix = b""
            if login:
                sock.sendall(mqtt_connect(bad["registration_id"], app["app_key"],
                                          bad["token"]))
                prefix = sock.recv(4)
                assert prefix[:2] == b"\x20\x02" and prefix[3] == 0, prefix  # CONNACK 0
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            answer = prefix + read_until_closed(sock)
        still_delivering()
        return answer

    connect = mqtt_connect("someone", "user", "pass")
    big = 1_000_000  # announced, never sent: the server must not wait for it
    cases = {
        "garbage": (b"\xf0\x07garbage!", {}),
        "truncated CONNECT, then EOF": (connect[:9], {"half_close": True}),
        "oversized CONNECT": (b"\x10" + remaining_length(big) + connect[2:], {}),
        "bad protocol name": (mqtt_connect("someone", protocol=b"MQTX"), {}),
        "CONNECT not first": (mqtt_publish("rcpt/x/y", b"{}", qos=0), {}),
        "wildcard PUBLISH": (mqtt_publish(f"rcpt/{app['app_key']}/+", b"{}"),
                             {"login": True}),
        "oversized PUBLISH": (b"\x32" + remaining_length(100_000) + mqtt_string("rcpt/a/b"),
                              {"login": True}),
        "QoS 2 PUBLISH": (mqtt_publish(f"rcpt/{app['app_key']}/{bad['registration_id']}",
                                       b"{}", qos=2), {"login": True}),
        "second CONNECT": (connect, {"login": True}),
    }
    for name, (data, options) in cases.items():
        answer = rejected(data, **options)
        if options.get("login"):  # only the CONNACK (session present after the first time)
            assert len(answer) == 4 and answer[3] == 0, (name, answer)
        else:  # closed without a word
            assert answer == b"", (name, answer)

    # A client of an unknown protocol level is told why (CONNACK 1, "unacceptable protocol
    # level"), then closed; a 5.0 CONNECT without its properties is malformed (reason 0x81).
    assert rejected(mqtt_connect("v6", level=6)) == b"\x20\x02\x00\x01"
    assert rejected(mqtt_connect("v5", level=5)) == b"\x20\x03\x00\x81\x00"
    # Publishing outside the device's own receipt topic is an ACL violation, also closed.
    inbox = f"push/{app['app_key']}/{phone['registration_id']}"
    assert rejected(mqtt_publish(inbox, b'{"msg_id":"forged"}'), login=True) == \
        b"\x20\x02\x01\x00"

    status, health = api.request("GET", "/healthz")
    assert (status, health) == (200, {"status": "ok"})
    metrics = api.metrics()
    assert metrics["pushsim_mqtt_protocol_errors_total"] >= len(cases) - 1  # EOF mid-packet
    assert metrics["pushsim_mqtt_acl_violations_total"] == 1
    assert metrics["pushsim_sessions"] == 1  # only the listener is left
    # The listener never noticed anything: one connection, every push printed once.
    assert listener.stderr_count("pushsdk: connected") == 1
    assert listener.stderr_count("reconnecting") == 0
    assert len(set(listener.msg_ids())) == len(listener.msg_ids()) == len(cases) + 3
    listener.assert_no_traceback()
    assert not [line for line in server.stderr if "Traceback" in line or " ERROR " in line], \
        server.describe()


def test_ack_and_disconnect_in_one_write_is_handled_cleanly(procs: ProcessGroup,
                                                            tmp_path: Path) -> None:
    """PUBACK frees a slot in the inflight window, so the server starts sending the next
    message — and DISCONNECT, read in the same chunk, closes the codec before that task
    runs. The server must close quietly and redeliver later, not crash the handler."""
    server = procs.server(tmp_path / "push.db")
    api = server.api
    app = api.create_app()
    device = api.register(app, "raw-1")
    audience = {"registration_id": [device["registration_id"]]}
    msg_ids = [api.push_data(app, i, audience=audience) for i in range(11)]  # window is 10

    raw = RawMqtt(server.mqtt_port)
    raw.login(device, app)
    raw.wait(lambda got: sum(p[0] == PUBLISH for p in got) == 10, "10 PUBLISHes")
    first_pid = raw.publishes()[0][0]
    raw.send(mqtt_puback(first_pid) + MQTT_DISCONNECT)
    raw.data += read_until_closed(raw.sock)
    sent_first_time = len(raw.publishes())  # 10, or 11 if the server sent one more
    raw.close()
    api.wait_status(app, msg_ids[0], delivered=1)

    # The other ten come again, after a reconnect, each once: 9 redeliveries, then the 11th.
    again = RawMqtt(server.mqtt_port)
    again.login(device, app)
    again.wait(lambda got: sum(p[0] == PUBLISH for p in got) == 10, "10 PUBLISHes")
    got = again.publishes()
    assert [json.loads(payload)["msg_id"] for _, _, payload in got] == msg_ids[1:]
    # DUP=1 exactly for those sent before (MQTT-3.3.1-1).
    assert [dup for _, dup, _ in got] == [1] * 9 + [int(sent_first_time == 11)]
    again.send(b"".join(mqtt_puback(pid) for pid, _, _ in got) + MQTT_DISCONNECT)
    read_until_closed(again.sock)
    again.close()
    for msg_id in msg_ids:
        api.wait_status(app, msg_id, delivered=1, pending=0)
    assert not [line for line in server.stderr if "Traceback" in line or " ERROR " in line], \
        server.describe()


def test_pushes_racing_with_disconnects_are_never_a_500(procs: ProcessGroup,
                                                        tmp_path: Path) -> None:
    """A push committed while its device's connection is being torn down must still be
    answered 200 (and delivered later), not fail on the dying connection."""
    server = procs.server(tmp_path / "push.db")
    api = server.api
    app = api.create_app()
    device = api.register(app, "flappy")
    audience = {"registration_id": [device["registration_id"]]}
    failures: list[BaseException] = []
    accepted: list[str] = []
    stop = threading.Event()

    def push_forever() -> None:
        while not stop.is_set():
            try:
                accepted.append(api.push_data(app, len(accepted), audience=audience))
            except BaseException as exc:  # the assertion inside push() included
                failures.append(exc)
                return

    pusher = threading.Thread(target=push_forever, daemon=True)
    pusher.start()
    try:
        for _ in range(40):  # connect, take what comes, vanish without a word
            raw = RawMqtt(server.mqtt_port)
            raw.login(device, app)
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            raw.close()  # RST
            if failures:
                break
    finally:
        stop.set()
        pusher.join(WAIT)
    assert not failures, failures
    assert not [line for line in server.stderr if "Traceback" in line or " ERROR " in line], \
        server.describe()

