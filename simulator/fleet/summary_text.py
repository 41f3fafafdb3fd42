"""The few lines a fleet run (or a merge) prints when it is done."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["text_report"]


def _ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def text_report(fleet: dict[str, Any], summary: list[dict[str, Any]], out: Path) -> str:
    """Human summary of a results directory's content (fleet.json and summary rows)."""
    run, connect, pushes = fleet["run"], fleet["connect"], fleet["pushes"]
    hs = connect["handshake_s"]
    shards = "" if run["shards"] == ["0/1"] else f"shards {', '.join(run['shards'])}, "
    lines = [
        f"pushsim fleet: {run['handsets']:,} handsets ({run['mode']} mode, {run['target']}, "
        f"{shards}{run['workers']} worker(s)), {run['duration_s']:g} s, "
        f"strategy {run['strategy']}, run {run['run_id']}",
        f"  connected    {connect['handsets_connected']:,}/{connect['handsets']:,} handsets; "
        f"{connect['connects']:,} connects, {connect['connect_failures']:,} failed attempts, "
        f"{connect['disconnects']:,} drops; {_num(connect['connect_rate_per_s'])} connects/s "
        f"(peak {connect['peak_connects_per_s']:,}/s)",
        f"  handshake    TCP(+TLS) p50 {_ms(connect['tcp_connect_s']['p50'])}; through CONNACK "
        f"p50 {_ms(hs['p50'])}, p95 {_ms(hs['p95'])}, p99 {_ms(hs['p99'])}",
    ]
    lines += _push_lines(pushes)
    codes = connect.get("failure_codes") or {}
    if codes:
        lines.append("  refusals     " + ", ".join(f"{code} ×{count:,}"
                                                   for code, count in codes.items()))
    lines += _process_lines(fleet["processes"])
    for row in summary:
        if row.get("hours"):
            lines.append(
                f"  battery      {_num(row['battery_pct_per_day'], 2)} %/day by the "
                f"{fleet['run']['radio_model']} model ({_num(row['energy_j_per_day'], 1)} "
                f"J/day, {_num(row['heartbeats_per_day'], 1)} heartbeats/day; scaled from a "
                f"{_num(row['hours'] * 3600)} s window)")
    for warning in fleet.get("warnings", []):
        lines.append(f"  warning      {warning}")
    for gate in fleet.get("gates", []):
        verdict = f"MISSED ({gate['why']})" if gate["missed"] else "holds"
        lines.append(f"  gate         {gate['gate']}: {verdict}")
    lines.append(f"  results      {out}/ (summary.csv, summary.json, handsets.csv, fleet.json, "
                 "latencies.csv, connects.csv, timeseries.csv, connected.png, latency_cdf.png)")
    return "\n".join(lines)


def _push_lines(pushes: dict[str, Any]) -> list[str]:
    """Pushes and their latency (when any were due), shared subscriptions."""
    latency = pushes["latency_s"]
    lines: list[str] = []
    if pushes["due"]:
        lines += [
            f"  pushes       {pushes['due']:,} due, {pushes['sent']:,} sent "
            f"({_num(pushes['sent_per_s'], 1)}/s), {pushes['failed']:,} failed, "
            f"{pushes['not_sent'] + pushes['unanswered']:,} not sent or unanswered; "
            f"{pushes['delivered']:,}/{pushes['expected']:,} delivered "
            f"(ratio {_num(pushes['delivery_ratio'], 4)}), {pushes['lost']:,} lost, "
            f"{pushes['duplicates']:,} duplicates",
            f"  latency      p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])}, "
            f"p99 {_ms(latency['p99'])}, max {_ms(latency['max'])} (scheduled → app callback); "
            f"send lag p99 {_ms(pushes['send_lag_s']['p99'])}",
        ]
    shared = pushes.get("shared")
    if shared:
        spread = shared["deliveries_per_member"]
        lines.append(
            f"  shared       $share/{shared['group']}/…: {shared['members']:,} members, "
            f"{shared['members_per_group']} per topic; deliveries per member min "
            f"{_num(spread['min'])}, mean {_num(spread['mean'], 1)}, max {_num(spread['max'])}"
            f"; {shared['members_without_delivery']:,} got none")
    return lines


def _process_lines(processes: list[dict[str, Any]]) -> list[str]:
    """Memory and CPU of each process that held handsets."""
    lines: list[str] = []
    for process in processes:
        if not process.get("handsets"):
            continue
        per_connection = process.get("memory_per_connection_bytes")
        name = process["name"].removeprefix("shard 0/1 ")
        lines.append(
            f"  {name:<12} RSS {process.get('rss_start_mb', 0):.0f} → "
            f"{process.get('rss_peak_mb', 0):.0f} MB"
            + (f", {per_connection / 1024:.1f} KiB per connection" if per_connection else "")
            + f", CPU {_num(process.get('cpu_percent_avg'))} %")
    return lines
