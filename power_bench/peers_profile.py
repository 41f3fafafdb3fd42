"""Where the bytes and the time of an idle connection go, for :mod:`power_bench.peers`'
figures that miss their goals (not part of its timed run: profilers slow what they watch).

::

    python -m power_bench.peers_profile [--clients 2000] [--mqtt-version 3.1.1|5]

- **SDK**: N ``PushClient``s against one Mosquitto in this process
  (:func:`power_bench.sdk_vs_paho.sdk_side`): the ``tracemalloc`` top 10 (by line) of what
  the idle clients hold, then a separate run under ``cProfile`` (top 10 by own time).
- **Reference server** (``pushsim server --workers 1`` in a child process with the
  profilers armed by SIGUSR1: the first signal takes the baseline, the second the result):
  the same for N plain MQTT devices connecting and sitting idle
  (:func:`power_bench.server_scale.start_clients`).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from power_bench import sdk_vs_paho, server_scale
from simulator.server_child import LOOPBACK_LIMITS
from power_bench.children import Mosquitto, raise_nofile, select_readable

TOP = 10


def memory_top(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> str:
    """The growth from ``before`` to ``after``, per connection: total and top lines."""
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    lines = [f"traced growth {total / n / 1000:.2f} kB per connection ({n} connections)"]
    for stat in stats[:TOP]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size_diff / n:8.0f} B  {stat.count_diff / n:6.2f} blocks  "
                     f"{_short(frame.filename)}:{frame.lineno}")
    return "\n".join(lines)


def cpu_top(profile: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(TOP)
    text = out.getvalue()
    body = text[text.index("ncalls"):] if "ncalls" in text else text
    return "\n".join(_short(line) for line in body.strip().splitlines())


_PREFIX = re.compile(r"\S*?/(?:site-packages|lib/python3\.\d+)/|"
                     + re.escape(str(Path(__file__).resolve().parents[1])) + "/")


def _short(text: str) -> str:
    """``text`` with the install and checkout prefixes of its paths cut off."""
    return _PREFIX.sub("", text)


# --- the SDK, in this process -----------------------------------------------------------------

def profile_sdk(n: int, version: str) -> str:
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="peers-profile-") as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            taken: list[tracemalloc.Snapshot] = []
            sdk_vs_paho.sdk_side(n, broker.port, 0.0, version,
                                 at_idle=lambda: taken.append(tracemalloc.take_snapshot()))
            tracemalloc.stop()
            memory = memory_top(before, taken[0], n)
            broker.stop()
            broker = Mosquitto(Path(tmp))  # fresh sessions for the CPU run
            profile = cProfile.Profile()
            profile.enable()
            figures = sdk_vs_paho.sdk_side(n, broker.port, 0.0, version)
            profile.disable()
        finally:
            broker.stop()
    return (f"SDK, MQTT {version}, {n} clients\n{memory}\n\ncProfile of connecting "
            f"(and 2 s idle; {figures['connected']} connected in {figures['seconds']:.2f} s "
            f"under the profiler), top {TOP} by own time:\n{cpu_top(profile)}")


# --- the server, in a child process -----------------------------------------------------------

def server_child(kind: str, out: str, argv: list[str]) -> None:
    """Run ``pushsim server argv`` with a profiler (``kind``) armed by SIGUSR1."""
    marks: list[Any] = []
    profile = cProfile.Profile()
    if kind == "memory":
        tracemalloc.start(1)

    def on_signal(_signum: int, _frame: object) -> None:
        if kind == "memory":
            import gc
            gc.collect()
            marks.append(tracemalloc.take_snapshot())
            if len(marks) == 2:
                Path(out).write_text(json.dumps(
                    memory_top(marks[0], marks[1], int(os.environ["PEERS_N"]))))
        elif not marks:
            marks.append(True)
            profile.enable()
        else:
            profile.disable()
            Path(out).write_text(json.dumps(cpu_top(profile)))

    signal.signal(signal.SIGUSR1, on_signal)
    from simulator._entry import main

    sys.argv = ["pushsim", "server", *argv]
    sys.exit(main())


def profile_server(n: int, kind: str, workdir: Path) -> str:
    db = str(workdir / f"{kind}.db")
    app_key, _secret, devices = server_scale.prepare_db(db, n)
    out = workdir / f"{kind}.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "power_bench.peers_profile", "_server", kind, str(out), "--db",
         db, "--http-port", "0", "--mqtt-port", "0", "--log-level", "warning",
         *LOOPBACK_LIMITS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PEERS_N": str(n)})
    procs: list[server_scale.ClientProcess] = []
    try:
        if not select_readable([server.stdout], 60):
            raise RuntimeError("pushsim server did not start")
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        port = int(info["mqtt"].rsplit(":", 1)[1])
        time.sleep(1.0)
        server.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        clients = [[i, "127.0.0.1", port, server_scale.source_ip(i, n), rid, app_key, token,
                    [f"push/{app_key}/{rid}"]] for i, (rid, token) in enumerate(devices)]
        procs, connect = server_scale.start_clients(clients, 3000.0, timeout=240)
        time.sleep(3.0)
        server.send_signal(signal.SIGUSR1)
        deadline = time.time() + 120
        while not out.exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        top: str = json.loads(out.read_text())
    finally:
        for p in procs:
            p.stop()
        server.terminate()
        server.wait(timeout=60)
    what = "tracemalloc" if kind == "memory" else f"cProfile, top {TOP} by own time"
    return (f"reference server (--workers 1), {n} devices ({connect['connected']} connected "
            f"in {connect['seconds']} s), {what}:\n{top}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_server"]:
        server_child(argv[1], argv[2], argv[3:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m power_bench.peers_profile")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--mqtt-version", choices=("3.1.1", "5"), default="3.1.1")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be positive")
    raise_nofile()
    print(profile_sdk(args.clients, args.mqtt_version), flush=True)
    with tempfile.TemporaryDirectory(prefix="peers-profile-") as tmp:
        for kind in ("memory", "cpu"):
            print("\n" + profile_server(args.clients, kind, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
