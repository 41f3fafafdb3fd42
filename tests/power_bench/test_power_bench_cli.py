"""``python -m power_bench`` end to end on a tiny matrix, and its answers to mistakes."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from power_bench.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_matrix_writes_results_report_and_plots(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "power_bench", "--strategies", "fixed:270", "mars",
         "--scenarios", "mixed", "--seeds", "2", "--handsets", "2", "--hours", "2",
         "--workers", "2", "--trace-handsets", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "simulating" in done.stderr  # the progress bar
    assert "goal check: not evaluated" in done.stdout
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["strategy"], r["seed"]) for r in rows] == [
        ("fixed:270", "101"), ("fixed:270", "102"), ("mars", "101"), ("mars", "102")]
    assert {"energy_j_per_day", "latency_p95_s", "delivery_ratio"} <= set(rows[0])
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["strategy"], r["seeds"]) for r in summary] == [("fixed:270", "2"), ("mars", "2")]
    assert summary[0]["energy_j_per_day_sd"] != ""
    with open(out / "trajectories.csv", newline="") as f:
        beats = list(csv.DictReader(f))
    assert {r["strategy"] for r in beats} == {"mars"}  # fixed:270 never changes
    assert len({r["handset"] for r in beats}) == 2
    for png in ("energy_vs_p95.png", "energy_per_day.png", "battery_per_day.png",
                "interval_over_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for needle in ("## Goal check", "### mixed", "## Energy relative to mars",
                   "(energy_vs_p95.png)", "(interval_over_time.png)", "--seeds 2",
                   "## Models, parameters and sources", "`lte` (= `lte-huang2012`)",
                   "12.76 J", "RST", "Python", "nproc"):
        assert needle in report, needle


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "nonsense"], "unknown heartbeat strategy 'nonsense'"),
    (["--strategies", "trace:x"], "internal"),
    (["--scenarios", "nosuch"], "nosuch: neither a built-in scenario"),
    (["--seeds", "0"], "--seeds: must be a whole number ≥ 1, got '0'"),
    (["--hours", "-1"], "--hours: must be a number of hours from 0.01667 (a minute) to 8760"),
    (["--hours", "1e9"], "--hours: must be a number of hours from 0.01667 (a minute) to 8760"),
    (["--strategies", "mars", "mars"], "strategy named more than once: mars"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_mistakes_get_one_line_and_status_2(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m power_bench: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_unusable_out_directory_is_a_mistake_too(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--strategies", "mars", "--scenarios", "mixed", "--out",
                 str(blocker / "out")]) == 2
    assert "cannot create" in capsys.readouterr().err
