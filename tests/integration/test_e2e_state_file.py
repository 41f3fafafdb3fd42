"""A damaged ``--state`` file between runs of ``pushsdk listen``: logged, registered again —
and, since the installation's device key was in it, refused by the server (device identity:
knowing the app key and the device id is no proof), with a one-line error and no traceback.
The app server frees the device id by deleting the registration."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from integration_harness import ProcessGroup, pushsdk_register

pytestmark = pytest.mark.timeout(60)


def flip(position: int) -> Callable[[bytes], bytes]:
    def corrupt(blob: bytes) -> bytes:
        data = bytearray(blob)
        data[position] ^= 0x10
        return bytes(data)
    return corrupt


# What to do to a good state file, and the reason the SDK must give for not using it.
CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "emptied": (lambda blob: b"", "file is truncated"),
    "cut in half": (lambda blob: blob[: len(blob) // 2], "authentication failed"),
    "bit flipped in the ciphertext": (flip(40), "authentication failed"),
    "bit flipped in the tag": (flip(-1), "authentication failed"),
    "bit flipped in the nonce": (flip(6), "authentication failed"),
    "version byte changed": (lambda blob: blob[:4] + b"\x02" + blob[5:],
                             "unsupported state format version 2"),
    "overwritten with random bytes": (lambda blob: os.urandom(len(blob)),
                                      "not a pushsdk state file"),
    "overwritten with text": (lambda blob: b'{"registration": null, "recent_msg_ids": []}\n',
                              "not a pushsdk state file"),
}


def _delete(server, app: dict[str, str], rid: str) -> None:
    """The app server frees the device id (HTTP Basic master secret)."""
    from support.http import basic_auth

    status, body = server.api.request("DELETE", f"/v1/devices/{rid}", headers=basic_auth(app))
    assert status == 200, body


def _refused_after(listener, name: str) -> None:
    """A listener that lost the installation's key: it registers again, the server refuses
    (the device id is bound to the lost key), one line, exit 1, no traceback."""
    assert listener.wait_exit() == 1, (name, listener.describe())
    listener.assert_no_traceback()
    errors = [line for line in listener.stderr if line.startswith("pushsdk: error:")]
    assert len(errors) == 1 and "device_bound" in errors[0], (name, listener.stderr)


def test_damaged_state_file_means_register_again(procs: ProcessGroup,
                                                 tmp_path: Path) -> None:
    """Each damage is logged once and the SDK registers again. The device key was in the
    file, so the server refuses to hand the bound registration to what is now another
    installation (403 device_bound, a one-line error); once the app server deletes the old
    registration, the device registers afresh and carries on."""
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    rid = pushsdk_register(procs, server, app, "phone-1", state)["registration_id"]
    good = state.read_bytes()

    for name, (corrupt, reason) in CORRUPTIONS.items():
        state.write_bytes(corrupt(good))
        listener = procs.listener(server, app, "phone-1", state, exit_after=1)
        _refused_after(listener, name)
        warning = [line for line in listener.stderr if "unusable state file" in line]
        assert len(warning) == 1 and reason in warning[0], (name, listener.stderr)
        assert "will register again" in warning[0]

    # With a good file the same installation still proves itself.
    state.write_bytes(good)
    msg_id = server.api.push_data(app, "to the same registration",
                                  audience={"registration_id": [rid]})
    listener = procs.listener(server, app, "phone-1", state, exit_after=1)
    assert listener.wait_exit() == 0, listener.describe()
    assert listener.msg_ids() == [msg_id]

    # A damaged file, then the app server frees the device id: a new registration.
    state.write_bytes(b"")
    _delete(server, app, rid)
    listener = procs.listener(server, app, "phone-1", state, exit_after=1)
    listener.wait_connected()
    msg_id = server.api.push_data(app, "after a fresh start")
    assert listener.wait_exit() == 0, listener.describe()
    assert listener.msg_ids() == [msg_id]
    from pushsdk.state import FileStateStore

    saved = FileStateStore(state).load_sync()
    assert saved is not None and saved.registration is not None
    assert saved.registration.registration_id != rid and saved.device_key is not None


def test_damaged_key_file_means_register_again(procs: ProcessGroup, tmp_path: Path) -> None:
    """The key (``<state>.key``) damaged: a new key is made, the old file cannot be opened,
    the device registers again, and the server refuses it (the installation key is lost)."""
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    pushsdk_register(procs, server, app, "phone-1", state)
    key = Path(f"{state}.key")
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o600
    key.write_bytes(b"short")

    listener = procs.listener(server, app, "phone-1", state, exit_after=1)
    _refused_after(listener, "damaged key")
    assert listener.stderr_count("is damaged; creating a new key") == 1
    assert listener.stderr_count("authentication failed") == 1
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
