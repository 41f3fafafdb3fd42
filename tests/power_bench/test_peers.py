"""``python -m power_bench.peers``: the one-run comparison against paho-mqtt, amqtt and
Mosquitto, run for real at its tiny size (its figures are not judged here, only that they
are there, positive, and that the table says pass or MISS for every goal)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from power_bench.peers import Row, ratio_row, table

ROW = re.compile(r"^\| (?P<figure>[^|]+) \| (?P<ours>[\d,.]+) (?P<unit>\S+) \| (?P<peer>[^|]+) "
                 r"\| (?P<peers>[^|]+) \| (?P<ratio>[^|]+) \| (?P<goal>[^|]+) "
                 r"\| (?P<verdict>[^|]+) \|$")
GOALS = 11  # 4 SDK, 4 server (memory twice, connects, pushes), 3 simulator


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.mosquitto
@pytest.mark.timeout(90)
def test_the_tiny_run_prints_one_table_of_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    done = subprocess.run([sys.executable, "-m", "power_bench.peers", "--tiny",
                           "--json", str(out)], capture_output=True, text=True, timeout=85,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "| figure | ours | peer | peer's | ours ÷ peer's | goal | verdict |"
    rows = [m.groupdict() for line in lines[2:] if (m := ROW.match(line))]
    assert len(rows) == len([line for line in lines if line.startswith("| ")]) - 1
    figures = {r["figure"] for r in rows}
    for version in ("3.1.1", "5"):
        assert f"SDK idle memory per connection, MQTT {version}" in figures
        assert f"SDK connect rate, MQTT {version}" in figures
    assert {r["peer"] for r in rows} >= {"paho-mqtt", "amqtt", "Mosquitto"}
    for row in rows:
        assert _number(row["ours"]) > 0, row
        if row["peer"] != "—":
            assert _number(row["peers"]) > 0, row
            assert _number(row["ratio"]) == pytest.approx(
                _number(row["ours"]) / _number(row["peers"]), rel=0.02, abs=0.01)
    judged = [r for r in rows if r["goal"] != "—"]
    assert len(judged) == GOALS
    assert all(r["verdict"] in ("pass", "MISS") for r in judged)
    assert all(r["verdict"] == "—" for r in rows if r["goal"] == "—")
    missed = sum(r["verdict"] == "MISS" for r in judged)
    assert (f"{missed} of {GOALS} goals MISSED" if missed else "every goal met") in lines
    assert any(line.startswith("load average before ") for line in lines)
    report = json.loads(out.read_text())
    assert len(report["rows"]) == len(rows)
    assert report["server"]["amqtt"]["throughput"]["pushes"] == 50
    assert report["server"]["server"]["broadcast"]["delivered"] == 50
    assert list(tmp_path.iterdir()) == [out]  # brokers' files went to a temporary directory


def test_a_goal_on_the_ratio_is_judged_at_its_bound() -> None:
    at = ratio_row("memory", 4.0, "KB", "peer", 1.0, "≤ 4 × peer", lambda r: r <= 4)
    above = ratio_row("memory", 4.01, "KB", "peer", 1.0, "≤ 4 × peer", lambda r: r <= 4)
    assert (at.verdict, above.verdict) == ("pass", "MISS")
    assert at.ratio == 4.0
    plain = Row("speed", 2.5, "s", goal="≤ 3 s", met=True)
    text = table([at, above, plain])
    assert "| memory | 4.01 KB | peer | 1.00 | 4.01 | ≤ 4 × peer | MISS |" in text
    assert "| speed | 2.50 s | — | — | — | ≤ 3 s | pass |" in text


def test_a_size_that_is_not_positive_is_a_one_line_error() -> None:
    done = subprocess.run([sys.executable, "-m", "power_bench.peers", "--tiny",
                           "--devices", "0"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m power_bench.peers: error: sizes must be positive "
        "(--broadcast-devices 0: no big broadcast)")
    assert "Traceback" not in done.stderr
