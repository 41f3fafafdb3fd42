"""Performance against the real peers, side by side in one run (issue 16): one table.

::

    flock /tmp/pushsim-bench.lock python -m power_bench.peers [--quick] [--tiny]
        [--sdk-clients N] [--devices N] [--pushes K] [--broadcast-devices N]
        [--handsets N] [--hours H] [--memory-handsets N] [--json FILE]

Installs nothing at run time: paho-mqtt and amqtt come from the ``[test]`` extra, Mosquitto
is ``/usr/sbin/mosquitto``. Every broker is started here on a free loopback port and stopped
by its pid. Three comparisons, each measured in this run, ratios computed from this run:

1. **SDK vs paho-mqtt** (:mod:`power_bench.sdk_vs_paho`), MQTT 3.1.1 and 5.0: N idle clients
   in one process against one Mosquitto; RSS growth per connection, connects per second.
2. **Reference server vs amqtt vs Mosquitto** (:mod:`power_bench.server_scale`): the same N
   plain MQTT devices (client processes of their own) against ``pushsim server --workers 1``,
   amqtt's broker and one Mosquitto, one after the other: broker RSS growth per connection,
   connects per CPU second of the broker ("per core"), single-target QoS 1 pushes received
   and acknowledged per CPU second of the broker (our server: ``POST /v1/push`` over 16
   kept-alive HTTP connections; the brokers: QoS 1 PUBLISHes from one publisher), a broadcast
   to all N. Then a broadcast to ``--broadcast-devices`` devices connected to
   ``pushsim server --workers 3`` (the goal: 50,000 acknowledged in 3 s).
3. **Simulator vs a bare trio ping loop** (:mod:`power_bench.sim_speed`): handset-hours per
   wall second of the world (SimulationClock) against the bare loop under SimulationClock
   and under trio's MockClock; kB per virtual handset (traced allocations).

Exit status 0 whether goals are met or not (a report); a goal missed reads ``MISS``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from power_bench import sdk_vs_paho, server_scale, sim_speed
from power_bench.children import raise_nofile
from power_bench.fleet_scale import machine

BROADCAST_GOAL_DEVICES = 50_000
BROADCAST_WORKERS = 3  # 50,000 connections need 3 processes under 20,000 open files each


@attrs.frozen
class Sizes:
    """How big each comparison is (``--quick``, ``--tiny`` or the default)."""

    sdk_clients: int
    devices: int
    pushes: int
    broadcast_devices: int
    handsets: int
    hours: float
    memory_handsets: int
    #: SDK-vs-paho runs per MQTT version, whose medians the table shows (one run's connect
    #: rates vary by several times: paho's 567-4,815 /s in one day, docs/benchmarks.md).
    sdk_runs: int = 1


# amqtt matches every PUBLISH against every subscription filter it holds (amqtt/broker.py,
# the loop over ``_subscriptions`` per message), so its side bounds --devices and --pushes:
# 5,000 devices and 1,000 pushes were not done in 4 CPU-minutes.
FULL = Sizes(5000, 2000, 500, BROADCAST_GOAL_DEVICES, 500, 12.0, 1000, sdk_runs=3)
QUICK = Sizes(1000, 500, 200, 0, 200, 4.0, 300)
TINY = Sizes(50, 50, 50, 0, 10, 0.5, 10)


@attrs.frozen
class Row:
    """One line of the table: ours, the peer's, ours ÷ peer's, and the goal on the ratio
    (or on ``value`` itself when there is no peer)."""

    figure: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    goal: str = ""
    met: bool | None = None  # None: no goal (a figure for reference)

    @property
    def ratio(self) -> float | None:
        if self.peer_value is None or self.peer_value == 0:
            return None
        return self.value / self.peer_value

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("pass" if self.met else "MISS")


def ratio_row(figure: str, value: float, unit: str, peer: str, peer_value: float,
              goal: str, ok: Callable[[float], bool]) -> Row:
    """A row whose goal is on ours ÷ the peer's (``ok(ratio)``)."""
    ratio = value / peer_value if peer_value else float("inf")
    return Row(figure, value, unit, peer, peer_value, goal, ok(ratio))


