"""Exactly-once delivery through crashes, with the real SDK and the real server as processes.

The server is SIGKILLed right after accepting a push, and while a stream of pushes is being
delivered; it comes back on the same database and the same ports, and the listener (still
running, retrying with its backoff) gets every accepted push exactly once. The listener is
SIGKILLed too, and restarted on the same state file.

Observation without sleeps: every scenario ends with a *sentinel* push; the server delivers a
device's queue in order, redeliveries first, so once the sentinel is printed everything that
could still come has come.
"""
from __future__ import annotations

import collections
import http.client
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from integration_harness import (
    Api,
    FaultProxy,
    ProcessGroup,
    parse_packets,
    pushsdk_register,
)

from support.ports import free_port

pytestmark = pytest.mark.timeout(90)


class Pusher(threading.Thread):
    """Pushes ``{"seq": i}`` for i in range(n) as fast as the server answers. A request
    that gets no answer (the server died) is *ambiguous* — it may or may not have been
    committed — and ends the stream."""

    def __init__(self, api: Api, app: dict[str, str], n: int, *, signal_at: int = 0) -> None:
        super().__init__(daemon=True)
        self.api, self.app, self.n = api, app, n
        self.accepted: dict[int, str] = {}  # seq -> msg_id, for every 200
        self.ambiguous: set[int] = set()
        self.signal_at = signal_at
        self.reached = threading.Event()  # set once ``signal_at`` pushes were accepted

    def run(self) -> None:
        for seq in range(self.n):
            try:
                self.accepted[seq] = self.api.push_data(self.app, {"seq": seq})
            except (OSError, http.client.HTTPException):
                self.ambiguous.add(seq)
                return
            if len(self.accepted) == self.signal_at:
                self.reached.set()


