"""Fuzz harness: the SDK's state file, read through its public API (``pushsdk.state``).

A loaded state file must be a state or ``None`` ("register again"), never an exception:
arbitrary bytes as the file, and — since those almost never authenticate — arbitrary
bytes *sealed with the right key* (``encrypt``), which reach the JSON and record parsing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pushsdk.state import FileStateStore, SdkState, StaticKeyStore, encrypt

KEY = bytes(range(32))
_FILE: list[Path] = []


def configure(args: list[str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fuzz-state-"))
    _FILE.append(directory / "state.bin")


def one_input(data: bytes) -> None:
    if not data:
        return
    sealed, content = data[0] & 1, data[1:]  # the first byte: sealed with the key or raw
    path = _FILE[0]
    path.write_bytes(encrypt(KEY, content) if sealed else content)
    state = FileStateStore(path, StaticKeyStore(KEY)).load_sync()
    if state is not None:
        if not isinstance(state, SdkState):
            raise AssertionError(f"load_sync returned {state!r}")
        SdkState.from_json(state.to_json())  # what loads also saves and loads again
