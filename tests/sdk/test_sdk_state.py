import errno
import logging
import os
import stat

import pytest
import trio

from pushsdk import state as state_mod
from pushsdk.registration import Registration
from pushsdk.state import (
    DEDUP_WINDOW,
    MAX_NETWORKS,
    FileStateStore,
    KeyFileKeyStore,
    MemoryStateStore,
    SdkState,
    StaticKeyStore,
)

REG = Registration(
    server_url="https://push.example:8480", app_key="k", device_id="d1",
    registration_id="r1", token="secret-token", token_expires_at=1.8e9,
    inbox="push/k/r1", mqtt_host="mqtt.example", mqtt_port=8883, mqtt_tls=True,
)
STATE = SdkState(
    registration=REG,
    recent_msg_ids=("m1", "m2"),
    heartbeat_memory=(("wifi_home", {"interval": 540, "stable": True}),),
)
KEY = bytes(range(32))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_round_trip_and_mode_0600(tmp_path):
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        store = FileStateStore(tmp_path / "s.bin")
        assert await store.load() is None
        await store.save(STATE)
    finally:
        os.umask(old_umask)
    assert await FileStateStore(tmp_path / "s.bin").load() == STATE
    assert mode(tmp_path / "s.bin") == 0o600
    assert mode(tmp_path / "s.bin.key") == 0o600
    assert len((tmp_path / "s.bin.key").read_bytes()) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin", "s.bin.key"]  # no temp left


async def test_contents_are_encrypted(tmp_path):
    store = FileStateStore(tmp_path / "s.bin", StaticKeyStore(KEY))
    await store.save(STATE)
    blob = (tmp_path / "s.bin").read_bytes()
    assert blob.startswith(b"PSDK\x01")
    for secret in (b"secret-token", b"mqtt.example", b"wifi_home", b"r1"):
        assert secret not in blob
    await store.save(STATE)
    assert (tmp_path / "s.bin").read_bytes()[5:17] != blob[5:17]  # fresh nonce each time


async def test_replacing_a_loose_file_makes_it_0600(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    await FileStateStore(path, StaticKeyStore(KEY)).save(STATE)
    assert mode(path) == 0o600


def _damage(blob, how):
    if how == "truncated":
        return blob[: len(blob) // 2]
    if how == "tiny":
        return blob[:10]
    if how == "empty":
        return b""
    if how == "flipped":
        return blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]
    if how == "header":  # version byte changed: bound by the AAD, and refused up front
        return blob[:4] + b"\x02" + blob[5:]
    if how == "magic":
        return b"XXXX" + blob[4:]
    if how == "garbage":
        return os.urandom(200)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "tiny", "empty", "flipped", "header", "magic",
                                 "garbage"])
async def test_damaged_file_means_no_state(tmp_path, caplog, how):
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    await store.save(STATE)
    path.write_bytes(_damage(path.read_bytes(), how))
    with caplog.at_level(logging.WARNING, logger="pushsdk.state"):
        assert await store.load() is None
    assert "will register again" in caplog.text


async def test_wrong_key_means_no_state(tmp_path):
    await FileStateStore(tmp_path / "s.bin", StaticKeyStore(KEY)).save(STATE)
    assert await FileStateStore(tmp_path / "s.bin", StaticKeyStore(bytes(32))).load() is None


async def test_lost_key_file_means_no_state_and_a_new_key(tmp_path):
    store = FileStateStore(tmp_path / "s.bin")
    await store.save(STATE)
    (tmp_path / "s.bin.key").unlink()
    assert await FileStateStore(tmp_path / "s.bin").load() is None
    assert len((tmp_path / "s.bin.key").read_bytes()) == 32


async def test_damaged_key_file_is_replaced(tmp_path):
    (tmp_path / "k").write_bytes(b"short")
    ks = KeyFileKeyStore(tmp_path / "k")
    key = ks.load_key()
    assert len(key) == 32 and (tmp_path / "k").read_bytes() == key
    assert KeyFileKeyStore(tmp_path / "k").load_key() == key


async def test_valid_encryption_of_invalid_contents_means_no_state(tmp_path):
    path = tmp_path / "s.bin"
    for plaintext in (b"not json", b"[1, 2]", b'{"recent_msg_ids": [1]}',
                      b'{"registration": {"token": "x"}}', b'{"heartbeat_memory": [["a"]]}'):
        path.write_bytes(state_mod.encrypt(KEY, plaintext))
        assert await FileStateStore(path, StaticKeyStore(KEY)).load() is None


