"""End to end, as a user runs it: ``pushsim server`` and ``pushsdk listen`` as processes, an
app server calling the HTTP API with ``http.client``, all over loopback TCP."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration_harness import ProcessGroup, pushsdk_register

pytestmark = pytest.mark.timeout(60)


def test_listener_prints_each_push_and_exits_after_n(procs: ProcessGroup,
                                                     tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    listener = procs.listener(server, app, "phone-1", tmp_path / "state.bin", exit_after=2)
    listener.wait_connected()

    notification = server.api.push(app, {
        "audience": "all", "notification": {"title": "Hello", "body": "from e2e"},
        "options": {"collapse_key": "greeting", "priority": "high"},
    })
    data_id = server.api.push_data(app, {"n": 1, "text": "grüß dich"})
    assert notification["targets"] == 1

    assert listener.wait_exit() == 0, listener.describe()
    listener.assert_no_traceback()
    first, second = listener.messages()
    assert len(listener.stdout) == 2  # exactly one line per push, nothing else on stdout
    # The push object as the server sent it (interfaces §3), key order included.
    assert list(first) == ["msg_id", "kind", "notification", "sent_at", "expires_at",
                           "collapse_key", "priority"]
    assert first["msg_id"] == notification["msg_id"] and first["kind"] == "notification"
    assert first["notification"] == {"title": "Hello", "body": "from e2e"}
    assert (first["collapse_key"], first["priority"]) == ("greeting", "high")
    assert first["expires_at"] - first["sent_at"] == pytest.approx(86400, abs=0.002)
    assert list(second) == ["msg_id", "kind", "message", "sent_at", "expires_at", "priority"]
    assert second["msg_id"] == data_id and second["kind"] == "message"
    assert second["message"] == {"data": {"n": 1, "text": "grüß dich"}}
    assert second["priority"] == "normal"
    # One JSON object per line, non-ASCII written as UTF-8 rather than \u escapes.
    assert "grüß dich" in listener.stdout[1] and json.loads(listener.stdout[1]) == second

    for msg_id in (notification["msg_id"], data_id):
        status = server.api.wait_status(app, msg_id, delivered=1)
        assert status == {"msg_id": msg_id, "targets": 1, "delivered": 1, "pending": 0,
                          "expired": 0, "collapsed": 0, "dropped": 0, "opened": 0,
                          "dismissed": 0}
    metrics = server.api.metrics()
    assert metrics["pushsim_messages_delivered_total"] == 2
    assert metrics["pushsim_messages_redelivered_total"] == 0


def test_offline_device_gets_its_push_on_connect_and_ttl0_expires(procs: ProcessGroup,
                                                                  tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    reg = pushsdk_register(procs, server, app, "phone-1", state)
    assert set(reg) == {"registration_id", "token", "token_expires_at", "mqtt", "inbox"}
    assert reg["mqtt"] == {"host": "127.0.0.1", "port": server.mqtt_port, "tls": False,
                           "versions": ["3.1.1", "5"]}
    assert reg["inbox"] == f"push/{app['app_key']}/{reg['registration_id']}"
    to_device = {"registration_id": [reg["registration_id"]]}

    # No listener runs: one push waits on the server, one with ttl 0 expires at once.
    queued = server.api.push_data(app, "while offline", audience=to_device)
    now_only = server.api.push_data(app, "ttl 0", audience=to_device, ttl=0)
    assert server.api.status(app, queued)["pending"] == 1
    assert server.api.status(app, now_only) == {
        "msg_id": now_only, "targets": 1, "delivered": 0, "pending": 0, "expired": 1,
        "collapsed": 0, "dropped": 0, "opened": 0, "dismissed": 0}

    listener = procs.listener(server, app, "phone-1", state, exit_after=2)
    listener.wait_msg_id(queued)  # arrives as soon as it connects, without a new push
    # A push made after it connected comes next; the ttl-0 one never comes.
    later = server.api.push_data(app, "online now", audience=to_device)
    assert listener.wait_exit() == 0, listener.describe()
    assert listener.msg_ids() == [queued, later]
    assert [m["message"]["data"] for m in listener.messages()] == ["while offline",
                                                                    "online now"]
    # It used the stored registration: no second registration on stderr, same device.
    assert listener.stderr_count("will register") == 0
    server.api.wait_status(app, queued, delivered=1, pending=0)
    server.api.wait_status(app, later, delivered=1, pending=0)
    assert server.api.status(app, now_only)["expired"] == 1
    assert server.api.metrics()["pushsim_messages_expired_total"] == 1


def test_ttl0_reaches_a_connected_device(procs: ProcessGroup, tmp_path: Path) -> None:
    """The other half of ttl 0: online at push time means delivered, ``expires_at ==
    sent_at``."""
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    listener = procs.listener(server, app, "phone-1", tmp_path / "state.bin", exit_after=1)
    listener.wait_connected()
    msg_id = server.api.push_data(app, "now", ttl=0)
    assert listener.wait_exit() == 0, listener.describe()
    (message,) = listener.messages()
    assert message["msg_id"] == msg_id and message["expires_at"] == message["sent_at"]
    server.api.wait_status(app, msg_id, delivered=1, expired=0)
