"""Rules of the MQTT mapping seen from a raw socket on a live server process: the keepalive
grace of 1.5 × the declared keepalive, takeover by a second CONNECT, what SUBSCRIBE grants."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from integration_harness import (
    PUBLISH,
    ProcessGroup,
    RawMqtt,
    SUBACK,
    mqtt_connect,
    mqtt_subscribe,
    read_until_closed,
)

pytestmark = pytest.mark.timeout(60)

PINGREQ, PINGRESP = b"\xc0\x00", 13


def test_silence_for_one_and_a_half_keepalives_closes_the_connection(
        procs: ProcessGroup, tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    device = server.api.register(app, "phone-1")
    raw = RawMqtt(server.mqtt_port)
    raw.send(mqtt_connect(device["registration_id"], app["app_key"], device["token"],
                          keepalive=1))
    raw.wait(lambda got: got, "CONNACK")
    # Pings every 0.8 s keep it open well past 1.5 s ...
    for n in range(1, 4):
        time.sleep(0.8)  # the pace of the pings (what is tested), not a wait for something
        last_ping = time.monotonic()  # before the send: the server cannot receive it earlier
        raw.send(PINGREQ)
        raw.wait(lambda got, n=n: sum(p[0] == PINGRESP for p in got) == n, "PINGRESP")
    # ... then silence: closed 1.5 s after the last packet, not at 1 s. The server receives the
    # last ping after ``last_ping`` and we see the close after it happens, so the bound below
    # holds however slow the machine is; the close itself must come (read_until_closed fails
    # after 5 s otherwise).
    read_until_closed(raw.sock, timeout=5)
    silent = time.monotonic() - last_ping
    assert silent >= 1.5, silent
    raw.close()
    assert server.api.metrics()["pushsim_mqtt_keepalive_timeouts_total"] == 1


def test_second_connect_takes_over_and_gets_the_unacknowledged_messages(
        procs: ProcessGroup, tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    device = server.api.register(app, "phone-1")
    old = RawMqtt(server.mqtt_port)
    old.login(device, app)
    msg_id = server.api.push_data(app, "unacknowledged")
    old.wait(lambda got: any(p[0] == PUBLISH for p in got), "the PUBLISH")
    assert old.publishes()[0][1] == 0  # first attempt: DUP=0

    new = RawMqtt(server.mqtt_port)
    new.login(device, app)  # same client id: the older connection is closed
    read_until_closed(old.sock)
    old.close()
    new.wait(lambda got: any(p[0] == PUBLISH for p in got), "the redelivery")
    ((_, dup, payload),) = new.publishes()
    assert dup == 1 and json.loads(payload)["msg_id"] == msg_id
    assert server.api.metrics()["pushsim_mqtt_takeovers_total"] == 1
    new.close()


def test_subscribe_grants_only_the_inbox_and_at_most_qos_1(procs: ProcessGroup,
                                                           tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    device = server.api.register(app, "phone-1")
    raw = RawMqtt(server.mqtt_port)
    raw.login(device, app, subscribe=False)
    wildcard = f"push/{app['app_key']}/+"
    for packet_id, (topic, qos) in enumerate([(device["inbox"], 2), (wildcard, 1),
                                              ("#", 0)], start=1):
        raw.send(mqtt_subscribe(packet_id, topic, qos))
    got = raw.wait(lambda got: sum(p[0] == SUBACK for p in got) == 3, "3 SUBACKs")
    codes = [body[2] for kind, _, body in got if kind == SUBACK]
    assert codes == [1, 0x80, 0x80]  # QoS 2 downgraded to 1; anything else refused
    msg_id = server.api.push_data(app, "on the inbox")
    got = raw.wait(lambda got: any(p[0] == PUBLISH for p in got), "the PUBLISH")
    assert [flags for kind, flags, _ in got if kind == PUBLISH] == [0b0010]  # QoS 1, DUP 0
    ((_, _, payload),) = raw.publishes()
    assert json.loads(payload)["msg_id"] == msg_id
    raw.close()