def assert_exactly_once(printed: list[dict[str, Any]], accepted: dict[int, str],
                        ambiguous: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Every accepted push printed once; nothing else but ambiguous ones (at most once)."""
    ids = [m["msg_id"] for m in printed]
    duplicates = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not duplicates, f"printed more than once: {duplicates}"
    missing = set(accepted.values()) - set(ids)
    assert not missing, f"accepted but never printed: {missing}"
    known = set(accepted.values())
    for message in printed:
        if message["msg_id"] not in known:  # not a 200: an ambiguous push, or the sentinel
            data = message["message"]["data"]
            assert data.get("sentinel") or data["seq"] in ambiguous, message


@pytest.mark.parametrize("kill_when", ["right after the 200", "right after the print"])
def test_server_sigkill_after_accepting_a_push(procs: ProcessGroup, tmp_path: Path,
                                               kill_when: str) -> None:
    db, ports = tmp_path / "push.db", {"http_port": free_port(), "mqtt_port": free_port()}
    server = procs.server(db, **ports)
    app = server.api.create_app()
    listener = procs.listener(server, app, "phone-1", tmp_path / "state.bin")
    listener.wait_connected()

    first = server.api.push_data(app, "first")
    if kill_when == "right after the print":
        # The PUBACK may or may not have reached the server, let alone its database.
        listener.wait_msg_id(first)
    server.kill()
    server = procs.server(db, **ports)  # same file, same ports: the listener finds it again

    listener.wait_connected(2)
    sentinel = server.api.push_data(app, "sentinel")  # same app: the database survived
    listener.wait_msg_id(sentinel)
    assert listener.msg_ids() == [first, sentinel]
    assert listener.stderr_count("; reconnecting") >= 1  # it did notice the crash
    server.api.wait_status(app, first, delivered=1, pending=0)
    server.api.wait_status(app, sentinel, delivered=1, pending=0)
    listener.assert_no_traceback()


def test_server_sigkill_while_a_stream_of_pushes_is_delivered(procs: ProcessGroup,
                                                              tmp_path: Path) -> None:
    db, ports = tmp_path / "push.db", {"http_port": free_port(), "mqtt_port": free_port()}
    server = procs.server(db, **ports)
    app = server.api.create_app()
    listener = procs.listener(server, app, "phone-1", tmp_path / "state.bin")
    listener.wait_connected()

    pusher = Pusher(server.api, app, 60)
    pusher.start()
    listener.wait_count(5)  # deliveries are under way ...
    server.kill()           # ... and pushes are still being accepted
    pusher.join(10)
    assert not pusher.is_alive()
    server = procs.server(db, **ports)

    sentinel = server.api.push_data(app, {"sentinel": True})
    listener.wait_msg_id(sentinel)
    printed = listener.messages()
    assert printed[-1]["msg_id"] == sentinel
    assert_exactly_once(printed, pusher.accepted, pusher.ambiguous)
    for msg_id in pusher.accepted.values():
        server.api.wait_status(app, msg_id, delivered=1, pending=0)
    listener.assert_no_traceback()


def test_listener_sigkill_while_pushes_flow_then_restart_on_the_same_state(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """SIGKILL of the SDK at an arbitrary moment. No push is lost. The only duplicate that
    can show up is the message the killed run printed last: printing is the app's side
    effect, and a kill between it and the write of the dedup window cannot be told from a
    kill just before it (docs/protocol.md, "Limits")."""
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    first_run = procs.listener(server, app, "phone-1", state)
    first_run.wait_connected()

    # Kill at a moment unrelated to what the listener is doing: when the 20th push of 60
    # is accepted. It may be in the callback, writing its state, acknowledging, idle.
    pusher = Pusher(server.api, app, 60, signal_at=20)
    pusher.start()
    assert pusher.reached.wait(10)
    first_run.kill()
    pusher.join(10)
    assert not pusher.ambiguous and len(pusher.accepted) == 60

    second_run = procs.listener(server, app, "phone-1", state)
    second_run.wait_connected()
    sentinel = server.api.push_data(app, {"sentinel": True})
    second_run.wait_msg_id(sentinel)
    assert second_run.stderr_count("will register") == 0  # same state, no new registration

    before, after = first_run.messages(), second_run.messages()
    union = before + after
    counts = collections.Counter(m["msg_id"] for m in union)
    repeated = [msg_id for msg_id, n in counts.items() if n > 1]
    if repeated:
        assert repeated == [before[-1]["msg_id"]] == [after[0]["msg_id"]], (before, after)
        union = union[: len(before) - 1] + union[len(before):]
    assert_exactly_once(union, pusher.accepted)
    for msg_id in pusher.accepted.values():
        server.api.wait_status(app, msg_id, delivered=1, pending=0)
    second_run.assert_no_traceback()


def test_redelivery_of_a_message_the_killed_sdk_had_saved_is_not_printed_again(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """The dedup window across SDK restarts, made deterministic: the listener reaches the
    server through a relay that swallows its PUBACK. Once the relay holds that PUBACK the
    msg_id is in the state file (the SDK writes it before acknowledging); the listener is
    SIGKILLed; the server, never acknowledged, redelivers with DUP=1 to the next run, which
    acknowledges without printing."""
    from pushsdk.state import FileStateStore

    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    pushsdk_register(procs, server, app, "phone-1", state)
    proxy = FaultProxy(server.mqtt_port)
    try:
        # Point the stored registration's MQTT endpoint at the relay (re-sealed with the
        # device's own key, as the SDK would).
        store = FileStateStore(state)
        saved = store.load_sync()
        assert saved is not None and saved.registration is not None
        store.save_sync(saved.with_registration(
            attrs.evolve(saved.registration, mqtt_port=proxy.port)))

        first_run = procs.listener(server, app, "phone-1", state)
        first_run.wait_until(  # subscribed: CONNACK and SUBACK went through the relay
            lambda: 9 in [p[0] for p in parse_packets(bytes(proxy.downstream))], "SUBACK")
        proxy.hold_upstream = True
        msg_id = server.api.push_data(app, "once")
        first_run.wait_msg_id(msg_id)
        puback = first_run.wait_until(
            lambda: [p for p in parse_packets(bytes(proxy.held)) if p[0] == 4],
            "the PUBACK, held by the relay")
        first_run.kill()
        proxy.cut()
        assert puback[0][2] == b"\x00\x01"  # packet id 1: the first message on the session
        assert server.api.status(app, msg_id)["pending"] == 1  # the server never saw it
        assert msg_id in store.load_sync().recent_msg_ids

        proxy.hold_upstream = False
        second_run = procs.listener(server, app, "phone-1", state, exit_after=1)
        second_run.wait_connected()
        server.api.wait_status(app, msg_id, delivered=1, pending=0)
        sentinel = server.api.push_data(app, "sentinel")
        assert second_run.wait_exit() == 0, second_run.describe()
        assert first_run.msg_ids() == [msg_id]
        assert second_run.msg_ids() == [sentinel]

        # What the server sent: the message, then the same message again with DUP=1.
        publishes = [(flags, body) for kind, flags, body in parse_packets(bytes(proxy.downstream))
                     if kind == 3 and msg_id.encode() in body]
        assert [flags for flags, _ in publishes] == [0b0010, 0b1010]  # QoS 1; DUP + QoS 1
    finally:
        proxy.close()
