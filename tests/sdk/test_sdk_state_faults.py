"""Fault injection on the SDK's state file: whatever happens to the disk or the process, a
load gives the old state, the new state, or None ("register again") — never an exception, never
a broken state — and a failed save never stops the client.

Faults injected (counted in docs/security.md): a kill before every system call of the atomic
write, with the directory captured as it was at that instant (in-process, for a fresh file and
for a replacement, with a key file created alongside); a few real SIGKILLs of a process saving
in a loop; truncation to every length; every single bit flipped, in the state file and in its
key file; ENOSPC from write and from fsync; an unreadable file.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from pushsdk import FileStateStore, FixedStrategy, PushClient, ServerConfig
from pushsdk import state as state_mod
from pushsdk.protocol import PubAck, Publish
from pushsdk.registration import Registration
from pushsdk.state import SdkState, StaticKeyStore
from pushsdk.webpush import WebPushKeys
from sdk_harness import (
    APP_KEY,
    MQTT_HOST,
    MQTT_PORT,
    SERVER_URL,
    MemoryNetwork,
    Registrar,
    ScriptedBroker,
    push_payload,
)

KEY = bytes(range(32))
REG = Registration(
    server_url="https://push.example", app_key="k", device_id="d1", registration_id="r1",
    token="token-old", token_expires_at=1.8e9, inbox="push/k/r1", mqtt_host="mqtt.example",
    mqtt_port=8883, mqtt_tls=True,
)
OLD = SdkState(registration=REG, recent_msg_ids=("m1", "m2"),
               heartbeat_memory=(("wifi", {"interval": 540}),))
NEW = SdkState(registration=REG.__class__(**{**REG.to_dict(), "token": "token-new"}),
               recent_msg_ids=tuple(f"m{i}" for i in range(40)),
               heartbeat_memory=(("wifi", {"interval": 600}), ("lte", {"interval": 300})),
               webpush_keys=WebPushKeys.generate())


class Killed(BaseException):
    """The process died here (BaseException: nothing in the SDK may swallow it)."""


class FaultyOs:
    """Stands in for the ``os`` module inside pushsdk.state: passes every call through,
    except that it can die before the n-th file-system call (after capturing the directory)
    or fail a given call with an OSError. Writes are cut into 64-byte pieces so that a kill
    can also land in the middle of the data."""

    CALLS = ("open", "write", "fsync", "close", "replace", "link")

    def __init__(self, directory: Path, *, kill_at: int | None = None,
                 fail: dict[str, int] | None = None) -> None:
        self.directory = directory
        self.kill_at = kill_at
        self.fail = fail or {}
        self.calls = 0
        self.snapshot: dict[str, bytes] | None = None

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.CALLS:
            return real

        def call(*args, **kwargs):
            if self.snapshot is None:  # once dead, the cleanup code may run as it likes
                if self.calls == self.kill_at:
                    self.snapshot = capture(self.directory)
                    raise Killed(f"killed before {name}")
                self.calls += 1
                if name in self.fail:
                    raise OSError(self.fail[name], os.strerror(self.fail[name]))
            if name == "write":
                fd, data = args
                return real(fd, bytes(data[:64]))
            return real(*args, **kwargs)
        return call


def capture(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def restore(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def load(directory: Path, key_store=None) -> SdkState | None:
    return FileStateStore(directory / "s.bin", key_store or StaticKeyStore(KEY)).load_sync()


def kill_points(tmp_path: Path, monkeypatch, *, old: SdkState | None,
                key_file: bool = False) -> list[dict[str, bytes]]:
    """Save NEW over ``old`` once per kill point; return the directory at each death."""
    def fresh(name):
        directory = tmp_path / name
        directory.mkdir()
        if old is not None:
            FileStateStore(directory / "s.bin", key_store(directory)).save_sync(old)
        return directory

    def key_store(directory):
        return state_mod.KeyFileKeyStore(directory / "s.bin.key") if key_file else (
            StaticKeyStore(KEY))

    # A clean run counts the calls a save makes.
    directory = fresh("count")
    counter = FaultyOs(directory)
    monkeypatch.setattr(state_mod, "os", counter)
    FileStateStore(directory / "s.bin", key_store(directory)).save_sync(NEW)
    monkeypatch.undo()
    assert counter.calls >= 7  # open, writes, fsync, close, replace, dir open/fsync/close

    snapshots = []
    for point in range(counter.calls):
        directory = fresh(f"kill{point}")
        faulty = FaultyOs(directory, kill_at=point)
        monkeypatch.setattr(state_mod, "os", faulty)
        with pytest.raises(Killed):
            FileStateStore(directory / "s.bin", key_store(directory)).save_sync(NEW)
        monkeypatch.undo()
        snapshots.append(faulty.snapshot)
    return snapshots


@pytest.mark.parametrize("old", [OLD, None], ids=["replacing", "first save"])
def test_a_kill_at_any_step_of_a_save_leaves_the_old_or_the_new_state(tmp_path, monkeypatch,
                                                                        old):
    snapshots = kill_points(tmp_path, monkeypatch, old=old)
    outcomes = []
    for point, files in enumerate(snapshots):
        directory = restore(files, tmp_path / f"after{point}")
        loaded = load(directory)
        assert loaded in (old, NEW), point
        outcomes.append("new" if loaded == NEW else "old")
        # The next save after the restart works, whatever was left behind.
        FileStateStore(directory / "s.bin", StaticKeyStore(KEY)).save_sync(OLD)
        assert load(directory) == OLD
    # Dying before the rename keeps the old state; from the rename on, the new one.
    switch = outcomes.index("new")
    assert outcomes == ["old"] * switch + ["new"] * (len(outcomes) - switch)
    assert switch >= 5  # open, several 64-byte writes, fsync, close all came before it


def test_a_kill_while_the_first_key_is_created_means_register_again(tmp_path, monkeypatch):
    snapshots = kill_points(tmp_path, monkeypatch, old=None, key_file=True)
    for point, files in enumerate(snapshots):
        directory = restore(files, tmp_path / f"after{point}")
        key_store = state_mod.KeyFileKeyStore(directory / "s.bin.key")
        assert load(directory, key_store) in (None, NEW), point
        # Recovery: the key file is complete or absent (then made anew); saving works.
        FileStateStore(directory / "s.bin", key_store).save_sync(OLD)
        assert load(directory, state_mod.KeyFileKeyStore(directory / "s.bin.key")) == OLD


CHILD = textwrap.dedent("""
    import sys
    from pushsdk.state import FileStateStore, SdkState, StaticKeyStore
    store = FileStateStore(sys.argv[1], StaticKeyStore(bytes(range(32))))
    loaded = store.load_sync()
    i = int(loaded.recent_msg_ids[-1]) if loaded else 0
    first = True
    while True:
        i += 1
        store.save_sync(SdkState(recent_msg_ids=tuple(str(n) for n in range(i - 50, i + 1))))
        if first:
            print("saving", flush=True)
            first = False
