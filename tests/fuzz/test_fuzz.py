"""Bounded coverage-guided fuzzing runs (atheris) of every harness in ``fuzzing.py``: 25 s
each, 100 s in all, from the seed corpus in ``corpus/``; any crash fails the test (its
input is kept in the test's temporary directory). The long runs with figures are
``python -m power_bench.fuzz`` (docs/reliability.md)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fuzzing import CORPUS, HARNESSES

pytest.importorskip("atheris")
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SECONDS = 25
HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_no_crash_in_a_bounded_run(name: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / name, corpus)  # new inputs go here, not into the work tree
    done = subprocess.run(
        [sys.executable, str(HERE / "fuzzing.py"), name, f"-max_total_time={SECONDS}",
         f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=1500", str(corpus)],
        capture_output=True, text=True, timeout=SECONDS + 60, cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert done.returncode == 0 and not crashes, (crashes, done.stderr[-3000:])
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs[1]) > 100, done.stderr[-2000:]
