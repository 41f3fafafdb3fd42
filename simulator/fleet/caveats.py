"""The ``warnings`` of fleet.json: whatever makes a run's figures doubtful.

Each is one sentence that says what happened and what it does to the figures. Thresholds:

- the generator fell behind: pushes sent more than 0.1 s after their schedule exceed 1 %
  of those sent, or one was more than 1 s late (:data:`LAG_WARN_S`);
- a worker process was CPU-bound (≥ 90 % of a core) for 3 s or more;
- the push rate asked for was not reached (achieved < 95 % over the real time taken);
- the ramp was not kept (a handset started more than 1 s after its time) or was not reached
  (handsets connected at under 90 % of the asked start rate);
- the sampler ran more than 1 s late (the gauges in the timeline are coarse then);
- shards started more than 0.5 s (or 1 % of the run) apart;
- a worker or shard is missing, the run was stopped early, pushes of an earlier run arrived,
  the target's sessions or devices could not all be removed.
"""
from __future__ import annotations

import math
from typing import Any

from .results import FleetResults

__all__ = ["LAG_WARN_S", "warnings_of"]

LAG_WARN_S = 1.0
LATE_SHARE = 0.01
CPU_BUSY_S = 3
RATE_SHARE = 0.95
RAMP_SHARE = 0.90
SKEW_S = 0.5


def warnings_of(results: FleetResults, connect: dict[str, Any],
                pushes: dict[str, Any]) -> list[str]:
    found: list[str] = []
    found += _generator(results, pushes)
    found += _ramp(results, connect)
    found += _shards(results)
    if pushes["stale"]:
        found.append(f"{pushes['stale']:,} messages of an earlier run (or not the fleet's) "
                     "reached handsets: sessions left on the target by a previous run?")
    cleanup = results.cleanup
    if cleanup and (cleanup.get("failed") or cleanup.get("skipped")):
        found.append(f"clean-up: {cleanup.get('failed', 0) + cleanup.get('skipped', 0):,} "
                     f"sessions/devices left on the target ({cleanup.get('reason') or 'failed'})")
    elif cleanup.get("reason"):
        found.append(f"clean-up: {cleanup['reason']}")
    return found


def _generator(results: FleetResults, pushes: dict[str, Any]) -> list[str]:
    found = []
    sent, late, lag = pushes["sent"] + pushes["failed"], pushes["late"], pushes["max_send_lag_s"]
    if sent and (late > LATE_SHARE * sent or lag > LAG_WARN_S):
        found.append(f"the generator fell behind its schedule: {late:,} of {sent:,} pushes "
                     f"left more than 0.1 s late, up to {lag:.2f} s (latency is counted from "
                     "the schedule; the senders were overloaded or waited for the target)")
    busy = [f.get("cpu_busy_s", 0) for s in results.shards for f in s["flags"]]
    if busy and max(busy) >= CPU_BUSY_S:
        found.append(f"a worker process was CPU-bound (>= 90 % of a core) for {max(busy)} s: "
                     "the generator may have saturated; use more --workers or machines")
    asked, achieved = pushes["asked_per_s"], pushes["attempted_per_s"]
    if (pushes["due"] and not math.isnan(asked) and not math.isnan(achieved)
            and not _stopped(results) and achieved < RATE_SHARE * asked):
        found.append(f"push rate not reached: {achieved:,.1f}/s sent or tried of "
                     f"{asked:,.1f}/s asked for (over the {pushes['run_s']:.1f} s the stages "
                     "took)")
    sampler = max((f.get("sampler_late_max_s", 0.0) for s in results.shards
                   for f in s["flags"]), default=0.0)
    if sampler > 1.0:
        found.append(f"the per-second sampler ran up to {sampler:.1f} s late: gauges in the "
                     "timeline (connected, RSS, CPU) are coarse; counts per second are exact")
    return found


def _stopped(results: FleetResults) -> bool:
    return any(f.get("stopped_early") for s in results.shards for f in s["flags"])


def _ramp(results: FleetResults, connect: dict[str, Any]) -> list[str]:
    found = []
    lag = max((f.get("start_lag_max_s", 0.0) for s in results.shards for f in s["flags"]),
              default=0.0)
    if lag > 1.0:
        found.append(f"the ramp was not kept: a handset started {lag:.1f} s after its time")
    ramp = results.run.get("ramp_per_s")
    rate = connect["connect_rate_per_s"]
    share = len(results.rows) / (results.run.get("fleet_handsets") or len(results.rows))
    if (ramp and not math.isnan(rate) and len(results.rows) > ramp
            and rate < RAMP_SHARE * ramp * share):
        found.append(f"ramp not reached: handsets connected at {rate:,.0f}/s of the "
                     f"{ramp * share:,.0f}/s asked for")
    return found


def _shards(results: FleetResults) -> list[str]:
    found = []
    for part in results.missing:
        found.append(f"{part} did not report: its handsets and pushes are missing from "
                     "these results")
    skew = results.start_skew_s()
    duration = results.run.get("duration_s") or 0.0
    if skew > max(SKEW_S, 0.01 * duration):
        found.append(f"shards started {skew:.2f} s apart: their per-second series are "
                     "aligned on each one's own start")
    stopped = {f.get("stopped_early") for s in results.shards for f in s["flags"]} - {""}
    if stopped:
        found.append(f"the run was stopped early ({', '.join(sorted(stopped))}): pushes "
                     "still due were not sent")
    return found