# --- 1. SDK vs paho --------------------------------------------------------------------------

def sdk_rows(n: int, log: Callable[[str], None], runs: int = 1
             ) -> tuple[list[Row], dict[str, Any]]:
    """Memory and connect rate of the SDK and paho; with ``runs`` > 1 each figure is the
    median of that many runs (a fresh Mosquitto and fresh processes each), and the row
    names the runs' range."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for version in ("3.1.1", "5"):
        results = []
        for k in range(runs):
            log(f"SDK vs paho-mqtt, MQTT {version}, {n} clients each, run {k + 1} of {runs}")
            result = sdk_vs_paho.run(n, 0.0, version)
            for side in (result["sdk"], result["paho"]):
                if side["connected"] < n:
                    raise RuntimeError(f"only {side['connected']} of {n} clients connected")
            results.append(result)
        raw[version] = results
        for figure, key, unit, scale, goal, ok in (
                ("SDK idle memory per connection", "bytes_per_connection", "KB", 1000,
                 "≤ 1 × paho", lambda r: r <= 1.0),
                ("SDK connect rate", "connect_rate_per_s", "/s", 1, "≥ 1 × paho",
                 lambda r: r >= 1.0)):
            ours = [r["sdk"][key] / scale for r in results]
            paho = [r["paho"][key] / scale for r in results]
            label = f"{figure}, MQTT {version}"
            if runs > 1:
                label += (f" (median of {runs}: ours {_number(min(ours))}–{_number(max(ours))},"
                          f" paho's {_number(min(paho))}–{_number(max(paho))})")
            rows.append(ratio_row(label, statistics.median(ours), unit, "paho-mqtt",
                                  statistics.median(paho), goal, ok))
    return rows, raw


# --- 2. reference server vs amqtt vs Mosquitto ----------------------------------------------

RAMP = 3000.0  # connects per second offered by the client processes


def server_sides(n: int, pushes: int, workdir: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """The three brokers, one after the other, under the same ``n`` devices."""
    sides: dict[str, Any] = {}
    with (workdir / "server.log").open("w") as server_log:
        log(f"reference server (--workers 1), {n} devices, {pushes} pushes")
        sides["server"] = server_scale.run_server_side(n, 1, 0.0, 0.0, RAMP, workdir,
                                                       server_log, pushes=pushes)
    log(f"amqtt, {n} devices, {pushes} pushes")
    sides["amqtt"] = server_scale.run_broker_side([server_scale.Amqtt(workdir)], n, 0.0,
                                                  0.0, RAMP, pushes)
    log(f"Mosquitto, {n} devices, {pushes} pushes")
    sides["mosquitto"] = server_scale.run_mosquitto_side(n, 0.0, 0.0, RAMP, workdir, pushes)
    for name, side in sides.items():
        if side["connect"]["connected"] < n:
            raise RuntimeError(f"{name}: only {side['connect']['connected']} of {n} connected")
        if side["throughput"]["pushes"] < 1:
            raise RuntimeError(f"{name}: no push arrived")
        # Fewer than sent: the side's time was up (60 s); its rate is of those that came.
    return sides


def broadcast_seconds(side: dict[str, Any]) -> float:
    """Seconds to every device holding the broadcast (and, for our server, to every PUBACK
    being recorded)."""
    b = side["broadcast"]
    return float(b.get("acknowledged_s") or b["all_received_s"])


def server_rows(sides: dict[str, Any], n: int) -> list[Row]:
    ours, amqtt, mosq = sides["server"], sides["amqtt"], sides["mosquitto"]
    memory = ours["bytes_per_connection"] / 1000
    return [
        ratio_row("server idle memory per device", memory, "KB", "Mosquitto",
                  mosq["bytes_per_connection"] / 1000, "≤ 4 × Mosquitto", lambda r: r <= 4),
        ratio_row("server idle memory per device", memory, "KB", "amqtt",
                  amqtt["bytes_per_connection"] / 1000, "≤ 0.25 × amqtt", lambda r: r <= 0.25),
        ratio_row("server connects per CPU second", ours["connects_per_cpu_s"], "/CPU-s",
                  "amqtt", amqtt["connects_per_cpu_s"], "≥ 3 × amqtt", lambda r: r >= 3),
        Row("server connects per CPU second", ours["connects_per_cpu_s"], "/CPU-s",
            "Mosquitto", mosq["connects_per_cpu_s"]),
        Row("pushes received of those sent", ours["throughput"]["pushes"], "pushes", "amqtt",
            amqtt["throughput"]["pushes"]),
        ratio_row("server pushes per CPU second (QoS 1, acked)",
                  ours["throughput"]["pushes_per_cpu_s"], "/CPU-s", "amqtt",
                  amqtt["throughput"]["pushes_per_cpu_s"], "≥ 3 × amqtt", lambda r: r >= 3),
        Row("server pushes per CPU second (QoS 1, acked)",
            ours["throughput"]["pushes_per_cpu_s"], "/CPU-s", "Mosquitto",
            mosq["throughput"]["pushes_per_cpu_s"]),
        Row("server pushes per wall second (QoS 1, acked)",
            ours["throughput"]["pushes_per_s"], "/s", "amqtt",
            amqtt["throughput"]["pushes_per_s"]),
        Row(f"broadcast to {n:,}, all acknowledged", broadcast_seconds(ours), "s", "amqtt",
            broadcast_seconds(amqtt)),
        Row(f"broadcast to {n:,}, all acknowledged", broadcast_seconds(ours), "s",
            "Mosquitto", broadcast_seconds(mosq)),
    ]


def big_broadcast(n: int, workdir: Path, log: Callable[[str], None]) -> tuple[Row, Any]:
    """A broadcast to ``n`` devices on ``pushsim server --workers 3``; its row."""
    log(f"reference server (--workers {BROADCAST_WORKERS}), broadcast to {n} devices")
    workdir = workdir / "broadcast"  # a database of its own
    workdir.mkdir()
    with (workdir / "server.log").open("w") as server_log:
        side = server_scale.run_server_side(n, BROADCAST_WORKERS, 0.0, 0.0, RAMP, workdir,
                                            server_log, pushes=100)
    seconds = broadcast_seconds(side)
    acked = side["broadcast"]["delivered"]
    # Not all acknowledged within the phase's 120 s: a miss, with how many were.
    what = "all acknowledged" if acked >= n else f"{acked:,} acknowledged when time was up"
    note = "" if n >= BROADCAST_GOAL_DEVICES else f" (measured at {n:,})"
    met = None if n < BROADCAST_GOAL_DEVICES else acked >= n and seconds <= 3.0
    return Row(f"broadcast to {n:,} on --workers {BROADCAST_WORKERS}, {what}", seconds, "s",
               goal=f"≤ 3 s at 50,000{note}", met=met if acked >= n else False), side


# --- 3. simulator -----------------------------------------------------------------------------

INTERVAL = 270.0


def sim_rows(sizes: Sizes, log: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    handsets, hours = sizes.handsets, sizes.hours
    handset_hours = handsets * hours
    log(f"simulator: {handsets} handsets x {hours:g} h, world and bare loops")
    bare_sim = sim_speed.bare_loop(handsets, hours, INTERVAL, "sim")
    bare_mock = sim_speed.bare_loop(handsets, hours, INTERVAL, "mock")
    world = sim_speed.world(handsets, hours, INTERVAL, "sim")
    speed = handset_hours / world[0]
    rows = [Row(f"simulator speed vs bare loop ({name})", speed, "handset-h/s",
                f"bare loop, {name}", handset_hours / bare[0], "≥ 0.8 × bare",
                speed / (handset_hours / bare[0]) >= 0.8)
            for name, bare in (("SimulationClock", bare_sim), ("MockClock", bare_mock))]
    log(f"simulator: memory of a {sizes.memory_handsets}-handset world")
    held, _stats = sim_speed.world_memory(sizes.memory_handsets, 1.0, INTERVAL)
    per_handset = held / sizes.memory_handsets / 1000
    rows.append(Row("simulator memory per virtual handset", per_handset, "kB",
                    goal="≤ 10 kB", met=per_handset <= 10.0))
    raw = {"bare_sim": bare_sim, "bare_mock": bare_mock, "world": world, "held": held}
    return rows, raw


# --- the table --------------------------------------------------------------------------------

def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if value == 0 or abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"  # a few milliseconds must not print as 0.00


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (also readable in a terminal)."""
    lines = ["| figure | ours | peer | peer's | ours ÷ peer's | goal | verdict |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.figure} | {_number(row.value)} {row.unit} | {row.peer or '—'} "
                     f"| {_number(row.peer_value)} | {_number(row.ratio)} "
                     f"| {row.goal or '—'} | {row.verdict or '—'} |")
    return "\n".join(lines)


