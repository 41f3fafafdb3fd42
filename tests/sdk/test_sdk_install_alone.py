"""The SDK installs alone: a fresh venv, ``pip install <project>`` with no extras, then that
venv's python runs a small SDK program that receives a message from a real Mosquitto — and
none of the simulator's dependencies (matplotlib, psutil, tqdm) came along.

Slow (a real pip install with the core dependencies; PyPI or the local wheel cache), but part
of the suite: the packaging is what app developers meet first."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from sdk_harness import mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SIM_ONLY = ("matplotlib", "psutil", "tqdm", "numpy", "PIL", "simulator_deps_marker")

PROGRAM = textwrap.dedent("""
    import sys
    import trio
    from pushsdk import BrokerConfig, PushClient

    async def main(port):
        config = BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}", client_id="alone",
                                       topics=["hello"], clean_session=True)
        async with PushClient(config) as client, client.messages() as messages, \\
                PushClient(BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}",
                                                 client_id="sender")) as sender:
            await client.wait_connected(timeout=10)
            await sender.publish("hello", b"from a core install", qos=1)
            with trio.fail_after(10):
                async for message in messages:
                    print(message.topic, message.text)
                    return

    trio.run(main, int(sys.argv[1]))
""")


def _copy_project(target: Path) -> Path:
    """The project's sources, without caches or build products (the work tree stays clean:
    pip builds in the copy)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".venv",
                                    "*.pyc")
    for name in ("pushsdk", "simulator", "power_bench"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    return target


def test_core_install_is_the_sdk_alone(tmp_path):
    project = _copy_project(tmp_path / "project")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(project)],
                             capture_output=True, text=True, timeout=540)
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run([str(python), "-c", (
        "import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) "
        f"is not None for m in {SIM_ONLY!r}}}))")], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert '"matplotlib": false' in probe.stdout and '"psutil": false' in probe.stdout
    assert '"tqdm": false' in probe.stdout, probe.stdout
    # pushsim says what to install, in one line, without a traceback.
    sim = subprocess.run([str(env_dir / "bin" / "pushsim"), "demo"], capture_output=True,
                         text=True)
    assert sim.returncode == 2
    assert sim.stderr.count("\n") == 1 and "pip install 'pushsim[sim]'" in sim.stderr
    # pushsdk works with the core install alone.
    help_run = subprocess.run([str(env_dir / "bin" / "pushsdk"), "publish", "--help"],
                              capture_output=True, text=True)
    assert help_run.returncode == 0 and "--retain" in help_run.stdout
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    with mosquitto(tmp_path) as port:
        run = subprocess.run([str(python), str(program), str(port)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hello from a core install\n"
    assert sys.prefix != str(env_dir)  # (the suite itself runs in the dev venv)
