"""Every ``python`` code block in docs/sdk.md runs, as a program of its own, against a real
Mosquitto and the reference server on loopback (the addresses in the text are replaced by
theirs); the first one is also type-checked with ``mypy --strict``."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk_harness import mosquitto

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sdk.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)

#: What each block prints (a line containing each text, in order).
EXPECTED = [
    ["demo/hello hello from trio qos 1"],
    ["got demo/aio hello from asyncio"],
    ["demo/blocking hello from a script"],
    ["token", "connected as", "notification: Hi there"],
    ["granted (1, 0)", "sensors/7/temp 21.5 1 False"],
    ["cannot connect to 127.0.0.1:1: Connection refused", "transport"],
]


def test_every_block_is_accounted_for():
    assert len(BLOCKS) == len(EXPECTED)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("servers")
    with mosquitto(tmp) as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "server", "--db", ":memory:", "--http-port",
             "0", "--mqtt-port", "0", "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp)
        try:
            assert proc.stdout is not None
            urls = json.loads(proc.stdout.readline())
            request = urllib.request.Request(
                urls["http"] + "/v1/apps", data=b'{"name": "docs"}', method="POST",
                headers={"Authorization": f"Bearer {urls['admin_token']}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                app = json.loads(answer.read())
            yield {"broker": f"mqtt://127.0.0.1:{port}", "http": urls["http"],
                   "app_key": app["app_key"], "master_secret": app["master_secret"]}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _program(block: str, servers: dict[str, str]) -> str:
    return (block.replace("mqtt://127.0.0.1:1883", servers["broker"])
            .replace("http://127.0.0.1:8480", servers["http"])
            .replace("<app_key>", servers["app_key"]))


def _push_until(servers: dict[str, str], stop: threading.Event) -> None:
    """Push a notification to alias alice every 0.3 s (the device may not exist yet)."""
    import base64
    auth = base64.b64encode(f"{servers['app_key']}:{servers['master_secret']}".encode())
    body = json.dumps({"audience": {"alias": ["alice"]}, "options": {"ttl": 0},
                       "notification": {"title": "Hi", "body": "there"}}).encode()
    while not stop.wait(0.3):
        request = urllib.request.Request(servers["http"] + "/v1/push", data=body,
                                         method="POST",
                                         headers={"Authorization": b"Basic " + auth})
        with urllib.request.urlopen(request, timeout=10):
            pass


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_doc_block_runs(index, servers, tmp_path):
    program = tmp_path / f"block{index}.py"
    program.write_text(_program(BLOCKS[index], servers))
    stop = threading.Event()
    pusher = threading.Thread(target=_push_until, args=(servers, stop), daemon=True)
    if "ServerConfig" in BLOCKS[index]:
        pusher.start()
    try:
        started = time.monotonic()
        run = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    finally:
        stop.set()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    position = 0
    for text in EXPECTED[index]:
        found = next((i for i in range(position, len(lines)) if text in lines[i]), None)
        assert found is not None, (text, run.stdout, run.stderr)
        position = found + 1
    # Only the SDK's own log lines (a WARNING from the third failure in a row), no traceback.
    assert "Traceback" not in run.stderr, run.stderr
    assert all(line.startswith("lost: ") for line in run.stderr.splitlines()), run.stderr
    assert time.monotonic() - started < 60


def test_the_first_example_is_type_checked(tmp_path):
    program = tmp_path / "first.py"
    program.write_text(BLOCKS[0])
    # The project's mypy settings: strict, the codec and the strategies checked as imports.
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(tmp_path / "cache"), str(program)],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "MYPYPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout + run.stderr


def test_pushsdk_is_mypy_strict_clean(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                          str(tmp_path / "cache")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout
