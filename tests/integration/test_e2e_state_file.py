"""A damaged ``--state`` file between runs of ``pushsdk listen``: logged, registered again
(the same registration, since registration is idempotent per device id), and the push that
waited on the server still arrives. Exit 0, no traceback."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from integration_harness import ProcessGroup, procs, pushsdk_register  # noqa: F401

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


def test_damaged_state_file_means_register_again(procs: ProcessGroup,
                                                 tmp_path: Path) -> None:
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    rid = pushsdk_register(procs, server, app, "phone-1", state)["registration_id"]
    audience = {"registration_id": [rid]}

    for name, (corrupt, reason) in CORRUPTIONS.items():
        state.write_bytes(corrupt(state.read_bytes()))
        # Pushed to the registration id while the device is away: it can only arrive if
        # the listener comes back as the same registration.
        msg_id = server.api.push_data(app, name, audience=audience)
        listener = procs.listener(server, app, "phone-1", state, exit_after=1)
        assert listener.wait_exit() == 0, (name, listener.describe())
        assert listener.msg_ids() == [msg_id], name
        listener.assert_no_traceback()
        warning = [line for line in listener.stderr if "unusable state file" in line]
        assert len(warning) == 1 and reason in warning[0], (name, listener.stderr)
        assert "will register again" in warning[0]
        server.api.wait_status(app, msg_id, delivered=1)

    # Each run wrote a good file again: it loads, and holds the same registration.
    from pushsdk.state import FileStateStore

    saved = FileStateStore(state).load_sync()
    assert saved is not None and saved.registration is not None
    assert saved.registration.registration_id == rid


def test_damaged_key_file_means_register_again(procs: ProcessGroup, tmp_path: Path) -> None:
    """The key (``<state>.key``) damaged: a new key is made, the old file cannot be opened,
    the device registers again and carries on."""
    server = procs.server(tmp_path / "push.db")
    app = server.api.create_app()
    state = tmp_path / "state.bin"
    rid = pushsdk_register(procs, server, app, "phone-1", state)["registration_id"]
    key = Path(f"{state}.key")
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o600
    key.write_bytes(b"short")

    msg_id = server.api.push_data(app, "after a new key", audience={"registration_id": [rid]})
    listener = procs.listener(server, app, "phone-1", state, exit_after=1)
    assert listener.wait_exit() == 0, listener.describe()
    assert listener.msg_ids() == [msg_id]
    listener.assert_no_traceback()
    assert listener.stderr_count("is damaged; creating a new key") == 1
    assert listener.stderr_count("authentication failed") == 1
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