""")


def test_real_sigkills_of_a_process_saving_in_a_loop(tmp_path):
    path = tmp_path / "s.bin"
    rng = random.Random(3)
    last = 0
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "saving\n"
            time.sleep(rng.uniform(0.02, 0.15))  # let it get into some save, any step of it
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        loaded = FileStateStore(path, StaticKeyStore(KEY)).load_sync()
        assert loaded is not None
        ids = [int(i) for i in loaded.recent_msg_ids]
        assert ids == list(range(ids[-1] - 50, ids[-1] + 1))  # one whole, consistent state
        assert ids[-1] > last  # and a newer one each time
        last = ids[-1]


def test_truncation_to_every_length_means_register_again(tmp_path, caplog):
    directory = tmp_path / "d"
    directory.mkdir()
    store = FileStateStore(directory / "s.bin", StaticKeyStore(KEY))
    store.save_sync(NEW)
    blob = (directory / "s.bin").read_bytes()
    with caplog.at_level(logging.WARNING, logger="pushsdk.state"):
        for length in reversed(range(len(blob))):  # cut in place: cheap on any filesystem
            os.truncate(directory / "s.bin", length)
            assert store.load_sync() is None, length
    assert caplog.text.count("will register again") == len(blob)
    (directory / "s.bin").write_bytes(blob)
    assert store.load_sync() == NEW


def test_every_single_bit_flip_means_register_again(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pushsdk.state")  # 5,000 warnings cost seconds
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    store.save_sync(NEW)
    blob = path.read_bytes()
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(len(blob)):
            for bit in range(8):  # damage one byte in place, load, repair
                os.pwrite(fd, bytes([blob[index] ^ (1 << bit)]), index)
                assert store.load_sync() is None, (index, bit)
            os.pwrite(fd, blob[index:index + 1], index)
    finally:
        os.close(fd)
    assert store.load_sync() == NEW and len(blob) > 600


def test_every_damage_to_the_key_file_means_register_again(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pushsdk.state")
    store = FileStateStore(tmp_path / "s.bin")
    store.save_sync(NEW)
    key_file = tmp_path / "s.bin.key"
    key = key_file.read_bytes()
    faults = 0
    fd = os.open(key_file, os.O_WRONLY)
    try:
        for index in range(len(key)):
            for bit in range(8):  # a wrong key: authentication fails
                os.pwrite(fd, bytes([key[index] ^ (1 << bit)]), index)
                assert FileStateStore(tmp_path / "s.bin").load_sync() is None
                faults += 1
            os.pwrite(fd, key[index:index + 1], index)
    finally:
        os.close(fd)
    assert FileStateStore(tmp_path / "s.bin").load_sync() == NEW
    for length in range(len(key)):  # a short key file is replaced by a new key
        key_file.write_bytes(key[:length])
        assert FileStateStore(tmp_path / "s.bin").load_sync() is None
        assert len(key_file.read_bytes()) == 32
        faults += 1
    assert faults == 256 + 32


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_keeps_the_old_state(tmp_path, monkeypatch, call):
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    store.save_sync(OLD)
    before = path.read_bytes()
    monkeypatch.setattr(state_mod, "os", FaultyOs(tmp_path, fail={call: errno.ENOSPC}))
    with pytest.raises(OSError) as info:
        store.save_sync(NEW)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and store.load_sync() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin"]  # no temp file left


def test_an_unreadable_file_means_register_again(tmp_path, monkeypatch, caplog):
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    store.save_sync(OLD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read fail the way it would
        real = Path.read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with caplog.at_level(logging.WARNING, logger="pushsdk.state"):
        assert store.load_sync() is None
    assert "cannot read state file" in caplog.text and "Permission denied" in caplog.text


async def test_the_client_delivers_through_a_full_disk_and_recovers(nursery, tmp_path,
                                                                    monkeypatch):
    """Real time (the state file is written from a worker thread)."""
    net = MemoryNetwork(nursery)
    registrar, broker = Registrar(), ScriptedBroker()
    net.serve("push.test", 8480, registrar.handle)
    net.serve(MQTT_HOST, MQTT_PORT, broker.handle)
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    got = []
    config = ServerConfig(server_url=SERVER_URL, app_key=APP_KEY, device_id="dev-1")
    inbox = f"push/{APP_KEY}/reg-dev-1"
    with trio.fail_after(20):
        async with PushClient(config, connector=net, state_store=store,
                              strategy=FixedStrategy(300), on_message=got.append) as client:
            await client.wait_connected()
            saved = path.read_bytes()
            monkeypatch.setattr(state_mod, "os", FaultyOs(tmp_path, fail={"write": errno.ENOSPC}))
            for n in (1, 2):
                await broker.current.send(Publish(inbox, push_payload(f"m{n}", "message"),
                                                  qos=1, packet_id=n))
            await broker.wait_for(lambda: len(broker.events(PubAck)) == 2)
            assert path.read_bytes() == saved  # the old state, untouched
            assert client.statistics().state_save_errors == 2
            monkeypatch.undo()  # space again
            await broker.current.send(Publish(inbox, push_payload("m3", "message"), qos=1,
                                              packet_id=3))
            await broker.wait_for(lambda: len(broker.events(PubAck)) == 3)
            stats = client.statistics()
    assert [m.msg_id for m in got] == ["m1", "m2", "m3"]
    assert stats.state_save_errors == 2 and stats.state == "connected"
    assert (await store.load()).recent_msg_ids == ("m1", "m2", "m3")


async def test_a_broken_custom_store_is_counted_not_fatal(nursery, autojump_clock):
    class Broken:
        async def load(self):
            raise RuntimeError("bug in the app's store")

        async def save(self, state):
            raise RuntimeError("bug in the app's store")

    net = MemoryNetwork(nursery)
    net.serve("push.test", 8480, Registrar().handle)
    broker = ScriptedBroker()
    net.serve(MQTT_HOST, MQTT_PORT, broker.handle)
    config = ServerConfig(server_url=SERVER_URL, app_key=APP_KEY, device_id="dev-1")
    got = []
    async with PushClient(config, connector=net, state_store=Broken(),
                          on_message=got.append) as client:
        await client.wait_connected()
        await broker.current.send(Publish(f"push/{APP_KEY}/reg-dev-1",
                                          push_payload("m1", "message"), qos=1, packet_id=1))
        await broker.wait_for(lambda: broker.events(PubAck))
        stats = client.statistics()
    assert [m.msg_id for m in got] == ["m1"]
    assert stats.state_save_errors == 2  # after registering, after the message