async def test_unreadable_file_means_no_state(tmp_path):
    (tmp_path / "s.bin").mkdir()  # reading a directory fails with an OSError
    assert await FileStateStore(tmp_path / "s.bin", StaticKeyStore(KEY)).load() is None


async def test_full_disk_keeps_the_old_state(tmp_path, monkeypatch):
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    await store.save(STATE)
    before = path.read_bytes()
    real_write = os.write

    def write_then_fill_the_disk(fd, data):
        real_write(fd, bytes(data[:3]))  # a partial write first, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_mod.os, "write", write_then_fill_the_disk)
    with pytest.raises(OSError) as info:
        await store.save(SdkState())
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert await store.load() == STATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin"]  # temp file removed


async def test_failure_at_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "s.bin"
    store = FileStateStore(path, StaticKeyStore(KEY))
    await store.save(STATE)

    def fail(*args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(state_mod.os, "replace", fail)
    with pytest.raises(OSError):
        await store.save(SdkState())
    monkeypatch.undo()
    assert await store.load() == STATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin"]


async def test_file_io_runs_off_the_event_loop(tmp_path, monkeypatch):
    threads = []
    real = state_mod.write_atomically

    def spy(path, data):
        import threading
        threads.append(threading.current_thread() is threading.main_thread())
        real(path, data)

    monkeypatch.setattr(state_mod, "write_atomically", spy)
    await FileStateStore(tmp_path / "s.bin", StaticKeyStore(KEY)).save(STATE)
    assert threads == [False]


async def test_memory_store():
    store = MemoryStateStore()
    assert await store.load() is None
    await store.save(STATE)
    assert await store.load() is STATE
    assert store.saves == 1


def test_dedup_window_is_bounded_and_ordered():
    s = SdkState()
    for i in range(DEDUP_WINDOW + 5):
        s = s.with_msg_id(f"m{i}")
    assert len(s.recent_msg_ids) == DEDUP_WINDOW
    assert s.recent_msg_ids[0] == "m5" and s.recent_msg_ids[-1] == f"m{DEDUP_WINDOW + 4}"
    s = s.with_msg_id("m5")  # seen again: moves to the newest end
    assert s.recent_msg_ids[-1] == "m5" and len(s.recent_msg_ids) == DEDUP_WINDOW


def test_network_memory_is_bounded_oldest_evicted():
    s = SdkState()
    for i in range(MAX_NETWORKS + 3):
        s = s.with_memory(f"net{i}", {"i": i})
    assert len(s.heartbeat_memory) == MAX_NETWORKS
    assert s.memory_for("net0") is None and s.memory_for("net3") == {"i": 3}
    s = s.with_memory("net3", {"i": 33})  # updated: becomes the newest
    s = s.with_memory("new", {"i": -1})
    assert s.memory_for("net3") == {"i": 33} and s.memory_for("net4") is None
    assert s.with_memory("new", None).memory_for("new") is None


def test_json_round_trip():
    assert SdkState.from_json(STATE.to_json()) == STATE
    assert SdkState.from_json(SdkState().to_json()) == SdkState()


def test_static_key_must_be_32_bytes():
    with pytest.raises(ValueError):
        StaticKeyStore(b"short")
    assert "0102" not in repr(StaticKeyStore(KEY))


async def test_concurrent_saves_leave_a_valid_file(tmp_path):
    store = FileStateStore(tmp_path / "s.bin", StaticKeyStore(KEY))
    states = [SdkState(recent_msg_ids=(f"m{i}",)) for i in range(10)]
    async with trio.open_nursery() as nursery:
        for s in states:
            nursery.start_soon(store.save, s)
    assert await store.load() in states


async def test_concurrent_first_saves_agree_on_one_key(tmp_path):
    # Two stores (think: two processes) creating the key at the same time end up with one key.
    stores = [FileStateStore(tmp_path / "s.bin") for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(store.save, STATE)
    keys = {store.key_store.load_key() for store in stores}
    assert keys == {(tmp_path / "s.bin.key").read_bytes()}
    assert await FileStateStore(tmp_path / "s.bin").load() == STATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin", "s.bin.key"]
