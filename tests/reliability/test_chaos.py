"""Item 1 of the reliability issue, CI size: thousands of pushes while the server is
SIGKILLed and restarted at seeded random moments and device links drop or black-hole (NAT
expiry); every acknowledged push reaches its app callback exactly once.

The engine is ``power_bench/chaos.py`` (the benchmark runs it bigger); here: a real server
process on a file database, 30 real SDK clients behind a fault-injecting relay, 2,000
pushes at 100/s, 4 kills, ~2 link faults a second.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from power_bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.timeout(90)


async def test_no_push_lost_or_duplicated_through_kills_drops_and_blackholes(
        tmp_path: Path) -> None:
    config = ChaosConfig(devices=30, pushes=2000, push_rate=100.0, kills=4,
                         link_faults_per_s=2.0, seed=7, drain_timeout=30.0)
    report = await run_chaos(config, tmp_path)
    print(report.line())
    assert report.pushes_acknowledged == 2000  # every logical push ended with a 200
    assert report.server_kills == 4
    assert report.link_drops + report.link_blackholes >= 20
    assert report.link_blackholes >= 5 and report.link_drops >= 5
    assert report.lost == 0, report.lost_ids
    assert report.duplicates == 0, report.duplicate_ids
    assert report.unexpected == 0
    assert report.maybe_delivered <= report.maybe_committed
    assert report.delivered_callbacks == report.pushes_acknowledged + report.maybe_delivered