NOT_MEASURED = ("not measured by this command: 100,000 handsets x 24 h with --workers 2 in "
                "<= 30 min (pushsim run, about half an hour) and Dask efficiency per added "
                "worker (docs/distributed.md)")


def run(sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Every comparison of ``sizes``; the rows and the raw figures."""
    raise_nofile()
    started, load_before = time.time(), os.getloadavg()
    rows, raw = sdk_rows(sizes.sdk_clients, log, sizes.sdk_runs)
    report: dict[str, Any] = {"machine": machine(), "sizes": attrs.asdict(sizes),
                              "sdk": raw}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        sides = server_sides(sizes.devices, sizes.pushes, Path(tmp), log)
        rows += server_rows(sides, sizes.devices)
        report["server"] = sides
        if sizes.broadcast_devices:
            row, report["broadcast"] = big_broadcast(sizes.broadcast_devices, Path(tmp), log)
            rows.append(row)
    sim, report["sim"] = sim_rows(sizes, log)
    rows += sim
    report.update(rows=[{**attrs.asdict(r), "ratio": r.ratio, "verdict": r.verdict}
                        for r in rows],
                  load_before=load_before, load_after=os.getloadavg(),
                  seconds=round(time.time() - started, 1))
    return report


def render(report: dict[str, Any]) -> str:
    rows = [Row(**{k: v for k, v in r.items() if k not in ("ratio", "verdict")})
            for r in report["rows"]]
    m = report["machine"]
    missed = sum(1 for r in rows if r.met is False)
    return "\n".join([
        table(rows), "",
        f"{missed} of {sum(1 for r in rows if r.met is not None)} goals MISSED" if missed
        else "every goal met",
        NOT_MEASURED,
        f"machine: {m['nproc']} cores, Python {m['python']}, {m['platform']}, {m['mosquitto']}",
        "load average before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}; {:.0f} s".format(
            *report["load_before"], *report["load_after"], report["seconds"])])


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = TINY if args.tiny else QUICK if args.quick else FULL
    chosen = {f.name: getattr(args, f.name) for f in attrs.fields(Sizes)
              if getattr(args, f.name) is not None}
    return attrs.evolve(base, **chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m power_bench.peers",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute or two")
    parser.add_argument("--tiny", action="store_true", help="seconds: checks the command")
    for field in attrs.fields(Sizes):
        kind = float if field.type in (float, "float") else int
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                            metavar="N")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = parser.parse_args(argv)
    sizes = sizes_from(args)
    if min(sizes.sdk_clients, sizes.devices, sizes.pushes, sizes.handsets,
           sizes.memory_handsets) < 1 or sizes.hours <= 0 or sizes.broadcast_devices < 0:
        parser.error("sizes must be positive (--broadcast-devices 0: no big broadcast)")

    def log(message: str) -> None:
        print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    try:
        report = run(sizes, log)
    except RuntimeError as exc:
        print(f"python -m power_bench.peers: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
